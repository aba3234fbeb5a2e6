"""Feeding tiles to Keras: a `keras.utils.PyDataset` that reads tiles with OpenCV, augments them,
and pre-processes them with the one shared `preprocess_tiles`.

The batch a feeder returns depends only on (seed, epoch, batch index), never on which worker thread
made it or in what order, so a run is reproducible and `--resume` continues the same sequence.
A feeder's length is one Keras epoch: `steps` batches when given, else one pass over its tiles.
Shuffled feeders draw batches from an endless stream of permutations (so an epoch shorter than a
pass moves on through the data); unshuffled ones (validation) give the same batches every epoch.

Imbalance options (training only): minority over-sampling repeats tiles of rare groups, and class
weights give each tile a per-sample weight; both use the same groups: each class, and "clean" for
tiles with no label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from worker.core.errors import DatasetError
from worker.core.tileset import TileSet, read_tile
from worker.model.preprocessing import preprocess_tiles, resize_tile

DEFAULT_BATCH_SIZE = 20
MAX_REPEAT = 10.0  # over-sampling repeats a tile at most this many times per pass


@dataclass(frozen=True)
class Augmentation:
    """Random, label-preserving transforms, each drawn independently per tile.

    Flips and turns (probabilities) keep every pixel. `crop_min_scale` < 1 takes a random square
    of side `crop_min_scale`…1 × the tile's side before the resize (scale and position jitter; on
    tiles that are one texture throughout, like NEU-DET's, the label stays true; on tiles cut from
    frames a small defect can be cut away, so it is off by default). `intensity` > 0 multiplies
    grey levels by a gain in 1 ± intensity and adds an offset in ± intensity × 64 (lighting drift
    between cameras and coils).
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5  # then one of 90°, 180°, 270°, equally likely
    crop_min_scale: float = 1.0
    intensity: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "rot90"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augmentation {name}: expected a probability in [0, 1], received {p}")
        if not 0.1 <= self.crop_min_scale <= 1.0:
            raise ValueError(
                "augmentation crop_min_scale: expected a fraction in [0.1, 1], received "
                f"{self.crop_min_scale}"
            )
        if not 0.0 <= self.intensity <= 0.5:
            raise ValueError(f"augmentation intensity: expected 0 to 0.5, received {self.intensity}")

    @property
    def active(self) -> bool:
        turns = self.hflip > 0 or self.vflip > 0 or self.rot90 > 0
        return turns or self.crop_min_scale < 1 or self.intensity > 0


_ROTATIONS = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)


def random_crop(tile: np.ndarray, min_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random square of side min_scale…1 × the tile's shorter side, anywhere in the tile."""
    height, width = tile.shape[:2]
    side = max(1, round(min(height, width) * rng.uniform(min_scale, 1.0)))
    y = int(rng.integers(height - side + 1))
    x = int(rng.integers(width - side + 1))
    return tile[y : y + side, x : x + side]


def augment(tile: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Randomly flip, turn and re-light one square tile with OpenCV; labels stay valid."""
    draws = rng.random(3)
    if draws[0] < augmentation.hflip:
        tile = cv2.flip(tile, 1)
    if draws[1] < augmentation.vflip:
        tile = cv2.flip(tile, 0)
    if draws[2] < augmentation.rot90:
        tile = cv2.rotate(tile, _ROTATIONS[int(rng.integers(3))])
    if augmentation.intensity > 0:
        gain = 1.0 + rng.uniform(-augmentation.intensity, augmentation.intensity)
        offset = rng.uniform(-augmentation.intensity, augmentation.intensity) * 64.0
        tile = cv2.convertScaleAbs(tile, alpha=gain, beta=offset)  # saturates to 0…255
    return tile


def group_counts(labels: np.ndarray) -> np.ndarray:
    """Tiles per group: one count per class, then the count of clean tiles (no label)."""
    labels = np.asarray(labels)
    clean = int((labels.sum(axis=1) == 0).sum())
    return np.append(labels.sum(axis=0), clean).astype(np.int64)


def _group_membership(labels: np.ndarray) -> np.ndarray:
    """(n, n_classes + 1) bool: the tile's classes, or the clean group."""
    labels = np.asarray(labels).astype(bool)
    return np.concatenate([labels, ~labels.any(axis=1, keepdims=True)], axis=1)


def class_sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-tile weights that balance the groups: a group's weight is n / (n_groups · n_group)
    (scikit-learn's "balanced"), a tile takes its rarest group's weight, and the weights are scaled
    to mean 1 over the tiles (so the loss keeps its scale)."""
    counts = group_counts(labels)
    present = counts > 0
    weight = np.zeros(len(counts))
    weight[present] = len(labels) / (present.sum() * counts[present])
    member = _group_membership(labels)
    per_tile = np.where(member, weight[None, :], 0.0).max(axis=1)
    return (per_tile / per_tile.mean()).astype(np.float32)


def oversampling_repeats(labels: np.ndarray) -> np.ndarray:
    """Copies of each tile per pass (the feeder rounds them) so that each group approaches the
    largest group: largest / (count of the tile's rarest group), at least 1, at most MAX_REPEAT."""
    counts = group_counts(labels).astype(float)
    member = _group_membership(labels)
    rarest = np.where(member, counts[None, :], np.inf).min(axis=1)
    return np.clip(counts.max() / rarest, 1.0, MAX_REPEAT)


class TileFeeder(keras.utils.PyDataset):
    """Batches (x, y) or (x, y, sample_weight) of pre-processed tiles for `model.fit`.

    x: float32 (b, input_size, input_size, 3); y: float32 (b, n_classes) 0/1 in catalogue order;
    sample_weight: float32 (b,), only when `class_weights` is on. Every batch is full except,
    for an unshuffled feeder without `steps`, the last one of the pass. Tiles of any size are
    cropped (when asked), resized to `input_size`, then flipped, turned and re-lit.
    Augmentation draws differ from epoch to epoch, also on an unshuffled (validation) feeder.
    """

    def __init__(
        self,
        tileset: TileSet,
        input_size: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        shuffle: bool = False,
        augmentation: Augmentation | None = None,
        oversample: bool = False,
        class_weights: bool = False,
        steps: int | None = None,
        seed: int = 0,
        start_epoch: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ) -> None:
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        if len(tileset) == 0:
            raise DatasetError(f"tile set {tileset.root}: no tiles to feed")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected at least 1, received {batch_size}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps: expected at least 1 batch, received {steps}")
        self.tileset = tileset
        self.input_size = input_size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.seed = seed
        self.epoch = start_epoch
        self._paths = [str(tileset.path(i)) for i in range(len(tileset))]
        self._labels = tileset.labels.astype(np.float32)
        self._weights = class_sample_weights(tileset.labels) if class_weights else None
        copies = np.rint(oversampling_repeats(tileset.labels)).astype(int) if oversample else 1
        self._base_order = np.repeat(np.arange(len(tileset)), copies)
        self._steps = steps if steps is not None else math.ceil(self._base_order.size / batch_size)
        self._wrap = shuffle or steps is not None

    def __len__(self) -> int:
        return self._steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def _order_for_pass(self, pass_no: int) -> np.ndarray:
        """Tile indices of one pass over the data: over-sampled copies, shuffled when asked."""
        order = self._base_order
        if not self.shuffle:
            return order
        return np.random.default_rng([self.seed, 1, pass_no]).permutation(order)

    def batch_indices(self, index: int) -> np.ndarray:
        """Tile indices of batch `index` of the current epoch (deterministic, thread-safe)."""
        if not 0 <= index < self._steps:
            raise IndexError(f"batch index {index} out of range [0, {self._steps})")
        pass_length = self._base_order.size
        if not self._wrap:
            start = index * self.batch_size
            return self._base_order[start : start + self.batch_size]
        start = ((self.epoch * self._steps if self.shuffle else 0) + index) * self.batch_size
        stop = start + self.batch_size
        pieces = []
        for pass_no in range(start // pass_length, (stop - 1) // pass_length + 1):
            lo = max(start - pass_no * pass_length, 0)
            hi = min(stop - pass_no * pass_length, pass_length)
            pieces.append(self._order_for_pass(pass_no)[lo:hi])
        return np.concatenate(pieces)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        indices = self.batch_indices(index)
        rng = np.random.default_rng([self.seed, 2, self.epoch, index])
        tiles = []
        for i in indices:
            tile = read_tile(self._paths[i])
            if self.augmentation is not None and self.augmentation.crop_min_scale < 1:
                tile = random_crop(tile, self.augmentation.crop_min_scale, rng)
            tile = resize_tile(tile, self.input_size)
            if self.augmentation is not None:
                tile = augment(tile, self.augmentation, rng)
            tiles.append(tile)
        x = preprocess_tiles(np.stack(tiles), self.input_size)
        y = self._labels[indices]
        if self._weights is not None:
            return x, y, self._weights[indices]
        return x, y
