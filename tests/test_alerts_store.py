"""The alert engine, the alerts outbox and `steel-worker alerts`, on real PostgreSQL and the real broker.

Detections are written the way the worker writes them (StorageWriter.write_results on synthetic
strips); alerts are evaluated from the database; messages are read back from the topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import (
    Defect,
    periodic_defects,
    register,
    scattered_defects,
    strip_results,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from worker.alerts.config import AlertRules, Cooldown, DensityRule, PeriodicRule, load_rules
from worker.alerts.engine import AlertEngine, dedup_key
from worker.alerts.outbox import publish_pending
from worker.alerts.stage import AlertStage
from worker.cli import main
from worker.core import contracts
from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError
from worker.infra.broker import EmbeddedBroker
from worker.storage.writer import StorageWriter

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = load_catalogue()
RULES = load_rules()
ROLL_MARKS = RULES.rule("roll-marks")
assert isinstance(ROLL_MARKS, PeriodicRule)
WORK_ROLL = ROLL_MARKS.rolls[0]


@pytest.fixture
def writer(engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(engine)
    register(writer)
    return writer


@pytest.fixture
def alert_engine(engine: sa.Engine) -> AlertEngine:
    return AlertEngine(engine, RULES, CATALOGUE)


def _alerts(engine: sa.Engine) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT a.*, c.name AS class_name FROM alerts a"
                    " JOIN defect_classes c ON c.id = a.class_id ORDER BY a.id"
                )
            ).mappings()
        )


def _read_topic(bootstrap: str, topic: str, at_least: int, timeout_s: float = 20.0) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(records) < at_least:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=500).values():  # and anything that follows
            records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture
def producer(broker: EmbeddedBroker) -> Any:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=5)
    yield producer
    producer.close(timeout=5)


# ---------------------------------------------------------------------------------------------
# the engine: rules over stored detections
# ---------------------------------------------------------------------------------------------


def test_a_roll_mark_pattern_raises_one_periodic_alert_naming_the_roll_with_its_evidence(
    writer: StorageWriter, alert_engine: AlertEngine, engine: sa.Engine
) -> None:
    results = strip_results("S-ROLL", periodic_defects(WORK_ROLL.pitch_m, 14, seed=1, missing=(5, 10)))
    outcome = writer.write_results(results)
    (alert,) = alert_engine.evaluate_results(results)
    evidence = sorted(d.record_id for r in outcome.stored.values() for d in r.detections)
    assert (alert.rule, alert.kind, alert.roll, alert.class_name) == (
        "roll-marks",
        "periodic",
        WORK_ROLL.name,
        "rolling",
    )
    assert (alert.strip_id, alert.surface, alert.severity) == ("S-ROLL", "top", "high")
    assert list(alert.evidence) == evidence
    assert alert.detection_count == 14
    assert alert.pitch_m == pytest.approx(WORK_ROLL.pitch_m, rel=0.03)
    (row,) = _alerts(engine)
    assert (row["id"], row["dedup_key"], row["roll"], row["published_at"]) == (
        alert.id,
        alert.dedup_key,
        WORK_ROLL.name,
        None,
    )
    assert row["evidence"] == evidence
    assert row["frame_ids"] == sorted(r.meta.frame_id for r in results if r.detections)
    assert (row["rule_kind"], row["surface"], row["line"], row["camera"]) == (
        "periodic",
        "top",
        "L1",
        "cam-top-1",
    )
    assert row["max_confidence"] == pytest.approx(max(d.confidence for r in results for d in r.detections))
    assert row["observed_at"] == max(r.meta.captured_at for r in results if r.detections)
    # details holds what the rule measured, and nothing the columns already say
    assert row["details"]["marks"] == 14
    assert row["details"]["revolutions"] == 16
    assert not {"kind", "surface", "line", "camera", "frame_ids", "max_confidence"} & row["details"].keys()
    assert row["position_start_m"] == pytest.approx(results[0].meta.position_m, abs=1.1)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_scatter_of_the_same_count_raises_no_alert(
    writer: StorageWriter, alert_engine: AlertEngine, engine: sa.Engine, seed: int
) -> None:
    """14 rolling detections scattered over 30 m: no roll mark, and too sparse for a cluster."""
    results = strip_results("S-RANDOM", scattered_defects(14, 30.0, seed=seed))
    writer.write_results(results)
    assert alert_engine.evaluate_results(results) == []
    assert _alerts(engine) == []


def _holes(strip: str, count: int, first_m: float = 2.0, step_m: float = 0.5) -> list[Defect]:
    return [Defect(first_m + n * step_m, "holes", 0.8, lane=n % 7) for n in range(count)]


def test_density_fires_at_n_detections_and_not_at_n_minus_1(
    writer: StorageWriter, alert_engine: AlertEngine, engine: sa.Engine
) -> None:
    rule = RULES.rule("holes-cluster")
    assert isinstance(rule, DensityRule)
    below = strip_results("S-FEW", _holes("S-FEW", rule.min_count - 1))
    at = strip_results("S-ENOUGH", _holes("S-ENOUGH", rule.min_count))
    writer.write_results(below + at)
    (alert,) = alert_engine.evaluate_results(below + at)
    assert (alert.strip_id, alert.rule, alert.kind, alert.class_name) == (
        "S-ENOUGH",
        "holes-cluster",
        "density",
        "holes",
    )
    assert alert.detection_count == rule.min_count
    assert alert.roll is None and alert.pitch_m is None


def test_evaluating_again_or_after_a_redelivery_adds_nothing(
    writer: StorageWriter, alert_engine: AlertEngine, engine: sa.Engine
) -> None:
    results = strip_results("S-DEDUP", periodic_defects(WORK_ROLL.pitch_m, 14, seed=2) + _holes("", 6))
    writer.write_results(results)
    first = alert_engine.evaluate_results(results)
    assert sorted(a.rule for a in first) == ["holes-cluster", "roll-marks"]
    assert alert_engine.evaluate_results(results) == []
    writer.write_results(results)  # a redelivery: nothing written
    restarted = AlertEngine(engine, RULES, CATALOGUE)
    assert restarted.evaluate_results(results) == []
    assert [r["id"] for r in _alerts(engine)] == sorted(a.id for a in first)


def test_a_strip_written_batch_by_batch_raises_its_roll_mark_once(
    writer: StorageWriter, alert_engine: AlertEngine, engine: sa.Engine
) -> None:
    """Evaluated after every batch of 8 frames, as the worker does: the growing chain is one alert."""
    results = strip_results("S-STREAM", periodic_defects(WORK_ROLL.pitch_m, 30, seed=4, missing=(7, 20)))
    raised = []
    for start in range(0, len(results), 8):
        batch = results[start : start + 8]
        writer.write_results(batch)
        raised.extend(alert_engine.evaluate_results(batch))
    assert [(a.rule, a.roll) for a in raised] == [("roll-marks", WORK_ROLL.name)]
    assert len(_alerts(engine)) == 1


def test_the_metres_cooldown_suppresses_a_second_cluster_nearby_but_not_one_further_on(
    writer: StorageWriter, alert_engine: AlertEngine
) -> None:
    """holes-cluster has a 20 m cooldown: clusters at 2 m and 15 m are one alert, one at 40 m another."""
    defects = _holes("", 6, first_m=2.0) + _holes("", 6, first_m=15.0) + _holes("", 6, first_m=40.0)
    results = strip_results("S-COOL", defects)
    writer.write_results(results)
    alerts = alert_engine.evaluate_results(results)
    assert [round(a.position_start_m) for a in alerts] == [2, 40]


def test_the_seconds_cooldown_counts_capture_time(writer: StorageWriter, engine: sa.Engine) -> None:
    """With a 60 s cooldown, clusters 40 m apart 20 s apart (2 m/s) raise once; 150 s apart twice."""
    base = RULES.rule("holes-cluster")
    assert isinstance(base, DensityRule)
    rule = replace(base, cooldown=Cooldown(seconds=60))
    rules = AlertRules(rules=(rule,), rolls=(), lookback_m=1000.0)
    alert_engine = AlertEngine(engine, rules, CATALOGUE)
    results = strip_results("S-TIME", _holes("", 6, 2.0) + _holes("", 6, 42.0) + _holes("", 6, 342.0))
    writer.write_results(results)
    assert [round(a.position_start_m) for a in alert_engine.evaluate_results(results)] == [2, 342]


def test_surfaces_are_evaluated_apart(writer: StorageWriter, alert_engine: AlertEngine) -> None:
    """Three holes on the top and three on the bottom surface are not a cluster of six."""
    top = strip_results("S-TWO", _holes("", 3), surface="top")
    bottom = strip_results("S-TWO", _holes("", 3, first_m=2.1), surface="bottom")
    writer.write_results(top + bottom)
    assert alert_engine.evaluate_results(top + bottom) == []


def test_concurrent_evaluations_of_one_strip_raise_each_alert_once(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """Two workers (a rebalance) evaluate the same strip at once: the strip's lock row serialises them."""
    results = strip_results("S-RACE", _holes("", 6) + periodic_defects(WORK_ROLL.pitch_m, 14, seed=6))
    writer.write_results(results)
    engines = [AlertEngine(engine, RULES, CATALOGUE) for _ in range(4)]
    raised: list[Any] = []
    barrier = threading.Barrier(len(engines))

    def evaluate(alert_engine: AlertEngine) -> None:
        barrier.wait()
        raised.extend(alert_engine.evaluate_results(results))

    threads = [threading.Thread(target=evaluate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.rule for a in raised) == ["holes-cluster", "roll-marks"]
    assert len(_alerts(engine)) == 2


def test_the_dedup_key_names_rule_strip_surface_class_roll_and_start() -> None:
    from worker.alerts.rules import Finding  # noqa: PLC0415

    finding = Finding("roll-marks", "periodic", "rolling", 12.3456, 30.0, (1,), 0.9, roll="F7/top roll")
    assert dedup_key("S 1", "top", finding) == "roll-marks/S 1/top/rolling/F7%2Ftop roll/12346"


def test_rules_naming_classes_outside_the_catalogue_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="names classes"):
        AlertEngine(engine, RULES, CATALOGUE.from_names(["holes"]))


# ---------------------------------------------------------------------------------------------
# the outbox: alerts table → alerts topic
# ---------------------------------------------------------------------------------------------


def test_the_outbox_publishes_each_alert_once_with_cause_and_evidence_and_marks_it(
    writer: StorageWriter,
    engine: sa.Engine,
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    producer: Any,
) -> None:
    topic = make_topic("alerts")
    stage = AlertStage(engine, RULES, CATALOGUE, topic)
    results = strip_results("S-OUT", periodic_defects(WORK_ROLL.pitch_m, 14, seed=7) + _holes("", 6))
    writer.write_results(results)
    raised = stage.evaluate(results)
    assert stage.publish(producer) == 2
    assert stage.publish(producer) == 0
    records = _read_topic(broker.bootstrap_servers, topic, at_least=2)
    messages = [json.loads(r.value) for r in records]
    assert len(messages) == 2
    for record, message in zip(records, messages, strict=True):
        contracts.validate(contracts.ALERT, message)
        assert record.key == message["alert_id"].encode()
    by_rule = {m["rule"]: m for m in messages}
    roll = by_rule["roll-marks"]
    alert = next(a for a in raised if a.rule == "roll-marks")
    assert roll["record_id"] == alert.id
    assert roll["alert_id"] == alert.dedup_key
    assert (roll["rule_kind"], roll["roll"], roll["class_name"]) == ("periodic", WORK_ROLL.name, "rolling")
    assert roll["cause"] == "wear of the rollers"
    assert roll["prevention"] == "regular change of rolls according to wear behaviour"
    assert roll["evidence"] == list(alert.evidence)
    assert roll["count"] == 14
    assert (roll["along_start_m"], roll["along_end_m"]) == (alert.position_start_m, alert.position_end_m)
    assert by_rule["holes-cluster"]["cause"].startswith("inclusions directly under the surface")
    assert all(r["published_at"] is not None for r in _alerts(engine))


class _FailingFlush:
    """A real producer whose flush fails, as when the broker does not acknowledge in time."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        return self._producer.send(topic, value=value, key=key)

    def flush(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout after waiting for 1 secs.")


def test_a_failed_flush_marks_nothing_and_the_next_call_sends_again(
    writer: StorageWriter, engine: sa.Engine, make_topic: Callable[..., str], producer: Any
) -> None:
    topic = make_topic("alerts")
    results = strip_results("S-FAIL", _holes("", 6))
    writer.write_results(results)
    AlertEngine(engine, RULES, CATALOGUE).evaluate_results(results)
    with pytest.raises(KafkaTimeoutError):
        publish_pending(engine, _FailingFlush(producer), topic)
    assert [r["published_at"] for r in _alerts(engine)] == [None]
    assert publish_pending(engine, producer, topic) == 1


CRASHING_WORKER = textwrap.dedent(
    """
    import sys, time
    from kafka import KafkaProducer
    from alert_strips import periodic_defects, register, strip_results
    from worker.alerts.config import load_rules
    from worker.alerts.stage import AlertStage
    from worker.core.catalogue import load_catalogue
    from worker.storage.engine import create_engine
    from worker.storage.writer import StorageWriter

    url, bootstrap, topic, mode = sys.argv[1:5]
    engine = create_engine(url)
    writer = StorageWriter(engine)
    register(writer)
    results = strip_results("S-CRASH", periodic_defects(3.14159 * 0.64, 14, seed=8))
    writer.write_results(results)
    print("WRITTEN", flush=True)
    if mode == "after-write":
        time.sleep(3600)  # killed here: detections stored, no alert evaluated
    stage = AlertStage(engine, load_rules(), load_catalogue(), topic)
    stage.evaluate(results)

    class CrashAfterFlush:
        def __init__(self, producer):
            self.producer = producer
        def send(self, topic, value=None, key=None):
            return self.producer.send(topic, value=value, key=key)
        def flush(self, timeout=None):
            self.producer.flush(timeout)
            print("FLUSHED", flush=True)
            time.sleep(3600)  # killed here: alert on the topic, row not marked published

    stage.publish(CrashAfterFlush(KafkaProducer(bootstrap_servers=bootstrap, acks="all")))
    """
)


def _run_until_killed(args: list[str], marker: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            if line.strip() == marker or time.monotonic() > deadline:
                break
        else:
            pytest.fail(f"worker exited before {marker}: {process.stderr.read() if process.stderr else ''}")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(10)
        assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("crash", ["after-write", "after-flush"])
def test_a_worker_killed_between_writing_and_publishing_leaves_one_row_and_one_alert_by_id(  # noqa: PLR0917
    crash: str,
    writer: StorageWriter,
    database_url: str,
    engine: sa.Engine,
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    producer: Any,
) -> None:
    """kill -9 after the detections are written (before evaluating), or after the alert was flushed
    to the topic (before it was marked published); the restarted worker gets the frames again."""
    topic = make_topic("alerts")
    _run_until_killed(
        [database_url, broker.bootstrap_servers, topic, crash],
        "WRITTEN" if crash == "after-write" else "FLUSHED",
    )
    # the restart: the frames are redelivered (offsets were never committed)
    results = strip_results("S-CRASH", periodic_defects(3.14159 * 0.64, 14, seed=8))
    stage = AlertStage(engine, RULES, CATALOGUE, topic)
    outcome = writer.write_results(results)
    assert outcome.new_frame_ids == ()
    stage.publish(producer)  # at start-up: what the crash left unsent
    stage.evaluate(results)
    stage.publish(producer)
    rows = _alerts(engine)
    assert [(r["rule"], r["roll"]) for r in rows] == [("roll-marks", WORK_ROLL.name)]
    assert rows[0]["published_at"] is not None
    on_topic = [json.loads(r.value) for r in _read_topic(broker.bootstrap_servers, topic, at_least=1)]
    assert on_topic, "the alert never reached the topic"
    assert {m["alert_id"] for m in on_topic} == {rows[0]["dedup_key"]}
    assert {m["record_id"] for m in on_topic} == {rows[0]["id"]}
    assert len(on_topic) == (1 if crash == "after-write" else 2)  # the second copy: dedupe by alert_id


# ---------------------------------------------------------------------------------------------
# steel-worker alerts
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_alerts(writer: StorageWriter, alert_engine: AlertEngine) -> list[Any]:
    a = strip_results("S-A", periodic_defects(WORK_ROLL.pitch_m, 14, seed=9))
    b = strip_results("S-B", _holes("", 6))
    writer.write_results(a + b)
    return sorted(alert_engine.evaluate_results(a + b), key=lambda x: x.id)


def test_alerts_list_shows_cause_prevention_and_filters_by_strip_and_acknowledgement(
    database_url: str, two_alerts: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    roll, holes = sorted(two_alerts, key=lambda a: a.rule != "roll-marks")
    assert main(["alerts", "list", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert f"#{roll.id}  HIGH  roll-marks (periodic)  strip S-A (top)" in out
    assert f"rolling: roll mark of {WORK_ROLL.name}, every" in out
    assert "cause: wear of the rollers" in out
    assert "prevention: limit the scatter of melting-metallurgy and casting parameters" in out
    assert out.count("not acknowledged") == 2
    assert main(["alerts", "list", "--database-url", database_url, "--strip", "S-B", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["rule"], listed["strip_id"]) == (holes.id, "holes-cluster", "S-B")
    assert listed["evidence"] == list(holes.evidence)
    assert main(["alerts", "ack", str(holes.id), "--by", "A. Novak", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.startswith(f"alert {holes.id} acknowledged by A. Novak at ")
    assert main(["alerts", "list", "--unacked", "--json", "--database-url", database_url]) == 0
    assert [a["id"] for a in json.loads(capsys.readouterr().out)] == [roll.id]
    assert main(["alerts", "list", "--strip", "S-B", "--unacked", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == "no alerts for strip S-B unacknowledged\n"


def test_an_acknowledgement_keeps_who_and_when_and_a_second_one_is_refused(
    database_url: str, engine: sa.Engine, two_alerts: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    alert = two_alerts[0]
    assert main(["alerts", "ack", str(alert.id), "--by", "mira", "--database-url", database_url]) == 0
    (row,) = [r for r in _alerts(engine) if r["id"] == alert.id]
    assert row["acknowledged_by"] == "mira"
    assert row["acknowledged_at"] is not None
    capsys.readouterr()
    assert main(["alerts", "ack", str(alert.id), "--by", "tom", "--database-url", database_url]) == 2
    err = capsys.readouterr().err
    assert f"alerts ack {alert.id}: already acknowledged by mira at " in err
    (again,) = [r for r in _alerts(engine) if r["id"] == alert.id]
    assert (again["acknowledged_by"], again["acknowledged_at"]) == ("mira", row["acknowledged_at"])


def test_acknowledging_an_unknown_alert_or_without_a_name_is_refused(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["alerts", "ack", "999", "--by", "mira", "--database-url", database_url]) == 2
    assert "alerts ack 999: no alert with id 999" in capsys.readouterr().err
    assert main(["alerts", "ack", "1", "--by", "  ", "--database-url", database_url]) == 2
    assert "--by must name who acknowledges" in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["alerts", "list"]) == 2
    assert "set DATABASE_URL or pass --database-url" in capsys.readouterr().err
