"""The training feeder: batches, determinism, augmentation, over-sampling and class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_tiles import write_shape_tileset

from worker.core.tileset import read_tile, read_tileset
from worker.model.feeding import (
    Augmentation,
    TileFeeder,
    augment,
    class_sample_weights,
    group_counts,
    oversampling_repeats,
)
from worker.model.preprocessing import preprocess_tiles


@pytest.fixture(scope="module")
def tileset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 classes × 4 tiles, 2 holes+scratches tiles, 10 clean tiles: 24 tiles of 40×40 pixels
    return write_shape_tileset(tmp_path_factory.mktemp("tiles"), per_class=4, clean=10, pairs=2, size=40)


def test_batches_have_the_model_input_shape_and_labels(tileset_dir: Path) -> None:
    """x float32 (b, S, S, 3) pre-processed exactly like inference; y the tiles' 0/1 labels."""
    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=5)
    assert len(feeder) == 5  # 24 tiles → 4 full batches and one of 4
    x, y = feeder[0]
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32
    raw = np.stack([read_tile(tiles.path(i)) for i in range(5)])
    np.testing.assert_array_equal(x, preprocess_tiles(raw, 32))
    np.testing.assert_array_equal(y, tiles.labels[:5])
    assert feeder[4][0].shape[0] == 4


def test_unshuffled_feeder_gives_every_tile_once_in_order(tileset_dir: Path) -> None:
    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=7)
    order = np.concatenate([feeder.batch_indices(i) for i in range(len(feeder))])
    np.testing.assert_array_equal(order, np.arange(len(tiles)))


def test_shuffled_stream_is_deterministic_and_covers_each_pass(tileset_dir: Path) -> None:
    """Same seed and epoch → same batches (whatever worker made them); one pass = a permutation;
    the next epoch continues with a different order."""
    tiles = read_tileset(tileset_dir)
    a = TileFeeder(tiles, input_size=32, batch_size=6, shuffle=True, seed=5)
    b = TileFeeder(tiles, input_size=32, batch_size=6, shuffle=True, seed=5)
    epoch0 = np.concatenate([a.batch_indices(i) for i in range(len(a))])
    assert sorted(epoch0.tolist()) == list(range(len(tiles)))
    assert epoch0.tolist() != list(range(len(tiles)))
    np.testing.assert_array_equal(a[2][0], b[2][0])
    a.on_epoch_end()
    epoch1 = np.concatenate([a.batch_indices(i) for i in range(len(a))])
    assert sorted(epoch1.tolist()) == list(range(len(tiles))) and epoch1.tolist() != epoch0.tolist()
    resumed = TileFeeder(tiles, input_size=32, batch_size=6, shuffle=True, seed=5, start_epoch=1)
    np.testing.assert_array_equal(resumed.batch_indices(3), a.batch_indices(3))


def test_steps_shorter_than_a_pass_move_on_through_the_data(tileset_dir: Path) -> None:
    """With steps=2 of 5 tiles, three epochs see 30 stream positions: all 24 tiles, then a new pass."""
    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=5, shuffle=True, steps=2)
    seen = []
    for _ in range(3):
        seen += [feeder.batch_indices(i) for i in range(len(feeder))]
        feeder.on_epoch_end()
    stream = np.concatenate(seen)
    assert len(stream) == 30 and all(len(b) == 5 for b in seen)
    assert sorted(stream[:24].tolist()) == list(range(24))


def test_augmentation_only_flips_and_rotates() -> None:
    """Augmented tiles are one of the 8 flips/rotations of the original (labels stay true)."""
    tile = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    variants = {np.rot90(t, k).tobytes() for t in (tile, tile[:, ::-1]) for k in range(4)}
    rng = np.random.default_rng(0)
    outcomes = {augment(tile, Augmentation(0.5, 0.5, 0.5), rng).tobytes() for _ in range(200)}
    assert outcomes <= variants and len(outcomes) == 8
    assert augment(tile, Augmentation(0, 0, 0), rng).tobytes() == tile.tobytes()
    with pytest.raises(ValueError, match="hflip"):
        Augmentation(hflip=1.5)


def test_validation_augmentation_changes_between_epochs(tileset_dir: Path) -> None:
    """Random augmentation on an unshuffled (validation) feeder: same tiles, new draws each epoch."""
    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=24, augmentation=Augmentation())
    first = feeder[0]
    feeder.on_epoch_end()
    second = feeder[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], second[0])


def test_oversampling_lifts_rare_groups_towards_the_largest() -> None:
    """Groups: 2 holes, 4 scratches, 0 rolling, 14 clean → holes ×7, scratches ×3.5, clean ×1."""
    labels = np.zeros((20, 3), dtype=np.uint8)
    labels[:2, 0] = 1
    labels[2:6, 1] = 1
    assert group_counts(labels).tolist() == [2, 4, 0, 14]
    repeats = oversampling_repeats(labels)
    np.testing.assert_allclose(repeats[:2], 7.0)
    np.testing.assert_allclose(repeats[2:6], 3.5)
    np.testing.assert_allclose(repeats[6:], 1.0)


def test_oversampling_feeder_repeats_rare_tiles(tileset_dir: Path) -> None:
    """One pass of an over-sampling feeder holds more copies of defect tiles than clean ones."""
    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=4, shuffle=True, oversample=True)
    order = np.concatenate([feeder.batch_indices(i) for i in range(len(feeder))])
    counts = np.bincount(order, minlength=len(tiles))
    clean = tiles.labels.sum(axis=1) == 0
    assert counts[clean].max() == 1 and counts[~clean].min() >= 2


def test_class_weights_balance_groups_and_average_one() -> None:
    """A tile's weight is its rarest group's balanced weight, scaled to mean 1: 2 holes, 18 clean →
    holes 18/2 = 9 times the weight of a clean tile."""
    labels = np.zeros((20, 3), dtype=np.uint8)
    labels[:2, 0] = 1
    w = class_sample_weights(labels)
    assert w.mean() == pytest.approx(1.0)
    assert w[0] / w[5] == pytest.approx(9.0)


def test_class_weight_feeder_yields_sample_weights(tileset_dir: Path) -> None:
    tiles = read_tileset(tileset_dir)
    batch = TileFeeder(tiles, input_size=32, batch_size=8, class_weights=True)[0]
    assert len(batch) == 3 and batch[2].shape == (8,)


def test_feeder_keeps_keras_parallel_loading_working(tileset_dir: Path) -> None:
    """With 2 worker threads Keras' PyDataset machinery delivers the same batches as direct reads."""
    import keras  # noqa: PLC0415

    tiles = read_tileset(tileset_dir)
    feeder = TileFeeder(tiles, input_size=32, batch_size=6, workers=2)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D()])
    out = model.predict(feeder, verbose=0)
    direct = np.concatenate([feeder[i][0].mean(axis=(1, 2)) for i in range(len(feeder))])
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-3)


def test_random_crop_takes_a_square_of_the_asked_scale_from_inside_the_tile() -> None:
    """Every crop is a square window of the tile whose side is min_scale…1 × the shorter side."""
    from worker.model.feeding import random_crop  # noqa: PLC0415

    tile = np.arange(40 * 60, dtype=np.int32).reshape(40, 60)  # every pixel unique: find the window
    rng = np.random.default_rng(3)
    sides = set()
    for _ in range(200):
        crop = random_crop(tile, 0.5, rng)
        side = crop.shape[0]
        assert crop.shape == (side, side) and 20 <= side <= 40
        y, x = divmod(int(crop[0, 0]), 60)
        np.testing.assert_array_equal(crop, tile[y : y + side, x : x + side])
        sides.add(side)
    assert len(sides) > 10  # the scale varies
    assert random_crop(tile, 1.0, rng).shape == (40, 40)


def test_intensity_jitter_changes_grey_levels_within_its_bounds_and_saturates() -> None:
    tile = np.full((16, 16), 128, dtype=np.uint8)
    rng = np.random.default_rng(0)
    values = {int(augment(tile, Augmentation(0, 0, 0, intensity=0.2), rng)[0, 0]) for _ in range(200)}
    # gain 0.8…1.2 on 128 plus an offset of ±12.8: 89.6…166.4
    assert min(values) >= 89 and max(values) <= 167 and len(values) > 30
    bright = np.full((4, 4), 250, dtype=np.uint8)
    out = augment(bright, Augmentation(0, 0, 0, intensity=0.5), np.random.default_rng(1))
    assert out.dtype == np.uint8  # saturated, never wrapped around
    with pytest.raises(ValueError, match="intensity"):
        Augmentation(intensity=0.9)
    with pytest.raises(ValueError, match="crop_min_scale"):
        Augmentation(crop_min_scale=0.0)


def test_feeder_crops_before_resizing_and_keeps_labels(tileset_dir: Path) -> None:
    """With crops on, batches keep the input shape and the tiles' labels; pixels differ from a plain pass."""
    tiles = read_tileset(tileset_dir)
    plain = TileFeeder(tiles, input_size=32, batch_size=6)
    cropped = TileFeeder(
        tiles, input_size=32, batch_size=6, augmentation=Augmentation(0, 0, 0, crop_min_scale=0.5)
    )
    (x0, y0), (x1, y1) = plain[0], cropped[0]
    assert x1.shape == x0.shape
    np.testing.assert_array_equal(y0, y1)
    assert not np.array_equal(x0, x1)
