"""What sits at the same place on every generated image: the mean image of a run's samples.

    python bench/mean_image.py --reference runs/isic64/held400.npz --out mean.png RUN [RUN ...]

Each run's latest checkpoint (its averaged generator where it has one) draws --count images
(noise seed 5, the same for every run); their mean image's high-pass (Laplacian) energy is
printed as a multiple of the reference images' mean: over the whole image, inside a 3-pixel
frame (where a lattice of marks shows) and on the frame (where border bands show), as
bench/preset_experiment.py scores them (its meanHP). A real set of other images scores about 1.
With --out, one picture: the reference's mean image then each run's, and below each its
high-pass part, its contrast stretched 8x.

--reference: an .npz with uint8 images under "x" (or "images"), e.g. bench/isic_split.py's
parts; or "embedded": --count fresh images of the embedded stand-in at the first run's size
(seed 7, the draw bench/preset_experiment.py's stand-in protocol scores against). Unconditional
runs only (a conditional run would mix its classes' means).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from preset_experiment import mean_image_highpass  # noqa: E402

NOISE_SEED = 5


def generated(run: Path, count: int) -> np.ndarray:
    from backends.noise import sample_noise
    from service.checkpoint import latest_checkpoint
    from service.generation.runners import load_generator
    from service.imageio import to_uint8
    from service.rundir import load_config

    config, record = load_config(run)
    if config.num_classes:
        raise SystemExit(f"{run}: a conditional run; this check takes unconditional runs")
    backend = load_generator(run, latest_checkpoint(run), record.get("backend", "tf"))
    z = sample_noise(np.random.default_rng(NOISE_SEED), count, config)
    return np.concatenate([to_uint8(backend.generate(z[i : i + 200])) for i in range(0, count, 200)])


def picture_column(images: np.ndarray, scale: int = 3) -> np.ndarray:
    import cv2

    mean = images.astype(np.float64).mean(axis=0)
    high = mean - cv2.GaussianBlur(mean, (0, 0), 1.5)
    size = (mean.shape[1] * scale, mean.shape[0] * scale)
    top = cv2.resize(np.clip(mean, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    bottom = cv2.resize(np.clip(128 + 8 * high, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    return np.concatenate([top, bottom], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (train or main job)")
    parser.add_argument("--reference", required=True, metavar="NPZ", help="real images: an .npz, uint8 under 'x' or 'images'; or 'embedded'")
    parser.add_argument("--count", type=int, default=400, help="images drawn per run (default 400)")
    parser.add_argument("--out", metavar="PNG", help="write the mean images and their high-pass parts here")
    args = parser.parse_args()

    if args.reference == "embedded":
        from preset_experiment import standin_protocol
        from service.rundir import load_config

        reference = standin_protocol(load_config(args.runs[0])[0].image_size, args.count).reference
    else:
        with np.load(args.reference) as archive:
            reference = archive["x" if "x" in archive else "images"]
    base = mean_image_highpass(reference)
    columns = [picture_column(reference)]
    print(f"reference {args.reference}: {len(reference)} images; mean-image high-pass energy "
          + ", ".join(f"{region} {value:.2f}" for region, value in base.items()))
    for run in map(Path, args.runs):
        images = generated(run, args.count)
        ratios = {region: energy / base[region] for region, energy in mean_image_highpass(images).items()}
        print(f"{run}: meanHP {ratios['all']:.2f}x (inner {ratios['inner']:.2f}x, border {ratios['border']:.2f}x)", flush=True)
        columns.append(picture_column(images))
    if args.out:
        import cv2

        cv2.imwrite(args.out, np.concatenate(columns, axis=1)[..., ::-1])
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
