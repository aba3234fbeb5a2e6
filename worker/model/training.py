"""Training the classifier the paper's way, resumable, ending in a model artefact.

Recipe (DESIGN.md, "Classifier"): binary focal loss; SGD with momentum 0.9, learning rate 0.001;
batch 20; learning rate ×0.75 after 10 epochs without a lower validation loss; stop after 10 such
epochs (`lr_schedule="plateau"`; `"cosine"` instead runs a fixed budget: a linear warm-up, then a
cosine decay to zero at the last step, with no plateau steps and no early stop); save every epoch
and keep the weights of the lowest validation loss; flips and 90° turns with OpenCV. Then each
class's threshold is chosen on the validation split (F1, F2 or fewest errors) with the best
weights, and the artefact is written.

MODEL_DIR during and after training:
    split.json            the persisted split (worker.model.split)
    history.csv           one row per epoch: loss and tp/fp/tn/fn/precision/recall/auc, train and val_
    checkpoints/last.keras        full model + optimizer state after the latest epoch (for --resume)
    checkpoints/best.weights.h5   weights of the epoch with the lowest validation loss
    checkpoints/state.json        epochs done, best val_loss, plateau/early-stop counters
    model.weights.h5, model.json  the artefact (worker.model.artefact), written at the end
    MODEL_CARD.md         the model card (worker.model.card): data, recipe, machine, metrics, limits
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from worker.core.errors import ConfigError, DatasetError, ModelError
from worker.core.tileset import TileSet
from worker.model.feeding import DEFAULT_BATCH_SIZE, Augmentation
from worker.model.losses import DEFAULT_ALPHA, DEFAULT_GAMMA
from worker.model.network import BACKBONES

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.keras"
BEST_WEIGHTS = "best.weights.h5"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a training run; recorded in model.json under "training"."""

    data_dir: Path
    out_dir: Path
    backbone: str = "resnet50"
    input_size: int = 256
    imagenet_weights: Path | None = None
    loss: Literal["focal", "bce"] = "focal"
    focal_gamma: float = DEFAULT_GAMMA
    focal_alpha: float | None = DEFAULT_ALPHA
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.9
    batch_size: int = DEFAULT_BATCH_SIZE
    epochs: int = 100
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    warmup_steps: int = 0  # cosine only: linear warm-up from 0 to learning_rate over these steps
    lr_factor: float = 0.75
    lr_patience: int = 10
    stop_patience: int = 10
    augmentation: Augmentation = field(default_factory=Augmentation)
    augment_validation: bool = False
    oversample: bool = False
    class_weights: bool = False
    batchnorm_momentum: float | None = None
    seed: int = 0
    threshold_objective: Literal["f1", "f2", "errors"] = "f1"
    resume: bool = False
    jit_compile: Literal["auto", "on", "off"] = "auto"
    run_eagerly: bool = False  # no graph compilation: slower steps, no start-up cost (debugging, tests)
    workers: int = 2
    verbose: int | None = None  # Keras fit verbosity; None: our one progress bar on a terminal, else 2
    preset: str | None = None  # the `train --preset` the settings started from (a record only)
    known_limits: str | None = None  # what the model card should warn of (e.g. "synthetic data only")

    def __post_init__(self) -> None:
        checks = [
            (self.backbone in BACKBONES, "--backbone", f"one of {list(BACKBONES)}", self.backbone),
            (self.input_size >= 32, "--input-size", "at least 32", self.input_size),
            (self.optimizer in ("sgd", "adam"), "--optimizer", "sgd or adam", self.optimizer),
            (self.learning_rate > 0, "--learning-rate", "> 0", self.learning_rate),
            (self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size),
            (self.epochs >= 1, "--epochs", ">= 1", self.epochs),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch", ">= 1",
             self.steps_per_epoch),
            (self.validation_steps is None or self.validation_steps >= 1, "--validation-steps", ">= 1",
             self.validation_steps),
            (self.lr_schedule in ("plateau", "cosine"), "--lr-schedule", "plateau or cosine",
             self.lr_schedule),
            (self.warmup_steps >= 0, "--warmup-steps", ">= 0", self.warmup_steps),
            (self.lr_schedule == "cosine" or self.warmup_steps == 0, "--warmup-steps",
             "0 unless --lr-schedule cosine", self.warmup_steps),
            (self.steps_per_epoch is None or self.warmup_steps < self.epochs * self.steps_per_epoch,
             "--warmup-steps", "fewer than epochs × steps per epoch", self.warmup_steps),
            (0 < self.lr_factor < 1, "--lr-factor", "in (0, 1)", self.lr_factor),
            (self.lr_patience >= 1, "--lr-patience", ">= 1", self.lr_patience),
            (self.stop_patience >= 1, "--stop-patience", ">= 1", self.stop_patience),
            (self.threshold_objective in ("f1", "f2", "errors"), "--threshold-objective", "f1, f2 or errors",
             self.threshold_objective),
            (self.jit_compile in ("auto", "on", "off"), "--jit-compile", "auto, on or off", self.jit_compile),
            (self.workers >= 0, "--workers", ">= 0", self.workers),
        ]  # fmt: skip
        for ok, option, expected, received in checks:
            if not ok:
                raise ConfigError(f"{option}: expected {expected}, received {received!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data_dir", "out_dir", "imagenet_weights"):
            data[key] = None if data[key] is None else str(Path(data[key]).resolve())
        return data


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run produced."""

    model_dir: Path
    version: str
    thresholds: dict[str, float]
    best_epoch: int
    best_val_loss: float
    epochs_done: int
    seconds: float
    metrics: dict[str, Any]


def _verbosity(config: TrainingConfig) -> int:
    """Keras' fit verbosity: 0 with our one progress bar (a terminal), 2 (a line per epoch) otherwise."""
    if config.verbose is not None:
        return config.verbose
    return 0 if sys.stdout.isatty() else 2


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"--resume: {path} is missing; expected the state of an earlier run in this model directory"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"--resume: {path}: expected JSON, {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise ModelError(f"--resume: {path}: expected an object with an integer 'epoch'")
    return state


def _make_state_callback(
    path: Path, plateau: Any, stopper: Any, best_checkpoint: Any, resumed: dict[str, Any] | None
) -> Any:
    """A callback that restores the plateau/early-stop counters on resume and records them (with the
    epochs done and the best val_loss so far) after every epoch, once the checkpoints are written."""
    import keras  # noqa: PLC0415

    class TrainingState(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if resumed is None:
                return
            # Keras resets these in its own on_train_begin, which runs before this one.
            plateau.wait = int(resumed.get("plateau_wait", 0))
            plateau.best = float(resumed.get("best_val_loss", np.inf))
            stopper.wait = int(resumed.get("stop_wait", 0))
            stopper.best = float(resumed.get("best_val_loss", np.inf))
            stopper.best_epoch = int(resumed.get("best_epoch", 0)) - 1

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            best = float(best_checkpoint.best)
            previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            val_loss = float((logs or {}).get("val_loss", np.inf))
            best_epoch = epoch + 1 if val_loss <= best else int(previous.get("best_epoch", 0))
            state = {
                "epoch": epoch + 1,
                "best_val_loss": best if np.isfinite(best) else None,
                "best_epoch": best_epoch,
                "plateau_wait": int(plateau.wait),
                "stop_wait": int(stopper.wait),
                "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            }
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)

    return TrainingState()


def learning_rate_schedule(config: TrainingConfig) -> Any:
    """The optimizer's learning rate: a constant (plateau: the callback lowers it) or, for cosine,
    a schedule of the optimizer's step: linear warm-up to `learning_rate`, cosine decay to 0 at
    step epochs × steps_per_epoch (`train` sets steps_per_epoch to one pass of the data when it
    was not given)."""
    import keras  # noqa: PLC0415

    if config.lr_schedule == "plateau":
        return config.learning_rate
    if config.steps_per_epoch is None:
        raise ConfigError("--lr-schedule cosine: the schedule's length needs the steps per epoch")
    total = config.epochs * config.steps_per_epoch
    if config.warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total, alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total - config.warmup_steps,
        alpha=0.0,
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
    )


def _compile(model: Any, config: TrainingConfig, n_classes: int) -> None:
    import keras  # noqa: PLC0415

    from worker.model.losses import make_loss  # noqa: PLC0415

    rate = learning_rate_schedule(config)
    if config.optimizer == "sgd":
        optimizer: Any = keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=rate)
    metrics = [
        keras.metrics.TruePositives(thresholds=0.5, name="tp"),
        keras.metrics.FalsePositives(thresholds=0.5, name="fp"),
        keras.metrics.TrueNegatives(thresholds=0.5, name="tn"),
        keras.metrics.FalseNegatives(thresholds=0.5, name="fn"),
        keras.metrics.Precision(thresholds=0.5, name="precision"),
        keras.metrics.Recall(thresholds=0.5, name="recall"),
        keras.metrics.AUC(multi_label=True, num_labels=n_classes, name="auc"),
    ]
    loss = make_loss(config.loss, gamma=config.focal_gamma, alpha=config.focal_alpha)
    jit: bool | str = "auto" if config.jit_compile == "auto" else config.jit_compile == "on"
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit, run_eagerly=config.run_eagerly
    )


@dataclass(frozen=True)
class _RunFiles:
    out: Path

    @property
    def state(self) -> Path:
        return self.out / CHECKPOINT_DIR / STATE_FILE

    @property
    def last(self) -> Path:
        return self.out / CHECKPOINT_DIR / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.out / CHECKPOINT_DIR / BEST_WEIGHTS

    @property
    def history(self) -> Path:
        return self.out / HISTORY_FILE


def _prepare_model(
    config: TrainingConfig, files: _RunFiles, n_classes: int
) -> tuple[Any, dict[str, Any] | None]:
    """A fresh compiled model, or (with --resume) the last checkpoint with its optimizer state."""
    import keras  # noqa: PLC0415

    from worker.model.network import build_classifier, set_batchnorm_momentum  # noqa: PLC0415

    if not config.resume:
        model = build_classifier(n_classes, config.input_size, config.backbone, config.imagenet_weights)
        if config.batchnorm_momentum is not None:
            set_batchnorm_momentum(model, config.batchnorm_momentum)
        _compile(model, config, n_classes)
        return model, None
    resumed = _read_state(files.state)
    if resumed["epoch"] >= config.epochs:
        raise ConfigError(
            f"--epochs: the run in {files.out} has already done {resumed['epoch']} epochs; pass --epochs "
            f"greater than {resumed['epoch']} to continue it"
        )
    if not files.last.is_file():
        raise ModelError(
            f"--resume: {files.last} is missing; expected the checkpoint of epoch {resumed['epoch']}"
        )
    try:
        model = keras.saving.load_model(str(files.last), compile=True)
    except Exception as exc:
        raise ModelError(f"--resume: cannot load {files.last}: {type(exc).__name__}: {exc}") from exc
    expected_in, expected_out = (None, config.input_size, config.input_size, 3), (None, n_classes)
    if tuple(model.input_shape) != expected_in or tuple(model.output_shape) != expected_out:
        raise ConfigError(
            f"--resume: {files.last} has input {model.input_shape} and output {model.output_shape}; "
            f"expected --input-size {config.input_size} and {n_classes} classes"
        )
    if config.jit_compile != "auto":
        model.jit_compile = config.jit_compile == "on"
    model.run_eagerly = config.run_eagerly
    return model, resumed


def _callbacks(config: TrainingConfig, files: _RunFiles, resumed: dict[str, Any] | None) -> list[Any]:
    """Checkpoints (last, best), LR ×factor on a plateau and early stop (plateau schedule only),
    CSV log, resumable state."""
    import keras  # noqa: PLC0415

    files.state.parent.mkdir(parents=True, exist_ok=True)
    best_so_far = None if resumed is None else resumed.get("best_val_loss")
    best_checkpoint = keras.callbacks.ModelCheckpoint(
        str(files.best),
        monitor="val_loss",
        mode="min",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=None if best_so_far is None else float(best_so_far),
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=config.lr_factor, patience=config.lr_patience, verbose=1
    )
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=config.stop_patience, verbose=1
    )
    on_plateau = [plateau, stopper] if config.lr_schedule == "plateau" else []
    return [
        keras.callbacks.ModelCheckpoint(str(files.last), save_best_only=False),
        best_checkpoint,
        *on_plateau,
        keras.callbacks.CSVLogger(str(files.history), append=resumed is not None),
        _make_state_callback(files.state, plateau, stopper, best_checkpoint, resumed),
    ]


def _validation_report(
    model: Any, config: TrainingConfig, val_set: TileSet
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Scores of the unaugmented validation split; thresholds chosen on them; metrics at them."""
    from worker.evaluation.metrics import binary_accuracy, choose_thresholds, class_metrics  # noqa: PLC0415
    from worker.model.feeding import TileFeeder  # noqa: PLC0415

    feeder = TileFeeder(val_set, config.input_size, config.batch_size, workers=0)
    scores = np.concatenate([np.asarray(model.predict_on_batch(feeder[i][0])) for i in range(len(feeder))])
    labels = val_set.labels
    thresholds = choose_thresholds(labels, scores, config.threshold_objective)
    per_class = class_metrics(labels, scores, thresholds)
    metrics = {
        "split": "validation",
        "tiles": len(val_set),
        "binary_accuracy": binary_accuracy(labels, scores, thresholds),
        "classes": {name: asdict(m) for name, m in zip(val_set.catalogue.names, per_class, strict=True)},
    }
    return scores, thresholds, metrics


def train(config: TrainingConfig) -> TrainingResult:
    """Run (or resume) a training run into `config.out_dir`, then choose thresholds and write the
    artefact. Same seed → same split, batches and augmentation; weights also depend on the backend."""
    import keras  # noqa: PLC0415

    from worker.core.tileset import read_tileset  # noqa: PLC0415
    from worker.model.artefact import save_artefact  # noqa: PLC0415
    from worker.model.feeding import TileFeeder  # noqa: PLC0415
    from worker.model.progress import make_progress_callback  # noqa: PLC0415
    from worker.model.split import load_or_make_split  # noqa: PLC0415

    started = time.monotonic()
    files = _RunFiles(Path(config.out_dir))
    tileset = read_tileset(config.data_dir)
    catalogue = tileset.catalogue
    if not config.resume and files.state.is_file():
        raise ConfigError(
            f"--out: {files.out} already holds a training run ({files.state}); pass --resume to continue "
            "it or choose a new directory"
        )
    missing = [tileset.tiles[i] for i in range(len(tileset)) if not tileset.path(i).is_file()]
    if missing:
        raise DatasetError(
            f"tile set {tileset.root}: {len(missing)} tile images listed in labels.csv are missing "
            f"(first: {missing[0]})"
        )
    split = load_or_make_split(tileset, files.out, seed=config.seed)
    train_set, val_set = split.subset(tileset, "train"), split.subset(tileset, "validation")
    if config.lr_schedule == "cosine" and config.steps_per_epoch is None:
        # the schedule's length: one pass of the (over-sampled) training data per epoch
        one_pass = TileFeeder(
            train_set, config.input_size, config.batch_size, shuffle=True, oversample=config.oversample
        )
        config = replace(config, steps_per_epoch=len(one_pass))  # checked again (warm-up fits)
    keras.utils.set_random_seed(config.seed)
    model, resumed = _prepare_model(config, files, len(catalogue))
    initial_epoch = 0 if resumed is None else int(resumed["epoch"])

    train_feeder = TileFeeder(
        train_set,
        config.input_size,
        config.batch_size,
        shuffle=True,
        augmentation=config.augmentation,
        oversample=config.oversample,
        class_weights=config.class_weights,
        steps=config.steps_per_epoch,
        seed=config.seed,
        start_epoch=initial_epoch,
        workers=config.workers,
    )
    val_feeder = TileFeeder(
        val_set,
        config.input_size,
        config.batch_size,
        augmentation=config.augmentation if config.augment_validation else None,
        steps=config.validation_steps,
        seed=config.seed + 1,
        start_epoch=initial_epoch,
        workers=config.workers,
    )
    verbose = _verbosity(config)
    bar = config.verbose is None and verbose == 0  # a terminal and no verbosity asked for
    progress = make_progress_callback(
        steps_per_epoch=len(train_feeder), epochs=config.epochs, initial_epoch=initial_epoch
    )
    model.fit(
        train_feeder,
        validation_data=val_feeder,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=[*_callbacks(config, files, resumed), *([progress] if bar else [])],
        shuffle=False,  # the feeder shuffles, reproducibly
        verbose=verbose,
    )
    state = _read_state(files.state)
    if files.best.is_file():
        model.load_weights(str(files.best))
    _, thresholds, metrics = _validation_report(model, config, val_set)
    metrics = {"best_epoch": state.get("best_epoch"), "best_val_loss": state.get("best_val_loss"), **metrics}
    from worker.model.card import machine_info, split_counts, write_card  # noqa: PLC0415

    training = {
        **config.to_dict(),
        "epochs_done": state["epoch"],
        "tiles": {"train": len(train_set), "validation": len(val_set), "test": len(split.test)},
        "split": "given by the tile set" if split.given else f"random, seed {split.seed}",
        "keras_backend": keras.backend.backend(),
        "seconds": round(time.monotonic() - started, 1),
        "tiles_per_class": split_counts(tileset, split),
        "machine": machine_info(),
    }
    version = save_artefact(
        files.out, model, catalogue, config.input_size, config.backbone, thresholds, training, metrics
    )
    write_card(files.out)  # MODEL_CARD.md, from the model.json just written
    return TrainingResult(
        model_dir=files.out,
        version=version,
        thresholds={n: float(t) for n, t in zip(catalogue.names, thresholds, strict=True)},
        best_epoch=int(state.get("best_epoch") or 0),
        best_val_loss=float(state.get("best_val_loss") or np.nan),
        epochs_done=int(state["epoch"]),
        seconds=time.monotonic() - started,
        metrics=metrics,
    )
