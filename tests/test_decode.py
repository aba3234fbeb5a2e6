"""Decoding and validating frames: good frames decode exactly; every kind of bad input becomes a
Rejected value with its reason and stage, and nothing in a message can make the decoder raise."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from frames import grey_image, inbound, jpeg_bytes, make_meta, png_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core import contracts
from worker.core import refusals as r
from worker.core.records import DecodedFrame
from worker.streaming import decode as d
from worker.streaming.decode_pool import Decoder

LIMITS = d.DecodeLimits(max_frame_bytes=2_000_000, max_frame_pixels=1_000_000)


def _headers(content_type: str | None = contracts.PNG, meta=None) -> list[tuple[str, bytes]]:
    meta = meta or make_meta()
    headers = contracts.frame_headers(meta, content_type or "x")
    return headers if content_type is not None else [h for h in headers if h[0] != "content-type"]


def _decode(value: bytes | None, headers: list[tuple[str, bytes]]) -> DecodedFrame | d.Rejected:
    return d.decode_message(inbound(value, headers, offset=7), LIMITS)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width×height (valid CRC) followed by a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        d.PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_png_decodes_to_the_exact_grey_image() -> None:
    image = grey_image(256, 600, seed=1)
    frame = _decode(png_bytes(image), _headers())
    assert isinstance(frame, DecodedFrame)
    np.testing.assert_array_equal(frame.image, image)
    assert frame.meta == make_meta() and frame.source.offset == 7


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_decodes_close_to_the_image(progressive: bool) -> None:
    image = grey_image(300, 500, seed=2)
    data = jpeg_bytes(image, progressive=progressive)
    assert d.image_dimensions(data, contracts.JPEG) == (500, 300)
    frame = _decode(data, _headers(contracts.JPEG))
    assert isinstance(frame, DecodedFrame)
    assert frame.image.shape == (300, 500)
    assert np.abs(frame.image.astype(int) - image).mean() < 4


def test_colour_png_is_read_as_grey() -> None:
    colour = np.dstack([grey_image(64, 80, seed=s) for s in range(3)])
    frame = _decode(png_bytes(colour), _headers())
    assert isinstance(frame, DecodedFrame) and frame.image.shape == (64, 80)


def test_raw_gray8_uses_width_and_height_from_the_metadata() -> None:
    image = grey_image(100, 300, seed=3)
    meta = make_meta(width=300, height=100)
    frame = _decode(image.tobytes(), _headers(contracts.RAW_GRAY8, meta))
    assert isinstance(frame, DecodedFrame)
    np.testing.assert_array_equal(frame.image, image)


def test_claim_check_reads_the_image_from_a_file_uri_under_the_root(tmp_path: Path) -> None:
    image = grey_image(64, 64, seed=4)
    path = tmp_path / "frame 1.png"
    path.write_bytes(png_bytes(image))
    meta = make_meta(image_uri=path.as_uri())
    limits = replace(LIMITS, claim_check_root=tmp_path.resolve())
    frame = d.decode_message(inbound(b"", _headers(contracts.PNG, meta), offset=7), limits)
    assert isinstance(frame, DecodedFrame)
    np.testing.assert_array_equal(frame.image, image)


GOOD_PNG = png_bytes(grey_image(64, 64))


def _meta_header(data: dict) -> list[tuple[str, bytes]]:
    return [("content-type", b"image/png"), ("frame-meta", json.dumps(data).encode())]


BAD_INPUTS = {
    "no frame-meta header": (GOOD_PNG, [("content-type", b"image/png")], r.MISSING_METADATA, r.VALIDATE),
    "frame-meta not JSON": (
        GOOD_PNG,
        [("content-type", b"image/png"), ("frame-meta", b"{oops")],
        r.INVALID_METADATA,
        r.VALIDATE,
    ),
    "frame-meta missing a field": (
        GOOD_PNG,
        _meta_header({k: v for k, v in contracts.frame_meta_dict(make_meta()).items() if k != "strip_id"}),
        r.INVALID_METADATA,
        r.VALIDATE,
    ),
    "no content-type": (GOOD_PNG, _headers(None), r.UNSUPPORTED_CONTENT_TYPE, r.VALIDATE),
    "wrong content-type": (GOOD_PNG, _headers("image/gif"), r.UNSUPPORTED_CONTENT_TYPE, r.VALIDATE),
    "zero bytes": (b"", _headers(), r.EMPTY_PAYLOAD, r.VALIDATE),
    "null value": (None, _headers(), r.EMPTY_PAYLOAD, r.VALIDATE),
    "oversize payload": (b"\0" * (LIMITS.max_frame_bytes + 1), _headers(), r.OVERSIZE_PAYLOAD, r.VALIDATE),
    "truncated PNG": (GOOD_PNG[: len(GOOD_PNG) // 2], _headers(), r.CORRUPT_IMAGE, r.DECODE),
    "truncated PNG header": (GOOD_PNG[:20], _headers(), r.CORRUPT_IMAGE, r.DECODE),
    "truncated JPEG": (
        jpeg_bytes(grey_image(64, 64))[:-300],
        _headers(contracts.JPEG),
        r.CORRUPT_IMAGE,
        r.DECODE,
    ),
    "garbage bytes": (b"hello, this is not an image" * 10, _headers(), r.CORRUPT_IMAGE, r.DECODE),
    "PNG labelled JPEG": (GOOD_PNG, _headers(contracts.JPEG), r.CONTENT_TYPE_MISMATCH, r.DECODE),
    "PNG with corrupt pixel data": (
        GOOD_PNG[:41] + b"\x13" * 60 + GOOD_PNG[101:],
        _headers(),
        r.CORRUPT_IMAGE,
        r.DECODE,
    ),
    "decompression bomb header (65535x65535)": (
        _png_header_only(65535, 65535),
        _headers(),
        r.IMAGE_TOO_LARGE,
        r.DECODE,
    ),
    "real image over the pixel limit": (
        png_bytes(np.zeros((1000, 1001), np.uint8)),
        _headers(),
        r.IMAGE_TOO_LARGE,
        r.DECODE,
    ),
    "zero-width PNG header": (_png_header_only(0, 10), _headers(), r.CORRUPT_IMAGE, r.DECODE),
    "raw without width/height": (b"\0" * 100, _headers(contracts.RAW_GRAY8), r.INVALID_METADATA, r.VALIDATE),
    "raw too short for its size": (
        b"\0" * 99,
        _headers(contracts.RAW_GRAY8, make_meta(width=10, height=10)),
        r.CORRUPT_IMAGE,
        r.DECODE,
    ),
    "raw over the pixel limit": (
        b"\0" * 100,
        _headers(contracts.RAW_GRAY8, make_meta(width=100_000, height=100)),
        r.IMAGE_TOO_LARGE,
        r.DECODE,
    ),
    "metadata size differs from the image": (
        GOOD_PNG,
        _headers(contracts.PNG, make_meta(width=65, height=64)),
        r.INVALID_METADATA,
        r.VALIDATE,
    ),
    "claim check with an http URI": (
        b"",
        _headers(contracts.PNG, make_meta(image_uri="http://cam/1.png")),
        r.IMAGE_UNAVAILABLE,
        r.FETCH,
    ),
    "claim check while claim checks are off": (
        b"",
        _headers(contracts.PNG, make_meta(image_uri="file:///nonexistent/1.png")),
        r.IMAGE_UNAVAILABLE,
        r.FETCH,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_rejected_with_its_reason_and_stage(case: str) -> None:
    value, headers, reason, stage = BAD_INPUTS[case]
    rejected = _decode(value, headers)
    assert isinstance(rejected, d.Rejected), f"{case}: expected a rejection, got a decoded frame"
    assert (rejected.reason, rejected.stage) == (reason, stage), rejected.detail
    assert rejected.source.offset == 7 and rejected.detail
    assert rejected.reason in r.REASONS


def test_reasons_and_stages_are_exactly_the_dead_letter_schema_enums() -> None:
    schema = json.loads((contracts.SCHEMAS_DIR / "dead-letter-headers.v1.json").read_text())
    assert schema["properties"]["dlq-reason"]["enum"] == list(r.REASONS)
    assert schema["properties"]["dlq-stage"]["enum"] == list(r.STAGES)


def test_rejection_keeps_valid_metadata_for_the_logs() -> None:
    rejected = _decode(b"", _headers())
    assert isinstance(rejected, d.Rejected) and rejected.meta == make_meta()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=300).map(lambda b: GOOD_PNG[:60] + b),
        st.integers(0, len(GOOD_PNG)).map(lambda n: GOOD_PNG[:n]),
        st.binary(max_size=300).map(lambda b: b"\xff\xd8" + b),
    ),
    content_type=st.sampled_from([contracts.PNG, contracts.JPEG, contracts.RAW_GRAY8]),
)
def test_no_payload_makes_the_decoder_raise(payload: bytes, content_type: str) -> None:
    meta = make_meta(width=10, height=10) if content_type == contracts.RAW_GRAY8 else make_meta()
    result = _decode(payload, _headers(content_type, meta))
    assert isinstance(result, DecodedFrame | d.Rejected)
    if isinstance(result, DecodedFrame):
        assert result.image.dtype == np.uint8 and result.image.ndim == 2


def test_decoder_pool_keeps_input_order() -> None:
    images = [grey_image(32 + i, 40, seed=i) for i in range(6)]
    messages = [
        inbound(
            png_bytes(im) if i != 3 else b"", _headers(meta=replace(make_meta(), frame_id=f"f{i}")), offset=i
        )
        for i, im in enumerate(images)
    ]
    with Decoder(LIMITS, workers=3) as decoder:
        results = decoder.decode_all(messages)
    assert [r.source.offset for r in results] == list(range(6))
    assert isinstance(results[3], d.Rejected)
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(results[i].image, images[i])
