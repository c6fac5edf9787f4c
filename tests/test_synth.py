"""The synthetic population: determinism, ground truth coverage, invariants and error rates."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields, replace
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from uprnlink.synth import (
    SOURCES,
    SourceErrorRates,
    SynthErrorRates,
    is_valid_nhs_number,
    nhs_check_digit,
    write_synthetic,
)

PEOPLE = 1500
SEED = 11
REFERENCE = date(2026, 3, 31)

COLUMNS = {
    "council_tax": [
        "PARTY_REF",
        "ACCOUNT_REF",
        "TITLE",
        "FORENAMES",
        "SURNAME",
        "DATE_OF_BIRTH",
        "ADDRESS_1",
        "ADDRESS_2",
        "ADDRESS_3",
        "POST_CODE",
        "UPRN",
        "PROPERTY_BAND",
        "LIABILITY_START",
        "LIABILITY_END",
        "SINGLE_PERSON_DISCOUNT",
        "CTR_FLAG",
    ],
    "housing_tenancies": [
        "tenancy_ref",
        "tenant_seq",
        "person_ref",
        "forename",
        "surname",
        "dob",
        "prop_ref",
        "uprn",
        "address_line1",
        "postcode",
        "tenure_type",
        "bedrooms",
        "start_date",
        "end_date",
    ],
    "benefits_claims": [
        "ClaimRef",
        "PersonRef",
        "PersonType",
        "FirstName",
        "LastName",
        "DoB",
        "UPRN",
        "Postcode",
        "BenefitType",
        "AwardStart",
        "AwardEnd",
        "WeeklyAmount",
    ],
    "adult_social_care": [
        "PersonID",
        "Forename",
        "Surname",
        "DOB",
        "Gender",
        "NHS_No",
        "AddressLine1",
        "Postcode",
        "UPRN",
        "SupportSetting",
        "ServiceStart",
        "ServiceEnd",
        "PrimarySupportReason",
    ],
    "gp_registrations": [
        "PATIENT_ID",
        "NHS_NUMBER",
        "FORENAME",
        "SURNAME",
        "DATE_OF_BIRTH",
        "SEX",
        "ADDRESS_LINE_1",
        "POSTCODE",
        "UPRN",
        "REGISTRATION_DATE",
        "DEREGISTRATION_DATE",
        "DATE_OF_DEATH",
        "LTC_ASTHMA",
        "LTC_COPD",
        "LTC_DIABETES",
        "LTC_CHD",
        "LTC_HYPERTENSION",
        "LTC_DEPRESSION",
        "LTC_DEMENTIA",
    ],
    "hospital_activity": [
        "ACTIVITY_ID",
        "NHS_NUMBER",
        "PATIENT_FORENAME",
        "PATIENT_SURNAME",
        "PERSON_BIRTH_DATE",
        "PERSON_STATED_GENDER_CODE",
        "POSTCODE_USUAL_ADDRESS",
        "UPRN",
        "ACTIVITY_TYPE",
        "ACTIVITY_DATE",
        "DISCHARGE_DATE",
    ],
}
FILES = {
    "council_tax": ("council_tax.csv", ","),
    "housing_tenancies": ("housing_tenancies.txt", "|"),
    "benefits_claims": ("benefits_claims.parquet", ""),
    "adult_social_care": ("adult_social_care.csv", ","),
    "gp_registrations": ("gp_registrations.csv", ","),
    "hospital_activity": ("hospital_activity.csv", ","),
}
ID_DOB_UPRN = {
    "council_tax": ("PARTY_REF", "DATE_OF_BIRTH", "%d/%m/%Y", "UPRN"),
    "housing_tenancies": ("person_ref", "dob", "%Y-%m-%d", "uprn"),
    "benefits_claims": ("PersonRef", "DoB", "%d-%b-%Y", "UPRN"),
    "adult_social_care": ("PersonID", "DOB", "%d/%m/%Y", "UPRN"),
    "gp_registrations": ("PATIENT_ID", "DATE_OF_BIRTH", "%Y%m%d", "UPRN"),
    "hospital_activity": ("ACTIVITY_ID", "PERSON_BIRTH_DATE", "%Y-%m-%d", "UPRN"),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, PEOPLE, SEED, reference_date=REFERENCE)
    return out


def read_extract(root: Path, source: str) -> pl.DataFrame:
    name, sep = FILES[source]
    path = root / "landing" / name
    if name.endswith(".parquet"):
        return pl.read_parquet(path)
    return pl.read_csv(path, separator=sep, infer_schema=False)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    synth: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    write_synthetic(again, PEOPLE, SEED, reference_date=REFERENCE)
    first, second = _files(synth), _files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = tmp_path / "other"
    write_synthetic(other, PEOPLE, SEED + 1, reference_date=REFERENCE)
    third = _files(other)
    assert all(first[f"landing/{n}"] != third[f"landing/{n}"] for n, _ in FILES.values())


def test_same_bytes_across_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from uprnlink.synth import write_synthetic; write_synthetic(Path(sys.argv[1]), 300, 5)"
    for run, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], check=True, env=env)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_layout_and_exact_columns(synth: Path) -> None:
    for source in SOURCES:
        assert read_extract(synth, source).columns == COLUMNS[source], source
    ref = synth / "landing" / "reference"
    assert pl.read_csv(ref / "uprn_lookup.csv").columns == [
        "UPRN",
        "GRIDGB1E",
        "GRIDGB1N",
        "PCDS",
        "OA21CD",
        "LSOA21CD",
        "MSOA21CD",
        "WD25CD",
        "LAD25CD",
    ]
    assert pl.read_csv(ref / "property_class.csv").columns == ["UPRN", "CLASS"]
    assert pl.read_csv(ref / "imd_lsoa.csv").columns[0] == "LSOA code (2021)"
    for name in ("people", "records", "residence", "addresses", "households"):
        assert (synth / "truth" / f"{name}.parquet").exists()
    benefits = read_extract(synth, "benefits_claims")
    assert benefits.schema["UPRN"] == pl.Int64
    assert benefits.schema["AwardStart"] == pl.Date
    assert benefits.schema["DoB"] == pl.Utf8


def test_nhs_check_digit_known_answers() -> None:
    assert is_valid_nhs_number("9434765919")
    assert is_valid_nhs_number("943 476 5919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("943476591")
    assert nhs_check_digit("943476591") == 9
    assert nhs_check_digit("100000000") == 1
    assert nhs_check_digit("000000000") == 0  # 11 becomes 0
    assert nhs_check_digit("000000006") is None  # 10: no number is issued with these nine digits


def test_truth_nhs_numbers_valid_unique_and_in_england_ranges(synth: Path) -> None:
    people = pl.read_parquet(synth / "truth" / "people.parquet")
    nhs = people["nhs_number"]
    assert nhs.null_count() == 0 and nhs.n_unique() == people.height
    assert all(is_valid_nhs_number(n) for n in nhs.to_list())
    assert nhs.str.slice(0, 1).is_in(["4", "6", "7"]).all()
    assert not nhs.str.starts_with("999").any()


def test_every_extract_row_is_in_truth_in_order(synth: Path) -> None:
    records = pl.read_parquet(synth / "truth" / "records.parquet")
    people = pl.read_parquet(synth / "truth" / "people.parquet")
    manifest = (synth / "truth" / "manifest.json").read_text()
    for source in SOURCES:
        frame = read_extract(synth, source)
        truth = records.filter(pl.col("source") == source).sort("row_number")
        assert truth.height == frame.height > 0, source
        assert f'"{source}": {frame.height}' in manifest
        id_col = ID_DOB_UPRN[source][0]
        assert frame[id_col].fill_null("").to_list() == truth["record_id"].to_list(), source
        ids = truth.filter(pl.col("record_id") != "")["record_id"]
        assert ids.n_unique() == ids.len(), source
    assert records["person_id"].drop_nulls().is_in(people["person_id"].implode()).all()


def test_no_person_in_two_places_and_no_dwelling_with_two_households(synth: Path) -> None:
    res = pl.read_parquet(synth / "truth" / "residence.parquet").sort("person_id", "valid_from")
    clash = res.with_columns(prev_to=pl.col("valid_to").shift(1).over("person_id")).filter(
        pl.col("prev_to").is_null().not_() & (pl.col("valid_from") <= pl.col("prev_to"))
    )
    assert clash.height == 0
    assert res.group_by("person_id").agg(open=pl.col("valid_to").is_null().sum())["open"].max() == 1
    hh = pl.read_parquet(synth / "truth" / "households.parquet").sort("uprn", "valid_from")
    overlap = (
        hh.with_columns(prev_to=pl.col("valid_to").shift(1).over("uprn"))
        .filter(pl.col("uprn") == pl.col("uprn"))
        .filter(pl.col("prev_to").is_not_null() & (pl.col("valid_from") <= pl.col("prev_to")))
    )
    assert overlap.height == 0
    assert hh.group_by("uprn").agg(pl.col("valid_to").is_null().sum().alias("n"))["n"].max() == 1


def test_people_who_left_or_died_have_no_open_residence(synth: Path) -> None:
    people = pl.read_parquet(synth / "truth" / "people.parquet")
    res = pl.read_parquet(synth / "truth" / "residence.parquet")
    last = res.group_by("person_id").agg(
        pl.col("valid_to").is_null().any().alias("open"), pl.col("valid_to").max().alias("to")
    )
    gone = people.filter(pl.col("exit_date").is_not_null()).join(last, on="person_id")
    assert not gone["open"].any()
    assert (gone["to"] <= gone["exit_date"]).all()
    dead = people.filter(pl.col("date_of_death").is_not_null())
    assert (dead["date_of_death"] <= REFERENCE).all()
    assert (people["dob"] <= REFERENCE).all()


def test_namesakes_parents_twins(synth: Path) -> None:
    """Some sons carry the father's forename and daughters the mother's; twins share a date of
    birth, surname and parents but never a forename."""
    from uprnlink.synth.names import named_after_parent_rate
    from uprnlink.synth.simulation import twin_rate

    people = pl.read_parquet(synth / "truth" / "people.parquet")
    assert {"mother_id", "father_id"} <= set(people.columns)
    parents = people.select("person_id", pl.col("forename").alias("parent_forename"))
    for sex, parent in (("M", "father_id"), ("F", "mother_id")):
        kids = people.filter((pl.col("sex") == sex) & pl.col(parent).is_not_null()).join(
            parents.rename({"person_id": parent}), on=parent
        )
        same = (kids["forename"] == kids["parent_forename"]).sum()
        assert kids.height > 100
        # The modern rate plus chance agreement; at least one junior in a small population.
        assert 1 <= same <= 3 * named_after_parent_rate(sex, 2000) * kids.height + 10
    twins = (
        people.filter(pl.col("mother_id").is_not_null() | pl.col("father_id").is_not_null())
        .group_by("mother_id", "father_id", "dob")
        .agg(pl.len(), pl.col("forename").n_unique().alias("names"), pl.col("surname").n_unique())
        .filter(pl.col("len") > 1)
    )
    assert twins.height >= 1
    assert (twins["names"] == twins["len"]).all()
    assert (twins["surname"] == 1).all()
    assert 0.009 < twin_rate(0) < 0.011 and 0.013 < twin_rate(int(55 * 365.25)) < 0.015


def test_communal_establishments_and_population_size(synth: Path) -> None:
    addresses = pl.read_parquet(synth / "truth" / "addresses.parquet")
    assert {"RI01", "RI02"} <= set(addresses["class"].to_list())
    assert set(addresses["class"].unique().to_list()) <= {
        "RD02",
        "RD03",
        "RD04",
        "RD06",
        "RH02",
        "RI01",
        "RI02",
    }
    assert addresses["uprn"].n_unique() == addresses.height
    assert addresses["uprn"].cast(pl.Utf8).str.len_chars().is_in([11, 12]).all()
    res = pl.read_parquet(synth / "truth" / "residence.parquet").filter(
        pl.col("valid_to").is_null()
    )
    here = res.join(addresses.select("uprn", "is_communal"), on="uprn")
    assert 0.85 * PEOPLE <= here.height <= 1.15 * PEOPLE
    assert 0.01 <= here["is_communal"].mean() <= 0.05  # type: ignore[operator]
    tenure = addresses.filter(~pl.col("is_communal"))["tenure"].value_counts(normalize=True)
    assert set(tenure["tenure"].drop_nulls().to_list()) == {
        "owner_occupied",
        "private_rented",
        "social_rented",
    }
    postcodes = pl.read_csv(synth / "landing" / "reference" / "uprn_lookup.csv")["PCDS"]
    assert postcodes.str.contains(r"^[A-Z]{2}\d{1,2} \d[A-Z]{2}$").all()


def test_error_rates_roughly_as_configured(synth: Path) -> None:
    def blank(frame: pl.DataFrame, col: str) -> float:
        return float(frame[col].is_null().mean() or 0.0)

    hospital = read_extract(synth, "hospital_activity")
    council = read_extract(synth, "council_tax")
    care = read_extract(synth, "adult_social_care")
    gp = read_extract(synth, "gp_registrations")
    assert 0.38 <= blank(hospital, "UPRN") <= 0.52
    assert 0.29 <= blank(council, "DATE_OF_BIRTH") <= 0.41
    assert 0.07 <= blank(care, "NHS_No") <= 0.25
    assert blank(gp, "NHS_NUMBER") <= 0.03
    assert 0.01 <= blank(hospital, "NHS_NUMBER") <= 0.08
    assert 0.0 < blank(gp, "UPRN") <= 0.15
    assert care["NHS_No"].drop_nulls().str.contains(" ").any()
    records = pl.read_parquet(synth / "truth" / "records.parquet")
    gp_truth = records.filter(pl.col("source") == "gp_registrations")
    assert 0.0 < gp_truth["duplicate"].mean() < 0.04  # type: ignore[operator]
    typos = records.filter(pl.col("errors").str.contains("typo"))
    assert 0.005 < typos.height / records.height < 0.08
    variants = council.join(
        records.filter(pl.col("source") == "council_tax").select(
            pl.col("record_id").alias("PARTY_REF"), "errors"
        ),
        on="PARTY_REF",
    ).filter(pl.col("errors").str.contains("forename_variant"))
    assert variants.height > 0


def test_rates_are_configurable(tmp_path: Path) -> None:
    clean = SourceErrorRates(**{f.name: 0.0 for f in fields(SourceErrorRates)} | {"coverage": 1.0})
    rates = replace(SynthErrorRates(), gp_registrations=clean)
    write_synthetic(tmp_path, 400, 3, rates=rates)
    gp = read_extract(tmp_path, "gp_registrations")
    records = pl.read_parquet(tmp_path / "truth" / "records.parquet").filter(
        pl.col("source") == "gp_registrations"
    )
    good = records.filter(~pl.col("malformed"))["row_number"] - 1
    assert records["malformed"].sum() == 2  # the floor: every extract carries a couple of bad rows
    assert gp[good]["NHS_NUMBER"].null_count() == 0
    assert (records.filter(~pl.col("malformed"))["errors"] == "").all()
    with pytest.raises(ValueError, match="uprn_missing"):
        SourceErrorRates(uprn_missing=1.5)


def test_malformed_rows_are_damaged_and_flagged(synth: Path) -> None:
    records = pl.read_parquet(synth / "truth" / "records.parquet")
    for source in SOURCES:
        frame = read_extract(synth, source).with_row_index("i")
        truth = records.filter(pl.col("source") == source).sort("row_number")
        id_col, dob_col, fmt, uprn_col = ID_DOB_UPRN[source]
        uprn = frame[uprn_col].cast(pl.Utf8)
        dob_ok = (
            frame[dob_col].is_null()
            | frame[dob_col].str.strptime(pl.Date, fmt, strict=False).is_not_null()
        )
        uprn_ok = uprn.is_null() | uprn.str.contains(r"^\d{1,12}$")
        id_ok = frame[id_col].is_not_null() & (frame[id_col] != "")
        clean = dob_ok & uprn_ok & id_ok
        flagged = truth["malformed"]
        assert flagged.sum() >= 2, source
        assert (clean == ~flagged).all(), source
        kinds = set(truth["malformed_kind"].drop_nulls().to_list())
        assert "blank_id" in kinds and "bad_dob" in kinds, source
