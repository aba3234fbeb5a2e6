"""`steel-worker demo`: broker, database, demo model, simulated strips through the worker, summary,
defect map and the model's measured quality on the stream (see `worker.demo.run`)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

_DESCRIPTION = textwrap.dedent(
    """\
    The whole product on this machine, in one command:
      1. a Kafka-compatible broker (embedded Tansu, or $KAFKA_BOOTSTRAP_SERVERS) and PostgreSQL
         (embedded, or $DATABASE_URL), migrated to the newest schema;
      2. the demo model: ResNet50 trained from scratch on synthetic tiles the first time (about
         18 minutes on 2 CPU cores), cached in ~/.cache/steel-worker/demo-model-<recipe hash>
         ($STEEL_WORKER_CACHE_DIR) and reused afterwards;
      3. the worker (`steel-worker run` in a subprocess) fed by the line simulator: synthetic
         strips as a plant sees them, in turn: clean, marked once per revolution by a roll of the
         alert rules file, clean, scratched by a guide, clean (each with a few stray defects); a
         live view shows frames/s and detections by class with their cause;
      4. a summary: frames, tiles, detections per class with cause and prevention, alerts with
         rule, roll, cause and prevention; a strip report with its PNG defect map; and the
         quality of the model on this stream, measured against the simulator's ground truth:
         share of defective tiles found with the right class (target >= 90 %) and share of clean
         tiles flagged (target <= 5 %);
      5. the web console (`steel-worker console`) over the demo's database, until Ctrl-C: the
         strips' defect maps, the alerts with the crops behind them, the gallery, reviews; the
         demo prints its address and a user's password (--no-console to end after the summary).
    Exit status: 0 when both targets are met, 1 when one is missed, 2 on errors."""
)

_EPILOG = """\
examples:
  make demo                                   # creates .venv, installs, runs this command
  steel-worker demo                           # five 20 m strips at 2 m/s, real-time camera pace
  steel-worker demo --strips 5 --fps 0        # more strips, frames sent as fast as possible
  steel-worker demo --roll "pinch roll" --roll-mark-class holes
  KAFKA_BOOTSTRAP_SERVERS=localhost:9092 DATABASE_URL=postgresql://steel@db/defects steel-worker demo
  steel-worker demo --model runs/my-model     # stream through your own artefact instead

Outputs in --out: worker.log, broker.log (embedded broker), report/<strip>-defect-map.png and the
strip's Markdown and CSV tables. Worker settings not given in the environment take demo defaults
(METRICS_PORT=0, LOG_FORMAT=json, KAFKA_SESSION_TIMEOUT_MS=6000, BATCH_MAX_WAIT_MS=200).
"""


def register(subparsers: Any) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="run the whole product locally: broker, database, demo model, simulated strips, summary",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("stream")
    g.add_argument(
        "--strips",
        type=int,
        default=5,
        metavar="N",
        help=(
            "strips to simulate, in turn clean, roll mark, clean, guide scratches, clean"
            " (default %(default)s)"
        ),
    )
    g.add_argument(
        "--strip-length-m",
        type=float,
        default=20.0,
        metavar="M",
        help="length of each strip (default %(default)s)",
    )
    g.add_argument(
        "--defect-rate",
        type=float,
        default=0.05,
        metavar="R",
        help="stray random defects per 256×1600 frame, on every strip (default %(default)s)",
    )
    g.add_argument(
        "--roll",
        default="F7 top work roll",
        help="roll of the alert rules file whose pitch (π × diameter) spaces the injected marks"
        " (default %(default)r)",
    )
    g.add_argument(
        "--roll-mark-class",
        default="rolling",
        choices=("holes", "scratches", "rolling"),
        help="class of the roll marks (default %(default)s)",
    )
    g.add_argument(
        "--line-speed-mps", type=float, default=2.0, metavar="V", help="line speed (default %(default)s)"
    )
    g.add_argument(
        "--fps",
        type=float,
        metavar="F",
        help="frames per second sent; 0 = as fast as possible (default: the camera's pace at the line speed)",
    )
    g.add_argument("--seed", type=int, default=7, metavar="N", help="simulator seed (default %(default)s)")
    g = p.add_argument_group("model and outputs")
    g.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="use this model artefact instead of the (cached) demo model",
    )
    g.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="alert rules file (default: $ALERT_RULES, else config/alert-rules.yaml)",
    )
    g.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        metavar="DIR",
        help="output folder (default %(default)s)",
    )
    g.add_argument(
        "--idle-timeout-s",
        type=float,
        default=300.0,
        metavar="S",
        help="give up when the worker writes nothing for this long (default %(default)s)",
    )
    g.add_argument(
        "--plain", action="store_true", help="plain progress lines instead of the refreshing live view"
    )
    g.add_argument(
        "--no-console",
        action="store_true",
        help="end after the summary instead of serving the web console until Ctrl-C",
    )
    g.add_argument(
        "--console-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="the console's port on 127.0.0.1 (default %(default)s; another free one when taken)",
    )
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415

    from worker.demo.run import DemoOptions, run_demo  # noqa: PLC0415

    # SIGTERM (a supervisor, `kill`, `docker stop`) ends the demo as Ctrl-C does: the worker, the
    # console, the embedded broker and PostgreSQL are stopped on the way out, none left behind.
    signal.signal(signal.SIGTERM, _interrupt)

    options = DemoOptions(
        strips=args.strips,
        strip_length_m=args.strip_length_m,
        defect_rate=args.defect_rate,
        roll=args.roll,
        roll_mark_class=args.roll_mark_class,
        line_speed_mps=args.line_speed_mps,
        fps=args.fps,
        seed=args.seed,
        out_dir=args.out,
        model_dir=args.model,
        rules_path=args.rules,
        idle_timeout_s=args.idle_timeout_s,
        live=False if args.plain else None,
        console=not args.no_console,
        console_port=args.console_port,
    )
    result = run_demo(options)
    if not result.quality.meets_targets:
        print("the demo model missed a quality target (see above); exit status 1")
        return 1
    return 0
