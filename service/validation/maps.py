"""The thesis's PCA and t-SNE views of real plus generated images.

Both maps embed the random-net features (features.py) of the two sets together, as the thesis
embedded Xception features. Each is drawn twice: with image thumbnails (generated ones framed
in orange) and as a plain scatter (real vs generated colours).

- PCA: 2 components fitted on real + generated features, every image drawn.
- t-SNE: PCA to 50-D, then scikit-learn's Barnes-Hut t-SNE (perplexity 30, PCA init) on a
  balanced subsample of at most TSNE_MAX_POINTS images: 1,000, as the thesis mapped 1,000
  "for keeping the graph readable" (and t-SNE's cost grows with the count).
- Thumbnail maps place at most one thumbnail per cell of a grid over the embedding (30x30, or
  coarser for small sets; the image nearest the cell centre), so dense regions stay readable.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from service.files import atomic_file
from service.validation.features import resize_images

TSNE_MAX_POINTS = 1000
TSNE_PCA_DIMS = 50
TSNE_PERPLEXITY = 30.0
GRID_CELLS = 30
THUMB_SIZE = 44
REAL_COLOUR = (31, 119, 180)  # matplotlib tab:blue
FAKE_COLOUR = (255, 127, 14)  # matplotlib tab:orange


def pca_embedding(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates and the explained variance ratio of the two components."""
    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(np.asarray(features, np.float64))
    return coords, pca.explained_variance_ratio_


def tsne_subsample(is_generated: np.ndarray, seed: int = 0, max_points: int = TSNE_MAX_POINTS) -> np.ndarray:
    """Sorted indices of a balanced subsample: up to max_points / 2 from each set."""
    rng = np.random.default_rng(seed)
    chosen = []
    for flag in (False, True):
        members = np.flatnonzero(is_generated == flag)
        take = min(len(members), max_points // 2)
        chosen.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(chosen))


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    features = np.asarray(features, np.float64)
    dims = min(TSNE_PCA_DIMS, features.shape[1], len(features))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(features)
    perplexity = min(TSNE_PERPLEXITY, (len(features) - 1) / 3.0)  # sklearn needs perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", method="barnes_hut", random_state=seed)
    # one OpenMP thread: each of the 1,000 small gradient steps is a parallel region, and on
    # shared cores spinning threads cost far more than they gain (10-50x slower measured)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(reduced)


def _unit_square(coords: np.ndarray) -> np.ndarray:
    low, high = coords.min(axis=0), coords.max(axis=0)
    return (coords - low) / np.where(high > low, high - low, 1.0)


def thumbnail_canvas(coords: np.ndarray, images_uint8: np.ndarray, is_generated: np.ndarray, cells: int = GRID_CELLS, thumb: int = THUMB_SIZE) -> np.ndarray:
    """White uint8 canvas with one thumbnail per occupied grid cell (nearest the cell centre).

    Generated thumbnails get a 3-pixel orange frame, real ones a 1-pixel blue one.
    """
    unit = _unit_square(np.asarray(coords, np.float64)) * cells
    cell = np.minimum(np.floor(unit).astype(int), cells - 1)  # the maximum lands in the last cell
    offset = np.sum((unit - cell - 0.5) ** 2, axis=1)
    cell_id = cell[:, 1] * cells + cell[:, 0]
    order = np.lexsort((offset, cell_id))  # by cell, nearest the centre first
    first = order[np.r_[True, cell_id[order][1:] != cell_id[order][:-1]]]
    canvas = np.full((cells * thumb, cells * thumb, 3), 255, np.uint8)
    inner = thumb - 2
    small = resize_images(np.asarray(images_uint8)[first], inner - 6)
    for tile, index in zip(small, first):
        frame = 3 if is_generated[index] else 1
        colour = FAKE_COLOUR if is_generated[index] else REAL_COLOUR
        size = inner - 6 + 2 * frame
        framed = np.empty((size, size, 3), np.uint8)
        framed[:] = colour
        framed[frame : frame + inner - 6, frame : frame + inner - 6] = tile
        # y grows upwards in the embedding, downwards on the canvas
        top = (cells - 1 - cell[index, 1]) * thumb + (thumb - size) // 2
        left = cell[index, 0] * thumb + (thumb - size) // 2
        canvas[top : top + size, left : left + size] = framed
    return canvas


def _legend_handles(real_count: int, fake_count: int) -> list[Patch]:
    return [
        Patch(facecolor=np.array(REAL_COLOUR) / 255, label=f"real ({real_count})"),
        Patch(facecolor=np.array(FAKE_COLOUR) / 255, label=f"generated ({fake_count})"),
    ]


def save_thumbnail_map(path, coords, images_uint8, is_generated, title: str) -> None:
    # a small set gets a coarser grid, so its thumbnails are not lost on an empty page
    cells = int(np.clip(round(1.5 * np.sqrt(len(coords))), 10, GRID_CELLS))
    canvas = thumbnail_canvas(coords, images_uint8, is_generated, cells=cells)
    dpi, title_inches = 100, 0.5
    width, height = canvas.shape[1] / dpi, canvas.shape[0] / dpi
    figure = Figure(figsize=(width, height + title_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0, 0, 1, height / (height + title_inches)))  # one canvas pixel per figure pixel
    axis.imshow(canvas, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.suptitle(title, fontsize=14, y=1 - 0.1 / (height + title_inches))
    axis.legend(handles=_legend_handles(int(np.sum(~is_generated)), int(np.sum(is_generated))), loc="upper right", fontsize=11, framealpha=0.9)
    with atomic_file(path) as f:
        figure.savefig(f, format="png")


def save_scatter_map(path, coords, is_generated, title: str, axis_labels: tuple[str, str]) -> None:
    figure = Figure(figsize=(7, 6), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    for flag, colour, name in ((False, REAL_COLOUR, "real"), (True, FAKE_COLOUR, "generated")):
        points = coords[is_generated == flag]
        axis.scatter(points[:, 0], points[:, 1], s=6, alpha=0.55, color=np.array(colour) / 255, label=f"{name} ({len(points)})", linewidths=0)
    axis.set_xlabel(axis_labels[0])
    axis.set_ylabel(axis_labels[1])
    axis.set_title(title, fontsize=11)
    axis.legend(markerscale=3, fontsize=9)
    figure.tight_layout()
    with atomic_file(path) as f:
        figure.savefig(f, format="png")


def save_maps(out_dir, real_features, fake_features, real_uint8, fake_uint8, seed: int = 0) -> dict:
    """Writes pca_thumbnails.png, pca_scatter.png, tsne_thumbnails.png, tsne_scatter.png.

    Returns {file name: short description} plus the settings used.
    """
    from pathlib import Path

    out_dir = Path(out_dir)
    features = np.concatenate([real_features, fake_features])
    images = np.concatenate([real_uint8, fake_uint8])
    is_generated = np.r_[np.zeros(len(real_features), bool), np.ones(len(fake_features), bool)]

    coords, variance = pca_embedding(features, seed)
    pca_labels = (f"PC1 ({100 * variance[0]:.1f}% of variance)", f"PC2 ({100 * variance[1]:.1f}%)")
    save_thumbnail_map(out_dir / "pca_thumbnails.png", coords, images, is_generated, "PCA of random-net features: real and generated (orange frame)")
    save_scatter_map(out_dir / "pca_scatter.png", coords, is_generated, "PCA of random-net features", pca_labels)

    subset = tsne_subsample(is_generated, seed)
    tsne_coords = tsne_embedding(features[subset], seed)
    sub_generated = is_generated[subset]
    save_thumbnail_map(out_dir / "tsne_thumbnails.png", tsne_coords, images[subset], sub_generated, "t-SNE of random-net features: real and generated (orange frame)")
    save_scatter_map(out_dir / "tsne_scatter.png", tsne_coords, sub_generated, f"t-SNE of random-net features ({len(subset)} images)", ("t-SNE 1", "t-SNE 2"))
    return {
        "pca_explained_variance": [float(v) for v in variance],
        "tsne_points": int(len(subset)),
        "tsne_settings": {"pca_dims": TSNE_PCA_DIMS, "perplexity": TSNE_PERPLEXITY, "method": "barnes_hut", "seed": seed},
    }
