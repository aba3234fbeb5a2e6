"""Why the worker refuses a message: the dead-letter reasons and stages, the exception that carries
a refusal, and `shown()`, the one way a value taken from a message reaches a log line or a header.

`REASONS` and `STAGES` are the enums of `dlq-reason` and `dlq-stage` in
`schemas/dead-letter-headers.v1.json` (a test keeps them equal). Each reason names one kind of
fault, so that an integrator reading the dead-letter topic knows what to fix without the worker's
logs; `docs/reliability.md` lists when each is given.
"""

from __future__ import annotations

# Stages, in the order a message meets them.
TRANSPORT = "transport"  # the Kafka record itself could not be read (kafka-python raised in poll)
VALIDATE = "validate"  # headers and frame-meta
FETCH = "fetch"  # the claim-check image
DECODE = "decode"  # image header and pixels
STORE = "store"  # the database refused the frame (isolated from its batch)
PUBLISH = "publish"  # the broker refused the frame's detection message (isolated)
STAGES = (TRANSPORT, VALIDATE, FETCH, DECODE, STORE, PUBLISH)

UNREADABLE_RECORD = "unreadable-record"
MISSING_METADATA = "missing-metadata"
INVALID_HEADERS = "invalid-headers"
INVALID_METADATA = "invalid-metadata"
NON_FINITE_NUMBER = "non-finite-number"
INVALID_IDENTIFIER = "invalid-identifier"
TIMESTAMP_OUT_OF_RANGE = "timestamp-out-of-range"
POSITION_OUT_OF_RANGE = "position-out-of-range"  # position_m beyond MAX_STRIP_LENGTH_M
UNSUPPORTED_CONTENT_TYPE = "unsupported-content-type"
EMPTY_PAYLOAD = "empty-payload"
OVERSIZE_PAYLOAD = "oversize-payload"
IMAGE_UNAVAILABLE = "image-unavailable"
IMAGE_TOO_LARGE = "image-too-large"
TOO_MANY_TILES = "too-many-tiles"
CORRUPT_IMAGE = "corrupt-image"
CONTENT_TYPE_MISMATCH = "content-type-mismatch"
IMAGE_TOO_COSTLY = "image-too-costly"  # its structure would cost more to decode than allowed (scans, chunks)
DECODE_TIMEOUT = "decode-timeout"  # the decoder did not finish within DECODE_TIMEOUT_MS
IMAGE_QUALITY = "image-quality"  # the image-quality gate refused it (IMAGE_QUALITY_REFUSE)
DECODER_ERROR = "decoder-error"  # the decoder failed in a way it does not know: a bug, never expected
DUPLICATE_FRAME_ID = "duplicate-frame-id"
UNSTORABLE = "unstorable"
UNDELIVERABLE = "undeliverable"
REASONS = (
    UNREADABLE_RECORD,
    MISSING_METADATA,
    INVALID_HEADERS,
    INVALID_METADATA,
    NON_FINITE_NUMBER,
    INVALID_IDENTIFIER,
    TIMESTAMP_OUT_OF_RANGE,
    POSITION_OUT_OF_RANGE,
    UNSUPPORTED_CONTENT_TYPE,
    EMPTY_PAYLOAD,
    OVERSIZE_PAYLOAD,
    IMAGE_UNAVAILABLE,
    IMAGE_TOO_LARGE,
    TOO_MANY_TILES,
    CORRUPT_IMAGE,
    CONTENT_TYPE_MISMATCH,
    IMAGE_TOO_COSTLY,
    DECODE_TIMEOUT,
    IMAGE_QUALITY,
    DECODER_ERROR,
    DUPLICATE_FRAME_ID,
    UNSTORABLE,
    UNDELIVERABLE,
)

#: Longest text `shown()` returns by default: enough for any detail, short enough for a log line.
SHOWN_CHARS = 300


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` as text that is safe to log or to put in a header: control, format, separator and
    unpaired surrogate characters escaped (so a message cannot forge log lines, reorder text with
    bidirectional controls, or make a header that is not UTF-8), and at most `limit` characters
    before a marker that gives the full length. Bytes are shown as Python shows them.
    """
    text = value if isinstance(value, str) else repr(value)
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text[: limit + 1]
    )
    if len(escaped) <= limit and len(text) <= limit:
        return escaped
    return f"{escaped[:limit]}…({len(text)} characters in all)"
