"""The linkage quality report: one self-contained HTML page per run, opening offline.

The de-identified page (for `out/`) shows the Splink model (match weights and m/u charts),
cluster sizes, match rates and UPRN / NHS number coverage by source, and bias checks: recall by
group when a ground-truth evaluation is given, link rates by age band and sex always. It holds
counts and ratios only; counts from 1 to `min_count - 1` are shown as "<10" and rates built on
them are withheld. The optional engineer page (for `work/`) adds Splink waterfall charts of
example record pairs, which show record values and so must never be published.

The pages are rendered from the templates `quality.html.j2` and `quality_engineer.html.j2`
(`uprnlink.html`); this module computes what they show. Splink's charts come from
`uprnlink.linkage.charts` (only the linkage package imports Splink), the report's own charts
from `uprnlink.reports.charts` (Altair).
"""

from __future__ import annotations

import logging
import math
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
from uprnlink.html import Chart, Markup, inline_scripts, render_page
from uprnlink.linkage.charts import (
    chart_libraries,
    model_chart_specs,
    splink_settings,
    waterfall_specs,
)
from uprnlink.linkage.quality import source_quality_table
from uprnlink.publication import NotSupplied, PublicationMetadata
from uprnlink.reports.charts import Bar, count_chart, share_chart
from uprnlink.run_summary import RunSummary

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
    """Records with their person id (records without a cluster are dropped).

    The person ids are looked up on the record keys alone and added as a column, so the result
    shares the records' columns instead of copying them (a join copied every column of every
    record: the report held the records twice, 19 GiB at 15M records)."""
    person_id = (
        records.select("unique_id")
        .join(
            clusters.select("unique_id", "person_id"),
            on="unique_id",
            how="left",
            maintain_order="left",
        )
        .get_column("person_id")
    )
    linked = records.with_columns(person_id)
    return linked.filter(pl.col("person_id").is_not_null()) if person_id.null_count() else linked


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


def shown_value(n: int | None, min_count: int = MIN_COUNT) -> int | None:
    """A count as drawn in a chart: None (not drawn) where the page shows "<10"."""
    return None if n is None or 0 < n < min_count else n


# ----------------------------------------------------------------------------- page sections


def model_parameter_rows(model: dict[str, Any]) -> list[tuple[str, ...]]:
    """m, u and match weight per comparison level (the charts' figures, readable without JS)."""
    rows: list[tuple[str, ...]] = []
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
    return rows


def _publication(run_summary: RunSummary) -> PublicationMetadata:
    found = run_summary.metadata
    if found is None:
        raise PublishError("quality report: the run summary has no publication metadata")
    return found


def _run_section(run_summary: RunSummary, meta: PublicationMetadata) -> dict[str, Any]:
    run = run_summary.run
    link = run_summary.linkage
    missing = run_summary.not_supplied or NotSupplied(sources=[], fields={})
    facts = [
        ("Run id", run_summary.id or meta.run_id),
        ("Run name", run.name if run else None),
        ("Key id", run.key_id if run else meta.key_id),
        ("Reference date", meta.reference_date.isoformat()),
        ("uprnlink version", meta.uprnlink_version),
        ("Match threshold", link["match_threshold"] if link else None),
        ("Records linked", shown_count(link["records"] if link else None)),
        ("People found", shown_count(link["people"] if link else None)),
        ("Candidate pairs scored", shown_count(link["candidate_pairs"] if link else None)),
        ("Pairs above threshold", shown_count(link["pairs_above_threshold"] if link else None)),
        ("Identifiers used for linkage", ", ".join(link["identifiers"] if link else []) or None),
        ("Sources not supplied", ", ".join(missing["sources"]) or "none"),
        (
            "Fields not supplied",
            "; ".join(
                f"{source}: {', '.join(names)}" for source, names in missing["fields"].items()
            )
            or "none",
        ),
        ("Report generated", datetime.now(UTC).isoformat(timespec="seconds")),
    ]
    ingest = [
        (
            r.get("source"),
            shown_count(r.get("rows_in")),
            shown_count(r.get("rows_accepted")),
            shown_count(r.get("rows_quarantined")),
        )
        for r in run_summary.ingest or ()
    ]
    return {"facts": [(k, v) for k, v in facts if v is not None], "ingest": ingest}


def residence_rows(meta: PublicationMetadata, min_count: int) -> list[tuple[str, ...]]:
    """Per source, people placed on the reference date and the share another source confirms
    (the publish stage's `residence_confirmed`), with small numbers suppressed."""
    rows: list[tuple[str, ...]] = []
    for r in meta.residence_confirmed:
        _, text = safe_rate(r["confirmed"], r["people"], min_count)
        rows.append(
            (
                str(r["source_dataset"]),
                shown_count(r["people"], min_count),
                shown_count(r["confirmed"], min_count),
                text,
            )
        )
    return rows


#: The residence rules' figures in the run summary (`residence_rules`), as the report names
#: them; counts are suppressed below the report's minimum, the share is shown as it is.
RESIDENCE_RULE_LABELS = {
    "accounts_superseded": "council tax parties whose account a later one superseded",
    "joint_reference_share": "share of council tax references joint parties share",
    "in_care_homes": "people in a care home on the reference date (residential or nursing care)",
}


def residence_rule_rows(meta: PublicationMetadata, min_count: int) -> list[tuple[str, str]]:
    """What the superseded accounts and care homes rules acted on (the publish stage's
    `residence_rules`), counts with small numbers suppressed."""
    rows: list[tuple[str, str]] = []
    for name, label in RESIDENCE_RULE_LABELS.items():
        value = meta.residence_rules.get(name)
        if value is None:
            continue
        shown = f"{value:.2f}" if name.endswith("_share") else shown_count(int(value), min_count)
        rows.append((label, shown))
    return rows


def _cluster_section(
    sizes: pl.DataFrame, min_count: int
) -> tuple[dict[str, list[tuple[str, str]]], list[Chart]]:
    """People by number of records and by number of sources: tables and charts."""
    tables, charts = {}, []
    for by, key, title in (
        ("records", "records_per_person", "People by number of records"),
        ("sources", "sources_per_person", "People by number of sources"),
    ):
        rows = sizes.filter(by=by).to_dicts()
        tables[by] = [(r["size"], shown_count(r["people"], min_count)) for r in rows]
        columns = [
            Bar(r["size"], shown_value(r["people"], min_count), shown_count(r["people"], min_count))
            for r in rows
        ]
        charts.append(Chart(key, count_chart(columns, title=title, x_label=f"{by} per person")))
    return tables, charts


def _source_sections(quality: pl.DataFrame, min_count: int) -> tuple[dict[str, Any], list[Chart]]:
    """Match rates and UPRN / NHS number coverage by source: tables and charts."""
    bars: dict[str, list[Bar]] = {k: [] for k in ("linked", "uprn", "lookup", "nhs")}
    match_rows, coverage_rows = [], []
    for r in quality.to_dicts():
        source, records = r["source_dataset"], r["records"]
        rates = {
            key: safe_rate(r[col], records, min_count)
            for key, col in (
                ("linked", "linked_to_other_source"),
                ("uprn", "with_uprn"),
                ("lookup", "uprn_in_lookup"),
                ("nhs", "with_nhs_number"),
            )
        }
        for key, (value, text) in rates.items():
            bars[key].append(Bar(source, value, text))
        shown = shown_count(records, min_count)
        match_rows.append((source, shown, shown_count(r["people"], min_count), rates["linked"][1]))
        coverage_rows.append((source, shown, rates["uprn"][1], rates["lookup"][1], rates["nhs"][1]))
    charts = [
        Chart(f"share_{key}", share_chart(bars[key], title=title))
        for key, title in (
            ("linked", "Share of records linked to another source"),
            ("uprn", "Share of records with a UPRN"),
            ("lookup", "Share with a UPRN found in the lookup"),
            ("nhs", "Share of records with an NHS number"),
        )
    ]
    return {"match_rows": match_rows, "coverage_rows": coverage_rows}, charts


def _recall_domain(values: Sequence[float | None]) -> tuple[float, float]:
    known = [v for v in values if v is not None]
    low = min(known) if known else 0.0
    return (max(0.0, (int(low * 100) - 3) / 100), 1.0)


def _bias_section(
    evaluation: dict[str, Any], min_count: int
) -> tuple[list[dict[str, Any]], list[Chart]]:
    """Recall by group against ground truth, per dimension: gap, chart and table."""
    checks, charts = [], []
    for i, (dimension, check) in enumerate(evaluation.get("bias", {}).items()):
        groups = check.get("groups", [])
        recalls = {
            g["group"]: (g.get("recall") if (g.get("people") or 0) >= min_count else None)
            for g in groups
        }
        gap = check.get("gap_points")
        name = dimension.replace("_", " ")
        known = [v for v in recalls.values() if v is not None]
        reference = None
        if known:
            floor = max(known) - BIAS_TARGET_POINTS / 100
            reference = (floor, f"{100 * floor:.1f}%")
        key = f"bias_{i}"
        charts.append(
            Chart(
                key,
                share_chart(
                    [Bar(g, v, pct(v, 2)) for g, v in recalls.items()],
                    title=f"Recall by {name}",
                    domain=_recall_domain(list(recalls.values())),
                    reference=reference,
                    highlight=check.get("gap_between") or [],
                ),
            )
        )
        checks.append(
            {
                "dimension": name,
                "gap": None if gap is None else f"{gap:.2f}",
                "within_target": gap is not None and gap <= BIAS_TARGET_POINTS,
                "between": " and ".join(check.get("gap_between") or []),
                "chart": key,
                "rows": [
                    (
                        g["group"],
                        shown_count(g.get("people"), min_count),
                        shown_count(g.get("records"), min_count),
                        shown_count(g.get("true_pairs"), min_count),
                        pct(recalls[g["group"]], 2),
                    )
                    for g in groups
                ],
            }
        )
    return checks, charts


def _evaluation_section(evaluation: dict[str, Any], min_count: int) -> dict[str, Any]:
    """Accuracy against ground truth: pairwise, household co-residence, by pair of sources."""

    def n(value: Any) -> str:
        return shown_count(value, min_count)

    pw = evaluation.get("pairwise")
    pairwise = []
    if pw:
        pairwise.append(
            (
                "all records",
                n(pw.get("records")),
                n(pw.get("predicted_pairs")),
                n(pw.get("true_pairs")),
                pct(pw.get("precision"), 2),
                pct(pw.get("recall"), 2),
                pct(pw.get("f1"), 2),
            )
        )
    hh = evaluation.get("households") or {}
    households = (
        [
            ("residents", n(hh.get("residents"))),
            ("residents placed in a household", n(hh.get("residents_placed"))),
            ("true households", n(hh.get("households"))),
            ("households found exactly", n(hh.get("households_exact"))),
            ("predicted households", n(hh.get("predicted_households"))),
            ("co-residence precision", pct(hh.get("precision"), 2)),
            ("co-residence recall", pct(hh.get("recall"), 2)),
            ("co-residence F1", pct(hh.get("f1"), 2)),
            ("precision among residents", pct(hh.get("precision_among_residents"), 2)),
            ("recall among people placed", pct(hh.get("recall_among_placed"), 2)),
        ]
        if hh
        else []
    )
    source_pairs = [
        (
            f"{p['source_a']} × {p['source_b']}",
            n(p.get("records")),
            n(p.get("predicted_pairs")),
            n(p.get("true_pairs")),
            pct(p.get("precision"), 2),
            pct(p.get("recall"), 2),
            pct(p.get("f1"), 2),
        )
        for p in evaluation.get("source_pairs") or []
    ]
    return {"pairwise": pairwise, "households": households, "source_pairs": source_pairs}


def _link_rate_section(
    people: pl.DataFrame, min_count: int
) -> tuple[list[dict[str, Any]], list[Chart]]:
    """Share of people in two or more sources, by age band and by sex."""
    groups, charts = [], []
    for by, title, order in (
        ("age_band", "age band", AGE_BAND_ORDER),
        ("sex", "sex", ("F", "M", "unknown")),
    ):
        table = link_rate_table(people, by)
        rank = {g: i for i, g in enumerate(order)}
        rows = sorted(table.to_dicts(), key=lambda r: (rank.get(r["group"], 99), r["group"]))
        rates = [safe_rate(r["linked"], r["people"], min_count) for r in rows]
        key = f"link_rate_{by}"
        charts.append(
            Chart(
                key,
                share_chart(
                    [Bar(r["group"], v, t) for r, (v, t) in zip(rows, rates, strict=True)],
                    title=f"Share in 2+ sources by {title}",
                ),
            )
        )
        groups.append(
            {
                "title": title,
                "chart": key,
                "rows": [
                    (
                        r["group"],
                        shown_count(r["people"], min_count),
                        shown_count(r["linked"], min_count),
                        t,
                    )
                    for r, (_, t) in zip(rows, rates, strict=True)
                ],
            }
        )
    return groups, charts


def _chart_parts(model: dict[str, Any]) -> tuple[Markup | None, dict[str, dict[str, Any]]]:
    """The chart libraries (None: no charts at all) and Splink's model charts ({}: none)."""
    try:
        libraries = inline_scripts(chart_libraries())
    except PublishError:
        raise
    except Exception as exc:  # a chart failure must not stop the run's report
        log.warning("quality report: chart libraries unavailable (%s)", type(exc).__name__)
        return None, {}
    try:
        return libraries, model_chart_specs(model)
    except PublishError:
        raise
    except Exception as exc:
        log.warning("quality report: Splink charts unavailable (%s)", type(exc).__name__)
        return libraries, {}


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


def quality_page_parts(
    model: dict[str, Any],
    linked: pl.DataFrame,
    run_summary: RunSummary,
    evaluation: dict[str, Any] | None,
    min_count: int,
) -> dict[str, Any]:
    """What the de-identified page shows (the template's arguments): run facts, the model, cluster
    sizes, rates and coverage by source, residence evidence, bias, accuracy and link rates."""
    meta = _publication(run_summary)
    libraries, splink_specs = _chart_parts(model)
    sources, source_charts = _source_sections(source_quality_table(linked), min_count)
    link_rates, link_rate_charts = _link_rate_section(
        person_link_table(linked, meta.reference_date), min_count
    )
    cluster_sizes, cluster_charts = _cluster_section(cluster_size_table(linked), min_count)
    charts = [
        *(Chart(key, spec) for key, spec in splink_specs.items()),
        *cluster_charts,
        *source_charts,
        *link_rate_charts,
    ]
    nav = [
        ("run", "Run"),
        ("model", "Model"),
        ("clusters", "Cluster sizes"),
        ("match-rates", "Match rates"),
        ("uprn-coverage", "UPRN coverage"),
        ("nhs-coverage", "NHS number coverage"),
    ]
    residence = residence_rows(meta, min_count)
    residence_rules = residence_rule_rows(meta, min_count)
    if residence:
        nav.append(("residence", "Residence evidence"))
    bias: list[dict[str, Any]] = []
    accuracy = None
    if evaluation:
        nav += [("bias", "Bias checks"), ("evaluation", "Accuracy")]
        bias, bias_charts = _bias_section(evaluation, min_count)
        charts += bias_charts
        accuracy = _evaluation_section(evaluation, min_count)
    nav.append(("link-rates", "Link rates"))
    prior = splink_settings(model).get("probability_two_random_records_match")
    return {
        "charts": charts if libraries is not None else [],
        "chart_libraries": libraries,
        "nav": nav,
        "run": _run_section(run_summary, meta),
        "prior": f"{prior:.3g}" if prior else None,
        "parameters": model_parameter_rows(model),
        "cluster_sizes": cluster_sizes,
        "sources": sources,
        "bias": bias,
        "bias_target": f"{BIAS_TARGET_POINTS:g}",
        "accuracy": accuracy,
        "link_rates": link_rates,
        "residence": residence,
        "residence_rules": residence_rules,
        "min_count": min_count,
    }


def build_quality_report(
    *,
    model: dict[str, Any],
    records: pl.DataFrame,
    clusters: pl.DataFrame,
    run_summary: RunSummary,
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
    linked = link_records(records, clusters)
    parts = quality_page_parts(model, linked, run_summary, evaluation, min_count)
    page = render_page("quality.html.j2", title="Linkage quality report", **parts)
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


#: How many of the first records `example_pairs` looks among for near misses before all.
NEAR_PREFIX = 1_000


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
    # Only groups of one surname and date of birth holding two people give pairs, and the
    # first pairs in id order are usually among the first records: those are tried first
    # (the self-join over every record took 9 s at 4.9M records), then all of them.
    near = (
        linked.filter(pl.col("surname").is_not_null() & pl.col("dob").is_not_null())
        .select("unique_id", "person_id", "surname", "dob")
        .filter(pl.col("person_id").n_unique().over("surname", "dob") > 1)
    )
    for first in (near.bottom_k(NEAR_PREFIX, by="unique_id"), near):
        pairs = (
            first.join(near, on=["surname", "dob"], suffix="_r")
            .filter(
                (pl.col("person_id") != pl.col("person_id_r"))
                & (pl.col("unique_id") < pl.col("unique_id_r"))
            )
            .sort("unique_id", "unique_id_r")
            .unique("person_id", keep="first", maintain_order=True)
            .head(n_near)
        )
        if pairs.height == n_near:
            break
    for row in pairs.iter_rows(named=True):
        out.append(("different people, same surname and DOB", row["unique_id"], row["unique_id_r"]))
    return out


def build_engineer_report(
    *,
    model: dict[str, Any],
    linked: pl.DataFrame,
    run_summary: RunSummary,
    out_path: Path,
) -> Path:
    """Write the engineer-only page: Splink waterfall charts of example pairs.

    Waterfalls show the compared records' values (names, dates of birth): this page belongs
    in `work/`, never in `out/`.
    """
    examples, charts = [], []
    for i, (kind, prob, spec) in enumerate(waterfall_specs(model, linked, example_pairs(linked))):
        key = f"waterfall_{i}"
        charts.append(Chart(key, spec))
        examples.append({"kind": kind, "probability": f"{prob:.4f}", "chart": key})
    run = run_summary.run
    page = render_page(
        "quality_engineer.html.j2",
        title="Linkage quality: engineer page",
        charts=charts,
        chart_libraries=inline_scripts(chart_libraries()) if charts else None,
        nav=[("warning", "Engineer only"), ("waterfalls", "Waterfalls")],
        run_id=run_summary.id,
        key_id=run.key_id if run else None,
        examples=examples,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
