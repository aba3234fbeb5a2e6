"""Making a plan's frames: metadata, image and ground truth, in the order they are sent.

Frame k of a strip starts where frame k - 1 ended (synthetic frames: `position_m = k × height ×
mm_per_px_along / 1000`) and was captured at `strip start + position / line speed`, whatever the
pacing. Frame ids are `<strip id>-f<6-digit index>`, so a strip id names its frames. Strips pass one
after another, `strip_gap_s` apart, or side by side (`interleave`).

Images are synthetic (`SyntheticFrameGenerator`, seeded from the plan, random defects at
`defect_rate`) or the images of a folder (sorted by name, cycled; a missing or empty folder is a
DatasetError when the `FrameMaker` is made). Each roll mark is printed at every `phase + k × pitch`
metres of every strip (the phase drawn per strip and mark, from the seed) through
`SyntheticFrameGenerator.render`, and reported as an `InjectedMark`. Nothing here talks to the broker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from worker.camera.plan import ENCODINGS, DefectCluster, RollMark, SimulationPlan, frames_to_cover
from worker.core.errors import ConfigError, DatasetError
from worker.core.records import FrameMeta
from worker.datasets.labelled import list_images, read_grey
from worker.datasets.synthetic import (
    DEFAULT_CLASS_WEIGHTS,
    SYNTHETIC_CLASSES,
    DefectPlacement,
    SyntheticFrameGenerator,
)

__all__ = ["FrameMaker", "InjectedMark", "SimulatedFrame", "encode_image"]

_REFERENCE_AREA = 256 * 1600  # the generator's defect_rate is a mean per 256×1600 frame


# --- what a frame carries -----------------------------------------------------------------------


@dataclass(frozen=True)
class InjectedMark:
    """One print of a roll mark: where on the strip, and where in which frame (centre pixel)."""

    strip_id: str
    class_name: str
    pitch_m: float
    position_m: float
    across_mm: float
    frame_id: str
    row: int
    column: int


@dataclass(frozen=True)
class SimulatedFrame:
    """A frame as it was sent (for callers that want the ground truth, e.g. the demo's scoring).

    `masks` and `defects` (random and roll marks) are those of the generator; None/() for folder images.
    """

    meta: FrameMeta
    content_type: str
    image: np.ndarray
    defects: tuple[DefectPlacement, ...]
    masks: dict[str, np.ndarray] | None


# --- images -------------------------------------------------------------------------------------


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 95) -> bytes:
    """An 8-bit grey image as PNG, JPEG (at `jpeg_quality`) or raw rows (`raw`)."""
    if encoding == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding == "png":
        ok, buffer = cv2.imencode(".png", image)
    elif encoding == "jpeg":
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ConfigError(f"encoding: expected one of {list(ENCODINGS)}, received {encoding!r}")
    if not ok:
        raise DatasetError(f"OpenCV could not encode a {image.shape} image as {encoding}")
    return bytes(buffer)


class _FolderImages:
    """The grey images of a folder, sorted by name, read one at a time and cycled for ever."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DatasetError(f"--images {folder}: expected a folder of images, found none there")
        self.paths = list_images(folder)
        if not self.paths:
            raise DatasetError(
                f"--images {folder}: the folder holds no images (looked for .png, .jpg, .jpeg, .bmp,"
                " .tif, .tiff files directly inside it)"
            )
        self._next = 0

    def next_image(self) -> np.ndarray:
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        return read_grey(path)


@dataclass
class _Strip:
    """A strip's progress: next frame index, rows covered so far, start time, frames allowed."""

    strip_id: str
    quota: int | None
    marks: list[tuple[RollMark, float, int]]  # (mark, phase_m, column_px)
    defect_rate: float = 0.0  # random defects, mean per 256×1600 frame
    cluster_defects: list[tuple[str, float, int]] = field(default_factory=list)  # (class, at_m, column_px)
    start: datetime | None = None  # set when the strip's first frame is due
    index: int = 0
    rows: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def position_m(self, mm_per_px_along: float) -> float:
        return self.rows * mm_per_px_along / 1000.0


class FrameMaker:
    """Turns the plan into frames: metadata, image, defects, in the order they are sent."""

    def __init__(self, plan: SimulationPlan, start: datetime) -> None:
        self.plan = plan
        seeds = np.random.SeedSequence(plan.seed).spawn(2)
        self.rng = np.random.default_rng(seeds[0])  # random defects, roll-mark phases and columns
        self.folder = _FolderImages(plan.images_dir) if plan.images_dir is not None else None
        self.generator = (
            SyntheticFrameGenerator(
                int(seeds[1].generate_state(1)[0]), plan.frame_height, plan.frame_width, plan.defect_rate
            )
            if plan.synthetic
            else None
        )
        classes = [c for c in SYNTHETIC_CLASSES if DEFAULT_CLASS_WEIGHTS.get(c, 0) > 0]
        weights = np.array([DEFAULT_CLASS_WEIGHTS[c] for c in classes], dtype=float)
        self._classes, self._probabilities = classes, weights / weights.sum()
        self.start = start
        names = plan.strip_names(start)
        if plan.strip_length_m is None:
            quotas = _quotas(plan.frames, len(names))
        elif plan.synthetic:
            quotas = [frames_to_cover(plan.strip_length_m, plan)] * len(names)
        else:  # folder images differ in height: a strip ends where its length is covered
            quotas = [None] * len(names)
        self.strips = []
        for number, (name, quota) in enumerate(zip(names, quotas, strict=True)):
            scenario = plan.scenario(number)
            self.strips.append(
                _Strip(
                    name,
                    quota,
                    self._place_marks(scenario.roll_marks),
                    scenario.defect_rate,
                    self._place_clusters(scenario.clusters),
                )
            )

    def _column(self, column_mm: float | None) -> int:
        """A column in frame pixels: `column_mm` from the strip edge, or drawn away from the sides."""
        p = self.plan
        if column_mm is None:
            margin = min(60, p.frame_width // 4)
            return int(self.rng.integers(margin, p.frame_width - margin))
        return min(p.frame_width - 1, int((column_mm - p.edge_offset_mm) / p.mm_per_px_across))

    def _place_clusters(self, clusters: Sequence[DefectCluster]) -> list[tuple[str, float, int]]:
        """Per strip: each cluster's defects, (class, position along, column), a few mm apart across."""
        p = self.plan
        placed = []
        for cluster in clusters:
            lane = self._column(cluster.column_mm)
            spread = max(1, int(15 / p.mm_per_px_across))  # within about 15 mm of the lane
            for at in sorted(
                self.rng.uniform(cluster.start_m, cluster.start_m + cluster.span_m, cluster.count)
            ):
                column = int(np.clip(lane + self.rng.integers(-spread, spread + 1), 0, p.frame_width - 1))
                placed.append((cluster.class_name, float(at), column))
        return placed

    def _place_marks(self, roll_marks: Sequence[RollMark]) -> list[tuple[RollMark, float, int]]:
        """Per strip: each roll mark's phase (first print) and its column, fixed along the strip."""
        placed = []
        for mark in roll_marks:
            phase = float(self.rng.uniform(0.0, mark.pitch_m))
            placed.append((mark, phase, self._column(mark.column_mm)))
        return placed

    def done(self, strip: _Strip) -> bool:
        if strip.quota is not None:
            return strip.index >= strip.quota
        assert self.plan.strip_length_m is not None
        return strip.position_m(self.plan.mm_per_px_along) >= self.plan.strip_length_m

    def expected_total(self) -> int | None:
        """Frames this run will send, when known in advance (not for folder images of a given length)."""
        quotas = [s.quota for s in self.strips]
        if any(q is None for q in quotas):
            return self.plan.frames
        total = sum(q for q in quotas if q is not None)
        return total if self.plan.frames is None else min(total, self.plan.frames)

    def order(self) -> Iterator[_Strip]:
        """The strip each next frame belongs to: one strip after another, `strip_gap_s` apart in
        time, or all at once and in turn (interleave). Sets each strip's start time."""
        p = self.plan
        if p.interleave:
            active = list(self.strips)
            for strip in active:
                strip.start = self.start
            while active:
                for strip in list(active):
                    if self.done(strip):
                        active.remove(strip)
                    else:
                        yield strip
            return
        start = self.start
        for strip in self.strips:
            strip.start = start
            while not self.done(strip):
                yield strip
            covered_s = strip.position_m(p.mm_per_px_along) / p.line_speed_mps
            start = start + timedelta(seconds=covered_s + p.strip_gap_s)

    def make(self, strip: _Strip) -> tuple[SimulatedFrame, list[InjectedMark]]:
        """The next frame of `strip` (advances the strip)."""
        p = self.plan
        assert strip.start is not None, "order() sets a strip's start before its first frame"
        position = strip.position_m(p.mm_per_px_along)
        captured_at = strip.start + timedelta(seconds=position / p.line_speed_mps)
        frame_id = f"{strip.strip_id}-f{strip.index:06d}"
        marks: list[InjectedMark] = []
        if self.generator is not None:
            height = p.frame_height
            placements = self._random_defects(strip.defect_rate)
            end = position + height * p.mm_per_px_along / 1000.0
            for class_name, at, column in strip.cluster_defects:
                if position <= at < end:
                    row = min(height - 1, round((at - position) * 1000.0 / p.mm_per_px_along))
                    scale = float(self.rng.uniform(0.8, 1.2))
                    placements.append(DefectPlacement(class_name, row, column, scale=scale))
            for mark, phase, column in strip.marks:
                k = max(0, math.ceil((position - phase) / mark.pitch_m - 1e-9))
                while (at := phase + k * mark.pitch_m) < end:
                    row = min(height - 1, max(0, round((at - position) * 1000.0 / p.mm_per_px_along)))
                    if at >= position:
                        placements.append(DefectPlacement(mark.class_name, row, column))
                        marks.append(
                            InjectedMark(
                                strip.strip_id,
                                mark.class_name,
                                mark.pitch_m,
                                at,
                                p.edge_offset_mm + column * p.mm_per_px_across,
                                frame_id,
                                row,
                                column,
                            )
                        )
                    k += 1
            synthetic = self.generator.render(placements)
            image, masks, defects = synthetic.image, synthetic.masks, synthetic.defects
        else:
            assert self.folder is not None
            image, masks, defects = self.folder.next_image(), None, ()
            height = int(image.shape[0])
        raw = p.encoding == "raw"
        meta = FrameMeta(
            frame_id=frame_id,
            line=p.line,
            camera=p.camera,
            surface=p.surface,
            strip_id=strip.strip_id,
            captured_at=captured_at,
            position_m=position,
            mm_per_px_along=p.mm_per_px_along,
            mm_per_px_across=p.mm_per_px_across,
            edge_offset_mm=p.edge_offset_mm,
            width=int(image.shape[1]) if raw else None,
            height=int(image.shape[0]) if raw else None,
        )
        strip.index += 1
        strip.rows += height
        strip.first_at = strip.first_at or captured_at
        strip.last_at = captured_at
        return SimulatedFrame(meta, ENCODINGS[p.encoding], image, defects, masks), marks

    def _random_defects(self, rate: float) -> list[DefectPlacement]:
        """Random defects as the generator's `next_frame` draws them: Poisson count, class by weight."""
        p, rng = self.plan, self.rng
        count = int(rng.poisson(rate * p.frame_height * p.frame_width / _REFERENCE_AREA))
        return [
            DefectPlacement(
                class_name=str(rng.choice(self._classes, p=self._probabilities)),
                row=int(rng.integers(0, p.frame_height)),
                column=int(rng.integers(0, p.frame_width)),
                scale=float(rng.uniform(0.8, 1.3)),
            )
            for _ in range(count)
        ]


def _quotas(frames: int | None, strips: int) -> list[int | None]:
    assert frames is not None
    return [frames // strips + (1 if n < frames % strips else 0) for n in range(strips)]
