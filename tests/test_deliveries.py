"""Any subset of sources and of optional fields runs end to end: a field not supplied is a typed
null column all the way to the views, and the run says what was not supplied. Deliveries with
council sources only, NHS sources only, or names and dates only link on what they carry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BaseRun, copy_tree
from tests.deliveries import demo_settings, optional_fields, variant
from uprnlink.run.runner import run_all
from uprnlink.run_summary import RunSummary
from uprnlink.settings import read_settings
from uprnlink.sources import PERSON_SOURCES

pytestmark = pytest.mark.slow

# `UPRNLINK_PROPERTY_RUNS=30 pytest tests/test_deliveries.py` draws more configurations.
PROPERTY_RUNS = int(os.environ.get("UPRNLINK_PROPERTY_RUNS", "4"))
COUNCIL = ("council_tax", "housing_tenancies", "benefits_claims", "adult_social_care")
NHS = ("gp_registrations", "hospital_activity")


@pytest.fixture(scope="module")
def demo(population: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo config on a copy of the shared population (300 people): each variant below
    reads its extracts and keys and works in a folder of its own."""
    return demo_settings(copy_tree(population, tmp_path_factory.mktemp("deliveries")))


@pytest.fixture(scope="module")
def full_views(base_run: BaseRun) -> dict[str, Any]:
    """The views of a delivery with every source and field: the shared first run's, on the same
    population (the demo's full mapping)."""
    return _view_schemas(base_run.config)


def _view_schemas(config: Path) -> dict[str, list[tuple[str, str]]]:
    con = duckdb.connect(str(read_settings(config).database_path), read_only=True)
    try:
        views = [
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
            ).fetchall()
        ]
        return {
            v: [(r[0], r[1]) for r in con.execute(f'DESCRIBE "{v}"').fetchall()]
            for v in sorted(views)
        }
    finally:
        con.close()


def _run(config: Path) -> RunSummary:
    summary = run_all(str(config))
    for report in summary.ingest or ():
        if not report.get("skipped"):
            assert report["rows_in"] == report["rows_accepted"] + report["rows_quarantined"]
    return summary


def test_no_benefit_type_and_no_date_of_death_run_to_the_views(
    demo: dict[str, Any], full_views: dict[str, Any], tmp_path: Path
) -> None:
    sources: dict[str, set[str] | None] = dict.fromkeys(PERSON_SOURCES)
    sources["benefits_claims"] = set(optional_fields(demo, "benefits_claims")) - {"benefit_type"}
    sources["gp_registrations"] = set(optional_fields(demo, "gp_registrations")) - {"date_of_death"}
    config = variant(demo, tmp_path, sources)
    summary = _run(config)
    assert "benefit_type" in summary.not_supplied["fields"]["benefits_claims"]
    assert "date_of_death" in summary.not_supplied["fields"]["gp_registrations"]
    assert _view_schemas(config) == full_views
    meta = json.loads((read_settings(config).linked_dir / "run_metadata.json").read_text())
    assert meta["not_supplied"] == summary.not_supplied
    con = duckdb.connect(str(read_settings(config).database_path), read_only=True)
    # No benefit type: nobody is known to get housing benefit; no deaths recorded.
    assert con.execute("SELECT count(*) FROM households WHERE housing_benefit").fetchall() == [(0,)]
    con.close()


@given(data=st.data())
@settings(
    max_examples=PROPERTY_RUNS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_subset_of_sources_and_optional_fields_runs(
    data: st.DataObject,
    demo: dict[str, Any],
    full_views: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    chosen = data.draw(
        st.lists(st.sampled_from(PERSON_SOURCES), min_size=1, max_size=6, unique=True),
        label="sources",
    )
    sources: dict[str, set[str] | None] = {}
    for name in chosen:
        optional = optional_fields(demo, name)
        sources[name] = set(data.draw(st.sets(st.sampled_from(optional)), label=name))
    config = variant(demo, tmp_path_factory.mktemp("subset"), sources)
    summary = _run(config)
    assert summary.not_supplied["sources"] == sorted(set(PERSON_SOURCES) - set(chosen))
    for name, kept in sources.items():
        missing = set(optional_fields(demo, name)) - (kept or set())
        assert missing <= set(summary.not_supplied["fields"].get(name, []))
    assert _view_schemas(config) == full_views
    counter = Path(os.environ.get("UPRNLINK_PROPERTY_LOG", "/dev/null"))
    with counter.open("a") as log:
        log.write(json.dumps({n: sorted(k or []) for n, k in sources.items()}) + "\n")


@pytest.mark.parametrize(
    ("sources", "absent"),
    [
        (COUNCIL[:3], {"nhs_token", "sex"}),
        (NHS, set()),
    ],
    ids=["council-only", "nhs-only"],
)
def test_council_only_and_nhs_only_deliveries_link(
    demo: dict[str, Any], tmp_path: Path, sources: tuple[str, ...], absent: set[str]
) -> None:
    config = variant(demo, tmp_path, dict.fromkeys(sources))
    summary = _run(config)
    linkage = summary.linkage
    assert not absent & set(linkage["identifiers"])
    assert linkage["people"] < linkage["records"]
    assert not any("skipped" in step for step in linkage["training"])


def test_names_and_dates_only(demo: dict[str, Any], tmp_path: Path) -> None:
    sources: dict[str, set[str] | None] = {"council_tax": {"forename", "dob"}}
    sources["gp_registrations"] = {"forename"}
    sources["housing_tenancies"] = {"forename", "dob"}
    config = variant(demo, tmp_path, sources)
    summary = _run(config)
    linkage = summary.linkage
    assert set(linkage["identifiers"]) == {"forename", "surname", "dob", "period"}
    assert linkage["comparisons"] == ["forename", "surname", "dob", "move"]
    assert linkage["people"] < linkage["records"]
