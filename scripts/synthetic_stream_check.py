"""Score a model artefact on a fresh synthetic stream with the demo's quality measure, no broker.

Generates `--frames` synthetic 256×1600 frames (their own seed, so none was trained on), cuts
them as the worker does, classifies every tile with the artefact's thresholds and prints what the
demo prints at its end (`worker.demo.quality`): defective tiles found with the right class, clean
tiles flagged, defective tiles with exactly their classes, per-class recall and false alarms. With
`--scale`, also the same measure at the thresholds multiplied by each factor (to see the margin):

    python scripts/synthetic_stream_check.py --model ~/.cache/steel-worker/demo-model-<digest> \
        --frames 300 --scale 0.8 0.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from worker.core.errors import SteelWorkerError
from worker.datasets.synthetic import SyntheticFrameGenerator
from worker.demo.quality import QualityReport, measure_quality, tile_truth
from worker.inference import Inferencer

TILE = 256


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model artefact directory")
    parser.add_argument("--frames", type=int, default=300, help="synthetic frames to score (7 tiles each)")
    parser.add_argument("--defect-rate", type=float, default=1.5, help="mean defects per frame (the demo's)")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the scored stream")
    parser.add_argument("--scale", type=float, nargs="*", default=[], help="also score thresholds × these")
    args = parser.parse_args()
    if args.frames < 1:
        parser.error(f"--frames: expected at least 1, received {args.frames}")
    try:
        inferencer = Inferencer.load_model(args.model, tile_size=TILE)
    except SteelWorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = list(inferencer.catalogue.names)
    generator = SyntheticFrameGenerator(args.seed, TILE, 1600, args.defect_rate)
    truth: dict[str, tuple[frozenset[str], ...]] = {}
    tiles = []
    for n in range(args.frames):
        frame = generator.next_frame()
        truth[f"f{n}"] = tile_truth(frame.masks, TILE)
        tiles.append(inferencer.pre_process(frame.image).pixels)
    scores = inferencer.forward(np.concatenate(tiles))
    thresholds = inferencer.thresholds.array
    print(f"model {inferencer.version[:12]}: {args.frames} frames, {len(scores)} tiles, seed {args.seed}")
    for factor in [1.0, *args.scale]:
        report = _score(truth, scores, thresholds * factor, names)
        print(f"\nthresholds {dict(zip(names, np.round(thresholds * factor, 3).tolist(), strict=True))}")
        print("\n".join(report.lines()))
    return 0


def _score(
    truth: dict[str, tuple[frozenset[str], ...]], scores: np.ndarray, thresholds: np.ndarray, names: list[str]
) -> QualityReport:
    detected: dict[tuple[str, int], set[str]] = {}
    row = 0
    for frame_id, labels in truth.items():
        for index in range(len(labels)):
            detected[(frame_id, index)] = {n for c, n in enumerate(names) if scores[row, c] >= thresholds[c]}
            row += 1
    return measure_quality(truth, truth.keys(), detected, names)


if __name__ == "__main__":
    sys.exit(main())
