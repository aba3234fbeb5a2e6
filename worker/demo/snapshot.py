"""What the database holds for the demo's strips, now: frames, tiles, detections per class, alerts.

Read through the reports' queries (`worker.reports.queries`: the frames ledger,
`detections_with_cause`, `alerts_with_cause`), so the demo counts exactly what the analysts' views
show. Only the given strips are counted; every catalogue class is listed, also with no detection.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa


@dataclass(frozen=True)
class ClassCount:
    """Detections of one class on the demo's strips, with the catalogue's cause and prevention."""

    name: str
    detections: int
    cause: str
    prevention: str


@dataclass(frozen=True)
class AlertLine:
    """One alert raised on the demo's strips (from the `alerts_with_cause` view)."""

    alert_id: int
    rule: str
    kind: str
    severity: str
    class_name: str
    strip_id: str
    roll: str | None
    pitch_m: float | None
    position_start_m: float
    position_end_m: float
    detection_count: int
    cause: str
    prevention: str


@dataclass(frozen=True)
class StreamSnapshot:
    """Frames, tiles, detections per class and alerts in the database for some strips, now."""

    frames: int
    tiles: int
    classes: tuple[ClassCount, ...]
    alerts: tuple[AlertLine, ...]
    crops: int = 0  # evidence crops stored (tile_images)
    crop_bytes: int = 0  # their images' bytes

    @property
    def detections(self) -> int:
        return sum(c.detections for c in self.classes)


def read_snapshot(engine: sa.Engine, strip_ids: Sequence[str]) -> StreamSnapshot:
    """What the ledger, detections and alerts tables hold for `strip_ids` (every catalogue class
    listed, also with no detection; alerts in the order raised)."""
    from worker.reports.queries import (  # noqa: PLC0415
        strips_alerts,
        strips_class_counts,
        strips_evidence,
        strips_totals,
    )

    strips = list(strip_ids)
    with engine.connect() as conn:
        frames, tiles = strips_totals(conn, strips)
        classes = strips_class_counts(conn, strips)
        alerts = strips_alerts(conn, strips)
        crops, crop_bytes = strips_evidence(conn, strips)
    counts = tuple(
        ClassCount(r["class_name"], int(r["detections"]), r["cause"], r["prevention"]) for r in classes
    )
    alert_lines = tuple(
        AlertLine(
            alert_id=int(r["alert_id"]),
            rule=r["rule"],
            kind=r["rule_kind"] or "",
            severity=r["severity"],
            class_name=r["class_name"],
            strip_id=r["strip_id"],
            roll=r["roll"],
            pitch_m=None if r["pitch_m"] is None else float(r["pitch_m"]),
            position_start_m=float(r["position_start_m"]),
            position_end_m=float(r["position_end_m"]),
            detection_count=int(r["detection_count"]),
            cause=r["cause"],
            prevention=r["prevention"],
        )
        for r in alerts
    )
    return StreamSnapshot(frames, tiles, counts, alert_lines, crops, crop_bytes)
