"""The project's exceptions: one root, one subclass per kind of failure.

Messages name the argument or file, what was expected, and what was received, so that the CLI can
print them as they are (`steel-worker` exits with status 2 and the message, no traceback).
"""

from __future__ import annotations


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
