"""What the evidence crops cost in PostgreSQL, measured on real steel frames.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/evidence_storage.py --source ../shared/data/severstal-samples/images

Every image of --source (any size, PNG/JPEG/BMP, grey or colour) is cut into tiles with the
product's tiling (256 px by default), and every tile's crop is encoded as the worker encodes it
(`worker.core.evidence`, the default EVIDENCE_* settings unless flags say otherwise) and written
through `StorageWriter` into a fresh database on that server (dropped at the end), exactly as the
worker writes crops. It prints the crop's mean size as encoded and as stored (table, TOAST and
index pages of `tile_images` divided by its rows), the JPEG size at a few qualities, and what 1 000
frames cost at 1, 2 and every tile with a detection.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import sqlalchemy as sa

from worker.core.catalogue import load_catalogue
from worker.core.evidence import EvidencePolicy
from worker.core.records import FrameMeta, FrameResult, KafkaCoordinates, TileImage, TileRef
from worker.core.thresholds import ClassThresholds
from worker.core.tiling import cut_tiles, pad_to_tile
from worker.inference import tile_layout
from worker.infra.postgres import fresh_database
from worker.storage import migrate
from worker.storage.engine import create_engine
from worker.storage.partitions import ensure_months, partitions
from worker.storage.writer import StorageWriter

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
MODEL = "0" * 64


def _tiles(path: Path, tile: int) -> tuple[np.ndarray, list[TileRef]]:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"{path}: not an image OpenCV can read")
    height, width = image.shape
    _, _, windows = tile_layout(height, width, tile, 0)
    refs = [TileRef(path.stem, i, w.x, w.y, w.size) for i, w in enumerate(windows)]
    return cut_tiles(pad_to_tile(image, tile), windows), refs


def _result(frame_id: str, n: int, crops: tuple[TileImage, ...]) -> FrameResult:
    at = datetime.now(UTC)
    meta = FrameMeta(frame_id, "L1", "cam-top-1", "top", "BENCH", at, n * 0.4, 0.25, 0.25, 0.0)
    return FrameResult(
        meta=meta,
        source=KafkaCoordinates("bench.frames", 0, n),
        model_version=MODEL,
        tile_count=len(crops),
        detections=(),
        processed_at=at + timedelta(milliseconds=5),
        evidence=crops,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="folder of frame images (real steel)")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"), help="server (default $DATABASE_URL)"
    )
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels (default 256)")
    parser.add_argument("--quality", type=int, default=90, help="EVIDENCE_JPEG_QUALITY (default 90)")
    parser.add_argument("--max-side", type=int, default=256, help="EVIDENCE_MAX_SIDE (default 256)")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("no database server: set DATABASE_URL or pass --database-url")
    images = sorted(p for p in args.source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        parser.error(f"{args.source}: no PNG, JPEG or BMP images")

    policy = EvidencePolicy(jpeg_quality=args.quality, max_side=args.max_side)
    results: list[FrameResult] = []
    sizes_at: dict[int, list[int]] = {q: [] for q in (75, 90, 95)}
    for n, path in enumerate(images):
        pixels, refs = _tiles(path, args.tile)
        crops = tuple(policy.encode(ref, pixels[ref.index]) for ref in refs)
        results.append(_result(path.stem, n, crops))
        for q, sizes in sizes_at.items():
            other = replace(policy, jpeg_quality=q)
            sizes.extend(len(other.encode(ref, pixels[ref.index]).data) for ref in refs)
    every_crop = [c for r in results for c in r.evidence]
    tiles_per_frame = statistics.mean(r.tile_count for r in results)

    with fresh_database(args.database_url, prefix="steel_bench") as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        try:
            ensure_months(engine, 0)
            writer = StorageWriter(engine)
            writer.ensure_catalogue(load_catalogue())
            names = load_catalogue().names
            writer.register_model(
                MODEL,
                "resnet50",
                args.tile,
                names,
                ClassThresholds.from_values(names, [0.5] * len(names)),
                {},
            )
            for start in range(0, len(results), 5):
                writer.write_results(results[start : start + 5])
            with engine.begin() as conn:
                stored = sum(p.bytes for p in partitions(conn))
                rows = conn.execute(sa.text("SELECT count(*) FROM tile_images")).scalar_one()
        finally:
            engine.dispose()

    encoded = statistics.mean(len(c.data) for c in every_crop)
    on_disk = stored / rows
    print(
        f"{len(images)} frames from {args.source}, {len(every_crop)} crops of {args.tile} px"
        f" ({tiles_per_frame:.1f} tiles per frame), JPEG quality {args.quality}, max side {args.max_side}"
    )
    print(
        f"crop as encoded: {encoded / 1000:.1f} kB mean; as stored in tile_images: {on_disk / 1000:.1f} kB"
        f" ({on_disk / encoded:.2f} × the JPEG: table, TOAST and index pages)"
    )
    print(
        "JPEG size by quality: "
        + ", ".join(f"q{q} {statistics.mean(s) / 1000:.1f} kB" for q, s in sizes_at.items())
    )
    print("per 1 000 frames, stored:")
    for per_frame, what in (
        (1, "1 crop per frame"),
        (2, "2 crops per frame"),
        (tiles_per_frame, "every tile"),
    ):
        print(f"  {what:<18} {per_frame * 1000 * on_disk / 1e6:8.1f} MB")
    sample = 0.005 * tiles_per_frame * 1000 * on_disk / 1e6
    print(f"  + the clean sample at EVIDENCE_CLEAN_SAMPLE=0.005: {sample:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
