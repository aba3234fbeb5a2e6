"""Judging a classifier: per-class metrics, threshold sweeps, ROC/AUC, the report and its plots.

Public: `metrics` (what training and evaluation share), `command` (`steel-worker evaluate`).
"""

__all__ = ["command", "metrics"]
