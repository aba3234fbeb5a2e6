"""Small SVG pictures for the console's pages, drawn on the server (no JavaScript): a strip's
defect map and the quality page's plots. Every text that comes from the database is escaped."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

#: distinct colours for classes in catalogue order (Okabe–Ito, readable by the colour-blind)
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


def _svg_open(width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}">'
    )


def class_colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def strip_map(
    strip: Mapping[str, Any],
    marks: Mapping[str, Any],
    colours: Mapping[str, str],
    *,
    width: int = 900,
    height: int = 110,
) -> str:
    """The strip from its first to its last inspected metre (left to right) and across its width
    (top to bottom): one dot per detection in its class's colour, linking to its crop — or, for a
    strip whose detections `queries.strip_marks` aggregated, one bar per metre bin and class,
    spanning the detections across, darker for more, linking to the strip's crops of that class in
    the gallery — and each alert's span shaded (red while unacknowledged, grey once acknowledged)."""
    start = float(strip["first_position_m"] or 0.0)
    end = float(strip["last_position_m"] or start)
    along = max(end - start, 1e-6)
    across = max(
        float(marks["width_mm"] or 0.0),
        max((d["across_mm"] for d in marks["detections"]), default=0.0),
        max((m["max_across_mm"] for m in marks.get("metres", ())), default=0.0),
        1.0,
    )
    pad = 4
    inner_w, inner_h = width - 2 * pad, height - 2 * pad

    def x(metres: float) -> float:
        return pad + (min(max(metres, start), end) - start) / along * inner_w

    def y(mm: float) -> float:
        return pad + min(max(mm, 0.0), across) / across * inner_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" role="img" aria-label="defect map of strip {escape(str(strip["strip_id"]))}">',
        f'<rect x="{pad}" y="{pad}" width="{inner_w}" height="{inner_h}" fill="#eef0f2" stroke="#888"/>',
    ]
    for a in marks["alerts"]:
        x0, x1 = x(float(a["position_start_m"])), x(float(a["position_end_m"]))
        fill = "#d9534f" if a["acknowledged_at"] is None else "#999999"
        parts.append(
            f'<a href="/alerts/{int(a["alert_id"])}"><rect class="alert" x="{x0:.1f}" y="{pad}"'
            f' width="{max(x1 - x0, 2):.1f}" height="{inner_h}" fill="{fill}" fill-opacity="0.25">'
            f"<title>alert {int(a['alert_id'])}: {escape(str(a['rule']))} ({escape(str(a['class_name']))},"
            f" {escape(str(a['severity']))})</title></rect></a>"
        )
    for d in marks["detections"]:
        link = "/crop?" + urlencode({"frame_id": d["frame_id"], "tile": d["tile_index"]})
        colour = colours.get(d["class_name"], "#000000")
        parts.append(
            f'<a href="{escape(link)}"><circle class="detection" cx="{x(float(d["along_m"])):.1f}"'
            f' cy="{y(float(d["across_mm"])):.1f}" r="3.5" fill="{colour}" stroke="#333" stroke-width="0.5">'
            f"<title>{escape(str(d['class_name']))} {float(d['confidence']):.2f} at"
            f" {float(d['along_m']):.2f} m, {float(d['across_mm']):.0f} mm</title></circle></a>"
        )
    parts.extend(_metre_marks(strip, marks, colours, x, y))
    parts.append("</svg>")
    return "".join(parts)


def _metre_marks(
    strip: Mapping[str, Any],
    marks: Mapping[str, Any],
    colours: Mapping[str, str],
    x: Callable[[float], float],
    y: Callable[[float], float],
) -> list[str]:
    """The aggregated marks of `strip_map`: one bar per (metre bin, class), at most a few hundred."""
    bins = marks.get("metres") or ()
    if not bins:
        return []
    bin_m = int(marks["bin_m"])
    most = max(int(m["detections"]) for m in bins)
    parts = []
    for m in bins:
        count, name, first = int(m["detections"]), str(m["class_name"]), float(m["from_m"])
        top, bottom = y(float(m["min_across_mm"])), y(float(m["max_across_mm"]))
        if bottom - top < 4:
            top, bottom = top - 2, bottom + 2
        width = max(x(first + bin_m) - x(first), 1.5)
        link = "/gallery?" + urlencode({"strip": strip["strip_id"], "class": name})
        shade = 0.3 + 0.7 * math.log1p(count) / math.log1p(most)
        parts.append(
            f'<a href="{escape(link)}"><rect class="metre" x="{x(first):.1f}" y="{top:.1f}"'
            f' width="{width:.1f}" height="{bottom - top:.1f}" fill="{colours.get(name, "#000000")}"'
            f' fill-opacity="{shade:.2f}"><title>{escape(name)}: {count} detections at'
            f" {first:.0f}–{first + bin_m:.0f} m, highest confidence {float(m['max_confidence']):.2f}"
            "</title></rect></a>"
        )
    return parts


def precision_bars(rows: Sequence[Mapping[str, Any]], colours: Mapping[str, str], *, width: int = 700) -> str:
    """One bar per class: precision estimated from reviews, its 95 % interval as a whisker."""
    row_h, label_w = 28, 140
    height = row_h * len(rows) + 24
    scale = width - label_w - 130  # room on the right for "0.75 (n=12)"
    parts = [_svg_open(width, height)]
    for i, r in enumerate(rows):
        top = 8 + i * row_h
        name = escape(str(r["class_name"]))
        parts.append(f'<text x="0" y="{top + 15}" font-size="13">{name}</text>')
        if r["precision"] is None:
            parts.append(
                f'<text x="{label_w}" y="{top + 15}" font-size="12" fill="#666">not reviewed yet</text>'
            )
            continue
        bar = float(r["precision"]) * scale
        lo, hi = label_w + float(r["low"]) * scale, label_w + float(r["high"]) * scale
        parts.append(
            f'<rect x="{label_w}" y="{top + 4}" width="{bar:.1f}" height="14"'
            f' fill="{colours.get(r["class_name"], "#444")}"/>'
            f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{top + 11}" y2="{top + 11}"'
            ' stroke="#000" stroke-width="1.5"/>'
            f'<text x="{label_w + scale + 6}" y="{top + 15}" font-size="12">{float(r["precision"]):.2f}'
            f" (n={int(r['reviewed'])})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def share_lines(
    rows: Sequence[Mapping[str, Any]],
    trained: Mapping[str, float],
    colours: Mapping[str, str],
    *,
    width: int = 700,
    height: int = 220,
) -> str:
    """Per class, the share of tiles it was found on, hour by hour (solid), and the share of
    validation tiles holding it when the model was trained (dashed): a drift signal."""
    hours = sorted({r["hour"] for r in rows})
    if not hours:
        return "<p>No frames yet.</p>"
    top = max([float(r["share"]) for r in rows] + list(trained.values()) + [1e-6]) * 1.1
    pad_l, pad_b = 40, 20
    inner_w, inner_h = width - pad_l - 10, height - pad_b - 10

    def px(i: int) -> float:
        return pad_l + (i / max(len(hours) - 1, 1)) * inner_w

    def py(share: float) -> float:
        return 10 + inner_h - share / top * inner_h

    parts = [
        _svg_open(width, height),
        f'<line x1="{pad_l}" y1="{10 + inner_h}" x2="{width - 10}" y2="{10 + inner_h}" stroke="#888"/>',
        f'<text x="2" y="14" font-size="11">{top:.2f}</text>'
        f'<text x="2" y="{10 + inner_h}" font-size="11">0</text>',
    ]
    index = {h: i for i, h in enumerate(hours)}
    for name, colour in colours.items():
        points = [(px(index[r["hour"]]), py(float(r["share"]))) for r in rows if r["class_name"] == name]
        if len(points) == 1:
            parts.append(f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="3" fill="{colour}"/>')
        elif points:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if name in trained:
            level = py(trained[name])
            parts.append(
                f'<line x1="{pad_l}" x2="{width - 10}" y1="{level:.1f}" y2="{level:.1f}" stroke="{colour}"'
                f' stroke-dasharray="5,4"><title>{escape(name)}: {trained[name]:.3f} of validation tiles'
                "</title></line>"
            )
    first, last = hours[0], hours[-1]
    parts.append(
        f'<text x="{pad_l}" y="{height - 4}" font-size="11">{escape(str(first))[:16]}</text>'
        f'<text x="{width - 130}" y="{height - 4}" font-size="11">{escape(str(last))[:16]}</text></svg>'
    )
    return "".join(parts)
