"""`steel-worker evaluate`: judge a model on a tile set, or judge scores produced elsewhere.

Two sources of scores, one report (see `worker.evaluation.report`):
    --model MODEL_DIR [--data TILESET_DIR]   run the model on its persisted test split (or on every
                                             tile of --data) and also write scores.csv
    --scores CSV                             read columns label_<class> and score_<class>
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.catalogue import Catalogue
from worker.core.errors import ConfigError, DatasetError

LABEL_PREFIX = "label_"
SCORE_PREFIX = "score_"
SCORES_CSV = "scores.csv"
DEFAULT_THRESHOLD = 0.5
#: `worker.inference.TTA_MODES`, spelled out so that `--help` imports no Keras.
TTA_CHOICES = ("none", "flips", "flips+rot90")

_EPILOG = """\
examples:
  steel-worker evaluate --model models/neu --out reports/neu
      the model's own test split (MODEL_DIR/split.json), at the thresholds stored in the model
  steel-worker evaluate --model models/neu --data tiles/plant-b --out reports/plant-b
      every tile of another tile set
  steel-worker evaluate --scores reports/neu/scores.csv --thresholds holes=0.3,rolling=0.6 --out r2
      re-judge saved scores at other thresholds (classes not named get 0.5; the model's own
      thresholds are in reports/neu/report.json)

scores CSV: a header with label_<class> and score_<class> for every class (other columns are
ignored); labels 0 or 1, scores in [0, 1]. A prediction is a defect when score >= threshold.
Writes into --out: report.json, report.md, sweep.csv, roc.png, confusion_matrices.png,
threshold_sweep.png, and with --model also scores.csv and training_curves.png (from history.csv).
With --model on its own test split at its own thresholds (no --data, no --thresholds), the test
metrics and confusion counts also go into MODEL_DIR/MODEL_CARD.md, section "Test split" (replaced
on each such run; card.json keeps them for the worker's start-up line).
"""


@dataclass(frozen=True)
class ScoreTable:
    """Scores read from a CSV: class names in column order, labels (N, C) 0/1, scores (N, C)."""

    class_names: tuple[str, ...]
    labels: np.ndarray
    scores: np.ndarray


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="judge a model or a scores file: per-class metrics, binary accuracy, ROC, plots",
        description=(
            "Write an evaluation report: per class TP/FP/TN/FN, recall, precision, accuracy, F1 and\n"
            "ROC AUC, the paper's binary accuracy, confusion matrices at 0.2/0.4/0.6/0.8 and at the\n"
            "used thresholds, the threshold sweep 0…1, and training curves when a model is given."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", type=Path, metavar="MODEL_DIR", help="a model directory written by `steel-worker train`"
    )
    source.add_argument("--scores", type=Path, metavar="CSV", help="a CSV of label_<class>, score_<class>")
    parser.add_argument(
        "--data",
        type=Path,
        metavar="TILESET_DIR",
        help="with --model: evaluate every tile of this tile set (default: the model's test split)",
    )
    parser.add_argument(
        "--thresholds",
        metavar="NAME=VALUE,...",
        help="per-class thresholds in [0, 1] (default: the model's stored thresholds with --model, "
        f"{DEFAULT_THRESHOLD} with --scores); classes not named keep their default",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR", help="report directory")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="tiles per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="none",
        help="with --model: test-time augmentation, the mean of the scores over each tile's flips"
        " (4 views) or flips and 90° turns (8 views) (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive integer, received {args.batch_size}")
    if args.scores is not None:
        if args.data is not None:
            raise ConfigError("--data: only with --model (a scores file already holds its labels)")
        if args.tta != "none":
            raise ConfigError("--tta: only with --model (a scores file's scores are already made)")
        report = _evaluate_scores_file(args.scores, args.thresholds, args.out)
    else:
        report = _evaluate_model(args.model, args.data, args.thresholds, args.out, args.batch_size, args.tta)
    _print_summary(report, args.out)
    if args.model is not None:
        _update_model_card(args, report)
    return 0


def _update_model_card(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The model's own test split, at its own thresholds, is what its card's "Test split" section
    says; another tile set or other thresholds are not the model's card's business."""
    from worker.model.card import record_test_split  # noqa: PLC0415

    if args.data is not None or args.thresholds is not None:
        why = "--data: another tile set" if args.data is not None else "--thresholds: not the model's own"
        print(f"model card not updated ({why}; it holds the persisted test split at the model's thresholds)")
        return
    try:
        card = record_test_split(args.model, report, args.out)
    except OSError as exc:  # a read-only artefact: the report is written, the card stays as it was
        print(f"warning: model card not updated: {exc}", file=sys.stderr)
        return
    print(f'model card: {card} (section "Test split")')


def read_scores_csv(path: str | Path) -> ScoreTable:
    """Read a scores CSV; DatasetError names the file, line and column of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"scores file {path}: not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DatasetError(
                f"scores file {path}: empty, expected a header with label_<class>, score_<class>"
            )
        header = [h.strip() for h in header]
        label_names = [h[len(LABEL_PREFIX) :] for h in header if h.startswith(LABEL_PREFIX)]
        score_names = [h[len(SCORE_PREFIX) :] for h in header if h.startswith(SCORE_PREFIX)]
        if not label_names and not score_names:
            raise DatasetError(
                f"scores file {path}: expected columns label_<class> and score_<class>, received {header}"
            )
        missing = [f"{SCORE_PREFIX}{n}" for n in label_names if n not in score_names]
        missing += [f"{LABEL_PREFIX}{n}" for n in score_names if n not in label_names]
        if missing:
            raise DatasetError(f"scores file {path}: missing columns {missing} (each class needs both)")
        prefixed = [h for h in header if h.startswith((LABEL_PREFIX, SCORE_PREFIX))]
        duplicates = sorted({h for h in prefixed if prefixed.count(h) > 1})
        if duplicates:
            raise DatasetError(f"scores file {path}: duplicate columns {duplicates}")
        label_cols = [header.index(f"{LABEL_PREFIX}{n}") for n in label_names]
        score_cols = [header.index(f"{SCORE_PREFIX}{n}") for n in label_names]
        labels: list[list[int]] = []
        scores: list[list[float]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or not any(v.strip() for v in row):
                continue  # blank line
            if len(row) != len(header):
                raise DatasetError(
                    f"scores file {path}:{line_no}: expected {len(header)} columns, received {len(row)}"
                )
            labels.append([_label(row[c], path, line_no, header[c]) for c in label_cols])
            scores.append([_score(row[c], path, line_no, header[c]) for c in score_cols])
    if not labels:
        raise DatasetError(f"scores file {path}: no rows after the header")
    return ScoreTable(
        class_names=tuple(label_names),
        labels=np.asarray(labels, dtype=np.uint8),
        scores=np.asarray(scores, dtype=float),
    )


def parse_thresholds(text: str | None, class_names: tuple[str, ...]) -> dict[str, float]:
    """`name=value,...` as {name: value}; ConfigError for unknown or repeated names, values outside
    [0, 1], malformed items. None gives {}."""
    if text is None:
        return {}
    overrides: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ConfigError(
                f"--thresholds: expected NAME=VALUE items separated by commas, received {item!r}"
            )
        if name not in class_names:
            raise ConfigError(f"--thresholds: unknown class {name!r}; expected one of {list(class_names)}")
        if name in overrides:
            raise ConfigError(f"--thresholds: class {name!r} is given twice")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0.0 <= number <= 1.0:  # also false for NaN
            raise ConfigError(f"--thresholds: {name}: expected a number in [0, 1], received {value!r}")
        overrides[name] = number
    return overrides


def apply_thresholds(
    defaults: np.ndarray, class_names: tuple[str, ...], overrides: dict[str, float]
) -> np.ndarray:
    """`defaults` (one per class, in `class_names` order) with the named classes replaced."""
    thresholds = np.array(defaults, dtype=float)
    for name, value in overrides.items():
        thresholds[class_names.index(name)] = value
    return thresholds


def write_scores_csv(
    path: Path, tiles: tuple[str, ...], class_names: tuple[str, ...], labels: np.ndarray, scores: np.ndarray
) -> Path:
    """scores.csv: tile, label_<class>..., score_<class>...; scores written exactly (repr of the float),
    so `evaluate --scores` on it reproduces the model's report."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        label_columns = [f"{LABEL_PREFIX}{n}" for n in class_names]
        writer.writerow(["tile", *label_columns, *(f"{SCORE_PREFIX}{n}" for n in class_names)])
        for tile, y, s in zip(tiles, labels, scores, strict=True):
            writer.writerow([tile, *(int(v) for v in y), *(repr(float(v)) for v in s)])
    return path


def _evaluate_scores_file(scores_path: Path, thresholds_text: str | None, out: Path) -> dict[str, Any]:
    from worker.evaluation.report import evaluate_scores  # noqa: PLC0415  (matplotlib: only when run)

    table = read_scores_csv(scores_path)
    overrides = parse_thresholds(thresholds_text, table.class_names)
    defaults = np.full(len(table.class_names), DEFAULT_THRESHOLD)
    thresholds = apply_thresholds(defaults, table.class_names, overrides)
    return evaluate_scores(
        table.labels, table.scores, table.class_names, thresholds, out, source=f"scores file {scores_path}"
    )


def _evaluate_model(  # noqa: PLR0917 (the command's arguments, in order)
    model_dir: Path, data_dir: Path | None, thresholds_text: str | None, out: Path, batch_size: int, tta: str
) -> dict[str, Any]:
    # Heavy imports (Keras, matplotlib, OpenCV) happen only when the command runs, so --help is fast.
    from tqdm import tqdm  # noqa: PLC0415

    from worker.core.tileset import read_tile, read_tileset  # noqa: PLC0415
    from worker.evaluation.report import evaluate_scores  # noqa: PLC0415
    from worker.inference import Inferencer  # noqa: PLC0415
    from worker.model.artefact import load_classifier, read_model_meta  # noqa: PLC0415
    from worker.model.split import load_split  # noqa: PLC0415

    # The artefact's description and the data are checked before the network is built (seconds).
    meta = read_model_meta(model_dir)
    model_catalogue = Catalogue.from_dict(meta["catalogue"], source=f"{model_dir}/model.json")
    names = model_catalogue.names
    overrides = parse_thresholds(thresholds_text, names)
    if data_dir is not None:
        tileset = read_tileset(data_dir)
        part = "all tiles"
    else:
        split = load_split(model_dir)
        tileset = split.subset(read_tileset(split.data_dir), "test")
        data_dir, part = Path(split.data_dir), "test"
    if len(tileset) == 0:
        raise DatasetError(f"{data_dir}: no tiles to evaluate in the {part} part")
    absent = [n for n in names if n not in tileset.catalogue.names]
    if absent:
        raise DatasetError(
            f"tile set {data_dir}: has no labels for the model's classes {absent} "
            f"(tile set classes: {list(tileset.catalogue.names)})"
        )
    labels = tileset.labels[:, [tileset.catalogue.index(n) for n in names]]
    classifier = load_classifier(model_dir)  # same model.json, so the same classes in the same order
    thresholds = apply_thresholds(classifier.thresholds.array, names, overrides)
    inferencer = Inferencer(classifier, tta=tta)  # the one inference path (its forward pass)

    scores = np.empty((len(tileset), len(names)), dtype=np.float32)
    with tqdm(total=len(tileset), unit="tile", desc="evaluate") as progress:
        for start in range(0, len(tileset), batch_size):
            stop = min(start + batch_size, len(tileset))
            tiles = [read_tile(tileset.path(i)) for i in range(start, stop)]
            shapes = {t.shape for t in tiles}
            if len(shapes) > 1:
                raise DatasetError(f"tile set {data_dir}: tiles of different sizes {sorted(shapes)}")
            scores[start:stop] = inferencer.forward(np.stack(tiles))
            progress.update(stop - start)

    out.mkdir(parents=True, exist_ok=True)
    write_scores_csv(out / SCORES_CSV, tileset.tiles, names, labels, scores)
    history = model_dir / "history.csv"
    return evaluate_scores(
        labels,
        scores.astype(float),
        names,
        thresholds,
        out,
        history_csv=history if history.is_file() else None,
        extra={
            "model_version": classifier.version,
            "model_dir": str(model_dir),
            "data_dir": str(data_dir),
            "split": part,
            "scores_file": SCORES_CSV,
            "tta": tta,
        },
        source=f"model {model_dir} on {part} of tile set {data_dir}",
        display_names=model_catalogue.display_names,
    )


def _label(value: str, path: Path, line_no: int, column: str) -> int:
    text = value.strip()
    if text in ("0", "1"):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0):
        return int(number)
    raise DatasetError(f"scores file {path}:{line_no}: {column} must be 0 or 1, received {value!r}")


def _score(value: str, path: Path, line_no: int, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise DatasetError(
            f"scores file {path}:{line_no}: {column} must be a number in [0, 1], received {value!r}"
        )
    return number


def _print_summary(report: dict[str, Any], out: Path) -> None:
    width = max(len(n) for n in report["classes"])
    print(f"{report['n_images']} images; binary accuracy {report['binary_accuracy']:.4f}")
    print(f"{'class':<{width}}  threshold  precision  recall      F1     AUC")
    for name, m in report["classes"].items():
        auc = "   n/a" if m["auc"] is None else f"{m['auc']:.4f}"
        print(
            f"{name:<{width}}  {m['threshold']:>9.2f}  {m['precision']:>9.4f}  {m['recall']:>6.4f}  "
            f"{m['f1']:.4f}  {auc}"
        )
    single = report.get("single_label")
    if single is not None:
        print(
            f"one class per tile: top-1 accuracy {single['top1_accuracy']:.4f},"
            f" macro-F1 {single['macro_f1']:.4f} (class × class confusion: class_confusion.png,"
            " class_confusion.json)"
        )
    print(f"report: {out / 'report.md'} (and report.json, figures)")
