"""The project's exceptions, all of them: one root, one subclass per kind of failure.

Messages name the argument or file, what was expected, and what was received, so that the CLI can
print them as they are (`steel-worker` exits with status 2 and the message, no traceback).
`worker.core.failures.classify` says what each kind means to the worker loop (retry, wait for
people, or set one frame aside).
"""

from __future__ import annotations

from typing import Final

import kafka.errors


class SteelWorkerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(SteelWorkerError):
    """A setting, option or configuration file is missing or invalid."""


class CatalogueError(SteelWorkerError):
    """A class catalogue is malformed, or a label names a class the catalogue lacks."""


class DatasetError(SteelWorkerError):
    """Input data (images, label files, masks, tile sets) is missing, unreadable or inconsistent."""


class ModelError(SteelWorkerError):
    """A model artefact is missing, incomplete or incompatible with its input."""


class SchemaError(SteelWorkerError):
    """A message or database schema does not match its contract."""


class RefusalError(SchemaError):
    """A message the worker will not process: `reason` (one of `worker.core.refusals.REASONS`),
    `stage` (one of `STAGES`) and `detail`, a sentence for people that says what was expected and
    what was received."""

    def __init__(self, reason: str, stage: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.stage, self.detail = reason, stage, detail


class SchemaDriftError(SchemaError):
    """The database refused a write for a column or constraint that this worker's schema does not
    have: it was migrated while the worker runs (systemic: no frame is to blame)."""


class SystemicFaultError(SteelWorkerError):
    """A step's error that would have set frames aside is not theirs: a synthetic frame fails the
    same way, or the last frames set aside all failed alike with nothing delivered in between.
    The step is retried, never skipped (`worker.core.failures`: systemic)."""


class DeliveryError(SteelWorkerError):
    """Output messages of a batch were not acknowledged by the broker in time (transient)."""


class InfrastructureError(SteelWorkerError):
    """A local service (broker, database server) could not be started, reached or stopped."""


class LockTimeoutError(SteelWorkerError):
    """A maintenance command did not get the lock it needs within its bounded attempts (other
    sessions held it); the message names them."""


class MissingCodecError(ConfigError):
    """kafka-python lacks the library of a compression codec producers may use."""


#: The setting that holds the decompression limit (named in error messages).
DECOMPRESSED_LIMIT_SETTING: Final = "KAFKA_MAX_DECOMPRESSED_BYTES"


class DecompressionBombError(kafka.errors.CorruptRecordError):
    """A record batch would decompress to more than the configured limit; it was not decompressed.

    A kafka-python `CorruptRecordError`, because kafka-python's record classes raise it from
    inside `KafkaConsumer.poll` and the worker treats it as any other unreadable record."""

    def __init__(self, codec: str, limit: int) -> None:
        self.codec = codec
        self.limit = limit
        super().__init__(
            f"{codec} record batch decompresses to more than {limit} bytes "
            f"(limit {DECOMPRESSED_LIMIT_SETTING}); refused before allocating more than the limit"
        )
