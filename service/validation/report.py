"""`validate_sets`: every metric, map and panel for a real and a generated set, plus the report.

Writes into out_dir:
    metrics.json             all numbers (real vs generated, real vs real reference, per class)
    report.html              self-contained page; relative links to the PNGs below
    real_samples.png, generated_samples.png        64 random images of each set
    loss_curve.png           when run_dir has a metrics.jsonl (or a loss_curve.png)
    pca_thumbnails.png, pca_scatter.png, tsne_thumbnails.png, tsne_scatter.png
    memorization_pairs.png, memorization_ratios.png

The reference: the real set is shuffled (seed) and cut into two disjoint halves of equal size,
and each metric is computed between them exactly as between real and generated. It is the
value a generator indistinguishable from the real data would score, at half the sample size
(so for the size-biased numbers, SWD and FD, it sits a little above the ideal full-size value).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from service.errors import UserError
from service.imageio import save_grid, to_uint8
from service.validation import maps, memorization, metrics
from service.validation.features import FEATURE_SPACE, InceptionFeatures, random_net_features

MIN_REAL_IMAGES = 2 * (metrics.DENSITY_COVERAGE_K + 1)  # two halves, each enough for 5-NN
MIN_FAKE_IMAGES = metrics.DENSITY_COVERAGE_K + 1
MIN_TRAIN_IMAGES = 2
SAMPLE_GRID_IMAGES = 64
PER_CLASS_MAX_IMAGES = 500  # per class and set: per-class values cost at most ~half the main ones

# metric key -> (label in the table, how to read it, better direction)
METRIC_ROWS = {
    "swd_mean": ("SWD, mean over levels (x10^3)", "Sliced Wasserstein distance between 7x7 Laplacian-pyramid patches: local texture and structure at every scale. Lower is better; the reference is the noise floor. Blind to a uniform colour or brightness shift by design (each set is normalised per channel): FD and KID see that.", "lower"),
    "fd": ("Frechet distance (random-net features)", "Distance between Gaussians fitted to the two feature sets: mean and spread of whole images. Lower is better; grows when sets are small, so read it against the reference.", "lower"),
    "kid": ("KID (random-net features, x10^3)", "Kernel (MMD) distance, unbiased: about 0 (may dip below) when the sets match, whatever their size. Lower is better.", "lower"),
    "precision": ("Precision (k=3)", "Share of generated images inside the real images' manifold: fidelity. Higher is better.", "higher"),
    "recall": ("Recall (k=3)", "Share of real images inside the generated manifold: diversity, mode coverage. Higher is better.", "higher"),
    "density": ("Density (k=5)", "How many real neighbourhoods a generated image falls in, / k: about 1 when matched, above 1 piles onto typical images, below 1 strays.", "about 1"),
    "coverage": ("Coverage (k=5)", "Share of real images with a generated image in their neighbourhood: diversity, robust to outliers. Higher is better.", "higher"),
    "copy_share": ("Likely copies (share)", "Share of generated images closer to a training image than half that image's distance to its own nearest training neighbour. Should not exceed the reference (ideally 0).", "lower"),
    "median_copy_ratio": ("Median nearest-training ratio", "Typical distance to the nearest training image relative to that image's own nearest-neighbour gap: about 1 for novel images, near 0 for copies.", "about 1"),
}
INCEPTION_ROWS = {
    "inception_fd": ("FID (Inception-v3)", "Standard FID with the supplied Inception weights. Lower is better.", "lower"),
    "inception_kid": ("KID (Inception-v3, x10^3)", "Standard KID with the supplied Inception weights. Lower is better.", "lower"),
}
SCALED_BY_1000 = {"kid", "inception_kid"}


# ----------------------------------------------------------------------------- inputs


def _as_uint8(name: str, images) -> np.ndarray:
    if images is None:
        raise UserError(f"{name} set is missing")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{name} images must be NHWC with 1 or 3 channels, got shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
        images = to_uint8(images)  # float images in [-1, 1], the project's convention
    return images


def check_sets(real: np.ndarray, fake: np.ndarray, train: np.ndarray | None) -> None:
    """One-line UserError for sets that cannot be compared."""
    sizes = {"real": real, "generated": fake, **({"training": train} if train is not None else {})}
    shapes = {name: images.shape[1:3] for name, images in sizes.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
        raise UserError(f"image sizes differ ({listed}); load them at one --image-size")
    height, width = real.shape[1:3]
    if min(height, width) < metrics.SWD_MIN_RESOLUTION:
        raise UserError(f"images of {height}x{width} are too small; validation needs at least {metrics.SWD_MIN_RESOLUTION}x{metrics.SWD_MIN_RESOLUTION}")
    for name, images, minimum in (("real", real, MIN_REAL_IMAGES), ("generated", fake, MIN_FAKE_IMAGES), ("training", train, MIN_TRAIN_IMAGES)):
        if images is not None and len(images) < minimum:
            raise UserError(f"the {name} set has {len(images)} images; the k-NN metrics need at least {minimum}")


def _check_labels(name: str, labels, count: int):
    if labels is None:
        return None
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (count,):
        raise UserError(f"{name} labels: {labels.shape[0] if labels.ndim else 0} labels for {count} images")
    return labels


# ----------------------------------------------------------------------------- computing


def _set_metrics(real_u8, fake_u8, real_features, fake_features, seed: int) -> dict:
    swd = metrics.swd(real_u8, fake_u8, seed=seed)
    values = metrics.feature_metrics(real_features, fake_features, seed=seed)
    return {"swd_mean": swd["mean"], "swd_levels": swd["levels"], **values}


def _halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 2]).permutation(count)
    half = count // 2
    return np.sort(order[:half]), np.sort(order[half : 2 * half])


def _per_class(real, fake, real_features, fake_features, real_labels, fake_labels, class_names, seed) -> dict:
    """Every metric within each class; a class's sets are capped at PER_CLASS_MAX_IMAGES each."""
    rng = np.random.default_rng([seed, 4])
    results = {}
    for cls in sorted(set(real_labels.tolist()) | set(fake_labels.tolist())):
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else str(cls)
        in_real, in_fake = np.flatnonzero(real_labels == cls), np.flatnonzero(fake_labels == cls)
        entry = {"real": int(len(in_real)), "generated": int(len(in_fake))}
        if len(in_real) < MIN_REAL_IMAGES or len(in_fake) < MIN_FAKE_IMAGES:
            entry["skipped"] = f"needs at least {MIN_REAL_IMAGES} real and {MIN_FAKE_IMAGES} generated images"
            results[name] = entry
            continue
        if len(in_real) > PER_CLASS_MAX_IMAGES:
            in_real = np.sort(rng.choice(in_real, PER_CLASS_MAX_IMAGES, replace=False))
        if len(in_fake) > PER_CLASS_MAX_IMAGES:
            in_fake = np.sort(rng.choice(in_fake, PER_CLASS_MAX_IMAGES, replace=False))
        entry["used"] = {"real": int(len(in_real)), "generated": int(len(in_fake))}
        entry["real_vs_generated"] = _set_metrics(real[in_real], fake[in_fake], real_features[in_real], fake_features[in_fake], seed)
        half_a, half_b = _halves(len(in_real), seed)
        a, b = in_real[half_a], in_real[half_b]
        entry["real_vs_real"] = _set_metrics(real[a], real[b], real_features[a], real_features[b], seed)
        results[name] = entry
    return results


def validate_sets(
    real,
    fake,
    train=None,
    out_dir=None,
    real_labels=None,
    fake_labels=None,
    class_names=None,
    run_dir=None,
    progress: bool = True,
    inception_weights=None,
    seed: int = 0,
) -> dict:
    """Compare `fake` with `real` (and audit it against `train`, default: `real`); write the report.

    Images: uint8 NHWC, or float NHWC in [-1, 1]. Labels: int class indices into `class_names`.
    Returns the dict written to out_dir/metrics.json.
    """
    if out_dir is None:
        raise UserError("validate_sets needs an out_dir")
    # One OpenMP thread for scikit-learn's k-NN and t-SNE: their many short parallel regions
    # spin and contend on shared cores (measured 10-50x slower under load); BLAS keeps its threads.
    with threadpool_limits(limits=1, user_api="openmp"):
        return _validate_sets(real, fake, train, out_dir, real_labels, fake_labels, class_names, run_dir, progress, inception_weights, seed)


def _validate_sets(real, fake, train, out_dir, real_labels, fake_labels, class_names, run_dir, progress, inception_weights, seed) -> dict:
    started = time.perf_counter()
    real = _as_uint8("real", real)
    fake = _as_uint8("generated", fake)
    train = None if train is None else _as_uint8("training", train)
    check_sets(real, fake, train)
    real_labels = _check_labels("real", real_labels, len(real))
    fake_labels = _check_labels("generated", fake_labels, len(fake))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir}: {e.strerror}") from None
    inception = InceptionFeatures(inception_weights) if inception_weights else None  # fail before the long steps

    audit_train = train if train is not None else real
    half_a, half_b = _halves(len(real), seed)
    timings: dict[str, float] = {}
    steps = ["features", "swd + feature metrics", "reference (real halves)", "memorization audit", "maps", "report"]
    if real_labels is not None and fake_labels is not None:
        steps.insert(3, "per-class metrics")
    if inception is not None:
        steps.insert(-1, "inception")
    bar = tqdm(total=len(steps), desc="validate", disable=not progress, unit="step")

    def step(name):
        bar.set_postfix_str(name)
        timings[name] = time.perf_counter()

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 2)
        bar.update(1)

    step("features")
    real_features = random_net_features(real, progress=progress, desc="features: real")
    fake_features = random_net_features(fake, progress=progress, desc="features: generated")
    done("features")

    step("swd + feature metrics")
    main = _set_metrics(real, fake, real_features, fake_features, seed)
    done("swd + feature metrics")

    step("reference (real halves)")
    reference = _set_metrics(real[half_a], real[half_b], real_features[half_a], real_features[half_b], seed)
    done("reference (real halves)")

    per_class = None
    if real_labels is not None and fake_labels is not None:
        step("per-class metrics")
        per_class = _per_class(real, fake, real_features, fake_features, real_labels, fake_labels, class_names, seed)
        done("per-class metrics")

    step("memorization audit")
    audit = memorization.memorization_audit(audit_train, fake)
    reference_audit = memorization.memorization_audit(real[half_a], real[half_b])
    main.update(copy_share=audit["copy_share"], copies=audit["copies"], median_copy_ratio=audit["median_ratio"])
    reference.update(copy_share=reference_audit["copy_share"], copies=reference_audit["copies"], median_copy_ratio=reference_audit["median_ratio"])
    closest_pairs = memorization.save_pairs_panel(out_dir / "memorization_pairs.png", audit, fake, audit_train)
    memorization.save_ratio_histogram(out_dir / "memorization_ratios.png", audit["ratio"], reference_audit["ratio"])
    done("memorization audit")

    inception_result = None
    if inception is not None:
        step("inception")
        inception_real = inception(real, progress=progress, desc="inception: real")
        inception_fake = inception(fake, progress=progress, desc="inception: generated")
        for target, (a, b) in ((main, (inception_real, inception_fake)), (reference, (inception_real[half_a], inception_real[half_b]))):
            kid = metrics.kernel_distance(a, b, seed=seed)
            target.update(inception_fd=metrics.frechet_distance(a, b), inception_kid=kid["mean"], inception_kid_std=kid["std"])
        inception_result = {"weights": os.fspath(inception_weights)}
        done("inception")

    step("maps")
    map_info = maps.save_maps(out_dir, real_features, fake_features, real, fake, seed=seed)
    done("maps")

    step("report")
    figures = _write_figures(out_dir, real, fake, run_dir, seed)
    result = {
        "counts": {"real": len(real), "generated": len(fake), "training": len(audit_train), "reference_half": len(half_a)},
        "image_size": [int(real.shape[1]), int(real.shape[2])],
        "seed": seed,
        "real_vs_generated": main,
        "real_vs_real": reference,
        "per_class": per_class,
        "memorization": {
            "space": memorization.AUDIT_SPACE,
            "against": "training set" if train is not None else "real set (no training set given)",
            "closest_pairs": closest_pairs,
        },
        "feature_space": FEATURE_SPACE,
        "inception": inception_result,
        "maps": map_info,
        "settings": {
            "swd": {"patch": metrics.SWD_PATCH_SIZE, "patches_per_image": metrics.SWD_PATCHES_PER_IMAGE, "directions": f"{metrics.SWD_DIRECTION_REPEATS}x{metrics.SWD_DIRECTIONS_PER_REPEAT}", "levels_down_to": metrics.SWD_MIN_RESOLUTION, "scale": metrics.SWD_SCALE},
            "kid": {"subsets": metrics.KID_SUBSETS, "max_subset_size": metrics.KID_MAX_SUBSET_SIZE, "kernel": "(x.y/d + 1)^3"},
            "precision_recall_k": metrics.PRECISION_RECALL_K,
            "density_coverage_k": metrics.DENSITY_COVERAGE_K,
        },
        "files": figures,
        "timings_s": timings,
    }
    done("report")
    bar.close()
    result["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    result = _jsonable(result)
    _write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    _write_text(out_dir / "report.html", render_html(result))
    return result


def _write_figures(out_dir: Path, real, fake, run_dir, seed: int) -> dict:
    """Sample grids and the loss curve; returns {role: file name} of what exists."""
    rng = np.random.default_rng([seed, 3])
    files = {}
    for role, images, name in (("real_samples", real, "real_samples.png"), ("generated_samples", fake, "generated_samples.png")):
        pick = np.sort(rng.choice(len(images), min(SAMPLE_GRID_IMAGES, len(images)), replace=False))
        save_grid(out_dir / name, images[pick], columns=8)
        files[role] = name
    if run_dir is not None:
        run_dir = Path(run_dir)
        loss_png = out_dir / "loss_curve.png"
        if (run_dir / "metrics.jsonl").is_file():
            from service.plots import plot_loss_curve

            if plot_loss_curve(run_dir / "metrics.jsonl", loss_png) is not None:
                files["loss_curve"] = loss_png.name
        if "loss_curve" not in files and (run_dir / "loss_curve.png").is_file():
            shutil.copyfile(run_dir / "loss_curve.png", loss_png)
            files["loss_curve"] = loss_png.name
    for name in ("pca_thumbnails.png", "pca_scatter.png", "tsne_thumbnails.png", "tsne_scatter.png", "memorization_pairs.png", "memorization_ratios.png"):
        files[name.removesuffix(".png")] = name
    return files


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no inf/NaN
    return value


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- HTML


def _number(key: str, value) -> str:
    if value is None:
        return "-"
    if key in SCALED_BY_1000:
        value = value * 1e3
    return f"{value:.4g}"


def _table(main: dict, reference: dict, rows: dict) -> str:
    lines = ["<table><tr><th>metric</th><th>real vs generated</th><th>real vs real (reference)</th><th>how to read it</th></tr>"]
    for key, (label, reading, _) in rows.items():
        if key not in main:
            continue
        lines.append(
            f"<tr><td>{html.escape(label)}</td><td class=num>{_number(key, main.get(key))}</td>"
            f"<td class=num>{_number(key, reference.get(key))}</td><td class=read>{html.escape(reading)}</td></tr>"
        )
        if key == "swd_mean":
            lines += _swd_level_rows(main, reference)
    lines.append("</table>")
    return "\n".join(lines)


def _swd_level_rows(main: dict, reference: dict) -> list[str]:
    levels = main.get("swd_levels", {})
    finest = max(map(int, levels)) if levels else None
    rows = []
    for resolution, value in levels.items():
        ref = reference.get("swd_levels", {}).get(resolution)
        scale = "finest detail" if int(resolution) == finest else "coarser structure"
        rows.append(
            f"<tr class=sub><td>&nbsp;&nbsp;SWD at {resolution}x{resolution} (x10^3)</td><td class=num>{value:.4g}</td>"
            f"<td class=num>{_number('swd', ref)}</td><td class=read>One pyramid level: {scale}.</td></tr>"
        )
    return rows


def _per_class_table(per_class: dict) -> str:
    keys = ("swd_mean", "fd", "kid", "precision", "recall", "density", "coverage")
    head = "".join(f"<th>{html.escape(METRIC_ROWS[k][0])}</th>" for k in keys)
    lines = [f"<table><tr><th>class</th><th>real / generated images</th><th></th>{head}</tr>"]
    for name, entry in per_class.items():
        counts = f"{entry['real']} / {entry['generated']}"
        if "skipped" in entry:
            lines.append(f"<tr><td>{html.escape(name)}</td><td>{counts}</td><td colspan={len(keys) + 1}>skipped: {html.escape(entry['skipped'])}</td></tr>")
            continue
        for role, label in (("real_vs_generated", "real vs generated"), ("real_vs_real", "reference")):
            cells = "".join(f"<td class=num>{_number(k, entry[role].get(k))}</td>" for k in keys)
            first = f"<td rowspan=2>{html.escape(name)}</td><td rowspan=2>{counts}</td>" if role == "real_vs_generated" else ""
            lines.append(f"<tr>{first}<td>{label}</td>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _figure(files: dict, role: str, caption: str, width: str = "100%") -> str:
    if role not in files:
        return ""
    name = html.escape(files[role])
    return f'<figure><a href="{name}"><img src="{name}" alt="{html.escape(caption)}" style="max-width:{width}"></a><figcaption>{html.escape(caption)}</figcaption></figure>'


def render_html(result: dict) -> str:
    """The report page: tables first, then the figures, all links relative."""
    files = result["files"]
    counts = result["counts"]
    main, reference = result["real_vs_generated"], result["real_vs_real"]
    rows = dict(METRIC_ROWS)
    if result.get("inception"):
        rows.update(INCEPTION_ROWS)
    memo = result["memorization"]
    feature_space = result["feature_space"]
    height, width = result["image_size"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        "th{background:#f0f0f0}td.num{text-align:right;font-family:monospace;white-space:nowrap}td.read{font-size:0.9em;color:#444}"
        "tr.sub td{font-size:0.9em;color:#555}figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}"
        ".pair{display:flex;gap:2em;flex-wrap:wrap}.pair figure{flex:1;min-width:300px}</style></head><body>",
        "<h1>Validation report</h1>",
        f"<p>{counts['real']} real and {counts['generated']} generated images of {height}x{width} pixels; "
        f"memorization audit against the {html.escape(memo['against'])} ({counts['training']} images). "
        f"Reference column: two disjoint halves of the real set ({counts['reference_half']} images each), "
        "computed the same way: what a generator indistinguishable from the real data would score "
        "(at half the sample size, so SWD and FD references sit slightly high).</p>",
        "<h2>Metrics</h2>",
        _table(main, reference, rows),
        f"<p class=read>Feature space of FD, KID, precision/recall, density/coverage and the maps: "
        f"{html.escape(feature_space['description'])} (weights fingerprint {html.escape(feature_space['weights_sha256_16'])}). "
        "It needs no downloaded weights and is the same function on every machine, so numbers compare across runs "
        "of this project, but not with published Inception-based FID values.</p>",
    ]
    if result.get("per_class"):
        parts += [
            "<h2>Per class</h2>",
            f"<p class=read>Each class compared on its own (at most {PER_CLASS_MAX_IMAGES} images of a class per set, drawn at random), "
            "with its own real-vs-real reference.</p>",
            _per_class_table(result["per_class"]),
        ]
    parts += [
        "<h2>Samples</h2><div class=pair>",
        _figure(files, "real_samples", f"Real images ({min(SAMPLE_GRID_IMAGES, counts['real'])} at random)"),
        _figure(files, "generated_samples", f"Generated images ({min(SAMPLE_GRID_IMAGES, counts['generated'])} at random)"),
        "</div>",
    ]
    if "loss_curve" in files:
        parts += ["<h2>Training losses</h2>", _figure(files, "loss_curve", "Discriminator and generator losses per step", "800px")]
    parts += [
        "<h2>Maps of real and generated images</h2>",
        "<p>As in the thesis: both sets embedded together; generated images should mix with the real ones "
        "everywhere rather than form their own islands (missing or invented modes) or collapse into a few spots.</p>",
        _figure(files, "pca_thumbnails", "PCA with thumbnails (one per grid cell; generated framed in orange)"),
        _figure(files, "tsne_thumbnails", f"t-SNE with thumbnails ({result['maps']['tsne_points']} images; generated framed in orange)"),
        "<div class=pair>",
        _figure(files, "pca_scatter", "PCA scatter"),
        _figure(files, "tsne_scatter", "t-SNE scatter"),
        "</div>",
        "<h2>Memorization audit</h2>",
        f"<p>{main['copies']} of {counts['generated']} generated images ({100 * main['copy_share']:.2f}%) are likely copies "
        f"(ratio below {memo['space']['copy_ratio_threshold']}); reference: {100 * reference['copy_share']:.2f}% of held-out real images. "
        f"Space: {html.escape(memo['space']['description'])}.</p>",
        _figure(files, "memorization_ratios", "Copy ratio: distance to the nearest training image / that image's nearest-neighbour distance", "800px"),
        _figure(files, "memorization_pairs", "The 16 generated images closest to a training image (by ratio), each beside that training image"),
        f"<p class=read>Timings (s): {html.escape(json.dumps(result['timings_s']))}. All numbers: <a href='metrics.json'>metrics.json</a>.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
