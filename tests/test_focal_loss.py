"""The training losses against numbers computed by hand.

Focal loss per class: -α_t (1 - p_t)^γ ln(p_t), p_t = p for a positive label and 1 - p for a
negative one, α_t = α for a positive and 1 - α for a negative; averaged over the classes of a tile,
then over the tiles. Worked out for γ = 2, α = 0.25:

tile 1, labels (1, 0), probabilities (0.9, 0.2):
    0.25 · 0.1² · -ln 0.9 = 0.000263401    0.75 · 0.2² · -ln 0.8 = 0.006694307   mean 0.003478854
tile 2, labels (0, 1), probabilities (0.6, 0.3):
    0.75 · 0.6² · -ln 0.4 = 0.247398498    0.25 · 0.7² · -ln 0.3 = 0.147486668   mean 0.197442583
batch mean: 0.100460718
"""

from __future__ import annotations

import numpy as np
import pytest

from worker.core.errors import ConfigError
from worker.model.losses import make_loss

Y = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
P = np.array([[0.9, 0.2], [0.6, 0.3]], dtype=np.float32)


def _value(loss: object, y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    import keras  # noqa: PLC0415

    return float(keras.ops.convert_to_numpy(loss(y, p, sample_weight=sample_weight)))  # type: ignore[operator]


def test_focal_loss_matches_hand_computation() -> None:
    """γ=2, α=0.25 on two tiles gives the batch mean worked out in the module docstring."""
    assert _value(make_loss("focal", gamma=2.0, alpha=0.25), Y, P) == pytest.approx(0.100460718, rel=1e-5)


def test_focal_loss_of_one_tile_matches_hand_computation() -> None:
    """One tile alone: the mean over its two classes, 0.003478854."""
    assert _value(make_loss("focal"), Y[:1], P[:1]) == pytest.approx(0.003478854, rel=1e-5)


def test_focal_loss_without_class_balancing() -> None:
    """alpha=None drops α_t: tile 1 gives (0.1²·-ln 0.9 + 0.2²·-ln 0.8) / 2 = 0.004989674."""
    assert _value(make_loss("focal", alpha=None), Y[:1], P[:1]) == pytest.approx(0.004989674, rel=1e-5)


def test_sample_weights_scale_each_tile() -> None:
    """Per-sample weights (2, 0) (how class weights enter training): (2 · 0.003478854 + 0) / 2 tiles."""
    weights = np.array([2.0, 0.0], dtype=np.float32)
    assert _value(make_loss("focal"), Y, P, weights) == pytest.approx(0.003478854, rel=1e-5)


def test_bce_matches_hand_computation() -> None:
    """--loss bce on tile 1: -(ln 0.9 + ln 0.8) / 2 = 0.164252033."""
    assert _value(make_loss("bce"), Y[:1], P[:1]) == pytest.approx(0.164252033, rel=1e-5)


def test_confident_correct_predictions_cost_less_under_focal_than_bce() -> None:
    """Focal loss down-weights easy tiles: the well-classified tile 1 costs far less than under BCE."""
    assert _value(make_loss("focal", alpha=None), Y[:1], P[:1]) < 0.05 * _value(
        make_loss("bce"), Y[:1], P[:1]
    )


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"name": "hinge"}, "--loss"),
        ({"name": "focal", "alpha": 1.5}, "--focal-alpha"),
        ({"name": "focal", "gamma": -1.0}, "--focal-gamma"),
    ],
)
def test_bad_loss_settings_are_refused_naming_the_option(kwargs: dict[str, object], option: str) -> None:
    """An unknown loss name or an out-of-range gamma/alpha is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=option):
        make_loss(**kwargs)  # type: ignore[arg-type]
