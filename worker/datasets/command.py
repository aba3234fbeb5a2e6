"""`steel-worker dataset`: turn labelled images (or the synthetic generator) into a tile set."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import ConfigError
from worker.datasets.folders import iter_folder_tiles, scan_folders
from worker.datasets.labelled import (
    DEFAULT_MIN_PIXELS,
    DEFAULT_TILE,
    LabelledTile,
    parse_class_map,
    write_tileset,
)
from worker.datasets.severstal import iter_severstal_tiles
from worker.datasets.synthetic import DEFAULT_DEFECT_RATE, iter_synthetic_tiles
from worker.datasets.voc import iter_voc_tiles, scan_voc

FORMATS = ("severstal", "folders", "voc", "synthetic", "reviews")

_DESCRIPTION = f"""\
Write a tile set (DIR/labels.csv, DIR/catalogue.json, DIR/tiles/*.png) from a labelled data set.
Frames are cut into TILE×TILE tiles covering every pixel (tiles overlap where a side is not a
multiple of the tile; a 1600-px side gives 7 tiles of 256). At the end the command prints the
number of tiles per class and per label combination.

Formats:
  severstal  SOURCE/train.csv (ImageId,ClassId,EncodedPixels or ImageId_ClassId,EncodedPixels) and
             SOURCE/train_images/. Kaggle RLE masks (1-indexed, column-major). A class is on a tile
             when its mask covers >= --min-pixels pixels of it (default {DEFAULT_MIN_PIXELS}: 0.1 % of
             a 256-px tile, drops slivers cut off by a tile edge, keeps any whole small spot). Images
             without rows are defect-free. ClassIds map to catalogue names with --class-map.
  folders    SOURCE/<class>/*.png|jpg|jpeg|bmp|tif|tiff, one folder per class, plus an optional
             folder of defect-free images (--clean-folder, default `clean` if present). Colour,
             16-bit, mixed sizes and mixed formats are fine (read as 8-bit grey). Folder names may
             be the plant's own ("Rolled-in Scale", "Écaillage"): each becomes a class name by the
             slug rule below and stays the class's display name (reports, alerts, the console).
             Without --catalogue the paper's catalogue is used if it names every folder's slug,
             else one is built from the folder names; with one, every folder must match a class
             by name, slug or display name.
             A data set that comes split, SOURCE/train/, SOURCE/valid/ (or val/, validation/) and
             SOURCE/test/, each holding class folders, needs --keep-split: the tile set keeps that
             split (DIR/split.json), `train` trains and validates on it and `evaluate` tests on its
             test part. Without --keep-split such a layout is refused, so that train/ and test/
             are never taken for classes; to ignore the split, import one part at a time.
  voc        Pascal VOC: SOURCE/images/ + SOURCE/annotations/*.xml (the NEU-DET layout); an
             image's classes are its boxes' <name>s. Without --catalogue, one is built from the
             class names found (sorted).
  synthetic  the project's generator of rolled-steel frames (holes, scratches, rolling); needs a
             catalogue with those three names (the default has them). No --source.
  reviews    the crops people reviewed in the web console, from the defect database
             (--database-url, default $DATABASE_URL; a read-only login is enough). One tile per
             reviewed crop, labelled with its newest review's classes; a rejected crop becomes a
             clean tile. The catalogue is the database's defect_classes (or --catalogue). Reviews
             whose crop was pruned are skipped and counted. No --source; --tile and --min-pixels
             do not apply (the crops are stored tiles).

Images whose shorter side is below the tile (folders, voc) are resized up, aspect kept, so that
side equals the tile: NEU-DET's 200×200 images become single 256×256 tiles.

Slug rule (folder name → class name): a name that already is a class name (a-z first, then a-z,
0-9, '_', '-'; at most 64 characters) is kept; otherwise Unicode NFKD, accents dropped, case
folded, every run of other characters → '_', '_'/'-' trimmed at both ends, "c_" before a leading
digit, cut to 64 characters. "Rolled-in Scale" → rolled-in_scale, "pitted surface" →
pitted_surface, "Écaillage" → ecaillage, "3 mm holes" → c_3_mm_holes. A name with no letter or
digit left ("..", "???", most non-Latin scripts) is refused: rename the folder or pass a
--catalogue whose display name is the folder name. Two folders with the same slug ("Pitted
Surface" and "pitted_surface") are refused, naming both.
"""

_EPILOG = """\
examples:
  steel-worker dataset --format synthetic --frames 200 --seed 1 --out data/synthetic
  steel-worker dataset --format severstal --source ~/kaggle/severstal --out data/severstal \\
      --class-map 1=holes,3=scratches,4=rolling --min-pixels 64
  steel-worker dataset --format voc --source ../shared/data/neu-det --out data/neu
  steel-worker dataset --format folders --source plant-images/ --clean-folder ok --out data/plant
  steel-worker dataset --format folders --source kaggle-set/ --keep-split --out data/kaggle
  steel-worker dataset --format reviews --database-url postgresql://analyst@db/defects --out data/reviewed
"""


def register(subparsers: Any) -> None:
    """Add the `dataset` subcommand."""
    parser = subparsers.add_parser(
        "dataset",
        help="build a tile set from Severstal, class folders, Pascal VOC, synthetic frames, or reviews",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="input layout (see above)")
    parser.add_argument("--source", type=Path, help="input folder (all formats except synthetic and reviews)")
    parser.add_argument("--out", type=Path, required=True, help="tile set directory to write (new or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, replacing a tile set there (default: refuse)",
    )
    parser.add_argument(
        "--catalogue",
        type=Path,
        help="class catalogue JSON (default: the paper's Table 1; for folders/voc see above)",
    )
    parser.add_argument(
        "--tile", type=int, default=DEFAULT_TILE, help="tile side in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=DEFAULT_MIN_PIXELS,
        help="pixels of a class's mask (severstal, synthetic) or box (voc) a tile must hold to get"
        " the class (default: %(default)s)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar (default: shown)"
    )
    sev = parser.add_argument_group("severstal")
    sev.add_argument(
        "--class-map",
        default="1=holes,3=scratches,4=rolling",
        help="Severstal ClassId=catalogue name pairs; unlisted ClassIds are dropped (default: %(default)s)",
    )
    fold = parser.add_argument_group("folders")
    fold.add_argument(
        "--clean-folder",
        metavar="NAME",
        help="sub-folder of defect-free images (default: `clean` when it exists)",
    )
    fold.add_argument(
        "--keep-split",
        action="store_true",
        help="SOURCE holds train/, valid/ (or val/, validation/) and test/, each with class folders:"
        " keep that split for train and evaluate (default: refuse such a layout)",
    )
    syn = parser.add_argument_group("synthetic")
    syn.add_argument("--frames", type=int, default=100, help="frames to generate (default: %(default)s)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    syn.add_argument(
        "--frame-width", type=int, default=1600, help="columns, across the strip (default: %(default)s)"
    )
    syn.add_argument(
        "--frame-height", type=int, default=256, help="rows, along the strip (default: %(default)s)"
    )
    syn.add_argument(
        "--defect-rate",
        type=float,
        default=None,
        help="mean defects per 256×1600 frame (default: the generator's, about 80 %% clean tiles)",
    )
    rev = parser.add_argument_group("reviews")
    rev.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL of the defect database (default: $DATABASE_URL)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import, write the tile set, print the counts table. Failures raise SteelWorkerErrors."""
    if args.tile < 8:
        raise ConfigError(f"--tile must be at least 8 pixels, received {args.tile}")
    if args.min_pixels < 1:
        raise ConfigError(f"--min-pixels must be at least 1, received {args.min_pixels}")
    if args.format not in {"synthetic", "reviews"} and args.source is None:
        raise ConfigError(f"--source is required for --format {args.format}")
    if args.keep_split and args.format != "folders":
        raise ConfigError(f"--keep-split applies to --format folders only, received --format {args.format}")
    progress = not args.no_progress
    catalogue = load_catalogue(args.catalogue) if args.catalogue is not None else None
    if args.format == "reviews":
        return _run_reviews(args, catalogue)
    tiles: Iterator[LabelledTile]

    if args.format == "severstal":
        catalogue = catalogue or load_catalogue()
        tiles = iter_severstal_tiles(
            args.source,
            catalogue,
            tile=args.tile,
            min_pixels=args.min_pixels,
            class_map=parse_class_map(args.class_map),
            progress=progress,
        )
    elif args.format == "folders":
        folder_set = scan_folders(args.source, catalogue, args.clean_folder, keep_split=args.keep_split)
        catalogue = folder_set.catalogue
        tiles = iter_folder_tiles(folder_set, tile=args.tile, progress=progress)
    elif args.format == "voc":
        voc_set = scan_voc(args.source, catalogue)
        catalogue = voc_set.catalogue
        tiles = iter_voc_tiles(voc_set, tile=args.tile, min_pixels=args.min_pixels, progress=progress)
    else:
        catalogue = catalogue or load_catalogue()
        tiles = iter_synthetic_tiles(
            catalogue,
            frames=args.frames,
            seed=args.seed,
            tile=args.tile,
            min_pixels=args.min_pixels,
            frame_height=args.frame_height,
            frame_width=args.frame_width,
            defect_rate=DEFAULT_DEFECT_RATE if args.defect_rate is None else args.defect_rate,
            progress=progress,
        )
    summary = write_tileset(tiles, args.out, catalogue, overwrite=args.overwrite)
    print(summary.table())
    return 0


def _run_reviews(args: argparse.Namespace, catalogue: Catalogue | None) -> int:
    """The reviewed crops of the defect database as a tile set (worker.console.reviewed)."""
    from worker.console.reviewed import write_reviewed_tileset  # noqa: PLC0415  (database code)

    if not args.database_url:
        raise ConfigError(
            "steel-worker dataset --format reviews: no database; set DATABASE_URL or pass --database-url"
        )
    summary = write_reviewed_tileset(
        args.database_url, args.out, overwrite=args.overwrite, catalogue=catalogue
    )
    print(summary.table())
    return 0
