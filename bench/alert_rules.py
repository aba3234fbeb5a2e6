"""What the alert rules cost the worker: time per batch of `AlertStage.evaluate` next to the
batch's database write, on a synthetic strip with a roll mark and random defects.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/alert_rules.py

It creates a fresh database on that server (dropped at the end), writes a 400 m strip in batches
of 5 frames (35 tiles, as the worker would), and evaluates the rules after each batch. Times are
medians (and 95th percentiles) over the batches written once the 150 m lookback is full.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import structlog

from worker.alerts.config import load_rules
from worker.alerts.stage import AlertStage
from worker.core.catalogue import load_catalogue
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates
from worker.core.thresholds import ClassThresholds
from worker.infra.postgres import fresh_database
from worker.storage import migrate
from worker.storage.engine import create_engine
from worker.storage.writer import StorageWriter

FRAME_M = 0.256  # 256 rows at 1 mm/px
LANES = 7
MODEL = "bench" + "0" * 59
T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


def strip(strip_id: str, length_m: float, tile_rate: float, seed: int) -> list[FrameResult]:
    """Frames of one strip: each tile holds a random class with probability `tile_rate`, and lane 4
    carries a roll mark of class rolling every π × 0.64 m."""
    rng = random.Random(seed)
    pitch = math.pi * 0.64
    marks = {math.floor((1.0 + k * pitch) / FRAME_M) for k in range(int(length_m / pitch))}
    results = []
    for k in range(int(length_m / FRAME_M)):
        found = {
            (lane, rng.choice(("holes", "scratches", "rolling")))
            for lane in range(LANES)
            if rng.random() < tile_rate
        }
        if k in marks:
            found.add((4, "rolling"))
        meta = FrameMeta(
            frame_id=f"{strip_id}-f{k:06d}", line="L1", camera="cam-top-1", surface="top", strip_id=strip_id,
            captured_at=T0 + timedelta(seconds=k * FRAME_M / 2.0), position_m=k * FRAME_M,
            mm_per_px_along=1.0, mm_per_px_across=1.0, edge_offset_mm=0.0, width=1600, height=256,
        )  # fmt: skip
        detections = tuple(
            Detection(
                frame_id=meta.frame_id,
                tile_index=lane,
                class_name=name,
                confidence=rng.uniform(0.5, 0.97),
                threshold=0.5,
                along_m=meta.along_m(128),
                across_mm=meta.across_mm(224 * lane + 128),
                along_start_m=meta.along_m(0),
                along_end_m=meta.along_m(256),
                x=224 * lane,
                y=0,
                size=256,
            )
            for lane, name in sorted(found)
        )
        results.append(
            FrameResult(meta, KafkaCoordinates("bench", 0, k), MODEL, LANES, detections, meta.captured_at)
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--tile-rate", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--length-m", type=float, default=400.0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rules = load_rules()
    for rate in args.tile_rate:
        with fresh_database(args.server) as url:
            migrate.upgrade(url)
            engine = create_engine(url)
            writer = StorageWriter(engine)
            writer.ensure_catalogue(load_catalogue())
            writer.register_model(
                MODEL,
                "resnet50",
                256,
                ["holes", "scratches", "rolling"],
                ClassThresholds.from_values(("holes", "scratches", "rolling"), [0.5] * 3),
                {},
            )
            stage = AlertStage(engine, rules, load_catalogue(), "bench-alerts")
            results = strip("BENCH", args.length_m, rate, seed=1)
            writes, evaluations, raised = [], [], 0
            for start in range(0, len(results), 5):
                batch = results[start : start + 5]
                t0 = time.perf_counter()
                writer.write_results(batch)
                t1 = time.perf_counter()
                raised += len(stage.evaluate(batch))
                t2 = time.perf_counter()
                if batch[0].meta.position_m > rules.lookback_m:
                    writes.append(t1 - t0)
                    evaluations.append(t2 - t1)
            engine.dispose()
        detections = sum(len(r.detections) for r in results)

        def ms(values: list[float], q: float) -> float:
            return sorted(values)[int(q * (len(values) - 1))] * 1000

        rules_ms = statistics.median(evaluations) * 1000
        print(
            f"tile rate {rate:.0%}: {len(results)} frames, {detections} detections, {raised} alerts."
            f" Per batch of 5 frames: write {statistics.median(writes) * 1000:.1f} ms,"
            f" rules {rules_ms:.1f} ms median, {ms(evaluations, 0.95):.1f} ms p95"
        )


if __name__ == "__main__":
    main()
