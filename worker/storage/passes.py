"""Strip passes: which pass of its strip a frame shows, decided once, when the frame is stored.

A strip id may be rolled and inspected more than once; each time is a *pass* with positions of its
own (from the strip head again). A frame whose frame-meta carries `pass_id` is of that pass (the
camera's word). Otherwise the writer infers a pass number ('1', '2', …) from the strip's frames
already stored without `pass_id` (`assign_passes`, inside the write transaction, with the strip's
lock row held, so two writers never infer from the same state), by `infer_pass`:

With R = PASS_RESTART_M, for a frame f at position x, ordered among the strip's frames by capture
time (then frame id):

1. f *fits* a pass p when p's frame captured last before f, or first after f, lies within R of x
   (or the frame next to that one, when that one lies more than R from it: one wrong position does
   not hide its pass) — counting a side only when fewer than NEIGHBOURS frames of other passes were
   captured between that frame and f (a strip is in one pass at a time: a pass separated from f by
   another pass's frames is not the one f continues). Of the passes f fits, it joins the one whose
   fitting frame is nearest to f in capture time (ties: the higher pass).
2. Otherwise, with b the strip's frame captured last before f and a the first after f (any pass):
   - x more than R behind b (the positions restart: the strip is rolled again) — f is the late head
     of a's pass when a exists, is of another pass than b and x ≤ a.x + R; else f starts a new
     pass, numbered one more than the strip's highest;
   - else f joins b's pass, or a's when nothing was captured before f, or pass 1 on a new strip.

What it guarantees (tests/test_strip_passes.py): the frames of one pass (positions growing with
capture time) are one pass in whatever order they arrive — step 2 starts a pass only for a frame
more than R behind one captured before it; a strip rolled again is a second pass, also when runs of
either pass arrive late, once the second pass's first frames have arrived more than R behind the
first pass's last two stored frames; one frame with a wrong position (0 in the middle of the strip,
hundreds of metres behind or kilometres ahead) is at most a pass of its own — the frames after it
still fit the pass they continue; the answer is a function of the stored frames and the new one,
not of the clock or of anything in memory.
What it cannot do: see a second pass whose first frames to arrive lie within R of where the first
pass had got to (most of the first pass late, or a strip shorter than R), or keep two wrong frames
in a row from starting a pass. Cameras that know the pass should send `pass_id`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from worker.core.records import FrameResult

#: PASS_RESTART_M's default: a strip is rolled again when its positions go back more than this.
DEFAULT_PASS_RESTART_M = 10.0
#: Frames of each pass compared on each side of a new frame (see rule 1).
NEIGHBOURS = 3
#: The first pass of a strip (alerts of the first pass keep the dedup keys they always had).
FIRST_PASS = "1"

_ADD_LOCKS = sa.text("INSERT INTO alert_strip_locks (strip_id) SELECT unnest(:strips) ON CONFLICT DO NOTHING")
_LOCK = sa.text(
    "SELECT strip_id FROM alert_strip_locks WHERE strip_id = ANY(:strips) ORDER BY strip_id FOR UPDATE"
)

#: For one strip: for each of its inferred passes (a loose index scan over pass ids), the
#: NEIGHBOURS frames captured last before :t0 and first after :t1, and every frame in [:t0, :t1].
_AROUND = sa.text(
    """
    WITH RECURSIVE passes(pass_id) AS (
        SELECT min(pass_id) FROM frames WHERE strip_id = :strip AND pass_inferred
        UNION ALL
        SELECT (SELECT min(f.pass_id) FROM frames AS f
                WHERE f.strip_id = :strip AND f.pass_inferred AND f.pass_id > p.pass_id)
        FROM passes AS p WHERE p.pass_id IS NOT NULL
    )
    SELECT n.frame_id, n.captured_at, n.position_m, n.pass_id
    FROM passes AS p
    CROSS JOIN LATERAL (
        (SELECT frame_id, captured_at, position_m, pass_id FROM frames
         WHERE strip_id = :strip AND pass_id = p.pass_id AND pass_inferred AND captured_at < :t0
         ORDER BY captured_at DESC, frame_id DESC LIMIT :k)
        UNION ALL
        (SELECT frame_id, captured_at, position_m, pass_id FROM frames
         WHERE strip_id = :strip AND pass_id = p.pass_id AND pass_inferred AND captured_at > :t1
         ORDER BY captured_at, frame_id LIMIT :k)
        UNION ALL
        (SELECT frame_id, captured_at, position_m, pass_id FROM frames
         WHERE strip_id = :strip AND pass_id = p.pass_id AND pass_inferred
           AND captured_at BETWEEN :t0 AND :t1)
    ) AS n
    WHERE p.pass_id IS NOT NULL
    """
)


Order = tuple[datetime, str]  # capture time, then frame id


@dataclass(frozen=True)
class Placed:
    """A frame of the strip whose (inferred) pass is known, as the inference sees it."""

    frame_id: str
    captured_at: datetime
    position_m: float
    pass_no: int

    @property
    def order(self) -> Order:
        return (self.captured_at, self.frame_id)


def infer_pass(frame: Placed, known: Iterable[Placed], restart_m: float = DEFAULT_PASS_RESTART_M) -> int:
    """The pass number of `frame` (its `pass_no` is ignored) among the strip's frames `known`
    (the module doc's rule). Instead of every stored frame of the strip, `known` may be any subset
    that holds, for each pass, its NEIGHBOURS frames captured last before and first after `frame`:
    the answer is the same (the writer reads such a subset: `assign_passes`)."""
    me = frame.order
    others = sorted((p for p in known if p.frame_id != frame.frame_id), key=lambda p: p.order)
    if not others:
        return 1
    split = next((i for i, p in enumerate(others) if p.order > me), len(others))
    before, after = others[:split], others[split:]
    x = frame.position_m
    fits: dict[int, float] = {}
    for number in sorted({p.pass_no for p in others}):
        mine_before = [p for p in before if p.pass_no == number]
        mine_after = [p for p in after if p.pass_no == number]
        near: list[Placed] = []
        if mine_before and _apart(before, mine_before[-1].order, me, number) < NEIGHBOURS:
            near += _trusted(mine_before[::-1][:2], restart_m)
        if mine_after and _apart(after, me, mine_after[0].order, number) < NEIGHBOURS:
            near += _trusted(mine_after[:2], restart_m)
        gaps = [_seconds(frame, p) for p in near if abs(x - p.position_m) <= restart_m]
        if gaps:
            fits[number] = min(gaps)
    if fits:
        return min(fits, key=lambda number: (fits[number], -number))
    b = before[-1] if before else None
    a = after[0] if after else None
    if b is not None and x < b.position_m - restart_m:
        if a is not None and a.pass_no != b.pass_no and x <= a.position_m + restart_m:
            return a.pass_no
        return max(p.pass_no for p in others) + 1
    if b is not None:
        return b.pass_no
    assert a is not None
    return a.pass_no


def _apart(frames: Sequence[Placed], low: Order, high: Order, number: int) -> int:
    """How many of `frames` of passes other than `number` were captured strictly between `low` and
    `high` (only whether it reaches NEIGHBOURS matters)."""
    return sum(1 for p in frames if low < p.order < high and p.pass_no != number)


def _trusted(nearest: Sequence[Placed], restart_m: float) -> list[Placed]:
    """Of a pass's two frames nearest in time on one side (nearest first), the ones f is compared
    with: the nearest, and the next as well when the nearest lies more than R from it (the nearest
    may be one wrong position)."""
    if len(nearest) == 2 and abs(nearest[0].position_m - nearest[1].position_m) > restart_m:
        return list(nearest)
    return list(nearest[:1])


def _seconds(frame: Placed, other: Placed) -> float:
    return abs((frame.captured_at - other.captured_at).total_seconds())


def lock_strips(conn: sa.Connection, strip_ids: Iterable[str]) -> list[str]:
    """Lock the strips' rows of `alert_strip_locks` (made if missing) for the rest of the
    transaction, in sorted order (two lockers never wait on each other in a cycle); the strips."""
    strips = sorted(set(strip_ids))
    if strips:
        conn.execute(_ADD_LOCKS, {"strips": strips})
        conn.execute(_LOCK, {"strips": strips})
    return strips


def assign_passes(
    conn: sa.Connection, results: Sequence[FrameResult], restart_m: float = DEFAULT_PASS_RESTART_M
) -> dict[str, tuple[str, bool]]:
    """frame id → (pass id, inferred) for each of `results`: frame-meta's `pass_id` as given, else
    inferred (module doc) from the stored frames and the results before it in capture order.
    Locks the strips that need the inference (`lock_strips`) until the caller's transaction ends.
    A frame id already stored is given a pass too; the ledger keeps the stored one."""
    assigned: dict[str, tuple[str, bool]] = {}
    pending: dict[str, list[FrameResult]] = defaultdict(list)
    for result in results:
        meta = result.meta
        if meta.pass_id is not None:
            assigned[meta.frame_id] = (meta.pass_id, False)
        else:
            pending[meta.strip_id].append(result)
    for strip in lock_strips(conn, pending):
        new = sorted(pending[strip], key=lambda r: (r.meta.captured_at, r.meta.frame_id))
        known = _around(conn, strip, new[0].meta.captured_at, new[-1].meta.captured_at)
        for placed in known:  # stored already (a redelivery, or another frame under its id)
            assigned[placed.frame_id] = (str(placed.pass_no), True)
        for result in new:
            meta = result.meta
            if meta.frame_id in assigned:
                continue
            number = infer_pass(Placed(meta.frame_id, meta.captured_at, meta.position_m, 0), known, restart_m)
            known.append(Placed(meta.frame_id, meta.captured_at, meta.position_m, number))
            assigned[meta.frame_id] = (str(number), True)
    return {r.meta.frame_id: assigned[r.meta.frame_id] for r in results}


def _around(conn: sa.Connection, strip: str, t0: datetime, t1: datetime) -> list[Placed]:
    rows = conn.execute(_AROUND, {"strip": strip, "t0": t0, "t1": t1, "k": NEIGHBOURS})
    return [Placed(r.frame_id, r.captured_at, r.position_m, _number(r.pass_id)) for r in rows]


def _number(pass_id: str) -> int:
    """An inferred pass id as a number; a row written by other hands with something else counts
    as pass 1 (the column's default)."""
    try:
        return max(1, int(pass_id))
    except ValueError:
        return 1
