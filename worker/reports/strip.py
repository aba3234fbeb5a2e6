"""The strip report: a PNG defect map, a Markdown page and CSV tables for one strip.

Files written to the output folder (`<strip>` is the strip id made safe for file names):
`<strip>-defect-map.png` (position along the strip vs across it, one marker per class, alerts
shaded as bands along the strip, one panel per surface), `<strip>.md` (summary, classes with
cause and prevention, alerts), `<strip>-classes.csv`, `<strip>-detections.csv`,
`<strip>-alerts.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worker.reports.output import markdown_table, prepare_dir, safe_name, write_csv
from worker.reports.queries import StripData, strip_data

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
SEVERITY_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#bcbd22"}

DETECTION_COLUMNS = (
    "detection_id",
    "frame_id",
    "surface",
    "camera",
    "class_name",
    "confidence",
    "along_m",
    "across_mm",
    "along_start_m",
    "along_end_m",
    "captured_at",
    "class_display_name",
)
CLASS_COLUMNS = (
    "class_name",
    "detections",
    "per_100m",
    "first_position_m",
    "last_position_m",
    "mean_confidence",
    "max_confidence",
    "cause",
    "prevention",
    "class_display_name",
)
ALERT_COLUMNS = (
    "alert_id",
    "created_at",
    "rule",
    "rule_kind",
    "severity",
    "surface",
    "class_name",
    "roll",
    "pitch_m",
    "position_start_m",
    "position_end_m",
    "detection_count",
    "cause",
    "prevention",
    "acknowledged_by",
    "acknowledged_at",
    "class_display_name",
)


@dataclass(frozen=True)
class StripReport:
    """The files of one strip report."""

    defect_map: Path
    markdown: Path
    classes_csv: Path
    detections_csv: Path
    alerts_csv: Path

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.defect_map, self.markdown, self.classes_csv, self.detections_csv, self.alerts_csv)


def write_strip_report(
    engine: sa.Engine, strip_id: str, out: str | Path, timezone: str = "UTC"
) -> StripReport:
    """Write the report of `strip_id` into `out`; ConfigError for a strip without frames."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('TimeZone', :tz, false)"), {"tz": timezone})
        data = strip_data(conn, strip_id)
    folder = prepare_dir(out)
    stem = safe_name(strip_id)
    report = StripReport(
        defect_map=folder / f"{stem}-defect-map.png",
        markdown=folder / f"{stem}.md",
        classes_csv=folder / f"{stem}-classes.csv",
        detections_csv=folder / f"{stem}-detections.csv",
        alerts_csv=folder / f"{stem}-alerts.csv",
    )
    draw_defect_map(data, report.defect_map)
    write_csv(report.classes_csv, data.classes, CLASS_COLUMNS)
    write_csv(report.detections_csv, data.detections, DETECTION_COLUMNS)
    write_csv(report.alerts_csv, data.alerts, ALERT_COLUMNS)
    report.markdown.write_text(_markdown(data, report), encoding="utf-8")
    return report


def draw_defect_map(data: StripData, path: Path) -> None:
    """Position along the strip (x) vs across it (y): a marker per class, alerts as bands."""
    import matplotlib  # noqa: PLC0415  (heavy; only when drawing)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    surfaces = sorted(data.surfaces or ["top"], key=lambda s: (s != "top", s))
    summary = data.summary
    start, end = float(summary["first_position_m"]), float(summary["last_position_m"])
    width = max([float(d["across_mm"]) for d in data.detections] + [1.0])
    figure, axes = plt.subplots(
        len(surfaces), 1, figsize=(14, 2.2 + 2.6 * len(surfaces)), sharex=True, squeeze=False
    )
    classes = sorted({d["class_name"] for d in data.detections})
    shown = {d["class_name"]: d.get("class_display_name") or d["class_name"] for d in data.detections}
    colours = plt.get_cmap("tab10")
    style = {name: (MARKERS[i % len(MARKERS)], colours(i % 10)) for i, name in enumerate(classes)}
    for ax, surface in zip(axes[:, 0], surfaces, strict=True):
        ax.axvspan(start, end, color="#f2f2f2", zorder=0)
        for alert in data.alerts:
            if alert["surface"] not in (surface, None):
                continue
            colour = SEVERITY_COLOURS.get(alert["severity"], "#999999")
            ax.axvspan(alert["position_start_m"], alert["position_end_m"], color=colour, alpha=0.18, zorder=1)
            for mark in alert["mark_positions_m"] or ():  # a roll mark: one line per print
                ax.axvline(mark, color=colour, linewidth=0.8, linestyle="--", alpha=0.7, zorder=2)
            label = f"#{alert['alert_id']} {alert['rule']}" + (f" ({alert['roll']})" if alert["roll"] else "")
            ax.text(
                alert["position_start_m"],
                width * 1.14,
                label,
                fontsize=7,
                color=colour,
                va="bottom",
                clip_on=True,
            )
        for name in classes:
            points = [d for d in data.detections if d["class_name"] == name and d["surface"] == surface]
            if points:
                marker, tint = style[name]
                ax.scatter(
                    [d["along_m"] for d in points],
                    [d["across_mm"] for d in points],
                    marker=marker,
                    color=tint,
                    s=28,
                    edgecolors="black",
                    linewidths=0.3,
                    zorder=3,
                )
        ax.set_ylim(-0.05 * width, width * 1.3)
        ax.set_ylabel(f"{surface}: across (mm)")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlim(start - 0.01 * (end - start), end + 0.01 * (end - start))
    axes[-1, 0].set_xlabel("position along the strip (m)")
    handles: list[Any] = [
        plt.Line2D(
            [],
            [],
            marker=style[n][0],
            color=style[n][1],
            linestyle="",
            markeredgecolor="black",
            label=shown[n],
        )
        for n in classes
    ]
    handles += [
        Patch(color=c, alpha=0.3, label=f"{s} alert")
        for s, c in SEVERITY_COLOURS.items()
        if any(a["severity"] == s for a in data.alerts)
    ]
    if handles:
        figure.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, frameon=False)
    figure.suptitle(
        f"Strip {data.strip_id}: {summary['detections']} detections,"
        f" {summary['defects_per_100m'] or 0} per 100 m, {len(data.alerts)} alerts",
        x=0.01,
        ha="left",
    )
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(data: StripData, report: StripReport) -> str:
    s = data.summary
    overview = [
        {"what": "line", "value": s["line"]},
        {"what": "frames", "value": s["frames"]},
        {"what": "inspected (m)", "value": f"{s['first_position_m']:.2f} – {s['last_position_m']:.2f}"},
        {"what": "detections", "value": s["detections"]},
        {"what": "defects per 100 m", "value": s["defects_per_100m"]},
        {"what": "first / last defect (m)", "value": _range(s["first_defect_m"], s["last_defect_m"])},
        {"what": "alerts (unacknowledged)", "value": f"{s['alerts']} ({s['unacknowledged_alerts']})"},
        {
            "what": "captured",
            "value": f"{s['first_captured_at']:%Y-%m-%d %H:%M:%S} – {s['last_captured_at']:%H:%M:%S}",
        },
    ]
    parts = [
        f"# Strip {data.strip_id}\n",
        f"![defect map]({report.defect_map.name})\n",
        markdown_table(overview, {"what": "", "value": ""}),
        "## Classes\n",
        markdown_table(
            data.classes,
            {
                "class_display_name": "class",
                "detections": "detections",
                "per_100m": "per 100 m",
                "first_position_m": "first (m)",
                "last_position_m": "last (m)",
                "mean_confidence": "mean conf.",
                "cause": "cause",
                "prevention": "prevention",
            },
        ),
        "## Alerts\n",
        markdown_table(
            [{**a, "range": _range(a["position_start_m"], a["position_end_m"])} for a in data.alerts],
            {
                "alert_id": "id",
                "severity": "severity",
                "rule": "rule",
                "class_display_name": "class",
                "range": "range (m)",
                "detection_count": "count",
                "roll": "roll",
                "cause": "cause",
                "prevention": "prevention",
                "acknowledged_by": "acknowledged by",
            },
        ),
        f"\nTables: [{report.classes_csv.name}]({report.classes_csv.name}),"
        f" [{report.detections_csv.name}]({report.detections_csv.name}),"
        f" [{report.alerts_csv.name}]({report.alerts_csv.name}).\n",
    ]
    return "\n".join(parts)


def _range(start: Any, end: Any) -> str:
    return "" if start is None else f"{float(start):.2f} – {float(end):.2f}"
