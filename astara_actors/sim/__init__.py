"""astara-sim: the parts of OpenStack the orchestrator touches, simulated over real HTTP."""
