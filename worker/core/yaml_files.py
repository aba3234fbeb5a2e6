"""Reading the project's YAML (or JSON) settings files: one place that turns every way a file can
fail to be read into a ConfigError naming the file, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from worker.core.errors import ConfigError


def read_yaml(path: Path, label: str, missing: str) -> Any:
    """The data in `path` (YAML; JSON is YAML too). ConfigError, its message starting with
    `label`, when the file is missing (`missing` says so), unreadable as UTF-8, or not YAML (with
    the line and column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: {missing}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it as UTF-8 text ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{label}: expected YAML or JSON, {problem}{where}") from None
