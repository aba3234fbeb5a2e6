"""Classify decoded frames: their tiles through the one inference path (`worker.inference`), the
tiles of a micro-batch's frames in one forward pass, and the decisions turned into detections placed
on the strip.

Steps: `tile_frame` (`Inferencer.pre_process`: every pixel in some tile) → `FrameClassifier.classify`
(tiles of all frames of a micro-batch stacked, one `Inferencer.forward`, scores split back per
frame, `Inferencer.post_process`) → `detections_for` (one Detection per tile and class decided) →
the evidence crops of the tiles with a detection (`worker.core.evidence`, when a policy is given)
→ FrameResult.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from worker.core.catalogue import Catalogue
from worker.core.evidence import EvidencePolicy
from worker.core.records import DecodedFrame, Detection, FrameResult, TileRef
from worker.core.thresholds import ClassThresholds
from worker.inference import Inferencer


@dataclass(frozen=True)
class TiledFrame:
    """A decoded frame cut into tiles: `pixels[i]` is the tile described by `tiles[i]`."""

    frame: DecodedFrame
    tiles: tuple[TileRef, ...]
    pixels: np.ndarray  # (n, size, size) uint8


def tile_frame(frame: DecodedFrame, inferencer: Inferencer) -> TiledFrame:
    """Cut `frame` into square tiles covering every pixel (`Inferencer.pre_process`)."""
    tiled = inferencer.pre_process(frame.image)
    tiles = tuple(
        TileRef(frame_id=frame.meta.frame_id, index=i, x=w.x, y=w.y, size=w.size)
        for i, w in enumerate(tiled.windows)
    )
    return TiledFrame(frame=frame, tiles=tiles, pixels=tiled.pixels)


def detections_for(
    tiled: TiledFrame,
    scores: np.ndarray,
    decisions: np.ndarray,
    catalogue: Catalogue,
    thresholds: ClassThresholds,
) -> tuple[Detection, ...]:
    """Detections of one frame from its tiles' scores and decisions (n, C): one per tile and class
    decided, tile by tile, classes in catalogue order. Positions are those of the part of the tile
    inside the frame (padding excluded)."""
    meta = tiled.frame.meta
    height, width = tiled.frame.image.shape
    found = []
    for tile, tile_scores, tile_decisions in zip(tiled.tiles, scores, decisions, strict=True):
        bottom, right = min(tile.y + tile.size, height), min(tile.x + tile.size, width)
        for c, defect in enumerate(catalogue.classes):
            if not tile_decisions[c]:
                continue
            found.append(
                Detection(
                    frame_id=tile.frame_id,
                    tile_index=tile.index,
                    class_name=defect.name,
                    confidence=float(tile_scores[c]),
                    threshold=thresholds.values[c],
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
    """Runs an Inferencer over the tiles of several frames at once; with an `evidence` policy, each
    result carries the crops of its tiles with a detection (and of the sampled clean ones)."""

    def __init__(self, inferencer: Inferencer, evidence: EvidencePolicy | None = None) -> None:
        self.inferencer = inferencer
        self.evidence = evidence
        self.catalogue = inferencer.catalogue
        self.thresholds = inferencer.thresholds

    def classify(self, frames: Sequence[TiledFrame], processed_at: datetime) -> list[FrameResult]:
        """One FrameResult per frame, in order; one forward pass for all their tiles."""
        if not frames:
            return []
        scores = self.inferencer.forward(np.concatenate([f.pixels for f in frames]))
        decisions = self.inferencer.post_process(scores)
        results = []
        start = 0
        for tiled in frames:
            end = start + len(tiled.tiles)
            detections = detections_for(
                tiled, scores[start:end], decisions[start:end], self.catalogue, self.thresholds
            )
            evidence = (
                self.evidence.crops(tiled.tiles, tiled.pixels, (d.tile_index for d in detections))
                if self.evidence is not None
                else ()
            )
            results.append(
                FrameResult(
                    meta=tiled.frame.meta,
                    source=tiled.frame.source,
                    model_version=self.inferencer.version,
                    tile_count=len(tiled.tiles),
                    detections=detections,
                    processed_at=processed_at,
                    message_sha256=tiled.frame.message_sha256,
                    evidence=evidence,
                    quality_flags=tiled.frame.quality_flags,
                )
            )
            start = end
        return results
