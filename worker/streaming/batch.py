"""What the loop carries between its stages: one `Entry` per consumed record, and `Batch`, a
micro-batch of entries with the record of how far its delivery got.

An entry starts as a tiled frame or a refusal (`Rejected`); a step of the delivery may turn a
frame into a refusal (isolated: the database or the broker refused it alone) and give it the
result to publish. Every entry keeps its message's bytes until its batch is delivered: a frame set
aside by a delivery step is dead-lettered whole, so that `steel-worker dlq replay` can send it back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kafka import TopicPartition

from worker.core.records import FrameResult
from worker.streaming.classify import TiledFrame
from worker.streaming.decode import InboundMessage, Rejected


@dataclass(eq=False)  # entries are compared by identity (their tiles are arrays)
class Entry:
    """One consumed message on its way through the loop: a tiled frame, or a refusal."""

    message: InboundMessage
    outcome: TiledFrame | Rejected
    received_at: float
    result: FrameResult | None = None
    published: bool = False  # its detection message or dead letter is acknowledged (or given up)

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.message.source.topic, self.message.source.partition)

    @property
    def tiles(self) -> int:
        return len(self.outcome.tiles) if isinstance(self.outcome, TiledFrame) else 0

    @property
    def weight(self) -> int:
        """What the entry counts toward BATCH_TILES: its tiles, or 1 for a refusal (so that a
        flood of refusals closes batches, and is dead-lettered and committed, like frames)."""
        return self.tiles if isinstance(self.outcome, TiledFrame) else 1

    @property
    def refused(self) -> bool:
        return isinstance(self.outcome, Rejected)

    def refuse(self, rejected: Rejected) -> None:
        """Turn this entry into a refusal (isolated by a delivery step): no result to publish."""
        self.outcome = rejected
        self.result = None


@dataclass
class Batch:
    """A micro-batch: whole frames in arrival order, the delivery steps done, and since when the
    current step has been failing (None while nothing fails)."""

    entries: list[Entry]
    done: set[str] = field(default_factory=set)
    alerts_raised: int = 0
    started: float = field(default_factory=time.monotonic)
    failing_since: float | None = None

    def drop(self, partitions: set[TopicPartition]) -> list[Entry]:
        """Forget the entries of `partitions` (revoked); returns the entries dropped."""
        self.entries, dropped = split(self.entries, partitions)
        return dropped

    def frames(self) -> list[Entry]:
        """The entries that are frames (not refused), in order."""
        return [e for e in self.entries if not e.refused]

    def results(self) -> list[FrameResult]:
        return [e.result for e in self.entries if e.result is not None]

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the batch's last message there: what to commit."""
        offsets: dict[TopicPartition, int] = {}
        for e in self.entries:
            offsets[e.partition] = max(offsets.get(e.partition, 0), e.message.source.offset + 1)
        return offsets


def split(entries: list[Entry], partitions: set[TopicPartition]) -> tuple[list[Entry], list[Entry]]:
    """(entries not of `partitions`, entries of `partitions`), each in their order."""
    kept = [e for e in entries if e.partition not in partitions]
    return kept, [e for e in entries if e.partition in partitions]
