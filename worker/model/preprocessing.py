"""The one pre-processing step shared by training, evaluation and inference.

Grey 8-bit tiles (N, H, W) of any size → resized to the model's input size with OpenCV's
INTER_AREA → the grey channel replicated to three channels → Keras'
`keras.applications.resnet50.preprocess_input` (caffe mode: RGB→BGR, ImageNet channel means
subtracted, no scaling) → float32 (N, S, S, 3). Only NumPy and OpenCV are used, so the result is
the same on every Keras backend, and the feeder threads release the GIL while resizing.
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.core.errors import DatasetError

PREPROCESSING_NAME = "grey-inter-area-3ch-resnet50-caffe"
"""Recorded in model.json; a model is only used with the pre-processing it was trained with."""


def resize_tile(tile: np.ndarray, input_size: int) -> np.ndarray:
    """One (H, W) uint8 tile resized to (input_size, input_size) with INTER_AREA; as-is if it fits."""
    if tile.shape[0] == input_size and tile.shape[1] == input_size:
        return tile
    return cv2.resize(tile, (input_size, input_size), interpolation=cv2.INTER_AREA)


def preprocess_tiles(tiles: np.ndarray, input_size: int) -> np.ndarray:
    """uint8 grey tiles (N, H, W) or (N, H, W, 1) → float32 network input (N, S, S, 3), S = input_size.

    Raises DatasetError for any other dtype or shape, naming what was received.
    """
    from keras.applications import resnet50  # heavy import, kept out of module import time  # noqa: PLC0415

    tiles = np.asarray(tiles)
    if tiles.ndim == 4 and tiles.shape[-1] == 1:
        tiles = tiles[..., 0]
    if tiles.dtype != np.uint8 or tiles.ndim != 3 or tiles.shape[0] == 0:
        raise DatasetError(
            "tiles: expected a non-empty uint8 array of grey tiles (N, H, W), received "
            f"dtype {tiles.dtype} shape {tiles.shape}"
        )
    if input_size <= 0:
        raise ValueError(f"input_size must be positive, received {input_size}")
    batch = np.empty((tiles.shape[0], input_size, input_size, 3), dtype=np.float32)
    for i, tile in enumerate(tiles):
        batch[i] = resize_tile(tile, input_size)[..., None]
    out = resnet50.preprocess_input(batch, data_format="channels_last")
    return np.ascontiguousarray(out, dtype=np.float32)
