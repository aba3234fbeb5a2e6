"""Polling Kafka past records that cannot be read.

kafka-python parses fetched record batches inside `KafkaConsumer.poll`: a batch whose CRC fails, a
codec that fails or is missing, a header key that is not UTF-8 or a batch over the decompression
bound (`worker.streaming.codecs`) makes `poll` raise, and the consumer's position stays on that
record. Worse, in kafka-python 3.0.12 the partition's record iterator is left open after the
exception: the next `poll` that fetches that partition spins forever, holding the fetcher's lock,
unless the partition was first moved to another offset (tests/test_codecs.py pins this). One bad
record would stop the worker for good.

`RecordReader.poll` polls; when the poll raises for a record's bytes
(`failures.is_unreadable_record`) every partition it was fetching becomes a suspect and is paused
(a paused partition is not parsed, so nothing spins). A throwaway consumer (`open_probe`, no
group) then reads each suspect at the main consumer's position: the one that raises is the bad
record's partition, which is moved one offset past it (an `UnreadableRecord` says where) and
resumed; one that returns a record, or has nothing to read, is resumed as it is; one the probe
could not reach in time stays paused and is probed again at the next poll. A record batch that
cannot be read at all is stepped over one offset at a time: each offset gets its own
`UnreadableRecord` (kafka-python's error does not say where the batch ends). Any other error from
`poll` propagates: it is not the data's. Only public consumer calls are used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from kafka import TopicPartition

from worker.core.clients import Consumer
from worker.core.failures import describe, is_unreadable_record
from worker.core.records import KafkaCoordinates
from worker.core.refusals import shown

log = structlog.get_logger("worker.streaming")

#: Polls of one suspect by the probe, and how long each may wait for the broker.
PROBE_POLLS = 3
PROBE_POLL_MS = 1000
READABLE, UNREADABLE, UNKNOWN = "readable", "unreadable", "unknown"


@dataclass(frozen=True)
class UnreadableRecord:
    """A record (or the record batch holding it) that kafka-python could not read; skipped."""

    source: KafkaCoordinates
    error: str


class RecordReader:
    """`consumer.poll` that steps over unreadable records (see the module doc).

    `open_probe()` makes a KafkaConsumer without a group, configured like `consumer` (brokers,
    security, fetch sizes); it is closed after each use. `suspects` are the partitions this
    reader keeps paused; the caller must not resume them.
    """

    def __init__(self, consumer: Consumer, open_probe: Callable[[], Consumer]) -> None:
        self.consumer = consumer
        self._open_probe = open_probe
        self.suspects: set[TopicPartition] = set()

    def poll(
        self, timeout_ms: int, paused: Iterable[TopicPartition] = ()
    ) -> tuple[list[Any], list[UnreadableRecord]]:
        """(records, unreadable) of one poll; `paused`: partitions the caller keeps paused (they
        are not suspects: they were not fetched)."""
        skipped = self._settle() if self.suspects else []
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except Exception as error:
            if not is_unreadable_record(error):
                raise
            log.warning("poll.unreadable_record", error=shown(describe(error)))
            fetching = set(self.consumer.assignment()) - set(paused) - self.suspects
            self.consumer.pause(*fetching)
            self.suspects |= fetching
            return [], skipped + self._settle()
        return [record for batch in batches.values() for record in batch], skipped

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions were revoked: they are no longer this reader's to settle."""
        self.suspects -= set(partitions)

    def _settle(self) -> list[UnreadableRecord]:
        self.suspects &= set(self.consumer.assignment())
        if not self.suspects:
            return []
        positions = {tp: self.consumer.position(tp) for tp in sorted(self.suspects)}
        skipped: list[UnreadableRecord] = []
        for tp, (verdict, error) in _probe(self._open_probe, positions).items():
            if verdict == UNKNOWN:
                continue
            if verdict == UNREADABLE:
                self.consumer.seek(tp, positions[tp] + 1)
                record = UnreadableRecord(KafkaCoordinates(tp.topic, tp.partition, positions[tp]), error)
                log.warning("record.unreadable", source=str(record.source), error=shown(record.error))
                skipped.append(record)
            self.suspects.discard(tp)
            self.consumer.resume(tp)
        if self.suspects:
            log.warning(
                "poll.suspects_unsettled",
                partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in self.suspects),
                note="kept paused; probed again at the next poll",
            )
        return skipped


def _probe(
    open_probe: Callable[[], Any], positions: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[str, str]]:
    """For each partition: READABLE (a record or nothing to read at the position), UNREADABLE
    (reading at the position raises: why), or UNKNOWN (the broker did not answer in time)."""
    verdicts: dict[TopicPartition, tuple[str, str]] = {}
    probe = open_probe()
    try:
        ends = probe.end_offsets(list(positions))
        for tp, position in positions.items():
            verdicts[tp] = (UNKNOWN, "")
            if ends.get(tp, 0) <= position:
                verdicts[tp] = (READABLE, "")
                continue
            probe.assign([tp])
            probe.seek(tp, position)
            try:
                for _ in range(PROBE_POLLS):
                    if probe.poll(timeout_ms=PROBE_POLL_MS).get(tp):
                        verdicts[tp] = (READABLE, "")
                        break
            except Exception as error:
                if not is_unreadable_record(error):
                    raise
                verdicts[tp] = (UNREADABLE, describe(error))
                probe.close(timeout_ms=2000)  # polled again after the error, it would spin (module doc)
                probe = open_probe()
    finally:
        probe.close(timeout_ms=2000)
    return verdicts
