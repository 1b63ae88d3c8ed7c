"""Validation of generated images against real ones: weight-free metrics, memorization audit,
PCA/t-SNE maps (evaluate.validate_sets) and an HTML report (report.render_html)."""

from service.validation.evaluate import validate_sets
from service.validation.metrics import swd

__all__ = ["swd", "validate_sets"]
