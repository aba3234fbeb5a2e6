"""The door: every hand-made bad message of tests/poison_cases.py is refused by the decoder with its
reason (and every valid oddity decodes), the validator's bounds one by one, `shown()`, and
Hypothesis fuzzers over frame-meta and payload bytes asserting that the decoder is total."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from frames import grey_image, inbound, make_meta, png_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from poison_cases import CLAIM_CHECK_KEYS, LIMITS, PROCESSED, case_names, cases, claim_check_files

from worker.core import contracts
from worker.core import refusals as r
from worker.core.errors import RefusalError
from worker.streaming.decode import DecodedFrame, Rejected, decode_message
from worker.streaming.validation import MAX_FRAME_META_BYTES, parse_frame_meta

#: Reasons the decoder cannot give: they are decided later, by the database or the transport.
DECIDED_DOWNSTREAM = {r.DUPLICATE_FRAME_ID, r.UNSTORABLE, r.UNDELIVERABLE, r.UNREADABLE_RECORD}


@pytest.fixture(scope="module")
def claim_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("claims")
    root = (base / "root").resolve()
    return root, claim_check_files(root, base / "outside")


def _message_case_names() -> list[str]:
    """The cases that are single messages (record batches exist only on a broker)."""
    return [c.name for c in cases(dict.fromkeys(CLAIM_CHECK_KEYS, "file:///not-made")) if c.kind == "message"]


def test_the_table_has_at_least_80_bad_messages_and_names_each_case_once() -> None:
    table = cases(dict.fromkeys(CLAIM_CHECK_KEYS, "file:///not-made"))
    assert case_names() == [c.name for c in table]
    assert len({c.name for c in table}) == len(table)
    assert sum(c.expect != PROCESSED for c in table) >= 80
    assert {c.expect for c in table} - {PROCESSED} <= set(r.REASONS)


@pytest.mark.parametrize("name", _message_case_names())
def test_each_message_case_is_refused_with_its_reason_or_decodes(
    name: str, claim_root: tuple[Path, dict[str, str]]
) -> None:
    root, uris = claim_root
    case = next(c for c in cases(uris) if c.name == name)
    limits = replace(LIMITS, claim_check_root=root)
    outcome = decode_message(inbound(case.value, list(case.headers), offset=3, key=case.key), limits)
    if case.expect == PROCESSED or case.expect in DECIDED_DOWNSTREAM:
        assert isinstance(outcome, DecodedFrame), getattr(outcome, "detail", outcome)
        assert outcome.image.dtype == np.uint8 and outcome.image.ndim == 2
        assert outcome.message_sha256 and len(outcome.message_sha256) == 64
    else:
        assert isinstance(outcome, Rejected), f"{name}: expected {case.expect}, the frame decoded"
        assert outcome.reason == case.expect, outcome.detail
        assert outcome.detail and outcome.detail.isprintable() and len(outcome.detail) <= 2100
        assert outcome.reason != r.DECODER_ERROR


def test_claim_check_failures_past_the_uri_form_all_say_the_same_thing(
    claim_root: tuple[Path, dict[str, str]],
) -> None:
    """No existence oracle: a missing file, a file outside the root, a FIFO, a folder and a device
    are refused with one detail; nothing of any file is echoed."""
    root, uris = claim_root
    limits = replace(LIMITS, claim_check_root=root)
    details = set()
    for key in ("outside", "escape", "dotdot", "zero", "folder", "fifo", "missing"):
        meta = make_meta(f"c-{key}", image_uri=uris[key])
        outcome = decode_message(inbound(b"", contracts.frame_headers(meta, contracts.PNG)), limits)
        assert isinstance(outcome, Rejected) and outcome.reason == r.IMAGE_UNAVAILABLE
        details.add(outcome.detail)
    assert len(details) == 1, details


def test_claim_checks_are_off_unless_a_root_is_set(claim_root: tuple[Path, dict[str, str]]) -> None:
    _, uris = claim_root
    meta = make_meta("c-off", image_uri=uris["good"])
    outcome = decode_message(inbound(b"", contracts.frame_headers(meta, contracts.PNG)), LIMITS)
    assert isinstance(outcome, Rejected) and outcome.reason == r.IMAGE_UNAVAILABLE
    assert "CLAIM_CHECK_ROOT" in outcome.detail


def test_garbage_payloads_are_not_echoed_into_the_detail() -> None:
    secret = b"\x89PNG-looking-but-SECRET-BYTES" * 4
    outcome = decode_message(
        inbound(b"SECRET" + secret, contracts.frame_headers(make_meta(), contracts.PNG)), LIMITS
    )
    assert isinstance(outcome, Rejected) and "SECRET" not in outcome.detail


def test_the_same_message_hashes_the_same_and_any_change_hashes_differently() -> None:
    headers = contracts.frame_headers(make_meta(), contracts.PNG)
    value = png_bytes(grey_image(64, 64))
    a = decode_message(inbound(value, headers, offset=1), LIMITS)
    b = decode_message(inbound(value, headers, offset=2), LIMITS)
    c = decode_message(inbound(png_bytes(grey_image(64, 64, seed=1)), headers), LIMITS)
    d = decode_message(
        inbound(value, contracts.frame_headers(make_meta(position_m=11.0), contracts.PNG)), LIMITS
    )
    assert isinstance(a, DecodedFrame) and isinstance(b, DecodedFrame)
    assert isinstance(c, DecodedFrame) and isinstance(d, DecodedFrame)
    assert a.message_sha256 == b.message_sha256
    assert len({a.message_sha256, c.message_sha256, d.message_sha256}) == 3


def test_frame_meta_at_the_size_limit_is_read_and_one_byte_over_is_refused() -> None:
    data = contracts.frame_meta_dict(make_meta())
    base = len(json.dumps(data).encode())
    data["image_uri"] = "file:///" + "a" * 10
    fill = MAX_FRAME_META_BYTES - len(json.dumps(data).encode())
    data["image_uri"] = "file:///" + "a" * (10 + fill)
    assert base < MAX_FRAME_META_BYTES
    at_limit = json.dumps(data).encode()
    assert len(at_limit) == MAX_FRAME_META_BYTES
    with pytest.raises(RefusalError, match="image_uri"):  # too long for the schema, but parsed
        parse_frame_meta(at_limit)
    with pytest.raises(RefusalError, match=f"at most {MAX_FRAME_META_BYTES} bytes"):
        parse_frame_meta(at_limit + b" ")


def test_integers_must_be_json_integers_for_every_integer_field() -> None:
    for field in ("width", "height"):
        data = contracts.frame_meta_dict(make_meta(width=10, height=10))
        data[field] = 10.0
        with pytest.raises(RefusalError, match=field) as refused:
            parse_frame_meta(json.dumps(data).encode())
        assert refused.value.reason == r.INVALID_METADATA


@pytest.mark.parametrize(
    ("value", "shown_as"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("\u202eevil", "\\u202eevil"),
        ("bad\ud800", "bad\\ud800"),
        (b"\x00\xff", "b'\\x00\\xff'"),
        ("x" * 400, "x" * 300 + "…(400 characters in all)"),
    ],
)
def test_shown_escapes_and_bounds_what_a_message_holds(value: object, shown_as: str) -> None:
    assert r.shown(value) == shown_as
    r.shown(value).encode("utf-8")  # always encodable: a header or a log line can carry it


# --- fuzzers ---------------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
FIELDS = [*contracts.frame_meta_dict(make_meta(width=8, height=8, image_uri="file:///x")).keys(), "extra"]


@st.composite
def frame_meta_bytes(draw: st.DrawFn) -> bytes:
    """frame-meta headers near the valid ones: fields replaced, removed or added; JSON literals
    JSON cannot carry; raw byte noise; deep nesting."""
    data: dict[str, object] = dict(contracts.frame_meta_dict(make_meta(width=16, height=8)))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        action = draw(st.sampled_from(["replace", "remove", "nest"]))
        if action == "remove":
            data.pop(field, None)
        elif action == "nest":
            data[field] = draw(
                st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
            )
        else:
            data[field] = draw(JSON_SCALARS)
    text = json.dumps(data, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        text = text.replace(
            "8", draw(st.sampled_from(["NaN", "Infinity", "1e999", "8.0", "-8", "8" * 40])), 1
        )
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=20)) + raw[cut:]
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=frame_meta_bytes(), content_type=st.sampled_from([contracts.PNG, contracts.RAW_GRAY8, "x/y"]))
def test_no_frame_meta_makes_the_decoder_raise_or_fall_back_to_decoder_error(
    meta: bytes, content_type: str
) -> None:
    value = png_bytes(grey_image(8, 16)) if content_type != contracts.RAW_GRAY8 else bytes(128)
    outcome = decode_message(
        inbound(value, [("content-type", content_type.encode()), ("frame-meta", meta)]), LIMITS
    )
    if isinstance(outcome, Rejected):
        assert outcome.reason in r.REASONS and outcome.reason != r.DECODER_ERROR, outcome.detail
        outcome.detail.encode("utf-8")
    else:
        m = outcome.meta
        assert all(
            math.isfinite(v) for v in (m.position_m, m.mm_per_px_along, m.mm_per_px_across, m.edge_offset_mm)
        )
        assert all(s.isprintable() and s for s in (m.frame_id, m.line, m.camera, m.strip_id))
        assert m.captured_at.utcoffset() is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=400).map(lambda b: png_bytes(grey_image(40, 40))[:60] + b),
        st.binary(max_size=400).map(lambda b: b"\xff\xd8\xff\xc0" + b),
        st.binary(max_size=400).map(lambda b: b + b"IEND\xaeB`\x82"),
    ),
    content_type=st.sampled_from([contracts.PNG, contracts.JPEG, contracts.RAW_GRAY8]),
    headers=st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=40)), max_size=5),
)
def test_no_payload_or_header_bytes_make_the_decoder_raise(
    payload: bytes, content_type: str, headers: list[tuple[str, bytes]]
) -> None:
    meta = make_meta(width=16, height=8) if content_type == contracts.RAW_GRAY8 else make_meta()
    all_headers = [*contracts.frame_headers(meta, content_type), *headers]
    outcome = decode_message(inbound(payload, all_headers), LIMITS)
    if isinstance(outcome, Rejected):
        assert outcome.reason in r.REASONS and outcome.reason != r.DECODER_ERROR, outcome.detail
    else:
        assert outcome.image.dtype == np.uint8 and outcome.image.ndim == 2
        assert outcome.image.size <= LIMITS.max_frame_pixels
