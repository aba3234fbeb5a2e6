"""The dead-letter queue: a refused message goes to the DLQ topic with headers saying why.

The dead letter keeps the original key, value and headers (so it can be inspected and replayed as
it was), less any `dlq-*` headers a previous trip left, plus the `dlq-*` headers of
`schemas/dead-letter-headers.v1.json`. A dead letter must always be producible, or the loop would
retry it forever, so what does not fit is left out, in this order, each with a header giving its
size: the value (`dlq-value-omitted`: replay it from `dlq-source-*` while the topic keeps it), the
original headers (`dlq-headers-omitted`), the key
(`dlq-key-omitted`). `minimal=True` leaves all three out (after the broker refused the dead letter).
A dead letter with neither key nor value gets an empty value (clients refuse a record without both).
Every header value is valid UTF-8 and bounded: the detail is cut to MAX_DETAIL characters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.core import contracts
from worker.core.clients import Producer
from worker.core.refusals import shown
from worker.streaming.decode import InboundMessage, Rejected

DLQ_PREFIX = "dlq-"
VALUE_OMITTED_HEADER = "dlq-value-omitted"
HEADERS_OMITTED_HEADER = "dlq-headers-omitted"
KEY_OMITTED_HEADER = "dlq-key-omitted"
MAX_DETAIL = 2000
#: Room for the record's own framing (lengths, offsets, timestamps) next to key, value and headers.
RECORD_OVERHEAD_BYTES = 1024

Headers = list[tuple[str, bytes]]


def dead_letter_header_values(
    message: InboundMessage, rejected: Rejected, worker_id: str, at: datetime
) -> dict[str, str]:
    """The `dlq-*` headers as strings; valid against dead-letter-headers.v1 (checked)."""
    values = {
        "dlq-reason": rejected.reason,
        "dlq-stage": rejected.stage,
        "dlq-detail": shown(rejected.detail, MAX_DETAIL),
        "dlq-source-topic": message.source.topic,
        "dlq-source-partition": str(message.source.partition),
        "dlq-source-offset": str(message.source.offset),
        "dlq-at": at.astimezone(UTC).isoformat(),
        "dlq-worker": worker_id,
    }
    contracts.validate(contracts.DEAD_LETTER_HEADERS, values)
    return values


def _size(headers: Headers) -> int:
    return sum(len(k.encode("utf-8", "surrogatepass")) + len(v) for k, v in headers)


def dead_letter(
    message: InboundMessage,
    rejected: Rejected,
    worker_id: str,
    at: datetime,
    max_bytes: int,
    *,
    minimal: bool = False,
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the dead letter of `message`, at most `max_bytes` in all (see
    the module doc for what is left out, and in which order, when it would not fit)."""
    added = [
        (k, v.encode("utf-8")) for k, v in dead_letter_header_values(message, rejected, worker_id, at).items()
    ]
    key, value = message.key, message.value
    original = [(k, v) for k, v in message.headers if not k.lower().startswith(DLQ_PREFIX)]

    def too_large() -> bool:
        total = len(key or b"") + len(value or b"") + _size(original) + _size(added)
        return minimal or total + RECORD_OVERHEAD_BYTES > max_bytes

    if value is not None and too_large():
        added.append((VALUE_OMITTED_HEADER, str(len(value)).encode()))
        value = None
    if original and too_large():
        added.append((HEADERS_OMITTED_HEADER, str(_size(original)).encode()))
        original = []
    if key is not None and too_large():
        added.append((KEY_OMITTED_HEADER, str(len(key)).encode()))
        key = None
    if key is None and value is None:  # Kafka clients refuse a record with neither
        value = b""
    return key, value, original + added


class DeadLetterPublisher:
    """Produces dead letters to the dead-letter topic; the caller flushes the producer and reads
    the returned futures. `max_bytes` is the largest message the producer may send."""

    def __init__(self, producer: Producer, topic: str, worker_id: str, max_bytes: int) -> None:
        self.producer = producer
        self.topic = topic
        self.worker_id = worker_id
        self.max_bytes = max_bytes

    def publish(self, message: InboundMessage, rejected: Rejected, *, minimal: bool = False) -> Any:
        """Send the dead letter of `message`; returns the send future."""
        key, value, headers = dead_letter(
            message, rejected, self.worker_id, datetime.now(UTC), self.max_bytes, minimal=minimal
        )
        return self.producer.send(self.topic, key=key, value=value, headers=headers)
