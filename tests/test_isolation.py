"""One bad frame (or alert, or strip) is set aside and the rest delivered — each delivery step
against the real PostgreSQL and the real broker:

- the ledger bisects a batch the database refuses and dead-letters only the frame it refuses alone;
- the output step turns a frame whose detection message the broker refuses into a dead letter,
  and sends a dead letter that is refused itself without key, value and headers;
- the outbox marks an alert the broker refuses for good and publishes the others;
- the alert engine isolates a failing rule per strip, and a strip whose stored rows cannot be read
  back (written by an older worker) from the other strips;
- `failures.classify` sorts the errors the steps meet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from alert_strips import Defect, register, strip_results
from frames import inbound
from kafka import KafkaProducer
from kafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc
from streaming_harness import read_topic

from worker.alerts import engine as alert_engine_module
from worker.alerts.config import load_rules
from worker.alerts.engine import STRIP_FAILED, AlertEngine
from worker.alerts.outbox import alert_message, publish_pending
from worker.core import contracts
from worker.core import refusals as r
from worker.core.catalogue import load_catalogue
from worker.core.errors import DeliveryError, ModelError
from worker.core.failures import DATA, SYSTEMIC, TRANSIENT, classify
from worker.core.records import DecodedFrame
from worker.storage.writer import StorageWriter
from worker.streaming.batch import Batch, Entry
from worker.streaming.classify import TiledFrame
from worker.streaming.dead_letter import DeadLetterPublisher
from worker.streaming.decode import Rejected
from worker.streaming.observability import Metrics
from worker.streaming.sinks import LedgerSink, OutputSink

CATALOGUE = load_catalogue()
RULES = load_rules()


@pytest.fixture
def writer(engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(engine)
    register(writer)
    return writer


def _entries(results: list[Any]) -> list[Entry]:
    """Entries as the loop holds them after the model: a tiled frame (pixels not needed here) and
    its result; the message keeps its value (1 234 bytes here) for the dead-letter topic."""
    entries = []
    for result in results:
        frame = DecodedFrame(meta=result.meta, source=result.source, image=None)  # type: ignore[arg-type]
        message = inbound(b"\x07" * 1234, [], offset=result.source.offset, key=result.meta.strip_id.encode())
        message = replace(message, source=result.source)
        entries.append(Entry(message, TiledFrame(frame, (), None), 0.0, result=result))  # type: ignore[arg-type]
    return entries


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# --- the ledger -------------------------------------------------------------------------------------


def test_the_ledger_bisects_a_refused_batch_and_sets_aside_only_the_frame_refused_alone(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """A confidence over 1 (a broken model export) breaks the detections' check constraint: that
    frame alone becomes `unstorable`; the seven others are written."""
    results = strip_results("S-BIS", [Defect(0.3 + 0.256 * k, "holes") for k in range(8)])[:8]
    bad = results[5]
    results[5] = replace(bad, detections=(replace(bad.detections[0], confidence=1.5),))
    metrics = Metrics()
    batch = Batch(_entries(results))
    LedgerSink(writer, metrics).deliver(batch)

    refused = [e for e in batch.entries if e.refused]
    assert [e.message.source.offset for e in refused] == [5]
    assert isinstance(refused[0].outcome, Rejected)
    assert (refused[0].outcome.reason, refused[0].outcome.stage) == (r.UNSTORABLE, r.STORE)
    assert "ck_detections_confidence_range" in refused[0].outcome.detail
    assert refused[0].result is None
    assert _count(engine, "frames") == 7
    assert metrics.value("steel_worker_isolated_total", {"step": "write"}) == 1


def test_the_ledger_lets_an_outage_through_to_be_retried(writer: StorageWriter, engine: sa.Engine) -> None:
    """A fault that is not a frame's (here: the database is gone) is not bisected: it propagates."""
    results = strip_results("S-OUT", [Defect(0.3, "holes")])
    batch = Batch(_entries(results))
    broken = StorageWriter(sa.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none"))
    with pytest.raises(sa_exc.OperationalError):
        LedgerSink(broken, Metrics()).deliver(batch)
    assert not any(e.refused for e in batch.entries)


def test_the_ledger_refuses_another_frame_under_a_stored_id_and_publishes_what_is_stored_on_redelivery(
    writer: StorageWriter,
) -> None:
    first = strip_results("S-DUP", [Defect(0.3, "holes")])[:1]
    LedgerSink(writer, Metrics()).deliver(Batch(_entries(first)))
    again = Batch(_entries([replace(first[0], detections=())]))  # the same record, judged otherwise now
    other = Batch(_entries([replace(first[0], source=replace(first[0].source, offset=99))]))
    metrics = Metrics()
    LedgerSink(writer, metrics).deliver(again)
    LedgerSink(writer, metrics).deliver(other)
    assert again.entries[0].result is not None
    assert again.entries[0].result.detections == first[0].detections
    (collision,) = other.entries
    assert isinstance(collision.outcome, Rejected) and collision.outcome.reason == r.DUPLICATE_FRAME_ID
    assert "mill.frames[0]@0" in collision.outcome.detail
    assert metrics.value("steel_worker_frame_id_collisions_total") == 1


# --- the outputs ------------------------------------------------------------------------------------


def test_a_detection_message_the_broker_refuses_makes_its_frame_a_dead_letter_and_the_rest_go_out(
    broker, make_topic: Callable[..., str]
) -> None:
    detections, dlq = make_topic("detections"), make_topic("dlq")
    results = strip_results("S-BIG", [Defect(0.3, "holes")], length_m=0.7)  # frames 0..2, 1 has a defect
    (big,) = [x for x in results if x.detections]  # its message is the largest
    sizes = {
        x.meta.frame_id: len(contracts.to_json_bytes(contracts.detection_message(x, CATALOGUE)))
        for x in results
    }
    assert sizes[big.meta.frame_id] > max(v for k, v in sizes.items() if k != big.meta.frame_id) + 300
    limit = sizes[big.meta.frame_id] - 100  # the clean frames' messages fit, the one with a detection not
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=limit)
    try:
        batch = Batch(_entries(results))
        metrics = Metrics()
        sink = OutputSink(
            producer, detections, DeadLetterPublisher(producer, dlq, "w1", limit), CATALOGUE, metrics
        )
        sink.deliver(batch)
    finally:
        producer.close(timeout=5)
    assert all(e.published for e in batch.entries)
    refused = [e for e in batch.entries if e.refused]
    assert [e.message.source.offset for e in refused] == [big.source.offset]
    assert refused[0].outcome.reason == r.UNDELIVERABLE  # type: ignore[union-attr]
    published = read_topic(broker.bootstrap_servers, detections, at_least=len(results) - 1)
    assert sorted(json.loads(m.value)["frame_id"] for m in published) == sorted(
        x.meta.frame_id for x in results if x is not big
    )
    (letter,) = read_topic(broker.bootstrap_servers, dlq, at_least=1)
    headers = dict(letter.headers)
    assert headers["dlq-reason"] == b"undeliverable" and headers["dlq-stage"] == b"publish"
    assert headers["dlq-value-omitted"] == b"1234"  # the frame's bytes would not fit under this limit
    assert metrics.value("steel_worker_undeliverable_total", {"kind": "detection"}) == 1


def test_a_dead_letter_refused_by_the_producer_goes_out_with_its_dlq_headers_only(
    broker, make_topic: Callable[..., str]
) -> None:
    dlq = make_topic("dlq")
    message = inbound(
        b"\0" * 6000, [("content-type", b"image/png"), ("x-big", b"h" * 3000)], offset=12, key=b"k" * 500
    )
    rejected = Rejected(r.CORRUPT_IMAGE, r.DECODE, "test", message.source)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=3000)
    try:  # the publisher believes 1 MB fits; the producer refuses anything over 3000 bytes
        sink = OutputSink(
            producer, "unused", DeadLetterPublisher(producer, dlq, "w1", 1_000_000), CATALOGUE, Metrics()
        )
        batch = Batch([Entry(message, rejected, 0.0)])
        sink.deliver(batch)
    finally:
        producer.close(timeout=5)
    assert batch.entries[0].published
    (letter,) = read_topic(broker.bootstrap_servers, dlq, at_least=1)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (None, b"")
    assert headers["dlq-value-omitted"] == b"6000" and headers["dlq-key-omitted"] == b"500"
    assert int(headers["dlq-headers-omitted"]) > 3000 and "x-big" not in headers
    assert headers["dlq-reason"] == b"corrupt-image"


def test_outputs_acknowledged_are_not_sent_again_when_the_step_is_retried(
    broker, make_topic: Callable[..., str]
) -> None:
    detections, dlq = make_topic("detections"), make_topic("dlq")
    results = strip_results("S-ACK", [], length_m=1.0)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    try:
        batch = Batch(_entries(results))
        sink = OutputSink(
            producer, detections, DeadLetterPublisher(producer, dlq, "w1", 1 << 20), CATALOGUE, Metrics()
        )
        sink.deliver(batch)
        sink.deliver(batch)  # as after a later step failed and the checkpoint resumed here
    finally:
        producer.close(timeout=5)
    assert len(read_topic(broker.bootstrap_servers, detections, at_least=len(results))) == len(results)


# --- alerts ------------------------------------------------------------------------------------------


def test_an_alert_the_broker_refuses_is_marked_with_its_error_and_the_others_are_published(
    writer: StorageWriter, engine: sa.Engine, broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("alerts")
    small = strip_results("S-A1", [Defect(0.3 + 0.3 * k, "holes", lane=1) for k in range(6)])
    large = strip_results("S-A2-" + "x" * 150, [Defect(0.3 + 0.3 * k, "holes", lane=1) for k in range(30)])
    writer.write_results(small + large)
    alert_engine = AlertEngine(engine, RULES, CATALOGUE)
    alert_engine.evaluate_results(small + large)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT a.*, c.name AS class_name, c.cause, c.prevention FROM alerts a"
                    " JOIN defect_classes c ON c.id = a.class_id ORDER BY a.id"
                )
            )
            .mappings()
            .all()
        )
    sizes = {row["strip_id"]: len(json.dumps(alert_message(dict(row)))) for row in rows}
    assert len(sizes) == 2 and sizes[large[0].meta.strip_id] > sizes["S-A1"] + 200
    limit = (sizes["S-A1"] + sizes[large[0].meta.strip_id]) // 2
    refused: list[int] = []
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=limit)
    try:
        assert publish_pending(engine, producer, topic, on_undeliverable=lambda: refused.append(1)) == 2
        assert publish_pending(engine, producer, topic) == 0  # nothing left to retry
    finally:
        producer.close(timeout=5)
    assert refused == [1]
    (message,) = read_topic(broker.bootstrap_servers, topic, at_least=1)
    assert json.loads(message.value)["strip_id"] == "S-A1"
    with engine.connect() as conn:
        marks = dict(
            conn.execute(
                sa.text("SELECT strip_id, publish_error FROM alerts WHERE published_at IS NOT NULL")
            ).all()
        )
    assert marks["S-A1"] is None and "MessageSizeTooLarge" in marks[large[0].meta.strip_id]


def test_a_rule_that_fails_on_a_strip_is_counted_and_the_other_rules_still_raise(
    writer: StorageWriter, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = alert_engine_module.evaluate_rule

    def failing(rule: Any, sequence: Any, cache: Any = None) -> Any:
        if rule.name == "holes-cluster":
            raise ZeroDivisionError("a rule's bug")
        return real(rule, sequence, cache)

    monkeypatch.setattr(alert_engine_module, "evaluate_rule", failing)
    failed: list[str] = []
    results = strip_results(
        "S-RULE", [Defect(0.3 + 0.3 * k, c) for k in range(6) for c in ("holes", "scratches")]
    )
    writer.write_results(results)
    raised = AlertEngine(engine, RULES, CATALOGUE, failed.append).evaluate_results(results)
    assert failed == ["holes-cluster"]
    assert {a.rule for a in raised} == {"scratches-cluster"}


def test_a_strip_whose_stored_rows_cannot_be_read_back_does_not_stop_the_others(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """An older worker stored a frame captured in 1 BC (PostgreSQL took it; psycopg2 cannot read
    it back): that strip's evaluation fails alone, logged and counted; other strips raise."""
    good = strip_results("S-GOOD", [Defect(0.3 + 0.3 * k, "holes") for k in range(6)])
    poisoned = strip_results("S-POISON", [Defect(0.3 + 0.3 * k, "holes") for k in range(6)])
    writer.write_results(good + poisoned)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE frames SET captured_at = '0001-06-01 00:00:00+00 BC' WHERE strip_id = 'S-POISON'")
        )
    failed: list[str] = []
    raised = AlertEngine(engine, RULES, CATALOGUE, failed.append).evaluate_results(good + poisoned)
    assert failed == [STRIP_FAILED]
    assert {a.strip_id for a in raised} == {"S-GOOD"}


# --- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")), TRANSIENT),
        (sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), TRANSIENT),
        (kafka_errors.KafkaTimeoutError("Failed to update metadata"), TRANSIENT),
        (kafka_errors.NotEnoughReplicasError(), TRANSIENT),
        (DeliveryError("3 of 3 output messages not acknowledged in time"), TRANSIENT),
        (sa_exc.ProgrammingError("INSERT", {}, Exception("permission denied for table frames")), SYSTEMIC),
        (kafka_errors.TopicAuthorizationFailedError(), SYSTEMIC),
        (kafka_errors.UnknownTopicOrPartitionError(), SYSTEMIC),
        (ModelError("predict returned shape (3, 2)"), SYSTEMIC),
        (sa_exc.DataError("INSERT", {}, Exception("value out of range")), DATA),
        (sa_exc.IntegrityError("INSERT", {}, Exception("violates check constraint")), DATA),
        (sa_exc.StatementError("NUL", "INSERT", {}, ValueError("A string literal cannot contain NUL")), DATA),
        (kafka_errors.MessageSizeTooLargeError(), DATA),
        (ValueError("Out of range float values are not JSON compliant"), DATA),
        (KeyError("holes"), DATA),
    ],
)
def test_failures_are_classified_as_transient_systemic_or_data(error: BaseException, kind: str) -> None:
    assert classify(error) == kind
