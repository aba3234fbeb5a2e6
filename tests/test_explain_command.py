"""`steel-worker explain`: Grad-CAM maps of image tiles written as PNG overlays and NPY maps with an
index; clear errors; and the known answer: on a small network trained where one class can only be
seen in the top-left quadrant of a tile and the other only in the bottom-right, each class's map
puts its mass in its own quadrant."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from worker.cli import main
from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.thresholds import ClassThresholds
from worker.model.artefact import Classifier, create_untrained_artefact
from worker.model.explain_command import explain_images

TILE = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    # thresholds 0 (always reached), 0.5, 1 (reached only at exactly 1): which maps are made is known
    create_untrained_artefact(out, load_catalogue(), input_size=32, thresholds=np.array([0.0, 0.5, 1.0]))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 100×160 frame (2 × 3 tiles of 64) and a 64×64 one with the same file stem elsewhere."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "a").mkdir()
    (root / "b").mkdir()
    cv2.imwrite(str(root / "a" / "frame.png"), rng.integers(0, 256, (100, 160), dtype=np.uint8))
    cv2.imwrite(str(root / "b" / "frame.png"), rng.integers(0, 256, (64, 64), dtype=np.uint8))
    return [root / "a" / "frame.png", root / "b" / "frame.png"]


def _explain(*args: str) -> int:
    return main(["explain", *args])


def test_maps_of_the_classes_over_threshold_are_written_with_an_index(
    model_dir: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """holes (threshold 0) is mapped on every tile, rolling (threshold 1) on none, scratches where its
    score reaches 0.5; each map is a PNG overlay of the tile's size and an NPY map in [0, 1]; the
    index (JSON and CSV) lists them with scores and thresholds; one progress line per image."""
    out = tmp_path / "maps"
    assert _explain("--model", str(model_dir), "--out", str(out), "--tile", str(TILE), *map(str, images)) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("explain [")]
    assert len(progress) == 2 and "[1/2]" in progress[0] and "6 tiles" in progress[0]
    assert "[2/2]" in progress[1] and "1 tiles" in progress[1]
    assert f"index: {out / 'index.json'}" in captured.out

    index = json.loads((out / "index.json").read_text())
    assert index["thresholds"] == {"holes": 0.0, "scratches": 0.5, "rolling": 1.0}
    assert len(index["version"]) == 64 and index["tile"] == TILE
    maps = index["maps"]
    holes = [m for m in maps if m["class_name"] == "holes"]
    first = [(m["x"], m["y"]) for m in holes if m["image"] == str(images[0])]
    assert sorted(first) == sorted((x, y) for x in (0, 48, 96) for y in (0, 36))
    assert [(m["x"], m["y"]) for m in holes if m["image"] == str(images[1])] == [(0, 0)]
    assert not [m for m in maps if m["class_name"] == "rolling"]
    for m in maps:
        assert m["over_threshold"] and m["score"] >= m["threshold"]
        assert m["overlay"] == f"{m['overlay'][:-4]}.png" and m["heat"] == f"{m['overlay'][:-4]}.npy"
        assert m["overlay"].endswith(f"x{m['x']:05d}_y{m['y']:05d}_{m['class_name']}.png")
        painted = cv2.imread(str(out / m["overlay"]))
        assert painted is not None and painted.shape == (TILE, TILE, 3)
        heat = np.load(out / m["heat"])
        assert heat.shape == (TILE, TILE) and heat.dtype == np.float32
        assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    folders = {m["overlay"].split("/")[0] for m in maps}
    assert folders == {"frame", "frame-2"}  # one folder per image, a repeated stem numbered

    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["class_name"], r["overlay"]) for r in rows] == [
        (m["image"], m["class_name"], m["overlay"]) for m in maps
    ]
    assert {r["threshold"] for r in rows if r["class_name"] == "holes"} == {"0.0"}


def test_named_classes_are_mapped_on_every_tile_found_there_or_not(
    model_dir: Path, images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    args = ["--model", str(model_dir), "--out", str(out), "--tile", str(TILE), "--class", "rolling"]
    assert _explain(*args, str(images[0])) == 0
    maps = json.loads((out / "index.json").read_text())["maps"]
    assert len(maps) == 6 and {m["class_name"] for m in maps} == {"rolling"}
    assert not any(m["over_threshold"] for m in maps)  # threshold 1: never reached, mapped all the same
    assert all(m["threshold"] == 1.0 for m in maps)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing model", "does not exist"),
        ("missing image", "image {image} does not exist"),
        ("unreadable image", "cannot read image {image}"),
        ("unknown class", "--class: the model has no class 'oil'; its classes are holes, scratches, rolling"),
    ],
)
def test_errors_name_what_is_wrong_and_write_nothing(
    case: str,
    message: str,
    *,
    model_dir: Path,
    images: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, image, extra = model_dir, images[0], []
    if case == "missing model":
        model = tmp_path / "no-model"
    elif case == "missing image":
        image = tmp_path / "nothing.png"
    elif case == "unreadable image":
        image = tmp_path / "bad.png"
        image.write_bytes(b"not an image")
    else:
        extra = ["--class", "holes", "--class", "oil"]
    out = tmp_path / "maps"
    assert _explain("--model", str(model), "--out", str(out), *extra, str(image)) == 2
    err = capsys.readouterr().err
    assert err.startswith("steel-worker explain: error: ")
    assert message.format(image=image) in err
    assert not out.exists()


def test_help_explains_the_files_and_how_to_read_a_map(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--class NAME", "index.json", "x00224_y00000_scratches.png", "reading a map", "stem>-2"):
        assert needle in text, needle


# ---------------------------------------------------------------------------------------------
# The known answer
# ---------------------------------------------------------------------------------------------

SIZE, HALF = 32, 16
CLASSES = ("spot", "pit")  # spot: a bright square, only ever top-left; pit: a dark one, only bottom-right


def _known_tiles(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tiles = rng.normal(128, 12, (n, SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    for tile, (spot, pit) in zip(tiles, labels, strict=True):
        if spot:
            r, c = rng.integers(1, HALF - 7, 2)
            tile[r : r + 6, c : c + 6] = 250
        if pit:
            r, c = rng.integers(HALF + 1, SIZE - 7, 2)
            tile[r : r + 6, c : c + 6] = 10
    return tiles, labels


@pytest.fixture(scope="module")
def known_answer_classifier() -> Classifier:
    """A small network with the classifier's head (features → global average pooling → Dense
    sigmoid, the layers named as `worker.model.explain` expects), trained for a few seconds on the
    quadrant tiles, behind the artefact's own `Classifier` (its pre-processing and predict)."""
    import keras  # noqa: PLC0415

    from worker.model.explain import LAST_STAGE  # noqa: PLC0415
    from worker.model.network import HEAD_NAME  # noqa: PLC0415
    from worker.model.preprocessing import preprocess_tiles  # noqa: PLC0415

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 128)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=LAST_STAGE)(x)  # 8 × 8 grid
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid", name=HEAD_NAME)(x))
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    tiles, labels = _known_tiles(256, seed=0)
    model.fit(preprocess_tiles(tiles, SIZE), labels, batch_size=32, epochs=10, verbose=0)
    catalogue = Catalogue.from_names(list(CLASSES))
    return Classifier(
        model=model,
        model_dir=Path("tiny"),
        catalogue=catalogue,
        thresholds=ClassThresholds.from_values(catalogue.names, [0.5, 0.5]),
        version="0" * 64,
        input_size=SIZE,
        backbone="tiny",
        meta={},
    )


def _quadrant_share(heat: np.ndarray, quadrant: str) -> float:
    part = heat[:HALF, :HALF] if quadrant == "top-left" else heat[HALF:, HALF:]
    return float(part.sum() / max(float(heat.sum()), 1e-9))


def test_known_answer_each_class_s_map_lies_in_the_only_quadrant_it_can_be_seen_in(
    known_answer_classifier: Classifier, tmp_path: Path
) -> None:
    """Through `explain_images` (the command's path: tiling, scores, maps, files): on held-out
    tiles, the model finds the classes, and where a class is, most of its map's mass is in the
    quadrant the class lives in (a quarter of the tile: an uninformed map would put 25 % there) and
    the map's hottest pixel is inside it."""
    from worker.inference import Inferencer  # noqa: PLC0415

    tiles, labels = _known_tiles(24, seed=1)
    paths = []
    for i, tile in enumerate(tiles):
        paths.append(tmp_path / f"tile{i:02d}.png")
        cv2.imwrite(str(paths[-1]), tile)
    inferencer = Inferencer(known_answer_classifier, tile_size=SIZE)
    out = tmp_path / "maps"
    rows = explain_images(inferencer, paths, out, list(CLASSES))
    assert len(rows) == 2 * len(tiles)
    found = np.array([[r.over_threshold for r in rows if r.image == str(p)] for p in paths])
    assert (found == labels.astype(bool)).mean() >= 0.9, "the model did not learn the classes"

    shares: dict[str, list[float]] = {"spot": [], "pit": []}
    for row in rows:
        c = CLASSES.index(row.class_name)
        if not labels[paths.index(Path(row.image)), c]:
            continue
        heat: Any = np.load(out / row.heat)
        quadrant = "top-left" if row.class_name == "spot" else "bottom-right"
        shares[row.class_name].append(_quadrant_share(heat, quadrant))
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        inside = all(v < HALF for v in peak) if quadrant == "top-left" else all(v >= HALF for v in peak)
        assert inside, (row.image, row.class_name, peak)
    for name, values in shares.items():
        assert len(values) >= 5, name
        assert np.mean(values) > 0.75 and min(values) > 0.5, (name, np.round(values, 2))
