"""Evaluation: metrics on a held-out split and a self-contained HTML report."""

from chorus.evaluation.report import render_report
from chorus.metrics.classification import ClassificationMetrics, classification_metrics

__all__ = ["ClassificationMetrics", "classification_metrics", "render_report"]
