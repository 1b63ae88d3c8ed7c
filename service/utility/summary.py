"""The words: each difference's verdict, each arm's reading, the text summary.

The verdict follows the 95% interval and nothing else: "gain +0.030 (+0.010 to +0.050)" when
the interval lies above zero, "loss -0.030 (-0.050 to -0.010)" when below, else "no
detectable gain (interval -0.020 to +0.010)", never "slightly better" or "slightly worse". Each
reading also gives the smallest difference the setup could detect (stats.py).
"""

from __future__ import annotations

LABELS = {"positive_auc": "{positive} AUC", "positive_sensitivity_at_specificity": "{positive} sensitivity at "
          "{specificity:.0%} specificity", "balanced_accuracy": "balanced accuracy", "macro_auc": "macro AUC"}
WEAK_AUC = 0.75  # below this real-arm positive AUC the classifier is too weak for the arms' differences to mean much


def verdict(d: dict) -> str:
    """The wording of one difference {"difference", "low", "high"}, by its interval."""
    if d["low"] > 0:
        return f"gain {d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"
    if d["high"] < 0:
        return f"loss {d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"
    return f"no detectable gain (interval {d['low']:+.3f} to {d['high']:+.3f})"


def label(metric: str, positive: str, specificity: float = 0.8) -> str:
    return LABELS[metric].format(positive=positive, specificity=specificity)


def reading(arm: str, entry: dict, positive: str) -> str:
    """One sentence: what the arm measures and, for a compared arm, what its positive-class AUC
    interval says and the smallest difference it could have shown."""
    text = entry["meaning"][0].upper() + entry["meaning"][1:] + "."
    if "difference" not in entry:
        return text
    d = entry["difference"]["positive_auc"]
    return (f"{text} {positive} AUC against {entry['against']}: {verdict(d)}; "
            f"the smallest difference this setup could detect: {d['mde']:.3f}.")


def notes(summary: dict) -> list[str]:
    """Warnings a reader needs before the differences: a weak classifier."""
    real = summary["arms"].get("real")
    if real and real["positive_auc"]["mean"] < WEAK_AUC:
        return [f"the real arm's {summary['positive_class']} AUC is {real['positive_auc']['mean']:.3f}, below "
                f"{WEAK_AUC}: the classifier is weak on these images, so the arms' differences say little"]
    return []


def describe(summary: dict) -> list[str]:
    """The text summary for the terminal: one line per arm (scores, mean and seed range), then
    one per compared arm and score (its verdict and detectable difference)."""
    positive, specificity = summary["positive_class"], summary["specificity"]
    lines = [f"on {sum(summary['test_images_per_class'].values())} held-out real images, "
             f"{len(summary['settings']['seeds'])} classifier seeds; positive class: {positive}"]
    for arm, entry in summary["arms"].items():
        auc, sens, ba = (entry[k] for k in ("positive_auc", "positive_sensitivity_at_specificity", "balanced_accuracy"))
        lines.append(f"{arm:24s} {positive} AUC {auc['mean']:.3f} [{auc['min']:.3f}, {auc['max']:.3f}]  "
                     f"sensitivity at {specificity:.0%} specificity {sens['mean']:.3f}  "
                     f"balanced accuracy {ba['mean']:.3f}")
    compared = [(arm, entry) for arm, entry in summary["arms"].items() if "difference" in entry]
    if compared:
        lines.append("against each arm's baseline (95% bootstrap interval over the test images; "
                     "detectable: the smallest difference this setup finds with 80% power):")
    for arm, entry in compared:
        for metric, text in entry["verdict"].items():
            lines.append(f"  {arm} vs {entry['against']}, {label(metric, positive, specificity)}: {text}; "
                         f"detectable {entry['difference'][metric]['mde']:.3f}")
    return lines + [f"note: {n}" for n in summary.get("notes", [])]
