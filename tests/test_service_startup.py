"""Start-up of the worker (`worker.streaming.service`) against the real broker and PostgreSQL: its
database sessions carry the statement, lock and idle-transaction timeouts; a missing topic refuses
to start with a message naming it; connecting as a superuser is warned about, as a `steel_worker`
login it is not; the testing failpoint is parsed strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from streaming_harness import make_topics, worker_settings
from structlog.testing import capture_logs

from worker.core.errors import ConfigError, InfrastructureError
from worker.model.artefact import Classifier
from worker.storage.engine import create_engine
from worker.streaming.service import database_connect_args, failpoint, open_worker


def test_the_workers_database_sessions_carry_its_timeouts(
    broker, make_topic, worker_database_url: str, model_dir: Path
) -> None:
    settings = worker_settings(
        broker.bootstrap_servers,
        worker_database_url,
        model_dir,
        make_topics(make_topic),
        db_statement_timeout_ms="12000",
        db_lock_timeout_ms="3000",
        db_idle_in_transaction_timeout_ms="45000",
    )
    engine = create_engine(worker_database_url, connect_args=database_connect_args(settings))
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            }
            name = conn.execute(sa.text("SHOW application_name")).scalar_one()
    finally:
        engine.dispose()
    assert shown == {
        "statement_timeout": "12s",
        "lock_timeout": "3s",
        "idle_in_transaction_session_timeout": "45s",
    }
    assert name == "steel-worker"


def test_a_missing_topic_refuses_to_start_and_names_it(
    broker, make_topic, worker_database_url: str, model_dir: Path, classifier: Classifier
) -> None:
    topics = make_topics(make_topic)
    settings = worker_settings(
        broker.bootstrap_servers, worker_database_url, model_dir, topics, dlq_topic="no-such-dlq-topic"
    )
    with (
        pytest.raises(InfrastructureError, match="no topic DLQ_TOPIC=no-such-dlq-topic"),
        open_worker(settings, classifier=classifier),
    ):
        pass


@pytest.mark.parametrize("as_superuser", [True, False])
def test_connecting_as_a_superuser_is_warned_about_and_as_a_worker_login_it_is_not(
    broker,
    make_topic,
    database_url: str,
    worker_database_url: str,
    as_superuser: bool,
    *,
    model_dir: Path,
    classifier: Classifier,
) -> None:
    url = database_url if as_superuser else worker_database_url
    settings = worker_settings(broker.bootstrap_servers, url, model_dir, make_topics(make_topic))
    with capture_logs() as logs, open_worker(settings, classifier=classifier):
        pass
    warned = [e for e in logs if e["event"] == "worker.database_superuser"]
    assert bool(warned) == as_superuser


def test_start_up_logs_the_model_s_card_in_one_line_and_a_model_without_a_card_starts(
    broker, make_topic, worker_database_url: str, model_dir: Path, classifier: Classifier
) -> None:
    """One `worker.model` line: version, classes, input size, validation and test summaries, known
    limits, the card's path (the shared test artefact has no card, as artefacts older than cards)."""
    topics = make_topics(make_topic)
    settings = worker_settings(broker.bootstrap_servers, worker_database_url, model_dir, topics)
    with capture_logs() as logs, open_worker(settings, classifier=classifier):
        pass
    (line,) = [e for e in logs if e["event"] == "worker.model"]
    assert line["version"] == classifier.version and line["classes"] == list(classifier.catalogue.names)
    assert line["input_size"] == classifier.input_size and isinstance(line["schema"], str)
    assert line["runtime"] == "tensorflow"  # MODEL_RUNTIME's default
    assert (line["validation"], line["test"], line["card"]) == (None, None, None)
    assert line["known_limits"] == ["untrained: random weights, for tests only"]


@pytest.mark.parametrize("value", ["write:x", "publish:"])
def test_a_malformed_failpoint_is_refused(value: str) -> None:
    if value.endswith(":"):
        assert failpoint({"STEEL_WORKER_FAILPOINT": value}) is not None  # `:` without N means 1
        return
    with pytest.raises(ConfigError, match="STEP\\[:N\\]"):
        failpoint({"STEEL_WORKER_FAILPOINT": value})


def test_no_failpoint_without_the_variable() -> None:
    assert failpoint({}) is None
