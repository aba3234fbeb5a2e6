"""`steel-worker alerts`: list the maintenance alerts, acknowledge one."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from worker.core.errors import ConfigError

if TYPE_CHECKING:
    from worker.alerts.store import AlertRecord

_EPILOG = """\
examples:
  steel-worker alerts list                       the 50 newest alerts, newest first
  steel-worker alerts list --strip S-0042 --unacked
  steel-worker alerts list --json --limit 500    machine-readable (one JSON array)
  steel-worker alerts ack 17 --by "A. Novak"     record who acknowledged alert 17, and when

Alerts are raised by the worker from the rules in config/alert-rules.yaml (density of a class,
roll marks recurring at a roll's circumference, single severe detections); each names the class's
likely cause and the preventive action. An acknowledgement is kept as given: acknowledging an
alert twice is refused. The database comes from --database-url or DATABASE_URL.
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    return common


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="list the cause-linked maintenance alerts, acknowledge them",
        description="List the alerts the worker raised (with cause and prevention) and acknowledge them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="alerts_action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        parents=[_common()],
        help="show alerts, newest first",
        description="Show alerts, newest first, each with its cause and preventive action.",
    )
    listing.add_argument("--strip", metavar="STRIP_ID", help="only this strip's alerts")
    listing.add_argument("--unacked", action="store_true", help="only alerts nobody acknowledged yet")
    listing.add_argument("--json", action="store_true", help="print one JSON array instead of text")
    listing.add_argument(
        "--limit", type=int, default=50, help="at most this many alerts (default: %(default)s)"
    )
    ack = actions.add_parser("ack", parents=[_common()], help="acknowledge alert ID: keeps who and when")
    ack.add_argument("id", type=int, metavar="ID", help="the alert's id (first column of `alerts list`)")
    ack.add_argument("--by", required=True, metavar="NAME", help="who acknowledges it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.alerts import store  # noqa: PLC0415
    from worker.storage.engine import create_engine  # noqa: PLC0415

    if not args.database_url:
        raise ConfigError("steel-worker alerts: no database; set DATABASE_URL or pass --database-url")
    engine = create_engine(args.database_url)
    try:
        if args.alerts_action == "ack":
            record = store.acknowledge(engine, args.id, args.by)
            assert record.acknowledged_at is not None
            print(
                f"alert {record.id} acknowledged by {record.acknowledged_by}"
                f" at {record.acknowledged_at.isoformat()}"
            )
            return 0
        records = store.list_alerts(
            engine, strip_id=args.strip, unacknowledged=args.unacked, limit=args.limit
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2, ensure_ascii=False))
    elif not records:
        print(
            "no alerts"
            + (f" for strip {args.strip}" if args.strip else "")
            + (" unacknowledged" if args.unacked else "")
        )
    else:
        print("\n\n".join(format_alert(r) for r in records))
    return 0


def format_alert(record: AlertRecord) -> str:
    """Four lines about one alert, for people."""
    where = f"strip {record.strip_id}" + (f" pass {record.pass_id}" if record.pass_id != "1" else "")
    where += f" ({record.surface})" if record.surface else ""
    head = (
        f"#{record.id}  {record.severity.upper()}  {record.rule} ({record.kind})  {where}"
        f"  {record.position_start_m:.2f}–{record.position_end_m:.2f} m  {record.detection_count} detections"
        f"  raised {record.created_at.isoformat(timespec='seconds')}"
    )
    shown = record.class_display_name or record.class_name
    what = f"    {shown}" + (f" ({record.class_name})" if shown != record.class_name else "")
    if record.roll:
        what += f": roll mark of {record.roll}, every {record.pitch_m:.3f} m"
    cause = f"    cause: {record.cause}\n    prevention: {record.prevention}"
    if record.acknowledged_at is not None:
        when = record.acknowledged_at.isoformat(timespec="seconds")
        state = f"    acknowledged by {record.acknowledged_by} at {when}"
    else:
        state = "    not acknowledged"
    return "\n".join((head, what, cause, state))
