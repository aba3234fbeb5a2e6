"""Health that tells the truth, against a real broker, PostgreSQL and model:

- the brokers going away turns /readyz 503 with the reason and moves the poll-error counter, and
  the worker recovers when they are back (kafka-python's poll raises nothing meanwhile);
- the consumer lag moves without commits (consumption paused during a database outage);
- a topic deleted and created again is read from its start (KAFKA_POSITION_LOST_POLICY), counted
  and logged, whether the worker was running or restarted — never from the old position;
- `PositionCheck` sorts what it finds (new group, kept, re-created by id or by offsets, truncated
  by retention) and follows the policy.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition
from streaming_harness import (
    committed_offsets,
    frame_messages,
    ledger,
    make_topics,
    publish,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.infra._net import free_port
from worker.infra.broker import EmbeddedBroker, create_topics
from worker.model.artefact import Classifier
from worker.streaming.positions import EARLIEST, KEPT, LATEST, NEW, RECREATED, TRUNCATED, PositionCheck


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which it may freeze (SIGSTOP) and thaw (SIGCONT)."""
    broker = EmbeddedBroker(port=free_port()).start()
    try:
        yield broker
    finally:
        _signal(broker, signal.SIGCONT)
        broker.stop()


def _signal(broker: EmbeddedBroker, sig: int) -> None:
    process = broker._process
    assert process is not None and process.poll() is None
    os.kill(process.pid, sig)


def test_the_brokers_going_away_turn_readyz_503_and_the_worker_recovers(
    own_broker: EmbeddedBroker, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """The broker stops answering (frozen: a network partition, a hung host) while the worker is
    idle: kafka-python's poll raises nothing, yet /readyz turns 503 naming the brokers and the
    poll-error counter moves; when it answers again, the frames sent meanwhile are stored."""
    names = SimpleNamespace(
        frames="frames", detections="detections", alerts="alerts", dlq="dlq", group="g-outage"
    )
    create_topics(own_broker.bootstrap_servers, dict.fromkeys(("frames", "detections", "alerts", "dlq"), 1))
    settings = worker_settings(own_broker.bootstrap_servers, database_url, model_dir, names)  # type: ignore[arg-type]
    first = frame_messages(3, size=(256, 256))
    then = frame_messages(3, start=3, size=(256, 256))
    with running_worker(settings, classifier) as running:
        publish(own_broker.bootstrap_servers, names.frames, list(first.values()))
        wait_until(lambda: len(ledger(database_url)) == 3, 60, "the first frames")
        wait_until(lambda: running.worker.health.readiness()[0], 10, "/readyz 200")
        _signal(own_broker, signal.SIGSTOP)
        try:
            wait_until(
                lambda: not running.worker.health.readiness()[0], 30, "/readyz 503 with the brokers gone"
            )
            failing = running.worker.health.readiness()[1]["failing"]
            assert failing["step"] == "poll" and "unreachable" in failing["error"], failing
            assert running.worker.metrics.value("steel_worker_poll_errors_total") >= 1
        finally:
            _signal(own_broker, signal.SIGCONT)
        publish(own_broker.bootstrap_servers, names.frames, list(then.values()))
        wait_until(lambda: len(ledger(database_url)) == 6, 90, "the frames sent after the outage")
        wait_until(lambda: running.worker.health.readiness()[0], 30, "/readyz 200 again")


def test_the_lag_moves_while_consumption_is_paused_without_any_commit(
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
    stream = list(frame_messages(12, size=(256, 256)).values())
    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, stream[:2])
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: 2},
            60,
            "2",
        )
        private_postgres.stop()
        publish(broker.bootstrap_servers, topics.frames, stream[2:])
        lag = lambda: running.worker.metrics.value(  # noqa: E731
            "steel_worker_consumer_lag", {"topic": topics.frames, "partition": "0"}
        )
        wait_until(lambda: lag() == 10, 30, lambda: f"a lag of 10 (it is {lag()})")
        assert committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: 2}
        private_postgres.start()
        wait_until(lambda: lag() == 0, 60, "the lag back to 0")


def _recreate(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            create_topics(bootstrap, {topic: 1})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_topic_created_again_under_a_running_worker_is_read_from_its_start(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """The frames topic is deleted and made again while the worker runs (an operator's mistake, a
    cluster move); the new log's first frames are not skipped at the old committed position."""
    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, model_dir, topics, topic_check_ms="1000"
    )
    before = frame_messages(6, size=(256, 256))
    after = frame_messages(9, start=100, size=(256, 256))
    with running_worker(settings, classifier) as running:
        publish(broker.bootstrap_servers, topics.frames, list(before.values()))
        wait_until(lambda: len(ledger(database_url)) == 6, 60, "the first frames")
        _recreate(broker.bootstrap_servers, topics.frames)
        publish(broker.bootstrap_servers, topics.frames, list(after.values()))
        wait_until(
            lambda: len(ledger(database_url)) == 15,
            90,
            lambda: f"every frame of the new topic ({len(ledger(database_url))})",
        )
        resets = running.worker.metrics.value(
            "steel_worker_position_resets_total", {"reason": RECREATED, "policy": EARLIEST}
        )
    assert sorted(r.frame_id for r in ledger(database_url)) == sorted([*before, *after])
    assert resets >= 1


def test_a_worker_started_on_a_topic_created_again_reads_it_from_its_start(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """Committed at 8, the topic made again with 3 frames while no worker ran: the broker dropped
    the group's offsets with the topic (Apache Kafka does too), so the next worker starts the new
    log from its first record as a new group would — no frame skipped, nothing to reset. (A commit
    that outlived its topic is caught by the offsets or the id it carries: the unit test below.)"""
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    before = frame_messages(8, size=(256, 256))
    after = frame_messages(3, start=100, size=(256, 256))
    with running_worker(settings, classifier):
        publish(broker.bootstrap_servers, topics.frames, list(before.values()))
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: 8},
            60,
            "8",
        )
    _recreate(broker.bootstrap_servers, topics.frames)
    publish(broker.bootstrap_servers, topics.frames, list(after.values()))
    with running_worker(settings, classifier):
        wait_until(lambda: len(ledger(database_url)) == 11, 60, "the new topic's frames")
    assert sorted(r.frame_id for r in ledger(database_url)) == sorted([*before, *after])


# --- the check itself ---------------------------------------------------------------------------------


class _Log:
    """A consumer as the check sees it: committed offsets (with metadata), log ranges, seeks."""

    def __init__(
        self, committed: dict[int, tuple[int, str] | None], ranges: dict[int, tuple[int, int]]
    ) -> None:
        self._committed = committed
        self._ranges = ranges
        self.seeks: dict[int, int] = {}

    def committed(self, tp: TopicPartition, metadata: bool = False) -> Any:
        found = self._committed[tp.partition]
        return None if found is None else SimpleNamespace(offset=found[0], metadata=found[1])

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._ranges[tp.partition][0] for tp in partitions}

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._ranges[tp.partition][1] for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp.partition] = offset


def test_the_check_sorts_what_it_finds_and_follows_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    tps = [TopicPartition("frames", p) for p in range(5)]
    consumer = _Log(
        committed={0: None, 1: (40, "topic-id=A"), 2: (40, "topic-id=OLD"), 3: (90, ""), 4: (10, "")},
        ranges={0: (0, 50), 1: (0, 50), 2: (0, 50), 3: (0, 50), 4: (25, 50)},
    )
    resets: list[tuple[str, str]] = []
    check = PositionCheck(consumer, lambda topic: "A", EARLIEST, on_reset=lambda *r: resets.append(r))  # type: ignore[arg-type]
    found = {f.partition.partition: f for f in check.check(tps)}
    assert [found[p].reason for p in range(5)] == [NEW, KEPT, RECREATED, RECREATED, TRUNCATED]
    assert consumer.seeks == {2: 0, 3: 0, 4: 25}
    assert resets == [(RECREATED, EARLIEST), (RECREATED, EARLIEST), (TRUNCATED, EARLIEST)]
    assert check.commit_metadata("frames") == "topic-id=A"

    latest = _Log(committed={0: (40, "topic-id=OLD")}, ranges={0: (0, 50)})
    PositionCheck(latest, lambda topic: "A", LATEST).check([tps[0]])  # type: ignore[arg-type]
    assert latest.seeks == {0: 50}
    unknown = _Log(committed={0: (40, "")}, ranges={0: (0, 50)})

    def no_ids(topic: str) -> str | None:
        raise RuntimeError("the broker gives no topic ids")

    (kept,) = PositionCheck(unknown, no_ids).check([tps[0]])  # type: ignore[arg-type]
    assert kept.reason == KEPT and unknown.seeks == {}
    with pytest.raises(ValueError, match="expected one of earliest, latest"):
        PositionCheck(unknown, no_ids, "somewhere")  # type: ignore[arg-type]
