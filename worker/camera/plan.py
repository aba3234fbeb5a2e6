"""What to simulate: the strips, the camera over the line, the roll marks, the pacing asked for.

A `SimulationPlan` is checked when it is made: a bad option is a ConfigError that names it, raised
before any frame is made or sent. A strip passes under the camera at `line_speed_mps`; a synthetic
frame of `frame_height` rows covers `frame_length_m` = `height × mm_per_px_along / 1000` metres of
it, and `frames_to_cover` counts the frames of a given length. Roll marks: a worn or damaged mill
roll prints the same mark once per revolution, i.e. every `roll_pitch_m(diameter)` = π × diameter
metres along the strip, at the same place across it; `RollMark(class, pitch_m, column_mm)` asks for
one (synthetic frames only, its column inside the camera's view). Nothing here makes or sends a frame.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from worker.core import contracts
from worker.core.errors import ConfigError
from worker.datasets.synthetic import DEFAULT_DEFECT_RATE, SYNTHETIC_CLASSES

__all__ = [
    "ENCODINGS",
    "DefectCluster",
    "RollMark",
    "SimulationPlan",
    "StripScenario",
    "frame_length_m",
    "frames_to_cover",
    "roll_pitch_m",
]

ENCODINGS: dict[str, str] = {"png": contracts.PNG, "jpeg": contracts.JPEG, "raw": contracts.RAW_GRAY8}
"""Image encodings the simulator can send, with their `content-type`."""

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
class DefectCluster:
    """`count` defects of `class_name` scattered over `span_m` metres from `start_m` along a strip,
    in one lane across it (`column_mm` from the strip edge; None: drawn from the seed): what a
    worn guide or a foreign body on a roller table scratches into a strip."""

    class_name: str
    start_m: float
    span_m: float
    count: int
    column_mm: float | None = None

    def __post_init__(self) -> None:
        if self.class_name not in SYNTHETIC_CLASSES:
            raise ConfigError(
                f"cluster: unknown class {self.class_name!r}; expected one of {list(SYNTHETIC_CLASSES)}"
            )
        if not (math.isfinite(self.start_m) and self.start_m >= 0):
            raise ConfigError(f"cluster {self.class_name}: start must be >= 0 m, received {self.start_m}")
        if not (math.isfinite(self.span_m) and self.span_m > 0):
            raise ConfigError(f"cluster {self.class_name}: span must be > 0 m, received {self.span_m}")
        if self.count < 1:
            raise ConfigError(f"cluster {self.class_name}: count must be >= 1, received {self.count}")
        if self.column_mm is not None and not (math.isfinite(self.column_mm) and self.column_mm >= 0):
            raise ConfigError(f"cluster {self.class_name}: column must be >= 0 mm, received {self.column_mm}")


@dataclass(frozen=True)
class StripScenario:
    """What one strip carries: random defects at `defect_rate` (mean per 256×1600 frame), its roll
    marks and its clusters. `name` says it in the demo's account ("clean", "roll mark", ...)."""

    name: str
    defect_rate: float = DEFAULT_DEFECT_RATE
    roll_marks: tuple[RollMark, ...] = ()
    clusters: tuple[DefectCluster, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.defect_rate) and self.defect_rate >= 0):
            raise ConfigError(
                f"scenario {self.name!r}: defect rate must be >= 0, received {self.defect_rate}"
            )


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate. Checked on construction (ConfigError names the option at fault).

    Strips: `strip_ids`, or `strips` ids generated from the start time and a random token (so that
    two runs never share frame ids). Length: each strip is `strip_length_m` long, and `frames`, when
    given, stops the run after that many frames in all; without a length, `frames` are shared out
    evenly between the strips. At least one of the two is needed.

    Defects: every strip gets `defect_rate` random defects per frame and every roll mark of
    `roll_marks`; with `scenarios`, strip n follows `scenarios[n % len(scenarios)]` instead (its own
    rate, roll marks and clusters), which is how a run tells a plant's story: most strips clean,
    one marked by a roll, one scratched by a guide.
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
    scenarios: tuple[StripScenario, ...] = ()
    partitions: int = 3
    replication_factor: int = 1
    start_at: datetime | None = None
    strip_gap_s: float = 5.0

    def __post_init__(self) -> None:
        _check_plan(self)

    def scenario(self, strip_number: int) -> StripScenario:
        """What strip number `strip_number` (0-based) carries."""
        if self.scenarios:
            return self.scenarios[strip_number % len(self.scenarios)]
        return StripScenario("as planned", self.defect_rate, self.roll_marks)

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
    if p.images_dir is not None and (p.roll_marks or p.scenarios):
        raise ConfigError(
            "--roll-mark and strip scenarios draw defects with the synthetic generator; they cannot be"
            " combined with --images"
        )
    width_mm = p.frame_width * p.mm_per_px_across
    placed: list[tuple[str, float | None]] = [
        (f"--roll-mark {m.class_name}", m.column_mm) for m in p.roll_marks
    ]
    for scenario in p.scenarios:
        placed += [
            (f"scenario {scenario.name!r}: roll mark {m.class_name}", m.column_mm)
            for m in scenario.roll_marks
        ]
        placed += [
            (f"scenario {scenario.name!r}: cluster {c.class_name}", c.column_mm) for c in scenario.clusters
        ]
    for what, column_mm in placed:
        if column_mm is not None and not (p.edge_offset_mm <= column_mm < p.edge_offset_mm + width_mm):
            raise ConfigError(
                f"{what}: column {column_mm:g} mm is outside the camera's view,"
                f" {p.edge_offset_mm:g}..{p.edge_offset_mm + width_mm:g} mm from the strip edge"
            )


# --- the plan's geometry ------------------------------------------------------------------------


def frame_length_m(plan: SimulationPlan) -> float:
    """Metres of strip one synthetic frame covers: frame height × mm per pixel along / 1000."""
    return plan.frame_height * plan.mm_per_px_along / 1000.0


def frames_to_cover(length_m: float, plan: SimulationPlan) -> int:
    """Synthetic frames needed to cover `length_m` of strip (the last one may reach past its end)."""
    return max(1, math.ceil(length_m * 1000.0 / (plan.frame_height * plan.mm_per_px_along) - 1e-9))
