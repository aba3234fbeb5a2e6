"""Where reading a partition starts, checked each time it is assigned: no frame skipped silently.

Kafka resumes a partition at the group's committed offset. That offset means nothing once the
topic was deleted and created again, and less than it seems once retention deleted records the
worker had not read. `PositionCheck.check(partitions)` runs after the poll that assigned them and
compares, for each, the committed offset with the partition's log (its first and end offsets) and
the topic's id (Kafka ≥ 2.8 gives every topic a UUID that a re-created topic does not keep);
`recheck(partitions)` runs every KAFKA_TOPIC_CHECK_MS while they are read, because a topic
deleted and created again under a running consumer announces itself by no rebalance (the
consumer goes on fetching at its old offset in the new log):

- `new`: nothing committed (a new group): reading starts at the log's start, as before.
- `recreated`: the topic's id changed since this process (or the commit, whose metadata holds the
  id) saw it, or the committed offset lies past the log's end. KAFKA_POSITION_LOST_POLICY decides:
  `earliest` reads the new log from its start (the default: nothing skipped; frames stored
  already are recognised by their id), `latest` from its end.
- `truncated`: the committed offset lies before the log's start (retention deleted records never
  read): reading starts at the log's start, nothing earlier exists; the log line says how many
  records were lost.

Every finding but `new` is logged as an error and counted in
`steel_worker_position_resets_total{reason, policy}`; the records a poll returned for such a
partition are dropped (they came from the old position) and fetched again from the new one.
`commit_metadata(topic)` is what the worker commits beside each offset, so that a restarted
worker can tell a re-created topic too (brokers that keep commit metadata: Apache Kafka does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from kafka import TopicPartition

from worker.core.clients import Consumer
from worker.core.failures import describe
from worker.core.refusals import shown

log = structlog.get_logger("worker.streaming")

EARLIEST, LATEST = "earliest", "latest"
POLICIES = (EARLIEST, LATEST)
NEW, RECREATED, TRUNCATED, KEPT = "new", "recreated", "truncated", "kept"
_ID_PREFIX = "topic-id="

#: topic name → its id (None where the broker gives none).
TopicIds = Callable[[str], str | None]


@dataclass(frozen=True)
class Finding:
    """What the check found for one partition, and where reading starts now (None: unchanged)."""

    partition: TopicPartition
    reason: str
    committed: int | None
    first: int
    end: int
    moved_to: int | None = None


class PositionCheck:
    """The check of newly assigned partitions (see the module doc); the loop's thread only.

    `topic_ids(topic)` asks the cluster for a topic's id; `on_reset(reason, policy)` counts a
    finding that moved a position."""

    def __init__(
        self,
        consumer: Consumer,
        topic_ids: TopicIds,
        policy: str = EARLIEST,
        on_reset: Callable[[str, str], None] | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy: expected one of {', '.join(POLICIES)}, received {policy!r}")
        self.consumer = consumer
        self.topic_ids = topic_ids
        self.policy = policy
        self.on_reset = on_reset or (lambda reason, policy: None)
        self._ids: dict[str, str | None] = {}

    def commit_metadata(self, topic: str) -> str:
        """The metadata committed with an offset of `topic`: its id, when known."""
        topic_id = self._ids.get(topic)
        return f"{_ID_PREFIX}{topic_id}" if topic_id else ""

    def check(self, partitions: Iterable[TopicPartition]) -> list[Finding]:
        """Check each partition; returns the findings (those that moved a position have `moved_to`)."""
        partitions = sorted(partitions)
        if not partitions:
            return []
        ids = {topic: self._topic_id(topic) for topic in {tp.topic for tp in partitions}}
        firsts = self.consumer.beginning_offsets(partitions)
        ends = self.consumer.end_offsets(partitions)
        findings = []
        for tp in partitions:
            committed, committed_id = self._committed(tp)
            seen, now = self._ids.get(tp.topic) or committed_id, ids[tp.topic]
            id_changed = seen is not None and now is not None and seen != now
            finding = self._judge(tp, committed, (firsts[tp], ends[tp]), id_changed)
            findings.append(finding)
            if finding.moved_to is not None:
                self._move(finding)
        self._ids.update({topic: found for topic, found in ids.items() if found is not None})
        return findings

    def recheck(self, partitions: Iterable[TopicPartition]) -> list[Finding]:
        """For partitions read for a while: a finding (`recreated`, position moved by the policy)
        for each partition of a topic whose id changed since it was last seen — a topic deleted
        and created again while the worker reads it, which no rebalance announces."""
        partitions = sorted(partitions)
        changed = set()
        for topic in {tp.topic for tp in partitions}:
            seen, now = self._ids.get(topic), self._topic_id(topic)
            if seen is not None and now is not None and seen != now:
                changed.add(topic)
            if now is not None:
                self._ids[topic] = now
        moved = [tp for tp in partitions if tp.topic in changed]
        if not moved:
            return []
        firsts = self.consumer.beginning_offsets(moved)
        ends = self.consumer.end_offsets(moved)
        findings = []
        for tp in moved:
            target = firsts[tp] if self.policy == EARLIEST else ends[tp]
            finding = Finding(tp, RECREATED, None, firsts[tp], ends[tp], target)
            findings.append(finding)
            self._move(finding)
        return findings

    def _move(self, finding: Finding) -> None:
        tp = finding.partition
        assert finding.moved_to is not None
        self.consumer.seek(tp, finding.moved_to)
        self.on_reset(finding.reason, self.policy)
        log.error(
            "partition.position_reset",
            partition=f"{tp.topic}[{tp.partition}]",
            reason=finding.reason,
            committed=finding.committed,
            log_start=finding.first,
            log_end=finding.end,
            moved_to=finding.moved_to,
            policy=self.policy if finding.reason == RECREATED else EARLIEST,
            lost=finding.first - (finding.committed or 0) if finding.reason == TRUNCATED else 0,
        )

    def _judge(
        self, tp: TopicPartition, committed: int | None, log_range: tuple[int, int], id_changed: bool
    ) -> Finding:
        first, end = log_range
        if committed is None:
            return Finding(tp, NEW, None, first, end)
        if id_changed or committed > end:
            return Finding(tp, RECREATED, committed, first, end, first if self.policy == EARLIEST else end)
        if committed < first:
            return Finding(tp, TRUNCATED, committed, first, end, first)
        return Finding(tp, KEPT, committed, first, end)

    def _committed(self, tp: TopicPartition) -> tuple[int | None, str | None]:
        found = self.consumer.committed(tp, metadata=True)
        if found is None:
            return None, None
        metadata = getattr(found, "metadata", None) or ""
        topic_id = metadata[len(_ID_PREFIX) :] if metadata.startswith(_ID_PREFIX) else None
        return int(found.offset), topic_id

    def _topic_id(self, topic: str) -> str | None:
        try:
            return self.topic_ids(topic)
        except Exception as error:  # a broker without ids, or a passing fault: the offsets still decide
            log.warning("partition.topic_id_unknown", topic=topic, error=shown(describe(error)))
            return None
