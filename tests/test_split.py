"""The persisted train/validation/test split: proportions, stratification, determinism, file checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from worker.core.catalogue import load_catalogue
from worker.core.errors import DatasetError
from worker.core.tileset import TileSet
from worker.model.split import (
    SPLIT_FILE,
    combination_keys,
    load_or_make_split,
    load_split,
    make_split,
    save_split,
)

CATALOGUE = load_catalogue()


def _tileset(root: Path, combos: dict[tuple[int, int, int], int]) -> TileSet:
    """A tile set (labels only, no images needed) with `count` tiles of each label combination."""
    labels = np.array([c for c, n in combos.items() for _ in range(n)], dtype=np.uint8)
    n = len(labels)
    return TileSet(
        root=root,
        catalogue=CATALOGUE,
        tiles=tuple(f"tiles/t{i:04d}.png" for i in range(n)),
        sources=tuple(f"f{i}.png" for i in range(n)),
        origins=np.zeros((n, 2), dtype=int),
        labels=labels,
    )


COMBOS = {(0, 0, 0): 120, (1, 0, 0): 30, (0, 1, 0): 25, (0, 0, 1): 15, (1, 1, 0): 10}  # 200 tiles


def test_proportions_are_20_percent_test_then_20_percent_of_the_rest(tmp_path: Path) -> None:
    """200 tiles → 40 test, then 32 of the remaining 160 validation, 128 train; disjoint, complete."""
    tileset = _tileset(tmp_path, COMBOS)
    split = make_split(tileset, seed=3)
    assert (len(split.train), len(split.validation), len(split.test)) == (128, 32, 40)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert set().union(*parts) == set(tileset.tiles)
    assert sum(len(p) for p in parts) == len(tileset)


def test_every_label_combination_keeps_its_share_in_every_part(tmp_path: Path) -> None:
    """Stratified: each combination's count in a part is its share of the part's size, ±1 tile."""
    tileset = _tileset(tmp_path, COMBOS)
    split = make_split(tileset, seed=0)
    keys = dict(zip(tileset.tiles, combination_keys(tileset.labels, CATALOGUE.names), strict=True))
    total = Counter(keys.values())
    for part in (split.train, split.validation, split.test):
        counts = Counter(keys[t] for t in part)
        for key, n in total.items():
            expected = n * len(part) / len(tileset)
            assert abs(counts[key] - expected) <= 1.0, (key, counts[key], expected)


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    """The split is a function of the tiles and the seed alone."""
    tileset = _tileset(tmp_path, COMBOS)
    assert make_split(tileset, seed=7) == make_split(tileset, seed=7)
    assert make_split(tileset, seed=7).test != make_split(tileset, seed=8).test


def test_combinations_too_rare_to_stratify_are_merged_not_refused(tmp_path: Path) -> None:
    """Single tiles of rare combinations (which scikit-learn cannot stratify) are still split."""
    combos = {**COMBOS, (1, 0, 1): 1, (0, 1, 1): 1, (1, 1, 1): 2}
    tileset = _tileset(tmp_path, combos)
    split = make_split(tileset, seed=0)
    assert len(split.train) + len(split.validation) + len(split.test) == len(tileset)


def test_tiny_tile_set_with_more_combinations_than_test_tiles_still_splits(tmp_path: Path) -> None:
    """10 tiles of 5 combinations: fewer test tiles (2) than combinations, strata are folded."""
    tileset = _tileset(tmp_path, {(0, 0, 0): 2, (1, 0, 0): 2, (0, 1, 0): 2, (0, 0, 1): 2, (1, 1, 0): 2})
    split = make_split(tileset, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (6, 2, 2)


def test_too_few_tiles_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="too few"):
        make_split(_tileset(tmp_path, {(0, 0, 0): 4}))


def test_saved_split_round_trips_and_is_reused(tmp_path: Path) -> None:
    """split.json holds data_dir, seed and the three lists; load_or_make_split reuses it (seed ignored)."""
    tileset = _tileset(tmp_path / "tiles", COMBOS)
    made = load_or_make_split(tileset, tmp_path / "model", seed=1)
    data = json.loads((tmp_path / "model" / SPLIT_FILE).read_text())
    assert data["data_dir"] == str((tmp_path / "tiles").resolve())
    assert data["seed"] == 1 and len(data["test"]) == 40
    assert load_split(tmp_path / "model") == made
    assert load_or_make_split(tileset, tmp_path / "model", seed=99) == made
    assert made.subset(tileset, "validation").tiles == made.validation


def test_split_of_another_tile_set_is_refused(tmp_path: Path) -> None:
    """A model directory's split belongs to one tile set; another --data is a DatasetError."""
    save_split(make_split(_tileset(tmp_path / "a", COMBOS)), tmp_path / "model")
    with pytest.raises(DatasetError, match="was made for tile set"):
        load_or_make_split(_tileset(tmp_path / "b", COMBOS), tmp_path / "model")


def test_split_naming_tiles_the_tile_set_lacks_is_refused(tmp_path: Path) -> None:
    split = make_split(_tileset(tmp_path, COMBOS))
    smaller = _tileset(tmp_path, {(0, 0, 0): 50})
    with pytest.raises(DatasetError, match="not in the tile set"):
        split.subset(smaller, "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "expected JSON"),
        ('{"data_dir": "/x", "train": [], "validation": [], "test": 3}', "'test' must be a list"),
        ('{"data_dir": "/x", "train": ["a"], "validation": ["a"], "test": []}', "more than one part"),
    ],
)
def test_corrupt_split_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / SPLIT_FILE).write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_split(tmp_path)


def test_missing_split_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=SPLIT_FILE):
        load_split(tmp_path)


def test_balanced_set_with_more_combinations_than_test_tiles_splits(tmp_path: Path) -> None:
    """Tied strata (8 combinations × 5 tiles, 8 test tiles) are merged until the split is possible."""
    combos = {(a, b, c): 5 for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    split = make_split(_tileset(tmp_path, combos), seed=0)
    assert len(split.test) == 8
    assert len(split.train) + len(split.validation) + len(split.test) == 40
