"""Training losses: the paper's binary focal loss, or plain binary cross-entropy.

Both are Keras' own losses (backend-agnostic). The focal loss per class is
    FL(p_t) = -α_t (1 - p_t)^γ log(p_t),  p_t = p if y = 1 else 1 - p,  α_t = α if y = 1 else 1 - α,
averaged over the classes of a tile, then over the tiles of a batch (weighted by sample weights
when given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from worker.core.errors import ConfigError

if TYPE_CHECKING:
    import keras

LOSSES = ("focal", "bce")
DEFAULT_GAMMA = 2.0
DEFAULT_ALPHA = 0.25


def make_loss(
    name: Literal["focal", "bce"] = "focal",
    gamma: float = DEFAULT_GAMMA,
    alpha: float | None = DEFAULT_ALPHA,
) -> keras.losses.Loss:
    """The loss named `name`. For focal loss, `alpha=None` turns class balancing (α_t) off."""
    import keras  # noqa: PLC0415

    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name != "focal":
        raise ConfigError(f"--loss: expected one of {list(LOSSES)}, received {name!r}")
    if gamma < 0:
        raise ConfigError(f"--focal-gamma: expected gamma >= 0, received {gamma}")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ConfigError(f"--focal-alpha: expected 0 < alpha < 1, received {alpha}")
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=alpha is not None,
        alpha=alpha if alpha is not None else DEFAULT_ALPHA,
        gamma=gamma,
        name="focal",
    )
