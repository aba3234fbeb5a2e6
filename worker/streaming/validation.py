"""Validation at the door: the headers and `frame-meta` of a frame message, to the last bound.

`schemas/frame-meta.v1.json` states what JSON Schema can (fields, types, lengths, numeric ranges,
identifier characters); this module is the one validator for the rest, and the only reader of the
header. Everything it refuses is a `RefusalError` with the reason that names the fault; nothing else
escapes. The bounds:

- headers: at most MAX_HEADERS, at most MAX_HEADER_BYTES of keys and values together; `frame-meta`
  and `content-type` at most once each (`invalid-headers`).
- frame-meta: present (`missing-metadata`); at most MAX_FRAME_META_BYTES of UTF-8 JSON; an object of
  scalars (the schema allows no nesting; a document nested past Python's recursion limit is refused
  while parsing); each name once; integers of at most MAX_INTEGER_DIGITS digits
  (`invalid-metadata`).
- numbers: finite — `NaN`, `Infinity` and literals that overflow a float such as `1e999` are refused
  (`non-finite-number`; JSON Schema's bounds let NaN through, since every comparison with it is
  false) — then within the schema's ranges, so that no product of them overflows downstream.
- identifiers (`frame_id`, `line`, `camera`, `strip_id`, `pass_id`): printable characters only — no
  white space, control, format (bidirectional controls, zero-width spaces) or unpaired surrogate
  characters, which PostgreSQL cannot store or which forge log lines (`invalid-identifier`).
- `position_m`: at most the plausible length of a strip (`MAX_STRIP_LENGTH_M`, default
  DEFAULT_MAX_STRIP_LENGTH_M; `position-out-of-range`): the schema's 1 000 000 m lets a position
  sent in millimetres through, and such a frame would sit on its strip kilometres from the others.
- `captured_at`: an RFC 3339 time with an offset within ±15:59 (PostgreSQL's range), whose UTC time
  lies in [1970-01-01, 2200-01-01) (`timestamp-out-of-range`): inside it every value can be stored,
  read back by psycopg2 (which fails on years past 9999 or before 1), and compared.

The message key is not refused here: `key_mismatch` says when it is not the strip id (the worker
counts and logs such frames, `worker.streaming.decode.Decoder`; see docs/alerts.md for why they
are kept).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from worker.core import contracts
from worker.core.errors import RefusalError, SchemaError
from worker.core.records import FrameMeta
from worker.core.refusals import (
    INVALID_HEADERS,
    INVALID_IDENTIFIER,
    INVALID_METADATA,
    MISSING_METADATA,
    NON_FINITE_NUMBER,
    POSITION_OUT_OF_RANGE,
    TIMESTAMP_OUT_OF_RANGE,
    VALIDATE,
    shown,
)

MAX_HEADERS = 64
MAX_HEADER_BYTES = 32_768
MAX_FRAME_META_BYTES = 8_192
MAX_INTEGER_DIGITS = 18
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
EARLIEST_CAPTURE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_CAPTURE = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
IDENTIFIERS = ("frame_id", "line", "camera", "strip_id", "pass_id")
#: MAX_STRIP_LENGTH_M's default: a hot-rolled coil is up to 2–3 km long, a thin cold-rolled one
#: (tinplate) several kilometres; no strip is 10 km long.
DEFAULT_MAX_STRIP_LENGTH_M = 10_000.0


def _refuse(reason: str, detail: str) -> NoReturn:
    raise RefusalError(reason, VALIDATE, detail)


def check_headers(headers: Sequence[tuple[str, bytes]]) -> None:
    """Refuse too many headers, too many header bytes, and `frame-meta` or `content-type` given twice."""
    if len(headers) > MAX_HEADERS:
        _refuse(INVALID_HEADERS, f"expected at most {MAX_HEADERS} headers, received {len(headers)}")
    size = sum(len(key.encode("utf-8", "surrogatepass")) + len(value) for key, value in headers)
    if size > MAX_HEADER_BYTES:
        _refuse(INVALID_HEADERS, f"expected at most {MAX_HEADER_BYTES} bytes of headers, received {size}")
    for name in (contracts.FRAME_META_HEADER, contracts.CONTENT_TYPE_HEADER):
        count = sum(key.lower() == name for key, _ in headers)
        if count > 1:
            _refuse(INVALID_HEADERS, f"expected the {name!r} header once, received it {count} times")


def _parse_constant(name: str) -> NoReturn:
    _refuse(NON_FINITE_NUMBER, f"frame-meta: expected finite numbers, received {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _refuse(NON_FINITE_NUMBER, f"frame-meta: expected finite numbers, {shown(text, 40)} is not")
    return value


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        _refuse(
            INVALID_METADATA,
            f"frame-meta: expected integers of at most {MAX_INTEGER_DIGITS} digits, received one of {digits}",
        )
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique: `{"frame_id": "a", "frame_id": "b"}` is ambiguous
    (parsers disagree on which wins), so it is refused rather than read one way."""
    data = dict(pairs)
    if len(data) != len(pairs):
        names = [name for name, _ in pairs]
        twice = sorted({shown(n, 40) for n in names if names.count(n) > 1})
        _refuse(
            INVALID_METADATA,
            f"frame-meta: expected each name once, received {', '.join(twice)} more than once",
        )
    return data


def _json_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_FRAME_META_BYTES:
        _refuse(
            INVALID_METADATA,
            f"frame-meta: expected at most {MAX_FRAME_META_BYTES} bytes, received {len(raw)}",
        )
    try:
        data = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except UnicodeDecodeError:
        _refuse(INVALID_METADATA, "frame-meta: expected UTF-8 JSON, received undecodable bytes")
    except json.JSONDecodeError as exc:
        _refuse(INVALID_METADATA, f"frame-meta: expected a JSON object, {shown(exc)}")
    except RecursionError:
        _refuse(INVALID_METADATA, "frame-meta: expected a flat JSON object, received one nested too deeply")
    if not isinstance(data, dict):
        _refuse(INVALID_METADATA, f"frame-meta: expected a JSON object, received a {type(data).__name__}")
    return data


def _check_identifiers(data: dict[str, Any]) -> None:
    for name in IDENTIFIERS:
        value = data.get(name)
        if isinstance(value, str) and not (value.isprintable() and not any(ch.isspace() for ch in value)):
            _refuse(
                INVALID_IDENTIFIER,
                f"frame-meta: at {name}: expected printable characters without white space, received"
                f" {shown(value, 80)}",
            )


def _captured_at(text: str) -> datetime:
    """The schema's pattern has already checked the form; here the values."""
    try:
        value = datetime.fromisoformat(text.upper())  # RFC 3339 allows `t` and `z`; Python does not
    except ValueError:
        _refuse(
            TIMESTAMP_OUT_OF_RANGE,
            f"frame-meta: at captured_at: expected an RFC 3339 date-time, received {shown(text, 60)}",
        )
    offset = value.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        _refuse(
            TIMESTAMP_OUT_OF_RANGE,
            f"frame-meta: at captured_at: expected a UTC offset within ±15:59, received {shown(text, 60)}",
        )
    try:
        instant = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
        instant = EARLIEST_CAPTURE - timedelta(days=1)
    if not EARLIEST_CAPTURE <= instant < LATEST_CAPTURE:
        _refuse(
            TIMESTAMP_OUT_OF_RANGE,
            f"frame-meta: at captured_at: expected a time from {EARLIEST_CAPTURE.date()} to before"
            f" {LATEST_CAPTURE.date()} (UTC), received {shown(text, 60)}",
        )
    return value


def parse_frame_meta(raw: bytes | None, max_strip_length_m: float = DEFAULT_MAX_STRIP_LENGTH_M) -> FrameMeta:
    """The `frame-meta` header as a FrameMeta, every bound checked; RefusalError says which one broke.

    `max_strip_length_m`: the largest `position_m` accepted (MAX_STRIP_LENGTH_M)."""
    if raw is None:
        _refuse(MISSING_METADATA, f"expected a {contracts.FRAME_META_HEADER!r} header")
    data = _json_object(raw)
    _check_identifiers(data)
    try:
        contracts.validate(contracts.FRAME_META, data)
    except SchemaError as exc:
        _refuse(INVALID_METADATA, str(exc))
    if data["position_m"] > max_strip_length_m:
        _refuse(
            POSITION_OUT_OF_RANGE,
            f"frame-meta: at position_m: expected at most {max_strip_length_m:g} m (MAX_STRIP_LENGTH_M, the"
            f" longest plausible strip), received {data['position_m']!r} m; a position in millimetres?",
        )
    return FrameMeta(
        frame_id=data["frame_id"],
        line=data["line"],
        camera=data["camera"],
        surface=data["surface"],
        strip_id=data["strip_id"],
        captured_at=_captured_at(data["captured_at"]),
        position_m=float(data["position_m"]),
        mm_per_px_along=float(data["mm_per_px_along"]),
        mm_per_px_across=float(data["mm_per_px_across"]),
        edge_offset_mm=float(data["edge_offset_mm"]),
        width=data.get("width"),
        height=data.get("height"),
        image_uri=data.get("image_uri"),
        pass_id=data.get("pass_id"),
    )


def key_mismatch(key: bytes | None, meta: FrameMeta) -> str | None:
    """None when the message key is `meta.strip_id` (UTF-8), as the frames contract asks (a strip's
    frames then stay in order on one partition, with one worker); else what differs, for a log line."""
    expected = meta.strip_id.encode("utf-8")
    if key == expected:
        return None
    received = "no key" if key is None else f"the key {shown(key, 80)}"
    return f"expected the message key to be the strip id {shown(meta.strip_id, 80)}, received {received}"
