"""Logs (JSON off a terminal, message context bound), Prometheus metrics and the health endpoint."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import structlog

from worker.core.records import KafkaCoordinates
from worker.streaming.observability import (
    RETRYING,
    RUNNING,
    Health,
    Metrics,
    ObservabilityServer,
    configure_logging,
    message_context,
)


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """configure_logging changes process-wide state: put structlog and the root logger back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_are_json_lines_off_a_terminal_with_the_message_context_bound(restore_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("auto", "info", stream=out)
    log = structlog.get_logger()
    with message_context(KafkaCoordinates("mill.frames", 3, 41), "f-7"):
        log.warning("frame.refused", reason="corrupt-image")
    log.info("outside")
    log.debug("dropped below the level")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert {k: lines[0][k] for k in ("event", "level", "topic", "partition", "offset", "frame_id")} == {
        "event": "frame.refused",
        "level": "warning",
        "topic": "mill.frames",
        "partition": 3,
        "offset": 41,
        "frame_id": "f-7",
    }
    assert "offset" not in lines[1] and "timestamp" in lines[1]


def test_library_warnings_through_standard_logging_are_json_lines_too(restore_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    logging.getLogger("kafka.coordinator").warning("Heartbeat failed for group %s", "g1")
    logging.getLogger("kafka.conn").info("chatter below WARNING is dropped")
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["event"] == "Heartbeat failed for group g1"
    assert (line["level"], line["logger"]) == ("warning", "kafka.coordinator")


def test_logs_on_a_terminal_are_key_value_text(restore_structlog: None) -> None:
    out = _Terminal()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger().info("worker.started", topic="mill.frames")
    text = out.getvalue()
    assert "worker.started" in text and "topic" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_health_is_ok_only_while_running_or_retrying_with_a_recent_heartbeat() -> None:
    health = Health(stall_after_s=0.2)
    assert health.report()[0] is False  # starting
    health.tick(RUNNING, queued=3)
    ok, body = health.report()
    assert ok and body["state"] == "running" and body["queued"] == 3
    health.tick(RETRYING)
    assert health.report()[0] is True
    time.sleep(0.3)
    ok, body = health.report()
    assert not ok and body["state"] == "stalled"


def test_a_failing_step_makes_the_worker_unready_at_once_and_not_alive_once_stuck() -> None:
    """/readyz tells a retried outage at once; /healthz only when one batch has failed for longer
    than STUCK_AFTER_S, so that an orchestrator restarts a worker that cannot get on."""
    health = Health(stall_after_s=30, stuck_after_s=0.3)
    health.tick(RUNNING)
    assert health.readiness()[0] and health.report()[0]
    health.failing(
        "write", "OperationalError: server closed the connection", time.monotonic(), systemic=False
    )
    ready, body = health.readiness()
    assert not ready and body["state"] == RETRYING
    assert body["failing"]["step"] == "write" and body["failing"]["needs_attention"] is False
    assert health.report()[0], "alive while it retries"
    time.sleep(0.4)
    alive, body = health.report()
    assert not alive and body["state"] == "stuck" and body["failing"]["for_s"] >= 0.3
    health.recovered()
    assert health.readiness()[0] and health.report()[0]
    assert health.failing_seconds() == 0.0


def test_a_fault_of_the_set_up_is_reported_as_needing_attention() -> None:
    health = Health(stall_after_s=30, stuck_after_s=300)
    health.tick(RUNNING)
    health.failing("publish", "TopicAuthorizationFailedError", time.monotonic(), systemic=True)
    ready, body = health.readiness()
    assert not ready and body["failing"]["needs_attention"] is True


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_server_exposes_metrics_and_health_on_one_port() -> None:
    metrics, health = Metrics(), Health(stall_after_s=30)
    metrics.frames.inc(2)
    metrics.dead_lettered.labels(reason="corrupt-image").inc()
    metrics.consumer_lag.labels(topic="mill.frames", partition="0").set(5)
    with ObservabilityServer("127.0.0.1", 0, metrics, health) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(f"{base}/healthz")[0] == 503  # not running yet
        health.tick(RUNNING)
        status, body = _get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["state"] == "running"
        status, body = _get(f"{base}/metrics")
        assert status == 200
        assert b"steel_worker_frames_total 2.0" in body
        assert b'steel_worker_dead_lettered_total{reason="corrupt-image"} 1.0' in body
        assert b'steel_worker_consumer_lag{partition="0",topic="mill.frames"} 5.0' in body
        assert b"steel_worker_batch_seconds_bucket" in body
        assert _get(f"{base}/readyz")[0] == 200
        health.failing("write", "OperationalError", time.monotonic() - 5, systemic=False)
        status, body = _get(f"{base}/readyz")
        assert status == 503 and json.loads(body)["failing"]["step"] == "write"
        assert _get(f"{base}/healthz")[0] == 200
        assert b"steel_worker_batch_failing_seconds 5" in _get(f"{base}/metrics")[1]
        assert _get(f"{base}/other")[0] == 404
    assert metrics.value("steel_worker_frames_total") == 2
