"""The worker end to end against the real broker (Tansu), a real PostgreSQL database and a real
(untrained, input 32) model: frames in → ledger rows, the classifier's detections, one detection
message per frame, no alert but the rules' (tests/test_worker_alerts.py), committed offsets; bad
input → dead-letter topic."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import structlog
from frames import grey_image, inbound, jpeg_bytes, make_meta, png_bytes
from kafka import KafkaProducer
from sqlalchemy.engine import make_url
from streaming_harness import (
    committed_offsets,
    detection_rows,
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
from worker.core import contracts, evidence
from worker.core import refusals as r
from worker.inference import Inferencer
from worker.model.artefact import Classifier
from worker.streaming import decode as d
from worker.streaming.dead_letter import DeadLetterPublisher
from worker.streaming.settings import HEADER_ROOM_BYTES

LIMITS = d.DecodeLimits(max_frame_bytes=300_000, max_frame_pixels=2_000_000)
SECRET = "pa55-SeCrEt-word"
JPEG_MEAN_ERROR = 6.0  # grey levels, at the default JPEG quality 90


def _expected_detections(
    classifier: Classifier, messages: dict[str, Any]
) -> list[tuple[str, int, str, float]]:
    """(frame, tile, class, confidence) straight from `Inferencer.predict` on each decoded frame."""
    inferencer = Inferencer(classifier, tile_size=256)
    expected = []
    for frame_id, (_, value, headers) in messages.items():
        frame = d.decode_message(inbound(value, headers), LIMITS)
        assert not isinstance(frame, d.Rejected)
        predicted = inferencer.predict(frame.image)
        scores = predicted.scores
        for tile, class_index in zip(*np.nonzero(predicted.decisions), strict=True):
            name = classifier.catalogue.names[class_index]
            expected.append((frame_id, int(tile), name, float(scores[tile, class_index])))
    return sorted(expected)


def _tiles_seen(classifier: Classifier, messages: dict[str, Any]) -> dict[tuple[str, int], np.ndarray]:
    """(frame, tile) → the tile's pixels as `Inferencer.pre_process` cuts them for the model."""
    inferencer = Inferencer(classifier, tile_size=256)
    seen = {}
    for frame_id, (_, value, headers) in messages.items():
        frame = d.decode_message(inbound(value, headers), LIMITS)
        assert not isinstance(frame, d.Rejected)
        for index, pixels in enumerate(inferencer.pre_process(frame.image).pixels):
            seen[(frame_id, index)] = pixels
    return seen


def _crops(database_url: str) -> list[tuple[str, int, bool, bytes]]:
    """(frame, tile, sampled, image bytes) of every row of tile_images."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT frame_id, tile_index, sampled, image FROM tile_images"))
            return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]
    finally:
        engine.dispose()


def _assert_one_crop_per_tile_with_a_detection(
    database_url: str, classifier: Classifier, messages: dict[str, Any], expected: list[Any]
) -> None:
    """The evidence: one crop per tile with a detection (and the sampled clean ones), holding the
    pixels the model saw (JPEG at the default quality)."""
    crops = _crops(database_url)
    detected = {(f, t) for f, t, _, _ in expected}
    assert {(f, t) for f, t, was_sampled, _ in crops if not was_sampled} == detected
    assert not {(f, t) for f, t, was_sampled, _ in crops if was_sampled} & detected
    assert len(crops) == len({(f, t) for f, t, _, _ in crops})  # each once
    seen = _tiles_seen(classifier, messages)
    for frame_id, tile, _, image in crops:
        pixels = evidence.decode(image).astype(int)
        errors = {t: np.abs(pixels - p.astype(int)).mean() for (f, t), p in seen.items() if f == frame_id}
        assert errors[tile] < JPEG_MEAN_ERROR, (frame_id, tile, errors)
        assert min(errors, key=errors.__getitem__) == tile, (frame_id, tile, errors)  # no other tile


def _alert_keys(database_url: str) -> list[str]:
    """The dedup keys (= alert ids) of the alerts table's rows, sorted."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.text("SELECT dedup_key FROM alerts")).scalars())
    finally:
        engine.dispose()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_frames_become_ledger_rows_predicted_detections_and_messages_and_no_per_frame_alerts(
    broker, make_topic, database_url: str, model_dir, classifier: Classifier
) -> None:
    topics = make_topics(make_topic, partitions=2)
    url_with_password = make_url(database_url).set(password=SECRET).render_as_string(hide_password=False)
    settings = worker_settings(broker.bootstrap_servers, url_with_password, model_dir, topics)
    messages = frame_messages(
        9, content_types=(contracts.PNG, contracts.JPEG, contracts.RAW_GRAY8), size=(256, 600)
    )
    expected = _expected_detections(classifier, messages)
    assert expected, "the thresholds should let some tiles through"

    with (
        structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
        running_worker(settings, classifier) as running,
    ):
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        wait_until(lambda: len(ledger(database_url)) == 9, 60, "9 ledger rows")
        end = end_offsets(broker.bootstrap_servers, topics.frames)
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end,
            20,
            f"offsets {end} committed",
        )
        metrics_url = next(e["url"] for e in logs if e["event"] == "worker.metrics")
        status, body = _get(metrics_url.replace("/metrics", "/healthz"))
        assert status == 200 and json.loads(body)["state"] == "running"
        status, body = _get(metrics_url)
        assert status == 200 and b"steel_worker_frames_total 9.0" in body
        assert running.worker.metrics.value("steel_worker_tiles_total") == 9 * 3

    # The ledger: one row per frame, with its Kafka coordinates.
    rows = ledger(database_url)
    assert sorted(r.frame_id for r in rows) == sorted(messages)
    assert {(r.kafka_partition, r.kafka_offset) for r in rows} == {
        (p, o) for p, n in end.items() for o in range(n)
    }
    # The detections: exactly what the classifier predicts on the frames' tiles.
    stored = detection_rows(database_url)
    assert [(f, t, c) for f, t, c, _, _ in stored] == [(f, t, c) for f, t, c, _ in expected]
    np.testing.assert_allclose([r[3] for r in stored], [e[3] for e in expected], rtol=1e-4)

    # One valid detection message per frame, keyed by strip, carrying the same detections.
    out = read_topic(broker.bootstrap_servers, topics.detections, at_least=9)
    by_frame = {}
    for record in out:
        message = json.loads(record.value)
        contracts.validate(contracts.DETECTION, message)
        assert record.key.decode() == message["strip_id"]
        by_frame[message["frame_id"]] = message
    assert sorted(by_frame) == sorted(messages)
    published = sorted(
        (f, det["tile_index"], det["class_name"]) for f, m in by_frame.items() for det in m["detections"]
    )
    assert published == [(f, t, c) for f, t, c, _ in expected]
    # each detection names its row, the id alerts cite as evidence
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as conn:
        row_ids = dict(
            conn.execute(
                sa.text(
                    "SELECT d.frame_id || '/' || d.tile_index || '/' || c.name, d.id FROM detections d"
                    " JOIN defect_classes c ON c.id = d.class_id"
                )
            ).all()
        )
    engine.dispose()
    assert {
        f"{f}/{det['tile_index']}/{det['class_name']}": det["record_id"]
        for f, m in by_frame.items()
        for det in m["detections"]
    } == row_ids
    assert any(m["detections"] == [] for m in by_frame.values()) or len(expected) >= 9 * 3

    _assert_one_crop_per_tile_with_a_detection(database_url, classifier, messages, expected)

    # Alerts come only from the alert rules (config/alert-rules.yaml), none per frame: the alerts
    # topic holds exactly the alerts table's rows, each once (tests/test_worker_alerts.py makes
    # the rules fire).
    raised = _alert_keys(database_url)
    assert end_offsets(broker.bootstrap_servers, topics.alerts) == {0: len(raised)}
    alerts = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers, topics.alerts, len(raised))]
    for alert in alerts:
        contracts.validate(contracts.ALERT, alert)
        assert alert["cause"] == classifier.catalogue.get(alert["class_name"]).cause
    assert sorted(a["alert_id"] for a in alerts) == raised

    # Logs: JSON-ready events with the message context bound, and never the database password.
    assert SECRET not in repr(logs)
    committed = [e for e in logs if e["event"] == "batch.committed"]
    assert sum(e["frames"] for e in committed) == 9


def _bad_inputs() -> list[tuple[str, tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]]:
    """(expected reason, message) for every kind of bad input the issue names."""
    meta = make_meta("bad", strip_id="S9")
    headers = contracts.frame_headers(meta, contracts.PNG)
    good = png_bytes(grey_image(64, 64))
    bomb = png_bytes(np.zeros((1500, 1400), np.uint8))  # 2.1 M pixels declared, limit 2 M
    raw_meta = make_meta("raw", strip_id="S9", width=100, height=100)
    return [
        (r.CORRUPT_IMAGE, (b"S9", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, headers)),
        (
            r.CORRUPT_IMAGE,
            (b"S9", jpeg_bytes(grey_image(64, 64))[:-200], contracts.frame_headers(meta, contracts.JPEG)),
        ),
        (r.UNSUPPORTED_CONTENT_TYPE, (b"S9", good, contracts.frame_headers(meta, "image/tiff"))),
        (r.MISSING_METADATA, (b"S9", good, [("content-type", b"image/png")])),
        (
            r.INVALID_METADATA,
            (b"S9", good, [("content-type", b"image/png"), ("frame-meta", b'{"frame_id": 1}')]),
        ),
        (r.EMPTY_PAYLOAD, (b"S9", b"", headers)),
        (r.IMAGE_TOO_LARGE, (b"S9", bomb, headers)),
        (r.OVERSIZE_PAYLOAD, (b"S9", b"\0" * 400_000, headers)),
        (r.OVERSIZE_PAYLOAD, (b"S9", b"\1" * 1_200_000, headers)),  # too large to dead-letter whole
        (r.CORRUPT_IMAGE, (b"S9", b"\0" * 99, contracts.frame_headers(raw_meta, contracts.RAW_GRAY8))),
    ]


def test_each_bad_input_kind_is_dead_lettered_with_its_reason_while_good_frames_flow(
    broker, make_topic, database_url: str, model_dir, classifier: Classifier
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers,
        database_url,
        model_dir,
        topics,
        max_frame_bytes="300000",
        max_frame_pixels="2000000",
    )
    bad = _bad_inputs()
    good = list(frame_messages(len(bad) + 1, size=(256, 256)).values())
    stream, reasons_by_offset = [], {}
    for i, message in enumerate(good):  # good, bad, good, bad, ..., good
        stream.append(message)
        if i < len(bad):
            reasons_by_offset[len(stream)] = bad[i][0]
            stream.append(bad[i][1])

    with (
        structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
        running_worker(settings, classifier) as running,
    ):
        publish(broker.bootstrap_servers, topics.frames, stream)
        wait_until(lambda: len(ledger(database_url)) == len(good), 60, "every good frame in the ledger")
        wait_until(
            lambda: (
                committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: len(stream)}
            ),
            20,
            "every offset committed",
        )
        counted = {
            reason: running.worker.metrics.value("steel_worker_dead_lettered_total", {"reason": reason})
            for reason in set(reasons_by_offset.values())
        }

    assert counted == dict(Counter(reasons_by_offset.values()))
    dead = read_topic(broker.bootstrap_servers, topics.dlq, at_least=len(bad))
    assert len(dead) == len(bad)
    for record in dead:
        headers = dict(record.headers)
        values = {k: v.decode() for k, v in headers.items() if k.startswith("dlq-")}
        contracts.validate(contracts.DEAD_LETTER_HEADERS, values)
        offset = int(values["dlq-source-offset"])
        assert values["dlq-reason"] == reasons_by_offset[offset], values["dlq-detail"]
        assert (values["dlq-source-topic"], values["dlq-source-partition"]) == (topics.frames, "0")
        assert values["dlq-worker"] == settings.worker_id
        key, value, original_headers = stream[offset]
        if len(value or b"") > settings.max_message_bytes - HEADER_ROOM_BYTES:
            # larger than the producer may send: the value is left out, its size said
            assert (record.value, headers["dlq-value-omitted"]) == (None, str(len(value)).encode())
            value = None
        assert (record.key, record.value or b"") == (key, value or b"")  # the original message, unchanged
        assert [h for h in record.headers if not h[0].startswith("dlq-")] == list(original_headers)

    refused = [e for e in logs if e["event"] == "frame.refused"]
    assert sorted(e["offset"] for e in refused) == sorted(reasons_by_offset)
    assert all(e["topic"] == topics.frames and e["partition"] == 0 for e in refused)


def test_run_refuses_a_database_without_the_current_schema_and_says_what_to_run(
    broker, empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The schema is checked before the model is loaded: the model path need not exist yet."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("worker.streaming.run_command",))
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    monkeypatch.setenv("METRICS_PORT", "0")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        status = cli.main(["run", "--bootstrap", broker.bootstrap_servers, "--model", str(tmp_path / "none")])
    finally:  # `run` configures logging for the process; put it back
        structlog.reset_defaults()
        root.handlers, root.level = handlers, level
    assert status == 2
    error = capsys.readouterr().err
    assert "steel-worker run: error: database schema is at revision none" in error
    assert "run `steel-worker db upgrade`" in error


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://steel:{SECRET}@127.0.0.1:1/defects",
        f"postgresql://steel@127.0.0.1:1/defects?password={SECRET}",
    ],
)
def test_an_unreachable_database_is_named_without_its_password(
    broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, url: str
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("worker.streaming.run_command",))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("METRICS_PORT", "0")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        status = cli.main(["run", "--bootstrap", broker.bootstrap_servers, "--model", str(tmp_path / "none")])
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, level
    assert status == 2
    out = capsys.readouterr()
    assert "is unreachable" in out.err and "127.0.0.1:1/defects" in out.err
    assert SECRET not in out.err and SECRET not in out.out


def test_a_dead_letter_too_large_to_produce_goes_out_without_its_value(broker, make_topic) -> None:
    topic = make_topic("dlq")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=4000)
    message = inbound(b"\0" * 6000, [("content-type", b"image/png")], offset=12)
    rejected = d.Rejected(r.CORRUPT_IMAGE, r.DECODE, "test", message.source)
    try:
        publisher = DeadLetterPublisher(producer, topic, "w1", max_bytes=4000)
        future = publisher.publish(message, rejected)
        producer.flush(10)
        assert future.succeeded()
    finally:
        producer.close()
    (record,) = read_topic(broker.bootstrap_servers, topic, at_least=1)
    headers = dict(record.headers)
    assert record.value is None and headers["dlq-value-omitted"] == b"6000"
    assert headers["dlq-reason"] == b"corrupt-image" and headers["content-type"] == b"image/png"
