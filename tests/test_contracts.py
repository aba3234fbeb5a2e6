"""The message contracts: schemas are valid JSON Schema 2020-12, and the builders' output obeys them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from frames import make_meta

from worker.core import contracts
from worker.core.catalogue import load_catalogue
from worker.core.errors import SchemaError
from worker.core.records import Detection, FrameResult, KafkaCoordinates
from worker.streaming.validation import parse_frame_meta

CATALOGUE = load_catalogue()


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    assert contracts.check_schemas() == contracts.SCHEMA_NAMES
    for name in contracts.SCHEMA_NAMES:
        schema = json.loads((contracts.SCHEMAS_DIR / f"{name}.json").read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert name in schema["$id"]


def test_a_missing_schema_file_is_a_schema_error_naming_the_file() -> None:
    with pytest.raises(SchemaError, match=r"nothing\.v9\.json"):
        contracts.validator("nothing.v9")


def test_frame_meta_round_trips_through_its_header() -> None:
    meta = make_meta(width=512, height=256, image_uri="file:///tmp/x.png")
    header = dict(contracts.frame_headers(meta, contracts.PNG))
    assert header["content-type"] == b"image/png"
    assert parse_frame_meta(header["frame-meta"]) == meta


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("frame_id"), "frame_id"),
        (lambda d: d.update(surface="left"), "surface"),
        (lambda d: d.update(mm_per_px_along=0), "mm_per_px_along"),
        (lambda d: d.update(position_m=-1.0), "position_m"),
        (lambda d: d.update(captured_at="2024-05-01T08:30:00"), "captured_at"),  # no time zone
        (lambda d: d.update(captured_at="2024-13-01T08:30:00Z"), "captured_at"),  # month 13
        (lambda d: d.update(width=100), "height"),  # width without height
        (lambda d: d.update(strip_id="has space"), "strip_id"),
        (lambda d: d.update(colour="red"), "colour"),  # unknown field
    ],
)
def test_invalid_frame_meta_is_refused_naming_the_field(change, where: str) -> None:
    data = contracts.frame_meta_dict(make_meta())
    change(data)
    with pytest.raises(SchemaError, match=where):
        parse_frame_meta(json.dumps(data).encode())


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"{not json", b"[]", b"null"])
def test_frame_meta_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(SchemaError, match="frame-meta"):
        parse_frame_meta(raw)


def test_content_type_is_normalised() -> None:
    assert contracts.normalise_content_type(b"Image/PNG; charset=binary") == "image/png"
    assert contracts.normalise_content_type(None) is None


def _result(detections: tuple[Detection, ...]) -> FrameResult:
    return FrameResult(
        meta=make_meta(),
        source=KafkaCoordinates("mill.frames", 2, 41),
        model_version="abc123",
        tile_count=2,
        detections=detections,
        processed_at=datetime(2024, 5, 1, 8, 30, 1, tzinfo=UTC),
    )


def _detection(class_name: str, confidence: float, tile_index: int = 0) -> Detection:
    return Detection(
        frame_id="f-0001",
        tile_index=tile_index,
        class_name=class_name,
        confidence=confidence,
        threshold=0.5,
        along_m=10.064,
        across_mm=76.2,
        along_start_m=10.0,
        along_end_m=10.128,
        x=256 * tile_index,
        y=0,
        size=256,
    )


def test_a_clean_frame_gives_a_valid_detection_message_with_no_detections() -> None:
    message = contracts.detection_message(_result(()), CATALOGUE)
    contracts.validate(contracts.DETECTION, message)
    assert message["detections"] == [] and message["defect_count"] == 0
    assert message["source"] == {"topic": "mill.frames", "partition": 2, "offset": 41}


def test_detection_message_carries_class_cause_prevention_and_position() -> None:
    message = contracts.detection_message(
        _result((_detection("scratches", 0.8), _detection("holes", 0.95, tile_index=1))), CATALOGUE
    )
    contracts.validate(contracts.DETECTION, message)
    first = message["detections"][0]
    assert first["class_name"] == "scratches" and first["class_id"] == 2
    assert first["cause"] == CATALOGUE.get("scratches").cause
    assert first["prevention"] == CATALOGUE.get("scratches").prevention
    assert (first["along_m"], first["across_mm"], first["tile"]) == (
        10.064,
        76.2,
        {"x": 0, "y": 0, "size": 256},
    )
    assert message["classes_found"] == ["holes", "scratches"]
    json.loads(contracts.to_json_bytes(message))


def test_a_message_that_breaks_its_schema_is_reported_with_its_path() -> None:
    message = contracts.detection_message(_result((_detection("holes", 0.9),)), CATALOGUE)
    message["detections"][0]["confidence"] = 1.5
    with pytest.raises(SchemaError, match="detections/0/confidence"):
        contracts.validate(contracts.DETECTION, message)


def test_json_encoding_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON"):
        contracts.to_json_bytes({"confidence": float("nan")})


def test_frame_meta_without_optional_fields_omits_them() -> None:
    data = contracts.frame_meta_dict(replace(make_meta(), width=None))
    assert "width" not in data and "image_uri" not in data
