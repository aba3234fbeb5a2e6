"""The dead-letter queue: a refused frame goes, unchanged, to the DLQ topic with headers saying why.

The message keeps its original key, value and headers (so it can be inspected and replayed as it
was); the `dlq-*` headers of `schemas/dead-letter-headers.v1.json` are added, replacing any that a
previous trip through a dead-letter queue left.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kafka.errors import MessageSizeTooLargeError

from worker.streaming import contracts
from worker.streaming.decode import InboundMessage, Rejected

DLQ_PREFIX = "dlq-"
VALUE_OMITTED_HEADER = "dlq-value-omitted"
MAX_DETAIL = 2000


def dead_letter_header_values(
    message: InboundMessage, rejected: Rejected, worker_id: str, at: datetime
) -> dict[str, str]:
    """The `dlq-*` headers as strings; valid against dead-letter-headers.v1 (checked)."""
    values = {
        "dlq-reason": rejected.reason,
        "dlq-stage": rejected.stage,
        "dlq-detail": rejected.detail[:MAX_DETAIL],
        "dlq-source-topic": message.source.topic,
        "dlq-source-partition": str(message.source.partition),
        "dlq-source-offset": str(message.source.offset),
        "dlq-at": at.astimezone(UTC).isoformat(),
        "dlq-worker": worker_id,
    }
    contracts.validate(contracts.DEAD_LETTER_HEADERS, values)
    return values


def dead_letter_headers(
    message: InboundMessage, rejected: Rejected, worker_id: str, at: datetime
) -> list[tuple[str, bytes]]:
    """The original headers (less earlier `dlq-*` ones) followed by this refusal's `dlq-*` headers."""
    kept = [(k, v) for k, v in message.headers if not k.lower().startswith(DLQ_PREFIX)]
    added = [
        (k, v.encode("utf-8")) for k, v in dead_letter_header_values(message, rejected, worker_id, at).items()
    ]
    return kept + added


class DeadLetterPublisher:
    """Produces refused frames to the dead-letter topic; the caller flushes the producer.

    A value larger than `max_value_bytes` (a frame bigger than the producer may send), or one
    the producer or the broker refuses as too large, is left out, and the header
    `dlq-value-omitted` gives its size: a dead letter must never be a message that cannot be
    produced, or the loop would retry it forever.
    """

    def __init__(self, producer: Any, topic: str, worker_id: str, max_value_bytes: int) -> None:
        self.producer = producer
        self.topic = topic
        self.worker_id = worker_id
        self.max_value_bytes = max_value_bytes

    def publish(self, message: InboundMessage, rejected: Rejected, omit_value: bool = False) -> Any:
        """Send the original message plus `dlq-*` headers; returns the send future.

        `omit_value` leaves the value out whatever its size (after the broker refused it as too
        large); a value the producer itself refuses as too large is left out too."""
        headers = dead_letter_headers(message, rejected, self.worker_id, datetime.now(UTC))
        value = message.value
        if value is not None and (omit_value or len(value) > self.max_value_bytes):
            return self._send(message.key, None, [*headers, (VALUE_OMITTED_HEADER, str(len(value)).encode())])
        try:
            return self._send(message.key, value, headers)
        except MessageSizeTooLargeError:
            return self.publish(message, rejected, omit_value=True)

    def _send(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        return self.producer.send(self.topic, key=key, value=value, headers=headers)
