"""Alert rules: the rules file (schema, cross-checks, clear errors) and the pure rule functions
(density, periodic roll marks, severe single, cooldown) on synthetic strips."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from alert_strips import (
    T0,
    Defect,
    periodic_defects,
    scattered_defects,
    strip_detections,
    strip_results,
)

from worker.alerts.config import (
    DEFAULT_RULES_PATH,
    Cooldown,
    DensityRule,
    PeriodicRule,
    Roll,
    SevereSingleRule,
    load_rules,
    parse_rules,
)
from worker.alerts.rules import (
    Finding,
    RaisedSpan,
    StripDetection,
    admit,
    decoy_rolls,
    density_findings,
    evaluate_rule,
    periodic_findings,
    severe_findings,
)
from worker.core.catalogue import load_catalogue
from worker.core.errors import ConfigError

RULES = load_rules()
ROLL_MARKS = RULES.rule("roll-marks")
assert isinstance(ROLL_MARKS, PeriodicRule)
WORK_ROLL, PINCH_ROLL, BACKUP_ROLL = ROLL_MARKS.rolls


def _detections(defects: list[Defect], length_m: float | None = None) -> list[StripDetection]:
    return strip_detections(strip_results("S", defects, length_m=length_m))


def _raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: Any, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# the rules file
# ---------------------------------------------------------------------------------------------


def test_the_default_rules_file_loads_with_every_kind_and_the_paper_catalogue() -> None:
    rules = load_rules(catalogue=load_catalogue())
    kinds = {type(r) for r in rules.rules}
    assert kinds == {DensityRule, PeriodicRule, SevereSingleRule}
    assert (WORK_ROLL.name, WORK_ROLL.diameter_m) == ("F7 top work roll", 0.64)
    assert WORK_ROLL.pitch_m == pytest.approx(math.pi * 0.64)
    assert ROLL_MARKS.tolerance_for(WORK_ROLL.pitch_m) == pytest.approx(0.03 * math.pi * 0.64)
    assert rules.rule("severe-rolling").cooldown == Cooldown(metres=10, seconds=60)
    assert set(rules.class_names) == {"holes", "scratches", "rolling"}


def test_a_json_rules_file_is_read_too(tmp_path: Path) -> None:
    rules = load_rules(_write(tmp_path, _raw(), "rules.json"))
    assert [r.name for r in rules.rules] == [r.name for r in RULES.rules]


def test_tolerance_in_metres_is_used_as_given(tmp_path: Path) -> None:
    data = _raw()
    data["rules"][3]["tolerance"] = {"metres": 0.05}
    rule = load_rules(_write(tmp_path, data)).rule("roll-marks")
    assert isinstance(rule, PeriodicRule)
    assert rule.tolerance_for(BACKUP_ROLL.pitch_m) == 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["rules"][0].pop("min_count"), r"at rules/0: 'min_count' is a required property"),
        (lambda d: d["rules"][0].update(min_count=1), r"at rules/0/min_count: 1 is less than the minimum"),
        (lambda d: d["rules"][0].update(kind="burst"), r"at rules/0/kind: 'burst' is not one of"),
        (lambda d: d["rules"][0].update(severity="urgent"), r"at rules/0/severity: 'urgent' is not one of"),
        (lambda d: d["rules"][0].update(pitch_m=2.0), r"at rules/0: Additional properties .*'pitch_m'"),
        (lambda d: d["rules"][3].update(tolerance={}), r"at rules/3/tolerance: \{\} should be non-empty"),
        (lambda d: d["rolls"][0].update(diameter_m=-1), r"at rolls/0/diameter_m: -1 is less than or equal"),
        (lambda d: d.update(version=2), r"at version: 1 was expected"),
        (lambda d: d["rules"][1].update(name="holes-cluster"), r"unique rule names.*\['holes-cluster'\]"),
        (lambda d: d["rolls"][1].update(name="F7 top work roll"), r"unique roll names"),
        (lambda d: d["rules"][3].update(rolls=["F9 roll"]), r"\(roll-marks\): unknown rolls \['F9 roll'\]"),
        (lambda d: d.update(rolls=[]), r"a periodic rule needs rolls"),
        (lambda d: d.update(lookback_m=20), r"rule 'roll-marks' needs 42.4 m of strip, but lookback_m is 20"),
        (lambda d: d["rules"][3].update(merge_m=0.9), r"merge_m 0.9 m must be under half the shortest pitch"),
        (lambda d: d["rules"][3].update(tolerance={"metres": 0.5}), r"tolerance 0.500 m is too wide"),
    ],
)
def test_invalid_rules_files_are_refused_with_the_file_and_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    data = _raw()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as raised:
        load_rules(path)
    assert str(path) in str(raised.value)


def test_a_class_missing_from_the_catalogue_is_refused(tmp_path: Path) -> None:
    data = _raw()
    data["rules"][0]["classes"] = ["inclusions"]
    with pytest.raises(ConfigError, match=r"rule 'holes-cluster' names classes \['inclusions'\]"):
        load_rules(_write(tmp_path, data), catalogue=load_catalogue())


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n  - name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules.yaml: expected YAML or JSON, .* at line 4"):
        load_rules(path)


def test_a_missing_or_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"at \(top level\): None is not of type 'object'"):
        load_rules(tmp_path / "empty.yaml")


# ---------------------------------------------------------------------------------------------
# density
# ---------------------------------------------------------------------------------------------

DENSITY = DensityRule("holes-cluster", ("holes",), "medium", min_count=5, window_m=3.0)


def _holes(*frames: int) -> list[StripDetection]:
    return _detections([Defect(k * 0.256 + 0.1, "holes") for k in frames])


def test_density_fires_at_n_detections_within_the_window_and_not_at_n_minus_1() -> None:
    # tile centres 0.128 + 0.256·k: frames 0 and 11 are 2.816 m apart, within 3 m
    assert density_findings(_holes(0, 3, 5, 8), DENSITY) == []
    (finding,) = density_findings(_holes(0, 3, 5, 8, 11), DENSITY)
    assert (finding.rule, finding.kind, finding.class_name) == ("holes-cluster", "density", "holes")
    assert finding.evidence == (1, 2, 3, 4, 5)
    assert (finding.start_m, finding.end_m) == pytest.approx((0.0, 12 * 0.256))
    assert finding.details["span_m"] == pytest.approx(11 * 0.256)


def test_density_counts_only_detections_within_window_m_of_each_other() -> None:
    # frames 0 and 12 are 3.072 m apart: five detections, but never five within 3 m
    assert density_findings(_holes(0, 3, 5, 8, 12), DENSITY) == []
    assert density_findings(_holes(0, 3, 5, 8, 12, 13), DENSITY)[0].evidence == (2, 3, 4, 5, 6)


def test_density_findings_never_share_detections_and_ignore_other_classes_and_low_confidence() -> None:
    detections = _holes(*range(12))
    assert [f.evidence for f in density_findings(detections, DENSITY)] == [(1, 2, 3, 4, 5), (6, 7, 8, 9, 10)]
    assert density_findings(detections, replace(DENSITY, classes=("scratches",))) == []
    assert density_findings(detections, replace(DENSITY, min_confidence=0.95)) == []


# ---------------------------------------------------------------------------------------------
# severe single
# ---------------------------------------------------------------------------------------------


def test_severe_single_fires_per_detection_at_or_over_the_limit() -> None:
    rule = SevereSingleRule("severe-rolling", ("rolling",), "high", min_confidence=0.98)
    detections = _detections(
        [Defect(1.0, "rolling", 0.97), Defect(2.0, "rolling", 0.98), Defect(3.0, "holes", 0.99)]
    )
    (finding,) = severe_findings(detections, rule)
    assert (finding.evidence, finding.max_confidence) == ((2,), pytest.approx(0.98))
    assert finding.observed_at == T0 + timedelta(seconds=7 * 0.256 / 2)


# ---------------------------------------------------------------------------------------------
# periodic (roll marks)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("roll", [WORK_ROLL, PINCH_ROLL, BACKUP_ROLL], ids=lambda r: r.name)
def test_a_roll_mark_with_jitter_and_missing_prints_raises_one_finding_naming_the_roll(roll: Roll) -> None:
    defects = periodic_defects(roll.pitch_m, 14, seed=3, missing=(4, 9), jitter_m=0.02)
    (finding,) = periodic_findings(_detections(defects), ROLL_MARKS)
    assert (finding.rule, finding.kind, finding.roll) == ("roll-marks", "periodic", roll.name)
    assert finding.pitch_m == pytest.approx(roll.pitch_m, rel=0.03)
    assert finding.details["marks"] == 14
    assert finding.details["revolutions"] == 16
    assert finding.details["missing"] == 2
    assert finding.details["chance"] <= ROLL_MARKS.significance
    assert finding.evidence == tuple(range(1, 15))


def test_a_roll_mark_is_found_among_scatter_of_the_same_class_in_other_lanes() -> None:
    marks = periodic_defects(WORK_ROLL.pitch_m, 14, seed=5, missing=(6,), lane=2)
    scatter = [d for d in scattered_defects(40, 30.0, seed=9) if d.lane != 2]
    (finding,) = periodic_findings(_detections(marks + scatter), ROLL_MARKS)
    assert finding.roll == WORK_ROLL.name
    assert finding.details["across_mm"] == [2 * 224 + 128, 2 * 224 + 128]


@pytest.mark.parametrize("seed", range(40))
def test_random_scatter_of_the_same_count_raises_no_roll_mark(seed: int) -> None:
    """14 detections scattered over the length a 16-revolution pattern of the largest roll covers."""
    defects = scattered_defects(14, 16 * BACKUP_ROLL.pitch_m, seed=seed)
    assert periodic_findings(_detections(defects), ROLL_MARKS) == []


@pytest.mark.parametrize("seed", range(10))
def test_dense_random_scatter_in_one_lane_raises_no_roll_mark(seed: int) -> None:
    """60 detections in 100 m of one lane: chains at real pitches are no better than at decoys."""
    defects = [replace(d, lane=3) for d in scattered_defects(60, 100.0, seed=1000 + seed)]
    assert periodic_findings(_detections(defects), ROLL_MARKS) == []


def test_too_few_prints_raise_nothing_and_a_pitch_between_rolls_raises_nothing() -> None:
    assert periodic_findings(_detections(periodic_defects(WORK_ROLL.pitch_m, 3)), ROLL_MARKS) == []
    between = (WORK_ROLL.pitch_m + PINCH_ROLL.pitch_m) / 2
    assert periodic_findings(_detections(periodic_defects(between, 16)), ROLL_MARKS) == []


def test_a_pattern_at_twice_a_pitch_names_the_roll_it_matches_not_its_harmonic() -> None:
    """Marks every 3.142 m (a 1.0 m roll) also sit every other revolution of the 0.5 m pinch roll."""
    rule = replace(ROLL_MARKS, rolls=(PINCH_ROLL, Roll("1 m roll", 1.0)))
    (finding,) = periodic_findings(_detections(periodic_defects(math.pi, 12, seed=2)), rule)
    assert finding.roll == "1 m roll"


def test_decoy_pitches_stay_away_from_every_real_pitch_and_its_simple_ratios() -> None:
    decoys = decoy_rolls(ROLL_MARKS.rolls, tile_m=0.256)
    assert decoys
    for decoy in decoys:
        for real in ROLL_MARKS.rolls:
            for ratio in (1 / 3, 1 / 2, 2 / 3, 1, 3 / 2, 2, 3):
                assert abs(decoy.pitch_m / (real.pitch_m * ratio) - 1) > 0.04


def test_evaluate_rule_dispatches_by_kind() -> None:
    detections = _holes(0, 1, 2, 3, 4, 5, 6)
    assert evaluate_rule(DENSITY, detections) == density_findings(detections, DENSITY)


# ---------------------------------------------------------------------------------------------
# cooldown
# ---------------------------------------------------------------------------------------------


def _finding(start: float, end: float, seconds: float = 0.0, roll: str | None = None) -> Finding:
    return Finding("r", "density", "holes", start, end, (1,), 0.9, T0 + timedelta(seconds=seconds), roll)


def test_admit_drops_overlapping_and_near_findings_within_the_metres_cooldown() -> None:
    earlier = [RaisedSpan("r", "holes", None, 10.0, 12.0, T0)]
    findings = [_finding(11.0, 13.0), _finding(20.0, 21.0), _finding(32.5, 33.0), _finding(50.0, 51.0)]
    admitted = admit(findings, earlier, {"r": Cooldown(metres=10.0)})
    # 11–13 overlaps, 20–21 is within 10 m of 12, 32.5 is 11.5 m past 21 (admitted just before it)
    assert [(f.start_m, f.end_m) for f in admitted] == [(32.5, 33.0), (50.0, 51.0)]


def test_admit_with_a_seconds_cooldown_drops_findings_observed_soon_after_an_alert() -> None:
    earlier = [RaisedSpan("r", "holes", None, 0.0, 1.0, T0)]
    findings = [_finding(100.0, 101.0, seconds=30), _finding(200.0, 201.0, seconds=61)]
    admitted = admit(findings, earlier, {"r": Cooldown(seconds=60.0)})
    assert [f.start_m for f in admitted] == [200.0]


def test_admit_keeps_rules_classes_and_rolls_apart() -> None:
    earlier = [RaisedSpan("r", "holes", "roll A", 0.0, 10.0, T0)]
    admitted = admit([_finding(1.0, 9.0, roll="roll B"), _finding(1.0, 9.0, roll="roll A")], earlier, {})
    assert [f.roll for f in admitted] == ["roll B"]


def test_parse_rules_accepts_a_mapping_built_in_code() -> None:
    data = _raw()
    rules = parse_rules(data, source="inline")
    assert rules.source == "inline"
    assert rules.lookback_m == 150


def test_the_lane_cache_gives_what_a_fresh_search_gives_and_is_reused() -> None:
    detections = _detections(
        periodic_defects(WORK_ROLL.pitch_m, 14, seed=3, missing=(4,)) + scattered_defects(20, 30.0, seed=2)
    )
    cache: dict[Any, Any] = {}
    assert periodic_findings(detections, ROLL_MARKS, cache) == periodic_findings(detections, ROLL_MARKS)
    assert len(cache) >= 2  # one entry per class and lane searched
    before = dict(cache)
    periodic_findings(detections, ROLL_MARKS, cache)
    assert cache == before
