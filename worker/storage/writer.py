"""Writes the worker's results to PostgreSQL: the frame ledger, its detections and their evidence
crops, idempotently.

`StorageWriter.write_results` runs ONE transaction per call: the pass of each new frame's strip
(frame-meta's `pass_id`, else inferred from the strip's stored frames with the strip's lock row
held: `worker.storage.passes`), a bulk insert of the ledger rows,
then a bulk insert of the new frames' detections, both `ON CONFLICT DO NOTHING`, then the new
frames' crops (`tile_images`: only a frame the ledger took in this call writes its crops, so each
is written once). A frame id
already in the ledger writes nothing and raises nothing; the outcome tells the two cases apart:

- a redelivery (the stored row has the same message sha256 — the same frame-meta and image bytes —
  whether the record was read again after a crash or a rebalance, or replayed from the dead-letter
  topic to other coordinates; rows older than revision 0003 have no sha256 and match by their
  Kafka coordinates): `redelivered` holds what is stored, so that the worker publishes exactly
  what the database holds;
- a collision (another message under an id already stored, or given twice in one call):
  `collisions` names it, and nothing of it is written; the worker dead-letters it.

The outcome gives every frame of the call that the ledger holds now (new, or redelivered) as it is
stored: each detection with its row id (`Detection.record_id`), which the detection message
carries and the alert rules cite as evidence.

Database errors propagate unchanged (SQLAlchemy `OperationalError`, `IntegrityError`, …): the
worker retries the batch, or bisects it to set aside a frame the database refuses, and never
commits offsets past it. Nothing is half-written: the transaction commits all rows or none.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError, ModelError, SchemaError
from worker.core.failures import sqlstate
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates, TileImage
from worker.core.thresholds import ClassThresholds
from worker.storage.faults import READ_ONLY_TRANSACTION
from worker.storage.passes import DEFAULT_PASS_RESTART_M, assign_passes
from worker.storage.tables import defect_classes, detections, frames, models, tile_images


@dataclass(frozen=True)
class WriteOutcome:
    """What one `write_results` call did.

    `new_frame_ids`: frames written by this call, in input order; `existing_frame_ids`: frames
    that were already in the ledger (nothing written for them). `stored`: frame id → the result
    as the database holds it, each detection with its `record_id`, for every new frame and every
    redelivered one (same coordinates, same content: what is stored, under the incoming
    metadata); `redelivered`: the ids of those redelivered frames; `collisions`: coordinates of
    each message refused because its frame id was taken → the coordinates of the stored frame
    that holds the id.
    """

    new_frame_ids: tuple[str, ...] = ()
    existing_frame_ids: tuple[str, ...] = ()
    stored: Mapping[str, FrameResult] = field(default_factory=dict)
    redelivered: frozenset[str] = frozenset()
    collisions: Mapping[KafkaCoordinates, KafkaCoordinates] = field(default_factory=dict)


class StorageWriter:
    """The worker's only writer to the defect database. Thread-compatible, not thread-safe."""

    def __init__(self, engine: sa.Engine, pass_restart_m: float = DEFAULT_PASS_RESTART_M) -> None:
        """`pass_restart_m` (PASS_RESTART_M): how far back positions must go for a new pass."""
        self._engine = engine
        self.pass_restart_m = pass_restart_m
        self._class_ids: dict[str, int] = {}
        self._class_names: dict[int, str] = {}

    # -- catalogue and model -------------------------------------------------------------------

    def ensure_catalogue(self, catalogue: Catalogue) -> None:
        """Insert the catalogue's classes, or update their text fields (cause, prevention, …) and
        display names.

        Class ids are permanent: CatalogueError if an id is stored under another name, or a name
        under another id (a plant's own classes need ids of their own).
        """
        with self._engine.begin() as conn:
            stored = {
                row.id: row.name
                for row in conn.execute(sa.select(defect_classes.c.id, defect_classes.c.name))
            }
            stored_ids = {name: class_id for class_id, name in stored.items()}
            for c in catalogue.classes:
                if c.id in stored and stored[c.id] != c.name:
                    raise CatalogueError(
                        f"catalogue {catalogue.name!r}: class id {c.id} is {c.name!r}, but the database"
                        f" has {stored[c.id]!r} under id {c.id}; class ids are permanent, give new"
                        " classes new ids"
                    )
                if c.name in stored_ids and stored_ids[c.name] != c.id:
                    raise CatalogueError(
                        f"catalogue {catalogue.name!r}: class {c.name!r} has id {c.id}, but the database"
                        f" has it under id {stored_ids[c.name]}"
                    )
            statement = insert(defect_classes)
            text_fields = ("features", "type", "cause", "automatic_inspection", "prevention", "display_name")
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[defect_classes.c.id],
                    set_={name: statement.excluded[name] for name in text_fields},
                ),
                [asdict(c) for c in catalogue.classes],
            )
        self._class_ids.clear()
        self._class_names.clear()

    def register_model(  # noqa: PLR0917  (the signature other modules were promised)
        self,
        version: str,
        backbone: str,
        input_size: int,
        class_names: Sequence[str],
        thresholds: ClassThresholds,
        metrics: Mapping[str, Any],
    ) -> bool:
        """Record a model version; True if it was new. Idempotent.

        Re-registering a version updates its thresholds and metrics (re-tuned thresholds keep the
        weights, hence the version). ModelError if the stored row has another backbone, input
        size or class list (the same weights cannot change contract); CatalogueError if a class
        is not in `defect_classes` (call `ensure_catalogue` first), or if `thresholds` are not
        those of `class_names`.
        """
        if thresholds.names != tuple(class_names):
            raise ModelError(
                f"model {version}: thresholds of {list(thresholds.names)} for the classes {list(class_names)}"
            )
        row = {
            "version": version,
            "backbone": backbone,
            "input_size": int(input_size),
            "class_names": list(class_names),
            "thresholds": thresholds.by_name(),
            "metrics": dict(metrics),
        }
        with self._engine.begin() as conn:
            known = set(conn.execute(sa.select(defect_classes.c.name)).scalars())
            missing = [name for name in class_names if name not in known]
            if missing:
                raise CatalogueError(
                    f"model {version}: classes {missing} are not in defect_classes (which has"
                    f" {sorted(known)}); store the model's catalogue with ensure_catalogue first"
                )
            created = conn.execute(
                insert(models)
                .on_conflict_do_nothing(index_elements=[models.c.version])
                .returning(models.c.version),
                row,
            ).scalar()
            if created is not None:
                return True
            stored = conn.execute(
                sa.select(models).where(models.c.version == version).with_for_update()
            ).one()
            for key in ("backbone", "input_size", "class_names"):
                if getattr(stored, key) != row[key]:
                    raise ModelError(
                        f"model {version}: already registered with {key}={getattr(stored, key)!r},"
                        f" received {row[key]!r}; a version is the hash of the weights and cannot"
                        " change its contract"
                    )
            if stored.thresholds != row["thresholds"] or stored.metrics != row["metrics"]:
                conn.execute(
                    sa.update(models)
                    .where(models.c.version == version)
                    .values(thresholds=row["thresholds"], metrics=row["metrics"])
                )
            return False

    # -- results -------------------------------------------------------------------------------

    def write_results(self, results: Sequence[FrameResult]) -> WriteOutcome:
        """Write the ledger rows and detections of `results` in one transaction; see the module doc.

        A frame id given twice in one call is written once: the first occurrence counts; another
        message is a collision, the same message again (a replay beside its original) gets what
        the first stored.
        """
        unique: dict[str, FrameResult] = {}
        collisions: dict[KafkaCoordinates, KafkaCoordinates] = {}
        for result in results:
            first = unique.setdefault(result.meta.frame_id, result)
            if first is not result and not _same_message(first, result):
                collisions[result.source] = first.source
        if not unique:
            return WriteOutcome()
        with self._fresh_connections_after_read_only(), self._engine.begin() as conn:
            new_ids, existing_ids, as_stored = self._insert(conn, unique)
            redelivered: set[str] = set()
            if existing_ids:
                stored_frames = self._stored_results(conn, [unique[f] for f in existing_ids])
                for frame_id in existing_ids:
                    held_at, same_record = stored_frames[frame_id]
                    if same_record is None:
                        collisions[unique[frame_id].source] = held_at
                    else:
                        as_stored[frame_id] = same_record
                        redelivered.add(frame_id)
        return WriteOutcome(
            new_frame_ids=new_ids,
            existing_frame_ids=existing_ids,
            stored=as_stored,
            redelivered=frozenset(redelivered),
            collisions=collisions,
        )

    def _insert(
        self, conn: sa.Connection, unique: Mapping[str, FrameResult]
    ) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, FrameResult]]:
        """Insert the ledger rows, the new frames' detections and crops: (new ids, ids already in
        the ledger, frame id → the new frame as stored, with its detections' row ids)."""
        frame_rows = [_frame_row(r) for r in unique.values()]
        passes = assign_passes(conn, list(unique.values()), self.pass_restart_m)
        for frame_row in frame_rows:
            frame_row["pass_id"], frame_row["pass_inferred"] = passes[frame_row["frame_id"]]
        class_ids = self._class_ids_for(conn, {d.class_name for r in unique.values() for d in r.detections})
        inserted = set(
            conn.execute(
                insert(frames)
                .on_conflict_do_nothing(index_elements=[frames.c.frame_id])
                .returning(frames.c.frame_id),
                frame_rows,
            ).scalars()
        )
        new_ids = tuple(f for f in unique if f in inserted)
        existing_ids = tuple(f for f in unique if f not in inserted)
        ids: dict[str, dict[tuple[int, str], int]] = {f: {} for f in new_ids}
        detection_rows = [_detection_row(d, class_ids) for f in new_ids for d in unique[f].detections]
        columns = (detections.c.id, detections.c.frame_id, detections.c.tile_index, detections.c.class_id)
        if detection_rows:
            stored = conn.execute(
                insert(detections)
                .on_conflict_do_nothing(
                    index_elements=[detections.c.frame_id, detections.c.tile_index, detections.c.class_id]
                )
                .returning(*columns),
                detection_rows,
            )
            for row in stored:
                ids[row.frame_id][(row.tile_index, self._class_names[row.class_id])] = row.id
        image_rows = [_image_row(image) for f in new_ids for image in unique[f].evidence]
        if image_rows:
            conn.execute(insert(tile_images), image_rows)
        return new_ids, existing_ids, {f: _with_record_ids(unique[f], ids[f]) for f in new_ids}

    def check_writable(self, model_version: str) -> None:
        """Write a synthetic frame — one detection, one crop, made by this code under `model_version`
        (a registered model) — exactly as `write_results` writes frames, then roll it back.

        Returns when the database takes a known-good frame; raises what the write raised otherwise
        (a read-only server, a schema migrated under the worker, a revoked privilege, a fault of
        this code that every frame meets). Leaves no row behind (only sequence values are used).
        The worker calls it before blaming a frame for a write that failed (`LedgerSink`).
        """
        canary = _canary(model_version, self._any_class_name())
        with self._fresh_connections_after_read_only(), self._engine.connect() as conn:
            transaction = conn.begin()
            try:
                self._insert(conn, {canary.meta.frame_id: canary})
            finally:
                transaction.rollback()

    @contextmanager
    def _fresh_connections_after_read_only(self) -> Iterator[None]:
        """A read-only server (a standby after a failover, a freeze) drops the whole pool, so that
        the next write connects again — to the new primary once the failover moved its address.
        (`worker.storage.faults` also marks the connection lost; this makes sure no connection
        made before the server changed, checked in meanwhile, is used again.)"""
        try:
            yield
        except sa.exc.DBAPIError as error:
            if sqlstate(error) == READ_ONLY_TRANSACTION:
                self._engine.dispose()
            raise

    def _any_class_name(self) -> str | None:
        if not self._class_ids:
            with self._engine.connect() as conn:
                self._reload_classes(conn)
        return min(self._class_ids, key=self._class_ids.__getitem__) if self._class_ids else None

    def _stored_results(
        self, conn: sa.Connection, incoming: Sequence[FrameResult]
    ) -> dict[str, tuple[KafkaCoordinates, FrameResult | None]]:
        """For each incoming frame whose id is stored: where the stored frame came from, and, when
        the incoming message is that same message (same sha256; same coordinates where no sha256
        was recorded), the stored result under the incoming metadata; None for a collision."""
        by_id = {r.meta.frame_id: r for r in incoming}
        rows = conn.execute(sa.select(frames).where(frames.c.frame_id.in_(list(by_id)))).all()
        found: dict[str, tuple[KafkaCoordinates, FrameResult | None]] = {}
        same_record: dict[str, sa.Row[Any]] = {}
        for row in rows:
            held_at = KafkaCoordinates(row.kafka_topic, row.kafka_partition, row.kafka_offset)
            result = by_id[row.frame_id]
            if row.message_sha256 is not None and result.message_sha256 is not None:
                same = row.message_sha256 == result.message_sha256  # the same message, wherever read
            else:
                same = held_at == result.source  # rows older than revision 0003: by coordinates
            found[row.frame_id] = (held_at, None)
            if same:
                same_record[row.frame_id] = row
        if same_record:
            detections_of: dict[str, list[Detection]] = {f: [] for f in same_record}
            stored = conn.execute(
                sa.select(detections)
                .where(detections.c.frame_id.in_(list(same_record)))
                .order_by(detections.c.frame_id, detections.c.tile_index, detections.c.class_id)
            ).all()
            if {d.class_id for d in stored} - self._class_names.keys():  # a class added since the cache
                self._reload_classes(conn)
            for d in stored:
                detections_of[d.frame_id].append(_detection(d, self._class_names))
            for frame_id, row in same_record.items():
                result = by_id[frame_id]
                found[frame_id] = (
                    found[frame_id][0],
                    FrameResult(
                        meta=result.meta,
                        source=result.source,
                        model_version=row.model_version,
                        tile_count=row.tile_count,
                        detections=tuple(detections_of[frame_id]),
                        processed_at=row.processed_at,
                        message_sha256=row.message_sha256,
                        quality_flags=tuple(row.quality_flags),
                    ),
                )
        return found

    def _reload_classes(self, conn: sa.Connection) -> None:
        rows = conn.execute(sa.select(defect_classes.c.id, defect_classes.c.name)).all()
        self._class_ids = {row.name: row.id for row in rows}
        self._class_names = {row.id: row.name for row in rows}

    def _class_ids_for(self, conn: sa.Connection, names: set[str]) -> Mapping[str, int]:
        """Class name → id, from a cache refreshed when a name is missing; CatalogueError if unknown."""
        if not self._class_names or not names <= self._class_ids.keys():
            self._reload_classes(conn)
        unknown = sorted(names - self._class_ids.keys())
        if unknown:
            raise CatalogueError(
                f"detections name classes {unknown} that are not in defect_classes (which has"
                f" {sorted(self._class_ids)}); store the model's catalogue with ensure_catalogue"
            )
        return self._class_ids


def _same_message(first: FrameResult, other: FrameResult) -> bool:
    """The same message read twice: the same sha256, or the same coordinates where one has none."""
    if first.message_sha256 is not None and other.message_sha256 is not None:
        return first.message_sha256 == other.message_sha256
    return first.source == other.source


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise SchemaError(f"{what}: expected a timezone-aware datetime, received naive {value.isoformat()}")
    return value


def _frame_row(result: FrameResult) -> dict[str, Any]:
    meta = result.meta
    frame = f"frame {meta.frame_id!r}"
    keys = [(d.tile_index, d.class_name) for d in result.detections]
    if len(set(keys)) != len(keys):
        raise SchemaError(f"{frame}: expected at most one detection per tile and class, received {keys}")
    return {
        "frame_id": meta.frame_id,
        "strip_id": meta.strip_id,
        "line": meta.line,
        "camera": meta.camera,
        "surface": meta.surface,
        "captured_at": _aware(meta.captured_at, f"{frame} captured_at"),
        "position_m": float(meta.position_m),
        "length_m": meta.height * meta.mm_per_px_along / 1000.0 if meta.height else None,
        "width_mm": meta.width * meta.mm_per_px_across if meta.width else None,
        "model_version": result.model_version,
        "kafka_topic": result.source.topic,
        "kafka_partition": int(result.source.partition),
        "kafka_offset": int(result.source.offset),
        "tile_count": int(result.tile_count),
        "detection_count": len(result.detections),
        "processed_at": _aware(result.processed_at, f"{frame} processed_at"),
        "message_sha256": result.message_sha256,
        "quality_flags": list(result.quality_flags),
    }


def _detection(row: sa.Row[Any], class_names: Mapping[int, str]) -> Detection:
    """A stored detection row as the Detection the worker made (positions as stored)."""
    return Detection(
        frame_id=row.frame_id,
        tile_index=row.tile_index,
        class_name=class_names[row.class_id],
        confidence=float(row.confidence),
        threshold=float(row.threshold),
        along_m=row.along_m,
        across_mm=row.across_mm,
        along_start_m=row.along_start_m,
        along_end_m=row.along_end_m,
        x=row.x,
        y=row.y,
        size=row.size,
        record_id=row.id,
    )


def _with_record_ids(result: FrameResult, ids: Mapping[tuple[int, str], int]) -> FrameResult:
    """`result` with each detection's row id, from (tile index, class name) → id."""
    return replace(
        result,
        detections=tuple(
            replace(d, record_id=ids.get((d.tile_index, d.class_name))) for d in result.detections
        ),
    )


def _image_row(image: TileImage) -> dict[str, Any]:
    return {
        "frame_id": image.frame_id,
        "tile_index": int(image.tile_index),
        "x": int(image.x),
        "y": int(image.y),
        "size": int(image.size),
        "width": int(image.width),
        "height": int(image.height),
        "sampled": bool(image.sampled),
        "content_type": image.content_type,
        "image": image.data,
    }


def _detection_row(detection: Detection, class_ids: Mapping[str, int]) -> dict[str, Any]:
    return {
        "frame_id": detection.frame_id,
        "tile_index": int(detection.tile_index),
        "class_id": class_ids[detection.class_name],
        "confidence": float(detection.confidence),
        "threshold": float(detection.threshold),
        "along_m": float(detection.along_m),
        "across_mm": float(detection.across_mm),
        "along_start_m": float(detection.along_start_m),
        "along_end_m": float(detection.along_end_m),
        "x": int(detection.x),
        "y": int(detection.y),
        "size": int(detection.size),
    }


#: The frame id prefix of `check_writable`'s synthetic frame (never committed).
CANARY_FRAME_PREFIX = "steel-worker-canary-"


def _canary(model_version: str, class_name: str | None) -> FrameResult:
    """A synthetic frame of one 256-px tile with one detection of `class_name` and its crop."""
    frame_id = f"{CANARY_FRAME_PREFIX}{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    meta = FrameMeta(
        frame_id=frame_id,
        line="canary",
        camera="canary",
        surface="top",
        strip_id=frame_id,
        captured_at=now,
        position_m=0.0,
        mm_per_px_along=1.0,
        mm_per_px_across=1.0,
        edge_offset_mm=0.0,
        width=256,
        height=256,
    )
    found = (
        ()
        if class_name is None
        else (
            Detection(
                frame_id=frame_id,
                tile_index=0,
                class_name=class_name,
                confidence=0.5,
                threshold=0.5,
                along_m=0.128,
                across_mm=128.0,
                along_start_m=0.0,
                along_end_m=0.256,
                x=0,
                y=0,
                size=256,
            ),
        )
    )
    crop = TileImage(frame_id, 0, 0, 0, 256, 1, 1, "image/jpeg", b"\xff\xd8\xff\xd9")
    return FrameResult(
        meta=meta,
        source=KafkaCoordinates("steel-worker-canary", 0, 0),
        model_version=model_version,
        tile_count=1,
        detections=found,
        processed_at=now,
        message_sha256="0" * 64,
        evidence=(crop,),
    )


def stored_message_hashes(engine: sa.Engine, frame_ids: Collection[str]) -> dict[str, str | None]:
    """For each of `frame_ids` that the ledger holds: the message sha256 stored with it (None for
    rows older than revision 0003). Read in chunks of 1 000 ids, one statement each."""
    ids = sorted(frame_ids)
    found: dict[str, str | None] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), 1000):
            rows = conn.execute(
                sa.select(frames.c.frame_id, frames.c.message_sha256).where(
                    frames.c.frame_id.in_(ids[start : start + 1000])
                )
            )
            found.update({row.frame_id: row.message_sha256 for row in rows})
    return found
