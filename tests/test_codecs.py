"""Bounded decompression of Kafka record batches (worker.streaming.codecs), and the poison batches
of tests/poison_records.py against the real broker.

Pinned down: the bounded decoders return what kafka-python's own return, refuse a batch past the
limit without allocating its output, sit where kafka-python's record classes look for them; and
what a kafka-python consumer does with each kind of poison (raises at the poison's offset, once
per offset it is positioned at inside a poison batch, and spins in poll() if not seeked past it).
"""

from __future__ import annotations

import functools
import random
import struct
import subprocess
import sys
import textwrap
import time
import tomllib
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kafka
import kafka.codec
import lz4.frame
import pytest
import snappy
import zstandard
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CorruptRecordError
from kafka.record import default_records, legacy_records
from poison_records import POISON_KINDS, publish_compressed, publish_poison

from worker.core.errors import ConfigError, DecompressionBombError
from worker.infra.broker import EmbeddedBroker
from worker.streaming import codecs

MiB = 1 << 20

Decoder = Callable[[Any], bytes]
Bounded = Callable[[Any, int], bytes]

#: name -> (kafka-python's encoder, kafka-python's decoder, the bounded decoder)
CODEC_CASES: dict[str, tuple[Callable[[bytes], bytes], Decoder, Bounded]] = {
    "gzip": (kafka.codec.gzip_encode, kafka.codec.gzip_decode, codecs.gzip_decode),
    "snappy-xerial": (kafka.codec.snappy_encode, kafka.codec.snappy_decode, codecs.snappy_decode),
    "snappy-plain": (
        lambda data: kafka.codec.snappy_encode(data, xerial_compatible=False),
        kafka.codec.snappy_decode,
        codecs.snappy_decode,
    ),
    "lz4": (kafka.codec.lz4_encode, kafka.codec.lz4_decode, codecs.lz4_decode),
    "zstd": (kafka.codec.zstd_encode, kafka.codec.zstd_decode, codecs.zstd_decode),
}

CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.fixture(autouse=True)
def _decoders_as_they_were() -> Iterator[None]:
    """The test process is shared: leave kafka-python's decoders as this test found them."""
    before = codecs.installed_limit()
    yield
    if before is None:
        codecs.uninstall_bounded_decoders()
    else:
        codecs.install_bounded_decoders(before)


def sample(size: int, seed: int = 0) -> bytes:
    """Half random bytes, half a repeated pattern: compressible, but not trivially."""
    rng = random.Random(seed)
    half = size // 2
    return rng.randbytes(half) + (b"steel-strip " * (size // 12 + 1))[: size - half]


def outcome(decode: Callable[[], bytes]) -> tuple[str, object]:
    try:
        return ("returned", decode())
    except Exception as exc:
        return ("raised", type(exc))


# ---------------------------------------------------------------------------------------------
# The bounded decoders on their own
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, MiB])
@pytest.mark.parametrize("codec", list(CODEC_CASES))
def test_each_bounded_decoder_returns_exactly_what_kafka_pythons_decoder_returns_for_its_encoder(
    codec: str, size: int
) -> None:
    encode, kafka_decode, bounded = CODEC_CASES[codec]
    payload = encode(sample(size, seed=size))
    expected = outcome(lambda: kafka_decode(payload))
    assert outcome(lambda: bounded(payload, 64 * MiB)) == expected
    assert outcome(lambda: bounded(memoryview(payload), 64 * MiB)) == expected  # as record batches pass it
    if expected[0] == "returned":
        assert expected[1] == sample(size, seed=size)
    else:  # kafka-python cannot read back its own xerial encoding of b"" (header only): neither can we
        assert (codec, size) == ("snappy-xerial", 0)


@pytest.mark.parametrize(
    ("codec", "make"),
    [
        ("gzip", lambda: kafka.codec.gzip_encode(sample(5000)) + kafka.codec.gzip_encode(b"second member")),
        ("zstd", lambda: kafka.codec.zstd_encode(sample(5000)) + kafka.codec.zstd_encode(b"second frame")),
        # kafka-python reads the first LZ4 frame and ignores what follows it: so do we
        ("lz4", lambda: kafka.codec.lz4_encode(sample(5000)) + kafka.codec.lz4_encode(b"second frame")),
        ("snappy-xerial", lambda: kafka.codec.snappy_encode(sample(200_000), xerial_blocksize=1000)),
    ],
    ids=["gzip-two-members", "zstd-two-frames", "lz4-two-frames", "snappy-many-xerial-blocks"],
)
def test_bounded_decoders_read_multi_part_streams_like_kafka_python(
    codec: str, make: Callable[[], bytes]
) -> None:
    _, kafka_decode, bounded = CODEC_CASES[codec]
    payload = make()
    expected = kafka_decode(payload)
    assert bounded(payload, 64 * MiB) == expected
    assert bounded(payload, len(expected)) == expected


@pytest.mark.parametrize("codec", list(CODEC_CASES))
def test_bounded_decoders_treat_truncated_or_garbage_input_like_kafka_python(codec: str) -> None:
    """Same exception type, or (zstd, truncated: kafka-python returns what it could decode) same bytes."""
    encode, kafka_decode, bounded = CODEC_CASES[codec]
    whole = encode(sample(100_000))
    truncated, garbage = whole[: len(whole) // 2], b"\x00garbage-that-is-no-stream" * 3
    for payload in (truncated, garbage):
        expected = outcome(functools.partial(kafka_decode, payload))
        assert outcome(functools.partial(bounded, payload, 64 * MiB)) == expected
    assert outcome(lambda: kafka_decode(garbage))[0] == "raised"


def test_the_legacy_lz4_framing_of_kafka_0_8_decodes_like_kafka_python() -> None:
    payload = kafka.codec.lz4_encode_old_kafka(sample(50_000))
    assert codecs.lz4_decode_old_kafka(payload, MiB) == kafka.codec.lz4_decode_old_kafka(payload)
    with pytest.raises(DecompressionBombError):
        codecs.lz4_decode_old_kafka(payload, 49_999)


@pytest.mark.parametrize("codec", list(CODEC_CASES))
def test_each_codec_accepts_data_exactly_at_the_limit_and_refuses_one_byte_more(codec: str) -> None:
    encode, _, bounded = CODEC_CASES[codec]
    limit = 100_000
    at_limit = sample(limit, seed=1)
    assert bounded(encode(at_limit), limit) == at_limit
    with pytest.raises(DecompressionBombError) as refused:
        bounded(encode(at_limit + b"!"), limit)
    name = codec.split("-", maxsplit=1)[0]
    assert refused.value.codec == name
    assert refused.value.limit == limit
    assert f"{name} record batch decompresses to more than {limit} bytes" in str(refused.value)
    assert "KAFKA_MAX_DECOMPRESSED_BYTES" in str(refused.value)
    assert isinstance(refused.value, CorruptRecordError)


def _zeros_stream(codec: str, total: int) -> bytes:
    """A compressed stream of `total` zero bytes, built chunk by chunk (never `total` in memory)."""
    zeros = bytes(MiB)
    chunks = total // MiB
    if codec == "gzip":
        gz = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join([gz.compress(zeros) for _ in range(chunks)] + [gz.flush()])
    if codec == "zstd":
        zs = zstandard.ZstdCompressor(level=1).compressobj()
        return b"".join([zs.compress(zeros) for _ in range(chunks)] + [zs.flush()])
    if codec == "lz4":
        lz = lz4.frame.LZ4FrameCompressor(block_linked=False)
        return b"".join([lz.begin(), *(lz.compress(zeros) for _ in range(chunks)), lz.flush()])
    assert codec == "snappy-xerial"
    block = snappy.compress(bytes(32 * 1024))
    header = kafka.codec.snappy_encode(b"x" * 100)[:16]
    return header + (struct.pack("!i", len(block)) + block) * (total // (32 * 1024))


@pytest.mark.parametrize(
    ("codec", "bomb_bytes"),
    [("gzip", 256 * MiB), ("zstd", 1024 * MiB), ("lz4", 1024 * MiB), ("snappy-xerial", 64 * MiB)],
)
def test_a_bomb_is_refused_while_memory_stays_near_the_limit_not_the_decompressed_size(
    codec: str, bomb_bytes: int
) -> None:
    _, _, bounded = CODEC_CASES[codec]
    payload = _zeros_stream(codec, bomb_bytes)
    limit = 8 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError):
            bounded(payload, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # at most the limit, a chunk or two in flight, and (snappy) one copy of the small payload
    assert peak < limit + len(payload) + 4 * MiB, (peak, len(payload))


def test_snappy_refuses_a_block_from_its_declared_length_before_decompressing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_run(data: bytes) -> bytes:
        raise AssertionError("snappy.decompress was called on a block past the limit")

    four_gib = bytes([0x80, 0x80, 0x80, 0x80, 0x10])  # varint 2**32: what the block says it inflates to
    monkeypatch.setattr(codecs.snappy, "decompress", must_not_run)
    with pytest.raises(DecompressionBombError):
        codecs.snappy_decode(four_gib + b"\x00" * 40, MiB)  # plain snappy
    xerial = kafka.codec.snappy_encode(b"x" * 100)[:16]
    with pytest.raises(DecompressionBombError):
        codecs.snappy_decode(xerial + struct.pack("!i", 45) + four_gib + b"\x00" * 40, MiB)


def test_xerial_snappy_stops_at_the_block_that_would_pass_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = kafka.codec.snappy_encode(sample(10 * 1000), xerial_blocksize=1000)  # ten 1000-byte blocks
    decompressed: list[int] = []
    real = snappy.decompress

    def counting(data: bytes) -> bytes:
        out: bytes = real(data)
        decompressed.append(len(out))
        return out

    monkeypatch.setattr(codecs.snappy, "decompress", counting)
    with pytest.raises(DecompressionBombError):
        codecs.snappy_decode(payload, 4500)
    assert decompressed == [1000] * 4  # the fifth block was refused from its preamble


def test_a_negative_or_non_integer_limit_is_a_value_error() -> None:
    for limit in (-1, 1.5, True, "100"):
        with pytest.raises(ValueError, match="decompression limit"):
            codecs.gzip_decode(kafka.codec.gzip_encode(b"x"), limit)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="decompression limit"):
            codecs.install_bounded_decoders(limit)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Installed where kafka-python's record classes look
# ---------------------------------------------------------------------------------------------


def _default_batch(codec: str, value: bytes) -> bytes:
    builder = default_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=CODEC_IDS[codec], is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=64 * MiB,
    )  # fmt: skip
    builder.append(0, timestamp=1_700_000_000_000, key=b"S1", value=value, headers=[("h", b"v")])
    batch = bytes(builder.build())
    assert default_records.DefaultRecordBatch(batch).compression_type == CODEC_IDS[codec]  # really compressed
    return batch


def _legacy_batch(codec: str, value: bytes) -> bytes:
    builder = legacy_records.LegacyRecordBatchBuilder(
        magic=1, compression_type=CODEC_IDS[codec], batch_size=64 * MiB
    )
    builder.append(0, timestamp=1_700_000_000_000, key=b"S1", value=value)
    return bytes(builder.build())


def _read_default(batch: bytes) -> list[tuple[Any, ...]]:
    return [(r.offset, r.key, r.value, r.headers) for r in default_records.DefaultRecordBatch(batch)]


def _read_legacy(batch: bytes) -> list[tuple[Any, ...]]:
    return [(r.offset, r.key, r.value) for r in legacy_records.LegacyRecordBatch(batch, 1)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_installed_decoders_bound_the_record_batches_kafka_python_parses(codec: str) -> None:
    value = b"\x00" * 200_000
    batch = _default_batch(codec, value)
    unbounded = _read_default(batch)
    assert unbounded[0][2] == value

    codecs.install_bounded_decoders(MiB)
    assert _read_default(batch) == unbounded
    codecs.install_bounded_decoders(100_000)  # the record is 200 kB decompressed
    with pytest.raises(DecompressionBombError, match=codec):
        _read_default(batch)

    if codec != "zstd":  # the v0/v1 message format has no zstd
        legacy = _legacy_batch(codec, value)
        codecs.install_bounded_decoders(MiB)
        assert _read_legacy(legacy)[0][2] == value
        codecs.install_bounded_decoders(100_000)
        with pytest.raises(DecompressionBombError, match=codec):
            _read_legacy(legacy)


def test_installing_again_changes_the_limit_and_uninstalling_restores_kafka_pythons_decoders() -> None:
    batch = _default_batch("gzip", b"\x00" * 5000)
    codecs.install_bounded_decoders(1000)
    with pytest.raises(DecompressionBombError):
        _read_default(batch)
    codecs.install_bounded_decoders(10_000)
    assert codecs.installed_limit() == 10_000
    assert _read_default(batch)[0][2] == b"\x00" * 5000
    assert codecs.original_decoder(default_records, "gzip_decode") is kafka.codec.gzip_decode

    codecs.uninstall_bounded_decoders()
    codecs.uninstall_bounded_decoders()  # idempotent too
    assert codecs.installed_limit() is None
    for module, names in codecs.PATCHED_NAMES.items():
        for name in names:
            assert getattr(module, name) is getattr(kafka.codec, name), (module.__name__, name)


def test_install_raises_naming_module_attribute_and_version_when_kafka_python_lacks_a_decoder_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(legacy_records, "lz4_decode_old_kafka")
    with pytest.raises(RuntimeError) as failed:
        codecs.install_bounded_decoders(MiB)
    message = str(failed.value)
    assert "kafka.record.legacy_records.lz4_decode_old_kafka" in message
    assert f"kafka-python {kafka.__version__}" in message
    assert codecs.installed_limit() is None
    assert default_records.gzip_decode is kafka.codec.gzip_decode  # nothing half-installed


def test_install_raises_when_the_record_classes_no_longer_call_the_patched_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E.g. a kafka-python that calls `kafka.codec.zstd_decode` through the module: the bound would
    be silently lost, so install refuses and puts kafka-python's functions back."""
    original = default_records.DefaultRecordBatch._maybe_uncompress

    def via_codec_module(self: Any) -> None:
        if not self._decompressed and self.compression_type == 4:
            data = memoryview(self._buffer)[self._pos :]
            self._buffer = bytearray(kafka.codec.zstd_decode(data.tobytes()))
            self._pos = 0
            self._decompressed = True
        original(self)

    monkeypatch.setattr(default_records.DefaultRecordBatch, "_maybe_uncompress", via_codec_module)
    with pytest.raises(RuntimeError, match=r"kafka\.record\.default_records\.zstd_decode is not what"):
        codecs.install_bounded_decoders(MiB)
    assert codecs.installed_limit() is None
    assert default_records.zstd_decode is kafka.codec.zstd_decode


# ---------------------------------------------------------------------------------------------
# Which codecs kafka-python has
# ---------------------------------------------------------------------------------------------


def test_every_kafka_codec_is_available_in_this_installation() -> None:
    assert codecs.available_codecs() == {"gzip": True, "snappy": True, "lz4": True, "zstd": True}
    codecs.require_codecs()


def test_require_codecs_names_the_missing_codecs_and_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)
    monkeypatch.setattr(kafka.codec, "has_zstd", lambda: False)
    with pytest.raises(ConfigError) as missing:
        codecs.require_codecs()
    assert isinstance(missing.value, codecs.MissingCodecError)
    assert "lz4, zstd" in str(missing.value)
    assert "snappy" not in str(missing.value).split("pip install")[0]
    assert "pip install 'kafka-python[lz4,snappy,zstd]'" in str(missing.value)
    codecs.require_codecs(["gzip", "snappy"])  # only those asked for
    with pytest.raises(ValueError, match="brotli"):
        codecs.require_codecs(["brotli"])


def test_the_package_depends_on_kafka_python_with_every_codec() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "kafka-python[crc32c,lz4,snappy,zstd]>=2.2" in pyproject["project"]["dependencies"]


# ---------------------------------------------------------------------------------------------
# Against the real broker
# ---------------------------------------------------------------------------------------------


def _consumer(bootstrap: str, topic: str) -> tuple[KafkaConsumer, TopicPartition]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    return consumer, tp


def _next_records(consumer: KafkaConsumer, tp: TopicPartition, timeout_s: float = 15.0) -> list[Any]:
    """The records of the next poll that returns some; a poll's exception propagates.

    After an exception the caller must seek before calling again (see the spinning test below).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=200).get(tp, [])
        if records:
            return list(records)
    raise AssertionError(f"no records from {tp} within {timeout_s} s (position {consumer.position(tp)})")


def _all_records(consumer: KafkaConsumer, tp: TopicPartition, count: int) -> list[Any]:
    records: list[Any] = []
    while len(records) < count:
        records.extend(_next_records(consumer, tp))
    return records


@pytest.mark.parametrize("decoders", ["kafka-python's", "bounded"])
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_records_published_with_each_codec_come_back_identical(
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    codec: str,
    decoders: str,
) -> None:
    if decoders == "bounded":
        codecs.install_bounded_decoders(64 * MiB)
    calls: list[int] = []
    name = f"{codec}_decode"
    decode = getattr(default_records, name)

    def spy(payload: Any) -> bytes:
        out: bytes = decode(payload)
        calls.append(len(out))
        return out

    monkeypatch.setattr(default_records, name, spy)
    topic = make_topic("codecs")
    messages = [
        (b"S1", b"", []),
        (b"S2", sample(300_000, seed=2), [("content-type", b"image/png"), ("trace", b"\x00\xff\xfe")]),
        (b"S3", b"frame " * 2000, [("h", b"")]),
    ]
    publish_compressed(broker.bootstrap_servers, topic, messages, codec, partition=0)

    consumer, tp = _consumer(broker.bootstrap_servers, topic)
    try:
        records = _all_records(consumer, tp, len(messages))
    finally:
        consumer.close()
    assert [(r.key, r.value, [tuple(h) for h in r.headers]) for r in records] == messages
    assert calls, f"the records did not travel {codec}-compressed"


def _publish_around_poison(bootstrap: str, topic: str, kind: str, records: int) -> None:
    """good record at offset 0, the poison batch at 1 .. records, good record after it."""
    publish_compressed(bootstrap, topic, [(b"S1", b"good-before", [])], "gzip", partition=0)
    publish_poison(bootstrap, topic, kind, records=records)
    publish_compressed(bootstrap, topic, [(b"S1", b"good-after", [])], "gzip", partition=0)


EXPECTED_ERRORS = {
    "crc": (CorruptRecordError, "failed crc check"),
    "header-key": (CorruptRecordError, "invalid record structure: UnicodeDecodeError"),
    "gzip-bomb": (DecompressionBombError, "gzip record batch decompresses to more than 4194304 bytes"),
}


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_poll_returns_the_good_record_then_raises_at_the_poison_offset_and_a_seek_past_it_resumes(
    broker: EmbeddedBroker, make_topic: Callable[..., str], kind: str
) -> None:
    codecs.install_bounded_decoders(4 * MiB)  # the worker's set-up; the bomb inflates to 64 MiB
    topic = make_topic("poison")
    _publish_around_poison(broker.bootstrap_servers, topic, kind, records=1)
    error, message = EXPECTED_ERRORS[kind]

    consumer, tp = _consumer(broker.bootstrap_servers, topic)
    try:
        assert [r.value for r in _next_records(consumer, tp)] == [b"good-before"]
        with pytest.raises(error, match=message) as raised:
            _next_records(consumer, tp)
        if kind != "gzip-bomb":
            assert not isinstance(raised.value, DecompressionBombError)
        assert consumer.position(tp) == 1  # the poison's offset: the good record was consumed
        consumer.seek(tp, 2)
        assert [(r.offset, r.value) for r in _next_records(consumer, tp)] == [(2, b"good-after")]
    finally:
        consumer.close()


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_a_multi_record_poison_batch_raises_again_at_every_offset_inside_it(
    broker: EmbeddedBroker, make_topic: Callable[..., str], kind: str
) -> None:
    """Seeking one offset forward lands inside the same batch: the broker serves the whole batch
    again and kafka-python raises again, once per record. (The crc message names the batch's base
    offset, not the position.)"""
    codecs.install_bounded_decoders(4 * MiB)
    topic = make_topic("poison3")
    _publish_around_poison(broker.bootstrap_servers, topic, kind, records=3)
    error, message = EXPECTED_ERRORS[kind]

    consumer, tp = _consumer(broker.bootstrap_servers, topic)
    try:
        assert [r.offset for r in _next_records(consumer, tp)] == [0]
        for offset in (1, 2, 3):
            with pytest.raises(error, match=message) as raised:
                _next_records(consumer, tp)
            assert consumer.position(tp) == offset
            if kind == "crc":
                assert "at offset 1 failed crc check" in str(raised.value)
            consumer.seek(tp, offset + 1)
        assert [(r.offset, r.value) for r in _next_records(consumer, tp)] == [(4, b"good-after")]
    finally:
        consumer.close()


_SPIN_CHILD = textwrap.dedent(
    """
    import sys, threading, os
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import CorruptRecordError
    consumer = KafkaConsumer(bootstrap_servers=sys.argv[1], enable_auto_commit=False, fetch_max_wait_ms=100)
    tp = TopicPartition(sys.argv[2], 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    for _ in range(50):
        try:
            consumer.poll(timeout_ms=200)
        except CorruptRecordError:
            break
    else:
        print("no error"); os._exit(1)
    {seek}
    done = threading.Event()
    threading.Thread(target=lambda: (consumer.poll(timeout_ms=500), done.set()), daemon=True).start()
    print("returned" if done.wait(3) else "spinning", flush=True)
    os._exit(0)
    """
)


@pytest.mark.parametrize(
    ("seek", "expected"),
    [("pass", "spinning"), ("consumer.seek(tp, 0)", "spinning"), ("consumer.seek(tp, 1)", "returned")],
    ids=["no-seek", "seek-to-the-poison-again", "seek-past-the-poison"],
)
def test_kafka_python_spins_in_poll_after_a_poison_error_unless_the_partition_is_seeked_elsewhere(
    broker: EmbeddedBroker, make_topic: Callable[..., str], seek: str, expected: str
) -> None:
    """kafka-python (3.0.12): after poll() raised from a record batch, the next poll() loops forever
    (busy, holding the fetcher lock) on the exhausted batch unless the position was moved to ANOTHER
    offset first; seeking to the same offset does not help. A seek from another thread cannot
    rescue it reliably either (the loop writes the old position back). Run in a child process,
    which is then killed, because the spinning thread cannot be stopped."""
    topic = make_topic("spin")
    publish_poison(broker.bootstrap_servers, topic, "crc")
    publish_compressed(broker.bootstrap_servers, topic, [(b"S1", b"good-after", [])], "gzip", partition=0)
    child = subprocess.run(
        [sys.executable, "-c", _SPIN_CHILD.replace("{seek}", seek), broker.bootstrap_servers, topic],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.strip() == expected, (
        f"kafka-python {kafka.__version__} changed: {child.stdout!r} (if it no longer spins, the "
        f"worker's seek-after-poison rule may be relaxed)\n{child.stderr}"
    )


def test_publish_poison_refuses_an_unknown_kind(broker: EmbeddedBroker) -> None:
    with pytest.raises(ValueError, match="unknown poison kind"):
        publish_poison(broker.bootstrap_servers, "any", "unknown-codec")


def test_a_gzip_bomb_on_the_wire_is_small() -> None:
    """The helper's batch: gzip, one record of bomb_bytes zeros, a valid CRC, ~1/1000 the size."""
    import poison_records  # noqa: PLC0415

    builder = default_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=MiB,
    )  # fmt: skip
    builder.append(0, timestamp=1_700_000_000_000, key=b"S1", value=b"poison-0", headers=[])
    request = {"key": b"S1".hex(), "bomb_bytes": 16 * MiB}
    bomb = bytes(poison_records._gzip_bomb(bytearray(builder.build()), request))
    assert len(bomb) < 16 * MiB // 500
    batch = default_records.DefaultRecordBatch(bomb)
    assert batch.validate_crc()
    assert batch.compression_type == 1
    [record] = list(batch)
    assert record.key == b"S1"
    assert record.value == bytes(16 * MiB)
