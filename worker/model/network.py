"""The classifier network: a Keras ResNet (50/101/152) without its top, average pooling, and one
sigmoid per catalogue class.

Only Keras 3 API is used, so the model builds and its weights load on the TensorFlow, JAX and
PyTorch backends alike. Layer names are fixed (the ResNet's own names, `defects` for the head), so
a weights file saved from one build loads into any other build of the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.core.errors import ModelError

if TYPE_CHECKING:
    import keras

BACKBONES = ("resnet50", "resnet101", "resnet152")
HEAD_NAME = "defects"
MIN_INPUT_SIZE = 32  # keras.applications' ResNets refuse anything smaller


def _backbone_factory(backbone: str) -> Callable[..., Any]:
    import keras  # noqa: PLC0415

    factories = {
        "resnet50": keras.applications.ResNet50,
        "resnet101": keras.applications.ResNet101,
        "resnet152": keras.applications.ResNet152,
    }
    if backbone not in factories:
        raise ModelError(f"backbone: expected one of {list(BACKBONES)}, received {backbone!r}")
    return factories[backbone]


def build_classifier(
    n_classes: int,
    input_size: int = 256,
    backbone: str = "resnet50",
    imagenet_weights: str | Path | None = None,
) -> keras.Model:
    """ResNet backbone (include_top=False, weights=None, pooling="avg") + Dense(n_classes, sigmoid).

    Input: float32 (batch, input_size, input_size, 3) as made by `preprocess_tiles`. With
    `imagenet_weights`, the backbone's weights are read from that local file (Keras' no-top .h5 for
    the same backbone); nothing is ever downloaded. ModelError when the file is missing or does
    not fit the backbone.
    """
    import keras  # noqa: PLC0415

    if n_classes < 1:
        raise ModelError(f"n_classes: expected at least 1, received {n_classes}")
    if input_size < MIN_INPUT_SIZE:
        raise ModelError(f"input_size: expected at least {MIN_INPUT_SIZE} pixels, received {input_size}")
    if keras.backend.image_data_format() != "channels_last":
        raise ModelError(
            "Keras image_data_format: expected 'channels_last' (the pre-processing's layout), received "
            f"{keras.backend.image_data_format()!r}; check ~/.keras/keras.json"
        )
    if imagenet_weights is not None:
        check_weights_file(imagenet_weights, backbone)
    base = _backbone_factory(backbone)(
        include_top=False, weights=None, input_shape=(input_size, input_size, 3), pooling="avg"
    )
    if imagenet_weights is not None:
        load_backbone_weights(base, imagenet_weights, backbone)
    outputs = keras.layers.Dense(n_classes, activation="sigmoid", name=HEAD_NAME)(base.output)
    return keras.Model(base.input, outputs, name=f"{backbone}_defects")


def check_weights_file(path: str | Path, backbone: str) -> Path:
    """The path of an existing .h5/.hdf5 file; ModelError otherwise (checked before any building)."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(
            f"--imagenet-weights: file {file} does not exist; expected Keras' {backbone} no-top weights "
            f"(e.g. {backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5), which are never downloaded"
        )
    if not file.name.endswith((".h5", ".hdf5")):
        raise ModelError(f"--imagenet-weights: expected an HDF5 file (.h5), received {file.name}")
    return file


def load_backbone_weights(base: keras.Model, path: str | Path, backbone: str) -> None:
    """Load Keras' ImageNet no-top weights file into `base`; ModelError if missing or ill-fitting."""
    file = check_weights_file(path, backbone)
    try:
        base.load_weights(str(file))
    except Exception as exc:  # Keras/h5py raise ValueError, OSError, KeyError... for a wrong file
        raise ModelError(
            f"--imagenet-weights: {file} does not fit a {backbone} without top: {type(exc).__name__}: "
            f"{str(exc)[:300]}"
        ) from exc


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer; returns their count.

    Keras' default 0.99 lets the inference statistics lag far behind in short from-scratch runs
    (DESIGN.md, performance notes); a lower momentum (e.g. 0.9) makes them follow sooner.
    """
    import keras  # noqa: PLC0415

    if not 0.0 <= momentum < 1.0:
        raise ModelError(f"batchnorm momentum: expected 0 <= momentum < 1, received {momentum}")
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count
