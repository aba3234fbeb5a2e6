"""How far an export's scores are from the Keras model's: measured at export, enforced at load.

`measure_agreement` compares the two models' scores on the same labelled tiles (the model's test
split by default) at the model's thresholds and returns the report `export` writes as
`agreement.json` beside the exported network: per class the largest and mean |Δscore|, the tiles
whose decision flips at the class's threshold, and the F1 and AUC of both. `check_agreement` refuses
(ModelError) a report outside `AgreementLimits` — by default an F1 more than 0.01 below the Keras
model's on any class, or decisions flipped on more than 0.5 % of the tiles for any class — or one
made at other thresholds than the model's current ones. The loader applies it to INT8 exports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.errors import ModelError

AGREEMENT_FILE = "agreement.json"
FORMAT = "steel-worker-agreement/1"


@dataclass(frozen=True)
class AgreementLimits:
    """The most an export may differ from the Keras model and still be run."""

    max_f1_drop: float = 0.01  # F1 of the export at least the Keras model's minus this, per class
    max_flip_share: float = 0.005  # tiles whose decision flips, per class, as a share of the tiles

    def __post_init__(self) -> None:
        for name in ("max_f1_drop", "max_flip_share"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"agreement limit {name}: expected a number in [0, 1], received {value!r}")


def measure_agreement(
    reference: np.ndarray,
    exported: np.ndarray,
    labels: np.ndarray,
    thresholds: np.ndarray,
    names: tuple[str, ...] | list[str],
    *,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The agreement report of `exported` scores against `reference` scores (both (N, C), catalogue
    order) on tiles with 0/1 `labels` (N, C), at `thresholds` (C,). `source` says where the tiles
    came from (kept in the report as it is)."""
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    labels = np.asarray(labels)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n, c = reference.shape if reference.ndim == 2 else (0, 0)
    if reference.ndim != 2 or n == 0 or exported.shape != reference.shape or labels.shape != reference.shape:
        raise ValueError(
            "agreement: expected reference, exported and labels of one shape (N >= 1, C), received "
            f"{reference.shape}, {exported.shape}, {labels.shape}"
        )
    if thresholds.shape != (c,) or len(names) != c:
        raise ValueError(
            f"agreement: expected {c} thresholds and names, received {thresholds.shape}, {len(names)}"
        )
    if not (np.isfinite(reference).all() and np.isfinite(exported).all()):
        raise ModelError("agreement: the scores hold NaN or infinite values; the export is not usable")
    from worker.evaluation.metrics import class_metrics  # noqa: PLC0415 (scikit-learn: seconds to import)

    difference = np.abs(exported - reference)
    flips = (exported >= thresholds) != (reference >= thresholds)
    before = class_metrics(labels, reference, thresholds)
    after = class_metrics(labels, exported, thresholds)
    classes = {}
    for k, name in enumerate(names):
        classes[name] = {
            "threshold": float(thresholds[k]),
            "max_abs_difference": float(difference[:, k].max()),
            "mean_abs_difference": float(difference[:, k].mean()),
            "flips": int(flips[:, k].sum()),
            "flip_share": float(flips[:, k].mean()),
            "f1_reference": float(before[k].f1),
            "f1_export": float(after[k].f1),
            "auc_reference": before[k].auc,  # None when the tiles hold only one label value
            "auc_export": after[k].auc,
        }
    return {
        "format": FORMAT,
        "source": source,
        "tiles": int(n),
        "max_abs_difference": float(difference.max()),
        "tiles_with_a_flip": int(flips.any(axis=1).sum()),
        "classes": classes,
    }


def write_agreement(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_agreement(path: Path) -> dict[str, Any]:
    """The report at `path`, its shape checked; ModelError names the file and what is wrong."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: expected the agreement report written by `export`, {exc}") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ModelError(f"{path}: expected an agreement report of format {FORMAT!r}")
    classes = report.get("classes")
    if not isinstance(classes, dict) or not all(isinstance(v, dict) for v in classes.values()):
        raise ModelError(f"{path}: field 'classes' must map each class to its figures")
    return report


def check_agreement(
    report: dict[str, Any], thresholds: dict[str, float], limits: AgreementLimits, source: Path
) -> None:
    """ModelError unless `report` covers every class of `thresholds` at those thresholds and each
    class is inside `limits`; the message names each class outside them and by how much."""
    classes = report["classes"]
    if set(classes) != set(thresholds):
        raise ModelError(
            f"{source}: the report covers classes {sorted(classes)}, the model has {sorted(thresholds)}"
        )
    moved = [name for name, value in thresholds.items() if not _close(classes[name].get("threshold"), value)]
    if moved:
        raise ModelError(
            f"{source}: measured at other thresholds than the model's for {moved}; the thresholds were "
            "changed after the export, so its agreement is not known: run `steel-worker export` again"
        )
    problems = []
    for name, figures in classes.items():
        try:
            drop = float(figures["f1_reference"]) - float(figures["f1_export"])
            share = float(figures["flip_share"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(
                f"{source}: class {name!r} lacks f1_reference, f1_export or flip_share"
            ) from None
        if not (drop <= limits.max_f1_drop):  # NaN fails too
            problems.append(
                f"{name}: F1 {figures['f1_export']:.4f} against {figures['f1_reference']:.4f} "
                f"(drop {drop:.4f} > {limits.max_f1_drop})"
            )
        if not (share <= limits.max_flip_share):
            problems.append(
                f"{name}: decisions flipped on {share:.2%} of {report.get('tiles')} tiles "
                f"(> {limits.max_flip_share:.2%})"
            )
    if problems:
        raise ModelError(
            f"{source}: the export disagrees with the Keras model beyond the limits — "
            + "; ".join(problems)
            + " (limits MODEL_AGREEMENT_MAX_F1_DROP, MODEL_AGREEMENT_MAX_FLIPS; or run the fp32 export or "
            "MODEL_RUNTIME=tensorflow)"
        )


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(float(a) - float(b)) <= 1e-9
