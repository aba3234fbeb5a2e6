"""The two calls the worker makes of the alerts: evaluate the rules after each write, publish the
alerts outbox after the detections.

    stage = AlertStage(engine, load_rules(path, catalogue), catalogue, topic, ...)  # once, at start-up
    stage.evaluate(results)     # the checkpoint's "evaluate" step (`worker.streaming.sinks`), after "write"
    stage.publish(producer)     # its "publish-alerts" step, after the detections are acknowledged,
                                # and once when the loop starts: what a crash left unsent

Both calls are idempotent. Infrastructure failures (SQLAlchemy OperationalError/InterfaceError,
KafkaError) are raised and the checkpoint retries the step; a rule that fails on a strip and an
alert the broker refuses for good are set aside, reported through `on_rule_error` and
`on_undeliverable`, and never stop the stream (`worker.alerts.engine`, `worker.alerts.outbox`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from worker.alerts.config import DEFAULT_MAX_POSITION_JUMP_M, AlertRules
from worker.alerts.engine import AlertEngine, NewAlert
from worker.alerts.outbox import publish_pending
from worker.core.catalogue import Catalogue
from worker.core.clients import Producer
from worker.core.records import FrameResult


class AlertStage:
    """Alert rules and the alerts outbox, for one worker process."""

    def __init__(
        self,
        engine: sa.Engine,
        rules: AlertRules,
        catalogue: Catalogue,
        topic: str,
        *,
        on_rule_error: Callable[[str], None] | None = None,
        on_undeliverable: Callable[[], None] | None = None,
        max_position_jump_m: float = DEFAULT_MAX_POSITION_JUMP_M,
        on_position_outlier: Callable[[], None] | None = None,
    ) -> None:
        """`on_rule_error(rule)`: a rule failed on a strip (counted by the worker's metrics);
        `on_undeliverable()`: the broker refused an alert for good (see `worker.alerts.outbox`);
        `on_position_outlier()`: a frame written lies farther than `max_position_jump_m`
        (MAX_POSITION_JUMP_M) from the rest of its strip pass (see `worker.alerts.engine`)."""
        self.engine = engine
        self.rules = rules
        self.topic = topic
        self.alert_engine = AlertEngine(
            engine,
            rules,
            catalogue,
            on_rule_error,
            max_position_jump_m=max_position_jump_m,
            on_position_outlier=on_position_outlier,
        )
        self.on_undeliverable = on_undeliverable

    def evaluate(self, results: Sequence[FrameResult]) -> list[NewAlert]:
        """After `StorageWriter.write_results(results)` returned: raise the alerts the stored
        detections around these frames call for, once (see `worker.alerts.engine`)."""
        return self.alert_engine.evaluate_results(results)

    def publish(self, producer: Producer) -> int:
        """Send the unpublished alerts to the alerts topic and mark them (see `worker.alerts.outbox`)."""
        return publish_pending(self.engine, producer, self.topic, on_undeliverable=self.on_undeliverable)
