"""GPU readiness on any machine: the accelerator settings, ONNX Runtime's provider choice, and Keras'
mixed precision and XLA on a real model (run here on the CPU, where they must still be right)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from frames import grey_image

from worker.core.errors import ConfigError
from worker.model import runtimes
from worker.model.acceleration import Acceleration, parse_providers
from worker.model.artefact import load_classifier
from worker.model.runtimes import load_runtime_classifier
from worker.streaming.settings import load_settings

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        ([CPU], [CPU]),
        ([CUDA, CPU], [CUDA, CPU]),
        ([TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        (["AzureExecutionProvider", CPU], [CPU]),
    ],
)
def test_auto_prefers_tensorrt_then_cuda_then_the_cpu(available: list[str], expected: list[str]) -> None:
    assert Acceleration().providers(available) == expected


def test_named_providers_are_taken_in_order_or_refused_with_what_is_offered() -> None:
    assert Acceleration(onnx_providers="cuda,cpu").providers([TRT, CUDA, CPU]) == [CUDA, CPU]
    assert Acceleration(onnx_providers="cpu").providers([CUDA, CPU]) == [CPU]
    with pytest.raises(
        ConfigError,
        match=r"CUDAExecutionProvider not offered .* \(it offers CPUExecutionProvider\).*onnxruntime-gpu",
    ):
        Acceleration(onnx_providers="cuda,cpu").providers([CPU])


@pytest.mark.parametrize("text", ["", "gpu", "cuda,cuda", "cuda,,cpu", "cpu;cuda"])
def test_a_bad_provider_list_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="ONNX_PROVIDERS: expected auto or a comma-separated list"):
        parse_providers(text)
    with pytest.raises(ConfigError):
        Acceleration(onnx_providers=text)


def test_precision_and_xla_follow_the_gpu_unless_given() -> None:
    assert Acceleration().tensorflow_precision(gpu=True) == "float16"
    assert Acceleration().tensorflow_precision(gpu=False) == "float32"
    assert Acceleration(precision="float32").tensorflow_precision(gpu=True) == "float32"
    assert Acceleration(precision="float16").tensorflow_precision(gpu=False) == "float16"
    assert [Acceleration(xla=x).jit_compile() for x in ("auto", "on", "off")] == [None, True, False]
    with pytest.raises(ConfigError, match="MODEL_PRECISION"):
        Acceleration(precision="bfloat16")
    with pytest.raises(ConfigError, match="MODEL_XLA"):
        Acceleration(xla="yes")


def test_the_settings_carry_the_accelerator_choices() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db", "MODEL_PATH": "/m"}
    defaults = load_settings(env, {})
    assert (defaults.model_precision, defaults.model_xla, defaults.onnx_providers) == ("auto", "auto", "auto")
    given = load_settings(
        {**env, "MODEL_PRECISION": "float16", "MODEL_XLA": "off", "ONNX_PROVIDERS": "CUDA,cpu"}, {}
    )
    assert (given.model_precision, given.model_xla, given.onnx_providers) == ("float16", "off", "cuda,cpu")
    for variable, bad in (("MODEL_PRECISION", "half"), ("MODEL_XLA", "1"), ("ONNX_PROVIDERS", "rocm")):
        with pytest.raises(ConfigError, match=variable):
            load_settings({**env, variable: bad}, {})


def _tiles() -> np.ndarray:
    return np.stack([grey_image(256, 256, seed=300 + i) for i in range(6)])


def test_mixed_precision_computes_in_float16_and_scores_like_float32(model_dir: Path) -> None:
    full = load_classifier(model_dir)
    half = load_classifier(model_dir, precision="float16")
    assert (full.precision, half.precision) == ("fp32", "fp16")
    convolutions = [layer for layer in half.model.layers if layer.__class__.__name__ == "Conv2D"]
    assert convolutions and all(layer.compute_dtype == "float16" for layer in convolutions)
    assert all(w.dtype == "float32" for w in half.model.weights)  # weights kept in float32
    assert load_classifier(model_dir).model.layers[1].compute_dtype == "float32"  # the policy was restored
    ours, theirs = half.predict(_tiles()), full.predict(_tiles())
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, atol=0.02)


def test_xla_is_set_on_the_model_and_keeps_the_scores(model_dir: Path) -> None:
    compiled = load_classifier(model_dir, jit_compile=True)
    plain = load_classifier(model_dir, jit_compile=False)
    assert (compiled.model.jit_compile, plain.model.jit_compile) == (True, False)
    np.testing.assert_allclose(compiled.predict(_tiles()), plain.predict(_tiles()), atol=1e-4)


def test_on_a_gpu_auto_loads_keras_in_float16(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "gpu_present", lambda: True)
    assert load_runtime_classifier(model_dir, "tensorflow").precision == "fp16"
    assert (
        load_runtime_classifier(
            model_dir, "tensorflow", acceleration=Acceleration(precision="float32")
        ).precision
        == "fp32"
    )


def test_the_gpu_script_says_clearly_when_there_is_no_gpu(tmp_path: Path) -> None:
    """bench/gpu.sh on a machine without nvidia-smi (PATH without it) exits 2 with what to do."""
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the script would run the benchmark")
    done = subprocess.run(
        ["bash", "bench/gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr and "make bench" in done.stderr
