"""Camera alerts on real PostgreSQL (`worker.alerts.camera`): a run of frames failing the
image-quality gate raises one alert per run, a frame read again counts nothing twice, the alert is
published through the outbox as a valid alert.v1 message, the alert rules skip the detections of
frames flagged for their pixels, and revision 0010 goes down and up again."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import Defect, register, strip_results

from worker.alerts.camera import CameraHealth, CameraObservation, cause_and_prevention
from worker.alerts.config import load_rules
from worker.alerts.engine import AlertEngine
from worker.alerts.outbox import publish_pending
from worker.alerts.store import list_alerts
from worker.core import contracts
from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError, SchemaError
from worker.core.quality import BIT_DEPTH, CLOCK_SKEW, DARK, FLAT
from worker.core.records import KafkaCoordinates
from worker.storage import migrate
from worker.storage.engine import create_engine
from worker.storage.writer import StorageWriter

MODEL = "m" * 64
RECEIVED = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


class _Delivered:
    is_done = True
    exception = None

    def succeeded(self) -> bool:
        return True


class _Producer:
    """Acknowledges every send at once (the broker is tested in test_worker_camera_health)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        self.sent.append((topic, key, value))
        return _Delivered()

    def flush(self, timeout: float | None = None) -> None:
        return None


def _frames(
    flags: Sequence[tuple[str, ...] | str],
    *,
    camera: str = "cam-top-1",
    first_offset: int = 0,
    partition: int = 0,
    strip: str = "S1",
) -> list[CameraObservation]:
    """Consecutive frames of one camera: each item its flags, or "refused" (refused for being flat)."""
    return [
        CameraObservation(
            source=KafkaCoordinates("mill.frames", partition, first_offset + n),
            line="L1",
            camera=camera,
            surface="top",
            strip_id=strip,
            frame_id=f"{strip}-{camera}-p{partition}-f{first_offset + n:04d}",
            position_m=(first_offset + n) * 0.256,
            flags=(FLAT,) if item == "refused" else tuple(item),
            refused=item == "refused",
            received_at=RECEIVED,
        )
        for n, item in enumerate(flags)
    ]


def _camera_alerts(engine: sa.Engine) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT * FROM alerts WHERE rule_kind = 'camera' ORDER BY id")).mappings()
        )


def _state(engine: sa.Engine, camera: str = "cam-top-1") -> sa.RowMapping:
    with engine.connect() as conn:
        return (
            conn.execute(sa.text("SELECT * FROM camera_health WHERE camera = :c"), {"c": camera})
            .mappings()
            .one()
        )


@pytest.fixture
def health(worker_database_url: str) -> Iterator[CameraHealth]:
    """CameraHealth as the worker's login (what it may do is all the worker may do)."""
    engine = create_engine(worker_database_url)
    yield CameraHealth(engine, frames=5, severity="high", model_version=MODEL)
    engine.dispose()


GOOD: tuple[str, ...] = ()
BLACK = (DARK, FLAT)


def test_a_run_of_bad_frames_raises_one_camera_alert_and_a_longer_run_no_more(
    health: CameraHealth, engine: sa.Engine
) -> None:
    observed = health.observe(_frames([GOOD, BLACK, BLACK, "refused", (FLAT, BIT_DEPTH)]))
    assert len(observed.counted) == 5 and observed.raised == ()  # 4 bad in a row: not yet
    (alert,) = health.observe(_frames([BLACK], first_offset=5)).raised
    assert (alert.line, alert.camera, alert.strip_id, alert.frames) == ("L1", "cam-top-1", "S1", 5)
    assert dict(alert.flags) == {DARK: 3, FLAT: 5, BIT_DEPTH: 1}
    assert health.observe(_frames([BLACK] * 20, first_offset=6)).raised == ()  # the same run goes on
    (row,) = _camera_alerts(engine)
    assert row["id"] == alert.id and row["dedup_key"] == "camera/L1/cam-top-1/mill.frames[0]@1"
    assert (row["rule"], row["class_id"], row["severity"], row["detection_count"]) == (
        "camera-health",
        None,
        "high",
        5,
    )
    assert row["frame_ids"] == [f"S1-cam-top-1-p0-f{n:04d}" for n in range(1, 6)]
    assert (row["evidence"], row["max_confidence"], row["model_version"]) == ([], 0.0, MODEL)
    assert row["observed_at"] == RECEIVED  # the broker's time, not the camera's clock
    assert (row["position_start_m"], row["position_end_m"]) == pytest.approx((0.256, 5 * 0.256))
    assert row["details"]["refused"] == 1 and row["details"]["frames"] == 5
    assert row["details"]["first_frame_id"] == "S1-cam-top-1-p0-f0001"
    assert "dead lamp" in row["details"]["cause"] and "check the lamp" in row["details"]["prevention"]
    state = _state(engine)
    assert (state["run_frames"], state["alert_id"], state["positions"]) == (
        25,  # frame 0 was good
        alert.id,
        {"mill.frames[0]": 26},
    )


def test_a_good_frame_ends_the_run_and_the_next_run_raises_its_own_alert(
    health: CameraHealth, engine: sa.Engine
) -> None:
    first = health.observe(_frames([BLACK] * 5)).raised
    second = health.observe(_frames([BLACK, BLACK, GOOD, *[BLACK] * 4], first_offset=5)).raised
    assert len(first) == 1 and second == ()  # 4 after the good frame: not yet
    (third,) = health.observe(_frames([BLACK], first_offset=12)).raised
    assert third.id != first[0].id
    assert [a["dedup_key"] for a in _camera_alerts(engine)] == [
        "camera/L1/cam-top-1/mill.frames[0]@0",
        "camera/L1/cam-top-1/mill.frames[0]@8",
    ]
    assert health.observe(_frames([GOOD], first_offset=13)).raised == ()
    assert (_state(engine)["run_frames"], _state(engine)["alert_id"]) == (0, None)


def test_two_runs_completed_in_one_batch_raise_two_alerts(health: CameraHealth, engine: sa.Engine) -> None:
    raised = health.observe(_frames([*[BLACK] * 5, GOOD, *[BLACK] * 5])).raised
    assert len(raised) == 2 and len(_camera_alerts(engine)) == 2


def test_frames_read_again_after_a_crash_count_nothing_twice(health: CameraHealth, engine: sa.Engine) -> None:
    batch = _frames([BLACK] * 3)
    assert len(health.observe(batch).counted) == 3
    again = health.observe(batch)  # the same batch redelivered: its offsets lie below the stored ones
    assert again.counted == () and again.raised == ()
    assert _state(engine)["run_frames"] == 3
    (alert,) = health.observe([*batch, *_frames([BLACK, BLACK], first_offset=3)]).raised  # replay + new
    assert alert.frames == 5
    assert health.observe(_frames([BLACK] * 5)).raised == ()  # all of it again: nothing
    assert len(_camera_alerts(engine)) == 1


def test_cameras_and_partitions_are_counted_apart(health: CameraHealth, engine: sa.Engine) -> None:
    mixed = [
        *_frames([BLACK] * 3, camera="cam-a"),
        *_frames([BLACK] * 3, camera="cam-b"),
        *_frames([BLACK] * 2, camera="cam-a", partition=1),
    ]
    raised = health.observe(mixed).raised
    assert [a.camera for a in raised] == ["cam-a"] and raised[0].frames == 5
    assert _state(engine, "cam-b")["run_frames"] == 3
    assert _state(engine, "cam-a")["positions"] == {"mill.frames[0]": 3, "mill.frames[1]": 2}


def test_without_alerts_the_runs_are_counted_and_nothing_raised(
    worker_database_url: str, engine: sa.Engine
) -> None:
    counting = CameraHealth(create_engine(worker_database_url), frames=0, severity="low", model_version=MODEL)
    try:
        assert counting.observe(_frames([BLACK] * 30)).raised == ()
    finally:
        counting.engine.dispose()
    assert _state(engine)["run_frames"] == 30 and _camera_alerts(engine) == []
    with pytest.raises(ConfigError, match="CAMERA_ALERT_SEVERITY: expected one of low, medium, high"):
        CameraHealth(engine, frames=3, severity="urgent", model_version=MODEL)


def test_the_camera_alert_goes_out_through_the_outbox_as_a_valid_alert_v1_message(
    health: CameraHealth, engine: sa.Engine
) -> None:
    health.observe(_frames([(CLOCK_SKEW,)] * 5))
    producer = _Producer()
    assert publish_pending(health.engine, producer, "mill.alerts") == 1
    ((topic, key, value),) = producer.sent
    assert value is not None
    message = json.loads(value)
    contracts.validate(contracts.ALERT, message)
    assert (topic, key) == ("mill.alerts", b"camera/L1/cam-top-1/mill.frames[0]@0")
    assert (message["rule_kind"], message["class_id"], message["class_name"], message["count"]) == (
        "camera",
        None,
        "camera",
        5,
    )
    assert message["cause"].startswith("the camera's clock differs from the broker's")
    assert message["prevention"] == "synchronise the camera's clock (NTP)"
    assert message["details"]["flags"] == {CLOCK_SKEW: 5}
    broken = {**message, "rule_kind": "density"}  # only a camera alert may go without a class
    with pytest.raises(SchemaError, match="camera"):
        contracts.validate(contracts.ALERT, broken)
    (record,) = list_alerts(engine)
    assert (record.kind, record.class_name, record.class_display_name) == ("camera", "camera", "camera")
    assert record.cause == message["cause"]
    with engine.connect() as conn:
        view = conn.execute(sa.text("SELECT class_id, class_name, cause FROM alerts_with_cause")).one()
    assert (view.class_id, view.class_name, view.cause) == (None, "camera", message["cause"])


def test_the_cause_names_the_most_frequent_checks_first() -> None:
    cause, prevention = cause_and_prevention({DARK: 2, FLAT: 5})
    assert cause.startswith("a frame without texture") and "too little light" in cause
    assert prevention.startswith("check the lamp, the lens and the camera's connection")


def test_a_class_is_required_of_every_alert_but_a_camera_alert(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="ck_alerts_class_unless_camera"), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO alerts (dedup_key, rule, strip_id, severity, position_start_m, position_end_m,"
                " detection_count, evidence, rule_kind, surface, line, camera, frame_ids, max_confidence,"
                " model_version) VALUES ('k', 'r', 'S', 'high', 0, 1, 1, '{}', 'density', 'top', 'L1', 'c',"
                " '{f}', 0.5, 'm')"
            )
        )


# ---------------------------------------------------------------------------------------------
# the alert rules skip the detections of frames flagged for their pixels
# ---------------------------------------------------------------------------------------------


def _holes(count: int) -> list[Defect]:
    return [Defect(2.0 + n * 0.5, "holes", 0.8, lane=n % 7) for n in range(count)]


@pytest.mark.parametrize(
    ("flags", "alerts"), [((), 1), ((DARK, FLAT), 0), ((BIT_DEPTH,), 0), ((CLOCK_SKEW,), 1)]
)
def test_the_rules_skip_detections_of_frames_flagged_for_their_pixels_but_not_for_their_clock(
    engine: sa.Engine, flags: tuple[str, ...], alerts: int
) -> None:
    """A dead-lamp strip made 3 290 detections and 7 alerts before the gate; its frames are flagged
    now, and their detections stay in the database but raise nothing. A camera with a wrong clock
    still sees the steel: its detections count."""
    writer = StorageWriter(engine)
    register(writer)
    results = [replace(r, quality_flags=flags) for r in strip_results("S-LAMP", _holes(6))]
    writer.write_results(results)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT DISTINCT quality_flags FROM frames")).scalars().all()
    assert stored == [list(flags)]
    raised = AlertEngine(engine, load_rules(), load_catalogue()).evaluate_results(results)
    assert len(raised) == alerts


def test_a_frame_read_again_gets_the_flags_it_was_stored_with(engine: sa.Engine) -> None:
    writer = StorageWriter(engine)
    register(writer)
    (first,) = strip_results("S-AGAIN", [], frames=[0])
    flagged = replace(first, quality_flags=(DARK, FLAT))
    assert writer.write_results([flagged]).new_frame_ids == (first.meta.frame_id,)
    again = writer.write_results([first])  # redelivered: judged again, the stored verdict is what counts
    assert again.stored[first.meta.frame_id].quality_flags == (DARK, FLAT)


# ---------------------------------------------------------------------------------------------
# revision 0010
# ---------------------------------------------------------------------------------------------


def test_revision_0010_downgrades_dropping_camera_alerts_and_upgrades_again(
    database_url: str, health: CameraHealth, engine: sa.Engine
) -> None:
    health.observe(_frames([BLACK] * 5))
    writer = StorageWriter(engine)
    register(writer)
    frames = len(writer.write_results(strip_results("S-DOWN", _holes(1))).new_frame_ids)
    migrate.downgrade(database_url, "0007")
    inspector = sa.inspect(engine)
    assert "camera_health" not in inspector.get_table_names()
    assert "quality_flags" not in {c["name"] for c in inspector.get_columns("frames")}
    assert not next(c for c in inspector.get_columns("alerts") if c["name"] == "class_id")["nullable"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM frames")).scalar() == frames
    migrate.upgrade(database_url)
    migrate.check(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT DISTINCT quality_flags FROM frames")).scalars().all() == [[]]
