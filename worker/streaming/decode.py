"""Decode and validate frame messages: Kafka record → DecodedFrame, or a Rejected value.

`decode_message` is total: nothing a camera (or an attacker) puts on the frames topic makes it
raise. Every refusal is a `Rejected(reason, stage, detail)` that the loop dead-letters; the reasons
are those of `worker.core.refusals`. Checks, in order:

    validate: headers and frame-meta (`worker.streaming.validation`: sizes, numbers, identifiers,
              timestamps, position within MAX_STRIP_LENGTH_M), content-type supported, payload not
              empty, not over MAX_FRAME_BYTES, raw frames carry width/height
    fetch:    claim check (`image_uri`), only when CLAIM_CHECK_ROOT is set: a file:// URI without a
              host naming a regular file under that folder (symbolic links resolved first), read
              up to MAX_FRAME_BYTES within CLAIM_CHECK_TIMEOUT_MS; every failure past the URI's form
              gets the same detail (no existence oracle) and nothing of the file is echoed
    decode:   image header dimensions read *before* decoding (PNG IHDR, JPEG SOF) and refused above
              MAX_FRAME_PIXELS (decompression bombs) or above MAX_FRAME_TILES tiles (a thin image
              padded into thousands of tiles), container complete (PNG IEND, JPEG EOI), the
              container's structure within what real cameras write (at most MAX_JPEG_SCANS scans
              — libjpeg walks every block of the image once per scan, so a progressive JPEG whose
              scan repeats tens of thousands of times takes minutes and libjpeg only warns — and
              at most MAX_IMAGE_SEGMENTS JPEG segments or PNG chunks; a PNG's samples at most
              4 bytes per pixel of MAX_FRAME_PIXELS), content matches its content-type, OpenCV
              decodes it to the declared size
    quality:  the image-quality gate (`worker.streaming.image_quality`, when `DecodeLimits.quality`
              is set): a frame failing a refusing check is refused (`image-quality`); the checks
              that only flag travel on the DecodedFrame (`quality_flags`)

Details never echo payload bytes, and values from the message appear only through `shown()`
(bounded, escaped). A failure the decoder does not foresee is still a refusal (`decoder-error`,
logged with its traceback as a bug to fix); the tests fuzz the decoder to keep that reason unused.

`decode_message` runs in the decoder's worker processes (`worker.streaming.decode_pool`), each
frame within DECODE_TIMEOUT_MS: a cost this module does not foresee still cannot stall the line.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
import structlog

from worker.core import contracts
from worker.core.errors import RefusalError
from worker.core.records import DecodedFrame, FrameMeta, KafkaCoordinates
from worker.core.refusals import (
    CONTENT_TYPE_MISMATCH,
    CORRUPT_IMAGE,
    DECODE,
    DECODER_ERROR,
    EMPTY_PAYLOAD,
    FETCH,
    IMAGE_QUALITY,
    IMAGE_TOO_COSTLY,
    IMAGE_TOO_LARGE,
    IMAGE_UNAVAILABLE,
    INVALID_METADATA,
    OVERSIZE_PAYLOAD,
    TOO_MANY_TILES,
    UNSUPPORTED_CONTENT_TYPE,
    VALIDATE,
    shown,
)
from worker.core.tiling import tile_count
from worker.streaming.image_quality import QualityGate
from worker.streaming.validation import DEFAULT_MAX_STRIP_LENGTH_M, check_headers, parse_frame_meta

log = structlog.get_logger("worker.streaming")

#: The one detail of every claim-check failure past the URI's form (see the module doc).
CLAIM_CHECK_UNAVAILABLE = "image_uri names no readable regular file under CLAIM_CHECK_ROOT"
_READ_CHUNK = 1 << 20

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT C4, JPG C8, DAC CC.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_PNG_BIT_DEPTH_AT = 24  # IHDR: signature (8), length (4), type (4), width (4), height (4), bit depth (1)
#: The next marker, as libjpeg finds it: 0xFF (after any fill bytes) and a byte that is neither a
#: stuffed zero nor a restart marker. libjpeg skips whatever lies before it with a warning.
_JPEG_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
#: A real progressive JPEG has about ten scans (libjpeg's default script: 6 for grey, 10 for colour).
DEFAULT_MAX_JPEG_SCANS = 64
#: PNG encoders write image data in chunks of 8 KiB or more: a 16 MiB PNG has about 2 000 chunks.
DEFAULT_MAX_IMAGE_SEGMENTS = 8192


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
    """A message the worker refuses: `reason` (one of `refusals.REASONS`), `stage`, and a detail
    for people (bounded and escaped). `meta` is the parsed metadata when it was valid, else None."""

    reason: str
    stage: str
    detail: str
    source: KafkaCoordinates
    meta: FrameMeta | None = None
    quality_flags: tuple[str, ...] = ()  # reason image-quality: the checks that failed


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against abuse: payload bytes, image pixels, tiles per frame (at `tile_size` with
    `tile_min_overlap`), the claim check (off while `claim_check_root` is None), the container's
    structure (JPEG scans, JPEG segments or PNG chunks), the position along the strip
    (`max_strip_length_m`) and the image-quality gate (`quality`)."""

    max_frame_bytes: int
    max_frame_pixels: int
    max_frame_tiles: int = 256
    tile_size: int = 256
    tile_min_overlap: int = 0
    claim_check_root: Path | None = None
    claim_check_timeout_s: float = 5.0
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_image_segments: int = DEFAULT_MAX_IMAGE_SEGMENTS
    quality: QualityGate | None = None  # the image-quality gate (`worker.streaming.image_quality`)
    max_strip_length_m: float = DEFAULT_MAX_STRIP_LENGTH_M


def image_dimensions(data: bytes, content_type: str) -> tuple[int, int]:
    """(width, height) declared by a PNG's IHDR or a JPEG's SOF marker, without decoding pixels.

    Raises RefusalError (corrupt-image or content-type-mismatch) when the header is not there.
    """
    if data.startswith(PNG_SIGNATURE):
        found = "PNG"
    elif data.startswith(JPEG_SOI):
        found = "JPEG"
    else:
        raise RefusalError(
            CORRUPT_IMAGE,
            DECODE,
            f"content-type is {content_type}, but the payload has no PNG or JPEG signature",
        )
    expected = "PNG" if content_type == contracts.PNG else "JPEG"
    if found != expected:
        raise RefusalError(
            CONTENT_TYPE_MISMATCH,
            DECODE,
            f"content-type is {content_type} but the payload is a {found} image",
        )
    return _png_dimensions(data) if found == "PNG" else _jpeg_dimensions(data)


def _png_dimensions(data: bytes) -> tuple[int, int]:
    # signature (8), chunk length (4), b"IHDR", width (4), height (4), ...
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise RefusalError(CORRUPT_IMAGE, DECODE, "PNG without an IHDR chunk at its start")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise RefusalError(
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
            raise RefusalError(CORRUPT_IMAGE, DECODE, f"JPEG segment at byte {i} has length {length}")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        i += 2 + length
    raise RefusalError(CORRUPT_IMAGE, DECODE, "JPEG without a start-of-frame header (truncated or corrupt)")


def _check_complete(data: bytes, content_type: str) -> None:
    """Truncated files decode to partly grey images in OpenCV; refuse them before decoding."""
    if content_type == contracts.PNG:
        if b"IEND" not in data[-32:]:
            raise RefusalError(CORRUPT_IMAGE, DECODE, "PNG without its IEND chunk at the end (truncated)")
    elif b"\xff\xd9" not in data[-64:]:
        raise RefusalError(CORRUPT_IMAGE, DECODE, "JPEG without its end-of-image marker (truncated)")


def _check_structure(data: bytes, content_type: str, limits: DecodeLimits) -> None:
    """Count what makes a decoder work more than once per pixel, before it starts: JPEG scans and
    segments, found the way libjpeg finds markers (`_JPEG_NEXT_MARKER`), or PNG chunks."""
    if content_type == contracts.PNG:
        _check_png_chunks(data, limits)
    else:
        _check_jpeg_scans(data, limits)


def _too_costly(what: str, count: int, limit: int, setting: str) -> RefusalError:
    return RefusalError(
        IMAGE_TOO_COSTLY,
        DECODE,
        f"the image has {count} {what} or more, limit {limit} ({setting}): decoding it would cost"
        " many times what an image of its size costs",
    )


def _check_jpeg_scans(data: bytes, limits: DecodeLimits) -> None:
    scans = segments = 0
    position = 2
    while (found := _JPEG_NEXT_MARKER.search(data, position)) is not None:
        marker = found.group(1)[0]
        start = found.end()  # just past the marker byte
        if marker == _JPEG_EOI:
            return
        segments += 1
        if segments > limits.max_image_segments:
            raise _too_costly("segments", segments, limits.max_image_segments, "MAX_IMAGE_SEGMENTS")
        if marker in _JPEG_STANDALONE or start + 2 > len(data):
            position = start
            continue
        (length,) = struct.unpack(">H", data[start : start + 2])
        position = start + max(length, 2)  # past the segment header: a scan's data follows it
        if marker == _JPEG_SOS:
            scans += 1
            if scans > limits.max_jpeg_scans:
                raise _too_costly("scans", scans, limits.max_jpeg_scans, "MAX_JPEG_SCANS")


#: PNG colour type → samples per pixel (grey, RGB, palette — expanded to RGB —, grey+alpha, RGBA).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
#: The most bytes per pixel a decoder may allocate: RGBA at 8 bits, grey+alpha or grey at 16 bits.
DECODED_BYTES_PER_PIXEL = 4


def _check_png_decoded_size(data: bytes, limits: DecodeLimits) -> None:
    """Refuse a PNG whose pixels decode to more than DECODED_BYTES_PER_PIXEL × MAX_FRAME_PIXELS
    bytes (OpenCV decodes all samples before reducing them to grey): the bound on what a small
    payload can make the decoder allocate. The ratio to the payload is not bounded — a black frame
    compresses a thousandfold, and must reach the image-quality gate."""
    if len(data) < 26:
        return  # `image_dimensions` refused it already
    width, height = struct.unpack(">II", data[16:24])
    bit_depth, colour = data[24], data[25]
    decoded = width * height * _PNG_SAMPLES.get(colour, 4) * max(1, bit_depth // 8)
    limit = DECODED_BYTES_PER_PIXEL * limits.max_frame_pixels
    if decoded > limit:
        raise RefusalError(
            IMAGE_TOO_COSTLY,
            DECODE,
            f"the image decodes to {decoded} bytes ({width}x{height}, {_PNG_SAMPLES.get(colour, 4)} samples"
            f" of {bit_depth} bits), limit {limit} ({DECODED_BYTES_PER_PIXEL} bytes per pixel of"
            " MAX_FRAME_PIXELS)",
        )


def _check_png_chunks(data: bytes, limits: DecodeLimits) -> None:
    _check_png_decoded_size(data, limits)
    position, chunks = 8, 0
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks += 1
        if chunks > limits.max_image_segments:
            raise _too_costly("chunks", chunks, limits.max_image_segments, "MAX_IMAGE_SEGMENTS")
        if data[position + 4 : position + 8] == b"IEND":
            return
        position += 12 + length


def _claim_check_path(uri: str, root: Path) -> Path:
    """The path a claim-check URI names; RefusalError for a URI of the wrong form (those details may be
    specific: they describe the URI, not the file system)."""

    def refuse(expected: str) -> RefusalError:
        return RefusalError(
            IMAGE_UNAVAILABLE, FETCH, f"image_uri: expected {expected}, received {shown(uri, 120)}"
        )

    try:
        parts = urlsplit(uri)
        path = unquote(parts.path, errors="strict")
    except (ValueError, UnicodeError):
        raise refuse("a file:// URI whose path is percent-encoded UTF-8") from None
    if parts.scheme.lower() != "file":
        raise refuse("a file:// URI")
    if parts.netloc:
        raise refuse("a file:// URI without a host (file:///path)")
    if parts.query or parts.fragment or not path.startswith("/") or "\x00" in path:
        raise refuse("file:///absolute/path without query, fragment or NUL")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse("a path of UTF-8 characters") from None
    return Path(os.path.realpath(os.path.normpath(path)))


def _fetch(uri: str, limits: DecodeLimits) -> bytes:
    """The claim-check image: bounded in bytes and time, only a regular file under the root."""
    root = limits.claim_check_root
    if root is None:
        raise RefusalError(
            IMAGE_UNAVAILABLE,
            FETCH,
            "the message value is empty and frame-meta names an image_uri, but claim checks are off"
            " (CLAIM_CHECK_ROOT is not set)",
        )
    path = _claim_check_path(uri, root)
    if not path.is_relative_to(root):
        raise RefusalError(IMAGE_UNAVAILABLE, FETCH, CLAIM_CHECK_UNAVAILABLE)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # a FIFO must not block us
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        log.info("claim_check.refused", why=os.strerror(exc.errno) if exc.errno else type(exc).__name__)
        raise RefusalError(IMAGE_UNAVAILABLE, FETCH, CLAIM_CHECK_UNAVAILABLE) from None
    try:
        return _read_regular_file(fd, limits)
    finally:
        os.close(fd)


def _read_regular_file(fd: int, limits: DecodeLimits) -> bytes:
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusalError(IMAGE_UNAVAILABLE, FETCH, CLAIM_CHECK_UNAVAILABLE)
        if info.st_size > limits.max_frame_bytes:
            raise RefusalError(
                OVERSIZE_PAYLOAD,
                FETCH,
                f"claim-check image has {info.st_size} bytes, limit {limits.max_frame_bytes}",
            )
        deadline = time.monotonic() + limits.claim_check_timeout_s
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _READ_CHUNK):
            size += len(chunk)
            if size > limits.max_frame_bytes:  # the file grew while we read it
                raise RefusalError(
                    OVERSIZE_PAYLOAD,
                    FETCH,
                    f"claim-check image is over the limit of {limits.max_frame_bytes} bytes",
                )
            if time.monotonic() > deadline:
                raise RefusalError(
                    IMAGE_UNAVAILABLE,
                    FETCH,
                    f"reading the claim-check image took over {limits.claim_check_timeout_s:g} s",
                )
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        log.info("claim_check.refused", why=os.strerror(exc.errno) if exc.errno else type(exc).__name__)
        raise RefusalError(IMAGE_UNAVAILABLE, FETCH, CLAIM_CHECK_UNAVAILABLE) from None


def _check_size(width: int, height: int, limits: DecodeLimits) -> None:
    """Refuse an image by its declared size, before any pixel is decoded or padded."""
    if width <= 0 or height <= 0:
        raise RefusalError(CORRUPT_IMAGE, DECODE, f"image declares {width}x{height} pixels")
    if width * height > limits.max_frame_pixels:
        raise RefusalError(
            IMAGE_TOO_LARGE,
            DECODE,
            f"image declares {width}x{height} = {width * height} pixels, limit {limits.max_frame_pixels}",
        )
    tiles = tile_count(height, width, limits.tile_size, limits.tile_min_overlap)
    if tiles > limits.max_frame_tiles:
        raise RefusalError(
            TOO_MANY_TILES,
            DECODE,
            f"a {width}x{height} image makes {tiles} tiles of {limits.tile_size} pixels, limit"
            f" {limits.max_frame_tiles} (MAX_FRAME_TILES)",
        )


def _decode_pixels(data: bytes, content_type: str, meta: FrameMeta, limits: DecodeLimits) -> np.ndarray:
    if content_type == contracts.RAW_GRAY8:
        assert meta.width is not None and meta.height is not None  # checked in validation
        _check_size(meta.width, meta.height, limits)
        if len(data) != meta.width * meta.height:
            raise RefusalError(
                CORRUPT_IMAGE,
                DECODE,
                f"raw 8-bit frame of {meta.width}x{meta.height} needs {meta.width * meta.height} bytes, "
                f"received {len(data)}",
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(meta.height, meta.width).copy()
    width, height = image_dimensions(data, content_type)
    _check_size(width, height, limits)
    _check_complete(data, content_type)
    _check_structure(data, content_type, limits)
    sample_bits = _calibrated_sample_bits(data, content_type, meta, limits)
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    if sample_bits is None:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    else:
        samples = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags | cv2.IMREAD_ANYDEPTH)
        image = _to_8_bits(samples, sample_bits)
    if image is None:
        raise RefusalError(CORRUPT_IMAGE, DECODE, f"OpenCV could not decode the {content_type} image")
    if image.shape != (height, width):
        raise RefusalError(
            CORRUPT_IMAGE, DECODE, f"header says {width}x{height}, decoded {image.shape[1]}x{image.shape[0]}"
        )
    if meta.width is not None and (meta.width, meta.height) != (width, height):
        raise RefusalError(
            INVALID_METADATA,
            VALIDATE,
            f"frame-meta says {meta.width}x{meta.height}, the image is {width}x{height}",
        )
    return image


def _calibrated_sample_bits(
    data: bytes, content_type: str, meta: FrameMeta, limits: DecodeLimits
) -> int | None:
    """For a 16-bit PNG from a camera calibrated to write fewer bits (CAMERA_CALIBRATION's
    `bit_depth`, 9 to 15: a 12-bit sensor in a 16-bit PNG), those bits; None otherwise (OpenCV's
    reduction to 8 bits keeps the top 8 of 16, which would leave a 12-bit frame nearly black)."""
    if content_type != contracts.PNG or len(data) <= _PNG_BIT_DEPTH_AT or data[_PNG_BIT_DEPTH_AT] != 16:
        return None
    if limits.quality is None:
        return None
    bits = limits.quality.calibrations.for_camera(meta.line, meta.camera).bit_depth
    return bits if bits is not None and 8 < bits < 16 else None


def _to_8_bits(samples: np.ndarray | None, bits: int) -> np.ndarray | None:
    """`bits`-bit samples (in 16-bit words) as the 8-bit image the model sees: the top 8 of `bits`,
    brighter samples (beyond the calibrated depth) clipped at 255."""
    if samples is None or samples.dtype != np.uint16:
        return samples
    return np.minimum(samples >> (bits - 8), 255).astype(np.uint8)


def _content_type(message: InboundMessage, meta: FrameMeta, limits: DecodeLimits) -> str:
    content_type = contracts.normalise_content_type(message.header(contracts.CONTENT_TYPE_HEADER))
    if content_type not in contracts.CONTENT_TYPES:
        raise RefusalError(
            UNSUPPORTED_CONTENT_TYPE,
            VALIDATE,
            f"content-type: expected one of {', '.join(contracts.CONTENT_TYPES)}, received"
            f" {shown(content_type, 80)}",
        )
    if content_type == contracts.RAW_GRAY8 and meta.width is None:
        raise RefusalError(INVALID_METADATA, VALIDATE, f"{contracts.RAW_GRAY8} frames need width and height")
    size = len(message.value or b"")
    if size == 0 and meta.image_uri is None:
        raise RefusalError(
            EMPTY_PAYLOAD, VALIDATE, "the message value is empty and frame-meta has no image_uri"
        )
    if size > limits.max_frame_bytes:
        raise RefusalError(
            OVERSIZE_PAYLOAD, VALIDATE, f"payload has {size} bytes, limit {limits.max_frame_bytes}"
        )
    return content_type


def decode_message(message: InboundMessage, limits: DecodeLimits) -> DecodedFrame | Rejected:
    """Validate and decode one frame message; never raises (see the module doc)."""
    meta: FrameMeta | None = None
    try:
        check_headers(message.headers)
        meta = parse_frame_meta(message.header(contracts.FRAME_META_HEADER), limits.max_strip_length_m)
        content_type = _content_type(message, meta, limits)
        data = message.value or b""
        if not data:
            assert meta.image_uri is not None
            data = _fetch(meta.image_uri, limits)
            if not data:
                raise RefusalError(EMPTY_PAYLOAD, FETCH, "the claim-check image is empty")
        image = _decode_pixels(data, content_type, meta, limits)
        verdict = (
            limits.quality.judge(data, content_type, image, meta, message.timestamp_ms)
            if limits.quality
            else None
        )
        if verdict is not None and verdict.refused:
            return Rejected(
                IMAGE_QUALITY, DECODE, shown(verdict.detail(), 2000), message.source, meta, verdict.flags
            )
    except RefusalError as refusal:
        return Rejected(refusal.reason, refusal.stage, shown(refusal.detail, 2000), message.source, meta)
    except cv2.error as exc:  # OpenCV refusing a malformed stream in its own way
        return Rejected(CORRUPT_IMAGE, DECODE, f"OpenCV: {shown(exc.msg or exc)}", message.source, meta)
    except Exception as exc:  # a case this decoder does not know: refused all the same, and logged
        log.exception("decoder.unexpected_error", source=str(message.source))
        detail = f"the decoder failed unexpectedly: {type(exc).__name__}: {shown(exc)}"
        return Rejected(DECODER_ERROR, DECODE, detail, message.source, meta)
    flags = verdict.flags if verdict is not None else ()
    return DecodedFrame(meta, message.source, image, message_sha256(message), quality_flags=flags)


def message_sha256(message: InboundMessage) -> str:
    """sha256 (hex) of a frame message's content: its frame-meta header, then its value, each
    preceded by its length (8 bytes, big-endian)."""
    digest = hashlib.sha256()
    for part in (message.header(contracts.FRAME_META_HEADER) or b"", message.value or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
