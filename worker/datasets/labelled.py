"""What every importer shares: labelled tiles, tile labels from masks, reading and sizing images,
and writing a tile set with a count of what was written.

An importer is a generator of `LabelledTile`s; `write_tileset` drains it into a `TileSetWriter`.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from worker.core.catalogue import Catalogue
from worker.core.errors import ConfigError, DatasetError
from worker.core.tileset import CATALOGUE_FILE, LABELS_FILE, SPLIT_FILE, SPLIT_PARTS, TILES_DIR, TileSetWriter
from worker.core.tiling import TileWindow

DEFAULT_TILE = 256
DEFAULT_MIN_PIXELS = 64
"""A class is present in a tile when its mask covers at least this many of the tile's pixels.

64 px is 0.1 % of a 256×256 tile: it ignores slivers of a defect that a tile edge cuts off (a few
pixels of a neighbour tile's spot), and keeps any whole defect the size of a small spot (a spot of
radius 5 px covers about 80 px).
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledTile:
    """One tile ready to be written: 8-bit grey pixels, its source image, its origin, its classes,
    and the split part its data set put it in (None: no given split)."""

    image: np.ndarray
    source: str
    x: int
    y: int
    labels: frozenset[str]
    part: str | None = None


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: frames (distinct sources), tiles, and tiles per class and per label set."""

    out_dir: Path
    catalogue: Catalogue
    frames: int
    tiles: int
    class_counts: dict[str, int] = field(default_factory=dict)
    combination_counts: dict[tuple[str, ...], int] = field(default_factory=dict)
    part_counts: dict[str, int] = field(default_factory=dict)
    """Tiles per part of a given split (empty when the data set came without one)."""

    def table(self) -> str:
        """A plain-text table: tiles per class, then tiles per label combination (most common first)."""
        lines = [f"{self.tiles} tiles from {self.frames} images in {self.out_dir}", ""]
        width = max([len("class"), *(len(n) for n in self.catalogue.names)])
        shown = self.catalogue.display_names
        named = any(shown[n] != n for n in self.catalogue.names)
        lines.append(f"{'class':<{width}}  {'tiles':>7}  {'share':>6}" + ("  display name" if named else ""))
        for name in self.catalogue.names:
            count = self.class_counts.get(name, 0)
            line = f"{name:<{width}}  {count:>7}  {_share(count, self.tiles):>6}"
            lines.append(f"{line}  {shown[name]}" if named else line)
        lines.append("")
        if self.part_counts:
            lines.append(f"{'given split':<11}  {'tiles':>7}  {'share':>6}")
            for part, count in self.part_counts.items():
                lines.append(f"{part:<11}  {count:>7}  {_share(count, self.tiles):>6}")
            lines.append("")
        combos = sorted(self.combination_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        names = ["+".join(combo) if combo else "(clean)" for combo, _ in combos]
        width = max([len("labels"), *(len(n) for n in names)])
        lines.append(f"{'labels':<{width}}  {'tiles':>7}  {'share':>6}")
        for label, (_, count) in zip(names, combos, strict=True):
            lines.append(f"{label:<{width}}  {count:>7}  {_share(count, self.tiles):>6}")
        return "\n".join(lines)


def _share(count: int, total: int) -> str:
    return f"{100.0 * count / total:5.1f}%" if total else "-"


def tile_labels(
    masks: Mapping[str, np.ndarray], windows: Sequence[TileWindow], min_pixels: int = DEFAULT_MIN_PIXELS
) -> list[set[str]]:
    """For each window, the classes whose mask covers at least `min_pixels` pixels inside it.

    `masks` maps class name to a boolean (H, W) mask of the frame the windows were cut from.
    """
    if min_pixels < 1:
        raise ConfigError(f"min_pixels must be >= 1, received {min_pixels}")
    labels: list[set[str]] = [set() for _ in windows]
    for name, mask in masks.items():
        if not mask.any():
            continue
        # Summed-area table: the count inside any window in four look-ups.
        sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
        for i, w in enumerate(windows):
            y0, x0, y1, x1 = w.y, w.x, w.y + w.size, w.x + w.size
            if sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0] >= min_pixels:
                labels[i].add(name)
    return labels


def read_grey(path: Path) -> np.ndarray:
    """Read an image file as 8-bit grey (H, W); DatasetError names the file when it cannot."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing, unreadable or not an image")
    return image


def upscale_to_tile(image: np.ndarray, tile: int) -> tuple[np.ndarray, float]:
    """Resize an image whose shorter side is below `tile` so that side becomes `tile` (aspect kept).

    Returns the image and the scale factor applied (1.0 when it was large enough). A 200×200 NEU
    image becomes 256×256 at tile 256.
    """
    height, width = image.shape[:2]
    short = min(height, width)
    if short >= tile:
        return image, 1.0
    scale = tile / short
    size = (max(tile, round(width * scale)), max(tile, round(height * scale)))  # cv2 wants (w, h)
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), scale


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by suffix, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out_dir` unless `overwrite`; with it, remove a previous tile set there.

    Only the tile set's own entries (labels.csv, catalogue.json, split.json, tiles/) are removed;
    anything else in the folder is left alone.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: expected a directory, found a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"--out {out_dir} is not empty; choose an empty or new directory, or pass --overwrite"
            )
        for name in (LABELS_FILE, CATALOGUE_FILE, SPLIT_FILE):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / TILES_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def write_tileset(
    tiles: Iterable[LabelledTile], out_dir: str | Path, catalogue: Catalogue, overwrite: bool = False
) -> ImportSummary:
    """Write every tile through a `TileSetWriter`; labels.csv appears only if all went well.

    On any failure the tiles written so far are removed again (and `out_dir`, if this call made it).
    DatasetError when no tile was produced (empty data set); CatalogueError when a tile names a
    class the catalogue lacks.
    """
    out = Path(out_dir)
    created = not out.exists()
    prepare_out_dir(out, overwrite)
    class_counts: Counter[str] = Counter()
    combos: Counter[tuple[str, ...]] = Counter()
    parts: Counter[str] = Counter()
    sources: set[str] = set()
    order = {name: i for i, name in enumerate(catalogue.names)}
    try:
        with TileSetWriter(out, catalogue) as writer:
            for t in tiles:
                writer.add(t.image, t.source, t.x, t.y, set(t.labels), part=t.part)
                sources.add(t.source)
                if t.part is not None:
                    parts[t.part] += 1
                class_counts.update(t.labels)
                combos[tuple(sorted(t.labels, key=lambda n: order.get(n, len(order))))] += 1
            count = len(writer)
    except BaseException:
        # Leave --out as it was found: no half-written tiles to trip over on the next run.
        shutil.rmtree(out / TILES_DIR, ignore_errors=True)
        (out / SPLIT_FILE).unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return ImportSummary(
        out_dir=out,
        catalogue=catalogue,
        frames=len(sources),
        tiles=count,
        class_counts={name: class_counts.get(name, 0) for name in catalogue.names},
        combination_counts=dict(combos),
        part_counts={part: parts[part] for part in SPLIT_PARTS} if parts else {},
    )


def parse_class_map(text: str) -> dict[int, str]:
    """Parse `1=holes,3=scratches` into {1: 'holes', 3: 'scratches'}; ConfigError when malformed."""
    result: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise ConfigError(
                f"--class-map: expected comma-separated ID=NAME pairs like 1=holes,3=scratches,"
                f" received {item!r} in {text!r}"
            )
        class_id = int(key)
        if class_id in result:
            raise ConfigError(f"--class-map: class id {class_id} is mapped twice in {text!r}")
        result[class_id] = name.strip()
    if not result:
        raise ConfigError(f"--class-map: expected at least one ID=NAME pair, received {text!r}")
    return result
