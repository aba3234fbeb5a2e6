"""The alert rules as pure functions over one strip's detection sequence (one surface).

Input: `StripDetection`s (id, class, position along the strip with its tile's extent, confidence,
capture time), in any order. Output: `Finding`s — what a rule saw, with the detection ids behind
it — deterministic for a given input (ties broken by position, then id). No database, no clock:
the engine (`worker.alerts.engine`) reads the sequence from PostgreSQL and decides, with
`admit`, which findings become alerts.

- `density_findings`: scanning along the strip, the first window of at most `window_m` metres
  (between tile centres) holding `min_count` detections of a class is a finding; the scan goes on
  after its last detection, so findings never share detections and an earlier finding never
  depends on later detections.
- `periodic_findings` (roll marks): a roll prints at one place across the strip, so detections
  of a class are split into lanes across the strip (`across_tolerance_mm`), and grouped along it
  into marks (closer than `merge_m`). For every roll and every pair of marks whose distance is
  k·π·d within tolerance (k = 1 … max_missing+1), a phase-consistent chain is grown: it keeps the
  region of (origin, pitch), pitch within tolerance of π·d, that puts every mark of the chain
  within `jitter_m` + half its tile's length of origin + revolution × pitch, and takes, at each
  next revolution, the nearest mark that leaves the region non-empty; at most `max_missing`
  revolutions in a row may lack one. A chain is a finding when it has `min_repeats` marks, marks
  on `min_fill` of its revolutions, and chance is an unlikely explanation: the binomial chance
  that scattered marks (covering what the observed ones cover) fill it as well, times the lines
  its pitch freedom allows, times the anchor pairs tried, must not exceed `significance` — and
  must be `DECOY_MARGIN` times below what the same search finds at decoy pitches (rolls that are
  not there) among the other marks, which guards against scatter dense or regular enough to fool
  the binomial model.
  Overlapping chains (harmonics of one pattern, sub-chains) keep only the best one.
- `severe_findings`: each detection at or above `min_confidence`.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from worker.alerts.config import (
    Cooldown,
    DensityRule,
    PeriodicRule,
    Roll,
    Rule,
    SevereSingleRule,
)

EPS = 1e-9


@dataclass(frozen=True)
class StripDetection:
    """One stored detection as the rules see it."""

    id: int
    class_name: str
    along_m: float  # tile centre, metres from the strip head
    confidence: float
    along_start_m: float | None = None  # tile extent along the strip (default: the centre)
    along_end_m: float | None = None
    observed_at: datetime | None = None  # capture time of its frame
    across_mm: float = 0.0  # tile centre, mm from the strip edge

    @property
    def start_m(self) -> float:
        return self.along_m if self.along_start_m is None else self.along_start_m

    @property
    def end_m(self) -> float:
        return self.along_m if self.along_end_m is None else self.along_end_m

    @property
    def half_length_m(self) -> float:
        return max(0.0, (self.end_m - self.start_m) / 2)


@dataclass(frozen=True)
class Finding:
    """What one rule found on a strip: where, which class (and roll), and the evidence."""

    rule: str
    kind: str
    class_name: str
    start_m: float
    end_m: float
    evidence: tuple[int, ...]  # detection ids, ascending
    max_confidence: float
    observed_at: datetime | None = None  # latest capture time among the evidence
    roll: str | None = None
    pitch_m: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RaisedSpan:
    """An alert already raised, as the cooldown sees it."""

    rule: str
    class_name: str
    roll: str | None
    start_m: float
    end_m: float
    observed_at: datetime | None = None


#: Memo of lane searches: (rule, class, the lane's detections) → its findings.
LaneCache = MutableMapping[tuple[PeriodicRule, str, tuple[StripDetection, ...]], list[Finding]]


def evaluate_rule(
    rule: Rule, detections: Sequence[StripDetection], cache: LaneCache | None = None
) -> list[Finding]:
    """Every finding of `rule` on one strip's detections (see the module doc). `cache` (periodic
    rules) remembers each lane's findings, so lanes a batch left unchanged are not searched again."""
    if isinstance(rule, DensityRule):
        return density_findings(detections, rule)
    if isinstance(rule, PeriodicRule):
        return periodic_findings(detections, rule, cache)
    return severe_findings(detections, rule)


def admit(
    findings: Iterable[Finding], raised: Iterable[RaisedSpan], cooldowns: Mapping[str, Cooldown]
) -> list[Finding]:
    """The findings that become alerts, in position order: each is dropped when an alert of the
    same rule, class and roll — raised before, or admitted just now — is within the rule's
    cooldown (`cooldowns[rule]`) of it; overlapping or touching ranges always block."""
    spans = list(raised)
    admitted = []
    for finding in sorted(findings, key=lambda f: (f.start_m, f.end_m, f.rule, f.class_name, f.roll or "")):
        cooldown = cooldowns.get(finding.rule, Cooldown())
        same = (
            s
            for s in spans
            if s.rule == finding.rule and s.class_name == finding.class_name and s.roll == finding.roll
        )
        if any(_blocks(span, finding, cooldown) for span in same):
            continue
        admitted.append(finding)
        spans.append(
            RaisedSpan(
                finding.rule,
                finding.class_name,
                finding.roll,
                finding.start_m,
                finding.end_m,
                finding.observed_at,
            )
        )
    return admitted


def _blocks(span: RaisedSpan, finding: Finding, cooldown: Cooldown) -> bool:
    reach = cooldown.metres + EPS
    if finding.start_m <= span.end_m + reach and finding.end_m >= span.start_m - reach:
        return True
    if cooldown.seconds > 0 and span.observed_at is not None and finding.observed_at is not None:
        return abs((finding.observed_at - span.observed_at).total_seconds()) < cooldown.seconds
    return False


# --- helpers ------------------------------------------------------------------------------------


def _of_class(
    detections: Iterable[StripDetection], class_name: str, min_confidence: float
) -> list[StripDetection]:
    chosen = [d for d in detections if d.class_name == class_name and d.confidence >= min_confidence]
    return sorted(chosen, key=lambda d: (d.along_m, d.id))


def _finding(
    rule: Rule,
    class_name: str,
    evidence: Sequence[StripDetection],
    *,
    roll: Roll | None = None,
    pitch_m: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> Finding:
    times = [d.observed_at for d in evidence if d.observed_at is not None]
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        class_name=class_name,
        start_m=min(d.start_m for d in evidence),
        end_m=max(d.end_m for d in evidence),
        evidence=tuple(sorted(d.id for d in evidence)),
        max_confidence=max(d.confidence for d in evidence),
        observed_at=max(times) if times else None,
        roll=roll.name if roll is not None else None,
        pitch_m=pitch_m,
        details=dict(details or {}),
    )


# --- density --------------------------------------------------------------------------------------


def density_findings(detections: Sequence[StripDetection], rule: DensityRule) -> list[Finding]:
    """Windows of at most `window_m` holding `min_count` detections of a class (module doc)."""
    found = []
    for class_name in rule.classes:
        sequence = _of_class(detections, class_name, rule.min_confidence)
        floor = left = 0
        for right, detection in enumerate(sequence):
            left = max(left, floor)
            while detection.along_m - sequence[left].along_m > rule.window_m + EPS:
                left += 1
            if right - left + 1 >= rule.min_count:
                window = sequence[left : right + 1]
                found.append(
                    _finding(
                        rule,
                        class_name,
                        window,
                        details={
                            "window_m": rule.window_m,
                            "min_count": rule.min_count,
                            "span_m": round(window[-1].along_m - window[0].along_m, 6),
                        },
                    )
                )
                floor = right + 1
    return found


# --- severe single --------------------------------------------------------------------------------


def severe_findings(detections: Sequence[StripDetection], rule: SevereSingleRule) -> list[Finding]:
    """One finding per detection of a watched class at or above `min_confidence`."""
    return [
        _finding(rule, class_name, [d], details={"min_confidence": rule.min_confidence})
        for class_name in rule.classes
        for d in _of_class(detections, class_name, rule.min_confidence)
    ]


# --- periodic (roll marks) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """Detections of one class close together along the strip: one print of a roll, perhaps."""

    position_m: float  # mean of the members' tile centres
    slack_m: float  # how far the print itself may be from `position_m` (tile and spread)
    members: tuple[StripDetection, ...]


def group_marks(sequence: Sequence[StripDetection], merge_m: float) -> list[Mark]:
    """Consecutive detections (sorted along the strip) no more than `merge_m` apart form one mark."""
    groups: list[list[StripDetection]] = []
    for detection in sequence:
        if groups and detection.along_m - groups[-1][-1].along_m <= merge_m + EPS:
            groups[-1].append(detection)
        else:
            groups.append([detection])
    marks = []
    for group in groups:
        centres = [d.along_m for d in group]
        spread = (max(centres) - min(centres)) / 2
        marks.append(
            Mark(
                position_m=sum(centres) / len(centres),
                slack_m=max(d.half_length_m for d in group) + spread,
                members=tuple(group),
            )
        )
    return marks


@dataclass(frozen=True)
class Chain:
    """Marks on one phase: mark `indices[n]` sits at revolution `revolutions[n]` of `roll`.

    `chance`: the corrected probability that scattered marks alone would fill the chain as well
    (set by `find_chains`).
    """

    roll: Roll
    indices: tuple[int, ...]
    revolutions: tuple[int, ...]
    origin_m: float
    pitch_m: float
    rms_m: float
    chance: float = 1.0

    @property
    def marks(self) -> int:
        return len(self.indices)

    @property
    def span_revolutions(self) -> int:
        return self.revolutions[-1] - self.revolutions[0] + 1

    @property
    def fill(self) -> float:
        return self.marks / self.span_revolutions


def _fit(points: Sequence[tuple[int, float]], lowest: float, highest: float) -> tuple[float, float]:
    """Least-squares (origin, pitch) of position = origin + revolution × pitch, the pitch held to
    [lowest, highest] (the squared error is convex in the pitch, so clamping keeps the optimum)."""
    n = len(points)
    mean_r = sum(r for r, _ in points) / n
    mean_x = sum(x for _, x in points) / n
    sxx = sum((r - mean_r) ** 2 for r, _ in points)
    pitch = sum((r - mean_r) * (x - mean_x) for r, x in points) / sxx
    pitch = min(max(pitch, lowest), highest)
    return mean_x - pitch * mean_r, pitch


Polygon = list[tuple[float, float]]  # vertices (origin, pitch) of a convex region


def _clip(polygon: Polygon, a: float, b: float, c: float) -> Polygon:
    """The part of convex `polygon` where a·origin + b·pitch ≤ c (Sutherland–Hodgman, one edge)."""
    kept: Polygon = []
    for n, here in enumerate(polygon):
        there = polygon[(n + 1) % len(polygon)]
        f_here = a * here[0] + b * here[1] - c
        f_there = a * there[0] + b * there[1] - c
        if f_here <= EPS:
            kept.append(here)
        if (f_here < -EPS and f_there > EPS) or (f_here > EPS and f_there < -EPS):
            t = f_here / (f_here - f_there)
            kept.append((here[0] + t * (there[0] - here[0]), here[1] + t * (there[1] - here[1])))
    return kept


def _constrain(polygon: Polygon, revolution: int, position: float, window: float) -> Polygon:
    """The (origin, pitch) of `polygon` that put revolution `revolution` within `window` of `position`."""
    polygon = _clip(polygon, 1.0, revolution, position + window)
    return _clip(polygon, -1.0, -revolution, window - position) if polygon else polygon


def _binomial_tail(trials: int, successes: int, p: float) -> float:
    """P(X ≥ successes) for X ~ Binomial(trials, p)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    tail = sum(math.comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(successes, trials + 1))
    return min(1.0, tail)


def _coverage(positions: Sequence[float], windows: Sequence[float]) -> float:
    """Share of [first − w, last + w] inside the union of the intervals position ± window."""
    covered, reach = 0.0, -math.inf
    for x, w in zip(positions, windows, strict=True):
        low, high = max(x - w, reach), x + w
        if high > low:
            covered += high - low
        reach = max(reach, high)
    total = (positions[-1] + windows[-1]) - (positions[0] - windows[0])
    return min(1.0, covered / total) if total > 0 else 1.0


class _ChainSearch:
    """Grows and judges candidate chains for one lane's marks and one rule.

    Chance model (the null hypothesis): marks scattered along the strip. A revolution then holds
    a mark with probability c, the share of the strip the marks' windows cover; a chain of R
    revolutions with M marks is as full as chance makes it with probability P(Binomial(R − 2, c)
    ≥ M − 2) (the two anchors are chosen, not found). The pitch may vary within tolerance, which
    lets a chain follow 1 + tolerance·(R − 1)/w distinct lines (w the mean window): the
    probability is multiplied by that, and later by the number of anchor pairs tried.
    """

    def __init__(self, marks: Sequence[Mark], rule: PeriodicRule) -> None:
        self.marks = marks
        self.rule = rule
        self.positions = [m.position_m for m in marks]
        self.windows = [rule.jitter_m + m.slack_m for m in marks]
        self.max_window = max(self.windows)
        self.mean_window = sum(self.windows) / len(self.windows)
        self.coverage = _coverage(self.positions, self.windows)
        self.tried = 0

    def grow(self, roll: Roll, first: int, second: int, k: int) -> Chain | None:
        """The chain anchored on marks `first` (revolution 0) and `second` (revolution k).

        The chain keeps the region of (origin, pitch) — pitch within tolerance of π·d — that puts
        every hit inside its window; each next revolution takes the mark nearest to the middle of
        where that region puts it that leaves the region non-empty. It stops after `max_missing`
        revolutions in a row without one.
        """
        tolerance = self.rule.tolerance_for(roll.pitch_m)
        lowest, highest = roll.pitch_m - tolerance, roll.pitch_m + tolerance
        x0, w0 = self.positions[first], self.windows[first]
        region: Polygon = [(x0 - w0, lowest), (x0 + w0, lowest), (x0 + w0, highest), (x0 - w0, highest)]
        region = _constrain(region, k, self.positions[second], self.windows[second])
        if not region:
            return None
        hits = [(0, first), (k, second)]
        revolution, misses, last = k, 0, second
        end = self.positions[-1] + self.max_window
        while misses <= self.rule.max_missing:
            revolution += 1
            reachable = [origin + revolution * pitch for origin, pitch in region]
            low, high = min(reachable), max(reachable)
            if low - self.max_window > end:
                break
            middle = (low + high) / 2
            lo = bisect.bisect_left(self.positions, low - self.max_window - EPS, lo=last + 1)
            hi = bisect.bisect_right(self.positions, high + self.max_window + EPS, lo=lo)
            for index in sorted(range(lo, hi), key=lambda i: (abs(self.positions[i] - middle), i)):
                narrowed = _constrain(region, revolution, self.positions[index], self.windows[index])
                if narrowed:
                    hits.append((revolution, index))
                    region, last, misses = narrowed, index, -1
                    break
            misses += 1
        origin, pitch = _fit([(r, self.positions[i]) for r, i in hits], lowest, highest)
        residuals = [self.positions[i] - (origin + r * pitch) for r, i in hits]
        return Chain(
            roll=roll,
            indices=tuple(i for _, i in hits),
            revolutions=tuple(r for r, _ in hits),
            origin_m=origin,
            pitch_m=pitch,
            rms_m=math.sqrt(sum(e * e for e in residuals) / len(residuals)),
        )

    def passes(self, chain: Chain) -> bool:
        """`min_repeats` marks, `min_fill` of its revolutions (chance is judged in `find_chains`)."""
        return chain.marks >= self.rule.min_repeats and chain.fill >= self.rule.min_fill - EPS

    def chance(self, chain: Chain) -> float:
        """How likely scattered marks fill the chain as well (the class doc's model)."""
        tail = _binomial_tail(chain.span_revolutions - 2, chain.marks - 2, self.coverage)
        tolerance = self.rule.tolerance_for(chain.roll.pitch_m)
        lines = 1 + tolerance * (chain.span_revolutions - 1) / self.mean_window
        return tail * lines

    def candidates(self, roll: Roll) -> list[Chain]:
        """Chains of `roll` grown from every anchor pair whose distance is k·pitch within tolerance;
        marks already in a chain of this roll are not tried as first anchors again."""
        rule = self.rule
        tolerance = rule.tolerance_for(roll.pitch_m)
        reach = (rule.max_missing + 1) * (roll.pitch_m + tolerance) + 2 * self.max_window
        found: list[Chain] = []
        covered: set[int] = set()
        for first in range(len(self.marks)):
            if first in covered:
                continue
            stop = bisect.bisect_right(self.positions, self.positions[first] + reach)
            for second in range(first + 1, stop):
                distance = self.positions[second] - self.positions[first]
                k = round(distance / roll.pitch_m)
                if not 1 <= k <= rule.max_missing + 1:
                    continue
                slack = (self.windows[first] + self.windows[second]) / k
                if abs(distance / k - roll.pitch_m) > tolerance + slack + EPS:
                    continue  # no pitch within tolerance puts both marks in their windows
                self.tried += 1
                chain = self.grow(roll, first, second, k)
                if chain is not None and self.passes(chain):
                    found.append(chain)
                    covered.update(chain.indices)
                    break
        return found


#: Decoy rolls: diameters × these factors, unless a decoy pitch is near a harmonic of a real one.
DECOY_FACTORS = (0.79, 0.86, 0.93, 1.08, 1.16, 1.24)
_HARMONICS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0, 3.0, 4.0)
#: A real chain must be this many times less likely than the best decoy chain.
DECOY_MARGIN = 100.0


def decoy_rolls(rolls: Sequence[Roll], tile_m: float = 0.0, separation: float = 0.04) -> tuple[Roll, ...]:
    """Rolls that are not there, none within `separation` (relative) of a simple ratio of a real
    pitch: pitches at `DECOY_FACTORS` of the real ones, and — positions being tile centres, which
    sit on a grid of `tile_m` — the grid multiples next to a real pitch that lies near one
    (a pitch of a whole number of tiles lines scattered tiles up better than chance)."""
    pitches: dict[str, float] = {}
    for roll in rolls:
        for factor in DECOY_FACTORS:
            pitches.setdefault(f"decoy {factor:g} × {roll.name}", roll.pitch_m * factor)
        if tile_m > 0:
            tiles = round(roll.pitch_m / tile_m)
            if abs(roll.pitch_m / (tiles * tile_m) - 1) <= 0.1:
                for n in (tiles - 2, tiles - 1, tiles + 1, tiles + 2):
                    if n >= 2:
                        pitches.setdefault(f"decoy {n} tiles", n * tile_m)
    decoys = []
    for name, pitch in pitches.items():
        ratios = (pitch / real.pitch_m / h for real in rolls for h in _HARMONICS)
        if all(abs(r - 1) > separation for r in ratios):
            decoys.append(Roll(name, pitch / math.pi))
    return tuple(decoys)


def _best_chances(marks: Sequence[Mark], rule: PeriodicRule, rolls: Sequence[Roll]) -> list[Chain]:
    """Candidate chains of `rolls` with their chance × anchor pairs tried (Bonferroni)."""
    search = _ChainSearch(marks, rule)
    candidates = [chain for roll in rolls for chain in search.candidates(roll)]
    tried = max(search.tried, 1)
    return [replace(c, chance=min(1.0, search.chance(c) * tried)) for c in candidates]


def find_chains(marks: Sequence[Mark], rule: PeriodicRule) -> list[Chain]:
    """The accepted roll-mark chains among `marks` (sorted along the strip), best first.

    A candidate's chance, multiplied by the number of anchor pairs tried (Bonferroni), must not
    exceed `significance`, and must be `DECOY_MARGIN` times smaller than the best chance the same
    search finds at decoy pitches (rolls that are not there) among the marks no candidate took:
    in scatter dense or regular enough to fool the chance model, decoys find chains as good as
    the real pitches do. Of chains sharing more than half their marks, the best one stays.
    """
    if len(marks) < rule.min_repeats:
        return []
    judged = [c for c in _best_chances(marks, rule, rule.rolls) if c.chance <= rule.significance]
    if not judged:
        return []
    tile_m = statistics.median(2 * d.half_length_m for m in marks for d in m.members)
    explained = {i for chain in judged for i in chain.indices}
    background = [m for i, m in enumerate(marks) if i not in explained]
    decoys = _best_chances(background, rule, decoy_rolls(rule.rolls, tile_m)) if len(background) >= 2 else []
    floor = min((c.chance for c in decoys), default=1.0) / DECOY_MARGIN
    judged = [c for c in judged if c.chance <= floor]
    judged.sort(key=lambda c: (-c.marks, -c.fill, c.rms_m, c.indices[0], c.roll.name))
    accepted: list[Chain] = []
    for chain in judged:
        mine = set(chain.indices)
        if all(len(mine & set(other.indices)) * 2 <= chain.marks for other in accepted):
            accepted.append(chain)
    return accepted


def lanes(sequence: Sequence[StripDetection], tolerance_mm: float | None) -> list[list[StripDetection]]:
    """`sequence` split into lanes across the strip: detections whose across positions are linked
    by steps of at most `tolerance_mm` share a lane (None: one lane). Each lane keeps the order."""
    if tolerance_mm is None or not sequence:
        return [list(sequence)] if sequence else []
    values = sorted({d.across_mm for d in sequence})
    lane_of: dict[float, int] = {}
    lane = 0
    for n, value in enumerate(values):
        if n and value - values[n - 1] > tolerance_mm + EPS:
            lane += 1
        lane_of[value] = lane
    split: list[list[StripDetection]] = [[] for _ in range(lane + 1)]
    for detection in sequence:
        split[lane_of[detection.across_mm]].append(detection)
    return split


def periodic_findings(
    detections: Sequence[StripDetection], rule: PeriodicRule, cache: LaneCache | None = None
) -> list[Finding]:
    """Roll-mark chains of each watched class, lane by lane across the strip (a roll prints at
    one place across it), one finding per chain naming its roll."""
    found = []
    for class_name in rule.classes:
        for lane in lanes(_of_class(detections, class_name, rule.min_confidence), rule.across_tolerance_mm):
            if cache is None:
                found.extend(_lane_findings(lane, rule, class_name))
                continue
            key = (rule, class_name, tuple(lane))
            if key not in cache:
                cache[key] = _lane_findings(lane, rule, class_name)
            found.extend(cache[key])
    return found


def _lane_findings(lane: Sequence[StripDetection], rule: PeriodicRule, class_name: str) -> list[Finding]:
    marks = group_marks(lane, rule.merge_m)
    found = []
    for chain in find_chains(marks, rule):
        evidence = [d for i in chain.indices for d in marks[i].members]
        found.append(
            _finding(
                rule,
                class_name,
                evidence,
                roll=chain.roll,
                pitch_m=round(chain.pitch_m, 6),
                details={
                    "roll_diameter_m": chain.roll.diameter_m,
                    "nominal_pitch_m": round(chain.roll.pitch_m, 6),
                    "tolerance_m": round(rule.tolerance_for(chain.roll.pitch_m), 6),
                    "marks": chain.marks,
                    "revolutions": chain.span_revolutions,
                    "missing": chain.span_revolutions - chain.marks,
                    "rms_residual_m": round(chain.rms_m, 6),
                    "chance": float(f"{chain.chance:.3g}"),
                    "across_mm": [min(d.across_mm for d in evidence), max(d.across_mm for d in evidence)],
                    "mark_positions_m": [round(marks[i].position_m, 4) for i in chain.indices],
                },
            )
        )
    return found
