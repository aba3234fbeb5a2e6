"""Decode within a budget: no image, however well-formed, holds the line.

- Valid hostile images (`hostile_images`): a progressive JPEG whose AC scan repeats thousands of
  times, a PNG flooded with chunks — refused by their structure before any pixel is decoded
  (`image-too-costly`), also when garbage between the scans tries to hide them from the count;
  Hypothesis builds such scan scripts at random.
- The decoder's processes (`decode_pool.Decoder`): a decode past DECODE_TIMEOUT_MS is refused
  (`decode-timeout`) and its process replaced; a process that dies blames only its frame, after
  one more try; `keep_alive` is called while a decode takes long.
- Through the real worker, broker, PostgreSQL and model: scan bombs among good frames leave the
  good frames stored within seconds; bombs past the scan limit are cut by the deadline, and the
  worker stays in its group the while (each bomb dead-lettered exactly once).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from frames import grey_image, inbound, jpeg_bytes, make_meta, png_bytes
from hostile_images import jpeg_scan_bomb, png_chunk_flood, segments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streaming_harness import (
    end_offsets,
    frame_messages,
    ledger,
    make_topics,
    publish,
    read_topic,
    running_worker,
    wait_until,
    worker_settings,
)

from worker.core import contracts
from worker.core import refusals as r
from worker.core.records import DecodedFrame
from worker.model.artefact import Classifier
from worker.streaming import decode as d
from worker.streaming.decode_pool import Decoder

LIMITS = d.DecodeLimits(max_frame_bytes=8_000_000, max_frame_pixels=20_000_000, max_frame_tiles=1024)


def _message(value: bytes, content_type: str = contracts.JPEG, frame_id: str = "f-1", offset: int = 0):
    return inbound(value, contracts.frame_headers(make_meta(frame_id), content_type), offset=offset)


def _decode(value: bytes, content_type: str = contracts.JPEG, limits: d.DecodeLimits = LIMITS):
    return d.decode_message(_message(value, content_type), limits)


# --- the structure, counted before decoding -------------------------------------------------------


def test_a_scan_bomb_is_refused_by_its_scan_count_in_milliseconds() -> None:
    """4096 × 4096 with 20 000 extra AC scans: about half a minute for libjpeg on this machine."""
    bomb = jpeg_scan_bomb(4096, 4096, 20_000)
    started = time.perf_counter()
    outcome = _decode(bomb)
    seconds = time.perf_counter() - started
    assert isinstance(outcome, d.Rejected)
    assert (outcome.reason, outcome.stage) == (r.IMAGE_TOO_COSTLY, r.DECODE)
    assert "65 scans or more, limit 64 (MAX_JPEG_SCANS)" in outcome.detail
    assert seconds < 1.0, seconds


def test_real_progressive_and_baseline_jpegs_and_a_few_extra_scans_decode() -> None:
    image = grey_image(512, 768, seed=4)
    for data in (jpeg_bytes(image), jpeg_bytes(image, progressive=True), jpeg_scan_bomb(512, 512, 50)):
        outcome = _decode(data)
        assert isinstance(outcome, DecodedFrame), outcome
    assert sum(m == 0xDA for m, _, _ in segments(jpeg_bytes(image, progressive=True))) <= 10


def test_garbage_between_scans_does_not_hide_them_from_the_count() -> None:
    """libjpeg skips bytes before a marker with a warning; so does the count."""
    bomb = jpeg_scan_bomb(256, 256, 200)
    scans = [(start, end) for marker, start, end in segments(bomb) if marker == 0xDA]
    padded = bytearray(bomb[: scans[10][0]])
    for start, end in scans[10:]:
        padded += b"\x00\x17" + bomb[start:end]
    padded += bomb[scans[-1][1] :]
    outcome = _decode(bytes(padded))
    assert isinstance(outcome, d.Rejected) and outcome.reason == r.IMAGE_TOO_COSTLY


def test_a_png_chunk_flood_is_refused_and_ordinary_chunking_is_not() -> None:
    image = grey_image(256, 512, seed=2)
    flood = png_chunk_flood(image, 20_000)
    outcome = _decode(flood, contracts.PNG)
    assert isinstance(outcome, d.Rejected) and outcome.reason == r.IMAGE_TOO_COSTLY
    assert "chunks or more, limit 8192 (MAX_IMAGE_SEGMENTS)" in outcome.detail
    ordinary = _decode(png_chunk_flood(image, 1000), contracts.PNG)
    assert isinstance(ordinary, DecodedFrame)
    np.testing.assert_array_equal(ordinary.image, image)
    assert isinstance(_decode(png_bytes(image), contracts.PNG), DecodedFrame)


def test_a_png_whose_samples_decode_to_more_than_four_bytes_a_pixel_is_refused() -> None:
    """16-bit RGBA (8 bytes a pixel) over half of MAX_FRAME_PIXELS: OpenCV would allocate all of it
    before reducing it to grey. 16-bit grey of the same size (a 12-bit camera) decodes."""
    limits = replace(LIMITS, max_frame_pixels=1_000_000)
    rgba16 = np.zeros((800, 800, 4), np.uint16)
    ok, encoded = cv2.imencode(".png", rgba16)
    assert ok
    outcome = _decode(encoded.tobytes(), contracts.PNG, limits)
    assert isinstance(outcome, d.Rejected) and outcome.reason == r.IMAGE_TOO_COSTLY
    assert "decodes to 5120000 bytes (800x800, 4 samples of 16 bits), limit 4000000" in outcome.detail
    ok, grey16 = cv2.imencode(
        ".png", (np.arange(800 * 800, dtype=np.uint32) % 4096).astype(np.uint16).reshape(800, 800)
    )
    assert ok and isinstance(_decode(grey16.tobytes(), contracts.PNG, limits), DecodedFrame)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([16, 64, 200]),
    extra_scans=st.integers(0, 150),
    garbage=st.lists(st.binary(min_size=0, max_size=3), max_size=4),
    limit=st.integers(1, 100),
)
def test_any_scan_script_is_decoded_under_the_limit_and_refused_over_it(
    side: int, extra_scans: int, garbage: list[bytes], limit: int
) -> None:
    """Valid scan scripts built at random (with garbage a lenient decoder skips): the decoder never
    raises, refuses exactly the images over MAX_JPEG_SCANS, and decodes the others to size."""
    bomb = jpeg_scan_bomb(side, side, extra_scans, seed=side)
    parts = segments(bomb)
    data = bytearray(bomb[: parts[0][1]])
    scans = 0
    for marker, start, end in parts:
        if marker == 0xDA:
            junk = garbage[scans % len(garbage)] if garbage else b""
            data += junk.replace(b"\xff", b"\x00")
            scans += 1
        data += bomb[start:end]
    outcome = _decode(bytes(data), limits=replace(LIMITS, max_jpeg_scans=limit))
    if scans > limit:
        assert isinstance(outcome, d.Rejected) and outcome.reason == r.IMAGE_TOO_COSTLY, outcome
    else:
        assert isinstance(outcome, DecodedFrame), outcome
        assert outcome.image.shape == (side, side)


# --- the processes: deadline, crash, keep-alive ---------------------------------------------------------

#: A bomb libjpeg takes seconds over when nothing counts its scans.
SLOW = jpeg_scan_bomb(2048, 2048, 8000)
UNCOUNTED = replace(LIMITS, max_jpeg_scans=1_000_000)


def test_a_decode_past_its_deadline_is_refused_its_process_replaced_and_the_next_frame_decoded() -> None:
    good = _message(png_bytes(grey_image(64, 64)), contracts.PNG, "good", 1)
    calls = []
    with Decoder(UNCOUNTED, workers=1, timeout_s=0.5, keep_alive_s=0.1) as decoder:
        before = decoder._slots[0].process.pid
        started = time.monotonic()
        late, decoded = decoder.decode_all([_message(SLOW), good], keep_alive=lambda: calls.append(1))
        seconds = time.monotonic() - started
        after = decoder._slots[0].process.pid
    assert isinstance(late, d.Rejected)
    assert (late.reason, late.stage) == (r.DECODE_TIMEOUT, r.DECODE)
    assert "DECODE_TIMEOUT_MS" in late.detail
    assert isinstance(decoded, DecodedFrame)
    assert seconds < 3.0, seconds
    assert before != after, "the process that ran over was replaced"
    assert calls, "keep_alive was called while the decode took long"


def _kill_when_busy(decoder: Decoder, times: int) -> threading.Thread:
    """Kill the process decoding, `times` times (what the OOM killer or a crash in libjpeg does)."""

    def run() -> None:
        killed: set[int] = set()
        deadline = time.monotonic() + 20
        while len(killed) < times and time.monotonic() < deadline:
            slot = decoder._slots[0] if decoder._slots else None
            pid = slot.process.pid if slot is not None and slot.task is not None else None
            if pid is not None and pid not in killed:
                time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_decoder_process_that_dies_once_is_forgiven_and_twice_blames_only_its_frame() -> None:
    good = _message(png_bytes(grey_image(64, 64)), contracts.PNG, "good", 1)
    slow = _message(jpeg_scan_bomb(1024, 1024, 8000), offset=0)
    with Decoder(UNCOUNTED, workers=1, timeout_s=30) as decoder:
        killer = _kill_when_busy(decoder, times=1)
        once, after_once = decoder.decode_all([slow, good])
        killer.join()
        killer = _kill_when_busy(decoder, times=2)
        twice, after_twice = decoder.decode_all([slow, good])
        killer.join()
    assert isinstance(once, DecodedFrame) and isinstance(after_once, DecodedFrame)
    assert isinstance(twice, d.Rejected) and twice.reason == r.DECODER_ERROR
    assert "died decoding this image, twice" in twice.detail
    assert isinstance(after_twice, DecodedFrame)


# --- through the worker ---------------------------------------------------------------------------------


def _bombs(count: int, start: int, scans: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    bombs = []
    for k in range(count):
        meta = make_meta(f"bomb-{k}", strip_id="S1", position_m=100.0 + k)
        bombs.append(
            (
                b"S1",
                jpeg_scan_bomb(2048, 2048, scans, seed=start + k),
                contracts.frame_headers(meta, contracts.JPEG),
            )
        )
    return bombs


def test_scan_bombs_among_good_frames_leave_the_good_frames_stored_within_seconds(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """Six bombs that would take libjpeg minutes, in one poll with five good frames."""
    topics = make_topics(make_topic)
    settings_ = worker_settings(broker.bootstrap_servers, database_url, model_dir, topics)
    good = frame_messages(5, size=(256, 256))
    stream = list(good.values())
    mixed = [stream[0], *_bombs(3, 0, 20_000), stream[1], stream[2], *_bombs(3, 3, 20_000), *stream[3:]]
    with running_worker(settings_, classifier):
        started = time.monotonic()
        publish(broker.bootstrap_servers, topics.frames, mixed)
        wait_until(lambda: len(ledger(database_url)) == 5, 30, "the good frames")
        seconds = time.monotonic() - started
    assert sorted(row.frame_id for row in ledger(database_url)) == sorted(good)
    letters = read_topic(broker.bootstrap_servers, topics.dlq, at_least=6)
    reasons = Counter(dict(rec.headers)["dlq-reason"].decode() for rec in letters)
    assert reasons == {r.IMAGE_TOO_COSTLY: 6}
    assert seconds < 30


def test_bombs_past_the_scan_count_are_cut_by_the_deadline_and_the_worker_keeps_its_group(
    broker, make_topic, database_url: str, *, model_dir: Path, classifier: Classifier
) -> None:
    """With the scan count out of the way (MAX_JPEG_SCANS huge) the deadline still bounds each bomb;
    eight bombs of 1.5 s each in one poll outlast KAFKA_MAX_POLL_INTERVAL_MS (6 s), yet the group
    keeps the worker: each bomb is dead-lettered exactly once, every good frame stored once."""
    topics = make_topics(make_topic)
    settings_ = worker_settings(
        broker.bootstrap_servers,
        database_url,
        model_dir,
        topics,
        max_jpeg_scans="1000000",
        max_image_segments="1000000",
        decode_timeout_ms="1500",
        decode_workers="1",
        max_poll_interval_ms="6000",
        max_poll_records="64",
    )
    good = frame_messages(4, size=(256, 256))
    stream = list(good.values())
    mixed = [stream[0], *_bombs(8, 0, 12_000), *stream[1:]]
    with running_worker(settings_, classifier):
        publish(broker.bootstrap_servers, topics.frames, mixed)
        wait_until(lambda: len(ledger(database_url)) == 4, 60, "the good frames")
        wait_until(lambda: end_offsets(broker.bootstrap_servers, topics.dlq) == {0: 8}, 30, "8 dead letters")
        time.sleep(2)  # a re-read after an eviction would add dead letters now
    assert end_offsets(broker.bootstrap_servers, topics.dlq) == {0: 8}
    letters = read_topic(broker.bootstrap_servers, topics.dlq, at_least=8)
    assert {dict(rec.headers)["dlq-reason"].decode() for rec in letters} == {r.DECODE_TIMEOUT}
    assert sorted(row.frame_id for row in ledger(database_url)) == sorted(good)
