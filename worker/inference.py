"""The one inference path: a grey image in, its tiles' scores and decisions out.

The worker (`worker.streaming.classify`), `steel-worker predict`, the benchmark, the scripts and
the demo's quality check all go through this module, so they cut, score and decide alike, to the
pixel. The steps are those of anomalib's inferencers:

    Inferencer.load_model(dir)   the model artefact (`worker.model.artefact`): network, catalogue,
                                 per-class thresholds, version
    pre_process(image)           a side shorter than a tile reflect-padded, then square tiles that
                                 cover every pixel (`worker.core.tiling`) → TiledImage
    forward(pixels)              uint8 tiles (N, T, T), of one image or of many stacked → float32
                                 scores (N, C), catalogue order (resize to the model's input, three
                                 channels, ResNet `preprocess_input`, the network: the artefact's);
                                 with test-time augmentation (`tta`: flips, or flips+rot90) the mean
                                 of the sigmoid outputs over the tiles' flipped (and rotated) views
    post_process(scores)         bool decisions (N, C): score >= the class's threshold (the
                                 convention of `worker.evaluation.metrics`; NaN is never a defect)
    predict(image)               the three in order → ImagePrediction

`tile_layout` is the tiling rule alone (the padded size and the windows), for code that needs the
tiles' places without their pixels. `warm_up` is the one warm-up: it compiles the forward pass for
the batch sizes the caller will use, so the first real batch is not slow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from worker.core.catalogue import Catalogue
from worker.core.errors import ConfigError, ModelError
from worker.core.thresholds import ClassThresholds
from worker.core.tiling import TileWindow, cut_tiles, pad_to_tile, tile_windows

#: The paper's tile side, and the default of the worker, `predict` and the benchmark.
DEFAULT_TILE = 256
#: Test-time augmentation: none; the 4 flips (identity, left-right, up-down, both); the 8 views of
#: the square's symmetry group (the flips and the 90° rotations). Surface defects have no up or down.
TTA_MODES = ("none", "flips", "flips+rot90")


def tta_views(pixels: np.ndarray, mode: str) -> list[np.ndarray]:
    """The views of tiles (N, T, T) that test-time augmentation `mode` averages over, identity first."""
    if mode not in TTA_MODES:
        raise ConfigError(
            f"test-time augmentation: expected one of {', '.join(TTA_MODES)}, received {mode!r}"
        )
    views = [pixels]
    if mode in ("flips", "flips+rot90"):
        views += [pixels[:, :, ::-1], pixels[:, ::-1, :], pixels[:, ::-1, ::-1]]
    if mode == "flips+rot90":
        turned = np.rot90(pixels, k=1, axes=(1, 2))
        views += [turned, turned[:, :, ::-1], turned[:, ::-1, :], turned[:, ::-1, ::-1]]
    return [np.ascontiguousarray(v) for v in views]


__all__ = [
    "DEFAULT_TILE",
    "TTA_MODES",
    "ImagePrediction",
    "Inferencer",
    "TileClassifier",
    "TiledImage",
    "tile_layout",
    "tta_views",
]


class TileClassifier(Protocol):
    """What inference needs of a model (`worker.model.artefact.Classifier` is one)."""

    @property
    def catalogue(self) -> Catalogue: ...

    @property
    def thresholds(self) -> ClassThresholds: ...

    @property
    def version(self) -> str: ...

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 grey tiles (N, H, W) → float32 class probabilities (N, C), catalogue order."""
        ...


@dataclass(frozen=True)
class TiledImage:
    """An image cut into tiles: `pixels[i]` lies at `windows[i]` of the padded image. `height` and
    `width` are the image's own (before padding): a tile's part inside the image ends there."""

    height: int
    width: int
    windows: tuple[TileWindow, ...]
    pixels: np.ndarray  # (n, tile, tile) uint8


@dataclass(frozen=True)
class ImagePrediction:
    """Scores (n, C) float32 and decisions (n, C) bool of the tiles of one image."""

    tiles: TiledImage
    scores: np.ndarray
    decisions: np.ndarray


def _check_tiling(tile_size: int, min_overlap: int) -> None:
    sizes_are_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (tile_size, min_overlap))
    if not sizes_are_ints or tile_size < 1 or not 0 <= min_overlap < tile_size:
        raise ConfigError(
            f"tiling: expected a tile side >= 1 and 0 <= overlap < tile side, received tile "
            f"{tile_size!r}, overlap {min_overlap!r}"
        )


def tile_layout(
    height: int, width: int, tile_size: int, min_overlap: int = 0
) -> tuple[int, int, list[TileWindow]]:
    """(padded height, padded width, windows) of a height×width image: each side shorter than a
    tile is padded up to one tile, then the windows cover every pixel, row by row."""
    _check_tiling(tile_size, min_overlap)
    padded_h, padded_w = max(height, tile_size), max(width, tile_size)
    return padded_h, padded_w, tile_windows(padded_h, padded_w, tile_size, min_overlap)


class Inferencer:
    """A model with its tiling: image → tiles → scores → decisions (see the module doc).

    `pre_process` is pure and safe to call from several threads at once; `forward` runs the
    model and belongs to one thread at a time.
    """

    def __init__(
        self,
        classifier: TileClassifier,
        tile_size: int = DEFAULT_TILE,
        min_overlap: int = 0,
        tta: str = "none",
    ) -> None:
        _check_tiling(tile_size, min_overlap)
        tta_views(np.zeros((1, 1, 1), np.uint8), tta)  # the mode is checked now, not at the first frame
        self.tta = tta
        self.classifier = classifier
        self.tile_size = tile_size
        self.min_overlap = min_overlap
        self.catalogue = classifier.catalogue
        self.version = classifier.version
        self.thresholds = classifier.thresholds
        if self.thresholds.names != self.catalogue.names:
            raise ModelError(
                f"model {classifier.version}: expected one threshold per class of "
                f"{list(self.catalogue.names)}, received thresholds of {list(self.thresholds.names)}"
            )

    @classmethod
    def load_model(
        cls,
        model_dir: str | Path,
        *,
        tile_size: int = DEFAULT_TILE,
        min_overlap: int = 0,
        batch_size: int | None = None,
        tta: str = "none",
        runtime: str = "tensorflow",
    ) -> Inferencer:
        """The artefact in `model_dir` (ModelError when missing, corrupt or changed), with this tiling;
        `batch_size`: tiles per forward pass of the network (default: the artefact's); `tta`: one
        of TTA_MODES; `runtime`: one of `worker.model.runtimes.RUNTIMES` (the forward pass's)."""
        from worker.model.artefact import DEFAULT_PREDICT_BATCH  # noqa: PLC0415  (Keras)
        from worker.model.runtimes import load_runtime_classifier  # noqa: PLC0415

        classifier = load_runtime_classifier(
            model_dir, runtime, batch_size=batch_size or DEFAULT_PREDICT_BATCH
        )
        return cls(classifier, tile_size, min_overlap, tta)

    def pre_process(self, image: np.ndarray) -> TiledImage:
        """The tiles of a grey (H, W) uint8 image; a side shorter than a tile is reflect-padded."""
        if image.ndim != 2 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ConfigError(
                f"pre_process: expected a grey image (height, width), received shape {image.shape}"
            )
        height, width = image.shape
        padded_h, padded_w, windows = tile_layout(height, width, self.tile_size, self.min_overlap)
        padded = pad_to_tile(image, self.tile_size)
        assert padded.shape == (padded_h, padded_w)  # the layout and the padding follow one rule
        return TiledImage(
            height=height, width=width, windows=tuple(windows), pixels=cut_tiles(padded, windows)
        )

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """Scores (N, C) float32 for uint8 tiles (N, T, T); ModelError when the model answers in
        another shape."""
        total = int(pixels.shape[0])
        # every view in one call: with test-time augmentation the network sees bigger batches
        views = [pixels] if self.tta == "none" else tta_views(np.asarray(pixels), self.tta)
        batch = views[0] if len(views) == 1 else np.concatenate(views)
        answered = np.asarray(self.classifier.predict(batch))
        if answered.shape != (len(views) * total, len(self.catalogue)):
            raise ModelError(
                f"model {self.version}: predict returned shape {answered.shape} for {len(views) * total}"
                f" tiles, expected ({len(views) * total}, {len(self.catalogue)})"
            )
        return answered if len(views) == 1 else answered.reshape(len(views), total, -1).mean(axis=0)

    def post_process(self, scores: np.ndarray) -> np.ndarray:
        """bool (N, C): a class is found on a tile when its score is >= the class's threshold."""
        return self.thresholds.decide(scores)

    def predict(self, image: np.ndarray) -> ImagePrediction:
        """pre_process → forward → post_process for one image."""
        tiles = self.pre_process(image)
        scores = self.forward(tiles.pixels)
        return ImagePrediction(tiles=tiles, scores=scores, decisions=self.post_process(scores))

    def warm_up(self, batch_tiles: int) -> float:
        """Run blank tiles through the model, a batch of `batch_tiles` and one of a single tile;
        returns the seconds it took. The first forward pass builds the backend's compiled
        function, which can take seconds; TensorFlow traces again for each new batch size until
        it has seen two, then keeps one function for every size, so without the second size the
        first batch of another size would pay a second trace as long as the first."""
        started = time.monotonic()
        for n in dict.fromkeys((max(1, batch_tiles), 1)):
            self.forward(np.zeros((n, self.tile_size, self.tile_size), dtype=np.uint8))
        return time.monotonic() - started

    def __repr__(self) -> str:
        return f"Inferencer({self.classifier!r}, tile {self.tile_size}, overlap {self.min_overlap})"
