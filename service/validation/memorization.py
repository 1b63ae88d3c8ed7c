"""Memorization audit: does any generated image copy a training image, as it is or turned,
mirrored or shifted?

A lesion image has no canonical orientation, so a mirrored, rotated or slightly shifted
training image is still that patient's lesion. The audit therefore compares each generated
image with each training image under the best alignment: the 8 flips and rotations by 90
degrees, and shifts of up to MAX_SHIFT pixels each way.

Space: pixels. Every image is resized to 32x32 (INTER_AREA), scaled to [0, 1] and blurred
lightly (Gaussian, sigma AUDIT_BLUR px), so light noise a generator adds does not hide a copy.
Two images are compared over the central (32 - 2 MAX_SHIFT)^2 window of one against the same
window of the other shifted by (dy, dx), each window less its own mean per channel (so a small
uniform colour change does not hide a copy either); the distance is the RMS difference, and
the aligned distance is the least over the 8 x 49 alignments.

Finding the nearest training image under alignment, for every generated image: candidates
first, the CANDIDATES nearest of all 8 turned versions of the training images by a coarse
descriptor (the 4x4 average of the image blurred further, less its mean colour: little changed
by a shift of a few pixels), then the exact aligned distance to each candidate. Per batch of
queries the descriptor distances to every turned training image are one matrix product; the
candidates are picked without sorting that whole matrix (see AlignedIndex.candidates), and the
exact distances to all of a query's candidates at all shifts are one batched product.

For a generated image g with aligned-nearest training image t:
    ratio(g) = d(g, t) / d(t, nearest other training image of t)
the gap below measured the same way, with "other" meaning another source image or patient when
the training images carry groups (patches of one image overlap; they are not other images). A
novel sample sits about as far from the training set as training images sit from each other
(ratio ~ 1); a copy sits much closer (ratio -> 0). Likely copies: ratio < 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from service.files import atomic_file
from service.validation.features import resize_images

AUDIT_SIZE = 32
AUDIT_BLUR = 1.0
MAX_SHIFT = 3
WINDOW = AUDIT_SIZE - 2 * MAX_SHIFT
DESCRIPTOR_SIZE = 4
DESCRIPTOR_BLUR = 1.5  # on top of AUDIT_BLUR: a shift of a few pixels barely moves the descriptor
CANDIDATES = 16
TURNS = 8  # the dihedral group of the square: 4 rotations, each mirrored or not
OFFSETS = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
COPY_RATIO_THRESHOLD = 0.5
PANEL_PAIRS = 16
SAME_IMAGE_DISTANCE = 1e-6  # RMS; one grey level on one pixel of 26x26x3 is 9e-5
QUERY_BATCH = 64  # queries per descriptor product: large enough for BLAS, small enough for memory
AUDIT_SPACE = {
    "description": f"pixels resized to {AUDIT_SIZE}x{AUDIT_SIZE} (INTER_AREA), RGB in [0, 1], Gaussian blur "
    f"sigma {AUDIT_BLUR}; RMS difference of the central {WINDOW}x{WINDOW} windows, each less its mean "
    f"colour, under the best of the 8 flips/rotations and shifts up to {MAX_SHIFT} px",
    "copy_ratio_threshold": COPY_RATIO_THRESHOLD,
    "max_shift_px": MAX_SHIFT,
    "turns": TURNS,
}


def turn(images: np.ndarray, k: int) -> np.ndarray:
    """Turn k of 8 of NHWC images: rotation by 90 * (k // 2) degrees, then mirrored if k is odd."""
    turned = np.rot90(images, k // 2, axes=(1, 2))
    return turned[:, :, ::-1] if k % 2 else turned


def prepare(images_uint8: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) float32 in [0, 1], resized and lightly blurred: the audit's pixels."""
    small = resize_images(np.asarray(images_uint8), AUDIT_SIZE).astype(np.float32) / np.float32(255.0)
    return np.stack([cv2.GaussianBlur(image, (0, 0), AUDIT_BLUR) for image in small]).reshape(small.shape)


def _descriptors(prepared: np.ndarray) -> np.ndarray:
    """(N, 4, 4, C): the candidate-finding descriptor, not yet flattened."""
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), DESCRIPTOR_BLUR) for image in prepared]).reshape(prepared.shape)
    small = resize_images(blurred, DESCRIPTOR_SIZE)
    return small - small.mean(axis=(1, 2), keepdims=True)


def _shifted_windows(prepared: np.ndarray) -> np.ndarray:
    """(N, SHIFTS, C*W*W): each image's window at every shift, channel-major, row-major over the
    shifts (dy, dx) as OFFSETS lists them."""
    view = np.lib.stride_tricks.sliding_window_view(prepared, (WINDOW, WINDOW), axis=(1, 2))  # N, 7, 7, C, W, W
    return view.reshape(len(prepared), len(OFFSETS), -1)


class AlignedIndex:
    """The training images and all 8 turns of each, ready for aligned nearest-neighbour queries.

    Candidate c stands for turn c // count of training image c % count. Only the central
    window of each training image (less its mean colour) is kept, 2028 float32 (8 KB) per image
    (200 MB for 25,000 images); a candidate's turned window is copied from it when a query
    needs it (the window is centred and square, so turning the image turns the window; blur
    and area resizing commute with turns, so turned images need not be prepared again). The index is plain arrays, so it pickles cheaply and
    Ray shares it through its object store without copies.
    """

    def __init__(self, train_prepared: np.ndarray, groups: np.ndarray | None = None):
        self.count = len(train_prepared)
        self.groups = None if groups is None else np.asarray(groups)
        self.channels = train_prepared.shape[3]
        window = train_prepared[:, MAX_SHIFT : MAX_SHIFT + WINDOW, MAX_SHIFT : MAX_SHIFT + WINDOW].transpose(0, 3, 1, 2)
        window = (window - window.mean(axis=(2, 3), keepdims=True)).reshape(self.count, -1)
        self.windows = np.ascontiguousarray(window, dtype=np.float32)
        self.window_norms = np.einsum("ij,ij->i", self.windows, self.windows)
        descriptors = _descriptors(train_prepared)
        turned = np.concatenate([turn(descriptors, k) for k in range(TURNS)])
        turned = turned.reshape(len(turned), -1).astype(np.float32)
        # one product gives |d|^2 - 2 q.d for every turned training descriptor d: the query's
        # descriptor is extended by a 1, the training side by its squared norm
        self.descriptor_matrix = np.ascontiguousarray(
            np.concatenate([-2.0 * turned, np.einsum("ij,ij->i", turned, turned)[:, None]], axis=1).T)
        largest_group = 1 if groups is None else int(np.unique(groups, return_counts=True)[1].max())
        self.exclusion_margin = TURNS * largest_group

    def candidates(self, descriptors: np.ndarray, fetch: int) -> np.ndarray:
        """(B, fetch) candidates nearest to each descriptor, nearest first.

        One product with every turned training descriptor gives (B, 8, count) squared distances
        (less the query's own norm, the same for every candidate). Selecting from all 8 x count
        would cost most of the query's time; instead the fetch-th smallest of the per-image
        minima over turns of any subset of the images, t, bounds the answer: at least `fetch`
        (turn, image) pairs lie at or below t, so the fetch nearest pairs are among the turns of
        the images whose minimum is at or below t, which are then ranked exactly.
        """
        extended = np.concatenate([descriptors.astype(np.float32), np.ones((len(descriptors), 1), np.float32)], axis=1)
        squared = extended @ self.descriptor_matrix  # B, TURNS * count
        total = squared.shape[1]
        if fetch >= self.count:  # the bound below needs `fetch` distinct images: rank every pair
            nearest = np.argpartition(squared, fetch - 1, axis=1)[:, :fetch] if fetch < total else \
                np.tile(np.arange(total), (len(squared), 1))
        else:
            by_turn = squared.reshape(len(squared), TURNS, self.count)
            per_image = np.minimum(by_turn[:, 0], by_turn[:, 1])
            for k in range(2, TURNS):
                np.minimum(per_image, by_turn[:, k], out=per_image)
            # the bound from every stride-th image only: still at least `fetch` images lie at or
            # below it, and selecting over sqrt(8 fetch count) images instead of all is cheaper
            stride = max(1, int(np.sqrt(self.count / (TURNS * fetch))))
            bound = np.partition(per_image[:, ::stride], fetch - 1, axis=1)[:, fetch - 1]
            turn_offsets = (np.arange(TURNS) * self.count)[:, None]
            nearest = np.empty((len(squared), fetch), np.int64)
            for row in range(len(squared)):
                within = (turn_offsets + np.flatnonzero(per_image[row] <= bound[row])).reshape(-1)
                nearest[row] = within[np.argpartition(squared[row, within], fetch - 1)[:fetch]]
        order = np.argsort(np.take_along_axis(squared, nearest, 1), axis=1, kind="stable")
        return np.take_along_axis(nearest, order, 1)

    def candidate_windows(self, found: np.ndarray) -> np.ndarray:
        """(B, K, C*W*W): the central window of each candidate, turned as the candidate says
        (a strided copy per turn: much cheaper than gathering by index)."""
        owners, turns = found % self.count, found // self.count
        grid = self.windows.reshape(self.count, self.channels, WINDOW, WINDOW)
        out = np.empty((*found.shape, self.windows.shape[1]), np.float32)
        for k in np.unique(turns):
            chosen = turns == k
            turned = np.rot90(grid[owners[chosen]], k // 2, axes=(2, 3))
            out[chosen] = (turned[..., ::-1] if k % 2 else turned).reshape(int(chosen.sum()), -1)
        return out

    def nearest(self, queries_prepared: np.ndarray, exclude_self: bool = False) -> dict:
        """For each query: aligned distance to its nearest training image, that image's index,
        and the turn and shift of the training image that align it. exclude_self: the queries
        are the training images themselves (in order), and each skips itself and its group."""
        results = {"distance": [], "nearest": [], "turn": [], "shift": []}
        fetch = min(TURNS * self.count, CANDIDATES + (self.exclusion_margin if exclude_self else 0))
        size = self.windows.shape[1]
        with threadpool_limits(limits=1, user_api="blas"):  # many small products: threads only contend
            for start in range(0, len(queries_prepared), QUERY_BATCH):
                batch = queries_prepared[start : start + QUERY_BATCH]
                rows = np.arange(len(batch))
                found = self.candidates(_descriptors(batch).reshape(len(batch), -1), fetch)
                usable = np.ones(found.shape, bool)
                if exclude_self:
                    owners = found % self.count
                    usable = owners != (start + rows)[:, None]
                    if self.groups is not None:
                        usable &= self.groups[owners] != self.groups[start : start + len(batch)][:, None]
                order = np.argsort(~usable, axis=1, kind="stable")[:, :CANDIDATES]  # the first usable ones
                found, usable = np.take_along_axis(found, order, 1), np.take_along_axis(usable, order, 1)
                windows = _shifted_windows(batch)  # B, SHIFTS, C*W*W
                # |window less its channel means|^2 from sums; the cross term needs no centring of
                # the query, the training windows being centred already
                sums = windows.reshape(len(batch), len(OFFSETS), batch.shape[3], -1).sum(axis=-1)
                norms = np.einsum("bsd,bsd->bs", windows, windows) - np.sum(sums * sums, axis=-1) / (WINDOW * WINDOW)
                cross = np.matmul(windows, self.candidate_windows(found).transpose(0, 2, 1))  # B, SHIFTS, K
                squared = (norms[:, :, None] + self.window_norms[found % self.count][:, None, :] - 2.0 * cross) / size
                squared[~np.broadcast_to(usable[:, None, :], squared.shape)] = np.inf
                if exclude_self:  # a training image stored twice: the gap is to the nearest *different* one
                    squared[squared <= SAME_IMAGE_DISTANCE**2] = np.inf
                flat = squared.reshape(len(batch), -1)
                best = np.argmin(flat, axis=1)
                shift, candidate = np.unravel_index(best, squared.shape[1:])
                chosen = found[rows, candidate]
                results["distance"].append(np.sqrt(np.maximum(flat[rows, best], 0.0)))
                results["nearest"].append(chosen % self.count)
                results["turn"].append(chosen // self.count)
                results["shift"].append(np.asarray(OFFSETS)[shift])
        if not results["distance"]:
            return {"distance": np.zeros(0, np.float32), "nearest": np.zeros(0, np.int64), "turn": np.zeros(0, np.int64),
                    "shift": np.zeros((0, 2), np.int64)}
        return {key: np.concatenate(value) for key, value in results.items()}


def memorization_audit(train_uint8: np.ndarray, fake_uint8: np.ndarray, train_groups=None) -> dict:
    """Per generated image: aligned-nearest training image, its distance, turn and shift, the
    training image's own gap and the copy ratio (see the module docstring).

    Returns arrays ("nearest_train", "distance", "train_gap", "ratio", "turn", "shift") and a
    summary ("copy_share", "copies", "median_ratio", "threshold").
    """
    train = prepare(train_uint8)
    index = AlignedIndex(train, train_groups)
    found = index.nearest(prepare(fake_uint8))
    gaps = index.nearest(train, exclude_self=True)["distance"]
    nearest, distance = found["nearest"], found["distance"]
    gap = gaps[nearest]
    ratio = copy_ratios(distance, gap)
    copies = ratio < COPY_RATIO_THRESHOLD
    return {
        "nearest_train": nearest,
        "distance": distance,
        "train_gap": gap,
        "ratio": ratio,
        "turn": found["turn"],
        "shift": found["shift"],
        "copy_share": float(np.mean(copies)),
        "copies": int(np.sum(copies)),
        "median_ratio": float(np.median(ratio)),
        "threshold": COPY_RATIO_THRESHOLD,
    }


def copy_ratios(distance: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """ratio = distance to the nearest training image / that image's gap (module docstring).
    With no other image to measure a gap against (one training image, one group, or copies of
    one image only) only an exact copy is a copy: ratio 0, else inf."""
    usable = np.isfinite(gap)
    return np.where(usable, distance / np.where(usable, gap, 1.0), np.where(distance > SAME_IMAGE_DISTANCE, np.inf, 0.0))


def audit_summary(audit: dict) -> dict:
    """The JSON-able part of an audit."""
    return {key: audit[key] for key in ("copy_share", "copies", "median_ratio", "threshold")}


def save_pairs_panel(path, audit: dict, fake_uint8: np.ndarray, train_uint8: np.ndarray, pairs: int = PANEL_PAIRS,
                     fake_ids=None) -> list[dict]:
    """PNG of the `pairs` closest (lowest ratio) pairs: generated | nearest training image.

    fake_ids: the number each generated image is shown and listed by (default: its position
    in fake_uint8; the streaming audit passes the images' indices in the generated set).
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
        turned = int(audit["turn"][fake_index])
        aligned = aligned_view(train_uint8[train_index], turned, audit["shift"][fake_index], fake_uint8.shape[1])
        row, column = divmod(slot, per_row)
        top = row * (tile + caption) + caption
        left = gap + column * (pair_width + 3 * gap)
        for offset, image in ((0, fake_uint8[fake_index]), (tile + gap, aligned)):
            canvas[top : top + tile, left + offset : left + offset + tile] = cv2.resize(image, (tile, tile), interpolation=interpolation)
        shown = int(fake_index if fake_ids is None else fake_ids[fake_index])
        captions.append((left + pair_width / 2, top - 4, f"gen {shown} | train {train_index}: ratio {ratio:.2f}", ratio < COPY_RATIO_THRESHOLD))
        listing.append({"generated": shown, "train": train_index, "ratio": ratio, "turn": turned,
                        "shift_px": [int(v) for v in audit["shift"][fake_index]]})

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
        f"{len(order)} closest pairs: generated (left) | nearest training image, turned and shifted to align (right); "
        f"red: ratio < {COPY_RATIO_THRESHOLD}",
        fontsize=10, y=1 - 0.08 / (height + title_inches),
    )
    with atomic_file(path) as f:
        figure.savefig(f, format="png")
    return listing


def aligned_view(train_image: np.ndarray, turned: int, shift, side: int) -> np.ndarray:
    """A training image as the audit aligned it to a generated one of `side` pixels: turned,
    then shifted (the audit's shift, scaled to that size; edges repeated)."""
    image = turn(train_image[None], turned)[0]
    scale = side / AUDIT_SIZE
    dy, dx = (float(v) * scale for v in shift)
    moved = cv2.warpAffine(np.ascontiguousarray(image), np.float32([[1, 0, dx], [0, 1, dy]]), (image.shape[1], image.shape[0]),
                           borderMode=cv2.BORDER_REPLICATE)
    return moved.reshape(image.shape)


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
    with atomic_file(path) as f:
        figure.savefig(f, format="png")
