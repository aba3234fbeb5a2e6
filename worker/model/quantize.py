"""INT8 post-training quantisation of an exported network, and the labelled tiles it is judged on.

`quantize_openvino` (NNCF) and `quantize_onnx` (ONNX Runtime's static quantisation, QDQ, weights
per channel) turn an fp32 export into an INT8 one, with activation ranges calibrated on network
inputs from `part_inputs` — by default the model's own validation split (`split.json`), at most
CALIBRATION_TILES of them. `part_inputs` reads a part of the model's split, or every tile of another
tile set, through the one pre-processing step (`preprocess_tiles`), so tiles of mixed sizes work,
a batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.errors import DatasetError
from worker.core.tileset import TileSet, read_tile, read_tileset
from worker.model.preprocessing import preprocess_tiles
from worker.model.split import load_split

INPUT_BATCH = 128  # tiles read and pre-processed at a time (100 MB at 256 px)
CALIBRATION_TILES = 300  # NNCF's default subset size; more adds minutes, not accuracy (NNCF docs)


@dataclass(frozen=True)
class LabelledTiles:
    """Tiles of a tile set, read and pre-processed when asked for (a test split of thousands of
    256-px tiles would take gigabytes as one array), with their 0/1 labels (N, C) in the model's
    class order."""

    tileset: TileSet
    rows: np.ndarray
    input_size: int
    labels: np.ndarray
    source: dict[str, Any]  # where the tiles came from: tile set, part, count

    def batches(self, size: int = INPUT_BATCH) -> Iterator[np.ndarray]:
        """Network inputs (≤ size, S, S, 3) float32, in order."""
        for start in range(0, len(self.rows), size):
            chunk = self.rows[start : start + size]
            out = np.empty((len(chunk), self.input_size, self.input_size, 3), dtype=np.float32)
            for i, row in enumerate(chunk):
                out[i] = preprocess_tiles(read_tile(self.tileset.path(row))[None], self.input_size)[0]
            yield out

    def inputs(self) -> np.ndarray:
        """Every tile's network input at once (for the calibration set: at most CALIBRATION_TILES)."""
        return np.concatenate(list(self.batches()))

    def scores(self, *classifiers: Any) -> list[np.ndarray]:
        """Each classifier's scores (N, C) on these tiles, reading every tile once."""
        parts: list[list[np.ndarray]] = [[] for _ in classifiers]
        for batch in self.batches():
            for part, classifier in zip(parts, classifiers, strict=True):
                part.append(classifier.predict_inputs(batch))
        return [np.concatenate(part) for part in parts]


def part_inputs(
    model_dir: Path,
    names: tuple[str, ...],
    input_size: int,
    part: str,
    *,
    data_dir: Path | None = None,
    limit: int | None = None,
) -> LabelledTiles:
    """The tiles of `part` of the model's split (or every tile of `data_dir` when given), evenly
    thinned to at most `limit`, with labels; DatasetError says what is missing."""
    if data_dir is not None:
        tileset, described = read_tileset(data_dir), {"tile_set": str(data_dir), "part": "all tiles"}
    else:
        split = load_split(model_dir)
        tileset = split.subset(read_tileset(split.data_dir), part)
        described = {"tile_set": split.data_dir, "part": part}
    absent = [n for n in names if n not in tileset.catalogue.names]
    if absent:
        raise DatasetError(f"tile set {tileset.root}: has no labels for the model's classes {absent}")
    if len(tileset) == 0:
        raise DatasetError(f"tile set {tileset.root}: no tiles in the {described['part']} part")
    rows = _even(len(tileset), limit)
    missing = [str(tileset.path(row)) for row in rows if not tileset.path(row).is_file()]
    if missing:
        raise DatasetError(f"tile set {tileset.root}: {len(missing)} tiles are missing, e.g. {missing[0]}")
    columns = np.array([tileset.catalogue.index(n) for n in names], dtype=int)
    labels = tileset.labels[np.ix_(rows, columns)]
    return LabelledTiles(tileset, rows, input_size, labels, {**described, "tiles": len(rows)})


def _even(count: int, limit: int | None) -> np.ndarray:
    if limit is None or count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def quantize_openvino(fp32_xml: Path, out_xml: Path, calibration: np.ndarray) -> None:
    """NNCF post-training quantisation of the IR at `fp32_xml` into `out_xml` (+ .bin)."""
    import nncf  # noqa: PLC0415
    import openvino as ov  # noqa: PLC0415

    nncf.set_log_level(logging.WARNING)  # its progress bars stay; its INFO lines go
    model = ov.Core().read_model(str(fp32_xml))
    items = [calibration[i : i + 1] for i in range(len(calibration))]
    quantized = nncf.quantize(
        model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(items)
    )
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)


def quantize_onnx(fp32_onnx: Path, out_onnx: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime static quantisation (QDQ, int8 weights per channel, uint8 activations) of the
    model at `fp32_onnx` into `out_onnx`."""
    import onnxruntime as ort  # noqa: PLC0415
    from onnxruntime import quantization as q  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    name = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    prepared = out_onnx.with_name("prepared.onnx")
    quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
    try:
        q.quantize_static(
            str(prepared),
            str(out_onnx),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)
