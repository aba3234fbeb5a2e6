"""The evaluation report's figures, drawn with matplotlib's Agg backend (no display needed).

Each function writes one PNG and returns its path; all follow `metrics`' conventions (a prediction is
positive when score >= threshold). Figures close after saving, so a long run does not hold them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from worker.evaluation.metrics import ThresholdSweep, class_metrics, roc_auc, roc_points

_DPI = 100


def plot_roc(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """One ROC curve per class on shared axes, each class's AUC in the legend ("undefined" when the
    class has only one label value in `labels`, in which case it has no curve)."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for c, name in enumerate(class_names):
        points = roc_points(labels[:, c], scores[:, c])
        if points is None:
            ax.plot([], [], " ", label=f"{name} (AUC undefined: one label value only)")
            continue
        fpr, tpr = points
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUC {roc_auc(labels[:, c], scores[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate (recall)")
    ax.set_title(f"ROC per class ({labels.shape[0]} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def plot_confusion_matrices(
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    settings: Sequence[tuple[str, np.ndarray]],
    path: Path,
) -> Path:
    """A grid of 2×2 confusion matrices: one row per class, one column per (title, thresholds (C,))
    setting; each cell is titled with the setting's title and the class's threshold.
    Cells: rows = actual (defect, no defect), columns = predicted (defect, no defect)."""
    n_rows, n_cols = len(class_names), len(settings)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.7 * n_cols, 2.5 * n_rows + 0.6), squeeze=False)
    for j, (title, thresholds) in enumerate(settings):
        per_class = class_metrics(labels, scores, thresholds)
        for c, name in enumerate(class_names):
            m = per_class[c]
            matrix = np.array([[m.tp, m.fn], [m.fp, m.tn]])
            ax = axes[c][j]
            ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
            for (r, k), value in np.ndenumerate(matrix):
                dark = value > matrix.max() / 2
                ax.text(
                    k,
                    r,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="white" if dark else "black",
                )
            ax.set_xticks([0, 1], ["defect", "no defect"], fontsize=8)
            ax.set_yticks([0, 1], ["defect", "no defect"], fontsize=8)
            if c == n_rows - 1:
                ax.set_xlabel("predicted", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{name}\nactual", fontsize=9)
            ax.set_title(f"{title} t={m.threshold:.2f}", fontsize=9)
    fig.suptitle("Confusion matrices per class (score ≥ t is a defect)", fontsize=11)
    return _save(fig, path)


def plot_class_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """The class × class confusion matrix of top-1 predictions: rows actual, columns predicted,
    counts in the cells, shading by the share of the row (so a small class reads as well as a big one)."""
    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, 0.9 * len(class_names) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (r, k), value in np.ndenumerate(matrix):
        ax.text(k, r, str(int(value)), ha="center", va="center", fontsize=10,
                color="white" if shares[r, k] > 0.5 else "black")  # fmt: skip
    ticks = list(range(len(class_names)))
    ax.set_xticks(ticks, list(class_names), rotation=35, ha="right", fontsize=9)
    ax.set_yticks(ticks, list(class_names), fontsize=9)
    ax.set_xlabel("predicted (highest score)")
    ax.set_ylabel("actual")
    accuracy = np.trace(matrix) / matrix.sum() if matrix.sum() else 0.0
    ax.set_title(f"Top-1 confusion ({int(matrix.sum())} tiles, accuracy {accuracy:.3f})", fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the actual class")
    return _save(fig, path)


def plot_threshold_sweep(
    sweep: ThresholdSweep, class_names: Sequence[str], chosen: np.ndarray, path: Path
) -> Path:
    """Per class, precision, recall and F1 against the threshold, with the chosen threshold marked."""
    n = len(class_names)
    n_cols = min(n, 3)
    n_rows = math.ceil(n / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.6 * n_rows), squeeze=False)
    for c, name in enumerate(class_names):
        ax = axes[c // n_cols][c % n_cols]
        t = sweep.thresholds
        ax.plot(t, sweep.precision[:, c], marker=".", label="precision")
        ax.plot(t, sweep.recall[:, c], marker=".", label="recall")
        ax.plot(t, sweep.f1[:, c], marker=".", linewidth=2.2, label="F1")
        ax.axvline(chosen[c], color="black", linestyle="--", linewidth=1, label=f"chosen {chosen[c]:.2f}")
        ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="threshold", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for k in range(n, n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_visible(False)
    fig.suptitle("Threshold sweep", fontsize=11)
    return _save(fig, path)


def plot_training_curves(history_csv: Path, path: Path) -> Path | None:
    """Training curves from a Keras CSVLogger file: one panel per metric, train and `val_` lines.

    Returns None (and writes nothing) when the file has no rows or no numeric columns besides `epoch`.
    """
    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        if name is None or name == "epoch":
            continue
        values = [_to_float(row.get(name)) for row in rows]
        if any(not math.isnan(v) for v in values):
            columns[name] = np.asarray(values)
    if not columns:
        return None
    epochs = np.asarray([_to_float(row.get("epoch")) for row in rows])
    if np.isnan(epochs).any():
        epochs = np.arange(len(rows), dtype=float)
    epochs = epochs + 1  # CSVLogger counts from 0; people count epochs from 1
    bases = list(dict.fromkeys(name.removeprefix("val_") for name in columns))
    bases.sort(key=lambda b: b != "loss")  # loss first, then the file's order (a stable sort)
    n_cols = min(len(bases), 3)
    n_rows = math.ceil(len(bases) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.3 * n_rows), squeeze=False)
    for k, base in enumerate(bases):
        ax = axes[k // n_cols][k % n_cols]
        if base in columns:
            ax.plot(epochs, columns[base], marker=".", label="train" if f"val_{base}" in columns else base)
        if f"val_{base}" in columns:
            ax.plot(epochs, columns[f"val_{base}"], marker=".", label="validation")
        ax.set(title=base, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for k in range(len(bases), n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_visible(False)
    fig.suptitle(f"Training curves ({len(rows)} epochs)", fontsize=11)
    return _save(fig, path)


def _to_float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path
