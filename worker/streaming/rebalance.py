"""Partitions revoked in a rebalance: recorded on kafka-python's IO thread, applied on the loop's.

kafka-python 3 calls a rebalance listener on its IO thread, where blocking calls such as commit
are refused, so `Revocations` (the listener) only records what was revoked. After each poll the
loop calls `Revocations.apply`, which drops every uncommitted entry of the revoked partitions —
queued, on the model, being delivered — so none of them is committed (their next owner re-reads
them from the last commit), and rewinds a revoked partition that was assigned straight back to
this consumer to its first dropped message: kafka-python keeps such a partition's fetch position,
which would otherwise skip the dropped messages and let later commits pass them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from kafka import ConsumerRebalanceListener, TopicPartition

from worker.core.clients import Consumer
from worker.streaming.batch import Batch, Entry, split
from worker.streaming.transport import RecordReader

log = structlog.get_logger("worker.streaming")


@dataclass(frozen=True)
class Applied:
    """What `Revocations.apply` did: the queue without the revoked partitions' entries, every
    partition revoked since the last call, and those rewound (their fetched records lie past the
    new position and are fetched again)."""

    queue: list[Entry]
    revoked: frozenset[TopicPartition] = frozenset()
    rewound: frozenset[TopicPartition] = field(default_factory=frozenset)


class Revocations(ConsumerRebalanceListener):
    """The rebalance listener: records revocations (IO thread), applied by the loop (`apply`)."""

    def __init__(self) -> None:
        self._pending: list[set[TopicPartition]] = []
        self._assigned: list[set[TopicPartition]] = []

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._pending.append(set(revoked))  # list.append is atomic; the loop drains it after poll

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self._assigned.append(assigned)  # checked by the loop after the poll (`positions`)
        log.info("partitions.assigned", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    def take_assigned(self) -> set[TopicPartition]:
        """The partitions assigned since the last call (each assignment once)."""
        taken: set[TopicPartition] = set()
        while self._assigned:
            taken |= self._assigned.pop(0)
        return taken

    def apply(
        self,
        consumer: Consumer,
        reader: RecordReader,
        queue: Sequence[Entry],
        batches: Sequence[Batch],
    ) -> Applied:
        """Drop the revoked partitions' entries from `batches` (in place) and from `queue` (the
        kept ones are returned), forget them in `reader`, and rewind those assigned again."""
        kept = list(queue)
        revoked_all: set[TopicPartition] = set()
        rewound: set[TopicPartition] = set()
        while self._pending:
            revoked = self._pending.pop(0)
            revoked_all |= revoked
            dropped: list[Entry] = []
            for batch in batches:
                dropped += batch.drop(revoked)
            kept, queued = split(kept, revoked)
            dropped += queued
            reader.forget(revoked)
            first: dict[TopicPartition, int] = {}
            for entry in dropped:
                offset = entry.message.source.offset
                first[entry.partition] = min(first.get(entry.partition, offset), offset)
            kept_here = first.keys() & set(consumer.assignment())  # positions kept: rewind them
            for tp in kept_here:
                consumer.seek(tp, first[tp])
            rewound |= kept_here
            log.info(
                "partitions.revoked",
                partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
                dropped_uncommitted=len(dropped),
                rewound=sorted(f"{tp.topic}[{tp.partition}]@{first[tp]}" for tp in kept_here),
            )
        return Applied(kept, frozenset(revoked_all), frozenset(rewound))
