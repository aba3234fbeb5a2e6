"""The period report: class counts over time and the top causes, between two times.

Files written to the output folder (`<since>_<until>` in the file names): `…-class-counts.png`
(detections per class per hour, shift or day, and frames inspected), `…-class-counts.csv`,
`…-top-causes.csv` and `….md`. Buckets follow the report's time zone (`--timezone`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from worker.core.errors import ConfigError
from worker.reports.output import markdown_table, prepare_dir, write_csv
from worker.reports.queries import PeriodData, period_data

STEPS = {"hour": timedelta(hours=1), "shift": timedelta(hours=8), "day": timedelta(days=1)}


@dataclass(frozen=True)
class PeriodReport:
    """The files of one period report."""

    chart: Path
    markdown: Path
    counts_csv: Path
    causes_csv: Path

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.chart, self.markdown, self.counts_csv, self.causes_csv)


def write_period_report(
    engine: sa.Engine,
    since: datetime,
    until: datetime,
    out: str | Path,
    *,
    bucket: str = "hour",
    timezone: str = "UTC",
) -> PeriodReport:
    """Write the report of [since, until) into `out`; ConfigError if the period is empty or
    inverted, or no frame was captured in it."""
    if until <= since:
        raise ConfigError(f"--until {until.isoformat()} must be after --since {since.isoformat()}")
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('TimeZone', :tz, false)"), {"tz": timezone})
        data = period_data(conn, since, until, bucket)
    folder = prepare_dir(out)
    stem = f"period-{since:%Y%m%dT%H%M}-{until:%Y%m%dT%H%M}"
    report = PeriodReport(
        chart=folder / f"{stem}-class-counts.png",
        markdown=folder / f"{stem}.md",
        counts_csv=folder / f"{stem}-class-counts.csv",
        causes_csv=folder / f"{stem}-top-causes.csv",
    )
    draw_class_counts(data, report.chart, timezone)
    write_csv(
        report.counts_csv, data.counts, ("bucket", "class_name", "detections", "frames", "class_display_name")
    )
    write_csv(
        report.causes_csv,
        data.causes,
        (
            "cause",
            "prevention",
            "classes",
            "detections",
            "share_percent",
            "strips",
            "alerts",
            "class_display_names",
        ),
    )
    report.markdown.write_text(_markdown(data, report, timezone), encoding="utf-8")
    return report


def draw_class_counts(data: PeriodData, path: Path, timezone: str) -> None:
    """Detections per class per bucket (lines), frames inspected per bucket (grey bars, right axis)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    zone = ZoneInfo(timezone)

    def wall(at: datetime) -> datetime:  # matplotlib shows aware times in UTC: plot wall-clock times
        return at.astimezone(zone).replace(tzinfo=None)

    rows = [{**row, "bucket": wall(row["bucket"])} for row in data.counts]
    buckets = sorted({row["bucket"] for row in rows})
    classes = list(dict.fromkeys(row["class_name"] for row in rows))
    shown = {row["class_name"]: row.get("class_display_name") or row["class_name"] for row in rows}
    frames = {row["bucket"]: row["frames"] for row in rows}
    step = STEPS[data.bucket]
    figure, ax = plt.subplots(figsize=(12, 5))
    inspected = ax.twinx()
    inspected.bar(
        buckets,
        [frames[b] for b in buckets],
        width=step.total_seconds() / 86400 * 0.9,
        align="edge",
        color="#dddddd",
        zorder=0,
    )
    inspected.set_ylabel(f"frames inspected per {data.bucket} (grey)")
    ax.set_zorder(inspected.get_zorder() + 1)
    ax.patch.set_visible(False)
    for name in classes:
        counts = {row["bucket"]: row["detections"] for row in rows if row["class_name"] == name}
        xs: list[Any] = []
        ys: list[float] = []
        for n, b in enumerate(buckets):
            if n and b - buckets[n - 1] > step * 1.5:  # no frames in between: break the line
                xs.append(buckets[n - 1] + step)
                ys.append(math.nan)
            xs.append(b + step / 2)
            ys.append(counts.get(b, 0))
        ax.plot(xs, ys, marker="o", label=shown[name])
    ax.set_ylabel(f"detections per {data.bucket}")
    ax.set_xlabel(f"{data.bucket} ({timezone})")
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"Detections per class, {data.since:%Y-%m-%d %H:%M} – {data.until:%Y-%m-%d %H:%M}"
        f" ({data.frames} frames, {data.strips} strips)",
        loc="left",
    )
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(data: PeriodData, report: PeriodReport, timezone: str) -> str:
    totals: dict[str, int] = {}  # by display name, in catalogue order
    for row in data.counts:
        shown = row.get("class_display_name") or row["class_name"]
        totals[shown] = totals.get(shown, 0) + int(row["detections"])
    return "\n".join(
        [
            f"# Defects from {data.since.isoformat()} until {data.until.isoformat()}\n",
            f"{data.frames} frames of {data.strips} strips; buckets: {data.bucket} ({timezone}).\n",
            f"![class counts]({report.chart.name})\n",
            "## Detections per class\n",
            markdown_table(
                [{"class_name": k, "detections": v} for k, v in totals.items()],
                {"class_name": "class", "detections": "detections"},
            ),
            "## Top causes\n",
            markdown_table(
                data.causes,
                {
                    "cause": "cause",
                    "class_display_names": "classes",
                    "detections": "detections",
                    "share_percent": "share (%)",
                    "strips": "strips",
                    "alerts": "alerts",
                    "prevention": "prevention",
                },
            ),
            f"\nTables: [{report.counts_csv.name}]({report.counts_csv.name}),"
            f" [{report.causes_csv.name}]({report.causes_csv.name}).\n",
        ]
    )
