"""Cutting a frame into square tiles so that every pixel lies in at least one tile.

Tiles never extend past the frame: where a side is not a multiple of the tile size, the tiles are
spread evenly and overlap a little (a 1600-pixel side gives 7 tiles of 256 at origins 0, 224, ...,
1344). A side shorter than the tile is padded by `pad_to_tile` before tiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from worker.core.errors import DatasetError


@dataclass(frozen=True)
class TileWindow:
    """A tile's place in its frame, in pixels: column `x`, row `y` of its top-left corner."""

    x: int
    y: int
    size: int


def tile_origins(length: int, tile: int, min_overlap: int = 0) -> list[int]:
    """Origins of tiles of side `tile` covering [0, length), evenly spread, first 0, last length-tile.

    Consecutive tiles overlap by at least `min_overlap` pixels. Requires length >= tile.
    """
    if tile <= 0 or not 0 <= min_overlap < tile:
        raise ValueError(f"tile must be > 0 and 0 <= min_overlap < tile, received {tile}, {min_overlap}")
    if length < tile:
        raise ValueError(f"length {length} is shorter than the tile {tile}; pad the frame first")
    if length == tile:
        return [0]
    stride = tile - min_overlap
    count = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def tile_count(height: int, width: int, tile: int, min_overlap: int = 0) -> int:
    """How many tiles `tile_windows` gives for a height×width frame (padded to a tile first when a
    side is shorter), computed without listing them: a bound checked before decoding an image."""
    if tile <= 0 or not 0 <= min_overlap < tile:
        raise ValueError(f"tile must be > 0 and 0 <= min_overlap < tile, received {tile}, {min_overlap}")

    def along(length: int) -> int:
        return 1 if length <= tile else math.ceil((length - tile) / (tile - min_overlap)) + 1

    return along(height) * along(width)


def tile_windows(height: int, width: int, tile: int, min_overlap: int = 0) -> list[TileWindow]:
    """All tile windows of a height×width frame, row by row, left to right."""
    return [
        TileWindow(x=x, y=y, size=tile)
        for y in tile_origins(height, tile, min_overlap)
        for x in tile_origins(width, tile, min_overlap)
    ]


def pad_to_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the bottom and right of `image` so both sides are at least `tile` pixels."""
    height, width = image.shape[:2]
    bottom, right = max(0, tile - height), max(0, tile - width)
    if bottom == 0 and right == 0:
        return image
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REFLECT_101)


def cut_tiles(image: np.ndarray, windows: list[TileWindow]) -> np.ndarray:
    """Stack the tiles of `image` at `windows`: shape (n, tile, tile[, channels]), a copy."""
    if not windows:
        raise DatasetError("cut_tiles: expected at least one window, received none")
    return np.stack([image[w.y : w.y + w.size, w.x : w.x + w.size] for w in windows])
