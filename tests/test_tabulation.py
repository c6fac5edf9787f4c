"""The table builder's declaration, requests and the tables written at publish."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import PipelineRun
from uprnlink.publish.database import FORBIDDEN_COLUMNS
from uprnlink.publish.datasets import DATASETS, TOTAL, UNKNOWN, get_dataset
from uprnlink.publish.perturbation import KEY_RANGE, PerturbationSettings
from uprnlink.publish.tabulation import (
    TableLimits,
    TableSpec,
    TableSpecError,
    dimension_types_sql,
    parse_measure,
    protect_table,
    read_table_policy,
    table_sql,
)

KNOWN = {
    "sex": ["F", "M", UNKNOWN],
    "age_group": ["00-04", "05-15", "16-17", "18-64", "65-84", "85+", UNKNOWN],
    "lsoa": [f"E0100{i:04d}" for i in range(40)],
    "ltc_asthma": ["yes", "no", UNKNOWN],
}


def _check(raw: dict, limits: TableLimits | None = None) -> TableSpec:
    spec = TableSpec.from_dict(raw)
    spec.check({"residents": KNOWN}, limits or TableLimits())
    return spec


# ---------------------------------------------------------------------------- the declaration


def test_the_declaration_names_no_identifier_and_every_name_is_plain() -> None:
    ids = {"person_id", "household_id", "establishment_id", *FORBIDDEN_COLUMNS}
    for ds in DATASETS:
        names = [d.name for d in ds.dimensions] + [m.name for m in ds.measures]
        assert len(names) == len(set(names)), ds.name
        for name in names:
            assert name.isidentifier() and name == name.lower(), name
            assert name not in ids and not name.endswith("_id"), name
        for d in ds.dimensions:
            assert not any(i in d.expr for i in ids), (ds.name, d.name)
            assert d.description and d.label
        for m in ds.measures:
            assert not any(i in m.expr for i in ids), (ds.name, m.name)


def test_measures_parse_and_name_their_columns() -> None:
    assert parse_measure("count").column == "count"
    assert parse_measure("sum:residents").column == "sum_residents"
    assert parse_measure("mean:residents").column == "mean_residents"
    assert parse_measure("per_1000:emergency_admissions").column == (
        "emergency_admissions_per_1000"
    )
    m = parse_measure("per_1000:emergency_admissions/residents")
    assert (m.measure, m.per) == ("emergency_admissions", "residents")
    assert parse_measure("percent_where:ltc_any=yes").column == "percent_ltc_any_yes"
    for bad in ("count(*)", "sum:", "sum:x; DROP", "mean:a/b", "x", "count_where:a", ""):
        with pytest.raises(TableSpecError):
            parse_measure(bad)


def test_requests_outside_the_declaration_are_refused_by_name() -> None:
    ok = _check({"dataset": "residents", "dimensions": ["sex", "age_group"]})
    assert ok.measures[0].kind == "count"
    cases = [
        ({"dataset": "people"}, "no dataset"),
        ({"dataset": "residents", "dimensions": ["person_id"]}, "no dimension"),
        ({"dataset": "residents", "dimensions": ["sex", "sex"]}, "once"),
        ({"dataset": "residents", "filters": {"sex": ["X"]}}, "no category"),
        ({"dataset": "residents", "filters": {"sex": []}}, "at least one"),
        ({"dataset": "residents", "measures": ["sum:household_id"]}, "no measure"),
        (
            {
                "dataset": "residents",
                "dimensions": ["ltc_asthma"],
                "measures": ["count_where:ltc_asthma=yes"],
            },
            "already a dimension",
        ),
        ({"dataset": "residents", "sql": "SELECT 1"}, "unknown field"),
        ({"dataset": "residents", "totals": "yes"}, "totals"),
    ]
    for raw, message in cases:
        with pytest.raises(TableSpecError, match=message):
            _check(raw)


def test_size_limits_depend_on_the_request_only() -> None:
    limits = TableLimits(max_dimensions=2, max_cells=100, max_measures=2)
    with pytest.raises(TableSpecError, match="at most 2"):
        _check({"dataset": "residents", "dimensions": ["sex", "age_group", "lsoa"]}, limits)
    with pytest.raises(TableSpecError, match="cells"):
        _check({"dataset": "residents", "dimensions": ["lsoa", "age_group"]}, limits)
    # Filtering on fewer categories brings it under the limit.
    _check(
        {
            "dataset": "residents",
            "dimensions": ["lsoa", "age_group"],
            "filters": {"lsoa": KNOWN["lsoa"][:10]},
        },
        limits,
    )


@settings(max_examples=200, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(["dataset", "dimensions", "filters", "measures", "totals", "x"]),
        st.one_of(
            st.text(max_size=20),
            st.lists(st.text(max_size=12), max_size=4),
            st.dictionaries(st.text(max_size=10), st.lists(st.text(max_size=8), max_size=3)),
            st.booleans(),
            st.integers(),
        ),
    )
)
def test_any_request_is_checked_or_refused_cleanly(raw: dict) -> None:
    """Whatever arrives, it becomes a checked spec or a TableSpecError: never a crash, and
    the SQL of a checked spec names only declared columns and quoted categories."""
    try:
        spec = _check(raw)
    except TableSpecError:
        return
    sql = table_sql(spec)
    assert "person_id" not in sql and ";" not in sql


def test_the_sql_quotes_categories_and_reads_only_the_tab_table() -> None:
    spec = TableSpec("residents", dimensions=("sex",), filters=(("age_group", ("85+", "o'clock")),))
    sql = table_sql(spec)
    assert "'o''clock'" in sql
    assert "FROM tab.residents" in sql


def test_dimensions_are_stored_as_enums_and_an_empty_one_stays_text() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA tab")
    con.execute("CREATE TABLE tab.people (sex VARCHAR, lsoa VARCHAR)")
    con.execute("INSERT INTO tab.people VALUES ('F', NULL), ('O''Neil', NULL)")
    for sql in dimension_types_sql("people", "sex", ["F", "M", "O'Neil", "F"]):
        con.execute(sql)
    assert dimension_types_sql("people", "lsoa", []) == []
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'people'"
        ).fetchall()
    )
    assert types["sex"].startswith("ENUM") and types["lsoa"] == "VARCHAR"
    assert sorted(con.execute("SELECT sex::VARCHAR FROM tab.people").fetchall()) == [
        ("F",),
        ("O'Neil",),
    ]


def test_the_policy_section_is_read_and_checked(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[tables]\nthreshold = 5\nmax_cells = 500\n")
    policy = read_table_policy(path)
    assert policy.perturbation.threshold == 5 and policy.limits.max_cells == 500
    path.write_text("[tables]\nthreshold = 5\ncolour = 'red'\n")
    with pytest.raises(Exception, match=r"\[tables\] colour"):
        read_table_policy(path)


# ------------------------------------------------------------------------- publish


def _analyst_db(run: PipelineRun) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(run.settings.database_path), read_only=True)


def _known(con: duckdb.DuckDBPyConnection, dataset: str) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT dimension, category FROM tab.categories WHERE dataset = ? "
        "ORDER BY dimension, position",
        [dataset],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for dim, cat in rows:
        out.setdefault(dim, []).append(cat)
    return out


@pytest.mark.slow
def test_publish_writes_one_row_per_unit_with_record_keys_and_no_ids(
    small_run: PipelineRun,
) -> None:
    con = _analyst_db(small_run)
    try:
        for ds in DATASETS:
            cols = [r[0] for r in con.execute(f"DESCRIBE tab.{ds.name}").fetchall()]
            assert cols == [
                *(d.name for d in ds.dimensions),
                *(m.name for m in ds.measures),
                "rkey",
                "rkey_m",
            ]
            units = con.execute(f"SELECT count(*) FROM tab.{ds.name}").fetchall()[0][0]
            source = con.execute(f"SELECT count(*) FROM main.{ds.source}").fetchall()[0][0]
            assert units == source > 0, ds.name
            lo, hi, nulls = con.execute(
                f"SELECT min(rkey), max(rkey), count(*) - count(rkey) FROM tab.{ds.name}"
            ).fetchall()[0]
            assert lo >= 0 and hi < KEY_RANGE and nulls == 0
            known = _known(con, ds.name)
            for d in ds.dimensions:
                assert known[d.name], (ds.name, d.name)
                if d.categories:
                    assert tuple(known[d.name]) == d.categories
                found = {
                    r[0]
                    for r in con.execute(f"SELECT DISTINCT {d.name} FROM tab.{ds.name}").fetchall()
                }
                assert found <= set(known[d.name]), (ds.name, d.name, found - set(known[d.name]))
        # The same person has the same record key in every release of the same ids.
        spread = con.execute("SELECT count(DISTINCT rkey) FROM tab.residents").fetchall()[0][0]
        assert spread > 200  # keys spread over 0-255
    finally:
        con.close()


@pytest.mark.slow
def test_a_table_from_the_release_counts_every_unit_once(small_run: PipelineRun) -> None:
    """With no perturbation and no threshold, a table's cells are the true counts, and the
    margins are the totals; with the policy's perturbation each shown cell is within
    max_noise of the truth and at least the threshold."""
    con = _analyst_db(small_run)
    try:
        known = _known(con, "residents")
        spec = TableSpec(
            "residents",
            dimensions=("broad_age", "sex"),
            totals=True,
        )
        raw = pl.from_arrow(con.sql(table_sql(spec)).to_arrow_table())
        truth = pl.from_arrow(
            con.sql(
                "SELECT coalesce(sex, 'unknown') AS sex, count(*) AS n FROM main.person_analysis "
                "GROUP BY ALL"
            ).to_arrow_table()
        )
        total = con.execute("SELECT count(*) FROM main.person_analysis").fetchall()[0][0]
    finally:
        con.close()
    assert isinstance(raw, pl.DataFrame) and isinstance(truth, pl.DataFrame)
    policy = PerturbationSettings()
    answer = protect_table(raw, spec, known, policy).frame
    grand = answer.filter((pl.col("sex") == TOTAL) & (pl.col("broad_age") == TOTAL))["count"][0]
    assert abs(grand - total) <= policy.max_noise
    for sex, n in truth.iter_rows():
        shown = answer.filter((pl.col("sex") == sex) & (pl.col("broad_age") == TOTAL))["count"][0]
        if shown is not None:
            assert abs(shown - n) <= policy.max_noise and shown >= policy.threshold
    assert get_dataset("residents").unit == "people"


def test_the_docs_page_is_the_declaration() -> None:
    """docs/table-builder.md is generated from the declaration: stale, it fails here."""
    import subprocess
    import sys

    from uprnlink.settings import PROJECT_ROOT

    page = (PROJECT_ROOT / "docs" / "table-builder.md").read_text(encoding="utf-8")
    fresh = subprocess.run(
        [sys.executable, "-m", "uprnlink.publish.datasets"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert page == fresh, (
        "run: .venv/bin/python -m uprnlink.publish.datasets > docs/table-builder.md"
    )
