"""`steel-worker demo`: the whole product on one machine, with a measured verdict on the model.

Steps (`run_demo`), each piece in a module of its own:
0. before anything starts: the alert rules file and the pitch of `--roll` (`worker.demo.rules`);
   a bad option or roll is a ConfigError and nothing is started or written;
1. infrastructure: `$KAFKA_BOOTSTRAP_SERVERS` or an embedded Tansu broker; `$DATABASE_URL` or an
   embedded PostgreSQL (`worker.infra`); migrations applied (`worker.storage.migrate`);
2. the demo model (`worker.demo.model`): taken from the cache, or trained the first time;
3. the worker: `python -m worker run` in a subprocess (`worker.demo.worker_process`, its log in
   `<out>/worker.log`), fed by the line simulator (`worker.camera.send`) with a few
   synthetic strips, a roll mark injected at the pitch of a roll of the alert rules file the
   worker uses; a live view (`worker.demo.live`) shows frames/s and detections by class with
   their cause, read from the database (`worker.demo.snapshot`) as the worker writes it;
4. the end: the worker is stopped (SIGTERM: it finishes its batch and commits), then a summary of
   what the database holds for these strips (frames, tiles, detections per class with cause and
   prevention, alerts with rule, roll, cause and prevention), a strip report with its PNG defect
   map (`worker.reports`), and the quality measurement (`worker.demo.quality`): the detections
   in the database against the simulator's ground truth.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from worker.core.errors import ConfigError, InfrastructureError
from worker.datasets.labelled import DEFAULT_MIN_PIXELS
from worker.demo.live import LiveView, summary_lines
from worker.demo.model import DemoRecipe
from worker.demo.quality import GroundTruth, QualityReport, measure_quality, read_detected
from worker.demo.rules import demo_rules_file, roll_pitch
from worker.demo.snapshot import StreamSnapshot, read_snapshot
from worker.demo.worker_process import WorkerHandle, WorkerProcess, log_tail, worker_environment

if TYPE_CHECKING:
    import sqlalchemy as sa

    from worker.camera.plan import SimulationPlan, StripScenario


@dataclass(frozen=True)
class DemoOptions:
    """What the demo streams and where it writes; checked on construction (ConfigError)."""

    strips: int = 5
    strip_length_m: float = 20.0
    defect_rate: float = 0.05  # stray random defects per frame on every strip (a clean strip)
    roll: str = "F7 top work roll"  # a roll of the alert rules file; its pitch spaces the marks
    roll_mark_class: str = "rolling"
    line_speed_mps: float = 2.0
    fps: float | None = None  # None: the camera's real pace; 0: as fast as possible
    seed: int = 7
    out_dir: Path = Path("runs/demo")
    model_dir: Path | None = None  # an existing artefact instead of the demo model
    rules_path: Path | None = None  # default: $ALERT_RULES, else config/alert-rules.yaml
    recipe: DemoRecipe = field(default_factory=DemoRecipe)
    idle_timeout_s: float = 300.0  # give up when the worker writes nothing for this long
    live: bool | None = None  # refreshing view; None: when stdout is a terminal
    console: bool = False  # serve the web console at the end until Ctrl-C (the command turns it on)
    console_port: int = 8080  # another free port when taken; 0: any free port

    def __post_init__(self) -> None:
        if self.strips < 1:
            raise ConfigError(f"--strips must be >= 1, received {self.strips}")
        if not self.strip_length_m > 0:
            raise ConfigError(f"--strip-length-m must be > 0, received {self.strip_length_m}")
        if self.defect_rate < 0:
            raise ConfigError(f"--defect-rate must be >= 0, received {self.defect_rate}")
        if not 0 <= self.console_port <= 65535:
            raise ConfigError(f"--console-port must be 0..65535, received {self.console_port}")
        if self.idle_timeout_s <= 0:
            raise ConfigError(f"--idle-timeout-s must be > 0, received {self.idle_timeout_s}")


def _say(out: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    return say


@dataclass(frozen=True)
class StreamRun:
    """What one stream through the worker needs: the plan, where to send, what to watch."""

    plan: SimulationPlan
    bootstrap: str
    engine: sa.Engine
    worker: WorkerHandle
    truth: GroundTruth
    expected_frames: int
    idle_timeout_s: float


@dataclass(frozen=True)
class StreamResult:
    """The strips streamed, and the worker's first and last write (monotonic seconds)."""

    strip_ids: tuple[str, ...]
    first_write: float | None
    last_write: float | None

    @property
    def processing_s(self) -> float:
        if self.first_write is None or self.last_write is None:
            return 0.0
        return self.last_write - self.first_write


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured (also printed): the database snapshot and the model's quality."""

    snapshot: StreamSnapshot
    quality: QualityReport
    strip_ids: tuple[str, ...]
    defect_map: Path
    worker_exit_code: int


def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoResult:
    """Run the demo end to end, printing as it goes; the result holds what it measured.

    Raises ConfigError for bad options, InfrastructureError when a service cannot be started or
    the worker fails, ModelError when the demo model cannot be prepared.
    """
    from worker.storage.engine import create_engine  # noqa: PLC0415
    from worker.streaming.settings import load_settings  # noqa: PLC0415

    stream = out if out is not None else sys.stdout
    say = _say(stream)
    rules_file = demo_rules_file(options.rules_path, os.environ)
    pitch = roll_pitch(rules_file, options.roll)  # a bad --roll fails before anything starts
    out_dir = options.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        bootstrap, db_url = _start_services(stack, out_dir, say)
        worker_db_url = _worker_login(db_url, say)
        model_path = _demo_model(options, say)
        env = worker_environment(os.environ, bootstrap, worker_db_url, model_path, rules_file)
        settings = load_settings(env)
        say(runtime_line(model_path, settings.model_runtime))
        _create_topics(bootstrap, settings)
        worker = WorkerProcess(env, out_dir / "worker.log")
        stack.callback(worker.stop)
        engine = create_engine(db_url)
        stack.callback(engine.dispose)
        plan = _plan(options, settings.frames_topic, pitch)
        run = StreamRun(
            plan=plan,
            bootstrap=bootstrap,
            engine=engine,
            worker=worker,
            truth=GroundTruth(settings.tile_size, settings.tile_min_overlap),
            expected_frames=options.strips * _frames_per_strip(plan),
            idle_timeout_s=options.idle_timeout_s,
        )
        stories = ", ".join(plan.scenario(n).name for n in range(options.strips))
        say(
            f"worker starting (log {worker.log_path}); streaming {options.strips} strips of"
            f" {options.strip_length_m:g} m ({run.expected_frames} frames) at {options.line_speed_mps:g} m/s:"
            f" {stories} (roll marks of {options.roll_mark_class} every {pitch:.3f} m, π × the roll's"
            f" diameter; {options.defect_rate:g} stray defects per frame)"
        )
        live = options.live if options.live is not None else stream.isatty()
        streamed = stream_through_worker(run, stream, live)
        latency = _latency(worker.log_path)  # from the worker's /metrics, while it still serves them
        code = worker.stop()
        if code != 0:
            say(f"warning: the worker exited with status {code}; see {worker.log_path}")
        result = _finish(
            run, streamed, model_path=model_path, out_dir=out_dir, worker_exit_code=code, say=say
        )
        for line in latency:
            say(line)
        say(f"demo finished in {(time.monotonic() - started) / 60:.1f} min; outputs in {out_dir}")
        if options.console:
            _serve_console(db_url, options.console_port, model_path, say)
        return result


def _serve_console(db_url: str, port: int, model_path: Path, say: Callable[[str], None]) -> None:
    """The web console over the demo's database until Ctrl-C (`worker.demo.console_view`), its heat
    maps drawn by the demo's model."""
    from worker.demo.console_view import serve_until_interrupted, start_console  # noqa: PLC0415

    console = start_console(db_url, port, models_dir=model_path)
    say(
        f"console: {console.url} — log in as {console.user} with the password {console.password}"
        " (admin: acknowledge alerts, review crops); Ctrl-C stops it"
    )
    serve_until_interrupted(console, say)


def _start_services(stack: ExitStack, out_dir: Path, say: Callable[[str], None]) -> tuple[str, str]:
    """The broker's bootstrap servers and the migrated database's URL (embedded ones are stopped
    when `stack` closes)."""
    from worker.infra.broker import EmbeddedBroker  # noqa: PLC0415
    from worker.infra.postgres import database_url  # noqa: PLC0415
    from worker.storage import migrate  # noqa: PLC0415
    from worker.storage.partitions import ensure_months_at  # noqa: PLC0415

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        say(f"broker: {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
    else:
        broker = stack.enter_context(EmbeddedBroker(log_path=out_dir / "broker.log"))
        bootstrap = broker.bootstrap_servers
        say(f"broker: embedded Tansu at {bootstrap} (log {broker.log_path})")
    db_url = stack.enter_context(database_url())
    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL"
    migrate.upgrade(db_url)
    ensure_months_at(db_url)  # the evidence crops' month partitions
    say(f"database: {where} at {db_url.rsplit('@', 1)[-1]}, migrated to the newest schema")
    return bootstrap, db_url


#: The demo's worker connects as this login, a member of `steel_worker` (as at a plant).
DEMO_WORKER_LOGIN = "steel_demo_worker"


def _worker_login(db_url: str, say: Callable[[str], None]) -> str:
    """The URL the demo's worker uses: a `steel_worker` login with a fresh random password
    (`steel-worker db create-login`), or `db_url` itself when its user may not create roles."""
    import secrets  # noqa: PLC0415

    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from worker.storage.roles import create_login  # noqa: PLC0415

    password = secrets.token_urlsafe(18)
    try:
        create_login(db_url, DEMO_WORKER_LOGIN, "worker", password)
    except ConfigError as exc:
        say(f"worker database login: the owner's ({exc}); at a plant, use a steel_worker login")
        return db_url
    say(f"worker database login: {DEMO_WORKER_LOGIN} (member of steel_worker, least privilege)")
    return (
        make_url(db_url)
        .set(username=DEMO_WORKER_LOGIN, password=password)
        .render_as_string(hide_password=False)
    )


def _latency(log_path: Path) -> list[str]:
    """The summary's latency lines (`worker.demo.latency`); one line saying why when they cannot be read."""
    from worker.demo.latency import latency_lines, metrics_url  # noqa: PLC0415

    url = metrics_url(log_path)
    if url is None:
        return [f"latency from capture: the worker's metrics address is not in {log_path}"]
    try:
        lines = latency_lines(url)
    except OSError as exc:
        return [f"latency from capture: {url} did not answer ({exc})"]
    head = "latency from capture (camera clock → this machine's; from the worker's histograms, per bucket):"
    return [head, *lines] if lines else []


def runtime_line(model_path: Path, setting: str) -> str:
    """What runs the network in the demo's worker: MODEL_RUNTIME, and for auto what it chooses here
    (`auto_choice`, the worker's own rule) and the exports it passed over."""
    from worker.model.runtimes import AUTO, auto_choice  # noqa: PLC0415

    if setting != AUTO:
        return f"the worker runs the model on {setting} (MODEL_RUNTIME)"
    runtime, skipped = auto_choice(model_path)
    passed = (
        f"; passed over: {', '.join(skipped)} (worker.log, line worker.model, says why)" if skipped else ""
    )
    return f"the worker runs the model on {runtime} (MODEL_RUNTIME=auto{passed})"


def _demo_model(options: DemoOptions, say: Callable[[str], None]) -> Path:
    """--model when given (checked now), else the demo model from the cache or trained now."""
    from worker.demo.model import prepare_demo_model  # noqa: PLC0415
    from worker.model.artefact import read_model_meta  # noqa: PLC0415

    if options.model_dir is not None:
        path = options.model_dir.resolve()
        read_model_meta(path)  # a clear message now if it is not an artefact
        say(f"model: {path} (--model)")
        return path
    prepared = prepare_demo_model(options.recipe, log=say)
    if not prepared.built:
        say(f"model: the cached demo model {prepared.path}")
    return prepared.path


def _create_topics(bootstrap: str, settings: Any) -> None:
    """The worker's topics, before it subscribes (a group sees a topic made later only slowly)."""
    from worker.infra.broker import create_topics  # noqa: PLC0415

    create_topics(
        bootstrap,
        {
            settings.frames_topic: 3,
            settings.detections_topic: 1,
            settings.alerts_topic: 1,
            settings.dlq_topic: 1,
        },
    )


def demo_scenarios(options: DemoOptions, pitch: float) -> tuple[StripScenario, ...]:
    """The demo's strips, in turn: clean, marked by the roll `options.roll` (a mark every `pitch`
    metres), clean, scratched by a guide (8 scratches over 2.5 m in one lane), clean — each with
    `options.defect_rate` stray defects per frame: what a plant sees, where alerts mean something."""
    from worker.camera.plan import DefectCluster, RollMark, StripScenario  # noqa: PLC0415

    stray = options.defect_rate
    span = min(2.5, options.strip_length_m / 2)
    guide = DefectCluster("scratches", start_m=(options.strip_length_m - span) / 2, span_m=span, count=8)
    return (
        StripScenario("clean", stray),
        StripScenario(
            f"roll mark: {options.roll}", stray, roll_marks=(RollMark(options.roll_mark_class, pitch),)
        ),
        StripScenario("clean", stray),
        StripScenario("scratches from a guide", stray, clusters=(guide,)),
        StripScenario("clean", stray),
    )


def _plan(options: DemoOptions, topic: str, pitch: float) -> SimulationPlan:
    from worker.camera.plan import SimulationPlan  # noqa: PLC0415

    return SimulationPlan(
        topic=topic,
        strips=options.strips,
        strip_length_m=options.strip_length_m,
        line_speed_mps=options.line_speed_mps,
        fps=options.fps,
        seed=options.seed,
        scenarios=demo_scenarios(options, pitch),
        strip_gap_s=1.0,
    )


def _frames_per_strip(plan: SimulationPlan) -> int:
    from worker.camera.plan import frames_to_cover  # noqa: PLC0415

    assert plan.strip_length_m is not None
    return frames_to_cover(plan.strip_length_m, plan)


def _finish(
    run: StreamRun,
    streamed: StreamResult,
    *,
    model_path: Path,
    out_dir: Path,
    worker_exit_code: int,
    say: Callable[[str], None],
) -> DemoResult:
    """Summary, strip report with its defect map, and the quality measurement, printed."""
    from worker.model.artefact import read_model_meta  # noqa: PLC0415
    from worker.reports.strip import write_strip_report  # noqa: PLC0415

    width = shutil.get_terminal_size((110, 20)).columns - 1
    strip_ids = streamed.strip_ids
    snapshot = read_snapshot(run.engine, strip_ids)
    say("")
    say("== summary " + "=" * max(0, width - 11))
    for line in summary_lines(snapshot, len(strip_ids), streamed.processing_s, width):
        say(line)
    chosen = _report_strip(snapshot, strip_ids)
    report = write_strip_report(run.engine, chosen, out_dir / "report")
    say("")
    say(f"defect map of strip {chosen}: {report.defect_map}")
    say(f"strip report (Markdown, CSV tables): {report.markdown}")
    meta = read_model_meta(model_path)
    class_names = [c["name"] for c in meta["catalogue"]["classes"]]
    processed, detected = read_detected(run.engine, strip_ids)
    quality = measure_quality(run.truth.frames, processed, detected, class_names)
    say("")
    say(
        f"== quality of model {str(meta['version'])[:12]} ({meta['backbone']} at {meta['input_size']} px) on"
        " this stream; ground truth: the simulator's masks, a class is on a tile when at least"
        f" {DEFAULT_MIN_PIXELS} of its pixels are"
    )
    for line in quality.lines():
        say(line)
    say("")
    return DemoResult(snapshot, quality, strip_ids, report.defect_map, worker_exit_code)


def _report_strip(snapshot: StreamSnapshot, strip_ids: Sequence[str]) -> str:
    """The strip to draw: the one with most alerts (the first one on ties)."""
    alerts = dict.fromkeys(strip_ids, 0)
    for a in snapshot.alerts:
        alerts[a.strip_id] = alerts.get(a.strip_id, 0) + 1
    return max(strip_ids, key=lambda s: alerts.get(s, 0))


def stream_through_worker(run: StreamRun, out: TextIO, live: bool) -> StreamResult:
    """Send the plan's frames (simulator in a thread, ground truth recorded as they go) and show
    the live view until the worker has written every sent frame. InfrastructureError if the
    simulator or the worker fails, or the worker writes nothing for `run.idle_timeout_s`."""
    from worker.camera.send import simulate  # noqa: PLC0415

    failure: list[BaseException] = []

    def send() -> None:
        try:
            simulate(run.bootstrap, run.plan, progress=False, on_frame=run.truth.add)
        except BaseException as exc:
            failure.append(exc)

    sender = threading.Thread(target=send, name="simulator", daemon=True)
    sender.start()
    view = LiveView(out, live=live)
    last_frames, last_change = 0, time.monotonic()
    first_write: float | None = None
    while True:
        run.worker.check_alive()
        if failure:
            raise failure[0]
        strip_ids = run.truth.strip_ids
        snapshot = read_snapshot(run.engine, strip_ids)
        sent = len(run.truth)
        now = time.monotonic()
        done = not sender.is_alive() and snapshot.frames >= sent
        view.update(snapshot, sent, run.expected_frames, final=done)
        if snapshot.frames != last_frames:
            first_write = first_write if first_write is not None else now
            last_frames, last_change = snapshot.frames, now
        if done:
            return StreamResult(tuple(strip_ids), first_write, last_change if first_write else None)
        if now - last_change > run.idle_timeout_s:
            raise InfrastructureError(
                f"the worker wrote no frame for {run.idle_timeout_s:.0f} s ({snapshot.frames} of {sent}"
                f" sent frames written); last lines of {run.worker.log_path}:\n"
                f"{log_tail(run.worker.log_path)}"
            )
        time.sleep(0.5)
