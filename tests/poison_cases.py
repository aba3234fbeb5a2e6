"""The table of hand-made bad messages (and valid oddities) that the door must handle.

Each `Case` is one message a broken camera, a flaky network or a curious insider could publish,
with what must become of it: a dead letter with `expect` as its reason, or PROCESSED (a ledger
row and a detection message). `tests/test_validation.py` runs every message case through the
decoder alone; `tests/test_poison_messages.py` publishes the whole table, interleaved with good
frames, to a real worker (broker, PostgreSQL, model). Cases of kind "compressed:CODEC" and
"poison:KIND" are record batches (tests/poison_records.py): they exist only on a broker.

`LIMITS` are the bounds both use (small, so that the oversize cases stay cheap).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from frames import grey_image, jpeg_bytes, make_meta, png_bytes

from worker.core import contracts
from worker.core import refusals as r
from worker.streaming.decode import DecodeLimits
from worker.streaming.validation import DEFAULT_MAX_STRIP_LENGTH_M

PROCESSED = "processed"
MAX_FRAME_BYTES = 1_500_000
LIMITS = DecodeLimits(
    max_frame_bytes=MAX_FRAME_BYTES,
    max_frame_pixels=4_000_000,
    max_frame_tiles=64,
    tile_size=256,
    claim_check_root=None,  # set per test: the folder `claim_check_files` fills
    claim_check_timeout_s=5.0,
)
#: The worker settings that match LIMITS (and a decompression bound the bomb case passes).
WORKER_OVERRIDES = {
    "max_frame_bytes": str(MAX_FRAME_BYTES),
    "max_frame_pixels": "4000000",
    "max_frame_tiles": "64",
    "max_decompressed_bytes": str(8 * 1024 * 1024),
}

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Case:
    """One message (or record batch) and what must become of it."""

    name: str
    expect: str  # a dead-letter reason, or PROCESSED
    key: bytes | None = b"S9"
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    kind: str = "message"  # "message", "compressed:gzip|snappy|lz4|zstd", "poison:crc|header-key|gzip-bomb"
    records: int = 1  # offsets the case takes (poison batches of several records)

    @property
    def frame_id(self) -> str | None:
        for key, value in self.headers:
            if key.lower() == "frame-meta":
                try:
                    return str(json.loads(value)["frame_id"])
                except (ValueError, KeyError, TypeError):
                    return None
        return None


def _meta(frame_id: str, **changes: Any) -> dict[str, Any]:
    data = contracts.frame_meta_dict(make_meta(frame_id, strip_id="S9", position_m=50.0))
    data.update(changes)
    return data


def _headers(
    meta: dict[str, Any] | bytes, content_type: str | bytes = contracts.PNG
) -> tuple[tuple[str, bytes], ...]:
    raw = (
        meta
        if isinstance(meta, bytes)
        else json.dumps(meta, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )
    ct = content_type if isinstance(content_type, bytes) else content_type.encode()
    return (("content-type", ct), ("frame-meta", raw))


def _raw_meta(text: str) -> bytes:
    """A frame-meta header written by hand (for what json.dumps will not write: NaN, big numbers)."""
    return text.encode("utf-8", "surrogatepass")


def _meta_text(frame_id: str, **literals: str) -> bytes:
    """The good frame-meta JSON with each field set to a JSON literal written by hand."""
    data = _meta(frame_id, **{field: f"__{field}__" for field in literals})
    text = json.dumps(data)
    for field, literal in literals.items():
        text = text.replace(f'"__{field}__"', literal)
    return _raw_meta(text)


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width×height (valid CRCs), a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _png_grey_alpha(height: int, width: int) -> bytes:
    """A valid PNG of colour type 4 (grey + alpha), which OpenCV cannot write but cameras do."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = np.dstack([grey_image(height, width, seed=16), np.full((height, width), 255, np.uint8)])
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 4, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose start-of-frame header is rewritten to declare width×height."""
    data = bytearray(jpeg_bytes(grey_image(16, 16)))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def _encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def claim_check_files(root: Path, outside: Path) -> dict[str, str]:
    """Files under `root` (and one `outside` it) for the claim-check cases; name → file:// URI."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    good = root / "frame ok.png"
    good.write_bytes(png_bytes(grey_image(256, 256, seed=77)))
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.png").write_bytes(b"not an image at all" * 20)
    (root / "big.png").write_bytes(b"\0" * (MAX_FRAME_BYTES + 1))
    secret = outside / "secret.png"
    secret.write_bytes(png_bytes(grey_image(64, 64, seed=78)))
    (root / "escape.png").unlink(missing_ok=True)
    (root / "escape.png").symlink_to(secret)
    (root / "zero.png").unlink(missing_ok=True)
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "a-folder.png").mkdir(exist_ok=True)
    fifo = root / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    return {
        "good": good.as_uri(),
        "empty": (root / "empty.png").as_uri(),
        "garbage": (root / "garbage.png").as_uri(),
        "big": (root / "big.png").as_uri(),
        "outside": secret.as_uri(),
        "escape": (root / "escape.png").as_uri(),
        "zero": (root / "zero.png").as_uri(),
        "folder": (root / "a-folder.png").as_uri(),
        "fifo": fifo.as_uri(),
        "missing": (root / "missing.png").as_uri(),
        "dotdot": root.as_uri() + "/../" + outside.name + "/secret.png",
    }


def case_names() -> list[str]:
    """The cases' names, in order, without making their claim-check files (for parametrize)."""
    return [c.name for c in cases(dict.fromkeys(CLAIM_CHECK_KEYS, "file:///not-made"))]


#: The names `claim_check_files` gives its URIs.
CLAIM_CHECK_KEYS = (
    "good",
    "empty",
    "garbage",
    "big",
    "outside",
    "escape",
    "zero",
    "folder",
    "fifo",
    "missing",
    "dotdot",
)


def cases(uris: dict[str, str]) -> list[Case]:  # noqa: PLR0915  (one table)
    """Every case, in publication order (claim-check URIs from `claim_check_files`)."""
    png = png_bytes(grey_image(256, 256, seed=5))
    jpeg = jpeg_bytes(grey_image(256, 256, seed=6))
    raw = grey_image(64, 80, seed=7)
    table: list[Case] = []

    def add(name: str, expect: str, value: bytes | None = png, headers: Any = None, **more: Any) -> None:
        headers = headers if headers is not None else _headers(_meta(f"case-{len(table):03d}"))
        table.append(Case(name, expect, value=value, headers=tuple(headers), **more))

    def fid() -> str:
        return f"case-{len(table):03d}"

    # --- frame-meta numbers ----------------------------------------------------------------------
    for literal in ("NaN", "Infinity", "-Infinity"):
        add(
            f"position_m {literal}",
            r.NON_FINITE_NUMBER,
            headers=_headers(_meta_text(fid(), position_m=literal)),
        )
    add(
        "mm_per_px_along 1e999",
        r.NON_FINITE_NUMBER,
        headers=_headers(_meta_text(fid(), mm_per_px_along="1e999")),
    )
    add("edge_offset_mm NaN", r.NON_FINITE_NUMBER, headers=_headers(_meta_text(fid(), edge_offset_mm="NaN")))
    add("position_m 1e308", r.INVALID_METADATA, headers=_headers(_meta(fid(), position_m=1e308)))
    add("mm_per_px_across 1e6", r.INVALID_METADATA, headers=_headers(_meta(fid(), mm_per_px_across=1e6)))
    add("position_m negative", r.INVALID_METADATA, headers=_headers(_meta(fid(), position_m=-0.5)))
    add("position_m a string", r.INVALID_METADATA, headers=_headers(_meta(fid(), position_m="1.0")))
    add("position_m true", r.INVALID_METADATA, headers=_headers(_meta(fid(), position_m=True)))
    add("mm_per_px_along 0", r.INVALID_METADATA, headers=_headers(_meta(fid(), mm_per_px_along=0)))
    add("edge_offset_mm 1e12", r.INVALID_METADATA, headers=_headers(_meta(fid(), edge_offset_mm=1e12)))
    add(
        "position_m of 5000 digits",
        r.INVALID_METADATA,
        headers=_headers(_meta_text(fid(), position_m="9" * 5000)),
    )
    add("mm_per_px_along 1e-300 (valid)", PROCESSED, headers=_headers(_meta(fid(), mm_per_px_along=1e-300)))
    add(
        "position_m at MAX_STRIP_LENGTH_M (valid)",
        PROCESSED,
        headers=_headers(_meta(fid(), position_m=DEFAULT_MAX_STRIP_LENGTH_M)),
    )
    add(
        "position_m in millimetres (over MAX_STRIP_LENGTH_M)",
        r.POSITION_OUT_OF_RANGE,
        headers=_headers(_meta(fid(), position_m=950_000.0)),
    )
    add("edge_offset_mm negative (valid)", PROCESSED, headers=_headers(_meta(fid(), edge_offset_mm=-500.0)))

    # --- integers (raw frames carry width and height) ----------------------------------------------
    raw_ct = contracts.RAW_GRAY8
    add(
        "raw width 80.0",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta_text(fid(), width="80.0", height="64"), raw_ct),
    )
    add(
        "raw height a string",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta(fid(), width=80, height="64"), raw_ct),
    )
    add(
        "raw width of 30 digits",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta_text(fid(), width="1" * 30, height="64"), raw_ct),
    )
    add("raw width 0", r.INVALID_METADATA, raw.tobytes(), _headers(_meta(fid(), width=0, height=64), raw_ct))
    add(
        "raw width negative",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta(fid(), width=-80, height=64), raw_ct),
    )
    add(
        "raw width true",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta(fid(), width=True, height=64), raw_ct),
    )
    add(
        "raw width without height",
        r.INVALID_METADATA,
        raw.tobytes(),
        _headers(_meta(fid(), width=80), raw_ct),
    )
    add("raw without width and height", r.INVALID_METADATA, raw.tobytes(), _headers(_meta(fid()), raw_ct))
    add(
        "raw one byte short",
        r.CORRUPT_IMAGE,
        raw.tobytes()[:-1],
        _headers(_meta(fid(), width=80, height=64), raw_ct),
    )
    add(
        "raw 1x1000000 (thin)",
        r.TOO_MANY_TILES,
        b"\0" * 1_000_000,
        _headers(_meta(fid(), width=1, height=1_000_000), raw_ct),
    )
    add(
        "raw over the pixel limit",
        r.IMAGE_TOO_LARGE,
        b"\0" * 100,
        _headers(_meta(fid(), width=100_000, height=100), raw_ct),
    )
    add("raw 80x64 (valid)", PROCESSED, raw.tobytes(), _headers(_meta(fid(), width=80, height=64), raw_ct))

    # --- identifiers -----------------------------------------------------------------------------
    add("frame_id with NUL", r.INVALID_IDENTIFIER, headers=_headers(_meta("bad\x00id")))
    add(
        "frame_id lone surrogate",
        r.INVALID_IDENTIFIER,
        headers=_headers(_raw_meta(json.dumps(_meta("X")).replace('"X"', '"bad\\ud800id"'))),
    )
    add(
        "strip_id with a newline",
        r.INVALID_IDENTIFIER,
        headers=_headers(_meta(fid(), strip_id="S9\nlevel=error forged")),
    )
    add(
        "camera with a right-to-left override",
        r.INVALID_IDENTIFIER,
        headers=_headers(_meta(fid(), camera="cam\u202etop")),
    )
    add("line with a zero-width space", r.INVALID_IDENTIFIER, headers=_headers(_meta(fid(), line="L\u200b1")))
    add("strip_id with DEL", r.INVALID_IDENTIFIER, headers=_headers(_meta(fid(), strip_id="S\x7f9")))
    add("frame_id with a space", r.INVALID_IDENTIFIER, headers=_headers(_meta("case 1")))
    add("frame_id empty", r.INVALID_METADATA, headers=_headers(_meta("")))
    add("frame_id of 201 characters", r.INVALID_METADATA, headers=_headers(_meta("f" * 201)))
    add("frame_id of 1 MB", r.INVALID_HEADERS, headers=_headers(_meta("f" * 1_000_000)))
    number_id = _raw_meta(json.dumps(_meta("__N__")).replace('"__N__"', "123"))
    add("frame_id a number", r.INVALID_METADATA, headers=_headers(number_id))
    add(
        "frame_id in other scripts (valid)", PROCESSED, headers=_headers(_meta(f"{fid()}-Bandstahl-ß-✓-帯鋼"))
    )

    # --- timestamps ------------------------------------------------------------------------------
    for text, expect in (
        ("2024-05-01T08:30:00+16:00", r.TIMESTAMP_OUT_OF_RANGE),
        ("2024-05-01T08:30:00-23:59", r.TIMESTAMP_OUT_OF_RANGE),
        ("0001-01-01T00:00:00+15:00", r.TIMESTAMP_OUT_OF_RANGE),
        ("9999-12-31T23:59:59-15:00", r.TIMESTAMP_OUT_OF_RANGE),
        ("1969-12-31T23:59:59Z", r.TIMESTAMP_OUT_OF_RANGE),
        ("2200-01-01T00:00:00Z", r.TIMESTAMP_OUT_OF_RANGE),
        ("2024-02-30T00:00:00Z", r.TIMESTAMP_OUT_OF_RANGE),
        ("2024-05-01T23:59:60Z", r.TIMESTAMP_OUT_OF_RANGE),
        ("2024-05-01T08:30:00", r.INVALID_METADATA),
        ("yesterday", r.INVALID_METADATA),
        ("2024-05-01T08:30:00+15:59", PROCESSED),
        ("2199-12-31T23:59:59Z", PROCESSED),
        ("2024-05-01t08:30:00.123456789z", PROCESSED),
    ):
        add(f"captured_at {text}", expect, headers=_headers(_meta(fid(), captured_at=text)))

    # --- JSON shape and size ---------------------------------------------------------------------
    add("frame-meta not JSON", r.INVALID_METADATA, headers=_headers(b"{oops"))
    add("frame-meta an array", r.INVALID_METADATA, headers=_headers(b"[]"))
    add("frame-meta null", r.INVALID_METADATA, headers=_headers(b"null"))
    add("frame-meta empty", r.INVALID_METADATA, headers=_headers(b""))
    add("frame-meta nested 4000 deep", r.INVALID_METADATA, headers=_headers(b"[" * 4000 + b"]" * 4000))
    add(
        "frame-meta with a nested field",
        r.INVALID_METADATA,
        headers=_headers(_meta(fid(), line={"a": [1, {"b": 2}]})),
    )
    add("frame-meta with an unknown field", r.INVALID_METADATA, headers=_headers(_meta(fid(), colour="red")))
    add("frame-meta of 9 KB", r.INVALID_METADATA, headers=_headers(_meta(fid(), note="x" * 9000)))
    add(
        "frame-meta with a name twice",
        r.INVALID_METADATA,
        headers=_headers(
            _raw_meta(json.dumps(_meta(fid())).replace('{"frame_id"', '{"frame_id": "other", "frame_id"'))
        ),
    )
    add(
        "frame-meta with a UTF-8 BOM",
        r.INVALID_METADATA,
        headers=_headers(b"\xef\xbb\xbf" + json.dumps(_meta(fid())).encode()),
    )
    add(
        "frame-meta in UTF-16",
        r.INVALID_METADATA,
        headers=_headers(json.dumps(_meta(fid())).encode("utf-16")),
    )
    add("frame-meta not UTF-8", r.INVALID_METADATA, headers=_headers(b'{"frame_id": "\xff\xfe"}'))

    # --- headers ---------------------------------------------------------------------------------
    meta_ok = _headers(_meta(fid()))
    add("no frame-meta header", r.MISSING_METADATA, headers=[("content-type", b"image/png")])
    add(
        "frame-meta given twice",
        r.INVALID_HEADERS,
        headers=[*_headers(_meta(fid())), ("frame-meta", meta_ok[1][1])],
    )
    add(
        "content-type given twice",
        r.INVALID_HEADERS,
        headers=[*_headers(_meta(fid())), ("Content-Type", b"image/jpeg")],
    )
    add(
        "100 headers",
        r.INVALID_HEADERS,
        headers=[*_headers(_meta(fid())), *[(f"x-{i}", b"1") for i in range(98)]],
    )
    add("a 40 KB header", r.INVALID_HEADERS, headers=[*_headers(_meta(fid())), ("x-blob", b"b" * 40_000)])
    add(
        "header names in capitals (valid)",
        PROCESSED,
        headers=[("Content-Type", b"image/png"), ("Frame-Meta", json.dumps(_meta(fid())).encode())],
    )
    add(
        "an extra header (valid)",
        PROCESSED,
        headers=[*_headers(_meta(fid())), ("traceparent", b"00-abc-def-01")],
    )

    # --- content types ---------------------------------------------------------------------------
    add(
        "no content-type",
        r.UNSUPPORTED_CONTENT_TYPE,
        headers=[("frame-meta", json.dumps(_meta(fid())).encode())],
    )
    add("content-type image/gif", r.UNSUPPORTED_CONTENT_TYPE, headers=_headers(_meta(fid()), "image/gif"))
    add("content-type of 20 KB", r.UNSUPPORTED_CONTENT_TYPE, headers=_headers(_meta(fid()), "x" * 20_000))
    add("content-type not UTF-8", r.UNSUPPORTED_CONTENT_TYPE, headers=_headers(_meta(fid()), b"\xff\xfe"))
    add(
        "content-type with parameters (valid)",
        PROCESSED,
        headers=_headers(_meta(fid()), "IMAGE/PNG; charset=binary"),
    )
    add("PNG labelled JPEG", r.CONTENT_TYPE_MISMATCH, png, _headers(_meta(fid()), contracts.JPEG))
    add("JPEG labelled PNG", r.CONTENT_TYPE_MISMATCH, jpeg, _headers(_meta(fid()), contracts.PNG))

    # --- payloads --------------------------------------------------------------------------------
    add("empty value", r.EMPTY_PAYLOAD, b"")
    add("null value", r.EMPTY_PAYLOAD, None)
    add("truncated PNG", r.CORRUPT_IMAGE, png[: len(png) // 2])
    add("PNG cut inside its header", r.CORRUPT_IMAGE, png[:20])
    add("truncated JPEG", r.CORRUPT_IMAGE, jpeg[:-300], _headers(_meta(fid()), contracts.JPEG))
    add("PNG with corrupt pixel data", r.CORRUPT_IMAGE, png[:41] + b"\x13" * 60 + png[101:])
    add("garbage bytes", r.CORRUPT_IMAGE, b"hello, this is not an image" * 10)
    add("a GIF labelled PNG", r.CORRUPT_IMAGE, b"GIF89a" + b"\0" * 200)
    add("PNG declaring 65535x65535 (bomb)", r.IMAGE_TOO_LARGE, _png_declaring(65535, 65535))
    add(
        "JPEG declaring 60000x60000 (bomb)",
        r.IMAGE_TOO_LARGE,
        _jpeg_declaring(60000, 60000),
        _headers(_meta(fid()), contracts.JPEG),
    )
    add("PNG declaring 0 pixels wide", r.CORRUPT_IMAGE, _png_declaring(0, 10))
    add("thin PNG 1x100000", r.TOO_MANY_TILES, _encode(np.zeros((100_000, 1), np.uint8)))
    add("over MAX_FRAME_BYTES", r.OVERSIZE_PAYLOAD, b"\0" * (MAX_FRAME_BYTES + 1))
    add("1x1 PNG (valid, padded)", PROCESSED, _encode(np.full((1, 1), 200, np.uint8)))
    add("16-bit PNG (valid)", PROCESSED, _encode(grey_image(256, 256, seed=8).astype(np.uint16) * 257))
    add(
        "colour PNG (valid)",
        PROCESSED,
        _encode(np.dstack([grey_image(256, 256, seed=s) for s in (9, 10, 11)])),
    )
    add(
        "RGBA PNG (valid)",
        PROCESSED,
        _encode(np.dstack([grey_image(256, 256, seed=s) for s in (12, 13, 14, 15)])),
    )
    add(
        "grey+alpha PNG (valid)",
        PROCESSED,
        _png_grey_alpha(256, 256),
    )
    add(
        "progressive JPEG (valid)",
        PROCESSED,
        jpeg_bytes(grey_image(256, 300, seed=18), progressive=True),
        _headers(_meta(fid()), contracts.JPEG),
    )
    add("wide frame 1600x256 (valid)", PROCESSED, png_bytes(grey_image(256, 1600, seed=19)))

    # --- claim checks (CLAIM_CHECK_ROOT set) -------------------------------------------------------
    for name, uri_key, expect in (
        ("claim check under the root (valid)", "good", PROCESSED),
        ("claim check of an empty file", "empty", r.EMPTY_PAYLOAD),
        ("claim check of garbage", "garbage", r.CORRUPT_IMAGE),
        ("claim check over MAX_FRAME_BYTES", "big", r.OVERSIZE_PAYLOAD),
        ("claim check outside the root", "outside", r.IMAGE_UNAVAILABLE),
        ("claim check through a symlink out of the root", "escape", r.IMAGE_UNAVAILABLE),
        ("claim check through .. out of the root", "dotdot", r.IMAGE_UNAVAILABLE),
        ("claim check of /dev/zero", "zero", r.IMAGE_UNAVAILABLE),
        ("claim check of a folder", "folder", r.IMAGE_UNAVAILABLE),
        ("claim check of a FIFO", "fifo", r.IMAGE_UNAVAILABLE),
        ("claim check of a missing file", "missing", r.IMAGE_UNAVAILABLE),
    ):
        add(name, expect, b"", _headers(_meta(fid(), image_uri=uris[uri_key])))
    for name, uri in (
        ("claim check over http", "http://camera.local/1.png"),
        ("claim check with a host", "file://camera.local/srv/1.png"),
        ("claim check with %00", uris["good"] + "%00.png"),
        ("claim check with an encoded surrogate", uris["good"] + "%ED%A0%80"),
        ("claim check of a relative path", "file:frame.png"),
        ("claim check with a query", uris["good"] + "?x=1"),
    ):
        add(name, r.IMAGE_UNAVAILABLE, b"", _headers(_meta(fid(), image_uri=uri)))

    # --- keys ------------------------------------------------------------------------------------
    add("null key (valid)", PROCESSED, key=None)
    add("binary key (valid)", PROCESSED, key=bytes(range(256)))
    add("100 KB key (valid)", PROCESSED, key=b"k" * 100_000)

    # --- collisions --------------------------------------------------------------------------------
    taken = next(c.frame_id for c in table if c.expect == PROCESSED)
    add(
        "another frame under a stored frame_id",
        r.DUPLICATE_FRAME_ID,
        png_bytes(grey_image(256, 256, seed=20)),
        _headers(_meta(taken)),
    )

    # --- record batches: codecs and transport poison -----------------------------------------------
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        add(f"{codec}-compressed frame (valid)", PROCESSED, kind=f"compressed:{codec}")
    add("record batch with a bad CRC", r.UNREADABLE_RECORD, None, (), kind="poison:crc")
    add(
        "record batch of 3 records with a bad CRC",
        r.UNREADABLE_RECORD,
        None,
        (),
        kind="poison:crc",
        records=3,
    )
    add("record whose header key is not UTF-8", r.UNREADABLE_RECORD, None, (), kind="poison:header-key")
    add("gzip batch over the decompression bound", r.UNREADABLE_RECORD, None, (), kind="poison:gzip-bomb")
    return table
