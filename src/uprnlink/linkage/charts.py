"""Splink's own charts of a saved model, as Vega-Lite specs for the quality report.

The specs come from Splink's public chart objects (`.chart_dict`); the chart libraries are
Splink's bundled Vega, Vega-Lite and vega-embed, so the pages render offline.
"""

from __future__ import annotations

import logging
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


def chart_libraries() -> str:
    """Vega, Vega-Lite and vega-embed as inline script elements (bundled with Splink)."""
    from splink.internals.html_utils import load_chart_libraries

    libs: dict[str, str] = load_chart_libraries()  # type: ignore[no-untyped-call]
    for name, src in libs.items():
        if "</script" in src.lower():
            raise PublishError(f"quality report: bundled {name} cannot be inlined")
    return "".join(f"<script>{src}</script>" for src in libs.values())
