"""Bounded decompression of Kafka record batches, and the codec check the worker runs at start-up.

kafka-python decompresses every fetched record batch whole, in memory, with no size limit
(`kafka.record.default_records` and `kafka.record.legacy_records` call the `*_decode` functions
they import from `kafka.codec`). A 16 MB gzip batch of zeros inflates to gigabytes and kills the
worker each time it re-reads that offset. This module replaces those names with bounded decoders.

Guarantees:

* `gzip_decode`, `snappy_decode`, `lz4_decode`, `zstd_decode` (and `lz4_decode_old_kafka` for the
  0.8/0.9 message format) return exactly the bytes kafka-python's own decoder returns, for every
  input that decompresses to at most `limit` bytes; they use the libraries kafka-python uses.
* Above `limit` they raise `DecompressionBombError` (a `kafka.errors.CorruptRecordError`, so the
  consumer treats the batch as a corrupt record), having held at most `limit` bytes of output plus
  one chunk of `CHUNK_BYTES` (gzip, lz4, zstd: decompressed chunk by chunk; snappy: the
  uncompressed length in each block's preamble is read, and the batch refused, BEFORE the block is
  decompressed). Measured with tracemalloc at limit 8 MiB: a 1 GiB zstd or lz4 bomb, a 256 MiB
  gzip bomb and a 64 MiB xerial-snappy bomb each peak at 9-11 MiB; data under the limit costs less
  than kafka-python's own decoders (about 1.1x the output instead of 2x). Not counted: the codec's
  own working memory (gzip 32 KiB window; lz4 blocks of at most 4 MiB; zstd's window, which a
  frame may declare up to zstd's default cap of 128 MiB, and of which pages are only touched as
  output is produced) and a copy of the (compressed) payload for snappy.
* kafka-python's `poll()` raises the error at the batch's position. Note for callers: after any
  exception from a record batch, kafka-python 3.0.12 spins forever in the next `poll()` unless the
  partition was first seeked to ANOTHER offset (see tests/test_codecs.py).
* `install_bounded_decoders(limit)` patches the names kafka-python's record classes call, is
  idempotent (a second call changes the limit), and checks that the record classes really call
  through the patched names (a tiny batch per available codec is parsed at install time); a
  kafka-python whose layout differs makes it raise `RuntimeError` naming the module, the attribute
  and the kafka-python version, so an upgrade fails at start-up instead of silently losing the
  bound. `uninstall_bounded_decoders()` restores kafka-python's own functions.
* `available_codecs()` / `require_codecs()` tell which codecs kafka-python can decode here; the
  worker calls `require_codecs()` at start-up so a missing library is a configuration error, not an
  exception from inside `poll()` at the first lz4/zstd/snappy frame.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import struct
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Final

import kafka
import kafka.codec
import kafka.errors
import kafka.record.default_records
import kafka.record.legacy_records

from worker.core.errors import DECOMPRESSED_LIMIT_SETTING as LIMIT_SETTING
from worker.core.errors import DecompressionBombError, MissingCodecError

# The optional codec libraries, imported the way `kafka.codec` imports them.
try:
    import snappy
except ImportError:  # pragma: no cover - depends on the installation
    snappy = None

try:
    import zstandard as zstd
except ImportError:  # pragma: no cover - depends on the installation
    zstd = None  # type: ignore[assignment]

try:
    import lz4.frame as lz4
except ImportError:  # pragma: no cover - depends on the installation
    lz4 = None

import xxhash  # a dependency (pyproject.toml): kafka-python's lz4 framing of 0.8/0.9 brokers

__all__ = [
    "CHUNK_BYTES",
    "CODECS",
    "LIMIT_SETTING",
    "PATCHED_NAMES",
    "PIP_EXTRA",
    "available_codecs",
    "gzip_decode",
    "install_bounded_decoders",
    "installed_limit",
    "lz4_decode",
    "lz4_decode_old_kafka",
    "original_decoder",
    "require_codecs",
    "snappy_decode",
    "uninstall_bounded_decoders",
    "zstd_decode",
]

#: A bytes-like payload, as kafka-python's record classes pass it (bytes or a memoryview).
Payload = bytes | bytearray | memoryview

#: Decompressed output is produced (and counted against the limit) this many bytes at a time.
CHUNK_BYTES: Final = 1 << 20

#: The codecs a Kafka record batch may use, in attribute-id order.
CODECS: Final = ("gzip", "snappy", "lz4", "zstd")

#: What to install when a codec is missing.
PIP_EXTRA: Final = "kafka-python[lz4,snappy,zstd]"


_XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"  # kafka.codec._XERIAL_V1_HEADER[:8]
_XERIAL_HEADER_BYTES: Final = 16


# ---------------------------------------------------------------------------------------------
# Bounded decoders
# ---------------------------------------------------------------------------------------------


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"decompression limit must be a non-negative int of bytes, got {limit!r}")
    return limit


def _read_bounded(read: Callable[[int], bytes], codec: str, limit: int) -> bytes:
    """Call `read(n)` until it returns b'' and return everything; refuse past `limit` bytes.

    Never asks for more than limit + 1 bytes in total, nor more than CHUNK_BYTES at a time.
    """
    out = io.BytesIO()
    total = 0
    while True:
        chunk = read(min(CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return out.getvalue()
        total += len(chunk)
        if total > limit:
            raise DecompressionBombError(codec, limit)
        out.write(chunk)


def gzip_decode(payload: Payload, limit: int) -> bytes:
    """`kafka.codec.gzip_decode`, refusing output longer than `limit` bytes."""
    _check_limit(limit)
    with gzip.GzipFile(fileobj=io.BytesIO(payload), mode="r") as gzipper:
        return _read_bounded(gzipper.read, "gzip", limit)


def _snappy_preamble_length(block: bytes) -> int | None:
    """The uncompressed length a raw snappy block declares (its leading varint), or None if malformed."""
    result = 0
    for index, byte in enumerate(block[:5]):
        result |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return result
    return None


def _snappy_block(block: bytes, limit: int, total: int) -> bytes:
    declared = _snappy_preamble_length(block)
    if declared is not None and total + declared > limit:
        raise DecompressionBombError("snappy", limit)
    out: bytes = snappy.decompress(block)
    # The declared length is what snappy allocates and returns; re-check in case it ever is not.
    if total + len(out) > limit:
        raise DecompressionBombError("snappy", limit)
    return out


def snappy_decode(payload: Payload, limit: int) -> bytes:
    """`kafka.codec.snappy_decode` (plain snappy or xerial blocks), refusing output past `limit`.

    Each block's declared uncompressed length is read before the block is decompressed.
    """
    _check_limit(limit)
    if snappy is None:
        raise NotImplementedError("Snappy codec is not available")
    data = bytes(payload)
    if not (len(data) > _XERIAL_HEADER_BYTES and data[:8] == _XERIAL_MAGIC):
        return _snappy_block(data, limit, 0)
    out = io.BytesIO()
    total = 0
    cursor = _XERIAL_HEADER_BYTES
    while cursor < len(data):
        (block_size,) = struct.unpack_from("!i", data, cursor)
        cursor += 4
        end = cursor + block_size
        block = _snappy_block(data[cursor:end], limit, total)
        total += len(block)
        out.write(block)
        cursor = end
    return out.getvalue()


def lz4_decode(payload: Payload, limit: int) -> bytes:
    """`kafka.codec.lz4_decode` (one LZ4 frame; bytes after it are ignored), refusing output past `limit`."""
    _check_limit(limit)
    if lz4 is None:
        raise NotImplementedError("LZ4 codec is not available")
    decompressor = lz4.LZ4FrameDecompressor()
    view = memoryview(payload).cast("B")
    fed = 0

    def read(size: int) -> bytes:
        # Input goes in CHUNK_BYTES at a time: the decompressor copies what it has not used yet on
        # every call, so feeding the whole payload would cost a copy of it per output chunk.
        nonlocal fed
        stalls = 0
        while not decompressor.eof:
            data: Payload = b""
            if decompressor.needs_input:
                if fed >= len(view):
                    # The frame is incomplete: lz4.frame.decompress raises RuntimeError too.
                    raise RuntimeError("Frame incomplete: the LZ4 frame ends before its end mark")
                data = view[fed : fed + CHUNK_BYTES]
                fed += len(data)
            else:
                stalls += 1
                if stalls > 8:  # pragma: no cover - output pending yet none comes: never spin
                    raise RuntimeError("LZ4 frame decompressor makes no progress")
            chunk: bytes = decompressor.decompress(data, max_length=size)
            if chunk:
                return chunk
        return b""

    return _read_bounded(read, "lz4", limit)


def lz4_decode_old_kafka(payload: Payload, limit: int) -> bytes:
    """`kafka.codec.lz4_decode_old_kafka` (0.8/0.9 brokers' wrong header checksum), bounded."""
    _check_limit(limit)
    data = bytes(payload)
    header_size = 7
    if (data[4] >> 3) & 1:  # content-size flag
        header_size += 8
    header_checksum = xxhash.xxh32(data[4 : header_size - 1]).digest()[-2:-1]
    return lz4_decode(b"".join([data[0 : header_size - 1], header_checksum, data[header_size:]]), limit)


def zstd_decode(payload: Payload, limit: int) -> bytes:
    """`kafka.codec.zstd_decode` (across frames), refusing output past `limit` bytes."""
    _check_limit(limit)
    if zstd is None:
        raise NotImplementedError("Zstd codec is not available")
    with zstd.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True) as reader:
        return _read_bounded(reader.read, "zstd", limit)


# ---------------------------------------------------------------------------------------------
# Installing them where kafka-python's record classes look
# ---------------------------------------------------------------------------------------------

_BOUNDED: Final[dict[str, Callable[[Payload, int], bytes]]] = {
    "gzip_decode": gzip_decode,
    "snappy_decode": snappy_decode,
    "lz4_decode": lz4_decode,
    "lz4_decode_old_kafka": lz4_decode_old_kafka,
    "zstd_decode": zstd_decode,
}

#: The module globals the record classes call, per module.
PATCHED_NAMES: Final[dict[ModuleType, tuple[str, ...]]] = {
    kafka.record.default_records: ("gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode"),
    kafka.record.legacy_records: ("gzip_decode", "snappy_decode", "lz4_decode", "lz4_decode_old_kafka"),
}

_probe = threading.local()


class _BoundDecoder:
    """What the record modules call instead of kafka.codec's decoder: the bounded one at `limit`."""

    __slots__ = ("decoder", "limit", "name")

    def __init__(self, name: str, decoder: Callable[[Payload, int], bytes], limit: int) -> None:
        self.name = name
        self.decoder = decoder
        self.limit = limit

    def __call__(self, payload: Payload) -> bytes:
        calls: list[str] | None = getattr(_probe, "calls", None)
        if calls is not None:
            calls.append(self.name)
        return self.decoder(payload, self.limit)

    def __repr__(self) -> str:
        return f"<bounded {self.name} limit={self.limit}>"


_lock = threading.Lock()
#: kafka-python's own functions, saved by the first install: {(module, name): function}.
_originals: dict[tuple[ModuleType, str], Any] = {}
_installed_limit: int | None = None


def _layout_error(module: ModuleType, name: str, what: str) -> RuntimeError:
    return RuntimeError(
        f"kafka-python {kafka.__version__}: {module.__name__}.{name} {what}; the bounded decoders "
        f"(worker.streaming.codecs) no longer fit this version, so decompression would be unbounded"
    )


def _parse_default_probe(codec_id: int) -> None:
    builder = kafka.record.default_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=codec_id, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    builder.append(0, timestamp=0, key=None, value=b"\0" * 4096, headers=[])
    list(kafka.record.default_records.DefaultRecordBatch(bytes(builder.build())))


def _parse_legacy_probe(codec_id: int) -> None:
    builder = kafka.record.legacy_records.LegacyRecordBatchBuilder(
        magic=1, compression_type=codec_id, batch_size=1 << 20
    )
    builder.append(0, timestamp=0, key=None, value=b"\0" * 4096)
    list(kafka.record.legacy_records.LegacyRecordBatch(bytes(builder.build()), 1))


def _self_check() -> None:
    """Parse a small compressed batch per codec; each must go through the installed decoder."""
    available = available_codecs()
    probes: list[tuple[ModuleType, str, Callable[[], None]]] = []
    for codec, codec_id in (("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)):
        if available[codec]:
            probes.append(
                (
                    kafka.record.default_records,
                    f"{codec}_decode",
                    functools.partial(_parse_default_probe, codec_id),
                )
            )
    for codec, codec_id in (("gzip", 1), ("snappy", 2), ("lz4", 3)):  # magic 0/1 have no zstd
        if available[codec]:
            probes.append(
                (
                    kafka.record.legacy_records,
                    f"{codec}_decode",
                    functools.partial(_parse_legacy_probe, codec_id),
                )
            )
    for module, name, parse in probes:
        _probe.calls = []
        try:
            # A limit below the probe's 4 kB refuses it: the decoder was called all the same.
            with contextlib.suppress(DecompressionBombError):
                parse()
            called = list(_probe.calls)
        finally:
            del _probe.calls
        if name not in called:
            raise _layout_error(module, name, "is not what its record batches call to decompress")


def install_bounded_decoders(limit: int) -> None:
    """Make kafka-python's record batches decompress through the bounded decoders at `limit` bytes.

    Idempotent; a later call sets the new limit. Raises RuntimeError (and patches nothing) when
    kafka-python's record modules lack a decoder name, or do not call it.
    """
    global _installed_limit  # noqa: PLW0603 - one process-wide patch, like the library it patches
    _check_limit(limit)
    with _lock:
        for module, names in PATCHED_NAMES.items():
            for name in names:
                if not callable(getattr(module, name, None)):
                    raise _layout_error(module, name, "is missing")
        for module, names in PATCHED_NAMES.items():
            for name in names:
                current = getattr(module, name)
                if isinstance(current, _BoundDecoder):
                    current.limit = limit
                else:
                    _originals[(module, name)] = current
                    setattr(module, name, _BoundDecoder(name, _BOUNDED[name], limit))
        try:
            _self_check()
        except Exception:
            _restore()
            raise
        _installed_limit = limit


def _restore() -> None:
    global _installed_limit  # noqa: PLW0603
    for (module, name), original in _originals.items():
        setattr(module, name, original)
    _originals.clear()
    _installed_limit = None


def uninstall_bounded_decoders() -> None:
    """Put kafka-python's own (unbounded) decoders back; a no-op when none are installed."""
    with _lock:
        _restore()


def installed_limit() -> int | None:
    """The limit the installed decoders enforce, or None when kafka-python's own are in place."""
    return _installed_limit


def original_decoder(module: ModuleType, name: str) -> Callable[[Payload], bytes]:
    """kafka-python's own decoder `name` for `module`, whether or not the bounded ones are installed."""
    saved = _originals.get((module, name))
    if saved is not None:
        return saved  # type: ignore[no-any-return]
    current = getattr(module, name)
    if isinstance(current, _BoundDecoder):  # pragma: no cover - only if _originals were lost
        raise RuntimeError(f"{module.__name__}.{name}: kafka-python's decoder was not saved")
    return current  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# Which codecs kafka-python can use here
# ---------------------------------------------------------------------------------------------


def available_codecs() -> dict[str, bool]:
    """{'gzip': ..., 'snappy': ..., 'lz4': ..., 'zstd': ...}: whether kafka-python can (de)compress it."""
    return {
        "gzip": bool(kafka.codec.has_gzip()),
        "snappy": bool(kafka.codec.has_snappy()),
        "lz4": bool(kafka.codec.has_lz4()),
        "zstd": bool(kafka.codec.has_zstd()),
    }


def require_codecs(codecs: Iterable[str] = CODECS) -> None:
    """Raise MissingCodecError naming every codec in `codecs` that kafka-python cannot decode here.

    Producers (librdkafka, the Java client) often compress with lz4, zstd or snappy; without the
    library kafka-python raises from inside poll() and the worker cannot read those frames.
    """
    available = available_codecs()
    wanted = list(codecs)
    unknown = [codec for codec in wanted if codec not in available]
    if unknown:
        raise ValueError(f"unknown compression codec(s) {unknown}; Kafka has {list(CODECS)}")
    missing = [codec for codec in wanted if not available[codec]]
    if missing:
        raise MissingCodecError(
            f"kafka-python cannot decompress {', '.join(missing)} record batches here (library not "
            f"installed); producers may compress with them. Install them: pip install '{PIP_EXTRA}'"
        )
