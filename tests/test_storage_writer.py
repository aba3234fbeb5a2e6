"""StorageWriter: one idempotent transaction per batch, bulk statements, ids for the alert rules."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from worker.core.catalogue import Catalogue, DefectClass, load_catalogue
from worker.core.errors import CatalogueError, ModelError, SchemaError
from worker.core.evidence import EvidencePolicy, decode
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates, TileRef
from worker.core.thresholds import ClassThresholds
from worker.storage.engine import create_engine
from worker.storage.writer import StorageWriter, WriteOutcome

MODEL = "a" * 64
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def _result(
    n: int,
    found: Sequence[tuple[int, str, float]] = (),
    *,
    model: str = MODEL,
    strip: str = "S1",
    offset: int | None = None,
) -> FrameResult:
    """Frame `n` of a strip: 1600 rows × 256 columns at 0.5 mm/px, 7 tiles; `found` = (tile, class, p)."""
    frame_id = f"{strip}-f{n:04d}"
    meta = FrameMeta(
        frame_id=frame_id,
        line="L1",
        camera="cam-top",
        surface="top",
        strip_id=strip,
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
            confidence=p,
            threshold=0.5,
            along_m=meta.along_m(tile * 256 + 128),
            across_mm=meta.across_mm(128),
            along_start_m=meta.along_m(tile * 256),
            along_end_m=meta.along_m(tile * 256 + 256),
            x=0,
            y=tile * 256,
            size=256,
        )
        for tile, name, p in found
    )
    return FrameResult(
        meta=meta,
        source=KafkaCoordinates("mill.frames", n % 3, n if offset is None else offset),
        model_version=model,
        tile_count=7,
        detections=detections,
        processed_at=T0 + timedelta(seconds=n, milliseconds=300),
    )


def _batch(first: int, count: int) -> list[FrameResult]:
    """Frames first..first+count-1; every other frame clean, the rest with one or two detections."""
    found = {
        0: [],
        1: [(2, "holes", 0.91)],
        2: [],
        3: [(0, "scratches", 0.77), (5, "rolling", 0.66)],
    }
    return [_result(n, found[n % 4]) for n in range(first, first + count)]


@pytest.fixture
def writer(engine: sa.Engine) -> StorageWriter:
    writer = StorageWriter(engine)
    writer.ensure_catalogue(load_catalogue())
    writer.register_model(MODEL, "resnet50", 256, ["holes", "scratches", "rolling"], _thresholds(0.5), {})
    return writer


def _thresholds(
    *values: float, names: tuple[str, ...] = ("holes", "scratches", "rolling")
) -> ClassThresholds:
    return ClassThresholds.from_values(names, list(values) * (len(names) if len(values) == 1 else 1))


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _record_ids(outcome: WriteOutcome) -> set[int | None]:
    return {d.record_id for r in outcome.stored.values() for d in r.detections}


def _detection_keys(engine: sa.Engine) -> dict[tuple[str, int, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.id, d.frame_id, d.tile_index, c.name FROM detections d"
                " JOIN defect_classes c ON c.id = d.class_id"
            )
        )
        return {(r.frame_id, r.tile_index, r.name): r.id for r in rows}


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def test_n_results_give_n_ledger_rows_and_the_expected_detections(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    results = _batch(0, 8)
    outcome = writer.write_results(results)

    assert outcome.new_frame_ids == tuple(r.meta.frame_id for r in results)
    assert outcome.existing_frame_ids == ()
    assert _count(engine, "frames") == 8
    expected = {(d.frame_id, d.tile_index, d.class_name) for r in results for d in r.detections}
    stored = _detection_keys(engine)
    assert set(stored) == expected and len(expected) == 6
    assert list(outcome.stored) == [r.meta.frame_id for r in results]
    for r in results:
        as_stored = outcome.stored[r.meta.frame_id]
        # the result as computed, each detection with the id of its row
        assert as_stored == replace(
            r,
            detections=tuple(
                replace(d, record_id=stored[(d.frame_id, d.tile_index, d.class_name)]) for d in r.detections
            ),
        )


def test_ledger_and_detection_rows_hold_the_frame_and_detection_fields(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    result = _result(3, [(5, "rolling", 0.66)], offset=1234)
    writer.write_results([result])
    with engine.connect() as conn:
        frame = conn.execute(sa.text("SELECT * FROM frames")).mappings().one()
        detection = conn.execute(sa.text("SELECT * FROM detections_with_cause")).mappings().one()
    assert dict(frame) == {
        "frame_id": "S1-f0003",
        "strip_id": "S1",
        "line": "L1",
        "camera": "cam-top",
        "surface": "top",
        "captured_at": T0 + timedelta(seconds=3),
        "position_m": pytest.approx(2.4),
        "length_m": pytest.approx(0.8),  # 1600 rows × 0.5 mm
        "width_mm": pytest.approx(128.0),  # 256 columns × 0.5 mm
        "model_version": MODEL,
        "kafka_topic": "mill.frames",
        "kafka_partition": 0,
        "kafka_offset": 1234,
        "tile_count": 7,
        "detection_count": 1,
        "processed_at": T0 + timedelta(seconds=3, milliseconds=300),
        "message_sha256": None,
        "quality_flags": [],  # revision 0010: a good frame
        "pass_id": "1",  # no pass_id in frame-meta: inferred, the strip's first
        "pass_inferred": True,
    }
    d = result.detections[0]
    assert detection["class_name"] == "rolling"
    assert detection["cause"] == "wear of the rollers"
    assert detection["prevention"] == "regular change of rolls according to wear behaviour"
    assert detection["confidence"] == pytest.approx(0.66)
    assert detection["along_m"] == pytest.approx(d.along_m)
    assert detection["along_start_m"] == pytest.approx(d.along_start_m)
    assert detection["along_end_m"] == pytest.approx(d.along_end_m)
    assert detection["across_mm"] == pytest.approx(d.across_mm)
    assert detection["strip_id"] == "S1"
    assert detection["model_version"] == MODEL


def test_writing_the_same_batch_twice_changes_nothing_and_returns_the_same_ids(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    results = _batch(0, 8)
    first = writer.write_results(results)
    before = _detection_keys(engine)
    second = writer.write_results(results)

    assert second.new_frame_ids == ()
    assert second.existing_frame_ids == first.new_frame_ids
    assert second.redelivered == frozenset(first.new_frame_ids)
    assert _record_ids(second) == _record_ids(first) == set(before.values())
    assert _count(engine, "frames") == 8
    assert _detection_keys(engine) == before


def test_a_mixed_batch_writes_only_the_new_frames_and_returns_ids_for_all(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    old = writer.write_results(_batch(0, 4))
    mixed = _batch(2, 4)  # frames 2, 3 (stored) and 4, 5 (new)
    outcome = writer.write_results(mixed)

    assert outcome.existing_frame_ids == ("S1-f0002", "S1-f0003")
    assert outcome.new_frame_ids == ("S1-f0004", "S1-f0005")
    assert outcome.stored["S1-f0003"].detections == old.stored["S1-f0003"].detections
    ((tile, class_name, record_id),) = [
        (d.tile_index, d.class_name, d.record_id) for d in outcome.stored["S1-f0005"].detections
    ]
    assert (tile, class_name) == (2, "holes") and record_id == _detection_keys(engine)[
        ("S1-f0005", 2, "holes")
    ]
    assert _count(engine, "frames") == 6
    assert _count(engine, "detections") == 4


def test_a_frame_id_given_twice_in_one_batch_is_written_once_and_the_second_is_a_collision(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    result = _result(1, [(2, "holes", 0.9)])
    again = replace(result, source=KafkaCoordinates("mill.frames", 1, 99))
    outcome = writer.write_results([result, again])
    assert outcome.new_frame_ids == ("S1-f0001",)
    assert outcome.collisions == {again.source: result.source}
    assert _count(engine, "frames") == 1
    assert _count(engine, "detections") == 1


def test_a_redelivered_frame_returns_what_is_stored_even_when_the_model_now_says_otherwise(
    writer: StorageWriter,
) -> None:
    """Same coordinates and content: the stored detections come back (the topic must repeat the
    database), not the ones the worker computed this time."""
    first = replace(_result(5, [(2, "holes", 0.91)]), message_sha256="ab" * 32)
    writer.write_results([first])
    recomputed = replace(first, detections=(), processed_at=T0 + timedelta(hours=1), model_version=MODEL)
    outcome = writer.write_results([recomputed])
    assert outcome.collisions == {}
    assert outcome.redelivered == {"S1-f0005"}
    stored = outcome.stored["S1-f0005"]
    assert [replace(d, record_id=None) for d in stored.detections] == list(first.detections)
    assert all(d.record_id is not None for d in stored.detections)
    assert stored.processed_at == first.processed_at and stored.meta == first.meta
    assert stored.source == first.source and stored.message_sha256 == first.message_sha256


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (
            lambda r: replace(r, source=KafkaCoordinates("mill.frames", 2, 777), message_sha256="cd" * 32),
            "other coordinates, other content",
        ),
        (lambda r: replace(r, message_sha256="cd" * 32), "same coordinates, other content"),
        (
            lambda r: replace(r, source=KafkaCoordinates("mill.frames", 2, 777), message_sha256=None),
            "other coordinates, content unknown",
        ),
    ],
)
def test_another_message_under_a_stored_frame_id_is_a_collision_and_writes_nothing(
    writer: StorageWriter, engine: sa.Engine, change, what: str
) -> None:
    first = replace(_result(5, [(2, "holes", 0.91)]), message_sha256="ab" * 32)
    writer.write_results([first])
    other = change(replace(first, detections=()))
    outcome = writer.write_results([other, _result(6)])
    assert outcome.collisions == {other.source: first.source}, what
    assert outcome.redelivered == frozenset() and list(outcome.stored) == ["S1-f0006"]
    assert outcome.new_frame_ids == ("S1-f0006",)
    assert _count(engine, "frames") == 2 and _count(engine, "detections") == 1


def test_the_same_message_at_other_coordinates_is_a_redelivery_not_a_collision(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """A frame replayed from the dead-letter topic (`steel-worker dlq replay`) arrives at new
    coordinates with the same bytes: it publishes what is stored and writes nothing; twice in one
    batch, the second copy gets what the first stored."""
    first = replace(_result(5, [(2, "holes", 0.91)]), message_sha256="ab" * 32)
    writer.write_results([first])
    replayed = replace(first, source=KafkaCoordinates("mill.frames", 2, 777), detections=())
    outcome = writer.write_results([replayed])
    assert outcome.collisions == {} and outcome.redelivered == {"S1-f0005"}
    assert outcome.stored["S1-f0005"].detections[0].class_name == "holes"
    new = replace(_result(6, [(1, "rolling", 0.8)]), message_sha256="cd" * 32)
    twice = writer.write_results([new, replace(new, source=KafkaCoordinates("mill.frames", 0, 99))])
    assert twice.collisions == {} and twice.new_frame_ids == ("S1-f0006",)
    assert _count(engine, "frames") == 2 and _count(engine, "detections") == 2


def test_a_row_written_before_hashes_were_kept_is_matched_by_its_coordinates(
    writer: StorageWriter,
) -> None:
    """Rows from before revision 0003 have no message_sha256: the coordinates decide alone."""
    old = _result(5, [(2, "holes", 0.91)])  # message_sha256=None, as stored by an older worker
    writer.write_results([old])
    outcome = writer.write_results([replace(old, message_sha256="ef" * 32)])
    assert "S1-f0005" in outcome.redelivered and outcome.collisions == {}


def test_an_empty_batch_writes_nothing(writer: StorageWriter, engine: sa.Engine) -> None:
    assert writer.write_results([]) == WriteOutcome()
    assert _count(engine, "frames") == 0


def test_numpy_numbers_from_the_model_are_stored(writer: StorageWriter, engine: sa.Engine) -> None:
    result = _result(1, [(np.int64(2), "holes", np.float32(0.875))])  # type: ignore[list-item]
    writer.write_results([result])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT confidence FROM detections")).scalar() == pytest.approx(0.875)


def test_a_batch_is_written_with_a_constant_number_of_statements(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """Bulk: 200 frames and 150 detections of a strip cost the same few round trips as 4 frames."""
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    writer.write_results(_batch(0, 4))  # loads the class ids once
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        writer.write_results(_batch(4, 4))
        small = len(statements)
        statements.clear()
        writer.write_results(_batch(100, 200))
        large = len(statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert _count(engine, "frames") == 208
    # the strip's lock row (made if missing, then locked) and its frames around the batch's capture
    # times (the pass inference), ledger rows, then detections
    assert large == small == 5


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------


def test_a_failing_transaction_leaves_nothing_half_written(writer: StorageWriter, engine: sa.Engine) -> None:
    """The ledger insert succeeds, the detections insert fails (confidence 1.5): no row remains."""
    bad = _result(9, [(1, "holes", 1.5)])
    with pytest.raises(sa.exc.IntegrityError, match="ck_detections_confidence_range"):
        writer.write_results([*_batch(0, 4), bad])
    assert _count(engine, "frames") == 0
    assert _count(engine, "detections") == 0
    # and the same frames can be written afterwards
    assert len(writer.write_results(_batch(0, 4)).new_frame_ids) == 4


def test_an_unregistered_model_version_fails_the_whole_batch(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="fk_frames_model_version_models"):
        writer.write_results([_result(0), _result(1, model="b" * 64)])
    assert _count(engine, "frames") == 0


def test_a_class_missing_from_the_catalogue_is_refused_before_writing(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    with pytest.raises(CatalogueError, match=r"\['crazing'\]"):
        writer.write_results([_result(0), _result(1, [(0, "crazing", 0.9)])])
    assert _count(engine, "frames") == 0


def test_naive_timestamps_are_refused(writer: StorageWriter) -> None:
    result = _result(0)
    naive = replace(result, meta=replace(result.meta, captured_at=datetime(2026, 3, 1, 6, 0)))
    with pytest.raises(SchemaError, match="captured_at: expected a timezone-aware datetime"):
        writer.write_results([naive])


def test_two_detections_of_one_class_on_one_tile_are_refused(writer: StorageWriter) -> None:
    with pytest.raises(SchemaError, match="at most one detection per tile and class"):
        writer.write_results([_result(0, [(1, "holes", 0.9), (1, "holes", 0.8)])])


def test_database_errors_propagate_to_the_caller() -> None:
    """The worker loop retries on OperationalError; the writer must not swallow it."""
    unreachable = create_engine(
        "postgresql://postgres@127.0.0.1:1/steel", connect_args={"connect_timeout": 1}
    )
    with pytest.raises(sa.exc.OperationalError):
        StorageWriter(unreachable).write_results([_result(0)])


def test_concurrent_writers_of_the_same_frames_write_each_frame_once(
    writer: StorageWriter, database_url: str, engine: sa.Engine
) -> None:
    """Two workers overlapping after a rebalance: each frame is new for exactly one of them."""
    results = _batch(0, 40)
    outcomes: list[WriteOutcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write() -> None:
        other = create_engine(database_url)
        try:
            start.wait()
            outcomes.append(StorageWriter(other).write_results(results))
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.dispose()

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    a, b = outcomes
    assert set(a.new_frame_ids).isdisjoint(b.new_frame_ids)
    assert set(a.new_frame_ids) | set(b.new_frame_ids) == {r.meta.frame_id for r in results}
    assert _record_ids(a) == _record_ids(b)  # the new frames of one are the redeliveries of the other
    assert _count(engine, "frames") == 40


# ---------------------------------------------------------------------------------------------
# catalogue and model
# ---------------------------------------------------------------------------------------------


def test_ensure_catalogue_updates_texts_and_adds_classes(writer: StorageWriter, engine: sa.Engine) -> None:
    paper = load_catalogue()
    holes = replace(paper.classes[0], cause="gas bubbles")
    crazing = DefectClass(id=4, name="crazing", cause="thermal stress")
    writer.ensure_catalogue(Catalogue(classes=(holes, *paper.classes[1:], crazing), name="plant"))
    writer.ensure_catalogue(Catalogue(classes=(holes, *paper.classes[1:], crazing), name="plant"))
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT name, cause FROM defect_classes")).all())
    assert rows["holes"] == "gas bubbles"
    assert rows["crazing"] == "thermal stress"
    assert len(rows) == 4
    writer.write_results([_result(0, [(0, "crazing", 0.9)])])  # the writer sees the new class


def test_ensure_catalogue_refuses_to_rename_a_class_id(writer: StorageWriter) -> None:
    with pytest.raises(CatalogueError, match=r"class id 1 is 'crazing'.*'holes'"):
        writer.ensure_catalogue(Catalogue(classes=(DefectClass(id=1, name="crazing"),)))


def test_ensure_catalogue_refuses_to_move_a_class_to_another_id(writer: StorageWriter) -> None:
    with pytest.raises(CatalogueError, match=r"class 'holes' has id 7.*under id 1"):
        writer.ensure_catalogue(Catalogue(classes=(DefectClass(id=7, name="holes"),)))


def test_register_model_is_idempotent_and_updates_thresholds(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    names = ["holes", "scratches", "rolling"]
    assert writer.register_model(MODEL, "resnet50", 256, names, _thresholds(0.5), {}) is False
    assert (
        writer.register_model(MODEL, "resnet50", 256, names, _thresholds(0.35, 0.5, 0.7), {"f1": 0.8})
        is False
    )
    assert writer.register_model("c" * 64, "resnet50", 96, names, _thresholds(0.5), {}) is True
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM models WHERE version = :v"), {"v": MODEL}).mappings().one()
    assert row["thresholds"] == {"holes": 0.35, "scratches": 0.5, "rolling": 0.7}  # model.json's form
    assert row["metrics"] == {"f1": 0.8}
    assert row["class_names"] == names
    assert _count(engine, "models") == 2


def test_register_model_refuses_a_changed_contract_for_the_same_version(writer: StorageWriter) -> None:
    with pytest.raises(ModelError, match="input_size=256, received 96"):
        writer.register_model(MODEL, "resnet50", 96, ["holes", "scratches", "rolling"], _thresholds(0.5), {})


def test_register_model_refuses_classes_missing_from_the_catalogue(writer: StorageWriter) -> None:
    with pytest.raises(CatalogueError, match=r"classes \['crazing'\] are not in defect_classes"):
        writer.register_model(
            "d" * 64, "resnet50", 256, ["holes", "crazing"], _thresholds(0.5, names=("holes", "crazing")), {}
        )


def test_register_model_refuses_thresholds_of_other_classes(writer: StorageWriter) -> None:
    with pytest.raises(ModelError, match=r"thresholds of \['holes', 'rolling'\] for the classes"):
        writer.register_model(
            "e" * 64,
            "resnet50",
            256,
            ["holes", "scratches"],
            _thresholds(0.5, names=("holes", "rolling")),
            {},
        )


# ---------------------------------------------------------------------------------------------
# evidence crops (tile_images)
# ---------------------------------------------------------------------------------------------


def _with_crops(result: FrameResult, *, extra_clean: int | None = None) -> FrameResult:
    """`result` with a crop of each tile it found something on (and of `extra_clean`, sampled)."""
    policy = EvidencePolicy(clean_sample=0.0)
    tiles = {d.tile_index for d in result.detections}
    crops = [
        policy.encode(
            TileRef(result.meta.frame_id, t, 0, t * 256, 256), np.full((256, 256), t * 30, np.uint8)
        )
        for t in sorted(tiles)
    ]
    if extra_clean is not None:
        tile = TileRef(result.meta.frame_id, extra_clean, 0, extra_clean * 256, 256)
        crops.append(policy.encode(tile, np.zeros((256, 256), np.uint8), sampled=True))
    return replace(result, evidence=tuple(crops))


def _crop_rows(engine: sa.Engine) -> list[tuple[str, int, bool, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT frame_id, tile_index, sampled, octet_length(image) FROM tile_images ORDER BY 1, 2"
            )
        )
        return [tuple(r) for r in rows]


def test_crops_are_written_with_their_frame_once_and_never_again_for_a_redelivery(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    results = [_with_crops(r, extra_clean=6 if n == 0 else None) for n, r in enumerate(_batch(0, 4))]
    writer.write_results(results)
    rows = _crop_rows(engine)
    assert [(f, t, s) for f, t, s, _ in rows] == [
        ("S1-f0000", 6, True),  # a sampled clean tile
        ("S1-f0001", 2, False),
        ("S1-f0003", 0, False),
        ("S1-f0003", 5, False),
    ]
    assert all(size > 0 for *_, size in rows)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT image FROM tile_images WHERE frame_id = 'S1-f0003' AND tile_index = 5")
        )
        assert decode(bytes(stored.scalar_one())).mean() == pytest.approx(150, abs=2)
    again = writer.write_results([*results, _with_crops(_result(4, [(1, "holes", 0.8)]))])
    assert again.redelivered == {r.meta.frame_id for r in results}
    assert len(_crop_rows(engine)) == 5  # the new frame's crop only


def test_a_collision_writes_no_crop(writer: StorageWriter, engine: sa.Engine) -> None:
    first = _with_crops(_result(1, [(2, "holes", 0.9)]))
    writer.write_results([first])
    other = _with_crops(
        replace(_result(1, [(3, "rolling", 0.9)]), source=KafkaCoordinates("mill.frames", 2, 50))
    )
    outcome = writer.write_results([other])
    assert outcome.collisions == {other.source: first.source}
    assert [(f, t) for f, t, _, _ in _crop_rows(engine)] == [("S1-f0001", 2)]


def test_a_crop_the_database_refuses_takes_its_whole_batch_back(
    writer: StorageWriter, engine: sa.Engine
) -> None:
    """Crops, detections and ledger rows share one transaction: a refused crop leaves nothing, so
    the loop's bisection can set its frame aside and store the others."""
    good = _with_crops(_result(1, [(2, "holes", 0.9)]))
    bad = _with_crops(_result(3, [(0, "scratches", 0.8)]))
    bad = replace(bad, evidence=(replace(bad.evidence[0], data=b""),))  # violates image_not_empty
    with pytest.raises(sa.exc.IntegrityError, match="image_not_empty"):
        writer.write_results([good, bad])
    assert (_count(engine, "frames"), _count(engine, "detections"), _count(engine, "tile_images")) == (
        0,
        0,
        0,
    )
    writer.write_results([good])
    assert _count(engine, "tile_images") == 1
