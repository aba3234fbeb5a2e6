"""Crashes and outages between two delivery steps, against the real broker, PostgreSQL and model:

- `kill -9` at deterministic points (STEEL_WORKER_FAILPOINT: right after the database commit and
  before the publish; right after the publish and before the offset commit; after the alert rules),
  then a new worker finishes the stream: every frame in the ledger exactly once, every offset
  committed, and every detection message on the topic — the copies a redelivery produced too —
  says exactly what the database holds for its frame;
- a database outage that starts in the middle of a batch (after its write, before its alert rules);
- a rebalance while a batch is being delivered (a second worker joins while the first is between
  its write and its publish).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from streaming_harness import (
    Topics,
    committed_offsets,
    end_offsets,
    frame_messages,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    start_worker_process,
    wait_until,
    worker_settings,
)

from worker.model.artefact import Classifier, load_classifier
from worker.streaming.observability import RETRYING


def _stored_detections(database_url: str) -> dict[str, list[tuple[int, str, float]]]:
    """frame id → (tile, class, confidence) of its stored detections, for every ledger row."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            frames = {f: [] for f in conn.execute(sa.text("SELECT frame_id FROM frames")).scalars()}
            rows = conn.execute(
                sa.text(
                    "SELECT d.frame_id, d.tile_index, c.name, d.confidence FROM detections d"
                    " JOIN defect_classes c ON c.id = d.class_id"
                )
            )
            for frame_id, tile, name, confidence in rows:
                frames[frame_id].append((tile, name, round(float(confidence), 5)))
        return {f: sorted(d) for f, d in frames.items()}
    finally:
        engine.dispose()


def _stored_crops(database_url: str) -> list[tuple[str, int, bool]]:
    """(frame id, tile, sampled) of every row of tile_images."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(sa.text("SELECT frame_id, tile_index, sampled FROM tile_images"))
            ]
    finally:
        engine.dispose()


def _assert_exactly_once_and_consistent(
    database_url: str, bootstrap: str, topics: Topics, frame_ids: list[str]
) -> int:
    """Ledger: every frame once, at its own offset; offsets committed; every detection message
    (copies included) equal to the database's rows of its frame; one crop per tile with a stored
    detection. Returns the messages' count."""
    rows = ledger(database_url)
    assert sorted(r.frame_id for r in rows) == sorted(frame_ids)
    end = end_offsets(bootstrap, topics.frames)
    assert sorted((r.kafka_partition, r.kafka_offset) for r in rows) == sorted(
        (p, o) for p, n in end.items() for o in range(n)
    )
    wait_until(
        lambda: committed_offsets(bootstrap, topics.group, topics.frames) == end, 30, "offsets committed"
    )
    stored = _stored_detections(database_url)
    messages: dict[str, list[Any]] = defaultdict(list)
    for record in read_topic(bootstrap, topics.detections, at_least=len(frame_ids)):
        message = json.loads(record.value)
        messages[message["frame_id"]].append(message)
    assert set(messages) == set(frame_ids)
    crops = _stored_crops(database_url)
    assert len(crops) == len({(f, t) for f, t, _ in crops}), "a crop stored twice"
    assert {(f, t) for f, t, was_sampled in crops if not was_sampled} == {
        (f, tile) for f, found in stored.items() for tile, _, _ in found
    }, "the crops are not those of the tiles with a detection"
    for frame_id, copies in messages.items():
        for message in copies:
            said = sorted(
                (d["tile_index"], d["class_name"], round(d["confidence"], 5)) for d in message["detections"]
            )
            assert said == stored[frame_id], (
                f"{frame_id}: the topic says {said}, the database {stored[frame_id]}"
            )
    return sum(len(c) for c in messages.values())


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


@pytest.mark.parametrize(
    "failpoint",
    [
        "write:2",  # the second batch is in the database; nothing of it published, its offsets not committed
        # ... and its alert rules evaluated; ... and its detection messages on the topic, its offsets
        # not committed. A worker subprocess killed and another started: ~25 s each (`make test-slow`).
        pytest.param("evaluate:2", marks=pytest.mark.slow),
        pytest.param("publish:2", marks=pytest.mark.slow),
    ],
)
def test_kill_9_between_two_steps_then_a_new_worker_leaves_every_frame_once_and_the_topic_consistent(
    broker,
    make_topic,
    database_url: str,
    tmp_path: Path,
    failpoint: str,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    messages = frame_messages(16)
    log_path = tmp_path / "worker.log"
    process = start_worker_process(settings, log_path, {"STEEL_WORKER_FAILPOINT": failpoint})
    try:
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        assert process.wait(90) == -9, _tail(log_path)  # it killed itself at the failpoint
    finally:
        process.kill()
    written_before = len(ledger(database_url))
    committed_before = committed_offsets(broker.bootstrap_servers, topics.group, topics.frames)[0] or 0
    assert committed_before < written_before <= len(messages), (committed_before, written_before)

    with running_worker(settings, classifier):
        wait_until(lambda: len(ledger(database_url)) == len(messages), 60, "every frame in the ledger")
        published = _assert_exactly_once_and_consistent(
            database_url, broker.bootstrap_servers, topics, list(messages)
        )
    if failpoint.startswith("publish"):
        assert published > len(messages), "the killed batch's messages went out twice (at least once)"


def test_a_database_outage_that_starts_in_the_middle_of_a_batch_loses_nothing(
    broker,
    make_topic,
    private_postgres,
    private_database_url: str,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    """The database stops right after a batch's write committed: the step after it (the camera
    health's count, then the alert rules), and everything after, wait; consumption pauses; the
    worker reports retrying; then it all goes through."""
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, private_database_url, model_dir, topics)
    messages = frame_messages(12)
    stopped = threading.Event()

    def stop_database_after_the_third_write(step: str) -> None:
        if step == "write" and not stopped.is_set() and len(ledger(private_database_url)) >= 6:
            private_postgres.stop()
            stopped.set()

    with running_worker(settings, classifier, after_step=stop_database_after_the_third_write) as running:
        publish(broker.bootstrap_servers, topics.frames, list(messages.values()))
        assert stopped.wait(60), "the database was never stopped"
        metrics = running.worker.metrics
        after_write = running.worker.sinks[1].name
        assert after_write == "camera-health"
        wait_until(
            lambda: metrics.value("steel_worker_retries_total", {"step": after_write}) >= 2, 30, "retries"
        )
        assert running.worker.health.report()[1]["state"] == RETRYING
        ready, body = running.worker.health.readiness()
        assert not ready and body["failing"]["step"] == after_write
        private_postgres.start()
        wait_until(lambda: len(ledger(private_database_url)) == len(messages), 60, "every frame written")
        _assert_exactly_once_and_consistent(
            private_database_url, broker.bootstrap_servers, topics, list(messages)
        )
        wait_until(lambda: running.worker.health.readiness()[0], 20, "ready again")


def test_a_rebalance_while_a_batch_is_delivered_loses_nothing_and_writes_nothing_twice(
    broker, make_topic, database_url: str, model_dir: Path, classifier: Classifier
) -> None:
    """Worker a is held between the write and the publish of a batch until worker b has joined
    the group: the group rebalances with a's batch in flight. Then both finish the stream."""
    topics = make_topics(make_topic, partitions=4)
    strips = [f"S{i}" for i in range(8)]
    messages = frame_messages(24, strips=strips, size=(256, 256))
    stream = list(messages.values())
    b_joined = threading.Event()
    held = threading.Event()

    def hold_the_first_write(step: str) -> None:
        if step == "write" and not held.is_set():
            held.set()
            b_joined.wait(30)
            time.sleep(3)  # b's request to join reaches the group: it rebalances with this batch in flight

    def settings(name: str):
        return worker_settings(broker.bootstrap_servers, database_url, model_dir, topics, worker_id=name)

    with running_worker(settings("a"), classifier, after_step=hold_the_first_write):
        publish(broker.bootstrap_servers, topics.frames, stream[:12])
        assert held.wait(60), "worker a never wrote a batch"
        second_model = load_classifier(model_dir, batch_size=4)
        with running_worker(settings("b"), second_model) as b:
            b_joined.set()
            wait_until(lambda: bool(b.worker.consumer.assignment()), 60, "b holds partitions")
            publish(broker.bootstrap_servers, topics.frames, stream[12:])
            wait_until(lambda: len(ledger(database_url)) == len(stream), 90, "every frame in the ledger")
        _assert_exactly_once_and_consistent(database_url, broker.bootstrap_servers, topics, list(messages))
