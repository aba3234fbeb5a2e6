"""Inference runtimes at the paper's size: each runtime bare and through the worker, in one run.

    make bench                                              # = .venv/bin/python bench/runtimes.py
    .venv/bin/python bench/runtimes.py --input-size 64      # the demo's size
    .venv/bin/python bench/runtimes.py --model runs/neu-model   # a trained artefact and its exports

For each runtime — Keras on TensorFlow (fp32) and, where installed, OpenVINO and ONNX Runtime, fp32
and INT8 — with the same frames and tiles:

(a) bare: `Inferencer.forward` (the worker's own path, pre-processing included) on the decoded tiles
    in batches of BATCH_TILES, after an untimed pass; and the sweep: the same at batches of 8, 16,
    32 and 64 tiles (on the first SWEEP_TILES tiles);
(b) the worker end to end (bench/throughput.py's `worker_run`: the frames published first, the clock
    from the worker's first poll that returns frames to the last commit, rules on), on a stream of
    at least --min-worker-seconds (30) at the bare speed — more frames for the fast runtimes, so the
    ends of a finite stream weigh the same for each —, and worker/bare against a bare pass over the
    same tiles made just before it;
(c) latency, for TensorFlow and the fastest other runtime: frames published at 50 % and 80 % of the
    runtime's measured worker throughput, each stamped `captured_at` = the moment it is sent; the
    p50/p95/p99 of capture → rows committed and capture → detection published, from the worker's
    own latency histograms' observations (after a few warm-up frames, so the group join is outside).

The model is an untrained ResNet50 at --input-size (256, the paper's, by default) whose thresholds
make about 10 % of tiles detections (bench/throughput.py). Its INT8 exports are calibrated on the
stream's own tiles; their agreement with Keras is measured on those tiles and printed, but not
enforced: random weights have no accuracy to keep (docs/benchmark.md shows a trained model's). With
--model DIR the artefact's recorded exports are used as they are, held to the default agreement
limits. A runtime that is not installed or does not load is listed with the reason. Threads: every
runtime uses its default, all cores for one inference at a time (TensorFlow's intra-op pool,
OpenVINO's one CPU stream, ONNX Runtime's intra-op threads), which is how the worker calls the
model: one batch at a time on its model thread while the loop polls, decodes and delivers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from kafka import KafkaProducer
from throughput import (
    DEFAULTS,
    Frames,
    WorkerRun,
    bare_model,
    bench_model,
    database_server,
    fresh_topics,
    make_frames,
    run_settings,
    worker_run,
)

from worker.core import contracts
from worker.core.errors import ConfigError, ModelError
from worker.core.tileset import TileSetWriter
from worker.inference import Inferencer
from worker.infra.broker import EmbeddedBroker
from worker.infra.postgres import fresh_database
from worker.model.acceleration import Acceleration
from worker.model.agreement import AgreementLimits
from worker.model.artefact import Classifier
from worker.model.runtimes import EXPORTS, RUNTIMES, agreement_summary, export_model, load_runtime_classifier
from worker.storage import migrate
from worker.streaming.observability import configure_logging
from worker.streaming.service import open_worker

SWEEP = (8, 16, 32, 64)
SWEEP_TILES = 192
MIN_WORKER_SECONDS = 30.0
LOADS = (0.5, 0.8)
WARM_UP_FRAMES = 3
CALIBRATION_TILES = 300
UNENFORCED = AgreementLimits(max_f1_drop=1.0, max_flip_share=1.0)


@dataclass
class Measured:
    """One runtime's figures."""

    runtime: str
    precision: str
    threads: str
    bare: float = 0.0  # tiles/s at BATCH_TILES
    sweep: dict[int, float] = field(default_factory=dict)  # batch size → tiles/s
    worker: WorkerRun | None = None
    bare_before_worker: float = 0.0
    export_seconds: float | None = None
    agreement: dict[str, Any] | None = None
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # "80%/commit" → p50/p95/p99

    @property
    def worker_ratio(self) -> float:
        assert self.worker is not None
        return self.worker.tiles_per_s / self.bare_before_worker


def calibration_set(tiles: np.ndarray, classifier: Classifier, out: Path) -> Path:
    """A tile set of up to CALIBRATION_TILES of the stream's tiles, evenly spread, with no labels."""
    rows = np.unique(np.linspace(0, len(tiles) - 1, min(CALIBRATION_TILES, len(tiles))).round().astype(int))
    with TileSetWriter(out, classifier.catalogue) as writer:
        for i in rows:
            writer.add(tiles[i], f"bench-{i:05d}.png", 0, 0, [])
    return out


def is_keras(row: str) -> bool:
    """Whether a row of the table is Keras on TensorFlow (`tensorflow` or `tensorflow:VARIANT`)."""
    return row.split(":", 1)[0] == "tensorflow"


def keras_variants(text: str) -> list[str]:
    """--tensorflow → the table's Keras rows: `tensorflow` for auto, `tensorflow:float16+xla` ..."""
    if text.strip() == "auto":
        return ["tensorflow"]
    rows = []
    for variant in (v.strip() for v in text.split(",")):
        precision, _, xla = variant.partition("+")
        Acceleration(precision=precision, xla="on" if xla == "xla" else "off")  # checks the precision
        if xla not in ("", "xla"):
            raise ConfigError(f"--tensorflow: expected PRECISION or PRECISION+xla, received {variant!r}")
        rows.append(f"tensorflow:{variant}")
    return rows


def load_row(model_dir: Path, row: str, batch_size: int, limits: AgreementLimits) -> Classifier:
    """The classifier of one row: a runtime, or a Keras variant with its precision and XLA."""
    runtime, _, variant = row.partition(":")
    acceleration = Acceleration()
    if variant:
        precision, _, xla = variant.partition("+")
        acceleration = Acceleration(precision=precision, xla="on" if xla else "off")
    return load_runtime_classifier(model_dir, runtime, batch_size, limits, acceleration)


def threads_of(classifier: Classifier) -> str:
    """The thread settings the runtime runs with, as it reports them."""
    model = classifier.model
    if classifier.runtime.startswith("openvino"):
        return (
            f"{model.get_property('INFERENCE_NUM_THREADS')} threads, "
            f"{model.get_property('NUM_STREAMS')} stream(s)"
        )
    if classifier.runtime.startswith("onnxruntime"):
        options = model.get_session_options()
        device = ", ".join(p.removesuffix("ExecutionProvider") for p in model.get_providers())
        intra = options.intra_op_num_threads or os.cpu_count()
        return f"intra-op {intra}, inter-op {options.inter_op_num_threads or 1}; {device}"
    import tensorflow as tf  # noqa: PLC0415

    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    inter = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU, XLA {'on' if model.jit_compile else 'off'}" if gpus else "CPU"
    return f"intra-op {intra}, inter-op {inter}; {device}, {classifier.precision}"


def prepare_exports(model_dir: Path, runtimes: list[str], calibration: Path | None) -> dict[str, Any]:
    """Export each runtime of `runtimes` (not tensorflow) into the artefact; seconds and agreement
    per runtime, or the reason it could not be made."""
    made: dict[str, Any] = {}
    for runtime in runtimes:
        if is_keras(runtime):
            continue
        started = time.perf_counter()
        try:
            int8 = EXPORTS[runtime].precision == "int8"
            record = export_model(
                model_dir, runtime, calibration if int8 else None, calibration if calibration else None
            )
        except (ConfigError, ModelError) as exc:
            made[runtime] = {"error": str(exc)}
            continue
        made[runtime] = {"seconds": time.perf_counter() - started, "agreement": record.get("agreement")}
        print(f"exported {runtime} in {made[runtime]['seconds']:.0f} s", file=sys.stderr)
    return made


def paced_latency(  # noqa: PLR0917 (the run's parts, in order)
    broker: EmbeddedBroker,
    server_url: str,
    classifier: Classifier,
    frames: Frames,
    frames_per_s: float,
    count: int,
    settings: dict[str, Any],
) -> dict[str, list[float]]:
    """Capture → commit and capture → publish of `count` frames sent at `frames_per_s`, each
    stamped with the time it is sent; a few warm-up frames first (group join, first batch)."""
    topics = fresh_topics(broker)
    observed: dict[str, list[float]] = {"commit": [], "publish": []}
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=0, max_request_size=8_000_000
    )

    def send(i: int, suffix: str) -> None:
        meta = replace(frames.metas[i % len(frames.metas)], captured_at=datetime.now(UTC))
        meta = replace(meta, frame_id=f"{meta.frame_id}-{suffix}{i}")
        key, value, _ = frames.records[i % len(frames.records)]
        producer.send(
            topics["frames"], key=key, value=value, headers=contracts.frame_headers(meta, contracts.PNG)
        )

    try:
        with fresh_database(server_url, prefix="steel_bench") as url:
            migrate.upgrade(url)
            config = run_settings(broker, url, classifier, topics, settings)
            with open_worker(config, classifier=classifier) as worker:
                for key, histogram in (
                    ("commit", worker.metrics.capture_to_commit),
                    ("publish", worker.metrics.capture_to_publish),
                ):
                    histogram.observe = _recording(histogram.observe, observed[key])  # type: ignore[method-assign]
                thread = threading.Thread(target=worker.run, name="worker", daemon=True)
                thread.start()
                try:
                    for i in range(WARM_UP_FRAMES):
                        send(i, "warm")
                    producer.flush(30)
                    _wait_frames(worker, thread, WARM_UP_FRAMES)
                    for values in observed.values():
                        values.clear()
                    started = time.perf_counter()
                    for i in range(count):
                        time.sleep(max(0.0, started + i / frames_per_s - time.perf_counter()))
                        send(i, "paced")
                        producer.flush(30)
                    _wait_frames(worker, thread, WARM_UP_FRAMES + count)
                finally:
                    worker.request_stop()
                    thread.join(60)
    finally:
        producer.close()
    return observed


def _recording(observe: Any, into: list[float]) -> Any:
    def recorded(value: float, *args: Any, **kwargs: Any) -> Any:
        into.append(value)
        return observe(value, *args, **kwargs)

    return recorded


def _wait_frames(worker: Any, thread: threading.Thread, frames: int) -> None:
    deadline = time.monotonic() + 600
    while worker.metrics.value("steel_worker_frames_total") < frames:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the worker stopped or stalled before processing every frame")
        time.sleep(0.005)


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": len(values)}


def measure_runtime(  # noqa: PLR0917 (the run's parts, in order)
    runtime: str,
    model_dir: Path,
    args: argparse.Namespace,
    frames: Frames,
    tiles: np.ndarray,
    broker: EmbeddedBroker,
    server_url: str,
    limits: AgreementLimits,
) -> Measured:
    classifier = load_row(model_dir, runtime, args.batch_tiles, limits)
    inferencer = Inferencer(classifier)
    measured = Measured(runtime, classifier.precision, threads_of(classifier))
    bare_model(inferencer, tiles, args.batch_tiles)  # untimed: first calls compile and allocate
    sweep_tiles = tiles[:SWEEP_TILES]
    for size in SWEEP:
        classifier.batch_size = size
        inferencer.forward(sweep_tiles[:size])  # untimed: a new batch shape may compile first
        measured.sweep[size] = bare_model(inferencer, sweep_tiles, size)
    classifier.batch_size = args.batch_tiles
    measured.bare = bare_model(inferencer, tiles, args.batch_tiles)
    settings = {"batch_tiles": str(args.batch_tiles), "batch_max_wait_ms": str(args.batch_max_wait_ms)}
    # A stream long enough for MIN_WORKER_SECONDS at the bare speed: a finite stream's two ends (the
    # first poll decoded before the model starts; the last partial batch waiting BATCH_MAX_WAIT_MS
    # for frames that never come) are latency in a live stream, not throughput.
    needed = max(len(tiles), math.ceil(measured.bare * args.min_worker_seconds))
    stream = more_frames(frames, needed, args)
    stream_tiles = stream.tiles(inferencer)
    measured.bare_before_worker = bare_model(inferencer, stream_tiles, args.batch_tiles)
    measured.worker = worker_run(broker, server_url, classifier, stream, settings)
    print(
        f"{runtime}: bare {measured.bare:.1f} tiles/s, worker {measured.worker.tiles_per_s:.1f} tiles/s",
        file=sys.stderr,
    )
    return measured


_STREAMS: dict[int, Frames] = {}


def more_frames(frames: Frames, tiles: int, args: argparse.Namespace) -> Frames:
    """`frames` when it holds `tiles` tiles, else a longer stream of the same kind (made once per size)."""
    if frames.tile_total >= tiles:
        return frames
    if tiles not in _STREAMS:
        _STREAMS[tiles] = make_frames(tiles, args.strips, args.seed)
    return _STREAMS[tiles]


def add_latency(  # noqa: PLR0917 (the run's parts, in order)
    measured: Measured,
    model_dir: Path,
    args: argparse.Namespace,
    frames: Frames,
    broker: EmbeddedBroker,
    server_url: str,
    limits: AgreementLimits,
) -> None:
    assert measured.worker is not None
    classifier = load_row(model_dir, measured.runtime, args.batch_tiles, limits)
    frames_per_s = measured.worker.frames / measured.worker.seconds
    settings = {"batch_tiles": str(args.batch_tiles), "batch_max_wait_ms": str(args.batch_max_wait_ms)}
    for load in LOADS:
        observed = paced_latency(
            broker, server_url, classifier, frames, load * frames_per_s, args.latency_frames, settings
        )
        for step, values in observed.items():
            measured.latency[f"{load:.0%}/{step}"] = percentiles(values)
        print(f"{measured.runtime}: latency at {load:.0%} measured", file=sys.stderr)


def available_runtimes(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """The runtimes whose packages import, and why the others are left out."""
    import importlib  # noqa: PLC0415

    chosen, left_out = [], {}
    for runtime in requested:
        packages = () if is_keras(runtime) else EXPORTS[runtime].packages
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            left_out[runtime] = f"not installed: {', '.join(missing)}"
        else:
            chosen.append(runtime)
    return chosen, left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: .venv/bin/python bench/runtimes.py --runtimes tensorflow,openvino-int8 --tiles 350",
    )
    parser.add_argument("--tiles", type=int, default=700, help="tiles per measurement (7 per frame)")
    parser.add_argument("--input-size", type=int, default=256, help="input size of the untrained model")
    parser.add_argument(
        "--model", type=Path, default=None, help="a model artefact (with its exports) instead"
    )
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated runtimes to measure")
    parser.add_argument(
        "--batch-tiles", type=int, default=DEFAULTS["batch_tiles"], help="BATCH_TILES, also the bare batch"
    )
    parser.add_argument(
        "--batch-max-wait-ms", type=int, default=DEFAULTS["batch_max_wait_ms"], help="BATCH_MAX_WAIT_MS"
    )
    parser.add_argument(
        "--min-worker-seconds",
        type=float,
        default=MIN_WORKER_SECONDS,
        help="each worker run streams at least this long at the bare speed (more frames for fast runtimes)",
    )
    parser.add_argument(
        "--latency-frames", type=int, default=40, help="frames per paced latency run (0: none)"
    )
    parser.add_argument(
        "--tensorflow",
        default="auto",
        help="Keras' variants, comma-separated PRECISION[+xla] (e.g. float32,float16+xla); auto: the"
        " worker's defaults (float16 and XLA on a GPU, float32 on a CPU)",
    )
    parser.add_argument("--strips", type=int, default=2, help="strips the frames belong to")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    requested = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in requested if r not in RUNTIMES]
    try:
        keras_rows = keras_variants(args.tensorflow)
    except ConfigError as exc:
        parser.error(str(exc))
    requested = [row for r in requested for row in (keras_rows if r == "tensorflow" else [r])]
    if unknown or "tensorflow" not in requested:
        parser.error(
            f"--runtimes: expected tensorflow and any of {', '.join(RUNTIMES)}, received {args.runtimes!r}"
        )

    configure_logging("console", "warning", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    runtimes, left_out = available_runtimes(requested)
    frames = make_frames(args.tiles, args.strips, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        classifier, results = measure_all(args, runtimes, frames, Path(workdir), left_out)
    load_after = os.getloadavg()
    report(args, frames, classifier, results, left_out, load_before, load_after)
    if args.json is not None:
        numbers = {
            "input_size": classifier.input_size,
            "batch_tiles": args.batch_tiles,
            "tiles": frames.tile_total,
            "runtimes": [{**asdict(m), "worker_ratio": m.worker_ratio} for m in results],
            "left_out": left_out,
            "load_before": load_before,
            "load_after": load_after,
            "cpu_flags": cpu_flags(),
        }
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


def measure_all(
    args: argparse.Namespace, runtimes: list[str], frames: Frames, workdir: Path, left_out: dict[str, str]
) -> tuple[Classifier, list[Measured]]:
    """The model (made and exported here unless --model), then each runtime measured in turn on one
    broker and database server, then the latency runs; what does not load goes to `left_out`."""
    inferencer = bench_model(args.model, args.input_size, args.batch_tiles, frames, workdir)
    classifier = inferencer.classifier
    assert isinstance(classifier, Classifier)
    model_dir = classifier.model_dir
    tiles = frames.tiles(inferencer)
    limits = AgreementLimits() if args.model is not None else UNENFORCED
    exports: dict[str, Any] = {}
    if args.model is None:
        exports = prepare_exports(
            model_dir, runtimes, calibration_set(tiles, classifier, workdir / "calibration")
        )
    results: list[Measured] = []
    with EmbeddedBroker() as broker, database_server() as server_url:
        for runtime in runtimes:
            made = exports.get(runtime, {})
            try:
                if "error" in made:
                    raise ModelError(made["error"])
                measured = measure_runtime(
                    runtime, model_dir, args, frames, tiles, broker, server_url, limits
                )
            except (ConfigError, ModelError) as exc:
                left_out[runtime] = str(exc)
                continue
            measured.export_seconds = made.get("seconds")
            measured.agreement = _agreement(made, model_dir, runtime)
            results.append(measured)
        others = [m for m in results if not is_keras(m.runtime)]
        timed = [m for m in results if is_keras(m.runtime)][:1] + [max(others, key=lambda m: m.bare)] * bool(
            others
        )
        for measured in timed if args.latency_frames > 0 else []:
            add_latency(measured, model_dir, args, frames, broker, server_url, limits)
    return classifier, results


def _agreement(made: dict[str, Any], model_dir: Path, runtime: str) -> dict[str, Any] | None:
    """The agreement summary of the export made here, or else the one recorded in the artefact."""
    if made.get("agreement") or is_keras(runtime):
        return made.get("agreement")
    path = model_dir / EXPORTS[runtime].folder / "agreement.json"
    return agreement_summary(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def cpu_flags() -> str:
    """The CPU model and the vector extensions that decide these speeds (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?"
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{model}; {' '.join(shown) or 'no AVX2'}"


def report(  # noqa: PLR0917 (what the run measured, in order)
    args: argparse.Namespace,
    frames: Frames,
    classifier: Classifier,
    results: list[Measured],
    left_out: dict[str, str],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"model: {classifier.backbone} input {classifier.input_size}, version {classifier.version[:12]}"
        f"{' (untrained)' if args.model is None else ''}; {frames.tile_total} tiles in"
        f" {len(frames.records)} PNG frames of 1600x256; BATCH_TILES {args.batch_tiles},"
        f" BATCH_MAX_WAIT_MS {args.batch_max_wait_ms}"
    )
    print(f"machine: {os.cpu_count()} CPUs, {cpu_flags()}")
    print(f"load average (1/5/15 min): before {_load(load_before)}, after {_load(load_after)}")
    base = next((m for m in results if is_keras(m.runtime)), None)
    sweep = "/".join(str(s) for s in SWEEP)
    print()
    print(
        f"{'runtime':<18}{'bare tiles/s':>13}{'worker tiles/s':>15}{'worker/bare':>12}{'× Keras':>10}"
        f"   bare at batch {sweep}   threads"
    )
    for m in results:
        assert m.worker is not None
        speedup = m.bare / base.bare if base else float("nan")
        sweep_text = " / ".join(f"{m.sweep[s]:.1f}" for s in SWEEP)
        print(
            f"{m.runtime:<18}{m.bare:13.1f}{m.worker.tiles_per_s:15.1f}{m.worker_ratio:12.3f}{speedup:10.2f}"
            f"   {sweep_text}   {m.threads}"
        )
    for runtime, why in left_out.items():
        print(f"{runtime:<18}left out: {why[:200]}")
    fastest = max((m for m in results if not is_keras(m.runtime)), key=lambda m: m.bare, default=None)
    if base and base.worker and fastest and fastest.worker:
        print(
            f"\nfastest other runtime: {fastest.runtime}, {fastest.bare / base.bare:.2f}× {base.runtime}"
            " bare, "
            f"{fastest.worker.tiles_per_s / base.worker.tiles_per_s:.2f}× through the worker"
        )
    ratios = ", ".join(f"{m.runtime} {m.worker_ratio:.3f}" for m in results)
    print(f"worker/bare per runtime (target >= 0.9): {ratios}")
    agreements = [(m.runtime, m.agreement) for m in results if m.agreement]
    if agreements:
        note = "" if args.model is not None else " (untrained model, on the stream's own tiles: not enforced)"
        print(f"\nagreement with Keras{note}:")
        for runtime, a in agreements:
            assert a is not None
            print(
                f"  {runtime:<18} max |Δscore| {a['max_abs_difference']:.2e}, worst class: decisions"
                " flipped on"
                f" {a['max_flip_share']:.2%} of {a['tiles']} tiles, F1 drop {a['max_f1_drop']:.4f}"
            )
    with_latency = [m for m in results if m.latency]
    if with_latency:
        print(
            f"\nlatency from capture, seconds ({args.latency_frames} frames per run, sent at a share of the"
            " runtime's measured worker throughput):"
        )
        heads = ("to rows committed p50/p95/p99", "to detection published p50/p95/p99")
        print(f"  {'runtime':<18}{'load':>6}  {heads[0]:>32}  {heads[1]:>36}")
        for m in with_latency:
            for load in LOADS:
                cells = []
                for step in ("commit", "publish"):
                    p = m.latency[f"{load:.0%}/{step}"]
                    cells.append(f"{p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f}")
                print(f"  {m.runtime:<18}{load:>6.0%}  {cells[0]:>32}  {cells[1]:>36}")


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
