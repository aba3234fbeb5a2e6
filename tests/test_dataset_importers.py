"""The folders and Pascal VOC importers on small crafted trees (and NEU-DET when STEEL_DATA_DIR is set)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import DatasetError
from worker.core.tileset import read_tile, read_tileset
from worker.datasets.folders import iter_folder_tiles, scan_folders
from worker.datasets.labelled import write_tileset
from worker.datasets.voc import VocDataset, iter_voc_tiles, parse_annotation, scan_voc


def _image(path: Path, height: int, width: int, value: int = 120) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(value).integers(0, 256, (height, width), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def _labels_by_tile(root: Path) -> dict[tuple[str, int, int], set[str]]:
    ts = read_tileset(root)
    return {
        (src, int(x), int(y)): {n for n, v in zip(ts.catalogue.names, lab, strict=True) if v}
        for src, (x, y), lab in zip(ts.sources, ts.origins, ts.labels, strict=True)
    }


# -- folders --------------------------------------------------------------------------------------


def test_folders_label_every_tile_with_its_folder_and_clean_with_nothing(tmp_path: Path) -> None:
    """Small images are resized up to the tile, large ones tiled; same names in two folders stay apart."""
    src = tmp_path / "src"
    _image(src / "holes" / "1.png", 200, 200)
    _image(src / "scratches" / "1.png", 200, 100)  # 100 wide -> 256 wide, 512 tall: two tiles
    _image(src / "clean" / "big.jpg", 300, 600)  # six tiles
    (src / "clean" / "notes.txt").write_text("not an image")
    dataset = scan_folders(src)
    assert dataset.catalogue == load_catalogue()  # every folder name is in the paper's catalogue
    summary = write_tileset(iter_folder_tiles(dataset, progress=False), tmp_path / "out", dataset.catalogue)
    labels = _labels_by_tile(tmp_path / "out")
    assert labels == {
        ("holes__1.png", 0, 0): {"holes"},
        ("scratches__1.png", 0, 0): {"scratches"},
        ("scratches__1.png", 0, 256): {"scratches"},
        **{("clean__big.jpg", x, y): set() for y in (0, 44) for x in (0, 172, 344)},
    }
    assert summary.tiles == 9 and summary.frames == 3
    tile = read_tile(tmp_path / "out" / "tiles" / "holes__1_x0_y0.png")
    assert tile.shape == (256, 256)


def test_folders_outside_the_default_catalogue_build_one_from_the_names(tmp_path: Path) -> None:
    _image(tmp_path / "pits" / "a.png", 64, 64)
    _image(tmp_path / "crazing" / "b.png", 64, 64)
    _image(tmp_path / "ok" / "c.png", 64, 64)
    dataset = scan_folders(tmp_path, clean_folder="ok")
    assert dataset.catalogue.names == ("crazing", "pits")
    assert {(i.path.name, i.label) for i in dataset.images} == {
        ("a.png", "pits"),
        ("b.png", "crazing"),
        ("c.png", None),
    }


def test_folders_must_match_a_given_catalogue(tmp_path: Path) -> None:
    _image(tmp_path / "holes" / "a.png", 64, 64)
    _image(tmp_path / "pits" / "b.png", 64, 64)
    with pytest.raises(DatasetError, match=r"class folders \['pits'\] are not in catalogue"):
        scan_folders(tmp_path, load_catalogue())


def test_named_clean_folder_must_exist(tmp_path: Path) -> None:
    _image(tmp_path / "holes" / "a.png", 64, 64)
    with pytest.raises(DatasetError, match="--clean-folder 'good': expected a folder"):
        scan_folders(tmp_path, clean_folder="good")


def test_folder_names_without_a_letter_or_digit_are_refused(tmp_path: Path) -> None:
    """A name the slug rule cannot turn into a class name is refused, naming it (a plant's other
    names, with spaces and capitals, are test_folders_slugs.py's business)."""
    _image(tmp_path / "Big Holes" / "a.png", 64, 64)
    _image(tmp_path / "???" / "b.png", 64, 64)
    with pytest.raises(DatasetError, match=r"folder names must give class names: class name '\?\?\?'"):
        scan_folders(tmp_path)


def test_folders_without_images_are_an_empty_data_set(tmp_path: Path) -> None:
    (tmp_path / "holes").mkdir()
    (tmp_path / "holes" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty data set"):
        scan_folders(tmp_path)


def test_unreadable_image_in_a_class_folder(tmp_path: Path) -> None:
    _image(tmp_path / "holes" / "a.png", 64, 64)
    (tmp_path / "holes" / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.jpg"):
        list(iter_folder_tiles(scan_folders(tmp_path), progress=False))


# -- VOC ------------------------------------------------------------------------------------------


def _voc_xml(path: Path, objects: list[tuple[str, tuple[int, int, int, int] | None]]) -> None:
    parts = ["<annotation><filename>x</filename><size><width>1</width><height>1</height></size>"]
    for name, box in objects:
        parts.append(f"<object><name>{name}</name>")
        if box is not None:
            xmin, ymin, xmax, ymax = box
            parts.append(
                f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
            )
        parts.append("</object>")
    parts.append("</annotation>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")


def test_voc_labels_are_the_classes_of_the_boxes_in_each_tile(tmp_path: Path) -> None:
    """200×200 → one 256 tile with all its boxes' classes; on a large image only the tiles holding a box."""
    src = tmp_path / "voc"
    _image(src / "images" / "small.jpg", 200, 200)
    _voc_xml(
        src / "annotations" / "small.xml", [("Crazing", (2, 2, 20, 20)), ("inclusion", (150, 150, 152, 152))]
    )
    _image(src / "images" / "wide.png", 256, 600)  # tiles at x = 0, 172, 344
    _voc_xml(src / "annotations" / "wide.xml", [("patches", (501, 11, 560, 60))])  # x 500..560: tile 344 only
    _image(src / "images" / "plain.png", 256, 256)
    _voc_xml(src / "annotations" / "plain.xml", [])
    dataset = scan_voc(src)
    assert dataset.catalogue.names == ("crazing", "inclusion", "patches")  # lower-cased, sorted
    write_tileset(iter_voc_tiles(dataset, progress=False), tmp_path / "out", dataset.catalogue)
    assert _labels_by_tile(tmp_path / "out") == {
        ("small.jpg", 0, 0): {"crazing", "inclusion"},  # the 3×3 box counts: it lies wholly in the tile
        ("wide.png", 0, 0): set(),
        ("wide.png", 172, 0): set(),
        ("wide.png", 344, 0): {"patches"},
        ("plain.png", 0, 0): set(),
    }
    assert read_tile(tmp_path / "out" / "tiles" / "small_x0_y0.png").shape == (256, 256)
    catalogue = json.loads((tmp_path / "out" / "catalogue.json").read_text())
    assert [c["name"] for c in catalogue["classes"]] == ["crazing", "inclusion", "patches"]


def test_voc_box_straddling_two_tiles_needs_min_pixels_in_each(tmp_path: Path) -> None:
    src = tmp_path / "voc"
    _image(src / "images" / "w.png", 256, 512)  # tiles at x = 0 and 256
    _voc_xml(src / "annotations" / "w.xml", [("scale", (247, 1, 276, 10))])  # x 246..276: 10 px | 20 px wide
    dataset = scan_voc(src)
    tiles = {t.x: set(t.labels) for t in iter_voc_tiles(dataset, min_pixels=150, progress=False)}
    assert tiles == {0: set(), 256: {"scale"}}  # 100 px vs 200 px of the box
    tiles = {t.x: set(t.labels) for t in iter_voc_tiles(dataset, min_pixels=100, progress=False)}
    assert tiles == {0: {"scale"}, 256: {"scale"}}


def test_voc_object_without_a_box_labels_the_whole_image(tmp_path: Path) -> None:
    _voc_xml(tmp_path / "a.xml", [("holes", None)])
    assert parse_annotation(tmp_path / "a.xml")[0].whole


def test_voc_class_not_in_the_given_catalogue(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png", 64, 64)
    _voc_xml(tmp_path / "annotations" / "a.xml", [("pitted_surface", (1, 1, 5, 5))])
    with pytest.raises(
        DatasetError, match=r"classes \['pitted_surface'\] \(e\.g\. in .*a\.xml\) are not in catalogue"
    ):
        scan_voc(tmp_path, load_catalogue())


def test_voc_image_without_annotation(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png", 64, 64)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DatasetError, match=r"has no annotation: expected .*annotations/a\.xml"):
        scan_voc(tmp_path)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><object><name>a</name>", "cannot read VOC annotation"),
        ("<root/>", "expected an <annotation> root element, received <root>"),
        ("<annotation><object><name> </name></object></annotation>", "has no <name>"),
        (
            "<annotation><object><name>a</name><bndbox><xmin>q</xmin></bndbox></object></annotation>",
            "needs numeric xmin, ymin, xmax, ymax",
        ),
        (
            "<annotation><object><name>a</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>4</ymax></bndbox></object></annotation>",
            "box has max < min",
        ),
    ],
)
def test_malformed_voc_xml(tmp_path: Path, xml: str, message: str) -> None:
    _image(tmp_path / "images" / "a.png", 64, 64)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(xml)
    with pytest.raises(DatasetError, match=message):
        scan_voc(tmp_path)


def test_voc_without_folders_or_images(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"expected a folder of images named one of \['images', 'JPEGImages'\]"
    ):
        scan_voc(tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DatasetError, match="empty data set"):
        scan_voc(tmp_path)


def test_voc_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"garbage")
    _voc_xml(tmp_path / "annotations" / "a.xml", [("holes", (1, 1, 5, 5))])
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.jpg"):
        list(iter_voc_tiles(scan_voc(tmp_path), progress=False))


# -- real data ------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_neu_det_reads_as_six_classes_of_single_256_tiles(tmp_path: Path) -> None:
    """NEU-DET: 1800 images, catalogue of its six class names, each 200×200 image → one 256 tile."""
    data_dir = os.environ.get("STEEL_DATA_DIR")
    if not data_dir:
        pytest.skip("STEEL_DATA_DIR is not set")
    dataset = scan_voc(Path(data_dir) / "neu-det")
    assert len(dataset.images) == 1800
    assert dataset.catalogue.names == (
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    )
    sample = VocDataset(dataset.root, dataset.catalogue, dataset.images[::150])
    tiles = list(iter_voc_tiles(sample, progress=False))
    assert len(tiles) == len(sample.images)
    for t in tiles:
        assert t.image.shape == (256, 256)
        assert t.source.rsplit("_", 1)[0] in t.labels  # the file-name prefix is one of its classes


def test_catalogue_from_names_is_what_scan_builds(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png", 64, 64)
    _voc_xml(tmp_path / "annotations" / "a.xml", [("b", (1, 1, 5, 5)), ("a", (1, 1, 5, 5))])
    assert scan_voc(tmp_path).catalogue.names == Catalogue.from_names(["a", "b"]).names
