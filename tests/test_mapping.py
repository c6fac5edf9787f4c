"""`uprnlink map`: a new extract in another system's column names, delimiter, encoding and date
format gets a proposed mapping that the ingest accepts as it is, without any data value shown."""

from __future__ import annotations

import random
import shutil
import tomllib
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from uprnlink import cli
from uprnlink.errors import ContractError
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.headers import normal_name, suggest_columns
from uprnlink.ingest.mapping import propose_mapping
from uprnlink.ingest.standardise import nhs_check_digit
from uprnlink.ingest.validate import ingest_extract
from uprnlink.run_summary import RunSummary
from uprnlink.settings import PROJECT_ROOT, read_settings

SCHEMAS = PROJECT_ROOT / "schemas"
TODAY = date(2026, 3, 31)
GP = find_contract(SCHEMAS, "gp_registrations")


def _nhs_numbers(n: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        first = f"{rng.randrange(400_000_000, 699_999_999):09d}"
        check = nhs_check_digit(first)
        if check is not None:
            out.append(first + str(check))
    return out


def _other_system_extract(n: int = 300, seed: int = 3) -> pl.DataFrame:
    """A GP extract as another system might write it: its own names, dd.mm.yyyy dates,
    Male/Female, spaced NHS numbers, a column order of its own and a column we don't use."""
    rng = random.Random(seed)
    born = [date(1930, 1, 1) + timedelta(days=rng.randrange(0, 30_000)) for _ in range(n)]
    registered = [date(2005, 1, 1) + timedelta(days=rng.randrange(0, 7000)) for _ in range(n)]
    nhs = _nhs_numbers(n, rng)
    return pl.DataFrame(
        {
            "PracticeCode": [f"B8{rng.randrange(1000, 9999)}" for _ in range(n)],
            "LocalPatientIdentifier": [f"LP{i:06d}" for i in range(n)],
            "GivenName": [rng.choice(["Amy", "Raj", "Ewa", "Tom", "Li"]) for _ in range(n)],
            "FamilyName": [rng.choice(["Khan", "Smith", "Nowak", "O'Neill"]) for _ in range(n)],
            "BirthDate": [d.strftime("%d.%m.%Y") for d in born],
            "Gender": [rng.choice(["Male", "Female"]) for _ in range(n)],
            "NHSNumber": [f"{x[:3]} {x[3:6]} {x[6:]}" for x in nhs],
            "PostCode": [rng.choice(["LS1 4AB", "ls6 2qd", "BD7 1DP"]) for _ in range(n)],
            "PropertyUPRN": [str(rng.randrange(10_000_000, 100_099_999_999)) for _ in range(n)],
            "RegisteredFrom": [d.strftime("%d.%m.%Y") for d in registered],
            "RegisteredTo": [""] * n,
        }
    )


EXPECTED = {
    "record_id": "LocalPatientIdentifier",
    "forename": "GivenName",
    "surname": "FamilyName",
    "dob": "BirthDate",
    "sex": "Gender",
    "nhs_number": "NHSNumber",
    "postcode": "PostCode",
    "uprn": "PropertyUPRN",
    "start_date": "RegisteredFrom",
    "end_date": "RegisteredTo",
}


@pytest.mark.parametrize(
    ("header", "normal"),
    [
        ("NHSNumber", "nhs number"),
        ("Person_Birth_Date", "person birth date"),
        ("DoB", "do b"),
        ("POST CODE", "post code"),
        ("nhs-no.", "nhs no"),
    ],
)
def test_header_names_normalise(header, normal):
    assert normal_name(header) == normal


@pytest.fixture
def extract(tmp_path: Path) -> Path:
    """The other system's extract as a semicolon-separated Windows-1252 file."""
    frame = _other_system_extract()
    path = tmp_path / "landing" / "gp_extract.csv"
    path.parent.mkdir()
    text = frame.write_csv(separator=";")
    path.write_bytes(text.replace("Khan", "Khán").encode("cp1252"))
    return path


def test_proposes_the_mapping_format_delimiter_and_encoding(extract):
    proposal = propose_mapping(extract, GP, "gp", today=TODAY)
    assert {c.field: c.column for c in proposal.columns} == EXPECTED
    assert proposal.delimiter == ";"
    assert proposal.encoding == "cp1252"
    assert proposal.date_format() == "%d.%m.%Y"
    assert "PracticeCode" in proposal.unused_columns
    assert proposal.missing_required == []
    evidence = {c.field: c.evidence for c in proposal.columns}
    assert "100.0% valid NHS numbers" in evidence["nhs_number"]
    assert "dates of birth as %d.%m.%Y" in evidence["dob"]


def test_the_proposal_runs_through_the_ingest_as_it_is(extract, tmp_path):
    proposal = propose_mapping(extract, GP, "gp", today=TODAY)
    toml = proposal.to_toml(extract.parent)
    config = tmp_path / "config.toml"
    config.write_text(
        "[run]\n"
        f'landing_dir = "{extract.parent.as_posix()}"\n'
        'work_dir = "work"\nout_dir = "out"\nreference_date = "2026-03-31"\n'
        '[key]\nfile = "work/keys/k.key"\npassphrase_env = "UPRNLINK_KEY_PASSPHRASE"\n\n' + toml
    )
    assert tomllib.loads(toml)["sources"]["gp"]["delimiter"] == ";"
    source = read_settings(config).sources["gp"]
    accepted, _, report = ingest_extract(source, GP, TODAY)
    assert report.rows_in == 300
    assert report.rows_accepted == 300, report.quarantine_reasons
    assert accepted.get_column("nhs_number").null_count() == 0
    assert accepted.get_column("sex").to_list().count(None) == 0
    assert accepted.get_column("surname").str.contains("KH").any()


def test_no_data_value_is_shown(extract, capsys):
    frame = _other_system_extract()
    assert cli.main(["map", str(extract), "--contract", "gp_registrations"]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    for column in ("NHSNumber", "FamilyName", "BirthDate", "PropertyUPRN", "PostCode"):
        for value in frame.get_column(column).head(50).to_list():
            assert value not in text, column
    assert "gp_registrations" in text


def test_values_alone_identify_an_unnamed_nhs_number_column(tmp_path):
    frame = _other_system_extract().rename({"NHSNumber": "Col7", "BirthDate": "Field5"})
    rng = random.Random(9)
    # Ten digits that fail Modulus 11 are not taken for NHS numbers.
    frame = frame.with_columns(
        Col9=pl.Series([f"{rng.randrange(10**9, 10**10)}0" for _ in range(frame.height)])
    )
    path = tmp_path / "x.parquet"
    frame.write_parquet(path)
    proposal = propose_mapping(path, GP, today=TODAY)
    mapped = {c.field: c.column for c in proposal.columns}
    assert mapped["nhs_number"] == "Col7"
    assert mapped["dob"] == "Field5"
    assert "Col9" in proposal.unused_columns


def test_spreadsheet_serial_dates_are_proposed_only_for_a_named_date_column(tmp_path):
    frame = _other_system_extract().with_columns(
        BirthDate=pl.col("BirthDate")
        .str.to_date("%d.%m.%Y")
        .sub(pl.date(1899, 12, 30))
        .dt.total_days()
        .cast(pl.String),
    )
    path = tmp_path / "gp.csv"
    frame.write_csv(path)
    proposal = propose_mapping(path, GP, today=TODAY)
    dob = next(c for c in proposal.columns if c.field == "dob")
    assert (dob.column, dob.date_format) == ("BirthDate", "excel")
    # Unnamed, the same serial numbers are not taken for dates of birth by their values.
    path.write_text(frame.rename({"BirthDate": "Col5"}).write_csv())
    assert "dob" not in {c.field for c in propose_mapping(path, GP, today=TODAY).columns}


def test_day_month_ambiguity_is_flagged(tmp_path):
    rows = "PATIENT_ID,SURNAME,DOB\n" + "".join(
        f"P{i},Smith,{d:02d}/{m:02d}/1980\n" for i, (d, m) in enumerate([(1, 2), (3, 4), (5, 6)])
    )
    path = tmp_path / "gp.csv"
    path.write_text(rows)
    proposal = propose_mapping(path, GP, today=TODAY)
    dob = next(c for c in proposal.columns if c.field == "dob")
    assert dob.date_format == "%d/%m/%Y"
    assert dob.ambiguous_order
    assert "UK day-first assumed" in proposal.to_toml()


def test_missing_required_field_exits_3_naming_it(tmp_path, capsys):
    path = tmp_path / "gp.csv"
    path.write_text("PATIENT_ID,FORENAME\nP1,Amy\n")
    assert cli.main(["map", str(path), "--contract", "gp_registrations"]) == 3
    err = capsys.readouterr().err
    assert "surname" in err and "dob" in err
    assert "mapping_missing" in err


def test_missing_column_error_suggests_the_header(tmp_path):
    from tests.test_ingest import gp_source

    path = tmp_path / "gp.csv"
    header = (
        "PATIENT_ID,NHS_NUMBER,FORENAME,SURNAME,DATE_OF_BIRTH,SEX,POST_CODE,UPRN,REGISTRATION_DATE"
    )
    path.write_text(header + "\nP1,9434765919,John,Smith,19800102,M,LS1 4AB,1,20100101\n")
    with pytest.raises(ContractError, match=r"did you mean 'POST_CODE'\?.*uprnlink map"):
        ingest_extract(gp_source(path), GP, TODAY)


def test_suggest_columns_by_name():
    assert suggest_columns("NHS_NO", ["NHSNumber", "Surname"], "nhs_number") == ["NHSNumber"]
    assert suggest_columns("XYZ", ["Surname"], "record_id") == []


def test_a_report_title_above_the_header_is_found_and_skipped(extract, tmp_path):
    """Exports from reporting tools put a title and notes above the header. The map proposes
    skip_lines; the ingest without it says on which line the mapped columns are."""
    body = extract.read_bytes()
    titled = tmp_path / "landing" / "titled.csv"
    titled.write_bytes(
        "GP registrations; practice list extract\r\nRun on 01/04/2026 by SYSTEM\r\n\r\n".encode(
            "cp1252"
        )
        + body
    )
    proposal = propose_mapping(titled, GP, "gp", today=TODAY)
    assert (proposal.skip_lines, proposal.delimiter) == (3, ";")
    assert {c.field: c.column for c in proposal.columns} == EXPECTED
    toml = proposal.to_toml(titled.parent)
    assert "skip_lines = 3" in toml

    config = tmp_path / "config.toml"
    config.write_text(
        "[run]\n"
        f'landing_dir = "{titled.parent.as_posix()}"\n'
        'work_dir = "work"\nout_dir = "out"\nreference_date = "2026-03-31"\n'
        '[key]\nfile = "work/keys/k.key"\npassphrase_env = "UPRNLINK_KEY_PASSPHRASE"\n\n' + toml
    )
    source = read_settings(config).sources["gp"]
    _, _, report = ingest_extract(source, GP, TODAY)
    assert (report.rows_in, report.rows_accepted) == (300, 300)

    from dataclasses import replace

    with pytest.raises(ContractError, match=r"on line 4: set skip_lines = 3") as err:
        ingest_extract(replace(source, skip_lines=0), GP, TODAY)
    assert err.value.rule == "missing_header"
    with pytest.raises(ContractError, match="fewer than skip_lines"):
        ingest_extract(replace(source, skip_lines=10_000), GP, TODAY)


@pytest.mark.parametrize(
    ("style", "order"),
    [
        (lambda f, s: f"{s.upper()}, {f}", "surname_first"),
        (lambda f, s: f"{s.upper()} {f}", "surname_first"),
        (lambda f, s: f"{f} {s}", "forename_first"),
    ],
)
def test_a_full_name_column_serves_forename_and_surname(tmp_path, style, order):
    """Social care and housing systems often hold one name column. The map proposes it for
    both fields with the order its values show; the ingest splits it."""
    frame = _other_system_extract()
    full = [
        style(f, s)
        for f, s in zip(frame.get_column("GivenName"), frame.get_column("FamilyName"), strict=True)
    ]
    frame = frame.drop("GivenName", "FamilyName").with_columns(ClientName=pl.Series(full))
    path = tmp_path / "landing" / "gp.csv"
    path.parent.mkdir()
    frame.write_csv(path)
    proposal = propose_mapping(path, GP, "gp", today=TODAY)
    names = {c.field: (c.column, c.name_order) for c in proposal.columns}
    assert names["forename"] == names["surname"] == ("ClientName", order)

    config = tmp_path / "config.toml"
    config.write_text(
        "[run]\n"
        f'landing_dir = "{path.parent.as_posix()}"\n'
        'work_dir = "work"\nout_dir = "out"\nreference_date = "2026-03-31"\n'
        '[key]\nfile = "work/keys/k.key"\npassphrase_env = "UPRNLINK_KEY_PASSPHRASE"\n\n'
        + proposal.to_toml(path.parent)
    )
    accepted, _, report = ingest_extract(read_settings(config).sources["gp"], GP, TODAY)
    assert report.rows_accepted == 300
    expected = _other_system_extract()
    assert accepted.get_column("forename").to_list() == [
        f.upper() for f in expected.get_column("GivenName")
    ]
    assert accepted.get_column("surname").to_list() == [
        s.upper().replace("'", "") for s in expected.get_column("FamilyName")
    ]


def test_name_order_is_only_for_name_fields(tmp_path):
    from tests.test_ingest import gp_source
    from uprnlink.settings import ColumnMapping

    path = tmp_path / "gp.csv"
    path.write_text(
        "PATIENT_ID,NHS_NUMBER,FORENAME,SURNAME,DATE_OF_BIRTH,SEX,POSTCODE,UPRN,REGISTRATION_DATE\n"
        "P1,9434765919,John,Smith,19800102,M,LS1 4AB,1,20100101\n"
    )
    source = gp_source(path)
    columns = {**source.columns, "postcode": ColumnMapping("POSTCODE", (), "surname_first")}
    from dataclasses import replace

    with pytest.raises(ContractError, match="name_order is for forename and surname"):
        ingest_extract(replace(source, columns=columns), GP, TODAY)


def _as_another_system(src: Path, dst: Path) -> None:
    """The demo GP extract rewritten as another supplier would export it: a title above the
    header, semicolons, Windows-1252, its own column names and order, one full-name column,
    spaced NHS numbers, dates of birth as spreadsheet serials, other dates as dd.mm.yyyy, sex
    as words. Values that do not parse are written as they are (they stay malformed)."""
    raw = pl.read_csv(src, infer_schema=False)

    def redate(col: str, to: str) -> pl.Expr:
        parsed = pl.col(col).str.to_date("%Y%m%d", strict=False)
        if to == "excel":
            new = (parsed - pl.date(1899, 12, 30)).dt.total_days().cast(pl.String)
        else:
            new = parsed.dt.strftime(to)
        return pl.when(parsed.is_not_null()).then(new).otherwise(pl.col(col))

    out = raw.select(
        pl.lit("B86001").alias("PracticeCode"),
        pl.col("PATIENT_ID").alias("LocalPatientIdentifier"),
        pl.concat_str(
            pl.col("SURNAME").fill_null(""), pl.lit(", "), pl.col("FORENAME").fill_null("")
        ).alias("ClientName"),
        redate("DATE_OF_BIRTH", "excel").alias("BirthDate"),
        pl.col("SEX").replace({"M": "Male", "F": "Female"}).alias("Gender"),
        pl.col("NHS_NUMBER").str.replace(r"^(\d{3})(\d{3})(\d{4})$", "$1 $2 $3").alias("NHSNo"),
        pl.col("ADDRESS_LINE_1").alias("AddressLine1"),
        pl.col("POSTCODE").alias("PostCode"),
        pl.col("UPRN").alias("PropertyUPRN"),
        redate("REGISTRATION_DATE", "%d.%m.%Y").alias("RegisteredFrom"),
        redate("DEREGISTRATION_DATE", "%d.%m.%Y").alias("RegisteredTo"),
        redate("DATE_OF_DEATH", "%d.%m.%Y").alias("DateOfDeath"),
        *[pl.col(c) for c in raw.columns if c.startswith("LTC_")],
    )
    title = "Practice list extract;;\r\nProduced 01/04/2026\r\n\r\n"
    dst.write_bytes(title.encode("cp1252") + out.write_csv(separator=";").encode("cp1252"))


@pytest.mark.slow
def test_a_foreign_extract_links_exactly_as_the_original(base_run, population, tmp_path):
    """End to end: the same GP registrations written by another system, mapped by `uprnlink
    map` with no hand edits, give the same people as the original extract."""
    from tests.conftest import copy_tree, no_baselines
    from uprnlink.privacy.keys import load_run_key as load_key
    from uprnlink.privacy.trusted import read_trusted
    from uprnlink.run.runner import run_all
    from uprnlink.zones import Zones

    def clusters(config: Path) -> pl.DataFrame:
        settings = read_settings(config)
        frame = read_trusted(Zones(settings).clusters, load_key(settings))
        return frame.select("unique_id", "person_id").sort("unique_id")

    # The original: the shared population's first run (read only here; baselines off).
    original, before = base_run.config, base_run.summary

    # The same population again, its GP extract rewritten by another system.
    config = no_baselines(copy_tree(population, tmp_path / "foreign"))
    landing = read_settings(config).landing_dir
    extract = landing / "gp_practice_list.csv"
    _as_another_system(landing / "gp_registrations.csv", extract)
    (landing / "gp_registrations.csv").unlink()
    proposal = propose_mapping(extract, GP, "gp_registrations", today=TODAY)
    assert proposal.missing_required == []
    assert len(proposal.columns) == len(GP.fields)  # every field, the optional ones too
    assert (proposal.skip_lines, proposal.delimiter) == (3, ";")
    text = config.read_text()
    start = text.index("[sources.gp_registrations]")
    end = text.index("\n[", text.index("[sources.gp_registrations.columns]")) + 1
    config.write_text(text[:start] + proposal.to_toml(landing) + "\n" + text[end:])
    # The foreign extract's key must be the original's, so the tokens and ids are the same.
    shutil.copy(
        read_settings(original).key.file,  # type: ignore[arg-type]
        read_settings(config).key.file,  # type: ignore[arg-type]
    )
    summary = run_all(str(config))

    def gp(run: RunSummary) -> tuple[int, int, int]:
        r = next(r for r in run.ingest or () if r["source"] == "gp_registrations")
        return r["rows_in"], r["rows_accepted"], r["rows_quarantined"]

    assert gp(summary) == gp(before)
    assert gp(summary)[1] > 0
    assert clusters(config).equals(clusters(original))


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("empty.csv", b"", "empty_file"),
        ("binary.csv", bytes(range(256)) * 20, "unreadable"),
        ("header_only.csv", b"A,B,C\n", "mapping_missing"),
        ("damaged.parquet", b"PAR1 not really", "parquet"),
        ("absent.csv", None, "file_missing"),
    ],
)
def test_unusable_files_are_named_errors(tmp_path, capsys, name, content, rule):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["map", str(path), "--contract", "gp_registrations"]) == 3
    err = capsys.readouterr().err
    assert f"rule={rule}" in err
    assert "Traceback" not in err


def test_nested_parquet_columns_are_left_out(tmp_path):
    frame = _other_system_extract().with_columns(Tags=pl.lit([1, 2]))
    path = tmp_path / "gp.parquet"
    frame.write_parquet(path)
    proposal = propose_mapping(path, GP, today=TODAY)
    assert {c.field: c.column for c in proposal.columns} == EXPECTED


def test_a_file_without_a_header_row_is_refused_without_showing_it(tmp_path, capsys):
    """The first record would be taken for column names and printed: refused instead."""
    path = tmp_path / "gp.csv"
    path.write_text(
        "P1;SMITH;JOHN;02/01/1980;943 476 5919;LS1 4AB;100023336956\n"
        "P2;JONES;ANN;03/04/1975;401 023 2137;LS6 2QD;100023336957\n"
    )
    assert cli.main(["map", str(path), "--contract", "gp_registrations"]) == 3
    out = capsys.readouterr()
    assert "rule=missing_header" in out.err
    for value in ("SMITH", "JOHN", "943 476 5919", "LS1 4AB", "100023336956", "02/01/1980"):
        assert value not in out.out + out.err
