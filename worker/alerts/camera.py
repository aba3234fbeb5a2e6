"""Camera alerts: a run of frames from one camera that fail the image-quality gate raises one alert
of kind `camera`, stored in `alerts` once and published through the alerts outbox like the others.

`CameraHealth.observe(observations)` takes the frames of a delivered batch in delivery order — each
with the image-quality flags it carries (`frames.quality_flags`; empty for a good frame) or refused
by the gate — and, per camera (line, camera):

- a frame with a flag (or refused) lengthens the camera's run; a good frame ends it;
- when the run reaches `frames` frames and has raised nothing yet, one alert is inserted: rule
  `camera-health`, rule_kind `camera`, no class (class_id NULL), the camera's line and camera, the
  strip and surface of the frame that completed the run, the run's first `frames` frames, its
  flags counted in `details` (and the cause and prevention they point to), the model version of
  this worker and, as `observed_at`, the broker's timestamp of that frame (not the camera's clock,
  which may be the fault). A run that goes on raises nothing more; the next run may.

Guarantees (the alert engine's, for cameras):
- State lives in the database only (`camera_health`, one row per camera), changed in one
  transaction per call together with the alerts it inserts: a crash before the commit changes
  nothing; after it, nothing is done twice.
- A frame is counted once: the row keeps, per topic[partition], the next offset to count; a frame
  read again (redelivery after a crash, a rebalance) lies below it and is skipped. (If a topic is
  recreated, its offsets start again below the stored ones and its frames are not counted until
  they pass them; delete the camera's row then.)
- One row per alert: the dedup key `camera/LINE/CAMERA/<topic[p]@offset of the run's first frame>`
  (`INSERT … ON CONFLICT DO NOTHING`) is a function of the run, and the row remembers the alert.
- The cameras' rows are locked `FOR UPDATE` in sorted order: two workers counting frames of one
  camera (its strips on two partitions) take turns and never wait on each other in a cycle. Their
  frames count in the order the transactions commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert

from worker.alerts.outbox import publish_pending
from worker.core.clients import Producer
from worker.core.errors import ConfigError
from worker.core.quality import BIT_DEPTH, BRIGHT, CLIPPED, CLOCK_SKEW, DARK, FLAT
from worker.core.records import KafkaCoordinates
from worker.storage.tables import alerts, camera_health

log = structlog.get_logger("worker.alerts")

RULE = "camera-health"
KIND = "camera"
SEVERITIES = ("low", "medium", "high")

#: check -> (likely cause, what to do): the alert's cause and prevention name those of its flags.
CAUSES: dict[str, tuple[str, str]] = {
    DARK: ("too little light: a failed lamp, a covered lens, or exposure or gain set too low",
           "check the lamp and the lens; check the camera's exposure and gain"),
    BRIGHT: ("too much light: exposure or gain set too high, or stray light on the strip",
             "check the camera's exposure and gain, and shield the stray light"),
    FLAT: ("a frame without texture: a dead lamp, a covered or unplugged camera, a frozen sensor",
           "check the lamp, the lens and the camera's connection; restart the camera"),
    CLIPPED: ("pixels saturated at black or white: exposure or gain out of range",
              "set the exposure and gain so that the strip lies inside the sensor's range"),
    BIT_DEPTH: ("the frames' samples do not use the camera's calibrated bit depth: a changed pixel"
                " format (e.g. 12-bit samples in a 16-bit image)",
                "set the camera's pixel format back, or calibrate its bit_depth (CAMERA_CALIBRATION)"),
    CLOCK_SKEW: ("the camera's clock differs from the broker's: its captured_at cannot be trusted",
                 "synchronise the camera's clock (NTP)"),
}  # fmt: skip


@dataclass(frozen=True)
class CameraObservation:
    """One frame of a delivered batch, as the camera health counts it."""

    source: KafkaCoordinates
    line: str
    camera: str
    surface: str
    strip_id: str
    frame_id: str
    position_m: float
    flags: tuple[str, ...]  # image-quality checks failed; () for a good frame
    refused: bool = False  # refused by the gate (dead-lettered), not stored
    received_at: datetime | None = None  # the Kafka record's timestamp

    @property
    def bad(self) -> bool:
        return self.refused or bool(self.flags)


@dataclass(frozen=True)
class CameraAlert:
    """A camera alert this call inserted."""

    id: int
    dedup_key: str
    line: str
    camera: str
    strip_id: str
    frames: int
    flags: Mapping[str, int]


@dataclass(frozen=True)
class Observed:
    """What `observe` did: the observations it counted (not read before), the alerts it raised."""

    counted: tuple[CameraObservation, ...] = ()
    raised: tuple[CameraAlert, ...] = ()


@dataclass
class _Run:
    """A camera's row, as read and as it will be written."""

    frames: int
    refused: int
    flags: dict[str, int]
    first: str | None
    evidence: list[dict[str, Any]]
    alert_id: int | None
    positions: dict[str, int]


def cause_and_prevention(flags: Mapping[str, int]) -> tuple[str, str]:
    """The likely cause and what to do, for the checks in `flags` (most frequent first)."""
    ordered = sorted((f for f in flags if f in CAUSES), key=lambda f: (-flags[f], f))
    if not ordered:
        return "the camera's frames fail the image-quality gate", "check the camera"
    return "; ".join(CAUSES[f][0] for f in ordered), "; ".join(CAUSES[f][1] for f in ordered)


def dedup_key(line: str, camera: str, first: str) -> str:
    """`camera/LINE/CAMERA/FIRST`, each part percent-encoded (so unambiguous)."""
    return "/".join(quote(p, safe=" -_.:[]@") for p in (KIND, line, camera, first))


class CameraHealth:
    """Counts runs of frames failing the image-quality gate per camera; see the module doc."""

    def __init__(self, engine: sa.Engine, *, frames: int, severity: str, model_version: str) -> None:
        """`frames`: the run that raises an alert (0: count, raise nothing)."""
        if frames < 0:
            raise ConfigError(f"CAMERA_ALERT_FRAMES: expected 0 or more frames, received {frames}")
        if severity not in SEVERITIES:
            raise ConfigError(
                f"CAMERA_ALERT_SEVERITY: expected one of {', '.join(SEVERITIES)}, received {severity!r}"
            )
        self.engine = engine
        self.frames = frames
        self.severity = severity
        self.model_version = model_version

    def observe(self, observations: Sequence[CameraObservation]) -> Observed:
        """Count `observations` (in delivery order) and raise the alerts their runs call for, in one
        transaction. Database errors propagate (retry the call: what was counted stays counted)."""
        if not observations:
            return Observed()
        cameras = sorted({(o.line, o.camera) for o in observations})
        with self.engine.begin() as conn:
            conn.execute(
                insert(camera_health).on_conflict_do_nothing(),
                [{"line": line, "camera": camera} for line, camera in cameras],
            )
            runs = self._lock(conn, cameras)
            counted: list[CameraObservation] = []
            raised: list[CameraAlert] = []
            for o in observations:
                run = runs[(o.line, o.camera)]
                if not _count(run, o, self.frames):
                    continue
                counted.append(o)
                if self.frames and run.frames >= self.frames and run.alert_id is None:
                    alert = self._raise(conn, o, run)
                    if alert is not None:
                        raised.append(alert)
            for (line, camera), run in runs.items():
                conn.execute(
                    sa.update(camera_health)
                    .where(camera_health.c.line == line, camera_health.c.camera == camera)
                    .values(
                        run_frames=run.frames,
                        run_refused=run.refused,
                        run_flags=run.flags,
                        run_first=run.first,
                        run_evidence=run.evidence,
                        alert_id=run.alert_id,
                        positions=run.positions,
                        updated_at=sa.func.now(),
                    )
                )
        for alert in raised:
            log.warning(
                "alert.raised",
                alert_id=alert.id,
                rule=RULE,
                kind=KIND,
                line=alert.line,
                camera=alert.camera,
                strip_id=alert.strip_id,
                frames=alert.frames,
                flags=dict(alert.flags),
            )
        return Observed(tuple(counted), tuple(raised))

    def publish(self, producer: Producer, topic: str) -> int:
        """Send the unpublished alerts (camera alerts and any other) to `topic` (`outbox.publish_pending`)."""
        return publish_pending(self.engine, producer, topic)

    def _lock(self, conn: sa.Connection, cameras: list[tuple[str, str]]) -> dict[tuple[str, str], _Run]:
        rows = conn.execute(
            sa.select(camera_health)
            .where(sa.tuple_(camera_health.c.line, camera_health.c.camera).in_(cameras))
            .order_by(camera_health.c.line, camera_health.c.camera)
            .with_for_update()
        )
        return {
            (row.line, row.camera): _Run(
                frames=row.run_frames,
                refused=row.run_refused,
                flags=dict(row.run_flags),
                first=row.run_first,
                evidence=list(row.run_evidence),
                alert_id=row.alert_id,
                positions=dict(row.positions),
            )
            for row in rows
        }

    def _raise(self, conn: sa.Connection, last: CameraObservation, run: _Run) -> CameraAlert | None:
        """Insert the alert of `run`, which `last` completed; None when it was raised before."""
        line, camera = last.line, last.camera
        assert run.first is not None and run.evidence, "a run has a first frame"
        strip = [e for e in run.evidence if e["strip_id"] == last.strip_id] or run.evidence
        cause, prevention = cause_and_prevention(run.flags)
        key = dedup_key(line, camera, run.first)
        details = {
            "frames": run.frames,
            "refused": run.refused,
            "flags": dict(sorted(run.flags.items())),
            "first_frame_id": run.evidence[0]["frame_id"],
            "last_frame_id": last.frame_id,
            "first": run.first,
            "cause": cause,
            "prevention": prevention,
        }
        inserted = conn.execute(
            insert(alerts)
            .values(
                dedup_key=key,
                rule=RULE,
                rule_kind=KIND,
                class_id=None,
                strip_id=last.strip_id,
                surface=last.surface,
                line=line,
                camera=camera,
                severity=self.severity,
                position_start_m=min(float(e["position_m"]) for e in strip),
                position_end_m=max(float(e["position_m"]) for e in strip),
                detection_count=run.frames,
                evidence=[],
                frame_ids=sorted({e["frame_id"] for e in run.evidence}),
                max_confidence=0.0,
                model_version=self.model_version,
                observed_at=last.received_at,
                details=details,
            )
            .on_conflict_do_nothing(index_elements=[alerts.c.dedup_key])
            .returning(alerts.c.id)
        ).scalar()
        if inserted is None:  # raised before (a row reset by hand, say): remember it, raise nothing
            run.alert_id = conn.execute(sa.select(alerts.c.id).where(alerts.c.dedup_key == key)).scalar()
            return None
        run.alert_id = int(inserted)
        return CameraAlert(run.alert_id, key, line, camera, last.strip_id, run.frames, dict(run.flags))


def _count(run: _Run, observation: CameraObservation, frames: int) -> bool:
    """Apply one observation to its camera's run; False when it was counted before (skipped)."""
    source = observation.source
    partition = f"{source.topic}[{source.partition}]"
    if source.offset < run.positions.get(partition, 0):
        return False
    run.positions[partition] = source.offset + 1
    if not observation.bad:
        run.frames, run.refused, run.flags, run.first, run.evidence, run.alert_id = 0, 0, {}, None, [], None
        return True
    if run.frames == 0:
        run.first = str(source)
    run.frames += 1
    run.refused += int(observation.refused)
    for flag in observation.flags:
        run.flags[flag] = run.flags.get(flag, 0) + 1
    if len(run.evidence) < max(frames, 1):
        run.evidence.append(
            {
                "frame_id": observation.frame_id,
                "strip_id": observation.strip_id,
                "surface": observation.surface,
                "position_m": observation.position_m,
            }
        )
    return True
