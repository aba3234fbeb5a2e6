"""The worker under failure, against the real broker and real PostgreSQL: kill -9 and restart, a
database outage, a second worker joining and leaving the group, SIGTERM. Each time: every frame in
the ledger exactly once, offsets never committed past what was written. Output topics are
at-least-once, so they are checked by distinct frame ids."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from streaming_harness import (
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


def _assert_exactly_once(database_url: str, bootstrap: str, topics, frame_ids: list[str]) -> None:
    """Every frame once in the ledger at its own offset, every offset committed, every frame
    published (at least once)."""
    rows = ledger(database_url)
    assert sorted(r.frame_id for r in rows) == sorted(frame_ids)
    end = end_offsets(bootstrap, topics.frames)
    assert sorted((r.kafka_partition, r.kafka_offset) for r in rows) == sorted(
        (p, o) for p, n in end.items() for o in range(n)
    )
    wait_until(
        lambda: committed_offsets(bootstrap, topics.group, topics.frames) == end, 20, "offsets committed"
    )
    published = read_topic(bootstrap, topics.detections, at_least=len(frame_ids))
    assert {json.loads(r.value)["frame_id"] for r in published} == set(frame_ids)


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


def test_kill_9_mid_stream_and_restart_writes_every_frame_exactly_once(
    broker, make_topic, database_url: str, tmp_path: Path, *, model_dir: Path, classifier: Classifier
) -> None:
    """`python -m worker run` is killed with SIGKILL while frames arrive; a new worker (in this
    process, to keep the test short: all that survives a crash is in the broker and the database)
    finishes the stream."""
    topics = make_topics(make_topic, partitions=2)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    messages = frame_messages(40)
    stream = list(messages.values())
    log_path = tmp_path / "worker.log"

    process = start_worker_process(settings, log_path)
    try:
        publish(broker.bootstrap_servers, topics.frames, stream[:2])
        wait_until(
            lambda: len(ledger(database_url)) >= 2, 60, lambda: f"the first frames; log:\n{_tail(log_path)}"
        )
        rest = threading.Thread(
            target=publish, args=(broker.bootstrap_servers, topics.frames, stream[2:], 0.05), daemon=True
        )
        rest.start()
        wait_until(lambda: len(ledger(database_url)) >= 10, 30, "10 frames written")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert len(ledger(database_url)) < len(stream), (
            "the stream ended before the kill; nothing was mid-stream"
        )
    finally:
        process.kill()
    rest.join(30)

    with running_worker(settings, classifier):
        wait_until(lambda: len(ledger(database_url)) == len(stream), 60, "every frame in the ledger")
        _assert_exactly_once(database_url, broker.bootstrap_servers, topics, list(messages))


def test_sigterm_finishes_the_batch_commits_exactly_what_was_written_and_exits_0(
    broker, make_topic, database_url: str, model_dir: Path, tmp_path: Path
) -> None:
    topics = make_topics(make_topic, partitions=2)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    stream = list(frame_messages(30).values())
    log_path = tmp_path / "worker.log"
    process = start_worker_process(settings, log_path)
    try:
        publish(broker.bootstrap_servers, topics.frames, stream[:2])
        wait_until(
            lambda: len(ledger(database_url)) >= 2, 60, lambda: f"the first frames; log:\n{_tail(log_path)}"
        )
        threading.Thread(
            target=publish, args=(broker.bootstrap_servers, topics.frames, stream[2:], 0.05), daemon=True
        ).start()
        wait_until(lambda: len(ledger(database_url)) >= 6, 30, "6 frames written")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, _tail(log_path)
    finally:
        process.kill()

    assert '"event": "worker.stopped"' in log_path.read_text()
    committed = committed_offsets(broker.bootstrap_servers, topics.group, topics.frames)
    written: dict[int, list[int]] = {}
    for row in ledger(database_url):
        written.setdefault(row.kafka_partition, []).append(row.kafka_offset)
    # After a clean stop the commit and the ledger agree exactly: all offsets below the committed
    # one are written, none at or above it.
    for partition, offset in committed.items():
        assert sorted(written.get(partition, [])) == list(range(offset or 0)), (partition, offset)


def test_database_outage_pauses_retries_and_loses_nothing(
    broker,
    make_topic,
    private_postgres,
    private_database_url: str,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, private_database_url, model_dir, topics)
    messages = frame_messages(12)
    stream = list(messages.values())
    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, stream[:6])
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: 6},
            60,
            "6",
        )

        private_postgres.stop()
        publish(broker.bootstrap_servers, topics.frames, stream[6:])
        metrics = running.worker.metrics
        wait_until(lambda: metrics.value("steel_worker_retries_total", {"step": "write"}) >= 3, 30, "retries")
        assert running.worker.health.report()[1]["state"] == RETRYING
        assert running.worker.consumer.paused(), "consumption is paused during the outage"
        time.sleep(1)
        assert committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: 6}

        private_postgres.start()
        wait_until(lambda: len(ledger(private_database_url)) == 12, 60, "the frames held back by the outage")
        _assert_exactly_once(private_database_url, broker.bootstrap_servers, topics, list(messages))
        assert not running.worker.consumer.paused()
        assert metrics.value("steel_worker_frames_total") == 12


def test_two_workers_share_partitions_and_the_one_left_takes_over_without_loss(
    broker, make_topic, database_url: str, model_dir: Path, classifier: Classifier
) -> None:
    topics = make_topics(make_topic, partitions=4)
    strips = [f"S{i}" for i in range(12)]
    messages = frame_messages(32, strips=strips, size=(256, 256))
    stream = list(messages.values())
    second_model = load_classifier(model_dir, batch_size=4)  # one model per worker, as per process

    def settings(name: str):
        return worker_settings(broker.bootstrap_servers, database_url, model_dir, topics, worker_id=name)

    with running_worker(settings("a"), classifier) as a:
        with ExitStack() as second:
            b = second.enter_context(running_worker(settings("b"), second_model))

            def split_between_them() -> bool:
                """Both hold partitions, none twice, all four held: the rebalance is over (read
                from this thread, one consumer may still show its old assignment for a moment)."""
                mine, theirs = a.worker.consumer.assignment(), b.worker.consumer.assignment()
                return bool(mine and theirs and not mine & theirs and len(mine | theirs) == 4)

            wait_until(split_between_them, 40, "the four partitions split between both workers")
            publish(broker.bootstrap_servers, topics.frames, stream[:16])
            wait_until(lambda: len(ledger(database_url)) == 16, 60, "the first 16 frames")
            shares = [w.worker.metrics.value("steel_worker_frames_total") for w in (a, b)]
            assert all(share > 0 for share in shares), f"both workers processed frames: {shares}"
        # b has left the group; a takes over every partition.
        publish(broker.bootstrap_servers, topics.frames, stream[16:])
        wait_until(lambda: len(ledger(database_url)) == 32, 60, "the frames published after b left")
        assert len(a.worker.consumer.assignment()) == 4
        _assert_exactly_once(database_url, broker.bootstrap_servers, topics, list(messages))
