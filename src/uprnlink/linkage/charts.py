"""Splink's own charts of a saved model, as Vega-Lite specs for the quality report.

The specs come from Splink's public chart objects (`.chart_dict`); the chart libraries are
Splink's bundled Vega, Vega-Lite and vega-embed (from a chart's offline page,
`.to_html(inline=True)`), so the pages render offline.
"""

from __future__ import annotations

import logging
from functools import cache
from html.parser import HTMLParser
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from uprnlink.errors import PublishError
from uprnlink.linkage.model import identifiers_present, splink_records


def splink_settings(model: dict[str, Any]) -> dict[str, Any]:
    """The Splink settings dict from a saved model (bare, or wrapped as linkage returns it)."""
    inner = model.get("splink", model)
    if "comparisons" not in inner:
        raise PublishError("quality report: the model has no comparisons (rule=model_shape)")
    return dict(inner)


def _model_linker(settings: dict[str, Any], frame: Any = None) -> tuple[Any, Any]:
    """A Splink linker over `frame` (or a one-column empty table) carrying the saved model."""
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI(duckdb.connect())
    table = frame if frame is not None else pa.table({"unique_id": pa.array([], pa.string())})
    sdf = db.register(table, dataset_display_name="quality_report")
    return Linker(sdf, settings, log_level=logging.ERROR), db


def model_chart_specs(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Vega-Lite specs of Splink's match weights and m/u parameters charts for the model."""
    linker, _ = _model_linker(splink_settings(model))
    return {
        "match_weights": linker.visualisations.match_weights_chart().chart_dict,
        "m_u_parameters": linker.visualisations.m_u_parameters_chart().chart_dict,
    }


def waterfall_specs(
    model: dict[str, Any], linked: pl.DataFrame, pairs: list[tuple[str, str, str]]
) -> list[tuple[str, float, dict[str, Any]]]:
    """For each (kind, left id, right id): the pair's match probability and Splink's waterfall
    chart spec. The specs hold record values: engineer-only."""
    settings = splink_settings(model)
    # Waterfalls need the per-comparison columns that prediction normally drops.
    settings["retain_matching_columns"] = True
    settings["retain_intermediate_calculation_columns"] = True
    data = splink_records(linked, with_source=True, identifiers=identifiers_present(linked))
    # The whole table is registered so term-frequency adjustments use the run's frequencies.
    linker, db = _model_linker(settings, data.to_arrow())
    out = []
    for i, (kind, left, right) in enumerate(pairs):
        rows: list[Any] = []
        for uid in (left, right):
            row = data.filter(pl.col("unique_id") == uid).to_arrow()
            rows.append(db.register(row, dataset_display_name=f"pair{i}_{len(rows)}"))
        scored = linker.inference.score_pair(rows[0], rows[1])
        recs = pl.from_arrow(scored.as_pyarrow_table())
        assert isinstance(recs, pl.DataFrame)
        chart = linker.visualisations.waterfall_chart(recs.to_dicts(), filter_nulls=False)
        out.append((kind, float(recs.get_column("match_probability")[0]), chart.chart_dict))
    return out


@cache
def chart_libraries() -> tuple[str, ...]:
    """Vega, Vega-Lite and vega-embed as JavaScript sources, as Splink bundles them.

    Taken, through Splink's public API, from the offline page it writes for a chart
    (`to_html(inline=True)`): every script element of that page but the one drawing its chart.
    Parsed once per process.
    """
    linker, _ = _model_linker({"link_type": "dedupe_only", "comparisons": []})
    page = linker.visualisations.match_weights_chart().to_html(inline=True)
    parser = _ScriptParser()
    parser.feed(page)
    parser.close()
    libraries = tuple(
        src for src in parser.scripts if not any(i and i in src for i in parser.element_ids)
    )
    if not libraries or "vegaEmbed" not in "".join(libraries):
        raise PublishError("quality report: Splink's offline chart page has no chart libraries")
    return libraries


class _ScriptParser(HTMLParser):
    """The text of each <script> element of a page, and the ids of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.element_ids: list[str] = []
        self._script: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.element_ids += [v for k, v in attrs if k == "id" and v]
        if tag == "script":
            self._script = []

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None
