"""Where on a tile the model saw a class: Grad-CAM heat maps for the classifier's network.

The network ends with the ResNet's last stage (`conv5_block3_out`, feature maps F of C channels),
global average pooling, and one sigmoid per class: s_c = σ(z_c), z_c = Σ_k w_kc · mean_ij F_k(i,j)
+ b_c. Grad-CAM weighs each channel by the mean gradient of the class score over the map,
α_k = mean_ij ∂s_c/∂F_k(i,j) = σ'(z_c) · w_kc / (H·W), and takes ReLU(Σ_k α_k F_k). For this head
the gradient is known in closed form, so the map is ReLU(Σ_k w_kc F_k) up to the positive factor
σ'(z_c)/(H·W), which the normalisation to [0, 1] removes: Grad-CAM equals CAM (Zhou et al. 2016)
here, and needs one forward pass to the last stage and no gradient — the same on every Keras 3
backend. (`tests/test_explain.py` checks it against TensorFlow's own gradients.)

`class_maps(classifier, tiles, class_name)` gives one map per tile, at the tile's own size (the
last stage's grid, 1/32 of the network's input, bilinearly up-sampled); `tile_maps` does the same
for several classes from one forward pass; `overlay(tile, heat)` paints a map over the grey tile
(JET colours, 45 %). A map is all zeros where nothing pushes the class up (ReLU), and then says so
rather than invent a hot spot. `heat_map_png(classifier, crop, class_name)` is the whole of it for
one stored crop (the web console's heat maps), `steel-worker explain` for image files.

What the closed form assumes of the network, and so of any model explained here: a layer named
`LAST_STAGE` whose output (N, h, w, C) is global-average-pooled and fed, with nothing in between,
to a Dense layer named `HEAD_NAME` (`worker.model.network`) with a monotonic increasing activation
(sigmoid here: its derivative only scales the map). The ResNets of `build_classifier` are such
networks, and so is any small Keras model built the same way (`tests/test_explain_command.py`
checks on one that the map of a class lies where the class's evidence is). A network with layers
between the pooling and the head (dropout at inference is the identity, and harmless) would need
the gradients computed, which this module does not do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from worker.core.errors import ModelError
from worker.model.network import HEAD_NAME
from worker.model.preprocessing import preprocess_tiles

if TYPE_CHECKING:
    from worker.model.artefact import Classifier

#: The output of the ResNet's last stage (ResNet50, 101 and 152 all name it so).
LAST_STAGE = "conv5_block3_out"
OVERLAY_ALPHA = 0.45

#: The last few networks' feature models: (the network, its feature model), newest last. Bounded, so
#: a caller that lets a model go (the console keeps two) does not keep it alive here; the network
#: itself is kept and compared, so a new model at a freed one's address never gets its features.
_FEATURE_MODELS_KEPT = 2
_feature_models: list[tuple[Any, Any]] = []


def _features(classifier: Classifier) -> Any:
    """A Keras model from the network's input to its last stage (built once per loaded model)."""
    import keras  # noqa: PLC0415

    for network, features in _feature_models:
        if network is classifier.model:
            return features
    try:
        stage = classifier.model.get_layer(LAST_STAGE)
    except ValueError:
        raise ModelError(
            f"model {classifier.version[:12]}: no layer {LAST_STAGE!r} to explain from"
            f" (backbone {classifier.backbone})"
        ) from None
    features = keras.Model(classifier.model.inputs, stage.output)
    _feature_models.append((classifier.model, features))
    del _feature_models[:-_FEATURE_MODELS_KEPT]
    return features


def class_maps(classifier: Classifier, tiles: np.ndarray, class_name: str) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] of `class_name` for uint8 grey tiles (N, H, W),
    each at its tile's size. ModelError for a class the model does not have."""
    return tile_maps(classifier, tiles, [class_name])[class_name]


def tile_maps(classifier: Classifier, tiles: np.ndarray, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """`class_maps` of each of `class_names` (by name, in that order), from one forward pass of the
    tiles to the last stage. ModelError, before any work, for a class the model does not have."""
    names = list(classifier.catalogue.names)
    unknown = [c for c in class_names if c not in names]
    if unknown:
        raise ModelError(f"model {classifier.version[:12]}: no class {unknown[0]!r} (it has {names})")
    tiles = np.asarray(tiles)
    features = _feature_grid(classifier, preprocess_tiles(tiles, classifier.input_size))
    height, width = tiles.shape[1], tiles.shape[2]
    maps = {}
    for name in class_names:
        grid = _cams(classifier, features, names.index(name))
        up = [cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in grid]
        maps[name] = np.clip(np.stack(up), 0.0, 1.0).astype(np.float32)
    return maps


def grid_maps(classifier: Classifier, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM on the last stage's grid (N, h, w), each map scaled to a maximum of 1 (all zeros
    when nothing pushes the class up), for a pre-processed batch (N, S, S, 3)."""
    return _cams(classifier, _feature_grid(classifier, batch), class_index)


def _feature_grid(classifier: Classifier, batch: np.ndarray) -> np.ndarray:
    """The last stage's output (N, h, w, C) for a pre-processed batch."""
    return np.asarray(_features(classifier).predict_on_batch(batch), dtype=np.float32)


def _cams(classifier: Classifier, features: np.ndarray, class_index: int) -> np.ndarray:
    """ReLU(Σ_k w_kc F_k) on the grid, each map scaled to a maximum of 1 (zeros stay zeros)."""
    kernel = np.asarray(classifier.model.get_layer(HEAD_NAME).kernel, dtype=np.float32)  # (C, classes)
    raw = np.maximum(np.tensordot(features, kernel[:, class_index], axes=([3], [0])), 0.0)
    tops = raw.max(axis=(1, 2), keepdims=True)
    return np.where(tops > 0, raw / np.where(tops > 0, tops, 1.0), 0.0).astype(np.float32)


def overlay(tile: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The grey tile (H, W) uint8 with the map (H, W) in [0, 1] painted over it: BGR uint8."""
    grey = cv2.cvtColor(np.asarray(tile, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
    levels = (np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
    return cv2.addWeighted(colours, alpha, grey, 1.0 - alpha, 0.0)


def png_bytes(image: np.ndarray) -> bytes:
    """An image (grey or BGR uint8) encoded as PNG."""
    ok, encoded = cv2.imencode(".png", np.asarray(image, dtype=np.uint8))
    if not ok:  # OpenCV encodes any uint8 image: a bug if reached
        raise ValueError(f"could not encode an image of shape {np.shape(image)} as PNG")
    return np.asarray(encoded).tobytes()


def heat_map_png(classifier: Classifier, crop: np.ndarray, class_name: str) -> bytes:
    """One stored crop, grey (H, W) uint8, with `class_name`'s Grad-CAM map painted over it, as PNG
    bytes: what the web console shows for a detection. ModelError for a class the model lacks."""
    pixels = np.asarray(crop, dtype=np.uint8)
    heat = class_maps(classifier, pixels[None], class_name)[0]
    return png_bytes(overlay(pixels, heat))
