"""Downstream utility: does a run's synthetic set help a lesion classifier?

One fixed small classifier (backends/tf/classifier.py) is trained in several arms that differ
only in their training images (`arms`), once per classifier seed, and scored on the same
held-out real test set (`stats`): balanced accuracy, and for the positive class (melanoma by
default) its ROC AUC and its sensitivity at 80% specificity. Each arm is compared with its
baseline arm: the difference with a 95% bootstrap interval over the test images and the
smallest difference the setup could detect; the wording follows the interval (`summary`).

    settings.py  UtilitySettings, the input checks, the positive class
    arms.py      which images each arm trains on, and its baseline
    stats.py     scores, bootstrap intervals, the minimum detectable effect
    job.py       the command: generate what the arms need, train, score, write utility.json
    plot.py      utility.png
    summary.py   the verdicts and the text summary

Importing this package does not start TensorFlow; training does.
"""

from service.utility.arms import ARMS, BASELINES, MEANING
from service.utility.settings import GENERATION_SEED, UtilitySettings, check_inputs, conditional_run, positive_class

__all__ = ["ARMS", "BASELINES", "GENERATION_SEED", "MEANING", "UtilitySettings", "check_inputs", "conditional_run",
           "describe", "evaluate_arms", "positive_class", "run_utility"]


def __getattr__(name):  # the heavier modules on first use
    if name in ("evaluate_arms", "run_utility"):
        from service.utility import job

        return getattr(job, name)
    if name == "describe":
        from service.utility.summary import describe

        return describe
    raise AttributeError(name)
