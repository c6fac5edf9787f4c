"""Publish the de-identified dataset: Parquet files and the analysts' DuckDB database.

This is the only module that writes DuckDB files. Tables live in the `linked` schema (for
engineers); analysts query the views and table macros in `main`. Every count an aggregate view
shows has been through disclosure control (`uprnlink.publish.disclosure`, rule from
`governance/policy.toml`): the suppressed summaries are computed here, once, at publish time
and stored in schema `summaries` behind their views, and the as-at summary macros apply the
same rule in SQL.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.errors import PublishError
from uprnlink.households.composition import aggregates_sql, derived_sql
from uprnlink.households.tables import AnalysisTables, months_before
from uprnlink.publication import PublicationMetadata
from uprnlink.publish.dictionary import comment_sql
from uprnlink.publish.disclosure import (
    PRESETS,
    DisclosurePolicy,
    Grouping,
    ProtectedTables,
    protect,
    rate_expr,
    read_policy,
)
from uprnlink.publish.tabulation import (
    DATASETS,
    build_tables_sql,
    categories_sql,
    dimension_types_sql,
)
from uprnlink.publish.uniqueness import measure_uniqueness
from uprnlink.publish.views import (
    ANALYST_VIEWS,
    LTC_COLUMNS,
    SUMMARY_COUNTS,
    SUMMARY_GROUPINGS,
    SUMMARY_RATES,
    View,
)

__all__ = [
    "MACROS",
    "PRESETS",
    "SUMMARY_COUNTS",
    "SUMMARY_GROUPINGS",
    "SUMMARY_RATES",
    "SUMMARY_VIEWS",
    "TABLES",
    "VIEWS",
    "DisclosurePolicy",
    "DuckDBLimits",
    "check_deidentified",
    "connect_database",
    "macros_sql",
    "read_policy",
    "views_sql",
    "write_analyst_database",
    "write_database",
    "write_linked_dataset",
]

TABLES = (
    "person",
    "household",
    "membership",
    "service_events",
    "linkage_quality",
    "household_area",
)
FORBIDDEN_COLUMNS = frozenset(
    {
        "forename",
        "surname",
        "middle_names",
        "dob",
        "nhs_number",
        "uprn",
        "record_id",
        "address_line_1",
        "postcode",
        "uprn_token",
        "nhs_token",
        "unique_id",
        "date_of_death",
    }
)


def check_deidentified(tables: dict[str, pl.DataFrame]) -> None:
    """Refuse to publish a table with a direct identifier column."""
    for name, df in tables.items():
        bad = FORBIDDEN_COLUMNS & set(df.columns)
        if bad:
            raise PublishError(f"table {name} has identifying column(s) {sorted(bad)}")


def write_linked_dataset(
    tables: AnalysisTables,
    linkage_quality: pl.DataFrame,
    out_dir: Path,
    metadata: PublicationMetadata,
) -> dict[str, Path]:
    """Write each table as Parquet with run metadata in the file's key-value metadata."""
    frames = {
        "person": tables.person,
        "household": tables.household,
        "membership": tables.membership,
        "service_events": tables.service_events,
        "linkage_quality": linkage_quality,
        "household_area": tables.household_area,
    }
    check_deidentified(frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    kv = {"uprnlink": json.dumps(metadata.to_dict(), sort_keys=True, default=str)}
    paths = {}
    for name, df in frames.items():
        path = out_dir / f"{name}.parquet"
        df.write_parquet(path, metadata=kv)
        paths[name] = path
    (out_dir / "run_metadata.json").write_text(
        json.dumps(metadata.to_dict(), indent=2, default=str)
    )
    return paths


# ------------------------------------------------------------------------------ summaries
SUMMARY_RELATIONS = (
    ("area_summary", "ward_summary"),
    ("area_summary", "decile_summary"),
    ("deprivation_summary", "decile_summary"),
    ("deprivation_summary", "tenure_total"),
    ("ward_summary", "grand_total"),
    ("decile_summary", "grand_total"),
    ("tenure_total", "grand_total"),
)
# (part, whole): counts that are part of another in every cell; the rest is protected too.
SUMMARY_PARTS = (
    ("people_65_plus_living_alone", "households"),
    ("people_85_plus_living_alone", "people_65_plus_living_alone"),
    ("lone_parent_households", "households"),
    ("multigenerational_households", "households"),
    ("households_bedrooms_known", "households"),
    ("overcrowded_households", "households_bedrooms_known"),
    ("households_with_social_care", "households"),
    ("people_with_ltc", "residents"),
)
SUMMARY_VIEWS = tuple(g.name for g in SUMMARY_GROUPINGS if g.published)


def summary_base_sql() -> str:
    """The finest cells every summary is a sum of: private households by area and tenure."""
    measures = ",\n       ".join(
        f"CAST({expr} AS BIGINT) AS {name}" for name, expr in SUMMARY_COUNTS.items()
    )
    return f"""SELECT lsoa, ward, imd_decile, tenure,
       {measures}
FROM households GROUP BY ALL"""


def build_summaries(base: pl.DataFrame, policy: DisclosurePolicy) -> ProtectedTables:
    """Every published summary from the base cells, protected together, with rates added."""
    result = protect(
        base,
        list(SUMMARY_COUNTS),
        SUMMARY_GROUPINGS,
        SUMMARY_RELATIONS,
        policy=policy,
        subsets=SUMMARY_PARTS,
    )
    for name, frame in result.tables.items():
        result.tables[name] = frame.with_columns(
            rate_expr(num, den, per, rate) for rate, num, den, per in SUMMARY_RATES
        )
    return result


# ------------------------------------------------------------------------------ views
# One row per person placed on the reference date, with their household's circumstances:
# materialised at publish time (a million-row join is too slow to repeat in every query).
PERSON_ANALYSIS_SQL = f"""SELECT p.person_id, p.household_id, h.reference_date,
       p.lives_in_communal_establishment, p.sex, p.age_band, p.age_group,
       p.lsoa, p.msoa, p.ward, p.imd_decile,
       CASE WHEN h.is_communal THEN 'communal_establishment'
            ELSE h.household_type END AS household_type,
       CASE WHEN h.is_communal THEN NULL ELSE h.tenure END AS tenure,
       CASE WHEN h.is_communal THEN NULL ELSE h.council_tax_band END
           AS council_tax_band,
       h.residents AS household_residents,
       h.living_alone,
       CASE WHEN h.is_communal THEN NULL ELSE h.overcrowded END AS overcrowded,
       h.any_benefits AS household_any_benefits,
       h.any_social_care AS household_any_social_care,
       {", ".join(LTC_COLUMNS)}, p.ltc_count, p.ae_attendances, p.emergency_admissions,
       p.receives_benefits, p.housing_benefit, p.social_tenant, p.social_care_client
FROM linked.person p JOIN linked.household h USING (household_id)"""


def record_views_sql(views: tuple[View, ...] = ANALYST_VIEWS) -> list[str]:
    """Record-level views (pseudonymised, not suppressed) and run metadata: every declared
    view but the summaries, which are created once their protected tables exist."""
    return [v.sql() for v in views if v.name not in SUMMARY_VIEWS]


def summary_views_sql(views: tuple[View, ...] = ANALYST_VIEWS) -> list[str]:
    """Views over the protected summary tables (schema `summaries`)."""
    return [v.sql() for v in views if v.name in SUMMARY_VIEWS]


def views_sql(policy: DisclosurePolicy | None = None) -> list[str]:
    """Every analyst view (the summaries read tables protected at publish time)."""
    del policy  # the summaries are protected before the views are created
    return [v.sql() for v in ANALYST_VIEWS]


#: Every analyst view's name, from the declarations (`uprnlink.publish.views`).
VIEWS = tuple(v.name for v in ANALYST_VIEWS)


# ------------------------------------------------------------------------------ macros
# The as-at summaries show these counts (a subset of the summaries', from households_as_at).
AS_AT_COUNTS: dict[str, str] = {
    "households": "count(*)",
    "residents": "sum(residents)",
    "people_65_plus_living_alone": "count(*) FILTER (WHERE living_alone AND people_65_plus = 1)",
    "lone_parent_households": "count(*) FILTER (WHERE lone_parent)",
    "multigenerational_households": "count(*) FILTER (WHERE multigenerational)",
    "emergency_admissions": "sum(emergency_admissions)",
    "ae_attendances": "sum(ae_attendances)",
}
AS_AT_PARTS = (
    ("people_65_plus_living_alone", "households"),
    ("lone_parent_households", "households"),
    ("multigenerational_households", "households"),
)
MACROS = ("households_as_at", "ward_summary_as_at", "decile_summary_as_at")
SCALAR_MACROS = ("safe_count", "safe_rate", "reference_date")


COMPUTED_MACRO = "_households_as_at_computed"
SNAPSHOT_YEARS = 10  # anniversaries of the reference date kept as household snapshots


def households_computed_sql(*, skip_snapshot_dates: bool) -> str:
    """Table macro: private households on any date, rebuilt from the membership spells.

    A date that is not a snapshot date is moved to the last day of its month (the answer's
    `as_at_date` says which day it is for). Ages are the reference-date age shifted by the
    years between the dates (no date of birth
    is published): exact on anniversaries of the reference date, otherwise possibly a year
    out for people whose birthday falls between the two dates. Service use counts hospital
    activity in the service period ending on the date, NULL where the extract does not cover
    that whole period. With `skip_snapshot_dates` it returns nothing for a date that has a
    snapshot (households_as_at reads the snapshot instead).
    """
    skip = (
        "WHERE as_at_date NOT IN (SELECT as_at_date FROM linked.snapshot_dates)"
        if skip_snapshot_dates
        else ""
    )
    # A date other than a snapshot's is moved to the last day of its month: stepping the date a
    # day at a time would otherwise show the very day of each hospital attendance (its
    # 12-month count steps up) and each move (red-team finding F7).
    snapped = (
        "CASE WHEN d IN (SELECT as_at_date FROM linked.snapshot_dates) THEN d "
        "ELSE CAST(last_day(d) AS DATE) END"
    )
    dates = (
        f"SELECT as_at_date FROM (SELECT {snapped} AS as_at_date "
        f"FROM (SELECT CAST(as_at AS DATE) AS d)) {skip}"
    )
    return f"CREATE OR REPLACE MACRO {COMPUTED_MACRO}(as_at) AS TABLE\n" + households_on_sql(dates)


def households_on_sql(dates: str) -> str:
    """A query of private households on each date `dates` (a query of `as_at_date` values)
    yields, rebuilt from the membership spells: one pass for any number of dates. The household
    measures are the rules of `uprnlink.households.composition`, as on the reference date."""
    steps = derived_sql()
    derived = ",\n".join(
        f"c{i} AS (SELECT *, {expr} FROM {'h' if i == 0 else f'c{i - 1}'})"
        for i, expr in enumerate(steps)
    )
    derived += f",\nc AS (SELECT * FROM c{len(steps) - 1})"
    return f"""WITH d AS (
    SELECT dd.as_at_date,
           CAST(dd.as_at_date - to_months(p.service_period_months) AS DATE) AS period_start,
           p.reference_date, p.hospital_data_from
    FROM ({dates}) dd CROSS JOIN linked.run_parameters p),
r AS (
    SELECT d.as_at_date, m.household_id, m.person_id,
           CASE WHEN m.age_on_reference_date IS NULL THEN NULL
                ELSE greatest(0, CAST(floor(m.age_on_reference_date + 0.5
                     - date_diff('day', d.as_at_date, d.reference_date) / 365.25) AS INTEGER))
           END AS age
    FROM linked.membership m JOIN d
      ON m.valid_from <= d.as_at_date
     AND coalesce(m.valid_to, DATE '9999-12-31') >= d.as_at_date
    WHERE NOT m.is_communal),
ev AS (
    SELECT d.as_at_date, e.person_id,
           count(*) FILTER (WHERE e.event_type = 'AE') AS ae,
           count(*) FILTER (WHERE e.event_type = 'EMERGENCY_ADMISSION') AS ea
    FROM linked.service_events e JOIN d
      ON e.event_date BETWEEN d.period_start AND d.as_at_date
    WHERE e.source = 'hospital_activity'
    GROUP BY d.as_at_date, e.person_id),
r2 AS (
    SELECT r.as_at_date, r.household_id, r.age,
           min(r.age) OVER (PARTITION BY r.as_at_date, r.household_id) AS youngest,
           coalesce(ev.ae, 0) AS ae, coalesce(ev.ea, 0) AS ea
    FROM r LEFT JOIN ev USING (as_at_date, person_id)),
h AS (
    SELECT as_at_date, household_id,
           {aggregates_sql()},
           CAST(sum(ae) AS INTEGER) AS ae,
           CAST(sum(ea) AS INTEGER) AS ea
    FROM r2 GROUP BY as_at_date, household_id),
{derived}
SELECT c.household_id, d.as_at_date, a.lsoa, a.msoa, a.ward, a.imd_decile, a.property_class,
       c.residents, c.adults, c.children_0_4, c.children_5_15, c.children_0_15,
       c.people_16_17, c.children_0_17, c.people_65_plus, c.people_85_plus, c.age_unknown,
       c.living_alone, c.lone_parent, c.multigenerational, c.household_type,
       c.improbable_size,
       d.period_start, d.as_at_date AS period_end,
       CASE WHEN d.period_start >= d.hospital_data_from THEN c.ae END AS ae_attendances,
       CASE WHEN d.period_start >= d.hospital_data_from THEN c.ea END AS emergency_admissions
FROM c JOIN d USING (as_at_date) LEFT JOIN linked.household_area a USING (household_id)"""


def households_as_at_sql() -> str:
    """Table macro: households on a date; a snapshot when there is one, else computed."""
    return f"""CREATE OR REPLACE MACRO households_as_at(as_at) AS TABLE
SELECT * EXCLUDE (years_before_reference) FROM linked.household_snapshots
WHERE as_at_date = CAST(as_at AS DATE)
UNION ALL
SELECT * FROM {COMPUTED_MACRO}(as_at)"""


def snapshot_dates(reference_date: date, earliest: date | None) -> list[date]:
    """The reference date and its anniversaries back to the earliest membership (at most 10)."""
    out = []
    for k in range(SNAPSHOT_YEARS):
        try:
            d = reference_date.replace(year=reference_date.year - k)
        except ValueError:  # 29 February
            d = reference_date.replace(year=reference_date.year - k, day=28)
        if earliest is not None and d < earliest and k > 0:
            break
        out.append(d)
    return out


#: The as-at summary macros: (macro, its key, the reference-date summary it must equal there).
AS_AT_SUMMARIES = (
    ("ward_summary_as_at", "ward", "ward_summary"),
    ("decile_summary_as_at", "imd_decile", "decile_summary"),
)


def snapshot_summary_table(macro: str) -> str:
    """The table (schema linked) of a summary macro's answers on the snapshot dates."""
    return f"{macro.removesuffix('_as_at')}_snapshots"


def protect_snapshot_summaries(
    cells: pl.DataFrame,
    summaries: dict[str, pl.DataFrame],
    reference_date: date,
    policy: DisclosurePolicy,
) -> dict[str, pl.DataFrame]:
    """The as-at summaries on every snapshot date, protected at publish time.

    One suppression pattern per date, whichever summary shows it: on the reference date each
    macro answers with its reference-date summary's own cells (protected with every other
    summary of that date), so neither can be differenced against the other; on the other
    snapshot dates the ward and decile tables are protected together, sharing their grand
    totals. `cells` holds the snapshot counts by as_at_date, ward and imd_decile (a count is
    NULL on a date the hospital extract does not cover).
    """
    counts = list(AS_AT_COUNTS)
    groupings = [
        *(Grouping(macro, (key,)) for macro, key, _ in AS_AT_SUMMARIES),
        Grouping("grand_total", (), published=False),
    ]
    relations = [(macro, "grand_total") for macro, _, _ in AS_AT_SUMMARIES]
    out: dict[str, list[pl.DataFrame]] = {macro: [] for macro, _, _ in AS_AT_SUMMARIES}
    for (on,), day in cells.partition_by("as_at_date", as_dict=True, maintain_order=True).items():
        assert isinstance(on, date)
        if on == reference_date:
            tables = {
                macro: summaries[table].select(key, *counts)
                for macro, key, table in AS_AT_SUMMARIES
            }
        else:
            uncovered = [c for c in counts if day.get_column(c).null_count() == day.height]
            result = protect(
                day.drop("as_at_date").with_columns(pl.col(counts).fill_null(0)),
                counts,
                groupings,
                relations,
                policy=policy,
                subsets=AS_AT_PARTS,
            )
            tables = {
                macro: result.tables[macro].with_columns(
                    pl.lit(None, pl.Int64).alias(c) for c in uncovered
                )
                for macro, _, _ in AS_AT_SUMMARIES
            }
        for macro, key, _ in AS_AT_SUMMARIES:
            out[macro].append(
                tables[macro]
                .select(pl.lit(on).alias("as_at_date"), key, *counts)
                .with_columns(pl.col(counts).cast(pl.Int64))
            )
    empty = {
        macro: pl.DataFrame(
            schema={
                "as_at_date": pl.Date,
                key: cells.schema[key],
                **dict.fromkeys(counts, pl.Int64),
            }
        )
        for macro, key, _ in AS_AT_SUMMARIES
    }
    return {macro: pl.concat(frames) if frames else empty[macro] for macro, frames in out.items()}


def snapshot_cells_sql() -> str:
    """The snapshot counts the as-at summaries show, by date, ward and IMD decile."""
    measures = ",\n       ".join(
        f"CAST({expr} AS BIGINT) AS {c}" for c, expr in AS_AT_COUNTS.items()
    )
    return f"""SELECT as_at_date, ward, imd_decile,
       {measures}
FROM linked.household_snapshots GROUP BY ALL ORDER BY ALL"""


def summary_as_at_sql(name: str, key: str, policy: DisclosurePolicy) -> str:
    """Table macro: a one-way summary on any date.

    On a snapshot date (the reference date and its anniversaries) it reads the answer
    protected at publish time (`protect_snapshot_summaries`): on the reference date exactly
    the reference-date summary's cells. On any other date (moved to its month's end, as
    households_as_at does) the disclosure rule is applied in SQL: a cell is withheld when it
    is a small count, or when it is part of another count in the row (AS_AT_PARTS) and the
    difference is small. Then, per count with exactly one withheld cell, its smallest non-zero
    cell still shown is withheld too (if every other cell is zero, the withheld cell equals
    the total, itself a small count). Then rounding. Rates use the counts as shown. The ward
    and decile tables of one date share only their grand totals, which both treat as known,
    so each one's protection holds against the other.
    """
    low = 0 if policy.suppress_zero else 1
    high = policy.min_count - 1
    counts = list(AS_AT_COUNTS)
    measures = ",\n           ".join(
        f"CAST({expr} AS BIGINT) AS {c}" for c, expr in AS_AT_COUNTS.items()
    )

    def small(expr: str) -> str:
        return f"(({expr}) BETWEEN {low} AND {high})"

    def withheld(c: str) -> str:
        rules = [small(c)]
        rules += [small(f"{whole} - {part}") for part, whole in AS_AT_PARTS if part == c]
        return " OR ".join(rules)

    long = "\n    UNION ALL ".join(
        f"SELECT k, '{c}' AS measure, {c} AS v, {withheld(c)} AS withheld FROM base" for c in counts
    )
    secondary = (
        "(n_withheld = 1 AND NOT withheld AND v > 0 AND rank_shown = 1)"
        if policy.secondary
        else "FALSE"
    )
    r = policy.round_to
    shown = "v" if r <= 1 else f"(v + {r // 2}) // {r} * {r}"
    pivot = ",\n       ".join(
        f"max(CASE WHEN measure = '{c}' AND NOT hidden THEN {shown} END) AS {c}" for c in counts
    )
    columns = ", ".join(counts)
    return f"""CREATE OR REPLACE MACRO {name}(as_at) AS TABLE
WITH base AS (
    SELECT {key} AS k,
           {measures}
    FROM households_as_at(as_at)
    WHERE as_at_date NOT IN (SELECT as_at_date FROM linked.snapshot_dates)
    GROUP BY ALL),
long AS (
    {long}),
ranked AS (
    SELECT *, sum(CAST(withheld AS INTEGER)) OVER (PARTITION BY measure) AS n_withheld,
           row_number() OVER (PARTITION BY measure
                              ORDER BY (withheld OR v = 0), v, k NULLS LAST) AS rank_shown
    FROM long),
marked AS (
    SELECT k, measure, v, withheld OR {secondary} AS hidden FROM ranked),
computed AS (
    SELECT k AS {key},
           {pivot}
    FROM marked GROUP BY k),
published AS (
    SELECT {key}, {columns} FROM linked.{snapshot_summary_table(name)}
    WHERE as_at_date = CAST(as_at AS DATE)),
wide AS (
    SELECT * FROM published UNION ALL SELECT * FROM computed)
SELECT *,
       round(1000.0 * emergency_admissions / nullif(residents, 0), 1)
           AS emergency_admissions_per_1000
FROM wide ORDER BY {key} NULLS LAST"""


def macros_sql(policy: DisclosurePolicy) -> list[str]:
    """The analysts' table macros (as-at households and summaries) and disclosure helpers."""
    return [
        f"CREATE OR REPLACE MACRO safe_count(n) AS {policy.safe_count_sql('n')}",
        "CREATE OR REPLACE MACRO safe_rate(num, den, per) AS "
        "CASE WHEN safe_count(num) IS NULL OR safe_count(den) IS NULL OR safe_count(den) = 0 "
        "THEN NULL ELSE round(per * safe_count(num) / safe_count(den), 1) END",
        "CREATE OR REPLACE MACRO reference_date() AS "
        "(SELECT reference_date FROM linked.run_parameters)",
        households_computed_sql(skip_snapshot_dates=True),
        households_as_at_sql(),
        *(summary_as_at_sql(macro, key, policy) for macro, key, _ in AS_AT_SUMMARIES),
    ]


# ------------------------------------------------------------------------------ database
@dataclass(frozen=True)
class DatabaseSummary:
    """What write_database published about disclosure control (counts only)."""

    disclosure: dict[str, Any]


def run_parameters(metadata: PublicationMetadata, hospital_data_from: Any) -> pl.DataFrame:
    """The reference date and service period the views and macros use, from run metadata."""
    on, months = metadata.reference_date, metadata.service_period_months
    return pl.DataFrame(
        {
            "reference_date": [on],
            "service_period_months": [months],
            "period_start": [months_before(on, months)],
            "period_end": [on],
            "hospital_data_from": [hospital_data_from],
        },
        schema={
            "reference_date": pl.Date,
            "service_period_months": pl.Int32,
            "period_start": pl.Date,
            "period_end": pl.Date,
            "hospital_data_from": pl.Date,
        },
    )


def suppression_stats(result: ProtectedTables) -> dict[str, Any]:
    """Cells shown and withheld per published summary (all counts together)."""
    out: dict[str, dict[str, int]] = {}
    for s in result.stats:
        if not s["published"]:
            continue
        v = out.setdefault(s["grouping"], {"cells": 0, "primary": 0, "secondary": 0})
        for k in ("cells", "primary", "secondary"):
            v[k] += int(s[k])
    return out


@dataclass(frozen=True)
class DuckDBLimits:
    """What a publish DuckDB may use: a memory cap (DuckDB's `memory_limit`, such as "8GB"),
    beyond which it spills to `temp_dir`, and its threads."""

    memory_limit: str
    threads: int
    temp_dir: Path


def connect_database(path: Path, limits: DuckDBLimits | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB database file for writing, within `limits` (None: DuckDB's defaults, most of
    the machine's memory and no spilling folder of ours)."""
    config: dict[str, Any] = {"python_enable_replacements": False}
    if limits is not None:
        limits.temp_dir.mkdir(parents=True, exist_ok=True)
        config.update(
            memory_limit=limits.memory_limit,
            threads=int(limits.threads),
            temp_directory=limits.temp_dir.as_posix(),
        )
    return duckdb.connect(str(path), config=config)


def write_database(
    db_path: Path,
    parquet: dict[str, Path],
    metadata: PublicationMetadata,
    policy: DisclosurePolicy,
    *,
    record_keys: pl.DataFrame | None = None,
    views: tuple[View, ...] = ANALYST_VIEWS,
    limits: DuckDBLimits | None = None,
) -> DatabaseSummary:
    """Build the engineers' DuckDB database (every table, declared view and macro) in a
    temporary file, then move it into place in one step, readable by its owner only. The
    tables are copied from the Parquet files inside DuckDB (within `limits`), not through
    Python."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = connect_database(tmp, limits)
    try:
        con.execute("CREATE SCHEMA linked")
        con.execute("CREATE SCHEMA summaries")
        for name, path in parquet.items():
            con.execute(f"CREATE TABLE linked.{name} AS SELECT * FROM read_parquet(?)", [str(path)])
        hospital_from = None
        if "service_events" in parquet:
            hospital_from = con.execute(
                "SELECT min(event_date) FROM linked.service_events "
                "WHERE source = 'hospital_activity'"
            ).fetchall()[0][0]
        _register(con, "linked.run_parameters", run_parameters(metadata, hospital_from))
        _register(con, "linked.run_metadata", _metadata_frame(metadata.to_dict()))
        if record_keys is not None:
            _register(con, "linked.record_keys", record_keys)
        con.execute(f"CREATE TABLE linked.person_analysis AS {PERSON_ANALYSIS_SQL}")
        write_snapshots(con, metadata)
        for sql in record_views_sql(views):
            con.execute(sql)

        base = pl.from_arrow(con.sql(summary_base_sql()).to_arrow_table())
        assert isinstance(base, pl.DataFrame)
        result = build_summaries(base, policy)
        for name, frame in result.tables.items():
            _register(con, f"summaries.{name}", frame)
        for sql in summary_views_sql(views):
            con.execute(sql)
        cells = pl.from_arrow(con.sql(snapshot_cells_sql()).to_arrow_table())
        assert isinstance(cells, pl.DataFrame)
        on = metadata.reference_date
        for macro, frame in protect_snapshot_summaries(cells, result.tables, on, policy).items():
            _register(con, f"linked.{snapshot_summary_table(macro)}", frame)
        risk = measure_uniqueness(con).describe(policy.max_unique_share)
        disclosure = {
            **policy.describe(),
            "summaries": suppression_stats(result),
            "uniqueness": risk,
        }
        con.execute(
            "INSERT INTO linked.run_metadata VALUES ('disclosure', ?)",
            [json.dumps(disclosure, default=str)],
        )
        for sql in macros_sql(policy):
            con.execute(sql)
        for view in views:
            for sql in view.comment_sql("VIEW"):
                con.execute(sql)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.chmod(tmp, ENGINEER_MODE)
    os.replace(tmp, db_path)
    return DatabaseSummary(disclosure=disclosure)


#: What the analyst database keeps in schema `linked`: only the inputs of the as-at macros,
#: only their columns. Analysts never name these tables (the query guard refuses it); the
#: macros read them.
MACRO_INPUTS: dict[str, str] = {
    "membership": "SELECT person_id, household_id, valid_from, valid_to, is_communal, "
    "age_on_reference_date FROM eng.linked.membership",
    "service_events": "SELECT person_id, source, event_type, event_date "
    "FROM eng.linked.service_events WHERE source = 'hospital_activity'",
    "household_area": "SELECT * FROM eng.linked.household_area",
    "run_parameters": "SELECT * FROM eng.linked.run_parameters",
    "snapshot_dates": "SELECT * FROM eng.linked.snapshot_dates",
    "household_snapshots": "SELECT * FROM eng.linked.household_snapshots",
    **{
        snapshot_summary_table(m): f"SELECT * FROM eng.linked.{snapshot_summary_table(m)}"
        for m, _, _ in AS_AT_SUMMARIES
    },
}
ANALYST_MODE = 0o640  # the query service's group reads it
ENGINEER_MODE = 0o600  # the pipeline's account only


def write_analyst_database(
    engineer_db: Path,
    analyst_db: Path,
    policy: DisclosurePolicy,
    views: tuple[View, ...] = ANALYST_VIEWS,
    *,
    limits: DuckDBLimits | None = None,
) -> list[str]:
    """The analysts' database: each declared view's rows as a table of the view's name, the
    as-at macros and only the inputs they read; nothing else of the engineer database.

    Built in a temporary file (DuckDB within `limits`) and moved into place; returns its
    tables (schema.name).
    """
    tmp = analyst_db.with_name(analyst_db.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = connect_database(tmp, limits)
    try:
        con.execute("ATTACH ? AS eng (READ_ONLY)", [str(engineer_db)])
        for declared in views:
            con.execute(f"CREATE TABLE main.{declared.name} AS FROM eng.main.{declared.name}")
        con.execute("CREATE SCHEMA linked")
        for table, select in MACRO_INPUTS.items():
            con.execute(f"CREATE TABLE linked.{table} AS {select}")
        # The table builder's units (one row per unit: categories, measures, record keys).
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'eng' "
            "AND schema_name = 'linked' AND table_name = 'record_keys'"
        ).fetchall()[0][0]:
            for sql in build_tables_sql("eng"):
                con.execute(sql)
            con.execute(categories_sql())
            _store_dimensions_as_enums(con)
        con.execute("DETACH eng")
        for sql in macros_sql(policy):
            con.execute(sql)
        for declared in views:
            for sql in declared.comment_sql("TABLE"):
                con.execute(sql)
        for macro in MACROS:
            for sql in comment_sql(macro, "MACRO TABLE"):
                con.execute(sql)
        con.execute("CHECKPOINT")
        tables = [
            f"{schema}.{name}"
            for schema, name in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
            ).fetchall()
        ]
    finally:
        con.close()
    os.chmod(tmp, ANALYST_MODE)
    os.replace(tmp, analyst_db)
    return tables


def _store_dimensions_as_enums(con: duckdb.DuckDBPyConnection) -> None:
    """Each `tab.<dataset>` dimension as an ENUM of its categories (`tab.categories`, in
    display order) and any other value the data holds, so tables group on small codes."""
    listed: dict[tuple[str, str], list[str]] = {}
    for dataset, dimension, category in con.execute(
        "SELECT dataset, dimension, category FROM tab.categories ORDER BY dataset, dimension, "
        "position"
    ).fetchall():
        listed.setdefault((dataset, dimension), []).append(category)
    for ds in DATASETS:
        for d in ds.dimensions:
            found = con.execute(
                f"SELECT DISTINCT {d.name} FROM tab.{ds.name} WHERE {d.name} IS NOT NULL ORDER BY 1"
            ).fetchall()
            values = [*listed.get((ds.name, d.name), []), *(v for (v,) in found)]
            for sql in dimension_types_sql(ds.name, d.name, values):
                con.execute(sql)


def write_snapshots(con: duckdb.DuckDBPyConnection, metadata: PublicationMetadata) -> list[date]:
    """Households on the reference date and its anniversaries, made once for households_as_at.

    Rebuilding households from the spells takes about a second per date at a million people,
    so the dates analysts ask for most (31 March of each year, for a 31 March reference date)
    are computed here, all in one pass over the spells; any other date is computed when asked
    for.
    """
    earliest = con.execute("SELECT min(valid_from) FROM linked.membership").fetchall()[0][0]
    dates = snapshot_dates(metadata.reference_date, earliest)
    _register(
        con,
        "linked.snapshot_dates",
        pl.DataFrame({"as_at_date": dates, "years_before_reference": range(len(dates))}).sort(
            "as_at_date"
        ),
    )
    # Newest first, each date's rows together, so a filter on years_before_reference (or
    # as_at_date) skips the other years' row groups.
    con.execute(
        "CREATE TABLE linked.household_snapshots AS "
        "SELECT h.*, s.years_before_reference FROM ("
        + households_on_sql("SELECT as_at_date FROM linked.snapshot_dates")
        + ") h JOIN linked.snapshot_dates s USING (as_at_date) "
        "ORDER BY s.years_before_reference, h.household_id"
    )
    con.execute("ALTER TABLE linked.snapshot_dates DROP COLUMN years_before_reference")
    con.execute(households_computed_sql(skip_snapshot_dates=False))
    return dates


def _metadata_frame(metadata: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        {"key": list(metadata), "value": [json.dumps(v, default=str) for v in metadata.values()]},
        schema={"key": pl.Utf8, "value": pl.Utf8},
    )


def _register(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    con.register("_frame", frame.to_arrow())
    try:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM _frame")
    finally:
        con.unregister("_frame")
