"""`steel-worker dataset` end to end through `worker.cli.main`: files, table, bad input refused.

`COMMAND_MODULES` is narrowed to the dataset command so that these tests depend on no other command.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker import cli
from worker.core.tileset import read_tile, read_tileset


@pytest.fixture(autouse=True)
def _dataset_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("worker.datasets.command",))


def test_synthetic_tile_set_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """3 frames → 21 tiles with labels.csv and catalogue.json; the table counts classes and combinations."""
    out = tmp_path / "tiles"
    argv = ["dataset", "--format", "synthetic", "--frames", "3", "--seed", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "synthetic: 100%" in captured.err  # the progress bar
    tileset = read_tileset(out)
    assert len(tileset) == 21
    assert tileset.catalogue.names == ("holes", "scratches", "rolling")
    assert len(set(tileset.sources)) == 3
    assert read_tile(tileset.path(0)).shape == (256, 256)
    assert "21 tiles from 3 images" in captured.out
    clean = int((tileset.labels.sum(axis=1) == 0).sum())
    assert any(line.split()[:2] == ["(clean)", str(clean)] for line in captured.out.splitlines())
    for i, name in enumerate(tileset.catalogue.names):
        count = int(tileset.labels[:, i].sum())
        assert any(line.split()[:2] == [name, str(count)] for line in captured.out.splitlines())


def test_non_empty_out_is_refused_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run into the same --out exits 2; with --overwrite it replaces the set, byte for byte."""
    out = tmp_path / "tiles"
    argv = [
        "dataset",
        "--format",
        "synthetic",
        "--frames",
        "2",
        "--seed",
        "7",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    first = (out / "labels.csv").read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert "is not empty" in capsys.readouterr().err
    (out / "tiles" / "stale.png").write_bytes(b"old")
    assert cli.main([*argv, "--overwrite"]) == 0
    assert (out / "labels.csv").read_bytes() == first
    assert not (out / "tiles" / "stale.png").exists()


def test_tile_size_and_frame_size_options(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = ["dataset", "--format", "synthetic", "--frames", "1", "--frame-width", "320", "--tile", "128"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    tileset = read_tileset(out)
    assert sorted(map(tuple, tileset.origins.tolist())) == [(x, y) for x in (0, 96, 192) for y in (0, 128)]


def test_synthetic_with_a_catalogue_lacking_its_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = tmp_path / "plant.json"
    catalogue.write_text(json.dumps({"classes": [{"id": 1, "name": "crazing"}]}))
    argv = ["dataset", "--format", "synthetic", "--catalogue", str(catalogue), "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    assert "lacks classes ['holes', 'scratches', 'rolling']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_severstal_class_map_to_an_unknown_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train_images").mkdir()
    cv2.imwrite(str(tmp_path / "train_images" / "a.png"), np.zeros((256, 256), np.uint8))
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    base = ["dataset", "--format", "severstal", "--source", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--class-map", "1=holes,2=dents"]) == 2
    assert "names classes ['dents'] that are not in catalogue" in capsys.readouterr().err
    assert cli.main([*base, "--class-map", "one=holes"]) == 2
    assert "--class-map: expected comma-separated ID=NAME pairs" in capsys.readouterr().err
    assert cli.main([*base, "--no-progress"]) == 0
    assert read_tileset(tmp_path / "o").labels.tolist() == [[0, 0, 0]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "voc"], "--source is required for --format voc"),
        (["--format", "synthetic", "--min-pixels", "0"], "--min-pixels must be at least 1"),
        (["--format", "synthetic", "--frames", "0"], "--frames must be >= 1, received 0"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert cli.main(["dataset", *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_help_documents_formats_defaults_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dataset", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("severstal", "folders", "voc", "synthetic", "(default: 64)", "200×200", "examples:"):
        assert needle in text
