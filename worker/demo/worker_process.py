"""The demo's worker: `python -m worker run` in a subprocess, its environment and its log.

The worker gets the demo's broker, database, model and rules file, and the demo's defaults
(`WORKER_DEFAULTS`) only for settings the environment does not already set. Its output goes to a
log file; whoever watches it sees only `WorkerHandle` (the log's path, a liveness check that
raises with the log's last lines), so a test can watch an in-process worker the same way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from worker.core.errors import InfrastructureError

#: Worker settings the demo sets unless the environment already does (see docs/streaming-worker.md).
WORKER_DEFAULTS: Mapping[str, str] = {
    "MODEL_RUNTIME": "auto",  # the fastest export inside the agreement limits, else Keras
    "METRICS_HOST": "127.0.0.1",
    "METRICS_PORT": "0",  # a free port: never clashes with a worker already running here
    "LOG_FORMAT": "json",
    "KAFKA_SESSION_TIMEOUT_MS": "6000",  # Tansu forms groups faster with a short session
    "BATCH_MAX_WAIT_MS": "200",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "1",  # the kernels the demo model was trained with (worker.demo.model)
    "MALLOC_ARENA_MAX": "2",  # resident memory stays flat (docs/reliability.md), as in the image
}


def worker_environment(
    base: Mapping[str, str], bootstrap: str, database_url: str, model_path: Path, rules_file: Path
) -> dict[str, str]:
    """The environment of the demo's `steel-worker run`: `base` with the demo's broker, database
    and model, and WORKER_DEFAULTS for settings `base` does not set."""
    env = dict(base)
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=database_url, MODEL_PATH=str(model_path))
    env["ALERT_RULES"] = str(rules_file)
    for key, value in WORKER_DEFAULTS.items():
        if not env.get(key):
            env[key] = value
    return env


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file, or "(no log)" when it cannot be read."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class WorkerHandle(Protocol):
    """What the stream needs of a running worker: a log to point at, and a liveness check."""

    @property
    def log_path(self) -> Path: ...

    def check_alive(self) -> None:
        """Raise (InfrastructureError) if the worker is no longer running."""
        ...


class WorkerProcess:
    """`python -m worker run` with its output in a log file; `stop()` sends SIGTERM and waits."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        """InfrastructureError (with the log's tail) if the worker has exited."""
        code = self.process.poll()
        if code is not None:
            raise InfrastructureError(
                f"the worker exited early with status {code}; last lines of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (the worker finishes its batch and commits), then wait; kill after `timeout_s`."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        finally:
            self._log.close()
