"""Grad-CAM (`worker.model.explain`) on the classifier's real network: the closed form the module
uses for a pooled sigmoid head equals Grad-CAM computed with TensorFlow's own gradients; maps have
the tile's size and [0, 1] values; the overlay is an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from frames import grey_image

from worker.core.catalogue import load_catalogue
from worker.core.errors import ModelError
from worker.model.artefact import Classifier, create_untrained_artefact, load_classifier
from worker.model.explain import LAST_STAGE, class_maps, grid_maps, heat_map_png, overlay
from worker.model.preprocessing import preprocess_tiles


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    out: Path = tmp_path_factory.mktemp("explain-model")
    create_untrained_artefact(out, load_catalogue(), input_size=128, seed=5)
    return load_classifier(out)


def _tf_grad_cam(classifier: Classifier, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM as Selvaraju et al. define it, with tf.GradientTape."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    model = classifier.model
    both = keras.Model(model.inputs, [model.get_layer(LAST_STAGE).output, model.output])
    with tf.GradientTape() as tape:
        features, scores = both(tf.constant(batch), training=False)
        target = scores[:, class_index]
    gradients = tape.gradient(target, features).numpy()
    alphas = gradients.mean(axis=(1, 2))  # (N, C)
    cams = np.maximum(np.einsum("nhwc,nc->nhw", features.numpy(), alphas), 0.0)
    tops = cams.max(axis=(1, 2), keepdims=True)
    return np.where(tops > 0, cams / np.where(tops > 0, tops, 1.0), 0.0)


def test_the_closed_form_equals_grad_cam_from_the_backends_gradients(classifier: Classifier) -> None:
    tiles = np.stack([grey_image(256, 256, seed=s) for s in range(4)])
    tiles[1, :96, :96] = 255  # a bright corner
    batch = preprocess_tiles(tiles, classifier.input_size)
    compared = 0
    for c in range(len(classifier.catalogue)):
        ours, theirs = grid_maps(classifier, batch, c), _tf_grad_cam(classifier, batch, c)
        assert ours.shape == theirs.shape == (4, 4, 4)  # 128 px input: a 4 × 4 last stage
        np.testing.assert_allclose(ours, theirs, atol=2e-4)
        compared += int((theirs > 0).sum())
    assert compared > 0, "an all-zero comparison proves nothing"


def test_maps_have_the_tiles_size_and_values_in_0_1_and_overlay_paints_them(classifier: Classifier) -> None:
    tiles = np.stack([grey_image(200, 200, seed=9), np.zeros((200, 200), np.uint8)])
    maps = class_maps(classifier, tiles, "rolling")
    assert maps.shape == (2, 200, 200) and maps.dtype == np.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    painted = overlay(tiles[0], maps[0])
    assert painted.shape == (200, 200, 3) and painted.dtype == np.uint8
    assert not np.array_equal(painted[..., 0], painted[..., 2]) or float(maps[0].max()) == 0.0


def test_a_class_the_model_lacks_is_refused_by_name(classifier: Classifier) -> None:
    with pytest.raises(ModelError, match="no class 'oil'"):
        class_maps(classifier, np.zeros((1, 64, 64), np.uint8), "oil")


def test_feature_models_are_kept_for_the_last_two_networks_only(
    classifier: Classifier, tmp_path: Path
) -> None:
    """The console lets models go (it keeps two); the explainer must not keep them alive."""
    from worker.model import explain  # noqa: PLC0415

    tiles = np.zeros((1, 64, 64), np.uint8)
    others = []
    for n in range(3):
        create_untrained_artefact(tmp_path / f"m{n}", load_catalogue(), input_size=32, seed=n)
        others.append(load_classifier(tmp_path / f"m{n}"))
    for other in (classifier, *others):
        class_maps(other, tiles, "holes")
    kept = [network for network, _ in explain._feature_models]
    assert len(kept) == 2 and kept[0] is others[1].model and kept[1] is others[2].model


def test_a_stored_crop_s_heat_map_is_the_overlay_of_its_class_map_as_png(classifier: Classifier) -> None:
    """`heat_map_png` (what the console serves for a detection's crop) is `overlay(class_maps)`."""
    import cv2  # noqa: PLC0415

    crop = grey_image(180, 240, seed=3)
    png = heat_map_png(classifier, crop, "scratches")
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    expected = overlay(crop, class_maps(classifier, crop[None], "scratches")[0])
    np.testing.assert_array_equal(decoded, expected)
