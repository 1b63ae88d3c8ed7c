"""Validation of generated images against real ones: weight-free metrics, memorization audit,
PCA/t-SNE maps and an HTML report (see report.validate_sets)."""

from service.validation.metrics import swd
from service.validation.report import validate_sets

__all__ = ["swd", "validate_sets"]
