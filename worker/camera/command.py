"""`steel-worker simulate`: publish camera frames of simulated strips to the frames topic."""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import Any

from worker.core.errors import ConfigError

DEFAULT_STRIP_LENGTH_M = 100.0

_DESCRIPTION = textwrap.dedent(
    """\
    Publish the frames a camera over the line would take of one or more strips, following the
    frames contract (key = strip id, value = PNG/JPEG/raw image, headers content-type and
    frame-meta, validated against schemas/frame-meta.v1.json before sending).

    Geometry: frame k of a strip starts at position_m = k × frame height × mm-per-px-along / 1000
    (256 px at 1 mm/px: every 0.256 m) and was captured at strip start + position / line speed.
    Strips pass one after another, 5 s apart (--interleave: side by side, frames in turn).
    Frames are synthetic by default (seeded generator: holes, scratches, rolling at --defect-rate),
    or the images of a folder (--images, sorted by name, cycled; no synthetic defects then).

    How much: each strip is --strip-length-m long (default 100 m when --frames is not given);
    --frames N stops after N frames in all, and without a length shares N out between the strips.

    Roll marks (for the periodic alert rule): a worn or damaged mill roll prints the same mark once
    per revolution, every π × roll diameter metres. --roll-mark CLASS:PITCH_M[:COLUMN_MM] injects a
    defect of CLASS every PITCH_M metres along each strip (first print at a random phase per strip),
    at COLUMN_MM from the strip edge (default: a random place per strip, the same for every print).
    The summary lists where each print landed."""
)

_EPILOG = """\
examples:
  # 200 synthetic frames on one strip, as fast as the broker takes them
  steel-worker simulate --bootstrap localhost:9092 --frames 200 --fps 0

  # three 60 m strips at 5 m/s in real time, with a worn 0.64 m roll printing "rolling" marks
  steel-worker simulate --strips 3 --strip-length-m 60 --line-speed-mps 5 \\
      --roll-mark rolling:2.01 --roll-mark holes:1.57:800

  # real Severstal frames, cycled, sent as JPEG at 10 frames/s
  steel-worker simulate --images ../shared/data/severstal-samples/images --frames 500 \\
      --encoding jpeg --fps 10

The topic is created when missing (--partitions, default 3: the most workers one group can use).
Strip ids default to SIM-<date-time>-<token>-<n>, new on each run, so re-runs are never taken for
redeliveries by the worker (it writes each frame id once).
"""


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="publish simulated camera frames (synthetic or from a folder) of strips to Kafka",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kafka = parser.add_argument_group("Kafka")
    kafka.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        metavar="HOST:PORT",
        help="bootstrap servers, comma-separated (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    kafka.add_argument(
        "--topic",
        default=os.environ.get("FRAMES_TOPIC") or "mill.frames",
        help="frames topic (default: $FRAMES_TOPIC or mill.frames; now %(default)s)",
    )
    kafka.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        default=3,
        help="partitions of the topic if it must be created (default: %(default)s)",
    )
    kafka.add_argument(
        "--replication-factor",
        type=int,
        metavar="N",
        default=1,
        help="replication factor of the topic if it must be created (default: %(default)s)",
    )

    strips = parser.add_argument_group("strips and line")
    which = strips.add_mutually_exclusive_group()
    which.add_argument("--strips", type=int, default=1, metavar="N", help="strips to send (default: 1)")
    which.add_argument(
        "--strip-id",
        action="append",
        dest="strip_ids",
        metavar="ID",
        help="name the strips instead (repeat for several); frame ids are ID-f000000, ID-f000001, …",
    )
    strips.add_argument(
        "--strip-length-m",
        type=float,
        metavar="METRES",
        help=f"length of each strip (default: {DEFAULT_STRIP_LENGTH_M:g} unless --frames is given)",
    )
    strips.add_argument("--frames", type=int, metavar="N", help="stop after N frames in all")
    strips.add_argument(
        "--interleave",
        action="store_true",
        help="strips side by side (as on parallel lines), frames in turn; default one after another",
    )
    strips.add_argument(
        "--line-speed-mps",
        type=float,
        default=2.0,
        metavar="M/S",
        help="strip speed under the camera, sets captured_at (default: %(default)s)",
    )
    strips.add_argument(
        "--fps",
        type=float,
        metavar="F",
        help="frames sent per second; 0 = as fast as possible (default: real time, each frame when "
        "the camera would take it: line speed / frame length)",
    )
    strips.add_argument("--line", default="L1", help="mill line id in the metadata (default: %(default)s)")
    strips.add_argument(
        "--camera", default="cam-top-1", help="camera id in the metadata (default: %(default)s)"
    )
    strips.add_argument(
        "--surface", choices=("top", "bottom"), default="top", help="side seen (default: %(default)s)"
    )

    images = parser.add_argument_group("images")
    images.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="send the images of DIR (png, jpg, bmp, tif; sorted, cycled) instead of synthetic frames",
    )
    images.add_argument(
        "--encoding",
        choices=("png", "jpeg", "raw"),
        default="png",
        help="image encoding of the message value (default: %(default)s)",
    )
    images.add_argument(
        "--jpeg-quality", type=int, metavar="Q", default=95, help="JPEG quality 1..100 (default: %(default)s)"
    )
    images.add_argument(
        "--seed", type=int, metavar="N", default=0, help="seed of the synthetic frames (default: 0)"
    )
    images.add_argument(
        "--frame-height", type=int, metavar="PX", help="synthetic frame rows, along the strip (default: 256)"
    )
    images.add_argument(
        "--frame-width",
        type=int,
        metavar="PX",
        help="synthetic frame columns, across the strip (default: 1600)",
    )
    images.add_argument(
        "--mm-per-px-along",
        type=float,
        metavar="MM",
        default=1.0,
        help="mm of strip per pixel row (default: %(default)s)",
    )
    images.add_argument(
        "--mm-per-px-across",
        type=float,
        metavar="MM",
        default=1.0,
        help="mm of strip per pixel column (default: %(default)s)",
    )
    images.add_argument(
        "--edge-offset-mm",
        type=float,
        metavar="MM",
        default=0.0,
        help="distance of the frame's left column from the strip edge (default: %(default)s)",
    )

    defects = parser.add_argument_group("synthetic defects")
    defects.add_argument(
        "--defect-rate",
        type=float,
        metavar="RATE",
        help="mean random defects per 256×1600 px of frame (default: 1.1; 0 = none but roll marks)",
    )
    defects.add_argument(
        "--roll-mark",
        action="append",
        dest="roll_marks",
        default=[],
        metavar="CLASS:PITCH_M[:COLUMN_MM]",
        help="inject CLASS (holes, scratches, rolling) every PITCH_M metres along each strip; repeatable",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def plan_from_args(args: argparse.Namespace) -> Any:
    """The SimulationPlan the options describe; ConfigError names the option at fault."""
    from worker.camera.plan import RollMark, SimulationPlan  # noqa: PLC0415
    from worker.datasets.synthetic import DEFAULT_DEFECT_RATE  # noqa: PLC0415

    if args.images is not None:
        given = [
            flag
            for flag, value in (
                ("--defect-rate", args.defect_rate),
                ("--frame-height", args.frame_height),
                ("--frame-width", args.frame_width),
                ("--roll-mark", args.roll_marks or None),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} shape synthetic frames; with --images the folder's images are sent"
                " as they are"
            )
    length = args.strip_length_m
    if length is None and args.frames is None:
        length = DEFAULT_STRIP_LENGTH_M
    return SimulationPlan(
        topic=args.topic,
        strips=args.strips,
        strip_ids=tuple(args.strip_ids or ()),
        strip_length_m=length,
        frames=args.frames,
        interleave=args.interleave,
        line_speed_mps=args.line_speed_mps,
        fps=args.fps,
        seed=args.seed,
        images_dir=args.images,
        encoding=args.encoding,
        jpeg_quality=args.jpeg_quality,
        frame_height=args.frame_height or 256,
        frame_width=args.frame_width or 1600,
        mm_per_px_along=args.mm_per_px_along,
        mm_per_px_across=args.mm_per_px_across,
        edge_offset_mm=args.edge_offset_mm,
        line=args.line,
        camera=args.camera,
        surface=args.surface,
        defect_rate=DEFAULT_DEFECT_RATE if args.defect_rate is None else args.defect_rate,
        roll_marks=tuple(RollMark.parse(text) for text in args.roll_marks),
        partitions=args.partitions,
        replication_factor=args.replication_factor,
    )


def run(args: argparse.Namespace) -> int:
    from worker.camera.send import simulate  # noqa: PLC0415

    if not args.bootstrap:
        raise ConfigError("no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap HOST:PORT")
    plan = plan_from_args(args)
    summary = simulate(args.bootstrap, plan, progress=not args.no_progress)
    print(summary.table())
    return 0
