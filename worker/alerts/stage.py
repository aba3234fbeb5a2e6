"""The two calls the worker loop makes: evaluate the rules after each write, publish after producing.

    stage = AlertStage.from_file(engine, catalogue, settings.alerts_topic, settings.alert_rules)  # once
    stage.publish(producer)                      # at start-up: sends what a crash left unsent
    …
    writer.write_results(results); stage.evaluate(results)      # the loop's "write" step
    producer.flush() for detections; stage.publish(producer)    # the loop's "publish" step
    commit offsets

Both calls are idempotent and raise only retryable errors for infrastructure failures (SQLAlchemy
OperationalError/InterfaceError, KafkaError): the loop retries the step, as it does for writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa

from worker.alerts.config import AlertRules, load_rules
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
    ) -> None:
        """`on_rule_error(rule)`: a rule failed on a strip (counted by the worker's metrics);
        `on_undeliverable()`: the broker refused an alert for good (see `worker.alerts.outbox`)."""
        self.engine = engine
        self.rules = rules
        self.topic = topic
        self.alert_engine = AlertEngine(engine, rules, catalogue, on_rule_error)
        self.on_undeliverable = on_undeliverable

    @classmethod
    def from_file(
        cls, engine: sa.Engine, catalogue: Catalogue, topic: str, rules_path: str | Path | None = None
    ) -> AlertStage:
        """Load the rules (`rules_path`, else the default `config/alert-rules.yaml`; the worker passes
        its ALERT_RULES setting); ConfigError naming the file and field if they are unusable."""
        return cls(engine, load_rules(rules_path, catalogue), catalogue, topic)

    def evaluate(self, results: Sequence[FrameResult]) -> list[NewAlert]:
        """After `StorageWriter.write_results(results)` returned: raise the alerts the stored
        detections call for, once (see `worker.alerts.engine`)."""
        return self.alert_engine.evaluate_results(results)

    def publish(self, producer: Producer) -> int:
        """Send the unpublished alerts to the alerts topic and mark them (see `worker.alerts.outbox`)."""
        return publish_pending(self.engine, producer, self.topic, on_undeliverable=self.on_undeliverable)
