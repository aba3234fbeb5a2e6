"""`steel-worker export`: write the artefact's network for another runtime (OpenVINO, ONNX Runtime),
fp32 or INT8.

The export lands inside the artefact (`openvino/`, `openvino-int8/`, `onnx/`, `onnx-int8/`),
recorded in model.json with its sha256 and the weights it was made from (`worker.model.runtimes`);
`predict --runtime` and the worker's `MODEL_RUNTIME` load it and refuse it when it was changed or
belongs to other weights. On the model's test split the export's scores are compared with Keras'
(`agreement.json`, printed per class); an INT8 export is loaded only when that agreement is inside
the limits. Without a split (an fp32 export of an artefact not made by `train`) the command runs
random tiles through both and prints the largest score difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError, ModelError
from worker.model.agreement import AGREEMENT_FILE
from worker.model.runtimes import EXPORTS

EPILOG = """\
examples:
  steel-worker export --model models/neu --runtime openvino
      writes models/neu/openvino/model.xml and model.bin (fp32), records them in model.json and
      prints how the export's scores compare with Keras' on the model's test split
  steel-worker export --model models/neu --runtime onnxruntime
      writes models/neu/onnx/model.onnx (fp32, through tf2onnx), the same record and comparison
  steel-worker export --model models/neu --runtime openvino --int8
      INT8 by NNCF, calibrated on the model's validation split (at most 300 tiles), into
      models/neu/openvino-int8/ with agreement.json; MODEL_RUNTIME=openvino-int8 runs it
  steel-worker export --model models/neu --runtime onnxruntime --int8 --calibration tiles/plant
      ONNX Runtime static quantisation calibrated on every tile of tiles/plant
  MODEL_RUNTIME=auto steel-worker run ...      the worker on the fastest export that loads
  steel-worker predict --model models/neu --runtime openvino-int8 frame.png

An INT8 export is loaded only when its agreement with Keras on the test split is inside the limits
(MODEL_AGREEMENT_MAX_F1_DROP 0.01 of F1 per class, MODEL_AGREEMENT_MAX_FLIPS 0.5 % of tiles
flipped per class) at the model's current thresholds. The runtimes are extras: pip install
'steel-worker[openvino]' or 'steel-worker[onnx]'. Export again after the weights or thresholds
change; the loader refuses an export of other weights.
"""

CHECK_TILES = 64
INT8_SUFFIX = "-int8"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the model for another inference runtime (OpenVINO, ONNX Runtime) into its artefact",
        description="Convert the artefact's network for an inference runtime and record it in model.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model artefact directory")
    p.add_argument(
        "--runtime",
        choices=sorted(EXPORTS),
        required=True,
        help="the runtime to export for (openvino-int8 is openvino with --int8)",
    )
    p.add_argument("--int8", action="store_true", help="quantise to INT8 after training (post-training)")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="TILESET",
        help="with --int8: calibrate on every tile of this tile set (default: the model's validation split)",
    )
    p.add_argument(
        "--agreement",
        type=Path,
        metavar="TILESET",
        help="measure the agreement with Keras on every tile of this tile set"
        " (default: the model's test split)",
    )
    p.set_defaults(func=run)


def export_runtime(runtime: str, int8: bool) -> str:
    """The runtime name `--runtime` and `--int8` ask for (EXPORTS' key)."""
    if int8 and not runtime.endswith(INT8_SUFFIX):
        return runtime + INT8_SUFFIX
    return runtime


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from worker.model.runtimes import export_model, load_runtime_classifier  # noqa: PLC0415

    runtime = export_runtime(args.runtime, args.int8)
    if args.calibration is not None and not runtime.endswith(INT8_SUFFIX):
        raise ConfigError("--calibration: only with --int8 (an fp32 export needs no calibration)")
    record = export_model(args.model, runtime, args.calibration, args.agreement)
    files = ", ".join(sorted(record["files"]))
    print(
        f"exported {args.model} (version {record['weights_version'][:12]}) for {runtime} "
        f"{record['runtime_version']}, {record['precision']}: {files}"
    )
    if "agreement" not in record:
        reference = load_runtime_classifier(args.model, "tensorflow")
        exported = load_runtime_classifier(args.model, runtime)
        size = reference.input_size
        tiles = np.random.default_rng(0).integers(0, 256, (CHECK_TILES, size, size), dtype=np.uint8)
        difference = float(np.max(np.abs(reference.predict(tiles) - exported.predict(tiles))))
        print(
            f"no test split to compare on; largest score difference on {CHECK_TILES} random tiles: "
            f"{difference:.2e}"
        )
        return 0
    _print_agreement(Path(args.model) / EXPORTS[runtime].folder / AGREEMENT_FILE)
    if record["precision"] == "int8":
        try:
            load_runtime_classifier(args.model, runtime)
        except ModelError as exc:
            print(f"refused at load: {exc}", file=sys.stderr)
            return 1
        print(f"inside the agreement limits: MODEL_RUNTIME={runtime} will load it")
    return 0


def _print_agreement(path: Path) -> None:
    report = json.loads(path.read_text(encoding="utf-8"))
    source = report["source"]
    print(
        f"agreement with Keras on {report['tiles']} tiles ({source['part']} of {source['tile_set']}), "
        f"largest |score difference| {report['max_abs_difference']:.2e}, {report['tiles_with_a_flip']} "
        f"tiles with a decision flipped: {path}"
    )
    heads = ("threshold", "max |Δ|", "mean |Δ|", "flips", "F1 Keras", "F1 export")
    print(f"  {'class':<16}" + "".join(f" {h:>9}" for h in heads))
    for name, c in report["classes"].items():
        figures = (
            f"{c['threshold']:.3f}",
            f"{c['max_abs_difference']:.2e}",
            f"{c['mean_abs_difference']:.2e}",
            str(c["flips"]),
            f"{c['f1_reference']:.4f}",
            f"{c['f1_export']:.4f}",
        )
        print(f"  {name:<16}" + "".join(f" {f:>9}" for f in figures))
