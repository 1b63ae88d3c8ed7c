"""Steps a time-budgeted training run makes: the main job's trainer (preset `default`, 64x64,
the embedded stand-in data, tf backend unless --backend) for a fixed wall-time budget, in
fresh processes, alternating between this working tree and a baseline checkout.

    git worktree add /tmp/lesiongan-baseline <commit>       # once: the code to compare against
    python bench/bench_train_budget.py --baseline /tmp/lesiongan-baseline --budget 90 --rounds 2

Each round runs the baseline, then this tree (each in its own process: TensorFlow's set-up
and the trainer exactly as `service.run train --time-budget` has them; the stand-in data is
made once per process before the clock starts), and prints the steps each made within the
budget and their ratio. On a machine shared with other work, compare the ratio within a
round, not absolute counts across rounds. Without --baseline it runs this tree alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, tempfile, time
budget, size, backend_name, preset, count = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
import backends
from backends.presets import preset_config
from service.data import default_dataset
from service.trainer import Trainer
data = default_dataset(size, count=count, progress=False)
config = preset_config(preset, image_size=size)
backend = backends.get(backend_name, config)
run_dir = tempfile.mkdtemp(prefix="bench_budget_")
started = time.perf_counter()
result = Trainer(backend, data.images, run_dir=run_dir, time_budget=budget, progress=False, loss_curve=False,
                 handle_signals=False).run()
print(json.dumps({"steps": result.step, "seconds": time.perf_counter() - started, "status": result.status,
                  "rebalance_d": result.rebalance_d, "rebalance_g": result.rebalance_g}))
"""


def run_once(tree: Path, budget: float, size: int, backend: str, preset: str, count: int, extra_env=None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3", **(extra_env or {}))
    with tempfile.TemporaryDirectory() as home:
        env.setdefault("LESIONGAN_CACHE", str(Path(home) / "cache"))
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(budget), str(size), backend, preset, str(count)],
            cwd=tree, env=env, capture_output=True, text=True, timeout=budget + 900,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of training per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--count", type=int, default=2000, help="stand-in images")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for this tree's runs only (e.g. thread pools)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    trees = {"baseline": args.baseline, "this tree": HERE} if args.baseline else {"this tree": HERE}
    steps: dict[str, list[int]] = {name: [] for name in trees}
    for round_index in range(args.rounds):
        for name, tree in trees.items():
            result = run_once(tree, args.budget, args.size, args.backend, args.preset, args.count,
                              extra_env if name == "this tree" else None)
            steps[name].append(result["steps"])
            print(f"round {round_index + 1} {name:10s}: {result['steps']} steps in {result['seconds']:.1f} s "
                  f"({result['status']}; extra D/G steps {result['rebalance_d']}/{result['rebalance_g']})", flush=True)
    if args.baseline:
        ratios = [new / old for new, old in zip(steps["this tree"], steps["baseline"])]
        print(f"steps in {args.budget:.0f} s, {args.preset} {args.size}x{args.size} {args.backend}: baseline "
              f"{steps['baseline']}, this tree {steps['this tree']}; ratio per round "
              f"{[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
