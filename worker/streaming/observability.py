"""Logs, metrics and health of the worker.

- Logging: structlog, JSON lines when stdout is not a terminal (or LOG_FORMAT=json), key=value
  console output otherwise. `message_context(...)` binds topic/partition/offset/frame_id through
  contextvars, so every line logged while handling a message names it.
- Metrics: `Metrics` holds the Prometheus series in its own registry (several workers may live in
  one test process): frames, tiles, detections by class, dead-lettered by reason, frames isolated
  by step, frame-id collisions, unreadable records skipped, alert rules failing, position
  outliers, frames whose key is not their strip id, messages given up, image-quality flags by
  check, camera alerts, retries, how long the current batch has been failing, batch latency,
  consumer lag, positions reset.
- Health: `Health` is the loop's heartbeat and the state of the batch in flight;
  `ObservabilityServer` serves, on METRICS_PORT, `/metrics`, `/healthz` (liveness: 200 while the
  loop is alive and not stuck — also while it retries a transient outage —; 503 while starting,
  stalled, stuck on one batch for longer than STUCK_AFTER_S, stopping or stopped) and `/readyz`
  (readiness: 200 only while batches are delivered; 503 from the first failed attempt on).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from worker.core.records import KafkaCoordinates


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process: JSON or console, at least `level`.

    Libraries that log through the standard `logging` module (kafka-python, SQLAlchemy) are
    rendered the same way, from WARNING up, so that a JSON log stays one JSON object per line.
    """
    out = stream if stream is not None else sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tail = [renderer]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


@contextmanager
def message_context(source: KafkaCoordinates, frame_id: str | None = None) -> Iterator[None]:
    """Bind topic, partition, offset (and frame id when known) to every log line inside."""
    with structlog.contextvars.bound_contextvars(
        topic=source.topic, partition=source.partition, offset=source.offset, frame_id=frame_id
    ):
        yield


LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 900)


class Metrics:
    """The worker's Prometheus series, registered in `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter("steel_worker_frames", "Frames classified, written and published", registry=r)
        self.tiles = Counter("steel_worker_tiles", "Tiles classified", registry=r)
        self.detections = Counter(
            "steel_worker_detections", "Detections written, by class", ["class_name"], registry=r
        )
        self.dead_lettered = Counter(
            "steel_worker_dead_lettered",
            "Frames sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.isolated = Counter(
            "steel_worker_isolated",
            "Frames set aside alone by a delivery step (and dead-lettered), by step",
            ["step"],
            registry=r,
        )
        self.collisions = Counter(
            "steel_worker_frame_id_collisions",
            "Messages refused because another stored frame holds their frame id",
            registry=r,
        )
        self.skipped_records = Counter(
            "steel_worker_skipped_records",
            "Kafka records that could not be read (corrupt batch, codec, header bytes) and were skipped",
            registry=r,
        )
        self.rule_errors = Counter(
            "steel_worker_alert_rule_errors",
            "Alert rule evaluations that failed for one strip (logged; the other rules and strips ran)",
            ["rule"],
            registry=r,
        )
        self.position_outliers = Counter(
            "steel_worker_position_outliers",
            "Frames written farther than MAX_POSITION_JUMP_M from every other frame of their strip pass"
            " and surface: not evaluated by the alert rules while so (counted at each evaluation)",
            registry=r,
        )
        self.key_mismatches = Counter(
            "steel_worker_key_mismatches",
            "Frames whose message key is not their strip id (kept and processed; the producer needs fixing)",
            registry=r,
        )
        self.undeliverable = Counter(
            "steel_worker_undeliverable",
            "Messages the broker refused for good: detection (frame dead-lettered), dead-letter (given up)",
            ["kind"],
            registry=r,
        )
        self.poll_errors = Counter(
            "steel_worker_poll_errors",
            "Polls that failed for a reason other than a record's bytes",
            registry=r,
        )
        self.retries = Counter(
            "steel_worker_retries", "Failed attempts to deliver a batch, by step", ["step"], registry=r
        )
        self.failing_seconds = Gauge(
            "steel_worker_batch_failing_seconds",
            "How long the batch in delivery has been failing (0 while delivery succeeds)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "steel_worker_batch_seconds",
            "Time to classify, write, publish and commit one micro-batch",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.batch_frames = Histogram(
            "steel_worker_batch_frames",
            "Frames per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        # From the camera's clock (captured_at) to the worker's; a camera clock ahead counts as 0.
        self.capture_to_commit = Histogram(
            "steel_worker_capture_to_commit_seconds",
            "From a frame's captured_at to its ledger row and detections committed in the database",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.capture_to_publish = Histogram(
            "steel_worker_capture_to_publish_seconds",
            "From a frame's captured_at to its detection message acknowledged by the broker",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.quality_flags = Counter(
            "steel_worker_frame_quality_flags",
            "Frames that failed an image-quality check (flagged or refused), by check; clock-skew:"
            " captured_at far from the record's timestamp",
            ["check"],
            registry=r,
        )
        self.camera_alerts = Counter(
            "steel_worker_camera_alerts",
            "Camera alerts raised: a run of CAMERA_ALERT_FRAMES frames from one camera failing the gate",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "steel_worker_consumer_lag",
            "Messages behind the end of each assigned partition (high watermark minus committed offset),"
            " after every poll",
            ["topic", "partition"],
            registry=r,
        )
        self.position_resets = Counter(
            "steel_worker_position_resets",
            "Partitions whose committed position was not kept: the topic was re-created (policy"
            " earliest or latest) or retention deleted records never read (truncated)",
            ["reason", "policy"],
            registry=r,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of sample `name` (e.g. 'steel_worker_frames_total'); 0.0 when absent."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found


STARTING, RUNNING, RETRYING, STUCK, STALLED, STOPPING, STOPPED = (
    "starting",
    "running",
    "retrying",
    "stuck",
    "stalled",
    "stopping",
    "stopped",
)


class Health:
    """The loop's heartbeat and the state of its delivery, read by the HTTP handlers from another
    thread. States: starting → running ⇄ retrying (a step fails; `stuck` once it has failed for
    longer than `stuck_after_s`) → stopping → stopped; `stalled` when the heartbeat is older than
    `stall_after_s` (the loop itself hangs)."""

    def __init__(self, stall_after_s: float, stuck_after_s: float = 300.0) -> None:
        self.stall_after_s = stall_after_s
        self.stuck_after_s = stuck_after_s
        self._lock = threading.Lock()
        self._state = STARTING
        self._last_tick = time.monotonic()
        self._failing: dict[str, Any] | None = None  # step, error, since, systemic
        self._detail: dict[str, Any] = {}

    def tick(self, state: str | None = None, **detail: Any) -> None:
        """The loop is alive (call at least every `stall_after_s`); optionally a new state/detail."""
        with self._lock:
            self._last_tick = time.monotonic()
            if state is not None:
                self._state = state
            self._detail.update(detail)

    def failing(
        self, step: str, error: str, since: float, *, systemic: bool, diagnosis: str | None = None
    ) -> None:
        """A delivery step failed (and will be retried); `since`: monotonic time of the batch's
        first failure; `diagnosis`: what a check of the set-up found (the schema's revision)."""
        with self._lock:
            self._last_tick = time.monotonic()
            self._state = RETRYING
            self._failing = {
                "step": step,
                "error": error,
                "since": since,
                "systemic": systemic,
                "diagnosis": diagnosis,
            }

    def recovered(self) -> None:
        """The failing batch was delivered."""
        with self._lock:
            self._last_tick = time.monotonic()
            self._failing = None
            if self._state == RETRYING:
                self._state = RUNNING

    def failing_seconds(self) -> float:
        with self._lock:
            return 0.0 if self._failing is None else time.monotonic() - self._failing["since"]

    def _body(self) -> dict[str, Any]:
        now = time.monotonic()
        age = now - self._last_tick
        body: dict[str, Any] = {"state": self._state, "heartbeat_age_s": round(age, 3), **self._detail}
        if self._failing is not None:
            failing_for = now - self._failing["since"]
            body["failing"] = {
                "step": self._failing["step"],
                "for_s": round(failing_for, 1),
                "error": self._failing["error"],
                "needs_attention": self._failing["systemic"],
            }
            if self._failing["diagnosis"]:
                body["failing"]["diagnosis"] = self._failing["diagnosis"]
            if failing_for > self.stuck_after_s:
                body["state"] = STUCK
        if age > self.stall_after_s and self._state not in (STOPPED, STARTING):
            body["state"] = STALLED
        return body

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Liveness (/healthz): (alive, body) — alive while running or retrying, with a recent
        heartbeat and no batch failing for longer than `stuck_after_s`."""
        with self._lock:
            body = self._body()
        return body["state"] in (RUNNING, RETRYING), body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness (/readyz): (ready, body) — ready only while running with nothing failing."""
        with self._lock:
            body = self._body()
        return body["state"] == RUNNING, body


class ObservabilityServer:
    """`/metrics` (Prometheus text format) and `/healthz` (JSON) on a background thread."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        handler = _handler(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ObservabilityServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                metrics.failing_seconds.set(health.failing_seconds())
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path in ("/healthz", "/readyz"):
                ok, body = health.report() if path == "/healthz" else health.readiness()
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(
                    404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n"
                )

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not worth a log line each."""

    return Handler
