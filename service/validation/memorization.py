"""Memorization audit: does any generated image copy a training image?

Space: pixels. Every image is resized to 32x32 (INTER_AREA), scaled to [0, 1] and compared by
RMS difference. A copy is a copy pixel for pixel, so the check is done where a copy is
unambiguous, not in a feature space that also maps different images close together; 32x32
keeps the lesion's shape and colour and ignores noise a generator adds at full size.

For a generated image g with nearest training image t:
    ratio(g) = d(g, t) / d(t, nearest other training image of t)
A novel sample sits about as far from the training set as training images sit from each
other (ratio ~ 1); a copy sits much closer (ratio -> 0). Likely copies: ratio < 0.5, i.e.
g is closer to t than half the gap between t and its own nearest neighbour.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.neighbors import NearestNeighbors

from service.validation.features import resize_images

AUDIT_SIZE = 32
COPY_RATIO_THRESHOLD = 0.5
PANEL_PAIRS = 16
GAP_NEIGHBOURS = 8
SAME_IMAGE_DISTANCE = 1e-6  # RMS; one grey level on one pixel of 32x32x3 is 7e-5
AUDIT_SPACE = {
    "description": "pixels resized to 32x32 (INTER_AREA), RGB in [0, 1], RMS difference",
    "copy_ratio_threshold": COPY_RATIO_THRESHOLD,
}


def audit_vectors(images_uint8: np.ndarray) -> np.ndarray:
    small = resize_images(np.asarray(images_uint8), AUDIT_SIZE).astype(np.float64) / 255.0
    # dividing by sqrt(dim) makes Euclidean distance the RMS pixel difference
    return small.reshape(len(small), -1) / np.sqrt(small[0].size)


def memorization_audit(train_uint8: np.ndarray, fake_uint8: np.ndarray) -> dict:
    """Per generated image: nearest training image, its distance, and the copy ratio.

    Returns arrays ("nearest_train", "distance", "train_gap", "ratio") and a summary
    ("copy_share", "copies", "median_ratio", "threshold").
    """
    train = audit_vectors(train_uint8)
    fake = audit_vectors(fake_uint8)
    index = NearestNeighbors(algorithm="brute").fit(train)
    # each training image's own gap: its nearest training image at a positive distance, so an
    # image stored twice is measured against its nearest *different* neighbour
    neighbours = min(len(train) - 1, GAP_NEIGHBOURS)
    train_distances, _ = index.kneighbors(n_neighbors=neighbours)  # no X: a point is not its own neighbour
    positive = train_distances > SAME_IMAGE_DISTANCE
    train_gap = np.where(positive.any(axis=1), train_distances[np.arange(len(train)), positive.argmax(axis=1)], 0.0)
    distance, nearest = index.kneighbors(fake, n_neighbors=1)
    distance, nearest = distance[:, 0], nearest[:, 0]
    gap = train_gap[nearest]
    # gap 0 only when an image is stored GAP_NEIGHBOURS times or more: then only an exact copy is a copy
    ratio = np.where(gap > 0, distance / np.where(gap > 0, gap, 1.0), np.where(distance > SAME_IMAGE_DISTANCE, np.inf, 0.0))
    copies = ratio < COPY_RATIO_THRESHOLD
    return {
        "nearest_train": nearest,
        "distance": distance,
        "train_gap": gap,
        "ratio": ratio,
        "copy_share": float(np.mean(copies)),
        "copies": int(np.sum(copies)),
        "median_ratio": float(np.median(ratio)),
        "threshold": COPY_RATIO_THRESHOLD,
    }


def audit_summary(audit: dict) -> dict:
    """The JSON-able part of an audit."""
    return {key: audit[key] for key in ("copy_share", "copies", "median_ratio", "threshold")}


def save_pairs_panel(path, audit: dict, fake_uint8: np.ndarray, train_uint8: np.ndarray, pairs: int = PANEL_PAIRS) -> list[dict]:
    """PNG of the `pairs` closest (lowest ratio) pairs: generated | nearest training image.

    One canvas composed in NumPy and drawn once (32 matplotlib subplots took seconds).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.argsort(audit["ratio"], kind="stable")[:pairs]
    tile, gap, caption, per_row = 96, 4, 30, 4
    pair_width = 2 * tile + gap
    rows = int(np.ceil(len(order) / per_row))
    canvas = np.full((rows * (tile + caption) + gap, per_row * (pair_width + 3 * gap) + gap, 3), 255, np.uint8)
    interpolation = cv2.INTER_AREA if fake_uint8.shape[1] > tile else cv2.INTER_NEAREST
    listing, captions = [], []
    for slot, fake_index in enumerate(order):
        train_index = int(audit["nearest_train"][fake_index])
        ratio = float(audit["ratio"][fake_index])
        row, column = divmod(slot, per_row)
        top = row * (tile + caption) + caption
        left = gap + column * (pair_width + 3 * gap)
        for offset, image in ((0, fake_uint8[fake_index]), (tile + gap, train_uint8[train_index])):
            canvas[top : top + tile, left + offset : left + offset + tile] = cv2.resize(image, (tile, tile), interpolation=interpolation)
        captions.append((left + pair_width / 2, top - 4, f"gen {fake_index} | train {train_index}: ratio {ratio:.2f}", ratio < COPY_RATIO_THRESHOLD))
        listing.append({"generated": int(fake_index), "train": train_index, "ratio": ratio})

    dpi, title_inches = 100, 0.4
    width, height = canvas.shape[1] / dpi, canvas.shape[0] / dpi
    figure = Figure(figsize=(width, height + title_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0, 0, 1, height / (height + title_inches)))
    axis.imshow(canvas, interpolation="nearest")
    axis.set_axis_off()
    for x, y, text, flagged in captions:
        axis.text(x, y, text, ha="center", va="bottom", fontsize=8, color="tab:red" if flagged else "black")
    figure.suptitle(
        f"{len(order)} closest pairs: generated (left) | nearest training image (right); red: ratio < {COPY_RATIO_THRESHOLD}",
        fontsize=10, y=1 - 0.08 / (height + title_inches),
    )
    figure.savefig(path)
    return listing


def save_ratio_histogram(path, fake_ratio: np.ndarray, reference_ratio: np.ndarray) -> None:
    """Histogram of copy ratios: generated vs held-out real images (the reference)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    finite = [r[np.isfinite(r)] for r in (fake_ratio, reference_ratio)]
    upper = max(2.0, float(np.percentile(np.concatenate(finite), 99)) if sum(map(len, finite)) else 2.0)
    bins = np.linspace(0, upper, 41)
    axis.hist(np.clip(finite[1], 0, upper), bins=bins, alpha=0.6, density=True, label="real (held-out half)", color="tab:blue")
    axis.hist(np.clip(finite[0], 0, upper), bins=bins, alpha=0.6, density=True, label="generated", color="tab:orange")
    axis.axvline(COPY_RATIO_THRESHOLD, color="tab:red", linestyle="--", label=f"copy threshold {COPY_RATIO_THRESHOLD}")
    axis.set_xlabel("distance to nearest training image / that image's nearest-neighbour distance")
    axis.set_ylabel("density")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
