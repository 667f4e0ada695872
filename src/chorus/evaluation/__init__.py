"""Evaluation: metrics on a held-out split and a self-contained HTML report."""

from chorus.evaluation.metrics import ClassificationMetrics, classification_metrics
from chorus.evaluation.report import render_report

__all__ = ["ClassificationMetrics", "classification_metrics", "render_report"]
