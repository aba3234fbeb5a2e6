"""The alert rules file: read, check against `schemas/alert-rules.v1.json`, turn into frozen rules.

One file configures every rule (`config/alert-rules.yaml` by default; YAML or JSON). `load_rules`
guarantees that what it returns is usable: the file parses, matches the schema, rule and roll
names are unique, periodic rules name known rolls, marks cannot merge across a revolution, and
`lookback_m` covers every rule's reach. With a catalogue, every class a rule names must be in it.
Errors are ConfigError naming the file and the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from worker.core.catalogue import Catalogue
from worker.core.contracts import SCHEMAS_DIR
from worker.core.errors import ConfigError
from worker.core.resources import shipped_dir
from worker.core.yaml_files import read_yaml

RULES_SCHEMA = "alert-rules.v1"
DEFAULT_RULES_PATH = shipped_dir("config") / "alert-rules.yaml"

DENSITY = "density"
PERIODIC = "periodic"
SEVERE_SINGLE = "severe-single"
KINDS = (DENSITY, PERIODIC, SEVERE_SINGLE)
SEVERITIES = ("low", "medium", "high")

DEFAULT_LOOKBACK_M = 150.0
#: MAX_POSITION_JUMP_M's default (a worker setting, not the file's): a frame with no other frame of
#: its strip pass and surface this close is a position outlier (`worker.alerts.engine`).
DEFAULT_MAX_POSITION_JUMP_M = 50.0
DEFAULT_JITTER_M = 0.03
DEFAULT_MAX_MISSING = 2
DEFAULT_MIN_FILL = 0.5
DEFAULT_MERGE_M = 0.3
DEFAULT_SIGNIFICANCE = 0.001
DEFAULT_ACROSS_TOLERANCE_MM = 100.0


@dataclass(frozen=True)
class Roll:
    """A mill roll that can print a mark once per revolution."""

    name: str
    diameter_m: float

    @property
    def pitch_m(self) -> float:
        """Distance along the strip between two prints: the circumference π·d."""
        return math.pi * self.diameter_m


@dataclass(frozen=True)
class Cooldown:
    """No second alert of a rule, strip, surface, class and roll within `metres` along the strip or
    `seconds` (of capture time) of an earlier one; overlapping ranges never raise twice."""

    metres: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class DensityRule:
    """At least `min_count` detections of one class within `window_m` metres of a strip."""

    name: str
    classes: tuple[str, ...]
    severity: str
    min_count: int
    window_m: float
    min_confidence: float = 0.0
    cooldown: Cooldown = field(default_factory=Cooldown)
    kind: str = DENSITY

    @property
    def reach_m(self) -> float:
        return self.window_m


@dataclass(frozen=True)
class PeriodicRule:
    """Marks of one class recurring at the pitch π·d of one of `rolls` (a roll mark).

    The measured pitch must be within `tolerance_fraction`·π·d or `tolerance_m` of π·d; a mark may
    sit `jitter_m` plus half its tile's length from where the pitch puts it. A chain needs
    `min_repeats` marks, may skip at most `max_missing` revolutions in a row, must carry marks on
    at least `min_fill` of its revolutions, and must be unlikely to be chance (`significance`).
    Detections closer than `merge_m` along the strip form one mark. A roll prints at one place
    across the strip: detections whose across positions are linked by steps of at most
    `across_tolerance_mm` form a lane, and chains are searched lane by lane (None: one lane).
    """

    name: str
    classes: tuple[str, ...]
    severity: str
    rolls: tuple[Roll, ...]
    min_repeats: int
    tolerance_fraction: float | None = None
    tolerance_m: float | None = None
    jitter_m: float = DEFAULT_JITTER_M
    max_missing: int = DEFAULT_MAX_MISSING
    min_fill: float = DEFAULT_MIN_FILL
    merge_m: float = DEFAULT_MERGE_M
    significance: float = DEFAULT_SIGNIFICANCE
    across_tolerance_mm: float | None = DEFAULT_ACROSS_TOLERANCE_MM
    min_confidence: float = 0.0
    cooldown: Cooldown = field(default_factory=Cooldown)
    kind: str = PERIODIC

    def tolerance_for(self, pitch_m: float) -> float:
        """The allowed difference, in metres, between a measured pitch and `pitch_m`."""
        if self.tolerance_m is not None:
            return self.tolerance_m
        assert self.tolerance_fraction is not None
        return self.tolerance_fraction * pitch_m

    @property
    def reach_m(self) -> float:
        """The strip length a chain of `min_repeats` marks of the largest roll may span."""
        largest = max(r.pitch_m for r in self.rolls)
        return (self.min_repeats - 1) * (self.max_missing + 1) * largest


@dataclass(frozen=True)
class SevereSingleRule:
    """One detection of a class at or above `min_confidence`."""

    name: str
    classes: tuple[str, ...]
    severity: str
    min_confidence: float
    cooldown: Cooldown = field(default_factory=Cooldown)
    kind: str = SEVERE_SINGLE

    @property
    def reach_m(self) -> float:
        return 0.0


Rule = DensityRule | PeriodicRule | SevereSingleRule


@dataclass(frozen=True)
class AlertRules:
    """Every rule of one file, the rolls, and how far back each evaluation reads."""

    rules: tuple[Rule, ...]
    rolls: tuple[Roll, ...] = ()
    lookback_m: float = DEFAULT_LOOKBACK_M
    source: str = "alert rules"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every class some rule watches, in first-mention order."""
        return tuple(dict.fromkeys(c for r in self.rules for c in r.classes))

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise ConfigError(f"{self.source}: no rule named {name!r}; rules: {[r.name for r in self.rules]}")

    def check_classes(self, catalogue: Catalogue) -> None:
        """ConfigError if a rule names a class the catalogue lacks."""
        for rule in self.rules:
            unknown = [c for c in rule.classes if c not in catalogue.names]
            if unknown:
                raise ConfigError(
                    f"{self.source}: rule {rule.name!r} names classes {unknown} that catalogue"
                    f" {catalogue.name!r} lacks; expected some of {list(catalogue.names)}"
                )


def load_rules(path: str | Path | None = None, catalogue: Catalogue | None = None) -> AlertRules:
    """Read and check a rules file (default `config/alert-rules.yaml`); see the module doc."""
    file = Path(path) if path is not None else DEFAULT_RULES_PATH
    data = read_yaml(file, f"alert rules file {file}", "it does not exist")
    return parse_rules(data, source=str(file), catalogue=catalogue)


def _validator() -> jsonschema.Draft202012Validator:
    from worker.core.contracts import validator  # noqa: PLC0415  (cached per process)

    return validator(RULES_SCHEMA)


def parse_rules(data: Any, source: str = "alert rules", catalogue: Catalogue | None = None) -> AlertRules:
    """Check parsed rules (a mapping) against the schema and the cross-field rules; build them."""
    if not (SCHEMAS_DIR / f"{RULES_SCHEMA}.json").is_file():
        raise ConfigError(f"schema {RULES_SCHEMA}.json is missing from {SCHEMAS_DIR}")
    error = best_match(_validator().iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: at {where}: {error.message}")
    rolls = tuple(Roll(str(r["name"]), float(r["diameter_m"])) for r in data.get("rolls", ()))
    _unique(source, "roll", [r.name for r in rolls])
    _unique(source, "rule", [r["name"] for r in data["rules"]])
    rules = tuple(_rule(source, i, item, rolls) for i, item in enumerate(data["rules"]))
    lookback = float(data.get("lookback_m", DEFAULT_LOOKBACK_M))
    for rule in rules:
        if rule.reach_m > lookback:
            raise ConfigError(
                f"{source}: rule {rule.name!r} needs {rule.reach_m:.1f} m of strip, but lookback_m is"
                f" {lookback:g}; raise lookback_m to at least {math.ceil(rule.reach_m)}"
            )
    result = AlertRules(rules=rules, rolls=rolls, lookback_m=lookback, source=source)
    if catalogue is not None:
        result.check_classes(catalogue)
    return result


def _unique(source: str, what: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: expected unique {what} names, received duplicates {duplicates}")


def _cooldown(item: Mapping[str, Any]) -> Cooldown:
    raw = item.get("cooldown", {})
    return Cooldown(metres=float(raw.get("metres", 0.0)), seconds=float(raw.get("seconds", 0.0)))


def _rule(source: str, index: int, item: Mapping[str, Any], rolls: tuple[Roll, ...]) -> Rule:
    common: dict[str, Any] = {
        "name": item["name"],
        "classes": tuple(item["classes"]),
        "severity": item["severity"],
        "cooldown": _cooldown(item),
    }
    kind = item["kind"]
    if kind == DENSITY:
        return DensityRule(
            **common,
            min_count=int(item["min_count"]),
            window_m=float(item["window_m"]),
            min_confidence=float(item.get("min_confidence", 0.0)),
        )
    if kind == SEVERE_SINGLE:
        return SevereSingleRule(**common, min_confidence=float(item["min_confidence"]))
    where = f"{source}: rules[{index}] ({item['name']})"
    by_name = {r.name: r for r in rolls}
    names = item.get("rolls", [r.name for r in rolls])
    if not names:
        raise ConfigError(f"{where}: a periodic rule needs rolls; the file lists none under 'rolls'")
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"{where}: unknown rolls {unknown}; the file lists {sorted(by_name)}")
    tolerance = item["tolerance"]
    rule = PeriodicRule(
        **common,
        rolls=tuple(by_name[n] for n in names),
        min_repeats=int(item["min_repeats"]),
        tolerance_fraction=float(tolerance["fraction"]) if "fraction" in tolerance else None,
        tolerance_m=float(tolerance["metres"]) if "metres" in tolerance else None,
        jitter_m=float(item.get("jitter_m", DEFAULT_JITTER_M)),
        max_missing=int(item.get("max_missing", DEFAULT_MAX_MISSING)),
        min_fill=float(item.get("min_fill", DEFAULT_MIN_FILL)),
        merge_m=float(item.get("merge_m", DEFAULT_MERGE_M)),
        significance=float(item.get("significance", DEFAULT_SIGNIFICANCE)),
        across_tolerance_mm=(
            None
            if item.get("across_tolerance_mm", DEFAULT_ACROSS_TOLERANCE_MM) is None
            else float(item.get("across_tolerance_mm", DEFAULT_ACROSS_TOLERANCE_MM))
        ),
        min_confidence=float(item.get("min_confidence", 0.0)),
    )
    shortest = min(r.pitch_m for r in rule.rolls)
    if rule.merge_m >= shortest / 2:
        raise ConfigError(
            f"{where}: merge_m {rule.merge_m:g} m must be under half the shortest pitch"
            f" ({shortest:.3f} m), or marks of consecutive revolutions would merge"
        )
    for roll in rule.rolls:
        if rule.tolerance_for(roll.pitch_m) >= roll.pitch_m / 4:
            raise ConfigError(
                f"{where}: tolerance {rule.tolerance_for(roll.pitch_m):.3f} m is too wide for roll"
                f" {roll.name!r} (pitch {roll.pitch_m:.3f} m); expected under a quarter of the pitch"
            )
    return rule
