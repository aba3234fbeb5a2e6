"""Synthetic strips for the alert and report tests: worker results with defects where a test wants them.

A strip is inspected by one camera in frames of 256 rows × 1600 columns at 1 mm/px (the
simulator's defaults): frame k covers [0.256·k, 0.256·(k+1)) m along the strip, and has one row of
7 tiles across it (tile c at columns 224·c … 224·c + 256). A defect at `along_m` in lane `lane`
becomes a detection on the tile of the frame that holds it, at the tile's centre — as the worker
reports it. Every frame of the strip is in the results (clean ones too), as the worker writes them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.alerts.rules import StripDetection
from worker.core.catalogue import load_catalogue
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates
from worker.core.thresholds import ClassThresholds
from worker.storage.writer import StorageWriter

MODEL = "b" * 64
T0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
FRAME_M = 0.256
TILES_ACROSS = 7
TILE_STEP_PX = 224
TILE_PX = 256
LINE_SPEED_MPS = 2.0


@dataclass(frozen=True)
class Defect:
    """A defect of `class_name` at `along_m` metres, in tile column `lane` (0 … 6)."""

    along_m: float
    class_name: str = "rolling"
    confidence: float = 0.9
    lane: int = 3


def register(writer: StorageWriter) -> None:
    """Store the default catalogue and the test model (once per database)."""
    writer.ensure_catalogue(load_catalogue())
    writer.register_model(
        MODEL,
        "resnet50",
        256,
        ["holes", "scratches", "rolling"],
        ClassThresholds.from_values(("holes", "scratches", "rolling"), [0.5] * 3),
        {},
    )


def frame_index(along_m: float) -> int:
    return math.floor(along_m / FRAME_M + 1e-9)


def strip_results(
    strip_id: str,
    defects: Iterable[Defect],
    *,
    length_m: float | None = None,
    start: datetime = T0,
    surface: str = "top",
    frames: Sequence[int] | None = None,
) -> list[FrameResult]:
    """Results of every frame of a strip `length_m` long (default: to the last defect + 1 m), or
    only of the frame indices `frames`. Two defects on one tile and class keep the higher
    confidence."""
    defects = list(defects)
    last = max((d.along_m for d in defects), default=0.0)
    count = frame_index(length_m if length_m is not None else last + 1.0) + 1
    found: dict[int, dict[tuple[int, str], float]] = {}
    for d in defects:
        tiles = found.setdefault(frame_index(d.along_m), {})
        key = (d.lane, d.class_name)
        tiles[key] = max(tiles.get(key, 0.0), d.confidence)
    indices = range(count) if frames is None else frames
    return [_frame(strip_id, k, found.get(k, {}), start, surface) for k in indices]


def _frame(
    strip_id: str, k: int, tiles: dict[tuple[int, str], float], start: datetime, surface: str
) -> FrameResult:
    frame_id = f"{strip_id}-{surface}-f{k:06d}"
    position = k * FRAME_M
    meta = FrameMeta(
        frame_id=frame_id,
        line="L1",
        camera=f"cam-{surface}-1",
        surface=surface,
        strip_id=strip_id,
        captured_at=start + timedelta(seconds=position / LINE_SPEED_MPS),
        position_m=position,
        mm_per_px_along=1.0,
        mm_per_px_across=1.0,
        edge_offset_mm=0.0,
        width=1600,
        height=256,
    )
    detections = tuple(
        Detection(
            frame_id=frame_id,
            tile_index=lane,
            class_name=name,
            confidence=confidence,
            threshold=0.5,
            along_m=meta.along_m(TILE_PX / 2),
            across_mm=meta.across_mm(lane * TILE_STEP_PX + TILE_PX / 2),
            along_start_m=meta.along_m(0),
            along_end_m=meta.along_m(TILE_PX),
            x=lane * TILE_STEP_PX,
            y=0,
            size=TILE_PX,
        )
        for (lane, name), confidence in sorted(tiles.items())
    )
    return FrameResult(
        meta=meta,
        source=KafkaCoordinates("mill.frames", 0, k),
        model_version=MODEL,
        tile_count=TILES_ACROSS,
        detections=detections,
        processed_at=meta.captured_at + timedelta(milliseconds=250),
    )


def periodic_defects(
    pitch_m: float,
    marks: int,
    *,
    seed: int = 0,
    missing: Sequence[int] = (),
    jitter_m: float = 0.02,
    first_m: float = 1.0,
    class_name: str = "rolling",
    lane: int = 3,
) -> list[Defect]:
    """`marks` prints of a roll every `pitch_m` from `first_m` (revolutions in `missing` left out),
    each moved by a normal jitter of `jitter_m`; the first and last revolutions are kept."""
    rng = random.Random(seed)
    revolutions = [r for r in range(marks + len(missing)) if r not in set(missing)]
    return [
        Defect(first_m + r * pitch_m + rng.gauss(0.0, jitter_m), class_name, 0.9, lane) for r in revolutions
    ]


def scattered_defects(
    count: int, length_m: float, *, seed: int, class_name: str = "rolling", start_m: float = 1.0
) -> list[Defect]:
    """`count` defects at uniformly random positions along [start_m, start_m + length_m] and lanes."""
    rng = random.Random(seed)
    return [
        Defect(start_m + rng.uniform(0.0, length_m), class_name, 0.9, rng.randrange(TILES_ACROSS))
        for _ in range(count)
    ]


def strip_detections(results: Iterable[FrameResult]) -> list[StripDetection]:
    """The detections of `results` as the rules see them, numbered 1, 2, … in frame order."""
    out = []
    for result in results:
        for d in result.detections:
            out.append(
                StripDetection(
                    id=len(out) + 1,
                    class_name=d.class_name,
                    along_m=d.along_m,
                    confidence=d.confidence,
                    along_start_m=d.along_start_m,
                    along_end_m=d.along_end_m,
                    observed_at=result.meta.captured_at,
                    across_mm=d.across_mm,
                )
            )
    return out
