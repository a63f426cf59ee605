"""Every setting in one place: the ini reader, the orchestrator's and the cloud's settings."""
