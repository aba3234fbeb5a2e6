"""The worker's settings: one frozen, typed object built once in `main()` from the environment and
the command line (a flag wins over its environment variable, which wins over the default).

`OPTIONS` is the single table of settings: field, environment variable, command-line flag, type,
default and help. `steel-worker run` builds its flags from it and the README's configuration table
is printed from it (`configuration_table()`). Secrets (`DATABASE_URL`, the SASL password, the TLS
key password) are held as `Secret`, whose repr and str are masked, so logging the settings (or an
exception that shows them) never prints a password.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.alerts.config import DEFAULT_MAX_POSITION_JUMP_M, DEFAULT_RULES_PATH
from worker.core.errors import ConfigError
from worker.core.quality import CHECKS, parse_checks
from worker.model.acceleration import parse_providers
from worker.model.runtimes import AUTO, RUNTIMES
from worker.storage.passes import DEFAULT_PASS_RESTART_M
from worker.streaming.decode import DEFAULT_MAX_IMAGE_SEGMENTS, DEFAULT_MAX_JPEG_SCANS
from worker.streaming.decode_pool import DEFAULT_TIMEOUT_S as DEFAULT_DECODE_TIMEOUT_S
from worker.streaming.positions import POLICIES as POSITION_POLICIES
from worker.streaming.validation import DEFAULT_MAX_STRIP_LENGTH_M

MASK = "**********"
HEADER_ROOM_BYTES = 65_536  # room for a message's key and headers next to its value


class Secret:
    """A string that does not show itself: repr/str/format print a mask; `reveal()` returns it."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        """The secret itself: pass it to the client that needs it, never to a logger."""
        return str(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MODEL_RUNTIMES = (*RUNTIMES, AUTO)  # MODEL_RUNTIME's choices
ALERT_RULES_OFF = "none"  # ALERT_RULES=none (or --alert-rules none): no alert rules evaluated
MAX_POSITION_M = 1_000_000.0  # frame-meta.v1's bound on position_m


@dataclass(frozen=True)
class Option:
    """One setting: dataclass field, environment variable, CLI flag, parser, default and help."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False
    shown_default: str | None = None  # the default as the documentation shows it (not machine-specific)

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected an integer > 0, received {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected an integer >= 0, received {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a TCP port 0..65535, received {text!r}")
    return value


def _choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, received {text!r}")
        return value

    return parse


def _onnx_providers(text: str) -> str:
    value = text.strip().lower()
    if value != "auto":
        try:
            parse_providers(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("ONNX_PROVIDERS: ")) from None
    return value


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on or off (true/false, yes/no, 1/0), received {text!r}")


def _metres(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= MAX_POSITION_M:  # NaN and infinities fail too
        raise ValueError(f"expected metres over 0 and at most {MAX_POSITION_M:g}, received {text!r}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"expected a share between 0 and 1, received {text!r}")
    return value


def _jpeg_quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError(f"expected a JPEG quality 1..100, received {text!r}")
    return value


def _side(text: str) -> int:
    value = int(text)
    if value < 8:
        raise ValueError(f"expected a side of at least 8 pixels, received {text!r}")
    return value


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def _path(text: str) -> Path:
    return Path(_text(text)).expanduser()


def rules_file_setting(text: str) -> Path | None:
    """A rules file's path, or None for `none` (alert rules off)."""
    value = _text(text)
    return None if value.lower() == ALERT_RULES_OFF else Path(value).expanduser()


def _optional_dir(text: str) -> Path | None:
    """An existing directory, resolved (symbolic links followed), or None for `none`/`off`."""
    value = _text(text)
    if value.lower() in ("none", "off"):
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"expected an existing directory, received {text!r}")
    return path.resolve()


def _optional_path(text: str) -> Path | None:
    """A path, or None for `none`/`off` (its existence is checked where the file is read)."""
    value = _text(text)
    return None if value.lower() in ("none", "off") else Path(value).expanduser()


def _secret(text: str) -> Secret:
    if not text:
        raise ValueError("expected a non-empty value")
    return Secret(text)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


REQUIRED = object()  # default of the settings that have none

OPTIONS: tuple[Option, ...] = (
    Option(
        "bootstrap_servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        _text,
        REQUIRED,
        "Kafka bootstrap servers, comma-separated host:port",
    ),
    Option(
        "database_url",
        "DATABASE_URL",
        _secret,
        REQUIRED,
        "URL of the defect database, postgresql://USER:PASSWORD@HOST:5432/DATABASE",
        secret=True,
    ),
    Option("model_path", "MODEL_PATH", _path, REQUIRED, "model artefact directory written by `train`"),
    Option(
        "model_tta",
        "MODEL_TTA",
        _choice(("none", "flips", "flips+rot90")),
        "none",
        "test-time augmentation: the mean of the scores over each tile's flips (4 views) or flips and"
        " 90° turns (8 views); the model's work grows by that factor",
    ),
    Option(
        "model_runtime",
        "MODEL_RUNTIME",
        _choice(MODEL_RUNTIMES),
        "tensorflow",
        "what runs the network: Keras (tensorflow) or the model's export (`steel-worker export"
        " --runtime openvino|onnxruntime [--int8]`; needs the openvino or onnx extra); auto: the"
        " first that loads of openvino-int8, onnxruntime-int8, openvino, onnxruntime, tensorflow"
        " (tensorflow on a GPU); the start-up line `worker.model` names the one chosen",
    ),
    Option(
        "model_precision",
        "MODEL_PRECISION",
        _choice(("auto", "float32", "float16")),
        "auto",
        "Keras' compute precision: float16 is mixed precision (float32 weights and scores); auto:"
        " float16 when a GPU is present, float32 on a CPU",
    ),
    Option(
        "model_xla",
        "MODEL_XLA",
        _choice(("auto", "on", "off")),
        "auto",
        "XLA compilation of Keras' forward pass; auto: Keras' choice, on with a GPU, off on a CPU",
    ),
    Option(
        "onnx_providers",
        "ONNX_PROVIDERS",
        _onnx_providers,
        "auto",
        "ONNX Runtime's execution providers in order, from tensorrt, cuda, cpu (e.g. cuda,cpu); auto:"
        " TensorRT and CUDA where the installed onnxruntime offers them, then the CPU",
    ),
    Option(
        "model_agreement_max_f1_drop",
        "MODEL_AGREEMENT_MAX_F1_DROP",
        _share,
        0.01,
        "an INT8 export is refused when its F1 on the model's test split is lower than Keras' by"
        " more than this on any class (its agreement.json, written by `export`)",
    ),
    Option(
        "model_agreement_max_flips",
        "MODEL_AGREEMENT_MAX_FLIPS",
        _share,
        0.005,
        "an INT8 export is refused when its decisions differ from Keras' on more than this share of"
        " the test split's tiles for any class",
    ),
    Option("frames_topic", "FRAMES_TOPIC", _text, "mill.frames", "topic the cameras publish frames to"),
    Option(
        "detections_topic",
        "DETECTIONS_TOPIC",
        _text,
        "mill.detections",
        "topic for one detection message per frame",
    ),
    Option("alerts_topic", "ALERTS_TOPIC", _text, "mill.alerts", "topic for cause-linked alerts"),
    Option(
        "alert_rules",
        "ALERT_RULES",
        rules_file_setting,
        DEFAULT_RULES_PATH,
        "alert rules file (YAML or JSON, schema alert-rules.v1; see docs/alerts.md), checked at start-up;"
        f" `{ALERT_RULES_OFF}` turns the rules off",
        shown_default="config/alert-rules.yaml",
    ),
    Option(
        "max_position_jump_m",
        "MAX_POSITION_JUMP_M",
        _metres,
        DEFAULT_MAX_POSITION_JUMP_M,
        "a frame with no other frame of its strip pass and surface within this many metres is a position"
        " outlier: logged, counted, left out of the alert rules while so (docs/alerts.md); set it above"
        " the largest gap between a camera's frames",
    ),
    Option(
        "pass_restart_m",
        "PASS_RESTART_M",
        _metres,
        DEFAULT_PASS_RESTART_M,
        "without pass_id in frame-meta, a frame more than this many metres behind the strip's frame"
        " captured before it starts a new pass of the strip (docs/alerts.md states the rule)",
    ),
    Option("dlq_topic", "DLQ_TOPIC", _text, "mill.frames.dlq", "dead-letter topic for frames refused"),
    Option("consumer_group", "CONSUMER_GROUP", _text, "steel-worker", "Kafka consumer group of the workers"),
    Option(
        "batch_tiles",
        "BATCH_TILES",
        _positive_int,
        32,
        "close a micro-batch once it holds this many tiles (frames are never split)",
    ),
    Option(
        "batch_max_wait_ms",
        "BATCH_MAX_WAIT_MS",
        _non_negative_int,
        500,
        "close a micro-batch once its oldest frame waited this long",
    ),
    Option("tile_size", "TILE_SIZE", _positive_int, 256, "tile side in pixels"),
    Option(
        "tile_min_overlap",
        "TILE_MIN_OVERLAP",
        _non_negative_int,
        0,
        "least overlap between neighbouring tiles, in pixels",
    ),
    Option(
        "evidence_images",
        "EVIDENCE_IMAGES",
        _switch,
        True,
        "store the crop of every tile with a detection in tile_images, with its detections (on/off)",
    ),
    Option(
        "evidence_jpeg_quality",
        "EVIDENCE_JPEG_QUALITY",
        _jpeg_quality,
        90,
        "JPEG quality of the stored crops (1-100)",
    ),
    Option(
        "evidence_max_side",
        "EVIDENCE_MAX_SIDE",
        _side,
        256,
        "crops with a longer side are shrunk to this many pixels before they are stored",
    ),
    Option(
        "evidence_clean_sample",
        "EVIDENCE_CLEAN_SAMPLE",
        _share,
        0.005,
        "share of clean tiles (no detection) whose crop is stored too, for quality control (0-1)",
    ),
    Option(
        "decode_workers",
        "DECODE_WORKERS",
        _positive_int,
        2,
        "processes decoding images (each decodes one frame at a time)",
    ),
    Option(
        "decode_timeout_ms",
        "DECODE_TIMEOUT_MS",
        _positive_int,
        int(DEFAULT_DECODE_TIMEOUT_S * 1000),
        "longest time one frame may take to decode; a frame over it is dead-lettered (decode-timeout)"
        " and its decoder process replaced",
    ),
    Option(
        "max_jpeg_scans",
        "MAX_JPEG_SCANS",
        _positive_int,
        DEFAULT_MAX_JPEG_SCANS,
        "refuse JPEGs with more scans, before decoding (image-too-costly): libjpeg walks the whole image"
        " once per scan; real progressive JPEGs have about ten",
    ),
    Option(
        "max_image_segments",
        "MAX_IMAGE_SEGMENTS",
        _positive_int,
        DEFAULT_MAX_IMAGE_SEGMENTS,
        "refuse JPEGs with more marker segments and PNGs with more chunks, before decoding"
        " (image-too-costly)",
    ),
    Option(
        "max_frame_bytes",
        "MAX_FRAME_BYTES",
        _positive_int,
        16 * 1024 * 1024,
        "refuse frames whose payload is larger (dead-letter reason oversize-payload)",
    ),
    Option(
        "max_frame_pixels",
        "MAX_FRAME_PIXELS",
        _positive_int,
        40_000_000,
        "refuse images whose header declares more pixels, before decoding (image-too-large)",
    ),
    Option(
        "max_frame_tiles",
        "MAX_FRAME_TILES",
        _positive_int,
        256,
        "refuse images that make more tiles, before decoding (too-many-tiles): bounds the memory a"
        " thin or huge image costs",
    ),
    Option(
        "max_strip_length_m",
        "MAX_STRIP_LENGTH_M",
        _metres,
        DEFAULT_MAX_STRIP_LENGTH_M,
        "refuse frames whose position_m is larger (position-out-of-range): the longest plausible strip"
        " (a hot-rolled coil is 2-3 km long)",
    ),
    Option(
        "claim_check_root",
        "CLAIM_CHECK_ROOT",
        _optional_dir,
        None,
        "folder whose regular files frames may name by image_uri (claim checks); unset: claim checks"
        " are off and such frames are dead-lettered",
    ),
    Option(
        "claim_check_timeout_ms",
        "CLAIM_CHECK_TIMEOUT_MS",
        _positive_int,
        5_000,
        "longest time to read one claim-check image",
    ),
    Option(
        "max_decompressed_bytes",
        "KAFKA_MAX_DECOMPRESSED_BYTES",
        _positive_int,
        268_435_456,
        "largest size a compressed record batch may decompress to; larger batches are skipped as"
        " unreadable (decompression bombs)",
    ),
    Option(
        "camera_calibration",
        "CAMERA_CALIBRATION",
        _optional_path,
        None,
        "YAML/JSON file of what each camera's good frames look like (schemas/camera-calibration.v1.json);"
        " none: the built-in limits for every camera (docs/streaming-worker.md, Camera health)",
        shown_default="none",
    ),
    Option(
        "image_quality_checks",
        "IMAGE_QUALITY_CHECKS",
        parse_checks,
        frozenset(CHECKS),
        f"image-quality checks run on every frame: all, none, or some of {', '.join(CHECKS)}",
        shown_default="all",
    ),
    Option(
        "image_quality_refuse",
        "IMAGE_QUALITY_REFUSE",
        parse_checks,
        frozenset(),
        "checks whose failure refuses the frame (dead letter image-quality) instead of flagging it"
        " (stored with frames.quality_flags; its detections skipped by the alert rules): none, all, or a"
        " list",
        shown_default="none",
    ),
    Option(
        "clock_skew_max_s",
        "CLOCK_SKEW_MAX_S",
        _positive_int,
        300,
        "largest difference between a frame's captured_at and its Kafka record's timestamp before the"
        " frame is flagged clock-skew (captured_at is stored as sent)",
    ),
    Option(
        "camera_alert_frames",
        "CAMERA_ALERT_FRAMES",
        _non_negative_int,
        20,
        "a run of this many frames in a row from one camera failing an image-quality check raises one"
        " camera alert; 0: no camera alerts",
    ),
    Option(
        "camera_alert_severity",
        "CAMERA_ALERT_SEVERITY",
        _choice(("low", "medium", "high")),
        "high",
        "severity of camera alerts",
    ),
    Option(
        "metrics_host",
        "METRICS_HOST",
        _text,
        "0.0.0.0",
        "address of the /metrics, /healthz and /readyz server",
    ),
    Option(
        "metrics_port",
        "METRICS_PORT",
        _port,
        9108,
        "port of /metrics, /healthz and /readyz; 0 picks a free port",
    ),
    Option("max_poll_records", "KAFKA_MAX_POLL_RECORDS", _positive_int, 64, "most frames one poll returns"),
    Option("poll_timeout_ms", "KAFKA_POLL_TIMEOUT_MS", _positive_int, 200, "longest wait of one poll"),
    Option(
        "session_timeout_ms",
        "KAFKA_SESSION_TIMEOUT_MS",
        _positive_int,
        10_000,
        "consumer group session timeout",
    ),
    Option(
        "max_poll_interval_ms",
        "KAFKA_MAX_POLL_INTERVAL_MS",
        _positive_int,
        300_000,
        "longest time between polls before the group evicts the worker",
    ),
    Option(
        "retry_backoff_ms",
        "RETRY_BACKOFF_MS",
        _positive_int,
        200,
        "first wait after a failed database write or publish; doubles per retry",
    ),
    Option(
        "retry_backoff_max_ms", "RETRY_BACKOFF_MAX_MS", _positive_int, 10_000, "longest wait between retries"
    ),
    Option(
        "position_lost_policy",
        "KAFKA_POSITION_LOST_POLICY",
        _choice(POSITION_POLICIES),
        POSITION_POLICIES[0],
        "where to read a partition whose committed position means nothing because its topic was deleted"
        " and created again: earliest (its first record: nothing skipped) or latest (its end)",
    ),
    Option(
        "topic_check_ms",
        "KAFKA_TOPIC_CHECK_MS",
        _positive_int,
        10_000,
        "how often the worker asks whether a topic it reads was deleted and created again (its id"
        " changed), which no rebalance announces",
    ),
    Option(
        "systemic_after_isolated",
        "SYSTEMIC_AFTER_ISOLATED",
        _positive_int,
        3,
        "a step whose frames fail alike this many times in a row, with nothing delivered in between,"
        " stops dead-lettering them and retries as for an outage (at most this many minus one are"
        " dead-lettered first; 1: never set a frame aside)",
    ),
    Option(
        "stuck_after_s",
        "STUCK_AFTER_S",
        _positive_int,
        300,
        "a batch failing this long makes /healthz answer 503 (stuck); /readyz does from the first failure",
    ),
    Option(
        "db_statement_timeout_ms",
        "DB_STATEMENT_TIMEOUT_MS",
        _positive_int,
        30_000,
        "PostgreSQL statement_timeout of the worker's connections (a slower statement fails and is retried)",
    ),
    Option(
        "db_lock_timeout_ms",
        "DB_LOCK_TIMEOUT_MS",
        _positive_int,
        10_000,
        "PostgreSQL lock_timeout of the worker's connections",
    ),
    Option(
        "db_idle_in_transaction_timeout_ms",
        "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        _positive_int,
        60_000,
        "PostgreSQL idle_in_transaction_session_timeout of the worker's connections",
    ),
    Option(
        "shutdown_timeout_s",
        "SHUTDOWN_TIMEOUT_S",
        _positive_int,
        30,
        "on SIGTERM, how long to keep retrying the batch in flight before leaving it uncommitted",
    ),
    Option(
        "worker_id",
        "WORKER_ID",
        _text,
        None,
        "name of this worker in logs and dead-letter headers (default: host-pid)",
    ),
    Option(
        "log_format", "LOG_FORMAT", _choice(LOG_FORMATS), "auto", "auto: JSON unless stdout is a terminal"
    ),
    Option("log_level", "LOG_LEVEL", _choice(LOG_LEVELS), "info", "least level logged"),
    Option(
        "security_protocol",
        "KAFKA_SECURITY_PROTOCOL",
        _choice(SECURITY_PROTOCOLS, upper=True),
        "PLAINTEXT",
        "Kafka security protocol: " + ", ".join(SECURITY_PROTOCOLS),
    ),
    Option(
        "sasl_mechanism",
        "KAFKA_SASL_MECHANISM",
        _choice(SASL_MECHANISMS, upper=True),
        None,
        "SASL mechanism: " + ", ".join(SASL_MECHANISMS),
    ),
    Option("sasl_username", "KAFKA_SASL_USERNAME", _text, None, "SASL user name"),
    Option("sasl_password", "KAFKA_SASL_PASSWORD", _secret, None, "SASL password", secret=True),
    Option("ssl_cafile", "KAFKA_SSL_CA_FILE", _path, None, "CA bundle that signed the brokers' certificates"),
    Option("ssl_certfile", "KAFKA_SSL_CERT_FILE", _path, None, "client certificate (mutual TLS)"),
    Option("ssl_keyfile", "KAFKA_SSL_KEY_FILE", _path, None, "client private key (mutual TLS)"),
    Option(
        "ssl_key_password", "KAFKA_SSL_KEY_PASSWORD", _secret, None, "password of the client key", secret=True
    ),
)


@dataclass(frozen=True)
class Settings:
    """Everything `steel-worker run` is configured with; see OPTIONS for each field's meaning."""

    bootstrap_servers: str
    database_url: Secret
    model_path: Path
    model_tta: str
    model_runtime: str
    model_precision: str
    model_xla: str
    onnx_providers: str
    model_agreement_max_f1_drop: float
    model_agreement_max_flips: float
    frames_topic: str
    detections_topic: str
    alerts_topic: str
    alert_rules: Path | None  # None: rules off
    max_position_jump_m: float
    pass_restart_m: float
    dlq_topic: str
    consumer_group: str
    batch_tiles: int
    batch_max_wait_ms: int
    tile_size: int
    tile_min_overlap: int
    evidence_images: bool
    evidence_jpeg_quality: int
    evidence_max_side: int
    evidence_clean_sample: float
    decode_workers: int
    decode_timeout_ms: int
    max_jpeg_scans: int
    max_image_segments: int
    max_frame_bytes: int
    max_frame_pixels: int
    max_frame_tiles: int
    max_strip_length_m: float
    claim_check_root: Path | None
    claim_check_timeout_ms: int
    max_decompressed_bytes: int
    camera_calibration: Path | None
    image_quality_checks: frozenset[str]
    image_quality_refuse: frozenset[str]
    clock_skew_max_s: int
    camera_alert_frames: int
    camera_alert_severity: str
    metrics_host: str
    metrics_port: int
    max_poll_records: int
    poll_timeout_ms: int
    session_timeout_ms: int
    max_poll_interval_ms: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    position_lost_policy: str
    topic_check_ms: int
    systemic_after_isolated: int
    stuck_after_s: int
    db_statement_timeout_ms: int
    db_lock_timeout_ms: int
    db_idle_in_transaction_timeout_ms: int
    shutdown_timeout_s: int
    worker_id: str
    log_format: str
    log_level: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: Secret | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None
    ssl_key_password: Secret | None

    def __post_init__(self) -> None:
        _check_consistency(self)

    @property
    def max_message_bytes(self) -> int:
        """Largest message the worker's clients fetch or produce: a frame of MAX_FRAME_BYTES plus
        room for its headers (at least Kafka's default of 1 MiB)."""
        return max(1_048_576, self.max_frame_bytes + HEADER_ROOM_BYTES)

    def kafka_options(self) -> dict[str, Any]:
        """Connection and security keyword arguments shared by KafkaConsumer and KafkaProducer."""
        connection = KafkaConnection(**{name: getattr(self, name) for name in KAFKA_CONNECTION_FIELDS})
        return connection.options(self.worker_id)

    def describe(self) -> dict[str, Any]:
        """The settings as plain values safe to log: secrets masked, the database password hidden."""
        described: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            described[f.name] = str(value) if isinstance(value, Secret | Path) else value
            if isinstance(value, frozenset):
                described[f.name] = sorted(value)
        described["database_url"] = masked_database_url(self.database_url)
        return described


#: Query parameters of a database URL whose values are masked too (libpq takes `password` there).
_SECRET_QUERY_WORDS = ("pass", "secret", "token", "key", "credential")


def masked_database_url(url: Secret) -> str:
    """The database URL with every password masked — in the user-info part (`***`) and in query
    parameters such as `?password=` or `?sslpassword=` — for logs and error messages; a URL that
    does not parse is masked whole."""
    try:
        parsed = make_url(url.reveal())
        query = {
            name: "***" if any(word in name.lower() for word in _SECRET_QUERY_WORDS) else value
            for name, value in parsed.query.items()
        }
        return parsed.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except (ArgumentError, ValueError, TypeError):
        return MASK


def _check_consistency(s: Settings) -> None:
    """Refuse combinations that cannot work or that would leak a password on the network."""
    _check_kafka_connection(s)
    if s.tile_min_overlap >= s.tile_size:
        raise ConfigError(
            f"TILE_MIN_OVERLAP must be smaller than TILE_SIZE, received {s.tile_min_overlap} >= {s.tile_size}"
        )
    if s.retry_backoff_max_ms < s.retry_backoff_ms:
        raise ConfigError(
            f"RETRY_BACKOFF_MAX_MS ({s.retry_backoff_max_ms}) must be >= "
            f"RETRY_BACKOFF_MS ({s.retry_backoff_ms})"
        )
    if not s.image_quality_refuse <= s.image_quality_checks:
        raise ConfigError(
            "IMAGE_QUALITY_REFUSE names checks that IMAGE_QUALITY_CHECKS does not run:"
            f" {', '.join(sorted(s.image_quality_refuse - s.image_quality_checks))}; expected a subset of"
            f" {', '.join(sorted(s.image_quality_checks)) or 'none'}"
        )
    if s.poll_timeout_ms >= s.max_poll_interval_ms:
        raise ConfigError(
            f"KAFKA_POLL_TIMEOUT_MS ({s.poll_timeout_ms}) must be below "
            f"KAFKA_MAX_POLL_INTERVAL_MS ({s.max_poll_interval_ms})"
        )


def _check_kafka_connection(s: Settings | KafkaConnection) -> None:
    """Refuse Kafka security settings that cannot work or that would send a password in clear."""
    sasl = s.security_protocol.startswith("SASL")
    if sasl and (s.sasl_mechanism is None or s.sasl_username is None or s.sasl_password is None):
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={s.security_protocol} needs KAFKA_SASL_MECHANISM, "
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD; received "
            f"mechanism={s.sasl_mechanism}, username={s.sasl_username}, "
            f"password={'set' if s.sasl_password else 'missing'}"
        )
    if not sasl and (s.sasl_mechanism or s.sasl_username or s.sasl_password):
        raise ConfigError(
            f"SASL credentials are set but KAFKA_SECURITY_PROTOCOL={s.security_protocol}; "
            "expected SASL_SSL (or SASL_PLAINTEXT) so that they are used"
        )
    if s.security_protocol == "SASL_PLAINTEXT" and s.sasl_mechanism == "PLAIN":
        raise ConfigError(
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with KAFKA_SASL_MECHANISM=PLAIN would send the "
            "password unencrypted; expected SASL_SSL, or a SCRAM mechanism"
        )
    if not s.security_protocol.endswith("SSL") and (s.ssl_cafile or s.ssl_certfile or s.ssl_keyfile):
        raise ConfigError(
            f"TLS files are set but KAFKA_SECURITY_PROTOCOL={s.security_protocol}; expected SSL or SASL_SSL"
        )
    if (s.ssl_certfile is None) != (s.ssl_keyfile is None):
        raise ConfigError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together; expected both or neither")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(s, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{_option(name).env}={path}: expected an existing file")


def _option(field_name: str) -> Option:
    return next(o for o in OPTIONS if o.field == field_name)


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build Settings: `overrides` (CLI values, None = not given) over `env` (default os.environ)
    over defaults. ConfigError names the variable and flag of a missing or invalid setting."""
    env = os.environ if env is None else env
    overrides = overrides or {}
    values: dict[str, Any] = {}
    missing: list[str] = []
    for option in OPTIONS:
        value = _value(option, env, overrides)
        if value is REQUIRED:
            missing.append(f"{option.env} (or {option.flag})")
            continue
        values[option.field] = value
    if missing:
        raise ConfigError("missing required settings: " + ", ".join(missing))
    return Settings(**values)


def _value(option: Option, env: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    """One option's value: the override, else the variable, else the default (REQUIRED if none)."""
    given = overrides.get(option.field)
    source = f"{option.flag}"
    if given is None:
        given = env.get(option.env) or None  # an empty variable counts as unset
        source = option.env
    if given is None:
        return _default_worker_id() if option.field == "worker_id" else option.default
    if not isinstance(given, str):
        return given  # already typed (argparse type= or a test)
    try:
        return option.parse(given)
    except ValueError as exc:
        shown = MASK if option.secret else repr(given)
        detail = str(exc).replace(repr(given), shown) if option.secret else str(exc)
        raise ConfigError(f"{source}: {detail} (received {shown})") from None


#: The settings that say how to reach Kafka: every Kafka client of the project uses them.
KAFKA_CONNECTION_FIELDS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password",
)


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate: the worker's KAFKA_* connection settings."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: Secret | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None
    ssl_key_password: Secret | None

    def __post_init__(self) -> None:
        _check_kafka_connection(self)

    def options(self, client_id: str) -> dict[str, Any]:
        """Connection and security keyword arguments shared by KafkaConsumer and KafkaProducer."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()],
            "client_id": client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.reveal() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    options[name] = str(value)
            if self.ssl_key_password is not None:
                options["ssl_password"] = self.ssl_key_password.reveal()
        return options


def load_kafka_connection(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> KafkaConnection:
    """The KAFKA_* connection settings alone (for the commands that talk to Kafka beside the
    worker: `dlq replay`), read like `load_settings` reads them."""
    env = os.environ if env is None else env
    by_field = {option.field: option for option in OPTIONS}
    values = {name: _value(by_field[name], env, overrides or {}) for name in KAFKA_CONNECTION_FIELDS}
    if values["bootstrap_servers"] is REQUIRED:
        option = by_field["bootstrap_servers"]
        raise ConfigError(f"missing required settings: {option.env} (or {option.flag})")
    return KafkaConnection(**values)


def configuration_table() -> str:
    """A Markdown table of every setting: variable, flag, default, meaning (for the README)."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        if o.default is REQUIRED:
            default = "required"
        elif o.default is None:
            default = "—"
        else:
            default = f"`{o.shown_default if o.shown_default is not None else o.default}`"
        rows.append(f"| `{o.env}` | `{o.flag}` | {default} | {o.help} |")
    return "\n".join(rows)
