"""Strip passes: the inference rule of `worker.storage.passes` as a pure function (Hypothesis over
arrival orders), and the writer storing each frame's pass (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alert_strips import register, strip_results
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from worker.storage.passes import DEFAULT_PASS_RESTART_M, Placed, infer_pass
from worker.storage.writer import StorageWriter

T0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
R = DEFAULT_PASS_RESTART_M


def _pass(name: str, positions: Sequence[float], start_s: float, speed_mps: float = 2.0) -> list[Placed]:
    """Frames of one pass: positions in capture order, captured at `speed_mps` from `start_s`;
    pass_no 0 (unknown). Frame ids sort by capture time."""
    frames, t = [], start_s
    for n, x in enumerate(positions):
        if n:
            t += max(0.05, (x - positions[n - 1]) / speed_mps)
        frames.append(Placed(f"{name}-{n:05d}", T0 + timedelta(seconds=t), x, 0))
    return frames


def _arrive(frames: Sequence[Placed]) -> dict[str, int]:
    """Each frame's inferred pass, the frames stored one by one in the order given."""
    known: list[Placed] = []
    for frame in frames:
        known.append(Placed(frame.frame_id, frame.captured_at, frame.position_m, infer_pass(frame, known)))
    return {p.frame_id: p.pass_no for p in known}


def _steady(length_m: float, step_m: float = 0.256) -> list[float]:
    return [n * step_m for n in range(int(length_m / step_m) + 1)]


def _runs(draw: st.DrawFn, frames: list[Placed]) -> list[Placed]:
    """`frames` cut into runs (a camera's store-and-forward, a lagging partition) that arrive in a
    drawn order, each run in order."""
    cuts = sorted(draw(st.sets(st.integers(1, len(frames) - 1), max_size=6)))
    runs = [frames[a:b] for a, b in zip([0, *cuts], [*cuts, len(frames)], strict=True)]
    order = draw(st.permutations(range(len(runs))))
    return [f for i in order for f in runs[i]]


@st.composite
def one_pass_in_any_order(draw: st.DrawFn) -> list[Placed]:
    """A pass whose positions grow with capture time (steps of 5 cm to 5 m, and gaps of up to 600 m
    as after a network drop), its frames in any order."""
    steps = draw(
        st.lists(
            st.one_of(st.floats(0.05, 5.0), st.floats(20.0, 600.0)),
            min_size=5,
            max_size=80,
        )
    )
    positions = [draw(st.floats(0.0, 50.0))]
    for step in steps:
        positions.append(positions[-1] + step)
    return draw(st.permutations(_pass("p", positions, 0.0)))


@settings(max_examples=200, deadline=None)
@given(frames=one_pass_in_any_order())
def test_the_frames_of_one_pass_are_one_pass_in_whatever_order_they_arrive(frames: list[Placed]) -> None:
    assert set(_arrive(frames).values()) == {1}


@st.composite
def two_passes_arriving_in_runs(draw: st.DrawFn) -> tuple[list[Placed], set[str]]:
    """The strip rolled twice (each pass 20 to 60 m long, the second an hour after the first),
    each pass in runs arriving in any order; some runs of the first pass may come after the second
    began. What the rule needs (the module doc's limits): the second pass's head (its first three
    frames) comes before the rest of it, and the first pass's last two frames stored by then lie
    more than PASS_RESTART_M beyond that head. Returns the frames and the ids of the second pass."""
    first = _pass("a", _steady(draw(st.floats(2 * R, 60.0))), 0.0)
    second = _pass("b", _steady(draw(st.floats(2 * R, 60.0))), 3600.0)
    head, rest = second[:3], second[3:]
    late_first = draw(st.booleans())  # some runs of the first pass come after the second began
    first_runs = _runs(draw, first)
    cut = draw(st.integers(max(1, len(first_runs) // 2), len(first_runs))) if late_first else len(first_runs)
    latest = sorted(first_runs[:cut], key=lambda f: f.order)[-2:]
    assume(all(f.position_m > head[0].position_m + R for f in latest))
    order = first_runs[:cut] + head + _runs(draw, rest) + first_runs[cut:]
    return order, {f.frame_id for f in second}


@settings(max_examples=100, deadline=None)
@given(case=two_passes_arriving_in_runs())
def test_a_strip_rolled_again_is_a_second_pass_also_when_frames_of_either_come_late(
    case: tuple[list[Placed], set[str]],
) -> None:
    frames, second = case
    passes = _arrive(frames)
    assert {f: n for f, n in passes.items() if f in second} == dict.fromkeys(second, 2)
    assert {f: n for f, n in passes.items() if f not in second} == dict.fromkeys(set(passes) - second, 1)


def test_the_late_head_of_either_pass_joins_its_own_pass() -> None:
    """The first 15 m of a pass arrive after the rest of it: of the first pass (the second pass
    stored already too), and of the second."""
    first = _pass("a", _steady(200.0), 0.0)
    second = _pass("b", _steady(200.0), 3600.0)
    head = int(15 / 0.256)
    passes = _arrive(first[head:] + second[head:] + first[:head] + second[:head])
    assert {passes[f.frame_id] for f in first} == {1}
    assert {passes[f.frame_id] for f in second} == {2}


@pytest.mark.parametrize(
    ("wrong_m", "where"),
    [(0.0, "reads 0 in the middle"), (40.0, "reads 37 m behind"), (2_000.0, "reads 1.9 km ahead")],
)
def test_one_frame_with_a_wrong_position_does_not_split_the_strip(wrong_m: float, where: str) -> None:
    """The frames after it stay in the first pass; the wrong frame is at most a pass of its own,
    and the strip's real second pass is still one pass."""
    frames = _pass("a", _steady(100.0), 0.0) + _pass("c", _steady(40.0), 3600.0)
    bad_at = 300  # about 77 m into the first pass
    bad = Placed("a-bad", frames[bad_at].captured_at + timedelta(milliseconds=1), wrong_m, 0)
    passes = _arrive([*frames[: bad_at + 1], bad, *frames[bad_at + 1 :]])
    first = [f.frame_id for f in frames if f.frame_id.startswith("a-")]
    second = [f.frame_id for f in frames if f.frame_id.startswith("c-")]
    assert {passes[f] for f in first} == {1}, where
    assert len({passes[f] for f in second}) == 1 and passes[second[0]] != 1, where


def test_a_pass_shorter_than_pass_restart_m_is_not_seen() -> None:
    """The stated limit: positions that go back by PASS_RESTART_M or less stay in the pass."""
    frames = _pass("a", _steady(R - 1), 0.0) + _pass("b", _steady(R - 1), 3600.0)
    assert set(_arrive(frames).values()) == {1}


# ---------------------------------------------------------------------------------------------
# the writer: each frame stored with its pass
# ---------------------------------------------------------------------------------------------


def _stored_passes(engine: sa.Engine) -> dict[str, tuple[str, bool]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, pass_id, pass_inferred FROM frames"))
        return {r.frame_id: (r.pass_id, r.pass_inferred) for r in rows}


def test_the_writer_stores_the_inferred_pass_batch_by_batch_and_frame_meta_s_pass_id_as_sent(
    engine: sa.Engine,
) -> None:
    writer = StorageWriter(engine)
    register(writer)
    first = strip_results("S-P", [], length_m=30.0)
    second = strip_results("S-P", [], length_m=30.0, start=T0 + timedelta(hours=1), tag="-2")
    late = first[:20]  # the first 5 m of the first pass, last
    for start in range(20, len(first), 16):
        writer.write_results(first[start : start + 16])
    for start in range(0, len(second), 16):
        writer.write_results(second[start : start + 16])
    writer.write_results(late)
    writer.write_results(first[:5])  # a redelivery keeps what is stored
    sent = strip_results("S-Q", [], length_m=2.0, pass_id="coil-7")
    writer.write_results(sent)

    stored = _stored_passes(engine)
    assert {stored[r.meta.frame_id] for r in first} == {("1", True)}
    assert {stored[r.meta.frame_id] for r in second} == {("2", True)}
    assert {stored[r.meta.frame_id] for r in sent} == {("coil-7", False)}
