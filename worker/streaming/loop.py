"""The worker loop: frames from Kafka → detections in PostgreSQL and on Kafka, nothing lost, nothing
written twice.

Read `Worker.run` top to bottom:

    poll → decode + validate (thread pool; bad frames become Rejected) → tile → queue
    → when the queue holds BATCH_TILES tiles, or its oldest frame waited BATCH_MAX_WAIT_MS and
      the last poll brought nothing more: take one micro-batch (whole frames, in arrival order)
      → model → per-class thresholds (on the model thread: while the model classifies a batch,
      the loop delivers the batch before it, then polls and decodes the next frames; batches
      are delivered one at a time, in order; the loop polls only while less than a batch is
      queued, so the queue holds at most BATCH_TILES tiles plus one poll's frames)
      → deliver: StorageWriter.write_results (one transaction, idempotent by frame id)
                 → AlertStage.evaluate: the alert rules over the stored detections of the batch's
                   strips (a transaction of its own; each alert inserted once)
                 → produce one detection message per frame, the refused frames to the dead-letter
                   topic → producer.flush + every send checked
                 → AlertStage.publish: the unpublished alerts (outbox) → flush, checked, marked
                 → commit, per partition, the offset after the batch's last message
    At start: AlertStage.publish once, for the alerts a crash left unsent.

Guarantees:
- An offset is committed only after the database transaction and the producer flush that cover
  every message before it on its partition succeeded. Batches are prefixes of the queue, so
  committed offsets never pass an unwritten frame.
- A failed step (database or broker down) is retried with exponential backoff, resuming at the
  step that failed; consumption is paused meanwhile (the consumer keeps polling, so it stays in
  its group). A batch is never skipped.
- Database writes are exactly-once (the ledger is keyed by frame id; an alert by its dedup key,
  see `worker.alerts.engine`). Detection, alert and dead-letter messages are at-least-once: a
  frame redelivered after a crash between the database commit and the flush is published again,
  an alert sent but not yet marked published is sent again; consumers deduplicate by frame id
  (alert id).
- Rebalance: kafka-python 3 calls the listener on its IO thread, where blocking calls such as
  commit are refused, so the listener only records the revoked partitions. Every delivered
  batch is committed at the end of its delivery, before the next poll; after each poll the loop
  drops the revoked partitions' entries from the queue, from the batch on the model and from the
  batch being delivered (polls during retries): none of them is committed, and the partitions'
  next owner re-reads them (at most one batch is on the model while another is delivered).
- SIGTERM/SIGINT (`request_stop`) only sets a flag. The loop finishes the batches in flight
  (retrying up to SHUTDOWN_TIMEOUT_S), commits them, and returns; a batch after one that had to
  be abandoned is not delivered either (its offsets would pass the abandoned frames); frames
  fetched but not yet in a batch are left uncommitted and are redelivered. After a clean stop,
  the committed offsets and the ledger agree: every frame before the committed offset is
  written, none after it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata
from sqlalchemy import exc as sa_exc

from worker.errors import SteelWorkerError
from worker.streaming import contracts
from worker.streaming.classify import FrameClassifier, TiledFrame, tile_frame
from worker.streaming.dead_letter import DeadLetterPublisher
from worker.streaming.decode import Decoder, InboundMessage, Rejected
from worker.streaming.observability import (
    RETRYING,
    RUNNING,
    STOPPED,
    STOPPING,
    Health,
    Metrics,
    message_context,
)
from worker.streaming.records import DecodedFrame, FrameResult, KafkaCoordinates
from worker.streaming.settings import HEADER_ROOM_BYTES, Settings

if TYPE_CHECKING:
    from worker.alerts.stage import AlertStage

log = structlog.get_logger("worker.streaming")

PUBLISH_TIMEOUT_S = 35.0  # a little over the producer's delivery timeout (see service.py)
# A batch due by age only is closed after a poll that brought nothing; such a poll waits this long
# (it returns at once when frames arrive: a fetch response still being read, for one).
TOP_UP_POLL_MS = 50


class DeliveryError(SteelWorkerError):
    """Some output messages of a batch were not acknowledged by the broker (retried)."""


# Failures that pass: the database or the broker is unreachable, restarting, or timing out.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    KafkaError,
    DeliveryError,
)


class ResultWriter(Protocol):
    """The storage side (`worker.storage.StorageWriter`): one idempotent transaction per call."""

    def write_results(self, results: Sequence[FrameResult]) -> Any: ...


@dataclass
class Entry:
    """One consumed message on its way through the loop: a tiled frame, or a refusal."""

    message: InboundMessage
    outcome: TiledFrame | Rejected
    received_at: float
    result: FrameResult | None = None

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.message.source.topic, self.message.source.partition)

    @property
    def tiles(self) -> int:
        return len(self.outcome.tiles) if isinstance(self.outcome, TiledFrame) else 0


@dataclass
class Batch:
    """A micro-batch: whole frames in arrival order, and how far its delivery got."""

    entries: list[Entry]
    written: bool = False
    alerts_evaluated: bool = False
    published: bool = False
    alerts_published: bool = False
    alerts_raised: int = 0
    started: float = field(default_factory=time.monotonic)

    def drop(self, partitions: set[TopicPartition]) -> list[Entry]:
        """Forget the entries of `partitions` (revoked); returns the entries dropped."""
        self.entries, dropped = _split(self.entries, partitions)
        return dropped

    def results(self) -> list[FrameResult]:
        return [e.result for e in self.entries if e.result is not None]

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the batch's last message there: what to commit."""
        offsets: dict[TopicPartition, int] = {}
        for e in self.entries:
            offsets[e.partition] = max(offsets.get(e.partition, 0), e.message.source.offset + 1)
        return offsets


@dataclass
class _Classifying:
    """A batch on the model thread: its frames and the future of their results."""

    batch: Batch
    frames: list[Entry]
    results: Future[list[FrameResult]]


class _RecordRevocations(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: only records what was revoked, for the loop to apply."""

    def __init__(self, revoked: list[set[TopicPartition]]) -> None:
        self._revoked = revoked

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._revoked.append(set(revoked))  # list.append is atomic; the loop drains it after poll

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions.assigned", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Worker:
    """The streaming worker. Build it with its parts (see `service.open_worker`), then `run()`.

    The consumer must be created with `enable_auto_commit=False`; the worker subscribes it.
    Without `alerts` (ALERT_RULES=none) no alert rules are evaluated and no alerts published.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        consumer: Any,
        producer: Any,
        classifier: FrameClassifier,
        writer: ResultWriter,
        decoder: Decoder,
        metrics: Metrics,
        health: Health,
        alerts: AlertStage | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.classifier = classifier
        self.writer = writer
        self.decoder = decoder
        self.metrics = metrics
        self.health = health
        self.alerts = alerts
        self.dead_letters = DeadLetterPublisher(
            producer, settings.dlq_topic, settings.worker_id, settings.max_message_bytes - HEADER_ROOM_BYTES
        )
        self._queue: deque[Entry] = deque()
        self._in_flight: Batch | None = None  # being delivered
        self._classifying: _Classifying | None = None  # on the model meanwhile
        self._model_thread: ThreadPoolExecutor | None = None
        self._dry = True  # the last poll brought no message
        self._revoked: list[set[TopicPartition]] = []
        self._paused: set[TopicPartition] = set()
        self._retrying = False
        self._stopping = False
        self._stop_requested_at: float | None = None
        self._abandoned = False

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until `request_stop()`; returns 0 after a clean stop, 1 if the batch in flight
        had to be left uncommitted (it will be redelivered)."""
        self._publish_left_alerts()
        self.consumer.subscribe([self.settings.frames_topic], listener=_RecordRevocations(self._revoked))
        log.info("worker.started", topic=self.settings.frames_topic, group=self.settings.consumer_group)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as self._model_thread:
            while not self._stopping:
                if self._queued_tiles() < self.settings.batch_tiles:  # the queue stays bounded
                    self._poll(self._poll_timeout_ms())
                if self._batch_due():
                    self._classify_and_deliver_previous(self._take_batch())
                else:
                    self._deliver_classified()  # nothing to overlap it with: deliver it now
            self._deliver_classified()  # the batch on the model when the stop came
        self.health.tick(STOPPING)
        if self._queue:  # fetched, not started: uncommitted, so redelivered to the next owner
            log.info("worker.stopping", left_uncommitted=len(self._queue))
            self._queue.clear()
        self.health.tick(STOPPED)
        log.info("worker.stopped", abandoned=self._abandoned)
        return 1 if self._abandoned else 0

    def _publish_left_alerts(self) -> None:
        """Send the alerts a crash (of this or another worker) left unpublished. A failure is only
        logged: they go out with the next batch's alerts."""
        if self.alerts is None:
            return
        try:
            self.alerts.publish(self.producer)
        except RETRYABLE_ERRORS as error:
            log.warning(
                "alerts.publish_deferred",
                error=f"{type(error).__name__}: {error}",
                note="unpublished alerts go out after the next batch",
            )

    def request_stop(self) -> None:
        """Ask the loop to finish its batch and return (safe to call from a signal handler)."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
        self._stopping = True

    # --- poll, decode, tile, queue --------------------------------------------------------------

    def _poll(self, timeout_ms: int) -> None:
        records = self.consumer.poll(timeout_ms=timeout_ms)
        rewound = self._apply_revocations()
        if self._retrying:
            self._pause_all()  # partitions assigned during an outage start paused too
        # A rewound partition's records from this poll lie past its new position: fetched again.
        messages = [_inbound(r) for tp, batch in records.items() if tp not in rewound for r in batch]
        self._dry = not messages
        if messages:
            now = time.monotonic()
            for message, outcome in zip(messages, self.decoder.decode_all(messages), strict=True):
                self._queue.append(Entry(message, self._tile_or_refusal(message, outcome), now))
        self.health.tick(RETRYING if self._retrying else RUNNING, queued=len(self._queue))

    def _tile_or_refusal(
        self, message: InboundMessage, outcome: DecodedFrame | Rejected
    ) -> TiledFrame | Rejected:
        if isinstance(outcome, Rejected):
            with message_context(message.source, outcome.meta.frame_id if outcome.meta else None):
                log.warning(
                    "frame.refused", reason=outcome.reason, stage=outcome.stage, detail=outcome.detail
                )
            return outcome
        return tile_frame(outcome, self.settings.tile_size, self.settings.tile_min_overlap)

    def _apply_revocations(self) -> set[TopicPartition]:
        """Forget every uncommitted frame of the revoked partitions (their next owner re-reads
        them from the last commit). kafka-python keeps the fetch position of a partition that is
        assigned again to this consumer, which would skip those frames: such a partition is
        rewound to its first dropped frame. Returns the partitions rewound."""
        rewound: set[TopicPartition] = set()
        while self._revoked:
            revoked = self._revoked.pop(0)
            dropped: list[Entry] = []
            if self._in_flight is not None:
                dropped += self._in_flight.drop(revoked)
            if self._classifying is not None:
                dropped += self._classifying.batch.drop(revoked)
            kept, queued = _split(list(self._queue), revoked)
            self._queue = deque(kept)
            dropped += queued
            self._paused -= revoked
            first: dict[TopicPartition, int] = {}
            for entry in dropped:
                offset = entry.message.source.offset
                first[entry.partition] = min(first.get(entry.partition, offset), offset)
            kept_here = first.keys() & set(self.consumer.assignment())  # positions kept: rewind them
            for tp in kept_here:
                self.consumer.seek(tp, first[tp])
            rewound |= kept_here
            log.info(
                "partitions.revoked",
                partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
                dropped_uncommitted=len(dropped),
                rewound=sorted(f"{tp.topic}[{tp.partition}]@{first[tp]}" for tp in kept_here),
            )
        return rewound

    def _poll_timeout_ms(self) -> int:
        """How long the next poll may wait: not at all while a batch is on the model (its delivery
        waits); else until the oldest queued frame is due; once it is (a partial batch that the
        last poll added to), TOP_UP_POLL_MS for frames on their way."""
        waited_ms = (time.monotonic() - self._queue[0].received_at) * 1000 if self._queue else 0.0
        left_ms = self.settings.batch_max_wait_ms - waited_ms
        if self._queue and left_ms <= 0:
            return min(self.settings.poll_timeout_ms, TOP_UP_POLL_MS)
        if self._classifying is not None:
            return 0
        if not self._queue:
            return self.settings.poll_timeout_ms
        return int(min(self.settings.poll_timeout_ms, left_ms))

    def _queued_tiles(self) -> int:
        return sum(e.tiles for e in self._queue)

    def _batch_due(self) -> bool:
        """A full batch is queued, or the oldest frame waited BATCH_MAX_WAIT_MS and the last poll
        brought nothing (a partial batch is topped up first: when the worker lags, the frames
        fetched meanwhile fill it)."""
        if not self._queue:
            return False
        if self._queued_tiles() >= self.settings.batch_tiles:
            return True
        waited_ms = (time.monotonic() - self._queue[0].received_at) * 1000
        return waited_ms >= self.settings.batch_max_wait_ms and self._dry

    def _take_batch(self) -> Batch:
        """The oldest queued entries, whole frames, up to BATCH_TILES tiles (at least one entry)."""
        entries: list[Entry] = []
        tiles = 0
        while self._queue and (not entries or tiles + self._queue[0].tiles <= self.settings.batch_tiles):
            entry = self._queue.popleft()
            entries.append(entry)
            tiles += entry.tiles
        return Batch(entries)

    # --- one batch: model, then deliver ---------------------------------------------------------

    def _classify_and_deliver_previous(self, batch: Batch) -> None:
        """Put `batch` on the model thread and, while the model works, deliver the batch before it."""
        assert self._model_thread is not None
        pairs = [(e, e.outcome) for e in batch.entries if isinstance(e.outcome, TiledFrame)]
        tiled = [frame for _, frame in pairs]
        results = self._model_thread.submit(self.classifier.classify, tiled, datetime.now(UTC))
        self._deliver_classified(then=_Classifying(batch, [e for e, _ in pairs], results))

    def _deliver_classified(self, then: _Classifying | None = None) -> None:
        """Wait for the batch on the model (if any), deliver it; `then` is on the model meanwhile."""
        current, self._classifying = self._classifying, then
        if current is None:
            return
        results = current.results.result()  # a model error propagates: the worker stops
        if self._abandoned:  # the batch before was left uncommitted: this one's offsets would pass it
            log.info(
                "batch.not_delivered",
                frames=len(current.batch.entries),
                reason="an earlier batch was abandoned",
            )
            return
        for entry, result in zip(current.frames, results, strict=True):
            entry.result = result
        self._in_flight = current.batch
        try:
            delivered = self._deliver(current.batch)
        finally:
            self._in_flight = None
        if delivered:
            self._count(current.batch)

    def _deliver(self, batch: Batch) -> bool:
        """Write, evaluate the alert rules, publish, publish the alerts, commit; each failed step
        retried with backoff, resuming at that step (the steps before it are done and recorded on
        the batch; every step is idempotent anyway). False if abandoned."""
        attempt = 0
        alerts = self.alerts
        while True:
            if not batch.entries:  # every partition of the batch was revoked meanwhile
                self._resume_all()
                return True
            step = "write"
            try:
                if not batch.written:
                    self.writer.write_results(batch.results())
                    batch.written = True
                step = "evaluate"
                if alerts is not None and not batch.alerts_evaluated:
                    batch.alerts_raised = len(alerts.evaluate(batch.results()))
                    batch.alerts_evaluated = True
                step = "publish"
                if not batch.published:
                    self._publish(batch)
                    batch.published = True
                step = "publish-alerts"
                if alerts is not None and not batch.alerts_published:
                    alerts.publish(self.producer)
                    batch.alerts_published = True
                step = "commit"
                self._commit(batch)
            except RETRYABLE_ERRORS as error:
                attempt += 1
                if not self._may_retry(batch, step, attempt, error):
                    return False
                continue
            self._resume_all()
            return True

    def _publish(self, batch: Batch) -> None:
        """Send the batch's detection messages and dead letters, flush, and check each
        acknowledgement (alerts come from the alert rules, published by `AlertStage.publish`).

        A dead letter the broker refuses as too large is sent again without its value (see
        DeadLetterPublisher); any other unacknowledged message fails the step (retried)."""
        sent: list[tuple[Any, Entry | None]] = []  # (future, the entry if it is a dead letter)
        catalogue = self.classifier.catalogue
        for entry in batch.entries:
            key = entry.message.key
            if isinstance(entry.outcome, Rejected):
                sent.append((self.dead_letters.publish(entry.message, entry.outcome), entry))
                continue
            assert entry.result is not None
            detection = contracts.to_json_bytes(contracts.detection_message(entry.result, catalogue))
            sent.append((self.producer.send(self.settings.detections_topic, key=key, value=detection), None))
        self.producer.flush(timeout=PUBLISH_TIMEOUT_S)
        for i, (future, dead) in enumerate(sent):
            if (
                dead is not None
                and future.failed()
                and isinstance(future.exception, MessageSizeTooLargeError)
            ):
                assert isinstance(dead.outcome, Rejected)
                sent[i] = (self.dead_letters.publish(dead.message, dead.outcome, omit_value=True), dead)
                self.producer.flush(timeout=PUBLISH_TIMEOUT_S)
        failed = [future for future, _ in sent if not (future.is_done and future.succeeded())]
        if failed:
            first = failed[0].exception if failed[0].is_done else "not acknowledged in time"
            raise DeliveryError(f"{len(failed)} of {len(sent)} output messages not delivered: {first!r}")

    def _commit(self, batch: Batch) -> None:
        offsets = batch.next_offsets()
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except CommitFailedError as error:
            # The group rebalanced: the partitions have a new owner, who re-reads from the last
            # commit. Everything is written; the redelivered frames are deduplicated by frame id.
            log.warning("batch.commit_refused", error=str(error), offsets=_offset_text(offsets))
            return
        log.info(
            "batch.committed",
            frames=len(batch.results()),
            refused=sum(isinstance(e.outcome, Rejected) for e in batch.entries),
            tiles=sum(e.tiles for e in batch.entries),
            alerts_raised=batch.alerts_raised,
            offsets=_offset_text(offsets),
        )
        self._update_lag(offsets)

    # --- failures: backoff, pause, stop ---------------------------------------------------------

    def _may_retry(self, batch: Batch, step: str, attempt: int, error: BaseException) -> bool:
        """Log, count, pause consumption and wait before the next attempt (polling meanwhile, so
        the group keeps this worker). False when a stop was requested and SHUTDOWN_TIMEOUT_S
        passed: the batch is abandoned, uncommitted."""
        delay_ms = min(
            self.settings.retry_backoff_ms * 2 ** (attempt - 1), self.settings.retry_backoff_max_ms
        )
        self.metrics.retries.labels(step=step).inc()
        log.warning(
            "batch.retry",
            step=step,
            attempt=attempt,
            delay_ms=delay_ms,
            error=f"{type(error).__name__}: {error}",
        )
        if self._stop_requested_at is not None:
            waited = time.monotonic() - self._stop_requested_at
            if waited >= self.settings.shutdown_timeout_s:
                log.error(
                    "batch.abandoned",
                    frames=len(batch.entries),
                    reason=f"stop requested {waited:.0f} s ago and {step} still fails; "
                    "the batch stays uncommitted and will be redelivered",
                )
                self._abandoned = True
                return False
        self._retrying = True
        self._pause_all()
        deadline = time.monotonic() + delay_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            self._poll(int(min(left * 1000, self.settings.poll_timeout_ms)) or 1)
        return True

    def _pause_all(self) -> None:
        assigned = set(self.consumer.assignment())
        new = assigned - self._paused
        if new:
            self.consumer.pause(*new)
            self._paused |= new

    def _resume_all(self) -> None:
        if self._retrying:
            still = self._paused & set(self.consumer.assignment())
            if still:
                self.consumer.resume(*still)
            log.info("consumption.resumed", partitions=len(still))
            self._paused = set()
            self._retrying = False

    # --- metrics --------------------------------------------------------------------------------

    def _count(self, batch: Batch) -> None:
        m = self.metrics
        m.batch_seconds.observe(time.monotonic() - batch.started)
        m.batch_frames.observe(len(batch.entries))
        for entry in batch.entries:
            if isinstance(entry.outcome, Rejected):
                m.dead_lettered.labels(reason=entry.outcome.reason).inc()
            elif entry.result is not None:
                m.frames.inc()
                m.tiles.inc(entry.result.tile_count)
                for d in entry.result.detections:
                    m.detections.labels(class_name=d.class_name).inc()

    def _update_lag(self, committed: dict[TopicPartition, int]) -> None:
        for tp, offset in committed.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, highwater - offset)
                )


def _split(entries: list[Entry], partitions: set[TopicPartition]) -> tuple[list[Entry], list[Entry]]:
    """(entries not of `partitions`, entries of `partitions`), each in their order."""
    kept = [e for e in entries if e.partition not in partitions]
    return kept, [e for e in entries if e.partition in partitions]


def _inbound(record: Any) -> InboundMessage:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (record.headers or ()))
    return InboundMessage(
        source=KafkaCoordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=headers,
        timestamp_ms=record.timestamp,
    )


def _offset_text(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(offsets.items()))
