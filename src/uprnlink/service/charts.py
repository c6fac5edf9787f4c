"""The portal's charts: bar and line geometry for a server-drawn SVG (no script, no CDN).

A chart draws the one column a question is about (`y`) by one dimension (`x`), optionally
one bar or line per category of a second dimension (`series`). Withheld cells are drawn as an
empty, dashed bar labelled [c], never as zero. Labels are wrapped, not cut, and both axes
carry titles.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from uprnlink.publish.datasets import TOTAL
from uprnlink.publish.outputs import WITHHELD

__all__ = ["Chart", "bar_chart", "line_chart", "pick_measure"]

COLOURS = ("#1d70b8", "#f47738", "#00703c", "#912b88", "#505a5f", "#d4351c", "#5694ca")
LABEL_WIDTH = 230
PLOT_WIDTH = 420
BAR = 16
MAX_GROUPS = 60


@dataclass
class Chart:
    """Everything the SVG template needs, in pixels."""

    kind: str
    title: str
    x_title: str
    y_title: str
    width: int
    height: int
    bars: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    legend: list[dict[str, Any]] = field(default_factory=list)


def _human(name: str) -> str:
    return name.replace("_", " ")


def _fmt(v: float) -> str:
    return f"{v:,.1f}".rstrip("0").rstrip(".")


def _nice_max(top: float) -> float:
    if top <= 0:
        return 1.0
    scale = float(10 ** len(str(int(top)))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= top:
            return step * scale
    return top


def pick_measure(columns: list[str], withheld: tuple[str, ...], wanted: str | None) -> str | None:
    """The column a chart draws: the one asked for, else the last percentage or rate, else
    the last measure (never the first count by default: that is rarely the question)."""
    if wanted and wanted in columns:
        return wanted
    measures = [c for c in columns if c in withheld]
    for prefix in ("percent_", "pct"):
        hits = [c for c in measures if c.startswith(prefix) or c.endswith(prefix)]
        if hits:
            return hits[-1]
    rates = [c for c in measures if "per_1000" in c or c.startswith("mean_")]
    if rates:
        return rates[-1]
    return measures[-1] if measures else None


def bar_chart(
    frame: pl.DataFrame, *, x: str, y: str, series: str | None = None, title: str = ""
) -> Chart | None:
    """Horizontal grouped bars of `y` by `x` (and `series`); None when there is nothing to
    draw or too much (over 60 groups: read the table)."""
    if frame.height == 0 or y not in frame.columns or x not in frame.columns:
        return None
    keep = frame.filter(pl.col(x) != TOTAL) if frame.schema[x] == pl.String else frame
    if series and series in keep.columns:
        keep = keep.filter(pl.col(series) != TOTAL)
    groups = list(dict.fromkeys(str(v) for v in keep[x].to_list()))
    kinds = (
        list(dict.fromkeys(str(v) for v in keep[series].to_list()))
        if series and series in keep.columns
        else [None]
    )
    if not groups or len(groups) > MAX_GROUPS:
        return None
    values = keep[y].cast(pl.Float64, strict=False).to_list()
    top = _nice_max(max((v for v in values if v is not None), default=0.0))
    group_height = len(kinds) * (BAR + 2) + 10
    chart = Chart(
        kind="bars",
        title=title,
        x_title=_human(x) + (f" by {_human(series)}" if series else ""),
        y_title=_human(y),
        width=LABEL_WIDTH + PLOT_WIDTH + 70,
        height=group_height * len(groups) + 60 + (20 * len(kinds) + 16 if series else 0),
    )
    lookup: dict[tuple[str, str | None], float | None] = {}
    for row, v in zip(keep.iter_rows(named=True), values, strict=True):
        lookup[(str(row[x]), str(row[series]) if series else None)] = v
    for gi, group in enumerate(groups):
        top_y = gi * group_height
        for li, line in enumerate(textwrap.wrap(_human(group), 30)[:3]):
            chart.labels.append({"x": LABEL_WIDTH - 8, "y": top_y + 13 + 13 * li, "text": line})
        for si, kind in enumerate(kinds):
            v = lookup.get((group, kind))
            width = 0.0 if v is None else PLOT_WIDTH * max(v, 0.0) / top
            chart.bars.append(
                {
                    "x": LABEL_WIDTH,
                    "y": top_y + si * (BAR + 2),
                    "width": round(width, 1),
                    "height": BAR,
                    "colour": COLOURS[si % len(COLOURS)],
                    "withheld": v is None,
                    "text": WITHHELD if v is None else _fmt(v),
                    "text_x": LABEL_WIDTH + (round(width, 1) if v is not None else 64) + 6,
                }
            )
    axis_y = group_height * len(groups) + 4
    for i in range(5):
        value = top * i / 4
        chart.ticks.append(
            {"x": LABEL_WIDTH + PLOT_WIDTH * i / 4, "y": axis_y, "text": _fmt(value)}
        )
    if series:
        for si, kind in enumerate(kinds):
            chart.legend.append(
                {
                    "x": LABEL_WIDTH,
                    "y": axis_y + 60 + 20 * si,
                    "colour": COLOURS[si % len(COLOURS)],
                    "text": _human(str(kind)),
                }
            )
    return chart


def line_chart(
    frame: pl.DataFrame, *, x: str, y: str, series: str | None = None, title: str = ""
) -> Chart | None:
    """A line of `y` over the categories of `x` (in table order), one per `series` value."""
    if frame.height == 0 or y not in frame.columns or x not in frame.columns:
        return None
    keep = frame.filter(pl.col(x) != TOTAL) if frame.schema[x] == pl.String else frame
    points = list(dict.fromkeys(str(v) for v in keep[x].to_list()))
    if len(points) < 2 or len(points) > MAX_GROUPS:
        return bar_chart(frame, x=x, y=y, series=series, title=title)
    kinds = list(dict.fromkeys(str(v) for v in keep[series].to_list())) if series else [None]
    values = keep[y].cast(pl.Float64, strict=False).to_list()
    top = _nice_max(max((v for v in values if v is not None), default=0.0))
    left, plot_h, plot_w = 70, 220, 560
    chart = Chart(
        kind="line",
        title=title,
        x_title=_human(x),
        y_title=_human(y),
        width=left + plot_w + 40,
        height=plot_h + 90 + (20 * len(kinds) if series else 0),
    )
    step = plot_w / (len(points) - 1)
    for si, kind in enumerate(kinds):
        rows = keep if kind is None else keep.filter(pl.col(str(series)).cast(pl.String) == kind)
        by_x = {str(r[x]): r[y] for r in rows.iter_rows(named=True)}
        pts = []
        for pi, p in enumerate(points):
            v = by_x.get(p)
            px = left + step * pi
            if v is None:
                chart.bars.append(
                    {
                        "x": px - 8,
                        "y": plot_h - 16,
                        "width": 16,
                        "height": 16,
                        "colour": COLOURS[si % len(COLOURS)],
                        "withheld": True,
                        "text": WITHHELD,
                        "text_x": px - 8,
                    }
                )
                continue
            py = plot_h - plot_h * max(float(v), 0.0) / top
            pts.append(f"{px:.1f},{py:.1f}")
            chart.labels.append({"x": px, "y": py - 6, "text": _fmt(float(v)), "anchor": "middle"})
        chart.lines.append({"points": " ".join(pts), "colour": COLOURS[si % len(COLOURS)]})
        if series:
            chart.legend.append(
                {
                    "x": left,
                    "y": plot_h + 60 + 20 * si,
                    "colour": COLOURS[si % len(COLOURS)],
                    "text": _human(str(kind)),
                }
            )
    for pi, p in enumerate(points):
        chart.ticks.append({"x": left + step * pi, "y": plot_h + 4, "text": _human(p)})
    for i in range(5):
        chart.ticks.append(
            {
                "x": left - 6,
                "y": plot_h - plot_h * i / 4,
                "text": _fmt(top * i / 4),
                "anchor": "end",
            }
        )
    return chart
