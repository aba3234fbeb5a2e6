"""Publish record batches that kafka-python cannot read ("poison"), and compressed ones that it can.

`publish_poison` sends ONE hand-made record batch to a real broker, so a test can check that the
worker skips it. The Tansu broker stores what it is given as it is: it accepts batches with a wrong
CRC, records whose header key is not UTF-8, and gzip batches of any decompressed size (it refuses
an unknown codec id, so that kind is not offered).

How: a normal KafkaProducer sends the records, with `DefaultRecordBatchBuilder.build` patched to
mangle the bytes it built. Patching that class would affect every producer of the process (the
worker under test runs in threads of the test process), so the patching runs in a CHILD process:
this file run as a script, with the request as JSON on its command line.

`publish_compressed` publishes ordinary messages with a codec (no child process needed).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The kinds of poison `publish_poison` can publish.
POISON_KINDS = ("crc", "header-key", "gzip-bomb")

#: The header key of 'header-key' poison: not UTF-8, so kafka-python's record parser fails on it.
BAD_HEADER_KEY = b"\xff\xfe"

#: What the child prints, before its JSON result, on its last line.
_RESULT_MARK = "POISON-RESULT "

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def publish_poison(
    bootstrap: str,
    topic: str,
    kind: str,
    *,
    partition: int = 0,
    key: bytes = b"S1",
    records: int = 1,
    bomb_bytes: int = 64 * 1024 * 1024,
) -> None:
    """Publish ONE record batch of `records` records to topic[partition] that kafka-python cannot read.

    'crc': the batch CRC flipped (records otherwise fine: key `key`, value b'poison-<i>').
    'header-key': each record has a header whose key is b'\\xff\\xfe'; the CRC is recomputed, so
        only the key is wrong (kafka-python: CorruptRecordError "Found invalid record structure").
    'gzip-bomb': a gzip batch whose first record's value is `bomb_bytes` zero bytes (any other
        records have empty values); small on the wire (about bomb_bytes / 1000), built streaming.

    Blocks until the broker acknowledged it; raises AssertionError with the child's output if it
    failed.
    """
    if kind not in POISON_KINDS:
        raise ValueError(f"unknown poison kind {kind!r}; expected one of {POISON_KINDS}")
    if records < 1:
        raise ValueError(f"records must be at least 1, got {records}")
    request = {
        "bootstrap": bootstrap,
        "topic": topic,
        "kind": kind,
        "partition": partition,
        "key": key.hex(),
        "records": records,
        "bomb_bytes": bomb_bytes,
    }
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"publish_poison({kind!r}) child timed out: {exc.stdout!r} {exc.stderr!r}"
        ) from None
    if done.returncode != 0 or _RESULT_MARK not in done.stdout:
        raise AssertionError(
            f"publish_poison({kind!r}) to {topic}[{partition}] failed (exit {done.returncode}):\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )


def publish_compressed(
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    codec: str,
    *,
    partition: int | None = None,
) -> None:
    """Publish (key, value, headers) messages with KafkaProducer(compression_type=codec), one flush.

    codec: 'gzip', 'snappy', 'lz4' or 'zstd'. Blocks until every message was acknowledged.
    """
    from kafka import KafkaProducer  # noqa: PLC0415

    largest = max(
        (len(k) + len(v) + sum(len(hk) + len(hv) for hk, hv in h) for k, v, h in messages), default=0
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=codec,
        acks="all",
        linger_ms=50,
        max_request_size=max(1 << 20, 2 * largest + 4096),
        request_timeout_ms=15000,
    )
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=list(headers), partition=partition)
            for key, value, headers in messages
        ]
        producer.flush(30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(5)


# ---------------------------------------------------------------------------------------------
# The child process: builds and sends the poison batch
# ---------------------------------------------------------------------------------------------

# Record batch v2 header (kafka.record.default_records.DefaultRecordBase.HEADER_STRUCT).
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_AFTER_LENGTH = 12
_CODEC_GZIP = 0x01


def _varint(value: int) -> bytes:
    """Kafka's zigzag varint."""
    from kafka.record.util import encode_varint  # noqa: PLC0415

    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


def _set_crc(batch: bytearray) -> bytearray:
    from kafka.record.util import calc_crc32c  # noqa: PLC0415

    struct.pack_into(">I", batch, _CRC_AT, calc_crc32c(bytes(batch[_ATTRIBUTES_AT:])))
    return batch


def _flip_crc(batch: bytearray, _request: dict[str, Any]) -> bytearray:
    (crc,) = struct.unpack_from(">I", batch, _CRC_AT)
    struct.pack_into(">I", batch, _CRC_AT, crc ^ 0xFFFFFFFF)
    return batch


def _break_header_keys(batch: bytearray, _request: dict[str, Any]) -> bytearray:
    """Overwrite every record's 2-byte placeholder header key with BAD_HEADER_KEY; fix the CRC."""
    from kafka.record.util import decode_varint  # noqa: PLC0415

    fields = _HEADER.unpack_from(batch)
    assert fields[5] & 0x07 == 0, "header-key poison needs an uncompressed batch"
    pos = _HEADER.size
    replaced = 0
    for _ in range(fields[12]):
        _length, pos = decode_varint(batch, pos)
        pos += 1  # attributes
        _ts_delta, pos = decode_varint(batch, pos)
        _offset_delta, pos = decode_varint(batch, pos)
        for _field in ("key", "value"):
            size, pos = decode_varint(batch, pos)
            pos += max(size, 0)
        count, pos = decode_varint(batch, pos)
        for _ in range(count):
            size, pos = decode_varint(batch, pos)
            assert size == len(BAD_HEADER_KEY), size
            batch[pos : pos + size] = BAD_HEADER_KEY
            replaced += 1
            pos += size
            size, pos = decode_varint(batch, pos)
            pos += max(size, 0)
    assert pos == len(batch), (pos, len(batch))
    assert replaced == fields[12], (replaced, fields[12])
    return _set_crc(batch)


def _gzip_bomb(batch: bytearray, request: dict[str, Any]) -> bytearray:
    """A new batch, same header fields, gzip: record 0's value is bomb_bytes zeros, streamed."""
    fields = list(_HEADER.unpack_from(batch))
    count = fields[12]
    key = bytes.fromhex(request["key"])
    bomb_bytes = int(request["bomb_bytes"])
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    parts: list[bytes] = []
    zeros = bytes(1 << 20)
    for index in range(count):
        value_size = bomb_bytes if index == 0 else 0
        prefix = b"\x00" + _varint(0) + _varint(index) + _varint(len(key)) + key + _varint(value_size)
        suffix = _varint(0)  # no headers
        parts.append(compressor.compress(_varint(len(prefix) + value_size + len(suffix)) + prefix))
        left = value_size
        while left:
            step = min(left, len(zeros))
            parts.append(compressor.compress(zeros[:step]))
            left -= step
        parts.append(compressor.compress(suffix))
    parts.append(compressor.flush())
    body = b"".join(parts)
    fields[5] = (fields[5] & ~0x07) | _CODEC_GZIP
    fields[1] = _HEADER.size + len(body) - _AFTER_LENGTH
    out = bytearray(_HEADER.pack(*fields)) + body
    return _set_crc(out)


_MANGLERS: dict[str, Callable[[bytearray, dict[str, Any]], bytearray]] = {
    "crc": _flip_crc,
    "header-key": _break_header_keys,
    "gzip-bomb": _gzip_bomb,
}


def _child(request: dict[str, Any]) -> dict[str, Any]:
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: PLC0415

    mangle = _MANGLERS[request["kind"]]
    built: list[int] = []
    original_build = DefaultRecordBatchBuilder.build

    def build(self: Any) -> bytearray:
        batch = mangle(bytearray(original_build(self)), request)
        built.append(len(batch))
        return batch

    DefaultRecordBatchBuilder.build = build  # type: ignore[method-assign]

    key = bytes.fromhex(request["key"])
    headers = [("xx", b"poison")] if request["kind"] == "header-key" else []
    producer = KafkaProducer(
        bootstrap_servers=request["bootstrap"],
        enable_idempotence=False,
        acks=1,
        retries=0,
        linger_ms=10_000,  # one batch: nothing leaves before flush()
        batch_size=1 << 20,
        request_timeout_ms=15000,
        delivery_timeout_ms=30000,
    )
    try:
        futures = [
            producer.send(
                request["topic"],
                key=key,
                value=b"poison-%d" % index,
                headers=headers,
                partition=request["partition"],
            )
            for index in range(request["records"])
        ]
        producer.flush(30)
        offsets = [future.get(timeout=30).offset for future in futures]
    finally:
        producer.close(5)
    assert len(built) == 1, f"expected one record batch, built {len(built)}"
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
    return {"base_offset": offsets[0], "batch_bytes": built[0]}


if __name__ == "__main__":
    result = _child(json.loads(sys.argv[1]))
    print(_RESULT_MARK + json.dumps(result), flush=True)
