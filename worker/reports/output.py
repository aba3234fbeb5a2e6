"""Writing report files: CSV tables, Markdown tables, safe file names."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError


def prepare_dir(out: str | Path) -> Path:
    """`out` as an existing folder (created if missing); ConfigError if it is a file."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: expected a folder, but it is a file")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_name(text: str) -> str:
    """`text` usable as a file name: letters, digits, '.', '_' and '-' kept, the rest as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "_"


def cell(value: Any, digits: int = 3) -> str:
    """A value as table text: floats rounded, times in ISO 8601, None empty, lists joined."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float | Decimal):
        number = float(value)
        if not math.isfinite(number):
            return str(number)
        text = f"{number:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, list | tuple):
        return ", ".join(cell(v, digits) for v in value)
    return str(value)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """One row per mapping, the given columns in order (full precision; times in ISO 8601)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(row.get(c), digits=6) for c in columns])
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], digits: int = 2) -> str:
    """A Markdown table; `columns` maps row keys to headers. '|' in cells is escaped."""
    if not rows:
        return "_none_\n"
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = (cell(row.get(key), digits).replace("|", "\\|") for key in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
