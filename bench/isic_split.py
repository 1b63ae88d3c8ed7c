"""Write a labelled image folder's fixed split as two .npz files: the training part and the
held-out part that `preset_experiment.py` scores against (the same draw: holdout 0.2, seed 2017,
by group where the data names one, else stratified by class).

    python bench/isic_split.py ../shared/data/isic2017-train/ISIC-2017_Training_Data OUT_DIR \\
        [--labels CSV] [--image-size 64]

Writes OUT_DIR/train.npz and OUT_DIR/test.npz (x uint8 NHWC, y, class_names, and groups when the
data has them), for `utility --real OUT_DIR/train.npz --test OUT_DIR/test.npz`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preset_experiment import HOLDOUT_SEED  # noqa: E402  (bench/, beside this file: on the path as the script's folder)


def main() -> None:
    from service import data
    from service.files import atomic_file
    from service.imageio import to_uint8

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--labels", metavar="CSV")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--holdout", type=float, default=0.2)
    args = parser.parse_args()
    dataset = data.load_images(args.data, args.image_size, labels_csv=args.labels, progress=False)
    if dataset.labels is None:
        raise SystemExit(f"{args.data}: no labels found; give --labels")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "test"), data.split(dataset, args.holdout, seed=HOLDOUT_SEED)):
        arrays = {"x": to_uint8(part.images), "y": part.labels, "class_names": np.array(part.class_names)}
        if part.groups is not None:
            arrays["groups"] = part.groups
        with atomic_file(out / f"{name}.npz") as f:
            np.savez(f, **arrays)
        print(f"{out / f'{name}.npz'}: {len(part)} images ({part.class_counts()})")


if __name__ == "__main__":
    main()
