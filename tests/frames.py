"""Frame messages for the streaming tests: metadata, encoded images, and Kafka records.

Images are synthetic grey textures (seeded), so tests need no data files.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import cv2
import numpy as np

from worker.core import contracts
from worker.core.records import FrameMeta, KafkaCoordinates
from worker.streaming.decode import InboundMessage


def make_meta(
    frame_id: str = "f-0001", strip_id: str = "S1", position_m: float = 10.0, **changes: object
) -> FrameMeta:
    meta = FrameMeta(
        frame_id=frame_id,
        line="L1",
        camera="cam-top-1",
        surface="top",
        strip_id=strip_id,
        captured_at=datetime(2024, 5, 1, 8, 30, 0, 123000, tzinfo=UTC),
        position_m=position_m,
        mm_per_px_along=0.5,
        mm_per_px_across=0.4,
        edge_offset_mm=25.0,
    )
    return replace(meta, **changes)  # type: ignore[arg-type]


def grey_image(height: int = 256, width: int = 512, seed: int = 0) -> np.ndarray:
    """A rolled-steel-like grey texture: horizontal streaks plus noise, uint8."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(128, 12, size=(height, 1))
    noise = rng.normal(0, 8, size=(height, width))
    return np.clip(rows + noise, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def jpeg_bytes(image: np.ndarray, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


def frame_record(
    meta: FrameMeta, image: np.ndarray, content_type: str = contracts.PNG
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a frame message as a camera would publish it."""
    if content_type == contracts.PNG:
        value = png_bytes(image)
    elif content_type == contracts.JPEG:
        value = jpeg_bytes(image)
    else:
        value = image.tobytes()
        meta = replace(meta, width=image.shape[1], height=image.shape[0])
    return meta.strip_id.encode(), value, contracts.frame_headers(meta, content_type)


def inbound(
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    offset: int = 0,
    key: bytes | None = b"S1",
    topic: str = "mill.frames",
) -> InboundMessage:
    return InboundMessage(
        source=KafkaCoordinates(topic, 0, offset), key=key, value=value, headers=tuple(headers)
    )
