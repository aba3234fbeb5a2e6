"""Property tests for cutting frames into tiles (worker.core.tiling) and labelling tiles from masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.errors import ConfigError, DatasetError
from worker.core.tiling import TileWindow, cut_tiles, pad_to_tile, tile_origins, tile_windows
from worker.datasets.labelled import tile_labels

tiles_and_lengths = st.integers(min_value=1, max_value=300).flatmap(
    lambda tile: st.tuples(st.just(tile), st.integers(min_value=tile, max_value=tile * 12))
)


@given(tiles_and_lengths, st.data())
def test_origins_cover_every_position_stay_inside_and_increase(
    tile_length: tuple[int, int], data: st.DataObject
) -> None:
    """Origins start at 0, end at length - tile, strictly increase, and leave no gap between tiles."""
    tile, length = tile_length
    min_overlap = data.draw(st.integers(min_value=0, max_value=tile - 1))
    origins = tile_origins(length, tile, min_overlap)
    assert origins[0] == 0
    assert origins[-1] == length - tile
    assert all(b > a for a, b in itertools.pairwise(origins))
    covered = np.zeros(length, dtype=bool)
    for o in origins:
        assert o >= 0 and o + tile <= length
        covered[o : o + tile] = True
    assert covered.all()
    if len(origins) > 1:  # consecutive tiles overlap by at least min_overlap
        assert all(a + tile - b >= min_overlap for a, b in itertools.pairwise(origins))


def test_origins_of_a_severstal_frame() -> None:
    """A 1600-pixel side gives 7 tiles of 256, evenly spread; 256 gives one."""
    assert tile_origins(1600, 256) == [0, 224, 448, 672, 896, 1120, 1344]
    assert tile_origins(256, 256) == [0]


def test_origins_reject_a_side_shorter_than_the_tile() -> None:
    with pytest.raises(ValueError, match="shorter than the tile"):
        tile_origins(100, 256)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=4, max_value=40).flatmap(
        lambda tile: st.tuples(
            st.just(tile),
            st.integers(min_value=tile, max_value=tile * 5),
            st.integers(min_value=tile, max_value=tile * 5),
        )
    ),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_reassembling_the_tiles_returns_the_frame(shape: tuple[int, int, int], seed: int) -> None:
    """Every pixel is in a tile, every tile inside the frame; pasting the tiles back gives the frame."""
    tile, height, width = shape
    frame = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    windows = tile_windows(height, width, tile)
    tiles = cut_tiles(frame, windows)
    assert tiles.shape == (len(windows), tile, tile)
    rebuilt = np.zeros_like(frame)
    covered = np.zeros(frame.shape, dtype=bool)
    for w, t in zip(windows, tiles, strict=True):
        assert 0 <= w.x <= width - tile and 0 <= w.y <= height - tile
        rebuilt[w.y : w.y + tile, w.x : w.x + tile] = t
        covered[w.y : w.y + tile, w.x : w.x + tile] = True
    assert covered.all()
    np.testing.assert_array_equal(rebuilt, frame)


def test_windows_run_row_by_row_left_to_right() -> None:
    windows = tile_windows(300, 600, 256)
    assert [(w.y, w.x) for w in windows] == [(0, 0), (0, 172), (0, 344), (44, 0), (44, 172), (44, 344)]


def test_pad_to_tile_pads_bottom_and_right_only_when_needed() -> None:
    image = np.arange(100 * 50, dtype=np.uint8).reshape(100, 50)
    padded = pad_to_tile(image, 64)
    assert padded.shape == (100, 64)
    np.testing.assert_array_equal(padded[:, :50], image)
    assert pad_to_tile(image, 50) is image


def test_cut_tiles_without_windows_is_an_error() -> None:
    with pytest.raises(DatasetError, match="at least one window"):
        cut_tiles(np.zeros((8, 8), np.uint8), [])


def test_tile_labels_count_mask_pixels_inside_each_tile_against_min_pixels() -> None:
    """A class is on a tile exactly when its mask covers >= min_pixels of that tile's pixels."""
    mask = np.zeros((256, 1600), dtype=bool)
    mask[10:18, 100:108] = True  # 64 px, all in tile 0
    mask[0:4, 230:245] = True  # 60 px, in tiles 0 (x < 256) and 1 (x >= 224): 60 px in both
    windows = tile_windows(256, 1600, 256)
    labels = tile_labels({"holes": mask, "rolling": np.zeros_like(mask)}, windows, min_pixels=64)
    assert labels[0] == {"holes"}  # 64 + 60 px
    assert labels[1] == set()  # 60 px < 64
    assert all(not label for label in labels[2:])
    labels = tile_labels({"holes": mask}, windows, min_pixels=60)
    assert labels[1] == {"holes"}
    labels = tile_labels({"holes": mask}, windows, min_pixels=125)
    assert labels[0] == set()


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=200))
def test_tile_labels_agree_with_a_direct_count(seed: int, min_pixels: int) -> None:
    """The summed-area count inside each window equals counting the window's pixels directly."""
    rng = np.random.default_rng(seed)
    mask = rng.random((70, 130)) < rng.uniform(0.0, 0.1)
    windows = [TileWindow(x=int(rng.integers(0, 99)), y=int(rng.integers(0, 39)), size=32) for _ in range(8)]
    labels = tile_labels({"c": mask}, windows, min_pixels)
    for w, label in zip(windows, labels, strict=True):
        count = int(mask[w.y : w.y + w.size, w.x : w.x + w.size].sum())
        assert ("c" in label) == (count >= min_pixels)


def test_tile_labels_reject_min_pixels_below_one() -> None:
    with pytest.raises(ConfigError, match="min_pixels must be >= 1, received 0"):
        tile_labels({}, [], 0)
