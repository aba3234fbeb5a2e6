"""What the demo prints about the stream: the live view while it runs, the summary at the end.

Text only: everything shown comes from a `StreamSnapshot` (`worker.demo.snapshot`); nothing here
reads the database. On a terminal the live view redraws one block in place, each line clipped to
the terminal's width; elsewhere it prints a plain line now and then, and the last one always.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from collections import deque
from typing import TextIO

from worker.demo.snapshot import StreamSnapshot


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _wrap(text: str, indent: int, width: int) -> str:
    return textwrap.fill(
        text, width=max(40, width), initial_indent=" " * indent, subsequent_indent=" " * indent
    )


class LiveView:
    """Progress of the stream: a block redrawn in place on a terminal, else a plain line now and
    then. Rates (frames/s, tiles/s) are over the last few seconds of processing."""

    def __init__(self, out: TextIO, *, live: bool, every_s: float = 5.0, window_s: float = 4.0) -> None:
        self.out = out
        self.live = live
        self.every_s = every_s
        self.window_s = window_s
        self._drawn = 0
        self._last_line = -float("inf")
        self._samples: deque[tuple[float, int, int]] = deque()
        self.started = time.monotonic()

    def rates(self, now: float, frames: int, tiles: int) -> tuple[float, float]:
        """(frames/s, tiles/s) processed over the window ending now."""
        self._samples.append((now, frames, tiles))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, f0, n0 = self._samples[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (frames - f0) / span, (tiles - n0) / span

    def update(self, snapshot: StreamSnapshot, sent: int, expected: int, *, final: bool = False) -> None:
        now = time.monotonic()
        fps, tps = self.rates(now, snapshot.frames, snapshot.tiles)
        elapsed = now - self.started
        head = (
            f"{elapsed:5.0f} s  sent {sent}/{expected} frames  processed {snapshot.frames} frames"
            f" ({snapshot.tiles} tiles)  {fps:4.1f} frames/s  {tps:5.1f} tiles/s"
        )
        if snapshot.frames == 0:
            head += "  (worker starting: TensorFlow, model, consumer group)"
        if not self.live:
            if final or now - self._last_line >= self.every_s:
                counts = ", ".join(f"{c.name} {c.detections}" for c in snapshot.classes)
                print(
                    f"{head}; detections: {counts}; alerts {len(snapshot.alerts)}", file=self.out, flush=True
                )
                self._last_line = now
            return
        width = shutil.get_terminal_size((110, 20)).columns - 1
        lines = [_clip(head, width)]
        for c in snapshot.classes:
            lines.append(_clip(f"  {c.name:<12} {c.detections:>5}  cause: {c.cause}", width))
        latest = snapshot.alerts[-1] if snapshot.alerts else None
        alert_text = f"  alerts {len(snapshot.alerts):>7}"
        if latest is not None:
            roll = f" · {latest.roll}" if latest.roll else ""
            alert_text += f"  latest: {latest.rule} · {latest.class_name} · {latest.strip_id}{roll}"
        lines.append(_clip(alert_text, width))
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line of the previous block
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)


def _evidence_line(snapshot: StreamSnapshot) -> str:
    """How many crops the evidence table holds, and what they cost per 1 000 frames."""
    if snapshot.crops == 0:
        return "evidence: no crops stored"
    per_crop_kb = snapshot.crop_bytes / snapshot.crops / 1000
    per_1000 = snapshot.crop_bytes / snapshot.frames * 1000 / 1e6 if snapshot.frames else 0.0
    return (
        f"evidence: {snapshot.crops} crops, {snapshot.crop_bytes / 1e6:.1f} MB"
        f" ({per_crop_kb:.1f} kB per crop, {per_1000:.1f} MB per 1000 frames)"
    )


def summary_lines(snapshot: StreamSnapshot, strips: int, seconds: float, width: int = 100) -> list[str]:
    """The end-of-demo tables: totals, detections per class (cause, prevention), alerts."""
    rate = snapshot.frames / seconds if seconds > 0 else 0.0
    out = [
        f"{strips} strips, {snapshot.frames} frames, {snapshot.tiles} tiles in {seconds:.0f} s"
        f" ({rate:.1f} frames/s), {snapshot.detections} detections, {len(snapshot.alerts)} alerts",
        _evidence_line(snapshot),
        "",
        f"{'class':<12} {'detections':>10}  cause → prevention",
    ]
    for c in snapshot.classes:
        out.append(f"{c.name:<12} {c.detections:>10}  {c.cause}")
        out.append(_wrap(f"→ {c.prevention}", 25, width))
    out.append("")
    if not snapshot.alerts:
        out.append("alerts: none")
        return out
    out.append(f"{'alert':>5}  {'rule':<18} {'kind':<13} {'class':<10} {'strip':<26} at (m)        roll")
    for a in snapshot.alerts:
        roll = a.roll or "-"
        if a.pitch_m is not None:
            roll += f" (pitch {a.pitch_m:.2f} m)"
        out.append(
            f"{a.alert_id:>5}  {a.rule:<18} {a.kind:<13} {a.class_name:<10} {a.strip_id:<26}"
            f" {a.position_start_m:5.1f}-{a.position_end_m:5.1f}  {roll}"
        )
        out.append(_wrap(f"{a.detection_count} detections, {a.severity}: cause {a.cause}", 7, width))
        out.append(_wrap(f"→ {a.prevention}", 7, width))
    return out
