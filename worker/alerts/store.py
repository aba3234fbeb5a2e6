"""Reading and acknowledging alerts in the `alerts` table (what `steel-worker alerts` runs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from worker.core.errors import ConfigError

_SELECT = """
SELECT a.id, a.created_at, a.rule, a.severity, coalesce(c.name, a.rule_kind) AS class_name,
       coalesce(c.cause, a.details ->> 'cause', '') AS cause,
       coalesce(c.prevention, a.details ->> 'prevention', '') AS prevention,
       a.strip_id, a.roll, a.position_start_m, a.position_end_m, a.detection_count, a.pitch_m,
       a.evidence, a.details, a.published_at, a.acknowledged_by, a.acknowledged_at, a.rule_kind,
       a.surface, a.line, a.camera, a.frame_ids, a.max_confidence, a.model_version, a.observed_at,
       coalesce(c.display_name, a.rule_kind) AS class_display_name, a.pass_id
FROM alerts AS a LEFT JOIN defect_classes AS c ON c.id = a.class_id
"""


@dataclass(frozen=True)
class AlertRecord:
    """One stored alert with its class's cause and prevention; `details` is what the rule measured;
    `class_display_name` is the class as people name it (`class_name` is the machine name); `pass_id`
    the pass of the strip it was seen on. A camera alert (kind `camera`) has no class: both names
    are `camera`, cause and prevention its own."""

    id: int
    created_at: datetime
    rule: str
    kind: str
    severity: str
    class_name: str
    cause: str
    prevention: str
    strip_id: str
    surface: str
    line: str
    camera: str
    frame_ids: tuple[str, ...]
    roll: str | None
    position_start_m: float
    position_end_m: float
    detection_count: int
    pitch_m: float | None
    evidence: tuple[int, ...]
    max_confidence: float
    model_version: str
    observed_at: datetime | None
    published_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    details: Mapping[str, Any] = field(default_factory=dict)
    class_display_name: str = ""
    pass_id: str = "1"  # the pass of the strip ('1': the first; a strip id rolled again is another)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        data = asdict(self)
        for key in ("created_at", "observed_at", "published_at", "acknowledged_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        data["evidence"] = list(self.evidence)
        data["frame_ids"] = list(self.frame_ids)
        data["details"] = dict(self.details)
        return data


def _record(row: sa.RowMapping) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        created_at=row["created_at"],
        rule=row["rule"],
        kind=row["rule_kind"],
        severity=row["severity"],
        class_name=row["class_name"],
        cause=row["cause"],
        prevention=row["prevention"],
        strip_id=row["strip_id"],
        surface=row["surface"],
        line=row["line"],
        camera=row["camera"],
        frame_ids=tuple(row["frame_ids"]),
        roll=row["roll"],
        position_start_m=row["position_start_m"],
        position_end_m=row["position_end_m"],
        detection_count=row["detection_count"],
        pitch_m=row["pitch_m"],
        evidence=tuple(row["evidence"]),
        max_confidence=float(row["max_confidence"]),
        model_version=row["model_version"],
        observed_at=row["observed_at"],
        published_at=row["published_at"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        details=dict(row["details"]),
        class_display_name=row["class_display_name"],
        pass_id=row["pass_id"],
    )


def list_alerts(
    engine: sa.Engine, *, strip_id: str | None = None, unacknowledged: bool = False, limit: int = 50
) -> list[AlertRecord]:
    """The newest `limit` alerts (newest first), of one strip and/or unacknowledged ones only."""
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, received {limit}")
    where, params = [], {"limit": limit}
    if strip_id is not None:
        where.append("a.strip_id = :strip")
        params["strip"] = strip_id  # type: ignore[assignment]
    if unacknowledged:
        where.append("a.acknowledged_at IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"{_SELECT} {clause} ORDER BY a.id DESC LIMIT :limit"), params)
        return [_record(r) for r in rows.mappings()]


def get_alert(engine: sa.Engine, alert_id: int) -> AlertRecord | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(f"{_SELECT} WHERE a.id = :id"), {"id": alert_id}).mappings().first()
    return _record(row) if row is not None else None


def acknowledge(engine: sa.Engine, alert_id: int, by: str) -> AlertRecord:
    """Record who acknowledged alert `alert_id` and when (now); the updated alert.

    ConfigError if `by` is blank, no such alert exists, or it was already acknowledged (the
    message says by whom and when: an acknowledgement is never overwritten).
    """
    name = by.strip()
    if not name:
        raise ConfigError("alerts ack: --by must name who acknowledges, received an empty name")
    with engine.begin() as conn:
        updated = conn.execute(
            sa.text(
                "UPDATE alerts SET acknowledged_by = :by, acknowledged_at = now()"
                " WHERE id = :id AND acknowledged_at IS NULL RETURNING id"
            ),
            {"id": alert_id, "by": name},
        ).first()
    record = get_alert(engine, alert_id)
    if record is None:
        raise ConfigError(
            f"alerts ack {alert_id}: no alert with id {alert_id}; `steel-worker alerts list` shows the ids"
        )
    if updated is None:
        assert record.acknowledged_at is not None
        raise ConfigError(
            f"alerts ack {alert_id}: already acknowledged by {record.acknowledged_by} at"
            f" {record.acknowledged_at.isoformat()}; an acknowledgement is kept as it is"
        )
    return record
