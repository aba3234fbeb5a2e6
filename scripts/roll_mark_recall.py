"""How well the roll-mark rule finds a roll's marks through the demo model: recall over seeded strips
with a roll mark, false roll alerts over strips without one.

    .venv/bin/python scripts/roll_mark_recall.py --strips 20

For each seed 1..N it simulates two strips as the demo does (`worker.demo.run.demo_scenarios`):
one marked by the roll (a mark of --class every π·d metres, at one place across, plus the demo's
stray defects) and one clean (stray defects only). Every frame goes through the worker's own
classification (`worker.streaming.classify`: the one inference path, the model's thresholds),
the detections are placed on the strip as the worker places them, and the periodic rule of the
rules file judges each strip as the alert engine would (`worker.alerts.rules`). A marked strip
counts as found when the rule names the roll with the marks' class; any periodic finding on a
clean strip is a false roll alert. It also prints the share of printed marks whose tile the model
flagged with the mark's class: when recall is low, that tells the model's part from the rule's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from worker.alerts.config import PeriodicRule, load_rules
from worker.alerts.rules import StripDetection, evaluate_rule
from worker.camera.frames import FrameMaker
from worker.camera.plan import SimulationPlan, roll_pitch_m
from worker.core.records import DecodedFrame, KafkaCoordinates
from worker.demo.model import prepare_demo_model
from worker.demo.run import DemoOptions, demo_scenarios
from worker.inference import Inferencer
from worker.streaming.classify import FrameClassifier, tile_frame

START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class StripOutcome:
    marked: bool
    found: bool  # the rule named the roll (marked strips) / raised any roll alert (clean strips)
    marks: int  # marks printed
    marks_seen: int  # printed marks whose tile the model flagged with the mark's class


def _strip(
    seed: int,
    marked: bool,
    *,
    options: DemoOptions,
    classifier: FrameClassifier,
    rule: PeriodicRule,
    pitch: float,
) -> StripOutcome:
    scenarios = demo_scenarios(options, pitch)
    scenario = scenarios[1] if marked else scenarios[0]
    plan = SimulationPlan(
        strip_ids=(f"{'MARKED' if marked else 'CLEAN'}-{seed:03d}",),
        strip_length_m=options.strip_length_m,
        seed=seed,
        scenarios=(scenario,),
    )
    maker = FrameMaker(plan, START)
    made = [maker.make(strip) for strip in maker.order()]
    tiled = [
        tile_frame(DecodedFrame(f.meta, KafkaCoordinates("sim", 0, n), f.image), classifier.inferencer)
        for n, (f, _) in enumerate(made)
    ]
    results = classifier.classify(tiled, START)
    detections = [
        StripDetection(
            id=n,
            class_name=d.class_name,
            along_m=d.along_m,
            confidence=d.confidence,
            along_start_m=d.along_start_m,
            along_end_m=d.along_end_m,
            observed_at=r.meta.captured_at,
            across_mm=d.across_mm,
        )
        for n, (r, d) in enumerate((r, d) for r in results for d in r.detections)
    ]
    findings = evaluate_rule(rule, detections)
    printed = [m for _, marks in made for m in marks]
    index = {r.meta.frame_id: n for n, r in enumerate(results)}
    seen = 0
    for mark in printed:
        n = index[mark.frame_id]
        under = {
            t.index
            for t in tiled[n].tiles
            if t.x <= mark.column < t.x + t.size and t.y <= mark.row < t.y + t.size
        }
        flagged = {d.tile_index for d in results[n].detections if d.class_name == options.roll_mark_class}
        seen += bool(under & flagged)
    if marked:
        found = any(f.roll == options.roll and f.class_name == options.roll_mark_class for f in findings)
    else:
        found = bool(findings)
    return StripOutcome(marked, found, len(printed), seen)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--strips", type=int, default=20, help="seeds: N marked and N clean strips (default 20)"
    )
    parser.add_argument(
        "--model", type=Path, help="model artefact (default: the cached demo model, trained if missing)"
    )
    parser.add_argument("--rules", type=Path, help="alert rules file (default: config/alert-rules.yaml)")
    parser.add_argument(
        "--roll", default=DemoOptions.roll, help="roll of the rules file (default %(default)r)"
    )
    parser.add_argument(
        "--class", dest="mark_class", default=DemoOptions.roll_mark_class, help="class of the marks"
    )
    parser.add_argument("--strip-length-m", type=float, default=DemoOptions.strip_length_m)
    parser.add_argument(
        "--defect-rate", type=float, default=DemoOptions.defect_rate, help="stray defects per frame"
    )
    args = parser.parse_args()

    rules = load_rules(args.rules)
    rule = next((r for r in rules.rules if isinstance(r, PeriodicRule)), None)
    if rule is None:
        parser.error(f"{rules.source}: no periodic (roll mark) rule to measure")
    roll = next((r for r in rules.rolls if r.name == args.roll), None)
    if roll is None:
        parser.error(f"--roll {args.roll!r}: not a roll of the rules file ({[r.name for r in rules.rolls]})")
    pitch = roll_pitch_m(roll.diameter_m)
    options = DemoOptions(
        roll=args.roll,
        roll_mark_class=args.mark_class,
        strip_length_m=args.strip_length_m,
        defect_rate=args.defect_rate,
    )
    model_dir = args.model or prepare_demo_model(progress=False).path
    classifier = FrameClassifier(Inferencer.load_model(model_dir))
    started = time.monotonic()
    outcomes = [
        _strip(seed, marked, options=options, classifier=classifier, rule=rule, pitch=pitch)
        for seed in range(1, args.strips + 1)
        for marked in (True, False)
    ]
    marked = [o for o in outcomes if o.marked]
    clean = [o for o in outcomes if not o.marked]
    marks, seen = sum(o.marks for o in marked), sum(o.marks_seen for o in marked)
    print(
        f"model {model_dir}; rule {rule.name}; roll {args.roll} (pitch {pitch:.3f} m),"
        f" marks of {args.mark_class};"
        f" {args.strips} marked and {args.strips} clean strips of {args.strip_length_m:g} m,"
        f" {args.defect_rate:g} stray defects per frame ({time.monotonic() - started:.0f} s)"
    )
    print(
        f"roll-mark recall: {sum(o.found for o in marked)}/{len(marked)} marked strips raised"
        " the roll's alert"
    )
    print(f"false roll alerts: {sum(o.found for o in clean)}/{len(clean)} clean strips raised a roll alert")
    print(
        f"marks the model saw: {seen}/{marks} ({seen / marks:.1%}) printed marks flagged as {args.mark_class}"
    )
    missed = [i + 1 for i, o in enumerate(marked) if not o.found]
    if missed:
        print(f"seeds of the marked strips missed: {missed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
