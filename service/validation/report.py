"""report.html: the validation result (service.validation.evaluate) laid out for a reader.

The page is a Jinja2 template beside this module (templates/report.html); this module only
passes it the numbers and the words that explain each one. Every link is relative, so the
report folder can be moved or shared whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from service.errors import UserError
from service.files import write_text

REPORT_FILE = "report.html"  # the report, in validate's folder
RESULTS_FILE = "metrics.json"  # every figure of the report, for programs

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
PER_CLASS_KEYS = ("swd_mean", "fd", "kid", "precision", "recall", "density", "coverage")

_environment = Environment(
    loader=PackageLoader("service.validation", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def number(value, key: str = "") -> str:
    """A metric value as the tables show it: 4 significant digits, x10^3 where the label says so."""
    if value is None:
        return "-"
    if key in SCALED_BY_1000:
        value = value * 1e3
    return f"{value:.4g}"


_environment.filters["number"] = number


def render_html(result: dict) -> str:
    """The report page: tables first, then the figures."""
    rows = dict(METRIC_ROWS)
    if result.get("inception"):
        rows.update(INCEPTION_ROWS)
    levels = result["real_vs_generated"].get("swd_levels", {})
    return _environment.get_template("report.html").render(
        result=result,
        rows=rows,
        per_class_keys=PER_CLASS_KEYS,
        per_class_labels={key: METRIC_ROWS[key][0] for key in PER_CLASS_KEYS},
        finest_level=max(map(int, levels)) if levels else None,
        timings=json.dumps(result["timings_s"]),
    )


def add_utility(out_dir, summary: dict, chart) -> Path:
    """Put a `utility` result (service.utility) into an existing report: metrics.json gains a
    "utility" entry and report.html a section; the chart is copied beside the page."""
    from service.files import copy_regular_file, write_json

    out_dir, chart = Path(out_dir), Path(chart)
    result = json.loads((out_dir / RESULTS_FILE).read_text())
    if not copy_regular_file(chart, out_dir / "utility.png", inside=chart.parent):
        raise UserError(f"{chart} is not a regular file the utility stage wrote")
    result["utility"] = summary
    result["files"]["utility"] = "utility.png"
    write_json(out_dir / RESULTS_FILE, result)
    return write_report(out_dir, result)


def write_report(out_dir, result: dict) -> Path:
    path = Path(out_dir) / REPORT_FILE
    write_text(path, render_html(result))
    return path
