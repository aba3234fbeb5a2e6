"""Decoding off the loop's thread, in worker processes, each frame within a deadline.

`Decoder.decode_all(messages, keep_alive)` returns one outcome per message (`DecodedFrame` or
`Rejected`), in order. Each message is decoded by `decode.decode_message` in one of
DECODE_WORKERS processes, one message per process at a time.

Guarantees:
- A message gets its outcome at most DECODE_TIMEOUT_MS after its process started on it: a decode
  past its deadline is refused (`decode-timeout`) and its process killed at once, so the CPU
  comes back (a thread could not be stopped) and the next frames are not delayed by it. No
  image, however built, holds the line longer than that.
- A process that dies while decoding (a crash in libjpeg or libpng, the kernel's OOM killer)
  blames only the message it was decoding: the message is tried once more in a new process, and
  refused (`decoder-error`) if it kills that one too. The worker itself never crashes on an image.
- While it waits, `keep_alive()` is called at least every `keep_alive_s` (the loop polls Kafka
  with its partitions paused there, so that the group keeps the worker however long a poll's
  frames take).
- A frame whose message key is not its strip id is decoded all the same, and reported:
  `on_key_mismatch()` is called (the worker counts it) and a warning is logged, once per strip id
  among the last KEY_MISMATCH_MEMO reported (a producer without keys would log every frame).
- The processes are made by a fork server (`multiprocessing`'s "forkserver" method), never forked
  from the worker, whose threads (TensorFlow, kafka-python) would not survive a fork; they import
  only the decoder. `close()` ends them; they also end when the worker dies (their pipe closes).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import structlog

from worker.core import contracts
from worker.core.records import DecodedFrame, FrameMeta
from worker.core.refusals import DECODE, DECODE_TIMEOUT, DECODER_ERROR, shown
from worker.streaming.decode import DecodeLimits, InboundMessage, Rejected, decode_message
from worker.streaming.observability import configure_logging
from worker.streaming.validation import key_mismatch, parse_frame_meta

log = structlog.get_logger("worker.streaming")

#: DECODE_TIMEOUT_MS's default: a 40-megapixel JPEG decodes in about a second on a slow core.
DEFAULT_TIMEOUT_S = 5.0
#: How often `keep_alive` is called while a decode takes long.
KEEP_ALIVE_S = 1.0
#: Strip ids whose key mismatch was logged, remembered (a mismatch is logged once per strip id).
KEY_MISMATCH_MEMO = 1024
_CLOSE_WAIT_S = 2.0

Outcome = DecodedFrame | Rejected


def _serve(connection: Connection, limits: DecodeLimits, log_format: str, log_level: str) -> None:
    """A decoder process: decode each message received, send back its outcome, until None or EOF.
    It logs like the worker (the decoder's own lines: a claim check refused, an unexpected error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the worker stops us
    configure_logging(log_format, log_level)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        connection.send(decode_message(message, limits))


@dataclass
class _Slot:
    """One decoder process and the message it is decoding (an index into the call's messages)."""

    process: BaseProcess
    connection: Connection
    task: int | None = None
    started: float = 0.0


class Decoder:
    """`workers` decoder processes (see the module doc). Use as a context manager, or `start()` and
    `close()`; `decode_all` starts them when needed. Not thread-safe: the loop's thread only."""

    def __init__(
        self,
        limits: DecodeLimits,
        workers: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        keep_alive_s: float = KEEP_ALIVE_S,
        log_format: str = "auto",
        log_level: str = "info",
        on_key_mismatch: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1 or timeout_s <= 0:
            raise ValueError(f"workers >= 1 and timeout_s > 0 expected, received {workers} and {timeout_s}")
        self.limits = limits
        self.workers = workers
        self.timeout_s = timeout_s
        self.keep_alive_s = keep_alive_s
        self._logging = (log_format, log_level)
        self._on_key_mismatch = on_key_mismatch or (lambda: None)
        self._mismatched: OrderedDict[str, None] = OrderedDict()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["worker.streaming.decode_pool"])
        self._slots: list[_Slot] = []

    # --- processes -------------------------------------------------------------------------------

    def start(self) -> Decoder:
        """Start the processes now (start-up fails here rather than on the first frame)."""
        while len(self._slots) < self.workers:
            self._slots.append(self._spawn())
        return self

    def _spawn(self) -> _Slot:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(theirs, self.limits, *self._logging),
            name="steel-worker-decoder",
            daemon=True,
        )
        process.start()
        theirs.close()
        return _Slot(process, ours)

    def _end(self, slot: _Slot) -> int | None:
        """Kill `slot`'s process and return its exit code."""
        slot.connection.close()
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(_CLOSE_WAIT_S)
        return slot.process.exitcode

    def close(self) -> None:
        for slot in self._slots:
            with contextlib.suppress(OSError, ValueError):  # already gone
                slot.connection.send(None)
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            self._end(slot)
        self._slots = []

    def __enter__(self) -> Decoder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- decoding --------------------------------------------------------------------------------

    def decode_all(
        self, messages: Sequence[InboundMessage], keep_alive: Callable[[], None] | None = None
    ) -> list[Outcome]:
        """One outcome per message, in order (see the module doc for the bounds)."""
        if not messages:
            return []
        self.start()
        outcomes: list[Outcome | None] = [None] * len(messages)
        waiting = deque(range(len(messages)))
        crashed: set[int] = set()  # messages whose process died once already
        last_alive = time.monotonic()
        while waiting or any(slot.task is not None for slot in self._slots):
            for slot in self._slots:
                if slot.task is None and waiting:
                    self._assign(slot, waiting.popleft(), messages)
            busy = [slot for slot in self._slots if slot.task is not None]
            now = time.monotonic()
            deadline = min(slot.started for slot in busy) + self.timeout_s
            ready = wait([slot.connection for slot in busy], max(0.0, min(deadline - now, self.keep_alive_s)))
            for slot in busy:
                if slot.connection in ready:
                    self._receive(slot, messages, outcomes, waiting, crashed)
            now = time.monotonic()
            for slot in busy:
                if slot.task is not None and now - slot.started >= self.timeout_s:
                    self._time_out(slot, messages, outcomes)
            if keep_alive is not None and now - last_alive >= self.keep_alive_s:
                keep_alive()
                last_alive = time.monotonic()
        decoded = [outcome for outcome in outcomes if outcome is not None]
        for message, outcome in zip(messages, decoded, strict=True):
            if isinstance(outcome, DecodedFrame):
                self._check_key(message, outcome.meta)
        return decoded

    def _check_key(self, message: InboundMessage, meta: FrameMeta) -> None:
        detail = key_mismatch(message.key, meta)
        if detail is None:
            return
        self._on_key_mismatch()
        if meta.strip_id in self._mismatched:
            self._mismatched.move_to_end(meta.strip_id)
            return
        self._mismatched[meta.strip_id] = None
        while len(self._mismatched) > KEY_MISMATCH_MEMO:
            self._mismatched.popitem(last=False)
        log.warning(
            "frame.key_mismatch",
            source=str(message.source),
            frame_id=shown(meta.frame_id, 200),
            detail=detail,
            note="frame kept; the strip's frames may be spread over partitions and workers: fix the"
            " producer's key (logged once per strip, counted every time)",
        )

    def _assign(self, slot: _Slot, task: int, messages: Sequence[InboundMessage]) -> None:
        try:
            slot.connection.send(messages[task])
        except (OSError, ValueError):  # the process died while idle: a new one takes the message
            self._replace(slot)
            slot.connection.send(messages[task])
        slot.task, slot.started = task, time.monotonic()

    def _receive(
        self,
        slot: _Slot,
        messages: Sequence[InboundMessage],
        outcomes: list[Outcome | None],
        waiting: deque[int],
        crashed: set[int],
    ) -> None:
        task = slot.task
        assert task is not None
        try:
            outcome = slot.connection.recv()
        except (EOFError, OSError):  # the process died decoding this message
            code = self._replace(slot)
            message = messages[task]
            if task in crashed:
                detail = f"the decoder process died decoding this image, twice (exit code {code})"
                log.error("decoder.crashed", source=str(message.source), exit_code=code, note="refused")
                outcomes[task] = Rejected(DECODER_ERROR, DECODE, detail, message.source, _meta(message))
            else:
                log.warning("decoder.crashed", source=str(message.source), exit_code=code, note="tried again")
                crashed.add(task)
                waiting.appendleft(task)
            return
        slot.task = None
        outcomes[task] = outcome

    def _time_out(
        self, slot: _Slot, messages: Sequence[InboundMessage], outcomes: list[Outcome | None]
    ) -> None:
        task = slot.task
        assert task is not None
        message = messages[task]
        seconds = time.monotonic() - slot.started
        self._replace(slot)
        log.warning("decoder.timed_out", source=str(message.source), seconds=round(seconds, 2))
        detail = (
            f"decoding took over {self.timeout_s:g} s (DECODE_TIMEOUT_MS); stopped after {seconds:.1f} s —"
            " an image built to be slow to decode, or a limit set too low for the camera's frames"
        )
        outcomes[task] = Rejected(DECODE_TIMEOUT, DECODE, detail, message.source, _meta(message))

    def _replace(self, slot: _Slot) -> int | None:
        """End `slot`'s process and put a new one in its place; the old one's exit code."""
        code = self._end(slot)
        fresh = self._spawn()
        slot.process, slot.connection, slot.task = fresh.process, fresh.connection, None
        return code


def _meta(message: InboundMessage) -> FrameMeta | None:
    """The frame's metadata for the refusal's log line and dead letter, when it is valid (read
    again here: the process that read it is gone)."""
    try:
        return parse_frame_meta(message.header(contracts.FRAME_META_HEADER))
    except Exception:  # an invalid header: the refusal carries no metadata
        return None
