"""Replaying dead letters to the frames topic (`steel-worker dlq replay`).

`replay(...)` reads the dead-letter topic, every partition, from its start (or from the first
record at or after `since`) up to the end it had when the replay began — so dead letters that the
replay itself causes are never read back — and sends each dead letter that the selection admits
back to the frames topic as the camera sent it: the original key (the strip id from frame-meta
when the key was left out), value and headers, less the `dlq-*` headers, plus `replay-of` naming
the dead letter (`dlq[partition]@offset`).

Selection: `reasons` (the `dlq-reason` header), and `since` ≤ `dlq-at` < `until`. Of those, a dead
letter is not sent, and counted as:
- `no-bytes`: its value was left out (`dlq-value-omitted`: too large for the topic), or it had none
  (an unreadable record): replay it from `dlq-source-*` while the frames topic keeps it;
- `stored`: the ledger already holds its frame id with the same message sha256 (the frame was
  stored since, e.g. by an earlier replay); checked only when `stored_hashes` is given;
- `collision`: the ledger holds its frame id for another message: it would only come back as
  `duplicate-frame-id`.
A frame replayed twice is harmless: the worker takes the same message at other coordinates as a
redelivery (`StorageWriter`: same sha256), publishes what is stored and writes nothing.

Nothing is sent with `dry_run`; the counts say what would be. Each send is acknowledged (acks=all)
before the replay reports it sent: a failure stops the replay with an error, and what was sent
is counted (running it again skips what is stored by then).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from kafka import TopicPartition

from worker.core import contracts
from worker.core.clients import Consumer, Producer
from worker.core.errors import ConfigError
from worker.core.records import KafkaCoordinates
from worker.streaming.dead_letter import DLQ_PREFIX, KEY_OMITTED_HEADER, VALUE_OMITTED_HEADER
from worker.streaming.decode import InboundMessage, message_sha256

log = structlog.get_logger("worker.streaming")

REPLAY_OF_HEADER = "replay-of"
SENT, STORED, COLLISION, NO_BYTES, FILTERED = "sent", "stored", "collision", "no-bytes", "filtered"
OUTCOMES = (SENT, STORED, COLLISION, NO_BYTES)
_POLL_MS = 500
_IDLE_POLLS = 20  # polls without a record before giving up on reaching the end offsets
_SEND_TIMEOUT_S = 30.0

#: frame ids → the message sha256 the ledger holds for each (ids not stored are absent).
StoredHashes = Callable[[Collection[str]], Mapping[str, str | None]]


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: by reason (None: any) and by `dlq-at` in [since, until)."""

    reasons: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def admits(self, reason: str, at: datetime | None) -> bool:
        if self.reasons is not None and reason not in self.reasons:
            return False
        if at is None:
            return self.since is None and self.until is None
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


@dataclass
class ReplayReport:
    """Counts per dead-letter reason and outcome (`OUTCOMES`, and `filtered`: not selected)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    read: int = 0
    dry_run: bool = False

    def count(self, reason: str, outcome: str) -> None:
        self.counts.setdefault(reason, Counter())[outcome] += 1

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())

    def table(self) -> str:
        """The counts as a text table, a row per reason and a total."""
        verb = "would send" if self.dry_run else SENT
        columns = (SENT, STORED, COLLISION, NO_BYTES, FILTERED)
        header = ("reason", *(verb if c == SENT else c for c in columns))
        rows = [(reason, *(str(c[col]) for col in columns)) for reason, c in sorted(self.counts.items())]
        rows.append(("total", *(str(self.total(col)) for col in columns)))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in [header, *rows]]
        return "\n".join([*lines, f"{self.read} dead letters read"])

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "read": self.read,
            "reasons": {reason: dict(c) for reason, c in sorted(self.counts.items())},
            "total": {outcome: self.total(outcome) for outcome in (*OUTCOMES, FILTERED)},
        }


@dataclass(frozen=True)
class _Letter:
    source: KafkaCoordinates
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    at: datetime | None
    value_omitted: bool

    def original(self) -> InboundMessage:
        """The message as the camera sent it (the `dlq-*` headers dropped)."""
        headers = tuple((k, v) for k, v in self.headers if not k.lower().startswith(DLQ_PREFIX))
        return InboundMessage(source=self.source, key=self.key, value=self.value, headers=headers)


def replay(
    consumer: Consumer,
    producer: Producer,
    *,
    dlq_topic: str,
    frames_topic: str,
    selection: Selection,
    stored_hashes: StoredHashes | None = None,
    dry_run: bool = False,
    progress: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Replay the selected dead letters (see the module doc); `consumer` has no group and is
    assigned here; `progress(report)` is called every few seconds."""
    report = ReplayReport(dry_run=dry_run)
    numbers = sorted(consumer.partitions_for_topic(dlq_topic) or ())
    partitions = [TopicPartition(dlq_topic, p) for p in numbers]
    if not partitions:
        raise ConfigError(f"--dlq-topic: topic {dlq_topic!r} does not exist (or has no partitions)")
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    _seek_start(consumer, partitions, selection.since)
    sender = _Sender(producer, frames_topic, selection, stored_hashes, dry_run, report)
    last_progress = time.monotonic()
    idle = 0
    while any(consumer.position(tp) < ends[tp] for tp in partitions) and idle < _IDLE_POLLS:
        batches = consumer.poll(timeout_ms=_POLL_MS)
        records = [r for tp, batch in batches.items() for r in batch if r.offset < ends[tp]]
        idle = 0 if records else idle + 1
        letters = [_letter(r) for r in records]
        report.read += len(letters)
        sender.replay(letters)
        if progress is not None and time.monotonic() - last_progress > 5:
            progress(report)
            last_progress = time.monotonic()
    if idle >= _IDLE_POLLS:
        log.warning("dlq.replay_incomplete", note="the broker sent no more records before the end offsets")
    return report


def _seek_start(consumer: Consumer, partitions: list[TopicPartition], since: datetime | None) -> None:
    if since is None:
        consumer.seek_to_beginning(*partitions)
        return
    found = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    ends = consumer.end_offsets(partitions)
    for tp in partitions:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])


def _letter(record: Any) -> _Letter:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (record.headers or ()))
    values = {k.lower(): v for k, v in headers}
    at_text = values.get("dlq-at", b"").decode("utf-8", "replace")
    try:
        at = datetime.fromisoformat(at_text) if at_text else None
    except ValueError:
        at = None
    return _Letter(
        source=KafkaCoordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=headers,
        reason=values.get("dlq-reason", b"(none)").decode("utf-8", "replace"),
        at=at,
        value_omitted=VALUE_OMITTED_HEADER in values or record.value is None,
    )


@dataclass
class _Sender:
    """Sends one poll's dead letters back (what `replay` decided to send), counting each."""

    producer: Producer
    frames_topic: str
    selection: Selection
    stored_hashes: StoredHashes | None
    dry_run: bool
    report: ReplayReport

    def replay(self, letters: Iterable[_Letter]) -> None:
        report = self.report
        chosen: list[_Letter] = []
        for letter in letters:
            if not self.selection.admits(letter.reason, letter.at):
                report.count(letter.reason, FILTERED)
            elif letter.value_omitted or not letter.value:
                report.count(letter.reason, NO_BYTES)
            else:
                chosen.append(letter)
        ids = {letter.source: _frame_id(letter) for letter in chosen}
        known = {i for i in ids.values() if i is not None}
        stored = self.stored_hashes(known) if self.stored_hashes is not None and known else {}
        sends = []
        for letter in chosen:
            frame_id = ids[letter.source]
            if frame_id is not None and frame_id in stored:
                same = stored[frame_id] in (None, message_sha256(letter.original()))
                report.count(letter.reason, STORED if same else COLLISION)
            elif self.dry_run:
                report.count(letter.reason, SENT)
            else:
                sends.append((letter, _send(self.producer, self.frames_topic, letter)))
        if sends:
            self.producer.flush(timeout=_SEND_TIMEOUT_S)
            for letter, future in sends:
                future.get(timeout=_SEND_TIMEOUT_S)  # raises what the broker said: the replay stops
                report.count(letter.reason, SENT)


def _frame_meta(letter: _Letter) -> dict[str, Any] | None:
    raw = letter.original().header(contracts.FRAME_META_HEADER)
    try:
        meta = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _frame_id(letter: _Letter) -> str | None:
    meta = _frame_meta(letter)
    frame_id = meta.get("frame_id") if meta else None
    return frame_id if isinstance(frame_id, str) else None


def _send(producer: Producer, topic: str, letter: _Letter) -> Any:
    original = letter.original()
    key = letter.key
    if key is None and any(k.lower() == KEY_OMITTED_HEADER for k, _ in letter.headers):
        meta = _frame_meta(letter)
        strip = meta.get("strip_id") if meta else None
        key = strip.encode() if isinstance(strip, str) else None
    headers = [*original.headers, (REPLAY_OF_HEADER, str(letter.source).encode())]
    return producer.send(topic, key=key, value=letter.value, headers=headers)
