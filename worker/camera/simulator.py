"""The line simulator: camera frames of one or more strips, published to the frames topic.

A strip passes under the camera at `line_speed_mps`; the camera takes a frame of `height` rows every
`height × mm_per_px_along / 1000` metres. Frame k of a strip therefore starts at
`position_m = k × height × mm_per_px_along / 1000` and was captured at `strip start + position /
speed`. Messages follow the frames contract (`schemas/frame-meta.v1.json`): key = strip id, value =
the encoded image, headers `content-type` and `frame-meta`; the metadata is validated before each
send. Frame ids are `<strip id>-f<6-digit index>`, so a strip id names its frames.

Images are synthetic (`SyntheticFrameGenerator`, seeded, random defects at `defect_rate`) or the
images of a folder (sorted by name, cycled). Roll marks: a worn or damaged mill roll prints the same
mark once per revolution, i.e. every `pitch = π × roll diameter` metres along the strip, at the same
place across it. `RollMark(class, pitch_m, column_mm)` injects a defect of `class` at every
`phase + k × pitch` metres of every strip (the phase drawn per strip and mark, from the seed) through
`SyntheticFrameGenerator.render`; the summary lists each mark's position.

Strips pass one after another (one line), `strip_gap_s` apart, or side by side (`interleave`).
Pacing: `fps=None` sends each frame when the camera would take it (real time); `fps=0` sends as fast
as possible; `fps>0` sends that many frames per second. `captured_at` always follows the line
speed, whatever the pacing.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from worker.core import contracts
from worker.core.errors import ConfigError, DatasetError, InfrastructureError
from worker.core.records import FrameMeta
from worker.datasets.labelled import list_images, read_grey
from worker.datasets.synthetic import (
    DEFAULT_CLASS_WEIGHTS,
    DEFAULT_DEFECT_RATE,
    SYNTHETIC_CLASSES,
    DefectPlacement,
    SyntheticFrameGenerator,
)

if TYPE_CHECKING:
    from kafka import KafkaProducer

__all__ = [
    "ENCODINGS",
    "InjectedMark",
    "RollMark",
    "SimulatedFrame",
    "SimulationPlan",
    "SimulationSummary",
    "StripSummary",
    "encode_image",
    "frame_length_m",
    "frames_to_cover",
    "roll_pitch_m",
    "simulate",
]

ENCODINGS: dict[str, str] = {"png": contracts.PNG, "jpeg": contracts.JPEG, "raw": contracts.RAW_GRAY8}
"""Image encodings the simulator can send, with their `content-type`."""

_REFERENCE_AREA = 256 * 1600  # the generator's defect_rate is a mean per 256×1600 frame
_MAX_STRIP_ID = 190  # frame ids `<strip id>-f000000` must stay within the contract's 200 characters


def roll_pitch_m(diameter_m: float) -> float:
    """Distance along the strip between two prints of one roll: its circumference, π × diameter."""
    if not diameter_m > 0:
        raise ConfigError(f"roll diameter must be > 0 m, received {diameter_m}")
    return math.pi * diameter_m


@dataclass(frozen=True)
class RollMark:
    """A defect of `class_name` printed every `pitch_m` metres along each strip.

    `column_mm` is its place across the strip, in mm from the strip edge; None draws one per strip
    from the seed (the same for every print on that strip, as a roll prints at one place).
    """

    class_name: str
    pitch_m: float
    column_mm: float | None = None

    def __post_init__(self) -> None:
        if self.class_name not in SYNTHETIC_CLASSES:
            raise ConfigError(
                f"roll mark: unknown class {self.class_name!r}; expected one of {list(SYNTHETIC_CLASSES)}"
            )
        if not (math.isfinite(self.pitch_m) and self.pitch_m > 0):
            raise ConfigError(
                f"roll mark {self.class_name}: pitch must be a number of metres > 0 (π × roll diameter),"
                f" received {self.pitch_m}"
            )
        if self.column_mm is not None and not (math.isfinite(self.column_mm) and self.column_mm >= 0):
            raise ConfigError(
                f"roll mark {self.class_name}: column must be >= 0 mm from the strip edge,"
                f" received {self.column_mm}"
            )

    @classmethod
    def parse(cls, text: str) -> RollMark:
        """`CLASS:PITCH_M[:COLUMN_MM]`, e.g. `rolling:2.01` or `holes:1.57:800`; ConfigError if malformed."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
            raise ConfigError(
                f"--roll-mark {text!r}: expected CLASS:PITCH_M or CLASS:PITCH_M:COLUMN_MM,"
                " e.g. rolling:2.01 or holes:1.57:800"
            )
        try:
            numbers = [float(p) for p in parts[1:]]
        except ValueError:
            raise ConfigError(
                f"--roll-mark {text!r}: expected numbers for PITCH_M and COLUMN_MM, received {parts[1:]}"
            ) from None
        return cls(parts[0].strip(), numbers[0], numbers[1] if len(numbers) == 2 else None)


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate. Checked on construction (ConfigError names the option at fault).

    Strips: `strip_ids`, or `strips` ids generated from the start time and a random token (so that
    two runs never share frame ids). Length: each strip is `strip_length_m` long, and `frames`, when
    given, stops the run after that many frames in all; without a length, `frames` are shared out
    evenly between the strips. At least one of the two is needed.
    """

    topic: str = "mill.frames"
    strips: int = 1
    strip_ids: tuple[str, ...] = ()
    strip_length_m: float | None = None
    frames: int | None = None
    interleave: bool = False
    line_speed_mps: float = 2.0
    fps: float | None = None
    seed: int = 0
    images_dir: Path | None = None
    encoding: str = "png"
    jpeg_quality: int = 95
    frame_height: int = 256
    frame_width: int = 1600
    mm_per_px_along: float = 1.0
    mm_per_px_across: float = 1.0
    edge_offset_mm: float = 0.0
    line: str = "L1"
    camera: str = "cam-top-1"
    surface: str = "top"
    defect_rate: float = DEFAULT_DEFECT_RATE
    roll_marks: tuple[RollMark, ...] = ()
    partitions: int = 3
    replication_factor: int = 1
    start_at: datetime | None = None
    strip_gap_s: float = 5.0

    def __post_init__(self) -> None:
        _check_plan(self)

    @property
    def synthetic(self) -> bool:
        """True when frames come from the generator (no `images_dir`)."""
        return self.images_dir is None

    def strip_names(self, start: datetime) -> tuple[str, ...]:
        """`strip_ids`, or `strips` new ids `SIM-<yymmdd-HHMMSS>-<token>-<n>` for a run at `start`."""
        if self.strip_ids:
            return self.strip_ids
        token = secrets.token_hex(2)
        return tuple(f"SIM-{start:%y%m%d-%H%M%S}-{token}-{n + 1:02d}" for n in range(self.strips))


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--{name.replace('_', '-')} must be > 0, received {value}")


def _check_plan(p: SimulationPlan) -> None:
    if not p.topic.strip():
        raise ConfigError("--topic: expected a topic name, received an empty one")
    if p.partitions < 1 or p.replication_factor < 1:
        raise ConfigError(
            f"--partitions and --replication-factor must be >= 1, received {p.partitions}"
            f" and {p.replication_factor}"
        )
    _check_strips(p)
    _check_camera(p)
    _check_defects(p)


def _check_strips(p: SimulationPlan) -> None:
    """Strip ids or count, how much of them to send, speed, pacing, time."""
    if p.strip_ids:
        if len(set(p.strip_ids)) != len(p.strip_ids):
            raise ConfigError(f"--strip-id: expected distinct strip ids, received {list(p.strip_ids)}")
        for strip_id in p.strip_ids:
            if not strip_id or any(c.isspace() for c in strip_id) or len(strip_id) > _MAX_STRIP_ID:
                raise ConfigError(
                    f"--strip-id {strip_id!r}: expected 1..{_MAX_STRIP_ID} characters without spaces"
                )
    elif p.strips < 1:
        raise ConfigError(f"--strips must be >= 1, received {p.strips}")
    if p.strip_length_m is None and p.frames is None:
        raise ConfigError("expected --frames or --strip-length-m (or both): how much of the strips to send")
    if p.strip_length_m is not None:
        _positive("strip_length_m", p.strip_length_m)
    strips = len(p.strip_ids) or p.strips
    if p.frames is not None and p.frames < 1:
        raise ConfigError(f"--frames must be >= 1, received {p.frames}")
    if p.frames is not None and p.strip_length_m is None and p.frames < strips:
        raise ConfigError(
            f"--frames {p.frames} cannot be shared out between {strips} strips; expected at least"
            " one frame per strip"
        )
    _positive("line_speed_mps", p.line_speed_mps)
    if p.fps is not None and not (math.isfinite(p.fps) and p.fps >= 0):
        raise ConfigError(f"--fps must be >= 0 (0 = as fast as possible), received {p.fps}")
    if not (math.isfinite(p.strip_gap_s) and p.strip_gap_s >= 0):
        raise ConfigError(f"strip_gap_s must be >= 0, received {p.strip_gap_s}")
    if p.start_at is not None and p.start_at.tzinfo is None:
        raise ConfigError(f"start_at: expected a time zone aware datetime, received {p.start_at!r}")


def _check_camera(p: SimulationPlan) -> None:
    """Encoding, frame size, scale, and the ids the metadata carries."""
    if p.encoding not in ENCODINGS:
        raise ConfigError(f"--encoding: expected one of {list(ENCODINGS)}, received {p.encoding!r}")
    if not 1 <= p.jpeg_quality <= 100:
        raise ConfigError(f"--jpeg-quality must be 1..100, received {p.jpeg_quality}")
    if p.frame_height < 16 or p.frame_width < 16:
        raise ConfigError(f"frames must be at least 16×16 px, received {p.frame_height}×{p.frame_width}")
    _positive("mm_per_px_along", p.mm_per_px_along)
    _positive("mm_per_px_across", p.mm_per_px_across)
    if not math.isfinite(p.edge_offset_mm):
        raise ConfigError(f"--edge-offset-mm must be a number, received {p.edge_offset_mm}")
    if p.surface not in ("top", "bottom"):
        raise ConfigError(f"--surface: expected top or bottom, received {p.surface!r}")
    for name, value in (("line", p.line), ("camera", p.camera)):
        if not value or any(c.isspace() for c in value):
            raise ConfigError(f"--{name}: expected an id without spaces, received {value!r}")


def _check_defects(p: SimulationPlan) -> None:
    """Random defect rate and roll marks (synthetic frames only; marks inside the camera's view)."""
    if not (math.isfinite(p.defect_rate) and p.defect_rate >= 0):
        raise ConfigError(f"--defect-rate must be >= 0, received {p.defect_rate}")
    if p.images_dir is not None and p.roll_marks:
        raise ConfigError(
            "--roll-mark draws defects with the synthetic generator; it cannot be combined with --images"
        )
    width_mm = p.frame_width * p.mm_per_px_across
    for mark in p.roll_marks:
        if mark.column_mm is not None and not (
            p.edge_offset_mm <= mark.column_mm < p.edge_offset_mm + width_mm
        ):
            raise ConfigError(
                f"--roll-mark {mark.class_name}: column {mark.column_mm:g} mm is outside the camera's view,"
                f" {p.edge_offset_mm:g}..{p.edge_offset_mm + width_mm:g} mm from the strip edge"
            )


# --- what the run reports -----------------------------------------------------------------------


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
class StripSummary:
    """What was sent of one strip: frames, metres covered, first and last capture time."""

    strip_id: str
    frames: int
    length_m: float
    first_captured_at: datetime | None
    last_captured_at: datetime | None


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


@dataclass(frozen=True)
class SimulationSummary:
    """The outcome of `simulate`: every frame counted here was acknowledged by the broker."""

    topic: str
    topic_created: bool
    frames_sent: int
    bytes_sent: int
    elapsed_s: float
    strips: tuple[StripSummary, ...]
    marks: tuple[InjectedMark, ...]
    defects_by_class: dict[str, int] = field(default_factory=dict)

    @property
    def per_strip(self) -> dict[str, int]:
        """Frames sent per strip id, in the order the strips ran."""
        return {s.strip_id: s.frames for s in self.strips}

    def table(self) -> str:
        """A plain-text account: totals, then one line per strip with its roll marks."""
        rate = self.frames_sent / self.elapsed_s if self.elapsed_s > 0 else float("inf")
        lines = [
            f"{self.frames_sent} frames ({self.bytes_sent / 1e6:.1f} MB) sent to {self.topic}"
            f" in {self.elapsed_s:.1f} s ({rate:.1f} frames/s)"
            + (" (topic created)" if self.topic_created else ""),
        ]
        if self.defects_by_class:
            drawn = ", ".join(f"{n} {c}" for c, n in sorted(self.defects_by_class.items()))
            lines.append(f"synthetic defects drawn: {drawn}")
        for s in self.strips:
            lines.append(f"  strip {s.strip_id}: {s.frames} frames, {s.length_m:.2f} m")
            by_mark: dict[tuple[str, float], list[float]] = {}
            for m in self.marks:
                if m.strip_id == s.strip_id:
                    by_mark.setdefault((m.class_name, m.pitch_m), []).append(m.position_m)
            for (name, pitch), positions in by_mark.items():
                shown = ", ".join(f"{p:.2f}" for p in positions[:6]) + (", …" if len(positions) > 6 else "")
                lines.append(f"    roll mark {name} every {pitch:g} m: {len(positions)} prints at {shown} m")
        return "\n".join(lines)


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
    start: datetime | None = None  # set when the strip's first frame is due
    index: int = 0
    rows: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def position_m(self, mm_per_px_along: float) -> float:
        return self.rows * mm_per_px_along / 1000.0


class _FrameMaker:
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
        self.strips = [
            _Strip(name, quota, self._place_marks()) for name, quota in zip(names, quotas, strict=True)
        ]

    def _place_marks(self) -> list[tuple[RollMark, float, int]]:
        """Per strip: each roll mark's phase (first print) and its column, fixed along the strip."""
        p = self.plan
        placed = []
        for mark in p.roll_marks:
            phase = float(self.rng.uniform(0.0, mark.pitch_m))
            if mark.column_mm is None:
                margin = min(60, p.frame_width // 4)
                column = int(self.rng.integers(margin, p.frame_width - margin))
            else:
                column = min(p.frame_width - 1, int((mark.column_mm - p.edge_offset_mm) / p.mm_per_px_across))
            placed.append((mark, phase, column))
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
            placements = self._random_defects()
            end = position + height * p.mm_per_px_along / 1000.0
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

    def _random_defects(self) -> list[DefectPlacement]:
        """Random defects as the generator's `next_frame` draws them: Poisson count, class by weight."""
        p, rng = self.plan, self.rng
        count = int(rng.poisson(p.defect_rate * p.frame_height * p.frame_width / _REFERENCE_AREA))
        return [
            DefectPlacement(
                class_name=str(rng.choice(self._classes, p=self._probabilities)),
                row=int(rng.integers(0, p.frame_height)),
                column=int(rng.integers(0, p.frame_width)),
                scale=float(rng.uniform(0.8, 1.3)),
            )
            for _ in range(count)
        ]


def frame_length_m(plan: SimulationPlan) -> float:
    """Metres of strip one synthetic frame covers: frame height × mm per pixel along / 1000."""
    return plan.frame_height * plan.mm_per_px_along / 1000.0


def frames_to_cover(length_m: float, plan: SimulationPlan) -> int:
    """Synthetic frames needed to cover `length_m` of strip (the last one may reach past its end)."""
    return max(1, math.ceil(length_m * 1000.0 / (plan.frame_height * plan.mm_per_px_along) - 1e-9))


def _quotas(frames: int | None, strips: int) -> list[int | None]:
    assert frames is not None
    return [frames // strips + (1 if n < frames % strips else 0) for n in range(strips)]


# --- sending ------------------------------------------------------------------------------------


def _bootstrap_of(producer: KafkaProducer) -> str:
    servers = producer.config["bootstrap_servers"]
    return servers if isinstance(servers, str) else ",".join(servers)


def _connect(bootstrap: str, timeout_s: float) -> KafkaProducer:
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.errors import KafkaTimeoutError  # noqa: PLC0415

    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    if not servers:
        raise ConfigError("--bootstrap / KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port…]")
    try:
        return KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            client_id="steel-worker-simulator",
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaTimeoutError:
        raise InfrastructureError(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s; check --bootstrap /"
            " KAFKA_BOOTSTRAP_SERVERS"
        ) from None


class _Pacer:
    """Waits until a frame's send time: real time from `captured_at`, a fixed rate, or not at all."""

    def __init__(self, fps: float | None, start: datetime) -> None:
        self.fps, self.start, self.t0 = fps, start, time.monotonic()

    def wait(self, sent: int, captured_at: datetime) -> None:
        if self.fps == 0:
            return
        due = ((captured_at - self.start).total_seconds() if self.fps is None else sent / self.fps) + self.t0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class _Tally:
    """What has been sent so far (the broker's failures arrive on its I/O thread)."""

    frames: int = 0
    bytes: int = 0
    marks: list[InjectedMark] = field(default_factory=list)
    drawn: Counter[str] = field(default_factory=Counter)
    failures: list[BaseException] = field(default_factory=list)


def _send_all(
    producer: KafkaProducer,
    plan: SimulationPlan,
    maker: _FrameMaker,
    tally: _Tally,
    *,
    progress: bool,
    on_frame: Callable[[SimulatedFrame], None] | None,
) -> None:
    """Make, validate, encode, pace and send every frame of the plan; flush at the end."""
    from kafka.errors import KafkaError  # noqa: PLC0415

    pacer = _Pacer(plan.fps, maker.start)
    with tqdm(total=maker.expected_total(), desc="simulate", unit="frame", disable=not progress) as bar:
        for strip in maker.order():
            if (plan.frames is not None and tally.frames >= plan.frames) or tally.failures:
                break
            frame, marks = maker.make(strip)
            contracts.validate(contracts.FRAME_META, contracts.frame_meta_dict(frame.meta))
            value = encode_image(frame.image, plan.encoding, plan.jpeg_quality)
            pacer.wait(tally.frames, frame.meta.captured_at)
            try:
                future = producer.send(
                    plan.topic,
                    key=strip.strip_id.encode("utf-8"),
                    value=value,
                    headers=contracts.frame_headers(frame.meta, frame.content_type),
                )
            except KafkaError as exc:
                raise InfrastructureError(
                    f"frame {frame.meta.frame_id} ({len(value)} bytes) refused by the producer: {exc!r}"
                ) from None
            future.add_errback(tally.failures.append)
            if on_frame is not None:
                on_frame(frame)
            tally.frames += 1
            tally.bytes += len(value)
            tally.marks.extend(marks)
            tally.drawn.update(d.class_name for d in frame.defects)
            bar.update(1)
            bar.set_postfix_str(strip.strip_id, refresh=False)
        producer.flush()


def simulate(
    producer_or_bootstrap: KafkaProducer | str,
    plan: SimulationPlan,
    progress: bool = True,
    on_frame: Callable[[SimulatedFrame], None] | None = None,
    connect_timeout_s: float = 30.0,
) -> SimulationSummary:
    """Publish the plan's frames; returns once the broker acknowledged every one of them.

    Creates `plan.topic` with `plan.partitions` partitions when it does not exist (an existing topic
    is left as it is). A producer passed in is flushed but not closed; one made from a bootstrap
    string is closed (InfrastructureError when no broker answers within `connect_timeout_s`).
    `on_frame` sees each frame as it is sent. Raises ConfigError/DatasetError for
    bad plans or images (before anything is sent), SchemaError if metadata breaks the contract,
    InfrastructureError when the broker cannot be reached or refuses a frame.
    """
    from kafka.errors import KafkaError  # noqa: PLC0415

    from worker.infra.broker import create_topics  # noqa: PLC0415

    maker = _FrameMaker(plan, plan.start_at or datetime.now(UTC))  # checks the folder before connecting
    owned = isinstance(producer_or_bootstrap, str)
    if isinstance(producer_or_bootstrap, str):
        bootstrap, producer = producer_or_bootstrap, _connect(producer_or_bootstrap, connect_timeout_s)
    else:
        bootstrap, producer = _bootstrap_of(producer_or_bootstrap), producer_or_bootstrap
    tally = _Tally()
    try:
        try:
            created = create_topics(
                bootstrap, {plan.topic: plan.partitions}, replication_factor=plan.replication_factor
            )
        except KafkaError as exc:
            raise InfrastructureError(f"cannot create topic {plan.topic} on {bootstrap}: {exc!r}") from None
        t0 = time.monotonic()
        _send_all(producer, plan, maker, tally, progress=progress, on_frame=on_frame)
        elapsed = time.monotonic() - t0
    finally:
        if owned:
            producer.close()
    if tally.failures:
        raise InfrastructureError(
            f"the broker did not accept every frame on {plan.topic}: {tally.failures[0]!r}"
        )
    strips = tuple(
        StripSummary(s.strip_id, s.index, s.position_m(plan.mm_per_px_along), s.first_at, s.last_at)
        for s in maker.strips
    )
    return SimulationSummary(
        topic=plan.topic,
        topic_created=plan.topic in created,
        frames_sent=tally.frames,
        bytes_sent=tally.bytes,
        elapsed_s=elapsed,
        strips=strips,
        marks=tuple(tally.marks),
        defects_by_class=dict(tally.drawn),
    )
