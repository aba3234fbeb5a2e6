"""Evaluation metrics against cases counted by hand (the expected numbers are written out, not computed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.core.errors import DatasetError
from worker.evaluation.metrics import (
    binary_accuracy,
    choose_thresholds,
    class_metrics,
    roc_auc,
    sweep_thresholds,
    threshold_sweep,
)

# Six images, two classes (holes, scratches).
LABELS = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 0]])
SCORES = np.array([[0.9, 0.1], [0.4, 0.8], [0.3, 0.2], [0.6, 0.55], [0.7, 0.45], [0.1, 0.05]])


def test_class_metrics_at_half_match_hand_counts() -> None:
    """At 0.5: holes predicted 1,0,0,1,1,0 vs labels 1,1,0,0,1,0 → tp 2, fn 1 (img 1), fp 1 (img 3), tn 2;
    scratches predicted 0,1,0,1,0,0 = labels → tp 2, tn 4."""
    holes, scratches = class_metrics(LABELS, SCORES, np.array([0.5, 0.5]))
    assert (holes.tp, holes.tn, holes.fp, holes.fn) == (2, 2, 1, 1)
    assert holes.precision == pytest.approx(2 / 3)
    assert holes.recall == pytest.approx(2 / 3)
    assert holes.f1 == pytest.approx(2 / 3)
    assert holes.accuracy == pytest.approx(4 / 6)
    assert holes.threshold == 0.5
    assert (scratches.tp, scratches.tn, scratches.fp, scratches.fn) == (2, 4, 0, 0)
    assert (scratches.precision, scratches.recall, scratches.f1, scratches.accuracy) == (1.0, 1.0, 1.0, 1.0)


def test_score_equal_to_threshold_is_positive() -> None:
    """Convention: score >= threshold is positive; holes at 0.4 counts image 1 (score 0.4) as a hit."""
    holes, _ = class_metrics(LABELS, SCORES, np.array([0.4, 0.5]))
    assert (holes.tp, holes.tn, holes.fp, holes.fn) == (3, 2, 1, 0)


def test_auc_matches_pair_count() -> None:
    """Holes positives {.9,.4,.7} vs negatives {.3,.6,.1}: 3 + 2 + 3 = 8 of 9 pairs ranked right."""
    holes, scratches = class_metrics(LABELS, SCORES, 0.5)
    assert holes.auc == pytest.approx(8 / 9)
    assert scratches.auc == pytest.approx(1.0)


def test_auc_counts_ties_as_half() -> None:
    """Positives {.8,.5} vs negatives {.5,.2}: .8 beats both (2), .5 ties .5 (½), beats .2 (1) → 3.5/4."""
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.5, 0.5, 0.2])) == pytest.approx(0.875)


def test_auc_is_none_when_one_class_is_absent() -> None:
    """A class with no positives (or only positives) has no ROC curve: AUC None, counts still computed."""
    labels = np.array([[0, 1], [0, 1], [0, 1]])
    scores = np.array([[0.2, 0.9], [0.7, 0.3], [0.1, 0.6]])
    absent, everywhere = class_metrics(labels, scores, 0.5)
    assert absent.auc is None and everywhere.auc is None
    assert (absent.tp, absent.fp, absent.tn, absent.fn) == (0, 1, 2, 0)
    assert (absent.precision, absent.recall, absent.f1) == (0.0, 0.0, 0.0)  # 0/0 → 0.0
    assert (everywhere.tp, everywhere.fn) == (2, 1)


def test_binary_accuracy_is_the_papers_mean_of_means() -> None:
    """At 0.5 per image: 1, .5 (holes missed), 1, .5 (holes false alarm), 1, 1 → 5/6.
    With holes at 0.4 image 1 becomes right: 1, 1, 1, .5, 1, 1 → 11/12."""
    assert binary_accuracy(LABELS, SCORES, 0.5) == pytest.approx(5 / 6)
    assert binary_accuracy(LABELS, SCORES, np.array([0.4, 0.5])) == pytest.approx(11 / 12)


def test_sweep_thresholds_are_exact_twentieths() -> None:
    """0, 0.05, ..., 1: 21 values, each the same float as its decimal text (no accumulated drift)."""
    t = sweep_thresholds(0.05)
    assert len(t) == 21
    assert [float(v) for v in t] == [float(f"{i * 5 / 100:.2f}") for i in range(21)]
    assert list(sweep_thresholds(0.25)) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="divides 1"):
        sweep_thresholds(0.3)


# Eight images, two classes. Class 0: positives score .9, .2, .2; negatives .3, .3, .3, .1, .05.
# Class 0 by hand (threshold: tp fp fn → F1, errors):
#   0, .05: 3 5 0 → 6/11, 5     .1: 3 4 0 → 6/10, 4     .15, .2: 3 3 0 → 6/9, 3
#   .25, .3: 1 3 2 → 2/7, 5     .35 ... .9: 1 0 2 → 2/4, 2     .95, 1: 0 0 3 → 0, 3
# Class 1 has no positives: F1 is 0 everywhere; false positives stop above its top score .3.
SWEEP_LABELS = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]])
SWEEP_SCORES = np.array(
    [[0.9, 0.1], [0.2, 0.3], [0.2, 0.2], [0.3, 0.0], [0.3, 0.0], [0.3, 0.0], [0.1, 0.0], [0.05, 0.0]]
)


def test_sweep_counts_match_hand_table() -> None:
    sweep = threshold_sweep(SWEEP_LABELS, SWEEP_SCORES)
    row = {round(float(t), 2): i for i, t in enumerate(sweep.thresholds)}
    expected = {
        0.0: (3, 5, 0),
        0.1: (3, 4, 0),
        0.15: (3, 3, 0),
        0.3: (1, 3, 2),
        0.5: (1, 0, 2),
        1.0: (0, 0, 3),
    }
    for t, (tp, fp, fn) in expected.items():
        i = row[t]
        assert (sweep.tp[i, 0], sweep.fp[i, 0], sweep.fn[i, 0]) == (tp, fp, fn), t
        assert sweep.tn[i, 0] == 5 - fp
        assert sweep.errors[i, 0] == fp + fn
    assert sweep.f1[row[0.15], 0] == pytest.approx(6 / 9)
    assert sweep.f1[row[0.25], 0] == pytest.approx(2 / 7)
    assert sweep.precision[row[0.1], 0] == pytest.approx(3 / 7)
    assert sweep.recall[row[0.5], 0] == pytest.approx(1 / 3)


def test_sweep_picks_the_f1_maximum() -> None:
    """Class 0: F1 6/9 at 0.15 and 0.2 (3 errors each) → the lower, 0.15. Class 1 (F1 0 everywhere): the
    tie-break on errors picks the first threshold with no false alarm, 0.35, not 0."""
    chosen = choose_thresholds(SWEEP_LABELS, SWEEP_SCORES, "f1")
    assert chosen.tolist() == [0.15, 0.35]


def test_sweep_picks_the_errors_minimum() -> None:
    """Class 0: 2 errors from 0.35 to 0.9 (F1 .5 each) → 0.35, unlike the F1 choice 0.15."""
    chosen = choose_thresholds(SWEEP_LABELS, SWEEP_SCORES, "errors")
    assert chosen.tolist() == [0.35, 0.35]


def test_sweep_picks_the_f2_maximum_which_keeps_recall() -> None:
    """Positives .9, .3; negatives .35, .35, .1. F1 is 2/3 both at .15–.3 (2 false alarms) and at
    .4–.9 (one miss): the tie-break on errors picks .4. F2 weighs the miss four times a false alarm:
    10/12 at .15–.3 against 5/9 at .4, so .15 (the lowest of the best)."""
    labels = np.array([[1], [1], [0], [0], [0]])
    scores = np.array([[0.9], [0.3], [0.35], [0.35], [0.1]])
    sweep = threshold_sweep(labels, scores)
    row = {round(float(t), 2): i for i, t in enumerate(sweep.thresholds)}
    assert sweep.f2[row[0.2], 0] == pytest.approx(10 / 12) and sweep.f2[row[0.4], 0] == pytest.approx(5 / 9)
    assert choose_thresholds(labels, scores, "f1").tolist() == [0.4]
    assert choose_thresholds(labels, scores, "f2").tolist() == [0.15]
    with pytest.raises(ValueError, match="objective"):
        sweep.choose("f3")  # type: ignore[arg-type]


def test_chosen_threshold_reproduces_the_sweep_row() -> None:
    """class_metrics at the chosen thresholds gives the sweep's counts at those thresholds."""
    chosen = choose_thresholds(SWEEP_LABELS, SWEEP_SCORES)
    first = class_metrics(SWEEP_LABELS, SWEEP_SCORES, chosen)[0]
    assert (first.tp, first.fp, first.fn, first.tn) == (3, 3, 0, 2)
    assert first.f1 == pytest.approx(6 / 9)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([[2, 0]]), np.array([[0.5, 0.5]]), "labels: expected only 0 and 1"),
        (np.array([[1, 0]]), np.array([[1.2, 0.5]]), r"scores: expected finite values in \[0, 1\]"),
        (np.array([[1, 0]]), np.array([[np.nan, 0.5]]), r"scores: expected finite values in \[0, 1\]"),
        (np.array([[1, 0]]), np.array([[0.5, 0.5, 0.5]]), "scores: expected shape"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "labels: expected a non-empty"),
        (np.array([1, 0]), np.array([0.5, 0.5]), "labels: expected a non-empty"),
    ],
)
def test_bad_arrays_are_refused(labels: np.ndarray, scores: np.ndarray, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        threshold_sweep(labels, scores)


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(DatasetError, match="one per class"):
        class_metrics(LABELS, SCORES, np.array([0.5, 0.5, 0.5]))
    with pytest.raises(DatasetError, match=r"values in \[0, 1\]"):
        binary_accuracy(LABELS, SCORES, np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="objective"):
        threshold_sweep(LABELS, SCORES).choose("recall")  # type: ignore[arg-type]


# --- single-label sets ---------------------------------------------------------------------------------


def test_single_label_metrics_against_hand_counted_tiles() -> None:
    from worker.evaluation.metrics import single_label_metrics  # noqa: PLC0415

    # six tiles, one class each: A, A, B, B, C, C; the highest score says A, B, B, B, C, A
    labels = np.eye(3, dtype=int)[[0, 0, 1, 1, 2, 2]]
    scores = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.4, 0.5, 0.2],
            [0.3, 0.8, 0.1],
            [0.2, 0.7, 0.6],
            [0.1, 0.2, 0.9],
            [0.5, 0.1, 0.4],
        ]
    )
    found = single_label_metrics(labels, scores)
    assert found is not None
    assert found.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert found.top1_accuracy == pytest.approx(4 / 6)
    # A: tp 1, fp 1, fn 1 → F1 0.5; B: tp 2, fp 1, fn 0 → 0.8; C: tp 1, fp 0, fn 1 → 2/3
    assert found.f1 == pytest.approx([0.5, 0.8, 2 / 3])
    assert found.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_single_label_metrics_stay_out_of_multilabel_and_clean_tiles() -> None:
    from worker.evaluation.metrics import single_label_metrics  # noqa: PLC0415

    scores = np.full((3, 2), 0.5)
    assert single_label_metrics(np.array([[1, 1], [1, 0], [0, 1]]), scores) is None  # two classes on a tile
    assert single_label_metrics(np.array([[0, 0], [1, 0], [0, 1]]), scores) is None  # a clean tile
    ties = single_label_metrics(np.array([[0, 1], [1, 0], [0, 1]]), scores)
    assert ties is not None and ties.confusion == [[1, 0], [2, 0]]  # a tie goes to the first class


def test_the_report_of_a_single_label_set_has_top1_macro_f1_and_the_class_confusion(tmp_path: Path) -> None:
    import json  # noqa: PLC0415

    from worker.evaluation.report import evaluate_scores  # noqa: PLC0415

    labels = np.eye(3, dtype=int)[[0, 1, 2, 2]]
    scores = np.array([[0.9, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.8], [0.6, 0.1, 0.3]])
    report = evaluate_scores(labels, scores, ["crazing", "inclusion", "patches"], 0.5, tmp_path)
    single = report["single_label"]
    assert single["top1_accuracy"] == pytest.approx(0.75)
    assert single["confusion"]["rows_actual_columns_predicted"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert json.loads((tmp_path / "class_confusion.json").read_text())["classes"] == [
        "crazing",
        "inclusion",
        "patches",
    ]
    assert (tmp_path / "class_confusion.png").stat().st_size > 5_000
    assert "top-1 accuracy 0.7500" in (tmp_path / "report.md").read_text()
    assert report["binary_accuracy"] == pytest.approx(
        np.mean((scores >= 0.5) == labels)
    )  # the paper's measure, unchanged
    multi = evaluate_scores(
        np.array([[1, 1, 0], [0, 1, 0]]), scores[:2], ["a", "b", "c"], 0.5, tmp_path / "m"
    )
    assert "single_label" not in multi and not (tmp_path / "m" / "class_confusion.png").exists()
