"""utility.png: the positive class's ROC AUC per arm, and each arm's difference from its baseline
with its 95% interval and the smallest difference the setup could detect."""

from __future__ import annotations

from pathlib import Path

from service.utility.summary import verdict

GAIN, LOSS, NONE = "#5aa469", "#d35d6e", "#bbbbbb"


def plot_utility(summary: dict, path: Path) -> None:
    """Left: positive-class AUC per arm (bar: seed mean, whiskers: seed range). Right: each
    compared arm's AUC difference from its baseline (whiskers: 95% bootstrap interval; the
    dotted marks: +- the minimum detectable effect), coloured and labelled by its verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from service.files import atomic_file

    arms, positive = summary["arms"], summary["positive_class"]
    names = list(arms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    means = [arms[a]["positive_auc"]["mean"] for a in names]
    lows = [m - arms[a]["positive_auc"]["min"] for a, m in zip(names, means)]
    highs = [arms[a]["positive_auc"]["max"] - m for a, m in zip(names, means)]
    left.bar(names, means, yerr=[lows, highs], capsize=4, color="#7a9cc6")
    left.axhline(0.5, color="grey", linestyle=":", label="chance")
    left.set_ylabel(f"{positive} ROC AUC")
    left.set_title("on the held-out real test set (whiskers: seed range)", fontsize=10)
    left.set_ylim(0, 1)
    left.legend(loc="lower right")
    left.set_xticks(range(len(names)), names, rotation=40, ha="right")
    compared = [a for a in names if "difference" in arms[a]]
    if compared:
        d = [arms[a]["difference"]["positive_auc"] for a in compared]
        values = [x["difference"] for x in d]
        places = range(len(compared))
        right.bar(places, values, yerr=[[v - x["low"] for v, x in zip(values, d)], [x["high"] - v for v, x in zip(values, d)]],
                  capsize=4, color=[GAIN if x["low"] > 0 else LOSS if x["high"] < 0 else NONE for x in d])
        for i, x in zip(places, d):
            right.hlines([x["mde"], -x["mde"]], i - 0.4, i + 0.4, colors="black", linestyles=":", linewidth=1)
            # upright text over each bar: side by side, the verdicts would run into each other
            right.annotate(verdict(x).replace(" (", "\n("), (i, max(x["high"], x["mde"])), textcoords="offset points",
                           xytext=(0, 4), ha="center", va="bottom", rotation=90, fontsize=7)
        right.set_xticks(list(places), [f"{a}\nvs {arms[a]['against']}" for a in compared], rotation=40, ha="right",
                         fontsize=8)
        right.axhline(0, color="black", linewidth=0.8)
        right.set_ylabel(f"{positive} AUC difference (95% interval)")
        right.set_title("against each arm's baseline (dotted: +- the smallest detectable difference)", fontsize=10)
        top = max(max(x["high"], x["mde"]) for x in d)
        bottom = min(min(x["low"], -x["mde"]) for x in d)
        span = max(top - bottom, 1e-3)
        right.set_ylim(bottom - 0.1 * span, top + 0.9 * span)  # room for the upright verdicts
    else:
        right.axis("off")
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
