"""Decode and validate frame messages: Kafka record → DecodedFrame, or a Rejected value.

Nothing a camera (or an attacker) puts on the frames topic makes this module raise: every refusal
is a `Rejected(reason, stage, detail)` that the loop dead-letters. Checks, in order:

    validate: frame-meta header present and valid (schema frame-meta.v1), content-type supported,
              payload not empty, not over MAX_FRAME_BYTES, raw frames carry width/height
    fetch:    claim check (`image_uri`, file:// only) readable and not over MAX_FRAME_BYTES
    decode:   image header dimensions read *before* decoding (PNG IHDR, JPEG SOF) and refused above
              MAX_FRAME_PIXELS (decompression bombs), container complete (PNG IEND, JPEG EOI),
              content matches its content-type, OpenCV decodes it to the declared size

OpenCV releases the GIL while decoding, so `Decoder.decode_all` spreads messages over a thread pool.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from worker.errors import SchemaError
from worker.streaming import contracts
from worker.streaming.records import DecodedFrame, FrameMeta, KafkaCoordinates

# Reasons a frame is refused; the same list is the enum of `dlq-reason` in dead-letter-headers.v1.
MISSING_METADATA = "missing-metadata"
INVALID_METADATA = "invalid-metadata"
UNSUPPORTED_CONTENT_TYPE = "unsupported-content-type"
EMPTY_PAYLOAD = "empty-payload"
OVERSIZE_PAYLOAD = "oversize-payload"
IMAGE_UNAVAILABLE = "image-unavailable"
IMAGE_TOO_LARGE = "image-too-large"
CORRUPT_IMAGE = "corrupt-image"
CONTENT_TYPE_MISMATCH = "content-type-mismatch"
REASONS = (
    MISSING_METADATA,
    INVALID_METADATA,
    UNSUPPORTED_CONTENT_TYPE,
    EMPTY_PAYLOAD,
    OVERSIZE_PAYLOAD,
    IMAGE_UNAVAILABLE,
    IMAGE_TOO_LARGE,
    CORRUPT_IMAGE,
    CONTENT_TYPE_MISMATCH,
)
VALIDATE, FETCH, DECODE = "validate", "fetch", "decode"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT C4, JPG C8, DAC CC.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class InboundMessage:
    """A record as consumed: where it came from and its original key, value and headers."""

    source: KafkaCoordinates
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        """The last value of header `name` (case-insensitive), or None."""
        found = None
        for key, value in self.headers:
            if key.lower() == name:
                found = value
        return found


@dataclass(frozen=True)
class Rejected:
    """A frame the worker refuses: `reason` (one of REASONS), `stage`, and a detail for people.

    `meta` is the parsed metadata when it was valid (for logs), else None.
    """

    reason: str
    stage: str
    detail: str
    source: KafkaCoordinates
    meta: FrameMeta | None = None


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against abuse: payload size in bytes, image size in pixels."""

    max_frame_bytes: int
    max_frame_pixels: int


class _RefusalError(Exception):
    """Internal: carries a refusal out of the nested checks; never leaves this module."""

    def __init__(self, reason: str, stage: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.stage, self.detail = reason, stage, detail


def image_dimensions(data: bytes, content_type: str) -> tuple[int, int]:
    """(width, height) declared by a PNG's IHDR or a JPEG's SOF marker, without decoding pixels.

    Raises _RefusalError (corrupt-image or content-type-mismatch) when the header is not there.
    """
    if data.startswith(PNG_SIGNATURE):
        found = "PNG"
    elif data.startswith(JPEG_SOI):
        found = "JPEG"
    else:
        raise _RefusalError(
            CORRUPT_IMAGE, DECODE, f"expected a {content_type} image, the payload starts with {data[:8]!r}"
        )
    expected = "PNG" if content_type == contracts.PNG else "JPEG"
    if found != expected:
        raise _RefusalError(
            CONTENT_TYPE_MISMATCH,
            DECODE,
            f"content-type is {content_type} but the payload is a {found} image",
        )
    return _png_dimensions(data) if found == "PNG" else _jpeg_dimensions(data)


def _png_dimensions(data: bytes) -> tuple[int, int]:
    # signature (8), chunk length (4), b"IHDR", width (4), height (4), ...
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _RefusalError(CORRUPT_IMAGE, DECODE, "PNG without an IHDR chunk at its start")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise _RefusalError(
                CORRUPT_IMAGE, DECODE, f"JPEG marker expected at byte {i}, found {data[i]:#04x}"
            )
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise _RefusalError(CORRUPT_IMAGE, DECODE, f"JPEG segment at byte {i} has length {length}")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        i += 2 + length
    raise _RefusalError(CORRUPT_IMAGE, DECODE, "JPEG without a start-of-frame header (truncated or corrupt)")


def _check_complete(data: bytes, content_type: str) -> None:
    """Truncated files decode to partly grey images in OpenCV; refuse them before decoding."""
    if content_type == contracts.PNG:
        if b"IEND" not in data[-32:]:
            raise _RefusalError(CORRUPT_IMAGE, DECODE, "PNG without its IEND chunk at the end (truncated)")
    elif b"\xff\xd9" not in data[-64:]:
        raise _RefusalError(CORRUPT_IMAGE, DECODE, "JPEG without its end-of-image marker (truncated)")


def _fetch(uri: str, limits: DecodeLimits) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise _RefusalError(
            IMAGE_UNAVAILABLE,
            FETCH,
            f"image_uri {uri!r}: expected a file:// URI, received scheme {parsed.scheme!r}",
        )
    path = Path(unquote(parsed.path))
    try:
        size = path.stat().st_size
        if size > limits.max_frame_bytes:
            raise _RefusalError(
                OVERSIZE_PAYLOAD, FETCH, f"image at {uri} has {size} bytes, limit {limits.max_frame_bytes}"
            )
        return path.read_bytes()
    except OSError as exc:
        raise _RefusalError(IMAGE_UNAVAILABLE, FETCH, f"image_uri {uri!r}: {exc.strerror or exc}") from None


def _check_pixels(width: int, height: int, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise _RefusalError(CORRUPT_IMAGE, DECODE, f"image declares {width}x{height} pixels")
    if width * height > limits.max_frame_pixels:
        raise _RefusalError(
            IMAGE_TOO_LARGE,
            DECODE,
            f"image declares {width}x{height} = {width * height} pixels, limit {limits.max_frame_pixels}",
        )


def _decode_pixels(data: bytes, content_type: str, meta: FrameMeta, limits: DecodeLimits) -> np.ndarray:
    if content_type == contracts.RAW_GRAY8:
        assert meta.width is not None and meta.height is not None  # checked in validation
        _check_pixels(meta.width, meta.height, limits)
        if len(data) != meta.width * meta.height:
            raise _RefusalError(
                CORRUPT_IMAGE,
                DECODE,
                f"raw 8-bit frame of {meta.width}x{meta.height} needs {meta.width * meta.height} bytes, "
                f"received {len(data)}",
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(meta.height, meta.width).copy()
    width, height = image_dimensions(data, content_type)
    _check_pixels(width, height, limits)
    _check_complete(data, content_type)
    image = cv2.imdecode(
        np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    )
    if image is None:
        raise _RefusalError(CORRUPT_IMAGE, DECODE, f"OpenCV could not decode the {content_type} image")
    if image.shape != (height, width):
        raise _RefusalError(
            CORRUPT_IMAGE, DECODE, f"header says {width}x{height}, decoded {image.shape[1]}x{image.shape[0]}"
        )
    if meta.width is not None and (meta.width, meta.height) != (width, height):
        raise _RefusalError(
            INVALID_METADATA,
            VALIDATE,
            f"frame-meta says {meta.width}x{meta.height}, the image is {width}x{height}",
        )
    return image


def _parse_meta(message: InboundMessage) -> FrameMeta:
    raw_meta = message.header(contracts.FRAME_META_HEADER)
    if raw_meta is None:
        raise _RefusalError(MISSING_METADATA, VALIDATE, f"expected a {contracts.FRAME_META_HEADER!r} header")
    try:
        return contracts.parse_frame_meta(raw_meta)
    except SchemaError as exc:
        raise _RefusalError(INVALID_METADATA, VALIDATE, str(exc)) from None


def _validate(message: InboundMessage, meta: FrameMeta, limits: DecodeLimits) -> str:
    content_type = contracts.normalise_content_type(message.header(contracts.CONTENT_TYPE_HEADER))
    if content_type not in contracts.CONTENT_TYPES:
        raise _RefusalError(
            UNSUPPORTED_CONTENT_TYPE,
            VALIDATE,
            f"content-type: expected one of {', '.join(contracts.CONTENT_TYPES)}, received {content_type!r}",
        )
    if content_type == contracts.RAW_GRAY8 and meta.width is None:
        raise _RefusalError(INVALID_METADATA, VALIDATE, f"{contracts.RAW_GRAY8} frames need width and height")
    size = len(message.value or b"")
    if size == 0 and meta.image_uri is None:
        raise _RefusalError(
            EMPTY_PAYLOAD, VALIDATE, "the message value is empty and frame-meta has no image_uri"
        )
    if size > limits.max_frame_bytes:
        raise _RefusalError(
            OVERSIZE_PAYLOAD, VALIDATE, f"payload has {size} bytes, limit {limits.max_frame_bytes}"
        )
    return content_type


def decode_message(message: InboundMessage, limits: DecodeLimits) -> DecodedFrame | Rejected:
    """Validate and decode one frame message; never raises for anything in the message."""
    meta: FrameMeta | None = None
    try:
        meta = _parse_meta(message)
        content_type = _validate(message, meta, limits)
        data = message.value or b""
        if not data:
            assert meta.image_uri is not None
            data = _fetch(meta.image_uri, limits)
            if not data:
                raise _RefusalError(EMPTY_PAYLOAD, FETCH, f"image at {meta.image_uri} is empty")
        image = _decode_pixels(data, content_type, meta, limits)
    except _RefusalError as refusal:
        return Rejected(refusal.reason, refusal.stage, refusal.detail, message.source, meta)
    except cv2.error as exc:  # OpenCV refusing a malformed stream in its own way
        return Rejected(CORRUPT_IMAGE, DECODE, f"OpenCV: {exc.msg or exc}", message.source, meta)
    return DecodedFrame(meta=meta, source=message.source, image=image)


class Decoder:
    """Decodes batches of messages on a thread pool; results come back in input order.

    Use as a context manager (or call `close()`): the pool's threads end on exit.
    """

    def __init__(self, limits: DecodeLimits, threads: int) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")

    def decode_all(self, messages: Sequence[InboundMessage]) -> list[DecodedFrame | Rejected]:
        if len(messages) <= 1:
            return [decode_message(m, self.limits) for m in messages]
        return list(self._pool.map(lambda m: decode_message(m, self.limits), messages))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
