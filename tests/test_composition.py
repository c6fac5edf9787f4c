"""Household composition rules are written once and give the same answer in polars and DuckDB."""

from __future__ import annotations

import duckdb
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PipelineRun
from uprnlink.households.composition import (
    AGGREGATES,
    DERIVED,
    aggregates_sql,
    derived_sql,
    household_composition_frame,
)
from uprnlink.publish.database import households_on_sql

ages = st.one_of(st.none(), st.integers(0, 100))
households = st.lists(st.lists(ages, min_size=1, max_size=8), min_size=1, max_size=12)


def duckdb_composition(residents: pl.DataFrame) -> pl.DataFrame:
    """The same rules as the as-at macros run them (chained steps over the aggregates)."""
    steps = derived_sql()
    ctes = ",\n".join(
        f"c{i} AS (SELECT *, {e} FROM {'h' if i == 0 else f'c{i - 1}'})"
        for i, e in enumerate(steps)
    )
    con = duckdb.connect()
    try:
        con.register("residents", residents.to_arrow())
        sql = f"""WITH r AS (SELECT *, min(age) OVER (PARTITION BY hh) AS youngest FROM residents),
h AS (SELECT hh, {aggregates_sql()} FROM r GROUP BY hh),
{ctes}
SELECT * FROM c{len(steps) - 1} ORDER BY hh"""
        out = pl.from_arrow(con.sql(sql).to_arrow_table())
    finally:
        con.close()
    assert isinstance(out, pl.DataFrame)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(households)
def test_polars_and_duckdb_render_the_same_rules(members: list[list[int | None]]) -> None:
    residents = pl.DataFrame(
        {
            "hh": [h for h, people in enumerate(members) for _ in people],
            "age": [a for people in members for a in people],
        },
        schema={"hh": pl.Int64, "age": pl.Int32},
    )
    cols = ["hh", *AGGREGATES, *DERIVED]
    ours = household_composition_frame(residents, "hh").sort("hh").select(cols)
    theirs = duckdb_composition(residents).select(cols)
    for c in cols:
        assert ours[c].cast(theirs.schema[c]).to_list() == theirs[c].to_list(), c


def test_the_as_at_macros_use_the_one_definition() -> None:
    sql = households_on_sql("SELECT DATE '2026-03-31' AS as_at_date")
    for expr in AGGREGATES.values():
        assert expr in sql
    for expr in DERIVED.values():
        assert expr in sql


def test_communal_is_a_property_of_the_address(small_run: PipelineRun) -> None:
    """A spell moved next door by the timeline rules takes its new address's flag, so the
    households table and households_as_at agree on which addresses are households."""
    con = duckdb.connect(str(small_run.settings.engineer_database_path), read_only=True)
    try:
        mixed = con.execute(
            "SELECT count(*) FROM linked.membership m JOIN linked.household_area a "
            "USING (household_id) WHERE m.is_communal <> a.is_communal"
        ).fetchall()
        flagged = con.execute(
            "SELECT count(*) FROM linked.household h JOIN linked.household_area a "
            "USING (household_id) WHERE h.is_communal <> a.is_communal"
        ).fetchall()
    finally:
        con.close()
    assert mixed == [(0,)] and flagged == [(0,)]
