"""Per-camera calibration of the image-quality gate: what a good frame of each camera looks like.

The file (CAMERA_CALIBRATION; YAML or JSON, schema `schemas/camera-calibration.v1.json`):

    version: 1
    defaults:              # every camera the file does not list; unset fields: the built-in values
      min_std: 4
    cameras:
      cam-top-1:           # frame-meta `camera`
        min_mean: 40
        max_mean: 200
      L2/cam-top-1:        # LINE/CAMERA: one line's camera (wins over the camera's name alone)
        bit_depth: 12

A camera entry inherits every field it does not give from `defaults`, which inherits from the
built-in `Calibration()`. Without a file (CAMERA_CALIBRATION=none) every camera gets the built-in
values, chosen so that real strip images pass: the 20 Severstal frames and 1 800 NEU images in
../shared/data and the project's synthetic frames (docs/streaming-worker.md gives the measures).

`load_calibrations(path)` reads and checks the file once, at start-up: ConfigError naming the file,
the field and what was expected for anything malformed (so the worker refuses to start instead of
judging frames against a wrong calibration). Pure: no database, no broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from jsonschema.exceptions import best_match

from worker.core.errors import ConfigError
from worker.core.yaml_files import read_yaml

SCHEMA = "camera-calibration.v1"


@dataclass(frozen=True)
class Calibration:
    """One camera's good frame: grey levels of the 8-bit image (0-255) and its samples' bit depth."""

    min_mean: float = 6.0
    max_mean: float = 250.0
    min_std: float = 3.0
    max_clipped_share: float = 0.5
    bit_depth: int | None = None  # None: 8-bit frames pass, 16-bit frames should use 16 bits

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CameraCalibrations:
    """The calibration of every camera: `cameras` by `CAMERA` or `LINE/CAMERA`, else `defaults`."""

    defaults: Calibration = Calibration()
    cameras: Mapping[str, Calibration] = field(default_factory=dict)
    source: str = "built-in defaults"

    def for_camera(self, line: str, camera: str) -> Calibration:
        found = self.cameras.get(f"{line}/{camera}") or self.cameras.get(camera)
        return found if found is not None else self.defaults


def load_calibrations(path: Path | None) -> CameraCalibrations:
    """The calibrations in `path` (None: the built-in defaults for every camera); see the module doc."""
    if path is None:
        return CameraCalibrations()
    data = read_yaml(Path(path), f"CAMERA_CALIBRATION={path}", "expected a calibration file, there is none")
    return parse_calibrations(data, source=str(path))


def parse_calibrations(data: Any, source: str = "camera calibration") -> CameraCalibrations:
    """Check parsed calibrations (a mapping) against the schema and the cross-field rules; build them."""
    from worker.core.contracts import validator  # noqa: PLC0415  (cached per process)

    error = best_match(validator(SCHEMA).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"CAMERA_CALIBRATION={source}: at {where}: {error.message}")
    defaults = _calibration(Calibration(), data.get("defaults", {}), source, "defaults")
    cameras = {
        str(name): _calibration(defaults, values, source, f"cameras/{name}")
        for name, values in (data.get("cameras") or {}).items()
    }
    return CameraCalibrations(defaults, cameras, source)


def _calibration(base: Calibration, values: Mapping[str, Any], source: str, where: str) -> Calibration:
    calibration = replace(base, **values)
    if calibration.min_mean >= calibration.max_mean:
        raise ConfigError(
            f"CAMERA_CALIBRATION={source}: at {where}: expected min_mean below max_mean, received"
            f" min_mean {calibration.min_mean:g} and max_mean {calibration.max_mean:g}"
        )
    return calibration
