"""The running worker: open everything it needs in order, run the loop, close in reverse.

`open_worker(settings)` is a context manager that yields a ready `Worker` (tests run it in a
thread and stop it with `request_stop()`); `serve(settings)` adds the SIGTERM/SIGINT handlers and
runs it. Start-up fails fast, with a message that says what to do: message schemas, the alert
rules file (ALERT_RULES), the camera calibration (CAMERA_CALIBRATION) and the Kafka codecs
checked, decompression bounded (KAFKA_MAX_DECOMPRESSED_BYTES) → database reachable and at the
migrations' head (else `steel-worker db upgrade`); the worker's connections carry statement, lock
and idle-transaction timeouts, and a warning says so when it connects as a superuser instead of a
`steel_worker` login → model artefact loaded and warmed up → catalogue and model version
recorded, the rules' classes checked against the model's catalogue → /metrics, /healthz, /readyz
→ Kafka clients, and the four topics exist. `kill -USR1 PID` prints every thread's stack to
stderr (a hung worker explains itself).

`STEEL_WORKER_FAILPOINT=STEP[:N]` (testing only) kills the process with SIGKILL right after the
delivery step STEP (`write`, `camera-health`, `evaluate`, `publish`, `publish-alerts`, `commit`)
succeeded for the Nth time (default 1): the crash-point tests use it to stop the worker between
two steps.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import sqlalchemy as sa
import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import exc as sa_exc

from worker.alerts.camera import CameraHealth
from worker.alerts.config import AlertRules, load_rules
from worker.alerts.stage import AlertStage
from worker.core import contracts
from worker.core.clients import Producer
from worker.core.errors import ConfigError, InfrastructureError
from worker.core.evidence import EvidencePolicy
from worker.inference import Inferencer
from worker.model import card
from worker.model.acceleration import Acceleration
from worker.model.agreement import AgreementLimits
from worker.model.artefact import Classifier
from worker.model.runtimes import load_runtime_classifier
from worker.storage.engine import create_engine
from worker.storage.schema_check import assert_schema_current, schema_diagnosis
from worker.storage.writer import StorageWriter
from worker.streaming import codecs
from worker.streaming.camera_calibration import load_calibrations
from worker.streaming.camera_sink import CameraHealthSink
from worker.streaming.classify import FrameClassifier
from worker.streaming.decode import DecodeLimits
from worker.streaming.decode_pool import Decoder
from worker.streaming.image_quality import QualityGate, QualityPolicy
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
FAILPOINT_ENV = "STEEL_WORKER_FAILPOINT"


def database_connect_args(settings: Settings) -> dict[str, object]:
    """libpq connection arguments of the worker: connect and keepalive limits, and the session's
    statement, lock and idle-in-transaction timeouts (a statement or a lock wait that takes longer
    fails, and the batch is retried: an analyst's long transaction cannot stall the worker)."""
    options = (
        f"-c statement_timeout={settings.db_statement_timeout_ms}"
        f" -c lock_timeout={settings.db_lock_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.db_idle_in_transaction_timeout_ms}"
    )
    return {**DATABASE_CONNECT_ARGS, "options": options, "application_name": "steel-worker"}


def failpoint(env: Mapping[str, str]) -> Callable[[str], None] | None:
    """The `after_step` hook of STEEL_WORKER_FAILPOINT (see the module doc), or None when unset."""
    value = env.get(FAILPOINT_ENV, "").strip()
    if not value:
        return None
    step, _, count = value.partition(":")
    try:
        remaining = [int(count) if count else 1]
    except ValueError:
        raise ConfigError(f"{FAILPOINT_ENV}: expected STEP[:N], received {value!r}") from None
    log.warning(
        "worker.failpoint", step=step, after=remaining[0], note="testing only: the process kills itself"
    )

    def after_step(name: str) -> None:
        if name == step:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return after_step


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


def warm_up(inferencer: Inferencer, settings: Settings) -> float:
    """`Inferencer.warm_up` before joining the consumer group (done inside the poll loop, the
    first forward pass could exceed KAFKA_MAX_POLL_INTERVAL_MS), at BATCH_TILES and 1 tile: whole
    frames rarely fill BATCH_TILES exactly. Returns the seconds it took."""
    seconds = inferencer.warm_up(settings.batch_tiles)
    log.info("worker.model_warmed_up", seconds=round(seconds, 2), tiles=[settings.batch_tiles, 1])
    return seconds


@contextmanager
def open_worker(
    settings: Settings,
    classifier: Classifier | None = None,
    after_step: Callable[[str], None] | None = None,
) -> Iterator[Worker]:
    """Everything the worker needs, opened in order and closed in reverse on exit.

    `classifier` replaces loading MODEL_PATH (tests reuse one loaded model); `after_step`
    replaces the STEEL_WORKER_FAILPOINT hook (tests stop a database between two steps).
    """
    log.info("worker.starting", settings=settings.describe())
    contracts.check_schemas()
    rules = _alert_rules(settings)  # the file is checked before the slow steps; the classes below
    gate = quality_gate(settings)  # so is the camera calibration
    codecs.require_codecs()
    codecs.install_bounded_decoders(settings.max_decompressed_bytes)
    after_step = after_step or failpoint(os.environ)
    with ExitStack() as stack:
        engine = create_engine(
            settings.database_url.reveal(), connect_args=database_connect_args(settings), hide_parameters=True
        )
        stack.callback(engine.dispose)
        try:
            revision = assert_schema_current(engine)
            _warn_if_superuser(engine)
        except sa_exc.OperationalError as exc:
            raise InfrastructureError(
                f"database {masked_database_url(settings.database_url)} is unreachable: "
                f"{str(exc.orig).strip() or exc}"
            ) from None
        model = (
            classifier
            if classifier is not None
            else load_runtime_classifier(
                settings.model_path,
                settings.model_runtime,
                settings.batch_tiles,
                AgreementLimits(settings.model_agreement_max_f1_drop, settings.model_agreement_max_flips),
                Acceleration(settings.model_precision, settings.model_xla, settings.onnx_providers),
            )
        )
        inferencer = Inferencer(model, settings.tile_size, settings.tile_min_overlap, settings.model_tta)
        warm_up(inferencer, settings)
        writer = StorageWriter(engine, settings.pass_restart_m)
        writer.ensure_catalogue(model.catalogue)
        writer.register_model(
            version=model.version,
            backbone=model.backbone,
            input_size=model.input_size,
            class_names=list(model.catalogue.names),
            thresholds=model.thresholds,
            metrics=model.metrics,
        )
        log_model(model, revision, settings.model_runtime)
        metrics = Metrics()
        alerts = (
            None
            if rules is None
            else AlertStage(
                engine,
                rules,
                model.catalogue,
                settings.alerts_topic,
                on_rule_error=lambda rule: metrics.rule_errors.labels(rule=rule).inc(),
                on_undeliverable=lambda: metrics.undeliverable.labels(kind="alert").inc(),
                max_position_jump_m=settings.max_position_jump_m,
                on_position_outlier=metrics.position_outliers.inc,
            )
        )
        health = Health(
            stall_after_s=max(30.0, settings.max_poll_interval_ms / 1000),
            stuck_after_s=settings.stuck_after_s,
        )
        server = stack.enter_context(
            ObservabilityServer(settings.metrics_host, settings.metrics_port, metrics, health)
        )
        log.info("worker.metrics", url=f"http://{settings.metrics_host}:{server.port}/metrics")
        decoder = stack.enter_context(
            Decoder(
                decode_limits(settings, gate),
                settings.decode_workers,
                settings.decode_timeout_ms / 1000,
                log_format=settings.log_format,
                log_level=settings.log_level,
                on_key_mismatch=metrics.key_mismatches.inc,
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
            fetch_sizes = {
                "fetch_max_bytes": max(52_428_800, settings.max_message_bytes),
                "max_partition_fetch_bytes": settings.max_message_bytes,
            }
            consumer = KafkaConsumer(
                **kafka,
                **fetch_sizes,
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.max_poll_records,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
                max_poll_interval_ms=settings.max_poll_interval_ms,
            )
            stack.callback(consumer.close, autocommit=False)
            _check_topics(consumer, settings)
        except KafkaError as exc:
            raise InfrastructureError(
                f"Kafka at {settings.bootstrap_servers} is unreachable: {type(exc).__name__}: {exc}"
            ) from None
        yield Worker(
            settings=settings,
            consumer=consumer,
            producer=producer,
            classifier=FrameClassifier(inferencer, evidence_policy(settings)),
            writer=writer,
            decoder=decoder,
            metrics=metrics,
            health=health,
            alerts=alerts,
            camera_health=_camera_health(
                settings,
                engine,
                model_version=model.version,
                metrics=metrics,
                alerts=alerts,
                producer=producer,
                gate=gate,
            ),
            open_probe=lambda: KafkaConsumer(**kafka, **fetch_sizes, enable_auto_commit=False),
            after_step=after_step,
            diagnose=lambda: schema_diagnosis(engine),
            topic_ids=stack.enter_context(TopicIdLookup(kafka)),
        )


def log_model(model: Classifier, schema: str, requested: str = "tensorflow") -> None:
    """One line at start-up: the model's card in brief (version, classes, input size, validation
    and test summaries, known limits; `worker.model.card.headline`), the runtime that runs it (and,
    for MODEL_RUNTIME=auto, each runtime passed over with the reason) and the database schema. An
    artefact without a card (older than cards) logs what its model.json holds."""
    skipped = {"runtime_skipped": model.auto_skipped} if model.auto_skipped is not None else {}
    log.info(
        "worker.model",
        **card.headline(model.meta, model.model_dir),
        runtime=model.runtime,
        precision=model.precision,
        runtime_setting=requested,
        **skipped,
        schema=schema,
    )


def evidence_policy(settings: Settings) -> EvidencePolicy | None:
    """How the crops behind detections are kept (EVIDENCE_*); None when EVIDENCE_IMAGES is off."""
    if not settings.evidence_images:
        return None
    return EvidencePolicy(
        jpeg_quality=settings.evidence_jpeg_quality,
        max_side=settings.evidence_max_side,
        clean_sample=settings.evidence_clean_sample,
    )


def decode_limits(settings: Settings, quality: QualityGate | None = None) -> DecodeLimits:
    """The decoder's bounds, from the settings, and the image-quality gate (`quality_gate`)."""
    return DecodeLimits(
        max_frame_bytes=settings.max_frame_bytes,
        max_frame_pixels=settings.max_frame_pixels,
        max_frame_tiles=settings.max_frame_tiles,
        tile_size=settings.tile_size,
        tile_min_overlap=settings.tile_min_overlap,
        claim_check_root=settings.claim_check_root,
        claim_check_timeout_s=settings.claim_check_timeout_ms / 1000,
        max_jpeg_scans=settings.max_jpeg_scans,
        max_image_segments=settings.max_image_segments,
        quality=quality,
        max_strip_length_m=settings.max_strip_length_m,
    )


def quality_gate(settings: Settings) -> QualityGate | None:
    """The image-quality gate (IMAGE_QUALITY_*, CLOCK_SKEW_MAX_S), its camera calibrations read
    from CAMERA_CALIBRATION now (ConfigError naming the file and field if malformed); None when
    IMAGE_QUALITY_CHECKS is none."""
    calibrations = load_calibrations(settings.camera_calibration)
    if not settings.image_quality_checks:
        log.info("worker.image_quality", checks=[], note="image-quality gate off (IMAGE_QUALITY_CHECKS=none)")
        return None
    policy = QualityPolicy(
        settings.image_quality_checks, settings.image_quality_refuse, float(settings.clock_skew_max_s)
    )
    log.info(
        "worker.image_quality",
        checks=sorted(policy.checks),
        refuse=sorted(policy.refuse),
        calibration=calibrations.source,
        cameras=sorted(calibrations.cameras),
        defaults=calibrations.defaults.describe(),
    )
    return QualityGate(calibrations, policy)


def _camera_health(
    settings: Settings,
    engine: sa.Engine,
    *,
    model_version: str,
    metrics: Metrics,
    alerts: AlertStage | None,
    producer: Producer,
    gate: QualityGate | None,
) -> CameraHealthSink | None:
    """The step `camera-health` (None without a gate): camera alerts after CAMERA_ALERT_FRAMES bad
    frames in a row; it publishes the alerts outbox itself when no alert rules do (ALERT_RULES=none)."""
    if gate is None:
        return None
    health = CameraHealth(
        engine,
        frames=settings.camera_alert_frames,
        severity=settings.camera_alert_severity,
        model_version=model_version,
    )
    if alerts is not None:  # its outbox step publishes camera alerts with the others
        return CameraHealthSink(health, metrics)
    return CameraHealthSink(health, metrics, lambda: health.publish(producer, settings.alerts_topic))


def _warn_if_superuser(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        user, superuser = conn.execute(sa.text("SELECT current_user, current_setting('is_superuser')")).one()
    if superuser == "on":
        log.warning(
            "worker.database_superuser",
            user=user,
            note="the worker needs only the privileges of the steel_worker role: connect as a login"
            " made with `steel-worker db create-login NAME --role worker` (docs/deployment.md)",
        )


class TopicIdLookup:
    """A topic's id from the cluster's metadata (`positions.TopicIds`), through an admin client
    made at the first question and closed with the worker. None where the broker gives no ids."""

    def __init__(self, kafka: dict[str, Any]) -> None:
        self._kafka = kafka
        self._admin: KafkaAdminClient | None = None

    def __call__(self, topic: str) -> str | None:
        if self._admin is None:
            self._admin = KafkaAdminClient(**self._kafka, request_timeout_ms=10_000)
        for found in self._admin.describe_topics([topic]):
            if found.get("name") == topic and found.get("topic_id"):
                return str(found["topic_id"])
        return None

    def __enter__(self) -> TopicIdLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._admin is not None:
            self._admin.close()


def _check_topics(consumer: KafkaConsumer, settings: Settings) -> None:
    """Refuse to start when a topic the worker reads or writes does not exist: producing to a
    missing topic would block every batch (an unknown topic is a fault of the set-up)."""
    wanted = {
        "FRAMES_TOPIC": settings.frames_topic,
        "DETECTIONS_TOPIC": settings.detections_topic,
        "ALERTS_TOPIC": settings.alerts_topic,
        "DLQ_TOPIC": settings.dlq_topic,
    }
    existing = consumer.topics()
    missing = [f"{name}={topic}" for name, topic in wanted.items() if topic not in existing]
    if missing:
        raise InfrastructureError(
            f"Kafka at {settings.bootstrap_servers} has no topic {', '.join(missing)}: create the topics"
            " first (compose.yaml's `topics` service does; docs/deployment.md)"
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
