"""A plant's folders: its own class names (spaces, capitals, accents) become machine names by the
slug rule and stay display names; data sets that come split keep their split (--keep-split);
colour, 16-bit, mixed sizes and mixed formats import."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from worker import cli
from worker.core.catalogue import (
    Catalogue,
    DefectClass,
    load_catalogue,
    save_catalogue,
    slugify_class_name,
    slugify_class_names,
)
from worker.core.errors import CatalogueError, DatasetError
from worker.core.tileset import SPLIT_FILE, read_tile, read_tileset
from worker.datasets.folders import iter_folder_tiles, scan_folders
from worker.datasets.labelled import write_tileset
from worker.model.artefact import META_FILE, load_classifier
from worker.model.split import PARTS, load_or_make_split, load_split, make_split, save_split
from worker.model.training import TrainingConfig, train
from worker.storage.writer import StorageWriter

# -- the slug rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("holes", "holes"),  # already a class name: kept as it is
        ("rolled-in_scale", "rolled-in_scale"),
        ("Rolled-in Scale", "rolled-in_scale"),
        ("pitted surface", "pitted_surface"),
        ("Écaillage", "ecaillage"),
        ("Ölfleck (leicht)", "olfleck_leicht"),
        ("Straße", "strasse"),  # case folding, not just lower-casing
        ("İnclusion", "inclusion"),  # folding makes a combining dot, which goes too
        ("Ｆｕｌｌ ｗｉｄｔｈ", "full_width"),  # NFKD: full-width letters
        ("  crack  ", "crack"),
        ("__x__", "x"),
        ("a/b\\c", "a_b_c"),
        ("scratch...!!", "scratch"),
        ("3 mm holes", "c_3_mm_holes"),  # a leading digit gets the prefix
        ("-42-", "c_42"),
        ("x" * 100, "x" * 64),
        ("Ab " * 40, ("ab_" * 22)[:64].rstrip("_")),  # cut, then trimmed again
    ],
)
def test_slug_rule_cases(text: str, slug: str) -> None:
    assert slugify_class_name(text) == slug
    assert slugify_class_name(slug) == slug  # a slug is its own slug


@pytest.mark.parametrize("text", ["..", ".", "/", "", "   ", "???", "---", "__", "Кратер", "裂纹"])
def test_names_without_a_latin_letter_or_digit_are_refused(text: str) -> None:
    with pytest.raises(CatalogueError, match=r"expected at least one letter a-z or digit"):
        slugify_class_name(text)


def test_two_names_with_one_slug_are_refused_naming_both() -> None:
    with pytest.raises(
        CatalogueError, match=r"'Pitted Surface' and 'pitted_surface' both become .*'pitted_surface'"
    ):
        slugify_class_names(["Pitted Surface", "pitted_surface"])
    with pytest.raises(CatalogueError, match=r"'Écaille' and 'ecaille'"):
        slugify_class_names(["Écaille", "ecaille"])
    assert slugify_class_names(["A b", "A-b"]) == {"A b": "a_b", "A-b": "a-b"}


# -- display names in the catalogue --------------------------------------------------------------


def test_display_name_defaults_to_the_name() -> None:
    assert DefectClass(id=1, name="holes").display_name == "holes"
    assert load_catalogue().display_names == {
        "holes": "holes",
        "scratches": "scratches",
        "rolling": "rolling",
    }


def test_catalogue_json_round_trip_keeps_display_names(tmp_path: Path) -> None:
    catalogue = Catalogue.from_display_names(["Rolled-in Scale", "Écaillage", "crazing"], name="plant")
    assert catalogue.names == ("crazing", "ecaillage", "rolled-in_scale")  # sorted by machine name
    assert [c.id for c in catalogue.classes] == [1, 2, 3]
    save_catalogue(catalogue, tmp_path / "c.json")
    written = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    # written only where it differs from the name: plain catalogues keep the old shape
    assert ["display_name" in c for c in written["classes"]] == [False, True, True]
    again = load_catalogue(tmp_path / "c.json")
    assert again == catalogue
    assert again.display_names == {
        "crazing": "crazing",
        "ecaillage": "Écaillage",
        "rolled-in_scale": "Rolled-in Scale",
    }
    assert again.display_name("ecaillage") == "Écaillage"
    assert again.display_name("unknown") == "unknown"


def test_old_catalogue_files_without_display_names_still_load(tmp_path: Path) -> None:
    old = {"name": "old", "classes": [{"id": 4, "name": "crazing", "cause": "thermal stress"}]}
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    catalogue = load_catalogue(tmp_path / "old.json")
    assert catalogue.classes[0].display_name == "crazing"
    assert catalogue.to_dict()["classes"] == [
        {**old["classes"][0], **dict.fromkeys(("features", "type", "automatic_inspection", "prevention"), "")}
    ]


@pytest.mark.parametrize(
    ("display", "error"),
    [
        (7, r"fields \['display_name'\] must be strings"),
        ("two\nlines", "expected one line"),
        ("   ", "expected one line"),
        ("x" * 201, "expected one line of at most 200"),
    ],
)
def test_display_names_that_are_not_one_printable_line_are_refused(display: object, error: str) -> None:
    with pytest.raises(CatalogueError, match=error):
        Catalogue.from_dict({"classes": [{"id": 1, "name": "a", "display_name": display}]})


def test_machine_names_keep_their_rule() -> None:
    with pytest.raises(CatalogueError, match="must be lower-case letters"):
        Catalogue(classes=(DefectClass(id=1, name="Rolled-in Scale"),))


# -- folders with a plant's names ----------------------------------------------------------------


def _image(
    path: Path, height: int, width: int, *, colour: bool = False, seed: int = 0, depth: int = 8
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    high = 256 if depth == 8 else 65536
    shape = (height, width, 3) if colour else (height, width)
    image = rng.integers(0, high, shape, dtype=np.uint8 if depth == 8 else np.uint16)
    assert cv2.imwrite(str(path), image), path


def test_folders_with_a_plants_names_become_slugs_with_display_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, folder in enumerate(("Rolled-in Scale", "pitted surface", "Écaillage", "OK images")):
        _image(src / folder / "a.png", 40, 40, seed=i)
    dataset = scan_folders(src, clean_folder="OK images")
    assert dataset.catalogue.names == ("ecaillage", "pitted_surface", "rolled-in_scale")
    assert dataset.catalogue.display_names == {
        "ecaillage": "Écaillage",
        "pitted_surface": "pitted surface",
        "rolled-in_scale": "Rolled-in Scale",
    }
    summary = write_tileset(
        iter_folder_tiles(dataset, tile=32, progress=False), tmp_path / "out", dataset.catalogue
    )
    tileset = read_tileset(tmp_path / "out")
    assert tileset.catalogue == dataset.catalogue  # display names travel with the tile set
    labels = {
        s: {n for n, v in zip(tileset.catalogue.names, row, strict=True) if v}
        for s, row in zip(tileset.sources, tileset.labels, strict=True)
    }
    assert labels == {
        "ecaillage__a.png": {"ecaillage"},
        "pitted_surface__a.png": {"pitted_surface"},
        "rolled-in_scale__a.png": {"rolled-in_scale"},
        "ok_images__a.png": set(),
    }
    assert all(" " not in t for t in tileset.tiles)  # tile file names use the slugs
    assert "Rolled-in Scale" in summary.table()
    assert not (tmp_path / "out" / SPLIT_FILE).exists()


def test_folders_whose_names_collide_are_refused_naming_both(tmp_path: Path) -> None:
    _image(tmp_path / "Pitted Surface" / "a.png", 40, 40)
    _image(tmp_path / "pitted_surface" / "b.png", 40, 40)
    with pytest.raises(DatasetError, match=r"'Pitted Surface' and 'pitted_surface' both become"):
        scan_folders(tmp_path)


def test_a_given_catalogue_matches_folders_by_name_slug_or_display_name(tmp_path: Path) -> None:
    catalogue = Catalogue(
        classes=(
            DefectClass(id=11, name="holes"),
            DefectClass(id=12, name="rolled-in_scale", display_name="Walzzunder"),
            DefectClass(id=13, name="crater", display_name="Кратер"),
        )
    )
    for folder in ("Holes", "Walzzunder", "Кратер"):
        _image(tmp_path / folder / "a.png", 40, 40)
    dataset = scan_folders(tmp_path, catalogue)
    assert dataset.catalogue is catalogue
    assert {i.path.parent.name: i.label for i in dataset.images} == {
        "Holes": "holes",
        "Walzzunder": "rolled-in_scale",
        "Кратер": "crater",
    }
    _image(tmp_path / "holes" / "b.png", 40, 40)
    with pytest.raises(DatasetError, match=r"class folders 'Holes' and 'holes' both name class 'holes'"):
        scan_folders(tmp_path, catalogue)


def test_paper_classes_under_other_spellings_use_the_paper_catalogue(tmp_path: Path) -> None:
    _image(tmp_path / "Holes" / "a.png", 40, 40)
    _image(tmp_path / "SCRATCHES" / "a.png", 40, 40)
    dataset = scan_folders(tmp_path)
    assert dataset.catalogue == load_catalogue()
    assert {i.label for i in dataset.images} == {"holes", "scratches"}


def test_colour_16_bit_mixed_sizes_and_formats_import_as_grey_tiles(tmp_path: Path) -> None:
    """PNG (grey, colour, RGBA, 16-bit), JPEG, BMP and TIFF, upper-case suffixes, small and large."""
    src = tmp_path / "src"
    _image(src / "Big Holes" / "grey.png", 20, 30)  # small: resized up to 32 × 48
    _image(src / "Big Holes" / "colour.JPG", 70, 50, colour=True)  # large: cut, overlapping
    _image(src / "Big Holes" / "deep.png", 32, 32, depth=16)
    _image(src / "Big Holes" / "bitmap.bmp", 32, 64, colour=True)
    _image(src / "Big Holes" / "scan.tiff", 33, 33, colour=True)
    _image(src / "Big Holes" / "scan2.tif", 32, 32, depth=16)
    rgba = np.dstack([np.full((32, 32, 3), 90, np.uint8), np.full((32, 32), 255, np.uint8)])
    assert cv2.imwrite(str(src / "Big Holes" / "alpha.png"), rgba)
    dataset = scan_folders(src)
    assert len(dataset.images) == 7
    summary = write_tileset(
        iter_folder_tiles(dataset, tile=32, progress=False), tmp_path / "out", dataset.catalogue
    )
    tileset = read_tileset(tmp_path / "out")
    per_image: dict[str, int] = {}
    for source in tileset.sources:
        per_image[source] = per_image.get(source, 0) + 1
    assert per_image == {
        "big_holes__alpha.png": 1,
        "big_holes__bitmap.bmp": 2,
        "big_holes__colour.JPG": 6,  # 50 × 70: 2 across, 3 down
        "big_holes__deep.png": 1,
        "big_holes__grey.png": 2,  # 20 × 30 → 32 × 48
        "big_holes__scan.tiff": 4,
        "big_holes__scan2.tif": 1,
    }
    assert summary.tiles == 17
    for i in range(len(tileset)):
        tile = read_tile(tileset.path(i))
        assert tile.shape == (32, 32) and tile.dtype == np.uint8
    alpha = read_tile(tileset.path(tileset.sources.index("big_holes__alpha.png")))
    assert int(alpha.mean()) == 90  # the colour, not the alpha channel


# -- --keep-split ----------------------------------------------------------------------------------


def _split_tree(root: Path, validation: str = "valid", per_class: int = 3) -> None:
    for p, part in enumerate(("train", validation, "test")):
        for c, folder in enumerate(("Rolled-in Scale", "Écaillage", "clean")):
            for i in range(per_class):
                _image(root / part / folder / f"img{i}.png", 32, 32, seed=100 * p + 10 * c + i)


@pytest.mark.parametrize("validation", ["valid", "val", "Validation"])
def test_keep_split_records_the_given_parts_in_the_tile_set(tmp_path: Path, validation: str) -> None:
    _split_tree(tmp_path / "src", validation)
    out = tmp_path / "tiles"
    argv = ["dataset", "--format", "folders", "--source", str(tmp_path / "src"), "--out", str(out)]
    assert cli.main([*argv, "--keep-split", "--tile", "32", "--no-progress"]) == 0
    tileset = read_tileset(out)
    assert tileset.given_split is not None
    for part, folder in (("train", "train"), ("validation", validation), ("test", "test")):
        tiles = tileset.given_split[part]
        assert len(tiles) == 9
        expected = {
            f"{part}__{key}__img{i}.png"
            for key in ("rolled-in_scale", "ecaillage", "clean")
            for i in range(3)
        }
        assert {tileset.sources[tileset.tiles.index(t)] for t in tiles} == expected, folder
    assert tileset.catalogue.display_names == {"ecaillage": "Écaillage", "rolled-in_scale": "Rolled-in Scale"}


def test_a_split_layout_without_keep_split_is_refused_with_a_hint(tmp_path: Path) -> None:
    _split_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"comes split into train/valid/test; pass --keep-split"):
        scan_folders(tmp_path)


@pytest.mark.parametrize(
    ("remove", "error"),
    [
        ("test", r"has no test/ folder"),
        ("valid", r"has no valid/ \(or val/, validation/\) folder"),
        ("train", r"has no train/ folder"),
    ],
)
def test_keep_split_needs_all_three_parts(tmp_path: Path, remove: str, error: str) -> None:
    _split_tree(tmp_path)
    for path in sorted((tmp_path / remove).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / remove).rmdir()
    with pytest.raises(DatasetError, match=error):
        scan_folders(tmp_path, keep_split=True)


def test_keep_split_refuses_other_folders_two_validation_folders_and_empty_parts(tmp_path: Path) -> None:
    _split_tree(tmp_path)
    _image(tmp_path / "extra" / "x" / "a.png", 32, 32)
    with pytest.raises(DatasetError, match=r"unexpected folder 'extra'"):
        scan_folders(tmp_path, keep_split=True)
    (tmp_path / "extra" / "x" / "a.png").unlink()
    (tmp_path / "extra" / "x").rmdir()
    (tmp_path / "extra").rename(tmp_path / "val")
    (tmp_path / "val" / "holes").mkdir()
    with pytest.raises(DatasetError, match=r"folders 'val' and 'valid' .* both hold the validation part"):
        scan_folders(tmp_path, keep_split=True)
    (tmp_path / "val" / "holes").rmdir()
    (tmp_path / "val").rmdir()
    for image in (tmp_path / "test").rglob("*.png"):
        image.unlink()
    with pytest.raises(DatasetError, match=r"the test part .* holds no image files"):
        scan_folders(tmp_path, keep_split=True)


def test_keep_split_on_a_layout_without_split_folders(tmp_path: Path) -> None:
    _image(tmp_path / "holes" / "a.png", 32, 32)
    with pytest.raises(DatasetError, match=r"unexpected folder 'holes'"):
        scan_folders(tmp_path, keep_split=True)


def test_keep_split_is_for_folders_only(tmp_path: Path) -> None:
    argv = ["dataset", "--format", "synthetic", "--frames", "1", "--out", str(tmp_path / "o"), "--keep-split"]
    assert cli.main(argv) == 2


def test_a_tile_set_split_that_misses_tiles_is_a_clear_error(tmp_path: Path) -> None:
    _split_tree(tmp_path / "src")
    out = tmp_path / "tiles"
    dataset = scan_folders(tmp_path / "src", keep_split=True)
    write_tileset(iter_folder_tiles(dataset, tile=32, progress=False), out, dataset.catalogue)
    split = json.loads((out / SPLIT_FILE).read_text(encoding="utf-8"))
    dropped = split["test"].pop()
    (out / SPLIT_FILE).write_text(json.dumps(split), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"1 tiles of labels.csv are in no part \(first: {dropped}\)"):
        read_tileset(out)
    split["train"].append(split["validation"][0])
    split["test"].append(dropped)
    (out / SPLIT_FILE).write_text(json.dumps(split), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"is in more than one part"):
        read_tileset(out)


def test_overwrite_removes_a_previous_tile_sets_split(tmp_path: Path) -> None:
    _split_tree(tmp_path / "src")
    out = tmp_path / "tiles"
    argv = ["dataset", "--format", "folders", "--out", str(out), "--tile", "32", "--no-progress"]
    assert cli.main([*argv, "--source", str(tmp_path / "src"), "--keep-split"]) == 0
    assert (out / SPLIT_FILE).is_file()
    assert cli.main([*argv, "--source", str(tmp_path / "src" / "train"), "--overwrite"]) == 0
    assert not (out / SPLIT_FILE).exists()
    assert read_tileset(out).given_split is None


# -- end to end: dataset → train → evaluate → the database -----------------------------------------


@pytest.mark.slow  # a real ResNet50 trained and evaluated: minutes on 2 cores (make test-slow)
def test_plant_folders_with_a_split_go_through_train_and_evaluate_into_the_database(
    tmp_path: Path, engine: sa.Engine
) -> None:
    """The tile set's given split is the model's split (train and validation used by `train`, test
    by `evaluate`), display names reach model.json, the evaluation report and `defect_classes`."""
    _split_tree(tmp_path / "src", "val", per_class=4)
    tiles, model_dir, report_dir = tmp_path / "tiles", tmp_path / "model", tmp_path / "report"
    argv = ["dataset", "--format", "folders", "--source", str(tmp_path / "src"), "--out", str(tiles)]
    assert cli.main([*argv, "--keep-split", "--tile", "32", "--no-progress"]) == 0
    given = read_tileset(tiles).given_split
    assert given is not None

    config = TrainingConfig(
        data_dir=tiles,
        out_dir=model_dir,
        input_size=32,
        batch_size=4,
        epochs=1,
        steps_per_epoch=2,
        batchnorm_momentum=0.0,
        workers=1,
        verbose=0,
        seed=3,
    )
    result = train(config)
    split = load_split(model_dir)
    assert split.given
    assert {p: split.part(p) for p in PARTS} == {p: tuple(given[p]) for p in PARTS}
    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    assert meta["training"]["tiles"] == {"train": 12, "validation": 12, "test": 12}
    assert meta["training"]["split"] == "given by the tile set"
    classifier = load_classifier(model_dir)
    assert classifier.catalogue.display_names["rolled-in_scale"] == "Rolled-in Scale"

    assert cli.main(["evaluate", "--model", str(model_dir), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert report["n_images"] == 12 and report["split"] == "test"
    with open(report_dir / "scores.csv", newline="", encoding="utf-8") as handle:
        assert {row["tile"] for row in csv.DictReader(handle)} == set(given["test"])
    assert report["display_names"] == {"ecaillage": "Écaillage", "rolled-in_scale": "Rolled-in Scale"}
    assert "| Écaillage (`ecaillage`) |" in (report_dir / "report.md").read_text(encoding="utf-8")

    with engine.begin() as conn:  # a plant's own classes need ids the paper's seed does not use
        conn.execute(sa.text("DELETE FROM defect_classes"))
    StorageWriter(engine).ensure_catalogue(classifier.catalogue)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name, display_name FROM defect_classes ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        (1, "ecaillage", "Écaillage"),
        (2, "rolled-in_scale", "Rolled-in Scale"),
    ]
    assert result.version == classifier.version


def test_a_model_split_that_differs_from_the_tile_sets_given_split_is_refused(tmp_path: Path) -> None:
    """A model directory keeps its split: one made before the tile set came with a split is not
    silently mixed with it."""
    _split_tree(tmp_path / "src")
    dataset = scan_folders(tmp_path / "src", keep_split=True)
    write_tileset(iter_folder_tiles(dataset, tile=32, progress=False), tmp_path / "tiles", dataset.catalogue)
    tileset = read_tileset(tmp_path / "tiles")
    save_split(make_split(tileset, seed=1), tmp_path / "model")
    with pytest.raises(DatasetError, match=r"differs from the split the tile set .* came with"):
        load_or_make_split(tileset, tmp_path / "model")
    (tmp_path / "model" / "split.json").unlink()
    assert load_or_make_split(tileset, tmp_path / "model").test == tuple(tileset.given_split["test"])  # type: ignore[index]
