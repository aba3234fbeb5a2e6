"""`steel-worker export`: write the artefact's network for another inference runtime (OpenVINO).

The export lands inside the artefact (`openvino/model.xml`, `model.bin`), recorded in model.json
with its sha256 and the weights it was made from (`worker.model.runtimes`); `predict --runtime
openvino` and the worker's `MODEL_RUNTIME=openvino` load it and refuse it when it was changed or
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
      runs 64 random tiles through Keras and OpenVINO and prints the largest score difference
  MODEL_RUNTIME=openvino steel-worker run ...      the worker on the export
  steel-worker predict --model models/neu --runtime openvino frame.png

OpenVINO is an extra: pip install 'steel-worker[openvino]'. Export again after the weights change
(a retrained model); the loader refuses an export of other weights.
"""

CHECK_TILES = 64


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the model for another inference runtime (OpenVINO) into its artefact",
        description="Convert the artefact's network for an inference runtime and record it in model.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model artefact directory")
    p.add_argument(
        "--runtime", choices=("openvino",), required=True, help="the runtime to export for (openvino)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from worker.model.runtimes import export_openvino, load_runtime_classifier  # noqa: PLC0415

    record = export_openvino(args.model)
    reference = load_runtime_classifier(args.model, "tensorflow")
    exported = load_runtime_classifier(args.model, args.runtime)
    size = reference.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (CHECK_TILES, size, size), dtype=np.uint8)
    difference = float(np.max(np.abs(reference.predict(tiles) - exported.predict(tiles))))
    files = ", ".join(sorted(record["files"]))
    print(
        f"exported {args.model} (version {record['weights_version'][:12]}) for {args.runtime} "
        f"{record['openvino_version']}, {record['precision']}: {files}; largest score difference "
        f"from Keras on {CHECK_TILES} random tiles: {difference:.2e}"
    )
    return 0
