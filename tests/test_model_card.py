"""The model card (`worker.model.card`): `train` writes MODEL_CARD.md with the data, recipe, machine,
validation metrics, thresholds and known limits of the run; `evaluate` on the model's own test split
puts one "Test split" section into it, the same after a second run; the worker logs the card's
headline in its one start-up line about the model; artefacts without a card load and log alike."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_tiles import write_shape_tileset
from structlog.testing import capture_logs

from worker import cli
from worker.core.catalogue import load_catalogue
from worker.core.tileset import read_tileset
from worker.model.artefact import META_FILE, create_untrained_artefact, load_classifier
from worker.model.card import (
    CARD_DATA_FILE,
    CARD_FILE,
    TEST_BEGIN,
    TEST_END,
    headline,
    render_card,
    render_test_section,
    summarise_test_report,
)
from worker.model.split import Split, load_split, save_split
from worker.model.training import TrainingConfig, TrainingResult, train

LIMITS = "trained on drawn shapes only; never seen a real strip"


#: Tests on a real training run and real evaluations: minutes on 2 cores, so `make test-slow`.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingConfig, TrainingResult]:
    """A tiny real run (ResNet50 at 32 px, one epoch of two steps) with known limits stated."""
    tmp = tmp_path_factory.mktemp("card")
    write_shape_tileset(tmp / "tiles", per_class=8, clean=16, pairs=4, size=32)
    config = TrainingConfig(
        data_dir=tmp / "tiles",
        out_dir=tmp / "model",
        input_size=32,
        batch_size=8,
        epochs=1,
        steps_per_epoch=2,
        batchnorm_momentum=0.0,
        workers=0,
        verbose=0,
        seed=4,
        threshold_objective="f2",
        known_limits=LIMITS,
    )
    return config, train(config)


def _card(model_dir: Path) -> str:
    return (model_dir / CARD_FILE).read_text(encoding="utf-8")


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the first Markdown table row that starts with `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


@SLOW
def test_train_writes_a_card_with_tiles_per_class_in_each_part_of_the_split(trained) -> None:  # type: ignore[no-untyped-def]
    config, _ = trained
    text = _card(config.out_dir)
    tileset = read_tileset(config.data_dir)
    split = load_split(config.out_dir)
    header = _row(text, "part")
    assert header == ["part", "tiles", "clean", "holes", "scratches", "rolling"]
    total = 0
    for part in ("train", "validation", "test"):
        subset = split.subset(tileset, part)
        expected = [part, str(len(subset)), str(int((subset.labels.sum(axis=1) == 0).sum()))]
        expected += [str(int(v)) for v in subset.labels.sum(axis=0)]
        assert _row(text, part) == expected
        total += len(subset)
    assert total == len(tileset) == 3 * 8 + 4 + 16
    assert f"- Tile set: `{config.data_dir.resolve()}`" in text
    assert "stratified by label combination, seed 4" in text


@SLOW
def test_the_card_states_the_recipe_the_machine_and_the_time(trained) -> None:  # type: ignore[no-untyped-def]
    config, _ = trained
    text = _card(config.out_dir)
    recipe = {cells[0]: cells[1] for cells in (_row(text, k) for k in (
        "backbone", "initial weights", "input size", "loss", "optimiser", "learning rate and schedule",
        "epochs", "batch size", "steps per epoch", "augmentation", "BatchNorm momentum", "seed",
    ))}  # fmt: skip
    assert recipe["backbone"].startswith("resnet50")
    assert recipe["initial weights"] == "none: from scratch"
    assert recipe["input size"].startswith("32 px")
    assert recipe["loss"] == "binary focal loss (γ 2.0, α 0.25)"
    assert recipe["optimiser"] == "SGD, momentum 0.9"
    assert recipe["learning rate and schedule"].startswith("0.001, ×0.75 after 10 epochs")
    assert recipe["epochs"] == "1 done (of at most 1)"
    assert (recipe["batch size"], recipe["steps per epoch"], recipe["seed"]) == ("8", "2", "4")
    assert recipe["augmentation"] == "hflip p=0.5, vflip p=0.5, rot90 p=0.5"
    assert recipe["BatchNorm momentum"] == "0.0"
    meta = json.loads((config.out_dir / META_FILE).read_text())
    machine = meta["training"]["machine"]
    assert machine["cores"] >= 1 and machine["keras_backend"] == "tensorflow"
    assert f"{machine['cores']} cores; vector instructions:" in text
    assert f"Keras {machine['keras']} on tensorflow (TensorFlow {machine['tensorflow']}" in text
    assert "- Time: " in text and "- GPU: " in text


@SLOW
def test_the_card_lists_thresholds_how_they_were_chosen_and_validation_metrics(trained) -> None:  # type: ignore[no-untyped-def]
    config, result = trained
    text = _card(config.out_dir)
    meta = json.loads((config.out_dir / META_FILE).read_text())
    assert result.version in text
    assert "for the highest F2 (recall weighted twice" in text and "(objective `f2`)" in text
    for name, value in result.thresholds.items():
        assert _row(text, name)[:2] == [name, f"{value:.2f}"]  # the thresholds table comes first
        m = meta["metrics"]["classes"][name]
        validation_rows = [
            line for line in text.split("## Validation metrics")[1].split(TEST_BEGIN)[0].splitlines()
            if line.startswith(f"| {name} |")
        ]  # fmt: skip
        assert validation_rows == [
            f"| {name} | {m['threshold']:.2f} | {m['tp']} | {m['fp']} | {m['fn']} | {m['tn']} |"
            f" {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |"
            f" {'n/a' if m['auc'] is None else format(m['auc'], '.3f')} |"
        ]
    limits = text.split("## Known limits")[1].split("##")[0]
    assert f"- {LIMITS}" in limits and "from scratch" in limits and "validation split of" in limits
    assert text.count(TEST_BEGIN) == 1 and "Not evaluated yet" in text


@SLOW
def test_evaluate_on_the_own_test_split_puts_one_test_section_in_the_card(
    trained,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run twice: one section, the same text; its numbers are report.json's; card.json keeps them.
    Evaluating on another tile set leaves the card alone."""
    config, result = trained
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--model", str(config.out_dir), "--out", str(out)]) == 0
    assert f"model card: {config.out_dir / CARD_FILE}" in capsys.readouterr().out
    once = _card(config.out_dir)
    assert cli.main(["evaluate", "--model", str(config.out_dir), "--out", str(out)]) == 0
    twice = _card(config.out_dir)
    assert twice == once
    assert twice.count(TEST_BEGIN) == 1 and twice.count(TEST_END) == 1 and "Not evaluated yet" not in twice
    report = json.loads((out / "report.json").read_text())
    section = twice.split(TEST_BEGIN)[1]
    assert f"{report['n_images']} tiles of the persisted test split" in section
    assert f"macro F1 {report['macro_f1']:.3f}" in section
    for name, m in report["classes"].items():
        assert f"| {name} | {m['threshold']:.2f} | {m['tp']} | {m['fp']} | {m['fn']} | {m['tn']} |" in section
    kept = json.loads((config.out_dir / CARD_DATA_FILE).read_text())["test_split"]
    assert kept["model_version"] == result.version and kept["tiles"] == report["n_images"]
    assert twice.split(TEST_BEGIN)[0] == once.split(TEST_BEGIN)[0]  # the rest of the card untouched

    other = tmp_path / "other-report"
    args = ["evaluate", "--model", str(config.out_dir), "--data", str(config.data_dir), "--out", str(other)]
    assert cli.main(args) == 0
    assert "model card not updated (--data" in capsys.readouterr().out
    assert _card(config.out_dir) == twice


@SLOW
def test_headline_and_the_worker_s_start_up_line_carry_the_card(trained) -> None:  # type: ignore[no-untyped-def]
    from worker.streaming.service import log_model  # noqa: PLC0415

    config, result = trained
    classifier = load_classifier(config.out_dir)
    with capture_logs() as logs:
        log_model(classifier, "0003")
    (line,) = [e for e in logs if e["event"] == "worker.model"]
    assert line["version"] == result.version and line["schema"] == "0003"
    assert line["classes"] == ["holes", "scratches", "rolling"] and line["input_size"] == 32
    assert set(line["validation"]) == {"tiles", "binary_accuracy", "macro_f1", "macro_auc"}
    assert line["known_limits"][0] == LIMITS
    assert line["card"] == str(config.out_dir / CARD_FILE)
    if (config.out_dir / CARD_DATA_FILE).is_file():  # evaluated above (tests run in file order)
        assert line["test"] is not None and line["test"]["tiles"] == len(load_split(config.out_dir).test)


@SLOW
def test_an_artefact_without_a_card_loads_logs_and_gets_one_from_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An artefact older than cards: the worker's line says what model.json holds (no validation,
    no test, no card); `evaluate` writes the card from model.json with its test section."""
    from worker.streaming.service import log_model  # noqa: PLC0415

    model = tmp_path / "old-model"
    create_untrained_artefact(model, load_catalogue(), input_size=32, thresholds=np.array([0.3, 0.5, 0.7]))
    data = write_shape_tileset(tmp_path / "tiles", per_class=3, clean=3, pairs=0, size=32)
    tiles = read_tileset(data).tiles
    save_split(
        Split(str(data.resolve()), 0, train=tiles[2::3], validation=tiles[1::3], test=tiles[::3]), model
    )
    classifier = load_classifier(model)
    with capture_logs() as logs:
        log_model(classifier, "0003")
    (line,) = [e for e in logs if e["event"] == "worker.model"]
    assert (line["validation"], line["test"], line["card"]) == (None, None, None)
    assert line["known_limits"] == ["untrained: random weights, for tests only"]

    assert cli.main(["evaluate", "--model", str(model), "--out", str(tmp_path / "r")]) == 0
    text = _card(model)
    assert text.count(TEST_BEGIN) == 1 and f"{len(tiles[::3])} tiles of the persisted test split" in text
    assert "| holes | 0.30 |" in text and "- Tile set: `not recorded`" in text
    assert headline(classifier.meta, model)["test"]["tiles"] == len(tiles[::3])


def test_a_one_class_per_tile_test_split_shows_the_class_confusion_matrix() -> None:
    report: dict[str, Any] = {
        "model_version": "v1",
        "n_images": 4,
        "binary_accuracy": 0.75,
        "macro_f1": 0.7,
        "macro_auc": 0.8,
        "classes": {"holes": {"threshold": 0.5, "tp": 1, "fp": 0, "fn": 1, "tn": 2, "f1": 0.67}},
        "single_label": {
            "top1_accuracy": 0.75,
            "macro_f1": 0.73,
            "confusion": {
                "classes": ["holes", "scratches"],
                "rows_actual_columns_predicted": [[1, 1], [0, 2]],
            },
        },
    }
    section = render_test_section(summarise_test_report(report), ["holes", "scratches"])
    assert "top-1 accuracy 0.750" in section
    assert "| actual \\ predicted | holes | scratches |" in section
    assert "| holes | 1 | 1 |" in section and "| scratches | 0 | 2 |" in section


def test_a_test_summary_of_other_weights_is_not_shown() -> None:
    """card.json left from an earlier run in the same folder describes other weights: the card
    says "not evaluated yet" rather than show them."""
    meta = {"version": "new", "thresholds": {"holes": 0.5}, "catalogue": {"classes": [{"name": "holes"}]}}
    stale = summarise_test_report({"model_version": "old", "n_images": 9, "classes": {}})
    assert "Not evaluated yet" in render_card(meta, stale)
    assert "Not evaluated yet" not in render_card(meta, {**stale, "model_version": "new"})


def test_train_passes_known_limits_from_the_command_line() -> None:
    from worker.model.train_command import config_from_args  # noqa: PLC0415

    args = cli.build_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--known-limits", "line 2 only"]
    )
    assert config_from_args(args).known_limits == "line 2 only"
    assert replace(config_from_args(args), known_limits=None).to_dict()["known_limits"] is None
