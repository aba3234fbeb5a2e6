"""The tile set on disk: what `steel-worker dataset` writes and `train`/`evaluate` read.

Layout of a tile set directory:
    labels.csv      one row per tile: tile (path relative to the directory), source (the original
                    image's name), x, y (the tile's top-left corner in the source, pixels), then one
                    0/1 column per class, named and ordered as in the catalogue
    catalogue.json  the class catalogue the labels refer to
    tiles/          the tile images (8-bit grey PNG)
    split.json      optional: a split the data set came with (`dataset --format folders --keep-split`),
                    {"train": [tile paths], "validation": [...], "test": [...]}, every tile of
                    labels.csv in exactly one part. `train` uses it instead of making a random split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker.core.catalogue import Catalogue, load_catalogue, save_catalogue
from worker.core.errors import DatasetError

LABELS_FILE = "labels.csv"
CATALOGUE_FILE = "catalogue.json"
TILES_DIR = "tiles"
SPLIT_FILE = "split.json"
SPLIT_PARTS = ("train", "validation", "test")
_FIXED_COLUMNS = ("tile", "source", "x", "y")


@dataclass(frozen=True)
class TileSet:
    """A tile set in memory: paths and label matrix, rows aligned. Images stay on disk."""

    root: Path
    catalogue: Catalogue
    tiles: tuple[str, ...]
    sources: tuple[str, ...]
    origins: np.ndarray  # (n, 2) int: x, y
    labels: np.ndarray  # (n, n_classes) uint8 0/1, columns in catalogue order
    given_split: Mapping[str, tuple[str, ...]] | None = None
    """Part → tile paths, from the tile set's split.json (the split its data set came with); None
    when it has none. Subsets do not carry it."""

    def __len__(self) -> int:
        return len(self.tiles)

    def path(self, i: int) -> Path:
        return self.root / self.tiles[i]

    def subset(self, indices: np.ndarray | list[int]) -> TileSet:
        idx = np.asarray(indices, dtype=int)
        return TileSet(
            root=self.root,
            catalogue=self.catalogue,
            tiles=tuple(self.tiles[i] for i in idx),
            sources=tuple(self.sources[i] for i in idx),
            origins=self.origins[idx],
            labels=self.labels[idx],
        )


class TileSetWriter:
    """Writes tiles and their labels; `close()` (or leaving the `with` block) writes labels.csv.

    Guarantees: tile names are unique; labels.csv is written only when the writer closes without an
    exception, so a failed import never leaves a tile set that looks complete.
    """

    def __init__(self, out_dir: str | Path, catalogue: Catalogue) -> None:
        self.root = Path(out_dir)
        self.catalogue = catalogue
        (self.root / TILES_DIR).mkdir(parents=True, exist_ok=True)
        self._rows: list[list[str | int]] = []
        self._names: set[str] = set()
        self._parts: dict[str, list[str]] = {part: [] for part in SPLIT_PARTS}
        self._without_part: list[str] = []

    def add(
        self,
        tile: np.ndarray,
        source: str,
        x: int,
        y: int,
        classes: set[str] | list[str],
        *,
        part: str | None = None,
    ) -> str:
        """Save one tile image and remember its row (and its split part, if given); returns the
        tile's relative path. Either every tile has a part or none has (checked on close)."""
        if part is not None and part not in SPLIT_PARTS:
            raise DatasetError(
                f"tile of {source!r}: split part must be one of {list(SPLIT_PARTS)}, received {part!r}"
            )
        positives = set(classes)
        for name in positives:
            self.catalogue.index(name)  # raises CatalogueError for an unknown class
        stem = Path(source).stem
        name = f"{TILES_DIR}/{stem}_x{x}_y{y}.png"
        if name in self._names:
            raise DatasetError(f"tile {name} was added twice (source {source!r} at x={x}, y={y})")
        if not cv2.imwrite(str(self.root / name), tile):
            raise DatasetError(f"could not write tile image {self.root / name}")
        self._names.add(name)
        (self._parts[part] if part is not None else self._without_part).append(name)
        self._rows.append([name, source, x, y, *(1 if c in positives else 0 for c in self.catalogue.names)])
        return name

    def __len__(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        if not self._rows:
            raise DatasetError(f"tile set {self.root}: no tiles were written (empty data set)")
        given = any(self._parts.values())
        if given:
            if self._without_part:
                raise DatasetError(
                    f"tile set {self.root}: {len(self._without_part)} tiles have no split part (first:"
                    f" {self._without_part[0]}) while others have one; expected a part for every tile or none"
                )
            empty = [part for part, names in self._parts.items() if not names]
            if empty:
                raise DatasetError(f"tile set {self.root}: the given split has no tiles in {empty}")
            text = json.dumps(self._parts, indent=1) + "\n"
            (self.root / SPLIT_FILE).write_text(text, encoding="utf-8")
        save_catalogue(self.catalogue, self.root / CATALOGUE_FILE)
        with open(self.root / LABELS_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*_FIXED_COLUMNS, *self.catalogue.names])
            writer.writerows(self._rows)

    def __enter__(self) -> TileSetWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()


def read_tileset(root: str | Path) -> TileSet:
    """Load a tile set's labels; DatasetError names the file and row that is wrong."""
    root = Path(root)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise DatasetError(f"{root} is not a tile set: {LABELS_FILE} is missing")
    catalogue = load_catalogue(root / CATALOGUE_FILE) if (root / CATALOGUE_FILE).is_file() else None
    with open(labels_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:4]) != _FIXED_COLUMNS or len(header) < 5:
            raise DatasetError(
                f"{labels_path}: expected header {','.join(_FIXED_COLUMNS)},<class>..., received {header}"
            )
        class_names = header[4:]
        if catalogue is None:
            catalogue = Catalogue.from_names(class_names)
        missing = [n for n in class_names if n not in catalogue.names]
        if missing:
            raise DatasetError(
                f"{labels_path}: label columns {missing} are not in the catalogue {list(catalogue.names)}"
            )
        order = [class_names.index(n) if n in class_names else -1 for n in catalogue.names]
        tiles, sources, origins, labels = [], [], [], []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise DatasetError(
                    f"{labels_path}:{line_no}: expected {len(header)} columns, received {len(row)}"
                )
            try:
                values = [int(v) for v in row[4:]]
                x, y = int(row[2]), int(row[3])
            except ValueError:
                raise DatasetError(f"{labels_path}:{line_no}: x, y and labels must be integers") from None
            if any(v not in (0, 1) for v in values):
                raise DatasetError(f"{labels_path}:{line_no}: labels must be 0 or 1, received {values}")
            tiles.append(row[0])
            sources.append(row[1])
            origins.append((x, y))
            labels.append([values[j] if j >= 0 else 0 for j in order])
    if not tiles:
        raise DatasetError(f"{labels_path}: the tile set is empty")
    given_split = read_given_split(root, tiles) if (root / SPLIT_FILE).is_file() else None
    return TileSet(
        root=root,
        catalogue=catalogue,
        tiles=tuple(tiles),
        sources=tuple(sources),
        origins=np.asarray(origins, dtype=int).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.uint8).reshape(-1, len(catalogue)),
        given_split=given_split,
    )


def read_given_split(root: Path, tiles: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The tile set's split.json; DatasetError unless it puts every tile of labels.csv in exactly
    one of train, validation and test, each part non-empty."""
    path = root / SPLIT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: expected JSON, {exc}") from None
    if not isinstance(data, dict) or set(data) != set(SPLIT_PARTS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: expected an object with exactly {list(SPLIT_PARTS)}, received {found}")
    parts: dict[str, tuple[str, ...]] = {}
    for part in SPLIT_PARTS:
        value = data[part]
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise DatasetError(f"{path}: {part!r} must be a non-empty list of tile paths")
        parts[part] = tuple(value)
    counts: dict[str, int] = {}
    for names in parts.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    twice = sorted(n for n, c in counts.items() if c > 1)
    if twice:
        raise DatasetError(f"{path}: tile {twice[0]} is in more than one part")
    listed = set(tiles)
    unknown = sorted(set(counts) - listed)
    if unknown:
        raise DatasetError(f"{path}: tile {unknown[0]} is not in {LABELS_FILE} ({len(unknown)} such tiles)")
    missing = [t for t in tiles if t not in counts]
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} tiles of {LABELS_FILE} are in no part (first: {missing[0]}); add them"
            f" to a part of {SPLIT_FILE}, or remove {SPLIT_FILE} to let `train` make a random split"
        )
    return parts


def read_tile(path: str | Path) -> np.ndarray:
    """Read one tile as 8-bit grey (H, W); DatasetError if it is missing or unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing, unreadable or not an image")
    return image
