"""Validation metrics on known distributions, the memorization audit, the report and the CLI."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import scipy.ndimage
import scipy.linalg
import scipy.stats

from service.errors import UserError
from service.validation import memorization, metrics
from service.validation.features import FEATURE_DIM, random_net_features


def lesion_like_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Structured uint8 images: smooth coloured background plus a blurred blob of another colour."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        background = cv2.resize(rng.uniform(120, 230, (4, 4, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        cy, cx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.3)
        inside = (((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2).astype(np.float32)
        inside = cv2.GaussianBlur(inside, (0, 0), 1.0)[..., None]
        blob = rng.uniform(30, 120, 3).astype(np.float32)
        texture = rng.normal(0, 8, (size, size, 3)).astype(np.float32)
        images[i] = np.clip(background * (1 - inside) + blob * inside + texture, 0, 255).astype(np.uint8)
    return images


def brighten(images, amount):
    return np.clip(images.astype(np.int16) + amount, 0, 255).astype(np.uint8)


def blur(images, sigma):
    if sigma == 0:
        return images.copy()
    return np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in images])


@pytest.fixture(scope="module")
def real_images():
    return lesion_like_images(64, seed=1)


@pytest.fixture(scope="module")
def real_features(real_images):
    return random_net_features(real_images)


# ----------------------------------------------------------------------------- metrics


def test_identical_sets_score_zero(real_images, real_features):
    assert metrics.swd(real_images, real_images)["mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(real_features, real_features) == pytest.approx(0.0, abs=1e-6)
    kid = metrics.kernel_distance(real_features, real_features)
    other_kid = metrics.kernel_distance(real_features, random_net_features(brighten(real_images, 30)))
    assert abs(kid["mean"]) < 0.02 * other_kid["mean"]
    assert metrics.precision_recall(real_features, real_features) == {"precision": 1.0, "recall": 1.0}
    assert metrics.density_coverage(real_features, real_features)["coverage"] == 1.0


def add_noise(images, sigma):
    noise = np.random.default_rng(7).normal(0, 1, images.shape) * sigma
    return np.clip(images + noise, 0, 255).astype(np.uint8)


DISTORTIONS = {
    "brightness": (brighten, (0, 8, 20, 45)),
    "blur": (blur, (0, 0.6, 1.2, 2.5)),
    "noise": (add_noise, (0, 4, 10, 25)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blur", "noise"])
def test_swd_worse_monotonically_with_distortion(real_images, name):
    distort, amounts = DISTORTIONS[name]
    values = [metrics.swd(real_images, distort(real_images, amount))["mean"] for amount in amounts]
    assert all(a < b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("name", ["brightness", "blur", "noise"])
def test_fd_worse_monotonically_with_distortion(real_images, real_features, name):
    distort, amounts = DISTORTIONS[name]
    values = [metrics.frechet_distance(real_features, random_net_features(distort(real_images, amount))) for amount in amounts]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_swd_ignores_a_uniform_brightness_shift_by_design(real_images):
    # each set's patches are normalised per channel (Karras et al.), so a global offset cancels
    # (apart from clipping); FD and KID are the metrics that see it
    shifted = brighten(real_images, 20)
    assert metrics.swd(real_images, shifted)["mean"] < 0.2 * metrics.swd(real_images, blur(real_images, 1.2))["mean"]


def _brute_force_swd(real, fake, seed):
    """SWD written out directly: scipy pyramid (mirror border, as cv2), loops, scipy's 1-D W1."""
    gaussian = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256

    def pyramid(image, levels):
        planes = [np.asarray(image, np.float64)[..., c] for c in range(3)]
        out = [planes]
        for _ in range(1, levels):
            down = [scipy.ndimage.convolve(p, gaussian, mode="mirror")[::2, ::2] for p in out[-1]]
            up = []
            for p_small, p_big in zip(down, out[-1]):
                zeros = np.zeros_like(p_big)
                zeros[::2, ::2] = p_small
                up.append(scipy.ndimage.convolve(zeros, gaussian * 4, mode="mirror"))
            out[-1] = [big - u for big, u in zip(out[-1], up)]
            out.append(down)
        return out

    levels = metrics.swd_resolutions(*real.shape[1:3])
    pyr_real = [pyramid(image, len(levels)) for image in real]
    pyr_fake = [pyramid(image, len(levels)) for image in fake]
    draws = metrics.swd_random_draws(seed, len(real), [p[0].shape for p in pyr_real[0]])
    values = []
    for level in range(len(levels)):
        rows, cols = draws[level]["centres"]
        descriptors = []
        for pyr in (pyr_real, pyr_fake):
            patches = []
            for p in range(len(rows)):
                image = pyr[p // metrics.SWD_PATCHES_PER_IMAGE][level]
                r, c = rows[p], cols[p]
                patches.append([ch[r - 3 : r + 4, c - 3 : c + 4] for ch in image])
            patches = np.array(patches)  # P, C, 7, 7
            for ch in range(3):
                patches[:, ch] = (patches[:, ch] - patches[:, ch].mean()) / patches[:, ch].std()
            descriptors.append(patches.reshape(len(patches), -1))
        per_repeat = []
        for directions in draws[level]["directions"]:
            per_direction = [
                scipy.stats.wasserstein_distance(descriptors[0] @ d, descriptors[1] @ d) for d in directions.astype(np.float64).T
            ]
            per_repeat.append(np.mean(per_direction))
        values.append(1e3 * np.mean(per_repeat))
    return values


def test_swd_matches_brute_force():
    real = lesion_like_images(3, size=32, seed=5)
    fake = blur(lesion_like_images(3, size=32, seed=6), 1.0)
    result = metrics.swd(real, fake, seed=3)
    expected = _brute_force_swd(real, fake, seed=3)
    assert list(result["levels"]) == [32, 16]
    np.testing.assert_allclose(list(result["levels"].values()), expected, rtol=2e-4)
    assert result["mean"] == pytest.approx(np.mean(expected), rel=2e-4)


def test_swd_unequal_counts_use_a_subsample(real_images):
    result = metrics.swd(real_images, real_images[:40])
    assert result["images"] == 40 and result["mean"] > 0


def test_frechet_matches_matrix_square_root():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b)))
    assert metrics.frechet_distance(a, b) == pytest.approx(direct, rel=1e-6)


def unbiased_mmd2_cubic(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2 between two equal-size sets, unbiased (Gretton et al. 2012, eq. 3): the within-set
    means skip each point's kernel with itself, the cross mean takes every pair; kernel
    k(u, v) = (u.v / d + 1)^3. Written pair by pair, in float64, apart from the code under test."""
    n, d = len(x), x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    within_x = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_y = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    across = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    return within_x + within_y - 2.0 * across


def float32_values(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float64)  # KID reads features as float32


@pytest.mark.parametrize("gram_limit", [5000, 0], ids=["kernel-matrices", "per-subset"])
def test_kid_is_the_unbiased_mmd2_of_the_cubic_kernel(monkeypatch, gram_limit):
    """With every point in each subset, each subset's estimate is the two whole sets' unbiased
    MMD^2 (it does not depend on the order the points are drawn in), computed here pair by pair."""
    monkeypatch.setattr(metrics, "KID_GRAM_LIMIT", gram_limit)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.4, 1.2, size=(40, 6))
    expected = unbiased_mmd2_cubic(float32_values(a), float32_values(b))
    assert expected > 0.05  # the sets differ: not a trivial zero
    kid = metrics.kernel_distance(a, b, seed=7, subsets=3, max_subset_size=100)
    assert kid["mean"] == pytest.approx(expected, rel=1e-5)
    assert kid["std"] == pytest.approx(0.0, abs=1e-6 * expected)

    # unbiased means not clipped at 0: two samples of one distribution can score below it
    pairs = (rng.normal(size=(2, 12, 6)) for _ in range(50))
    x, y = next((x, y) for x, y in pairs if unbiased_mmd2_cubic(float32_values(x), float32_values(y)) < 0)
    expected = unbiased_mmd2_cubic(float32_values(x), float32_values(y))
    assert metrics.kernel_distance(x, y, seed=7, subsets=2, max_subset_size=100)["mean"] == pytest.approx(expected, rel=1e-5)


def test_kid_block_sums_match_per_subset_kernels(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(90, 16)), rng.normal(0.3, 1, size=(70, 16))
    fast = metrics.kernel_distance(a, b, seed=4, subsets=10, max_subset_size=50)
    monkeypatch.setattr(metrics, "KID_GRAM_LIMIT", 0)
    slow = metrics.kernel_distance(a, b, seed=4, subsets=10, max_subset_size=50)
    assert fast["mean"] == pytest.approx(slow["mean"], rel=1e-5)
    assert fast["mean"] > 0


def test_density_coverage_and_precision_on_known_layout():
    # real: two far-apart clusters; generated: copies of cluster A plus points far from both
    rng = np.random.default_rng(2)
    cluster_a = rng.normal(size=(100, 8))
    real = np.concatenate([cluster_a, rng.normal(size=(100, 8)) + 1000.0])
    fake = np.concatenate([cluster_a + 1e-3, rng.normal(size=(100, 8)) - 1000.0])
    assert metrics.precision_recall(real, fake) == {"precision": 0.5, "recall": 0.5}
    dc = metrics.density_coverage(real, fake)
    assert dc["coverage"] == 0.5
    # density counts real balls per generated point / k: half the points score as copies of A do
    assert dc["density"] == pytest.approx(0.5 * metrics.density_coverage(cluster_a, cluster_a + 1e-3)["density"])


def test_density_and_coverage_against_a_hand_computed_example():
    """Naeem et al. 2020: density = 1/(kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))], coverage =
    share of real X_i whose ball holds some Y_j. Real points 0, 1, 3, 7 on a line."""
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    # k = 1: radii 1, 1, 2, 4; balls [-1, 1], [0, 2], [1, 5], [3, 11]
    # 0.5 lies in 2 balls, 1.5 in 2, 2.5 in 1, 6.5 in 1, 20 in none: 6 / (1 * 5)
    fake = np.array([[0.5], [1.5], [2.5], [6.5], [20.0]])
    assert metrics.density_coverage(real, fake, k=1) == {"density": pytest.approx(1.2), "coverage": 1.0}
    # without 0.5, the ball of 0 holds nothing: 1.5 in 2 balls, 2.5 in 1, 6.5 in 1: 4 / (1 * 4)
    assert metrics.density_coverage(real, fake[1:], k=1) == {"density": pytest.approx(1.0), "coverage": 0.75}
    # k = 2: radii 3, 2, 3, 6; balls [-3, 3], [-1, 3], [0, 6], [1, 13]
    # 0.5 in 3 balls, 1.5 in 4, 2.5 in 4, 6.5 in 1, 20 in none: 12 / (2 * 5)
    assert metrics.density_coverage(real, fake, k=2) == {"density": pytest.approx(1.2), "coverage": 1.0}


def test_features_are_fixed_and_shaped(real_images):
    first = random_net_features(real_images[:5])
    assert first.shape == (5, FEATURE_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, random_net_features(real_images[:5]))
    # batch composition does not change an image's features
    np.testing.assert_allclose(first[2], random_net_features(real_images[2:3])[0], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- memorization


def test_audit_flags_copies_and_not_novel_images():
    train = lesion_like_images(120, seed=10)
    rng = np.random.default_rng(0)
    copied = rng.choice(120, 12, replace=False)
    copies = brighten(train[copied], rng.integers(-3, 4, size=(12, 1, 1, 1)))  # near-exact copies
    novel = lesion_like_images(40, seed=11)
    fake = np.concatenate([copies, novel])
    audit = memorization.memorization_audit(train, fake)
    flagged = audit["ratio"] < memorization.COPY_RATIO_THRESHOLD
    np.testing.assert_array_equal(flagged, np.r_[np.ones(12, bool), np.zeros(40, bool)])
    np.testing.assert_array_equal(audit["nearest_train"][:12], copied)
    assert audit["copies"] == 12
    # held-out images of the same distribution look novel too
    held_out = memorization.memorization_audit(train, lesion_like_images(60, seed=12))
    assert held_out["copies"] == 0 and 0.7 < held_out["median_ratio"] < 1.6


def shifted(images, dy: int, dx: int):
    """Images moved by (dy, dx) pixels, the uncovered edge repeated (not wrapped around)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return np.stack([cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE) for image in images])


@pytest.mark.parametrize("size", [32, 64])
def test_audit_flags_turned_mirrored_shifted_noisy_and_recoloured_copies(size):
    """A lesion has no canonical orientation: a training image mirrored, turned, moved by a few
    pixels, lightly noised or slightly recoloured is still a copy; novel images are not."""
    train = lesion_like_images(150, size=size, seed=20)
    rng = np.random.default_rng(1)
    picked = rng.choice(150, 10, replace=False)
    source = train[picked]
    step = size // 32 * 3  # 3 px at 32x32, 6 px at 64x64: the audit's reach at its 32x32 scale
    transformed = {
        "mirrored": source[:, :, ::-1],
        "turned 90": np.rot90(source, 1, axes=(1, 2)),
        "turned 180 and mirrored": np.rot90(source, 2, axes=(1, 2))[:, ::-1],
        "shifted": shifted(source, step, -step),
        "noised": np.clip(source + rng.normal(0, 4, source.shape), 0, 255).astype(np.uint8),
        "recoloured": brighten(source, np.array([5, -3, 2])),
    }
    for name, copies in transformed.items():
        audit = memorization.memorization_audit(train, np.ascontiguousarray(copies))
        assert audit["copies"] == len(copies), (name, audit["ratio"])
        np.testing.assert_array_equal(audit["nearest_train"], picked, err_msg=name)
    novel = memorization.memorization_audit(train, lesion_like_images(60, size=size, seed=21))
    assert novel["copies"] == 0 and 0.7 < novel["median_ratio"] < 1.6


def test_audit_gap_skips_the_copy_s_own_group():
    """Overlapping patches of one source image are not other images: with groups, a training
    image's gap is measured to other sources, so copies of it still stand out."""
    sources = lesion_like_images(40, seed=22)
    train = np.concatenate([sources, shifted(sources, 1, 1)])  # each source twice, one pixel apart
    groups = np.concatenate([np.arange(40), np.arange(40)])
    fake = sources[:8]
    without = memorization.memorization_audit(train, fake)
    grouped = memorization.memorization_audit(train, fake, groups)
    assert grouped["copies"] == 8
    assert np.all(grouped["train_gap"] > without["train_gap"])


def test_audit_handles_duplicated_training_images():
    train = lesion_like_images(30, seed=13)
    train = np.concatenate([train, train[:1]])  # image 0 twice: its nearest-neighbour gap is 0
    audit = memorization.memorization_audit(train, np.concatenate([train[:1], lesion_like_images(5, seed=14)]))
    assert audit["ratio"][0] == 0.0 and audit["copies"] == 1
    assert np.all(np.isfinite(audit["ratio"])) and np.all(audit["train_gap"] > 0)


# ----------------------------------------------------------------------------- report


def _html_references(html_text: str) -> set[str]:
    return set(re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html_text))


@pytest.fixture(scope="module")
def report(tmp_path_factory, real_images):
    from service.validation import validate_sets

    out = tmp_path_factory.mktemp("report")
    run_dir = tmp_path_factory.mktemp("run")
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(20):
            f.write(json.dumps({"type": "step", "step": step, "d_loss": 1.0 / (step + 1), "g_loss": 0.5 + 0.01 * step}) + "\n")
    fake = blur(lesion_like_images(40, seed=3), 0.8)
    train = np.concatenate([real_images[:40], fake[:4]])  # four generated images are training copies
    labels_real = np.arange(len(real_images)) % 3
    labels_fake = np.arange(len(fake)) % 2  # class 2 never generated
    result = validate_sets(
        real_images, fake, train=train, out_dir=out, real_labels=labels_real, fake_labels=labels_fake,
        class_names=["nevus", "melanoma", "seborrheic_keratosis"], run_dir=run_dir, progress=False,
    )
    return out, result


@pytest.mark.slow
def test_report_files_exist_and_html_links_resolve(report):
    out, result = report
    html_text = (out / "report.html").read_text()
    references = _html_references(html_text)
    assert references, "the report links no file"
    for name in references:
        assert not re.match(r"^[a-z]+:|^/", name), f"non-relative link {name}"
        assert (out / name).is_file(), f"report.html references missing {name}"
    expected = {
        "metrics.json", "real_samples.png", "generated_samples.png", "loss_curve.png", "pca_thumbnails.png", "pca_scatter.png",
        "tsne_thumbnails.png", "tsne_scatter.png", "memorization_pairs.png", "memorization_ratios.png",
    }
    assert expected <= references
    for name in expected:
        assert (out / name).stat().st_size > 1000
    assert set(result["files"].values()) <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_report_metrics_json(report):
    out, result = report
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == result
    main, reference = on_disk["real_vs_generated"], on_disk["real_vs_real"]
    for key in ("swd_mean", "fd", "kid", "precision", "recall", "density", "coverage", "copy_share"):
        assert key in main and key in reference
    assert main["copies"] >= 4  # the planted copies
    assert main["swd_mean"] > reference["swd_mean"]
    assert set(on_disk["per_class"]) == {"nevus", "melanoma", "seborrheic_keratosis"}
    assert "skipped" in on_disk["per_class"]["seborrheic_keratosis"]
    assert "real_vs_generated" in on_disk["per_class"]["nevus"]
    assert on_disk["counts"]["reference_half"] == 32


def test_mismatched_sizes_are_a_user_error(tmp_path, real_images):
    from service.validation import validate_sets

    with pytest.raises(UserError, match="sizes differ"):
        validate_sets(real_images, lesion_like_images(20, size=64), out_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="at least"):
        validate_sets(real_images[:8], real_images[8:30], out_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_grouped_real_sets_split_the_reference_by_group(tmp_path):
    """Each source image appears twice (a patch and its shifted twin): halves by image put
    twins on both sides, and the reference audit then calls them copies; halves by group
    keep twins together, and the reference is honest."""
    from service.validation import validate_sets

    sources = lesion_like_images(24, seed=30)
    twins = np.roll(sources, 1, axis=2)
    real = np.concatenate([sources, twins])
    groups = np.concatenate([np.arange(24), np.arange(24)])
    fake = lesion_like_images(20, seed=31)
    by_image = validate_sets(real, fake, out_dir=tmp_path / "a", progress=False)
    by_group = validate_sets(real, fake, out_dir=tmp_path / "b", progress=False, real_groups=groups)
    assert by_image["real_vs_real"]["copies"] > 0 and by_image["reference_groups"] is None
    assert by_group["real_vs_real"]["copies"] == 0 and by_group["reference_groups"] == 24
    assert by_group["counts"]["reference_half"] == 24
    assert "split by 24 groups" in (tmp_path / "b" / "report.html").read_text()


def test_cli_takes_groups_and_the_image_size_from_an_npz(tmp_path, capsys):
    from service.run import main

    images = lesion_like_images(24, seed=20)
    np.savez(tmp_path / "real.npz", x=images, image=np.arange(24) // 2)
    fake = _write_npz(tmp_path / "fake.npz", lesion_like_images(12, seed=21))
    out = tmp_path / "out"
    assert main(["validate", "--real", str(tmp_path / "real.npz"), "--fake", fake, "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["reference_groups"] == 12 and result["image_size"] == [32, 32]


# ----------------------------------------------------------------------------- CLI


def _write_npz(path, images):
    np.savez(path, train_images=images)
    return str(path)


def test_cli_validates_npz_sets(tmp_path, capsys):
    from service.run import main

    real = _write_npz(tmp_path / "real.npz", lesion_like_images(24, seed=20))
    fake = _write_npz(tmp_path / "fake.npz", lesion_like_images(12, seed=21))
    out = tmp_path / "out"
    assert main(["validate", "--real", real, "--fake", fake, "--out", str(out), "--image-size", "32"]) == 0
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    assert "SWD" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_gives_per_class_values_when_both_sets_carry_labels(tmp_path):
    from service.run import main

    np.savez(tmp_path / "real.npz", train_images=lesion_like_images(36, seed=20), train_labels=np.arange(36) % 3)
    np.savez(tmp_path / "fake.npz", train_images=lesion_like_images(24, seed=21), train_labels=np.arange(24) % 2)
    out = tmp_path / "out"
    assert main(["validate", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz"),
                 "--out", str(out), "--no-progress"]) == 0
    per_class = json.loads((out / "metrics.json").read_text())["per_class"]
    assert len(per_class) == 3
    assert sum("skipped" in values for values in per_class.values()) == 1  # the class never generated
    assert sum("real_vs_generated" in values for values in per_class.values()) == 2


@pytest.mark.parametrize(
    "case, message",
    [("missing_real", "no such file"), ("too_few", "at least"), ("missing_weights", "no such file"), ("bad_weights", "cannot load")],
)
def test_cli_bad_input_is_exit_2_with_one_line(tmp_path, capsys, case, message):
    from service.run import main

    real = _write_npz(tmp_path / "real.npz", lesion_like_images(24, seed=20))
    fake = _write_npz(tmp_path / "fake.npz", lesion_like_images(12, seed=21))
    args = ["validate", "--real", real, "--fake", fake, "--out", str(tmp_path / "out"), "--image-size", "32"]
    if case == "missing_real":
        args[2] = str(tmp_path / "nowhere")
    elif case == "too_few":
        args[4] = _write_npz(tmp_path / "few.npz", lesion_like_images(3, seed=22))
    elif case == "missing_weights":
        args += ["--inception-weights", str(tmp_path / "inception.h5")]
    else:
        (tmp_path / "inception.h5").write_bytes(b"not a weights file")
        args += ["--inception-weights", str(tmp_path / "inception.h5")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.slow
def test_a_file_that_is_not_inception_weights_is_one_line_on_stderr_without_framework_logs(tmp_path):
    """In a fresh process, as a user runs it (no TF_CPP_MIN_LOG_LEVEL of their own): stderr is
    the error line alone, no TensorFlow, oneDNN or CUDA start-up lines before it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    real = _write_npz(tmp_path / "real.npz", lesion_like_images(24, seed=20))
    fake = _write_npz(tmp_path / "fake.npz", lesion_like_images(12, seed=21))
    (tmp_path / "inception.h5").write_bytes(b"not a weights file")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LESIONGAN_TF_LOGS")}
    done = subprocess.run(
        [sys.executable, "-m", "service.run", "validate", "--real", real, "--fake", fake, "--out", str(tmp_path / "out"),
         "--image-size", "32", "--inception-weights", str(tmp_path / "inception.h5"), "--no-progress"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --inception-weights: cannot load") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_inception_weights_add_inception_scores_to_the_metrics(tmp_path, real_images, monkeypatch):
    """--inception-weights reaches metrics.json (FD/KID in that space, the file named); a
    stand-in extractor replaces InceptionV3, whose weights cannot be downloaded here."""
    from service.validation import evaluate, validate_sets

    class StandInInception:
        def __init__(self, weights_path):
            self.weights_path = str(weights_path)

        def __call__(self, images, progress=False, desc=""):
            return np.asarray(images, np.float64).reshape(len(images), -1)[:, :64] / 255.0

    monkeypatch.setattr(evaluate, "InceptionFeatures", StandInInception)
    fake = blur(lesion_like_images(40, seed=3), 0.8)
    result = validate_sets(real_images, fake, out_dir=tmp_path / "report", progress=False,
                           inception_weights=tmp_path / "inception.h5")
    assert result["inception"] == {"weights": str(tmp_path / "inception.h5")}
    assert np.isfinite(result["real_vs_generated"]["inception_fd"])
    assert "inception_kid" in result["real_vs_real"]
