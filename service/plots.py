"""Training plots: the loss curve of a run (RUN/loss_curve.png) from its metrics.jsonl, with
the diversity checks (service.diversity) in a panel of their own when the run has them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.files import atomic_file
from service.rundir import metrics_records


def read_step_metrics(metrics_path) -> dict[str, np.ndarray]:
    """Columns of the per-step lines of a metrics.jsonl (torn or non-step lines skipped)."""
    if not Path(metrics_path).is_file():
        raise FileNotFoundError(metrics_path)  # as open() said before; callers skip the plot
    records = metrics_records(metrics_path, "step")
    return {
        "step": np.asarray([r["step"] for r in records], dtype=np.int64),
        "d_loss": np.asarray([r["d_loss"] for r in records], dtype=np.float64),
        "g_loss": np.asarray([r["g_loss"] for r in records], dtype=np.float64),
        "rebalance_d": np.asarray([r.get("rebalance_d", 0) for r in records], dtype=np.int64),
        "rebalance_g": np.asarray([r.get("rebalance_g", 0) for r in records], dtype=np.int64),
    }


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` points (shorter at the start), same length as `values`."""
    if len(values) == 0 or window <= 1:
        return np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def plot_loss_curve(metrics_path, out_path) -> Path | None:
    """D and G losses per step (raw, faint; smoothed, solid), cumulative rebalance steps and,
    when the run has diversity checks, their coverage against the collapse threshold.

    Returns the PNG path, or None when the run has no step yet.
    """
    from service.diversity import COLLAPSE_THRESHOLD, read_diversity

    columns = read_step_metrics(metrics_path)
    if len(columns["step"]) == 0:
        return None
    diversity = read_diversity(metrics_path)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = columns["step"]
    window = max(1, len(steps) // 50)
    if diversity:
        fig, (ax_loss, ax_extra, ax_diversity) = plt.subplots(
            3, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1.5]}
        )
    else:
        fig, (ax_loss, ax_extra) = plt.subplots(
            2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
    for key, colour, label in (("d_loss", "tab:blue", "discriminator"), ("g_loss", "tab:orange", "generator")):
        ax_loss.plot(steps, columns[key], color=colour, alpha=0.25, linewidth=0.8)
        ax_loss.plot(steps, moving_average(columns[key], window), color=colour, label=label)
    ax_loss.set_ylabel("BCE loss")
    ax_loss.set_title(f"Losses per step (solid: mean of {window})" if window > 1 else "Losses per step")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)
    ax_extra.plot(steps, np.cumsum(columns["rebalance_d"]), color="tab:blue", label="extra D steps")
    ax_extra.plot(steps, np.cumsum(columns["rebalance_g"]), color="tab:orange", label="extra G steps")
    ax_extra.set_ylabel("rebalance\n(cumulative)")
    ax_extra.legend(loc="upper left")
    ax_extra.grid(alpha=0.3)
    if diversity:
        _plot_diversity(ax_diversity, diversity, COLLAPSE_THRESHOLD)
    (ax_diversity if diversity else ax_extra).set_xlabel("step")
    fig.tight_layout()
    out_path = Path(out_path)
    try:
        with atomic_file(out_path) as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out_path


def _plot_diversity(ax, records: list[dict], threshold: float) -> None:
    """The diversity checks' coverage per step, the threshold dashed, checks below it in red."""
    steps = np.asarray([r["step"] for r in records])
    values = np.asarray([r["coverage"] for r in records], dtype=np.float64)
    k = records[-1].get("k", "?")
    early = [r["step"] for r in records if not r.get("judged", True)]
    if early:
        ax.axvspan(0, max(early), color="0.85", label="warm-up: not judged")
    ax.plot(steps, values, color="tab:green", marker="o", markersize=3, label=f"coverage (k={k})")
    low = np.asarray([bool(r.get("collapsed")) for r in records])
    if low.any():
        ax.plot(steps[low], values[low], "o", color="tab:red", markersize=5, label="below: collapse?")
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("diversity")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
