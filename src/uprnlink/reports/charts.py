"""The quality report's own charts (shares by group, people by cluster size) as Vega-Lite specs.

Built with Altair, the grammar of Splink's charts, and drawn in the page by the Vega libraries
Splink bundles. A withheld figure is never drawn: its bar is absent and its label shows what the
table beside the chart shows ("<10", "–", a bound).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt

BAR = "#457b9d"
HIGHLIGHT = "#e76f51"
REFERENCE = "#c1121f"
PLOT_WIDTH = 360
ROW_STEP = 24
FONT = 'system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif'


@dataclass(frozen=True)
class Bar:
    """One bar: its label, the value drawn (None: withheld, not drawn) and the text shown."""

    label: str
    value: float | None
    text: str


def _to_spec(chart: alt.LayerChart | alt.FacetChart) -> dict[str, Any]:
    """The chart as a Vega-Lite spec, in the page's font and without a frame.

    Altair names each dataset by a hash of its rows, 32 hex characters: the shape of a token,
    which a de-identified page must not seem to hold. They are numbered instead.
    """
    text = json.dumps(chart.configure(font=FONT).configure_view(stroke=None).to_dict())
    for i, name in enumerate(dict.fromkeys(re.findall(r'"(data-[0-9a-f]{32})"', text))):
        text = text.replace(f'"{name}"', f'"data-{i}"')
    spec: dict[str, Any] = json.loads(text)
    return spec


def share_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    domain: tuple[float, float] = (0.0, 1.0),
    reference: tuple[float, str] | None = None,
    highlight: Sequence[str] = (),
) -> dict[str, Any]:
    """Horizontal bars of shares (0-1) by group, each labelled with its text on the right.

    `reference` draws a dashed line at a value with its label; groups in `highlight` stand out.
    """
    rows = [
        {"group": b.label, "value": b.value, "text": b.text, "highlight": b.label in highlight}
        for b in bars
    ]
    y = alt.Y("group:N", sort=[b.label for b in bars], title=None)
    x = alt.X(
        "value:Q",
        scale=alt.Scale(domain=list(domain), clamp=True, zero=False),
        axis=alt.Axis(format="%", title=None, tickCount=5),
    )
    drawn = (
        alt.Chart()
        .mark_bar(clip=True)
        .encode(
            y=y,
            x=x,
            color=alt.condition("datum.highlight", alt.value(HIGHLIGHT), alt.value(BAR)),
            tooltip=[alt.Tooltip("group:N"), alt.Tooltip("text:N", title="share")],
        )
    )
    labels = (
        alt.Chart()
        .mark_text(align="left", dx=6)
        .encode(y=y, x=alt.value(PLOT_WIDTH), text="text:N")
    )
    layers: list[alt.Chart | alt.LayerChart] = [drawn, labels]
    if reference is not None:
        value, label = reference
        line = alt.Chart(alt.InlineData(values=[{"value": value, "label": label}]))
        layers += [
            line.mark_rule(color=REFERENCE, strokeDash=[4, 3]).encode(x=x),
            line.mark_text(color=REFERENCE, align="left", dx=3, dy=-6, y=0).encode(
                x=x, text="label:N"
            ),
        ]
    chart = alt.layer(*layers, data=alt.InlineData(values=rows)).properties(
        title=title, width=PLOT_WIDTH, height=alt.Step(ROW_STEP)
    )
    return _to_spec(chart)


def count_chart(columns: Sequence[Bar], *, title: str, x_label: str) -> dict[str, Any]:
    """Vertical bars of people per size, each labelled with its count as the page shows it."""
    rows = [
        {"size": c.label, "people": c.value, "text": c.text, "label_at": c.value or 0}
        for c in columns
    ]
    x = alt.X("size:N", sort=[c.label for c in columns], title=x_label, axis=alt.Axis(labelAngle=0))
    drawn = (
        alt.Chart()
        .mark_bar(color=BAR)
        .encode(
            x=x,
            y=alt.Y("people:Q", title="people", axis=alt.Axis(format=",d", tickCount=4)),
            tooltip=[alt.Tooltip("size:N", title=x_label), alt.Tooltip("text:N", title="people")],
        )
    )
    labels = (
        alt.Chart()
        .mark_text(baseline="bottom", dy=-3, fontSize=10)
        .encode(x=x, y=alt.Y("label_at:Q"), text="text:N")
    )
    chart = alt.layer(drawn, labels, data=alt.InlineData(values=rows)).properties(
        title=title, width=alt.Step(36), height=160
    )
    return _to_spec(chart)
