"""TensorFlow's native start-up lines are kept off stderr; everything else passes, in order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.core.native_logs import is_noise

ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN_INFO = (
    b"I0000 00:00:1796072266.930225   14175 port.cc:153] oneDNN custom operations are on. You may see"
)
CUDA_WARNING = b"W1130 20:57:46.123456   14175 cuda_executor.cc:1024] could not open file"
NATIVE_ERROR = b"E0000 00:00:1796072266.930225   14175 cuda_dnn.cc:8310] Unable to register cuDNN factory"


DT_BOOL = (
    b"E0000 00:00:1796072339.867637   14175 util.cc:131] oneDNN supports DT_BOOL only on platforms with"
    b" AVX-512. Falling back to the default Eigen-based implementation if present."
)


CPU_FEATURES_TAIL = (
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the"
    b" appropriate compiler flags."
)


@pytest.mark.parametrize("line", [ABSL_NOTICE, ONEDNN_INFO, CUDA_WARNING, DT_BOOL, CPU_FEATURES_TAIL])
def test_native_info_and_warning_lines_are_noise(line: bytes) -> None:
    assert is_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        NATIVE_ERROR,
        b"Traceback (most recent call last):",
        b"Warning: something the user must read",
        b"I0000 is not a log line without the rest",
        b"WARNING: disk almost full",
        b"",
    ],
)
def test_errors_and_ordinary_lines_are_kept(line: bytes) -> None:
    assert not is_noise(line)


CHILD = r"""
import os, sys, subprocess
from worker.core.native_logs import filtered_stderr
with filtered_stderr():
    os.write(2, b"first\n")
    os.write(2, NOTICE + b"\n" + INFO + b"\n")
    sys.stderr.write("from python\n")
    child = "import os; os.write(2, INFO + b'\\n' + b'from a child\\n')".replace("INFO", repr(INFO))
    subprocess.run([sys.executable, "-c", child])
    os.write(2, ERROR + b"\n")
    os.write(2, b"\rprogress 50%")
    os.write(2, b"\rprogress 100%\n")
    os.write(2, b"no newline at the end")
sys.stderr.write("\nafter the block\n")
"""


def _run(env_extra: dict[str, str]) -> bytes:
    code = f"NOTICE={ABSL_NOTICE!r}\nINFO={ONEDNN_INFO!r}\nERROR={NATIVE_ERROR!r}\n" + CHILD
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env).stderr


def test_filter_drops_native_noise_keeps_the_rest_in_order_children_included() -> None:
    err = _run({"STEEL_WORKER_NATIVE_LOGS": ""})
    assert err == (
        b"first\nfrom python\nfrom a child\n" + NATIVE_ERROR + b"\n\rprogress 50%\rprogress 100%\n"
        b"no newline at the end\nafter the block\n"
    )


def test_filter_can_be_turned_off() -> None:
    err = _run({"STEEL_WORKER_NATIVE_LOGS": "1"})
    assert ABSL_NOTICE in err and ONEDNN_INFO in err


def test_cli_import_of_tensorflow_prints_no_native_lines() -> None:
    """The real thing: `steel-worker` loading TensorFlow (predict --help does not; this does)."""
    code = (
        "import sys\nfrom worker.cli import main\n"
        "import worker.model.predict_command as p\n"
        "p.run = lambda args: __import__('tensorflow') and 0\n"
        "sys.exit(main(['predict', '--model', 'x', 'y.png']))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    assert b"absl::InitializeLog" not in result.stderr
    assert b"] oneDNN" not in result.stderr
