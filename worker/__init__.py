"""Steel strip surface inspection: tile classifier, streaming worker, defect database."""

from __future__ import annotations

__version__ = "0.1.0"
