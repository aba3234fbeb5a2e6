"""`steel-worker export`: write the artefact's network for another runtime (OpenVINO, ONNX Runtime).

The export lands inside the artefact (`openvino/model.xml` + `model.bin`, or `onnx/model.onnx`),
recorded in model.json with its sha256 and the weights it was made from (`worker.model.runtimes`);
`predict --runtime` and the worker's `MODEL_RUNTIME` load it and refuse it when it was changed or
belongs to other weights. After the export the command runs the same random tiles through both
runtimes and prints the largest score difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  steel-worker export --model models/neu --runtime openvino
      writes models/neu/openvino/model.xml and model.bin (fp32), records them in model.json, then
      runs 64 random tiles through Keras and the export and prints the largest score difference
  steel-worker export --model models/neu --runtime onnxruntime
      writes models/neu/onnx/model.onnx (fp32, through tf2onnx), the same record and check
  MODEL_RUNTIME=openvino steel-worker run ...      the worker on the export
  steel-worker predict --model models/neu --runtime onnxruntime frame.png

The runtimes are extras: pip install 'steel-worker[openvino]' or 'steel-worker[onnx]'. Export again
after the weights change (a retrained model); the loader refuses an export of other weights.
"""

CHECK_TILES = 64


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
        choices=("openvino", "onnxruntime"),
        required=True,
        help="the runtime to export for",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from worker.model.runtimes import export_model, load_runtime_classifier  # noqa: PLC0415

    record = export_model(args.model, args.runtime)
    reference = load_runtime_classifier(args.model, "tensorflow")
    exported = load_runtime_classifier(args.model, args.runtime)
    size = reference.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (CHECK_TILES, size, size), dtype=np.uint8)
    difference = float(np.max(np.abs(reference.predict(tiles) - exported.predict(tiles))))
    files = ", ".join(sorted(record["files"]))
    print(
        f"exported {args.model} (version {record['weights_version'][:12]}) for {args.runtime} "
        f"{record['runtime_version']}, {record['precision']}: {files}; largest score difference "
        f"from Keras on {CHECK_TILES} random tiles: {difference:.2e}"
    )
    return 0
