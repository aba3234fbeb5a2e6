"""Training: a short run on drawn-shape tiles lowers the validation loss and leaves a complete model
directory (history, split, checkpoints, artefact with thresholds chosen on the validation split);
--resume continues from the last checkpoint's epoch and optimizer state.

The runs are tiny (32-px tiles, batches of 8, 3 steps per epoch) but use the real ResNet50, the real
feeder and Keras' own callbacks. BatchNorm momentum 0 makes the inference statistics those of the
latest batch, so the validation loss of such a short run reflects the weights, not lagging averages.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from model_tiles import write_shape_tileset

from worker.core.errors import ConfigError, ModelError
from worker.core.tileset import read_tile, read_tileset
from worker.evaluation.metrics import choose_thresholds
from worker.model.artefact import META_FILE, load_classifier
from worker.model.split import load_split
from worker.model.training import TrainingConfig, TrainingResult, learning_rate_schedule, train

HISTORY_COLUMNS = {"epoch", "loss", "tp", "fp", "tn", "fn", "precision", "recall", "auc"}


def _config(tmp: Path, **changes: object) -> TrainingConfig:
    base = TrainingConfig(
        data_dir=tmp / "tiles",
        out_dir=tmp / "model",
        input_size=32,
        batch_size=8,
        epochs=3,
        steps_per_epoch=3,
        batchnorm_momentum=0.0,
        workers=2,
        verbose=0,
        seed=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingConfig, TrainingResult]:
    tmp = tmp_path_factory.mktemp("training")
    write_shape_tileset(tmp / "tiles", per_class=8, clean=16, pairs=4, size=32)
    config = _config(tmp)
    return config, train(config)


def _history(model_dir: Path) -> list[dict[str, float]]:
    with open(model_dir / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_short_training_run_lowers_the_validation_loss(run) -> None:  # type: ignore[no-untyped-def]
    config, result = run
    rows = _history(config.out_dir)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"], [r["val_loss"] for r in rows]
    assert result.best_val_loss == pytest.approx(min(r["val_loss"] for r in rows), rel=1e-5)


def test_history_logs_counts_precision_recall_auc_for_train_and_validation(run) -> None:  # type: ignore[no-untyped-def]
    config, _ = run
    rows = _history(config.out_dir)
    expected = HISTORY_COLUMNS | {f"val_{c}" for c in HISTORY_COLUMNS - {"epoch"}}
    assert expected <= set(rows[0])
    # counts at threshold 0.5 over 3 steps × 8 tiles × 3 classes
    assert all(r["tp"] + r["fp"] + r["tn"] + r["fn"] == 3 * 8 * 3 for r in rows)


def test_model_directory_holds_split_checkpoints_and_artefact(run) -> None:  # type: ignore[no-untyped-def]
    config, result = run
    out = config.out_dir
    for name in ("split.json", "history.csv", "model.json", "model.weights.h5", "checkpoints/last.keras",
                 "checkpoints/best.weights.h5", "checkpoints/state.json"):  # fmt: skip
        assert (out / name).is_file(), name
    split = load_split(out)
    assert split.data_dir == str(config.data_dir.resolve())
    meta = json.loads((out / META_FILE).read_text())
    assert meta["version"] == result.version
    assert meta["training"]["optimizer"] == "sgd" and meta["training"]["learning_rate"] == 0.001
    assert meta["training"]["epochs_done"] == 3
    assert set(meta["metrics"]["classes"]) == {"holes", "scratches", "rolling"}


def test_stored_thresholds_are_the_validation_sweep_choice(run) -> None:  # type: ignore[no-untyped-def]
    """The artefact's thresholds = choose_thresholds(F1) on the validation split's scores."""
    config, _ = run
    classifier = load_classifier(config.out_dir)
    val = load_split(config.out_dir).subset(read_tileset(config.data_dir), "validation")
    tiles = np.stack([read_tile(val.path(i)) for i in range(len(val))])
    expected = choose_thresholds(val.labels, classifier.predict(tiles), "f1")
    np.testing.assert_allclose(classifier.thresholds.array, expected)


def test_existing_run_is_not_overwritten_without_resume(run) -> None:  # type: ignore[no-untyped-def]
    config, _ = run
    with pytest.raises(ConfigError, match="--resume"):
        train(config)


def test_resume_needs_more_epochs_than_done(run) -> None:  # type: ignore[no-untyped-def]
    config, _ = run
    with pytest.raises(ConfigError, match="already done 3 epochs"):
        train(replace(config, resume=True, epochs=3))


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path) -> None:
    write_shape_tileset(tmp_path / "tiles", per_class=2, clean=4, pairs=0, size=32)
    with pytest.raises(ModelError, match=r"state\.json is missing"):
        train(_config(tmp_path, resume=True))


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch_and_optimizer_state(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--resume with --epochs 4 runs exactly epoch 4 (index 3), appends to history.csv, and the
    optimizer's step count goes on from 3 epochs × 3 steps."""
    import keras  # noqa: PLC0415

    config, _ = run
    shutil.copytree(config.out_dir, tmp_path / "model")
    resumed = replace(config, out_dir=tmp_path / "model", resume=True, epochs=4)
    result = train(resumed)
    assert [r["epoch"] for r in _history(tmp_path / "model")] == [0, 1, 2, 3]
    assert result.epochs_done == 4
    last = keras.saving.load_model(tmp_path / "model" / "checkpoints" / "last.keras")
    assert int(keras.ops.convert_to_numpy(last.optimizer.iterations)) == 4 * 3


def test_train_options_map_onto_the_training_config() -> None:
    """The CLI's options reach TrainingConfig unchanged; the defaults are the paper's recipe."""
    from worker.cli import build_parser  # noqa: PLC0415
    from worker.model.train_command import config_from_args  # noqa: PLC0415

    parser = build_parser()
    paper = config_from_args(parser.parse_args(["train", "--data", "d", "--out", "o"]))
    assert (paper.optimizer, paper.learning_rate, paper.momentum, paper.batch_size) == ("sgd", 0.001, 0.9, 20)
    assert (paper.loss, paper.focal_gamma, paper.focal_alpha) == ("focal", 2.0, 0.25)
    assert (paper.lr_factor, paper.lr_patience, paper.stop_patience, paper.input_size) == (0.75, 10, 10, 256)
    args = parser.parse_args(
        ["train", "--data", "d", "--out", "o", "--focal-alpha", "none", "--no-augment", "--oversample",
         "--class-weights", "--augment-validation", "--input-size", "96", "--optimizer", "adam",
         "--steps-per-epoch", "50", "--validation-steps", "5", "--resume", "--threshold-objective", "errors"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.focal_alpha is None and not config.augmentation.active
    assert (config.oversample, config.class_weights, config.augment_validation, config.resume) == (True,) * 4
    assert (config.input_size, config.optimizer, config.steps_per_epoch, config.validation_steps) == (
        96,
        "adam",
        50,
        5,
    )
    assert config.threshold_objective == "errors"
    assert (paper.lr_schedule, paper.warmup_steps) == ("plateau", 0)
    cosine = config_from_args(
        parser.parse_args(["train", "--data", "d", "--out", "o", "--lr-schedule", "cosine",
                           "--warmup-steps", "20", "--steps-per-epoch", "50"])
    )  # fmt: skip
    assert (cosine.lr_schedule, cosine.warmup_steps) == ("cosine", 20)
    with pytest.raises(ConfigError, match="--focal-alpha"):
        config_from_args(parser.parse_args(["train", "--data", "d", "--out", "o", "--focal-alpha", "x"]))
    with pytest.raises(ConfigError, match="--input-size"):
        config_from_args(parser.parse_args(["train", "--data", "d", "--out", "o", "--input-size", "16"]))


def test_missing_tile_images_are_reported_before_training(tmp_path: Path) -> None:
    """A tile listed in labels.csv but absent on disk is a DatasetError naming it, before any model."""
    from worker.core.errors import DatasetError  # noqa: PLC0415

    write_shape_tileset(tmp_path / "tiles", per_class=2, clean=4, pairs=0, size=32)
    victim = sorted((tmp_path / "tiles" / "tiles").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetError, match=f"missing \\(first: tiles/{victim.name}\\)"):
        train(_config(tmp_path))


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step(tmp_path: Path) -> None:
    """Linear warm-up to the learning rate, then a cosine down to 0 at epochs × steps per epoch."""
    config = _config(tmp_path, lr_schedule="cosine", learning_rate=0.01, epochs=4, steps_per_epoch=25,
                     warmup_steps=20)  # fmt: skip
    schedule = learning_rate_schedule(config)
    rate = {step: float(schedule(step)) for step in (0, 10, 20, 60, 100)}
    assert rate[0] == pytest.approx(0.0, abs=1e-9)
    assert rate[10] == pytest.approx(0.005)
    assert rate[20] == pytest.approx(0.01)
    assert rate[60] == pytest.approx(0.005)  # half-way through the 80 decay steps
    assert rate[100] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_schedule(_config(tmp_path)) == _config(tmp_path).learning_rate  # plateau: constant


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"lr_schedule": "step"}, "--lr-schedule"),
        ({"warmup_steps": 5}, "--warmup-steps"),  # warm-up belongs to the cosine schedule
        ({"lr_schedule": "cosine", "warmup_steps": 9}, "--warmup-steps"),  # 3 epochs × 3 steps = 9
        ({"lr_schedule": "cosine", "warmup_steps": -1}, "--warmup-steps"),
    ],
)
def test_cosine_schedule_settings_are_checked(
    tmp_path: Path, changes: dict[str, object], option: str
) -> None:
    with pytest.raises(ConfigError, match=option):
        _config(tmp_path, **changes)


@pytest.mark.slow  # about 40 s of training on 2 cores (`make test-slow`)
def test_cosine_run_trains_its_fixed_budget_without_plateau_callbacks(tmp_path: Path) -> None:
    """A cosine run does every epoch asked (no early stop) and ends with a learning rate near 0."""
    write_shape_tileset(tmp_path / "tiles", per_class=8, clean=16, pairs=4, size=32)
    config = _config(tmp_path, lr_schedule="cosine", optimizer="adam", warmup_steps=2, stop_patience=1,
                     lr_patience=1)  # fmt: skip
    result = train(config)
    assert result.epochs_done == config.epochs
    state = json.loads((config.out_dir / "checkpoints" / "state.json").read_text())
    assert state["learning_rate"] == pytest.approx(0.0, abs=1e-6)


def test_a_cosine_schedule_without_steps_per_epoch_runs_one_pass_of_the_data_per_epoch(
    tmp_path: Path,
) -> None:
    write_shape_tileset(tmp_path / "tiles", per_class=8, clean=16, pairs=4, size=32)
    config = _config(tmp_path, lr_schedule="cosine", steps_per_epoch=None, epochs=1, warmup_steps=1)
    result = train(config)
    recorded = json.loads((result.model_dir / META_FILE).read_text())["training"]
    train_tiles = recorded["tiles"]["train"]
    assert recorded["steps_per_epoch"] == -(-train_tiles // config.batch_size)  # one pass, rounded up
    rows = _history(result.model_dir)
    assert len(rows) == 1
