"""Soak (slow; `make soak`): SOAK_MINUTES (default 30) of mixed good and bad frames through a
`python -m worker run` process connected as a `steel_worker` login, at the rate the worker keeps
up with (the producer keeps at most IN_FLIGHT messages ahead of the committed offsets). Then: 0
frames lost, 0 written twice, every bad message dead-lettered once with its reason, one detection
message per frame, a clean exit on SIGTERM, and resident memory grown by less than 5 % from the end
of the warm-up (the mean of the samples just after it against the mean of the last ones). The
figures are printed and written to SOAK_REPORT (default: soak-report.json in the test's folder)
for docs/reliability.md.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from poison_cases import PROCESSED, WORKER_OVERRIDES, Case, cases, claim_check_files
from streaming_harness import (
    Topics,
    committed_offsets,
    frame_messages,
    ledger,
    make_topics,
    read_topic,
    rss_bytes,
    start_worker_process,
    wait_until,
    worker_settings,
)

from worker.core import refusals as r

pytestmark = pytest.mark.slow

IN_FLIGHT = 200
BAD_EVERY = 5  # one message in five is bad
SAMPLE_EVERY_S = 20.0
WARM_UP_S = 180.0
FRAMES_PER_COIL = 6000  # two strips at a time, 3000 frames of 0.256 m each


@dataclass
class Sent:
    good: list[str] = field(default_factory=list)
    bad: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    @property
    def total(self) -> int:
        return len(self.good) + sum(self.bad.values())


def _committed(bootstrap: str, topics: Topics) -> int:
    return sum(v or 0 for v in committed_offsets(bootstrap, topics.group, topics.frames).values())


def _good_frame(template: tuple[bytes, bytes, list[tuple[str, bytes]]], n: int) -> tuple[str, Any]:
    """Frame n of the line: coils end, positions advance, so the alert rules' window moves on."""
    _, value, headers = template
    meta = json.loads(dict(headers)["frame-meta"])
    strip = f"SOAK-{n // FRAMES_PER_COIL:04d}-{n % 2}"
    meta |= {"frame_id": f"soak-{n:08d}", "strip_id": strip, "position_m": (n % FRAMES_PER_COIL) // 2 * 0.256}
    headers = [(k, json.dumps(meta).encode() if k == "frame-meta" else v) for k, v in headers]
    return meta["frame_id"], (strip.encode(), value, headers)


def _produce(
    bootstrap: str, topics: Topics, bad_cases: list[Case], process: subprocess.Popen[bytes], minutes: float
) -> Sent:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8_000_000)
    templates = list(frame_messages(50, strips=("T",), size=(256, 512)).values())
    sent = Sent()
    started = time.monotonic()
    next_sample = started
    try:
        for n in itertools.count():
            now = time.monotonic()
            if now - started >= minutes * 60:
                break
            if now >= next_sample:
                sent.rss.append((now - started, rss_bytes(process.pid)))
                next_sample = now + SAMPLE_EVERY_S
                assert process.poll() is None, "the worker stopped"
            if n % BAD_EVERY == 0:
                case = bad_cases[(n // BAD_EVERY) % len(bad_cases)]
                producer.send(topics.frames, case.value, key=case.key, headers=list(case.headers))
                sent.bad[case.expect] += 1
            else:
                frame_id, (key, value, headers) = _good_frame(templates[n % len(templates)], n)
                producer.send(topics.frames, value, key=key, headers=headers)
                sent.good.append(frame_id)
            if n % IN_FLIGHT == IN_FLIGHT - 1:  # at most IN_FLIGHT messages ahead of the worker
                producer.flush(30)
                wait_until(lambda n=n: _committed(bootstrap, topics) >= n + 1 - IN_FLIGHT, 120, "the worker")
        producer.flush(60)
        wait_until(
            lambda: _committed(bootstrap, topics) == sent.total, 300, "every message committed", every_s=1.0
        )
        sent.rss.append((time.monotonic() - started, rss_bytes(process.pid)))
    finally:
        producer.close()
    return sent


def test_soak_mixed_good_and_bad_frames_lose_nothing_duplicate_nothing_and_keep_memory_flat(
    broker, make_topic, database_url: str, worker_database_url: str, *, model_dir: Path, tmp_path: Path
) -> None:
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    topics = make_topics(make_topic, partitions=2)
    root = (tmp_path / "claims").resolve()
    table = cases(claim_check_files(root, tmp_path / "outside"))
    bad_cases = [
        c for c in table if c.kind == "message" and c.expect not in (PROCESSED, r.DUPLICATE_FRAME_ID)
    ]
    overrides = {**WORKER_OVERRIDES, "batch_tiles": "32", "batch_max_wait_ms": "200"}
    settings = worker_settings(
        broker.bootstrap_servers,
        worker_database_url,
        model_dir,
        topics,
        claim_check_root=str(root),
        **overrides,
    )
    # As the image runs it (Dockerfile): two malloc arenas keep the resident memory flat.
    arenas = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    process = start_worker_process(settings, tmp_path / "worker.log", arenas)
    try:
        sent = _produce(broker.bootstrap_servers, topics, bad_cases, process, minutes)
    finally:
        process.terminate()
        exit_code = process.wait(60)
    written = [row.frame_id for row in ledger(database_url)]
    detections = Counter(
        json.loads(x.value)["frame_id"]
        for x in read_topic(
            broker.bootstrap_servers, topics.detections, at_least=len(sent.good), timeout_s=300
        )
    )
    dead = Counter(
        dict(x.headers)["dlq-reason"].decode()
        for x in read_topic(
            broker.bootstrap_servers, topics.dlq, at_least=sum(sent.bad.values()), timeout_s=300
        )
    )
    elapsed = sent.rss[-1][0]
    warm = [rss for t, rss in sent.rss if WARM_UP_S <= t < WARM_UP_S + 5 * SAMPLE_EVERY_S]
    last = [rss for _, rss in sent.rss[-5:]]
    after_warm_up, at_end = statistics.mean(warm or last), statistics.mean(last)
    report = {
        "minutes": round(elapsed / 60, 1),
        "good_frames": len(sent.good),
        "bad_messages": sum(sent.bad.values()),
        "messages_per_s": round(sent.total / elapsed, 1),
        "lost": len(set(sent.good) - set(written)),
        "written_twice": len(written) - len(set(written)),
        "unexpected_rows": len(set(written) - set(sent.good)),
        "detection_messages_not_one": sum(1 for f in sent.good if detections[f] != 1),
        "dead_letters_by_reason": dict(sorted(dead.items())),
        "rss_after_warm_up_mib": round(after_warm_up / 2**20, 1),
        "rss_at_end_mib": round(at_end / 2**20, 1),
        "rss_max_mib": round(max(rss for _, rss in sent.rss) / 2**20, 1),
        "rss_growth": round((at_end - after_warm_up) / after_warm_up, 4),
        "rss_samples_mib": [[round(t), round(rss / 2**20, 1)] for t, rss in sent.rss],
        "worker_exit_code": exit_code,
        "malloc_arena_max": arenas["MALLOC_ARENA_MAX"],
        "cpu_avx512": "avx512f" in Path("/proc/cpuinfo").read_text(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    out = Path(os.environ.get("SOAK_REPORT", tmp_path / "soak-report.json"))
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert report["lost"] == report["written_twice"] == report["unexpected_rows"] == 0
    assert report["detection_messages_not_one"] == 0
    assert dead == sent.bad, "every bad message dead-lettered once, with its reason"
    assert exit_code == 0
    assert report["rss_growth"] < 0.05, f"resident memory grew {report['rss_growth']:.1%}"
