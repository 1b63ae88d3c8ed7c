"""Calibrate the diversity check's threshold (service.diversity) on finished runs.

For each run folder: its last valid checkpoint's generator, the check's fixed noise and the
training images' fixed slice, and coverage at k = 1, 3, 5 plus recall at k = 3 on them, with
the seconds generation and features took. Two references without a generator: another slice
of the same real images (what a perfect G scores) and one real image repeated (a fully
collapsed G).

    python bench/diversity_calibration.py --data /work/runs/isic64/train.npz RUN [RUN ...]

--data: the images the runs trained on (.npz with x: uint8 NHWC, y: class indices).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def scores(real_features, fake_features) -> dict:
    from service.diversity import coverage
    from service.validation.metrics import precision_recall

    out = {f"coverage_k{k}": round(coverage(real_features, fake_features, k), 4) for k in (1, 3, 5)}
    out["recall_k3"] = round(precision_recall(real_features, fake_features, 3)["recall"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--data", required=True)
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--count", type=int, default=256)
    args = parser.parse_args()

    import backends
    from service.checkpoint import load_latest_valid, weights_only
    from service.diversity import DiversityCheck, reference_indices
    from service.imageio import from_uint8, to_uint8
    from service.rundir import load_config
    from service.validation.features import random_net_features

    data = np.load(args.data)
    images, labels = from_uint8(data["x"]), data["y"]
    index = reference_indices(len(images), args.count)
    real = random_net_features(to_uint8(images[index]))
    other = random_net_features(to_uint8(images[np.minimum(index + 1, len(images) - 1)]))
    constant = np.repeat(real[:1], len(real), axis=0)
    print(json.dumps({"reference": "other real slice", **scores(real, other)}), flush=True)
    print(json.dumps({"reference": "one real image repeated", **scores(real, constant)}), flush=True)

    for run in args.runs:
        config, _ = load_config(run)
        backend = backends.get(args.backend, config)
        path, arrays = load_latest_valid(run)
        backend.set_weights(weights_only(arrays))
        check = DiversityCheck(images, labels if config.num_classes else None, config, count=args.count)
        backend.generate(check.z[:8], None if check.labels is None else check.labels[:8])  # trace once
        started = time.perf_counter()
        fake_images = backend.generate(check.z, check.labels)
        generated = time.perf_counter()
        fake = random_net_features(to_uint8(fake_images))
        featured = time.perf_counter()
        print(json.dumps({
            "run": str(Path(run).relative_to(Path(run).parents[2])) if len(Path(run).parents) > 2 else run,
            "checkpoint": path.name,
            **scores(real, fake),
            "generate_s": round(generated - started, 3),
            "features_s": round(featured - generated, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
