"""The fuzz suite against the real broker, a real PostgreSQL (the worker connects as a
`steel_worker` login) and a real model: every case of tests/poison_cases.py — more than 80 bad
messages and record batches, and the valid oddities — is published, each after a good frame, to
one worker. Then, for each case: the message is on the dead-letter topic with its reason (or
processed: a ledger row and a detection message), and for the run: the worker never stopped, every
offset is committed, every good frame published after a bad one is in the database, and the
metrics count what the topic holds.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from poison_cases import PROCESSED, WORKER_OVERRIDES, Case, case_names, cases, claim_check_files
from poison_records import publish_compressed, publish_poison
from sqlalchemy.engine import make_url
from streaming_harness import (
    Topics,
    committed_offsets,
    end_offsets,
    frame_messages,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.core import contracts
from worker.core import refusals as r
from worker.infra.broker import create_topics
from worker.infra.postgres import fresh_database
from worker.model.artefact import Classifier
from worker.storage import migrate
from worker.storage.engine import create_engine

SCALE = 8_000_000  # the test producer's max request size: the 1.5 MB frames and 100 KB keys fit


@dataclass(frozen=True)
class Published:
    """Where each case (and each good frame) landed on the frames topic."""

    case: Case
    offsets: tuple[int, ...]


@dataclass
class PoisonRun:
    published: list[Published]
    good: dict[int, str]  # offset → frame id of the good frames between the cases
    ledger: dict[int, str]  # offset → frame id, from the database
    dead: dict[int, list[Any]]  # source offset → dead letters
    detections: dict[int, list[dict[str, Any]]]  # source offset → detection messages
    committed: dict[int, int | None]
    end: dict[int, int]
    metrics: dict[str, float]
    alive_at_end: bool
    health: tuple[bool, dict[str, Any]]


def _publish(bootstrap: str, topic: str, table: list[Case]) -> tuple[list[Published], dict[int, str]]:
    """Each case after a good frame, in order, on partition 0; offsets counted as they go (and
    checked against the topic's end at the end)."""
    good_frames = list(frame_messages(len(table) + 1, strips=("G1", "G2"), size=(256, 256)).values())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=SCALE)
    published: list[Published] = []
    good: dict[int, str] = {}
    offset = 0
    try:
        for i, case in enumerate([*table, None]):
            key, value, headers = good_frames[i]
            producer.send(topic, key=key, value=value, headers=headers, partition=0)
            good[offset] = json.loads(dict(headers)["frame-meta"])["frame_id"]
            offset += 1
            if case is None:
                break
            if case.kind == "message":
                producer.send(topic, key=case.key, value=case.value, headers=list(case.headers), partition=0)
            else:
                producer.flush(30)  # the batch below must land after everything before it
                kind, _, detail = case.kind.partition(":")
                if kind == "compressed":
                    publish_compressed(
                        bootstrap,
                        topic,
                        [(case.key or b"", case.value or b"", list(case.headers))],
                        detail,
                        partition=0,
                    )
                else:
                    publish_poison(bootstrap, topic, detail, partition=0, records=case.records)
            published.append(Published(case, tuple(range(offset, offset + case.records))))
            offset += case.records
        producer.flush(60)
    finally:
        producer.close()
    return published, good


@pytest.fixture(scope="module")
def poison_run(
    broker,
    postgres_server_url: str,
    _worker_login_credentials: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    classifier: Classifier,
) -> Any:
    base = tmp_path_factory.mktemp("claim-checks")
    root = (base / "root").resolve()
    table = cases(claim_check_files(root, base / "outside"))
    name = f"poison-{uuid.uuid4().hex[:10]}"
    topics = Topics(f"{name}-frames", f"{name}-detections", f"{name}-alerts", f"{name}-dlq", f"{name}-group")
    create_topics(
        broker.bootstrap_servers, {topics.frames: 1, topics.detections: 1, topics.alerts: 1, topics.dlq: 1}
    )
    login, password = _worker_login_credentials
    with fresh_database(postgres_server_url) as owner_url:
        migrate.upgrade(owner_url)
        worker_url = (
            make_url(owner_url).set(username=login, password=password).render_as_string(hide_password=False)
        )
        settings = worker_settings(
            broker.bootstrap_servers,
            worker_url,
            model_dir,
            topics,
            claim_check_root=str(root),
            **WORKER_OVERRIDES,
        )
        with running_worker(settings, classifier) as running:
            published, good = _publish(broker.bootstrap_servers, topics.frames, table)
            end = end_offsets(broker.bootstrap_servers, topics.frames)
            wait_until(
                lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end,
                240,
                lambda: (
                    f"every offset committed: {end}, committed"
                    f" {committed_offsets(broker.bootstrap_servers, topics.group, topics.frames)}"
                ),
            )
            alive = running.thread.is_alive()
            health = running.worker.health.report()
            metric_names = {
                f"dead:{reason}": ("steel_worker_dead_lettered_total", {"reason": reason})
                for reason in r.REASONS
            }
            metric_names |= {
                "frames": ("steel_worker_frames_total", {}),
                "skipped": ("steel_worker_skipped_records_total", {}),
                "collisions": ("steel_worker_frame_id_collisions_total", {}),
            }
            metrics = {
                key: running.worker.metrics.value(n, labels) for key, (n, labels) in metric_names.items()
            }
        committed = committed_offsets(broker.bootstrap_servers, topics.group, topics.frames)
        engine = create_engine(owner_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT kafka_offset, frame_id FROM frames WHERE kafka_partition = 0")
                )
                ledger = {int(o): f for o, f in rows}
        finally:
            engine.dispose()
    refused_offsets = sum(len(p.offsets) for p in published if p.case.expect != PROCESSED)
    dead: dict[int, list[Any]] = {}
    for record in read_topic(broker.bootstrap_servers, topics.dlq, at_least=refused_offsets, timeout_s=60):
        dead.setdefault(int(dict(record.headers)["dlq-source-offset"]), []).append(record)
    detections: dict[int, list[dict[str, Any]]] = {}
    for record in read_topic(broker.bootstrap_servers, topics.detections, at_least=len(ledger), timeout_s=60):
        message = json.loads(record.value)
        detections.setdefault(message["source"]["offset"], []).append(message)
    yield PoisonRun(published, good, ledger, dead, detections, committed, end, metrics, alive, health)


def _case(run: PoisonRun, name: str) -> Published:
    return next(p for p in run.published if p.case.name == name)


@pytest.mark.parametrize("name", case_names())
def test_each_case_is_dead_lettered_with_its_reason_or_processed(poison_run: PoisonRun, name: str) -> None:
    published = _case(poison_run, name)
    case = published.case
    for offset in published.offsets:
        letters = poison_run.dead.get(offset, [])
        if case.expect == PROCESSED:
            assert not letters, [dict(x.headers)["dlq-detail"] for x in letters]
            assert offset in poison_run.ledger, f"{name}: no ledger row at offset {offset}"
            (message,) = poison_run.detections[offset]
            assert message["frame_id"] == poison_run.ledger[offset]
            contracts.validate(contracts.DETECTION, message)
            continue
        assert offset not in poison_run.ledger
        assert len(letters) == 1, f"{name}: expected one dead letter at offset {offset}, found {len(letters)}"
        headers = {k: v.decode() for k, v in letters[0].headers if k.startswith("dlq-")}
        contracts.validate(contracts.DEAD_LETTER_HEADERS, headers)
        assert headers["dlq-reason"] == case.expect, headers["dlq-detail"]
        assert offset not in poison_run.detections
        if case.kind == "message" and "dlq-value-omitted" not in headers:
            assert (letters[0].key, letters[0].value) == (case.key, case.value)


def test_the_worker_never_stopped_and_reported_itself_healthy(poison_run: PoisonRun) -> None:
    assert poison_run.alive_at_end
    healthy, body = poison_run.health
    assert healthy, body


def test_every_offset_is_committed(poison_run: PoisonRun) -> None:
    expected_end = max(o for p in poison_run.published for o in p.offsets) + 2  # the last good frame
    assert poison_run.end == {0: expected_end}
    assert poison_run.committed == poison_run.end


def test_every_good_frame_published_after_a_bad_one_is_in_the_database(poison_run: PoisonRun) -> None:
    for offset, frame_id in poison_run.good.items():
        assert poison_run.ledger.get(offset) == frame_id, f"good frame {frame_id} at offset {offset}"
        assert len(poison_run.detections[offset]) == 1


def test_the_metrics_count_what_the_dead_letter_topic_holds(poison_run: PoisonRun) -> None:
    on_topic = Counter(
        dict(x.headers)["dlq-reason"].decode() for letters in poison_run.dead.values() for x in letters
    )
    counted = {
        k.removeprefix("dead:"): v for k, v in poison_run.metrics.items() if k.startswith("dead:") and v
    }
    assert counted == dict(on_topic)
    assert poison_run.metrics["skipped"] == on_topic[r.UNREADABLE_RECORD]
    assert poison_run.metrics["collisions"] == on_topic[r.DUPLICATE_FRAME_ID] == 1
    assert poison_run.metrics["frames"] == len(poison_run.ledger)


def test_the_frame_under_a_taken_id_left_the_stored_frame_and_its_message_alone(
    poison_run: PoisonRun,
) -> None:
    duplicate = _case(poison_run, "another frame under a stored frame_id")
    taken = duplicate.case.frame_id
    stored_offsets = [o for o, f in poison_run.ledger.items() if f == taken]
    assert len(stored_offsets) == 1 and stored_offsets[0] < duplicate.offsets[0]
    assert [m["frame_id"] for o in stored_offsets for m in poison_run.detections[o]] == [taken]
