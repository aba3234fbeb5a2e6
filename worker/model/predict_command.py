"""`steel-worker predict`: classify the tiles of image files with a model artefact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.model.runtimes import AUTO, RUNTIMES

EPILOG = """\
examples:
  steel-worker predict --model models/neu frames/strip-0042.png
      one line per 256×256 tile: image, x, y, each class's probability, ✓ where it reaches the
      class's threshold (stored in the model)
  steel-worker predict --model models/neu --json frames/*.png > predictions.json
      the same as JSON: model version, thresholds, and per tile the probabilities and defects

Images are read as 8-bit grey, padded (reflected) up to one tile where smaller, and cut into tiles
that cover every pixel (overlapping where a side is not a multiple of the tile); each tile is
resized to the model's input size.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify the tiles of image files with a trained model",
        description="Cut images into tiles and print each tile's class probabilities and defects.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model artefact directory")
    p.add_argument("--tile", type=int, default=256, metavar="PX", help="tile side in pixels (default: 256)")
    p.add_argument(
        "--overlap", type=int, default=0, metavar="PX", help="minimum overlap of tiles (default: 0)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="tiles per forward pass (default: 32)")
    p.add_argument(
        "--tta",
        choices=("none", "flips", "flips+rot90"),
        default="none",
        help="test-time augmentation: the mean of the scores over each tile's flips (4 views) or flips"
        " and 90° turns (8 views); slower by that factor (default: none)",
    )
    p.add_argument(
        "--runtime",
        choices=(*RUNTIMES, AUTO),
        default="tensorflow",
        help="what runs the network: Keras (tensorflow) or the model's export for OpenVINO or ONNX"
        " Runtime, fp32 or INT8, made by `steel-worker export --runtime ...`; auto: the fastest"
        " export that loads (default: tensorflow)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.set_defaults(func=run)


def predict_images(inferencer: Any, images: list[Path]) -> list[dict[str, Any]]:
    """Per tile of each image (`Inferencer.predict`, the worker's path): image, x, y, probabilities
    (by class name) and defects (names)."""
    import cv2  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from worker.core.errors import DatasetError  # noqa: PLC0415

    names = inferencer.catalogue.names
    rows: list[dict[str, Any]] = []
    for path in tqdm(images, desc="predict", unit="image", disable=None, file=sys.stderr):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"cannot read image {path}: missing, unreadable or not an image")
        predicted = inferencer.predict(image)
        for w, p, d in zip(predicted.tiles.windows, predicted.scores, predicted.decisions, strict=True):
            rows.append(
                {
                    "image": str(path),
                    "x": w.x,
                    "y": w.y,
                    "probabilities": {n: round(float(v), 6) for n, v in zip(names, p, strict=True)},
                    "defects": [n for n, hit in zip(names, d, strict=True) if hit],
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]], names: tuple[str, ...]) -> str:
    """A fixed-width table: image, x, y, then per class the probability and ✓ when over threshold."""
    width = max([len("image"), *(len(r["image"]) for r in rows)])
    columns = [max(len(n), 7) for n in names]
    lines = [
        f"{'image':<{width}} {'x':>6} {'y':>6}  "
        + "  ".join(f"{n:>{c}}" for n, c in zip(names, columns, strict=True))
    ]
    for r in rows:
        cells = [
            f"{r['probabilities'][n]:>{c - 2}.3f} {'✓' if n in r['defects'] else ' '}"
            for n, c in zip(names, columns, strict=True)
        ]
        lines.append(f"{r['image']:<{width}} {r['x']:>6} {r['y']:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from worker.inference import Inferencer  # noqa: PLC0415

    inferencer = Inferencer.load_model(
        args.model,
        tile_size=args.tile,
        min_overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        runtime=args.runtime,
    )
    rows = predict_images(inferencer, list(args.images))
    names = inferencer.catalogue.names
    if args.json:
        document = {
            "model": str(args.model),
            "version": inferencer.version,
            "runtime": getattr(inferencer.classifier, "runtime", "tensorflow"),
            "thresholds": inferencer.thresholds.by_name(),
            "tiles": rows,
        }
        print(json.dumps(document, indent=1, ensure_ascii=False))
    else:
        print(f"model {args.model} version {inferencer.version[:12]}; ✓ = probability >= class threshold")
        print(format_table(rows, names))
    return 0
