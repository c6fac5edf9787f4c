"""Adding a view or a source is one declaration: everything else follows from it.

The two examples of docs/design.md ("Adding a source, a view"): a view declared once is
created, copied to the analysts' database, granted and checked against the dictionary; a
source added to the registry reaches the person table and the `people` view.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from tests.conftest import PipelineRun
from uprnlink.households.ages import FIVE_YEAR_BANDS
from uprnlink.households.tables import person_flags_table, person_table, service_facts
from uprnlink.publication import PublicationMetadata
from uprnlink.publish.database import (
    read_policy,
    write_analyst_database,
    write_database,
)
from uprnlink.publish.views import (
    ANALYST_VIEWS,
    Column,
    View,
    declared_grants,
    people_view,
    undocumented,
)
from uprnlink.sources import PERSON_SOURCES

ON = date(2026, 3, 31)

# The example of docs/design.md: a new analyst view, declared once.
HOUSEHOLD_SIZES = View(
    "household_sizes",
    (
        Column("residents", "INTEGER"),
        Column("households", "BIGINT", "count(*)"),
    ),
    "FROM linked.household WHERE NOT is_communal GROUP BY residents ORDER BY residents",
    roles=("analyst",),
)


def test_a_declared_view_is_created_granted_and_copied_for_analysts(
    small_run: PipelineRun, tmp_path: Path
) -> None:
    views = (*ANALYST_VIEWS, HOUSEHOLD_SIZES)
    linked = small_run.settings.linked_dir
    parquet = {p.stem: p for p in sorted(linked.glob("*.parquet"))}
    metadata = PublicationMetadata.from_dict(json.loads((linked / "run_metadata.json").read_text()))
    policy = read_policy(small_run.settings.policy_path)
    engineer, analyst = tmp_path / "engineer.duckdb", tmp_path / "uprnlink.duckdb"

    write_database(engineer, parquet, metadata, policy, views=views)
    tables = write_analyst_database(engineer, analyst, policy, views)

    assert "main.household_sizes" in tables
    with duckdb.connect(str(analyst), read_only=True) as con:
        described = con.execute("DESCRIBE household_sizes").fetchall()
        assert [(r[0], r[1]) for r in described] == [
            ("residents", "INTEGER"),
            ("households", "BIGINT"),
        ]
        sizes = con.execute(
            "SELECT sum(households), sum(residents * households) FROM household_sizes"
        )
        assert (
            sizes.fetchone()
            == con.execute("SELECT count(*), sum(residents) FROM households").fetchone()
        )
    assert declared_grants(views)["analyst"][-1] == "household_sizes"
    assert "household_sizes" not in declared_grants(views).get("ig_lead", ())
    # The dictionary check names what is still to write: the view's section.
    assert undocumented(views) == ["view household_sizes: no section in data-dictionary.md"]


def test_a_new_source_reaches_the_person_table_and_the_people_view() -> None:
    sources = (*PERSON_SOURCES, "school_census")
    records = pl.DataFrame(
        schema={
            "source_dataset": pl.Utf8,
            "unique_id": pl.Utf8,
            "person_id": pl.Utf8,
            "household_token": pl.Utf8,
            "start_date": pl.Date,
            "end_date": pl.Date,
        }
    )
    cut = service_facts(records, {}, ON, ON)
    people = pl.DataFrame(
        {
            "person_id": ["p1", "p2"],
            "dob": [date(1980, 5, 1), date(2015, 1, 2)],
            "sex": ["F", "M"],
            "date_of_death": [None, None],
            "sources": [["council_tax"], ["gp_registrations", "school_census"]],
        },
        schema_overrides={"date_of_death": pl.Date},
    )
    flags = person_flags_table(people, cut)
    residents = pl.DataFrame(
        {"person_id": ["p1", "p2"], "household_token": ["H1", "H1"], "is_communal": [False, False]}
    )
    areas = pl.DataFrame(
        {
            "household_token": ["H1"],
            "lsoa": ["E01"],
            "msoa": ["E02"],
            "ward": ["E05"],
            "imd_decile": [3],
        },
        schema_overrides={"imd_decile": pl.Int8},
    )

    person = person_table(people, residents, areas, flags, ON, FIVE_YEAR_BANDS, sources)

    assert person.get_column("in_school_census").to_list() == [False, True]
    view = people_view(sources)
    assert view.columns[-1] == Column("in_school_census", "BOOLEAN")
    # The dictionary check asks for the new column's row (and nothing else).
    assert people_view() in ANALYST_VIEWS and undocumented((people_view(),)) == []
    assert undocumented((view,))[0].startswith("view people: declared columns")
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA linked")
        con.register("person_frame", person.to_arrow())
        con.execute("CREATE TABLE linked.person AS FROM person_frame")
        con.execute(view.sql())
        described = [(r[0], r[1]) for r in con.execute("DESCRIBE people").fetchall()]
        assert described[-1] == ("in_school_census", "BOOLEAN")
        assert [c for c, _ in described] == [c.name for c in view.columns]
        assert con.execute("SELECT person_id FROM people WHERE in_school_census").fetchall() == [
            ("p2",)
        ]


def test_each_source_fact_is_a_field_of_its_contract_with_the_same_type() -> None:
    """The registry's facts (`Source.facts`) are what the household tables read; each is a
    field of the source's contract, of the type the contract standardises it to."""
    from uprnlink.households.tables import FACT_COLUMNS
    from uprnlink.ingest.contracts import find_contract
    from uprnlink.settings import PROJECT_ROOT

    assert set(FACT_COLUMNS) == set(PERSON_SOURCES)
    for source, facts in FACT_COLUMNS.items():
        contract = find_contract(PROJECT_ROOT / "schemas", source)
        for name, dtype in facts.items():
            assert contract.field(name).dtype == dtype, (source, name)
