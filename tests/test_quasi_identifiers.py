"""Fewer quasi-identifiers in what analysts see: age bands, no date of death, uniqueness measured."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import PublishError
from uprnlink.governance.audit import open_audit_log
from uprnlink.governance.report import render_audit_report
from uprnlink.households.ages import FIVE_YEAR_BANDS, age_band_expr, bands_from
from uprnlink.households.tables import published_memberships
from uprnlink.privacy.keys import load_audit_key
from uprnlink.publish.database import VIEWS
from uprnlink.publish.disclosure import DEFAULT_AGE_BANDS, read_policy
from uprnlink.publish.uniqueness import Uniqueness, measure_uniqueness


def test_age_bands_come_from_the_policy(tmp_path: Path) -> None:
    assert bands_from(DEFAULT_AGE_BANDS) == FIVE_YEAR_BANDS
    policy = tmp_path / "policy.toml"
    policy.write_text("[disclosure]\nage_bands = [0, 16, 18, 65]\n")
    bands = bands_from(read_policy(policy).age_bands)
    ages = pl.DataFrame({"age": [3, 16, 17, 40, 90, None]})
    labels = ages.select(age_band_expr("age", bands).alias("b"))["b"].to_list()
    assert labels == ["00-15", "16-17", "16-17", "18-64", "65+", None]
    for bad in ("age_bands = [5, 10]", "age_bands = [0, 10, 10]", 'death_end_precision = "day"'):
        policy.write_text(f"[disclosure]\n{bad}\n")
        with pytest.raises(PublishError):
            read_policy(policy)


def spells_ending_at_death(deaths: list[date]) -> tuple[pl.DataFrame, pl.DataFrame]:
    ids = [f"p{i}" for i in range(len(deaths))]
    spells = pl.DataFrame(
        {
            "person_id": ids,
            "household_token": ["H"] * len(ids),
            "is_communal": [False] * len(ids),
            "valid_from": [date(2020, 1, 1)] * len(ids),
            "valid_to": deaths,
        }
    )
    return spells, pl.DataFrame({"person_id": ids, "date_of_death": deaths})


def test_a_spell_ended_by_a_death_ends_a_month_or_quarter_before_it() -> None:
    deaths = [date(2025, 6, 15), date(2025, 6, 1), date(2025, 6, 30), date(2026, 4, 10)]
    spells, people = spells_ending_at_death(deaths)
    month = published_memberships(spells, people, reference_date=date(2026, 3, 31))
    assert month["valid_to"].to_list() == [
        date(2025, 5, 31),
        date(2025, 5, 31),
        date(2025, 5, 31),
        date(2026, 3, 31),  # alive on the reference date: counted there, as in the tables
    ]
    quarter = published_memberships(
        spells, people, reference_date=date(2026, 3, 15), precision="quarter"
    )
    assert quarter["valid_to"].to_list() == [date(2025, 3, 31)] * 3 + [date(2026, 3, 31)]
    # Every death in the same month (quarter) publishes the same end: it says the month only.
    for out in (month, quarter):
        assert out["valid_to"].n_unique() == 2


def test_analysts_see_no_exact_age(small_run: PipelineRun) -> None:
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    try:
        for view in VIEWS:
            cols = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
            assert not cols & {"age", "date_of_death", "death_year", "dob"}, view
        bands = {r[0] for r in con.execute("SELECT DISTINCT age_band FROM people").fetchall()}
        assert bands - {None} <= {label for _, label in FIVE_YEAR_BANDS}
    finally:
        con.close()


def test_every_run_measures_uniqueness_and_warns_above_the_policy(
    small_run: PipelineRun, tmp_path: Path
) -> None:
    risk = small_run.summary.published["disclosure_risk"]
    assert set(risk) == {"people", "households", "max_unique_share", "above"}
    con = duckdb.connect(str(small_run.settings.engineer_database_path), read_only=True)
    try:
        measured = measure_uniqueness(con)
        meta = dict(con.execute("SELECT key, value FROM run_info").fetchall())
    finally:
        con.close()
    assert measured.describe(risk["max_unique_share"]) == risk
    assert json.loads(meta["disclosure"])["uniqueness"] == risk
    assert 0 < risk["people"]["unique"] < risk["people"]["of"]
    assert risk["households"]["of"] > 0
    warned = "disclosure risk:" in small_run.log_text
    assert warned == bool(risk["above"])
    # The run summary and the IG lead's audit report carry it.
    summary = json.loads(Path(small_run.summary.summary_path).read_text())
    assert summary["published"]["disclosure_risk"] == risk
    log = open_audit_log(small_run.settings)
    report = render_audit_report(log.path, load_audit_key(small_run.settings), head_path=None)
    assert "households unique" in report and f"{risk['households']['share']:.1%}" in report


def test_shares_and_threshold() -> None:
    u = Uniqueness(unique_people=3, people=100, unique_households=30, households=100)
    assert u.above(0.05) == ["households"] and u.above(0.5) == []
    assert u.describe(0.05)["people"]["share"] == 0.03
