"""Run `python -m service.run ARGS...` and SIGKILL the process at a known training step.

    python tests/sigkill_during_training.py KILL_STEP [--fake-clock SECONDS] -- ARGS...

The process kills itself (SIGKILL: no handler, no cleanup, as `kill -9` from outside) in the
middle of step KILL_STEP, after the step's backend update and before its metrics line or
checkpoint, so the point of the kill does not depend on the machine's speed.

--fake-clock replaces the trainer's clock with one that advances SECONDS per reading, so a run
planned by --time-budget takes the same steps and learning-rate schedule on any machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import trainer  # noqa: E402
from service.run import main  # noqa: E402


class FakeClock:
    def __init__(self, tick: float):
        self.tick = tick
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def kill_in_step(kill_step: int) -> None:
    # one RebalanceResult per training step, after its update, whether the margin loop ran in
    # Python (rebalance) or in the backend's fused call
    result_of_step = trainer.RebalanceResult
    calls = 0

    def result_then_maybe_die(*args, **kwargs):
        nonlocal calls
        calls += 1  # one call per training step, after the step's train_step
        if calls == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return result_of_step(*args, **kwargs)

    trainer.RebalanceResult = result_then_maybe_die


if __name__ == "__main__":
    own, args = sys.argv[1 : sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1 :]
    parser = argparse.ArgumentParser()
    parser.add_argument("kill_step", type=int)
    parser.add_argument("--fake-clock", type=float, metavar="SECONDS")
    options = parser.parse_args(own)
    if options.fake_clock:
        trainer.time = FakeClock(options.fake_clock)
    kill_in_step(options.kill_step)
    sys.exit(main(args))
