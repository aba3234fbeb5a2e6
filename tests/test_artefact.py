"""The model artefact: save → load gives the same predictions; every broken file is a clear error;
ImageNet weights load from a local Keras no-top .h5 file only."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import DatasetError, ModelError
from worker.inference import Inferencer
from worker.model.artefact import (
    META_FILE,
    WEIGHTS_FILE,
    create_untrained_artefact,
    load_classifier,
    save_artefact,
)
from worker.model.network import build_classifier
from worker.model.preprocessing import PREPROCESSING_NAME, preprocess_tiles

CATALOGUE = load_catalogue()
SIZE = 32


def _tiles(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An artefact saved from a freshly built model, with that model's own predictions on tiles."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(1)
    model = build_classifier(len(CATALOGUE), SIZE)
    tiles = _tiles(37)
    expected = np.asarray(model.predict_on_batch(preprocess_tiles(tiles, SIZE)))
    out = tmp_path_factory.mktemp("model")
    save_artefact(
        out, model, CATALOGUE, SIZE, "resnet50", np.array([0.3, 0.5, 0.7]),
        training={"epochs": 3, "data_dir": Path("/data/x")}, metrics={"f1": np.float64(0.5)},
    )  # fmt: skip
    return out, tiles, expected


@pytest.fixture(scope="module")
def loaded(saved: tuple[Path, np.ndarray, np.ndarray]):  # type: ignore[no-untyped-def]
    return load_classifier(saved[0], batch_size=16)


def test_round_trip_gives_identical_predictions(saved, loaded) -> None:  # type: ignore[no-untyped-def]
    """Predictions of the loaded artefact (in batches of 16) equal the saved model's own."""
    _, tiles, expected = saved
    got = loaded.predict(tiles)
    assert got.shape == (37, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_model_json_describes_the_artefact(saved, loaded) -> None:  # type: ignore[no-untyped-def]
    """version = sha256 of the weights; catalogue, thresholds by name, input size, backbone,
    pre-processing, training settings and metrics as plain JSON."""
    out = saved[0]
    meta = json.loads((out / META_FILE).read_text())
    assert meta["version"] == hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert meta["catalogue"] == CATALOGUE.to_dict()
    assert meta["thresholds"] == {"holes": 0.3, "scratches": 0.5, "rolling": 0.7}
    assert (meta["input_size"], meta["backbone"], meta["preprocessing"]) == (
        SIZE,
        "resnet50",
        PREPROCESSING_NAME,
    )
    assert meta["training"]["data_dir"] == "/data/x" and meta["metrics"] == {"f1": 0.5}
    assert meta["created_at"]
    assert loaded.version == meta["version"] and loaded.catalogue == CATALOGUE
    assert loaded.thresholds.by_name() == {"holes": 0.3, "scratches": 0.5, "rolling": 0.7}
    assert (loaded.input_size, loaded.backbone, loaded.model_dir) == (SIZE, "resnet50", out)


def test_larger_tiles_are_resized_to_the_input_size(loaded) -> None:  # type: ignore[no-untyped-def]
    """256-px tiles give the predictions of the same tiles shrunk with INTER_AREA beforehand."""
    big = _tiles(3, size=256, seed=2)
    small = np.stack([cv2.resize(t, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for t in big])
    np.testing.assert_allclose(loaded.predict(big), loaded.predict(small), atol=1e-6)


def test_predict_handles_empty_input_and_refuses_non_uint8(loaded) -> None:  # type: ignore[no-untyped-def]
    assert loaded.predict(np.zeros((0, SIZE, SIZE), np.uint8)).shape == (0, 3)
    with pytest.raises(DatasetError, match="uint8"):
        loaded.predict(np.zeros((2, SIZE, SIZE), np.float32))


def test_thresholds_decide_per_class(loaded) -> None:  # type: ignore[no-untyped-def]
    decided = Inferencer(loaded, tile_size=SIZE).post_process(
        np.array([[0.3, 0.49, 0.71], [0.3, np.nan, 1.0]])
    )
    assert decided.tolist() == [[True, False, True], [True, False, True]]


def _copy(saved_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved_dir, tmp_path / "copy"))


def test_changed_weights_are_refused(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A weights file that no longer matches model.json's version is a ModelError."""
    model_dir = _copy(saved[0], tmp_path)
    with open(model_dir / WEIGHTS_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="does not match the version"):
        load_classifier(model_dir)


def test_corrupt_weights_with_matching_version_are_refused(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Garbage in the weights file (hash updated to match) fails in loading, naming the file."""
    model_dir = _copy(saved[0], tmp_path)
    (model_dir / WEIGHTS_FILE).write_bytes(b"not an hdf5 file")
    meta = json.loads((model_dir / META_FILE).read_text())
    meta["version"] = hashlib.sha256(b"not an hdf5 file").hexdigest()
    (model_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=f"{WEIGHTS_FILE}: cannot be loaded"):
        load_classifier(model_dir)


def test_missing_weights_are_refused(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model_dir = _copy(saved[0], tmp_path)
    (model_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match=f"{WEIGHTS_FILE} is missing"):
        load_classifier(model_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "{broken", "expected JSON"),
        (lambda m: {**m, "format": "other/9"}, "expected format"),
        (lambda m: {k: v for k, v in m.items() if k != "input_size"}, "'input_size' must be int"),
        (lambda m: {**m, "backbone": "vgg16"}, "backbone must be one of"),
        (lambda m: {**m, "preprocessing": "tf-scale"}, "pre-processing"),
        (lambda m: {**m, "thresholds": {"holes": 0.5}}, "thresholds must name exactly"),
        (
            lambda m: {**m, "thresholds": {"holes": 1.5, "scratches": 0.5, "rolling": 0.5}},
            r"numbers in \[0, 1\]",
        ),
        (lambda m: {**m, "catalogue": {"classes": []}}, "at least one class"),
    ],
)
def test_broken_model_json_is_a_model_error_naming_the_problem(saved, tmp_path: Path, edit, message) -> None:  # type: ignore[no-untyped-def]
    model_dir = _copy(saved[0], tmp_path)
    meta = json.loads((model_dir / META_FILE).read_text())
    changed = edit(meta)
    (model_dir / META_FILE).write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ModelError, match=message):
        load_classifier(model_dir)


def test_missing_directory_and_missing_model_json_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(tmp_path / "nowhere")
    with pytest.raises(ModelError, match=f"{META_FILE} is missing"):
        load_classifier(tmp_path)


def test_save_refuses_thresholds_that_do_not_fit_the_catalogue(tmp_path: Path) -> None:
    model = build_classifier(2, SIZE)
    two = Catalogue.from_names(["a", "b"])
    with pytest.raises(ModelError, match="expected 2 values"):
        save_artefact(tmp_path, model, two, SIZE, "resnet50", np.array([0.5]), {}, {})
    with pytest.raises(ModelError, match="output shape"):
        save_artefact(tmp_path, model, CATALOGUE, SIZE, "resnet50", np.full(3, 0.5), {}, {})
    assert not (tmp_path / META_FILE).exists()


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py  # noqa: PLC0415

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None
        )
    return arrays


def test_untrained_artefact_is_real_and_reproducible(tmp_path: Path) -> None:
    """create_untrained_artefact: loadable, thresholds 0.5, same seed → same weights.

    (The version hashes the weights file's bytes, which HDF5 stamps with times, so each save is a
    new version even for equal weights.)"""
    two = Catalogue.from_names(["spots", "lines"])
    version = create_untrained_artefact(tmp_path / "a", two, seed=3)
    create_untrained_artefact(tmp_path / "b", two, seed=3)
    classifier = load_classifier(tmp_path / "a")
    assert classifier.version == version and classifier.catalogue == two
    np.testing.assert_array_equal(classifier.thresholds.array, [0.5, 0.5])
    assert classifier.predict(_tiles(4)).shape == (4, 2)
    a, b = _h5_arrays(tmp_path / "a" / WEIGHTS_FILE), _h5_arrays(tmp_path / "b" / WEIGHTS_FILE)
    assert a.keys() == b.keys() and len(a) > 300
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _keras_notop_h5(path: Path, seed: int) -> list[np.ndarray]:
    """A file in the layout of Keras' published ResNet50 no-top weights (legacy HDF5 by layer)."""
    import h5py  # noqa: PLC0415
    import keras  # noqa: PLC0415
    from keras.src.legacy.saving import legacy_h5_format  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg"
    )
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return [np.asarray(w) for w in base.get_weights()]


def _other_model_h5(path: Path) -> None:
    """A valid Keras legacy weights file of some other network."""
    import h5py  # noqa: PLC0415
    import keras  # noqa: PLC0415
    from keras.src.legacy.saving import legacy_h5_format  # noqa: PLC0415

    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Dense(2)])
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, other)


def test_imagenet_weights_load_from_a_local_keras_notop_file(tmp_path: Path) -> None:
    """--imagenet-weights: the backbone takes the file's weights; the head stays freshly initialised."""
    expected = _keras_notop_h5(tmp_path / "resnet50_notop.h5", seed=5)
    model = build_classifier(3, SIZE, imagenet_weights=tmp_path / "resnet50_notop.h5")
    backbone = model.get_weights()[: len(expected)]
    assert all(np.array_equal(a, b) for a, b in zip(backbone, expected, strict=True))


def test_imagenet_weights_missing_or_unfitting_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        build_classifier(3, SIZE, imagenet_weights=tmp_path / "absent.h5")
    (tmp_path / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(ModelError, match="does not fit a resnet50"):
        build_classifier(3, SIZE, imagenet_weights=tmp_path / "garbage.h5")
    _other_model_h5(tmp_path / "other.h5")
    with pytest.raises(ModelError, match="does not fit a resnet50"):
        build_classifier(3, SIZE, imagenet_weights=tmp_path / "other.h5")
    with pytest.raises(ModelError, match="expected an HDF5 file"):
        (tmp_path / "w.npz").write_bytes(b"x")
        build_classifier(3, SIZE, imagenet_weights=tmp_path / "w.npz")


def test_warm_up_leaves_predictions_unchanged(saved, loaded) -> None:  # type: ignore[no-untyped-def]
    """The inferencer's warm-up only compiles: later predictions are still the saved model's."""
    _, tiles, expected = saved
    assert Inferencer(loaded, tile_size=SIZE).warm_up(batch_tiles=7) > 0
    np.testing.assert_allclose(loaded.predict(tiles[:5]), expected[:5], rtol=0, atol=1e-6)
