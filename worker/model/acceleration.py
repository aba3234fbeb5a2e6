"""How a runtime uses the machine's accelerator, from the settings MODEL_PRECISION, MODEL_XLA and
ONNX_PROVIDERS (`auto` by default each).

- Keras on TensorFlow: `precision` float16 runs the network in mixed precision (float16 compute,
  float32 weights and outputs: Keras' `mixed_float16` policy) — `auto` means float16 when a GPU
  is present, float32 otherwise; `xla` on/off sets the model's `jit_compile` — `auto` leaves it to
  Keras, which compiles with XLA when a GPU is present and not on a CPU.
- ONNX Runtime: the execution providers in order of preference — `auto` means TensorRT, then CUDA,
  among those the installed onnxruntime offers, then the CPU; a list (`tensorrt,cuda,cpu`) is
  taken as given and refused (ConfigError, naming what is offered) when one is not available.

OpenVINO's INT8 and fp32 exports run on the CPU plugin; its GPU plugin is Intel's, not NVIDIA's.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.errors import ConfigError

AUTO = "auto"
PRECISIONS = (AUTO, "float32", "float16")
XLA_CHOICES = (AUTO, "on", "off")
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class Acceleration:
    """The accelerator settings as given (`auto` or a choice); resolved per machine at load."""

    precision: str = AUTO
    xla: str = AUTO
    onnx_providers: str = AUTO

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"MODEL_PRECISION: expected one of {', '.join(PRECISIONS)}, received {self.precision!r}"
            )
        if self.xla not in XLA_CHOICES:
            raise ConfigError(f"MODEL_XLA: expected one of {', '.join(XLA_CHOICES)}, received {self.xla!r}")
        if self.onnx_providers != AUTO:
            parse_providers(self.onnx_providers)

    def tensorflow_precision(self, gpu: bool) -> str:
        """float16 or float32 for Keras on this machine."""
        if self.precision == AUTO:
            return "float16" if gpu else "float32"
        return self.precision

    def jit_compile(self) -> bool | None:
        """The model's `jit_compile`: True/False, or None to leave Keras' own choice."""
        return None if self.xla == AUTO else self.xla == "on"

    def providers(self, available: list[str]) -> list[str]:
        """ONNX Runtime's providers for a session, given what `onnxruntime.get_available_providers()`
        lists; ConfigError when a provider asked for by name is not among them."""
        if self.onnx_providers == AUTO:
            preferred = [PROVIDERS["tensorrt"], PROVIDERS["cuda"]]
            return [p for p in preferred if p in available] + [PROVIDERS["cpu"]]
        chosen = [PROVIDERS[name] for name in parse_providers(self.onnx_providers)]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise ConfigError(
                f"ONNX_PROVIDERS: {', '.join(missing)} not offered by the installed onnxruntime (it offers "
                f"{', '.join(available)}); the GPU providers need the onnxruntime-gpu package and its CUDA "
                "libraries, or choose ONNX_PROVIDERS=auto"
            )
        return chosen


def parse_providers(text: str) -> list[str]:
    """`tensorrt,cuda,cpu` → the names, in order; ConfigError for an empty list, a repeat or an
    unknown name."""
    names = [name.strip().lower() for name in text.split(",")]
    unknown = [name for name in names if name not in PROVIDERS]
    if not names or unknown or len(set(names)) != len(names):
        raise ConfigError(
            f"ONNX_PROVIDERS: expected auto or a comma-separated list of {', '.join(PROVIDERS)} without "
            f"repeats, received {text!r}"
        )
    return names
