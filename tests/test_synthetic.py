"""The synthetic frame generator: drawn shapes match the masks, labels match the masks, seeds replay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.errors import CatalogueError, ConfigError
from worker.core.tiling import tile_windows
from worker.datasets.synthetic import (
    SYNTHETIC_CLASSES,
    DefectPlacement,
    SyntheticFrame,
    SyntheticFrameGenerator,
    iter_synthetic_tiles,
    tile_labels,
)

WINDOWS = tile_windows(256, 1600, 256)


def _paired_frames(seed: int, defects: list[DefectPlacement]) -> tuple[SyntheticFrame, SyntheticFrame]:
    """The same random state rendered without and with `defects`."""
    plain = SyntheticFrameGenerator(seed).render([])
    marked = SyntheticFrameGenerator(seed).render(defects)
    return plain, marked


@pytest.mark.parametrize("class_name", SYNTHETIC_CLASSES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_defect_changes_the_image_only_at_its_mask(class_name: str, seed: int) -> None:
    """Pixels change only in and just around (soft edge) the mask; inside it they change a lot."""
    placement = DefectPlacement(class_name, row=128, column=800)
    plain, marked = _paired_frames(seed, [placement])
    mask = marked.masks[class_name]
    assert mask.any()
    assert all(not marked.masks[n].any() for n in SYNTHETIC_CLASSES if n != class_name)
    diff = np.abs(marked.image.astype(int) - plain.image.astype(int))
    near = cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    assert diff[~near].max() == 0
    assert diff[mask].mean() > 25


@pytest.mark.parametrize(("class_name", "max_extent"), [("holes", 200), ("scratches", 640), ("rolling", 330)])
def test_render_puts_the_defect_at_the_requested_place(class_name: str, max_extent: int) -> None:
    """The mask covers the requested (row, column) and stays within the defect's size around it."""
    generator = SyntheticFrameGenerator(seed=11)
    for row, column in [(60, 150), (200, 1300), (128, 700)]:
        frame = generator.render([DefectPlacement(class_name, row, column)])
        mask = frame.masks[class_name]
        assert mask[row, column]
        ys, xs = np.nonzero(mask)
        assert max(abs(ys - row).max(), abs(xs - column).max()) <= max_extent / 2
        labels = tile_labels(frame.masks, WINDOWS, 64)
        holding = [i for i, w in enumerate(WINDOWS) if w.x <= column < w.x + w.size]
        assert any(class_name in labels[i] for i in holding)


def test_periodic_roll_marks_at_a_fixed_pitch() -> None:
    """Injected marks at a fixed pitch along the strip give one mask blob per mark."""
    generator = SyntheticFrameGenerator(seed=5, height=1024, width=512)
    frame = generator.render([DefectPlacement("rolling", row, 256, scale=0.6) for row in (150, 500, 850)])
    count, _ = cv2.connectedComponents(frame.masks["rolling"].astype(np.uint8))
    assert count - 1 == 3


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a, b, c = SyntheticFrameGenerator(3), SyntheticFrameGenerator(3), SyntheticFrameGenerator(4)
    for _ in range(3):
        fa, fb, fc = a.next_frame(), b.next_frame(), c.next_frame()
        np.testing.assert_array_equal(fa.image, fb.image)
        assert fa.defects == fb.defects
        for name in SYNTHETIC_CLASSES:
            np.testing.assert_array_equal(fa.masks[name], fb.masks[name])
        assert not np.array_equal(fa.image, fc.image)


def test_frames_are_8_bit_grey_with_a_boolean_mask_per_class() -> None:
    frame = SyntheticFrameGenerator(0, height=256, width=640).next_frame()
    assert frame.image.shape == (256, 640) and frame.image.dtype == np.uint8
    assert set(frame.masks) == set(SYNTHETIC_CLASSES)
    assert all(m.shape == (256, 640) and m.dtype == bool for m in frame.masks.values())


def test_most_tiles_are_clean_and_every_class_occurs() -> None:
    """Over 60 default frames (420 tiles), 70-88 % of tiles are clean and each class labels some tiles."""
    generator = SyntheticFrameGenerator(seed=2024)
    labels = [label for _ in range(60) for label in tile_labels(generator.next_frame().masks, WINDOWS, 64)]
    clean = sum(1 for label in labels if not label) / len(labels)
    assert 0.70 <= clean <= 0.88, clean
    for name in SYNTHETIC_CLASSES:
        assert sum(name in label for label in labels) >= 10, name


def test_tile_labels_are_the_masks_over_min_pixels() -> None:
    """Every labelled tile holds >= min_pixels of the class's mask; every unlabelled tile fewer."""
    generator = SyntheticFrameGenerator(seed=9, defect_rate=3.0)
    for _ in range(5):
        frame = generator.next_frame()
        for window, label in zip(WINDOWS, tile_labels(frame.masks, WINDOWS, 64), strict=True):
            for name, mask in frame.masks.items():
                count = int(mask[window.y : window.y + 256, window.x : window.x + 256].sum())
                assert (name in label) == (count >= 64)


def test_zero_defect_rate_gives_clean_frames() -> None:
    frame = SyntheticFrameGenerator(1, defect_rate=0.0).next_frame()
    assert frame.defects == ()
    assert not any(m.any() for m in frame.masks.values())


def _local_contrast(image: np.ndarray) -> float:
    """Largest departure of the lightly smoothed image from its 15-px neighbourhood, grey levels."""
    grey = image.astype(np.float32)
    return float(np.abs(cv2.GaussianBlur(grey, (0, 0), 1.5) - cv2.GaussianBlur(grey, (0, 0), 15)).max())


def test_clean_frames_do_not_look_defective() -> None:
    """Texture and illumination stay mild: clean frames' local contrast is well below any defect's."""
    generator = SyntheticFrameGenerator(seed=77, defect_rate=0.0)
    clean = [_local_contrast(generator.next_frame().image) for _ in range(6)]
    marked = [
        _local_contrast(generator.render([DefectPlacement(name, 128, 800)]).image)
        for name in SYNTHETIC_CLASSES
        for _ in range(3)
    ]
    assert max(clean) < 30, clean
    assert min(marked) > 40, marked


def test_catalogue_without_the_generator_classes_is_refused() -> None:
    plant = Catalogue.from_names(["crazing", "holes"])
    with pytest.raises(CatalogueError, match=r"lacks classes \['scratches', 'rolling'\]"):
        iter_synthetic_tiles(plant, frames=1, progress=False)


def test_unknown_placement_class_and_bad_scale_are_refused() -> None:
    generator = SyntheticFrameGenerator(0)
    with pytest.raises(CatalogueError, match="'crazing' is not one the generator draws"):
        generator.render([DefectPlacement("crazing", 10, 10)])
    with pytest.raises(ConfigError, match="scale must be > 0, received 0"):
        generator.render([DefectPlacement("holes", 10, 10, scale=0)])


def test_frame_smaller_than_the_tile_is_refused() -> None:
    with pytest.raises(ConfigError, match="smaller than the tile 256"):
        iter_synthetic_tiles(load_catalogue(), frames=1, frame_height=200, progress=False)


def test_synthetic_tiles_carry_source_origin_and_labels() -> None:
    tiles = list(iter_synthetic_tiles(load_catalogue(), frames=2, seed=4, progress=False))
    assert len(tiles) == 14
    assert [(t.source, t.x) for t in tiles[:2]] == [
        ("synthetic-4-00000.png", 0),
        ("synthetic-4-00000.png", 224),
    ]
    frame = SyntheticFrameGenerator(4).next_frame()
    np.testing.assert_array_equal(tiles[1].image, frame.image[:, 224:480])
    assert [set(t.labels) for t in tiles[:7]] == tile_labels(frame.masks, WINDOWS, 64)
