"""`train --preset`: a named recipe supplies defaults, options given beside it win, --help shows both."""

from __future__ import annotations

import pytest

from worker.cli import build_parser
from worker.core.errors import ConfigError
from worker.model.presets import PAPER, PRESETS, describe, resolve
from worker.model.train_command import config_from_args


def _config(*extra: str):  # type: ignore[no-untyped-def]
    return config_from_args(build_parser().parse_args(["train", "--data", "d", "--out", "o", *extra]))


def test_without_a_preset_the_recipe_is_the_papers() -> None:
    config = _config()
    assert config.preset == "paper"
    assert (config.input_size, config.loss, config.optimizer, config.learning_rate) == (
        256,
        "focal",
        "sgd",
        0.001,
    )
    assert (config.batch_size, config.epochs, config.lr_schedule, config.warmup_steps) == (
        20,
        100,
        "plateau",
        0,
    )
    assert config.batchnorm_momentum is None
    assert (config.augmentation.crop_min_scale, config.augmentation.intensity) == (1.0, 0.0)


def test_cpu_scratch_preset_sets_every_value_it_names() -> None:
    config = _config("--preset", "cpu-scratch")
    recipe = PRESETS["cpu-scratch"]
    assert config.preset == "cpu-scratch"
    for name in ("input_size", "loss", "optimizer", "learning_rate", "batch_size", "epochs", "lr_schedule",
                 "warmup_steps", "batchnorm_momentum"):  # fmt: skip
        assert getattr(config, name) == recipe[name], name
    assert config.augmentation.crop_min_scale == recipe["augment_crop"]
    assert config.augmentation.intensity == recipe["augment_intensity"]


def test_options_given_beside_a_preset_win() -> None:
    config = _config("--preset", "cpu-scratch", "--input-size", "128", "--epochs", "3", "--augment-crop", "1")
    assert (config.input_size, config.epochs, config.augmentation.crop_min_scale) == (128, 3, 1.0)
    assert config.loss == PRESETS["cpu-scratch"]["loss"]


def test_a_presets_warm_up_is_dropped_with_a_plateau_schedule_unless_asked_for() -> None:
    assert _config("--preset", "cpu-scratch", "--lr-schedule", "plateau").warmup_steps == 0
    with pytest.raises(ConfigError, match="--warmup-steps"):
        _config("--preset", "cpu-scratch", "--lr-schedule", "plateau", "--warmup-steps", "5")


def test_bad_values_in_preset_options_are_refused_with_the_option_named() -> None:
    with pytest.raises(ConfigError, match="--augment-crop"):
        _config("--preset", "cpu-scratch", "--augment-crop", "0.01")
    with pytest.raises(ConfigError, match="--augment-intensity"):
        _config("--augment-intensity", "2")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--out", "o", "--preset", "gpu-magic"])
    with pytest.raises(ConfigError, match="--preset"):
        resolve("gpu-magic", {})
    with pytest.raises(ConfigError, match="not settings a preset decides"):
        resolve("paper", {"momentum": 0.5})


def test_every_preset_names_the_same_settings_and_help_shows_each_presets_value() -> None:
    assert all(set(recipe) == set(PAPER) for recipe in PRESETS.values())
    assert describe("input_size") == f"default: paper 256; cpu-scratch {PRESETS['cpu-scratch']['input_size']}"
    assert describe("batchnorm_momentum").startswith("default: paper Keras' own; cpu-scratch 0.9")
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    assert "--preset {cpu-scratch,paper}" in text and "cpu-scratch 96" in text.replace("\n", " ").replace(
        "  ", " "
    )
