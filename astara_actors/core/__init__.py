"""The pure domain: the router state machine, its instance logic and models; no threads, no I/O."""
