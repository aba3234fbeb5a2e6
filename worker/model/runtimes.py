"""Inference runtimes: the artefact's network run by Keras (`tensorflow`) or by OpenVINO (`openvino`).

`export_openvino(model_dir)` converts the artefact's network (Keras 3's own OpenVINO export) into
`openvino/model.xml` + `model.bin` inside the artefact and records them in model.json under
`exports.openvino`: the files' sha256, the weights version they were made from, the precision and
the OpenVINO version. `load_runtime_classifier(model_dir, runtime)` returns a `Classifier` for
either runtime: the same catalogue, thresholds, version and pre-processing, only the forward pass
differs. An OpenVINO export is loaded only when every recorded hash matches and it was made from
the artefact's current weights; otherwise ModelError says what to run. OpenVINO itself is an extra
(`pip install 'steel-worker[openvino]'`); without it asking for that runtime is a ConfigError.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.errors import ConfigError, ModelError
from worker.model.artefact import (
    DEFAULT_PREDICT_BATCH,
    META_FILE,
    Classifier,
    load_classifier,
    read_artefact_header,
    sha256_file,
)

#: `tensorflow`: the Keras model on Keras' backend (TensorFlow here); `openvino`: the exported IR.
RUNTIMES = ("tensorflow", "openvino")
OPENVINO_DIR = "openvino"
OPENVINO_FILES = ("model.xml", "model.bin")


def _import_openvino() -> Any:
    try:
        import openvino  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "runtime openvino: the openvino package is not installed; install it with "
            "pip install 'steel-worker[openvino]' (or choose MODEL_RUNTIME=tensorflow)"
        ) from None
    return openvino


def export_openvino(model_dir: str | Path) -> dict[str, Any]:
    """Write the OpenVINO IR (fp32) of the artefact's network into `<model_dir>/openvino/` and record
    it in model.json; returns the record. The weights are checked first (`load_classifier`); the
    IR is written to a temporary folder and renamed into place, then model.json is replaced
    atomically, so a crash leaves either the old state or the new one."""
    openvino = _import_openvino()
    root = Path(model_dir)
    keras_classifier = load_classifier(root)
    work = root / f".{OPENVINO_DIR}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        keras_classifier.model.export(str(work / OPENVINO_FILES[0]), format="openvino", verbose=False)
        missing = [name for name in OPENVINO_FILES if not (work / name).is_file()]
        if missing:
            raise ModelError(f"OpenVINO export of {root} wrote no {', '.join(missing)} into {work}")
        final = root / OPENVINO_DIR
        shutil.rmtree(final, ignore_errors=True)
        work.replace(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    record = {
        "files": {f"{OPENVINO_DIR}/{name}": sha256_file(final / name) for name in OPENVINO_FILES},
        "weights_version": keras_classifier.version,
        "precision": "fp32",
        "openvino_version": str(openvino.__version__),
    }
    meta_path = root / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("exports", {})["openvino"] = record
    tmp = root / f".tmp-{META_FILE}"
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(meta_path)
    return record


class OpenVinoClassifier(Classifier):
    """A `Classifier` whose forward pass is OpenVINO's compiled model (CPU)."""

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x)[0], dtype=np.float32)


def _checked_openvino_record(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    path = root / META_FILE
    record = (meta.get("exports") or {}).get("openvino")
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise ModelError(
            f"{path}: no OpenVINO export recorded; run `steel-worker export --model {root} --runtime "
            "openvino` first"
        )
    if record.get("weights_version") != meta["version"]:
        raise ModelError(
            f"{root / OPENVINO_DIR}: exported from weights {str(record.get('weights_version'))[:12]}, but "
            f"the artefact's weights are {meta['version'][:12]}; export again"
        )
    expected = {f"{OPENVINO_DIR}/{name}" for name in OPENVINO_FILES}
    if set(record["files"]) != expected:
        raise ModelError(f"{path}: exports.openvino.files must name {sorted(expected)}")
    for name, digest in record["files"].items():
        file = root / name
        if not file.is_file():
            raise ModelError(f"{file} is missing; expected the OpenVINO export whose sha256 is {digest}")
        actual = sha256_file(file)
        if actual != digest:
            raise ModelError(
                f"{file}: sha256 {actual} does not match {digest} in {path}; the export was changed "
                "after it was written"
            )
    return record


def load_runtime_classifier(
    model_dir: str | Path, runtime: str = "tensorflow", batch_size: int = DEFAULT_PREDICT_BATCH
) -> Classifier:
    """The artefact as a `Classifier` whose forward pass runs on `runtime` (one of RUNTIMES)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {', '.join(RUNTIMES)}, received {runtime!r}")
    if runtime == "tensorflow":
        return load_classifier(model_dir, batch_size)
    openvino = _import_openvino()
    root = Path(model_dir)
    meta, catalogue, thresholds = read_artefact_header(root)
    _checked_openvino_record(root, meta)
    # f32 as exported: on CPUs with AVX-512 BF16 or AMX the CPU plugin would otherwise run in bf16
    compiled = openvino.Core().compile_model(
        str(root / OPENVINO_DIR / OPENVINO_FILES[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return OpenVinoClassifier(
        model=compiled,
        model_dir=root,
        catalogue=catalogue,
        thresholds=thresholds,
        version=meta["version"],
        input_size=meta["input_size"],
        backbone=meta["backbone"],
        meta=meta,
        batch_size=batch_size,
    )
