"""Inference runtimes: the artefact's network run by Keras (`tensorflow`), OpenVINO or ONNX Runtime.

`export_model(model_dir, runtime)` converts the artefact's network with Keras 3's own export
(`openvino`: IR `openvino/model.xml` + `model.bin`; `onnxruntime`: `onnx/model.onnx`, fp32) into
the artefact; `openvino-int8` and `onnxruntime-int8` quantise that conversion to INT8 after
training (NNCF; ONNX Runtime's static quantisation), calibrated on the model's validation split
(`worker.model.quantize`). Each export is recorded in model.json under `exports.<runtime>`: the
files' sha256, the weights version they were made from, the precision and the runtime's version.
When the model has a test split, the export's scores are compared with Keras' there and the report
(`agreement.json`, `worker.model.agreement`) lands beside the network, recorded with it.

`load_runtime_classifier(model_dir, runtime)` returns a `Classifier` for any runtime: the same
catalogue, thresholds, version and pre-processing, only the forward pass differs. An export is
loaded only when every recorded hash matches and it was made from the artefact's current weights,
and an INT8 export only with an agreement report inside the limits at the current thresholds;
otherwise ModelError says what to run. `auto` takes the first of AUTO_ORDER that loads (Keras on a
GPU), and says on the classifier what it skipped and why. The runtimes are extras
(`steel-worker[openvino]`, `steel-worker[onnx]`); without one, asking for it is a ConfigError that
names the extra.
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

from worker.core.errors import ConfigError, DatasetError, ModelError
from worker.model.acceleration import Acceleration
from worker.model.agreement import (
    AGREEMENT_FILE,
    AgreementLimits,
    check_agreement,
    measure_agreement,
    read_agreement,
    write_agreement,
)
from worker.model.artefact import (
    DEFAULT_PREDICT_BATCH,
    META_FILE,
    Classifier,
    load_classifier,
    read_artefact_header,
    sha256_file,
)
from worker.model.quantize import CALIBRATION_TILES, part_inputs, quantize_onnx, quantize_openvino


@dataclass(frozen=True)
class ExportFormat:
    """Where a runtime's export lives in the artefact and what makes it."""

    runtime: str  # its name in MODEL_RUNTIME and in model.json's exports
    engine: str  # what runs it: openvino or onnxruntime
    folder: str
    files: tuple[str, ...]  # the first is the one Keras writes and the runtime opens
    keras_format: str
    packages: tuple[str, ...]  # imported to export; the first also to run
    extra: str
    precision: str = "fp32"  # int8: quantised after Keras' fp32 export

    @property
    def paths(self) -> tuple[str, ...]:
        """The files' paths relative to the artefact, as recorded in model.json."""
        return tuple(f"{self.folder}/{name}" for name in self.files)


_IR = ("model.xml", "model.bin")
_ONNX_PACKAGES = ("onnxruntime", "onnx", "tf2onnx")
EXPORTS = {
    "openvino": ExportFormat("openvino", "openvino", "openvino", _IR, "openvino", ("openvino",), "openvino"),
    "openvino-int8": ExportFormat(
        "openvino-int8",
        "openvino",
        "openvino-int8",
        _IR,
        "openvino",
        ("openvino", "nncf"),
        "openvino",
        "int8",
    ),
    "onnxruntime": ExportFormat(
        "onnxruntime", "onnxruntime", "onnx", ("model.onnx",), "onnx", _ONNX_PACKAGES, "onnx"
    ),
    "onnxruntime-int8": ExportFormat(
        "onnxruntime-int8",
        "onnxruntime",
        "onnx-int8",
        ("model.onnx",),
        "onnx",
        _ONNX_PACKAGES,
        "onnx",
        "int8",
    ),
}
#: `tensorflow`: the Keras model on Keras' backend (TensorFlow here); the others run the export.
RUNTIMES = ("tensorflow", *EXPORTS)
AUTO = "auto"
#: What `auto` tries on a CPU, fastest first (measured at 256 px: docs/benchmark.md); on a GPU, Keras.
AUTO_ORDER = ("openvino-int8", "onnxruntime-int8", "openvino", "onnxruntime", "tensorflow")


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


def export_model(
    model_dir: str | Path,
    runtime: str,
    calibration_data: str | Path | None = None,
    agreement_data: str | Path | None = None,
) -> dict[str, Any]:
    """Write `runtime`'s export of the artefact's network into the artefact and record it in
    model.json; returns the record. INT8 runtimes calibrate on `calibration_data` (a tile set; by
    default the model's validation split). The agreement with Keras is measured on
    `agreement_data` (a tile set; by default the model's test split) — required for INT8, skipped
    for fp32 when the model has no split. The weights are checked first (`load_classifier`); the
    export is written to a temporary folder and renamed into place, then model.json is replaced
    atomically; a crash between the two leaves files that model.json does not record as they are,
    which the loader refuses until the export is run again."""
    form = _export_format(runtime)
    modules = [_import(package, form) for package in form.packages]
    root = Path(model_dir)
    keras_classifier = load_classifier(root)
    header = read_artefact_header(root)
    names, size = keras_classifier.catalogue.names, keras_classifier.input_size
    # the data are read before the slow conversion, so a missing split is said in seconds
    judged = _agreement_inputs(root, names, size, agreement_data, required=form.precision == "int8")
    calibration = (
        part_inputs(
            root, names, size, "validation", data_dir=_path(calibration_data), limit=CALIBRATION_TILES
        )
        if form.precision == "int8"
        else None
    )
    work = root / f".{form.folder}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        # Keras' ONNX export needs a model that has run once (its input signature comes from there)
        keras_classifier.predict(np.zeros((1, size, size), np.uint8))
        network = work / form.files[0]
        if calibration is None:
            keras_classifier.model.export(str(network), format=form.keras_format, verbose=False)
        else:
            fp32 = work / "fp32" / form.files[0]
            keras_classifier.model.export(str(fp32), format=form.keras_format, verbose=False)
            quantize = quantize_openvino if form.engine == "openvino" else quantize_onnx
            quantize(fp32, network, calibration.inputs())
            shutil.rmtree(fp32.parent)
        missing = [name for name in form.files if not (work / name).is_file()]
        if missing:
            raise ModelError(f"{runtime} export of {root} wrote no {', '.join(missing)} into {work}")
        report = None
        if judged is not None:
            exported = _exported_classifier(form, network, root, header, keras_classifier.batch_size)
            reference, scores = judged.scores(keras_classifier, exported)
            report = measure_agreement(
                reference,
                scores,
                judged.labels,
                keras_classifier.thresholds.array,
                names,
                source=judged.source,
            )
            write_agreement(report, work / AGREEMENT_FILE)
        final = root / form.folder
        shutil.rmtree(final, ignore_errors=True)
        work.replace(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    record: dict[str, Any] = {
        "files": {path: sha256_file(root / path) for path in _recorded_paths(form, root)},
        "weights_version": keras_classifier.version,
        "precision": form.precision,
        "runtime_version": str(getattr(modules[0], "__version__", "unknown")),
    }
    if calibration is not None:
        record["calibration"] = calibration.source
    if report is not None:
        record["agreement"] = agreement_summary(report)
    meta_path = root / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("exports", {})[runtime] = record
    tmp = root / f".tmp-{META_FILE}"
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(meta_path)
    return record


def agreement_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline of an agreement report: tiles, largest |Δscore|, worst class's flip share and F1 drop."""
    classes = report["classes"].values()
    return {
        "tiles": report["tiles"],
        "max_abs_difference": report["max_abs_difference"],
        "max_flip_share": max(c["flip_share"] for c in classes),
        "max_f1_drop": max(c["f1_reference"] - c["f1_export"] for c in classes),
    }


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _agreement_inputs(
    root: Path, names: tuple[str, ...], size: int, data: str | Path | None, required: bool
) -> Any:
    """The labelled tiles the agreement is measured on, or None for an fp32 export of a model
    without a split (nothing to measure on, nothing enforced)."""
    if data is None and not (root / "split.json").is_file():
        if required:
            raise DatasetError(
                f"{root}: an INT8 export is measured against the Keras model on the model's test split, "
                "and this model has no split.json (it was not made by `train`); pass --agreement TILESET"
            )
        return None
    return part_inputs(root, names, size, "test", data_dir=_path(data))


def _recorded_paths(form: ExportFormat, root: Path) -> tuple[str, ...]:
    agreement = f"{form.folder}/{AGREEMENT_FILE}"
    return (*form.paths, agreement) if (root / agreement).is_file() else form.paths


class OpenVinoClassifier(Classifier):
    """A `Classifier` whose forward pass is OpenVINO's compiled model (CPU)."""

    runtime = "openvino"

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x)[0], dtype=np.float32)


class OnnxRuntimeClassifier(Classifier):
    """A `Classifier` whose forward pass is an ONNX Runtime session (CPU execution provider)."""

    runtime = "onnxruntime"

    def _forward(self, x: np.ndarray) -> np.ndarray:
        name = self.model.get_inputs()[0].name
        return np.asarray(self.model.run(None, {name: x})[0], dtype=np.float32)


def _checked_record(
    root: Path, meta: dict[str, Any], form: ExportFormat, limits: AgreementLimits
) -> dict[str, Any]:
    path = root / META_FILE
    record = (meta.get("exports") or {}).get(form.runtime)
    command = f"steel-worker export --model {root} --runtime {form.runtime}"
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise ModelError(f"{path}: no {form.runtime} export recorded; run `{command}` first")
    if record.get("weights_version") != meta["version"]:
        raise ModelError(
            f"{root / form.folder}: exported from weights {str(record.get('weights_version'))[:12]}, but "
            f"the artefact's weights are {meta['version'][:12]}; export again: `{command}`"
        )
    agreement = f"{form.folder}/{AGREEMENT_FILE}"
    if not set(form.paths) <= set(record["files"]) <= {*form.paths, agreement}:
        raise ModelError(
            f"{path}: exports.{form.runtime}.files must name {sorted(form.paths)} (and {agreement})"
        )
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
    if form.precision == "int8":
        if agreement not in record["files"]:
            raise ModelError(
                f"{root / form.folder}: an INT8 export without its agreement report; run `{command}`"
            )
        check_agreement(read_agreement(root / agreement), meta["thresholds"], limits, root / agreement)
    return record


def _exported_classifier(
    form: ExportFormat,
    model_file: Path,
    root: Path,
    header: tuple[dict[str, Any], Any, Any],
    batch_size: int,
    *,
    acceleration: Acceleration | None = None,
) -> Classifier:
    engine = _import(form.packages[0], form)
    classifier: Classifier
    if form.engine == "openvino":
        # f32 where not quantised: on CPUs with AVX-512 BF16 or AMX the CPU plugin would otherwise
        # run the network in bf16
        compiled = engine.Core().compile_model(str(model_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        classifier = OpenVinoClassifier.from_header(compiled, root, header, batch_size)
    else:
        providers = (acceleration or Acceleration()).providers(list(engine.get_available_providers()))
        session = engine.InferenceSession(str(model_file), providers=providers)
        classifier = OnnxRuntimeClassifier.from_header(session, root, header, batch_size)
    classifier.runtime = form.runtime
    classifier.precision = form.precision
    return classifier


def load_runtime_classifier(
    model_dir: str | Path,
    runtime: str = "tensorflow",
    batch_size: int = DEFAULT_PREDICT_BATCH,
    limits: AgreementLimits | None = None,
    acceleration: Acceleration | None = None,
) -> Classifier:
    """The artefact as a `Classifier` whose forward pass runs on `runtime` (one of RUNTIMES, or
    AUTO); INT8 exports are held to `limits` (default AgreementLimits()); `acceleration` says how
    Keras and ONNX Runtime use a GPU (default: `auto` for each, `worker.model.acceleration`)."""
    limits = limits or AgreementLimits()
    acceleration = acceleration or Acceleration()
    if runtime == AUTO:
        return _load_auto(model_dir, batch_size, limits, acceleration)
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {', '.join((*RUNTIMES, AUTO))}, received {runtime!r}")
    if runtime == "tensorflow":
        precision = acceleration.tensorflow_precision(gpu_present())
        return load_classifier(
            model_dir, batch_size, precision=precision, jit_compile=acceleration.jit_compile()
        )
    form = EXPORTS[runtime]
    _import(form.packages[0], form)  # a missing runtime is named before the files are read
    root = Path(model_dir)
    header = read_artefact_header(root)
    _checked_record(root, header[0], form, limits)
    return _exported_classifier(
        form, root / form.paths[0], root, header, batch_size, acceleration=acceleration
    )


def _load_auto(
    model_dir: str | Path, batch_size: int, limits: AgreementLimits, acceleration: Acceleration
) -> Classifier:
    """The runtime `auto_choice` names, loaded; `auto_skipped` on it says what was passed over."""
    runtime, skipped = auto_choice(model_dir, limits)
    classifier = load_runtime_classifier(model_dir, runtime, batch_size, limits, acceleration)
    classifier.auto_skipped = skipped
    return classifier


def auto_choice(model_dir: str | Path, limits: AgreementLimits | None = None) -> tuple[str, dict[str, str]]:
    """What MODEL_RUNTIME=auto runs for the artefact on this machine, decided without loading a
    network: on a GPU, tensorflow; else the first runtime of AUTO_ORDER whose package imports and
    whose export is recorded, unchanged, made from the current weights and (INT8) inside `limits`
    at the current thresholds. Also, for each runtime passed over, why."""
    limits = limits or AgreementLimits()
    if gpu_present():
        return "tensorflow", {}
    root = Path(model_dir)
    meta = read_artefact_header(root)[0]
    skipped: dict[str, str] = {}
    for runtime in AUTO_ORDER[:-1]:
        form = EXPORTS[runtime]
        try:
            _import(form.packages[0], form)
            _checked_record(root, meta, form, limits)
        except (ConfigError, ModelError) as exc:
            skipped[runtime] = str(exc)
            continue
        return runtime, skipped
    return AUTO_ORDER[-1], skipped


def gpu_present() -> bool:
    """Whether Keras' backend sees a GPU (TensorFlow's device list; JAX's default backend)."""
    import keras  # noqa: PLC0415

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax  # noqa: PLC0415

        return bool(jax.default_backend() == "gpu")
    return False
