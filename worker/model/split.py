"""The train/validation/test split, persisted in the model directory.

A tile set that came with a split (its `split.json`, written by `dataset --format folders
--keep-split`) is used as it is: the model's split.json lists the same tiles per part, with
`"given": true`. Otherwise the split is made here, deterministically: 20 % of the tiles go to
test, then 20 % of the rest to validation, each split stratified by label combination (e.g.
"holes+scratches", "clean") with scikit-learn's `train_test_split`.
Combinations too rare to be divided (fewer than `MIN_STRATUM` tiles) are merged into one
"rare" stratum; if even that cannot be divided, into the most common combination. The split is
saved as MODEL_DIR/split.json:
    {"data_dir": "/abs/path/to/tileset", "seed": 0, "given": false,
     "train": [tile paths], "validation": [...], "test": [...]}
where tile paths are as written in the tile set's labels.csv (relative to `data_dir`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.core.errors import DatasetError
from worker.core.tileset import SPLIT_PARTS, TileSet

SPLIT_FILE = "split.json"
PARTS = SPLIT_PARTS
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
MIN_STRATUM = 4  # a stratum needs a few members to appear on both sides of two successive splits
_RARE = "rare"


@dataclass(frozen=True)
class Split:
    """Tile paths per part; the parts are disjoint and together cover the tile set. `given`: the
    parts are the tile set's own (its data set came split), not made with `seed`."""

    data_dir: str
    seed: int
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    given: bool = False

    def part(self, name: str) -> tuple[str, ...]:
        if name not in PARTS:
            raise ValueError(f"split part: expected one of {list(PARTS)}, received {name!r}")
        paths: tuple[str, ...] = getattr(self, name)
        return paths

    def subset(self, tileset: TileSet, name: str) -> TileSet:
        """The rows of `tileset` in part `name`, in the split's order; DatasetError if one is missing."""
        position = {tile: i for i, tile in enumerate(tileset.tiles)}
        missing = [t for t in self.part(name) if t not in position]
        if missing:
            raise DatasetError(
                f"split {name}: {len(missing)} tiles are not in the tile set {tileset.root} "
                f"(first: {missing[0]}); the tile set changed after the split was made"
            )
        return tileset.subset([position[t] for t in self.part(name)])

    def to_dict(self) -> dict[str, object]:
        return {
            "data_dir": self.data_dir,
            "seed": self.seed,
            "given": self.given,
            "train": list(self.train),
            "validation": list(self.validation),
            "test": list(self.test),
        }


def combination_keys(labels: np.ndarray, class_names: tuple[str, ...]) -> list[str]:
    """Each row's label combination as text: class names joined by '+', or 'clean'."""
    return ["+".join(n for n, v in zip(class_names, row, strict=True) if v) or "clean" for row in labels]


def strata(keys: list[str], n_smaller_part: int) -> list[str]:
    """Stratum per row: its combination, rare ones merged, so that `train_test_split` can divide them.

    Guarantees every stratum has at least `MIN_STRATUM` members (or 2 when there are fewer rows),
    and that there are no more strata than rows in the smaller part of the split.
    """
    counts = Counter(keys)
    floor = MIN_STRATUM if len(keys) >= 2 * MIN_STRATUM else 2
    merged = {k: (k if c >= floor else _RARE) for k, c in counts.items()}
    out = [merged[k] for k in keys]
    counts = Counter(out)
    # Too few rare rows, or more strata than the smaller part has rows: fold the smallest strata
    # (rare first) into the most common one until the split is possible.
    while len(counts) > 1 and ((counts.get(_RARE, floor) < floor) or len(counts) > max(1, n_smaller_part)):
        common = counts.most_common(1)[0][0]
        others = [k for k in counts if k != common]
        rare_too_small = _RARE in others and counts[_RARE] < floor
        victim = _RARE if rare_too_small else min(others, key=lambda k: (counts[k], k))
        out = [common if s == victim else s for s in out]
        counts = Counter(out)
    return out


def _divide(
    indices: np.ndarray, keys: list[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (rest, taken) with `fraction` of them taken, stratified by `keys`."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    n_taken = int(np.ceil(fraction * len(indices)))
    if n_taken < 1 or n_taken >= len(indices):
        raise DatasetError(
            f"split: {len(indices)} tiles cannot be divided {1 - fraction:.0%}/{fraction:.0%} "
            "(need at least 2 tiles on each side); use a larger tile set"
        )
    groups = strata([keys[i] for i in indices], min(n_taken, len(indices) - n_taken))
    stratify = groups if len(set(groups)) > 1 else None
    rest, taken = train_test_split(
        indices, test_size=n_taken, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(rest), np.sort(taken)


def make_split(
    tileset: TileSet,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    validation_fraction: float = VALIDATION_FRACTION,
) -> Split:
    """Deterministic stratified split of `tileset`: same tiles and seed → same split."""
    if len(tileset) < 5:
        raise DatasetError(
            f"tile set {tileset.root}: {len(tileset)} tiles are too few to split into train, validation "
            "and test; expected at least 5"
        )
    keys = combination_keys(tileset.labels, tileset.catalogue.names)
    all_indices = np.arange(len(tileset))
    rest, test = _divide(all_indices, keys, test_fraction, seed)
    train, validation = _divide(rest, keys, validation_fraction, seed)
    return Split(
        data_dir=str(Path(tileset.root).resolve()),
        seed=seed,
        train=tuple(tileset.tiles[i] for i in train),
        validation=tuple(tileset.tiles[i] for i in validation),
        test=tuple(tileset.tiles[i] for i in test),
    )


def save_split(split: Split, model_dir: str | Path) -> Path:
    """Write MODEL_DIR/split.json; returns its path."""
    path = Path(model_dir) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(split.to_dict(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_split(model_dir: str | Path) -> Split:
    """Read MODEL_DIR/split.json; DatasetError names the file and what is wrong."""
    path = Path(model_dir) / SPLIT_FILE
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; expected the split written by `steel-worker train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: expected JSON, {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data_dir"), str):
        raise DatasetError(f"{path}: expected an object with 'data_dir', 'seed', {list(PARTS)}")
    parts: dict[str, tuple[str, ...]] = {}
    for name in PARTS:
        value = data.get(name)
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise DatasetError(
                f"{path}: '{name}' must be a list of tile paths, received {type(value).__name__}"
            )
        parts[name] = tuple(value)
    seen: set[str] = set()
    for name in PARTS:
        overlap = seen.intersection(parts[name])
        if overlap:
            raise DatasetError(f"{path}: tile {sorted(overlap)[0]} appears in more than one part")
        seen.update(parts[name])
    return Split(
        data_dir=data["data_dir"], seed=int(data.get("seed", 0)), given=data.get("given") is True, **parts
    )


def given_split(tileset: TileSet, seed: int = 0) -> Split | None:
    """The split the tile set came with (its split.json), as a `Split`; None when it has none."""
    if tileset.given_split is None:
        return None
    return Split(
        data_dir=str(Path(tileset.root).resolve()),
        seed=seed,
        given=True,
        **{part: tuple(tileset.given_split[part]) for part in PARTS},
    )


def load_or_make_split(tileset: TileSet, model_dir: str | Path, seed: int = 0) -> Split:
    """The split persisted in `model_dir` if there is one (it must be of this tile set, and equal its
    given split if it has one), else the tile set's given split or a new random one, saved. A model
    directory keeps one split for its whole life (resume, evaluate)."""
    given = given_split(tileset, seed)
    path = Path(model_dir) / SPLIT_FILE
    if path.is_file():
        split = load_split(model_dir)
        data_dir = str(Path(tileset.root).resolve())
        if split.data_dir != data_dir:
            raise DatasetError(
                f"{path} was made for tile set {split.data_dir}, received --data {data_dir}; use a new "
                "model directory for another tile set"
            )
        for name in PARTS:
            split.subset(tileset, name)  # every tile must still be there
        if given is not None and any(set(split.part(n)) != set(given.part(n)) for n in PARTS):
            raise DatasetError(
                f"{path} differs from the split the tile set {data_dir} came with ({SPLIT_FILE} there);"
                " use a new model directory"
            )
        return split
    split = given if given is not None else make_split(tileset, seed=seed)
    save_split(split, model_dir)
    return split
