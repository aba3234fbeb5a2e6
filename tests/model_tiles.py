"""A tiny labelled tile set for the classifier's tests: shapes drawn with OpenCV on noise.

holes: 1–3 dark filled circles; scratches: a long thin bright line; rolling: a large dark ellipse;
clean: noise only. Every class is drawn on its own tiles, plus a few two-label tiles.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worker.core.catalogue import Catalogue, load_catalogue
from worker.core.tileset import TileSetWriter


def draw_tile(classes: set[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One grey tile with the shapes of `classes` drawn on smooth noise."""
    tile = rng.normal(128, 12, (size, size)).clip(0, 255).astype(np.uint8)
    s = size / 32
    if "holes" in classes:
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(4 * s, size - 4 * s)), int(rng.integers(4 * s, size - 4 * s)))
            cv2.circle(tile, centre, max(1, round(2.5 * s)), 30, -1)
    if "scratches" in classes:
        x0, x1 = int(rng.integers(0, size // 3)), int(rng.integers(2 * size // 3, size))
        y0, y1 = int(rng.integers(0, size)), int(rng.integers(0, size))
        cv2.line(tile, (x0, y0), (x1, y1), 240, max(1, round(s)))
    if "rolling" in classes:
        centre = (int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3)))
        axes = (round(10 * s), round(6 * s))
        cv2.ellipse(tile, centre, axes, float(rng.uniform(0, 180)), 0, 360, 60, -1)
    return tile


def write_shape_tileset(
    root: Path,
    *,
    per_class: int = 10,
    clean: int = 20,
    pairs: int = 4,
    size: int = 32,
    seed: int = 0,
    catalogue: Catalogue | None = None,
) -> Path:
    """Write a tile set of `per_class` single-label tiles per class, `pairs` holes+scratches tiles
    and `clean` defect-free tiles into `root`; returns `root`."""
    catalogue = catalogue or load_catalogue()
    rng = np.random.default_rng(seed)
    jobs: list[set[str]] = [{name} for name in catalogue.names for _ in range(per_class)]
    jobs += [{"holes", "scratches"}] * pairs + [set()] * clean
    with TileSetWriter(root, catalogue) as writer:
        for i, classes in enumerate(jobs):
            writer.add(draw_tile(classes, size, rng), f"frame{i:04d}.png", 0, 0, classes)
    return root
