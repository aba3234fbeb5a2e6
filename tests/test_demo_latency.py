"""The demo summary's latency line: percentiles from the worker's histograms, as Prometheus'
histogram_quantile computes them, read from a real /metrics endpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from worker.demo.latency import bucket_counts, histogram_quantile, latency_lines, metrics_url
from worker.streaming.observability import Health, Metrics, ObservabilityServer

INF = math.inf


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.625),  # rank 5: in (0.25, 0.75], which holds ranks 3..6; (5 - 2) / (6 - 2) of the way
        (0.2, 0.25),  # rank 2: the top of the first bucket
        (0.9, 1.0),  # rank 9: the top of (0.75, 1]
        (1.0, 1.0),  # rank 10: in the +Inf bucket, so the largest finite bound
    ],
)
def test_quantiles_are_interpolated_within_their_bucket(q: float, expected: float) -> None:
    buckets = [(0.25, 2.0), (0.75, 6.0), (1.0, 9.0), (INF, 10.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_an_empty_histogram_has_no_quantile() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]) is None


def test_the_address_is_the_worker_metrics_line_of_its_json_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "not json\n"
        + json.dumps({"event": "worker.starting"})
        + "\n"
        + json.dumps({"event": "worker.metrics", "url": "http://127.0.0.1:4321/metrics"})
        + "\n"
    )
    assert metrics_url(log) == "http://127.0.0.1:4321/metrics"
    assert metrics_url(tmp_path / "absent.log") is None
    (tmp_path / "early.log").write_text(json.dumps({"event": "worker.metrics", "url": 5}) + "\n")
    assert metrics_url(tmp_path / "early.log") is None


def test_latency_lines_from_a_real_metrics_endpoint() -> None:
    metrics, health = Metrics(), Health(stall_after_s=30)
    for value in (0.2, 0.3, 0.4, 0.6, 2.5):
        metrics.capture_to_commit.observe(value)
    with ObservabilityServer("127.0.0.1", 0, metrics, health) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        lines = latency_lines(url)
    assert len(lines) == 1  # nothing published yet: no line for it
    assert "capture → rows committed:" in lines[0] and "(5 frames)" in lines[0]
    from prometheus_client import generate_latest  # noqa: PLC0415

    buckets = bucket_counts(
        generate_latest(metrics.registry).decode(), "steel_worker_capture_to_commit_seconds"
    )
    p50 = histogram_quantile(0.5, buckets)
    assert p50 is not None and 0.25 < p50 <= 0.5  # the 3rd of 5 values, 0.4, lies in (0.25, 0.5]
    assert f"p50 {p50:.2f} s" in lines[0]
