"""The model card: MODEL_CARD.md in the model artefact, what a reader needs to trust a model or not.

`train` writes it at the end of a run from model.json alone (`render_card` is a pure function of
model.json's content): the data (tile set, tiles per class in each part of the split, the split's
rule and seed), the recipe (every setting that shapes the weights), the training time and the
machine (CPU, cores, the vector instructions that set its speed, GPUs, Keras backend, TensorFlow),
the validation metrics per class, the thresholds and how they were chosen, and the known limits
(whatever the caller passed as `TrainingConfig.known_limits`, plus what the card can tell by
itself: no ImageNet weights, a small validation split).

`steel-worker evaluate --model DIR` on the model's own test split then adds a "Test split"
section (per-class metrics and confusion counts, and the class × class confusion matrix when every
tile holds one class): it keeps the summary in `card.json` (by model version, so a section never
describes other weights) and replaces the text between the section's two markers, so running it
twice leaves one section. An artefact written before cards existed has none; evaluate writes one
from its model.json, and every reader here takes missing fields as "not recorded".

`headline(meta, model_dir)` is the card in one log line's worth: version, classes, input size, the
validation and test summary, the known limits (the worker logs it at start-up).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.core.tileset import TileSet
    from worker.model.split import Split

CARD_FILE = "MODEL_CARD.md"
CARD_DATA_FILE = "card.json"
TEST_BEGIN = "<!-- test-split: begin (written by `steel-worker evaluate`, replaced on each run) -->"
TEST_END = "<!-- test-split: end -->"
#: CPU features that decide how fast the network runs on a CPU (oneDNN's kernels use them).
CPU_FLAGS = (
    "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
)  # fmt: skip
#: Below this many validation tiles the card warns that the validation metrics are rough.
SMALL_VALIDATION = 200
NOT_RECORDED = "not recorded"


# ---------------------------------------------------------------------------------------------
# What train records (beside model.json's own fields)
# ---------------------------------------------------------------------------------------------


def split_counts(tileset: TileSet, split: Split) -> dict[str, dict[str, Any]]:
    """Per part of the split: tiles, clean tiles and tiles per class (a tile with two classes
    counts for both)."""
    counts: dict[str, dict[str, Any]] = {}
    for part in ("train", "validation", "test"):
        subset = split.subset(tileset, part)
        labels = subset.labels
        counts[part] = {
            "tiles": len(subset),
            "clean": int((labels.sum(axis=1) == 0).sum()) if len(subset) else 0,
            "classes": {
                name: int(labels[:, i].sum()) if len(subset) else 0
                for i, name in enumerate(subset.catalogue.names)
            },
        }
    return counts


def _cpu() -> tuple[str, list[str]]:
    """CPU model name and the CPU_FLAGS it has (from /proc/cpuinfo; elsewhere the platform's name)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or NOT_RECORDED, []
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.machine() or NOT_RECORDED, [f for f in CPU_FLAGS if f in flags]


def _gpus() -> list[str]:
    """The GPUs the loaded backend sees (TensorFlow, JAX or PyTorch, whichever is imported)."""
    try:
        if "tensorflow" in sys.modules:
            tf = sys.modules["tensorflow"]
            found = []
            for device in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(device)
                found.append(str(details.get("device_name") or device.name))
            return found
        if "jax" in sys.modules:
            return [str(d.device_kind) for d in sys.modules["jax"].devices() if d.platform == "gpu"]
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a backend that cannot list its devices has none to report
        return []
    return []


def machine_info() -> dict[str, Any]:
    """Where a model was trained: CPU model, cores, CPU_FLAGS present, GPUs, OS, Python, Keras and
    its backend, TensorFlow's version (when installed) and TF_ENABLE_ONEDNN_OPTS."""
    from importlib import metadata  # noqa: PLC0415

    import keras  # noqa: PLC0415

    cpu, flags = _cpu()
    tensorflow: str | None = getattr(sys.modules.get("tensorflow"), "__version__", None)
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        if tensorflow is None:
            try:
                tensorflow = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": flags,
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "tensorflow": tensorflow,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


# ---------------------------------------------------------------------------------------------
# Rendering (pure)
# ---------------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:.{digits}f}"


def _or(value: Any, otherwise: str) -> Any:
    """`value`, or `otherwise` when it is None (0 is a value)."""
    return otherwise if value is None else value


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(numbers) / len(numbers) if numbers else None


def validation_summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    """Tiles, binary accuracy, macro F1 and macro AUC of the validation metrics in model.json."""
    metrics = meta.get("metrics") or {}
    classes = metrics.get("classes") or {}
    if not classes:
        return None
    return {
        "tiles": metrics.get("tiles"),
        "binary_accuracy": metrics.get("binary_accuracy"),
        "macro_f1": _mean([m.get("f1") for m in classes.values()]),
        "macro_auc": _mean([m.get("auc") for m in classes.values()]),
    }


def known_limits(meta: dict[str, Any]) -> list[str]:
    """The limits the trainer stated, then those the card can see for itself."""
    training = meta.get("training") or {}
    limits = []
    stated = training.get("known_limits")
    if stated:
        limits.append(str(stated).strip())
    if training and not training.get("untrained") and not training.get("imagenet_weights"):
        limits.append("trained from scratch (no ImageNet weights)")
    if training.get("untrained"):
        limits.append("untrained: random weights, for tests only")
    validation = (meta.get("metrics") or {}).get("tiles")
    if isinstance(validation, int) and validation < SMALL_VALIDATION:
        limits.append(
            f"validation split of {validation} tiles: its metrics and the thresholds chosen on it are rough"
        )
    return limits


def _recipe_rows(training: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, str]]:
    def get(key: str) -> Any:
        return training.get(key, NOT_RECORDED)

    loss = get("loss")
    if loss == "focal":
        loss = f"binary focal loss (γ {get('focal_gamma')}, α {get('focal_alpha')})"
    elif loss == "bce":
        loss = "binary cross-entropy"
    optimiser = get("optimizer")
    if optimiser == "sgd":
        optimiser = f"SGD, momentum {get('momentum')}"
    elif optimiser == "adam":
        optimiser = "Adam"
    schedule = get("lr_schedule")
    if schedule == "plateau":
        schedule = (
            f"{get('learning_rate')}, ×{get('lr_factor')} after {get('lr_patience')} epochs without a lower"
            f" val_loss; stop after {get('stop_patience')}"
        )
    elif schedule == "cosine":
        total = (
            training["epochs"] * training["steps_per_epoch"]
            if isinstance(training.get("epochs"), int) and isinstance(training.get("steps_per_epoch"), int)
            else NOT_RECORDED
        )
        schedule = (
            f"{get('learning_rate')}, linear warm-up over {get('warmup_steps')} steps, cosine decay to 0"
            f" at step {total}"
        )
    augmentation = training.get("augmentation")
    if isinstance(augmentation, dict):
        parts = [f"{k} p={augmentation[k]}" for k in ("hflip", "vflip", "rot90") if augmentation.get(k)]
        if augmentation.get("crop_min_scale", 1.0) < 1.0:
            parts.append(f"random square crop of {augmentation['crop_min_scale']}…1 × the side")
        if augmentation.get("intensity"):
            parts.append(f"grey-level gain and offset ± {augmentation['intensity']}")
        augmentation = (", ".join(parts) if parts else "none") + (
            " (also on validation batches)" if training.get("augment_validation") else ""
        )
    weights = training.get("imagenet_weights")
    epochs = f"{get('epochs_done')} done (of at most {get('epochs')})"
    return [
        ("preset", str(_or(training.get("preset"), NOT_RECORDED))),
        ("backbone", f"{meta.get('backbone', NOT_RECORDED)}, global average pooling, Dense sigmoid head"),
        ("initial weights", f"ImageNet, from {weights}" if weights else "none: from scratch"),
        ("input size", f"{meta.get('input_size', NOT_RECORDED)} px (tiles resized with INTER_AREA)"),
        ("pre-processing", str(meta.get("preprocessing", NOT_RECORDED))),
        ("loss", str(loss)),
        ("optimiser", str(optimiser)),
        ("learning rate and schedule", str(schedule)),
        ("epochs", epochs),
        ("batch size", str(get("batch_size"))),
        ("steps per epoch", str(_or(training.get("steps_per_epoch"), "one pass of the training part"))),
        ("validation steps per epoch", str(_or(training.get("validation_steps"), "all"))),
        ("augmentation", str(augmentation if augmentation is not None else NOT_RECORDED)),
        ("oversampling / class weights", f"{get('oversample')} / {get('class_weights')}"),
        ("BatchNorm momentum", str(_or(training.get("batchnorm_momentum"), "Keras default (0.99)"))),
        ("seed", str(get("seed"))),
        ("XLA (jit_compile)", str(get("jit_compile"))),
        ("resumed", str(get("resume"))),
    ]


def _data_section(training: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["## Data", ""]
    lines.append(f"- Tile set: `{training.get('data_dir', NOT_RECORDED)}`")
    lines.append(
        f"- Split: 20 % test, then 20 % of the rest validation, stratified by label combination, seed"
        f" {training.get('seed', NOT_RECORDED)}; the tiles of each part are listed in `split.json`"
    )
    counts = training.get("tiles_per_class")
    if isinstance(counts, dict) and counts:
        header = f"| part | tiles | clean | {' | '.join(names)} |"
        lines += ["", header, "|---|---:|---:|" + "---:|" * len(names)]
        for part in ("train", "validation", "test"):
            c = counts.get(part) or {}
            per_class = c.get("classes") or {}
            cells = " | ".join(str(per_class.get(n, "")) for n in names)
            lines.append(f"| {part} | {c.get('tiles', '')} | {c.get('clean', '')} | {cells} |")
        lines += ["", "A tile with two classes counts in both columns; clean tiles have none."]
    elif isinstance(training.get("tiles"), dict):
        t = training["tiles"]
        lines.append(
            f"- Tiles: train {t.get('train')}, validation {t.get('validation')}, test {t.get('test')}"
        )
    else:
        lines.append(f"- Tiles per part: {NOT_RECORDED}")
    return [*lines, ""]


def _machine_section(training: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    seconds = training.get("seconds")
    time_text = (
        f"{seconds / 60:.1f} min ({seconds:.0f} s; a resumed run counts its last part only)"
        if isinstance(seconds, int | float)
        else NOT_RECORDED
    )
    lines = ["## Training time and machine", "", f"- Time: {time_text}"]
    if metrics.get("best_epoch") is not None:
        lines.append(
            f"- Weights kept: epoch {metrics.get('best_epoch')}, the lowest validation loss"
            f" ({_num(metrics.get('best_val_loss'), 4)})"
        )
    machine = training.get("machine")
    if isinstance(machine, dict):
        flags = ", ".join(machine.get("cpu_flags") or []) or "none of " + ", ".join(CPU_FLAGS[:4])
        gpus = ", ".join(machine.get("gpus") or []) or "none"
        lines += [
            f"- CPU: {machine.get('cpu')}, {machine.get('cores')} cores; vector instructions: {flags}",
            f"- GPU: {gpus}",
            f"- Software: Keras {machine.get('keras')} on {machine.get('keras_backend')}"
            f" (TensorFlow {machine.get('tensorflow') or 'not installed'},"
            f" TF_ENABLE_ONEDNN_OPTS={machine.get('tf_enable_onednn_opts') or 'unset'}),"
            f" Python {machine.get('python')}, {machine.get('platform')}",
        ]
    else:
        backend = training.get("keras_backend", NOT_RECORDED)
        lines.append(f"- Machine: {NOT_RECORDED} (Keras backend {backend})")
    return [*lines, ""]


def _class_table(classes: dict[str, Any], names: list[str]) -> list[str]:
    lines = [
        "| class | threshold | TP | FP | FN | TN | precision | recall | F1 | AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        m = classes.get(name) or {}
        lines.append(
            f"| {name} | {_num(m.get('threshold'), 2)} | {m.get('tp', '')} | {m.get('fp', '')} |"
            f" {m.get('fn', '')} | {m.get('tn', '')} | {_num(m.get('precision'))} | {_num(m.get('recall'))} |"
            f" {_num(m.get('f1'))} | {_num(m.get('auc'))} |"
        )
    return lines


def render_test_section(test: dict[str, Any] | None, names: list[str]) -> str:
    """The "Test split" section, between its markers: the test summary `record_test_split` keeps,
    or a line saying how to get one."""
    lines = [TEST_BEGIN, "## Test split", ""]
    if not test:
        lines.append(
            "Not evaluated yet: `steel-worker evaluate --model MODEL_DIR --out REPORT_DIR` judges the model"
            " on its persisted test split and writes this section."
        )
    else:
        lines.append(
            f"{test.get('tiles')} tiles of the persisted test split, at the model's thresholds"
            f" (test-time augmentation: {test.get('tta', 'none')}); binary accuracy"
            f" {_num(test.get('binary_accuracy'))}, macro F1 {_num(test.get('macro_f1'))},"
            f" macro AUC {_num(test.get('macro_auc'))}. Per class (TP/FP/FN/TN: each class's own"
            " confusion counts):"
        )
        lines += ["", *_class_table(test.get("classes") or {}, names)]
        single = test.get("single_label")
        if isinstance(single, dict):
            confusion = single.get("confusion") or {}
            order = list(confusion.get("classes") or names)
            matrix = confusion.get("rows_actual_columns_predicted") or []
            lines += [
                "",
                f"Every test tile holds one class: top-1 accuracy {_num(single.get('top1_accuracy'))},"
                f" macro-F1 of the top-1 predictions {_num(single.get('macro_f1'))}. Confusion matrix"
                " (rows: actual class, columns: the class with the highest score):",
                "",
                f"| actual \\ predicted | {' | '.join(order)} |",
                "|---|" + "---:|" * len(order),
                *(
                    f"| {name} | {' | '.join(str(v) for v in row)} |"
                    for name, row in zip(order, matrix, strict=False)
                ),
            ]
        if test.get("report"):
            lines += ["", f"Full report: `{test['report']}`."]
    return "\n".join([*lines, TEST_END])


def render_card(meta: dict[str, Any], test: dict[str, Any] | None = None) -> str:
    """MODEL_CARD.md from model.json's content `meta` and, optionally, the test summary (used only
    when it is of this model's version). Fields model.json lacks read as "not recorded"."""
    training: dict[str, Any] = meta.get("training") or {}
    metrics: dict[str, Any] = meta.get("metrics") or {}
    catalogue = meta.get("catalogue") or {}
    names = [str(c.get("name")) for c in catalogue.get("classes") or []] or list(meta.get("thresholds") or {})
    version = str(meta.get("version", ""))
    if test is not None and test.get("model_version") != version:
        test = None
    validation = validation_summary(meta)
    lines = [
        f"# Model card: {catalogue.get('name', 'defect')} classifier {version[:12]}",
        "",
        f"A {meta.get('backbone', 'ResNet')} that gives one sigmoid score per class ({', '.join(names)}) for"
        f" a grey tile at {meta.get('input_size', '?')} px. Written by `steel-worker train` on"
        f" {meta.get('created_at', NOT_RECORDED)}; version (sha256 of"
        f" `{meta.get('weights_file', 'the weights')}`) `{version}`.",
        "",
    ]
    if validation is not None:
        lines += [
            f"**Validation** ({validation['tiles']} tiles): macro F1 {_num(validation['macro_f1'])},"
            f" macro AUC {_num(validation['macro_auc'])}, binary accuracy"
            f" {_num(validation['binary_accuracy'])}.",
            "",
        ]
    lines += ["## Known limits", ""]
    lines += [f"- {limit}" for limit in known_limits(meta)] or ["- none stated"]
    lines += ["", "## Classes and thresholds", ""]
    objective = training.get("threshold_objective")
    how = {
        "f1": "the highest F1",
        "f2": "the highest F2 (recall weighted twice: fewer missed defects, more false alarms)",
        "errors": "the fewest errors (FP + FN)",
    }.get(str(objective), NOT_RECORDED)
    lines.append(
        f"A class is found on a tile when its score is ≥ its threshold. Each threshold was chosen on the"
        f" validation split by sweeping 0…1 in steps of 0.05 for {how} (objective `{objective}`)."
    )
    thresholds = meta.get("thresholds") or {}
    lines += ["", "| class | threshold |", "|---|---:|"]
    lines += [f"| {n} | {_num(thresholds.get(n), 2)} |" for n in names]
    lines += ["", *_data_section(training, names)]
    lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _recipe_rows(training, meta)]
    lines += ["", *_machine_section(training, metrics)]
    lines += ["## Validation metrics", ""]
    if validation is None:
        lines.append(f"{NOT_RECORDED.capitalize()}.")
    else:
        lines.append(
            f"{validation['tiles']} tiles of the validation split (unaugmented), with the weights kept, at"
            " the thresholds above:"
        )
        lines += ["", *_class_table(metrics.get("classes") or {}, names)]
    lines += ["", render_test_section(test, names), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def read_card_data(model_dir: str | Path) -> dict[str, Any]:
    """card.json of an artefact ({} when absent or unreadable: the card is a description, never a
    reason to refuse a model)."""
    path = Path(model_dir) / CARD_DATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_card(model_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Render MODEL_CARD.md into `model_dir` from its model.json (or `meta`) and card.json."""
    from worker.model.artefact import read_model_meta  # noqa: PLC0415

    root = Path(model_dir)
    meta = meta if meta is not None else read_model_meta(root)
    path = root / CARD_FILE
    _write_text(path, render_card(meta, read_card_data(root).get("test_split")))
    return path


def summarise_test_report(report: dict[str, Any], report_dir: str | Path | None = None) -> dict[str, Any]:
    """What the card keeps of an evaluation report (`worker.evaluation.report`'s report.json)."""
    keep = ("threshold", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "auc")
    single = report.get("single_label")
    return {
        "model_version": report.get("model_version"),
        "tiles": report.get("n_images"),
        "tta": report.get("tta", "none"),
        "binary_accuracy": report.get("binary_accuracy"),
        "macro_f1": report.get("macro_f1"),
        "macro_auc": report.get("macro_auc"),
        "classes": {n: {k: m.get(k) for k in keep} for n, m in (report.get("classes") or {}).items()},
        "single_label": None
        if single is None
        else {k: single.get(k) for k in ("top1_accuracy", "macro_f1", "confusion")},
        "report": None if report_dir is None else str(Path(report_dir).resolve() / "report.md"),
    }


def record_test_split(
    model_dir: str | Path, report: dict[str, Any], report_dir: str | Path | None = None
) -> Path:
    """Keep the test summary of `report` in card.json and put its section into MODEL_CARD.md:
    between the markers when the card has them, appended when it does not, and the whole card
    written from model.json when there is none (an artefact older than cards). Idempotent."""
    from worker.model.artefact import read_model_meta  # noqa: PLC0415

    root = Path(model_dir)
    meta = read_model_meta(root)
    summary = summarise_test_report(report, report_dir)
    data = {**read_card_data(root), "test_split": summary}
    _write_text(root / CARD_DATA_FILE, json.dumps(data, indent=2, allow_nan=False) + "\n")
    path = root / CARD_FILE
    if not path.is_file():
        return write_card(root, meta)
    names = list((meta.get("thresholds") or {}).keys())
    section = render_test_section(summary if summary["model_version"] == meta["version"] else None, names)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(TEST_BEGIN), text.find(TEST_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(TEST_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    _write_text(path, text)
    return path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# The headline
# ---------------------------------------------------------------------------------------------


def headline(meta: dict[str, Any], model_dir: str | Path | None = None) -> dict[str, Any]:
    """The card in brief, for one log line: version, classes, input size, validation and test
    summaries (None when not recorded), known limits, and the card's path (None without one)."""
    names = list((meta.get("thresholds") or {}).keys())
    validation = validation_summary(meta)
    test = None
    card = None
    if model_dir is not None:
        kept = read_card_data(model_dir).get("test_split")
        if isinstance(kept, dict) and kept.get("model_version") == meta.get("version"):
            test = {k: kept.get(k) for k in ("tiles", "binary_accuracy", "macro_f1", "macro_auc")}
            single = kept.get("single_label")
            if isinstance(single, dict):
                test["top1_accuracy"] = single.get("top1_accuracy")
        card_path = Path(model_dir) / CARD_FILE
        card = str(card_path) if card_path.is_file() else None

    def rounded(summary: dict[str, Any] | None) -> dict[str, Any] | None:
        if summary is None:
            return None
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}

    return {
        "version": meta.get("version"),
        "classes": names,
        "input_size": meta.get("input_size"),
        "validation": rounded(validation),
        "test": rounded(test),
        "known_limits": known_limits(meta),
        "card": card,
    }
