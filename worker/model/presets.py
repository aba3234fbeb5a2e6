"""Named training recipes for `steel-worker train --preset`.

`paper` is the recipe of the paper (the default): 256-px input, focal loss, SGD 0.001 with
momentum, batch 20, learning rate ×0.75 on a plateau, early stop. `cpu-scratch` is the recipe that
measured best when training from scratch (no ImageNet weights) on a 2-core CPU within an hour, on
NEU-DET (docs/classifier.md, "A recipe for a CPU, from scratch", has the table of what each choice
measured). A preset only supplies defaults: any option given on the command line wins.
"""

from __future__ import annotations

from typing import Any

from worker.core.errors import ConfigError

#: The settings a preset decides, with the paper's values (train's defaults without --preset).
PAPER: dict[str, Any] = {
    "input_size": 256,
    "loss": "focal",
    "optimizer": "sgd",
    "learning_rate": 0.001,
    "batch_size": 20,
    "epochs": 100,
    "lr_schedule": "plateau",
    "warmup_steps": 0,
    "batchnorm_momentum": None,  # Keras' own (0.99)
    "augment_crop": 1.0,
    "augment_intensity": 0.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": PAPER,
    "cpu-scratch": {
        **PAPER,
        "input_size": 96,
        "loss": "bce",
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 32,
        "epochs": 20,
        "lr_schedule": "cosine",
        "warmup_steps": 36,
        "batchnorm_momentum": 0.9,
        "augment_crop": 0.8,
        "augment_intensity": 0.1,
    },
}
DEFAULT_PRESET = "paper"


def resolve(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's settings with every value in `given` that is not None put over them."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, received {preset!r}")
    unknown = sorted(set(given) - set(PAPER))
    if unknown:
        raise ConfigError(f"preset settings: {unknown} are not settings a preset decides")
    return {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}


def describe(setting: str) -> str:
    """`paper: X; cpu-scratch: Y` for --help (one value when every preset agrees)."""
    values = {name: recipe[setting] for name, recipe in PRESETS.items()}
    if len({repr(v) for v in values.values()}) == 1:
        return f"default: {_shown(values[DEFAULT_PRESET])}"
    return "default: " + "; ".join(f"{name} {_shown(v)}" for name, v in values.items())


def _shown(value: Any) -> str:
    return "Keras' own" if value is None else str(value)
