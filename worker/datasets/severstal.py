"""Severstal: Steel Defect Detection (Kaggle) → labelled tiles.

Input: a folder with `train.csv` and `train_images/`. `train.csv` comes in either public layout:
    ImageId,ClassId,EncodedPixels          (one row per image and present class)
    ImageId_ClassId,EncodedPixels          (first release: `0002cc93b.jpg_1`, empty when absent)
`EncodedPixels` is Kaggle's run-length encoding: space-separated pairs `start length`, starts
1-indexed, pixels numbered top to bottom then left to right (column-major, Fortran order) over the
256×1600 frame. Images in `train_images/` without a row are defect-free.

Labels: ClassIds are mapped to catalogue names (default 1→holes, 3→scratches, 4→rolling, the
paper's mapping; ClassId 2 has no class in the paper's catalogue and is dropped). A class is present
in a tile when its mask covers at least `min_pixels` pixels of the tile (default 64, see
`DEFAULT_MIN_PIXELS`). Every frame is cut so that every pixel lies in some tile (tiles overlap where
the width is not a multiple of the tile).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worker.core.catalogue import Catalogue
from worker.core.errors import DatasetError
from worker.core.tiling import cut_tiles, pad_to_tile, tile_windows
from worker.datasets.labelled import (
    DEFAULT_MIN_PIXELS,
    DEFAULT_TILE,
    LabelledTile,
    list_images,
    read_grey,
    tile_labels,
)

SEVERSTAL_HEIGHT = 256
SEVERSTAL_WIDTH = 1600
DEFAULT_CLASS_MAP: dict[int, str] = {1: "holes", 3: "scratches", 4: "rolling"}
TRAIN_CSV = "train.csv"
TRAIN_IMAGES = "train_images"


def rle_decode(rle: str, height: int = SEVERSTAL_HEIGHT, width: int = SEVERSTAL_WIDTH) -> np.ndarray:
    """Decode Kaggle's run-length encoding into a boolean (height, width) mask.

    `rle` is `start length start length ...`, starts 1-indexed in column-major order; an empty
    string is an empty mask. DatasetError for an odd number of values, non-integers, starts < 1,
    lengths < 1, or runs past the last pixel.
    """
    values = rle.split()
    total = height * width
    if not values:
        return np.zeros((height, width), dtype=bool)
    if len(values) % 2:
        raise DatasetError(
            "malformed RLE: expected pairs of 'start length',"
            f" received an odd number of values ({len(values)})"
        )
    parsed: list[int] = []
    for v in values:
        try:
            parsed.append(int(v))
        except ValueError:
            raise DatasetError(f"malformed RLE: expected integers, received {v!r}") from None
    if max(parsed) > total or min(parsed) < -total:  # also keeps huge values out of int64
        raise DatasetError(
            f"malformed RLE: value {max(parsed, key=abs)} is beyond the {height}×{width} image"
            f" ({total} pixels)"
        )
    numbers = np.array(parsed, dtype=np.int64)
    starts, lengths = numbers[0::2], numbers[1::2]
    if (starts < 1).any():
        raise DatasetError(f"malformed RLE: starts are 1-indexed, received start {int(starts.min())}")
    if (lengths < 1).any():
        raise DatasetError(f"malformed RLE: run lengths must be positive, received {int(lengths.min())}")
    ends = starts - 1 + lengths  # exclusive, 0-indexed
    if (ends > total).any():
        i = int(np.argmax(ends > total))
        raise DatasetError(
            f"malformed RLE: run '{starts[i]} {lengths[i]}' ends at pixel {ends[i]}, beyond the"
            f" {height}×{width} image ({total} pixels)"
        )
    edges = np.zeros(total + 1, dtype=np.int32)
    np.add.at(edges, starts - 1, 1)
    np.add.at(edges, ends, -1)
    flat = np.cumsum(edges[:-1]) > 0
    return flat.reshape((height, width), order="F")


def read_train_csv(path: Path) -> dict[str, dict[int, list[str]]]:
    """Parse train.csv in either layout: {image id: {class id: [rle, ...]}}, empty RLEs dropped.

    DatasetError when the file is missing, has an unknown header, or a row is malformed.
    """
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; a Severstal folder needs {TRAIN_CSV} and {TRAIN_IMAGES}/")
    rows: dict[str, dict[int, list[str]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header == ["ImageId", "ClassId", "EncodedPixels"]:
            combined = False
        elif header == ["ImageId_ClassId", "EncodedPixels"]:
            combined = True
        else:
            raise DatasetError(
                f"{path}: expected header 'ImageId,ClassId,EncodedPixels' or"
                f" 'ImageId_ClassId,EncodedPixels', received {','.join(header)!r}"
            )
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetError(f"{path}:{line_no}: expected {len(header)} columns, received {len(row)}")
            if combined:
                image_id, _, class_text = row[0].rpartition("_")
                rle = row[1]
            else:
                image_id, class_text, rle = row
            if not image_id or not class_text.strip().isdigit():
                raise DatasetError(
                    f"{path}:{line_no}: expected an image id and an integer class id, received {row}"
                )
            if rle.strip():
                rows.setdefault(image_id.strip(), {}).setdefault(int(class_text), []).append(rle)
    return rows


def check_class_map(class_map: Mapping[int, str], catalogue: Catalogue) -> None:
    """DatasetError when the class map sends a ClassId to a name the catalogue lacks."""
    missing = sorted({name for name in class_map.values() if name not in catalogue.names})
    if missing:
        raise DatasetError(
            f"class map {dict(class_map)} names classes {missing} that are not in catalogue"
            f" {catalogue.name!r}; expected names from {list(catalogue.names)}"
        )


def frame_masks(
    rles: Mapping[int, list[str]], class_map: Mapping[int, str], height: int, width: int, image_id: str
) -> dict[str, np.ndarray]:
    """Decode one image's RLEs into a mask per catalogue name (ClassIds not in the map dropped).

    Every RLE is decoded, also for dropped ClassIds, so malformed input never passes unnoticed.
    """
    masks: dict[str, np.ndarray] = {}
    for class_id, encodings in sorted(rles.items()):
        for rle in encodings:
            try:
                mask = rle_decode(rle, height, width)
            except DatasetError as exc:
                raise DatasetError(f"{TRAIN_CSV}, image {image_id}, ClassId {class_id}: {exc}") from None
            name = class_map.get(class_id)
            if name is not None:
                masks[name] = masks[name] | mask if name in masks else mask
    return masks


def iter_severstal_tiles(
    source: str | Path,
    catalogue: Catalogue,
    *,
    tile: int = DEFAULT_TILE,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    class_map: Mapping[int, str] | None = None,
    progress: bool = True,
) -> Iterator[LabelledTile]:
    """The labelled tiles of every image in `source/train_images`, sorted by name (lazily).

    The file and class-map checks run at once, before the first tile. DatasetError for a missing
    train.csv or train_images/, a class map naming classes the catalogue lacks, or a data set
    without images (at once); for malformed RLE or an unreadable image, also one named in train.csv
    but absent (when that image's turn comes).
    """
    root = Path(source)
    mapping = dict(DEFAULT_CLASS_MAP if class_map is None else class_map)
    check_class_map(mapping, catalogue)
    rows = read_train_csv(root / TRAIN_CSV)
    images_dir = root / TRAIN_IMAGES
    if not images_dir.is_dir():
        raise DatasetError(
            f"{images_dir} does not exist; a Severstal folder needs {TRAIN_CSV} and {TRAIN_IMAGES}/"
        )
    paths = {p.name: p for p in list_images(images_dir)}
    for image_id in rows:
        paths.setdefault(image_id, images_dir / image_id)  # a labelled image that is absent fails on read
    if not paths:
        raise DatasetError(f"{root}: empty data set, no images in {images_dir} and no rows in {TRAIN_CSV}")
    return _severstal_tiles(paths, rows, mapping, tile, min_pixels, progress)


def _severstal_tiles(  # noqa: PLR0917  (private; called once, positionally)
    paths: Mapping[str, Path],
    rows: Mapping[str, Mapping[int, list[str]]],
    mapping: Mapping[int, str],
    tile: int,
    min_pixels: int,
    progress: bool,
) -> Iterator[LabelledTile]:
    for image_id in tqdm(sorted(paths), desc="severstal", unit="image", disable=not progress):
        image = read_grey(paths[image_id])
        height, width = image.shape
        masks = frame_masks(rows.get(image_id, {}), mapping, height, width, image_id)
        # Masks are padded like the image, so a padded tile's labels describe the pixels it shows.
        image = pad_to_tile(image, tile)
        masks = {n: pad_to_tile(m.astype(np.uint8), tile).astype(bool) for n, m in masks.items()}
        windows = tile_windows(image.shape[0], image.shape[1], tile)
        labels = tile_labels(masks, windows, min_pixels)
        for window, pixels, classes in zip(windows, cut_tiles(image, windows), labels, strict=True):
            yield LabelledTile(pixels, image_id, window.x, window.y, frozenset(classes))
