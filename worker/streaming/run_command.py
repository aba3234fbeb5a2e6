"""`steel-worker run`: the streaming worker (Kafka frames → classifier → PostgreSQL and Kafka).

Settings come from the environment and the flags (built from `settings.OPTIONS`); the worker
itself starts in `worker.streaming.service`. SIGTERM and SIGINT ask the loop to finish its batch,
commit and exit 0.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import Any

from worker.streaming.settings import OPTIONS, REQUIRED, load_settings

EPILOG = """\
examples:
  # the three required settings from the environment, everything else by default
  export KAFKA_BOOTSTRAP_SERVERS=kafka:9092
  export DATABASE_URL=postgresql://steel:PASSWORD@db:5432/defects
  export MODEL_PATH=/models/resnet50-2024-05
  steel-worker db upgrade && steel-worker run

  # flags override variables: a local broker, bigger batches for a GPU
  steel-worker run --bootstrap localhost:9092 --model runs/demo-model --batch-tiles 128

Scale out by starting more workers with the same CONSUMER_GROUP (one per GPU), up to the
number of partitions of FRAMES_TOPIC. Delivery: database rows exactly once per frame id;
detection, alert and dead-letter messages at least once (deduplicate by frame_id / alert_id).
"""

# Short spellings of the most used flags, next to the long ones built from OPTIONS.
ALIASES = {"model_path": "--model", "bootstrap_servers": "--bootstrap"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the streaming worker: frames from Kafka → detections to PostgreSQL and Kafka",
        description=textwrap.dedent(
            """\
            Consume camera frames from Kafka, classify their 256x256 tiles with the model,
            write each frame and its detections to PostgreSQL in one transaction per
            micro-batch, publish one detection message per frame and cause-linked alerts,
            dead-letter unusable frames, and commit offsets only after all of that succeeded.
            Every option also reads from the environment variable named in its help; a flag
            wins over its variable. Secrets are best given as variables (flags show in `ps`)."""
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        flags = [option.flag] + ([ALIASES[option.field]] if option.field in ALIASES else [])
        if option.default is REQUIRED:
            default = "required"
        elif option.shown_default is not None:
            default = f"default {option.shown_default}"
        elif option.default is None:
            default = "unset"
        else:
            default = f"default {option.default}"
        parser.add_argument(
            *flags,
            dest=option.field,
            default=None,
            metavar=option.env,
            help=f"{option.help} [${option.env}; {default}]",
        )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Kafka, SQLAlchemy and the model code load here, not at import: `--help` stays fast.
    from worker.streaming.observability import configure_logging  # noqa: PLC0415
    from worker.streaming.service import serve  # noqa: PLC0415

    settings = load_settings(os.environ, {o.field: getattr(args, o.field) for o in OPTIONS})
    configure_logging(settings.log_format, settings.log_level)
    return serve(settings)
