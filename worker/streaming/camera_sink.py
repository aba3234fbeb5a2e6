"""The delivery step `camera-health`: the batch's frames counted per camera for the camera alerts.

Runs right after `write` (the frames are in the ledger with their flags). Each stored frame, and
each frame the image-quality gate refused (reason `image-quality`), becomes a `CameraObservation`
in delivery order; `worker.alerts.camera.CameraHealth.observe` counts them and raises the camera
alerts their runs call for, once. Frames set aside for another reason (unreadable, corrupt,
duplicate, unstorable) say nothing about the camera's image and are not counted.

Idempotent like every step: a retry, or the batch read again after a crash, counts nothing twice
(`CameraHealth` skips offsets it counted), so `steel_worker_frame_quality_flags_total` and
`steel_worker_camera_alerts_total` count each frame and alert once. Without an alerts outbox
step (ALERT_RULES=none) this step publishes the alerts outbox itself, every batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from worker.alerts.camera import CameraHealth, CameraObservation
from worker.core.refusals import IMAGE_QUALITY
from worker.streaming.batch import Batch, Entry
from worker.streaming.decode import Rejected
from worker.streaming.observability import Metrics


class CameraHealthSink:
    """The step `camera-health` (see the module doc)."""

    name = "camera-health"

    def __init__(
        self, health: CameraHealth, metrics: Metrics, publish: Callable[[], object] | None = None
    ) -> None:
        """`publish`: send the alerts outbox after counting (when no later step does)."""
        self.health = health
        self.metrics = metrics
        self.publish = publish

    def deliver(self, batch: Batch) -> None:
        observed = self.health.observe([o for e in batch.entries if (o := observation(e)) is not None])
        for counted in observed.counted:
            for flag in counted.flags:
                self.metrics.quality_flags.labels(check=flag).inc()
        self.metrics.camera_alerts.inc(len(observed.raised))
        if self.publish is not None:
            self.publish()


def observation(entry: Entry) -> CameraObservation | None:
    """What the camera health counts of one entry; None for a refusal that is not the gate's."""
    outcome, meta = entry.outcome, None
    if entry.result is not None:
        meta, flags, refused = entry.result.meta, entry.result.quality_flags, False
    elif isinstance(outcome, Rejected) and outcome.reason == IMAGE_QUALITY and outcome.meta is not None:
        meta, flags, refused = outcome.meta, outcome.quality_flags, True
    if meta is None:
        return None
    stamp = entry.message.timestamp_ms
    return CameraObservation(
        source=entry.message.source,
        line=meta.line,
        camera=meta.camera,
        surface=meta.surface,
        strip_id=meta.strip_id,
        frame_id=meta.frame_id,
        position_m=meta.position_m,
        flags=flags,
        refused=refused,
        received_at=datetime.fromtimestamp(stamp / 1000, UTC) if stamp is not None and stamp > 0 else None,
    )
