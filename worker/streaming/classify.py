"""Tile decoded frames, classify the tiles of many frames in one forward pass, and turn the scores
into detections placed on the strip.

Steps, each a function: `tile_frame` (every pixel in some tile, windows from `worker.tiling`) →
`FrameClassifier.classify` (tiles of all frames of a micro-batch stacked, one `predict` call, scores
split back per frame) → `detections_for` (per-class thresholds: a class is found on a tile when its
score is >= the class's threshold, the convention of `worker.evaluation.metrics`) → FrameResult.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from worker.catalogue import Catalogue
from worker.errors import ModelError
from worker.streaming.records import DecodedFrame, Detection, FrameResult, TileRef
from worker.tiling import cut_tiles, pad_to_tile, tile_windows


class TileClassifier(Protocol):
    """What the worker needs of a model artefact (`worker.model.artefact.load_classifier`)."""

    @property
    def catalogue(self) -> Catalogue: ...

    @property
    def thresholds(self) -> np.ndarray: ...

    @property
    def version(self) -> str: ...

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 grey tiles (N, H, W) → float32 class probabilities (N, C), catalogue order."""
        ...


@dataclass(frozen=True)
class TiledFrame:
    """A decoded frame cut into tiles: `pixels[i]` is the tile described by `tiles[i]`."""

    frame: DecodedFrame
    tiles: tuple[TileRef, ...]
    pixels: np.ndarray  # (n, size, size) uint8


def tile_frame(frame: DecodedFrame, tile_size: int, min_overlap: int = 0) -> TiledFrame:
    """Cut `frame` into square tiles covering every pixel; frames smaller than a tile are padded."""
    image = pad_to_tile(frame.image, tile_size)
    windows = tile_windows(image.shape[0], image.shape[1], tile_size, min_overlap)
    tiles = tuple(
        TileRef(frame_id=frame.meta.frame_id, index=i, x=w.x, y=w.y, size=w.size)
        for i, w in enumerate(windows)
    )
    return TiledFrame(frame=frame, tiles=tiles, pixels=cut_tiles(image, windows))


def detections_for(
    tiled: TiledFrame, scores: np.ndarray, catalogue: Catalogue, thresholds: np.ndarray
) -> tuple[Detection, ...]:
    """Detections of one frame from its tiles' scores (n, C): one per tile and class at or over
    the class threshold, tile by tile, classes in catalogue order. Positions are those of the part
    of the tile inside the frame (padding excluded)."""
    meta = tiled.frame.meta
    height, width = tiled.frame.image.shape
    found = []
    for tile, tile_scores in zip(tiled.tiles, scores, strict=True):
        bottom, right = min(tile.y + tile.size, height), min(tile.x + tile.size, width)
        for c, defect in enumerate(catalogue.classes):
            confidence = float(tile_scores[c])
            if not confidence >= thresholds[c]:  # NaN is never a detection
                continue
            found.append(
                Detection(
                    frame_id=tile.frame_id,
                    tile_index=tile.index,
                    class_name=defect.name,
                    confidence=confidence,
                    threshold=float(thresholds[c]),
                    along_m=meta.along_m((tile.y + bottom) / 2),
                    across_mm=meta.across_mm((tile.x + right) / 2),
                    along_start_m=meta.along_m(tile.y),
                    along_end_m=meta.along_m(bottom),
                    x=tile.x,
                    y=tile.y,
                    size=tile.size,
                )
            )
    return tuple(found)


class FrameClassifier:
    """Runs a TileClassifier over the tiles of several frames at once."""

    def __init__(self, classifier: TileClassifier) -> None:
        self.classifier = classifier
        self.catalogue = classifier.catalogue
        self.thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
        if self.thresholds.shape != (len(self.catalogue),):
            raise ModelError(
                f"model {classifier.version}: expected one threshold per class ({len(self.catalogue)}), "
                f"received shape {self.thresholds.shape}"
            )

    def classify(self, frames: Sequence[TiledFrame], processed_at: datetime) -> list[FrameResult]:
        """One FrameResult per frame, in order; one `predict` call for all their tiles."""
        if not frames:
            return []
        scores = np.asarray(self.classifier.predict(np.concatenate([f.pixels for f in frames])))
        total = sum(len(f.tiles) for f in frames)
        if scores.shape != (total, len(self.catalogue)):
            raise ModelError(
                f"model {self.classifier.version}: predict returned shape {scores.shape} for {total} "
                f"tiles, expected ({total}, {len(self.catalogue)})"
            )
        results = []
        start = 0
        for tiled in frames:
            end = start + len(tiled.tiles)
            results.append(
                FrameResult(
                    meta=tiled.frame.meta,
                    source=tiled.frame.source,
                    model_version=self.classifier.version,
                    tile_count=len(tiled.tiles),
                    detections=detections_for(tiled, scores[start:end], self.catalogue, self.thresholds),
                    processed_at=processed_at,
                    message_sha256=tiled.frame.message_sha256,
                )
            )
            start = end
        return results
