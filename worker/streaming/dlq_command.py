"""`steel-worker dlq replay`: send dead letters back to the frames topic (`worker.streaming.replay`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.core.errors import ConfigError
from worker.core.refusals import REASONS

_EPILOG = """\
examples:
  steel-worker dlq replay --reason unstorable --reason decode-timeout --dry-run
      what would go back to the frames topic, counted per reason (nothing is sent)
  steel-worker dlq replay --reason unstorable --since 6h
      frames the database refused in the last six hours, once the cause is mended
  steel-worker dlq replay --any-reason --since 2026-12-07T06:00Z --until 2026-12-07T07:00Z

Each dead letter goes back as the camera sent it (key, value, headers; plus `replay-of` naming the
dead letter). Not sent, and counted: dead letters without their bytes (too large for the topic:
replay those from the source coordinates in their dlq-source-* headers), frames the database
already holds (with --database-url or DATABASE_URL), and frames whose id the database holds for
another message. Running a replay twice is harmless: the worker takes a frame it has stored as a
redelivery. The replay reads the dead-letter topic up to its end when the replay starts.

Kafka: --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS, and the worker's KAFKA_SECURITY_PROTOCOL,
KAFKA_SASL_* and KAFKA_SSL_* variables for TLS and SASL.

Reasons: """ + ", ".join(REASONS)

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, what: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time with an offset (`2026-12-07T06:00Z`) or an age (`90m`, `6h`, `3d`: that long
    before `now`); ConfigError otherwise."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(
            f"{what}: expected an ISO 8601 time with its offset (2026-12-07T06:00Z) or an age such as"
            f" 90m, 6h or 3d, received {text!r}"
        )
    return moment


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="replay dead letters to the frames topic",
        description="Work with the dead-letter topic of the worker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    replay = actions.add_parser(
        "replay",
        help="send selected dead letters back to the frames topic",
        description="Send the dead letters of the chosen reasons and times back to the frames topic.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = replay.add_argument_group("which dead letters")
    reasons = which.add_mutually_exclusive_group(required=True)
    reasons.add_argument(
        "--reason",
        action="append",
        choices=REASONS,
        metavar="REASON",
        help="replay dead letters of this reason (repeat for several; the list is below)",
    )
    reasons.add_argument("--any-reason", action="store_true", help="replay dead letters of every reason")
    which.add_argument(
        "--since", metavar="TIME", help="dead-lettered at or after TIME (ISO 8601, or 90m, 6h, 3d)"
    )
    which.add_argument("--until", metavar="TIME", help="dead-lettered before TIME (ISO 8601, or an age)")
    replay.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing")
    replay.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    where = replay.add_argument_group("where")
    where.add_argument(
        "--bootstrap-servers",
        metavar="HOSTS",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    where.add_argument(
        "--dlq-topic",
        default=os.environ.get("DLQ_TOPIC", "mill.frames.dlq"),
        help="the dead-letter topic (default: $DLQ_TOPIC or %(default)s)",
    )
    where.add_argument(
        "--frames-topic",
        default=os.environ.get("FRAMES_TOPIC", "mill.frames"),
        help="where the frames go back to (default: $FRAMES_TOPIC or %(default)s)",
    )
    where.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="skip frames the ledger already holds (default: $DATABASE_URL; unset: no check)",
    )
    replay.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415  (keeps --help fast)

    from worker.streaming.replay import Selection, replay  # noqa: PLC0415
    from worker.streaming.settings import load_kafka_connection  # noqa: PLC0415

    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    if since and until and until <= since:
        raise ConfigError(f"--until ({until.isoformat()}) must be after --since ({since.isoformat()})")
    selection = Selection(frozenset(args.reason) if args.reason else None, since, until)
    connection = load_kafka_connection(overrides={"bootstrap_servers": args.bootstrap_servers})
    options = connection.options("steel-worker-dlq-replay")
    stored_hashes = None
    engine = None
    if args.database_url:
        from worker.storage.engine import create_engine  # noqa: PLC0415
        from worker.storage.writer import stored_message_hashes  # noqa: PLC0415

        engine = create_engine(args.database_url)
        stored_hashes = lambda ids: stored_message_hashes(engine, ids)  # noqa: E731
    consumer = KafkaConsumer(**options, enable_auto_commit=False, max_partition_fetch_bytes=20_000_000)
    producer = KafkaProducer(**options, acks="all", max_request_size=20_000_000, linger_ms=20)
    try:
        report = replay(
            consumer,
            producer,
            dlq_topic=args.dlq_topic,
            frames_topic=args.frames_topic,
            selection=selection,
            stored_hashes=stored_hashes,
            dry_run=args.dry_run,
            progress=lambda r: print(f"… {r.read} dead letters read", file=sys.stderr),
        )
    finally:
        consumer.close()
        producer.close(timeout=10)
        if engine is not None:
            engine.dispose()
    print(json.dumps(report.as_json(), indent=2) if args.json else report.table())
    return 0
