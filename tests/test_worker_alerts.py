"""The alert rules inside the running worker, against the real broker (Tansu), a real PostgreSQL
database and a real (untrained, input 32) model: frames whose detections form a density pattern
raise exactly one alert row and one alert message; a failed rules evaluation or alert publish is
retried from that step (nothing written or published twice); alerts a crash left unpublished go
out when the worker starts; ALERT_RULES is checked at start-up, and `none` turns the rules off.

The untrained model's scores cannot be steered, so its thresholds are set to make every tile a
`holes` detection and nothing else one: where the detections lie is then decided by where the
frames lie on the strip, which the test chooses.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from alert_strips import Defect, register, strip_results
from frames import frame_record, grey_image, make_meta
from kafka.errors import KafkaTimeoutError
from sqlalchemy import exc as sa_exc
from streaming_harness import (
    FrameMessage,
    Topics,
    committed_offsets,
    detection_rows,
    end_offsets,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.alerts.config import load_rules
from worker.alerts.engine import AlertEngine
from worker.alerts.stage import AlertStage
from worker.core import contracts
from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError
from worker.core.thresholds import ClassThresholds
from worker.model.artefact import Classifier
from worker.storage.engine import create_engine
from worker.storage.writer import StorageWriter
from worker.streaming.service import open_worker
from worker.streaming.settings import load_settings

RULES = """\
version: 1
lookback_m: 150
rules:
  - name: holes-cluster
    kind: density
    classes: [holes]
    min_count: 5
    window_m: 1.0
    severity: medium
"""
STRIP = "S-DENSE"
# Frames of 256 rows (0.128 m at 0.5 mm/px) × 512 columns: two tiles, so two detections each.
# Three frames back to back at 1 m hold 6 detections within 0.4 m: one cluster of >= 5. The others,
# 20 m apart, hold 2 each: no cluster. Later batches see the cluster again and raise nothing new.
CLUSTER_M = (1.0, 1.128, 1.256)
SPARSE_M = (20.0, 40.0, 60.0, 80.0)


@pytest.fixture
def holes_everywhere(classifier: Classifier) -> Classifier:
    """The session's model with thresholds that make every tile `holes` (threshold 0) and no tile
    anything else (threshold 1: a sigmoid of the untrained head never reaches it)."""
    model = copy.copy(classifier)
    names = classifier.catalogue.names
    model.thresholds = ClassThresholds.from_values(names, [0.0 if name == "holes" else 1.0 for name in names])
    return model


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def _frames() -> dict[str, FrameMessage]:
    messages = {}
    for i, position in enumerate(CLUSTER_M + SPARSE_M):
        meta = make_meta(f"d-{i:02d}", strip_id=STRIP, position_m=position)
        messages[meta.frame_id] = frame_record(meta, grey_image(256, 512, seed=i))
    return messages


def _alert_rows(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text("SELECT * FROM alerts ORDER BY id")).mappings()]
    finally:
        engine.dispose()


def _stream_through_worker(
    broker: Any,
    make_topic: Callable[..., str],
    database_url: str,
    settings: dict[str, str],
    model: Classifier,
) -> tuple[Topics, dict[str, FrameMessage]]:
    """Publish the frames, run the worker (with `settings` over the tests') until every offset is
    committed; the topics and the frames."""
    topics = make_topics(make_topic)
    messages = _frames()
    configured = worker_settings(broker.bootstrap_servers, database_url, model.model_dir, topics, **settings)
    with running_worker(configured, model):
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == len(messages), 60, "every frame in the ledger")
        end = end_offsets(broker.bootstrap_servers, topics.frames)
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end,
            20,
            f"offsets {end} committed",
        )
    return topics, messages


def _assert_one_density_alert_in_the_table_and_on_the_topic(
    database_url: str, bootstrap: str, alerts_topic: str, messages: dict[str, FrameMessage]
) -> None:
    stored = detection_rows(database_url)
    assert {c for _, _, c, _, _ in stored} == {"holes"} and len(stored) == 2 * len(messages)

    (row,) = _alert_rows(database_url)
    cluster = sorted(messages)[: len(CLUSTER_M)]
    assert (row["rule"], row["strip_id"], row["detection_count"], row["severity"]) == (
        "holes-cluster",
        STRIP,
        5,
        "medium",
    )
    assert row["frame_ids"] == cluster
    assert (row["rule_kind"], row["surface"]) == ("density", "top")
    assert row["details"]["min_count"] == 5 and "frame_ids" not in row["details"]
    assert CLUSTER_M[0] <= row["position_start_m"] < row["position_end_m"] <= CLUSTER_M[-1] + 0.128
    assert row["published_at"] is not None

    records = read_topic(bootstrap, alerts_topic, at_least=1, timeout_s=20)
    assert len(records) == 1, [r.value for r in records]
    message = json.loads(records[0].value)
    contracts.validate(contracts.ALERT, message)
    assert records[0].key == message["alert_id"].encode() and message["alert_id"] == row["dedup_key"]
    assert (message["record_id"], message["rule_kind"], message["class_name"], message["count"]) == (
        row["id"],
        "density",
        "holes",
        5,
    )
    assert message["cause"] == load_catalogue().get("holes").cause
    assert message["frame_ids"] == cluster
    assert (message["line"], message["camera"], message["model_version"]) == (
        row["line"],
        row["camera"],
        row["model_version"],
    )
    assert message["details"] == row["details"]
    assert datetime.fromisoformat(message["observed_at"]) == row["observed_at"] is not None


def test_frames_forming_a_density_pattern_raise_one_alert_row_and_one_alert_message(
    broker, make_topic, database_url: str, *, holes_everywhere: Classifier, rules_file: Path
) -> None:
    """No per-frame alerts: the only message on the alerts topic is the rule's, sent once."""
    topics, messages = _stream_through_worker(
        broker, make_topic, database_url, {"alert_rules": str(rules_file)}, holes_everywhere
    )
    _assert_one_density_alert_in_the_table_and_on_the_topic(
        database_url, broker.bootstrap_servers, topics.alerts, messages
    )
    detections = read_topic(broker.bootstrap_servers, topics.detections, at_least=len(messages))
    assert sorted(json.loads(r.value)["frame_id"] for r in detections) == sorted(messages)


def _failing(method: Callable[..., Any], error: BaseException, times: int, calls: list[int]) -> Any:
    """`method` that raises `error` on its first `times` calls; every call counted in `calls`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return method(*args, **kwargs)

    return wrapper


def test_a_failed_evaluation_or_alert_publish_is_retried_from_that_step_and_nothing_doubles(
    broker,
    make_topic,
    database_url: str,
    *,
    holes_everywhere: Classifier,
    rules_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first rules evaluation fails as if the database dropped the connection; the alert
    publishes at start-up and after the first batch fail as if the broker timed out. The start-up
    one is only logged; the others are retried (counted under their step) without writing the
    batch again or producing its detection messages again."""
    dropped = sa_exc.OperationalError("SELECT FROM detections", {}, Exception("server closed the connection"))
    timed_out = KafkaTimeoutError("alert messages not acknowledged in time (injected)")
    evaluations: list[int] = []
    publishes: list[int] = []
    writes: list[int] = []
    monkeypatch.setattr(AlertStage, "evaluate", _failing(AlertStage.evaluate, dropped, 1, evaluations))
    monkeypatch.setattr(AlertStage, "publish", _failing(AlertStage.publish, timed_out, 2, publishes))
    monkeypatch.setattr(  # never fails: counts the writes
        StorageWriter, "write_results", _failing(StorageWriter.write_results, RuntimeError(), 0, writes)
    )

    with structlog.testing.capture_logs() as logs:
        topics, messages = _stream_through_worker(
            broker, make_topic, database_url, {"alert_rules": str(rules_file)}, holes_everywhere
        )
    assert [e["event"] for e in logs if e["event"].startswith("alerts.publish_")] == [
        "alerts.publish_deferred"
    ]
    retries = [e["step"] for e in logs if e["event"] == "batch.retry"]
    assert sorted(retries) == ["evaluate", "publish-alerts"]
    committed = [e for e in logs if e["event"] == "batch.committed"]
    assert len(writes) == len(committed), "a batch was written again after a later step failed"
    assert len(evaluations) == len(committed) + 1 and len(publishes) == len(committed) + 2
    detections = read_topic(broker.bootstrap_servers, topics.detections, at_least=len(messages))
    assert sorted(json.loads(r.value)["frame_id"] for r in detections) == sorted(messages)
    _assert_one_density_alert_in_the_table_and_on_the_topic(
        database_url, broker.bootstrap_servers, topics.alerts, messages
    )


def test_alerts_a_crash_left_unpublished_go_out_when_the_worker_starts(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier, rules_file: Path
) -> None:
    """An alert row raised but never published (the worker died before its outbox step) reaches
    the alerts topic as soon as a worker starts, before any frame arrives."""
    engine = create_engine(database_url)
    try:
        writer = StorageWriter(engine)
        register(writer)
        results = strip_results("S-LEFT", [Defect(1.0 + 0.1 * i, "holes", 0.9, lane=i % 3) for i in range(5)])
        writer.write_results(results)
        (left,) = AlertEngine(engine, load_rules(rules_file), load_catalogue()).evaluate_results(results)
    finally:
        engine.dispose()
    assert _alert_rows(database_url)[0]["published_at"] is None

    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, model_dir, topics, alert_rules=str(rules_file)
    )
    with running_worker(settings, classifier):
        records = read_topic(broker.bootstrap_servers, topics.alerts, at_least=1, timeout_s=30)
    assert [json.loads(r.value)["alert_id"] for r in records] == [left.dedup_key]
    assert _alert_rows(database_url)[0]["published_at"] is not None


def test_a_bad_rules_file_stops_the_start_before_the_model_is_loaded(tmp_path: Path) -> None:
    """ALERT_RULES is checked first: the database and the model need not be there yet."""
    bad = tmp_path / "rules.yaml"
    bad.write_text(RULES.replace("min_count: 5", "min_count: five"), encoding="utf-8")
    settings = load_settings(
        {},
        {
            "bootstrap_servers": "127.0.0.1:9",
            "database_url": "postgresql://nobody@127.0.0.1:9/none",
            "model_path": str(tmp_path / "no-model"),
            "alert_rules": str(bad),
        },
    )
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + ".*min_count"), open_worker(settings):
        pytest.fail("the worker started with a bad rules file")


def test_rules_naming_a_class_the_model_lacks_are_refused_and_none_turns_the_rules_off(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier, tmp_path: Path
) -> None:
    topics = make_topics(make_topic)
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(RULES.replace("classes: [holes]", "classes: [inclusions]"), encoding="utf-8")
    settings = worker_settings(
        broker.bootstrap_servers, database_url, model_dir, topics, alert_rules=str(foreign)
    )
    with pytest.raises(ConfigError, match=r"foreign\.yaml.*inclusions"), open_worker(settings, classifier):
        pytest.fail("the worker started with rules for a class its model lacks")

    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics, alert_rules="none")
    with open_worker(settings, classifier) as worker:
        assert worker.alerts is None


# --- alerts over what was written (issue 20) -------------------------------------------------------


STRIP_START = datetime.fromisoformat("2024-05-01T08:30:00+00:00")


def _holes_frames(
    prefix: str, positions: tuple[float, ...], start: datetime = STRIP_START
) -> list[FrameMessage]:
    """Frames of STRIP at `positions` (two holes each, as the holes_everywhere model sees them),
    captured as the strip passes the camera at 2 m/s from `start`."""
    return [
        frame_record(
            make_meta(
                f"{prefix}-{i:02d}",
                strip_id=STRIP,
                position_m=position,
                captured_at=start + timedelta(seconds=position / 2),
            ),
            grey_image(256, 512, seed=i),
        )
        for i, position in enumerate(positions)
    ]


def test_a_position_in_millimetres_is_dead_lettered_and_late_frames_still_raise_their_alert(
    broker, make_topic, database_url: str, *, holes_everywhere: Classifier, rules_file: Path
) -> None:
    """Frames 200 to 260 m along the strip come first, then one whose position_m reads 950 000
    (inside the schema's bound; millimetres sent as metres), then — late — the cluster at 1 m.
    The 950 000 m frame is refused at the door (position-out-of-range, over MAX_STRIP_LENGTH_M);
    the late cluster raises its alert. (Main took the glitch in as the strip's tip and never
    evaluated the cluster: no alert, nothing dead-lettered.)"""
    topics = make_topics(make_topic)
    ahead = _holes_frames("far", (200.0, 220.0, 240.0, 260.0))
    wrong = _holes_frames("mm", (950_000.0,))
    cluster_frames = _holes_frames("late", CLUSTER_M)
    messages = ahead + wrong + cluster_frames
    settings = worker_settings(
        broker.bootstrap_servers,
        database_url,
        holes_everywhere.model_dir,
        topics,
        alert_rules=str(rules_file),
    )
    with running_worker(settings, holes_everywhere):
        publish(broker.bootstrap_servers, topics.frames, messages)
        wait_until(lambda: len(ledger(database_url)) == len(messages) - 1, 60, "every other frame stored")
        end = end_offsets(broker.bootstrap_servers, topics.frames)
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end,
            20,
            f"offsets {end} committed",
        )
    (dead,) = read_topic(broker.bootstrap_servers, topics.dlq, at_least=1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert (headers["dlq-reason"], headers["dlq-stage"]) == ("position-out-of-range", "validate")
    assert "MAX_STRIP_LENGTH_M" in headers["dlq-detail"] and "950000" in headers["dlq-detail"]
    (row,) = _alert_rows(database_url)
    assert (row["rule"], row["strip_id"], row["pass_id"]) == ("holes-cluster", STRIP, "1")
    assert row["frame_ids"] == ["late-00", "late-01", "late-02"]


def test_a_strip_rolled_again_raises_its_alert_again_and_a_key_that_is_not_the_strip_is_counted(
    broker, make_topic, database_url: str, *, holes_everywhere: Classifier, rules_file: Path
) -> None:
    """The cluster strip, then the same strip id an hour later (positions from 0 again, no pass_id):
    the second pass raises its own alert, on the table and the topic, with pass_id 2 (main: the
    first pass's alert covered it — one alert). One frame of the second pass carries a message key
    that is not its strip id: it is processed, logged once and counted."""
    topics = make_topics(make_topic)
    first = _holes_frames("p1", CLUSTER_M + SPARSE_M)
    second = _holes_frames("p2", CLUSTER_M + SPARSE_M, start=STRIP_START + timedelta(hours=1))
    key, value, headers = second[1]
    second[1] = (b"not-" + key, value, headers)
    messages = first + second
    settings = worker_settings(
        broker.bootstrap_servers,
        database_url,
        holes_everywhere.model_dir,
        topics,
        alert_rules=str(rules_file),
    )
    with structlog.testing.capture_logs() as logs, running_worker(settings, holes_everywhere) as running:
        publish(broker.bootstrap_servers, topics.frames, messages)
        wait_until(lambda: len(ledger(database_url)) == len(messages), 60, "every frame in the ledger")
        wait_until(lambda: len(_alert_rows(database_url)) == 2, 20, "an alert per pass")
        wait_until(lambda: all(r["published_at"] for r in _alert_rows(database_url)), 20, "alerts published")
        mismatches = running.worker.metrics.value("steel_worker_key_mismatches_total")
    assert mismatches == 1
    assert [e["frame_id"] for e in logs if e["event"] == "frame.key_mismatch"] == ["p2-01"]
    rows = _alert_rows(database_url)
    assert [(r["pass_id"], r["rule"], r["detection_count"]) for r in rows] == [
        ("1", "holes-cluster", 5),
        ("2", "holes-cluster", 5),
    ]
    assert rows[1]["dedup_key"] == rows[0]["dedup_key"] + "/2"
    assert rows[1]["frame_ids"] == ["p2-00", "p2-01", "p2-02"]
    records = read_topic(broker.bootstrap_servers, topics.alerts, at_least=2)
    messages_out = sorted((json.loads(r.value) for r in records), key=lambda m: m["record_id"])
    for message in messages_out:
        contracts.validate(contracts.ALERT, message)
    assert [m["pass_id"] for m in messages_out] == ["1", "2"]
