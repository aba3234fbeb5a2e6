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
from dataclasses import dataclass, replace
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
    tag: str = "",
    pass_id: str | None = None,
) -> list[FrameResult]:
    """Results of every frame of a strip `length_m` long (default: to the last defect + 1 m), or
    only of the frame indices `frames`. Two defects on one tile and class keep the higher
    confidence. `tag` goes into the frame ids (another pass of the strip needs other ids);
    `pass_id` into frame-meta (None: the worker infers the pass)."""
    defects = list(defects)
    last = max((d.along_m for d in defects), default=0.0)
    count = frame_index(length_m if length_m is not None else last + 1.0) + 1
    found: dict[int, dict[tuple[int, str], float]] = {}
    for d in defects:
        tiles = found.setdefault(frame_index(d.along_m), {})
        key = (d.lane, d.class_name)
        tiles[key] = max(tiles.get(key, 0.0), d.confidence)
    indices = range(count) if frames is None else frames
    return [_frame(strip_id, k, found.get(k, {}), start, surface, tag, pass_id) for k in indices]


def _frame(  # noqa: PLR0917
    strip_id: str,
    k: int,
    tiles: dict[tuple[int, str], float],
    start: datetime,
    surface: str,
    tag: str = "",
    pass_id: str | None = None,
) -> FrameResult:
    frame_id = f"{strip_id}{tag}-{surface}-f{k:06d}"
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
        pass_id=pass_id,
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


def moved(result: FrameResult, position_m: float, frame_id: str) -> FrameResult:
    """`result` as a frame `frame_id` whose position reads `position_m` (a wrong number: the
    detections move with it, as the worker computes them from the frame's position)."""
    shift = position_m - result.meta.position_m
    detections = tuple(
        replace(
            d,
            frame_id=frame_id,
            along_m=d.along_m + shift,
            along_start_m=d.along_start_m + shift,
            along_end_m=d.along_end_m + shift,
        )
        for d in result.detections
    )
    meta = replace(result.meta, frame_id=frame_id, position_m=position_m)
    return replace(result, meta=meta, detections=detections)


def cluster(class_name: str, first_m: float, count: int, confidence: float = 0.9) -> list[Defect]:
    """`count` defects of `class_name` a frame apart from `first_m`, in lanes 0, 1, … (a density
    pattern: `count` detections within (count − 1) × 0.256 m)."""
    return [
        Defect(first_m + n * FRAME_M, class_name, confidence, lane=n % TILES_ACROSS) for n in range(count)
    ]


def batches(results: Sequence[FrameResult], size: int) -> list[list[FrameResult]]:
    """`results` cut into batches of `size` frames, in order (as the worker writes them)."""
    return [list(results[i : i + size]) for i in range(0, len(results), size)]


#: Pitch of the default rules file's "F7 top work roll" (diameter 0.64 m).
WORK_ROLL_PITCH_M = math.pi * 0.64


def busy_defects(seed: int = 3) -> list[Defect]:
    """A 200 m strip that raises 15 alerts under the default rules file, 5 of them in its first
    15 m: a roll mark of the F7 work roll (8 prints from 0.6 m, lane 6), a holes, a scratches and a
    rolling cluster and a severe rolling detection; further on, holes clusters every 25 m from 40 m,
    scratches clusters at 52, 102 and 152 m, and another roll mark from 120 m (12 prints, lane 6;
    more than the roll-marks cooldown of 100 m after the first)."""
    defects = periodic_defects(WORK_ROLL_PITCH_M, 8, seed=seed, first_m=0.6, lane=6)
    defects += cluster("holes", 3.0, 6) + cluster("scratches", 8.0, 6) + cluster("rolling", 11.5, 5)
    defects.append(Defect(6.1, "rolling", 0.99, lane=5))
    for first_m in (40.0, 65.0, 90.0, 115.0, 140.0, 165.0):
        defects += cluster("holes", first_m, 6)
    for first_m in (52.0, 102.0, 152.0):
        defects += cluster("scratches", first_m, 6)
    defects += periodic_defects(WORK_ROLL_PITCH_M, 12, seed=seed + 1, first_m=120.0, lane=6)
    return defects
