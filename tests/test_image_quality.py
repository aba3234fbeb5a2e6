"""The image-quality gate (`worker.streaming.image_quality`) and the camera calibration file
(`worker.streaming.camera_calibration`), through the decoder: what a dead lamp, a white-out, a
12-bit camera in a 16-bit PNG and a wrong camera clock look like to it, and that the project's
synthetic steel frames pass it."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from frames import frame_record, grey_image, inbound, make_meta

from worker.camera.frames import FrameMaker, encode_image
from worker.camera.plan import SimulationPlan
from worker.core import contracts
from worker.core.errors import ConfigError
from worker.core.quality import BIT_DEPTH, BRIGHT, CHECKS, CLIPPED, CLOCK_SKEW, DARK, FLAT, parse_checks
from worker.core.records import DecodedFrame
from worker.core.refusals import DECODE, IMAGE_QUALITY
from worker.streaming.camera_calibration import Calibration, load_calibrations, parse_calibrations
from worker.streaming.decode import DecodeLimits, InboundMessage, Rejected, decode_message
from worker.streaming.image_quality import QualityGate, QualityPolicy, measure
from worker.streaming.service import quality_gate
from worker.streaming.settings import load_settings

CAPTURED = make_meta().captured_at
AT_CAPTURE_MS = int(CAPTURED.timestamp() * 1000)  # a record stamped when the frame was captured


def _limits(gate: QualityGate | None = None) -> DecodeLimits:
    return DecodeLimits(
        max_frame_bytes=20_000_000, max_frame_pixels=10_000_000, quality=gate or QualityGate()
    )


def _message(
    image: np.ndarray, *, timestamp_ms: int | None = AT_CAPTURE_MS, **meta: object
) -> InboundMessage:
    _, value, headers = frame_record(make_meta(**meta), image)
    return replace(inbound(value, headers), timestamp_ms=timestamp_ms)


def _png16(samples: np.ndarray) -> InboundMessage:
    ok, buffer = cv2.imencode(".png", samples.astype(np.uint16))
    assert ok
    headers = contracts.frame_headers(make_meta(), contracts.PNG)
    return replace(inbound(buffer.tobytes(), headers), timestamp_ms=AT_CAPTURE_MS)


def _decoded(message: InboundMessage, gate: QualityGate | None = None) -> DecodedFrame:
    outcome = decode_message(message, _limits(gate))
    assert isinstance(outcome, DecodedFrame), outcome
    return outcome


STEEL = grey_image(256, 512, seed=3)
NOISE = np.random.default_rng(0).integers(0, 4, (256, 512), np.uint8)  # a dead lamp's sensor noise
TWELVE_BIT = grey_image(256, 512, seed=4).astype(np.uint16) * 16  # 0…4080: 12 bits in a 16-bit PNG


# ---------------------------------------------------------------------------------------------
# the statistics
# ---------------------------------------------------------------------------------------------


def test_measure_gives_mean_spread_clipped_share_and_the_bits_a_16_bit_source_uses() -> None:
    half = np.zeros((4, 8), np.uint8)
    half[:, 4:] = 255
    stats = measure(half)
    assert (stats.mean, stats.std, stats.clipped_share, stats.source_bits, stats.bits_used) == (
        127.5,
        127.5,
        1.0,
        8,
        None,
    )
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    stats = measure(ramp)
    assert stats.mean == pytest.approx(127.5)
    assert stats.std == pytest.approx(float(ramp.std()))
    assert stats.clipped_share == pytest.approx(2 / 256)
    assert measure(ramp, np.full((16, 16), 4095, np.uint16)).bits_used == 12
    assert measure(ramp, np.full((16, 16), 65535, np.uint16)).bits_used == 16
    assert measure(ramp, np.zeros((16, 16), np.uint16)).bits_used == 0


# ---------------------------------------------------------------------------------------------
# through the decoder
# ---------------------------------------------------------------------------------------------


def test_a_steel_frame_passes_the_gate_in_every_encoding() -> None:
    for content_type in (contracts.PNG, contracts.JPEG, contracts.RAW_GRAY8):
        _, value, headers = frame_record(make_meta(), STEEL, content_type)
        assert _decoded(replace(inbound(value, headers), timestamp_ms=AT_CAPTURE_MS)).quality_flags == ()
    assert _decoded(_png16(STEEL.astype(np.uint16) * 257)).quality_flags == ()  # all 16 bits used


@pytest.mark.parametrize(
    ("name", "message", "flags"),
    [
        ("black (a dead lamp)", _message(np.zeros((256, 512), np.uint8)), (DARK, FLAT, CLIPPED)),
        ("white (a white-out)", _message(np.full((256, 512), 255, np.uint8)), (BRIGHT, FLAT, CLIPPED)),
        ("a dead lamp's noise", _message(NOISE), (DARK, FLAT)),
        ("12-bit samples in a 16-bit PNG", _png16(TWELVE_BIT), (FLAT, BIT_DEPTH)),  # mean about 8
    ],
)  # fmt: skip
def test_black_white_and_12_bit_in_16_bit_frames_are_flagged_and_still_decoded(
    name: str, message: InboundMessage, flags: tuple[str, ...]
) -> None:
    decoded = _decoded(message)
    assert decoded.quality_flags == flags, name
    assert decoded.image.dtype == np.uint8  # what the model sees is unchanged (OpenCV's 8-bit reduction)


def test_a_refusing_policy_dead_letters_the_frame_saying_what_was_expected_and_received() -> None:
    gate = QualityGate(policy=QualityPolicy(refuse=frozenset({FLAT, BIT_DEPTH})))
    outcome = decode_message(_png16(TWELVE_BIT), _limits(gate))
    assert isinstance(outcome, Rejected)
    assert (outcome.reason, outcome.stage, outcome.quality_flags) == (
        IMAGE_QUALITY,
        DECODE,
        (FLAT, BIT_DEPTH),
    )
    assert outcome.meta is not None and outcome.meta.camera == "cam-top-1"
    assert "flat, bit-depth refuse it" in outcome.detail
    assert (
        "bit-depth: expected 16-bit samples using 14 to 16 bits, received samples using 12 bits"
        in outcome.detail
    )
    assert "flat: expected a standard deviation of at least 3, received" in outcome.detail
    assert "camera calibration: built-in defaults: defaults" in outcome.detail
    # a check that only flags does not refuse
    white = decode_message(_message(np.full((64, 64), 255, np.uint8)), _limits(gate))
    assert isinstance(white, Rejected) and white.quality_flags == (BRIGHT, FLAT, CLIPPED)
    bright_only = QualityGate(policy=QualityPolicy(refuse=frozenset({DARK})))
    assert _decoded(_message(np.full((64, 64), 255, np.uint8)), bright_only).quality_flags == (
        BRIGHT,
        FLAT,
        CLIPPED,
    )


def test_a_gate_without_checks_or_no_gate_flags_nothing() -> None:
    black = _message(np.zeros((64, 64), np.uint8))
    assert _decoded(black, QualityGate(policy=QualityPolicy(checks=frozenset()))).quality_flags == ()
    outcome = decode_message(black, replace(_limits(), quality=None))
    assert isinstance(outcome, DecodedFrame) and outcome.quality_flags == ()


# ---------------------------------------------------------------------------------------------
# the camera's clock against the broker's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("captured_at", "flagged"),
    [
        (datetime(2199, 1, 1, tzinfo=UTC), True),  # a clock set to 2199: its strip would top the line view
        (datetime(2000, 1, 1, tzinfo=UTC), True),  # a clock reset to 2000: its strip would hide
        (CAPTURED + timedelta(seconds=301), True),
        (CAPTURED - timedelta(seconds=301), True),
        (CAPTURED + timedelta(seconds=299), False),
        (CAPTURED - timedelta(seconds=60), False),
    ],
)
def test_captured_at_far_from_the_record_timestamp_is_flagged_clock_skew_and_kept_as_sent(
    captured_at: datetime, flagged: bool
) -> None:
    decoded = _decoded(_message(STEEL, captured_at=captured_at))
    assert decoded.quality_flags == ((CLOCK_SKEW,) if flagged else ())
    assert decoded.meta.captured_at == captured_at  # what is stored is the camera's time, as sent


def test_a_record_without_a_timestamp_is_not_judged_for_clock_skew_and_the_limit_is_a_setting() -> None:
    skewed = datetime(2199, 1, 1, tzinfo=UTC)
    for stamp in (None, -1):
        assert _decoded(_message(STEEL, captured_at=skewed, timestamp_ms=stamp)).quality_flags == ()
    strict = QualityGate(policy=QualityPolicy(clock_skew_max_s=30))
    late = _message(STEEL, captured_at=CAPTURED - timedelta(seconds=45))
    assert _decoded(late, strict).quality_flags == (CLOCK_SKEW,)
    gate = QualityGate(policy=QualityPolicy(clock_skew_max_s=30))
    verdict = gate.judge(
        b"", contracts.JPEG, STEEL, make_meta(captured_at=CAPTURED - timedelta(seconds=45)), AT_CAPTURE_MS
    )
    assert verdict.skew_s == pytest.approx(-45.0)


# ---------------------------------------------------------------------------------------------
# the project's synthetic steel frames pass: the false-flag rate
# ---------------------------------------------------------------------------------------------


def test_synthetic_steel_frames_from_the_simulator_pass_the_gate() -> None:
    """300 frames of the project's generator (256 × 512, 3 random defects per 1600 px of width on
    average, PNG): no frame is flagged. docs/streaming-worker.md gives the wider measure (900
    frames at 1600 px, 0.05 to 6 defects, PNG and JPEG: 0 flagged)."""
    plan = SimulationPlan(frames=300, strips=3, seed=11, defect_rate=3.0, frame_width=512)
    maker = FrameMaker(plan, datetime(2026, 12, 1, tzinfo=UTC))
    gate = QualityGate()
    flagged: Counter[str] = Counter()
    judged = 0
    for strip in maker.order():
        frame, _ = maker.make(strip)
        data = encode_image(frame.image, "png")
        stamp = int(frame.meta.captured_at.timestamp() * 1000)
        flagged.update(gate.judge(data, contracts.PNG, frame.image, frame.meta, stamp).flags)
        judged += 1
    assert judged == 300
    assert not flagged, f"false flags on {judged} synthetic frames: {dict(flagged)}"


# ---------------------------------------------------------------------------------------------
# the calibration file
# ---------------------------------------------------------------------------------------------

CALIBRATION = """\
version: 1
defaults:
  min_std: 4
cameras:
  cam-top-1:
    min_mean: 40
    max_mean: 200
  L2/cam-top-1:
    bit_depth: 12
"""


def test_a_calibration_file_sets_limits_per_camera_over_its_defaults_and_line_camera_wins(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(CALIBRATION)
    calibrations = load_calibrations(path)
    assert calibrations.defaults == Calibration(min_std=4)
    assert calibrations.for_camera("L1", "cam-top-1") == Calibration(min_mean=40, max_mean=200, min_std=4)
    assert calibrations.for_camera("L2", "cam-top-1") == Calibration(min_std=4, bit_depth=12)
    assert calibrations.for_camera("L1", "cam-bottom-1") == Calibration(min_std=4)
    gate = QualityGate(calibrations)
    darker = np.clip(STEEL.astype(np.int16) - 95, 0, 255).astype(np.uint8)  # mean about 33, spread kept
    dim = _message(darker)  # dark for cam-top-1 (min_mean 40), on line L1 only
    assert _decoded(dim, gate).quality_flags == (DARK,)
    assert _decoded(_message(darker, camera="cam-side"), gate).quality_flags == ()
    twelve = replace(
        _png16(TWELVE_BIT), headers=tuple(contracts.frame_headers(make_meta(line="L2"), contracts.PNG))
    )
    decoded = _decoded(twelve, gate)
    assert decoded.quality_flags == ()  # calibrated as a 12-bit camera: neither bit-depth nor flat
    np.testing.assert_array_equal(decoded.image, (TWELVE_BIT >> 4).astype(np.uint8))  # the top 8 of 12 bits
    eight_bit = _message(STEEL, line="L2")
    assert _decoded(eight_bit, gate).quality_flags == (BIT_DEPTH,)  # it should send 12-bit samples
    assert load_calibrations(None) == parse_calibrations({"version": 1}, source="built-in defaults")


MALFORMED = [
    ("version: 1\ncameras:\n  cam-1:\n    min_mean: forty\n", "at cameras/cam-1/min_mean: 'forty' is not"),
    ("version: 1\ncameras:\n  cam-1:\n    min_men: 4\n", "Additional properties are not allowed ('min_men'"),
    ("version: 1\ndefaults:\n  max_clipped_share: 1.5\n", "at defaults/max_clipped_share: 1.5 is greater"),
    (
        "version: 1\ndefaults:\n  bit_depth: 24\n",
        "at defaults/bit_depth: 24 is greater than the maximum of 16",
    ),
    (
        "version: 1\ncameras:\n  cam-1:\n    min_mean: 200\n    max_mean: 100\n",
        "at cameras/cam-1: expected min_mean below max_mean, received min_mean 200 and max_mean 100",
    ),
    ("version: 2\n", "at version: 1 was expected"),
    ("cameras: {}\n", "at (top level): 'version' is a required property"),
    ("version: 1\ncameras: [cam-1]\n", "at cameras: ['cam-1'] is not of type 'object'"),
    ("version: 1\ncameras:\n  'cam 1': {}\n", "'cam 1' does not match"),
    ("version: 1\ncameras: {a: [\n", "expected YAML or JSON"),
    ("- 1\n", "at (top level): [1] is not of type 'object'"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_a_malformed_calibration_file_is_refused_naming_the_file_the_field_and_what_was_expected(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_calibrations(path)
    assert str(refused.value).startswith(f"CAMERA_CALIBRATION={path}: ")
    assert message in str(refused.value)


def test_a_missing_calibration_file_stops_the_worker_at_start_up(tmp_path: Path) -> None:
    settings = load_settings(
        {},
        {
            "bootstrap_servers": "127.0.0.1:9",
            "database_url": "postgresql://nobody@127.0.0.1:9/none",
            "model_path": str(tmp_path),
            "camera_calibration": str(tmp_path / "missing.yaml"),
        },
    )
    with pytest.raises(ConfigError, match=r"CAMERA_CALIBRATION=.*missing\.yaml: expected a calibration file"):
        quality_gate(settings)


# ---------------------------------------------------------------------------------------------
# the settings
# ---------------------------------------------------------------------------------------------

REQUIRED = {"bootstrap_servers": "k:9092", "database_url": "postgresql://u@h/d", "model_path": "/m"}


def test_the_checks_and_the_refusing_checks_are_settings() -> None:
    settings = load_settings({"IMAGE_QUALITY_REFUSE": "flat, bit-depth"}, REQUIRED)
    assert settings.image_quality_checks == frozenset(CHECKS)
    assert settings.image_quality_refuse == {FLAT, BIT_DEPTH}
    assert (settings.clock_skew_max_s, settings.camera_alert_frames, settings.camera_alert_severity) == (
        300,
        20,
        "high",
    )
    assert settings.describe()["image_quality_refuse"] == [BIT_DEPTH, FLAT]
    assert parse_checks("none") == frozenset() and parse_checks("ALL") == frozenset(CHECKS)
    with pytest.raises(
        ConfigError, match=r"IMAGE_QUALITY_CHECKS: expected all, none or some of dark,.*received 'blurry'"
    ):
        load_settings({"IMAGE_QUALITY_CHECKS": "blurry"}, REQUIRED)
    with pytest.raises(
        ConfigError, match="IMAGE_QUALITY_REFUSE names checks that IMAGE_QUALITY_CHECKS does not run: flat"
    ):
        load_settings({"IMAGE_QUALITY_CHECKS": "dark", "IMAGE_QUALITY_REFUSE": "flat"}, REQUIRED)
    with pytest.raises(ConfigError, match="expected checks that IMAGE_QUALITY_CHECKS runs"):
        QualityPolicy(checks=frozenset({DARK}), refuse=frozenset({FLAT}))
