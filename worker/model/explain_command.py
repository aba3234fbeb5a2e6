"""`steel-worker explain`: Grad-CAM heat maps of a model's classes on the tiles of image files.

Images are cut into tiles and scored by the one inference path (`worker.inference.Inferencer`,
as `predict` does); the maps come from `worker.model.explain` (the closed-form Grad-CAM of the
pooled sigmoid head). For each tile and each class over its threshold (or each class named with
`--class`) two files are written, and every one is listed in the index:

    OUT/index.json, OUT/index.csv              model, version, thresholds; one row per map
    OUT/<image stem>/x<X>_y<Y>_<class>.png     the map painted over the tile (JET, 45 %)
    OUT/<image stem>/x<X>_y<Y>_<class>.npy     the map itself: float32 (tile, tile) in [0, 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

INDEX_JSON = "index.json"
INDEX_CSV = "index.csv"
#: `worker.inference.DEFAULT_TILE`, spelled out so that `--help` imports no Keras.
DEFAULT_TILE = 256

EPILOG = """\
examples:
  steel-worker explain --model models/neu --out maps/ frames/strip-0042.png
      for every 256×256 tile and every class found on it (score >= the class's threshold stored
      in the model): the heat map over the tile (PNG) and the map itself (NPY)
  steel-worker explain --model models/neu --out maps/ --class scratches --class holes frames/*.png
      the maps of these classes on every tile, found there or not (where would the model look?)

what is written into --out:
  index.json, index.csv              one row per map: image, tile x and y, class, score, threshold,
                                     over_threshold, and the two files (paths relative to --out);
                                     index.json also holds the model's version and thresholds
  <image stem>/x00224_y00000_scratches.png   the tile (grey) with the map painted over it
  <image stem>/x00224_y00000_scratches.npy   the map: float32, the tile's size, values in [0, 1]
  (x, y: the tile's origin in the image, in pixels; two images with one stem get <stem>-2, ...)

reading a map: Grad-CAM (here exact, in closed form, for the network's pooled sigmoid head) shows
where on the tile the features that raise the class's score are; 1 is the tile's hottest place, and
a map that is all 0 means nothing on the tile raises that class. The maps are relative: a hot spot on
a tile scored 0.02 is only where the model would look, not a defect. Scores are those of `predict`
without test-time augmentation (a map explains one forward pass, not a mean over flipped views).

Images are read as 8-bit grey, padded (reflected) up to one tile where smaller, and cut into tiles
that cover every pixel (overlapping where a side is not a multiple of the tile), exactly as the
worker and `predict` cut them. A progress line per image goes to stderr.
"""


@dataclass(frozen=True)
class MapFile:
    """One row of the index: a class's map on one tile of one image, and where it was written."""

    image: str
    x: int
    y: int
    class_name: str
    score: float
    threshold: float
    over_threshold: bool
    overlay: str  # PNG, relative to the output folder
    heat: str  # NPY, relative to the output folder


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM heat maps: where on each tile the model saw each class",
        description=(
            "Cut images into tiles like `predict`, and write for each tile and each class over its\n"
            "threshold (or each --class) the Grad-CAM heat map over the tile (PNG), the map (NPY),\n"
            "and an index (JSON and CSV) of every map with its score and threshold."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model artefact directory")
    p.add_argument("--out", type=Path, required=True, metavar="OUT_DIR", help="folder for maps and index")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME",
        help="map this class on every tile, over its threshold or not (repeat for several; default:"
        " each class over its threshold, on the tiles where it is)",
    )
    p.add_argument(
        "--tile", type=int, default=DEFAULT_TILE, metavar="PX", help="tile side in pixels (default: 256)"
    )
    p.add_argument(
        "--overlap", type=int, default=0, metavar="PX", help="minimum overlap of tiles (default: 0)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="tiles per forward pass (default: 32)")
    p.set_defaults(func=run)


def safe_stem(path: Path) -> str:
    """The image's file stem with anything but letters, digits, '.', '-' and '_' replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "image"


def _folders(images: list[Path]) -> list[str]:
    """One output folder name per image: its safe stem, with -2, -3, ... for repeated stems."""
    seen: dict[str, int] = {}
    names = []
    for path in images:
        stem = safe_stem(path)
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def read_images(images: list[Path]) -> None:
    """Check that every image can be read as grey, before anything is loaded or written;
    DatasetError naming the first that cannot."""
    import cv2  # noqa: PLC0415

    from worker.core.errors import DatasetError  # noqa: PLC0415

    for path in images:
        if not path.is_file():
            raise DatasetError(f"image {path} does not exist (or is not a file)")
        if cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) is None:
            raise DatasetError(f"cannot read image {path}: unreadable or not an image")


def check_classes(classes: list[str] | None, names: tuple[str, ...]) -> list[str] | None:
    """The --class names, each once in the order given; ConfigError for a name the model lacks."""
    from worker.core.errors import ConfigError  # noqa: PLC0415

    if classes is None:
        return None
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ConfigError(
            f"--class: the model has no class {unknown[0]!r}; its classes are {', '.join(names)}"
        )
    return list(dict.fromkeys(classes))


def explain_images(
    inferencer: Any,
    images: list[Path],
    out_dir: Path,
    classes: list[str] | None = None,
    *,
    log: Any = None,
) -> list[MapFile]:
    """Write the maps of `images` into `out_dir` (see the module doc) and return the index rows.

    `inferencer`: a `worker.inference.Inferencer` whose classifier is a loaded artefact
    (`worker.model.artefact.Classifier`); `classes`: map these classes on every tile (default:
    each class on the tiles where it is over its threshold); `log`: one line per image."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from worker.core.errors import DatasetError  # noqa: PLC0415
    from worker.model.explain import overlay, tile_maps  # noqa: PLC0415

    names: tuple[str, ...] = inferencer.catalogue.names
    thresholds = inferencer.thresholds.array
    rows: list[MapFile] = []
    for number, (path, folder) in enumerate(zip(images, _folders(images), strict=True), start=1):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"cannot read image {path}: unreadable or not an image")
        predicted = inferencer.predict(image)  # the worker's path: tiles, scores, decisions
        wanted = [
            [n for n, hit in zip(names, hits, strict=True) if hit] if classes is None else classes
            for hits in predicted.decisions
        ]
        chosen = [n for n in names if any(n in w for w in wanted)]
        maps = tile_maps(inferencer.classifier, predicted.tiles.pixels, chosen) if chosen else {}
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        made: dict[str, int] = {}
        for i, window in enumerate(predicted.tiles.windows):
            for name in wanted[i]:
                c = names.index(name)
                base = f"{folder}/x{window.x:05d}_y{window.y:05d}_{name}"
                heat = maps[name][i]
                png = out_dir / f"{base}.png"
                if not cv2.imwrite(str(png), overlay(predicted.tiles.pixels[i], heat)):
                    raise DatasetError(f"cannot write {png}")
                np.save(out_dir / f"{base}.npy", heat.astype(np.float32))
                rows.append(
                    MapFile(
                        image=str(path),
                        x=window.x,
                        y=window.y,
                        class_name=name,
                        score=round(float(predicted.scores[i, c]), 6),
                        threshold=float(thresholds[c]),
                        over_threshold=bool(predicted.decisions[i, c]),
                        overlay=f"{base}.png",
                        heat=f"{base}.npy",
                    )
                )
                made[name] = made.get(name, 0) + 1
        if log is not None:
            detail = ", ".join(f"{n} {k}" for n, k in made.items())
            log(
                f"explain [{number}/{len(images)}] {path}: {len(predicted.tiles.windows)} tiles,"
                f" {sum(made.values())} maps{f' ({detail})' if detail else ''} → {out_dir / folder}"
            )
    return rows


def write_index(out_dir: Path, rows: list[MapFile], document: dict[str, Any]) -> tuple[Path, Path]:
    """index.json (`document` with the rows under "maps") and index.csv (the rows) in `out_dir`."""
    records = [asdict(r) for r in rows]
    json_path, csv_path = out_dir / INDEX_JSON, out_dir / INDEX_CSV
    json_path.write_text(
        json.dumps({**document, "maps": records}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(MapFile)])
        writer.writeheader()
        writer.writerows(records)
    return json_path, csv_path


def run(args: argparse.Namespace) -> int:
    from worker.core.errors import ConfigError  # noqa: PLC0415
    from worker.inference import Inferencer  # noqa: PLC0415

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive integer, received {args.batch_size}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out: {args.out} exists and is not a folder")
    images = list(args.images)
    read_images(images)  # before the model: an unreadable image is found in a second, not a minute
    inferencer = Inferencer.load_model(
        args.model, tile_size=args.tile, min_overlap=args.overlap, batch_size=args.batch_size
    )
    classes = check_classes(args.classes, inferencer.catalogue.names)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = explain_images(
        inferencer, images, args.out, classes, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    document = {
        "model": str(args.model),
        "version": inferencer.version,
        "thresholds": inferencer.thresholds.by_name(),
        "tile": args.tile,
        "overlap": args.overlap,
        "classes": "each class over its threshold" if classes is None else classes,
        "images": [str(p) for p in images],
    }
    json_path, _ = write_index(args.out, rows, document)
    print(f"{len(rows)} maps of {len(images)} images in {args.out}; index: {json_path} (and {INDEX_CSV})")
    return 0
