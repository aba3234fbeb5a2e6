"""The worker loop: frames from Kafka → detections in PostgreSQL and on Kafka, nothing lost, nothing
written twice, and no message that can stop it.

Read `Worker.run` top to bottom:

    poll (records that cannot be read are skipped: `transport.poll_records`)
    → decode + validate (decoder processes, each frame within DECODE_TIMEOUT_MS; bad frames
      become Rejected; every entry keeps its message's bytes until delivered, so that a frame set
      aside later is dead-lettered whole and can be replayed) → tile → queue
    → when the queue weighs BATCH_TILES (a frame weighs its tiles, a refusal 1), or its oldest
      entry waited BATCH_MAX_WAIT_MS: take one micro-batch (whole frames, in arrival order)
    → model → per-class thresholds (on the model thread: while the model classifies a batch, the
      loop delivers the batch before it, then polls and decodes the next frames; batches are
      delivered one at a time, in order; the loop polls only while less than a batch is queued)
    → deliver: the checkpoint runs the sinks in order (`worker.streaming.sinks`), each idempotent —
        write (ledger + detections, one transaction) → evaluate (alert rules) → publish
        (detections and dead letters, flushed) → publish-alerts (the outbox) —
      then commits, per partition, the offset after the batch's last message.
    At start: the alerts a crash left unpublished are published once.

Guarantees:
- An offset is committed only after every sink delivered every message before it on its partition.
  Batches are prefixes of the queue, so committed offsets never pass an undelivered frame.
- A step that fails is retried with exponential backoff, resuming at that step; consumption is
  paused meanwhile (the consumer keeps polling, so it stays in its group). What fails is sorted by
  `failures.classify`: a transient outage and a fault of the set-up (no privilege, no topic) are
  retried, never skipped — /readyz turns 503 at once, /healthz once the batch has failed for
  STUCK_AFTER_S —; a fault of one frame's data is isolated by the sink that met it, which
  dead-letters that frame and delivers the rest. `run()` never ends because of what a message
  holds: only `request_stop()` ends it.
- Database writes are exactly-once (the ledger is keyed by frame id; an alert by its dedup key).
  A frame read again publishes what is stored; another frame under a stored id is dead-lettered
  (`duplicate-frame-id`). Detection, alert and dead-letter messages are at-least-once: a frame
  redelivered after a crash between the database commit and the flush is published again;
  consumers deduplicate by frame id (alert id).
- Memory is bounded: the queue holds at most BATCH_TILES of weight plus one poll
  (KAFKA_MAX_POLL_RECORDS messages); each entry keeps its message's bytes (at most MAX_FRAME_BYTES)
  until its batch is delivered, a decoded frame also its image and tiles (docs/reliability.md
  gives the bound).
- Rebalance (`worker.streaming.rebalance`): the listener only records the revoked partitions.
  Every delivered batch is committed at the end of its delivery, before the next poll; after each
  poll the loop drops the revoked partitions' entries from the queue, from the batch on the model
  and from the batch being delivered (polls during retries): none of them is committed, and the
  partitions' next owner re-reads them. A revoked partition that stays with this consumer is
  rewound to its first dropped message (kafka-python keeps its fetch position).
- SIGTERM/SIGINT (`request_stop`) only sets a flag. The loop finishes the batches in flight
  (retrying up to SHUTDOWN_TIMEOUT_S), commits them, and returns; a batch after one that had to
  be abandoned is not delivered either (its offsets would pass the abandoned frames); messages
  fetched but not yet in a batch are left uncommitted and are redelivered.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaConnectionError
from kafka.structs import OffsetAndMetadata

from worker.core.clients import Consumer, Producer
from worker.core.failures import SYSTEMIC, TRANSIENT, classify, describe
from worker.core.records import DecodedFrame, FrameResult, KafkaCoordinates
from worker.core.refusals import DECODE, DECODER_ERROR, TRANSPORT, UNREADABLE_RECORD, shown
from worker.streaming.batch import Batch, Entry
from worker.streaming.classify import FrameClassifier, TiledFrame, tile_frame
from worker.streaming.dead_letter import DeadLetterPublisher
from worker.streaming.decode import InboundMessage, Rejected
from worker.streaming.decode_pool import Decoder
from worker.streaming.isolation import IsolationGuard
from worker.streaming.observability import (
    RUNNING,
    STOPPED,
    STOPPING,
    Health,
    Metrics,
    message_context,
)
from worker.streaming.positions import PositionCheck, TopicIds
from worker.streaming.rebalance import Revocations
from worker.streaming.settings import Settings
from worker.streaming.sinks import (
    AlertRulesSink,
    AlertsOutboxSink,
    LedgerSink,
    OutputSink,
    ResultWriter,
    Sink,
)
from worker.streaming.transport import RecordReader, UnreadableRecord

if TYPE_CHECKING:
    from worker.alerts.stage import AlertStage

log = structlog.get_logger("worker.streaming")

#: How often the lag asks the partitions' end offsets (between fetches, from the high watermark).
LAG_REFRESH_S = 5.0


@dataclass
class _Classifying:
    """A batch on the model thread: its frames and the future of their results."""

    batch: Batch
    frames: list[Entry]
    results: Future[list[FrameResult]]
    processed_at: datetime


class Worker:
    """The streaming worker. Build it with its parts (see `service.open_worker`), then `run()`.

    The consumer must be created with `enable_auto_commit=False`; the worker subscribes it.
    Without `alerts` (ALERT_RULES=none) no alert rules are evaluated and no alerts published;
    `camera_health` is the step that counts each camera's frames, run right after "write".
    `open_probe()` makes a group-less consumer like `consumer` (`transport.RecordReader` reads a
    partition with it to find a record that cannot be read). `after_step(name)` is called after
    each delivery step and each commit succeeded (the test suite's crash points use it: see
    `service.failpoint`). `diagnose()` is called on each retry of a systemic fault and says what
    is wrong with the set-up, if anything it checks is (the database schema's revision): shown in
    /readyz and the log.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        classifier: FrameClassifier,
        writer: ResultWriter,
        decoder: Decoder,
        metrics: Metrics,
        health: Health,
        alerts: AlertStage | None = None,
        camera_health: Sink | None = None,
        open_probe: Callable[[], Consumer] | None = None,
        after_step: Callable[[str], None] | None = None,
        diagnose: Callable[[], str | None] | None = None,
        topic_ids: TopicIds | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.classifier = classifier
        self.decoder = decoder
        self.metrics = metrics
        self.health = health
        self.alerts = alerts
        self.dead_letters = DeadLetterPublisher(
            producer, settings.dlq_topic, settings.worker_id, settings.max_message_bytes
        )
        guard = IsolationGuard(settings.systemic_after_isolated)
        ledger = LedgerSink(writer, metrics, guard)
        output = OutputSink(
            producer, settings.detections_topic, self.dead_letters, classifier.catalogue, metrics, guard=guard
        )
        self.sinks: list[Sink] = (
            [ledger, AlertRulesSink(alerts), output, AlertsOutboxSink(alerts, producer)]
            if alerts is not None
            else [ledger, output]
        )
        self._diagnose = diagnose or (lambda: None)
        if camera_health is not None:  # `worker.streaming.camera_sink`: right after "write"
            self.sinks.insert(1, camera_health)
        self._after_step = after_step or (lambda name: None)
        self.reader = RecordReader(consumer, open_probe or _no_probe)
        self._queue: deque[Entry] = deque()
        self._in_flight: Batch | None = None  # being delivered
        self._classifying: _Classifying | None = None  # on the model meanwhile
        self._model_thread: ThreadPoolExecutor | None = None
        self._revocations = Revocations()
        self._paused: set[TopicPartition] = set()
        self._held: set[TopicPartition] = set()  # paused while a poll's frames decode (`_keep_group`)
        self._committed: dict[TopicPartition, int] = {}  # the offsets committed, as far as known here
        self._ends: dict[TopicPartition, int] = {}  # end offsets last asked (`_update_lag`)
        self._ends_at = 0.0
        self._unchecked: set[TopicPartition] = set()  # assigned, their position not yet checked
        self._topics_checked_at = time.monotonic()
        self.positions = PositionCheck(
            consumer,
            topic_ids or (lambda topic: None),
            settings.position_lost_policy,
            on_reset=lambda reason, policy: metrics.position_resets.labels(reason, policy).inc(),
        )
        self._retrying = False
        self._poll_failures = 0
        self._poll_failing_since: float | None = None
        self._stopping = False
        self._stop_requested_at: float | None = None
        self._abandoned = False

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until `request_stop()`; returns 0 after a clean stop, 1 if the batch in flight
        had to be left uncommitted (it will be redelivered)."""
        self._publish_left_alerts()
        self.consumer.subscribe([self.settings.frames_topic], listener=self._revocations)
        log.info("worker.started", topic=self.settings.frames_topic, group=self.settings.consumer_group)
        self.health.tick(RUNNING)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as self._model_thread:
            while not self._stopping:
                if self._queued_weight() < self.settings.batch_tiles:  # the queue stays bounded
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
        except Exception as error:
            log.warning(
                "alerts.publish_deferred",
                error=shown(describe(error)),
                note="unpublished alerts go out after the next batch",
            )

    def request_stop(self) -> None:
        """Ask the loop to finish its batch and return (safe to call from a signal handler)."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
        self._stopping = True

    # --- poll, decode, tile, queue --------------------------------------------------------------

    def _poll(self, timeout_ms: int) -> None:
        try:
            records, unreadable = self.reader.poll(timeout_ms, self._paused)
        except Exception as error:  # not a record's fault: the client or the cluster
            self._poll_failed(error)
            return
        rewound = self._apply_revocations() | self._check_positions(records)
        if not records and not unreadable and (unreachable := self._broker_unreachable()) is not None:
            self._poll_failed(unreachable)  # an idle poll says nothing of the brokers: the heartbeat does
            return
        if self._poll_failing_since is not None:
            self._poll_failures, self._poll_failing_since = 0, None
            if self._in_flight is None or self._in_flight.failing_since is None:
                self.health.recovered()
            log.info("poll.recovered")
        if self._retrying:
            self._pause_all()  # partitions assigned during an outage start paused too
        # A rewound partition's records from this poll lie past its new position: fetched again.
        now = time.monotonic()
        # Skipped offsets first: a poll's records of a partition lie past the offsets skipped in it.
        for skipped in unreadable:
            source = skipped.source
            if TopicPartition(source.topic, source.partition) not in rewound:
                self._queue.append(Entry(*_unreadable_entry(skipped), now))
                self.metrics.skipped_records.inc()
        messages = [_inbound(r) for r in records if TopicPartition(r.topic, r.partition) not in rewound]
        if messages:
            try:
                outcomes = self.decoder.decode_all(messages, keep_alive=self._keep_group)
            finally:
                self._release_held()
            for message, outcome in zip(messages, outcomes, strict=True):
                self._queue.append(Entry(message, self._tile_or_refusal(message, outcome), now))
            self._apply_revocations()  # a rebalance during a long decode (`_keep_group`'s polls)
        self._update_lag()
        self.health.tick(queued=len(self._queue))

    def _check_positions(self, records: list[Any]) -> frozenset[TopicPartition]:
        """Check where partitions read (`positions.PositionCheck`): those assigned since the last
        poll, and every KAFKA_TOPIC_CHECK_MS the topics' ids. Returns the partitions moved: their
        records from this poll, and their entries not yet committed, are dropped (read again from
        the new position). A check that cannot be done now is done at the next poll, its
        partitions moved back to the first record this poll returned for them."""
        assigned = (self._revocations.take_assigned() | self._unchecked) & set(self.consumer.assignment())
        moved: set[TopicPartition] = set()
        try:
            if assigned:
                findings = self.positions.check(assigned)
                self._unchecked = set()
                for finding in findings:
                    if finding.committed is not None:
                        self._committed[finding.partition] = finding.committed
                moved |= {f.partition for f in findings if f.moved_to is not None}
            due = time.monotonic() - self._topics_checked_at >= self.settings.topic_check_ms / 1000
            if due and self._poll_failing_since is None and self.consumer.assignment():
                self._topics_checked_at = time.monotonic()
                moved |= {f.partition for f in self.positions.recheck(self.consumer.assignment())}
        except Exception as error:
            log.warning("partition.position_check_deferred", error=shown(describe(error)))
            self._unchecked = set(assigned)
            for tp in assigned:
                offsets = [r.offset for r in records if TopicPartition(r.topic, r.partition) == tp]
                if offsets:
                    self.consumer.seek(tp, min(offsets))
            moved |= assigned
        if moved:
            self._forget(moved)
        return frozenset(moved)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the uncommitted entries of `partitions` (queued, on the model, being delivered): their
        partition reads again from a new position."""
        self._queue = deque(e for e in self._queue if e.partition not in partitions)
        for batch in (self._in_flight, self._classifying.batch if self._classifying is not None else None):
            if batch is not None:
                batch.drop(partitions)

    def _broker_unreachable(self) -> BaseException | None:
        """An error when the group coordinator has answered no heartbeat for a session timeout (the
        brokers are down or cut off: kafka-python's poll then returns nothing and raises nothing)."""
        try:
            metrics = self.consumer.metrics()
        except Exception:  # no metrics: nothing to say
            return None
        age = metrics.get("consumer-coordinator-metrics", {}).get("last-heartbeat-seconds-ago")
        limit = self.settings.session_timeout_ms / 1000
        if not isinstance(age, int | float) or not math.isfinite(age) or age <= limit:
            return None  # none yet (inf: the group is still forming), or recent
        return KafkaConnectionError(
            f"no heartbeat answered for {age:.0f} s (KAFKA_SESSION_TIMEOUT_MS is {limit:g} s): the brokers"
            f" at {self.settings.bootstrap_servers} are unreachable"
        )

    def _keep_group(self) -> None:
        """While a poll's frames take long to decode: poll with every partition paused, so that the
        group keeps this worker (KAFKA_MAX_POLL_INTERVAL_MS) and nothing new is fetched. Records a
        rebalance lets through are not lost: their partition is moved back to the first of them."""
        fetching = set(self.consumer.assignment()) - self._paused - self.reader.suspects - self._held
        if fetching:
            self.consumer.pause(*fetching)
            self._held |= fetching
        try:
            returned = self.consumer.poll(timeout_ms=0)
        except Exception as error:  # the next real poll meets it again, and reports it
            log.warning("poll.keep_alive_failed", error=shown(describe(error)))
            return
        for tp, records in returned.items():
            if records:
                self.consumer.seek(tp, min(r.offset for r in records))
        self.health.tick()

    def _release_held(self) -> None:
        """Resume what `_keep_group` paused (unless a retry or the record reader holds it now)."""
        if self._held:
            resume = (self._held & set(self.consumer.assignment())) - self._paused - self.reader.suspects
            if resume:
                self.consumer.resume(*resume)
            self._held = set()

    def _poll_failed(self, error: BaseException) -> None:
        """A poll raised for a reason that is no record's (authorisation, a client fault): logged,
        counted, reported, and polled again after a backoff; consumption is not skipped."""
        self._poll_failures += 1
        if self._poll_failing_since is None:
            self._poll_failing_since = time.monotonic()
        self.metrics.poll_errors.inc()
        delay_ms = min(
            self.settings.retry_backoff_ms * 2 ** (self._poll_failures - 1),
            self.settings.retry_backoff_max_ms,
        )
        text = shown(describe(error))
        log.warning("poll.failed", error=text, attempt=self._poll_failures, delay_ms=delay_ms)
        self.health.failing("poll", text, self._poll_failing_since, systemic=classify(error) != TRANSIENT)
        time.sleep(delay_ms / 1000)

    def _tile_or_refusal(
        self, message: InboundMessage, outcome: DecodedFrame | Rejected
    ) -> TiledFrame | Rejected:
        if isinstance(outcome, DecodedFrame):
            try:
                return tile_frame(outcome, self.classifier.inferencer)
            except Exception as error:  # tiling is bounded by the decoder's checks: a bug if reached
                log.exception("tiling.unexpected_error", source=str(message.source))
                detail = f"tiling failed unexpectedly: {shown(describe(error))}"
                outcome = Rejected(DECODER_ERROR, DECODE, detail, message.source, outcome.meta)
        with message_context(message.source, outcome.meta.frame_id if outcome.meta else None):
            log.warning(
                "frame.refused", reason=outcome.reason, stage=outcome.stage, detail=shown(outcome.detail)
            )
        return outcome

    def _apply_revocations(self) -> frozenset[TopicPartition]:
        """Forget the revoked partitions' uncommitted entries (`rebalance.Revocations.apply`);
        returns the partitions rewound."""
        on_model = self._classifying.batch if self._classifying is not None else None
        batches = [b for b in (self._in_flight, on_model) if b is not None]
        applied = self._revocations.apply(self.consumer, self.reader, self._queue, batches)
        if applied.revoked:
            self._queue = deque(applied.queue)
            self._paused -= applied.revoked
        return applied.rewound

    def _poll_timeout_ms(self) -> int:
        """How long the next poll may wait: not at all while a batch is on the model (its delivery
        waits); else until the oldest queued entry is due, at most KAFKA_POLL_TIMEOUT_MS."""
        if self._classifying is not None:
            return 0
        if not self._queue:
            return self.settings.poll_timeout_ms
        waited_ms = (time.monotonic() - self._queue[0].received_at) * 1000
        return int(max(0.0, min(self.settings.poll_timeout_ms, self.settings.batch_max_wait_ms - waited_ms)))

    def _queued_weight(self) -> int:
        return sum(e.weight for e in self._queue)

    def _batch_due(self) -> bool:
        """A full batch is queued, or the oldest entry waited BATCH_MAX_WAIT_MS."""
        if not self._queue:
            return False
        if self._queued_weight() >= self.settings.batch_tiles:
            return True
        return (time.monotonic() - self._queue[0].received_at) * 1000 >= self.settings.batch_max_wait_ms

    def _take_batch(self) -> Batch:
        """The oldest queued entries, whole frames, up to BATCH_TILES of weight (at least one)."""
        entries: list[Entry] = []
        weight = 0
        while self._queue and (not entries or weight + self._queue[0].weight <= self.settings.batch_tiles):
            entry = self._queue.popleft()
            entries.append(entry)
            weight += entry.weight
        return Batch(entries)

    # --- one batch: model, then deliver ---------------------------------------------------------

    def _classify_and_deliver_previous(self, batch: Batch) -> None:
        """Put `batch` on the model thread and, while the model works, deliver the batch before it."""
        frames = [e for e in batch.entries if isinstance(e.outcome, TiledFrame)]
        self._deliver_classified(then=self._submit(batch, frames))

    def _submit(self, batch: Batch, frames: list[Entry]) -> _Classifying:
        assert self._model_thread is not None
        tiled = [e.outcome for e in frames if isinstance(e.outcome, TiledFrame)]
        processed_at = datetime.now(UTC)
        return _Classifying(
            batch,
            frames,
            self._model_thread.submit(self.classifier.classify, tiled, processed_at),
            processed_at,
        )

    def _deliver_classified(self, then: _Classifying | None = None) -> None:
        """Wait for the batch on the model (if any), deliver it; `then` is on the model meanwhile."""
        current, self._classifying = self._classifying, then
        if current is None:
            return
        self._in_flight = current.batch  # revocations during a retry below drop its entries
        try:
            classified = self._results(current)
            if classified is None:
                return
            if self._abandoned:  # the batch before was left uncommitted: this one's offsets would pass it
                log.info(
                    "batch.not_delivered",
                    frames=len(current.batch.entries),
                    reason="an earlier batch was abandoned",
                )
                return
            for entry, result in zip(*classified, strict=True):
                entry.result = result
            delivered = self._deliver(current.batch)
        finally:
            self._in_flight = None
        if delivered:
            self._count(current.batch)

    def _results(self, classifying: _Classifying) -> tuple[list[Entry], list[FrameResult]] | None:
        """(frames, their results) of a batch on the model; a model failure is retried like a
        failed step (None when the batch had to be abandoned on the way out)."""
        attempt = 0
        while True:
            try:
                return classifying.frames, classifying.results.result()
            except Exception as error:
                attempt += 1
                if not self._may_retry(classifying.batch, "classify", attempt, error):
                    return None
                kept = {id(e) for e in classifying.batch.entries}  # revoked ones are gone
                classifying = self._submit(
                    classifying.batch, [e for e in classifying.frames if id(e) in kept]
                )

    def _deliver(self, batch: Batch) -> bool:
        """Run the sinks, then commit; a failed step is retried with backoff, resuming at that
        step (the steps before it are done and recorded on the batch). False if abandoned."""
        attempt = 0
        while True:
            if not batch.entries:  # every partition of the batch was revoked meanwhile
                break
            step = "commit"
            try:
                for sink in self.sinks:
                    if sink.name in batch.done:
                        continue
                    step = sink.name
                    sink.deliver(batch)
                    batch.done.add(sink.name)
                    self._observe_latency(sink.name, batch)
                    self._after_step(sink.name)
                step = "commit"
                self._commit(batch)
                self._after_step("commit")
            except Exception as error:
                attempt += 1
                if not self._may_retry(batch, step, attempt, error):
                    return False
                continue
            break
        self._resume_all()
        if batch.failing_since is not None:
            self.health.recovered()
            log.info("batch.recovered", failed_for_s=round(time.monotonic() - batch.failing_since, 1))
        return True

    def _commit(self, batch: Batch) -> None:
        offsets = batch.next_offsets()
        if not offsets:
            return
        try:
            self.consumer.commit(
                {
                    tp: OffsetAndMetadata(o, self.positions.commit_metadata(tp.topic), -1)
                    for tp, o in offsets.items()
                }
            )
        except CommitFailedError as error:
            # The group rebalanced: the partitions have a new owner, who re-reads from the last
            # commit. Everything is written; the redelivered frames are deduplicated by frame id.
            log.warning("batch.commit_refused", error=shown(error), offsets=_offset_text(offsets))
            return
        log.info(
            "batch.committed",
            frames=len(batch.results()),
            refused=sum(e.refused for e in batch.entries),
            tiles=sum(e.tiles for e in batch.entries),
            alerts_raised=batch.alerts_raised,
            offsets=_offset_text(offsets),
        )
        self._committed.update(offsets)
        self._update_lag()

    # --- failures: backoff, pause, stop ---------------------------------------------------------

    def _may_retry(self, batch: Batch, step: str, attempt: int, error: BaseException) -> bool:
        """Log, count, report, pause consumption and wait before the next attempt (polling
        meanwhile, so the group keeps this worker). False when a stop was requested and
        SHUTDOWN_TIMEOUT_S passed: the batch is abandoned, uncommitted."""
        kind = classify(error)
        if batch.failing_since is None:
            batch.failing_since = time.monotonic()
        delay_ms = min(
            self.settings.retry_backoff_ms * 2 ** (attempt - 1), self.settings.retry_backoff_max_ms
        )
        text = shown(describe(error))
        self.metrics.retries.labels(step=step).inc()
        diagnosis = self._diagnosis() if kind == SYSTEMIC else None
        self.health.failing(step, text, batch.failing_since, systemic=kind != TRANSIENT, diagnosis=diagnosis)
        if kind == TRANSIENT:
            log.warning("batch.retry", step=step, attempt=attempt, delay_ms=delay_ms, error=text)
        else:  # no frame could be blamed: a fault of the set-up (or of this code) that needs people
            log.error(
                "batch.retry",
                step=step,
                attempt=attempt,
                delay_ms=delay_ms,
                error=text,
                kind=kind,
                diagnosis=diagnosis,
                note="not a transient outage: fix the cause; the batch is retried until then"
                if kind == SYSTEMIC
                else "an unexpected error no sink could pin on one frame; the batch is retried",
                exc_info=attempt == 1,
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

    def _diagnosis(self) -> str | None:
        """What `diagnose` finds (a failing check is itself the diagnosis)."""
        try:
            return self._diagnose()
        except Exception as error:
            return f"the set-up could not be checked: {shown(describe(error))}"

    def _pause_all(self) -> None:
        assigned = set(self.consumer.assignment())
        new = assigned - self._paused
        if new:
            self.consumer.pause(*new)
            self._paused |= new

    def _resume_all(self) -> None:
        if self._retrying:
            still = self._paused & set(self.consumer.assignment()) - self.reader.suspects
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

    def _observe_latency(self, step: str, batch: Batch) -> None:
        """After the write (rows committed) and the publish (detections acknowledged): each frame's
        time since it was captured, by the camera's captured_at and this machine's clock."""
        histogram = {"write": self.metrics.capture_to_commit, "publish": self.metrics.capture_to_publish}.get(
            step
        )
        if histogram is None:
            return
        now = datetime.now(UTC)
        for result in batch.results():
            histogram.observe(max(0.0, (now - result.meta.captured_at).total_seconds()))

    def _update_lag(self) -> None:
        """After every poll: per assigned partition, its end (the high watermark the last fetch saw,
        or the end offset asked at most every LAG_REFRESH_S — a paused partition is not fetched)
        minus the offset committed: the frames not yet delivered, read or not."""
        assigned = list(self.consumer.assignment())
        now = time.monotonic()
        if assigned and self._poll_failing_since is None and now - self._ends_at >= LAG_REFRESH_S:
            self._ends_at = now
            try:
                self._ends.update(self.consumer.end_offsets(assigned, timeout_ms=1000))
            except Exception as error:  # the broker check reports outages; the lag waits
                log.debug("lag.end_offsets_failed", error=shown(describe(error)))
        for tp in assigned:
            ends = [e for e in (self.consumer.highwater(tp), self._ends.get(tp)) if e is not None]
            offset = self._committed.get(tp)
            if ends and offset is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, max(ends) - offset)
                )


def _inbound(record: Any) -> InboundMessage:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (record.headers or ()))
    return InboundMessage(
        source=KafkaCoordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=headers,
        timestamp_ms=record.timestamp,
    )


def _unreadable_entry(skipped: UnreadableRecord) -> tuple[InboundMessage, Rejected]:
    """The message and refusal that dead-letter a record kafka-python could not read (nothing of
    it is known but where it was)."""
    message = InboundMessage(source=skipped.source, key=None, value=None, headers=())
    detail = f"the record (or the record batch holding it) could not be read: {skipped.error}"
    return message, Rejected(UNREADABLE_RECORD, TRANSPORT, shown(detail, 1500), skipped.source)


def _no_probe() -> Any:
    raise RuntimeError("this worker was built without open_probe: it cannot locate an unreadable record")


def _offset_text(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(offsets.items()))
