"""The linkage quality report: one self-contained HTML page per run, opening offline.

The de-identified page (for `out/`) shows the Splink model (match weights and m/u charts),
cluster sizes, match rates and UPRN / NHS number coverage by source, and bias checks: recall by
group when a ground-truth evaluation is given, link rates by age band and sex always. It holds
counts and ratios only; counts from 1 to `min_count - 1` are shown as "<10" and rates built on
them are withheld. The optional engineer page (for `work/`) adds Splink waterfall charts of
example record pairs, which show record values and so must never be published.

Splink's charts come from `uprnlink.linkage.charts`: only the linkage package imports Splink.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import PublishError
from uprnlink.households.ages import BIAS_BANDS, age_band_expr, age_on_expr
from uprnlink.households.timelines import person_attributes
from uprnlink.linkage.charts import (
    chart_libraries,
    model_chart_specs,
    splink_settings,
    waterfall_specs,
)
from uprnlink.linkage.quality import source_quality_table

log = logging.getLogger(__name__)

MIN_COUNT = 10
BIAS_TARGET_POINTS = 2.0
AGE_BAND_ORDER = ("0-17", "18-39", "40-64", "65-84", "85+", "unknown")
SIZE_BUCKETS = (
    *[(n, n, str(n)) for n in range(1, 10)],
    (10, 14, "10-14"),
    (15, 19, "15-19"),
    (20, None, "20+"),
)
# Tokens and record keys are 32 hex characters; nothing on the page may match one.
_HEX_RUN = re.compile(r"[0-9a-f]{32}")
_ID_COLUMNS = ("unique_id", "uprn_token", "nhs_token", "household_token")


# ----------------------------------------------------------------------------- figures


def link_records(records: pl.DataFrame, clusters: pl.DataFrame) -> pl.DataFrame:
    """Records with their person id (records without a cluster are dropped)."""
    return records.join(clusters.select("unique_id", "person_id"), on="unique_id", how="inner")


def cluster_size_table(linked: pl.DataFrame) -> pl.DataFrame:
    """People by number of records (bucketed) and by number of sources."""
    per_person = linked.group_by("person_id").agg(
        pl.len().alias("n_records"), pl.col("source_dataset").n_unique().alias("n_sources")
    )
    rows = []
    for lo, hi, label in SIZE_BUCKETS:
        n = pl.col("n_records")
        cond = (n >= lo) if hi is None else n.is_between(lo, hi)
        rows.append(("records", label, int(per_person.filter(cond).height)))
    max_sources = int(per_person.get_column("n_sources").max() or 1)  # type: ignore[arg-type]
    n_source_names = linked.get_column("source_dataset").n_unique()
    for k in range(1, max(max_sources, n_source_names) + 1):
        rows.append(("sources", str(k), int(per_person.filter(pl.col("n_sources") == k).height)))
    return pl.DataFrame(rows, schema=["by", "size", "people"], orient="row")


def person_link_table(linked: pl.DataFrame, reference_date: date) -> pl.DataFrame:
    """One row per person: age band (on the reference date), sex, and number of sources."""
    people = person_attributes(linked, None)
    return people.select(
        age_band_expr(age_on_expr("dob", reference_date), BIAS_BANDS, unknown="unknown").alias(
            "age_band"
        ),
        pl.col("sex").fill_null("unknown"),
        pl.col("sources").list.len().alias("n_sources"),
    )


def link_rate_table(people: pl.DataFrame, by: str) -> pl.DataFrame:
    """People, and people appearing in two or more sources, per group of `by`."""
    return (
        people.group_by(by)
        .agg(pl.len().alias("people"), (pl.col("n_sources") >= 2).sum().alias("linked"))
        .rename({by: "group"})
        .sort("group")
    )


# ----------------------------------------------------------------------------- disclosure


def shown_count(n: int | None, min_count: int = MIN_COUNT) -> str:
    """A count as shown on the page: 1..min_count-1 as "<10"."""
    if n is None:
        return "–"
    if 0 < n < min_count:
        return f"<{min_count}"
    return f"{n:,}"


def safe_rate(
    num: int | None, den: int | None, min_count: int = MIN_COUNT
) -> tuple[float | None, str]:
    """num/den as (value to draw, text to show), respecting small-number suppression.

    A rate on a suppressed denominator is withheld. A suppressed numerator, or complement
    (99.9% of 5,000 records linked says that 5 did not), is shown only as a bound.
    """
    if num is None or den is None or den == 0 or 0 < den < min_count:
        return None, "–"
    if 0 < num < min_count:
        return None, "<" + pct(min_count / den)
    if 0 < den - num < min_count:
        bound = (den - min_count) / den
        return bound, ">" + pct(bound)
    return num / den, pct(num / den)


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


# ----------------------------------------------------------------------------- HTML helpers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are `_Raw`."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            tag = "th" if i == 0 else "td"
            text = cell.html if isinstance(cell, _Raw) else _e(cell)
            cells.append(f"<{tag}>{text}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


class _Raw:
    def __init__(self, html_text: str) -> None:
        self.html = html_text


def svg_bar_chart(
    bars: Sequence[tuple[str, float | None, str]],
    *,
    domain: tuple[float, float] = (0.0, 1.0),
    reference: tuple[float, str] | None = None,
    highlight: Sequence[str] = (),
    title: str = "",
) -> str:
    """Horizontal bars as inline SVG: (label, value or None when withheld, text shown)."""
    lo, hi = domain
    span = (hi - lo) or 1.0
    label_w, plot_w, text_w, bar_h, gap = 150, 360, 80, 18, 6
    width = label_w + plot_w + text_w
    height = len(bars) * (bar_h + gap) + 24
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    if title:
        parts.append(f"<title>{_e(title)}</title>")
    for i, (label, value, text) in enumerate(bars):
        y = i * (bar_h + gap) + 4
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{_e(label)}</text>'
        )
        if value is not None:
            w = max(0.0, min(1.0, (value - lo) / span)) * plot_w
            cls = "bar hi" if label in highlight else "bar"
            parts.append(
                f'<rect class="{cls}" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}"/>'
            )
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + bar_h - 5}">{_e(text)}</text>')
    axis_y = len(bars) * (bar_h + gap) + 4
    parts.append(
        f'<line class="axis" x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}"/>'
    )
    for v in (lo, hi):
        x = label_w + (v - lo) / span * plot_w
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">'
            f"{_e(_tick(v, hi))}</text>"
        )
    if reference is not None:
        value, label = reference
        x = label_w + max(0.0, min(1.0, (value - lo) / span)) * plot_w
        parts.append(
            f'<line class="ref" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{axis_y}"/>'
            f'<text class="tick ref-label" x="{x:.1f}" y="{axis_y + 14}" '
            f'text-anchor="middle">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick(v: float, hi: float) -> str:
    return f"{100 * v:.0f}%" if hi <= 1.0 else f"{v:,.0f}"


def svg_histogram(
    columns: Sequence[tuple[str, int]], *, title: str, x_label: str, min_count: int = MIN_COUNT
) -> str:
    """Vertical bars of people per size; suppressed counts are labelled, not drawn."""
    col_w, plot_h, left, bottom = 42, 160, 50, 40
    width = left + len(columns) * col_w + 10
    height = plot_h + bottom + 20
    top = max([n for _, n in columns if n >= min_count] or [1])
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_e(title)}</title>"
    ]
    base = plot_h + 16
    for i, (label, n) in enumerate(columns):
        x = left + i * col_w
        shown = shown_count(n, min_count)
        if n >= min_count:
            h = n / top * plot_h
            parts.append(
                f'<rect class="bar" x="{x + 4}" y="{base - h:.1f}" width="{col_w - 8}" '
                f'height="{h:.1f}"/>'
            )
            ty = base - h - 3
        else:
            ty = base - 3
        parts.append(
            f'<text class="tick" x="{x + col_w / 2}" y="{ty:.1f}" text-anchor="middle">'
            f"{_e(shown)}</text>"
            f'<text x="{x + col_w / 2}" y="{base + 14}" text-anchor="middle">{_e(label)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}"/>'
        f'<text class="tick" x="{left + len(columns) * col_w / 2}" y="{base + 32}" '
        f'text-anchor="middle">{_e(x_label)}</text></svg>'
    )
    return "".join(parts)


def _json_for_script(value: Any) -> str:
    """JSON that cannot close a script element."""
    return (
        json.dumps(value, default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


# ----------------------------------------------------------------------------- Splink charts


def _vega_embeds(specs: dict[str, dict[str, Any]]) -> str:
    """Script that renders each spec into its div. Actions are off: the default menu offers to
    send the spec to the online Vega editor."""
    return (
        f'<script type="application/json" id="vega-specs">{_json_for_script(specs)}</script>'
        "<script>(function(){var specs=JSON.parse(document.getElementById('vega-specs')"
        ".textContent);Object.keys(specs).forEach(function(k){var el=document.getElementById("
        "'chart-'+k);if(!el)return;vegaEmbed(el,specs[k],{actions:false,renderer:'svg'})"
        ".catch(function(err){el.textContent='Chart error: '+(err.message||err);});});})();"
        "</script>"
    )


def model_parameters_table(model: dict[str, Any]) -> str:
    """m, u and match weight per comparison level (the charts' figures, readable without JS)."""
    import math

    rows = []
    for comparison in splink_settings(model)["comparisons"]:
        name = comparison.get("output_column_name", "")
        for level in comparison.get("comparison_levels", []):
            if level.get("is_null_level"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            weight = math.log2(m / u) if m and u else None
            rows.append(
                (
                    name,
                    level.get("label_for_charts", ""),
                    "–" if m is None else f"{m:.4g}",
                    "–" if u is None else f"{u:.4g}",
                    "–" if weight is None else f"{weight:+.2f}",
                )
            )
    return _table(("comparison", "level", "m", "u", "match weight (log2 BF)"), rows, "num")


# ----------------------------------------------------------------------------- sections


def _reference_date(run_summary: dict[str, Any]) -> date:
    meta = run_summary.get("published", {}).get("metadata", {})
    raw = meta.get("reference_date") or run_summary.get("reference_date")
    if raw is None:
        raise PublishError("quality report: the run summary has no reference_date")
    return raw if isinstance(raw, date) else date.fromisoformat(str(raw))


def _header_section(run_summary: dict[str, Any], reference_date: date) -> str:
    run = run_summary.get("run", {})
    meta = run_summary.get("published", {}).get("metadata", {})
    linkage = run_summary.get("linkage", {})
    items = [
        ("Run id", run_summary.get("run_id") or run.get("run_id") or meta.get("run_id")),
        ("Run name", run.get("name")),
        ("Key id", run.get("key_id") or meta.get("key_id")),
        ("Reference date", reference_date.isoformat()),
        ("uprnlink version", meta.get("uprnlink_version")),
        ("Match threshold", linkage.get("match_threshold")),
        ("Records linked", shown_count(linkage.get("records"))),
        ("People found", shown_count(linkage.get("people"))),
        ("Candidate pairs scored", shown_count(linkage.get("candidate_pairs"))),
        ("Pairs above threshold", shown_count(linkage.get("pairs_above_threshold"))),
        ("Identifiers used for linkage", ", ".join(linkage.get("identifiers", [])) or None),
        (
            "Sources not supplied",
            ", ".join(run_summary.get("not_supplied", {}).get("sources", [])) or "none",
        ),
        (
            "Fields not supplied",
            "; ".join(
                f"{source}: {', '.join(names)}"
                for source, names in run_summary.get("not_supplied", {}).get("fields", {}).items()
            )
            or "none",
        ),
        ("Report generated", datetime.now(UTC).isoformat(timespec="seconds")),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v is not None)
    ingest = run_summary.get("ingest", [])
    table = ""
    if ingest:
        table = "<h3>Ingest</h3>" + _table(
            ("source", "rows in", "accepted", "quarantined"),
            [
                (
                    r.get("source"),
                    shown_count(r.get("rows_in")),
                    shown_count(r.get("rows_accepted")),
                    shown_count(r.get("rows_quarantined")),
                )
                for r in ingest
            ],
            "num",
        )
    return f'<section id="run"><h2>Run</h2><dl class="meta">{dl}</dl>{table}</section>'


def _model_section(model: dict[str, Any], have_charts: bool) -> str:
    charts = ""
    if have_charts:
        charts = (
            "<h3>Match weights</h3>"
            "<p>How much each level of each comparison moves a pair towards (right) or away "
            "from (left) a match, in bits.</p>"
            '<div class="vega" id="chart-match_weights"></div>'
            "<h3>m and u parameters</h3>"
            "<p>m: how often the level is seen among true matches; u: among random pairs.</p>"
            '<div class="vega" id="chart-m_u_parameters"></div>'
        )
    else:
        charts = '<p class="warn">Splink charts could not be drawn; see the table below.</p>'
    lam = splink_settings(model).get("probability_two_random_records_match")
    lam_text = f"<p>Prior probability that two random records match: {lam:.3g}.</p>" if lam else ""
    return (
        '<section id="model"><h2>Linkage model</h2>'
        + lam_text
        + charts
        + "<details><summary>Parameters as a table</summary>"
        + model_parameters_table(model)
        + "</details></section>"
    )


def _cluster_section(sizes: pl.DataFrame, min_count: int) -> str:
    by_records = [(r["size"], r["people"]) for r in sizes.filter(by="records").to_dicts()]
    by_sources = [(r["size"], r["people"]) for r in sizes.filter(by="sources").to_dicts()]
    return (
        '<section id="clusters"><h2>Cluster sizes</h2>'
        "<p>People by the number of records linked to them, and by the number of sources they "
        "appear in. Very large clusters can mean over-linking; many singletons in a source "
        "that should overlap others can mean under-linking.</p>"
        '<div class="pair">'
        + svg_histogram(
            by_records,
            title="People by number of records",
            x_label="records per person",
            min_count=min_count,
        )
        + svg_histogram(
            by_sources,
            title="People by number of sources",
            x_label="sources per person",
            min_count=min_count,
        )
        + "</div></section>"
    )


def _source_sections(quality: pl.DataFrame, min_count: int) -> str:
    rows = quality.to_dicts()

    def rate(r: dict[str, Any], col: str) -> tuple[float | None, str]:
        return safe_rate(r[col], r["records"], min_count)

    match_rows, match_bars = [], []
    for r in rows:
        share, text = rate(r, "linked_to_other_source")
        match_rows.append(
            (
                r["source_dataset"],
                shown_count(r["records"], min_count),
                shown_count(r["people"], min_count),
                text,
            )
        )
        match_bars.append((r["source_dataset"], share, text))
    match = (
        '<section id="match-rates"><h2>Match rates by source</h2>'
        "<p>Share of each source's records whose person also appears in at least one other "
        "source.</p>"
        + svg_bar_chart(match_bars, title="Share of records linked to another source")
        + _table(("source", "records", "people", "linked to another source"), match_rows, "num")
        + "</section>"
    )
    cov_rows, uprn_bars, lookup_bars, nhs_bars = [], [], [], []
    for r in rows:
        u, lk, n = rate(r, "with_uprn"), rate(r, "uprn_in_lookup"), rate(r, "with_nhs_number")
        cov_rows.append(
            (r["source_dataset"], shown_count(r["records"], min_count), u[1], lk[1], n[1])
        )
        uprn_bars.append((r["source_dataset"], *u))
        lookup_bars.append((r["source_dataset"], *lk))
        nhs_bars.append((r["source_dataset"], *n))
    coverage = (
        '<section id="uprn-coverage"><h2>UPRN coverage by source</h2>'
        "<p>Share of records with a UPRN, and share whose UPRN is found in the area lookup "
        "(only those can be placed in a household and an area).</p>"
        '<div class="pair">'
        + svg_bar_chart(uprn_bars, title="Share of records with a UPRN")
        + svg_bar_chart(lookup_bars, title="Share with a UPRN found in the lookup")
        + "</div></section>"
        '<section id="nhs-coverage"><h2>NHS number coverage by source</h2>'
        "<p>Share of records with a valid NHS number (sources that do not hold one show 0%).</p>"
        + svg_bar_chart(nhs_bars, title="Share of records with an NHS number")
        + _table(
            ("source", "records", "with UPRN", "UPRN in lookup", "with NHS number"),
            cov_rows,
            "num",
        )
        + "</section>"
    )
    return match + coverage


def _recall_domain(values: Sequence[float | None]) -> tuple[float, float]:
    known = [v for v in values if v is not None]
    low = min(known) if known else 0.0
    return (max(0.0, (int(low * 100) - 3) / 100), 1.0)


def _bias_section(evaluation: dict[str, Any], min_count: int) -> str:
    parts = [
        '<section id="bias"><h2>Bias checks: recall by group (against ground truth)</h2>'
        f"<p>Pairwise recall per group. Target: no two groups more than "
        f"{BIAS_TARGET_POINTS:g} percentage points apart. The dashed line marks the best "
        "group's recall minus the target; bars of the two groups furthest apart are "
        "highlighted.</p>"
    ]
    for dimension, check in evaluation.get("bias", {}).items():
        groups = check.get("groups", [])
        recalls = {
            g["group"]: (g.get("recall") if (g.get("people") or 0) >= min_count else None)
            for g in groups
        }
        gap = check.get("gap_points")
        between = check.get("gap_between") or []
        ok = gap is not None and gap <= BIAS_TARGET_POINTS
        badge = (
            "–"
            if gap is None
            else f'<span class="{"ok" if ok else "bad"}">{gap:.2f} points '
            f"({'within' if ok else 'over'} the {BIAS_TARGET_POINTS:g}-point target)</span>"
        )
        between_text = f" between {_e(' and '.join(between))}" if between else ""
        known = [v for v in recalls.values() if v is not None]
        reference = None
        if known:
            floor = max(known) - BIAS_TARGET_POINTS / 100
            reference = (floor, f"{100 * floor:.1f}%")
        parts.append(
            f"<h3>{_e(dimension.replace('_', ' '))}</h3>"
            f"<p>Largest gap{between_text}: {badge}</p>"
            + svg_bar_chart(
                [(g, v, pct(v, 2)) for g, v in recalls.items()],
                domain=_recall_domain(list(recalls.values())),
                reference=reference,
                highlight=between,
                title=f"Recall by {dimension}",
            )
            + _table(
                ("group", "people", "records", "true pairs", "recall"),
                [
                    (
                        g["group"],
                        shown_count(g.get("people"), min_count),
                        shown_count(g.get("records"), min_count),
                        shown_count(g.get("true_pairs"), min_count),
                        pct(recalls[g["group"]], 2),
                    )
                    for g in groups
                ],
                "num",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _evaluation_section(evaluation: dict[str, Any], min_count: int) -> str:
    parts = ['<section id="evaluation"><h2>Accuracy against ground truth</h2>']
    pw = evaluation.get("pairwise")
    if pw:
        parts.append(
            _table(
                ("", "records", "predicted pairs", "true pairs", "precision", "recall", "F1"),
                [
                    (
                        "all records",
                        shown_count(pw.get("records"), min_count),
                        shown_count(pw.get("predicted_pairs"), min_count),
                        shown_count(pw.get("true_pairs"), min_count),
                        pct(pw.get("precision"), 2),
                        pct(pw.get("recall"), 2),
                        pct(pw.get("f1"), 2),
                    )
                ],
                "num",
            )
        )
    hh = evaluation.get("households")
    if hh:
        parts.append(
            "<h3>Household co-residence on the reference date</h3>"
            "<p>Pairs of people placed in the same household, compared with who truly lived "
            "together.</p>"
            + _table(
                ("measure", "value"),
                [
                    ("residents", shown_count(hh.get("residents"), min_count)),
                    (
                        "residents placed in a household",
                        shown_count(hh.get("residents_placed"), min_count),
                    ),
                    ("true households", shown_count(hh.get("households"), min_count)),
                    (
                        "households found exactly",
                        shown_count(hh.get("households_exact"), min_count),
                    ),
                    (
                        "predicted households",
                        shown_count(hh.get("predicted_households"), min_count),
                    ),
                    ("co-residence precision", pct(hh.get("precision"), 2)),
                    ("co-residence recall", pct(hh.get("recall"), 2)),
                    ("co-residence F1", pct(hh.get("f1"), 2)),
                    ("precision among residents", pct(hh.get("precision_among_residents"), 2)),
                    ("recall among people placed", pct(hh.get("recall_among_placed"), 2)),
                ],
                "num",
            )
        )
    pairs = evaluation.get("source_pairs") or []
    if pairs:
        parts.append(
            "<h3>By pair of sources</h3>"
            + _table(
                (
                    "sources",
                    "records",
                    "predicted pairs",
                    "true pairs",
                    "precision",
                    "recall",
                    "F1",
                ),
                [
                    (
                        f"{p['source_a']} × {p['source_b']}",
                        shown_count(p.get("records"), min_count),
                        shown_count(p.get("predicted_pairs"), min_count),
                        shown_count(p.get("true_pairs"), min_count),
                        pct(p.get("precision"), 2),
                        pct(p.get("recall"), 2),
                        pct(p.get("f1"), 2),
                    )
                    for p in pairs
                ],
                "num",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _link_rate_section(people: pl.DataFrame, min_count: int) -> str:
    parts = [
        '<section id="link-rates"><h2>Link rates by age band and sex</h2>'
        "<p>Share of people found in two or more sources (no ground truth needed). Large "
        "differences between groups can point to linkage that works less well for some "
        "people; they also reflect who uses which services.</p>"
    ]
    for by, title, order in (
        ("age_band", "age band", AGE_BAND_ORDER),
        ("sex", "sex", ("F", "M", "unknown")),
    ):
        table = link_rate_table(people, by)
        rank = {g: i for i, g in enumerate(order)}
        rows = sorted(table.to_dicts(), key=lambda r: (rank.get(r["group"], 99), r["group"]))
        rates = [safe_rate(r["linked"], r["people"], min_count) for r in rows]
        parts.append(
            f"<h3>By {title}</h3>"
            + svg_bar_chart(
                [(r["group"], v, t) for r, (v, t) in zip(rows, rates, strict=True)],
                title=f"Share in 2+ sources by {title}",
            )
            + _table(
                ("group", "people", "in 2+ sources", "share"),
                [
                    (
                        r["group"],
                        shown_count(r["people"], min_count),
                        shown_count(r["linked"], min_count),
                        t,
                    )
                    for r, (_, t) in zip(rows, rates, strict=True)
                ],
                "num",
            )
        )
    parts.append("</section>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#fafafa;line-height:1.45}
header{background:#1d3557;color:#fff;padding:1rem 2rem}
header h1{margin:0;font-size:1.5rem}
nav{padding:.5rem 2rem;background:#e9eef5;font-size:.9rem}
nav a{margin-right:1rem;color:#1d3557}
main{padding:0 2rem 2rem;max-width:1100px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:1rem 1.25rem;
margin:1rem 0}
h2{margin-top:0;font-size:1.2rem;color:#1d3557}
h3{font-size:1rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.88rem}
th,td{border-bottom:1px solid #e3e6ea;padding:.25rem .6rem;text-align:left}
table.num td{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f1f3f6}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0}
dl.meta dt{font-weight:600}
dl.meta dd{margin:0;font-family:ui-monospace,monospace}
svg.chart{font-size:11px;margin:.4rem 1rem .4rem 0}
svg .bar{fill:#457b9d}
svg .bar.hi{fill:#e76f51}
svg .axis{stroke:#888}
svg .ref{stroke:#c1121f;stroke-dasharray:4 3}
svg .tick{fill:#555}
svg .ref-label{fill:#c1121f}
.pair{display:flex;flex-wrap:wrap}
.ok{color:#2a7d2e;font-weight:600}
.bad{color:#c1121f;font-weight:600}
.warn{color:#9a5b00}
.note{font-size:.85rem;color:#555}
.vega{min-height:120px}
"""


def _page(title: str, nav: Sequence[tuple[str, str]], body: str, scripts: str = "") -> str:
    links = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network: everything the page needs is inline.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1></header><nav>{links}</nav><main>{body}</main>"
        f"{scripts}</body></html>"
    )


def check_no_identifiers(text: str, records: pl.DataFrame) -> None:
    """Refuse a page that contains any record key or token of the run's records."""
    found = set(_HEX_RUN.findall(text))
    if not found:
        return
    candidates = pl.Series(sorted(found), dtype=pl.String)
    for col in (c for c in _ID_COLUMNS if c in records.columns):
        # The page's few hex runs looked up in the column (not the column's millions of values
        # turned into a Python set).
        if candidates.is_in(records.get_column(col).cast(pl.String).implode()).any():
            raise PublishError(f"quality report would contain {col} values (rule=no_identifiers)")


# ----------------------------------------------------------------------------- entry point


def build_quality_report(
    *,
    model: dict[str, Any],
    records: pl.DataFrame,
    clusters: pl.DataFrame,
    run_summary: dict[str, Any],
    evaluation: dict[str, Any] | None,
    out_path: Path,
    engineer_path: Path | None = None,
    min_count: int = MIN_COUNT,
) -> Path:
    """Write the de-identified linkage quality report (and optionally the engineer page).

    `model` is the saved Splink model (as in `model.json`, or wrapped as `{"splink": ...}`);
    `records` the trusted linkage records of all sources and `clusters` record -> person_id;
    `run_summary` supplies the run id, key id and reference date; `evaluation` is
    `LinkageEvaluation.to_dict()` when ground truth was scored. Returns `out_path`.
    """
    started = time.perf_counter()
    reference_date = _reference_date(run_summary)
    linked = link_records(records, clusters)
    sizes = cluster_size_table(linked)
    quality = source_quality_table(linked)
    people = person_link_table(linked, reference_date)

    scripts = ""
    try:
        specs = model_chart_specs(model)
        scripts = chart_libraries() + _vega_embeds(specs)
        have_charts = True
    except PublishError:
        raise
    except Exception as exc:  # a chart failure must not stop the run's report
        log.warning("quality report: Splink charts unavailable (%s)", type(exc).__name__)
        have_charts = False

    nav = [
        ("run", "Run"),
        ("model", "Model"),
        ("clusters", "Cluster sizes"),
        ("match-rates", "Match rates"),
        ("uprn-coverage", "UPRN coverage"),
        ("nhs-coverage", "NHS number coverage"),
    ]
    body = [
        _header_section(run_summary, reference_date),
        _model_section(model, have_charts),
        _cluster_section(sizes, min_count),
        _source_sections(quality, min_count),
    ]
    if evaluation:
        nav += [("bias", "Bias checks"), ("evaluation", "Accuracy")]
        body += [_bias_section(evaluation, min_count), _evaluation_section(evaluation, min_count)]
    nav.append(("link-rates", "Link rates"))
    body.append(_link_rate_section(people, min_count))
    body.append(
        f'<p class="note">De-identified: counts and ratios only. Counts from 1 to '
        f"{min_count - 1} are shown as &lt;{min_count}; a rate on such a denominator is withheld "
        "(–), and one whose numerator or complement is such a count is shown as a bound.</p>"
    )
    page = _page("Linkage quality report", nav, "".join(body), scripts)
    check_no_identifiers(page, records)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    log.info("quality report written in %.1f s", time.perf_counter() - started)

    if engineer_path is not None:
        build_engineer_report(
            model=model,
            linked=linked,
            run_summary=run_summary,
            out_path=engineer_path,
        )
    return out_path


# ----------------------------------------------------------------------------- engineer page


def example_pairs(
    linked: pl.DataFrame, n_matches: int = 4, n_near: int = 2
) -> list[tuple[str, str, str]]:
    """A few record pairs to explain: (kind, unique_id_l, unique_id_r).

    Matches: two records of one person from different sources. Near misses: records of
    different people sharing surname and date of birth. Chosen by sorted id, so a run's page is
    reproducible.
    """
    multi = (
        linked.group_by("person_id")
        .agg(pl.col("source_dataset").n_unique().alias("k"))
        .filter(pl.col("k") >= 2)
        .sort("person_id")
        .head(n_matches)
        .get_column("person_id")
    )
    out: list[tuple[str, str, str]] = []
    for pid in multi.to_list():
        recs = (
            linked.filter(pl.col("person_id") == pid)
            .sort("source_dataset", "unique_id")
            .unique("source_dataset", keep="first", maintain_order=True)
            .get_column("unique_id")
            .to_list()
        )
        out.append(("same person, two sources", recs[0], recs[1]))
    near = (
        linked.filter(pl.col("surname").is_not_null() & pl.col("dob").is_not_null())
        .select("unique_id", "person_id", "surname", "dob")
        .sort("unique_id")
    )
    pairs = (
        near.join(near, on=["surname", "dob"], suffix="_r")
        .filter(
            (pl.col("person_id") != pl.col("person_id_r"))
            & (pl.col("unique_id") < pl.col("unique_id_r"))
        )
        .sort("unique_id", "unique_id_r")
        .unique("person_id", keep="first", maintain_order=True)
        .head(n_near)
    )
    for row in pairs.iter_rows(named=True):
        out.append(("different people, same surname and DOB", row["unique_id"], row["unique_id_r"]))
    return out


def build_engineer_report(
    *,
    model: dict[str, Any],
    linked: pl.DataFrame,
    run_summary: dict[str, Any],
    out_path: Path,
) -> Path:
    """Write the engineer-only page: Splink waterfall charts of example pairs.

    Waterfalls show the compared records' values (names, dates of birth): this page belongs
    in `work/`, never in `out/`.
    """

    specs: dict[str, dict[str, Any]] = {}
    blocks = []
    for i, (kind, prob, spec) in enumerate(waterfall_specs(model, linked, example_pairs(linked))):
        key = f"waterfall_{i}"
        specs[key] = spec
        blocks.append(
            f"<h3>Example {i + 1}: {_e(kind)}</h3>"
            f"<p>Match probability {prob:.4f}.</p>"
            f'<div class="vega" id="chart-{key}"></div>'
        )
    run = run_summary.get("run", {})
    body = (
        '<section id="warning"><h2>Engineer only</h2><p class="bad">This page shows record '
        "values (names, dates of birth, postcodes). Keep it in the engineer-only zone; never "
        "publish or share it.</p>"
        f"<p>Run {_e(run_summary.get('run_id') or run.get('run_id'))}, key "
        f"{_e(run.get('key_id'))}.</p></section>"
        '<section id="waterfalls"><h2>How example pairs were scored</h2>'
        + ("".join(blocks) or "<p>No example pairs found.</p>")
        + "</section>"
    )
    scripts = chart_libraries() + _vega_embeds(specs) if specs else ""
    page = _page(
        "Linkage quality: engineer page",
        [("warning", "Engineer only"), ("waterfalls", "Waterfalls")],
        body,
        scripts,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
