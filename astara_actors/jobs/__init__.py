"""Periodic work on threads of its own: drift sweeps, orphan sweeps, the heap freezer."""
