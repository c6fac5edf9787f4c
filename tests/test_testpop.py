"""The second, independent test population (Westmere): seeded, complete truth, its own layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from uprnlink.settings import PROJECT_ROOT, read_settings
from uprnlink.testpop import write_test_population
from uprnlink.testpop.build import FILES

PEOPLE = 600


@pytest.fixture(scope="module")
def westmere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("westmere")
    write_test_population(out, PEOPLE, 5)
    return out


def _read(root: Path, source: str) -> pl.DataFrame:
    name, sep = FILES[source]
    path = root / "landing" / name
    if name.endswith(".parquet"):
        return pl.read_parquet(path)
    return pl.read_csv(path, separator=sep, infer_schema=False)


def test_same_seed_same_files(westmere: Path, tmp_path: Path) -> None:
    write_test_population(tmp_path, PEOPLE, 5)
    for path in sorted((westmere / "landing").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / path.relative_to(westmere)).read_bytes()


def test_every_row_has_its_true_person(westmere: Path) -> None:
    truth = pl.read_parquet(westmere / "truth" / "records.parquet")
    people = pl.read_parquet(westmere / "truth" / "people.parquet")
    ids = {"council_tax": "Party No", "housing_tenancies": "MEMBER_ID"}
    ids |= {"benefits_claims": "MemberNo", "adult_social_care": "Client Number"}
    ids |= {"gp_registrations": "patient_guid", "hospital_activity": "episode_id"}
    for source, column in ids.items():
        frame = _read(westmere, source)
        assert frame.height > 0, source
        rows = truth.filter(pl.col("source") == source)
        assert rows.get_column("record_id").to_list() == frame.get_column(column).to_list()
    assert truth.get_column("person_id").is_in(people.get_column("person_id").implode()).all()
    assert {"forename", "surname", "dob", "mother_id", "father_id"} <= set(people.columns)


def test_layouts_differ_from_the_demo_population(westmere: Path) -> None:
    demo = read_settings(PROJECT_ROOT / "config" / "demo.toml")
    mine = read_settings(PROJECT_ROOT / "config" / "testpop.toml")
    for source in demo.sources:
        theirs = {m.column for m in demo.sources[source].columns.values()}
        ours = {m.column for m in mine.sources[source].columns.values()}
        # Only the names every system uses for a UPRN or a postcode may coincide.
        assert {c.lower() for c in theirs & ours} <= {"uprn", "postcode"}, source
        assert demo.sources[source].path.name != mine.sources[source].path.name
    gp = _read(westmere, "gp_registrations")
    assert gp.get_column("birth_dt").str.ends_with("T00:00:00").all()
    hospital = _read(westmere, "hospital_activity")
    assert hospital.schema["nhs_number"] == pl.Int64
    assert hospital.schema["date_of_birth"] == pl.Date
    claims = _read(westmere, "benefits_claims")
    assert "Non-dependant" in set(claims.get_column("MemberRole").to_list())


def test_namesakes_and_twins_are_there(westmere: Path) -> None:
    people = pl.read_parquet(westmere / "truth" / "people.parquet")
    parents = people.select(pl.col("person_id").alias("father_id"), pl.col("forename").alias("f"))
    juniors = people.join(parents, on="father_id").filter(pl.col("forename") == pl.col("f"))
    assert juniors.height >= 1
    kids = people.filter(pl.col("mother_id").is_not_null())
    twins = kids.group_by("mother_id", "dob").agg(pl.len(), pl.col("forename").n_unique())
    twins = twins.filter(pl.col("len") > 1)
    assert (twins.get_column("forename") == twins.get_column("len")).all()


@pytest.mark.slow
def test_its_config_ingests_every_source(tmp_path: Path) -> None:
    """Each extract passes its contract through config/testpop.toml (a few rows quarantined)."""
    from uprnlink.ingest.stage import ingest_person_source, ingest_reference_data
    from uprnlink.privacy.keys import create_demo_key

    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "testpop.toml"
    shutil.copy(PROJECT_ROOT / "config" / "testpop.toml", config)
    write_test_population(tmp_path / "testpop", PEOPLE, 5)
    settings = read_settings(config)
    assert settings.key.file is not None
    create_demo_key(settings.key.file)
    ingest_reference_data(str(config))
    for source in settings.sources:
        result = ingest_person_source(str(config), source)
        assert result["rows_accepted"] >= 0.97 * result["rows_in"], (source, result)
