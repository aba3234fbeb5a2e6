"""What a failure means for the loop: wait and retry, wait for people, or set one frame aside.

`classify(error)` sorts every exception a delivery step can meet into one of three kinds:

- TRANSIENT: the database or the broker is unreachable, restarting, timing out or overloaded
  (SQLAlchemy OperationalError — which includes statement and lock timeouts —, InterfaceError,
  DisconnectionError, pool TimeoutError; Kafka errors marked retriable; a send not acknowledged
  in time). The step is retried with backoff; nothing is skipped.
- SYSTEMIC: the fault is in the set-up, not in any frame: no privilege (Kafka authorisation, a
  PostgreSQL permission), a topic, table or column that does not exist, a model that answers in
  the wrong shape. Retrying cannot help until someone acts, and no frame is to blame, so the step
  is retried with backoff and the worker reports itself stuck (/readyz, /healthz, the log).
- DATA (everything else): a value the database or the broker will not take — a constraint,
  a record too large, a NUL character — or a fault of the code that only some frames trigger.
  The step that met it sets the frame aside alone (bisecting its batch) and delivers the rest,
  but only after ruling out that the fault is everyone's: the ledger writes a synthetic frame
  first, and a step whose last frames set aside all failed alike with nothing delivered in
  between stops setting frames aside (`SystemicFaultError`, see `worker.streaming.isolation`).

PostgreSQL errors are sorted by their SQLSTATE before their Python class, because psycopg2 files
some faults of the server under classes that look like data: a read-only transaction (25006, a
standby reached after a failover, a maintenance freeze) and a failed transaction (25P02) are
`InternalError`s; a statement cancelled by the operator (57014) or an out-of-memory (53200) are
`OperationalError`s already. The classes: 08, 40, 53, 57, 58 and lock-not-available (55P03)
are transient; 0A, 25, 2D, 39, 42, F0, XX and the rest of 55 are systemic; 22 (data exceptions)
and 23 (integrity) are data — unless the storage layer found the constraint or column unknown to
this worker's schema (`SchemaDriftError`: a migration applied while the worker runs).

`is_unreadable_record(error)` says whether an exception raised by `KafkaConsumer.poll` comes from
the bytes of a record (a corrupt batch, a codec that fails, a header key that is not UTF-8, a
decompression bomb) rather than from the client or the cluster.
"""

from __future__ import annotations

import struct
import zlib

from kafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc

from worker.core.errors import DeliveryError, ModelError, SchemaDriftError, SystemicFaultError

TRANSIENT, SYSTEMIC, DATA = "transient", "systemic", "data"


_TRANSIENT: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    kafka_errors.KafkaTimeoutError,
    DeliveryError,
)

_SYSTEMIC: tuple[type[BaseException], ...] = (
    sa_exc.ProgrammingError,  # permission denied, undefined table or column, a type it cannot adapt
    sa_exc.NoSuchTableError,
    sa_exc.ArgumentError,
    kafka_errors.AuthorizationError,
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.InvalidTopicError,
    kafka_errors.UnknownTopicIdError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.IllegalStateError,
    kafka_errors.KafkaConfigurationError,
    ModelError,
    SchemaDriftError,
    SystemicFaultError,
)

#: SQLSTATE classes (first two characters) and codes: what they say about the fault.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_SQLSTATES = frozenset({"55P03", "55006"})  # lock not available, object in use
_SYSTEMIC_SQLSTATE_CLASSES = frozenset({"0A", "25", "2D", "39", "42", "55", "F0", "XX"})

_RECORD_DATA: tuple[type[BaseException], ...] = (
    kafka_errors.CorruptRecordError,  # also the codecs' DecompressionBombError
    kafka_errors.UnsupportedCodecError,
    kafka_errors.InvalidRecordError,
    zlib.error,
    struct.error,
    EOFError,
    ValueError,  # includes UnicodeDecodeError and the codecs' own errors derived from it
    OSError,  # gzip.BadGzipFile
    RuntimeError,  # lz4
)


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error (wrapped by SQLAlchemy or not), else None."""
    code = getattr(getattr(error, "orig", None), "pgcode", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def _classify_sqlstate(code: str) -> str | None:
    if code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES:
        return TRANSIENT
    if code[:2] in _SYSTEMIC_SQLSTATE_CLASSES:
        return SYSTEMIC
    return None


def classify(error: BaseException) -> str:
    """TRANSIENT, SYSTEMIC or DATA (see the module doc)."""
    code = sqlstate(error)
    by_code = _classify_sqlstate(code) if code is not None else None
    if by_code is not None:
        return by_code
    if isinstance(error, _SYSTEMIC):
        return SYSTEMIC
    if isinstance(error, _TRANSIENT):
        return TRANSIENT
    if isinstance(error, kafka_errors.KafkaError):
        return TRANSIENT if error.retriable else DATA
    return DATA


def is_unreadable_record(error: BaseException) -> bool:
    """True when `KafkaConsumer.poll` raised because of a record's bytes (see the module doc)."""
    if isinstance(error, kafka_errors.KafkaError):
        return isinstance(error, _RECORD_DATA)
    module = type(error).__module__.split(".")[0]
    return isinstance(error, _RECORD_DATA) or module in {"zstandard", "lz4", "snappy", "cramjam"}


def signature(error: BaseException) -> str:
    """What two failures share when they are the same fault: the exception's type and, for
    PostgreSQL, its SQLSTATE (`IntegrityError/23502`); never the message, which names values."""
    code = sqlstate(error)
    name = type(error).__name__
    return f"{name}/{code}" if code else name


def describe(error: BaseException) -> str:
    """`Type: message` of an exception, for logs and dead-letter details (not yet bounded)."""
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
