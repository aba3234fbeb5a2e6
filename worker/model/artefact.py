"""The model artefact: one directory that `train` writes and the worker, `evaluate` and `predict` load.

    model.weights.h5   Keras 3 weights (backend-neutral; the architecture is rebuilt from model.json)
    model.json         format, version (sha256 hex of model.weights.h5), created_at, backbone,
                       input_size, n_classes, preprocessing, catalogue (full), thresholds (by class
                       name), training settings, validation metrics, keras version and backend
    split.json, history.csv, checkpoints/   written by `train` beside them (not needed to load)
    MODEL_CARD.md, card.json   the model card (`worker.model.card`; not needed to load)

`load_classifier` checks every field and the weights' hash before it builds anything: a missing,
corrupt or changed file is a ModelError that names the file and what was expected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.core.catalogue import Catalogue
from worker.core.errors import CatalogueError, ModelError
from worker.core.thresholds import ClassThresholds
from worker.model.network import BACKBONES, build_classifier
from worker.model.preprocessing import PREPROCESSING_NAME, preprocess_tiles

if TYPE_CHECKING:
    import keras

WEIGHTS_FILE = "model.weights.h5"
META_FILE = "model.json"
FORMAT = "steel-worker-model/1"
DEFAULT_PREDICT_BATCH = 32


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Plain JSON types for settings and metrics (NumPy scalars and arrays, Paths, NaN → None)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


def save_artefact(  # noqa: PLR0917 (the positional order is the documented API)
    out_dir: str | Path,
    model: keras.Model,
    catalogue: Catalogue,
    input_size: int,
    backbone: str,
    thresholds: ClassThresholds | np.ndarray,
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> str:
    """Write model.weights.h5 and model.json into `out_dir`; returns the version (weights' sha256).

    model.json is written last (via a temporary file and a rename), so a directory with a
    model.json always has the weights it describes.
    """
    import keras  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = (
        thresholds
        if isinstance(thresholds, ClassThresholds)
        else ClassThresholds.from_values(catalogue.names, thresholds)
    )
    if t.names != catalogue.names:
        raise ModelError(
            f"thresholds: expected the classes {list(catalogue.names)}, received {list(t.names)}"
        )
    if tuple(model.output_shape) != (None, len(catalogue)):
        raise ModelError(
            f"model: expected output shape (None, {len(catalogue)}) for catalogue {list(catalogue.names)}, "
            f"received {model.output_shape}"
        )
    if tuple(model.input_shape) != (None, input_size, input_size, 3):
        raise ModelError(
            f"model: expected input shape (None, {input_size}, {input_size}, 3), received {model.input_shape}"
        )
    tmp_weights = out / f".tmp-{WEIGHTS_FILE}"
    model.save_weights(str(tmp_weights))
    tmp_weights.replace(out / WEIGHTS_FILE)
    version = sha256_file(out / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights_file": WEIGHTS_FILE,
        "backbone": backbone,
        "input_size": int(input_size),
        "n_classes": len(catalogue),
        "preprocessing": PREPROCESSING_NAME,
        "catalogue": catalogue.to_dict(),
        "thresholds": t.by_name(),
        "training": _jsonable(training),
        "metrics": _jsonable(metrics),
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }
    tmp_meta = out / f".tmp-{META_FILE}"
    tmp_meta.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp_meta.replace(out / META_FILE)
    return version


class Classifier:
    """A loaded model artefact: tiles in, per-class probabilities out.

    `predict` takes uint8 grey tiles (N, H, W) of any one size, applies the artefact's
    pre-processing (resize to `input_size`, three channels, ResNet50 `preprocess_input`) and
    returns float32 (N, n_classes) probabilities in catalogue order, in batches of `batch_size`.
    `runtime` names what runs the forward pass (`worker.model.runtimes.RUNTIMES`).
    """

    runtime = "tensorflow"
    precision = "fp32"  # what the forward pass computes in: fp32, fp16 (mixed, Keras on a GPU) or int8
    auto_skipped: dict[str, str] | None = None  # MODEL_RUNTIME=auto: the runtimes passed over, and why

    def __init__(
        self,
        *,
        model: keras.Model,
        model_dir: Path,
        catalogue: Catalogue,
        thresholds: ClassThresholds,
        version: str,
        input_size: int,
        backbone: str,
        meta: dict[str, Any],
        batch_size: int = DEFAULT_PREDICT_BATCH,
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.catalogue = catalogue
        self.thresholds = thresholds
        self.version = version
        self.input_size = input_size
        self.backbone = backbone
        self.meta = meta
        self.batch_size = batch_size

    @classmethod
    def from_header(
        cls,
        model: Any,
        model_dir: Path,
        header: tuple[dict[str, Any], Catalogue, ClassThresholds],
        batch_size: int = DEFAULT_PREDICT_BATCH,
    ) -> Classifier:
        """A classifier of `model` (what `_forward` runs) with what `read_artefact_header` read."""
        meta, catalogue, thresholds = header
        return cls(
            model=model,
            model_dir=model_dir,
            catalogue=catalogue,
            thresholds=thresholds,
            version=meta["version"],
            input_size=meta["input_size"],
            backbone=meta["backbone"],
            meta=meta,
            batch_size=batch_size,
        )

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.meta.get("metrics", {})
        return metrics

    @property
    def training(self) -> dict[str, Any]:
        training: dict[str, Any] = self.meta.get("training", {})
        return training

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_classes) float32 for uint8 tiles (N, H, W); (0, n_classes) for none."""
        tiles = np.asarray(tiles)
        if tiles.ndim in (3, 4) and tiles.shape[0] == 0:
            return np.zeros((0, len(self.catalogue)), dtype=np.float32)
        out = np.empty((tiles.shape[0], len(self.catalogue)), dtype=np.float32)
        for start in range(0, tiles.shape[0], self.batch_size):
            batch = preprocess_tiles(tiles[start : start + self.batch_size], self.input_size)
            out[start : start + batch.shape[0]] = self._forward(batch)
        return out

    def predict_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_classes) float32 for inputs already pre-processed ((N, S, S, 3) float32,
        `preprocess_tiles`), in batches of `batch_size`: the forward pass alone."""
        out = np.empty((inputs.shape[0], len(self.catalogue)), dtype=np.float32)
        for start in range(0, inputs.shape[0], self.batch_size):
            batch = np.ascontiguousarray(inputs[start : start + self.batch_size], dtype=np.float32)
            out[start : start + batch.shape[0]] = self._forward(batch)
        return out

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # predict_on_batch runs the backend's compiled predict step (tf.function with relaxed
        # shapes on TensorFlow, jit on JAX); inference mode, so BatchNorm uses its moving statistics.
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"Classifier({self.model_dir}, {self.backbone}, input {self.input_size}, "
            f"classes {list(self.catalogue.names)}, version {self.version[:12]})"
        )


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """model.json of an artefact, checked field by field; ModelError names the file and field."""
    root = Path(model_dir)
    path = root / META_FILE
    if not root.is_dir():
        raise ModelError(
            f"model directory {root} does not exist; expected the output of `steel-worker train`"
        )
    if not path.is_file():
        raise ModelError(f"{path} is missing; expected the model description written by `steel-worker train`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: expected JSON, {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object, received {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: expected format {FORMAT!r}, received {meta.get('format')!r}")
    expected: dict[str, type | tuple[type, ...]] = {
        "version": str, "backbone": str, "input_size": int, "preprocessing": str,
        "catalogue": dict, "thresholds": dict, "weights_file": str,
    }  # fmt: skip
    for field, kind in expected.items():
        if not isinstance(meta.get(field), kind):
            raise ModelError(
                f"{path}: field {field!r} must be {getattr(kind, '__name__', kind)}, received "
                f"{meta.get(field)!r}"
            )
    if meta["backbone"] not in BACKBONES:
        raise ModelError(f"{path}: backbone must be one of {list(BACKBONES)}, received {meta['backbone']!r}")
    if meta["preprocessing"] != PREPROCESSING_NAME:
        raise ModelError(
            f"{path}: pre-processing {meta['preprocessing']!r} is not this program's {PREPROCESSING_NAME!r}"
        )
    if Path(meta["weights_file"]).name != meta["weights_file"]:
        raise ModelError(f"{path}: weights_file must be a file name inside the model directory")
    return meta


def read_artefact_header(model_dir: str | Path) -> tuple[dict[str, Any], Catalogue, ClassThresholds]:
    """model.json checked (`read_model_meta`), with its catalogue and thresholds parsed."""
    root = Path(model_dir)
    meta = read_model_meta(root)
    path = root / META_FILE
    try:
        catalogue = Catalogue.from_dict(meta["catalogue"], source=f"{path} catalogue")
    except CatalogueError as exc:
        raise ModelError(str(exc)) from None
    thresholds = ClassThresholds.from_mapping(catalogue.names, meta["thresholds"], source=str(path))
    return meta, catalogue, thresholds


def load_classifier(
    model_dir: str | Path,
    batch_size: int = DEFAULT_PREDICT_BATCH,
    *,
    precision: str = "float32",
    jit_compile: bool | None = None,
) -> Classifier:
    """Load an artefact for inference; ModelError if a file is missing, corrupt or was changed.
    `precision` float16 builds the network under Keras' mixed_float16 policy (float32 weights and
    outputs); `jit_compile` True/False sets XLA for the forward pass (None: Keras' own choice)."""
    root = Path(model_dir)
    meta, catalogue, thresholds = read_artefact_header(root)
    path = root / META_FILE
    weights = root / meta["weights_file"]
    if not weights.is_file():
        raise ModelError(f"{weights} is missing; expected the weights whose sha256 is {meta['version']}")
    actual = sha256_file(weights)
    if actual != meta["version"]:
        raise ModelError(
            f"{weights}: sha256 {actual} does not match the version {meta['version']} in {path}; "
            "the weights were changed after the model was saved"
        )
    model = _build(len(catalogue), meta["input_size"], meta["backbone"], precision)
    try:
        model.load_weights(str(weights))
    except Exception as exc:  # h5py/Keras raise several types for a corrupt or foreign file
        raise ModelError(
            f"{weights}: cannot be loaded into a {meta['backbone']} with {len(catalogue)} classes at input "
            f"{meta['input_size']}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    if jit_compile is not None:
        model.jit_compile = jit_compile
    classifier = Classifier.from_header(model, root, (meta, catalogue, thresholds), batch_size)
    classifier.precision = "fp16" if precision == "float16" else "fp32"
    return classifier


def _build(n_classes: int, input_size: int, backbone: str, precision: str) -> keras.Model:
    """The network, its layers computing in `precision` (float32, or float16 with float32 weights)."""
    if precision not in ("float32", "float16"):
        raise ValueError(f"precision: expected float32 or float16, received {precision!r}")
    if precision == "float32":
        return build_classifier(n_classes, input_size, backbone)
    import keras  # noqa: PLC0415

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        return build_classifier(n_classes, input_size, backbone)
    finally:
        keras.config.set_dtype_policy(previous)


def create_untrained_artefact(  # noqa: PLR0917 (the positional order is the documented API)
    out_dir: str | Path,
    catalogue: Catalogue,
    input_size: int = 32,
    backbone: str = "resnet50",
    thresholds: np.ndarray | None = None,
    seed: int = 0,
) -> str:
    """A real, loadable artefact with randomly initialised weights, for tests of other modules.

    Seeds Keras' global random state with `seed` (same seed → same weights on one backend).
    Thresholds default to 0.5 per class. Returns the version.
    """
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    model = build_classifier(len(catalogue), input_size, backbone)
    t = ClassThresholds.from_values(
        catalogue.names, np.full(len(catalogue), 0.5) if thresholds is None else thresholds
    )
    return save_artefact(
        out_dir,
        model,
        catalogue,
        input_size,
        backbone,
        t,
        training={"untrained": True, "seed": seed},
        metrics={},
    )
