"""The evaluation report: `evaluate_scores` turns labels and scores into report.json, report.md, PNGs.

Files written into the report directory:
    report.json                 per class tp tn fp fn recall precision accuracy f1 auc threshold,
                                the paper's binary_accuracy, n_images, source, counts at the fixed
                                thresholds 0.2/0.4/0.6/0.8, the sweep's best thresholds on these data,
                                and whatever `extra` adds (e.g. model_version)
    report.md                   the same as readable tables, with the figures embedded
    sweep.csv                   the full threshold sweep (threshold, class, tp, fp, tn, fn, precision,
                                recall, f1, errors)
    roc.png, confusion_matrices.png, threshold_sweep.png, and training_curves.png when a training
    history (Keras CSVLogger file) is given
    class_confusion.png and class_confusion.json, and report.json's `single_label` (top-1 accuracy,
                                macro-F1 of the top-1 predictions, the class × class confusion
                                matrix), when every tile holds exactly one class
Conventions (positive when score >= threshold, 0/0 = 0.0, AUC None when undefined) are `metrics`'.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.evaluation import plots
from worker.evaluation.metrics import (
    ClassMetrics,
    ThresholdSweep,
    binary_accuracy,
    class_metrics,
    single_label_metrics,
    threshold_sweep,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SWEEP_CSV = "sweep.csv"
FIXED_THRESHOLDS = (0.2, 0.4, 0.6, 0.8)
FIGURES = {
    "roc": "roc.png",
    "confusion_matrices": "confusion_matrices.png",
    "threshold_sweep": "threshold_sweep.png",
    "training_curves": "training_curves.png",
    "class_confusion": "class_confusion.png",
}
CLASS_CONFUSION_JSON = "class_confusion.json"


def evaluate_scores(  # noqa: PLR0917  (the positional order is the interface training calls)
    labels: np.ndarray,
    scores: np.ndarray,
    catalogue_names: Sequence[str],
    thresholds: np.ndarray | float,
    out_dir: str | Path,
    history_csv: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    *,
    source: str = "scores given in memory",
    step: float = 0.05,
    display_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Judge `scores` (N, C) against `labels` (N, C) at per-class `thresholds`; write the report files
    into `out_dir` (created if needed) and return the report.json content.

    `extra` keys are added to report.json at the top level (they may not replace the report's own
    keys); `history_csv`, when it exists, adds the training curves figure. `display_names` (machine
    name → the name people read, e.g. the catalogue's) label the figures and report.md; report.json
    stays keyed by machine name and gains `display_names` when one differs from its name.
    """
    names = list(catalogue_names)
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    per_class = class_metrics(labels, scores, thresholds)  # validates shapes, values, thresholds
    if len(names) != len(per_class):
        raise ValueError(f"catalogue_names: expected {len(per_class)} names, received {len(names)}")
    chosen = np.array([m.threshold for m in per_class])
    shown = {n: (display_names or {}).get(n) or n for n in names}
    labelled = [shown[n] for n in names]  # what the figures print
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    sweep = threshold_sweep(labels, scores, step)
    fixed = {
        f"{t:.1f}": {
            "binary_accuracy": binary_accuracy(labels, scores, t),
            "classes": {n: _counts(m) for n, m in zip(names, class_metrics(labels, scores, t), strict=True)},
        }
        for t in FIXED_THRESHOLDS
    }
    aucs = [m.auc for m in per_class if m.auc is not None]
    report: dict[str, Any] = {
        "source": source,
        "n_images": int(labels.shape[0]),
        "classes": {n: m.to_dict() for n, m in zip(names, per_class, strict=True)},
        "binary_accuracy": binary_accuracy(labels, scores, chosen),
        "macro_f1": float(np.mean([m.f1 for m in per_class])),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "positives": {n: int(v) for n, v in zip(names, labels.sum(axis=0), strict=True)},
        **({"display_names": shown} if any(shown[n] != n for n in names) else {}),
        "fixed_thresholds": fixed,
        "sweep_best_on_these_data": {
            "note": "thresholds chosen on the evaluated data themselves: optimistic, for comparison only",
            "f1": dict(zip(names, sweep.choose("f1").tolist(), strict=True)),
            "f2": dict(zip(names, sweep.choose("f2").tolist(), strict=True)),
            "errors": dict(zip(names, sweep.choose("errors").tolist(), strict=True)),
        },
        "figures": {},
    }

    figures: dict[str, str] = {}
    plots.plot_roc(labels, scores, labelled, out / FIGURES["roc"])
    figures["roc"] = FIGURES["roc"]
    settings = [("fixed", np.full(len(names), t)) for t in FIXED_THRESHOLDS]
    settings.append(("chosen", chosen))
    plots.plot_confusion_matrices(labels, scores, labelled, settings, out / FIGURES["confusion_matrices"])
    figures["confusion_matrices"] = FIGURES["confusion_matrices"]
    plots.plot_threshold_sweep(sweep, labelled, chosen, out / FIGURES["threshold_sweep"])
    figures["threshold_sweep"] = FIGURES["threshold_sweep"]
    single = single_label_metrics(labels, scores)
    if single is not None:
        report["single_label"] = {
            "top1_accuracy": single.top1_accuracy,
            "macro_f1": single.macro_f1,
            "f1": dict(zip(names, single.f1, strict=True)),
            "confusion": {"classes": names, "rows_actual_columns_predicted": single.confusion},
        }
        (out / CLASS_CONFUSION_JSON).write_text(
            json.dumps(report["single_label"]["confusion"], indent=2) + "\n", encoding="utf-8"
        )
        plots.plot_class_confusion(single.confusion, labelled, out / FIGURES["class_confusion"])
        figures["class_confusion"] = FIGURES["class_confusion"]
    if history_csv is not None and Path(history_csv).is_file():
        drawn = plots.plot_training_curves(Path(history_csv), out / FIGURES["training_curves"])
        if drawn is not None:
            figures["training_curves"] = FIGURES["training_curves"]
    report["figures"] = figures

    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra: key {key!r} would replace the report's own entry")
        report[key] = value

    _write_sweep_csv(sweep, names, out / SWEEP_CSV)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: a summary, the per-class table, the fixed-threshold counts, figure links. A class
    is shown by its display name, with its machine name beside it where they differ."""
    display = report.get("display_names", {})

    def label(name: str) -> str:
        shown = display.get(name, name)
        text = name if shown == name else f"{shown} (`{name}`)"
        return text.replace("|", "\\|")

    lines = ["# Evaluation report", ""]
    lines.append(f"- Source: {report['source']}")
    lines.append(f"- Images (tiles): {report['n_images']}")
    for key in ("model_version", "model_dir", "data_dir", "split"):
        if key in report:
            lines.append(f"- {key.replace('_', ' ').capitalize()}: `{report[key]}`")
    lines.append(
        f"- Binary accuracy (paper's definition, at the thresholds below): {report['binary_accuracy']:.4f}"
    )
    macro_auc = "undefined" if report["macro_auc"] is None else f"{report['macro_auc']:.4f}"
    lines.append(f"- Macro F1: {report['macro_f1']:.4f}; macro AUC: {macro_auc}")
    single = report.get("single_label")
    if single is not None:
        lines.append(
            f"- Every tile holds one class: top-1 accuracy {single['top1_accuracy']:.4f}, macro-F1 of"
            f" the top-1 predictions {single['macro_f1']:.4f} (confusion matrix: `{CLASS_CONFUSION_JSON}`,"
            f" `{FIGURES['class_confusion']}`)"
        )
    lines += [
        "",
        "A prediction is a defect when score ≥ threshold. Precision, recall and F1 are 0 where their",
        "denominator is 0; AUC is undefined when a class has only one label value in these data.",
        "",
        "## Per class",
        "",
        "| class | positives | threshold | TP | FP | TN | FN | precision | recall | F1 | accuracy | AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["classes"].items():
        auc = "undefined" if m["auc"] is None else f"{m['auc']:.4f}"
        lines.append(
            f"| {label(name)} | {report['positives'][name]} | {m['threshold']:.2f} | {m['tp']} | {m['fp']} | "
            f"{m['tn']} | {m['fn']} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['accuracy']:.4f} | {auc} |"
        )
    lines += ["", "## At fixed thresholds", ""]
    header = "| class | " + " | ".join(f"t={t}: TP/FP/TN/FN, F1" for t in report["fixed_thresholds"]) + " |"
    lines += [header, "|---|" + "---|" * len(report["fixed_thresholds"])]
    for name in report["classes"]:
        cells = []
        for at in report["fixed_thresholds"].values():
            c = at["classes"][name]
            cells.append(f"{c['tp']}/{c['fp']}/{c['tn']}/{c['fn']}, {c['f1']:.3f}")
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    accuracies = " | ".join(f"{at['binary_accuracy']:.4f}" for at in report["fixed_thresholds"].values())
    lines.append(f"| *binary accuracy* | {accuracies} |")
    best = report["sweep_best_on_these_data"]
    lines += [
        "",
        "## Threshold sweep (0 … 1)",
        "",
        f"Best thresholds on these data ({best['note']}); the full sweep is in `{SWEEP_CSV}`.",
        "",
        "| class | used | best F1 | fewest errors |",
        "|---|---:|---:|---:|",
    ]
    for name, m in report["classes"].items():
        lines.append(
            f"| {label(name)} | {m['threshold']:.2f} | {best['f1'][name]:.2f} | {best['errors'][name]:.2f} |"
        )
    titles = {
        "training_curves": "Training curves",
        "roc": "ROC curves",
        "confusion_matrices": "Confusion matrices",
        "threshold_sweep": "Threshold sweep",
        "class_confusion": "Top-1 confusion between classes",
    }
    lines += ["", "## Figures", ""]
    for key in ("training_curves", "roc", "confusion_matrices", "class_confusion", "threshold_sweep"):
        if key in report["figures"]:
            lines += [f"### {titles[key]}", "", f"![{titles[key]}]({report['figures'][key]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _counts(m: ClassMetrics) -> dict[str, Any]:
    return {
        "tp": m.tp,
        "fp": m.fp,
        "tn": m.tn,
        "fn": m.fn,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
    }


def _write_sweep_csv(sweep: ThresholdSweep, names: list[str], path: Path) -> None:
    fields = ("tp", "fp", "tn", "fn", "precision", "recall", "f1", "errors")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["threshold", "class", *fields])
        for i, t in enumerate(sweep.thresholds):
            for c, name in enumerate(names):
                writer.writerow([f"{t:g}", name, *(getattr(sweep, k)[i, c] for k in fields)])
