#!/usr/bin/env bash
# The runtimes on an NVIDIA GPU, in one run of under five minutes: Keras on TensorFlow in float32
# and in mixed float16 with XLA, ONNX Runtime on the CUDA/TensorRT providers it offers, each bare
# and through the worker end to end, and the latency at 50 and 80 % load, printed as one table
# (bench/runtimes.py). On a machine without a GPU it says so and exits 2: run `make bench` there.
#
#   bash bench/gpu.sh                     # 1400 tiles at 256 px, BATCH_TILES 128
#   bash bench/gpu.sh --tiles 2800        # more (any bench/runtimes.py option)
#   PYTHON=/path/to/python bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi finds none); on a CPU, run make bench" >&2
    exit 2
fi
PYTHON=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" - <<'PY'
import importlib.util

import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}: {len(gpus)} GPU(s) visible")
if not gpus:
    raise SystemExit("bench/gpu.sh: TensorFlow sees no GPU (a CPU-only tensorflow wheel?); install tensorflow[and-cuda]")
if importlib.util.find_spec("onnxruntime"):
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}")
PY
exec "$PYTHON" bench/runtimes.py --runtimes tensorflow,onnxruntime --tensorflow float32,float16+xla \
    --tiles 1400 --batch-tiles 128 --latency-frames 60 "$@"
