"""Camera health inside the running worker, against the real broker, PostgreSQL (as the worker's
login) and the real (untrained) model: black, white and 12-bit-in-16-bit frames from one camera
are flagged and stored, and their run raises exactly one camera alert, in the table and on the
alerts topic through the outbox; a frame from a camera whose clock says 2199 is flagged
clock-skew and counted, and keeps the captured_at it was sent with. Before revision 0010 the
worker classified such frames as steel (a dead-lamp strip made 3 290 detections and 7 alerts)
and nothing flagged the camera."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from frames import frame_record, grey_image, make_meta
from streaming_harness import (
    FrameMessage,
    committed_offsets,
    end_offsets,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    start_worker_process,
    wait_until,
    worker_settings,
)

from worker.core import contracts
from worker.core.quality import BIT_DEPTH, BRIGHT, CLIPPED, CLOCK_SKEW, DARK, FLAT
from worker.model.artefact import Classifier
from worker.storage.engine import create_engine

#: A rule that never fires (no sigmoid reaches 1): the alerts outbox runs, only camera alerts go out.
RULES = """\
version: 1
rules:
  - name: never
    kind: severe-single
    classes: [holes]
    min_confidence: 1.0
    severity: low
"""
RUN = 6  # CAMERA_ALERT_FRAMES


def _frame(
    n: int, image: np.ndarray, *, camera: str = "cam-top-1", captured_at: datetime | None = None
) -> FrameMessage:
    at = captured_at or datetime.now(UTC) + timedelta(milliseconds=n)
    meta = make_meta(f"lamp-{n:02d}", strip_id="S-LAMP", position_m=n * 0.128, camera=camera, captured_at=at)
    if image.dtype == np.uint8:
        return frame_record(meta, image)
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return meta.strip_id.encode(), buffer.tobytes(), contracts.frame_headers(meta, contracts.PNG)


def _stream() -> tuple[list[FrameMessage], dict[str, tuple[str, ...]]]:
    """The frames in order, and frame id → the flags each must carry."""
    black, white = np.zeros((256, 512), np.uint8), np.full((256, 512), 255, np.uint8)
    twelve_bit = grey_image(256, 512, seed=7).astype(np.uint16) * 16
    plan: list[tuple[np.ndarray, tuple[str, ...]]] = [
        (grey_image(256, 512, seed=1), ()),
        (grey_image(256, 512, seed=2), ()),
        (black, (DARK, FLAT, CLIPPED)),
        (black, (DARK, FLAT, CLIPPED)),
        (white, (BRIGHT, FLAT, CLIPPED)),
        (white, (BRIGHT, FLAT, CLIPPED)),
        (twelve_bit, (FLAT, BIT_DEPTH)),
        (twelve_bit, (FLAT, BIT_DEPTH)),  # the 6th bad frame in a row: the camera alert
        (black, (DARK, FLAT, CLIPPED)),  # the run goes on: nothing more
        (grey_image(256, 512, seed=3), ()),
    ]
    messages = [_frame(n, image) for n, (image, _) in enumerate(plan)]
    expected = {f"lamp-{n:02d}": flags for n, (_, flags) in enumerate(plan)}
    skewed = _frame(len(plan), grey_image(256, 512, seed=4), camera="cam-bottom-1", captured_at=SKEWED)
    expected[f"lamp-{len(plan):02d}"] = (CLOCK_SKEW,)
    return [*messages, skewed], expected


SKEWED = datetime(2199, 1, 1, 12, 0, tzinfo=UTC)


def _rows(database_url: str, query: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(query)).mappings()]
    finally:
        engine.dispose()


def test_a_dead_lamp_run_is_flagged_raises_one_camera_alert_and_a_skewed_clock_is_flagged_and_counted(  # noqa: PLR0917
    broker: Any,
    make_topic: Any,
    database_url: str,
    worker_database_url: str,
    classifier: Classifier,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    topics = make_topics(make_topic)
    messages, expected = _stream()
    settings = worker_settings(
        broker.bootstrap_servers,
        worker_database_url,
        classifier.model_dir,
        topics,
        alert_rules=str(rules),
        camera_alert_frames=str(RUN),
        clock_skew_max_s="300",
    )
    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, messages)
        wait_until(lambda: len(ledger(database_url)) == len(messages), 90, "every frame in the ledger")
        end = end_offsets(broker.bootstrap_servers, topics.frames)
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end,
            30,
            f"offsets {end} committed",
        )
        metrics = running.worker.metrics
        counted = {
            c: metrics.value("steel_worker_frame_quality_flags_total", {"check": c})
            for c in (FLAT, CLOCK_SKEW)
        }
        camera_alerts = metrics.value("steel_worker_camera_alerts_total")

    stored = {
        r["frame_id"]: r
        for r in _rows(database_url, "SELECT frame_id, quality_flags, captured_at FROM frames")
    }
    assert {f: tuple(r["quality_flags"]) for f, r in stored.items()} == expected
    assert stored[f"lamp-{len(messages) - 1:02d}"]["captured_at"] == SKEWED  # stored as the camera sent it
    assert counted == {FLAT: 7, CLOCK_SKEW: 1} and camera_alerts == 1

    (alert,) = _rows(database_url, "SELECT * FROM alerts")  # the rule never fires: only the camera's
    bad = [f"lamp-{n:02d}" for n in range(2, 2 + RUN)]
    assert (alert["rule_kind"], alert["camera"], alert["class_id"], alert["detection_count"]) == (
        "camera",
        "cam-top-1",
        None,
        RUN,
    )
    assert alert["frame_ids"] == bad and alert["published_at"] is not None
    assert alert["details"]["flags"] == {DARK: 2, BRIGHT: 2, FLAT: RUN, CLIPPED: 4, BIT_DEPTH: 2}

    (record,) = read_topic(broker.bootstrap_servers, topics.alerts, at_least=1, timeout_s=20)
    message = json.loads(record.value)
    contracts.validate(contracts.ALERT, message)
    assert record.key == alert["dedup_key"].encode() == message["alert_id"].encode()
    assert (message["rule_kind"], message["class_name"], message["count"], message["frame_ids"]) == (
        "camera",
        "camera",
        RUN,
        bad,
    )
    assert message["severity"] == "high" and "dead lamp" in message["cause"]
    assert (
        read_topic(broker.bootstrap_servers, topics.dlq, at_least=1, timeout_s=1) == []
    )  # flagged, not refused


@pytest.mark.slow  # a worker subprocess killed and a second one started: about 30 s (`make test-slow`)
def test_kill_9_right_after_a_run_is_counted_then_a_new_worker_counts_each_frame_once_and_alerts_once(  # noqa: PLR0917
    broker: Any, make_topic: Any, database_url: str, tmp_path: Path, model_dir: Path, classifier: Classifier
) -> None:
    """The worker kills itself right after the second batch's camera-health step committed (its
    alert raised, nothing published, offsets not committed); a new worker reads those frames again:
    the run counts every frame once, one camera alert in the table, one on the topic. The default
    rules see the black frames' detections no more: the camera alert is the only alert."""
    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, model_dir, topics, camera_alert_frames="2"
    )
    black = np.zeros((256, 512), np.uint8)
    messages = [_frame(n, black) for n in range(8)]
    log_path = tmp_path / "worker.log"
    process = start_worker_process(settings, log_path, {"STEEL_WORKER_FAILPOINT": "camera-health:2"})
    try:
        publish(broker.bootstrap_servers, topics.frames, messages)
        assert process.wait(90) == -9, log_path.read_text(errors="replace")[-3000:]
    finally:
        process.kill()
    counted_before = _rows(database_url, "SELECT run_frames FROM camera_health")[0]["run_frames"]
    assert 2 <= counted_before < len(messages)
    assert len(_rows(database_url, "SELECT id FROM alerts")) == 1  # raised before the kill

    with running_worker(settings, classifier):
        wait_until(lambda: len(ledger(database_url)) == len(messages), 60, "every frame in the ledger")
        wait_until(  # (Tansu's end offset of one record batch of small frames is not its last + 1)
            lambda: (
                committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: len(messages)}
            ),
            30,
            "every offset committed",
        )
        (state,) = _rows(database_url, "SELECT run_frames, alert_id FROM camera_health")
        alerts = _rows(database_url, "SELECT id, rule_kind, published_at FROM alerts")
        wait_until(
            lambda: _rows(database_url, "SELECT published_at FROM alerts")[0]["published_at"], 20, "published"
        )
    assert state["run_frames"] == len(messages)  # each frame once, the ones read again included
    assert [(a["id"], a["rule_kind"]) for a in alerts] == [(state["alert_id"], "camera")]
    records = read_topic(broker.bootstrap_servers, topics.alerts, at_least=1, timeout_s=20)
    assert [json.loads(r.value)["rule_kind"] for r in records] == ["camera"]
