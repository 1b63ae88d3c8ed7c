"""Choosing the utility classifier on real lesions, on a validation split of the training part only.

    python bench/choose_classifier.py --data /work/data/isic64-train.npz --variants base,wide --seeds 0,1

Holds out a stratified 20% of the training file (split seed 0) and trains each variant of
backends/tf/classifier.py on the other 80% with each seed, then prints the positive class's
(melanoma's) ROC AUC, its sensitivity at 80% specificity and the balanced accuracy on the
held-out 20%, with the training time. The test file is never read here: the classifier is fixed
before the real arm is scored on it once.
"""

from __future__ import annotations

import argparse
import math
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.utility import UtilitySettings  # noqa: E402
from service.utility.stats import score  # noqa: E402

# Each variant: changes to the UtilitySettings defaults, and whether every image is augmented.
VARIANTS = {
    "chosen": ({}, False),
    "chosen+augment": ({}, True),
    "no-colour-constancy": (dict(colour_constancy=False), False),
    "narrow": (dict(widths=(16, 32, 64, 128)), False),
    "narrow+augment": (dict(widths=(16, 32, 64, 128)), True),
    "wide": (dict(widths=(32, 64, 128, 256)), False),
    "wide+augment": (dict(widths=(32, 64, 128, 256)), True),
    "lr1e-3": (dict(learning_rate=1e-3), False),
    "30-epochs": (dict(epochs=30), False),
    "30-epochs+augment": (dict(epochs=30), True),
}


def main(argv=None) -> int:
    from sklearn.model_selection import train_test_split

    from backends.tf.classifier import predict_proba, train_classifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the training part (.npz with x uint8 NHWC, y, class_names)")
    p.add_argument("--variants", default="chosen", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--positive", default="melanoma")
    args = p.parse_args(argv)
    contents = np.load(args.data)
    images = contents["x"].astype(np.float32) / 127.5 - 1
    labels = contents["y"].astype(np.int64)
    names = [str(n) for n in contents["class_names"]]
    positive = names.index(args.positive)
    fit_x, val_x, fit_y, val_y = train_test_split(images, labels, test_size=0.2, random_state=0, stratify=labels)
    print(f"fit {np.bincount(fit_y).tolist()}, validation {np.bincount(val_y).tolist()} ({names})", flush=True)
    for variant in args.variants.split(","):
        changes, augment = VARIANTS[variant]
        settings = dataclasses.replace(UtilitySettings(), **changes)
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            steps = math.ceil(settings.epochs * len(fit_y) / settings.batch_size)
            model = train_classifier(fit_x, fit_y, len(names), augment, seed, settings, steps)
            seconds = time.perf_counter() - started
            s = score(val_y, predict_proba(model, val_x), positive)
            rows.append((s["positive_auc"], s["positive_sensitivity_at_specificity"], s["balanced_accuracy"],
                         len(model.history.history["loss"]), seconds))
            print(f"  {variant} seed {seed}: AUC {rows[-1][0]:.3f} sens@80spec {rows[-1][1]:.3f} "
                  f"BA {rows[-1][2]:.3f} epochs {rows[-1][3]} {seconds:.0f} s", flush=True)
        mean = np.mean(rows, axis=0)
        print(f"{variant:14s} AUC {mean[0]:.3f} sens@80spec {mean[1]:.3f} BA {mean[2]:.3f} "
              f"epochs {mean[3]:.0f} {mean[4]:.0f} s per classifier", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
