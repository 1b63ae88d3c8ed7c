"""Benchmarks: `pytest bench/ --benchmark-only`. They measure and print; they never assert wall time."""

import sys
from pathlib import Path

# The test suite's fixtures (tests/run_fixtures.py: a run directory with random weights) serve
# the benchmarks too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
