"""The reviews outbox: reviews stored in `reviews` reach the reviews topic (review.v1), at least once.

Off unless the console is given a topic (`steel-worker console serve --reviews-topic`, or
REVIEWS_TOPIC, with KAFKA_BOOTSTRAP_SERVERS). `publish_pending(engine, producer, topic)` takes the
unpublished reviews (`published_at IS NULL`, oldest first, `FOR UPDATE SKIP LOCKED` so two consoles
never send the same batch at once), produces one message each (key = `frame_id/tile_index`, so a
compacted topic keeps the newest verdict per crop), flushes, checks every send, and only then sets
`published_at` and commits. A crash after the flush sends them again: consumers deduplicate by
`review_id`. A review is stored whatever the broker does; `ReviewPublisher` retries what is left
after each review and every `RETRY_S` seconds.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
import structlog

from worker.core.clients import Producer
from worker.core.contracts import REVIEW, to_json_bytes, validate

log = structlog.get_logger("worker.console")

BATCH_SIZE = 200
SEND_TIMEOUT_S = 30.0
RETRY_S = 30.0

_PENDING = sa.text(
    "SELECT id FROM reviews WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_ROWS = sa.text(
    """
    SELECT r.id, r.frame_id, r.tile_index, f.strip_id, r.verdict, r.labels, r.model_version, r.reviewer,
           r.reviewed_at, r.note,
           ARRAY(SELECT c.name FROM detections AS d JOIN defect_classes AS c ON c.id = d.class_id
                 WHERE d.frame_id = r.frame_id AND d.tile_index = r.tile_index ORDER BY c.id) AS model_classes
    FROM reviews AS r JOIN frames AS f ON f.frame_id = r.frame_id
    WHERE r.id = ANY(:ids) ORDER BY r.id
    """
)
_MARK = sa.text("UPDATE reviews SET published_at = now() WHERE id = ANY(:ids)")


def review_message(row: Any) -> dict[str, Any]:
    """The review.v1 message of one `reviews` row (joined with its frame and the model's classes)."""
    return {
        "schema": REVIEW,
        "review_id": int(row.id),
        "frame_id": row.frame_id,
        "tile_index": int(row.tile_index),
        "strip_id": row.strip_id,
        "verdict": row.verdict,
        "labels": list(row.labels),
        "model_classes": list(row.model_classes),
        "model_version": row.model_version,
        "reviewer": row.reviewer,
        "note": row.note,
        "reviewed_at": row.reviewed_at.isoformat(),
    }


def publish_pending(
    engine: sa.Engine, producer: Producer, topic: str, *, timeout_s: float = SEND_TIMEOUT_S
) -> int:
    """Publish every unpublished review; the number published. Raises (KafkaError, SQLAlchemy
    errors) with nothing marked when the broker or the database fails: a later call sends them."""
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(_PENDING, {"limit": BATCH_SIZE}).scalars())
            if not ids:
                return total
            futures = []
            for row in conn.execute(_ROWS, {"ids": ids}):
                message = review_message(row)
                validate(REVIEW, message)
                key = f"{row.frame_id}/{row.tile_index}".encode()
                futures.append(producer.send(topic, key=key, value=to_json_bytes(message)))
            producer.flush(timeout=timeout_s)
            for future in futures:
                future.get(timeout=timeout_s)
            conn.execute(_MARK, {"ids": ids})
        total += len(ids)


class ReviewPublisher:
    """Publishes the reviews outbox now (`kick`) and every `RETRY_S` seconds, on a thread of its own;
    a failure is logged and left for the next round."""

    def __init__(self, engine: sa.Engine, producer: Producer, topic: str, retry_s: float = RETRY_S) -> None:
        self.engine, self.producer, self.topic, self.retry_s = engine, producer, topic, retry_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="reviews-outbox", daemon=True)

    def start(self) -> ReviewPublisher:
        self._thread.start()
        return self

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(SEND_TIMEOUT_S + 5)

    def _run(self) -> None:
        while not self._stopping:
            try:
                sent = publish_pending(self.engine, self.producer, self.topic)
                if sent:
                    log.info("reviews.published", count=sent, topic=self.topic)
            except Exception as error:  # the broker or the database: left for the next round
                log.warning("reviews.publish_deferred", error=f"{type(error).__name__}: {error}"[:300])
            self._wake.wait(self.retry_s)
            self._wake.clear()
