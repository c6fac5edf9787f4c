"""The analyst views and macros: household definitions, as-at households, protected summaries."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import PipelineRun, frame
from uprnlink.households.ages import HOUSEHOLD_GROUPS, age_band_expr
from uprnlink.households.tables import (
    household_profile,
    household_type_expr,
    lone_parent_expr,
    months_before,
    published_memberships,
)
from uprnlink.households.timelines import household_composition
from uprnlink.publication import PublicationMetadata
from uprnlink.publish.database import (
    COMPUTED_MACRO,
    FORBIDDEN_COLUMNS,
    SUMMARY_COUNTS,
    SUMMARY_PARTS,
    households_computed_sql,
    read_policy,
    snapshot_dates,
    write_database,
)
from uprnlink.publish.disclosure import DisclosurePolicy

ON = date(2026, 3, 31)


def household(*people: tuple[int | None, str | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Residents of one household H from (age, sex) pairs; returns residents and people."""
    ids = [f"p{i}" for i in range(len(people))]
    dobs = [None if age is None else date(ON.year - age, 1, 1) for age, _ in people]
    residents = pl.DataFrame(
        {"person_id": ids, "household_token": ["H"] * len(ids), "is_communal": [False] * len(ids)}
    )
    people_frame = pl.DataFrame(
        {"person_id": ids, "dob": dobs, "sex": [s for _, s in people]},
        schema={"person_id": pl.Utf8, "dob": pl.Date, "sex": pl.Utf8},
    )
    return residents, people_frame


def profile(*people: tuple[int | None, str | None]) -> dict:
    residents, people_frame = household(*people)
    comp = household_composition(residents, people_frame, ON)
    prof = household_profile(residents, people_frame, ON)
    row = (
        comp.join(prof, on="household_token")
        .with_columns(lone_parent_expr().alias("lone_parent"))
        .with_columns(household_type_expr().alias("household_type"))
    )
    return row.row(0, named=True)


@pytest.mark.parametrize(
    "people,needed",
    [
        ([(40, "M"), (38, "F")], 1),  # a couple
        ([(40, "M"), (38, "F"), (12, "M"), (8, "F")], 3),  # boy 12 and girl 8 cannot share
        ([(40, "M"), (38, "F"), (12, "M"), (8, "M")], 2),  # boy 12 shares with boy 8
        ([(40, "M"), (38, "F"), (15, "F"), (13, "F"), (4, "M"), (2, "F")], 3),
        ([(40, "M"), (38, "F"), (22, "M")], 2),  # an adult son has his own room
        ([(50, "M"), (48, "F"), (23, "M"), (20, "F")], 3),  # adult children are not a couple
        ([(30, "M"), (29, "M")], 2),  # two men: no couple inferred
        ([(30, "F"), (None, None)], 2),  # unknown age counts as an adult
        ([(70, "M"), (68, "F"), (42, "M"), (40, "F"), (9, "M"), (7, "F")], 3),
        ([(1, "F")], 1),
    ],
)
def test_bedroom_standard(people: list[tuple[int | None, str | None]], needed: int) -> None:
    assert profile(*people)["bedrooms_needed"] == needed


def test_lone_parent_multigenerational_and_household_type() -> None:
    lone = profile((34, "F"), (6, "M"), (3, "F"))
    assert lone["lone_parent"] and lone["household_type"] == "lone_parent"
    with_teen = profile((45, "F"), (16, "M"), (10, "F"))
    assert with_teen["lone_parent"]  # 16-17 year olds may live with a lone parent
    couple = profile((34, "F"), (36, "M"), (3, "F"))
    assert not couple["lone_parent"] and couple["household_type"] == "adults_with_children"
    unknown = profile((34, "F"), (None, None), (3, "F"))
    assert not unknown["lone_parent"] and unknown["household_type"] == "unclassified"
    three = profile((70, "F"), (44, "F"), (12, "M"))
    assert three["multigenerational"] and three["household_type"] == "multigenerational"
    close = profile((50, "F"), (34, "F"), (19, "M"))  # gaps of 16 and 15 years: two generations
    assert not close["multigenerational"]
    assert profile((80, "F"))["household_type"] == "one_person_65_plus"
    assert profile((40, "F"))["household_type"] == "one_person_under_65"
    assert profile((70, "F"), (72, "M"))["household_type"] == "all_aged_65_plus"
    assert profile((25, "F"), (27, "M"), (30, "M"))["household_type"] == "adults_no_children"


def test_age_groups() -> None:
    ages = pl.DataFrame({"age": [0, 4, 5, 15, 16, 17, 18, 64, 65, 84, 85, None]})
    groups = ages.select(age_band_expr("age", HOUSEHOLD_GROUPS).alias("g"))["g"].to_list()
    assert groups == [
        "00-04",
        "00-04",
        "05-15",
        "05-15",
        "16-17",
        "16-17",
        "18-64",
        "18-64",
        "65-84",
        "65-84",
        "85+",
        None,
    ]


def test_a_person_is_not_resident_on_the_day_they_die() -> None:
    spells = pl.DataFrame(
        {
            "person_id": ["a", "a", "b", "c"],
            "household_token": ["H", "K", "H", "H"],
            "is_communal": [False] * 4,
            "valid_from": [date(2020, 1, 1), date(2025, 1, 1), date(2020, 1, 1), date(2021, 1, 1)],
            "valid_to": [date(2024, 12, 31), date(2025, 6, 1), None, date(2021, 1, 1)],
        }
    )
    people = pl.DataFrame(
        {"person_id": ["a", "b", "c"], "date_of_death": [date(2025, 6, 1), None, date(2021, 1, 1)]}
    )
    out = published_memberships(spells, people)
    assert out.select("person_id", "valid_to").rows() == [
        ("a", date(2024, 12, 31)),
        ("a", date(2025, 5, 31)),
        ("b", None),
    ]  # c's only spell was the day they died


def test_service_period_and_snapshot_dates() -> None:
    assert months_before(date(2026, 3, 31), 12) == date(2025, 3, 31)
    assert months_before(date(2026, 5, 31), 3) == date(2026, 2, 28)
    assert snapshot_dates(date(2026, 3, 31), date(2023, 6, 1)) == [
        date(2026, 3, 31),
        date(2025, 3, 31),
        date(2024, 3, 31),
    ]
    assert snapshot_dates(date(2024, 2, 29), None)[1] == date(2023, 2, 28)
    assert len(snapshot_dates(date(2026, 3, 31), None)) == 10


# ------------------------------------------------------------------------------ published
COMPOSITION = [
    "residents",
    "adults",
    "children_0_4",
    "children_5_15",
    "children_0_15",
    "people_16_17",
    "children_0_17",
    "people_65_plus",
    "people_85_plus",
    "age_unknown",
    "living_alone",
    "lone_parent",
    "multigenerational",
    "household_type",
    "improbable_size",
    "ae_attendances",
    "emergency_admissions",
]


def test_households_as_at_the_reference_date_are_the_households_view(
    db: duckdb.DuckDBPyConnection,
) -> None:
    cols = ", ".join(["household_id", "lsoa", "ward", "imd_decile", *COMPOSITION])
    view = frame(db, f"SELECT {cols} FROM households ORDER BY household_id")
    as_at = frame(
        db, f"SELECT {cols} FROM households_as_at(reference_date()) ORDER BY household_id"
    )
    assert view.height > 300
    assert view.equals(as_at)


def test_snapshots_equal_the_macro_computed_on_the_day(small_run: PipelineRun) -> None:
    """A snapshot is what the as-at computation gives for its date; other dates compute."""
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    try:
        con.execute(
            households_computed_sql(skip_snapshot_dates=False)
            .replace("CREATE OR REPLACE MACRO", "CREATE TEMP MACRO")
            .replace(COMPUTED_MACRO, "_check_computed")
        )
        dates = [r[0] for r in con.execute("SELECT * FROM linked.snapshot_dates").fetchall()]
        assert dates and max(dates) == small_run.settings.reference_date
        for d in (dates[0], dates[-1]):
            snap = frame(
                con,
                "SELECT * EXCLUDE (years_before_reference) FROM household_snapshots "
                f"WHERE as_at_date = DATE '{d}' "
                "ORDER BY household_id",
            )
            computed = frame(
                con, f"SELECT * FROM _check_computed(DATE '{d}') ORDER BY household_id"
            )
            macro = frame(con, f"SELECT * FROM households_as_at(DATE '{d}') ORDER BY household_id")
            assert snap.height > 0 and snap.equals(computed) and snap.equals(macro)
        other = frame(con, "SELECT * FROM households_as_at(DATE '2025-09-30')")
        assert other.height > 300 and set(other["as_at_date"]) == {date(2025, 9, 30)}
    finally:
        con.close()


def test_hospital_counts_are_null_before_the_extract_covers_the_period(
    db: duckdb.DuckDBPyConnection,
) -> None:
    first = db.execute("SELECT hospital_data_from FROM linked.run_parameters").fetchall()[0][0]
    early = frame(db, f"SELECT * FROM households_as_at(DATE '{first}')")
    assert early["emergency_admissions"].null_count() == early.height
    late = frame(db, "SELECT * FROM households_as_at(reference_date())")
    assert late["emergency_admissions"].null_count() == 0


def test_views_take_the_reference_date_and_period_from_the_run(
    db: duckdb.DuckDBPyConnection, small_run: PipelineRun
) -> None:
    on = small_run.settings.reference_date
    months = small_run.settings.service_period_months
    row = db.execute(
        "SELECT DISTINCT reference_date, period_start, period_end FROM household_health"
    ).fetchall()
    assert row == [(on, months_before(on, months), on)]
    meta = dict(db.execute("SELECT key, value FROM run_info").fetchall())
    assert json.loads(meta["reference_date"]) == on.isoformat()


def test_person_analysis_is_one_row_per_resident_without_identifiers(
    db: duckdb.DuckDBPyConnection,
) -> None:
    cols = {r[0] for r in db.execute("DESCRIBE person_analysis").fetchall()}
    assert not cols & FORBIDDEN_COLUMNS
    assert "age" not in cols and "age_band" in cols
    n = db.execute("SELECT count(*), count(DISTINCT person_id) FROM person_analysis").fetchall()
    residents = db.execute(
        "SELECT (SELECT sum(residents) FROM households) "
        "+ (SELECT coalesce(sum(residents), 0) FROM communal_establishments)"
    ).fetchall()[0][0]
    assert n == [(residents, residents)]
    communal = db.execute(
        "SELECT DISTINCT household_type FROM person_analysis WHERE lives_in_communal_establishment"
    ).fetchall()
    assert communal in ([], [("communal_establishment",)])


def test_overcrowding_is_only_known_where_bedrooms_are(db: duckdb.DuckDBPyConnection) -> None:
    rows = db.execute(
        "SELECT tenure, count(*), count(bedrooms), count(overcrowded) FROM households GROUP BY 1"
    ).fetchall()
    for tenure, n, bedrooms, overcrowded in rows:
        assert bedrooms == overcrowded
        if tenure != "social_rented":
            assert bedrooms == 0
        else:
            assert bedrooms == n


# ------------------------------------------------------------------------------ protected
def true_cells(db: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[tuple, dict[str, int]]:
    measures = ", ".join(f"CAST({e} AS BIGINT) AS {c}" for c, e in SUMMARY_COUNTS.items())
    group = ", ".join(keys) if keys else "()"
    select = (", ".join(keys) + ", ") if keys else ""
    rows = frame(db, f"SELECT {select}{measures} FROM households GROUP BY {group}")
    return {tuple(r[k] for k in keys): r for r in rows.iter_rows(named=True)}


def shown_cells(db: duckdb.DuckDBPyConnection, view: str, keys: list[str]) -> dict[tuple, dict]:
    return {
        tuple(r[k] for k in keys): r
        for r in frame(db, f"SELECT * FROM {view}").iter_rows(named=True)
    }


SUMMARIES = {
    "area_summary": ["lsoa", "ward", "imd_decile"],
    "ward_summary": ["ward"],
    "decile_summary": ["imd_decile"],
    "deprivation_summary": ["imd_decile", "tenure"],
}


def test_published_summaries_show_no_small_count_or_small_difference(
    db: duckdb.DuckDBPyConnection,
) -> None:
    policy = DisclosurePolicy()
    withheld = 0
    for view, keys in SUMMARIES.items():
        true, shown = true_cells(db, keys), shown_cells(db, view, keys)
        assert true.keys() == shown.keys(), view
        for key, row in shown.items():
            for c in SUMMARY_COUNTS:
                if row[c] is None:
                    withheld += 1
                    continue
                assert not policy.is_primary(true[key][c]), (view, key, c)
                assert row[c] == true[key][c]
            for part, whole in SUMMARY_PARTS:
                if row[part] is not None and row[whole] is not None:
                    assert not policy.is_primary(row[whole] - row[part]), (view, key, part)
    assert withheld > 0  # the small population has small cells to protect


def test_no_withheld_summary_cell_is_alone_in_a_published_line(
    db: duckdb.DuckDBPyConnection,
) -> None:
    """Ward, decile and tenure totals (and the grand total) never recover a withheld cell."""
    area = shown_cells(db, "area_summary", SUMMARIES["area_summary"])
    ward = shown_cells(db, "ward_summary", ["ward"])
    decile = shown_cells(db, "decile_summary", ["imd_decile"])
    dep = shown_cells(db, "deprivation_summary", ["imd_decile", "tenure"])
    lines = []
    for w, total in ward.items():
        lines.append((total, [r for k, r in area.items() if (k[1],) == w]))
    for d, total in decile.items():
        lines.append((total, [r for k, r in area.items() if (k[2],) == d]))
        lines.append((total, [r for k, r in dep.items() if (k[0],) == d]))
    for c in SUMMARY_COUNTS:
        for total, parts in lines:
            entries = [total[c], *(p[c] for p in parts)]
            assert sum(v is None for v in entries) != 1, (c, total)


def test_run_info_records_the_rule_and_what_it_withheld(db: duckdb.DuckDBPyConnection) -> None:
    meta = dict(db.execute("SELECT key, value FROM run_info").fetchall())
    disclosure = json.loads(meta["disclosure"])
    assert disclosure["preset"] == "threshold_10" and disclosure["min_count"] == 10
    for view in SUMMARIES:
        nulls = (
            frame(db, f"SELECT * FROM {view}")
            .select(pl.sum_horizontal(pl.col(c).is_null() for c in SUMMARY_COUNTS).sum())
            .item()
        )
        stats = disclosure["summaries"][view]
        assert stats["primary"] + stats["secondary"] == nulls


@pytest.mark.parametrize(
    "macro,key", [("ward_summary_as_at", "ward"), ("decile_summary_as_at", "imd_decile")]
)
@pytest.mark.parametrize("when", ["reference_date()", "DATE '2025-09-30'"])
def test_as_at_summaries_are_protected(
    db: duckdb.DuckDBPyConnection, macro: str, key: str, when: str
) -> None:
    policy = DisclosurePolicy()
    shown = frame(db, f"SELECT * FROM {macro}({when})")
    true = frame(
        db,
        f"SELECT {key}, count(*) AS households, sum(residents) AS residents, "
        "count(*) FILTER (WHERE living_alone AND people_65_plus = 1) AS people_65_plus_living_alone, "
        "count(*) FILTER (WHERE lone_parent) AS lone_parent_households "
        f"FROM households_as_at({when}) GROUP BY ALL",
    )
    assert shown.height == true.height
    joined = shown.join(true, on=key, how="left", suffix="_true", nulls_equal=True)
    for c in ("households", "residents", "people_65_plus_living_alone", "lone_parent_households"):
        col, exact = joined[c].to_list(), joined[f"{c}_true"].to_list()
        for v, t in zip(col, exact, strict=True):
            assert v is None or (v == t and not policy.is_primary(t))
        if sum(exact) >= policy.min_count:  # the implied total is shown: never one withheld
            assert sum(v is None for v in col) != 1, c
    for row in joined.iter_rows(named=True):
        for part in ("people_65_plus_living_alone", "lone_parent_households"):
            if row[part] is not None and row["households"] is not None:
                assert not policy.is_primary(row["households"] - row[part])


def test_a_rounding_preset_publishes_multiples_of_five(
    small_run: PipelineRun, tmp_path: Path
) -> None:
    linked = small_run.settings.linked_dir
    paths = {p.stem: p for p in linked.glob("*.parquet")}
    metadata = PublicationMetadata.from_dict(json.loads((linked / "run_metadata.json").read_text()))
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[disclosure]\npreset = "nhs_england_hes_secondary"\n')
    policy = read_policy(policy_file)
    out = tmp_path / "hes.duckdb"
    summary = write_database(out, paths, metadata, policy)
    assert summary.disclosure["round_to"] == 5 and summary.disclosure["min_count"] == 8
    con = duckdb.connect(str(out), read_only=True)
    try:
        values = []
        for view in SUMMARIES:
            rows = frame(con, f"SELECT * FROM {view}").select(list(SUMMARY_COUNTS))
            values += [v for col in rows.iter_columns() for v in col.to_list()]
        values += [
            v
            for col in frame(con, "SELECT * FROM ward_summary_as_at(reference_date())")
            .drop("ward", "emergency_admissions_per_1000")
            .iter_columns()
            for v in col.to_list()
        ]
        shown = [v for v in values if v is not None]
        assert shown and all(v % 5 == 0 for v in shown)
        assert all(v == 0 or v >= 10 for v in shown)  # 8 and 9 round to 10
        assert con.execute("SELECT safe_count(7), safe_count(12)").fetchall() == [(None, 10)]
    finally:
        con.close()
