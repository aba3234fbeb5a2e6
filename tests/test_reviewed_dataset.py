"""`steel-worker dataset --format reviews`: the reviewed crops of a real database as a tile set.

Frames, detections and crops are written through `StorageWriter` (as the worker does); reviews are
inserted as SQL rows with explicit times (as the console writes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import sqlalchemy as sa

from worker.cli import main
from worker.console.queries import read_only
from worker.console.reviewed import (
    ReviewTally,
    database_catalogue,
    reviewed_tiles,
    safe_source,
    write_reviewed_tileset,
)
from worker.core.catalogue import load_catalogue
from worker.core.errors import DatasetError
from worker.core.evidence import EvidencePolicy, decode
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates, TileRef
from worker.core.thresholds import ClassThresholds
from worker.core.tileset import TileSet, read_tile, read_tileset
from worker.storage.writer import StorageWriter

MODEL = "b" * 64
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
CLASSES = ("holes", "scratches", "rolling")


@pytest.fixture
def writer(engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(engine)
    writer.ensure_catalogue(load_catalogue())
    thresholds = ClassThresholds.from_values(CLASSES, [0.5, 0.5, 0.5])
    writer.register_model(MODEL, "resnet50", 256, list(CLASSES), thresholds, {})
    return writer


def _pixels(frame_id: str, tile: int) -> np.ndarray:
    """A tile's window: a gradient plus a per-tile pattern, so that crops differ and JPEG has work."""
    seed = sum(frame_id.encode()) * 31 + tile
    noise = np.random.default_rng(seed).integers(0, 40, (256, 256))
    ramp = np.add.outer(np.arange(256), np.arange(256)) // 4
    return np.clip(ramp + noise + tile * 20, 0, 255).astype(np.uint8)


def _frame(n: int, found: Sequence[tuple[int, str]], *, frame_id: str | None = None) -> FrameResult:
    """Frame `n` (1600 rows × 256 columns, 7 tiles) with detections `found` = (tile, class) and a
    crop of each tile with a detection."""
    frame_id = frame_id or f"S1-f{n:04d}"
    meta = FrameMeta(
        frame_id=frame_id,
        line="L1",
        camera="cam-top",
        surface="top",
        strip_id="S1",
        captured_at=T0 + timedelta(seconds=n),
        position_m=n * 0.8,
        mm_per_px_along=0.5,
        mm_per_px_across=0.5,
        edge_offset_mm=10.0,
        width=256,
        height=1600,
    )
    detections = tuple(
        Detection(
            frame_id=frame_id,
            tile_index=tile,
            class_name=name,
            confidence=0.9,
            threshold=0.5,
            along_m=meta.along_m(tile * 224 + 128),
            across_mm=meta.across_mm(128),
            along_start_m=meta.along_m(tile * 224),
            along_end_m=meta.along_m(tile * 224 + 256),
            x=0,
            y=tile * 224,
            size=256,
        )
        for tile, name in found
    )
    policy = EvidencePolicy(clean_sample=0.0)
    crops = tuple(
        policy.encode(TileRef(frame_id, tile, 0, tile * 224, 256), _pixels(frame_id, tile))
        for tile in sorted({tile for tile, _ in found})
    )
    return FrameResult(
        meta=meta,
        source=KafkaCoordinates("mill.frames", 0, n),
        model_version=MODEL,
        tile_count=7,
        detections=detections,
        processed_at=T0 + timedelta(seconds=n, milliseconds=300),
        evidence=crops,
    )


def _review(
    engine: sa.Engine,
    frame_id: str,
    tile: int,
    verdict: str,
    labels: Sequence[str],
    *,
    minutes: int = 0,
) -> None:
    """A review of (frame_id, tile), `minutes` after T0 + 1 h."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO reviews (frame_id, tile_index, verdict, labels, model_version, reviewer,"
                " reviewed_at) VALUES (:f, :t, :v, :l, :m, 'rita', :at)"
            ),
            {
                "f": frame_id,
                "t": tile,
                "v": verdict,
                "l": list(labels),
                "m": MODEL,
                "at": T0 + timedelta(hours=1, minutes=minutes),
            },
        )


def _stored_crop(engine: sa.Engine, frame_id: str, tile: int) -> np.ndarray:
    with engine.connect() as conn:
        data = conn.execute(
            sa.text("SELECT image FROM tile_images WHERE frame_id = :f AND tile_index = :t"),
            {"f": frame_id, "t": tile},
        ).scalar_one()
    return decode(bytes(data))


def _labels_by_tile(tileset: TileSet) -> dict[tuple[str, int, int], set[str]]:
    """(source, x, y) -> the classes the tile is labelled with."""
    names = tileset.catalogue.names
    return {
        (source, int(x), int(y)): {names[j] for j in np.flatnonzero(row)}
        for source, (x, y), row in zip(tileset.sources, tileset.origins, tileset.labels, strict=True)
    }


def test_a_corrected_crop_comes_out_with_the_corrected_labels(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """The core requirement: the model said holes, the reviewer said scratches and rolling."""
    writer.write_results([_frame(1, [(2, "holes")])])
    _review(engine, "S1-f0001", 2, "correct", ["scratches", "rolling"])

    summary = write_reviewed_tileset(database_url, tmp_path / "set")

    tileset = read_tileset(tmp_path / "set")
    assert tileset.catalogue.names == CLASSES  # the database's classes, in id order
    assert _labels_by_tile(tileset) == {("S1-f0001", 0, 448): {"scratches", "rolling"}}
    assert tileset.tiles == ("tiles/S1-f0001_x0_y448.png",)
    assert summary.tiles == 1 and summary.frames == 1
    assert summary.verdicts == {"correct": 1} and summary.pruned == 0


def test_a_rejected_crop_is_clean_and_a_confirmed_one_keeps_the_model_classes(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes"), (3, "rolling"), (3, "scratches")])])
    _review(engine, "S1-f0001", 0, "reject", [])
    _review(engine, "S1-f0001", 3, "confirm", ["scratches", "rolling"])

    write_reviewed_tileset(database_url, tmp_path / "set")

    tileset = read_tileset(tmp_path / "set")
    assert _labels_by_tile(tileset) == {
        ("S1-f0001", 0, 0): set(),  # the false positive, to unlearn
        ("S1-f0001", 0, 672): {"scratches", "rolling"},
    }
    assert tileset.labels[tileset.sources.index("S1-f0001")].tolist() == [0, 0, 0]


def test_the_newest_review_of_a_crop_wins(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """By reviewed_at; at the same reviewed_at, the later review (higher id)."""
    writer.write_results([_frame(1, [(1, "holes"), (4, "scratches")])])
    _review(engine, "S1-f0001", 1, "correct", ["rolling"], minutes=30)
    _review(engine, "S1-f0001", 1, "reject", [], minutes=10)  # older, though inserted later
    _review(engine, "S1-f0001", 4, "reject", [], minutes=5)
    _review(engine, "S1-f0001", 4, "confirm", ["scratches"], minutes=5)  # same time, higher id

    summary = write_reviewed_tileset(database_url, tmp_path / "set")

    assert _labels_by_tile(read_tileset(tmp_path / "set")) == {
        ("S1-f0001", 0, 224): {"rolling"},
        ("S1-f0001", 0, 896): {"scratches"},
    }
    assert summary.verdicts == {"correct": 1, "confirm": 1}


def test_only_reviewed_crops_are_exported_with_the_pixels_of_the_stored_crop(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes"), (5, "rolling")]), _frame(2, [(2, "scratches")])])
    _review(engine, "S1-f0002", 2, "confirm", ["scratches"])

    summary = write_reviewed_tileset(database_url, tmp_path / "set")

    tileset = read_tileset(tmp_path / "set")
    assert len(tileset) == 1 and summary.tiles == 1
    assert tileset.sources == ("S1-f0002",)
    assert tileset.origins.tolist() == [[0, 448]]
    exported = read_tile(tileset.path(0))
    stored = _stored_crop(engine, "S1-f0002", 2)
    assert exported.shape == (256, 256)
    assert np.array_equal(exported, stored)  # lossless: the pixels the reviewer saw


def test_a_review_whose_crop_was_pruned_is_skipped_and_counted(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes")]), _frame(2, [(1, "rolling")])])
    _review(engine, "S1-f0001", 0, "confirm", ["holes"])
    _review(engine, "S1-f0002", 1, "reject", [])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tile_images WHERE frame_id = 'S1-f0002'"))

    summary = write_reviewed_tileset(database_url, tmp_path / "set")

    assert read_tileset(tmp_path / "set").sources == ("S1-f0001",)
    assert summary.pruned == 1
    assert "reviewed crops skipped, their crop pruned: 1" in summary.table()


def test_no_reviewed_crop_is_a_dataset_error_and_writes_nothing(
    writer: StorageWriter, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes")])])  # a crop, but nobody reviewed it
    with pytest.raises(DatasetError, match="no reviewed crop in the database"):
        write_reviewed_tileset(database_url, tmp_path / "set")
    assert not (tmp_path / "set").exists()


def test_reviews_whose_crops_were_all_pruned_are_a_dataset_error(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes")])])
    _review(engine, "S1-f0001", 0, "confirm", ["holes"])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tile_images"))
    with pytest.raises(DatasetError, match="all 1 reviewed crops were pruned"):
        write_reviewed_tileset(database_url, tmp_path / "set")


def test_a_label_outside_the_catalogue_is_refused(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    writer.write_results([_frame(1, [(0, "holes"), (1, "holes")])])
    _review(engine, "S1-f0001", 0, "confirm", ["holes"])
    _review(engine, "S1-f0001", 1, "correct", ["inclusion"])
    with pytest.raises(DatasetError, match=r"tile 1 of frame 'S1-f0001': labels \['inclusion'\]"):
        write_reviewed_tileset(database_url, tmp_path / "set")
    assert not (tmp_path / "set").exists()  # nothing half-written is left


def test_the_analysts_read_only_role_is_enough(writer: StorageWriter, engine: sa.Engine) -> None:
    """The reads run in a READ ONLY transaction as steel_analyst: no other privilege is needed."""
    writer.write_results([_frame(1, [(0, "holes"), (1, "rolling")])])
    _review(engine, "S1-f0001", 0, "confirm", ["holes"])
    _review(engine, "S1-f0001", 1, "reject", [])
    tally = ReviewTally()
    with read_only(engine) as conn:
        catalogue = database_catalogue(conn)
        tiles = list(reviewed_tiles(conn, catalogue, tally))
    assert [(t.source, t.x, t.y, t.labels) for t in tiles] == [
        ("S1-f0001", 0, 0, frozenset({"holes"})),
        ("S1-f0001", 0, 224, frozenset()),
    ]
    assert tally.verdicts == {"confirm": 1, "reject": 1} and tally.pruned == 0


def test_frame_ids_with_path_characters_give_safe_distinct_tile_names(
    writer: StorageWriter, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """'/' and '.' would make Path(source).stem collide or escape: they are percent-encoded."""
    ids = ["L1/cam.top/0001", "L1/cam.top/0002", "L1%2Fcam"]
    writer.write_results([_frame(n, [(0, "holes")], frame_id=f) for n, f in enumerate(ids)])
    for frame_id in ids:
        _review(engine, frame_id, 0, "confirm", ["holes"])

    write_reviewed_tileset(database_url, tmp_path / "set")

    tileset = read_tileset(tmp_path / "set")
    assert sorted(unquote(s) for s in tileset.sources) == sorted(ids)
    assert len(set(tileset.tiles)) == 3
    assert all(p.parent == tmp_path / "set" / "tiles" for p in map(tileset.path, range(3)))
    assert safe_source("S1-f0001_a") == "S1-f0001_a"
    long_a, long_b = safe_source("x" * 150 + "a"), safe_source("x" * 150 + "b")
    assert long_a != long_b and len(long_a) <= 120


def test_the_command_line_writes_the_tile_set(
    writer: StorageWriter,
    engine: sa.Engine,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    writer.write_results([_frame(1, [(0, "holes"), (2, "scratches")])])
    _review(engine, "S1-f0001", 0, "reject", [])
    _review(engine, "S1-f0001", 2, "correct", ["rolling"])
    out = tmp_path / "reviewed"

    assert main(["dataset", "--format", "reviews", "--database-url", database_url, "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "2 tiles from 1 images" in printed
    assert "reject" in printed and "correct" in printed
    assert _labels_by_tile(read_tileset(out)) == {
        ("S1-f0001", 0, 0): set(),
        ("S1-f0001", 0, 448): {"rolling"},
    }
    # a second run into the same folder is refused, as for every format
    assert main(["dataset", "--format", "reviews", "--database-url", database_url, "--out", str(out)]) == 2


def test_the_command_line_needs_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["dataset", "--format", "reviews", "--out", str(tmp_path / "set")]) == 2
    assert "no database" in capsys.readouterr().err
