"""Throughput with 1 and 2 worker processes on one machine, one consumer group, 2 partitions.

    .venv/bin/python bench/scaling.py [--runtime openvino] [--tiles 700] [--input-size 256]

For each worker count: a fresh frames topic of 2 partitions (frames keyed by strip, 2 strips per
partition), the frames published first, a fresh database, then N `steel-worker run` processes
(`worker.demo.worker_process.WorkerProcess`, the demo's own way of starting one) in one group.
Throughput is counted from the database: rows over the time the ledger took to go from 10 % to
100 % of the frames, so model loading, warm-up and the group join (before the first row) are
outside it. The model is bench/throughput.py's untrained ResNet50 (or --model), exported for the
runtime when it is not tensorflow (INT8 calibrated on the stream's tiles, agreement not enforced:
random weights). Prints tiles/s per worker count and the 2-worker/1-worker ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from kafka import KafkaProducer
from runtimes import calibration_set, cpu_flags
from throughput import Frames, bench_model, database_server, make_frames

from worker.demo.worker_process import WORKER_DEFAULTS, WorkerProcess
from worker.infra.broker import EmbeddedBroker, create_topics
from worker.infra.postgres import fresh_database
from worker.model.artefact import Classifier
from worker.model.runtimes import EXPORTS, RUNTIMES, export_model
from worker.storage import migrate
from worker.storage.engine import create_engine

PARTITIONS = 2
START_SHARE = 0.1


def measure(
    broker: EmbeddedBroker, server_url: str, env: dict[str, str], frames: Frames, workers: int
) -> float:
    """Tiles/s of `workers` processes over the frames (published first), from 10 % to 100 % of rows."""
    name = f"scale-{time.time_ns() % 10**12}"
    topics = {
        "FRAMES_TOPIC": f"{name}-frames",
        "DETECTIONS_TOPIC": f"{name}-det",
        "ALERTS_TOPIC": f"{name}-al",
    }
    create_topics(broker.bootstrap_servers, dict.fromkeys(topics.values(), PARTITIONS) | {f"{name}-dlq": 1})
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=20, max_request_size=8_000_000
    )
    for key, value, headers in frames.records:
        producer.send(topics["FRAMES_TOPIC"], key=key, value=value, headers=headers)
    producer.flush(60)
    producer.close()
    total = len(frames.records)
    with fresh_database(server_url, prefix="steel_scale") as url, tempfile.TemporaryDirectory() as logs:
        migrate.upgrade(url)
        run_env = {
            **env,
            **topics,
            "DATABASE_URL": url,
            "DLQ_TOPIC": f"{name}-dlq",
            "CONSUMER_GROUP": f"{name}-group",
        }
        processes = [WorkerProcess(run_env, Path(logs) / f"worker-{i}.log") for i in range(workers)]
        engine = create_engine(url)
        try:
            start, done, deadline = None, None, time.monotonic() + 1200
            while done is None:
                for process in processes:
                    process.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not write every frame within 20 minutes")
                with engine.connect() as conn:
                    rows = conn.execute(sa.text("SELECT count(*) FROM frames")).scalar_one()
                now = time.monotonic()
                if start is None and rows >= math.ceil(START_SHARE * total):
                    start = (now, rows)
                if rows >= total:
                    done = now
                time.sleep(0.1)
        finally:
            engine.dispose()
            for process in processes:
                process.stop()
    assert start is not None
    tiles_per_frame = frames.tile_total / total
    return (total - start[1]) * tiles_per_frame / (done - start[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="openvino", help="MODEL_RUNTIME of the workers"
    )
    parser.add_argument("--tiles", type=int, default=700, help="tiles per measurement (7 per frame)")
    parser.add_argument("--input-size", type=int, default=256, help="input size of the untrained model")
    parser.add_argument(
        "--model", type=Path, default=None, help="a model artefact (with its exports) instead"
    )
    parser.add_argument("--batch-tiles", type=int, default=32, help="BATCH_TILES")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    frames = make_frames(args.tiles, 4, seed=1)  # 4 strips: 2 per partition
    with tempfile.TemporaryDirectory(prefix="scale-") as workdir:
        inferencer = bench_model(args.model, args.input_size, args.batch_tiles, frames, Path(workdir))
        classifier = inferencer.classifier
        assert isinstance(classifier, Classifier)
        model_dir = classifier.model_dir
        if args.model is None and args.runtime != "tensorflow":
            int8 = EXPORTS[args.runtime].precision == "int8"
            data = calibration_set(frames.tiles(inferencer), classifier, Path(workdir) / "cal")
            export_model(model_dir, args.runtime, data if int8 else None, data)
        env = {
            **os.environ,
            **WORKER_DEFAULTS,
            "MODEL_PATH": str(model_dir),
            "MODEL_RUNTIME": args.runtime,
            "MODEL_AGREEMENT_MAX_F1_DROP": "1",
            "MODEL_AGREEMENT_MAX_FLIPS": "1",
            "BATCH_TILES": str(args.batch_tiles),
            "ALERT_RULES": "none",
            "LOG_LEVEL": "warning",
        }
        with EmbeddedBroker() as broker, database_server() as server_url:
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            speeds = {n: measure(broker, server_url, env, frames, n) for n in (1, 2)}
    load_after = os.getloadavg()
    print(
        f"{args.runtime}, input {args.input_size}, {frames.tile_total} tiles, {PARTITIONS} partitions; "
        f"{os.cpu_count()} CPUs, {cpu_flags()}; load average before {load_before[0]:.2f},"
        f" after {load_after[0]:.2f}"
    )
    for n, speed in speeds.items():
        print(f"{n} worker(s): {speed:8.1f} tiles/s")
    print(f"2 workers / 1 worker: {speeds[2] / speeds[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
