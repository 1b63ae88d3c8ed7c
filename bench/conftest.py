"""Benchmarks: `pytest bench/ --benchmark-only`. They measure and print; they never assert wall time."""
