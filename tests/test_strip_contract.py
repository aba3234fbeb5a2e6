"""What a frame says about its strip, at the door: `position_m` within MAX_STRIP_LENGTH_M, the
optional `pass_id` an identifier, and the message key the strip id (counted and logged when not)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import structlog
from frames import grey_image, inbound, make_meta, png_bytes

from worker.core import contracts
from worker.core import refusals as r
from worker.core.errors import ConfigError
from worker.streaming.decode import DecodedFrame, DecodeLimits, Rejected, decode_message
from worker.streaming.decode_pool import Decoder
from worker.streaming.settings import load_settings
from worker.streaming.validation import DEFAULT_MAX_STRIP_LENGTH_M, key_mismatch

LIMITS = DecodeLimits(max_frame_bytes=1 << 20, max_frame_pixels=1 << 22)
IMAGE = png_bytes(grey_image(64, 64))


def _decode(limits: DecodeLimits = LIMITS, key: bytes | None = b"S1", **changes: object) -> object:
    meta = make_meta(**changes)  # strip S1
    return decode_message(inbound(IMAGE, contracts.frame_headers(meta, contracts.PNG), key=key), limits)


def test_a_position_over_max_strip_length_m_is_refused_at_the_door_and_at_it_accepted() -> None:
    assert isinstance(_decode(position_m=DEFAULT_MAX_STRIP_LENGTH_M), DecodedFrame)
    refused = _decode(position_m=950_000.0)
    assert isinstance(refused, Rejected)
    assert (refused.reason, refused.stage) == (r.POSITION_OUT_OF_RANGE, r.VALIDATE)
    assert "at most 10000 m (MAX_STRIP_LENGTH_M" in refused.detail and "950000.0" in refused.detail
    tighter = replace(LIMITS, max_strip_length_m=3_000.0)
    assert isinstance(_decode(tighter, position_m=3_000.5), Rejected)


def test_pass_id_is_optional_read_when_sent_and_checked_like_the_other_identifiers() -> None:
    plain = _decode()
    assert isinstance(plain, DecodedFrame) and plain.meta.pass_id is None
    sent = _decode(pass_id="coil-7")
    assert isinstance(sent, DecodedFrame) and sent.meta.pass_id == "coil-7"
    forged = _decode(pass_id="2\nlevel=error")
    assert isinstance(forged, Rejected) and forged.reason == r.INVALID_IDENTIFIER


def test_a_key_that_is_not_the_strip_id_is_kept_counted_every_time_and_logged_once_per_strip() -> None:
    meta = make_meta()
    assert key_mismatch(b"S1", meta) is None
    assert "received no key" in (key_mismatch(None, meta) or "")
    assert "received the key b'S2'" in (key_mismatch(b"S2", meta) or "")
    counted: list[int] = []
    headers = contracts.frame_headers(meta, contracts.PNG)
    other = contracts.frame_headers(make_meta("f-2", strip_id="S2"), contracts.PNG)
    messages = [
        inbound(IMAGE, headers, offset=0, key=None),
        inbound(IMAGE, headers, offset=1, key=b"S2"),
        inbound(IMAGE, headers, offset=2, key=b"S1"),
        inbound(IMAGE, other, offset=3, key=b"S1"),
    ]
    with (
        structlog.testing.capture_logs() as logs,
        Decoder(LIMITS, 2, on_key_mismatch=lambda: counted.append(1)) as decoder,
    ):
        outcomes = decoder.decode_all(messages)
    assert all(isinstance(o, DecodedFrame) for o in outcomes)
    assert len(counted) == 3
    logged = [e for e in logs if e["event"] == "frame.key_mismatch"]
    assert [e["frame_id"] for e in logged] == ["f-0001", "f-2"]  # once per strip id


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_STRIP_LENGTH_M", "0"),
        ("MAX_STRIP_LENGTH_M", "2e6"),
        ("PASS_RESTART_M", "nan"),
        ("MAX_POSITION_JUMP_M", "-1"),
    ],
)
def test_the_strip_settings_refuse_what_is_not_a_length(variable: str, value: str) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/d", "MODEL_PATH": "/m"}
    with pytest.raises(ConfigError, match=f"{variable}: expected metres over 0 and at most 1e\\+06"):
        load_settings({**env, variable: value})
    assert load_settings({**env, variable: "2500"}).__getattribute__(variable.lower()) == 2500.0
