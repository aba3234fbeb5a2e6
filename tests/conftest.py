"""Shared fixtures: real services, started by the tests themselves.

Sections (add new fixtures to the section they belong to, or a new section):

PostgreSQL
    postgres_server_url   session  URL of a server the tests may create databases on:
                                   $DATABASE_URL, else the local server at 127.0.0.1:5432 when it
                                   answers, else a private embedded server (stopped at the end).
    empty_database_url    test     a FRESH database (unique name, dropped after), no migrations.
    database_url          test     a fresh database migrated to head with Alembic.
    engine                test     SQLAlchemy engine on `database_url` (disposed after).
    private_postgres      test     an EmbeddedPostgres owned by this session (temporary data
                                   directory) that a test may stop() and start() (database
                                   outages); it is running again when the next test begins.
    private_database_url  test     a fresh migrated database on `private_postgres`.

Kafka
    broker                session  EmbeddedBroker (Tansu) on 127.0.0.1: `.bootstrap_servers`.
    make_topic            test     make_topic(prefix="test", partitions=1) -> a new topic's name.
    consumer_config       test     kafka-python consumer settings that suit Tansu in tests
                                   (session_timeout_ms=6000, short max_poll_interval_ms, …).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.infra.broker import EmbeddedBroker, create_topics
from worker.infra.postgres import EmbeddedPostgres, fresh_database, server_reachable
from worker.storage import migrate
from worker.storage.engine import create_engine

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

#: The PostgreSQL server of the development machines (trust authentication).
LOCAL_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A server on which tests create their own databases (see the module docstring for the order)."""
    import os  # noqa: PLC0415

    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        yield env_url
    elif server_reachable(LOCAL_SERVER_URL, timeout_s=2):
        yield LOCAL_SERVER_URL
    else:
        with EmbeddedPostgres() as server:
            yield server.url()


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A new database with a unique name and nothing in it, dropped after the test."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A new database migrated to the head revision (tables, seeded catalogue, views, role)."""
    migrate.upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on the test's migrated database."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def _private_postgres_server() -> Iterator[EmbeddedPostgres]:
    data_root = Path(tempfile.mkdtemp(prefix="steel-worker-pg-"))
    server = EmbeddedPostgres(data_root / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture
def private_postgres(_private_postgres_server: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """A server this session owns: stop() and start() it freely (it keeps its port and data)."""
    server = _private_postgres_server
    if not server.running:
        server.start()
    yield server
    if not server.running:
        server.start()


@pytest.fixture
def private_database_url(private_postgres: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database migrated to head on `private_postgres`, dropped after the test."""
    with fresh_database(private_postgres.url()) as url:
        migrate.upgrade(url)
        yield url
        if not private_postgres.running:  # the test stopped it: start it to drop the database
            private_postgres.start()


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session; tests keep apart by using their own topics."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def make_topic(broker: EmbeddedBroker) -> Callable[..., str]:
    """A factory of new, uniquely named topics on `broker`."""

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(broker.bootstrap_servers, {name: partitions})
        return name

    return make


@pytest.fixture
def consumer_config(broker: EmbeddedBroker) -> dict[str, Any]:
    """KafkaConsumer keyword arguments for tests: fast group joins and failure detection on Tansu.

    A new group still takes a few seconds to form; pass a unique `group_id` per test.
    """
    return {
        "bootstrap_servers": broker.bootstrap_servers,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 10000,
        "request_timeout_ms": 15000,
    }
