"""Sending a plan's frames to the frames topic, and what the run reports.

Messages follow the frames contract (`schemas/frame-meta.v1.json`): key = strip id, value = the
encoded image, headers `content-type` and `frame-meta`; the metadata is validated before each send.
Pacing: `fps=None` sends each frame when the camera would take it (real time); `fps=0` sends as fast
as possible; `fps>0` sends that many frames per second. `simulate` returns a `SimulationSummary`
once the broker acknowledged every frame it counts (per strip, with where each roll mark landed);
a frame the broker refuses is an InfrastructureError.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tqdm import tqdm

from worker.camera.frames import FrameMaker, InjectedMark, SimulatedFrame, encode_image
from worker.camera.plan import SimulationPlan
from worker.core import contracts
from worker.core.errors import ConfigError, InfrastructureError

if TYPE_CHECKING:
    from kafka import KafkaProducer

__all__ = ["SimulationSummary", "StripSummary", "simulate"]


# --- what the run reports -----------------------------------------------------------------------


@dataclass(frozen=True)
class StripSummary:
    """What was sent of one strip: frames, metres covered, first and last capture time."""

    strip_id: str
    frames: int
    length_m: float
    first_captured_at: datetime | None
    last_captured_at: datetime | None


@dataclass(frozen=True)
class SimulationSummary:
    """The outcome of `simulate`: every frame counted here was acknowledged by the broker."""

    topic: str
    topic_created: bool
    frames_sent: int
    bytes_sent: int
    elapsed_s: float
    strips: tuple[StripSummary, ...]
    marks: tuple[InjectedMark, ...]
    defects_by_class: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text account: totals, then one line per strip with its roll marks."""
        rate = self.frames_sent / self.elapsed_s if self.elapsed_s > 0 else float("inf")
        lines = [
            f"{self.frames_sent} frames ({self.bytes_sent / 1e6:.1f} MB) sent to {self.topic}"
            f" in {self.elapsed_s:.1f} s ({rate:.1f} frames/s)"
            + (" (topic created)" if self.topic_created else ""),
        ]
        if self.defects_by_class:
            drawn = ", ".join(f"{n} {c}" for c, n in sorted(self.defects_by_class.items()))
            lines.append(f"synthetic defects drawn: {drawn}")
        for s in self.strips:
            lines.append(f"  strip {s.strip_id}: {s.frames} frames, {s.length_m:.2f} m")
            by_mark: dict[tuple[str, float], list[float]] = {}
            for m in self.marks:
                if m.strip_id == s.strip_id:
                    by_mark.setdefault((m.class_name, m.pitch_m), []).append(m.position_m)
            for (name, pitch), positions in by_mark.items():
                shown = ", ".join(f"{p:.2f}" for p in positions[:6]) + (", …" if len(positions) > 6 else "")
                lines.append(f"    roll mark {name} every {pitch:g} m: {len(positions)} prints at {shown} m")
        return "\n".join(lines)


# --- sending ------------------------------------------------------------------------------------


def _bootstrap_of(producer: KafkaProducer) -> str:
    servers = producer.config["bootstrap_servers"]
    return servers if isinstance(servers, str) else ",".join(servers)


def _connect(bootstrap: str, timeout_s: float) -> KafkaProducer:
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.errors import KafkaTimeoutError  # noqa: PLC0415

    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    if not servers:
        raise ConfigError("--bootstrap / KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port…]")
    try:
        return KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            client_id="steel-worker-simulator",
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaTimeoutError:
        raise InfrastructureError(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s; check --bootstrap /"
            " KAFKA_BOOTSTRAP_SERVERS"
        ) from None


class _Pacer:
    """Waits until a frame's send time: real time from `captured_at`, a fixed rate, or not at all."""

    def __init__(self, fps: float | None, start: datetime) -> None:
        self.fps, self.start, self.t0 = fps, start, time.monotonic()

    def wait(self, sent: int, captured_at: datetime) -> None:
        if self.fps == 0:
            return
        due = ((captured_at - self.start).total_seconds() if self.fps is None else sent / self.fps) + self.t0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class _Tally:
    """What has been sent so far (the broker's failures arrive on its I/O thread)."""

    frames: int = 0
    bytes: int = 0
    marks: list[InjectedMark] = field(default_factory=list)
    drawn: Counter[str] = field(default_factory=Counter)
    failures: list[BaseException] = field(default_factory=list)


def _send_all(
    producer: KafkaProducer,
    plan: SimulationPlan,
    maker: FrameMaker,
    tally: _Tally,
    *,
    progress: bool,
    on_frame: Callable[[SimulatedFrame], None] | None,
) -> None:
    """Make, validate, encode, pace and send every frame of the plan; flush at the end."""
    from kafka.errors import KafkaError  # noqa: PLC0415

    pacer = _Pacer(plan.fps, maker.start)
    with tqdm(total=maker.expected_total(), desc="simulate", unit="frame", disable=not progress) as bar:
        for strip in maker.order():
            if (plan.frames is not None and tally.frames >= plan.frames) or tally.failures:
                break
            frame, marks = maker.make(strip)
            contracts.validate(contracts.FRAME_META, contracts.frame_meta_dict(frame.meta))
            value = encode_image(frame.image, plan.encoding, plan.jpeg_quality)
            pacer.wait(tally.frames, frame.meta.captured_at)
            try:
                future = producer.send(
                    plan.topic,
                    key=strip.strip_id.encode("utf-8"),
                    value=value,
                    headers=contracts.frame_headers(frame.meta, frame.content_type),
                )
            except KafkaError as exc:
                raise InfrastructureError(
                    f"frame {frame.meta.frame_id} ({len(value)} bytes) refused by the producer: {exc!r}"
                ) from None
            future.add_errback(tally.failures.append)
            if on_frame is not None:
                on_frame(frame)
            tally.frames += 1
            tally.bytes += len(value)
            tally.marks.extend(marks)
            tally.drawn.update(d.class_name for d in frame.defects)
            bar.update(1)
            bar.set_postfix_str(strip.strip_id, refresh=False)
        producer.flush()


def simulate(
    producer_or_bootstrap: KafkaProducer | str,
    plan: SimulationPlan,
    progress: bool = True,
    on_frame: Callable[[SimulatedFrame], None] | None = None,
    connect_timeout_s: float = 30.0,
) -> SimulationSummary:
    """Publish the plan's frames; returns once the broker acknowledged every one of them.

    Creates `plan.topic` with `plan.partitions` partitions when it does not exist (an existing topic
    is left as it is). A producer passed in is flushed but not closed; one made from a bootstrap
    string is closed (InfrastructureError when no broker answers within `connect_timeout_s`).
    `on_frame` sees each frame as it is sent. Raises ConfigError/DatasetError for
    bad plans or images (before anything is sent), SchemaError if metadata breaks the contract,
    InfrastructureError when the broker cannot be reached or refuses a frame.
    """
    from kafka.errors import KafkaError  # noqa: PLC0415

    from worker.infra.broker import create_topics  # noqa: PLC0415

    maker = FrameMaker(plan, plan.start_at or datetime.now(UTC))  # checks the folder before connecting
    owned = isinstance(producer_or_bootstrap, str)
    if isinstance(producer_or_bootstrap, str):
        bootstrap, producer = producer_or_bootstrap, _connect(producer_or_bootstrap, connect_timeout_s)
    else:
        bootstrap, producer = _bootstrap_of(producer_or_bootstrap), producer_or_bootstrap
    tally = _Tally()
    try:
        try:
            created = create_topics(
                bootstrap, {plan.topic: plan.partitions}, replication_factor=plan.replication_factor
            )
        except KafkaError as exc:
            raise InfrastructureError(f"cannot create topic {plan.topic} on {bootstrap}: {exc!r}") from None
        t0 = time.monotonic()
        _send_all(producer, plan, maker, tally, progress=progress, on_frame=on_frame)
        elapsed = time.monotonic() - t0
    finally:
        if owned:
            producer.close()
    if tally.failures:
        raise InfrastructureError(
            f"the broker did not accept every frame on {plan.topic}: {tally.failures[0]!r}"
        )
    strips = tuple(
        StripSummary(s.strip_id, s.index, s.position_m(plan.mm_per_px_along), s.first_at, s.last_at)
        for s in maker.strips
    )
    return SimulationSummary(
        topic=plan.topic,
        topic_created=plan.topic in created,
        frames_sent=tally.frames,
        bytes_sent=tally.bytes,
        elapsed_s=elapsed,
        strips=strips,
        marks=tuple(tally.marks),
        defects_by_class=dict(tally.drawn),
    )
