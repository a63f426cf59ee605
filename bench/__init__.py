"""Benchmarks: scenarios printed as a table and saved as JSON under bench/results/."""
