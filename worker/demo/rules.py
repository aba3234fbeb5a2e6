"""The alert rules the demo runs with: which rules file its worker uses, and the pitch of a roll.

`--rules` wins, else $ALERT_RULES read by the worker's own parser
(`worker.streaming.settings.rules_file_setting`, so the demo and the worker agree on what the
variable means), else the default file. The demo shows alerts, so rules turned off are refused.
Errors are ConfigError; `run_demo` makes both checks before it starts anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from worker.core.errors import ConfigError


def demo_rules_file(rules_path: Path | None, environ: Mapping[str, str]) -> Path:
    """The alert rules file the demo's worker uses: `rules_path`, else $ALERT_RULES, else the
    default file. ConfigError when $ALERT_RULES turns the rules off (the demo shows alerts)."""
    from worker.alerts.config import DEFAULT_RULES_PATH  # noqa: PLC0415
    from worker.streaming.settings import rules_file_setting  # noqa: PLC0415

    if rules_path is not None:
        return rules_path.expanduser().resolve()
    value = environ.get("ALERT_RULES", "").strip()
    if not value:  # unset or empty: the default file, as for the worker
        return DEFAULT_RULES_PATH
    path = rules_file_setting(value)
    if path is None:
        raise ConfigError(
            f"ALERT_RULES={value}: the demo shows alerts and needs a rules file; unset ALERT_RULES or"
            " pass --rules FILE"
        )
    return path.resolve()


def roll_pitch(rules_file: Path, roll_name: str) -> float:
    """The pitch (π·d) of roll `roll_name` in the rules file; ConfigError naming the rolls if absent."""
    from worker.alerts.config import load_rules  # noqa: PLC0415

    rules = load_rules(rules_file)
    for roll in rules.rolls:
        if roll.name == roll_name:
            return roll.pitch_m
    raise ConfigError(
        f"--roll {roll_name!r}: not a roll of {rules.source}; expected one of {[r.name for r in rules.rolls]}"
    )
