"""Draw the analyst guide's charts and print its answer tables from a published database.

Usage (after `make demo`, or any run):

    .venv/bin/python docs/img/make_charts.py --config config/demo.toml [--out docs/img] [--svg]

For every named question with a `[chart]` it builds the question's table exactly as
`uprnlink query --named` does (the table builder: every count and sum perturbed under
governance/policy.toml's `[tables]`), draws the chart with Altair, writes it as PNG (or SVG
with `--svg`) with vl-convert (no browser), and prints the answer as a Markdown table for
docs/analyst-guide.md. Withheld values are drawn as an empty, dashed bar labelled "withheld",
never as zero. Needs the `dev` extra (vl-convert-python).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
from uprnlink.publish.queries import NamedQuery, list_queries
from uprnlink.publish.tabulation import read_table_policy
from uprnlink.settings import read_settings

WIDTH, HEIGHT = 700, 300
COLOURS = ["#1d70b8", "#f47738", "#00703c", "#912b88", "#505a5f"]
FONT = "Liberation Sans, Helvetica, Arial, sans-serif"
WITHHELD_SHARE = 0.15  # a withheld bar's height, as a share of the largest value shown


def _label(value: Any) -> str:
    return "unknown" if value is None else str(value).replace("_", " ")


def _wrap(text: str, width: int = 13) -> str:
    """A category label on at most two lines (split at "\\n" by the axis)."""
    if len(text) <= width or " " not in text:
        return text
    words = text.split()
    best = min(
        range(1, len(words)),
        key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))),
    )
    return " ".join(words[:best]) + "\n" + " ".join(words[best:])


def _x_axis(x: str, order: list[str]) -> alt.X:
    return alt.X(
        "x:N",
        sort=order,
        title=x.replace("_", " "),
        axis=alt.Axis(labelAngle=0, labelExpr="split(datum.label, '\\n')", labelFontSize=11),
    )


Chart = alt.LayerChart | alt.FacetChart


def _finish(chart: Chart, title: str) -> Chart:
    """Title, size and the guide's look (white, no frame, legend below)."""
    finished: Chart = (
        chart.properties(title=title, width=WIDTH, height=HEIGHT)
        .configure(font=FONT, background="white", padding=16)
        .configure_title(fontSize=17, anchor="start", offset=16)
        .configure_axis(labelColor="#505a5f", titleColor="#505a5f", titleFontWeight="normal")
        .configure_view(stroke=None)
        .configure_legend(orient="bottom", title=None, labelFontSize=12, symbolType="square")
    )
    return finished


def bars_chart(frame: pl.DataFrame, x: str, series: str | None, value: str, title: str) -> Chart:
    """Grouped vertical bars; a withheld value is a dashed empty bar labelled 'withheld'."""
    shown = [v for v in frame[value].to_list() if v is not None]
    stub = WITHHELD_SHARE * (max(shown) if shown else 1.0)
    rows = [
        {
            "x": _wrap(_label(r[x])),
            "series": _label(r[series]) if series else "",
            "value": r[value],
            "stub": stub,
        }
        for r in frame.iter_rows(named=True)
    ]
    order = list(dict.fromkeys(row["x"] for row in rows))
    groups = list(dict.fromkeys(row["series"] for row in rows))
    encoding: dict[str, Any] = {
        "x": _x_axis(x, order),
        "color": alt.Color(
            "series:N",
            sort=groups,
            scale=alt.Scale(domain=groups, range=COLOURS[: len(groups)]),
            legend=alt.Legend() if series else None,
        ),
    }
    if series:
        encoding["xOffset"] = alt.XOffset(
            "series:N", sort=groups, scale=alt.Scale(paddingInner=0.1)
        )
    y = alt.Y("value:Q", title=value.replace("_", " "), axis=alt.Axis(tickCount=5, grid=True))
    known = alt.Chart().transform_filter("datum.value != null").encode(y=y, **encoding)
    withheld = alt.Chart().transform_filter("datum.value == null").encode(**encoding)
    narrow: dict[str, Any] = (
        {} if series else {"width": 56}
    )  # one bar per category need not fill it
    chart = alt.layer(
        known.mark_bar(**narrow),
        known.mark_text(baseline="bottom", dy=-3, fontSize=10).encode(
            text=alt.Text("value:Q", format="~g"), color=alt.value("black")
        ),
        withheld.mark_bar(filled=False, strokeDash=[3, 3], **narrow).encode(y=alt.Y("stub:Q")),
        withheld.mark_text(angle=270, fontSize=9)
        .transform_calculate(middle="datum.stub / 2")
        .encode(y=alt.Y("middle:Q"), text=alt.value("withheld"), color=alt.value("#505a5f")),
        data=alt.InlineData(values=rows),
    )
    return _finish(chart, title)


def line_chart(frame: pl.DataFrame, x: str, value: str, title: str) -> Chart:
    """One line over ordered x values (dates), points labelled; withheld points are skipped."""
    rows = [{"x": _label(r[x]), "value": r[value]} for r in frame.iter_rows(named=True)]
    base = (
        alt.Chart()
        .transform_filter("datum.value != null")
        .encode(
            x=_x_axis(x, [row["x"] for row in rows]),
            y=alt.Y("value:Q", title=value.replace("_", " "), scale=alt.Scale(zero=True)),
        )
    )
    chart = alt.layer(
        base.mark_line(color=COLOURS[0], strokeWidth=2, point=alt.OverlayMarkDef(size=60)),
        base.mark_text(dy=-12, fontSize=11, color="black").encode(
            text=alt.Text("value:Q", format="~g")
        ),
        data=alt.InlineData(values=rows),
    )
    return _finish(chart, title)


def chart_for(query: NamedQuery, frame: pl.DataFrame) -> Chart | None:
    """The chart a question's `[chart]` asks for (None without one)."""
    c = query.chart
    if c is None:
        return None
    if c.kind == "bars":
        return bars_chart(frame, c.x, c.series, c.y, query.title)
    return line_chart(frame, c.x, c.y, query.title)


def answer(db: AnalystDatabase, query: NamedQuery, policy_path: Path) -> pl.DataFrame:
    """A named question's protected answer under its own column names."""
    known = table_categories(db)
    table = build_table(db, query.spec, read_table_policy(policy_path), known)
    return query.present(table)[0]


def markdown_table(frame: pl.DataFrame) -> str:
    """The answer as a Markdown table; withheld values shown as `withheld`."""
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in frame.iter_rows():
        cells = ["*withheld*" if v is None else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="run configuration of the published run")
    p.add_argument("--out", default=str(Path(__file__).parent), help="folder for the images")
    p.add_argument("--svg", action="store_true", help="write SVG instead of PNG")
    args = p.parse_args(argv)
    settings = read_settings(Path(args.config))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = AnalystDatabase(settings.database_path)
    for query in list_queries():
        frame = answer(db, query, settings.policy_path)
        print(f"### {query.name}\n\n{markdown_table(frame)}\n")
        chart = chart_for(query, frame)
        if chart is None:
            continue
        path = out / f"{query.name}.{'svg' if args.svg else 'png'}"
        chart.save(path)  # through vl-convert: no browser
        print(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
