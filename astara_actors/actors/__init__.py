"""The orchestrator's actors and the shared services they run on (scheduler, poller)."""
