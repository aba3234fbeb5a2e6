"""The alert engine: evaluates the rules over what the database holds and raises each alert once.

What it reads — the window around what was written. `AlertEngine.evaluate(conn, strip_ids,
frame_ids)` takes, for each strip *pass* and surface (`frames.pass_id`: a strip id rolled again is
another pass, `worker.storage.passes`), the frames just written (`frame_ids`) and reads the
detections of the watched classes of that pass and surface whose frames start within `reach` of
one of them, reach = max(lookback_m, MAX_POSITION_JUMP_M) (each bound moved outwards to a multiple
of a fifth of lookback_m; overlapping windows merge). A finding that needs a written detection lies
within the rules' reach of it (`config.load_rules` checks that lookback_m covers every rule), so
it is found whatever order the frames arrive in: late frames (a camera's store-and-forward, a
lagging partition, a replay) are evaluated like frames in order, and a far-away frame cannot hide
the others (there is no "tip"). Without `frame_ids` the whole of each strip is evaluated.

Frames far from their pass are left out: a frame with no other frame of its strip, pass and
surface within MAX_POSITION_JUMP_M — when that pass and surface has other frames — is a position
*outlier* (one wrong number, a position in other units): it opens no window and its detections are
not evaluated, it is logged (`frame.position_outlier`) and reported to `on_position_outlier` (the
worker counts it). It stays stored, and stops being an outlier when frames near it are stored (the
first frame after a gap in the stream, say): their windows then take it in.

Each window's detections go through the pure rules (`worker.alerts.rules`), findings within a
cooldown of an alert already raised on that pass and surface are dropped (`rules.admit`), and the
rest are inserted into `alerts` with `INSERT … ON CONFLICT (dedup_key) DO NOTHING`. It returns the
alerts this call inserted.
Detections of frames the image-quality gate flagged for their pixels (`worker.core.quality.
IMAGE_CHECKS`: a dead lamp, a white-out) are not read: the camera's fault, not the steel's.

Guarantees (why exactly one row per alert, also across crashes, restarts and rebalances):
- State lives in the database only: the same stored detections give the same findings, and the
  dedup key is a function of the finding (rule, strip, surface, class, roll, start position in
  mm, and the pass for passes after the first: `dedup_key`), so evaluating again inserts nothing
  new.
- Evaluations of one strip are serialised by a row lock: the strip's row in `alert_strip_locks`
  is inserted if missing and locked `FOR UPDATE` for the rest of the transaction
  (`storage.passes.lock_strips`, also taken by the writer while it infers passes), so two workers
  (during a rebalance) cannot both pass the cooldown check for the same finding. Strips are taken
  in sorted order, so two evaluators never wait on each other in a cycle. Only `steel_worker` may
  lock those rows: the read-only analysts have no privilege on the table, so they cannot stall
  the workers (an advisory lock, which needs no privilege, could be taken by anyone).
- A fault is isolated where it happens: `evaluate_results` evaluates each strip in a
  transaction of its own, and a rule that raises on a strip is logged and counted
  (`on_rule_error`) while the other rules of that strip still run; a strip whose evaluation
  fails for a reason that is not an outage (a stored value that cannot be read back, say) is
  logged, counted and left for the next batch of that strip. Outages and faults of the set-up
  (`worker.core.failures`: transient, systemic) propagate, and the worker retries the step.
- The worker calls it right AFTER `StorageWriter.write_results` committed, in transactions of
  their own (`evaluate_results`). A crash between the two leaves the frames' offsets uncommitted;
  the frames are redelivered, `write_results` finds them in the ledger and writes nothing, and
  the evaluation then raises the alerts from the stored detections. Keeping it out of the write
  transaction keeps that transaction short and lets a slow or failing rule never cost a frame.

What depends on arrival order: a finding that a cooldown blocks. Of two findings of one rule,
class and roll within its cooldown, the one evaluated first is raised and the other is not; when
frames arrive out of order that may be the later one on the strip (the same alert, found at
another place of the same pattern).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert

from worker.alerts.config import DEFAULT_MAX_POSITION_JUMP_M, AlertRules, Rule
from worker.alerts.rules import Finding, RaisedSpan, StripDetection, admit, evaluate_rule
from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError
from worker.core.failures import DATA, classify, describe
from worker.core.quality import IMAGE_CHECKS
from worker.core.records import FrameResult
from worker.core.refusals import shown
from worker.storage.passes import FIRST_PASS, lock_strips
from worker.storage.tables import alerts, defect_classes

log = structlog.get_logger("worker.alerts")

#: Lane searches remembered (see `rules.LaneCache`): a pure function's results, so a memo only
#: saves time; the database stays the only state.
LANE_MEMO_SIZE = 2048
#: Window bounds move outwards to multiples of lookback_m / LOOKBACK_STEPS: windows of nearby
#: batches hold the same lanes, and their searches come from the memo.
LOOKBACK_STEPS = 5
#: What `on_rule_error` receives when a whole strip failed (not one rule).
STRIP_FAILED = "(strip)"

#: Whether frame `f` is placed among its pass: a frame of its strip, pass and surface within
#: :jump of it, or none at all (the pass's first frame). Not placed: a position outlier.
_PLACED = """(
        EXISTS (SELECT 1 FROM frames AS o
                WHERE o.strip_id = f.strip_id AND o.pass_id = f.pass_id AND o.surface = f.surface
                  AND o.position_m BETWEEN f.position_m - :jump AND f.position_m + :jump
                  AND o.frame_id <> f.frame_id)
        OR NOT EXISTS (SELECT 1 FROM frames AS o
                       WHERE o.strip_id = f.strip_id AND o.pass_id = f.pass_id AND o.surface = f.surface
                         AND o.frame_id <> f.frame_id)
    )"""
_WRITTEN_COLUMNS = f"""
    SELECT f.frame_id, f.strip_id, f.pass_id, f.surface, f.position_m,
           f.position_m + coalesce(f.length_m, 0) AS end_m, {_PLACED} AS placed
    FROM frames AS f
"""
#: The frames just written (with whether each is placed).
_WRITTEN = sa.text(_WRITTEN_COLUMNS + "WHERE f.frame_id = ANY(:ids) AND f.strip_id = ANY(:strips)")
#: Every frame of the strips (evaluating whole strips).
_WHOLE = sa.text(_WRITTEN_COLUMNS + "WHERE f.strip_id = ANY(:strips)")
#: The detections of the watched classes on placed frames starting inside one of the windows
#: (whether a frame is placed is asked of the frames with such detections only).
_DETECTIONS = sa.text(
    f"""
    WITH found AS MATERIALIZED (
        SELECT d.id, d.class_id, d.confidence, d.along_m, d.along_start_m, d.along_end_m, d.across_mm,
               f.frame_id, f.strip_id, f.pass_id, f.surface, f.line, f.camera, f.model_version,
               f.captured_at, f.position_m
        FROM unnest(CAST(:w_strips AS text[]), CAST(:w_passes AS text[]), CAST(:w_surfaces AS text[]),
                    CAST(:w_low AS float8[]), CAST(:w_high AS float8[]))
             AS w(strip_id, pass_id, surface, low, high)
        JOIN frames AS f
          ON f.strip_id = w.strip_id AND f.pass_id = w.pass_id AND f.surface = w.surface
         AND f.position_m BETWEEN w.low AND w.high
        JOIN detections AS d ON d.frame_id = f.frame_id
        WHERE d.class_id = ANY(:classes)
          AND NOT (f.quality_flags && CAST(:image_flags AS text[]))  -- the camera's fault, not the steel's
    )
    SELECT * FROM found AS f WHERE {_PLACED}
    """
)

Group = tuple[str, str, str]  # (strip, pass, surface)


@dataclass(frozen=True)
class NewAlert:
    """An alert this engine inserted (what the `alerts` row holds)."""

    id: int
    dedup_key: str
    rule: str
    kind: str
    class_id: int
    class_name: str
    strip_id: str
    surface: str
    roll: str | None
    severity: str
    position_start_m: float
    position_end_m: float
    detection_count: int
    pitch_m: float | None
    evidence: tuple[int, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    pass_id: str = FIRST_PASS


@dataclass(frozen=True)
class _Stored:
    """Where a detection came from (kept for the alert's line, camera, frames and model)."""

    frame_id: str
    line: str
    camera: str
    model_version: str


def dedup_key(strip_id: str, surface: str, finding: Finding, pass_id: str = FIRST_PASS) -> str:
    """`rule/strip/surface/class/roll/start-in-mm`, and `/pass` after it for passes other than the
    first (so the keys of first-pass alerts are the ones raised before passes existed), each part
    percent-encoded (so unambiguous: a key of the first pass has one part fewer)."""
    parts = (finding.rule, strip_id, surface, finding.class_name, finding.roll or "-")
    encoded = "/".join(quote(p, safe=" -_.:") for p in parts)
    key = f"{encoded}/{round(finding.start_m * 1000)}"
    return key if pass_id == FIRST_PASS else f"{key}/{quote(pass_id, safe=' -_.:')}"


@dataclass(frozen=True)
class _Written:
    """A stored frame as the windows see it."""

    frame_id: str
    group: Group
    start_m: float
    end_m: float
    placed: bool


def windows(spans: Iterable[tuple[float, float]], reach_m: float, step_m: float) -> list[tuple[float, float]]:
    """The merged windows [start − reach, end + reach] of `spans` (a frame's start and end along
    the strip), each bound moved outwards to a multiple of `step_m`; sorted."""
    raw = sorted(
        (math.floor((start - reach_m) / step_m) * step_m, math.ceil((end + reach_m) / step_m) * step_m)
        for start, end in spans
    )
    merged: list[tuple[float, float]] = []
    for low, high in raw:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


class _LaneMemo(OrderedDict[Any, Any]):
    """A least-recently-used dict of at most `size` entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class AlertEngine:
    """Evaluates `rules` for strips; see the module doc for its guarantees."""

    def __init__(
        self,
        engine: sa.Engine,
        rules: AlertRules,
        catalogue: Catalogue,
        on_rule_error: Callable[[str], None] | None = None,
        *,
        max_position_jump_m: float = DEFAULT_MAX_POSITION_JUMP_M,
        on_position_outlier: Callable[[], None] | None = None,
    ) -> None:
        """`on_rule_error(rule)` is called for each rule (or `STRIP_FAILED`) that failed on a strip;
        `on_position_outlier()` for each written frame found to be a position outlier (module doc)
        farther than `max_position_jump_m` (MAX_POSITION_JUMP_M) from the rest of its pass."""
        rules.check_classes(catalogue)
        self.on_rule_error = on_rule_error or (lambda rule: None)
        self.on_position_outlier = on_position_outlier or (lambda: None)
        self._engine = engine
        self.rules = rules
        self.catalogue = catalogue
        self.max_position_jump_m = max_position_jump_m
        self.reach_m = max(rules.lookback_m, max_position_jump_m)
        self._step_m = rules.lookback_m / LOOKBACK_STEPS
        self._cooldowns = {r.name: r.cooldown for r in rules.rules}
        self._severity = {r.name: r.severity for r in rules.rules}
        self._class_ids: dict[str, int] = {}
        self._lanes = _LaneMemo(LANE_MEMO_SIZE)

    def evaluate_results(self, results: Sequence[FrameResult]) -> list[NewAlert]:
        """Evaluate the windows around the frames of `results` (clean ones too: a frame stored next
        to an outlier takes it in), strip by strip, each in a transaction of its own.

        Call it after `StorageWriter.write_results(results)` returned, with the same results (new
        or redelivered frames alike). A strip that fails on its data is logged, counted and skipped
        (see the module doc); outages propagate (retry the call: strips done already raise nothing
        twice).
        """
        written: dict[str, set[str]] = defaultdict(set)
        for result in results:
            written[result.meta.strip_id].add(result.meta.frame_id)
        created: list[NewAlert] = []
        for strip in sorted(written):
            try:
                with self._engine.begin() as conn:
                    created += self.evaluate(conn, [strip], written[strip])
            except Exception as error:
                if classify(error) != DATA:
                    raise
                log.error(
                    "alerts.strip_failed",
                    strip_id=shown(strip, 200),
                    error=shown(describe(error)),
                    note="no alert raised for this strip now; its next frames evaluate it again",
                )
                self.on_rule_error(STRIP_FAILED)
        return created

    def evaluate_strips(self, strip_ids: Iterable[str]) -> list[NewAlert]:
        """`evaluate` of the whole strips, in a transaction of its own."""
        with self._engine.begin() as conn:
            return self.evaluate(conn, strip_ids)

    def evaluate(
        self, conn: sa.Connection, strip_ids: Iterable[str], frame_ids: Iterable[str] | None = None
    ) -> list[NewAlert]:
        """Evaluate every rule within the caller's transaction, over the windows around `frame_ids`
        (frames of `strip_ids`), or over the whole strips when `frame_ids` is None; the inserted
        alerts."""
        strips = lock_strips(conn, strip_ids)
        if not strips:
            return []
        written = self._written(conn, strips, frame_ids)
        spans: dict[Group, list[tuple[float, float]]] = defaultdict(list)
        for frame in written:
            if frame.placed:
                spans[frame.group].append((frame.start_m, frame.end_m))
            else:
                self._outlier(frame)
        bounds = [(group, low, high) for group in sorted(spans) for low, high in self._windows(spans[group])]
        if not bounds:
            return []
        class_ids = self._ids(conn)
        names = {v: k for k, v in class_ids.items()}
        sequences: dict[Group, list[StripDetection]] = defaultdict(list)
        stored: dict[int, _Stored] = {}
        rows = conn.execute(
            _DETECTIONS,
            {
                "w_strips": [g[0] for g, _, _ in bounds],
                "w_passes": [g[1] for g, _, _ in bounds],
                "w_surfaces": [g[2] for g, _, _ in bounds],
                "w_low": [low for _, low, _ in bounds],
                "w_high": [high for _, _, high in bounds],
                "jump": self.max_position_jump_m,
                "classes": [class_ids[c] for c in self.rules.class_names],
                "image_flags": list(IMAGE_CHECKS),
            },
        )
        for row in rows:
            sequences[(row.strip_id, row.pass_id, row.surface)].append(
                StripDetection(
                    id=row.id,
                    class_name=names[row.class_id],
                    along_m=row.along_m,
                    confidence=float(row.confidence),
                    along_start_m=row.along_start_m,
                    along_end_m=row.along_end_m,
                    observed_at=row.captured_at,
                    across_mm=row.across_mm,
                )
            )
            stored[row.id] = _Stored(row.frame_id, row.line, row.camera, row.model_version)
        if not sequences:
            return []
        raised = self._raised(conn, strips, names)
        new_rows = []
        for group, sequence in sorted(sequences.items()):
            findings = [f for rule in self.rules.rules for f in self._findings(rule, group[0], sequence)]
            for finding in admit(findings, raised.get(group, ()), self._cooldowns):
                new_rows.append(self._row(group, finding, class_ids, stored))
        if not new_rows:
            return []
        inserted = conn.execute(
            insert(alerts)
            .on_conflict_do_nothing(index_elements=[alerts.c.dedup_key])
            .returning(alerts.c.id, alerts.c.dedup_key),
            new_rows,
        ).all()
        ids = {row.dedup_key: row.id for row in inserted}
        created = [self._new_alert(ids[r["dedup_key"]], r, names) for r in new_rows if r["dedup_key"] in ids]
        for alert in created:
            log.info(
                "alert.raised",
                alert_id=alert.id,
                rule=alert.rule,
                strip_id=alert.strip_id,
                pass_id=alert.pass_id,
                class_name=alert.class_name,
                roll=alert.roll,
                start_m=round(alert.position_start_m, 3),
                end_m=round(alert.position_end_m, 3),
                count=alert.detection_count,
            )
        return created

    # -- helpers -----------------------------------------------------------------------------------

    def _written(
        self, conn: sa.Connection, strips: list[str], frame_ids: Iterable[str] | None
    ) -> list[_Written]:
        if frame_ids is None:
            rows = conn.execute(_WHOLE, {"strips": strips, "jump": self.max_position_jump_m})
        else:
            params = {"ids": sorted(set(frame_ids)), "strips": strips, "jump": self.max_position_jump_m}
            rows = conn.execute(_WRITTEN, params)
        return [
            _Written(r.frame_id, (r.strip_id, r.pass_id, r.surface), r.position_m, r.end_m, r.placed)
            for r in rows
        ]

    def _windows(self, spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        return windows(spans, self.reach_m, self._step_m)

    def _outlier(self, frame: _Written) -> None:
        strip, pass_id, surface = frame.group
        log.warning(
            "frame.position_outlier",
            frame_id=shown(frame.frame_id, 200),
            strip_id=shown(strip, 200),
            pass_id=shown(pass_id, 200),
            surface=surface,
            position_m=frame.start_m,
            max_position_jump_m=self.max_position_jump_m,
            note="no other frame of its strip pass and surface this close: its detections are not"
            " evaluated, and it opens no window, until frames near it are stored",
        )
        self.on_position_outlier()

    def _findings(self, rule: Rule, strip: str, sequence: Sequence[StripDetection]) -> list[Finding]:
        """`rule`'s findings on one strip; a rule that raises is logged and counted, not fatal."""
        try:
            return evaluate_rule(rule, sequence, self._lanes)
        except Exception as error:
            log.error(
                "alerts.rule_failed",
                rule=rule.name,
                strip_id=shown(strip, 200),
                detections=len(sequence),
                error=shown(describe(error)),
                exc_info=True,
            )
            self.on_rule_error(rule.name)
            return []

    def _ids(self, conn: sa.Connection) -> dict[str, int]:
        """Class name → id of the watched classes, from `defect_classes` (cached)."""
        if not set(self.rules.class_names) <= self._class_ids.keys():
            rows = conn.execute(sa.select(defect_classes.c.id, defect_classes.c.name))
            self._class_ids = {row.name: row.id for row in rows}
            missing = sorted(set(self.rules.class_names) - self._class_ids.keys())
            if missing:
                raise CatalogueError(
                    f"{self.rules.source}: rules watch classes {missing} that are not in defect_classes"
                    f" (which has {sorted(self._class_ids)}); store the catalogue first"
                )
        return self._class_ids

    def _raised(
        self, conn: sa.Connection, strips: list[str], names: Mapping[int, str]
    ) -> dict[Group, list[RaisedSpan]]:
        rows = conn.execute(
            sa.select(
                alerts.c.strip_id,
                alerts.c.pass_id,
                alerts.c.rule,
                alerts.c.class_id,
                alerts.c.roll,
                alerts.c.position_start_m,
                alerts.c.position_end_m,
                alerts.c.surface,
                alerts.c.observed_at,
            ).where(alerts.c.strip_id.in_(strips))
        )
        raised: dict[Group, list[RaisedSpan]] = defaultdict(list)
        for row in rows:
            raised[(row.strip_id, row.pass_id, row.surface)].append(
                RaisedSpan(
                    rule=row.rule,
                    class_name=names.get(row.class_id, str(row.class_id)),
                    roll=row.roll,
                    start_m=row.position_start_m,
                    end_m=row.position_end_m,
                    observed_at=row.observed_at,
                )
            )
        return raised

    def _row(
        self,
        group: Group,
        finding: Finding,
        class_ids: Mapping[str, int],
        stored: Mapping[int, _Stored],
    ) -> dict[str, Any]:
        strip, pass_id, surface = group
        sources = [stored[i] for i in finding.evidence]
        return {
            "dedup_key": dedup_key(strip, surface, finding, pass_id),
            "pass_id": pass_id,
            "rule": finding.rule,
            "class_id": class_ids[finding.class_name],
            "strip_id": strip,
            "roll": finding.roll,
            "severity": self._severity[finding.rule],
            "position_start_m": finding.start_m,
            "position_end_m": finding.end_m,
            "detection_count": len(finding.evidence),
            "pitch_m": finding.pitch_m,
            "evidence": list(finding.evidence),
            "details": dict(finding.details),
            "rule_kind": finding.kind,
            "surface": surface,
            "line": min(s.line for s in sources),
            "camera": min(s.camera for s in sources),
            "frame_ids": sorted({s.frame_id for s in sources}),
            "max_confidence": round(finding.max_confidence, 6),
            "model_version": max(s.model_version for s in sources),
            "observed_at": finding.observed_at,
        }

    @staticmethod
    def _new_alert(alert_id: int, row: Mapping[str, Any], names: Mapping[int, str]) -> NewAlert:
        return NewAlert(
            id=alert_id,
            dedup_key=row["dedup_key"],
            rule=row["rule"],
            kind=row["rule_kind"],
            class_id=row["class_id"],
            class_name=names[row["class_id"]],
            strip_id=row["strip_id"],
            surface=row["surface"],
            roll=row["roll"],
            severity=row["severity"],
            position_start_m=row["position_start_m"],
            position_end_m=row["position_end_m"],
            detection_count=row["detection_count"],
            pitch_m=row["pitch_m"],
            evidence=tuple(row["evidence"]),
            details=row["details"],
            pass_id=row["pass_id"],
        )
