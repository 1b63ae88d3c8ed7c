"""Distribution metrics between a real and a generated set: pure functions on arrays.

- `swd`: sliced Wasserstein distance on Laplacian-pyramid 7x7 patches, as in Karras et al.
  2018 (progressive_growing_of_gans, metrics/sliced_wasserstein.py), on uint8 NHWC images.
- `frechet_distance`, `kernel_distance` (KID), `precision_recall`, `density_coverage`: on
  feature vectors (see `features.py` for the space).
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

# Karras et al. 2018 settings.
SWD_PATCH_SIZE = 7
SWD_PATCHES_PER_IMAGE = 128
SWD_DIRECTION_REPEATS = 4
SWD_DIRECTIONS_PER_REPEAT = 128
SWD_MIN_RESOLUTION = 16
SWD_SCALE = 1e3

PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_GRAM_LIMIT = 5000  # 3 float64 kernel matrices of this side: 600 MB at most


# ----------------------------------------------------------------------------- SWD


def swd_resolutions(height: int, width: int) -> list[int]:
    """Pyramid levels as the original names them: the image side, halved while >= 16."""
    side, levels = min(height, width), []
    while side >= SWD_MIN_RESOLUTION:
        levels.append(side)
        side //= 2
    return levels


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Float32 HxWxC image -> [band-pass levels..., low-pass residual] (cv2.pyrDown/pyrUp)."""
    pyramid = [np.asarray(image, np.float32)]
    for _ in range(1, levels):
        smaller = cv2.pyrDown(pyramid[-1])
        if smaller.ndim == 2:
            smaller = smaller[..., None]
        height, width = pyramid[-1].shape[:2]
        upsampled = cv2.pyrUp(smaller, dstsize=(width, height)).reshape(pyramid[-1].shape)
        pyramid[-1] = pyramid[-1] - upsampled
        pyramid.append(smaller)
    return pyramid


def swd_random_draws(seed: int, count: int, level_shapes: list[tuple[int, int]], channels: int = 3) -> list[dict]:
    """Every random number SWD uses, in a fixed order, so a result is a function of `seed`.

    Per level: patch centres (rows, then columns; in [3, side - 3) as the original's
    randint(H, S - H)), then the direction repeats. Image i of either set is sampled at the
    same centres (common random numbers): each set's patches are still a uniform sample, the
    comparison just loses the noise of independent positions, and identical sets score 0.
    """
    rng = np.random.default_rng(seed)
    half = SWD_PATCH_SIZE // 2
    dims = channels * SWD_PATCH_SIZE * SWD_PATCH_SIZE
    draws = []
    for height, width in level_shapes:
        rows = rng.integers(half, height - half, size=count * SWD_PATCHES_PER_IMAGE)
        cols = rng.integers(half, width - half, size=count * SWD_PATCHES_PER_IMAGE)
        directions = []
        for _ in range(SWD_DIRECTION_REPEATS):
            d = rng.standard_normal((dims, SWD_DIRECTIONS_PER_REPEAT))
            d /= np.sqrt(np.sum(d * d, axis=0, keepdims=True))
            directions.append(d.astype(np.float32))
        draws.append({"centres": (rows, cols), "directions": directions})
    return draws


def _patch_descriptors(levels_per_image: list[np.ndarray], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Patches (image i owns patches i*128 .. i*128+127), per-channel normalised over the set.

    Returns (patches, C*7*7) float32 in the original's (channel, y, x) component order.
    """
    stack = np.stack(levels_per_image)  # N, H, W, C
    half = SWD_PATCH_SIZE // 2
    windows = np.lib.stride_tricks.sliding_window_view(stack, (SWD_PATCH_SIZE, SWD_PATCH_SIZE), axis=(1, 2))
    image_index = np.repeat(np.arange(len(stack)), SWD_PATCHES_PER_IMAGE)
    patches = windows[image_index, rows - half, cols - half].astype(np.float32)  # P, C, 7, 7
    patches -= patches.mean(axis=(0, 2, 3), keepdims=True)
    std = patches.std(axis=(0, 2, 3), keepdims=True)
    patches /= np.where(std > 0, std, 1.0)  # a flat channel stays 0 instead of NaN
    return patches.reshape(len(patches), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: list[np.ndarray]) -> float:
    """Mean |sorted projection of a - sorted projection of b| over patches, directions, repeats."""
    a_t, b_t = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    results = []
    for d in directions:  # one repeat at a time: (directions x patches) float32 stays ~130 MB
        projected_a = d.T @ a_t
        projected_b = d.T @ b_t
        projected_a.sort(axis=1)  # along contiguous rows: each direction's projections
        projected_b.sort(axis=1)
        np.subtract(projected_a, projected_b, out=projected_a)
        np.abs(projected_a, out=projected_a)
        results.append(float(projected_a.mean(dtype=np.float64)))
    return float(np.mean(results))


def swd(real_uint8: np.ndarray, fake_uint8: np.ndarray, seed: int = 0, progress: bool = False) -> dict:
    """Sliced Wasserstein distance (x1e3) per pyramid level and averaged.

    Both sets must hold the same number of patches, so the larger set is first subsampled
    (without replacement, from `seed`) to the size of the smaller one.
    Returns {"levels": {resolution: value}, "mean": value, "images": count used}.
    """
    real_uint8, fake_uint8 = np.asarray(real_uint8), np.asarray(fake_uint8)
    if real_uint8.shape[1:] != fake_uint8.shape[1:]:
        raise ValueError(f"image shapes differ: {real_uint8.shape[1:]} vs {fake_uint8.shape[1:]}")
    count = min(len(real_uint8), len(fake_uint8))
    subsample = np.random.default_rng([seed, 1])
    if len(real_uint8) > count:
        real_uint8 = real_uint8[np.sort(subsample.choice(len(real_uint8), count, replace=False))]
    if len(fake_uint8) > count:
        fake_uint8 = fake_uint8[np.sort(subsample.choice(len(fake_uint8), count, replace=False))]
    height, width, channels = real_uint8.shape[1:]
    resolutions = swd_resolutions(height, width)
    if not resolutions:
        raise ValueError(f"SWD needs images of at least {SWD_MIN_RESOLUTION}x{SWD_MIN_RESOLUTION}")

    pyramids_real = [laplacian_pyramid(image, len(resolutions)) for image in real_uint8]
    pyramids_fake = [laplacian_pyramid(image, len(resolutions)) for image in fake_uint8]
    level_shapes = [p.shape[:2] for p in pyramids_real[0]]
    draws = swd_random_draws(seed, count, level_shapes, channels)
    values = {}
    for level, resolution in enumerate(_progress(resolutions, progress, "swd levels")):
        desc_real = _patch_descriptors([p[level] for p in pyramids_real], *draws[level]["centres"])
        desc_fake = _patch_descriptors([p[level] for p in pyramids_fake], *draws[level]["centres"])
        values[int(resolution)] = SWD_SCALE * sliced_wasserstein(desc_real, desc_fake, draws[level]["directions"])
        del desc_real, desc_fake  # one level's descriptors at a time keeps memory flat
    return {"levels": values, "mean": float(np.mean(list(values.values()))), "images": int(count)}


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


# ----------------------------------------------------------------------------- Frechet, KID


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of Gaussians fitted to two feature sets."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^1/2 = sum of sqrt eigenvalues of the symmetric S_a^1/2 S_b S_a^1/2: two
    # eigh calls, faster and steadier than a general matrix square root
    # (one BLAS thread: these matrices are small, and threads contending for shared cores made
    # each eigh 20x slower in measurements)
    with threadpool_limits(limits=1, user_api="blas"):
        eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
        sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
        product_eigenvalues = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_covmean = float(np.sum(np.sqrt(np.clip(product_eigenvalues, 0, None))))
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean
    return float(max(value, 0.0))  # rounding can leave a tiny negative for identical sets


def kernel_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    seed: int = 0,
    subsets: int = KID_SUBSETS,
    max_subset_size: int = KID_MAX_SUBSET_SIZE,
) -> dict:
    """KID: unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3, averaged over random subsets.

    Returns {"mean", "std"} over the subsets (Binkowski et al. 2018; subset scheme as in the
    StyleGAN2-ADA / clean-fid implementations). Up to KID_GRAM_LIMIT points per set the three
    kernel matrices are computed once and each subset only sums a block of them.
    """
    a = np.asarray(features_a, np.float32)
    b = np.asarray(features_b, np.float32)
    dim = a.shape[1]
    m = min(len(a), len(b), max_subset_size)

    def kernel(x, y):
        return (np.asarray(x @ y.T, np.float64) / dim + 1.0) ** 3

    rng = np.random.default_rng(seed)
    picks_a = np.empty((subsets, m), np.int64)
    picks_b = np.empty((subsets, m), np.int64)
    for s in range(subsets):
        picks_b[s] = rng.choice(len(b), m, replace=False)
        picks_a[s] = rng.choice(len(a), m, replace=False)

    if max(len(a), len(b)) <= KID_GRAM_LIMIT:
        # each subset's block sum is u^T K v for 0/1 indicator columns u, v: all subsets in 3 matmuls
        def indicators(picks, n):
            u = np.zeros((n, subsets))
            u[picks.T, np.arange(subsets)[None, :]] = 1.0
            return u

        u_a, u_b = indicators(picks_a, len(a)), indicators(picks_b, len(b))
        k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
        sum_aa = np.einsum("is,is->s", u_a, k_aa @ u_a) - np.diag(k_aa) @ u_a
        sum_bb = np.einsum("is,is->s", u_b, k_bb @ u_b) - np.diag(k_bb) @ u_b
        sum_ab = np.einsum("is,is->s", u_a, k_ab @ u_b)
    else:
        sum_aa, sum_bb, sum_ab = np.empty(subsets), np.empty(subsets), np.empty(subsets)
        for s in range(subsets):
            x, y = b[picks_b[s]], a[picks_a[s]]
            k_xx, k_yy = kernel(x, x), kernel(y, y)
            sum_bb[s] = k_xx.sum() - np.trace(k_xx)
            sum_aa[s] = k_yy.sum() - np.trace(k_yy)
            sum_ab[s] = kernel(y, x).sum()
    estimates = (sum_aa + sum_bb) / (m * (m - 1)) - 2.0 * sum_ab / (m * m)
    return {"mean": float(estimates.mean()), "std": float(estimates.std())}


# ----------------------------------------------------------------------------- k-NN metrics


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of every point to its k-th nearest neighbour in its own set (itself excluded)."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]


def _ball_counts(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For every query, how many balls B(centre_i, radius_i) contain it (chunked: bounded memory)."""
    counts = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        distances = pairwise_distances(queries[start : start + chunk], centres)
        counts[start : start + chunk] = (distances <= radii[None, :]).sum(axis=1)
    return counts


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray, k: int = PRECISION_RECALL_K) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls.

    precision: share of generated points inside the real manifold (some real k-NN ball);
    recall: share of real points inside the generated manifold.
    """
    real_radii = knn_radii(real_features, k)
    fake_radii = knn_radii(fake_features, k)
    precision = float(np.mean(_ball_counts(fake_features, real_features, real_radii) > 0))
    recall = float(np.mean(_ball_counts(real_features, fake_features, fake_radii) > 0))
    return {"precision": precision, "recall": recall}


def density_coverage(real_features: np.ndarray, fake_features: np.ndarray, k: int = DENSITY_COVERAGE_K) -> dict:
    """Density and coverage (Naeem et al. 2020), real k-NN balls only.

    density: mean number of real balls holding a generated point, / k (about 1 when matched);
    coverage: share of real points whose ball holds at least one generated point.
    """
    real_radii = knn_radii(real_features, k)
    density = float(_ball_counts(fake_features, real_features, real_radii).sum() / (k * len(fake_features)))
    return {"density": density, "coverage": coverage_in_balls(real_features, fake_features, real_radii)}


def coverage_in_balls(real_features: np.ndarray, fake_features: np.ndarray, real_radii: np.ndarray) -> float:
    """Coverage given the real balls' radii (knn_radii of the real set): the share of real points
    whose ball holds at least one generated point. The radii depend on the real set alone, so a
    caller comparing many generated sets with one real set computes them once."""
    nearest_fake, _ = NearestNeighbors(n_neighbors=1).fit(fake_features).kneighbors(real_features)
    return float(np.mean(nearest_fake[:, 0] <= real_radii))


def feature_metrics(real_features: np.ndarray, fake_features: np.ndarray, seed: int = 0) -> dict:
    """FD, KID, precision/recall, density/coverage of two feature sets, as one flat dict."""
    kid = kernel_distance(real_features, fake_features, seed=seed)
    return {
        "fd": frechet_distance(real_features, fake_features),
        "kid": kid["mean"],
        "kid_std": kid["std"],
        **precision_recall(real_features, fake_features),
        **density_coverage(real_features, fake_features),
    }
