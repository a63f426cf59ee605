"""What crosses process boundaries: actor messages, the control protocol, notifications."""
