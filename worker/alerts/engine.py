"""The alert engine: evaluates the rules over what the database holds and raises each alert once.

`AlertEngine.evaluate(conn, strip_ids)` reads, for each strip and surface, the detections of the
watched classes in the last `lookback_m` metres (from the strip's furthest frame; the window's
start moves in steps of a fifth of that, so it is up to 20 % longer; not those of frames the
image-quality gate flagged for their pixels, `worker.core.quality.IMAGE_CHECKS`) and the alerts
already raised on those strips, runs the pure rules (`worker.alerts.rules`), drops findings within
a cooldown of an earlier alert (`rules.admit`), and inserts the rest into `alerts` with
`INSERT … ON CONFLICT (dedup_key) DO NOTHING`. It returns the alerts this call inserted.

Guarantees (why exactly one row per alert, also across crashes, restarts and rebalances):
- State lives in the database only: the same stored detections give the same findings, and the
  dedup key is a function of the finding (rule, strip, surface, class, roll, start position in
  mm), so evaluating again inserts nothing new.
- Evaluations of one strip are serialised by a row lock: the strip's row in `alert_strip_locks`
  is inserted if missing and locked `FOR UPDATE` for the rest of the transaction, so two workers
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
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert

from worker.alerts.config import AlertRules, Rule
from worker.alerts.rules import Finding, RaisedSpan, StripDetection, admit, evaluate_rule
from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError
from worker.core.failures import DATA, classify, describe
from worker.core.quality import IMAGE_CHECKS
from worker.core.records import FrameResult
from worker.core.refusals import shown
from worker.storage.tables import alerts, defect_classes

log = structlog.get_logger("worker.alerts")

#: Lane searches remembered (see `rules.LaneCache`): a pure function's results, so a memo only
#: saves time; the database stays the only state.
LANE_MEMO_SIZE = 2048
#: The window's start moves in steps of lookback_m / LOOKBACK_STEPS (so it is lookback_m to
#: lookback_m × (1 + 1/LOOKBACK_STEPS) long): lanes a batch does not touch stay the same, and
#: their searches come from the memo.
LOOKBACK_STEPS = 5
#: What `on_rule_error` receives when a whole strip failed (not one rule).
STRIP_FAILED = "(strip)"

_ADD_STRIP_LOCKS = sa.text(
    "INSERT INTO alert_strip_locks (strip_id) SELECT unnest(:strips) ON CONFLICT DO NOTHING"
)
_LOCK_STRIPS = sa.text(
    "SELECT strip_id FROM alert_strip_locks WHERE strip_id = ANY(:strips) ORDER BY strip_id FOR UPDATE"
)

_DETECTIONS = sa.text(
    """
    WITH tip AS (
        SELECT strip_id, surface, max(position_m + coalesce(length_m, 0)) AS end_m
        FROM frames
        WHERE strip_id = ANY(:strips)
        GROUP BY strip_id, surface
    )
    SELECT d.id, d.class_id, d.confidence, d.along_m, d.along_start_m, d.along_end_m, d.across_mm,
           f.frame_id, f.strip_id, f.surface, f.line, f.camera, f.model_version, f.captured_at
    FROM frames AS f
    JOIN tip ON tip.strip_id = f.strip_id AND tip.surface = f.surface
    JOIN detections AS d ON d.frame_id = f.frame_id
    WHERE f.strip_id = ANY(:strips)
      AND f.position_m + coalesce(f.length_m, 0) >= floor((tip.end_m - :lookback) / :step) * :step
      AND d.class_id = ANY(:classes)
      AND NOT (f.quality_flags && CAST(:image_flags AS text[]))  -- the camera's fault, not the steel's
    """
)


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


@dataclass(frozen=True)
class _Stored:
    """Where a detection came from (kept for the alert's line, camera, frames and model)."""

    frame_id: str
    line: str
    camera: str
    model_version: str


def dedup_key(strip_id: str, surface: str, finding: Finding) -> str:
    """`rule/strip/surface/class/roll/start-in-mm`, each part percent-encoded (so unambiguous)."""
    parts = (finding.rule, strip_id, surface, finding.class_name, finding.roll or "-")
    encoded = "/".join(quote(p, safe=" -_.:") for p in parts)
    return f"{encoded}/{round(finding.start_m * 1000)}"


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
    ) -> None:
        """`on_rule_error(rule)` is called for each rule (or `STRIP_FAILED`) that failed on a strip."""
        rules.check_classes(catalogue)
        self.on_rule_error = on_rule_error or (lambda rule: None)
        self._engine = engine
        self.rules = rules
        self.catalogue = catalogue
        self._cooldowns = {r.name: r.cooldown for r in rules.rules}
        self._severity = {r.name: r.severity for r in rules.rules}
        self._class_ids: dict[str, int] = {}
        self._lanes = _LaneMemo(LANE_MEMO_SIZE)

    def evaluate_results(self, results: Sequence[FrameResult]) -> list[NewAlert]:
        """Evaluate the strips of `results` that have detections, in a transaction of its own.

        Call it after `StorageWriter.write_results(results)` returned, with the same results (new
        or redelivered frames alike). Each strip is evaluated in a transaction of its own; a strip
        that fails on its data is logged, counted and skipped (see the module doc); outages
        propagate (retry the call: strips done already raise nothing twice).
        """
        created: list[NewAlert] = []
        for strip in sorted({r.meta.strip_id for r in results if r.detections}):
            try:
                created += self.evaluate_strips([strip])
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
        """`evaluate` in a transaction of its own."""
        with self._engine.begin() as conn:
            return self.evaluate(conn, strip_ids)

    def evaluate(self, conn: sa.Connection, strip_ids: Iterable[str]) -> list[NewAlert]:
        """Evaluate every rule on `strip_ids` within the caller's transaction; the inserted alerts."""
        strips = sorted(set(strip_ids))
        if not strips:
            return []
        # the strips' lock rows, in a fixed order: two evaluators never wait on each other in a cycle
        conn.execute(_ADD_STRIP_LOCKS, {"strips": strips})
        conn.execute(_LOCK_STRIPS, {"strips": strips})
        class_ids = self._ids(conn)
        names = {v: k for k, v in class_ids.items()}
        sequences: dict[tuple[str, str], list[StripDetection]] = defaultdict(list)
        stored: dict[int, _Stored] = {}
        rows = conn.execute(
            _DETECTIONS,
            {
                "strips": strips,
                "lookback": self.rules.lookback_m,
                "step": self.rules.lookback_m / LOOKBACK_STEPS,
                "classes": [class_ids[c] for c in self.rules.class_names],
                "image_flags": list(IMAGE_CHECKS),
            },
        )
        for row in rows:
            sequences[(row.strip_id, row.surface)].append(
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
        raised = self._raised(conn, strips, names)
        new_rows = []
        for (strip, surface), sequence in sorted(sequences.items()):
            findings = [f for rule in self.rules.rules for f in self._findings(rule, strip, sequence)]
            for finding in admit(findings, raised.get((strip, surface), ()), self._cooldowns):
                new_rows.append(self._row(strip, surface, finding, class_ids, stored))
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
                class_name=alert.class_name,
                roll=alert.roll,
                start_m=round(alert.position_start_m, 3),
                end_m=round(alert.position_end_m, 3),
                count=alert.detection_count,
            )
        return created

    # -- helpers -----------------------------------------------------------------------------------

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
    ) -> dict[tuple[str, str], list[RaisedSpan]]:
        rows = conn.execute(
            sa.select(
                alerts.c.strip_id,
                alerts.c.rule,
                alerts.c.class_id,
                alerts.c.roll,
                alerts.c.position_start_m,
                alerts.c.position_end_m,
                alerts.c.surface,
                alerts.c.observed_at,
            ).where(alerts.c.strip_id.in_(strips))
        )
        raised: dict[tuple[str, str], list[RaisedSpan]] = defaultdict(list)
        for row in rows:
            raised[(row.strip_id, row.surface)].append(
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
        strip: str,
        surface: str,
        finding: Finding,
        class_ids: Mapping[str, int],
        stored: Mapping[int, _Stored],
    ) -> dict[str, Any]:
        sources = [stored[i] for i in finding.evidence]
        return {
            "dedup_key": dedup_key(strip, surface, finding),
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
        )
