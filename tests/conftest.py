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

Models
    model_dir             session  a real, untrained artefact (input 32) whose thresholds let about
                                   a fifth of tiles through (`streaming_harness.untrained_model`).
    classifier            session  `model_dir` loaded once (predict batches of 4 tiles).

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
# Models
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, untrained artefact shared by the worker tests (see streaming_harness)."""
    from streaming_harness import untrained_model  # noqa: PLC0415  (imports the model code)

    return untrained_model(tmp_path_factory)


@pytest.fixture(scope="session")
def classifier(model_dir: Path) -> Any:
    """`model_dir` loaded once for the session."""
    from streaming_harness import loaded_model  # noqa: PLC0415

    return loaded_model(model_dir)


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


# ---------------------------------------------------------------------------------------------
# Login roles (least privilege)
#
#   worker_login          session  name of a LOGIN role that is a member of `steel_worker` (made
#                                  with `steel-worker db create-login`'s code, with a random
#                                  password; dropped at the end).
#   worker_database_url   test     `database_url` as that login: the worker's privileges only.
#
# Roles are cluster-wide, privileges per database: the membership is granted once per session,
# and every database migrated to head grants `steel_worker` its privileges, so the one login
# works in each test's database. Revision 0003 keeps `steel_worker` while it has members, so a
# test that downgrades its database does not take the membership away.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _worker_login_credentials(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    """(name, password) of the session's worker login, created on the server of `postgres_server_url`."""
    import os  # noqa: PLC0415
    import secrets  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    from worker.storage.roles import create_login  # noqa: PLC0415

    name = f"steel_test_worker_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(18)
    # a database at head makes sure `steel_worker` exists on this server before the grant
    with fresh_database(postgres_server_url) as url:
        migrate.upgrade(url)
        create_login(url, name, "worker", password)
    try:
        yield name, password
    finally:
        engine = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        except sa.exc.DBAPIError as exc:  # e.g. a test left it owning an object somewhere
            warnings.warn(f"test login role {name} not dropped: {exc}", stacklevel=1)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def worker_login(_worker_login_credentials: tuple[str, str]) -> str:
    """Name of the session's LOGIN role that is a member of `steel_worker` (see the section above)."""
    return _worker_login_credentials[0]


@pytest.fixture
def worker_database_url(database_url: str, _worker_login_credentials: tuple[str, str]) -> str:
    """The test's migrated database (`database_url`), connecting as `worker_login`."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    name, password = _worker_login_credentials
    return make_url(database_url).set(username=name, password=password).render_as_string(hide_password=False)
