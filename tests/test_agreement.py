"""The agreement of an export with the Keras model: measured on hand-counted scores, enforced by
its limits (worker.model.agreement)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from worker.core.errors import ModelError
from worker.model.agreement import (
    AgreementLimits,
    check_agreement,
    measure_agreement,
    read_agreement,
    write_agreement,
)

NAMES = ("holes", "scratches")
THRESHOLDS = np.array([0.5, 0.3])
SOURCE = {"tile_set": "tiles", "part": "test", "tiles": 4}
# four tiles; holes on tiles 0 and 1, scratches on tile 2
LABELS = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
KERAS = np.array([[0.9, 0.1], [0.6, 0.2], [0.2, 0.8], [0.1, 0.1]])
# the export: tile 1's hole falls under 0.5 (a flip that costs a true positive), tile 3 gains a
# scratch (a flip that adds a false positive), the rest moves a little
EXPORT = np.array([[0.88, 0.12], [0.45, 0.2], [0.2, 0.79], [0.1, 0.35]])


def test_the_report_holds_hand_counted_figures() -> None:
    report = measure_agreement(KERAS, EXPORT, LABELS, THRESHOLDS, NAMES, source=SOURCE)
    assert report["tiles"] == 4 and report["source"] == SOURCE
    assert report["tiles_with_a_flip"] == 2
    assert report["max_abs_difference"] == pytest.approx(0.25)
    holes, scratches = report["classes"]["holes"], report["classes"]["scratches"]
    assert holes["flips"] == 1 and holes["flip_share"] == 0.25
    assert holes["max_abs_difference"] == pytest.approx(0.15)
    assert holes["mean_abs_difference"] == pytest.approx((0.02 + 0.15 + 0 + 0) / 4)
    # holes: Keras finds both (F1 1); the export finds one of two, no false positive: F1 2/3
    assert holes["f1_reference"] == 1.0 and holes["f1_export"] == pytest.approx(2 / 3)
    # scratches: Keras 1 TP; the export 1 TP + 1 FP: precision 1/2, recall 1, F1 2/3
    assert scratches["flips"] == 1 and scratches["f1_export"] == pytest.approx(2 / 3)
    assert holes["auc_reference"] == 1.0 and holes["threshold"] == 0.5


def test_a_class_with_one_label_value_has_no_auc() -> None:
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    report = measure_agreement(KERAS, KERAS, labels, THRESHOLDS, NAMES, source=SOURCE)
    assert report["classes"]["scratches"]["auc_reference"] is None
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # plain JSON, no NaN


@pytest.mark.parametrize(
    ("reference", "exported", "labels"),
    [
        (KERAS, EXPORT[:3], LABELS),
        (KERAS[:0], EXPORT[:0], LABELS[:0]),
        (KERAS[:, 0], EXPORT[:, 0], LABELS[:, 0]),
        (KERAS, EXPORT, LABELS[:, :1]),
    ],
)
def test_scores_of_other_shapes_are_refused(
    reference: np.ndarray, exported: np.ndarray, labels: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="expected reference, exported and labels of one shape"):
        measure_agreement(reference, exported, labels, THRESHOLDS, NAMES, source=SOURCE)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_make_the_export_unusable(bad: float) -> None:
    exported = EXPORT.copy()
    exported[2, 1] = bad
    with pytest.raises(ModelError, match="NaN or infinite"):
        measure_agreement(KERAS, exported, LABELS, THRESHOLDS, NAMES, source=SOURCE)


def _report(exported: np.ndarray = EXPORT) -> dict:
    return measure_agreement(KERAS, exported, LABELS, THRESHOLDS, NAMES, source=SOURCE)


def test_an_export_inside_the_limits_passes() -> None:
    report = _report(KERAS + 0.01)  # no flip, the same F1
    check_agreement(report, {"holes": 0.5, "scratches": 0.3}, AgreementLimits(), Path("a.json"))


def test_an_export_outside_the_limits_is_refused_with_each_class_and_figure() -> None:
    with pytest.raises(ModelError) as refused:
        check_agreement(_report(), {"holes": 0.5, "scratches": 0.3}, AgreementLimits(), Path("a.json"))
    message = str(refused.value)
    assert "holes: F1 0.6667 against 1.0000 (drop 0.3333 > 0.01)" in message
    assert "holes: decisions flipped on 25.00% of 4 tiles (> 0.50%)" in message
    assert "scratches: decisions flipped on 25.00% of 4 tiles" in message
    assert "MODEL_AGREEMENT_MAX_F1_DROP" in message


def test_the_limits_decide_and_an_f1_gain_is_no_drop() -> None:
    report = _report()
    thresholds = {"holes": 0.5, "scratches": 0.3}
    check_agreement(report, thresholds, AgreementLimits(max_f1_drop=0.34, max_flip_share=0.25), Path("a"))
    with pytest.raises(ModelError, match="flipped"):
        check_agreement(report, thresholds, AgreementLimits(max_f1_drop=0.34, max_flip_share=0.24), Path("a"))
    with pytest.raises(ModelError, match=r"drop 0.3333 > 0.33"):
        check_agreement(report, thresholds, AgreementLimits(max_f1_drop=0.33, max_flip_share=1), Path("a"))
    report["classes"]["holes"]["f1_export"] = 1.0  # better than Keras: not a drop
    report["classes"]["scratches"]["f1_export"] = 1.0
    check_agreement(report, thresholds, AgreementLimits(max_f1_drop=0, max_flip_share=1), Path("a"))


def test_a_report_at_other_thresholds_or_classes_is_refused() -> None:
    report = _report(KERAS)
    with pytest.raises(ModelError, match=r"other thresholds than the model's for \['scratches'\]"):
        check_agreement(report, {"holes": 0.5, "scratches": 0.35}, AgreementLimits(), Path("a"))
    with pytest.raises(ModelError, match="covers classes"):
        check_agreement(report, {"holes": 0.5}, AgreementLimits(), Path("a"))


@pytest.mark.parametrize(
    "figures",
    [
        {},
        {"f1_reference": "x", "f1_export": 1, "flip_share": 0},
        {"f1_reference": 1, "f1_export": 1, "flip_share": None},
    ],
)
def test_a_class_without_its_figures_is_refused(figures: dict) -> None:
    report = _report(KERAS)
    report["classes"]["holes"] = {"threshold": 0.5, **figures}
    with pytest.raises(ModelError, match="holes"):
        check_agreement(report, {"holes": 0.5, "scratches": 0.3}, AgreementLimits(), Path("a"))


def test_a_nan_figure_never_passes() -> None:
    report = _report(KERAS)
    report["classes"]["holes"]["flip_share"] = math.nan
    with pytest.raises(ModelError, match="flipped"):
        check_agreement(
            report, {"holes": 0.5, "scratches": 0.3}, AgreementLimits(max_flip_share=1), Path("a")
        )


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "0.1"])
def test_limits_outside_zero_to_one_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected a number in"):
        AgreementLimits(max_f1_drop=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"format": "other"}', '{"format": "steel-worker-agreement/1", "classes": []}'],
)
def test_a_malformed_report_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agreement.json"
    path.write_text(text)
    with pytest.raises(ModelError, match="agreement"):
        read_agreement(path)


def test_a_report_round_trips_through_its_file(tmp_path: Path) -> None:
    report = _report()
    write_agreement(report, tmp_path / "agreement.json")
    assert read_agreement(tmp_path / "agreement.json") == report
