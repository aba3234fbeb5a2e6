"""The one inference path (`worker.inference`): tiling, forward, decisions, warm-up, and the
promise it exists for: the worker and `steel-worker predict` give the same scores and decisions
for the same image, to the pixel. Real (untrained) model throughout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from frames import frame_record, grey_image, inbound, make_meta

from worker.cli import main
from worker.core import contracts
from worker.core.errors import ConfigError, ModelError
from worker.core.tiling import tile_count
from worker.inference import Inferencer, tile_layout
from worker.streaming import decode as d
from worker.streaming.classify import FrameClassifier, tile_frame

LIMITS = d.DecodeLimits(max_frame_bytes=2_000_000, max_frame_pixels=4_000_000)


@pytest.fixture(scope="module")
def inferencer(classifier: Any) -> Inferencer:
    return Inferencer(classifier, tile_size=256)


@pytest.mark.parametrize(
    ("height", "width", "overlap", "expected"),
    [
        (256, 600, 0, (256, 600, [(0, 0), (172, 0), (344, 0)])),
        (100, 300, 0, (256, 300, [(0, 0), (44, 0)])),  # rows padded up to one tile
        (40, 30, 0, (256, 256, [(0, 0)])),
        (512, 256, 64, (512, 256, [(0, 0), (0, 128), (0, 256)])),
    ],
)
def test_the_layout_pads_short_sides_and_covers_every_pixel(
    height: int, width: int, overlap: int, expected: tuple[int, int, list[tuple[int, int]]]
) -> None:
    padded_h, padded_w, windows = tile_layout(height, width, 256, overlap)
    assert (padded_h, padded_w, [(w.x, w.y) for w in windows]) == expected
    assert len(windows) == tile_count(height, width, 256, overlap)  # the decoder's bound agrees


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (256, 256), (256, -1), (True, 0), (256.0, 0)])
def test_a_tiling_that_cannot_cover_an_image_is_refused(tile: Any, overlap: Any, classifier: Any) -> None:
    with pytest.raises(ConfigError, match="tiling: expected a tile side >= 1"):
        tile_layout(300, 300, tile, overlap)
    with pytest.raises(ConfigError, match="tiling"):
        Inferencer(classifier, tile, overlap)


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (10,), (10, 10, 3)])
def test_pre_process_refuses_what_is_not_a_grey_image(inferencer: Inferencer, shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="expected a grey image"):
        inferencer.pre_process(np.zeros(shape, np.uint8))


def test_predict_is_pre_process_forward_post_process(inferencer: Inferencer) -> None:
    image = grey_image(300, 700, seed=3)
    predicted = inferencer.predict(image)
    tiles = inferencer.pre_process(image)
    assert [(w.x, w.y) for w in predicted.tiles.windows] == [(w.x, w.y) for w in tiles.windows]
    np.testing.assert_array_equal(predicted.tiles.pixels, tiles.pixels)
    np.testing.assert_array_equal(predicted.tiles.pixels[-1], image[44:300, 444:700])
    np.testing.assert_allclose(predicted.scores, inferencer.forward(tiles.pixels), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        predicted.decisions, predicted.scores >= inferencer.thresholds.array[None, :]
    )
    assert predicted.scores.dtype == np.float32 and predicted.decisions.dtype == bool


def test_a_model_answering_in_the_wrong_shape_is_a_model_error(classifier: Any) -> None:
    class Truncating:
        catalogue, thresholds, version = classifier.catalogue, classifier.thresholds, "v-broken"

        def predict(self, tiles: np.ndarray) -> np.ndarray:
            return np.zeros((len(tiles) - 1, len(self.catalogue)), np.float32)

    with pytest.raises(ModelError, match=r"predict returned shape \(1, 3\) for 2 tiles, expected \(2, 3\)"):
        Inferencer(Truncating()).forward(np.zeros((2, 256, 256), np.uint8))


def test_warm_up_runs_the_batch_size_and_a_single_tile(classifier: Any) -> None:
    seen: list[int] = []

    class Recording:
        catalogue, thresholds, version = classifier.catalogue, classifier.thresholds, classifier.version

        def predict(self, tiles: np.ndarray) -> np.ndarray:
            seen.append(len(tiles))
            return np.asarray(classifier.predict(tiles))

    assert Inferencer(Recording(), tile_size=64).warm_up(batch_tiles=12) >= 0
    assert seen == [12, 1]


def test_the_worker_and_predict_give_the_same_scores_and_decisions_for_one_image(
    model_dir: Path,
    classifier: Any,
    inferencer: Inferencer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One PNG image: `steel-worker predict --json` on its file, and the worker's path on the frame
    message that carries it (decode → tile_frame → FrameClassifier). Same tiles, same places, the
    same scores (to predict's six decimals) and the same decisions, class by class."""
    image = grey_image(300, 700, seed=11)
    _, value, headers = frame_record(make_meta("f-same"), image, contracts.PNG)
    path = tmp_path / "frame.png"
    path.write_bytes(value)

    assert main(["predict", "--model", str(model_dir), "--json", str(path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == classifier.version

    frame = d.decode_message(inbound(value, headers), LIMITS)
    assert not isinstance(frame, d.Rejected)
    tiled = tile_frame(frame, inferencer)
    (result,) = FrameClassifier(inferencer).classify([tiled], datetime.now(UTC))

    assert [(t["x"], t["y"]) for t in document["tiles"]] == [(t.x, t.y) for t in tiled.tiles]
    worker_scores = inferencer.forward(tiled.pixels)
    names = classifier.catalogue.names
    predict_scores = np.array([[t["probabilities"][n] for n in names] for t in document["tiles"]])
    np.testing.assert_allclose(worker_scores, predict_scores, rtol=0, atol=1e-6)
    predicted = {(i, n) for i, t in enumerate(document["tiles"]) for n in t["defects"]}
    detected = {(det.tile_index, det.class_name) for det in result.detections}
    assert detected == predicted
    by_tile_class = {(det.tile_index, det.class_name): det.confidence for det in result.detections}
    for (i, name), confidence in by_tile_class.items():
        assert confidence == pytest.approx(document["tiles"][i]["probabilities"][name], abs=1e-6)


def test_thresholds_keep_one_shape_from_the_artefact_to_the_models_row(
    model_dir: Path, classifier: Any, database_url: str
) -> None:
    """model.json's `{class: threshold}` is what the loaded model, the inferencer and the
    `models.thresholds` column hold, class for class, in catalogue order."""
    import sqlalchemy as sa  # noqa: PLC0415

    from worker.model.artefact import read_model_meta  # noqa: PLC0415
    from worker.storage.engine import create_engine  # noqa: PLC0415
    from worker.storage.writer import StorageWriter  # noqa: PLC0415

    stored_in_artefact = read_model_meta(model_dir)["thresholds"]
    inferencer = Inferencer(classifier)
    assert inferencer.thresholds is classifier.thresholds
    assert inferencer.thresholds.by_name() == stored_in_artefact
    assert list(inferencer.thresholds.names) == list(classifier.catalogue.names)
    engine = create_engine(database_url)
    try:
        writer = StorageWriter(engine)
        writer.ensure_catalogue(classifier.catalogue)
        writer.register_model(
            classifier.version, "resnet50", classifier.input_size, classifier.catalogue.names,
            inferencer.thresholds, {},
        )  # fmt: skip
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT thresholds FROM models")).scalar_one()
    finally:
        engine.dispose()
    assert row == stored_in_artefact


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0.5, 0.5], "expected 3 values in \\[0, 1\\]"),
        ([0.5, 0.5, 1.5], "expected 3 values in \\[0, 1\\]"),
        ([0.5, float("nan"), 0.5], "expected 3 values in \\[0, 1\\]"),
        ([[0.5, 0.5, 0.5]], "expected 3 values in \\[0, 1\\]"),
    ],
)
def test_thresholds_that_do_not_fit_the_classes_are_a_model_error(values: Any, message: str) -> None:
    from worker.core.thresholds import ClassThresholds  # noqa: PLC0415

    with pytest.raises(ModelError, match=message):
        ClassThresholds.from_values(("holes", "scratches", "rolling"), values)
    with pytest.raises(ModelError, match="must name exactly the classes"):
        ClassThresholds.from_mapping(("holes", "scratches"), {"holes": 0.5}, source="model.json")
    with pytest.raises(ModelError, match="must be numbers in \\[0, 1\\]"):
        ClassThresholds.from_mapping(("holes",), {"holes": True}, source="model.json")


# --- test-time augmentation ------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "views"), [("flips", 4), ("flips+rot90", 8)])
def test_tta_scores_are_the_mean_of_the_scores_of_the_transformed_tiles(
    classifier: Any, mode: str, views: int
) -> None:
    from worker.inference import tta_views  # noqa: PLC0415

    tiles = np.stack([grey_image(64, 64, seed=s) for s in range(3)])
    tiles[0, :20, :30] = 255  # an asymmetric tile: its views differ
    transformed = tta_views(tiles, mode)
    assert len(transformed) == views and np.array_equal(transformed[0], tiles)
    assert len({v.tobytes() for v in transformed}) == views  # all different for this tile set
    expected = np.mean([classifier.predict(v) for v in transformed], axis=0)
    got = Inferencer(classifier, tile_size=64, tta=mode).forward(tiles)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (3, len(classifier.catalogue)) and got.dtype == np.float32


def test_without_tta_scores_are_the_models_own(classifier: Any) -> None:
    tiles = np.stack([grey_image(64, 64, seed=9)])
    np.testing.assert_array_equal(
        Inferencer(classifier, tile_size=64).forward(tiles), classifier.predict(tiles)
    )


def test_an_unknown_tta_mode_is_refused_when_the_inferencer_is_made(classifier: Any) -> None:
    with pytest.raises(
        ConfigError, match="test-time augmentation: expected one of none, flips, flips\\+rot90"
    ):
        Inferencer(classifier, tta="rot45")


def test_predict_and_the_worker_settings_take_tta(
    classifier: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from worker.streaming.settings import load_settings  # noqa: PLC0415

    image = tmp_path / "tile.png"
    import cv2  # noqa: PLC0415

    cv2.imwrite(str(image), grey_image(256, 256, seed=4))
    assert (
        main(["predict", "--model", str(classifier.model_dir), str(image), "--json", "--tta", "flips"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["tiles"]
    settings = load_settings(
        {"MODEL_TTA": "flips+rot90"},
        {"bootstrap_servers": "x:1", "database_url": "postgresql://u@h/d", "model_path": "m"},
    )
    assert settings.model_tta == "flips+rot90"
    with pytest.raises(ConfigError, match="MODEL_TTA"):
        load_settings(
            {"MODEL_TTA": "sideways"},
            {"bootstrap_servers": "x:1", "database_url": "postgresql://u@h/d", "model_path": "m"},
        )
