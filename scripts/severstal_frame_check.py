"""Frame-level check of a model on Severstal frames that carry only frame-level labels.

Severstal's sample frames (`labels.csv`: ImageId,c1,c2,c3,c4,defect_free) say which ClassIds occur
somewhere in a frame, not where. This script tiles each frame with the model's own tiling, takes a
frame's score for a class as the highest score of its tiles, maps Severstal ClassIds to catalogue
classes (the paper's mapping by default: 1 → holes, 3 → scratches, 4 → rolling; ClassId 2 is not
in the paper's catalogue and is ignored), and writes a scores CSV that `steel-worker evaluate
--scores` judges with the model's thresholds:

    python scripts/severstal_frame_check.py --model MODEL_DIR --source ../shared/data/severstal-samples \
        --out reports/severstal-frames
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from worker.cli import main as cli_main
from worker.core.errors import DatasetError
from worker.datasets.severstal import DEFAULT_CLASS_MAP
from worker.inference import Inferencer
from worker.model.predict_command import predict_images


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model artefact directory")
    parser.add_argument("--source", type=Path, required=True, help="folder with labels.csv and images/")
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    args = parser.parse_args()

    labels_path = args.source / "labels.csv"
    if not labels_path.is_file():
        raise DatasetError(f"{labels_path} is missing; expected ImageId,c1,c2,c3,c4,defect_free")
    with open(labels_path, newline="", encoding="utf-8") as f:
        frames = list(csv.DictReader(f))
    inferencer = Inferencer.load_model(args.model)
    names = inferencer.catalogue.names
    class_map = {f"c{cid}": name for cid, name in DEFAULT_CLASS_MAP.items() if name in names}
    rows = predict_images(inferencer, [args.source / "images" / r["ImageId"] for r in frames])

    best: dict[str, dict[str, float]] = {}
    for row in rows:
        scores = best.setdefault(Path(row["image"]).name, dict.fromkeys(names, 0.0))
        for name, p in row["probabilities"].items():
            scores[name] = max(scores[name], float(p))
    args.out.mkdir(parents=True, exist_ok=True)
    scores_csv = args.out / "frame-scores.csv"
    with open(scores_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "frame",
                *(f"label_{n}" for n in class_map.values()),
                *(f"score_{n}" for n in class_map.values()),
            ]
        )
        for r in frames:
            writer.writerow(
                [
                    r["ImageId"],
                    *(int(r[column]) for column in class_map),
                    *(f"{best[r['ImageId']][n]:.6f}" for n in class_map.values()),
                ]
            )
    thresholds = ",".join(f"{n}={inferencer.thresholds.by_name()[n]:.4f}" for n in class_map.values())
    print(f"{len(frames)} frames, {len(rows)} tiles; scores in {scores_csv}", file=sys.stderr)
    return cli_main(
        ["evaluate", "--scores", str(scores_csv), "--thresholds", thresholds, "--out", str(args.out)]
    )


if __name__ == "__main__":
    sys.exit(main())
