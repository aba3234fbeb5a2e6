"""Throughput of the worker against the bare model, in one run on one machine.

    .venv/bin/python bench/throughput.py [--tiles N] [--input-size S] [--model DIR]   # or: make bench

Measures, with the same loaded model and the same tiles:

(a) bare model: `Inferencer.forward` (`worker.inference`, the worker's own path) on the
    pre-decoded tiles (a uint8 array), in batches of BATCH_TILES, as the worker calls it — the
    model's own pre-processing included;
(b) the worker end to end with the alert rules on (config/alert-rules.yaml): the frames (PNG,
    synthetic 1600×256 strips from `worker.datasets.synthetic`) are published to a fresh frames
    topic first; the clock runs from the worker's first poll that returns frames to the moment
    the last frame is written, published and committed (the ledger is checked afterwards). Model
    load, warm-up and the consumer group join are outside it;
(c) the same with the rules off (ALERT_RULES=none);

and prints tiles/s of each, worker/bare and rules-on/rules-off, and how much of each worker
run the model was busy (the rest is the loop's own time: poll, decode, database, topics, not
hidden behind the model). Each worker run gets a fresh
database (on $DATABASE_URL's server, else an embedded PostgreSQL) and fresh topics on an embedded
broker (Tansu). The model is an untrained ResNet50 at `--input-size` (the demo's 64 by default)
whose thresholds are set to each class's 90th-percentile score on these tiles, so that about 10 %
of tiles per class are detections and the rules have work to do; `--model DIR` uses a trained
artefact as it is. Other processes on the machine (see the load average printed) make single
runs noisy, so each worker run is compared with a bare pass made just before it, and
`--repeat K` measures K rounds (bare, rules on, bare, rules off; the order of on and off
alternates) and reports medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import cv2
import numpy as np
import sqlalchemy as sa
from kafka import KafkaProducer
from tqdm import tqdm

from worker.core import contracts
from worker.core.catalogue import load_catalogue
from worker.core.records import FrameMeta
from worker.core.tiling import tile_count
from worker.datasets.synthetic import SyntheticFrameGenerator
from worker.inference import DEFAULT_TILE, Inferencer
from worker.infra.broker import EmbeddedBroker, create_topics
from worker.infra.postgres import EmbeddedPostgres, fresh_database
from worker.model.artefact import Classifier, create_untrained_artefact
from worker.storage import migrate
from worker.storage.engine import create_engine
from worker.streaming.observability import configure_logging
from worker.streaming.service import open_worker
from worker.streaming.settings import ALERT_RULES_OFF, OPTIONS, Settings, load_settings

FRAME_ROWS, FRAME_COLUMNS = 256, 1600  # the simulator's frames: 7 tiles of 256 across
MM_PER_PX = 1.0
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
DETECTION_QUANTILE = 0.9  # untrained model: each class's threshold at this quantile of its scores
DEFAULTS = {o.field: o.default for o in OPTIONS}


@dataclass(frozen=True)
class Frames:
    """The benchmark's frames: Kafka records (key, PNG value, headers) and their images, decoded."""

    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    images: list[np.ndarray]  # (FRAME_ROWS, FRAME_COLUMNS) uint8 each, in order
    metas: list[FrameMeta]  # each record's frame-meta header

    @property
    def tile_total(self) -> int:
        return sum(tile_count(image.shape[0], image.shape[1], DEFAULT_TILE) for image in self.images)

    def tiles(self, inferencer: Inferencer) -> np.ndarray:
        """Every tile of every frame, in order, cut as the worker cuts them."""
        return np.concatenate([inferencer.pre_process(image).pixels for image in self.images])


@dataclass(frozen=True)
class WorkerRun:
    tiles: int
    frames: int
    seconds: float
    detections: int
    alerts: int
    batches: int
    model_seconds: float  # of `seconds`, spent in Classifier.predict (on the worker's model thread)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds


def make_frames(tiles: int, strips: int, seed: int) -> Frames:
    """Enough synthetic frames for `tiles` tiles, PNG-encoded, strips taking turns (each strip's
    frames back to back along it)."""
    generator = SyntheticFrameGenerator(seed, FRAME_ROWS, FRAME_COLUMNS)
    count = math.ceil(tiles / tile_count(FRAME_ROWS, FRAME_COLUMNS, DEFAULT_TILE))
    records, images, metas = [], [], []
    for i in tqdm(range(count), desc="frames", unit="frame", leave=False):
        image = generator.next_frame().image
        strip, k = f"B-{i % strips:02d}", i // strips
        meta = FrameMeta(
            frame_id=f"{strip}-f{k:05d}",
            line="L1",
            camera="cam-top-1",
            surface="top",
            strip_id=strip,
            captured_at=T0 + timedelta(seconds=k * 0.128),
            position_m=k * FRAME_ROWS * MM_PER_PX / 1000,
            mm_per_px_along=MM_PER_PX,
            mm_per_px_across=MM_PER_PX,
            edge_offset_mm=0.0,
        )
        ok, png = cv2.imencode(".png", image)
        assert ok
        records.append((strip.encode(), png.tobytes(), contracts.frame_headers(meta, contracts.PNG)))
        images.append(image)
        metas.append(meta)
    return Frames(records, images, metas)


def bench_model(
    model_arg: Path | None, input_size: int, batch_tiles: int, frames: Frames, workdir: Path
) -> Inferencer:
    """The model to measure: `--model DIR`, or an untrained ResNet50 with thresholds at each
    class's DETECTION_QUANTILE score on the frames' tiles (re-tuned thresholds keep the version)."""
    if model_arg is not None:
        return Inferencer.load_model(model_arg, batch_size=batch_tiles)
    out = workdir / "model"
    create_untrained_artefact(out, load_catalogue(), input_size=input_size, seed=0)
    untuned = Inferencer.load_model(out, batch_size=batch_tiles)
    scores = untuned.forward(frames.tiles(untuned))
    meta_path = out / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["thresholds"] = {
        name: round(float(np.quantile(scores[:, c], DETECTION_QUANTILE)), 6)
        for c, name in enumerate(meta["thresholds"])
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return Inferencer.load_model(out, batch_size=batch_tiles)


def bare_model(inferencer: Inferencer, tiles: np.ndarray, batch_tiles: int) -> float:
    """(a): tiles/s of `Inferencer.forward` on the decoded tiles, after the worker's warm-up."""
    inferencer.warm_up(batch_tiles)
    started = time.perf_counter()
    inferencer.forward(tiles)
    return len(tiles) / (time.perf_counter() - started)


@contextmanager
def database_server() -> Iterator[str]:
    """A server to create the runs' databases on: $DATABASE_URL's, else an embedded PostgreSQL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as data, EmbeddedPostgres(Path(data) / "data") as pg:
        yield pg.url()


def fresh_topics(broker: EmbeddedBroker) -> dict[str, str]:
    """New frames, detections, alerts and dead-letter topics (one partition each) for one run."""
    name = f"bench-{time.time_ns() % 10**12}"
    topics = {
        "frames": f"{name}-frames",
        "detections": f"{name}-det",
        "alerts": f"{name}-alerts",
        "dlq": f"{name}-dlq",
        "group": f"{name}-group",
    }
    create_topics(broker.bootstrap_servers, {topics[k]: 1 for k in ("frames", "detections", "alerts", "dlq")})
    return topics


def run_settings(
    broker: EmbeddedBroker, url: str, classifier: Classifier, topics: dict[str, str], settings: dict[str, Any]
) -> Settings:
    """The worker's settings for one run on `topics` and the database at `url`."""
    return load_settings(
        {},
        {
            "bootstrap_servers": broker.bootstrap_servers,
            "database_url": url,
            "model_path": str(classifier.model_dir),
            "frames_topic": topics["frames"],
            "detections_topic": topics["detections"],
            "alerts_topic": topics["alerts"],
            "dlq_topic": topics["dlq"],
            "consumer_group": topics["group"],
            "metrics_host": "127.0.0.1",
            "metrics_port": "0",
            "session_timeout_ms": "6000",
            **settings,
        },
    )


def worker_run(
    broker: EmbeddedBroker, server_url: str, classifier: Classifier, frames: Frames, settings: dict[str, Any]
) -> WorkerRun:
    """(b)/(c): one worker over a fresh database and fresh topics, the frames published first."""
    topics = fresh_topics(broker)
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=20, max_request_size=8_000_000
    )
    try:
        for key, value, headers in frames.records:
            producer.send(topics["frames"], key=key, value=value, headers=headers)
        producer.flush(60)
    finally:
        producer.close()

    with fresh_database(server_url, prefix="steel_bench") as url:
        migrate.upgrade(url)
        config = run_settings(broker, url, classifier, topics, settings)
        seconds, batches, model_seconds = _timed_worker(config, classifier, len(frames.records))
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                written = conn.execute(sa.text("SELECT count(*) FROM frames")).scalar_one()
                detections = conn.execute(sa.text("SELECT count(*) FROM detections")).scalar_one()
                alerts = conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar_one()
        finally:
            engine.dispose()
    if written != len(frames.records):
        raise RuntimeError(f"worker run: expected {len(frames.records)} ledger rows, found {written}")
    return WorkerRun(frames.tile_total, written, seconds, detections, alerts, batches, model_seconds)


def _timed_worker(settings: Settings, classifier: Classifier, frames: int) -> tuple[float, int, float]:
    """Seconds from the worker's first poll that returns frames until `frames` frames are
    committed (open_worker's model warm-up and the group join come before), the batches, and the
    seconds the model spent predicting within that time."""
    predicted: list[tuple[float, float]] = []  # (start, end) of each predict call
    predict = classifier.predict

    def timed_predict(tiles: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return predict(tiles)
        finally:
            predicted.append((started, time.perf_counter()))

    classifier.predict = timed_predict  # type: ignore[method-assign]
    try:
        with open_worker(settings, classifier=classifier) as worker:
            first, done = _run_until_committed(worker, frames)
            batches = int(worker.metrics.value("steel_worker_batch_frames_count"))
    finally:
        del classifier.predict  # the class's method again
    model = sum(max(0.0, min(end, done) - max(start, first)) for start, end in predicted)
    return done - first, batches, model


def _run_until_committed(worker: Any, frames: int) -> tuple[float, float]:
    """Run `worker` in a thread until `frames` frames are committed, then stop it; the times
    (perf_counter) of its first poll that returned frames and of the last commit."""
    first: list[float] = []
    poll = worker.consumer.poll

    def timed_poll(*args: Any, **kwargs: Any) -> Any:
        records = poll(*args, **kwargs)
        if records and not first:
            first.append(time.perf_counter())
        return records

    worker.consumer.poll = timed_poll
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 600
        while worker.metrics.value("steel_worker_frames_total") < frames:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the worker stopped or stalled before processing every frame")
            time.sleep(0.005)
        done = time.perf_counter()
    finally:
        worker.request_stop()
        thread.join(60)
    return first[0], done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: .venv/bin/python bench/throughput.py --tiles 700 --repeat 3",
    )
    parser.add_argument("--tiles", type=int, default=700, help="tiles per measurement (7 per frame)")
    parser.add_argument("--input-size", type=int, default=64, help="input size of the untrained model")
    parser.add_argument("--model", type=Path, default=None, help="a model artefact to use instead")
    parser.add_argument(
        "--batch-tiles", type=int, default=DEFAULTS["batch_tiles"], help="BATCH_TILES, also the bare batch"
    )
    parser.add_argument(
        "--batch-max-wait-ms", type=int, default=DEFAULTS["batch_max_wait_ms"], help="BATCH_MAX_WAIT_MS"
    )
    parser.add_argument("--strips", type=int, default=2, help="strips the frames belong to")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (a), (b), (c); medians reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    configure_logging("console", "warning", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    frames = make_frames(args.tiles, args.strips, args.seed)
    worker_settings = {"batch_tiles": str(args.batch_tiles), "batch_max_wait_ms": str(args.batch_max_wait_ms)}
    bare_runs: dict[str, list[float]] = {"on": [], "off": []}  # the bare pass just before each run
    runs: dict[str, list[WorkerRun]] = {"on": [], "off": []}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        inferencer = bench_model(args.model, args.input_size, args.batch_tiles, frames, workdir)
        classifier = inferencer.classifier
        assert isinstance(classifier, Classifier)  # the worker runs below load the same object
        tiles = frames.tiles(inferencer)
        bare_model(inferencer, tiles, args.batch_tiles)  # an untimed pass first
        broker = stack.enter_context(EmbeddedBroker())
        server_url = stack.enter_context(database_server())
        for round_ in range(args.repeat):
            print(f"round {round_ + 1}/{args.repeat}", file=sys.stderr)
            modes = ("on", "off") if round_ % 2 == 0 else ("off", "on")  # no order favoured
            for mode in modes:
                bare_runs[mode].append(bare_model(inferencer, tiles, args.batch_tiles))
                extra = (
                    dict(worker_settings)
                    if mode == "on"
                    else {**worker_settings, "alert_rules": ALERT_RULES_OFF}
                )
                runs[mode].append(worker_run(broker, server_url, classifier, frames, extra))
    load_after = os.getloadavg()

    speed = {m: [r.tiles_per_s for r in runs[m]] for m in runs}
    all_bare = bare_runs["on"] + bare_runs["off"]
    bare, on, off = (
        statistics.median(all_bare),
        statistics.median(speed["on"]),
        statistics.median(speed["off"]),
    )
    # Load drifts: compare each worker run with the bare pass right before it.
    ratio = {m: statistics.median(w / b for w, b in zip(speed[m], bare_runs[m], strict=True)) for m in runs}
    on_off = statistics.median(o / f for o, f in zip(speed["on"], speed["off"], strict=True))
    busy = {m: statistics.median(r.model_seconds / r.seconds for r in runs[m]) for m in runs}
    print(
        f"model: {classifier.backbone} input {classifier.input_size}, version {classifier.version[:12]}; "
        f"{frames.tile_total} tiles in {len(frames.records)} PNG frames of {FRAME_COLUMNS}x{FRAME_ROWS}; "
        f"BATCH_TILES {args.batch_tiles}, BATCH_MAX_WAIT_MS {args.batch_max_wait_ms}; "
        f"{args.repeat} round(s), medians"
    )
    print(
        f"load average (1/5/15 min): before {_load(load_before)}, after {_load(load_after)};"
        f" {os.cpu_count()} CPUs"
    )
    print(f"(a) bare model            {bare:8.1f} tiles/s   passes: {_runs(all_bare)}")
    for mode, label in (("on", "(b) worker, rules on "), ("off", "(c) worker, rules off")):
        last = runs[mode][-1]
        print(
            f"{label}     {statistics.median(speed[mode]):8.1f} tiles/s   runs: {_runs(speed[mode])}"
            f"   (model busy {busy[mode]:.0%} of the time; {last.batches} batches,"
            f" {last.detections} detections, {last.alerts} alerts)"
        )
    print(
        f"worker/bare (each run against the bare pass before it): rules on {ratio['on']:.3f},"
        f" rules off {ratio['off']:.3f}   (target >= 0.9)"
    )
    print(f"rules on / rules off: {on_off:.3f}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "bare_tiles_per_s": bare,
                    "worker_rules_on_tiles_per_s": on,
                    "worker_rules_off_tiles_per_s": off,
                    "ratio_on_bare": ratio["on"],
                    "ratio_off_bare": ratio["off"],
                    "ratio_on_off": on_off,
                    "model_busy": busy,
                    "bare_passes": bare_runs,
                    "worker_runs": speed,
                    "load_before": load_before,
                    "load_after": load_after,
                },
                indent=2,
            )
        )
    return 0


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
