"""Evidence crops: the pixels behind each detection, kept with it.

For every tile with at least one detection, `EvidencePolicy.crops` encodes the tile as the model saw
it — the (size × size) window cut from the frame, reflect-padded at the frame's edge, before the
model resizes it to its input — as a JPEG (EVIDENCE_JPEG_QUALITY), shrunk with area interpolation
when its side exceeds EVIDENCE_MAX_SIDE. A fraction EVIDENCE_CLEAN_SAMPLE of the clean tiles is
kept too (`sampled`), for quality control: a reviewer can only estimate what the model misses from
tiles it called clean. The sample is a hash of (frame id, tile index), so the same frame samples the
same tiles however often it is classified.

The worker's classifier makes the crops (`worker.streaming.classify`); the ledger stores them in
the transaction that stores the frame's detections (`worker.storage.writer`), so a crop exists
exactly when its frame's row does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from worker.core.errors import ConfigError
from worker.core.records import TileImage, TileRef

JPEG = "image/jpeg"


def sampled(frame_id: str, tile_index: int, rate: float) -> bool:
    """Whether the clean tile (frame id, tile index) is in the sample of `rate` (0..1): the same
    answer every time, about `rate` of all tiles."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{frame_id}\x1f{tile_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


@dataclass(frozen=True)
class EvidencePolicy:
    """How crops are kept: JPEG quality (1–100), the largest side stored (pixels), and the share of
    clean tiles sampled (0–1)."""

    jpeg_quality: int = 90
    max_side: int = 256
    clean_sample: float = 0.005

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"EVIDENCE_JPEG_QUALITY: expected 1..100, received {self.jpeg_quality}")
        if self.max_side < 8:
            raise ConfigError(f"EVIDENCE_MAX_SIDE: expected at least 8 pixels, received {self.max_side}")
        if not 0.0 <= self.clean_sample <= 1.0:
            raise ConfigError(f"EVIDENCE_CLEAN_SAMPLE: expected a share 0..1, received {self.clean_sample}")

    def crops(
        self, tiles: Iterable[TileRef], pixels: np.ndarray, detected: Iterable[int]
    ) -> tuple[TileImage, ...]:
        """The crops of one frame's tiles, in tile order: each tile whose index is in `detected`,
        and each clean tile in the sample. `pixels[i]` is tile `i`'s (size, size) uint8 window."""
        with_detection = set(detected)
        kept = []
        for tile in tiles:
            is_sample = tile.index not in with_detection
            if is_sample and not sampled(tile.frame_id, tile.index, self.clean_sample):
                continue
            kept.append(self.encode(tile, pixels[tile.index], sampled=is_sample))
        return tuple(kept)

    def encode(self, tile: TileRef, window: np.ndarray, *, sampled: bool = False) -> TileImage:
        """One tile's crop as a TileImage (JPEG, shrunk to `max_side` when larger)."""
        image: np.ndarray = np.ascontiguousarray(window, dtype=np.uint8)
        height, width = image.shape[:2]
        if max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            height, width = image.shape[:2]
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:  # OpenCV encodes any non-empty uint8 image: a bug if reached
            raise ValueError(f"could not encode the crop of tile {tile.index} of frame {tile.frame_id!r}")
        return TileImage(
            frame_id=tile.frame_id,
            tile_index=tile.index,
            x=tile.x,
            y=tile.y,
            size=tile.size,
            width=int(width),
            height=int(height),
            content_type=JPEG,
            data=encoded.tobytes(),
            sampled=sampled,
        )


def decode(image: TileImage | bytes) -> np.ndarray:
    """The grey pixels of a stored crop; ValueError when the bytes are not an image."""
    data = image.data if isinstance(image, TileImage) else image
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise ValueError(f"not an encoded image ({len(data)} bytes)")
    return pixels
