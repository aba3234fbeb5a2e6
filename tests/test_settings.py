"""Worker settings: environment and flags into one frozen object; bad or unsafe settings refuse to
start with a message naming the variable; secrets never show in reprs, errors or logs."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from worker.core.errors import ConfigError
from worker.streaming import settings as s

DB_PASSWORD = "db-pa55-word-XYZ"
SASL_PASSWORD = "sasl-pa55-QQQ"
REQUIRED_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
    "DATABASE_URL": f"postgresql+psycopg2://steel:{DB_PASSWORD}@db:5432/defects",
    "MODEL_PATH": "/models/demo",
}


def test_defaults_fill_everything_but_the_required_settings() -> None:
    settings = s.load_settings(REQUIRED_ENV, {})
    assert settings.frames_topic == "mill.frames"
    assert settings.detections_topic == "mill.detections"
    assert settings.alerts_topic == "mill.alerts"
    assert settings.dlq_topic == "mill.frames.dlq"
    assert settings.consumer_group == "steel-worker"
    assert settings.model_path == Path("/models/demo")
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.kafka_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert settings.worker_id  # host-pid
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_tiles = 1  # type: ignore[misc]


def test_alert_rules_default_to_the_shipped_file_name_another_or_are_turned_off_by_none(
    tmp_path: Path,
) -> None:
    """ALERT_RULES: the project's config/alert-rules.yaml by default (shown so in the docs, not as
    this machine's path), any other file by variable or flag, `none` (any case) for no rules."""
    from worker.alerts.config import DEFAULT_RULES_PATH, load_rules  # noqa: PLC0415

    default = s.load_settings(REQUIRED_ENV, {}).alert_rules
    assert default == DEFAULT_RULES_PATH and default is not None and default.is_file()
    assert load_rules(default).rules  # the default is a usable rules file
    assert "| `ALERT_RULES` | `--alert-rules` | `config/alert-rules.yaml` |" in s.configuration_table()
    other = tmp_path / "rules.yaml"
    env = {**REQUIRED_ENV, "ALERT_RULES": str(other)}
    assert s.load_settings(env, {}).alert_rules == other
    assert s.load_settings(env, {"alert_rules": "None"}).alert_rules is None  # the flag wins
    assert s.load_settings({**REQUIRED_ENV, "ALERT_RULES": "none"}, {}).alert_rules is None
    assert s.load_settings({**REQUIRED_ENV, "ALERT_RULES": ""}, {}).alert_rules == default  # empty = unset


def test_missing_required_settings_are_all_named() -> None:
    with pytest.raises(ConfigError) as info:
        s.load_settings({"MODEL_PATH": "/m"}, {})
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(info.value) and "DATABASE_URL" in str(info.value)
    assert "--database-url" in str(info.value)


def test_a_flag_wins_over_its_environment_variable_which_wins_over_the_default() -> None:
    env = {**REQUIRED_ENV, "BATCH_TILES": "16", "FRAMES_TOPIC": "line2.frames"}
    settings = s.load_settings(env, {"batch_tiles": "8", "frames_topic": None})
    assert (settings.batch_tiles, settings.frames_topic) == (8, "line2.frames")
    assert s.load_settings({**REQUIRED_ENV, "BATCH_TILES": ""}, {}).batch_tiles == 32  # empty = unset


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BATCH_TILES": "zero"}, "BATCH_TILES"),
        ({"BATCH_TILES": "0"}, "BATCH_TILES: expected an integer > 0"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SASL_USERNAME": "u"}, "SASL credentials are set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            "unencrypted",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CA_FILE"),
        ({"KAFKA_SSL_CA_FILE": "/etc/hostname"}, "TLS files are set"),
        ({"TILE_SIZE": "64", "TILE_MIN_OVERLAP": "64"}, "TILE_MIN_OVERLAP"),
    ],
)
def test_invalid_or_unsafe_settings_refuse_to_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        s.load_settings({**REQUIRED_ENV, **env}, {})


def _sasl_settings(tmp_path: Path) -> s.Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    env = {
        **REQUIRED_ENV,
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "KAFKA_SSL_CA_FILE": str(ca),
    }
    return s.load_settings(env, {})


def test_kafka_options_carry_the_revealed_credentials_for_the_client(tmp_path: Path) -> None:
    options = _sasl_settings(tmp_path).kafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == SASL_PASSWORD
    assert options["ssl_cafile"] == str(tmp_path / "ca.pem")


def test_secrets_are_masked_in_repr_str_format_and_describe(tmp_path: Path) -> None:
    settings = _sasl_settings(tmp_path)
    shown = [repr(settings), str(settings), f"{settings.sasl_password}", json.dumps(settings.describe())]
    for text in shown:
        assert SASL_PASSWORD not in text and DB_PASSWORD not in text
    assert "postgresql+psycopg2://steel:***@db:5432/defects" in shown[-1]
    assert settings.database_url.reveal() == REQUIRED_ENV["DATABASE_URL"]
    with pytest.raises(TypeError):
        pickle.dumps(settings.sasl_password)


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    settings = _sasl_settings(tmp_path)
    with capture_logs() as captured:
        structlog.get_logger().info("worker.starting", settings=settings.describe(), raw=settings)
    assert captured and SASL_PASSWORD not in repr(captured) and DB_PASSWORD not in repr(captured)

    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory(out)
    )
    try:
        structlog.get_logger().info("worker.starting", settings=settings.describe(), raw=settings)
    finally:
        structlog.reset_defaults()
    assert "worker.starting" in out.getvalue()
    assert SASL_PASSWORD not in out.getvalue() and DB_PASSWORD not in out.getvalue()


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_SSL"])
def test_refusals_about_credentials_do_not_echo_the_password(protocol: str) -> None:
    env = {**REQUIRED_ENV, "KAFKA_SECURITY_PROTOCOL": protocol, "KAFKA_SASL_PASSWORD": SASL_PASSWORD}
    with pytest.raises(ConfigError) as info:
        s.load_settings(env, {})
    assert "SASL" in str(info.value) and SASL_PASSWORD not in str(info.value)


def test_configuration_table_lists_every_variable_and_flag() -> None:
    table = s.configuration_table()
    for option in s.OPTIONS:
        assert f"`{option.env}`" in table and f"`{option.flag}`" in table
    assert len({o.env for o in s.OPTIONS}) == len(s.OPTIONS)
    assert {o.field for o in s.OPTIONS} == {f.name for f in dataclasses.fields(s.Settings)}


def test_the_worker_documentation_shows_the_current_configuration_table() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "streaming-worker.md"
    assert s.configuration_table() in doc.read_text(encoding="utf-8"), (
        "docs/streaming-worker.md is out of date: paste the output of "
        "worker.streaming.settings.configuration_table() into it"
    )


def test_the_readme_settings_rows_match_the_configuration_table() -> None:
    """The README shows a subset of the table; each of its rows is the table's row, word for word."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    table = s.configuration_table().splitlines()
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines()
            if any(line.startswith(f"| `{o.env}` |") for o in s.OPTIONS)]  # fmt: skip
    assert len(rows) >= 3, "README.md: expected the main settings table"
    for row in rows:
        assert row in table, f"README.md row differs from configuration_table(): {row}"


TLS_KEY_PASSWORD = "tls-key-pa55-ZZZ"
QUERY_PASSWORD = "query-pa55-WWW"


@pytest.mark.parametrize(
    ("form", "env", "secret"),
    [
        ("user-info", {}, DB_PASSWORD),
        (
            "query string",
            {"DATABASE_URL": f"postgresql://steel@db:5432/defects?password={QUERY_PASSWORD}&sslmode=require"},
            QUERY_PASSWORD,
        ),
        (
            "sslpassword in the query string",
            {"DATABASE_URL": f"postgresql://steel@db/defects?sslpassword={QUERY_PASSWORD}"},
            QUERY_PASSWORD,
        ),
        ("SASL", {"KAFKA_SASL_PASSWORD": SASL_PASSWORD}, SASL_PASSWORD),
        ("TLS key", {"KAFKA_SSL_KEY_PASSWORD": TLS_KEY_PASSWORD}, TLS_KEY_PASSWORD),
    ],
)
def test_every_password_form_is_masked_in_the_settings_their_log_and_repr(
    tmp_path: Path, form: str, env: dict[str, str], secret: str
) -> None:
    base = {**REQUIRED_ENV, **_tls_env(tmp_path)}
    if form == "SASL":
        base |= {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
        base |= {"KAFKA_SASL_USERNAME": "steel"}
    settings = s.load_settings({**base, **env}, {})
    with capture_logs() as captured:
        structlog.get_logger().info("worker.starting", settings=settings.describe())
    for text in (repr(settings), str(settings), json.dumps(settings.describe()), repr(captured)):
        assert secret not in text, form
    assert "sslmode=require" in settings.describe()["database_url"] or form != "query string"


def test_a_database_url_that_does_not_parse_is_masked_whole() -> None:
    assert s.masked_database_url(s.Secret(f"host=db password={QUERY_PASSWORD}")) == s.MASK


def _tls_env(tmp_path: Path) -> dict[str, str]:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    return {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_FILE": str(tmp_path / "ca.pem"),
        "KAFKA_SSL_CERT_FILE": str(tmp_path / "client.pem"),
        "KAFKA_SSL_KEY_FILE": str(tmp_path / "client.key"),
    }


def test_claim_checks_are_off_by_default_and_their_root_must_be_a_folder(tmp_path: Path) -> None:
    assert s.load_settings(REQUIRED_ENV, {}).claim_check_root is None
    assert (
        s.load_settings({**REQUIRED_ENV, "CLAIM_CHECK_ROOT": str(tmp_path)}, {}).claim_check_root
        == tmp_path.resolve()
    )
    assert s.load_settings({**REQUIRED_ENV, "CLAIM_CHECK_ROOT": "none"}, {}).claim_check_root is None
    with pytest.raises(ConfigError, match="CLAIM_CHECK_ROOT: expected an existing directory"):
        s.load_settings({**REQUIRED_ENV, "CLAIM_CHECK_ROOT": str(tmp_path / "missing")}, {})
