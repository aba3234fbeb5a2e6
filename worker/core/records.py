"""Frozen records passed between the pipeline's stages, in the order data flows:

    FrameMeta + image bytes --decode--> DecodedFrame --tile--> TileRef (per tile)
    --classify--> Detection (per tile and class over threshold) --collect--> FrameResult
                  TileImage (the crop of each tile with a detection, and of sampled clean tiles)

Positions on the strip: a frame's rows run along the strip (row 0 is at `position_m` metres from
the strip head), its columns across it (column 0 is `edge_offset_mm` from the strip edge). A strip
id rolled more than once has one position axis per *pass* (`pass_id`, or inferred when stored:
`worker.storage.passes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class KafkaCoordinates:
    """Where a message came from: enough to find it again and to commit past it."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class FrameMeta:
    """The `frame-meta` header of a frame message (schema `schemas/frame-meta.v1.json`)."""

    frame_id: str
    line: str
    camera: str
    surface: str  # "top" or "bottom"
    strip_id: str
    captured_at: datetime
    position_m: float  # along the strip, of the frame's first row
    mm_per_px_along: float
    mm_per_px_across: float
    edge_offset_mm: float  # of the frame's left column from the strip edge
    width: int | None = None  # required for raw 8-bit frames
    height: int | None = None
    image_uri: str | None = None  # claim check: the image is fetched from here instead
    pass_id: str | None = None  # the pass of the strip, when the camera knows it (else inferred)

    def along_m(self, row: float) -> float:
        """Position along the strip, in metres, of pixel row `row` of this frame."""
        return self.position_m + row * self.mm_per_px_along / 1000.0

    def across_mm(self, column: float) -> float:
        """Position across the strip, in millimetres from its edge, of pixel column `column`."""
        return self.edge_offset_mm + column * self.mm_per_px_across


@dataclass(frozen=True)
class DecodedFrame:
    """A validated frame: metadata, origin, the image as 8-bit grey (height, width), and the
    sha256 of the message it came from (`message_sha256`: tells a redelivery from another frame
    that reuses the frame id). `quality_flags`: the image-quality checks it failed that do not
    refuse a frame (`worker.core.quality`), in check order; () for a good frame."""

    meta: FrameMeta
    source: KafkaCoordinates
    image: np.ndarray
    message_sha256: str | None = None
    quality_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TileRef:
    """One tile of a frame: its index in the frame and its pixel window."""

    frame_id: str
    index: int
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class Detection:
    """A class found on a tile: confidence over the class's threshold, and where on the strip.

    `along_m`/`across_mm` are the tile centre's position; `along_start_m`/`along_end_m` its extent.
    `record_id` is the row id in `detections` once the ledger has stored it (None before): the id
    alerts cite as evidence and the detection message carries.
    """

    frame_id: str
    tile_index: int
    class_name: str
    confidence: float
    threshold: float
    along_m: float
    across_mm: float
    along_start_m: float
    along_end_m: float
    x: int
    y: int
    size: int
    record_id: int | None = None


@dataclass(frozen=True)
class TileImage:
    """The evidence of one tile: its crop as the model saw it (padding included, before the model's
    resizing), encoded (`content_type`, JPEG by default) at `width` × `height` pixels — the tile's
    side, or less when EVIDENCE_MAX_SIDE shrank it. `sampled`: a clean tile kept for quality
    control (no detection on it)."""

    frame_id: str
    tile_index: int
    x: int
    y: int
    size: int
    width: int
    height: int
    content_type: str
    data: bytes
    sampled: bool = False


@dataclass(frozen=True)
class FrameResult:
    """Everything the worker concluded about one frame; clean frames have no detections.
    `evidence` holds the crops the ledger stores with the frame (`TileImage`), in tile order;
    `quality_flags` the image-quality checks it failed (`DecodedFrame.quality_flags`)."""

    meta: FrameMeta
    source: KafkaCoordinates
    model_version: str
    tile_count: int
    detections: tuple[Detection, ...]
    processed_at: datetime
    message_sha256: str | None = None
    evidence: tuple[TileImage, ...] = ()
    quality_flags: tuple[str, ...] = ()
