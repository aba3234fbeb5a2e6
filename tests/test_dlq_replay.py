"""Dead letters that can be replayed (`steel-worker dlq replay`), against the real broker, PostgreSQL
and worker:

- a frame set aside after decoding is dead-lettered with its bytes, and goes back to the frames
  topic as the camera sent it (key, value, headers, plus `replay-of`);
- the selection by reason and by time, dry runs, dead letters without bytes, frames already stored
  and frame ids held by another message are counted, never sent;
- end to end: frames dead-lettered for a limit set too low come back once it is raised, each
  stored once; a second replay sends nothing; a frame replayed to other coordinates while it is
  stored is a redelivery, not a collision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from frames import grey_image, jpeg_bytes, make_meta
from kafka import KafkaConsumer, KafkaProducer
from streaming_harness import (
    end_offsets,
    frame_messages,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)

from worker import cli
from worker.core import contracts
from worker.core import refusals as r
from worker.core.errors import ConfigError
from worker.core.records import KafkaCoordinates
from worker.model.artefact import Classifier
from worker.storage.engine import create_engine
from worker.storage.writer import stored_message_hashes
from worker.streaming.dead_letter import dead_letter
from worker.streaming.decode import InboundMessage, Rejected, message_sha256
from worker.streaming.dlq_command import parse_time
from worker.streaming.replay import COLLISION, FILTERED, NO_BYTES, SENT, STORED, Selection, replay

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _frame(frame_id: str, seed: int = 0) -> InboundMessage:
    meta = make_meta(frame_id, strip_id="S9")
    headers = (*contracts.frame_headers(meta, contracts.JPEG), ("x-camera-sequence", b"17"))
    return InboundMessage(
        source=KafkaCoordinates("frames", 0, seed),
        key=b"S9",
        value=jpeg_bytes(grey_image(64, 128, seed=seed)),
        headers=tuple(headers),
    )


def _letters(bootstrap: str, dlq: str, letters: list[tuple[InboundMessage, str, datetime, int]]) -> None:
    """Write dead letters as the worker does (`dead_letter`), each under `max_bytes`."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
    try:
        for message, reason, at, max_bytes in letters:
            rejected = Rejected(reason, r.STORE, "test", message.source)
            key, value, headers = dead_letter(message, rejected, "w1", at, max_bytes)
            producer.send(dlq, key=key, value=value, headers=headers)
            producer.flush(10)  # one record per batch: the embedded broker's end offsets stay exact
    finally:
        producer.close()


def _replay(bootstrap: str, dlq: str, frames: str, selection: Selection, **options):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        return replay(consumer, producer, dlq_topic=dlq, frames_topic=frames, selection=selection, **options)
    finally:
        consumer.close()
        producer.close()


def test_a_dead_letter_goes_back_as_the_camera_sent_it(broker, make_topic) -> None:
    dlq, frames = make_topic("dlq"), make_topic("frames")
    message = _frame("f-replay-1")
    _letters(broker.bootstrap_servers, dlq, [(message, r.UNSTORABLE, T0, 1_000_000)])
    report = _replay(broker.bootstrap_servers, dlq, frames, Selection(frozenset({r.UNSTORABLE})))
    assert report.total(SENT) == 1 and report.read == 1
    (back,) = read_topic(broker.bootstrap_servers, frames, at_least=1)
    assert (back.key, back.value) == (message.key, message.value)
    headers = list(back.headers)
    assert headers[:-1] == list(message.headers)  # the original headers, in order, no dlq-*
    assert headers[-1] == ("replay-of", f"{dlq}[0]@0".encode())
    assert message_sha256(_inbound(back)) == message_sha256(message)  # the worker sees the same message


def _inbound(record) -> InboundMessage:
    return InboundMessage(
        source=KafkaCoordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
    )


def test_the_selection_dry_runs_and_what_cannot_or_need_not_be_sent_are_counted(
    broker, make_topic, engine, database_url: str
) -> None:
    dlq, frames = make_topic("dlq"), make_topic("frames")
    stored, other, fresh, big, old = (_frame(f"f-{k}", seed=k) for k in range(5))
    _letters(
        broker.bootstrap_servers,
        dlq,
        [
            (stored, r.UNSTORABLE, T0, 1_000_000),
            (other, r.UNSTORABLE, T0, 1_000_000),
            (fresh, r.DECODE_TIMEOUT, T0 + timedelta(minutes=5), 1_000_000),
            (big, r.UNSTORABLE, T0, 2_000),  # too large for the topic: value left out
            (old, r.UNSTORABLE, T0 - timedelta(days=2), 1_000_000),
            (fresh, r.CORRUPT_IMAGE, T0, 1_000_000),
        ],
    )
    with engine.begin() as conn:  # the ledger holds f-0 for this message and f-1 for another one
        from alert_strips import register  # noqa: PLC0415

        from worker.storage.writer import StorageWriter  # noqa: PLC0415

        register(StorageWriter(engine))
        for frame_id, sha in (("f-0", message_sha256(stored)), ("f-1", "0" * 64)):
            conn.exec_driver_sql(
                "INSERT INTO frames (frame_id, strip_id, line, camera, surface, captured_at, position_m,"
                " model_version, kafka_topic, kafka_partition, kafka_offset, tile_count, detection_count,"
                " processed_at, message_sha256) SELECT %s, 'S9', 'L1', 'c', 'top', now(), 0, version,"
                " 'frames', 0, 0, 0, 0, now(), %s FROM models LIMIT 1",
                (frame_id, sha),
            )
    selection = Selection(frozenset({r.UNSTORABLE, r.DECODE_TIMEOUT}), since=T0 - timedelta(hours=1))
    hashes = lambda ids: stored_message_hashes(engine, ids)  # noqa: E731
    dry = _replay(broker.bootstrap_servers, dlq, frames, selection, stored_hashes=hashes, dry_run=True)
    assert end_offsets(broker.bootstrap_servers, frames) == {0: 0}, "a dry run sends nothing"
    expected = {
        r.UNSTORABLE: {STORED: 1, COLLISION: 1, NO_BYTES: 1, FILTERED: 1},
        r.DECODE_TIMEOUT: {SENT: 1},
        r.CORRUPT_IMAGE: {FILTERED: 1},
    }
    assert dry.as_json()["reasons"] == expected and dry.read == 6
    assert "would send" in dry.table()
    report = _replay(broker.bootstrap_servers, dlq, frames, selection, stored_hashes=hashes)
    assert report.as_json()["reasons"] == expected
    (sent,) = read_topic(broker.bootstrap_servers, frames, at_least=1)
    assert sent.value == fresh.value


def test_times_and_the_command_line(broker, make_topic, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert parse_time("6h", "--since", now) == now - timedelta(hours=6)
    assert parse_time("2026-12-07T06:00Z", "--since") == T0
    for bad in ("yesterday", "2026-12-07T06:00", "6y"):
        with pytest.raises(ConfigError, match="--since: expected an ISO 8601 time"):
            parse_time(bad, "--since")
    dlq, frames = make_topic("dlq"), make_topic("frames")
    _letters(broker.bootstrap_servers, dlq, [(_frame("f-cli"), r.UNSTORABLE, datetime.now(UTC), 1_000_000)])
    argv = ["dlq", "replay", "--bootstrap-servers", broker.bootstrap_servers, "--dlq-topic", dlq]
    assert (
        cli.main([*argv, "--frames-topic", frames, "--reason", "unstorable", "--since", "1h", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["total"][SENT] == 1
    assert cli.main([*argv, "--any-reason", "--since", "soon"]) == 2
    assert "expected an ISO 8601 time" in capsys.readouterr().err
    assert cli.main([*argv, "--dlq-topic", "no-such-topic", "--any-reason"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_frames_dead_lettered_for_a_limit_set_too_low_come_back_once_each(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """MAX_JPEG_SCANS set below what the cameras write dead-letters their progressive JPEGs
    (`image-too-costly`, bytes kept); with the limit mended, a replay stores each once; replaying
    again sends nothing, and copies sent to other coordinates regardless are taken as
    redeliveries (no duplicate-frame-id)."""
    topics = make_topics(make_topic)
    progressive = [
        (
            b"S1",
            jpeg_bytes(grey_image(256, 512, seed=k), progressive=True),
            contracts.frame_headers(make_meta(f"prog-{k}", position_m=50.0 + k), contracts.JPEG),
        )
        for k in range(3)
    ]
    baseline = list(frame_messages(3, size=(256, 256)).values())
    too_low = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics, max_jpeg_scans="3")
    with running_worker(too_low, classifier):
        publish(broker.bootstrap_servers, topics.frames, [*progressive, *baseline])
        wait_until(lambda: len(ledger(database_url)) == 3, 60, "the baseline frames")
        wait_until(lambda: end_offsets(broker.bootstrap_servers, topics.dlq) == {0: 3}, 30, "3 dead letters")
    letters = read_topic(broker.bootstrap_servers, topics.dlq, at_least=3)
    assert {dict(x.headers)["dlq-reason"] for x in letters} == {r.IMAGE_TOO_COSTLY.encode()}
    assert sorted(x.value for x in letters) == sorted(value for _, value, _ in progressive)  # bytes kept

    mended = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    engine = create_engine(database_url)
    hashes = lambda ids: stored_message_hashes(engine, ids)  # noqa: E731
    selection = Selection(frozenset({r.IMAGE_TOO_COSTLY}))
    try:
        with running_worker(mended, classifier) as running:
            report = _replay(
                broker.bootstrap_servers, topics.dlq, topics.frames, selection, stored_hashes=hashes
            )
            assert report.total(SENT) == 3
            wait_until(lambda: len(ledger(database_url)) == 6, 60, "the replayed frames")
            again = _replay(
                broker.bootstrap_servers, topics.dlq, topics.frames, selection, stored_hashes=hashes
            )
            assert (again.total(SENT), again.total(STORED)) == (0, 3)
            forced = _replay(broker.bootstrap_servers, topics.dlq, topics.frames, selection)
            assert forced.total(SENT) == 3
            metrics = running.worker.metrics
            wait_until(lambda: metrics.value("steel_worker_frames_total") == 6, 60, "the forced copies")
    finally:
        engine.dispose()
    assert sorted(row.frame_id for row in ledger(database_url)) == sorted(
        ["prog-0", "prog-1", "prog-2", "f-00000", "f-00001", "f-00002"]
    )
    assert end_offsets(broker.bootstrap_servers, topics.dlq) == {0: 3}, "no duplicate-frame-id dead letter"
