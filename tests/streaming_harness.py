"""Helpers for the worker tests: settings, a worker in a thread or a subprocess, publishing frames,
reading topics, committed offsets and the ledger. Everything talks to the real broker and database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from frames import frame_record, grey_image, make_meta
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from worker.core import contracts
from worker.model.artefact import Classifier
from worker.streaming.loop import Worker
from worker.streaming.service import open_worker
from worker.streaming.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
WORKER_COMMAND = ("-m", "worker", "run")

# Fast group joins and failure detection on Tansu; small batches so that a stream spans many.
TEST_SETTINGS = {
    "session_timeout_ms": "6000",
    "max_poll_interval_ms": "30000",  # room for a slow batch on a busy 2-core machine
    "poll_timeout_ms": "100",
    "batch_tiles": "4",
    "batch_max_wait_ms": "50",
    "retry_backoff_ms": "100",
    "retry_backoff_max_ms": "800",
    "metrics_host": "127.0.0.1",
    "metrics_port": "0",
    "log_format": "json",
    "shutdown_timeout_s": "5",
    # test frames carry a fixed captured_at (2024, tests/frames.py) and records the time they are
    # sent: every frame would be flagged clock-skew, and a run of them raise a camera alert
    "clock_skew_max_s": str(100 * 365 * 86_400),
}


@dataclass(frozen=True)
class Topics:
    frames: str
    detections: str
    alerts: str
    dlq: str
    group: str


def make_topics(make_topic: Callable[..., str], partitions: int = 1) -> Topics:
    frames = make_topic("frames", partitions)
    return Topics(
        frames=frames,
        detections=make_topic("detections"),
        alerts=make_topic("alerts"),
        dlq=make_topic("dlq"),
        group=f"group-{frames}",
    )


def worker_settings(
    bootstrap: str, database_url: str, model_dir: Path, topics: Topics, **overrides: str
) -> Settings:
    values = {
        "bootstrap_servers": bootstrap,
        "database_url": database_url,
        "model_path": str(model_dir),
        "frames_topic": topics.frames,
        "detections_topic": topics.detections,
        "alerts_topic": topics.alerts,
        "dlq_topic": topics.dlq,
        "consumer_group": topics.group,
        **TEST_SETTINGS,
        **overrides,
    }
    return load_settings({}, values)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment variables that configure a `python -m worker run` subprocess like `settings`."""
    from worker.streaming.settings import ALERT_RULES_OFF, OPTIONS  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "ALERT_RULES"))}
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if isinstance(value, frozenset):  # a set of names: IMAGE_QUALITY_CHECKS, IMAGE_QUALITY_REFUSE
            env[option.env] = ",".join(sorted(value)) or "none"
        elif value is not None:
            env[option.env] = value.reveal() if hasattr(value, "reveal") else str(value)
    if settings.alert_rules is None:
        env["ALERT_RULES"] = ALERT_RULES_OFF
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@dataclass
class ThreadedWorker:
    worker: Worker
    thread: threading.Thread
    exit_code: list[int]


@contextmanager
def running_worker(
    settings: Settings, classifier: Classifier, after_step: Callable[[str], None] | None = None
) -> Iterator[ThreadedWorker]:
    """A worker running in a thread; on exit it is asked to stop and must return 0.
    `after_step(name)` runs on the worker's thread after each delivery step and commit."""
    with open_worker(settings, classifier=classifier, after_step=after_step) as worker:
        exit_code: list[int] = []
        thread = threading.Thread(target=lambda: exit_code.append(worker.run()), name="worker", daemon=True)
        thread.start()
        running = ThreadedWorker(worker, thread, exit_code)
        try:
            yield running
        finally:
            worker.request_stop()
            thread.join(30)
    assert not thread.is_alive(), "the worker did not stop within 30 s"
    assert exit_code == [0], f"the worker returned {exit_code}"


def start_worker_process(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m worker run` configured by environment variables, output to `log_path`."""
    log = open(log_path, "ab")  # noqa: SIM115  (handed to the child; closed with the test's tmp dir)
    return subprocess.Popen(
        [sys.executable, *WORKER_COMMAND],
        cwd=REPO,
        env={**worker_env(settings), **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


FrameMessage = tuple[bytes, bytes, list[tuple[str, bytes]]]


def frame_messages(
    count: int,
    *,
    start: int = 0,
    strips: Sequence[str] = ("S1", "S2", "S3", "S4"),
    size: tuple[int, int] = (256, 512),
    content_types: Sequence[str] = (contracts.PNG,),
) -> dict[str, FrameMessage]:
    """Frame id (f-00000…) → (key, value, headers) of a camera frame; strips take turns."""
    messages = {}
    for i in range(start, start + count):
        meta = make_meta(f"f-{i:05d}", strip_id=strips[i % len(strips)], position_m=1.0 + i * 0.128)
        messages[meta.frame_id] = frame_record(
            meta, grey_image(*size, seed=i), content_types[i % len(content_types)]
        )
    return messages


def publish(bootstrap: str, topic: str, messages: Sequence[FrameMessage], interval_s: float = 0.0) -> None:
    """Publish (key, value, headers) messages as they are, in order, optionally paced."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8_000_000)
    try:
        for key, value, headers in messages:
            producer.send(topic, key=key, value=value, headers=headers)
            if interval_s:
                producer.flush()
                time.sleep(interval_s)
        producer.flush(10)
    finally:
        producer.close()


def read_topic(bootstrap: str, topic: str, at_least: int, timeout_s: float = 30.0) -> list[Any]:
    """All records of `topic` (every partition, from the start) once there are `at_least` of them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [0])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= at_least:
                # drain whatever else is already there
                for batch in consumer.poll(timeout_ms=300).values():
                    records.extend(batch)
                break
        return records
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: o for tp, o in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition of `topic` (None where nothing was committed)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def ledger(database_url: str) -> list[sa.Row[Any]]:
    """frame_id, kafka_partition, kafka_offset of every ledger row."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text("SELECT frame_id, kafka_partition, kafka_offset FROM frames ORDER BY frame_id")
                )
            )
    finally:
        engine.dispose()


def detection_rows(database_url: str) -> list[tuple[str, int, str, float, float]]:
    """(frame_id, tile_index, class name, confidence, threshold) of every detection row."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT d.frame_id, d.tile_index, c.name, d.confidence, d.threshold FROM detections d"
                    " JOIN defect_classes c ON c.id = d.class_id ORDER BY 1, 2, 3"
                )
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid`, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def wait_until(
    condition: Callable[[], Any], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.2
) -> None:
    """Poll `condition` until true; AssertionError naming `what` (a text, or a function giving one
    at failure time, e.g. a log tail) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what() if callable(what) else what}")


# --- the model: a real, untrained artefact at a tiny input size ---------------------------------
# Test modules wrap these in session fixtures; the cache makes one artefact per test session.

_MODEL: dict[str, Any] = {}


def untrained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained artefact (input 32) whose thresholds are each class's 80th percentile score on
    sample tiles, so that a stream has frames with and without detections. Re-tuning thresholds
    in model.json keeps the weights and therefore the version."""
    if "dir" in _MODEL:
        return Path(_MODEL["dir"])
    from worker.core.catalogue import load_catalogue  # noqa: PLC0415
    from worker.model.artefact import create_untrained_artefact, load_classifier  # noqa: PLC0415

    out = tmp_path_factory.mktemp("model")
    create_untrained_artefact(out, load_catalogue(), input_size=32, seed=3)
    sample = np.stack([grey_image(256, 256, seed=1000 + i) for i in range(64)])
    scores = load_classifier(out).predict(sample)
    meta_path = out / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["thresholds"] = {
        name: round(float(np.quantile(scores[:, c], 0.8)), 6) for c, name in enumerate(meta["thresholds"])
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    _MODEL["dir"] = out
    return out


def loaded_model(model_dir: Path) -> Classifier:
    """The artefact at `model_dir`, loaded once per session (predict batches of 4 tiles)."""
    from worker.model.artefact import load_classifier  # noqa: PLC0415

    if _MODEL.get("loaded_from") != model_dir:
        _MODEL["classifier"] = load_classifier(model_dir, batch_size=4)
        _MODEL["loaded_from"] = model_dir
    return _MODEL["classifier"]  # type: ignore[no-any-return]
