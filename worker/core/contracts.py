"""The message contracts: JSON Schemas in `schemas/`, and the code that reads and writes them.

Every message that crosses a topic has a schema versioned in its file name (`frame-meta.v1.json`,
`detection.v1.json`, `alert.v1.json`, `review.v1.json`, `dead-letter-headers.v1.json`).
`check_schemas()` runs at start-up and fails fast on a missing or malformed schema; `validate()`
checks an instance and says where it is wrong. Integers are strict: a JSON `256.0` is a number,
not an integer (JSON Schema's own rule would accept it, and a float where the code multiplies
pixel counts is a crash waiting).
Frames are read by `worker.streaming.validation`, which adds the bounds a schema cannot state.
The builders here produce exactly what the schemas describe; the tests validate their output
against the schemas.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.protocols
import jsonschema.validators
from jsonschema.exceptions import best_match

from worker.core.catalogue import Catalogue
from worker.core.errors import SchemaError
from worker.core.records import FrameMeta, FrameResult
from worker.core.refusals import shown
from worker.core.resources import shipped_dir

SCHEMAS_DIR = shipped_dir("schemas")

FRAME_META = "frame-meta.v1"
DETECTION = "detection.v1"
ALERT = "alert.v1"
REVIEW = "review.v1"
DEAD_LETTER_HEADERS = "dead-letter-headers.v1"
SCHEMA_NAMES = (FRAME_META, DETECTION, ALERT, REVIEW, DEAD_LETTER_HEADERS)

CONTENT_TYPE_HEADER = "content-type"
FRAME_META_HEADER = "frame-meta"
JPEG = "image/jpeg"
PNG = "image/png"
RAW_GRAY8 = "application/x-raw-gray8"
CONTENT_TYPES = (JPEG, PNG, RAW_GRAY8)


def _strict_integer(checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Draft 2020-12 with integers that are JSON integers only (see the module doc).
StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """The validator for schema `name` (e.g. "detection.v1"); SchemaError if missing or malformed."""
    path = SCHEMAS_DIR / f"{name}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(
            f"schema {name!r}: expected the file {path}, which does not exist; the worker reads its "
            "message contracts from the repository's schemas/ folder"
        ) from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"schema file {path}: expected JSON, {exc}") from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaError(f"schema file {path} is not valid JSON Schema 2020-12: {exc.message}") from None
    return StrictValidator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def check_schemas() -> tuple[str, ...]:
    """Load and check every contract schema (at start-up); returns their names."""
    for name in SCHEMA_NAMES:
        validator(name)
    return SCHEMA_NAMES


def validate(name: str, instance: Any) -> None:
    """Raise SchemaError naming the first offending field if `instance` breaks schema `name`
    (the message shows offending values cut short: see `refusals.shown`)."""
    error = best_match(validator(name).iter_errors(instance))
    if error is not None:
        where = "/".join(shown(p, 60) for p in error.absolute_path) or "(top level)"
        raise SchemaError(f"{name}: at {where}: {shown(error.message)}")


def to_json_bytes(value: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; refuses NaN and infinities, which JSON cannot carry."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# --- frames in --------------------------------------------------------------------------------


def normalise_content_type(value: bytes | str | None) -> str | None:
    """`image/JPEG; q=1` → `image/jpeg`; None stays None."""
    if value is None:
        return None
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return text.split(";", 1)[0].strip().lower()


def frame_meta_dict(meta: FrameMeta) -> dict[str, Any]:
    """The `frame-meta` JSON object of `meta` (for producers: the simulator, tests)."""
    data: dict[str, Any] = {
        "frame_id": meta.frame_id,
        "line": meta.line,
        "camera": meta.camera,
        "surface": meta.surface,
        "strip_id": meta.strip_id,
        "captured_at": meta.captured_at.isoformat(),
        "position_m": meta.position_m,
        "mm_per_px_along": meta.mm_per_px_along,
        "mm_per_px_across": meta.mm_per_px_across,
        "edge_offset_mm": meta.edge_offset_mm,
    }
    for optional in ("width", "height", "image_uri", "pass_id"):
        if getattr(meta, optional) is not None:
            data[optional] = getattr(meta, optional)
    return data


def frame_headers(meta: FrameMeta, content_type: str) -> list[tuple[str, bytes]]:
    """Kafka headers of a frame message: `content-type` and `frame-meta`."""
    return [
        (CONTENT_TYPE_HEADER, content_type.encode("utf-8")),
        (FRAME_META_HEADER, to_json_bytes(frame_meta_dict(meta))),
    ]


# --- detections and alerts out ----------------------------------------------------------------


def detection_message(result: FrameResult, catalogue: Catalogue) -> dict[str, Any]:
    """The detection.v1 message for one frame (also a clean one), with cause and prevention."""
    meta = result.meta
    detections = []
    for d in result.detections:
        defect = catalogue.get(d.class_name)
        detections.append(
            ({"record_id": d.record_id} if d.record_id is not None else {})
            | {
                "tile_index": d.tile_index,
                "class_id": defect.id,
                "class_name": d.class_name,
                "confidence": float(d.confidence),
                "threshold": float(d.threshold),
                "along_m": d.along_m,
                "across_mm": d.across_mm,
                "along_start_m": d.along_start_m,
                "along_end_m": d.along_end_m,
                "tile": {"x": d.x, "y": d.y, "size": d.size},
                "cause": defect.cause,
                "prevention": defect.prevention,
            }
        )
    return {
        "schema": DETECTION,
        "frame_id": meta.frame_id,
        "strip_id": meta.strip_id,
        "line": meta.line,
        "camera": meta.camera,
        "surface": meta.surface,
        "captured_at": meta.captured_at.isoformat(),
        "processed_at": result.processed_at.isoformat(),
        "position_m": meta.position_m,
        "model_version": result.model_version,
        "source": {
            "topic": result.source.topic,
            "partition": result.source.partition,
            "offset": result.source.offset,
        },
        "tile_count": result.tile_count,
        "defect_count": len(detections),
        "classes_found": sorted({d.class_name for d in result.detections}),
        "detections": detections,
    }
