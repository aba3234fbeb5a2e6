"""Valid images that are costly to decode: what a hostile (or badly broken) camera can send that every
size check lets through.

- `jpeg_scan_bomb`: a well-formed progressive JPEG whose AC scan is repeated `scans` times. Each
  repeat is 12–20 bytes — one Huffman symbol (an end-of-band run of up to 32 767 blocks) per run —
  yet libjpeg walks every block of the image for each one and only warns about the progression.
- `png_chunk_flood`: a valid PNG whose image data is cut into `chunks` IDAT chunks (and as many
  ancillary chunks), each checked and copied by libpng.
- `segments`: the marker segments of a JPEG (marker, start, end), entropy-coded data included in
  the scan's segment — how the tests find scans.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

_EOB_RUN_14 = 0xE0  # AC symbol: end-of-band run of 2**14 + (14 extra bits) blocks
_LONGEST_RUN = 32_767


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment of a JPEG after SOI; a scan's segment runs to
    the next marker that is not a restart or a stuffed 0xFF."""
    found = []
    i = 2
    while i + 1 < len(data):
        if data[i] != 0xFF:
            raise ValueError(f"marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xD9:
            found.append((marker, i, i + 2))
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        end = i + 2 + length
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        found.append((marker, i, end))
        i = end
    return found


def _bits_to_bytes(bits: str) -> bytes:
    bits += "1" * (-len(bits) % 8)  # pad with ones, as the standard says
    out = bytearray()
    for k in range(0, len(bits), 8):
        byte = int(bits[k : k + 8], 2)
        out.append(byte)
        if byte == 0xFF:
            out.append(0)  # byte stuffing
    return bytes(out)


def _eob_scan(blocks: int) -> bytes:
    """SOS for component 1, AC band 1..63 with AC table 1, and data that ends every block's band."""
    bits = []
    left = blocks
    while left > 0:
        run = min(left, _LONGEST_RUN)
        r = run.bit_length() - 1  # EOBRUN symbol r: a run of 2**r + (r extra bits) blocks
        extra = format(run - 2**r, f"0{r}b") if r else ""
        bits.append(("0" if r == 14 else _short_run_code(r)) + extra)
        left -= run
    header = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x01, 1, 63, 0)
    return header + _bits_to_bytes("".join(bits))


def _short_run_code(r: int) -> str:
    """The canonical code of EOBRUN symbol r (0..13) in `_AC_TABLE`: r + 1 ones and a zero."""
    return "1" * (r + 1) + "0"


# AC table 1: EOB14 (0xE0) gets code '0'; EOBRUN symbols 0x00, 0x10, ..., 0xD0 get '10', '110', ...
_AC_SYMBOLS = [_EOB_RUN_14] + [r << 4 for r in range(14)]
_AC_COUNTS = [1] + [1] * 14 + [0]  # one code of each length 1..15
_AC_TABLE = (
    b"\xff\xc4"
    + struct.pack(">HB", 2 + 1 + 16 + len(_AC_SYMBOLS), 0x11)
    + bytes(_AC_COUNTS)
    + bytes(_AC_SYMBOLS)
)


def jpeg_scan_bomb(width: int, height: int, scans: int, seed: int = 0) -> bytes:
    """A valid progressive grey JPEG of `width` × `height` with `scans` extra AC scans (see the
    module doc); it decodes to the right size, only slowly."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(128, 1.5, (height, width)), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = encoded.tobytes()
    eoi = data.rindex(b"\xff\xd9")
    blocks = -(-width // 8) * -(-height // 8)
    return data[:eoi] + _AC_TABLE + _eob_scan(blocks) * scans + data[eoi:]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunk_flood(image: np.ndarray, chunks: int) -> bytes:
    """A valid 8-bit grey PNG of `image` whose compressed data is spread over `chunks` IDAT chunks
    (at least one byte each), preceded by as many tEXt chunks."""
    height, width = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))
    compressed = zlib.compress(raw, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    size = max(1, -(-len(compressed) // chunks))
    idats = [compressed[k : k + size] for k in range(0, len(compressed), size)]
    idats += [b""] * max(0, chunks - len(idats))  # empty IDAT chunks are valid
    texts = [_chunk(b"tEXt", b"k\x00%d" % k) for k in range(chunks)]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(texts)
        + b"".join(_chunk(b"IDAT", part) for part in idats)
        + _chunk(b"IEND", b"")
    )
