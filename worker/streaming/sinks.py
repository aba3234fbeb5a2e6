"""The delivery steps of a batch, in the order the checkpoint runs them, each idempotent:

    LedgerSink        "write"           frames and detections, one transaction (StorageWriter)
    AlertRulesSink    "evaluate"        the alert rules over the stored detections (AlertStage)
    OutputSink        "publish"         one detection message per frame, the dead letters; flushed
    AlertsOutboxSink  "publish-alerts"  the alerts not yet on the alerts topic (the outbox)

`deliver(batch)` may be called again after any failure (the checkpoint retries the step that
failed): what is done stays done (the ledger is keyed by frame id, outputs acknowledged are marked
on their entry, alerts are marked published). Each step raises only for faults that are not one
frame's (`failures.classify`: transient or systemic), and sets a frame aside itself when the fault
is that frame's: the ledger bisects its batch to find the frame the database refuses, the output
step dead-letters a frame whose detection message the broker refuses, the alert rules isolate a
failing rule per strip. Before blaming frames, the ledger and the output step rule out a fault
that every frame meets (`worker.streaming.isolation`): then they raise `SystemicFaultError`.
A frame set aside becomes a refusal with the reason of its step (`unstorable`, `undeliverable`,
`duplicate-frame-id`) and is dead-lettered in the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from worker.core import contracts
from worker.core.catalogue import Catalogue
from worker.core.clients import Producer
from worker.core.errors import DeliveryError, SystemicFaultError
from worker.core.failures import DATA, classify, describe
from worker.core.records import FrameResult
from worker.core.refusals import (
    DUPLICATE_FRAME_ID,
    PUBLISH,
    STORE,
    UNDELIVERABLE,
    UNSTORABLE,
    shown,
)
from worker.streaming.batch import Batch, Entry
from worker.streaming.dead_letter import DeadLetterPublisher
from worker.streaming.decode import Rejected
from worker.streaming.isolation import IsolationGuard
from worker.streaming.observability import Metrics, message_context

if TYPE_CHECKING:
    from worker.alerts.stage import AlertStage
    from worker.storage.writer import WriteOutcome

log = structlog.get_logger("worker.streaming")

PUBLISH_TIMEOUT_S = 35.0  # a little over the producer's delivery timeout (see service.py)
#: SYSTEMIC_AFTER_ISOLATED's default: the third frame in a row failing alike makes the fault systemic.
DEFAULT_SYSTEMIC_AFTER = 3
DETAIL_CHARS = 1500


class Sink(Protocol):
    """One delivery step: `name` (in logs, metrics and retries) and `deliver`, idempotent."""

    name: str

    def deliver(self, batch: Batch) -> None: ...


class ResultWriter(Protocol):
    """The storage side (`worker.storage.StorageWriter`): one idempotent transaction per call."""

    def write_results(self, results: Sequence[FrameResult]) -> WriteOutcome: ...

    def check_writable(self, model_version: str) -> None: ...


def _set_aside(entry: Entry, reason: str, stage: str, detail: str, *, metrics: Metrics, step: str) -> None:
    """Turn a frame into a refusal that the output step dead-letters; logged and counted."""
    source = entry.message.source
    meta = entry.result.meta if entry.result is not None else None
    with message_context(source, meta.frame_id if meta else None):
        log.error("frame.isolated", step=step, reason=reason, detail=shown(detail))
    entry.refuse(Rejected(reason, stage, shown(detail, DETAIL_CHARS), source, meta))
    metrics.isolated.labels(step=step).inc()


class LedgerSink:
    """The step `write`: the frames of the batch and their detections (see `StorageWriter.write_results`).

    A redelivered frame publishes what is stored; a frame whose id another stored frame holds is
    refused (`duplicate-frame-id`); a frame the database refuses alone is set aside (`unstorable`)
    — but only once a synthetic frame written and rolled back (`ResultWriter.check_writable`)
    shows that the database takes good frames, and only while the `IsolationGuard` sees no run of
    frames failing alike: otherwise the error is the set-up's, not the frames'
    (`SystemicFaultError`, retried, nothing dead-lettered).
    """

    name = "write"

    def __init__(self, writer: ResultWriter, metrics: Metrics, guard: IsolationGuard | None = None) -> None:
        self.writer = writer
        self.metrics = metrics
        self.guard = guard if guard is not None else IsolationGuard(DEFAULT_SYSTEMIC_AFTER)

    def deliver(self, batch: Batch) -> None:
        entries = [e for e in batch.entries if e.result is not None]
        if not entries:
            return
        refused: list[tuple[Entry, BaseException]] = []
        written = self._write(entries, refused, checked=[False])
        if not refused:
            if written:
                self.guard.delivered(self.name)
            return
        self.guard.judge(self.name, [error for _, error in refused], delivered=written)
        for entry, error in refused:
            detail = f"the database refused this frame: {describe(error)}"
            _set_aside(entry, UNSTORABLE, STORE, detail, metrics=self.metrics, step=self.name)

    def _write(
        self, entries: list[Entry], refused: list[tuple[Entry, BaseException]], checked: list[bool]
    ) -> bool:
        """Write `entries`, bisecting on a data error; the frames refused alone go to `refused`.
        True when the database took at least one frame. `checked[0]`: the database already took
        the synthetic frame during this delivery."""
        try:
            outcome = self.writer.write_results([e.result for e in entries if e.result is not None])
        except Exception as error:
            if classify(error) != DATA:
                raise
            if not checked[0]:
                self._check_writable(entries, error)
                checked[0] = True
            if len(entries) == 1:
                refused.append((entries[0], error))
                return False
            middle = len(entries) // 2
            first = self._write(entries[:middle], refused, checked)
            return self._write(entries[middle:], refused, checked) or first
        self._apply(entries, outcome)
        return bool(outcome.stored)

    def _check_writable(self, entries: list[Entry], error: BaseException) -> None:
        """Raise when the database refuses a synthetic frame too: then `error` is no frame's fault."""
        model_version = next(e.result.model_version for e in entries if e.result is not None)
        try:
            self.writer.check_writable(model_version)
        except Exception as canary:
            if classify(canary) != DATA:
                raise
            raise SystemicFaultError(
                f"the database refuses a synthetic frame too ({describe(canary)}): not a frame's fault;"
                f" the batch failed with {describe(error)}"
            ) from canary

    def _apply(self, entries: list[Entry], outcome: WriteOutcome) -> None:
        for entry in entries:
            assert entry.result is not None
            frame_id = entry.result.meta.frame_id
            held_at = outcome.collisions.get(entry.message.source)
            if held_at is not None:
                detail = (
                    f"frame_id {shown(frame_id, 200)} is already stored for the message at {held_at};"
                    " this message is another frame under the same id (frame ids must be unique)"
                )
                _set_aside(entry, DUPLICATE_FRAME_ID, STORE, detail, metrics=self.metrics, step=self.name)
                self.metrics.collisions.inc()
            else:  # stored now, or redelivered: what the database holds, with the row ids
                entry.result = outcome.stored[frame_id]


class AlertRulesSink:
    """The step `evaluate`: the alert rules over the stored detections of the batch's strips. A rule that
    fails on one strip is logged and counted there (`worker.alerts.engine`); only database faults
    that are not a strip's propagate."""

    name = "evaluate"

    def __init__(self, alerts: AlertStage) -> None:
        self.alerts = alerts

    def deliver(self, batch: Batch) -> None:
        batch.alerts_raised = len(self.alerts.evaluate(batch.results()))


class AlertsOutboxSink:
    """The step `publish-alerts`: every alert not yet on the alerts topic (`worker.alerts.outbox`)."""

    name = "publish-alerts"

    def __init__(self, alerts: AlertStage, producer: Producer) -> None:
        self.alerts = alerts
        self.producer = producer

    def deliver(self, batch: Batch) -> None:
        self.alerts.publish(self.producer)


class OutputSink:
    """The step `publish`: one detection message per frame and the dead letters, flushed, each
    acknowledgement checked; entries acknowledged are marked and not sent again on a retry.

    A detection message the broker refuses for good (too large, invalid) makes its frame a dead
    letter (`undeliverable`; the frame stays in the database) — unless the `IsolationGuard` sees
    frames refused alike with none acknowledged in between (a topic limit lowered for everyone):
    then the step fails as systemic and is retried. A dead letter refused for good is
    sent again without key, value and original headers (`dlq-*` headers only); if even that is
    refused, it is logged with its coordinates and counted, and given up: a dead letter must
    never hold its partition. Transient and systemic faults fail the step (retried).
    """

    name = "publish"

    def __init__(
        self,
        producer: Producer,
        detections_topic: str,
        dead_letters: DeadLetterPublisher,
        catalogue: Catalogue,
        metrics: Metrics,
        *,
        guard: IsolationGuard | None = None,
    ) -> None:
        self.producer = producer
        self.detections_topic = detections_topic
        self.dead_letters = dead_letters
        self.catalogue = catalogue
        self.metrics = metrics
        self.guard = guard if guard is not None else IsolationGuard(DEFAULT_SYSTEMIC_AFTER)

    def deliver(self, batch: Batch) -> None:
        minimal: set[Entry] = set()  # entries whose dead letter goes out without key, value and headers
        while pending := [e for e in batch.entries if not e.published]:
            refused = self._send_round(pending, minimal)
            frames_acknowledged = any(e.published and not e.refused for e in pending)
            frames_refused = [error for entry, error in refused if not entry.refused]
            if frames_refused:
                self.guard.judge(self.name, frames_refused, delivered=frames_acknowledged)
            elif frames_acknowledged:
                self.guard.delivered(self.name)
            if not refused:
                return
            for entry, error in refused:
                self._refused_for_good(entry, error, minimal)

    def _send_round(self, pending: list[Entry], minimal: set[Entry]) -> list[tuple[Entry, BaseException]]:
        """Send, flush, mark what was acknowledged; the entries refused for good, with why."""
        sent: list[tuple[Entry, Any]] = []
        refused: list[tuple[Entry, BaseException]] = []
        for entry in pending:
            try:
                sent.append((entry, self._send(entry, minimal=entry in minimal)))
            except Exception as error:  # the producer refused it before sending (e.g. too large)
                if classify(error) != DATA:
                    raise
                refused.append((entry, error))
        self.producer.flush(timeout=PUBLISH_TIMEOUT_S)
        unacknowledged: list[BaseException | None] = []
        for entry, future in sent:
            if future.is_done and future.succeeded():
                entry.published = True
            elif future.is_done and classify(future.exception) == DATA:
                refused.append((entry, future.exception))
            else:
                unacknowledged.append(future.exception if future.is_done else None)
        if unacknowledged:
            first = unacknowledged[0]
            if first is not None and classify(first) != DATA:
                raise first
            raise DeliveryError(
                f"{len(unacknowledged)} of {len(sent)} output messages not acknowledged in time"
            )
        return refused

    def _send(self, entry: Entry, *, minimal: bool) -> Any:
        if isinstance(entry.outcome, Rejected):
            return self.dead_letters.publish(entry.message, entry.outcome, minimal=minimal)
        assert entry.result is not None
        value = contracts.to_json_bytes(contracts.detection_message(entry.result, self.catalogue))
        return self.producer.send(self.detections_topic, key=entry.message.key, value=value)

    def _refused_for_good(self, entry: Entry, error: BaseException, minimal: set[Entry]) -> None:
        if not entry.refused:
            detail = f"the broker refused this frame's detection message: {describe(error)}"
            _set_aside(entry, UNDELIVERABLE, PUBLISH, detail, metrics=self.metrics, step=self.name)
            self.metrics.undeliverable.labels(kind="detection").inc()
        elif entry not in minimal:
            minimal.add(entry)
        else:
            with message_context(entry.message.source):
                log.error(
                    "dead_letter.undeliverable",
                    reason=entry.outcome.reason if isinstance(entry.outcome, Rejected) else None,
                    error=shown(describe(error)),
                    note="given up: the message stays at its source coordinates",
                )
            self.metrics.undeliverable.labels(kind="dead-letter").inc()
            entry.published = True
