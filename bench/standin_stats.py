"""The embedded stand-in against real dermoscopy at the network's size, on the measures that
decide what a GAN must learn: fine detail (high-pass energy, the power spectrum's high band),
colour, and dark thin structures (hairs: a morphological black-hat).

    python bench/standin_stats.py --real runs/isic64/train.npz              # today's stand-in
    python bench/standin_stats.py --real runs/isic64/train.npz --work-size 256 --work-size 64

`--real`: a folder or .npz of real images (loaded at --size as training loads them). Each
`--work-size` draws the stand-in on a canvas of that short side and area-downsamples it to
--size (the default: the drawing's own choice, service.synthetic.default_work_size). Prints one
row per set: the median (and quartiles) over images of each measure. Not collected by pytest.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np


def high_pass_rms(images: np.ndarray) -> np.ndarray:
    """Per image: RMS (0-255 levels) of the image minus its 5x5 Gaussian blur (sigma 1)."""
    out = []
    for image in images.astype(np.float32):
        out.append(np.sqrt(np.mean((image - cv2.GaussianBlur(image, (5, 5), 1.0)) ** 2)))
    return np.array(out)


def high_band_share(images: np.ndarray) -> np.ndarray:
    """Per image: the share of the grey image's spectral power (mean removed) above a quarter
    of the sampling frequency."""
    size = images.shape[1]
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    high = radius > 0.25
    out = []
    for image in images:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
        out.append(power[high].sum() / max(power.sum(), 1e-12))
    return np.array(out)


def dark_lines(images: np.ndarray, threshold: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of pixels whose black-hat response (a 5x5 ellipse closing minus the
    grey image) exceeds `threshold` levels, and their mean response (contrast of thin dark
    structures: hairs, dots, ridges)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    shares, contrasts = [], []
    for image in images:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        hat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel).astype(np.float32)
        mask = hat > threshold
        shares.append(mask.mean())
        contrasts.append(hat[mask].mean() if mask.any() else 0.0)
    return np.array(shares), np.array(contrasts)


def colour(images: np.ndarray) -> dict:
    hsv = np.stack([cv2.cvtColor(x, cv2.COLOR_RGB2HSV) for x in images]).astype(np.float32)
    return {"mean R,G,B": images.reshape(len(images), -1, 3).mean(axis=1),
            "saturation": hsv[..., 1].reshape(len(images), -1).mean(axis=1),
            "pixel std": images.reshape(len(images), -1).astype(np.float32).std(axis=1)}


def describe(name: str, images: np.ndarray) -> None:
    shares, contrasts = dark_lines(images)
    measures = {"high-pass RMS": high_pass_rms(images), "high band share": high_band_share(images),
                "dark-line pixels": shares, "dark-line contrast": contrasts,
                "images with >1% dark-line pixels": (shares > 0.01).astype(float), **colour(images)}
    mean_image = images.astype(np.float32).mean(axis=0)
    mean_hp = float(np.sqrt(np.mean((mean_image - cv2.GaussianBlur(mean_image, (5, 5), 1.0)) ** 2)))
    print(f"{name} ({len(images)} images, mean image's high-pass RMS {mean_hp:.3f})")
    for key, values in measures.items():
        if values.ndim == 2:
            print(f"  {key:34s} " + ", ".join(f"{v:.1f}" for v in values.mean(axis=0)))
        elif key.startswith("images with"):
            print(f"  {key:34s} {values.mean():.3f}")
        else:
            q1, med, q3 = np.percentile(values, [25, 50, 75])
            print(f"  {key:34s} median {med:.4g} (quartiles {q1:.4g}, {q3:.4g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", required=True, help="real images: a folder or .npz")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=1000, help="stand-in images per drawing (default 1000)")
    parser.add_argument("--work-size", type=int, action="append", help="drawing canvas short side (repeatable)")
    args = parser.parse_args()

    from service import synthetic
    from service.data import load_images
    from service.imageio import to_uint8

    real = to_uint8(load_images(args.real, args.size, progress=False).images)
    describe(f"real: {args.real}", real)
    for work in args.work_size or [None]:
        labels = synthetic.class_layout(args.count, 0)
        images = np.empty((args.count, args.size, args.size, 3), np.uint8)
        for cls in range(3):
            members = np.flatnonzero(labels == cls)
            for start in range(0, len(members), 64):
                chunk = members[start : start + 64]
                images[chunk] = synthetic._draw_batch(0, chunk, cls, (args.size, args.size), work)
        describe(f"stand-in, canvas {work or synthetic.default_work_size(args.size)}", images)


if __name__ == "__main__":
    main()
