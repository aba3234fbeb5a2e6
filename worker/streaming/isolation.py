"""When a delivery step may blame a frame: never for a fault that every frame meets.

A step sets a frame aside (dead-letters it) when the frame fails alone with a data error
(`worker.core.failures.DATA`). A fault of the set-up or of this code can look the same frame
after frame — a NOT NULL column added while the worker runs, a topic whose size limit was lowered,
a bug every frame triggers — and would then dead-letter the whole stream. `IsolationGuard` keeps,
per step, the run of frames set aside since that step last delivered something: once the last
`limit - 1` frames set aside all failed with the same signature (`failures.signature`: exception
type and SQLSTATE) and the next one fails alike, the fault is everyone's. `judge` then raises
`SystemicFaultError` instead of letting the step blame the frames: the batch is retried with
backoff, `/readyz` says why, nothing more is dead-lettered. A batch in which the step delivered
some frames is evidence enough that the others are at fault. At most `limit - 1` frames go to the
dead-letter topic before a systemic fault is recognised (with their bytes: `steel-worker dlq
replay` sends them back once it is mended).

The ledger asks the database first (`StorageWriter.check_writable`, a synthetic frame written and
rolled back), which catches such faults before any frame is blamed; the guard is the rule for
steps that have no such test (publishing) and a second line behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.core.errors import SystemicFaultError
from worker.core.failures import describe, signature
from worker.core.refusals import shown


class IsolationGuard:
    """Per step: the signature and length of the run of frames set aside with nothing delivered
    in between. Used by the loop's thread only."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected an integer >= 1, received {limit}")
        self.limit = limit
        self._runs: dict[str, tuple[str, int]] = {}

    def judge(self, step: str, errors: Sequence[BaseException], *, delivered: bool) -> None:
        """Before `step` sets aside the frames of one batch that failed alone with `errors` (in
        order); `delivered`: the step delivered other frames of the same batch.

        Frames that failed beside frames that went through are their own fault: the run starts
        again. Otherwise each failure extends the run (or starts a new one when its signature
        differs); SystemicFaultError — and nothing recorded, so none of these frames is set
        aside — when the run would reach `limit`.
        """
        if delivered:
            self._runs.pop(step, None)
            return
        previous, count = self._runs.get(step, ("", 0))
        for error in errors:
            sign = signature(error)
            count = count + 1 if previous == sign else 1
            previous = sign
            if count >= self.limit:
                raise SystemicFaultError(
                    f"{step}: the last {count} frames failed alike ({sign}) with nothing delivered in"
                    f" between; not a frame's fault: {shown(describe(error))}"
                ) from error
        if errors:
            self._runs[step] = (previous, count)

    def delivered(self, step: str) -> None:
        """`step` delivered frames: a frame that fails alone after this starts a new run."""
        self._runs.pop(step, None)
