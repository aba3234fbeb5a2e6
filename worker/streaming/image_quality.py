"""The image-quality gate: each decoded frame's statistics judged against its camera's calibration.

`measure(image, source)` computes, in one histogram pass over the 8-bit grey image the model sees:
the mean grey level, the standard deviation (spread) and the share of pixels clipped at 0 or 255;
and, for a 16-bit source, the bits its samples use (the highest set bit of the brightest sample).
`QualityGate.judge` compares them with the camera's `Calibration` (`worker.streaming.camera_calibration`)
and the frame's captured_at with the Kafka record's timestamp; each failed check is a flag
(`worker.core.quality`):

    dark        mean < min_mean                     bright   mean > max_mean
    flat        standard deviation < min_std        clipped  share at 0 or 255 > max_clipped_share
    bit-depth   16-bit samples using fewer than bit_depth - 2 bits or more than bit_depth (16 when
                unset); an 8-bit frame from a camera calibrated above 8 bits
    clock-skew  |captured_at - record timestamp| > CLOCK_SKEW_MAX_S (no record timestamp: not checked)

`QualityPolicy` says, per check, whether it runs (IMAGE_QUALITY_CHECKS) and whether a frame that
fails it is refused (IMAGE_QUALITY_REFUSE) or flagged. A refused frame is dead-lettered (reason
`image-quality`, its flags and values in the detail); a flagged frame is classified and stored
with its flags in `frames.quality_flags`. Neither changes the frame: the stored captured_at is
the camera's, skewed or not.

Costs: one histogram of the 8-bit image (about 1 ms per 1600 × 256 frame, comparisons included,
on the 2-core development machine); a 16-bit PNG is decoded a second time at 16 bits, for its bit
depth only (OpenCV's 8-bit reduction, which the model sees, would hide it: a 12-bit frame in a
16-bit PNG becomes nearly black). Pure: `judge` never raises for a frame's content (the decoder
has checked the image already).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import numpy as np

from worker.core import contracts
from worker.core.errors import ConfigError
from worker.core.quality import BIT_DEPTH, BRIGHT, CHECKS, CLIPPED, CLOCK_SKEW, DARK, FLAT
from worker.core.records import FrameMeta
from worker.streaming.camera_calibration import Calibration, CameraCalibrations

_PNG_BIT_DEPTH_AT = 24  # IHDR: signature (8), length (4), type (4), width (4), height (4), bit depth (1)
BIT_DEPTH_SLACK = 2  # a good frame's brightest sample reaches at least a quarter of its full scale


@dataclass(frozen=True)
class FrameStats:
    """What the gate measured: over the 8-bit image, and the bits a 16-bit source's samples use."""

    mean: float
    std: float
    clipped_share: float
    source_bits: int  # 8 or 16: the container
    bits_used: int | None = None  # for 16-bit sources: the brightest sample's bit length


def measure(image: np.ndarray, source: np.ndarray | None = None) -> FrameStats:
    """Statistics of an 8-bit grey `image` (height, width); `source` is its 16-bit samples, if any."""
    histogram = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    count = float(histogram.sum())
    levels = np.arange(256, dtype=np.float64)
    mean = float(histogram @ levels) / count
    variance = max(0.0, float(histogram @ (levels * levels)) / count - mean * mean)
    clipped = float(histogram[0] + histogram[255]) / count
    if source is None:
        return FrameStats(mean, variance**0.5, clipped, 8)
    return FrameStats(mean, variance**0.5, clipped, 16, int(source.max()).bit_length())


def source_samples(data: bytes, content_type: str) -> np.ndarray | None:
    """The 16-bit grey samples of a 16-bit PNG (decoded again at full depth); None for 8-bit sources."""
    if content_type != contracts.PNG or len(data) <= _PNG_BIT_DEPTH_AT or data[_PNG_BIT_DEPTH_AT] != 16:
        return None
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
    samples = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    return samples if samples is not None and samples.dtype == np.uint16 else None


@dataclass(frozen=True)
class QualityPolicy:
    """Which checks run, which of them refuse a frame (the others flag it), and the clock-skew limit."""

    checks: frozenset[str] = frozenset(CHECKS)
    refuse: frozenset[str] = frozenset()
    clock_skew_max_s: float = 300.0

    def __post_init__(self) -> None:
        unknown = sorted((self.checks | self.refuse) - set(CHECKS))
        if unknown:
            raise ConfigError(
                f"image-quality checks: expected some of {', '.join(CHECKS)}, received {unknown}"
            )
        if not self.refuse <= self.checks:
            raise ConfigError(
                "IMAGE_QUALITY_REFUSE: expected checks that IMAGE_QUALITY_CHECKS runs, received"
                f" {', '.join(sorted(self.refuse - self.checks))} (not run)"
            )
        if not self.clock_skew_max_s > 0:
            raise ConfigError(f"CLOCK_SKEW_MAX_S: expected seconds above 0, received {self.clock_skew_max_s}")


@dataclass(frozen=True)
class Verdict:
    """A frame's flags (every check it failed, in `CHECKS` order), those of them that refuse it,
    and what was measured."""

    flags: tuple[str, ...]
    refused_by: tuple[str, ...]
    stats: FrameStats
    reasons: tuple[str, ...] = ()  # one sentence per flag: expected and received
    skew_s: float | None = None  # captured_at minus the record's timestamp, seconds
    calibration: str = "defaults"

    @property
    def refused(self) -> bool:
        return bool(self.refused_by)

    def detail(self) -> str:
        """For a dead letter: what failed, expected and received, and which calibration."""
        return (
            f"the frame fails the image-quality gate ({', '.join(self.refused_by)} refuse it): "
            + "; ".join(self.reasons)
            + f" (camera calibration: {self.calibration})"
        )


@dataclass(frozen=True)
class QualityGate:
    """The gate of one worker: calibrations and policy, read once at start-up."""

    calibrations: CameraCalibrations = field(default_factory=CameraCalibrations)
    policy: QualityPolicy = field(default_factory=QualityPolicy)

    def judge(
        self, data: bytes, content_type: str, image: np.ndarray, meta: FrameMeta, timestamp_ms: int | None
    ) -> Verdict:
        """The verdict on one decoded frame (`image`, 8-bit) of `data` (its encoded bytes)."""
        checks = self.policy.checks
        calibration = self.calibrations.for_camera(meta.line, meta.camera)
        wants_bits = BIT_DEPTH in checks
        stats = measure(image, source_samples(data, content_type) if wants_bits else None)
        failed = list(_image_failures(stats, calibration, checks))
        skew_s = _skew_s(meta.captured_at, timestamp_ms)
        if CLOCK_SKEW in checks and skew_s is not None and abs(skew_s) > self.policy.clock_skew_max_s:
            failed.append(
                (
                    CLOCK_SKEW,
                    f"clock-skew: expected captured_at within {self.policy.clock_skew_max_s:g} s of the"
                    f" record's timestamp, received {skew_s:+.0f} s",
                )
            )
        flags = tuple(check for check in CHECKS if any(check == f for f, _ in failed))
        named = _calibration_name(self.calibrations, meta)
        return Verdict(
            flags=flags,
            refused_by=tuple(f for f in flags if f in self.policy.refuse),
            stats=stats,
            reasons=tuple(reason for _, reason in failed),
            skew_s=skew_s,
            calibration=named,
        )


def _image_failures(
    stats: FrameStats, calibration: Calibration, checks: frozenset[str]
) -> Iterable[tuple[str, str]]:
    c = calibration
    if DARK in checks and stats.mean < c.min_mean:
        yield DARK, f"dark: expected a mean grey level of at least {c.min_mean:g}, received {stats.mean:.1f}"
    if BRIGHT in checks and stats.mean > c.max_mean:
        yield (
            BRIGHT,
            f"bright: expected a mean grey level of at most {c.max_mean:g}, received {stats.mean:.1f}",
        )
    if FLAT in checks and stats.std < c.min_std:
        yield FLAT, f"flat: expected a standard deviation of at least {c.min_std:g}, received {stats.std:.2f}"
    if CLIPPED in checks and stats.clipped_share > c.max_clipped_share:
        yield (
            CLIPPED,
            f"clipped: expected at most {c.max_clipped_share:.0%} of pixels at 0 or 255, received"
            f" {stats.clipped_share:.1%}",
        )
    if BIT_DEPTH not in checks:
        return
    expected = c.bit_depth if c.bit_depth is not None and c.bit_depth > 8 else 16
    if stats.bits_used is not None and not expected - BIT_DEPTH_SLACK <= stats.bits_used <= expected:
        yield (
            BIT_DEPTH,
            f"bit-depth: expected 16-bit samples using {expected - BIT_DEPTH_SLACK} to {expected} bits,"
            f" received samples using {stats.bits_used} bits",
        )
    elif stats.source_bits == 8 and c.bit_depth is not None and c.bit_depth > 8:
        yield BIT_DEPTH, f"bit-depth: expected {c.bit_depth}-bit samples in a 16-bit PNG, received 8-bit ones"


def _skew_s(captured_at: datetime, timestamp_ms: int | None) -> float | None:
    """captured_at minus the record's timestamp in seconds; None when the record has none."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    return (captured_at - datetime.fromtimestamp(timestamp_ms / 1000, UTC)).total_seconds()


def _calibration_name(calibrations: CameraCalibrations, meta: FrameMeta) -> str:
    for key in (f"{meta.line}/{meta.camera}", meta.camera):
        if key in calibrations.cameras:
            return f"{calibrations.source}: {key}"
    return f"{calibrations.source}: defaults"
