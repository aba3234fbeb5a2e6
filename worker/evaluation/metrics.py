"""Classification metrics for multilabel tile scores: the paper's measures, one convention throughout.

Inputs everywhere: `labels` (N, C) of 0/1 (one column per catalogue class) and `scores` (N, C) of
probabilities in [0, 1], rows aligned.

Conventions (used by every function here, by the report and by the worker's thresholds):
- A prediction is positive when `score >= threshold`. Threshold 0 therefore marks every tile
  positive; threshold 1 marks only scores of exactly 1.0 positive.
- A ratio whose denominator is zero is 0.0: precision with no predicted positives, recall with no
  actual positives, F1 when precision + recall is 0.
- AUC is the area under the ROC curve (scikit-learn's `roc_auc_score`; tied scores count one half).
  It is undefined when a class has only positives or only negatives in `labels`: then it is None.
- The threshold sweep runs 0, step, 2·step, ..., 1 (rounded to 10 decimals so 0.15 is the same
  float as the text "0.15"). Per class, `choose_thresholds` keeps:
    objective "f1":     the highest F1; ties → fewer errors (fp + fn); then the lowest threshold.
    objective "f2":     the highest F2 (recall weighted twice as much as precision: a missed defect
                        costs more than a false alarm); ties → fewer errors; then the lowest threshold.
    objective "errors": the fewest errors; ties → the higher F1; then the lowest threshold.
  The F1 tie-break on errors matters for a class with no true positive at any threshold (F1 is 0
  everywhere): it picks the threshold with the fewest false alarms instead of threshold 0.
  The lowest-threshold rule keeps recall when thresholds are otherwise indistinguishable.
- The paper's binary accuracy is the mean over images of the mean over classes of
  [thresholded prediction == label].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from worker.core.errors import DatasetError

Objective = Literal["f1", "f2", "errors"]
OBJECTIVES: tuple[str, ...] = ("f1", "f2", "errors")


@dataclass(frozen=True)
class ThresholdSweep:
    """Counts and ratios for every (threshold, class): arrays of shape (T, C), rows = `thresholds`."""

    thresholds: np.ndarray  # (T,) float, 0 ... 1 ascending
    tp: np.ndarray  # (T, C) int
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray  # (T, C) float
    recall: np.ndarray
    f1: np.ndarray
    errors: np.ndarray  # (T, C) int: fp + fn

    @property
    def n_classes(self) -> int:
        return int(self.tp.shape[1])

    @property
    def f2(self) -> np.ndarray:
        """F2 = 5tp / (5tp + 4fn + fp) per (threshold, class); 0.0 where the denominator is 0."""
        tp = self.tp.astype(float)
        denominator = 5 * self.tp + 4 * self.fn + self.fp
        return np.divide(5 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)

    def choose(self, objective: Objective = "f1") -> np.ndarray:
        """Per class, the threshold the module's rule picks for `objective`; shape (C,)."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, received {objective!r}")
        chosen = np.empty(self.n_classes, dtype=float)
        f2_all = self.f2
        for c in range(self.n_classes):
            f1 = self.f1[:, c]
            errors = self.errors[:, c]
            # np.lexsort sorts by the last key first; thresholds ascending is the final tie-break.
            if objective == "f1":
                order = np.lexsort((self.thresholds, errors, -f1))
            elif objective == "f2":
                order = np.lexsort((self.thresholds, errors, -f2_all[:, c]))
            else:
                order = np.lexsort((self.thresholds, -f1, errors))
            chosen[c] = self.thresholds[order[0]]
        return chosen

    def to_dict(self, class_names: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """JSON-ready: {"thresholds": [...], "classes": {name: {"tp": [...], ..., "f1": [...]}}}."""
        if len(class_names) != self.n_classes:
            raise ValueError(f"expected {self.n_classes} class names, received {len(class_names)}")
        fields = ("tp", "fp", "tn", "fn", "precision", "recall", "f1", "errors")
        return {
            "thresholds": [float(t) for t in self.thresholds],
            "classes": {
                name: {f: getattr(self, f)[:, c].tolist() for f in fields}
                for c, name in enumerate(class_names)
            },
        }


@dataclass(frozen=True)
class ClassMetrics:
    """One class's confusion counts and measures at one threshold; `auc` is None when undefined."""

    tp: int
    tn: int
    fp: int
    fn: int
    recall: float
    precision: float
    accuracy: float
    f1: float
    auc: float | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_thresholds(step: float = 0.05) -> np.ndarray:
    """0, step, ..., 1 rounded to 10 decimals; ValueError unless `step` divides 1 into whole steps."""
    if not 0 < step <= 1:
        raise ValueError(f"step: expected a number in (0, 1], received {step}")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ValueError(
            f"step: expected a step that divides 1 into whole steps (e.g. 0.05), received {step}"
        )
    return np.round(np.arange(n + 1) * step, 10)


def threshold_sweep(labels: np.ndarray, scores: np.ndarray, step: float = 0.05) -> ThresholdSweep:
    """Confusion counts, precision, recall, F1 and errors for every threshold of the sweep and class."""
    y, s = _check(labels, scores)
    thresholds = sweep_thresholds(step)
    predicted = s[None, :, :] >= thresholds[:, None, None]  # (T, N, C)
    actual = y[None, :, :]
    tp = np.sum(predicted & actual, axis=1)
    fp = np.sum(predicted & ~actual, axis=1)
    fn = np.sum(~predicted & actual, axis=1)
    tn = np.sum(~predicted & ~actual, axis=1)
    precision, recall, f1 = _ratios(tp, fp, fn)
    return ThresholdSweep(
        thresholds=thresholds,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        errors=fp + fn,
    )


def choose_thresholds(
    labels: np.ndarray, scores: np.ndarray, objective: Objective = "f1", step: float = 0.05
) -> np.ndarray:
    """Per class, the sweep threshold maximising F1 or F2, or minimising errors (tie rules: module
    doc); shape (C,)."""
    return threshold_sweep(labels, scores, step).choose(objective)


def class_metrics(
    labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | float
) -> list[ClassMetrics]:
    """Per class (catalogue order): counts at its threshold, recall, precision, accuracy, F1, AUC."""
    y, s = _check(labels, scores)
    t = _check_thresholds(thresholds, y.shape[1])
    predicted = s >= t[None, :]
    tp = np.sum(predicted & y, axis=0)
    fp = np.sum(predicted & ~y, axis=0)
    fn = np.sum(~predicted & y, axis=0)
    tn = np.sum(~predicted & ~y, axis=0)
    precision, recall, f1 = _ratios(tp, fp, fn)
    n = y.shape[0]
    return [
        ClassMetrics(
            tp=int(tp[c]),
            tn=int(tn[c]),
            fp=int(fp[c]),
            fn=int(fn[c]),
            recall=float(recall[c]),
            precision=float(precision[c]),
            accuracy=float((tp[c] + tn[c]) / n),
            f1=float(f1[c]),
            auc=roc_auc(y[:, c], s[:, c]),
            threshold=float(t[c]),
        )
        for c in range(y.shape[1])
    ]


def binary_accuracy(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | float) -> float:
    """The paper's binary accuracy: mean over images of the mean over classes of [pred == label]."""
    y, s = _check(labels, scores)
    t = _check_thresholds(thresholds, y.shape[1])
    correct = (s >= t[None, :]) == y
    return float(correct.mean(axis=1).mean())


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC of one class (1-D arrays); None when the labels hold only one of the two values."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ROC curve of one class as (false positive rates, true positive rates); None when undefined."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=float), drop_intermediate=False)
    return fpr, tpr


def _ratios(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 elementwise, 0.0 wherever a denominator is 0."""
    tp_f = tp.astype(float)
    precision = np.divide(tp_f, tp + fp, out=np.zeros_like(tp_f), where=(tp + fp) > 0)
    recall = np.divide(tp_f, tp + fn, out=np.zeros_like(tp_f), where=(tp + fn) > 0)
    # F1 = 2tp / (2tp + fp + fn): the same as 2PR/(P+R), without a second division by zero.
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp_f, denominator, out=np.zeros_like(tp_f), where=denominator > 0)
    return precision, recall, f1


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels as bool, scores as float64), both (N, C) with N, C >= 1."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise DatasetError(f"labels: expected a non-empty (images, classes) array, received shape {y.shape}")
    if s.shape != y.shape:
        raise DatasetError(f"scores: expected shape {y.shape} like the labels, received {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DatasetError(f"labels: expected only 0 and 1, received values {np.unique(y).tolist()[:10]}")
    if not np.isfinite(s).all() or s.min() < 0 or s.max() > 1:
        raise DatasetError(
            f"scores: expected finite values in [0, 1], received min {np.nanmin(s)}, max {np.nanmax(s)}"
        )
    return y.astype(bool), s


def _check_thresholds(thresholds: np.ndarray | float, n_classes: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=float)
    if t.ndim == 0:
        t = np.full(n_classes, float(t))
    if t.shape != (n_classes,):
        raise DatasetError(f"thresholds: expected one per class ({n_classes}), received shape {t.shape}")
    if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise DatasetError(f"thresholds: expected values in [0, 1], received {t.tolist()}")
    return t


@dataclass(frozen=True)
class SingleLabelMetrics:
    """For a set where every tile holds exactly one class (NEU-DET, say): the class with the highest
    score is the prediction. `confusion[i][j]` counts tiles of class i predicted as class j;
    `macro_f1` is the mean over classes of the F1 of those top-1 predictions."""

    top1_accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    f1: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def single_label_metrics(labels: np.ndarray, scores: np.ndarray) -> SingleLabelMetrics | None:
    """Top-1 accuracy, macro-F1 and the class × class confusion matrix when every row of `labels`
    has exactly one positive; None otherwise (the paper's multilabel measures then stand alone).
    Ties in the scores go to the first class in catalogue order."""
    labels, scores = _check(labels, scores)
    if labels.shape[0] == 0 or not np.all(labels.sum(axis=1) == 1):
        return None
    n_classes = labels.shape[1]
    truth = labels.argmax(axis=1)
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    hits = np.diag(confusion).astype(float)
    _, _, f1 = _ratios(hits, confusion.sum(axis=0) - hits, confusion.sum(axis=1) - hits)
    return SingleLabelMetrics(
        top1_accuracy=float(hits.sum() / labels.shape[0]),
        macro_f1=float(f1.mean()),
        confusion=confusion.tolist(),
        f1=[float(v) for v in f1],
    )
