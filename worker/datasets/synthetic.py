"""The project's own generator of realistic steel strip frames with exact defect masks.

Geometry: a frame's rows run ALONG the strip (the rolling direction is vertical in the image, row 0
first under the camera), its columns ACROSS the strip, as in `worker.core.records`. The rolled
texture is therefore made of vertical streaks.

A frame is a rolled surface — fine vertical streaks and grain, faint smudges, uneven illumination
across and along the strip, Gaussian sensor noise — with defects of the three morphologies of the
paper's Table 1, named as in the default catalogue:

- holes: small rounded dark (sometimes bright) spots, single or in clusters of 2–6, slightly
  stretched along the rolling direction; radius 6–12 px at scale 1.
- scratches: long thin grooves of any orientation (40 % close to the rolling direction), straight
  or slightly curved, 3–7 px wide and 60–350 px long at scale 1, alone or 2–3 side by side; a dark
  groove with a bright lip, or (30 %) a bright groove with a dark lip.
- rolling: large tongue-shaped peeled regions (110–240 px long, 60–120 px wide at scale 1) pointing
  along the rolling direction, with an uneven, blotchy, darker interior, a bright lifted rim round
  the tip and a ragged torn root.

`next_frame()` draws scales from 0.8 to 1.3; `render()` takes the scale of each `DefectPlacement`.

Sizes and contrasts (55–95 grey levels against ±5–15 of texture) are chosen so every defect stays
visible when a 256-px tile is shrunk to 64 px, and clean texture never looks like a defect.

Masks are exact: `SyntheticFrame.masks[name]` is True on every pixel where a defect of that class was
painted at full strength (the soft blending edge around it is outside the mask). Tile labels come from
the masks with the importers' rule (`tile_labels`, at least `min_pixels` pixels in the tile). The
random stream is a seeded `numpy.random.Generator`: the same seed gives the same frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError, ConfigError
from worker.core.tiling import cut_tiles, tile_windows
from worker.datasets.labelled import DEFAULT_MIN_PIXELS, DEFAULT_TILE, LabelledTile, tile_labels

__all__ = [
    "DEFAULT_CLASS_WEIGHTS",
    "DEFAULT_DEFECT_RATE",
    "SYNTHETIC_CLASSES",
    "DefectPlacement",
    "SyntheticFrame",
    "SyntheticFrameGenerator",
    "check_synthetic_catalogue",
    "iter_synthetic_tiles",
    "tile_labels",
]

SYNTHETIC_CLASSES = ("holes", "scratches", "rolling")
DEFAULT_DEFECT_RATE = 1.1
"""Mean number of defects per 256×1600 frame (Poisson; scaled by area for other frame sizes).

At 1.1, 80–84 % of the 256×256 tiles of 256×1600 frames are clean (the tests require 70–88 %)."""
DEFAULT_CLASS_WEIGHTS: Mapping[str, float] = {"holes": 0.4, "scratches": 0.35, "rolling": 0.25}
_REFERENCE_AREA = 256 * 1600


@dataclass(frozen=True)
class DefectPlacement:
    """A defect to draw: its class, the (row, column) of its centre in the frame, and its size factor."""

    class_name: str
    row: int
    column: int
    scale: float = 1.0


@dataclass(frozen=True)
class SyntheticFrame:
    """A generated frame: 8-bit grey image (H, W) and a boolean (H, W) mask per synthetic class.

    `masks` always holds all of `SYNTHETIC_CLASSES` (all-False for an absent class); `defects` lists
    what was drawn (a placement may fall partly outside the frame).
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    defects: tuple[DefectPlacement, ...] = field(default=())


def check_synthetic_catalogue(catalogue: Catalogue) -> None:
    """CatalogueError unless the catalogue has the generator's classes holes, scratches, rolling."""
    missing = [n for n in SYNTHETIC_CLASSES if n not in catalogue.names]
    if missing:
        raise CatalogueError(
            f"synthetic data set: catalogue {catalogue.name!r} lacks classes {missing}; the generator"
            f" draws {list(SYNTHETIC_CLASSES)} and needs a catalogue naming all three"
            f" (received {list(catalogue.names)})"
        )


class SyntheticFrameGenerator:
    """Seeded source of synthetic frames of `height` rows (along the strip) × `width` columns.

    `next_frame()` draws a Poisson number of random defects (mean `defect_rate` per 256×1600 area);
    `render(defects)` draws exactly the given defects on a fresh background. Both advance the same
    random stream, so a generator built with the same seed replays the same sequence of calls.
    """

    def __init__(
        self,
        seed: int,
        height: int = 256,
        width: int = 1600,
        defect_rate: float = DEFAULT_DEFECT_RATE,
        class_weights: Mapping[str, float] | None = None,
    ) -> None:
        if height < 16 or width < 16:
            raise ConfigError(f"synthetic frame must be at least 16×16 px, received {height}×{width}")
        if defect_rate < 0:
            raise ConfigError(f"defect_rate must be >= 0, received {defect_rate}")
        weights = dict(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights)
        unknown = sorted(set(weights) - set(SYNTHETIC_CLASSES))
        if unknown or sum(weights.values()) <= 0 or min(weights.values()) < 0:
            raise ConfigError(
                f"class_weights: expected non-negative weights for {list(SYNTHETIC_CLASSES)} with a"
                f" positive sum, received {weights}"
            )
        self.seed = seed
        self.height = height
        self.width = width
        self.defect_rate = defect_rate
        self._classes = [n for n in SYNTHETIC_CLASSES if weights.get(n, 0) > 0]
        total = sum(weights[n] for n in self._classes)
        self._probabilities = [weights[n] / total for n in self._classes]
        self.rng = np.random.default_rng(seed)

    # -- public -----------------------------------------------------------------------------------

    def next_frame(self) -> SyntheticFrame:
        """A frame with random defects: Poisson count, class by weight, uniform position, scale 0.8–1.3."""
        rng = self.rng
        count = int(rng.poisson(self.defect_rate * self.height * self.width / _REFERENCE_AREA))
        placements = [
            DefectPlacement(
                class_name=str(rng.choice(self._classes, p=self._probabilities)),
                row=int(rng.integers(0, self.height)),
                column=int(rng.integers(0, self.width)),
                scale=float(rng.uniform(0.8, 1.3)),
            )
            for _ in range(count)
        ]
        return self.render(placements)

    def render(self, defects: Sequence[DefectPlacement]) -> SyntheticFrame:
        """A fresh background with exactly `defects` drawn, centred at their (row, column)."""
        for d in defects:
            if d.class_name not in SYNTHETIC_CLASSES:
                raise CatalogueError(
                    f"DefectPlacement: class {d.class_name!r} is not one the generator draws;"
                    f" expected one of {list(SYNTHETIC_CLASSES)}"
                )
            if not d.scale > 0:
                raise ConfigError(f"DefectPlacement: scale must be > 0, received {d.scale}")
        image = self._background()
        # Sensor noise is drawn before the defects, so a frame rendered with or without a defect from
        # the same random state differs only where the defect was painted.
        noise = self.rng.standard_normal(image.shape, dtype=np.float32) * self.rng.uniform(1.8, 3.2)
        masks = {n: np.zeros((self.height, self.width), dtype=bool) for n in SYNTHETIC_CLASSES}
        painters = {"holes": self._holes, "scratches": self._scratches, "rolling": self._tongue}
        for d in defects:
            mask = painters[d.class_name](image, d)
            masks[d.class_name] |= mask
        out = np.clip(image + noise, 0, 255).round().astype(np.uint8)
        return SyntheticFrame(image=out, masks=masks, defects=tuple(defects))

    # -- background -------------------------------------------------------------------------------

    def _smooth_noise(self, shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
        """Gaussian-filtered white noise of unit standard deviation.

        Wide filters run on a coarser grid (at most ~3 px of filter per grid cell) and are resized
        up, which keeps a 256×1600 field with a 200-px filter at a few milliseconds.
        """
        height, width = shape
        step_y, step_x = max(1, int(sigma_y / 3)), max(1, int(sigma_x / 3))
        small = (height // step_y + 3, width // step_x + 3)
        noise = self.rng.standard_normal(small, dtype=np.float32)
        blurred = cv2.GaussianBlur(
            noise, (0, 0), sigmaX=sigma_x / step_x, sigmaY=sigma_y / step_y, borderType=cv2.BORDER_REFLECT
        )
        if step_y > 1 or step_x > 1:
            big = cv2.resize(blurred, (small[1] * step_x, small[0] * step_y), interpolation=cv2.INTER_CUBIC)
            blurred = big[step_y : step_y + height, step_x : step_x + width]
        else:
            blurred = blurred[:height, :width]
        return blurred / max(float(blurred.std()), 1e-6)

    def _background(self) -> np.ndarray:
        """Rolled steel: vertical streaks, grain, smudges, uneven illumination. Float32 grey levels."""
        rng, h, w = self.rng, self.height, self.width
        level = rng.uniform(95.0, 140.0)
        # Streaks along the rolling direction: long vertically, narrow across.
        fine = self._smooth_noise((h, w), sigma_y=rng.uniform(25, 60), sigma_x=rng.uniform(0.7, 1.5))
        coarse = self._smooth_noise((h, w), sigma_y=rng.uniform(80, 200), sigma_x=rng.uniform(4, 12))
        grain = self._smooth_noise((h, w), sigma_y=0.8, sigma_x=0.8)
        smudge = self._smooth_noise((h, w), sigma_y=rng.uniform(25, 50), sigma_x=rng.uniform(25, 60))
        texture = (
            rng.uniform(3.0, 6.0) * fine
            + rng.uniform(2.0, 5.0) * coarse
            + rng.uniform(2.0, 3.5) * grain
            + rng.uniform(2.0, 5.0) * smudge
        )
        # Illumination: brighter where the light is aimed across the strip, a slow drift along it.
        x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        y = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        centre = rng.uniform(-0.4, 0.4)
        across = 1.0 - rng.uniform(0.08, 0.22) * (x - centre) ** 2 + rng.uniform(-0.06, 0.06) * x
        along = 1.0 + rng.uniform(-0.04, 0.04) * y
        gain = np.outer(along, across).astype(np.float32)
        return (level + texture) * gain

    # -- defects ----------------------------------------------------------------------------------

    def _blend(self, image: np.ndarray, shape: np.ndarray, target: np.ndarray | float, soft: float) -> None:
        """Paint `target` into `image` where `shape` (uint8 0/1) is set, with edges softened by `soft` px."""
        alpha = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), soft)
        alpha = np.maximum(alpha, shape.astype(np.float32))  # full strength everywhere inside the mask
        image *= 1.0 - alpha
        image += alpha * target

    def _local_level(self, image: np.ndarray, d: DefectPlacement) -> float:
        r = min(max(d.row, 0), self.height - 1)
        c = min(max(d.column, 0), self.width - 1)
        return float(image[max(0, r - 20) : r + 21, max(0, c - 20) : c + 21].mean())

    def _holes(self, image: np.ndarray, d: DefectPlacement) -> np.ndarray:
        """Rounded spots (single or a cluster), dark pits or bright inclusions."""
        rng = self.rng
        clustered = rng.random() < 0.4
        n = int(rng.integers(2, 7)) if clustered else 1
        level = self._local_level(image, d)
        bright = rng.random() < 0.25
        shape = np.zeros(image.shape, dtype=np.uint8)
        core = np.zeros(image.shape, dtype=np.uint8)
        spread = d.scale * rng.uniform(15, 40)
        for i in range(n):
            radius = d.scale * (rng.uniform(6, 12) if i == 0 else rng.uniform(6, 9))
            dy, dx = (0.0, 0.0) if i == 0 else np.clip(rng.normal(0.0, spread, 2), -2 * spread, 2 * spread)
            centre = (round((d.column + dx) * 16), round((d.row + dy) * 16))
            stretch = rng.uniform(1.0, 1.7)  # inclusions are stretched along the rolling direction
            axes = (max(1, round(radius * 16)), max(1, round(radius * stretch * 16)))
            angle = rng.uniform(-15, 15)
            cv2.ellipse(shape, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, 4)
            inner = (max(1, axes[0] // 2), max(1, axes[1] // 2))
            cv2.ellipse(core, centre, inner, angle, 0, 360, 1, -1, cv2.LINE_8, 4)
        contrast = rng.uniform(55, 90)
        target = min(245.0, level + contrast) if bright else max(8.0, level - contrast)
        self._blend(image, shape, target, soft=1.2)
        # A deeper (or brighter) centre makes the spot look rounded rather than flat.
        centre_target = min(250.0, target + 15) if bright else max(0.0, target - 15)
        self._blend(image, core, centre_target, soft=2.0)
        return shape.astype(bool)

    def _scratches(self, image: np.ndarray, d: DefectPlacement) -> np.ndarray:
        """Long thin grooves, straight or slightly curved, any orientation; 1–3 side by side."""
        rng = self.rng
        n = 1 if rng.random() < 0.65 else int(rng.integers(2, 4))
        angle = rng.uniform(0, math.pi) if rng.random() < 0.6 else math.pi / 2 + rng.normal(0, 0.15)
        direction = np.array([math.cos(angle), math.sin(angle)])  # (dx, dy)
        normal = np.array([-direction[1], direction[0]])
        level = self._local_level(image, d)
        groove = np.zeros(image.shape, dtype=np.uint8)
        lip = np.zeros(image.shape, dtype=np.uint8)
        bright = rng.random() < 0.3
        curvature = rng.uniform(-0.12, 0.12)  # side-by-side grooves bend alike
        for i in range(n):
            length = d.scale * rng.uniform(60, 350)
            width = max(3, round(d.scale * rng.uniform(3, 7)))
            shift = np.clip(rng.normal(0, 20), -40, 40) * (i > 0)  # side-by-side grooves start apart
            offset = normal * (i * rng.uniform(8, 25)) + direction * shift
            mid = np.array([d.column, d.row], dtype=float) + offset
            bend = normal * length * (curvature + rng.normal(0.0, 0.01))
            t = np.linspace(-0.5, 0.5, 48)[:, None]
            points = mid + t * length * direction - 4 * t**2 * bend  # quadratic arc through mid
            pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(groove, [pts], False, 1, width, cv2.LINE_8, 4)
            lip_pts = np.round((points + normal * (width / 2 + 1.5)) * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(lip, [lip_pts], False, 1, 2, cv2.LINE_8, 4)
        lip &= 1 - groove
        contrast = rng.uniform(60, 95)
        # Depth varies along the groove: a smooth multiplier between 0.7 and 1.
        depth = 0.85 + 0.15 * np.clip(self._smooth_noise(image.shape, 20, 20), -1, 1)
        target = level + contrast * depth if bright else level - contrast * depth
        self._blend(image, groove, np.clip(target, 5, 250), soft=0.8)
        lip_target = level + (-0.4 if bright else 0.5) * contrast
        self._blend(image, lip, np.clip(lip_target, 5, 250), soft=0.8)
        return (groove | lip).astype(bool)

    def _tongue(self, image: np.ndarray, d: DefectPlacement) -> np.ndarray:
        """A tongue of peeled metal pointing along the rolling direction, uneven darker inside."""
        rng = self.rng
        length = d.scale * rng.uniform(110, 240)
        width = d.scale * rng.uniform(60, 120)
        pointing = 1.0 if rng.random() < 0.5 else -1.0  # tip towards later or earlier rows
        tilt = rng.normal(0.0, 0.25)
        axis = np.array([math.sin(tilt), pointing * math.cos(tilt)])  # (dx, dy), mostly vertical
        across = np.array([axis[1], -axis[0]])
        t = np.linspace(0.0, 1.0, 60)  # 0 = tip, 1 = root
        # A rounded (half-elliptic) tip over the first 35 %, then a body narrowing towards the root.
        cap = np.sqrt(np.clip(1.0 - ((0.35 - t) / 0.35) ** 2, 0.0, 1.0))
        body = 1.0 - rng.uniform(0.25, 0.5) * np.clip((t - 0.35) / 0.65, 0.0, 1.0)
        wobble = 1.0 + 0.06 * np.clip(self._smooth_noise((1, 60), 0.1, 6.0)[0], -2.0, 2.0)
        half = width / 2 * np.where(t < 0.35, cap, body) * wobble
        half = np.maximum(half, 1.0)
        centre = np.array([d.column, d.row], dtype=float)
        spine = centre + ((0.5 - t) * length)[:, None] * axis  # tip half a length ahead of the centre
        left = spine + half[:, None] * across
        right = spine - half[:, None] * across
        # The torn root: a ragged, roughly straight edge.
        u = np.linspace(0.0, 1.0, 14)[1:-1, None]
        bow = length * rng.uniform(-0.04, 0.02) * 4 * u * (1 - u) + rng.normal(0.0, 1.5, u.shape)
        root = left[-1] * (1 - u) + right[-1] * u + bow * axis
        outline = np.concatenate([left, root, right[::-1]])
        pts = np.round(outline * 16).astype(np.int32).reshape(-1, 1, 2)
        shape = np.zeros(image.shape, dtype=np.uint8)
        cv2.fillPoly(shape, [pts], 1, cv2.LINE_8, 4)
        level = self._local_level(image, d)
        # Uneven bottom: blotches at two scales, ridges stretched along the tongue's axis.
        blotches = self._smooth_noise(image.shape, rng.uniform(3, 6), rng.uniform(3, 6))
        ridges = self._smooth_noise(image.shape, 8.0 * abs(axis[1]) + 2, 8.0 * abs(axis[0]) + 2)
        interior = level - rng.uniform(35, 60) + rng.uniform(8, 14) * blotches + rng.uniform(6, 12) * ridges
        self._blend(image, shape, np.clip(interior, 5, 250), soft=1.5)
        # The lifted rim around the tip catches the light.
        rim = np.zeros(image.shape, dtype=np.uint8)
        tip = np.concatenate([left[25::-1], right[: 25 + 1]])  # around the tip, t <= 0.42
        rim_pts = np.round(tip * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(rim, [rim_pts], False, 1, max(3, round(4 * d.scale)), cv2.LINE_8, 4)
        self._blend(image, rim, min(250.0, level + rng.uniform(35, 60)), soft=1.0)
        return (shape | rim).astype(bool)


def iter_synthetic_tiles(
    catalogue: Catalogue,
    *,
    frames: int,
    seed: int = 0,
    tile: int = DEFAULT_TILE,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    frame_height: int = 256,
    frame_width: int = 1600,
    defect_rate: float = DEFAULT_DEFECT_RATE,
    progress: bool = True,
) -> Iterator[LabelledTile]:
    """The labelled tiles of `frames` generated frames (sources `synthetic-<seed>-<n>.png`), lazily.

    The checks run at once: CatalogueError when the catalogue lacks holes, scratches or rolling;
    ConfigError for a frame smaller than the tile or a non-positive frame count.
    """
    check_synthetic_catalogue(catalogue)
    if frames < 1:
        raise ConfigError(f"--frames must be >= 1, received {frames}")
    if frame_height < tile or frame_width < tile:
        raise ConfigError(
            f"synthetic frames of {frame_height}×{frame_width} px are smaller than the tile {tile}"
        )
    generator = SyntheticFrameGenerator(seed, frame_height, frame_width, defect_rate)
    return _synthetic_tiles(generator, frames, tile, min_pixels, progress)


def _synthetic_tiles(
    generator: SyntheticFrameGenerator, frames: int, tile: int, min_pixels: int, progress: bool
) -> Iterator[LabelledTile]:
    windows = tile_windows(generator.height, generator.width, tile)
    for n in tqdm(range(frames), desc="synthetic", unit="frame", disable=not progress):
        frame = generator.next_frame()
        labels = tile_labels(frame.masks, windows, min_pixels)
        source = f"synthetic-{generator.seed}-{n:05d}.png"
        for window, pixels, classes in zip(windows, cut_tiles(frame.image, windows), labels, strict=True):
            yield LabelledTile(pixels, source, window.x, window.y, frozenset(classes))
