"""The simulator against the real embedded broker: what arrives on the frames topic is what the
worker accepts (its own decoder), with consistent strip geometry, roll marks at their pitch, folder
images sent as they are, and clear refusals of bad options."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from worker import cli
from worker.camera.frames import SimulatedFrame
from worker.camera.plan import RollMark, SimulationPlan, frames_to_cover, roll_pitch_m
from worker.camera.send import simulate
from worker.core import contracts
from worker.core.errors import ConfigError, DatasetError, InfrastructureError
from worker.core.records import DecodedFrame, KafkaCoordinates
from worker.infra.broker import EmbeddedBroker
from worker.streaming.decode import DecodeLimits, InboundMessage, Rejected, decode_message

LIMITS = DecodeLimits(max_frame_bytes=16 * 1024 * 1024, max_frame_pixels=40_000_000)
START = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)


def _per_strip(summary: Any) -> dict[str, int]:
    """Frames sent per strip id, in the order the strips ran."""
    return {s.strip_id: s.frames for s in summary.strips}


def _topic() -> str:
    return f"sim-{uuid.uuid4().hex[:12]}"


def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    """Every record of `topic` (all partitions, from the start) until `count` arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        time.sleep(0.3)  # anything beyond `count` would be a bug: collect it too
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def _decode(record: Any) -> DecodedFrame:
    """The record through the worker's own decoder; fails the test if the worker would refuse it."""
    message = InboundMessage(
        source=KafkaCoordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
    )
    decoded = decode_message(message, LIMITS)
    assert not isinstance(decoded, Rejected), decoded
    return decoded


def _collect() -> tuple[list[SimulatedFrame], Callable[[SimulatedFrame], None]]:
    frames: list[SimulatedFrame] = []
    return frames, frames.append


# ---------------------------------------------------------------------------------------------
# frames on the topic
# ---------------------------------------------------------------------------------------------


def test_frames_arrive_decodable_with_valid_metadata_strip_keys_and_consistent_geometry(
    broker: EmbeddedBroker,
) -> None:
    """N frames of two strips arrive once each, keyed by strip id, accepted by the worker's decoder,
    identical to what was generated (PNG is lossless); per strip, positions advance by frame height ×
    mm/px and capture times by that distance / line speed, in the order sent; the missing topic is
    created with the requested partitions."""
    topic = _topic()
    sent, on_frame = _collect()
    plan = SimulationPlan(
        topic=topic,
        strip_ids=("S-A", "S-B"),
        frames=9,
        fps=0,
        frame_height=128,
        frame_width=320,
        mm_per_px_along=0.5,
        line_speed_mps=4.0,
        partitions=3,
        start_at=START,
    )
    summary = simulate(broker.bootstrap_servers, plan, progress=False, on_frame=on_frame)

    assert summary.frames_sent == 9
    assert summary.topic_created
    assert _per_strip(summary) == {"S-A": 5, "S-B": 4}
    records = _consume(broker.bootstrap_servers, topic, 9)
    assert len(records) == 9
    assert {r.partition for r in records} <= {0, 1, 2}
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        consumer.close()

    generated = {f.meta.frame_id: f for f in sent}
    by_strip: dict[str, list[DecodedFrame]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        frame = _decode(record)
        assert record.key == frame.meta.strip_id.encode()
        assert dict(record.headers)[contracts.CONTENT_TYPE_HEADER] == b"image/png"
        assert np.array_equal(frame.image, generated[frame.meta.frame_id].image)
        by_strip[frame.meta.strip_id].append(frame)

    step_m = 128 * 0.5 / 1000
    for strip_id, frames in by_strip.items():
        assert [f.meta.frame_id for f in frames] == [f"{strip_id}-f{k:06d}" for k in range(len(frames))]
        for k, f in enumerate(frames):
            assert f.meta.position_m == pytest.approx(k * step_m)
            assert f.meta.mm_per_px_along == 0.5
            assert f.meta.line == "L1" and f.meta.surface == "top"
        for a, b in itertools.pairwise(frames):
            assert b.meta.position_m > a.meta.position_m
            dt = (b.meta.captured_at - a.meta.captured_at).total_seconds()
            assert dt == pytest.approx(step_m / 4.0, abs=2e-6)  # microsecond resolution
    assert by_strip["S-A"][0].meta.captured_at == START


def test_strip_length_sets_the_frame_count_and_strips_follow_each_other_in_time(
    broker: EmbeddedBroker,
) -> None:
    """With a strip length, each strip gets the frames that cover it; the next strip starts after
    the previous one passed plus the gap; --frames caps the total."""
    sent, on_frame = _collect()
    plan = SimulationPlan(
        topic=_topic(),
        strip_ids=("L-1", "L-2"),
        strip_length_m=1.0,
        fps=0,
        frame_height=64,
        frame_width=128,
        mm_per_px_along=2.0,  # 0.128 m per frame: 8 frames cover 1 m
        line_speed_mps=0.5,
        strip_gap_s=3.0,
        start_at=START,
    )
    summary = simulate(broker.bootstrap_servers, plan, progress=False, on_frame=on_frame)

    assert frames_to_cover(1.0, plan) == 8
    assert _per_strip(summary) == {"L-1": 8, "L-2": 8}
    assert [s.length_m for s in summary.strips] == pytest.approx([1.024, 1.024])
    second = [f.meta for f in sent if f.meta.strip_id == "L-2"]
    assert second[0].captured_at == START + timedelta(seconds=1.024 / 0.5 + 3.0)
    assert [f.meta.strip_id for f in sent] == ["L-1"] * 8 + ["L-2"] * 8

    capped = simulate(
        broker.bootstrap_servers,
        SimulationPlan(**{**plan.__dict__, "topic": _topic(), "frames": 11}),
        progress=False,
    )
    assert _per_strip(capped) == {"L-1": 8, "L-2": 3}


def test_interleaved_strips_alternate_and_start_together(broker: EmbeddedBroker) -> None:
    """--interleave: frames of the strips in turn, all strips starting at the same time."""
    sent, on_frame = _collect()
    plan = SimulationPlan(
        topic=_topic(), strips=3, frames=6, interleave=True, fps=0, frame_height=32, frame_width=64
    )
    simulate(broker.bootstrap_servers, plan, progress=False, on_frame=on_frame)
    ids = [f.meta.strip_id for f in sent]
    assert ids[:3] == ids[3:] and len(set(ids)) == 3
    assert all(i.startswith("SIM-") and i.endswith(f"-0{n}") for n, i in enumerate(ids[:3], start=1))
    assert len({f.meta.captured_at for f in sent[:3]}) == 1


def test_fixed_frame_rate_paces_sending(broker: EmbeddedBroker) -> None:
    """--fps 20: six frames take at least 5/20 s to send (the first goes at once)."""
    plan = SimulationPlan(topic=_topic(), frames=6, fps=20, frame_height=32, frame_width=64)
    started = time.monotonic()
    summary = simulate(broker.bootstrap_servers, plan, progress=False)
    assert summary.frames_sent == 6
    assert time.monotonic() - started >= 5 / 20


def test_jpeg_frames_decode_with_the_workers_decoder(broker: EmbeddedBroker) -> None:
    """--encoding jpeg: content-type image/jpeg, the worker decodes a close copy of the frame."""
    topic = _topic()
    sent, on_frame = _collect()
    plan = SimulationPlan(topic=topic, frames=2, fps=0, encoding="jpeg", frame_height=64, frame_width=96)
    simulate(broker.bootstrap_servers, plan, progress=False, on_frame=on_frame)
    records = _consume(broker.bootstrap_servers, topic, 2)
    assert len(records) == 2
    for record in records:
        assert dict(record.headers)[contracts.CONTENT_TYPE_HEADER] == b"image/jpeg"
        frame = _decode(record)
        original = next(f.image for f in sent if f.meta.frame_id == frame.meta.frame_id)
        assert np.abs(frame.image.astype(int) - original.astype(int)).mean() < 4


# ---------------------------------------------------------------------------------------------
# roll marks
# ---------------------------------------------------------------------------------------------


def test_roll_marks_land_once_per_pitch_at_their_column_in_the_generator_masks(
    broker: EmbeddedBroker,
) -> None:
    """A roll mark of pitch P is printed at phase + k·P on every strip, k = 0, 1, …, to the strip's
    end, at one column; each print is painted (generator mask true at its centre) in the frame whose
    rows cover it, with the frame's metadata placing it where the summary says."""
    topic = _topic()
    sent, on_frame = _collect()
    pitch = roll_pitch_m(0.2)  # 0.628 m
    plan = SimulationPlan(
        topic=topic,
        strip_ids=("R-1", "R-2"),
        strip_length_m=3.2,
        fps=0,
        frame_height=128,
        frame_width=256,
        mm_per_px_along=1.0,
        mm_per_px_across=2.0,
        edge_offset_mm=10.0,
        defect_rate=0.0,
        roll_marks=(RollMark("scratches", pitch, column_mm=210.0), RollMark("holes", 1.1)),
        seed=3,
    )
    summary = simulate(broker.bootstrap_servers, plan, progress=False, on_frame=on_frame)
    frames = {f.meta.frame_id: f for f in sent}

    assert _per_strip(summary) == {"R-1": 25, "R-2": 25}  # 3.2 m / 0.128 m
    for strip in ("R-1", "R-2"):
        for name, step in (("scratches", pitch), ("holes", 1.1)):
            positions = [m.position_m for m in summary.marks if m.strip_id == strip and m.class_name == name]
            assert 0 <= positions[0] < step
            assert len(positions) == math.floor((3.2 - positions[0]) / step) + 1
            assert np.diff(positions) == pytest.approx([step] * (len(positions) - 1))
            columns = {m.across_mm for m in summary.marks if m.strip_id == strip and m.class_name == name}
            assert len(columns) == 1
    assert {m.across_mm for m in summary.marks if m.class_name == "scratches"} == {210.0}

    for mark in summary.marks:
        frame = frames[mark.frame_id]
        assert frame.masks is not None and frame.masks[mark.class_name][mark.row, mark.column]
        assert frame.meta.along_m(mark.row) == pytest.approx(mark.position_m, abs=0.0005)
        assert frame.meta.across_mm(mark.column) == mark.across_mm
    marked = {m.frame_id for m in summary.marks}
    for frame_id, frame in frames.items():  # defect_rate 0: only the marks are painted
        assert frame.masks is not None
        assert any(mask.any() for mask in frame.masks.values()) == (frame_id in marked)
    assert summary.defects_by_class == {
        "scratches": sum(m.class_name == "scratches" for m in summary.marks),
        "holes": sum(m.class_name == "holes" for m in summary.marks),
    }
    assert "roll mark scratches every 0.628319 m" in summary.table()

    records = _consume(broker.bootstrap_servers, topic, 50)
    assert sorted(_decode(r).meta.frame_id for r in records) == sorted(frames)


def test_roll_mark_parsing_and_pitch() -> None:
    """CLASS:PITCH_M[:COLUMN_MM] parses; the pitch of a roll is its circumference."""
    assert RollMark.parse("rolling:2.01") == RollMark("rolling", 2.01)
    assert RollMark.parse("holes:1.5:800") == RollMark("holes", 1.5, 800.0)
    assert roll_pitch_m(0.64) == pytest.approx(2.0106, abs=1e-4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dents:1.0", "unknown class 'dents'; expected one of ['holes', 'scratches', 'rolling']"),
        ("holes:0", "pitch must be a number of metres > 0"),
        ("holes:-2.5", "pitch must be a number of metres > 0"),
        ("holes:nan", "pitch must be a number of metres > 0"),
        ("holes", "expected CLASS:PITCH_M or CLASS:PITCH_M:COLUMN_MM"),
        ("holes:1:2:3", "expected CLASS:PITCH_M or CLASS:PITCH_M:COLUMN_MM"),
        ("holes:fast", "expected numbers for PITCH_M and COLUMN_MM"),
        ("holes:1:-5", "column must be >= 0 mm"),
    ],
)
def test_bad_roll_marks_are_refused_with_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RollMark.parse(text)


def test_roll_mark_outside_the_cameras_view_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"column 700 mm is outside the camera's view, 10\.\.650 mm"):
        SimulationPlan(
            frames=1, frame_width=320, mm_per_px_across=2.0, edge_offset_mm=10.0,
            roll_marks=(RollMark("holes", 1.0, 700.0),),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# folder mode
# ---------------------------------------------------------------------------------------------


def _write_images(folder: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=(h, 200), dtype=np.uint8) for h in (100, 120, 140)]
    for n, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"frame-{n}.png"), image)
    (folder / "notes.txt").write_text("not an image")
    return images


def test_folder_images_are_cycled_sent_as_they_are_and_positions_follow_their_heights(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """--images DIR: the folder's images in name order, cycled; raw encoding carries the exact
    pixels and their size; each position advances by the previous image's height."""
    images = _write_images(tmp_path)
    topic = _topic()
    plan = SimulationPlan(
        topic=topic, strip_ids=("F-1",), frames=5, fps=0, images_dir=tmp_path, encoding="raw",
        mm_per_px_along=0.5,
    )  # fmt: skip
    summary = simulate(broker.bootstrap_servers, plan, progress=False)
    assert summary.frames_sent == 5 and summary.defects_by_class == {} and summary.marks == ()

    records = sorted(_consume(broker.bootstrap_servers, topic, 5), key=lambda r: r.offset)
    frames = [_decode(r) for r in records]
    expected = [images[k % 3] for k in range(5)]
    for frame, image in zip(frames, expected, strict=True):
        assert np.array_equal(frame.image, image)
        assert (frame.meta.height, frame.meta.width) == image.shape
    rows = np.cumsum([0] + [image.shape[0] for image in expected[:-1]])
    assert [f.meta.position_m for f in frames] == pytest.approx(list(rows * 0.5 / 1000))


def test_folder_strip_length_ends_each_strip_where_it_is_covered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Folder images of varying height: a 0.2 m strip at 1 mm/px takes frames of 100+120 rows."""
    _write_images(tmp_path)
    plan = SimulationPlan(
        topic=_topic(), strip_ids=("F-2", "F-3"), strip_length_m=0.2, fps=0, images_dir=tmp_path
    )
    summary = simulate(broker.bootstrap_servers, plan, progress=False)
    assert _per_strip(summary) == {"F-2": 2, "F-3": 2}  # 100+120 rows, then 140+100 rows
    assert [s.length_m for s in summary.strips] == pytest.approx([0.22, 0.24])


def test_empty_or_missing_folder_is_refused_before_connecting(tmp_path: Path) -> None:
    """No broker is needed to learn that the folder is unusable (port 1 would never answer)."""
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="holds no images"):
        simulate("127.0.0.1:1", SimulationPlan(frames=3, images_dir=tmp_path), progress=False)
    with pytest.raises(DatasetError, match="expected a folder of images"):
        simulate("127.0.0.1:1", SimulationPlan(frames=3, images_dir=tmp_path / "nope"), progress=False)


def test_unreachable_broker_is_an_infrastructure_error() -> None:
    with pytest.raises(InfrastructureError, match=r"no Kafka broker answered at 127\.0\.0\.1:1 within 1 s"):
        simulate("127.0.0.1:1", SimulationPlan(frames=1), progress=False, connect_timeout_s=1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "expected --frames or --strip-length-m"),
        ({"frames": 0}, "--frames must be >= 1, received 0"),
        ({"frames": 2, "strips": 3}, "--frames 2 cannot be shared out between 3 strips"),
        ({"strip_length_m": -1.0}, "--strip-length-m must be > 0, received -1.0"),
        ({"frames": 1, "line_speed_mps": 0.0}, "--line-speed-mps must be > 0"),
        ({"frames": 1, "fps": -1.0}, "--fps must be >= 0"),
        ({"frames": 1, "strip_ids": ("A", "A")}, "expected distinct strip ids"),
        ({"frames": 1, "strip_ids": ("A B",)}, "--strip-id 'A B': expected 1..190 characters without spaces"),
        ({"frames": 1, "encoding": "gif"}, "--encoding: expected one of"),
        ({"frames": 1, "defect_rate": -0.5}, "--defect-rate must be >= 0"),
        ({"frames": 1, "start_at": datetime(2024, 1, 1)}, "expected a time zone aware datetime"),
        (
            {"frames": 1, "images_dir": Path("x"), "roll_marks": (RollMark("holes", 1.0),)},
            "cannot be combined with --images",
        ),
    ],
)
def test_bad_plans_are_refused_naming_the_option(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SimulationPlan(**changes)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def only_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `steel-worker` with just the simulate subcommand (the others load heavy libraries)."""
    assert "worker.camera.command" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("worker.camera.command",))


@pytest.mark.usefixtures("only_simulate")
def test_simulate_command_sends_frames_and_prints_the_summary(
    broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`steel-worker simulate` with the broker and topic from the environment, a named strip and a
    roll mark: exit 0, the frames on the topic, the marks in the printed summary."""
    topic = _topic()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("FRAMES_TOPIC", topic)
    argv = [
        "simulate", "--strip-id", "CLI-1", "--frames", "4", "--fps", "0", "--frame-height", "64",
        "--frame-width", "128", "--roll-mark", "holes:0.05:30", "--no-progress",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 frames" in out and f"sent to {topic}" in out
    assert "strip CLI-1: 4 frames, 0.26 m" in out
    assert "roll mark holes every 0.05 m: 5 prints at" in out
    records = _consume(broker.bootstrap_servers, topic, 4)
    assert sorted(_decode(r).meta.frame_id for r in records) == [f"CLI-1-f{k:06d}" for k in range(4)]


@pytest.mark.usefixtures("only_simulate")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--roll-mark", "dents:2"], "unknown class 'dents'"),
        (["--roll-mark", "rolling:0"], "pitch must be a number of metres > 0"),
        (["--images", "{empty}"], "holds no images"),
        (["--images", "{empty}", "--roll-mark", "holes:1"], "--roll-mark shape synthetic frames"),
        (["--images", "{empty}", "--defect-rate", "2"], "--defect-rate shape synthetic frames"),
        (["--frames", "1", "--strips", "2"], "--frames 1 cannot be shared out between 2 strips"),
    ],
)
def test_simulate_command_bad_options_exit_2_with_a_clear_message(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{empty}", str(tmp_path)) for a in argv]
    assert cli.main(["simulate", "--bootstrap", "127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steel-worker simulate: error: ")
    assert message in err


@pytest.mark.usefixtures("only_simulate")
def test_simulate_command_without_a_broker_says_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert cli.main(["simulate", "--frames", "1"]) == 2
    assert "set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap" in capsys.readouterr().err


# --- strip scenarios -------------------------------------------------------------------------------


def _made(plan: SimulationPlan) -> list[tuple[SimulatedFrame, list[Any]]]:
    from worker.camera.frames import FrameMaker  # noqa: PLC0415

    maker = FrameMaker(plan, START)
    return [maker.make(strip) for strip in maker.order()]


def test_each_strip_follows_its_scenario_clean_marked_or_scratched_by_a_guide() -> None:
    from worker.camera.plan import DefectCluster, StripScenario  # noqa: PLC0415

    pitch = roll_pitch_m(0.3)
    guide = DefectCluster("scratches", start_m=2.0, span_m=1.5, count=7, column_mm=150.0)
    plan = SimulationPlan(
        strip_ids=("CLEAN", "ROLL", "GUIDE", "CLEAN-2"),
        strip_length_m=6.0,
        frame_height=128,
        frame_width=256,
        mm_per_px_along=2.0,
        mm_per_px_across=1.0,
        scenarios=(
            StripScenario("clean", defect_rate=0.0),
            StripScenario("roll mark", defect_rate=0.0, roll_marks=(RollMark("rolling", pitch),)),
            StripScenario("guide scratches", defect_rate=0.0, clusters=(guide,)),
        ),
        seed=5,
    )
    assert plan.scenario(3).name == "clean"  # the scenarios repeat
    by_strip: dict[str, list[tuple[SimulatedFrame, list[Any]]]] = defaultdict(list)
    for frame, marks in _made(plan):
        by_strip[frame.meta.strip_id].append((frame, marks))
    assert not any(f.defects for s in ("CLEAN", "CLEAN-2") for f, _ in by_strip[s])
    roll = [m for _, marks in by_strip["ROLL"] for m in marks]
    assert len(roll) >= 6 and {m.class_name for m in roll} == {"rolling"}
    assert all(not marks for s in ("CLEAN", "GUIDE") for _, marks in by_strip[s])
    scratched = [
        (f.meta.position_m + d.row * plan.mm_per_px_along / 1000, d.column)
        for f, _ in by_strip["GUIDE"]
        for d in f.defects
    ]
    assert len(scratched) == 7 and all(2.0 <= at < 3.5 for at, _ in scratched)
    assert all(abs(column - 150) <= 15 for _, column in scratched)  # one lane across the strip


def test_plans_without_scenarios_draw_what_they_always_drew() -> None:
    """Adding scenarios changed nothing for the plans that do not use them (same seed, same frames)."""
    plan = SimulationPlan(strip_ids=("A", "B"), frames=6, frame_height=128, frame_width=256, seed=11)
    first, second = _made(plan), _made(plan)
    assert [f.defects for f, _ in first] == [f.defects for f, _ in second]
    assert plan.scenario(1).defect_rate == plan.defect_rate and plan.scenario(0).roll_marks == ()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: c("oil", 1.0, 1.0, 3), "unknown class 'oil'"),
        (lambda c: c("scratches", -1.0, 1.0, 3), "start must be >= 0 m"),
        (lambda c: c("scratches", 1.0, 0.0, 3), "span must be > 0 m"),
        (lambda c: c("scratches", 1.0, 1.0, 0), "count must be >= 1"),
        (lambda c: c("scratches", 1.0, float("nan"), 3), "span must be > 0 m"),
    ],
)
def test_a_bad_cluster_says_what_is_wrong(make: Callable[..., Any], message: str) -> None:
    from worker.camera.plan import DefectCluster  # noqa: PLC0415

    with pytest.raises(ConfigError, match=message):
        make(DefectCluster)


def test_a_cluster_outside_the_cameras_view_or_with_folder_images_is_refused(tmp_path: Path) -> None:
    from worker.camera.plan import DefectCluster, StripScenario  # noqa: PLC0415

    far = StripScenario("guide", clusters=(DefectCluster("scratches", 1.0, 1.0, 3, column_mm=5000.0),))
    with pytest.raises(ConfigError, match="cluster scratches: column 5000 mm is outside the camera's view"):
        SimulationPlan(strips=1, frames=1, scenarios=(far,))
    with pytest.raises(ConfigError, match="cannot be combined with --images"):
        SimulationPlan(strips=1, frames=1, images_dir=tmp_path, scenarios=(StripScenario("clean", 0.0),))
    with pytest.raises(ConfigError, match="defect rate must be >= 0"):
        StripScenario("bad", defect_rate=-1.0)
