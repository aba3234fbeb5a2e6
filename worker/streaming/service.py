"""The running worker: open everything it needs in order, run the loop, close in reverse.

`open_worker(settings)` is a context manager that yields a ready `Worker` (tests run it in a
thread and stop it with `request_stop()`); `serve(settings)` adds the SIGTERM/SIGINT handlers and
runs it. Start-up fails fast, with a message that says what to do: message schemas and the alert
rules file (ALERT_RULES) checked → database reachable and at the migrations' head (else
`steel-worker db upgrade`) → model artefact loaded and warmed up → catalogue and model version
recorded, the rules' classes checked against the model's catalogue → /metrics and /healthz →
Kafka clients. `kill -USR1 PID` prints every thread's stack to stderr (a hung worker explains
itself).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import exc as sa_exc

from worker.alerts.config import AlertRules, load_rules
from worker.alerts.stage import AlertStage
from worker.infra import InfrastructureError
from worker.model.artefact import Classifier, load_classifier
from worker.storage.engine import create_engine
from worker.storage.schema_check import assert_schema_current
from worker.storage.writer import StorageWriter
from worker.streaming import contracts
from worker.streaming.classify import FrameClassifier
from worker.streaming.decode import DecodeLimits, Decoder
from worker.streaming.loop import Worker
from worker.streaming.observability import Health, Metrics, ObservabilityServer
from worker.streaming.settings import Settings, masked_database_url

log = structlog.get_logger("worker.streaming")

# libpq: give up connecting after 10 s; notice a silently dead server within about 25 s (TCP
# keepalives), so that a write fails and is retried instead of hanging.
DATABASE_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def serve(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the exit status (0 after a clean stop)."""
    with contextlib.suppress(io.UnsupportedOperation, AttributeError, ValueError):  # stderr without a file
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    with open_worker(settings) as worker:
        handler = lambda signum, frame: worker.request_stop()  # noqa: E731
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return worker.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def warm_up(model: Classifier, settings: Settings) -> float:
    """Run blank tiles through the model before joining the consumer group, a batch of
    BATCH_TILES and one of a single tile; returns the seconds it took. The first forward pass
    builds the backend's compiled function, which can take seconds; done inside the poll loop it
    could exceed KAFKA_MAX_POLL_INTERVAL_MS. TensorFlow traces again for each new batch size
    until it has seen two, then keeps one function for every size: without the second size the
    first batch of another size (whole frames rarely fill BATCH_TILES exactly) would pay a second
    trace, as long as the first, in the loop."""
    started = time.monotonic()
    for tiles in (settings.batch_tiles, 1):
        model.predict(np.zeros((tiles, settings.tile_size, settings.tile_size), dtype=np.uint8))
    seconds = time.monotonic() - started
    log.info("worker.model_warmed_up", seconds=round(seconds, 2), tiles=[settings.batch_tiles, 1])
    return seconds


@contextmanager
def open_worker(settings: Settings, classifier: Classifier | None = None) -> Iterator[Worker]:
    """Everything the worker needs, opened in order and closed in reverse on exit.

    `classifier` replaces loading MODEL_PATH (tests reuse one loaded model).
    """
    log.info("worker.starting", settings=settings.describe())
    contracts.check_schemas()
    rules = _alert_rules(settings)  # the file is checked before the slow steps; the classes below
    with ExitStack() as stack:
        engine = create_engine(settings.database_url.reveal(), connect_args=DATABASE_CONNECT_ARGS)
        stack.callback(engine.dispose)
        try:
            revision = assert_schema_current(engine)
        except sa_exc.OperationalError as exc:
            raise InfrastructureError(
                f"database {masked_database_url(settings.database_url)} is unreachable: "
                f"{str(exc.orig).strip() or exc}"
            ) from None
        model = (
            classifier
            if classifier is not None
            else load_classifier(settings.model_path, settings.batch_tiles)
        )
        warm_up(model, settings)
        writer = StorageWriter(engine)
        writer.ensure_catalogue(model.catalogue)
        writer.register_model(
            version=model.version,
            backbone=model.backbone,
            input_size=model.input_size,
            class_names=list(model.catalogue.names),
            thresholds=dict(zip(model.catalogue.names, map(float, model.thresholds), strict=True)),
            metrics=model.metrics,
        )
        log.info("worker.model", version=model.version, classes=list(model.catalogue.names), schema=revision)
        alerts = None if rules is None else AlertStage(engine, rules, model.catalogue, settings.alerts_topic)

        metrics = Metrics()
        health = Health(stall_after_s=max(30.0, settings.max_poll_interval_ms / 1000))
        server = stack.enter_context(
            ObservabilityServer(settings.metrics_host, settings.metrics_port, metrics, health)
        )
        log.info("worker.metrics", url=f"http://{settings.metrics_host}:{server.port}/metrics")
        decoder = stack.enter_context(
            Decoder(
                DecodeLimits(settings.max_frame_bytes, settings.max_frame_pixels), settings.decode_threads
            )
        )
        kafka = settings.kafka_options()
        try:
            producer = KafkaProducer(
                **kafka,
                acks="all",
                linger_ms=5,
                max_block_ms=10_000,
                request_timeout_ms=10_000,
                delivery_timeout_ms=30_000,
                max_request_size=settings.max_message_bytes,  # dead letters carry whole frames
            )
            stack.callback(producer.close, timeout=10)
            consumer = KafkaConsumer(
                **kafka,
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.max_poll_records,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
                max_poll_interval_ms=settings.max_poll_interval_ms,
                fetch_max_bytes=max(52_428_800, settings.max_message_bytes),
                max_partition_fetch_bytes=settings.max_message_bytes,
            )
            stack.callback(consumer.close, autocommit=False)
        except KafkaError as exc:
            raise InfrastructureError(
                f"Kafka at {settings.bootstrap_servers} is unreachable: {type(exc).__name__}: {exc}"
            ) from None
        yield Worker(
            settings=settings,
            consumer=consumer,
            producer=producer,
            classifier=FrameClassifier(model),
            writer=writer,
            decoder=decoder,
            metrics=metrics,
            health=health,
            alerts=alerts,
        )


def _alert_rules(settings: Settings) -> AlertRules | None:
    """The rules of ALERT_RULES (ConfigError naming the file and field if unusable), or None when
    they are turned off (`ALERT_RULES=none`)."""
    if settings.alert_rules is None:
        log.info("worker.alert_rules", file=None, rules=[], note="alert rules off (ALERT_RULES=none)")
        return None
    rules = load_rules(settings.alert_rules)
    log.info("worker.alert_rules", file=str(settings.alert_rules), rules=[r.name for r in rules.rules])
    return rules
