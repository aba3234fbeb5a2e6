"""`steel-worker predict`: per-tile probabilities and ✓ marks for image files, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.cli import main
from worker.core.catalogue import load_catalogue
from worker.model.artefact import create_untrained_artefact


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    # thresholds 0 (always reached), 0.5, 1 (reached only at exactly 1): ✓ marks are predictable
    create_untrained_artefact(out, load_catalogue(), input_size=32, thresholds=np.array([0.0, 0.5, 1.0]))
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "frame.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 256, (100, 160), dtype=np.uint8))
    return path


def test_json_output_lists_every_tile_with_probabilities_and_defects(model_dir, image, capsys) -> None:  # type: ignore[no-untyped-def]
    """A 100×160 image with --tile 64 gives 2 rows × 3 columns of tiles covering it."""
    assert main(["predict", "--model", str(model_dir), "--tile", "64", "--json", str(image)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["thresholds"] == {"holes": 0.0, "scratches": 0.5, "rolling": 1.0}
    tiles = document["tiles"]
    assert {(t["x"], t["y"]) for t in tiles} == {(x, y) for x in (0, 48, 96) for y in (0, 36)}
    for t in tiles:
        assert t["image"] == str(image) and set(t["probabilities"]) == {"holes", "scratches", "rolling"}
        assert "holes" in t["defects"] and "rolling" not in t["defects"]
        assert ("scratches" in t["defects"]) == (t["probabilities"]["scratches"] >= 0.5)


def test_table_output_marks_classes_over_threshold(model_dir, image, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["predict", "--model", str(model_dir), "--tile", "64", str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["image", "x", "y"]
    assert len(lines) == 2 + 6 and all(line.count("✓") >= 1 for line in lines[2:])


def test_unreadable_image_exits_2_naming_the_file(model_dir, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", "--model", str(model_dir), str(bad)]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err


def test_missing_model_exits_2(tmp_path: Path, image: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["predict", "--model", str(tmp_path / "none"), str(image)]) == 2
    assert "does not exist" in capsys.readouterr().err
