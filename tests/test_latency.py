"""The latency series: each frame's time from its `captured_at` to its rows committed and to its
detection message acknowledged, observed by a real worker (broker, PostgreSQL, model)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from frames import frame_record, grey_image, make_meta
from streaming_harness import (
    ledger,
    make_topics,
    publish,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.model.artefact import Classifier
from worker.streaming.observability import LATENCY_BUCKETS


def test_capture_to_commit_and_to_publish_are_observed_per_frame(  # noqa: PLR0917 (fixtures)
    broker, make_topic, worker_database_url: str, database_url: str, model_dir: Path, classifier: Classifier
) -> None:
    topics = make_topics(make_topic, partitions=1)
    settings = worker_settings(broker.bootstrap_servers, worker_database_url, model_dir, topics)
    captured = datetime.now(UTC)
    messages = [
        frame_record(
            make_meta(f"f-{i}", captured_at=captured + timedelta(milliseconds=10 * i)),
            grey_image(256, 512, seed=i),
        )
        for i in range(4)
    ]
    # a camera whose clock runs an hour ahead: its frame counts as 0 s, never negative
    ahead = make_meta("f-ahead", captured_at=captured + timedelta(hours=1))
    messages.append(frame_record(ahead, grey_image(256, 512, seed=9)))
    started = time.monotonic()
    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, messages)
        wait_until(lambda: len(ledger(database_url)) == 5, 60, "5 ledger rows")
        wait_until(
            lambda: running.worker.metrics.value("steel_worker_frames_total") == 5, 30, "5 frames counted"
        )
        metrics = running.worker.metrics
    elapsed = time.monotonic() - started
    for name in ("steel_worker_capture_to_commit_seconds", "steel_worker_capture_to_publish_seconds"):
        assert metrics.value(f"{name}_count") == 5
        total = metrics.value(f"{name}_sum")
        assert 0 < total < 4 * (elapsed + 1), f"{name}: the four frames' latencies add up to {total} s"
        assert (
            metrics.value(f"{name}_bucket", {"le": str(float(LATENCY_BUCKETS[0]))}) >= 1
        )  # the frame from ahead
    # rows are committed before the detection messages are published
    commit, publish_ = (
        metrics.value(f"steel_worker_capture_to_{step}_seconds_sum") for step in ("commit", "publish")
    )
    assert commit <= publish_
