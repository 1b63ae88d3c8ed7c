"""Scores on the test set, their bootstrap intervals and the setup's power.

Scores: balanced accuracy (the mean of the per-class sensitivities), per-class sensitivity and
one-vs-rest ROC AUC, and for the positive class its ROC AUC and its sensitivity at a set
specificity (default 80%: the highest sensitivity on the empirical ROC curve of the test set
among the thresholds that keep at least that share of the other classes' images negative).

Differences: an arm's seed-mean score minus its baseline's, with a 95% interval from resampling
the test images (the same resamples for both; the seeds' predictions stay fixed, so the
interval is over the test set). All resamples are scored at once; the AUC by its Mann-Whitney
form (equal to sklearn's roc_auc_score on each resample).

Power: the smallest difference the setup could detect (minimum detectable effect) is
(z_0.975 + z_0.80) x SE = 2.80 x SE, SE the standard deviation of the bootstrap differences:
a true difference that large would be found (interval clear of zero) four times in five at
the 5% level.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm

MDE_FACTOR = float(norm.ppf(0.975) + norm.ppf(0.80))  # 2.80: two-sided 5% level, 80% power


def minimum_detectable_effect(standard_error):
    """The difference found with 80% power at the two-sided 5% level: 2.80 x the standard error."""
    return MDE_FACTOR * np.asarray(standard_error)


def _tie_groups(scores: np.ndarray):
    """Sort order of `scores` and, per sorted position, the first and one-past-last positions of
    its tie group."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    new = np.r_[True, ranked[1:] != ranked[:-1]]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    ends = np.r_[starts[1:], len(ranked)]
    return order, starts[group], ends[group]


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of `scores` (n,) for the `positive` (n,) images, once per row of
    `weights` (rows, n): image i counted weights[r, i] times (a bootstrap resample's
    multiplicities). The Mann-Whitney statistic, ties counting one half: equal to sklearn's
    roc_auc_score on the resampled arrays. nan for a row without positives or negatives."""
    order, start, end = _tie_groups(scores)
    w = np.atleast_2d(np.asarray(weights, np.float64))[:, order]
    pos = positive[order].astype(bool)
    negatives = np.zeros((len(w), len(order) + 1))
    np.cumsum(np.where(pos, 0.0, w), axis=1, out=negatives[:, 1:])  # negatives[:, k]: those before position k
    # negatives below an image's score, plus half of those tied with it
    below = 0.5 * (negatives[:, start] + negatives[:, end])
    pairs = np.sum(w[:, pos], axis=1) * negatives[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, np.sum(w[:, pos] * below[:, pos], axis=1) / pairs, np.nan)


def sensitivity_at_specificity(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray,
                               specificity: float = 0.8) -> np.ndarray:
    """Sensitivity at `specificity`, once per row of `weights` (as `weighted_auc`): the largest
    share of positives scoring >= t over the thresholds t (the scores themselves, and +inf)
    that leave at least `specificity` of the negatives below t. nan for a row without
    positives or negatives."""
    order, start, _ = _tie_groups(scores)
    w = np.atleast_2d(np.asarray(weights, np.float64))[:, order]
    pos = positive[order].astype(bool)
    cum_neg = np.zeros((len(w), len(order) + 1))
    cum_pos = np.zeros((len(w), len(order) + 1))
    np.cumsum(np.where(pos, 0.0, w), axis=1, out=cum_neg[:, 1:])
    np.cumsum(np.where(pos, w, 0.0), axis=1, out=cum_pos[:, 1:])
    total_neg, total_pos = cum_neg[:, -1:], cum_pos[:, -1:]
    # threshold at each tie group's first score: what lies before it is called negative
    cuts = np.r_[np.unique(start), len(order)]
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = cum_neg[:, cuts] / total_neg
        sens = (total_pos - cum_pos[:, cuts]) / total_pos
        best = np.max(np.where(spec >= specificity - 1e-12, sens, -np.inf), axis=1)
        return np.where((total_neg[:, 0] > 0) & (total_pos[:, 0] > 0), best, np.nan)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """np.nanmean over the last axis, nan (without a warning) where every value is nan."""
    known = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known.any(axis=-1), np.where(known, values, 0).sum(axis=-1) / known.sum(axis=-1), np.nan)


def resampled_scores(labels, proba: np.ndarray, counts: np.ndarray, positive: int, specificity: float = 0.8) -> dict:
    """Every score of one classifier's `proba` (n, classes) on the test set, once per row of
    `counts` (rows, n: how often each test image is drawn). Each value has a leading axis of rows."""
    num_classes = proba.shape[1]
    counts = np.atleast_2d(np.asarray(counts, np.float64))
    members = np.stack([labels == c for c in range(num_classes)], axis=1).astype(np.float64)  # (n, classes)
    present = counts @ members  # images of each class per row
    hits = members * (proba.argmax(axis=1)[:, None] == np.arange(num_classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(present > 0, (counts @ hits) / present, np.nan)
    auc = np.stack([weighted_auc(proba[:, c], labels == c, counts) for c in range(num_classes)], axis=1)
    return {"balanced_accuracy": _nanmean(sensitivity), "sensitivity": sensitivity, "auc": auc,
            "macro_auc": _nanmean(auc), "positive_auc": auc[:, positive],
            "positive_sensitivity_at_specificity": sensitivity_at_specificity(
                proba[:, positive], labels == positive, counts, specificity)}


def score(labels: np.ndarray, proba: np.ndarray, positive: int, specificity: float = 0.8) -> dict:
    """`resampled_scores` on the test set as it is (every image once): floats, and (classes,)
    arrays for the per-class sensitivity and AUC."""
    scores = resampled_scores(labels, proba, np.ones((1, len(labels))), positive, specificity)
    return {k: (v[0] if np.ndim(v) > 1 else float(v[0])) for k, v in scores.items()}


def seed_mean(labels, probas: list[np.ndarray], counts: np.ndarray, positive: int, specificity: float) -> dict:
    """The mean over seeds of each score, once per row of `counts`."""
    per_seed = [resampled_scores(labels, p, counts, positive, specificity) for p in probas]
    return {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}


def bootstrap_difference(labels, arm_probas, base_probas, resamples: int, positive: int, specificity: float = 0.8,
                         seed: int = 0) -> dict:
    """For each score: the difference arm - baseline of the seed-mean scores on the test set,
    its 95% interval from `resamples` bootstrap resamples of the test images, the resamples'
    standard deviation (`se`) and the minimum detectable effect (`mde`, 2.80 x se)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    whole = np.ones((1, n))
    arm = seed_mean(labels, arm_probas, whole, positive, specificity)
    base = seed_mean(labels, base_probas, whole, positive, specificity)
    point = {k: arm[k][0] - base[k][0] for k in arm}
    draws = {k: [] for k in point}
    chunk = max(1, 2_000_000 // n)  # resamples scored together: bounds the memory to a few (chunk, n) arrays
    for first in range(0, resamples, chunk):
        rows = min(chunk, resamples - first)
        idx = rng.integers(0, n, (rows, n))  # the same draws as one rng.integers(0, n, n) per resample
        counts = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
        arm = seed_mean(labels, arm_probas, counts, positive, specificity)
        base = seed_mean(labels, base_probas, counts, positive, specificity)
        for k in draws:
            draws[k].append(arm[k] - base[k])
    draws = {k: np.concatenate(v) for k, v in draws.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every resample: nan
        return {k: {"difference": point[k], "low": np.nanpercentile(draws[k], 2.5, axis=0),
                    "high": np.nanpercentile(draws[k], 97.5, axis=0),
                    "se": np.nanstd(draws[k], axis=0, ddof=1),
                    "mde": minimum_detectable_effect(np.nanstd(draws[k], axis=0, ddof=1))} for k in point}
