"""Helpers shipped with the package for tests and benchmarks (never used by the daemon)."""
