"""Keep TensorFlow's native start-up chatter off the terminal, and nothing else.

TensorFlow's C++ libraries write lines such as "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR" and "I0000 00:00:… port.cc:153] oneDNN custom
operations are on…" straight to file descriptor 2 while they load, before `TF_CPP_MIN_LOG_LEVEL`
applies, so no Python setting can stop them. `filtered_stderr()` points descriptor 2 at a pipe for
the duration of a command; a thread copies every line to the real stderr except absl's INFO and
WARNING lines (`I…`/`W…` + date + thread + `file.cc:line]`), the pre-InitializeLog notice and
oneDNN's "DT_BOOL only on AVX-512" line. Other errors (`E…`, `F…`), Python tracebacks and
everything else pass through unchanged and in order.
Child processes inherit the pipe, so the demo's worker processes are filtered too.

`STEEL_WORKER_NATIVE_LOGS=1` turns the filter off (to see what TensorFlow says while debugging).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

SHOW_ENV = "STEEL_WORKER_NATIVE_LOGS"

#: absl/glog line prefix of an INFO or WARNING message: severity, MMDD, time, thread id, file:line];
#: the pre-InitializeLog notice; the second line of the CPU-feature notice; and the one ERROR-level
#: line TensorFlow prints on every CPU without AVX-512 when oneDNN is on, which only says it uses
#: its default kernels for boolean tensors.
NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    rb"|E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms with AVX-512"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.)"
)


def is_noise(line: bytes) -> bool:
    """True for a native INFO/WARNING line of TensorFlow's start-up; errors are never noise."""
    return NOISE.match(line) is not None


def _copy_lines(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if pending[:1] not in (b"", b"I", b"W"):  # cannot become a noise line: pass it on now, so
                kept, pending = kept + pending, b""  # progress bars redrawn with '\r' stay live
            if kept:
                os.write(write_fd, kept)
        if pending and not is_noise(pending):
            os.write(write_fd, pending)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Filter descriptor 2 as the module says, until the block ends; a no-op when turned off or when
    stderr has no descriptor (embedded interpreters, some test runners)."""
    if os.environ.get(SHOW_ENV, "") not in ("", "0"):
        yield
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    real = os.dup(stderr_fd)
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    copier = threading.Thread(target=_copy_lines, args=(read_fd, real), name="stderr-filter", daemon=True)
    copier.start()
    os.dup2(write_fd, stderr_fd)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, stderr_fd)  # closes the pipe's last write end held by this process
        copier.join(timeout=2.0)
        if not copier.is_alive():  # else a child still holds the pipe: the copier keeps `real` open
            os.close(real)
