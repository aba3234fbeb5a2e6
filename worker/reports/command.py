"""`steel-worker report`: a strip's defect map and tables, or a period's class counts and top causes."""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.core.errors import ConfigError

_EPILOG = """\
examples:
  steel-worker report strip S-0042 --out reports/
      reports/S-0042-defect-map.png  position along vs across, a marker per class, alerts shaded
      reports/S-0042.md              summary, classes with cause and prevention, alerts
      reports/S-0042-{classes,detections,alerts}.csv
  steel-worker report period --since 2026-03-01 --until 2026-03-08 --bucket shift --out reports/
      class counts per shift (PNG, CSV) and the top causes (Markdown, CSV)

Times without a zone are read in --timezone, which also sets the hours, shifts (06-14, 14-22,
22-06 by default; see docs/analysts.md) and days of the buckets. The database comes from
--database-url or DATABASE_URL; a read-only login (role steel_analyst) is enough.
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the files (created if missing)"
    )
    common.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    common.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="IANA time zone of the times shown (default: UTC)"
    )
    return common


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a strip's defect map and tables, or a period's class counts and top causes",
        description="Reports for analysts from the defect database (PNG, Markdown, CSV).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="report_kind", metavar="KIND", required=True)
    strip = kinds.add_parser("strip", parents=[_common()], help="one strip: defect map, classes, alerts")
    strip.add_argument("strip_id", metavar="STRIP_ID", help="the strip's id, as in the frames' metadata")
    period = kinds.add_parser("period", parents=[_common()], help="class counts over time and top causes")
    period.add_argument(
        "--since", required=True, metavar="TIME", help="start, e.g. 2026-03-01 or 2026-03-01T06:00"
    )
    period.add_argument("--until", required=True, metavar="TIME", help="end (exclusive), same forms")
    period.add_argument(
        "--bucket",
        choices=("hour", "shift", "day"),
        default="hour",
        help="time step of the class counts (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def parse_time(text: str, option: str, zone: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone, in `zone`. ConfigError names the option."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option}: expected an ISO 8601 date or time such as 2026-03-01 or 2026-03-01T06:00,"
            f" received {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(zone))


def run(args: argparse.Namespace) -> int:
    from worker.storage.engine import create_engine  # noqa: PLC0415

    if not args.database_url:
        raise ConfigError("steel-worker report: no database; set DATABASE_URL or pass --database-url")
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--timezone: expected an IANA time zone such as Europe/Vienna, received {args.timezone!r}"
        ) from None
    engine = create_engine(args.database_url)
    try:
        if args.report_kind == "strip":
            from worker.reports.strip import write_strip_report  # noqa: PLC0415

            paths = write_strip_report(engine, args.strip_id, args.out, timezone=args.timezone).paths
        else:
            from worker.reports.period import write_period_report  # noqa: PLC0415

            since = parse_time(args.since, "--since", args.timezone)
            until = parse_time(args.until, "--until", args.timezone)
            paths = write_period_report(
                engine, since, until, args.out, bucket=args.bucket, timezone=args.timezone
            ).paths
    finally:
        engine.dispose()
    for path in paths:
        print(path)
    return 0
