"""What the console's pages read: one function per page, each one or two SQL statements over the
analysts' views and the evidence tables, returning plain dicts.

Read-only pages run these inside `read_only(engine)`: a READ ONLY transaction as the analysts'
role `steel_analyst` (`SET LOCAL ROLE`), so a page can read what analysts read and write nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from worker.storage.tables import ANALYST_ROLE

GALLERY_PAGE = 48


@contextmanager
def read_only(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a READ ONLY transaction as `steel_analyst`; rolled back at the end."""
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(sa.text(f"SET LOCAL ROLE {ANALYST_ROLE}"))
        yield conn
        transaction.rollback()


def _rows(conn: sa.Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


# --- line view ------------------------------------------------------------------------------------


#: a strip with more detections than this is drawn per metre (`strip_marks`); `console serve --line-marks`
LINE_MARKS = 500
#: at most this many columns of aggregated marks across a strip's map: a longer strip gets wider bins
MAX_METRE_BINS = 300


def recent_strips(conn: sa.Connection, limit: int = 6) -> list[dict[str, Any]]:
    """The strips processed last (newest first): by the worker's clock (`frames.processed_at`),
    never the cameras' (`captured_at`), so a camera clock set to 2199 or reset to 2000 does not move
    its strip. Each row is the strip's `strip_summary` row with `last_processed_at`."""
    recent = _rows(
        conn,
        "SELECT strip_id, max(processed_at) AS last_processed_at FROM frames GROUP BY strip_id"
        " ORDER BY last_processed_at DESC, strip_id LIMIT :limit",
        limit=limit,
    )
    if not recent:
        return []
    summaries = {
        row["strip_id"]: row
        for row in _rows(
            conn,
            "SELECT strip_id, line, frames, first_position_m, last_position_m, inspected_m, detections,"
            " defects_per_100m, alerts, unacknowledged_alerts, last_captured_at FROM strip_summary"
            " WHERE strip_id = ANY(:s)",
            s=[r["strip_id"] for r in recent],
        )
    }
    return [{**summaries[r["strip_id"]], **r} for r in recent if r["strip_id"] in summaries]


def metre_bin(strip: dict[str, Any]) -> int:
    """The width in whole metres of one aggregated column of the strip's map: 1, or more for a strip
    longer than `MAX_METRE_BINS` metres."""
    start = float(strip["first_position_m"] or 0.0)
    end = float(strip["last_position_m"] or start)
    return max(1, math.ceil((end - start) / MAX_METRE_BINS))


def strip_marks(
    conn: sa.Connection, strips: Sequence[dict[str, Any]], limit: int = LINE_MARKS
) -> dict[str, dict[str, Any]]:
    """Per strip (rows of `recent_strips`): its width across (mm, from the frames' extent or the
    detections), its alerts' spans, and its detections: one by one (`detections`: position along
    and across, class, confidence, crop key) when it has at most `limit`, else aggregated per
    metre and class (`metres`: the bin's first metre and width, the class, how many, the highest
    confidence, the least and most across), at most `MAX_METRE_BINS` bins per class. So what the
    line view reads and draws is bounded whatever a strip holds."""
    strip_ids = [s["strip_id"] for s in strips]
    marks: dict[str, dict[str, Any]] = {
        s: {"detections": [], "metres": [], "alerts": [], "width_mm": 0.0, "bin_m": 0} for s in strip_ids
    }
    if not strip_ids:
        return marks
    counts = {
        row["strip_id"]: int(row["n"])
        for row in _rows(
            conn,
            "SELECT strip_id, count(*) AS n FROM detections_with_cause WHERE strip_id = ANY(:s)"
            " GROUP BY strip_id",
            s=strip_ids,
        )
    }
    one_by_one = [s for s in strip_ids if counts.get(s, 0) <= limit]
    if one_by_one:
        for row in _rows(
            conn,
            "SELECT strip_id, frame_id, tile_index, class_name, confidence, along_m, across_mm"
            " FROM detections_with_cause WHERE strip_id = ANY(:s) ORDER BY along_m",
            s=one_by_one,
        ):
            marks[row["strip_id"]]["detections"].append(row)
    for strip in strips:
        if strip["strip_id"] in one_by_one:
            continue
        bin_m = metre_bin(strip)
        marks[strip["strip_id"]]["bin_m"] = bin_m
        marks[strip["strip_id"]]["metres"] = _rows(
            conn,
            "SELECT floor(along_m / :bin)::bigint * :bin AS from_m, class_name, count(*) AS detections,"
            " max(confidence) AS max_confidence, min(across_mm) AS min_across_mm,"
            " max(across_mm) AS max_across_mm"
            " FROM detections_with_cause WHERE strip_id = :s GROUP BY 1, 2 ORDER BY 1, 2",
            s=strip["strip_id"],
            bin=bin_m,
        )
    for row in _rows(
        conn,
        "SELECT strip_id, max(coalesce(width_mm, 0)) AS width_mm FROM frames WHERE strip_id = ANY(:s)"
        " GROUP BY strip_id",
        s=strip_ids,
    ):
        marks[row["strip_id"]]["width_mm"] = float(row["width_mm"] or 0.0)
    for row in _rows(
        conn,
        "SELECT alert_id, strip_id, rule, class_name, severity, position_start_m, position_end_m,"
        " acknowledged_at FROM alerts_with_cause WHERE strip_id = ANY(:s) ORDER BY position_start_m",
        s=strip_ids,
    ):
        marks[row["strip_id"]]["alerts"].append(row)
    return marks


# --- alerts ----------------------------------------------------------------------------------------

_SEVERITY_ORDER = "CASE severity WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END"


def open_alerts(conn: sa.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Unacknowledged alerts, most severe first, then oldest first, with cause and prevention."""
    return _rows(
        conn,
        "SELECT alert_id, created_at, rule, rule_kind, severity, strip_id, surface, class_name, roll,"
        " pitch_m, position_start_m, position_end_m, detection_count, cause, prevention"
        f" FROM alerts_with_cause WHERE acknowledged_at IS NULL ORDER BY {_SEVERITY_ORDER}, created_at"
        " LIMIT :limit",
        limit=limit,
    )


def alert(conn: sa.Connection, alert_id: int) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM alerts_with_cause WHERE alert_id = :id", id=alert_id)
    return rows[0] if rows else None


def alert_crops(conn: sa.Connection, alert_id: int) -> list[dict[str, Any]]:
    """The crops of the detections an alert cites (its evidence), in order along the strip: one per
    tile, with the alert's class's confidence there; a detection without a stored crop is listed
    with `has_image` false."""
    return _rows(
        conn,
        """
        SELECT d.frame_id, d.tile_index, d.class_name, d.confidence, d.along_m, d.across_mm,
               EXISTS (SELECT FROM tile_images AS i
                       WHERE i.frame_id = d.frame_id AND i.tile_index = d.tile_index) AS has_image
        FROM alerts AS a JOIN detections_with_cause AS d ON d.detection_id = ANY(a.evidence)
        WHERE a.id = :id
        ORDER BY d.along_m, d.frame_id, d.tile_index
        """,
        id=alert_id,
    )


# --- gallery and crops -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryFilter:
    """The gallery's filters; each None means any."""

    class_name: str | None = None
    strip_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_confidence: float | None = None
    sampled: bool = False  # the clean sample instead of the crops with detections
    page: int = 1


def gallery(conn: sa.Connection, f: GalleryFilter) -> tuple[list[dict[str, Any]], int]:
    """One page of crops (newest first: by the worker's `processed_at`, not the camera's clock)
    matching `f` (`since` and `until` are capture times), and how many match in all. Each crop lists its
    classes (name and confidence), position, the newest review's verdict, and for its top class the
    cause and prevention."""
    where = ["i.sampled = :sampled"]
    params: dict[str, Any] = {"sampled": f.sampled}
    if f.strip_id:
        where.append("fr.strip_id = :strip")
        params["strip"] = f.strip_id
    if f.since:
        where.append("fr.captured_at >= :since")
        params["since"] = f.since
    if f.until:
        where.append("fr.captured_at < :until")
        params["until"] = f.until
    if f.class_name or f.min_confidence is not None:
        where.append(
            "EXISTS (SELECT FROM detections_with_cause AS x WHERE x.frame_id = i.frame_id"
            " AND x.tile_index = i.tile_index"
            + (" AND x.class_name = :class" if f.class_name else "")
            + (" AND x.confidence >= :min_conf" if f.min_confidence is not None else "")
            + ")"
        )
        if f.class_name:
            params["class"] = f.class_name
        if f.min_confidence is not None:
            params["min_conf"] = f.min_confidence
    clause = " AND ".join(where)
    total = conn.execute(
        sa.text(
            "SELECT count(*) FROM tile_images AS i JOIN frames AS fr ON fr.frame_id = i.frame_id"
            f" WHERE {clause}"
        ),
        params,
    ).scalar_one()
    rows = _rows(
        conn,
        f"""
        SELECT i.frame_id, i.tile_index, i.created_at, fr.strip_id, fr.camera, fr.captured_at,
               fr.processed_at, fr.model_version,
               coalesce(json_agg(json_build_object('class_name', d.class_name, 'confidence',
                        round(d.confidence::numeric, 3), 'cause', d.cause, 'prevention', d.prevention)
                        ORDER BY d.confidence DESC) FILTER (WHERE d.detection_id IS NOT NULL), '[]')
                   AS classes,
               min(d.along_m) AS along_m, min(d.across_mm) AS across_mm,
               (SELECT r.verdict FROM reviews AS r WHERE r.frame_id = i.frame_id
                AND r.tile_index = i.tile_index ORDER BY r.reviewed_at DESC, r.id DESC LIMIT 1) AS verdict
        FROM tile_images AS i
        JOIN frames AS fr ON fr.frame_id = i.frame_id
        LEFT JOIN detections_with_cause AS d ON d.frame_id = i.frame_id AND d.tile_index = i.tile_index
        WHERE {clause}
        GROUP BY i.frame_id, i.tile_index, i.created_at, fr.strip_id, fr.camera, fr.captured_at,
                 fr.processed_at, fr.model_version
        ORDER BY fr.processed_at DESC, i.frame_id, i.tile_index
        LIMIT :limit OFFSET :offset
        """,
        **params,
        limit=GALLERY_PAGE,
        offset=(f.page - 1) * GALLERY_PAGE,
    )
    return rows, int(total)


def crop(conn: sa.Connection, frame_id: str, tile_index: int) -> dict[str, Any] | None:
    """One crop with its frame, its detections (cause, prevention) and its reviews, newest first."""
    rows = _rows(
        conn,
        "SELECT i.frame_id, i.tile_index, i.x, i.y, i.size, i.width, i.height, i.sampled, i.created_at,"
        " fr.strip_id, fr.line, fr.camera, fr.surface, fr.captured_at, fr.model_version"
        " FROM tile_images AS i JOIN frames AS fr ON fr.frame_id = i.frame_id"
        " WHERE i.frame_id = :f AND i.tile_index = :t",
        f=frame_id,
        t=tile_index,
    )
    if not rows:
        return None
    found = rows[0]
    found["detections"] = _rows(
        conn,
        "SELECT class_name, confidence, threshold, along_m, across_mm, cause, prevention"
        " FROM detections_with_cause WHERE frame_id = :f AND tile_index = :t ORDER BY confidence DESC",
        f=frame_id,
        t=tile_index,
    )
    found["reviews"] = _rows(
        conn,
        "SELECT verdict, labels, reviewer, reviewed_at, model_version, note FROM reviews"
        " WHERE frame_id = :f AND tile_index = :t ORDER BY reviewed_at DESC, id DESC",
        f=frame_id,
        t=tile_index,
    )
    return found


def crop_image(conn: sa.Connection, frame_id: str, tile_index: int) -> tuple[str, bytes] | None:
    row = conn.execute(
        sa.text(
            "SELECT content_type, image FROM tile_images WHERE frame_id = :f AND tile_index = :t LIMIT 1"
        ),
        {"f": frame_id, "t": tile_index},
    ).first()
    return (row[0], bytes(row[1])) if row else None


def crop_model_version(conn: sa.Connection, frame_id: str) -> str | None:
    """The model version that judged the frame (and made its crops' detections)."""
    value = conn.execute(
        sa.text("SELECT model_version FROM frames WHERE frame_id = :f"), {"f": frame_id}
    ).scalar()
    return str(value) if value is not None else None


def class_names(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.text("SELECT name FROM defect_classes ORDER BY id")).scalars())


# --- quality ---------------------------------------------------------------------------------------


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits/n (95 % by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def review_precision(conn: sa.Connection) -> list[dict[str, Any]]:
    """Per class: crops the model found it on that people reviewed (the newest review per crop),
    how many of those the reviewer kept the class on, the precision and its 95 % Wilson interval."""
    rows = _rows(
        conn,
        """
        WITH newest AS (
            SELECT DISTINCT ON (frame_id, tile_index) frame_id, tile_index, labels
            FROM reviews ORDER BY frame_id, tile_index, reviewed_at DESC, id DESC
        )
        SELECT c.name AS class_name, count(n.frame_id) AS reviewed,
               count(n.frame_id) FILTER (WHERE c.name = ANY(n.labels)) AS kept
        FROM defect_classes AS c
        LEFT JOIN detections_with_cause AS d ON d.class_id = c.id
        LEFT JOIN newest AS n ON n.frame_id = d.frame_id AND n.tile_index = d.tile_index
        GROUP BY c.id, c.name ORDER BY c.id
        """,
    )
    for row in rows:
        n, kept = int(row["reviewed"]), int(row["kept"])
        row["precision"] = kept / n if n else None
        row["low"], row["high"] = wilson_interval(kept, n)
    return rows


def hourly_shares(conn: sa.Connection, hours: int = 48) -> list[dict[str, Any]]:
    """Per hour with frames (the newest `hours` of them, by the hour the worker processed them: a
    camera's wrong clock moves no frame) and class: the share of inspected tiles the class was
    found on (detections over tiles), zeros included."""
    return _rows(
        conn,
        """
        WITH hours AS (
            SELECT date_trunc('hour', processed_at) AS hour, sum(tile_count) AS tiles
            FROM frames GROUP BY 1 HAVING sum(tile_count) > 0 ORDER BY 1 DESC LIMIT :h
        ), found AS (
            SELECT date_trunc('hour', f.processed_at) AS hour, d.class_id, count(*) AS detections
            FROM detections AS d JOIN frames AS f ON f.frame_id = d.frame_id GROUP BY 1, 2
        )
        SELECT h.hour, c.name AS class_name, coalesce(x.detections, 0) AS detections, h.tiles,
               coalesce(x.detections, 0)::float / h.tiles AS share
        FROM hours AS h CROSS JOIN defect_classes AS c
        LEFT JOIN found AS x ON x.hour = h.hour AND x.class_id = c.id
        ORDER BY h.hour, c.id
        """,
        h=hours,
    )


def trained_shares(conn: sa.Connection) -> dict[str, float]:
    """Share of validation tiles holding each class, for the newest registered model (from its
    metrics: tp + fn over tiles); empty when the model recorded none."""
    row = conn.execute(sa.text("SELECT metrics FROM models ORDER BY registered_at DESC LIMIT 1")).first()
    if row is None or not isinstance(row[0], dict):
        return {}
    metrics = row[0]
    tiles = metrics.get("tiles")
    classes = metrics.get("classes")
    if not isinstance(tiles, int) or tiles <= 0 or not isinstance(classes, dict):
        return {}
    shares = {}
    for name, m in classes.items():
        if isinstance(m, dict) and isinstance(m.get("tp"), int) and isinstance(m.get("fn"), int):
            shares[name] = (m["tp"] + m["fn"]) / tiles
    return shares
