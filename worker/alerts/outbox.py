"""The alerts outbox: alerts written to the `alerts` table reach the alerts topic, at least once.

`publish_pending(engine, producer, topic)` takes the unpublished alerts (`published_at IS NULL`,
oldest first, locked with `FOR UPDATE SKIP LOCKED` so two workers never send the same batch at
once), produces one alert.v1 message each (key = value's `alert_id` = the row's dedup key), flushes
the producer, checks every send, and only then sets `published_at` and commits.

An alert the broker refuses for good (a message too large, say: `worker.core.failures`
classifies it as data) cannot block the ones after it: it is marked published with the reason in
`publish_error`, logged and counted (`on_undeliverable`); the row stays, for `alerts list` and
the analysts. An outage (or a missing privilege) raises, marks nothing, and is retried.

What a crash does: after the flush and before the commit, the messages are on the topic but the
rows still look unpublished, so the next call sends them again. Exactly once on the topic would
need Kafka transactions spanning the database, which do not exist; instead every message carries
its stable `alert_id` (and `record_id`, the row id) and the message key is the alert id, so
consumers deduplicate by it (a compacted topic keeps one copy per key). In the table each alert
is exactly one row (see `worker.alerts.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from kafka.errors import KafkaError, KafkaTimeoutError

from worker.core.clients import Producer
from worker.core.contracts import ALERT, to_json_bytes
from worker.core.failures import DATA, classify, describe
from worker.core.refusals import shown

log = structlog.get_logger("worker.alerts")

BATCH_SIZE = 200
PUBLISH_TIMEOUT_S = 35.0  # a little over the producer's delivery timeout, like the worker loop's

_PENDING = sa.text(
    "SELECT id FROM alerts WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_ROWS = sa.text(
    """
    SELECT a.id, a.dedup_key, a.rule, a.class_id, coalesce(c.name, a.rule_kind) AS class_name,
           coalesce(c.cause, a.details ->> 'cause', '') AS cause,
           coalesce(c.prevention, a.details ->> 'prevention', '') AS prevention,
           a.strip_id, a.roll, a.severity, a.position_start_m, a.position_end_m, a.detection_count,
           a.pitch_m, a.evidence, a.details, a.created_at, a.rule_kind, a.surface, a.line, a.camera,
           a.frame_ids, a.max_confidence, a.model_version, a.observed_at, a.pass_id
    FROM alerts AS a LEFT JOIN defect_classes AS c ON c.id = a.class_id  -- camera alerts have no class
    WHERE a.id = ANY(:ids)
    ORDER BY a.id
    """
)
_MARK = sa.text("UPDATE alerts SET published_at = now() WHERE id = ANY(:ids)")
_MARK_UNDELIVERABLE = sa.text("UPDATE alerts SET published_at = now(), publish_error = :error WHERE id = :id")


def alert_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """The alert.v1 message of one `alerts` row (joined with its class: name, cause, prevention; a
    camera alert has none: class_id null, class_name `camera`, cause and prevention from its details)."""
    created: datetime = row["created_at"]
    return {
        "schema": ALERT,
        "alert_id": row["dedup_key"],
        "record_id": int(row["id"]),
        "rule": row["rule"],
        "rule_kind": row["rule_kind"],
        "severity": row["severity"],
        "class_id": None if row["class_id"] is None else int(row["class_id"]),
        "class_name": row["class_name"],
        "cause": row["cause"],
        "prevention": row["prevention"],
        "strip_id": row["strip_id"],
        "pass_id": row["pass_id"],
        "line": row["line"],
        "camera": row["camera"],
        "surface": row["surface"],
        "frame_ids": list(row["frame_ids"]),
        "along_start_m": float(row["position_start_m"]),
        "along_end_m": float(row["position_end_m"]),
        "count": int(row["detection_count"]),
        "max_confidence": float(row["max_confidence"]),
        "model_version": row["model_version"],
        "raised_at": created.isoformat(),
        "observed_at": None if row["observed_at"] is None else row["observed_at"].isoformat(),
        "roll": row["roll"],
        "pitch_m": None if row["pitch_m"] is None else float(row["pitch_m"]),
        "evidence": [int(i) for i in row["evidence"]],
        "details": dict(row["details"]),
    }


def publish_pending(
    engine: sa.Engine,
    producer: Producer,
    topic: str,
    *,
    batch_size: int = BATCH_SIZE,
    timeout_s: float = PUBLISH_TIMEOUT_S,
    on_undeliverable: Callable[[], None] | None = None,
) -> int:
    """Publish every unpublished alert (see the module doc); the number of alerts published
    (refused ones included, marked with their `publish_error`).

    Raises KafkaError (KafkaTimeoutError when a send is not acknowledged in time) when the broker
    fails, SQLAlchemy errors when the database fails: nothing is marked then, so a later call
    sends the same alerts again. Both kinds are retryable in the worker loop.
    """
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(_PENDING, {"limit": batch_size}).scalars())
            if not ids:
                return total
            rows = conn.execute(_ROWS, {"ids": ids}).mappings().all()
            futures: list[tuple[int, Any]] = []
            refused: dict[int, BaseException] = {}
            for row in rows:
                try:
                    message = alert_message(dict(row))
                    value = to_json_bytes(message)
                    futures.append(
                        (
                            row["id"],
                            producer.send(topic, key=message["alert_id"].encode("utf-8"), value=value),
                        )
                    )
                except Exception as error:
                    if classify(error) != DATA:
                        raise
                    refused[row["id"]] = error
            producer.flush(timeout=timeout_s)
            refused |= _raise_unless_delivered(futures)
            for alert_id, why in refused.items():
                _mark_undeliverable(conn, alert_id, why, on_undeliverable)
            conn.execute(_MARK, {"ids": [i for i in ids if i not in refused]})
        total += len(ids)
        log.info("alerts.published", topic=topic, count=len(ids), first_id=ids[0], last_id=ids[-1])
        if len(ids) < batch_size:
            return total


def _mark_undeliverable(
    conn: sa.Connection, alert_id: int, error: BaseException, on_undeliverable: Callable[[], None] | None
) -> None:
    text = shown(describe(error), 1000)
    conn.execute(_MARK_UNDELIVERABLE, {"id": alert_id, "error": text})
    log.error("alert.undeliverable", alert_id=alert_id, error=text, note="marked; the row stays in alerts")
    if on_undeliverable is not None:
        on_undeliverable()


def _raise_unless_delivered(futures: list[tuple[int, Any]]) -> dict[int, BaseException]:
    """The alerts the broker refused for good (id → why); raises for any other failure."""
    refused: dict[int, BaseException] = {}
    failed: list[Any] = []
    for alert_id, future in futures:
        if future.is_done and future.succeeded():
            continue
        if future.is_done and classify(future.exception) == DATA:
            refused[alert_id] = future.exception
        else:
            failed.append(future)
    if not failed:
        return refused
    first = failed[0]
    if first.is_done and isinstance(first.exception, KafkaError):
        raise first.exception
    reason = repr(first.exception) if first.is_done else "not acknowledged in time"
    raise KafkaTimeoutError(f"{len(failed)} of {len(futures)} alert messages not delivered: {reason}")
