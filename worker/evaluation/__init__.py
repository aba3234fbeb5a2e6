"""Judging a classifier: per-class metrics, threshold sweeps, ROC/AUC, the report and its plots."""
