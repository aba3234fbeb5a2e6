"""Inference runtimes: the artefact's network run by Keras (`tensorflow`), OpenVINO or ONNX Runtime.

`export_model(model_dir, runtime)` converts the artefact's network with Keras 3's own export
(`openvino`: IR `openvino/model.xml` + `model.bin`; `onnxruntime`: `onnx/model.onnx`, both fp32)
into the artefact and records it in model.json under `exports.<runtime>`: the files' sha256, the
weights version they were made from, the precision and the runtime's version.
`load_runtime_classifier(model_dir, runtime)` returns a `Classifier` for any runtime: the same
catalogue, thresholds, version and pre-processing, only the forward pass differs. An export is
loaded only when every recorded hash matches and it was made from the artefact's current weights;
otherwise ModelError says what to run. The runtimes are extras (`steel-worker[openvino]`,
`steel-worker[onnx]`); without one, asking for it is a ConfigError that names the extra.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ExportFormat:
    """Where a runtime's export lives in the artefact and what makes it."""

    runtime: str
    folder: str
    files: tuple[str, ...]  # the first is the one Keras writes and the runtime opens
    keras_format: str
    packages: tuple[str, ...]  # imported to export; the first also to run
    extra: str

    @property
    def paths(self) -> tuple[str, ...]:
        """The files' paths relative to the artefact, as recorded in model.json."""
        return tuple(f"{self.folder}/{name}" for name in self.files)


EXPORTS = {
    "openvino": ExportFormat(
        "openvino", "openvino", ("model.xml", "model.bin"), "openvino", ("openvino",), "openvino"
    ),
    "onnxruntime": ExportFormat(
        "onnxruntime", "onnx", ("model.onnx",), "onnx", ("onnxruntime", "onnx", "tf2onnx"), "onnx"
    ),
}
#: `tensorflow`: the Keras model on Keras' backend (TensorFlow here); the others run the export.
RUNTIMES = ("tensorflow", *EXPORTS)


def _export_format(runtime: str) -> ExportFormat:
    if runtime not in EXPORTS:
        raise ConfigError(f"export runtime: expected one of {', '.join(EXPORTS)}, received {runtime!r}")
    return EXPORTS[runtime]


def _import(package: str, form: ExportFormat) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"runtime {form.runtime}: the {package} package is not installed; install it with "
            f"pip install 'steel-worker[{form.extra}]' (or choose MODEL_RUNTIME=tensorflow)"
        ) from None


def export_model(model_dir: str | Path, runtime: str) -> dict[str, Any]:
    """Write `runtime`'s export (fp32) of the artefact's network into the artefact and record it in
    model.json; returns the record. The weights are checked first (`load_classifier`); the export is
    written to a temporary folder and renamed into place, then model.json is replaced atomically;
    a crash between the two leaves files that model.json does not record as they are, which the
    loader refuses until the export is run again."""
    form = _export_format(runtime)
    modules = [_import(package, form) for package in form.packages]
    root = Path(model_dir)
    keras_classifier = load_classifier(root)
    work = root / f".{form.folder}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        # Keras' ONNX export needs a model that has run once (its input signature comes from there)
        keras_classifier.predict(
            np.zeros((1, keras_classifier.input_size, keras_classifier.input_size), np.uint8)
        )
        keras_classifier.model.export(str(work / form.files[0]), format=form.keras_format, verbose=False)
        missing = [name for name in form.files if not (work / name).is_file()]
        if missing:
            raise ModelError(f"{runtime} export of {root} wrote no {', '.join(missing)} into {work}")
        final = root / form.folder
        shutil.rmtree(final, ignore_errors=True)
        work.replace(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    record = {
        "files": {path: sha256_file(root / path) for path in form.paths},
        "weights_version": keras_classifier.version,
        "precision": "fp32",
        "runtime_version": str(getattr(modules[0], "__version__", "unknown")),
    }
    meta_path = root / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("exports", {})[runtime] = record
    tmp = root / f".tmp-{META_FILE}"
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(meta_path)
    return record


class OpenVinoClassifier(Classifier):
    """A `Classifier` whose forward pass is OpenVINO's compiled model (CPU)."""

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x)[0], dtype=np.float32)


class OnnxRuntimeClassifier(Classifier):
    """A `Classifier` whose forward pass is an ONNX Runtime session (CPU execution provider)."""

    def _forward(self, x: np.ndarray) -> np.ndarray:
        name = self.model.get_inputs()[0].name
        return np.asarray(self.model.run(None, {name: x})[0], dtype=np.float32)


def _checked_record(root: Path, meta: dict[str, Any], form: ExportFormat) -> dict[str, Any]:
    path = root / META_FILE
    record = (meta.get("exports") or {}).get(form.runtime)
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise ModelError(
            f"{path}: no {form.runtime} export recorded; run `steel-worker export --model {root} "
            f"--runtime {form.runtime}` first"
        )
    if record.get("weights_version") != meta["version"]:
        raise ModelError(
            f"{root / form.folder}: exported from weights {str(record.get('weights_version'))[:12]}, but "
            f"the artefact's weights are {meta['version'][:12]}; export again"
        )
    if set(record["files"]) != set(form.paths):
        raise ModelError(f"{path}: exports.{form.runtime}.files must name {sorted(form.paths)}")
    for name, digest in record["files"].items():
        file = root / name
        if not file.is_file():
            raise ModelError(
                f"{file} is missing; expected the {form.runtime} export whose sha256 is {digest}"
            )
        actual = sha256_file(file)
        if actual != digest:
            raise ModelError(
                f"{file}: sha256 {actual} does not match {digest} in {path}; the export was changed "
                "after it was written"
            )
    return record


def _open_runtime(form: ExportFormat, model_file: Path) -> tuple[Any, type[Classifier]]:
    runtime = _import(form.packages[0], form)
    if form.runtime == "openvino":
        # f32 as exported: on CPUs with AVX-512 BF16 or AMX the CPU plugin would otherwise run in bf16
        compiled = runtime.Core().compile_model(str(model_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled, OpenVinoClassifier
    session = runtime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session, OnnxRuntimeClassifier


def load_runtime_classifier(
    model_dir: str | Path, runtime: str = "tensorflow", batch_size: int = DEFAULT_PREDICT_BATCH
) -> Classifier:
    """The artefact as a `Classifier` whose forward pass runs on `runtime` (one of RUNTIMES)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {', '.join(RUNTIMES)}, received {runtime!r}")
    if runtime == "tensorflow":
        return load_classifier(model_dir, batch_size)
    form = EXPORTS[runtime]
    _import(form.packages[0], form)  # a missing runtime is named before the files are read
    root = Path(model_dir)
    header = read_artefact_header(root)
    _checked_record(root, header[0], form)
    model, kind = _open_runtime(form, root / form.paths[0])
    return kind.from_header(model, root, header, batch_size)
