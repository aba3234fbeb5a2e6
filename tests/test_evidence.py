"""Evidence crops (`worker.core.evidence`): what the model saw, kept for the tiles with a detection
and for a stable sample of clean ones; through `FrameClassifier` with a real (untrained) model."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import pytest
from frames import grey_image, make_meta
from hypothesis import given, settings
from hypothesis import strategies as st
from streaming_harness import loaded_model, untrained_model

from worker.core.errors import ConfigError
from worker.core.evidence import JPEG, EvidencePolicy, decode, sampled
from worker.core.records import DecodedFrame, KafkaCoordinates, TileRef
from worker.core.thresholds import ClassThresholds
from worker.inference import Inferencer
from worker.model.artefact import Classifier
from worker.streaming.classify import FrameClassifier, tile_frame


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return loaded_model(untrained_model(tmp_path_factory))


def _inferencer(classifier: Classifier, threshold: float) -> Inferencer:
    changed = copy.copy(classifier)
    changed.thresholds = ClassThresholds.from_values(classifier.catalogue.names, [threshold] * 3)
    return Inferencer(changed, tile_size=256)


def _frame(height: int, width: int, frame_id: str = "f1") -> DecodedFrame:
    return DecodedFrame(
        meta=make_meta(frame_id),
        source=KafkaCoordinates("mill.frames", 0, 0),
        image=grey_image(height, width),
    )


def _tile(index: int = 0, size: int = 256, frame_id: str = "f1") -> TileRef:
    return TileRef(frame_id=frame_id, index=index, x=index * size, y=0, size=size)


def test_a_crop_holds_the_pixels_the_model_saw_within_jpeg_error() -> None:
    window = grey_image(256, 256, seed=3)
    image = EvidencePolicy(jpeg_quality=95).encode(_tile(), window)
    assert (image.content_type, image.width, image.height, image.sampled) == (JPEG, 256, 256, False)
    assert image.data[:3] == b"\xff\xd8\xff"  # a JPEG
    error = np.abs(decode(image).astype(int) - window.astype(int))
    assert error.mean() < 2.0 and error.max() <= 40


def test_a_crop_larger_than_the_max_side_is_shrunk_and_a_smaller_one_kept_as_it_is() -> None:
    window = grey_image(256, 256, seed=4)
    shrunk = EvidencePolicy(max_side=128).encode(_tile(), window)
    assert (shrunk.width, shrunk.height, shrunk.size) == (128, 128, 256)
    assert decode(shrunk).shape == (128, 128)
    small = EvidencePolicy(max_side=512).encode(_tile(size=64), grey_image(64, 64))
    assert (small.width, small.height) == (64, 64)


def test_every_tile_with_a_detection_has_a_crop_and_no_clean_tile_without_sampling() -> None:
    pixels = np.stack([grey_image(64, 64, seed=i) for i in range(6)])
    tiles = [_tile(i, 64) for i in range(6)]
    crops = EvidencePolicy(clean_sample=0.0).crops(tiles, pixels, [4, 1, 4])
    assert [(c.tile_index, c.sampled) for c in crops] == [(1, False), (4, False)]
    assert EvidencePolicy(clean_sample=0.0).crops(tiles, pixels, []) == ()
    everything = EvidencePolicy(clean_sample=1.0).crops(tiles, pixels, [2])
    assert [(c.tile_index, c.sampled) for c in everything] == [(i, i != 2) for i in range(6)]


def test_the_clean_sample_is_stable_per_tile_and_near_its_rate() -> None:
    picks = [sampled(f"F-{n}", t, 0.05) for n in range(2000) for t in range(5)]
    assert picks == [sampled(f"F-{n}", t, 0.05) for n in range(2000) for t in range(5)]
    assert 0.04 < sum(picks) / len(picks) < 0.06
    assert not any(sampled(f"F-{n}", 0, 0.0) for n in range(1000))
    assert all(sampled(f"F-{n}", 0, 1.0) for n in range(1000))


@given(st.text(max_size=300), st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_sampling_is_total_over_any_frame_id(frame_id: str, tile: int) -> None:
    """Frame ids reach this after validation, but the hash must not care what they hold."""
    assert sampled(frame_id, tile, 0.5) in (True, False)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"jpeg_quality": 0}, "EVIDENCE_JPEG_QUALITY"),
        ({"jpeg_quality": 101}, "EVIDENCE_JPEG_QUALITY"),
        ({"max_side": 4}, "EVIDENCE_MAX_SIDE"),
        ({"clean_sample": -0.1}, "EVIDENCE_CLEAN_SAMPLE"),
        ({"clean_sample": 1.5}, "EVIDENCE_CLEAN_SAMPLE"),
        ({"clean_sample": float("nan")}, "EVIDENCE_CLEAN_SAMPLE"),
    ],
)
def test_a_policy_out_of_range_names_its_setting(options: dict[str, float], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        EvidencePolicy(**options)  # type: ignore[arg-type]


def test_decode_refuses_bytes_that_are_not_an_image() -> None:
    with pytest.raises(ValueError, match="not an encoded image"):
        decode(b"\x00" * 64)


def test_the_classifier_keeps_the_crop_of_each_tile_it_found_something_on(classifier: Classifier) -> None:
    """Threshold 0 finds every class on every tile: every tile has its crop, equal (within JPEG
    error) to the window of the frame the model classified; threshold 1.01 finds nothing."""
    frame = _frame(256, 600)
    everything = _inferencer(classifier, 0.0)
    tiled = tile_frame(frame, everything)
    policy = EvidencePolicy(jpeg_quality=95, clean_sample=0.0)
    (result,) = FrameClassifier(everything, policy).classify([tiled], datetime.now(UTC))
    assert {d.tile_index for d in result.detections} == {0, 1, 2}
    assert [(c.tile_index, c.x, c.y, c.size) for c in result.evidence] == [
        (t.index, t.x, t.y, t.size) for t in tiled.tiles
    ]
    for crop in result.evidence:
        window = frame.image[crop.y : crop.y + crop.size, crop.x : crop.x + crop.size]
        assert np.abs(decode(crop).astype(int) - window.astype(int)).mean() < 2.0

    strict = _inferencer(classifier, 0.5)  # an untrained model: some tiles over it, some not
    (some,) = FrameClassifier(strict, policy).classify([tile_frame(frame, strict)], datetime.now(UTC))
    assert [c.tile_index for c in some.evidence] == sorted({d.tile_index for d in some.detections})
    (without,) = FrameClassifier(everything).classify([tiled], datetime.now(UTC))
    assert without.evidence == ()  # no policy (EVIDENCE_IMAGES=off): no crops


def test_a_padded_edge_tile_is_stored_as_the_model_saw_it_padding_included(classifier: Classifier) -> None:
    frame = _frame(100, 300)  # shorter than a tile: reflect-padded to 256 rows
    everything = _inferencer(classifier, 0.0)
    tiled = tile_frame(frame, everything)
    (result,) = FrameClassifier(everything, EvidencePolicy(jpeg_quality=95)).classify(
        [tiled], datetime.now(UTC)
    )
    first = result.evidence[0]
    assert (first.width, first.height) == (256, 256)
    assert np.abs(decode(first).astype(int) - tiled.pixels[0].astype(int)).mean() < 2.0
