"""A camera that sends only garbage: 10 000 refused messages with no good frame in between are
all dead-lettered and committed by a `python -m worker run` process, and its resident memory stays
flat (growth under 5 % from the end of the warm-up, measured from /proc)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from frames import make_meta
from kafka import KafkaProducer
from streaming_harness import (
    committed_offsets,
    make_topics,
    read_topic,
    rss_bytes,
    start_worker_process,
    wait_until,
    worker_settings,
)

from worker.core import contracts

FLOOD = 10_000
WARM_UP = 2_000


def _garbage(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A different refusal each time: bad metadata, bad images, missing headers (about 1-3 KB)."""
    meta = contracts.frame_meta_dict(make_meta(f"flood-{i:05d}", strip_id="S-FLOOD"))
    kind = i % 4
    if kind == 0:
        meta["position_m"] = -1
    elif kind == 1:
        meta["frame_id"] = f"bad id {i}"
    headers = [("content-type", b"image/png"), ("frame-meta", json.dumps(meta).encode())]
    if kind == 3:
        headers = headers[:1]
    return b"S-FLOOD", (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (1 + i % 8)), headers


def test_ten_thousand_refusals_are_all_dead_lettered_and_committed_with_memory_flat(
    broker, make_topic, database_url: str, model_dir: Path, tmp_path: Path
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers, database_url, model_dir, topics, batch_tiles="64", batch_max_wait_ms="200"
    )
    log_path = tmp_path / "worker.log"
    process = start_worker_process(settings, log_path)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20)
    try:
        for i in range(WARM_UP):
            key, value, headers = _garbage(i)
            producer.send(topics.frames, value, key=key, headers=headers)
        producer.flush(60)
        wait_until(
            lambda: committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == {0: WARM_UP},
            180,
            lambda: "the warm-up committed; log:\n" + "\n".join(log_path.read_text().splitlines()[-20:]),
        )
        time.sleep(1)
        after_warm_up = rss_bytes(process.pid)
        peak = after_warm_up
        sent = []
        for i in range(WARM_UP, FLOOD):
            key, value, headers = _garbage(i)
            sent.append(producer.send(topics.frames, value, key=key, headers=headers))
            if i % 500 == 0:
                peak = max(peak, rss_bytes(process.pid))
        producer.flush(60)
        assert [future.get(timeout=30).offset for future in sent] == list(range(WARM_UP, FLOOD))
        end = {0: FLOOD}  # (not end_offsets: Tansu's answer lags behind batches of several records)

        def done() -> bool:
            nonlocal peak
            peak = max(peak, rss_bytes(process.pid))
            return committed_offsets(broker.bootstrap_servers, topics.group, topics.frames) == end

        wait_until(done, 300, "every refused message committed", every_s=1.0)
        time.sleep(1)
        at_end = rss_bytes(process.pid)
        assert process.poll() is None, "the worker stopped"
    finally:
        producer.close()
        process.terminate()
        process.wait(30)
    growth = (max(at_end, peak) - after_warm_up) / after_warm_up
    mib = 2**20
    print(f"RSS after warm-up {after_warm_up / mib:.1f} MiB, peak {peak / mib:.1f}, end {at_end / mib:.1f}")
    assert growth < 0.05, f"resident memory grew {growth:.1%} during the flood"
    dead = read_topic(broker.bootstrap_servers, topics.dlq, at_least=FLOOD, timeout_s=120)
    offsets = sorted(int(dict(r.headers)["dlq-source-offset"]) for r in dead)
    assert offsets == list(range(FLOOD)), "every refused message on the dead-letter topic once"
