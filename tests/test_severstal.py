"""The Severstal importer: Kaggle RLE, both train.csv layouts, tile labels, and every bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import DatasetError
from worker.core.tileset import read_tileset
from worker.datasets.labelled import write_tileset
from worker.datasets.severstal import (
    DEFAULT_CLASS_MAP,
    iter_severstal_tiles,
    read_train_csv,
    rle_decode,
)

PAPER = load_catalogue()


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle's run-length encoding of a boolean (H, W) mask ('' for an empty one): how the test
    writes the masks of its Severstal folders; the importer only decodes."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


# -- RLE ------------------------------------------------------------------------------------------


def test_rle_start_is_one_indexed_and_runs_go_down_the_columns() -> None:
    """'1 3' is the first three pixels of column 0; '257 2' the top two pixels of column 1."""
    mask = rle_decode("1 3", 256, 1600)
    assert mask.shape == (256, 1600)
    assert mask.sum() == 3
    assert mask[0:3, 0].all()
    mask = rle_decode("257 2", 256, 1600)
    assert mask.sum() == 2 and mask[0, 1] and mask[1, 1]


def test_rle_run_wraps_from_the_bottom_of_a_column_to_the_top_of_the_next() -> None:
    mask = rle_decode("3 4", 4, 3)
    expected = np.zeros((4, 3), dtype=bool)
    expected[2:4, 0] = True
    expected[0:2, 1] = True
    np.testing.assert_array_equal(mask, expected)
    assert rle_encode(expected) == "3 4"


def test_rle_of_an_empty_mask_is_empty_and_back() -> None:
    assert rle_encode(np.zeros((5, 7), dtype=bool)) == ""
    assert not rle_decode("", 5, 7).any()


@settings(max_examples=80, deadline=None)
@given(st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(lambda shape: arrays(np.bool_, shape)))
def test_rle_round_trip(mask: np.ndarray) -> None:
    """decode(encode(mask)) == mask for any mask, and encoding yields 1-indexed, positive runs."""
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, *mask.shape), mask)
    values = [int(v) for v in rle.split()]
    assert all(v >= 1 for v in values)
    assert sum(values[1::2]) == int(mask.sum())


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 3 5", "odd number of values"),
        ("1 x", "expected integers, received 'x'"),
        ("1 2.5", "expected integers, received '2.5'"),
        ("1 0", "run lengths must be positive, received 0"),
        ("5 -2", "run lengths must be positive, received -2"),
        ("0 4", "starts are 1-indexed, received start 0"),
        ("11 3", "ends at pixel 13, beyond the 3×4 image"),
        ("1 99999999999999999999999", "beyond the 3×4 image"),
    ],
)
def test_malformed_rle_is_a_dataset_error(rle: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        rle_decode(rle, 3, 4)


# -- train.csv and the importer -------------------------------------------------------------------


def _frame(rng: np.random.Generator, height: int = 256, width: int = 512) -> np.ndarray:
    return rng.integers(60, 200, (height, width), dtype=np.uint8)


def _rect_rle(height: int, width: int, rows: slice, cols: slice) -> str:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, cols] = True
    return rle_encode(mask)


def _severstal_tree(
    root: Path, layout: str, images: dict[str, np.ndarray], rows: list[tuple[str, int, str]]
) -> Path:
    (root / "train_images").mkdir(parents=True)
    for name, image in images.items():
        assert cv2.imwrite(str(root / "train_images" / name), image)
    if layout == "new":
        lines = ["ImageId,ClassId,EncodedPixels", *(f"{i},{c},{r}" for i, c, r in rows)]
    else:  # first release: every image × every class, empty when absent
        present = {(i, c): r for i, c, r in rows}
        lines = ["ImageId_ClassId,EncodedPixels"]
        lines += [f"{i}_{c},{present.get((i, c), '')}" for i in sorted(images) for c in (1, 2, 3, 4)]
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"a.png": _frame(rng), "b.png": _frame(rng), "clean.png": _frame(rng)}


def _rows() -> list[tuple[str, int, str]]:
    h, w = 256, 512  # tiles at x = 0 and 256
    return [
        ("a.png", 1, _rect_rle(h, w, slice(10, 20), slice(10, 20))),  # 100 px in tile x=0 -> holes
        ("a.png", 2, _rect_rle(h, w, slice(0, 256), slice(300, 400))),  # ClassId 2: dropped
        ("a.png", 4, _rect_rle(h, w, slice(100, 107), slice(300, 309))),  # 63 px in tile x=256: < 64
        ("b.png", 3, _rect_rle(h, w, slice(0, 8), slice(250, 262))),  # 48 px in tile 0, 48 in tile 256
        ("b.png", 3, _rect_rle(h, w, slice(50, 60), slice(400, 410))),  # second scratch row: +100 in 256
    ]


@pytest.mark.parametrize("layout", ["new", "old"])
def test_both_layouts_give_the_same_tiles_and_labels(
    tmp_path: Path, frames: dict[str, np.ndarray], layout: str
) -> None:
    """Labels need >= 64 mask pixels in the tile; ClassId 2 is dropped; images without rows are clean."""
    source = _severstal_tree(tmp_path / "src", layout, frames, _rows())
    summary = write_tileset(iter_severstal_tiles(source, PAPER, progress=False), tmp_path / "out", PAPER)
    tileset = read_tileset(tmp_path / "out")
    got = {
        (src, int(x)): {n for n, v in zip(tileset.catalogue.names, lab, strict=True) if v}
        for src, (x, _), lab in zip(tileset.sources, tileset.origins, tileset.labels, strict=True)
    }
    assert got == {
        ("a.png", 0): {"holes"},
        ("a.png", 256): set(),
        ("b.png", 0): set(),
        ("b.png", 256): {"scratches"},
        ("clean.png", 0): set(),
        ("clean.png", 256): set(),
    }
    assert summary.frames == 3 and summary.tiles == 6
    assert summary.class_counts == {"holes": 1, "scratches": 1, "rolling": 0}
    assert summary.combination_counts == {("holes",): 1, ("scratches",): 1, (): 4}
    tile = cv2.imread(str(tileset.path(tileset.tiles.index("tiles/a_x256_y0.png"))), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(tile, frames["a.png"][:, 256:512])


def test_min_pixels_and_class_map_are_configurable(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    """With min_pixels 40 the 48-px scratch and the 63-px rolling count; ClassId 2 can be mapped in."""
    source = _severstal_tree(tmp_path / "src", "new", frames, _rows())
    tiles = list(
        iter_severstal_tiles(
            source, PAPER, min_pixels=40, class_map={**DEFAULT_CLASS_MAP, 2: "rolling"}, progress=False
        )
    )
    labels = {(t.source, t.x): set(t.labels) for t in tiles}
    assert labels[("b.png", 0)] == {"scratches"}
    assert labels[("a.png", 256)] == {"rolling"}  # ClassId 4 (63 px) and ClassId 2 both map to rolling
    assert labels[("a.png", 0)] == {"holes"}  # the ClassId 2 mask (x 300..400) lies in tile x=256 only


def test_read_train_csv_keeps_non_empty_encodings_per_image_and_class(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("ImageId_ClassId,EncodedPixels\nx.jpg_1,1 3\nx.jpg_2,\nweird_name.jpg_4,5 5\n")
    assert read_train_csv(path) == {"x.jpg": {1: ["1 3"]}, "weird_name.jpg": {4: ["5 5"]}}


# -- bad input --------------------------------------------------------------------------------------


def test_missing_train_csv(tmp_path: Path) -> None:
    (tmp_path / "train_images").mkdir()
    with pytest.raises(DatasetError, match=r"train\.csv does not exist"):
        iter_severstal_tiles(tmp_path, PAPER, progress=False)


def test_unknown_train_csv_header(tmp_path: Path) -> None:
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train.csv").write_text("image,label\n")
    with pytest.raises(DatasetError, match="expected header 'ImageId,ClassId,EncodedPixels'"):
        iter_severstal_tiles(tmp_path, PAPER, progress=False)


def test_malformed_rle_in_train_csv_names_image_and_class(
    tmp_path: Path, frames: dict[str, np.ndarray]
) -> None:
    source = _severstal_tree(tmp_path / "src", "new", frames, [("b.png", 3, "1 2 3")])
    with pytest.raises(DatasetError, match=r"image b\.png, ClassId 3: malformed RLE.*odd number"):
        list(iter_severstal_tiles(source, PAPER, progress=False))


def test_rle_beyond_the_image_is_an_error(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    source = _severstal_tree(tmp_path / "src", "new", frames, [("a.png", 1, f"{256 * 512} 2")])
    with pytest.raises(DatasetError, match="beyond the 256×512 image"):
        list(iter_severstal_tiles(source, PAPER, progress=False))


def test_unreadable_image(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    source = _severstal_tree(tmp_path / "src", "new", frames, [])
    (source / "train_images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.jpg"):
        list(iter_severstal_tiles(source, PAPER, progress=False))


def test_image_named_in_train_csv_but_absent(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    source = _severstal_tree(tmp_path / "src", "new", frames, [("ghost.jpg", 1, "1 3")])
    with pytest.raises(DatasetError, match=r"cannot read image .*ghost\.jpg"):
        list(iter_severstal_tiles(source, PAPER, progress=False))


def test_failed_import_leaves_no_tiles_behind(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    """A failure half-way removes the tiles already written and the --out folder it created."""
    source = _severstal_tree(tmp_path / "src", "new", frames, [])
    (source / "train_images" / "z_broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="cannot read image"):
        write_tileset(iter_severstal_tiles(source, PAPER, progress=False), tmp_path / "out", PAPER)
    assert not (tmp_path / "out").exists()


def test_class_map_to_a_class_not_in_the_catalogue(tmp_path: Path, frames: dict[str, np.ndarray]) -> None:
    source = _severstal_tree(tmp_path / "src", "new", frames, [])
    with pytest.raises(DatasetError, match=r"names classes \['pits'\] that are not in catalogue"):
        iter_severstal_tiles(source, PAPER, class_map={1: "holes", 2: "pits"}, progress=False)
    narrow = Catalogue.from_names(["holes"])
    with pytest.raises(DatasetError, match=r"\['rolling', 'scratches'\]"):
        iter_severstal_tiles(source, narrow, progress=False)


def test_empty_data_set(tmp_path: Path) -> None:
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    with pytest.raises(DatasetError, match="empty data set"):
        iter_severstal_tiles(tmp_path, PAPER, progress=False)


def test_missing_train_images_folder(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    with pytest.raises(DatasetError, match="train_images does not exist"):
        iter_severstal_tiles(tmp_path, PAPER, progress=False)
