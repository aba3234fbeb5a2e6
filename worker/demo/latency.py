"""The demo summary's latency line: from each frame's capture to its rows committed and to its
detection message published, read from the worker's own histograms on its /metrics endpoint
(`steel_worker_capture_to_commit_seconds`, `..._to_publish_seconds`).

Percentiles come from the histogram's buckets, interpolated linearly within the bucket that holds
them, as Prometheus' `histogram_quantile` does: exact to a bucket's width, never finer. The
worker's address is the `worker.metrics` line of its JSON log.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HISTOGRAMS = {
    "rows committed": "steel_worker_capture_to_commit_seconds",
    "detections published": "steel_worker_capture_to_publish_seconds",
}
QUANTILES = (0.5, 0.95, 0.99)


def metrics_url(log_path: Path) -> str | None:
    """The worker's /metrics address from its log's `worker.metrics` line; None before it is there."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(entry, dict)
            and entry.get("event") == "worker.metrics"
            and isinstance(entry.get("url"), str)
        ):
            return str(entry["url"])
    return None


def bucket_counts(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of histogram `name` in Prometheus text, bounds ascending."""
    for family in text_string_to_metric_families(text):
        if family.name == name:
            buckets = [
                (float(s.labels["le"]), float(s.value)) for s in family.samples if s.name == f"{name}_bucket"
            ]
            return sorted(buckets)
    return []


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets (None when it holds no observation); in the
    +Inf bucket, the largest finite bound (as Prometheus answers)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_lines(url: str, timeout_s: float = 5.0) -> list[str]:
    """One line per histogram: p50/p95/p99 and the frames counted."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8")
    lines = []
    for label, name in HISTOGRAMS.items():
        buckets = bucket_counts(text, name)
        values = [histogram_quantile(q, buckets) for q in QUANTILES]
        if values[0] is None:
            continue
        shown = ", ".join(f"p{round(q * 100)} {v:.2f} s" for q, v in zip(QUANTILES, values, strict=True))
        lines.append(f"  capture → {label + ':':<22} {shown}  ({int(buckets[-1][1])} frames)")
    return lines
