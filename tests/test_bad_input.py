"""The bad-input catalogue (docs/bad-input.md): every malformed extract the pipeline must survive.

Each test drives the public ingest functions with a small file. Where rows arrive, it checks
that nothing is silently dropped (in = accepted + quarantined); where the file cannot be read,
that the error names file, column, row and rule (exit code 3) and never a personal data value.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ingest import GP_COLUMNS, REF, SCHEMAS, gp_source
from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest.contracts import DEFAULT_MAX_LENGTH, Contract, find_contract, read_contract
from uprnlink.ingest.readers import read_extract
from uprnlink.ingest.validate import IngestReport, ingest_extract
from uprnlink.linkage.quality import source_quality_table
from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.records import build_reference, build_trusted_source, enrich_with_areas
from uprnlink.settings import ColumnMapping, SourceSettings

HEADER = "PATIENT_ID,NHS_NUMBER,FORENAME,SURNAME,DATE_OF_BIRTH,SEX,POSTCODE,UPRN,REGISTRATION_DATE"
GOOD = "P{n},9434765919,Ann,Jones,19800102,F,LS1 4AB,100023336956,20100101"
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gp_contract() -> Contract:
    return find_contract(SCHEMAS, "gp_registrations", 1)


def put(tmp_path: Path, content: str | bytes, name: str = "gp.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def lines(*rows: str, eol: str = "\n") -> str:
    return eol.join((HEADER, *rows)) + eol


def ingest_gp(
    tmp_path: Path, content: str | bytes, **overrides: Any
) -> tuple[pl.DataFrame, pl.DataFrame, IngestReport]:
    accepted, quarantined, report = ingest_extract(
        gp_source(put(tmp_path, content), **overrides), gp_contract(), REF
    )
    assert report.reconciles
    assert report.rows_in == report.rows_accepted + report.rows_quarantined
    assert accepted.height == report.rows_accepted
    assert quarantined.height == report.rows_quarantined
    return accepted, quarantined, report


def reasons_by_row(quarantined: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantined["_row"].to_list(), quarantined["_reasons"].to_list(), strict=True))


def contract_error(source: SourceSettings, contract: Contract | None = None) -> ContractError:
    with pytest.raises(ContractError) as err:
        ingest_extract(source, contract or gp_contract(), REF)
    assert err.value.exit_code == 3
    assert err.value.file is not None and source.path.name in str(err.value)
    return err.value


def assert_no_values(text: str, *values: str) -> None:
    for value in values:
        assert value not in text


# --------------------------------------------------------------------------- headers


def test_mapped_column_missing_from_header_names_file_column_rule(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1)).replace("SURNAME", "FAMILY_NAME", 1)
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.column, err.rule, err.row) == ("SURNAME", "missing_column", None)
    assert "rule=missing_column" in str(err) and "column=SURNAME" in str(err)


def test_file_without_header_row_is_named_and_quotes_no_value(tmp_path: Path) -> None:
    body = "\n".join(GOOD.format(n=n) for n in (1, 2)) + "\n"
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.row) == ("missing_header", 1)
    # The first data row stood where the header should be: none of it may be echoed.
    assert_no_values(str(err), "P1", "9434765919", "Jones", "19800102", "100023336956")


def test_repeated_header_name_is_ambiguous_when_mapped(tmp_path: Path) -> None:
    header = HEADER.replace("SURNAME", "SURNAME,SURNAME")
    body = header + "\n" + GOOD.format(n=1).replace("Jones", "Jones,Smith") + "\n"
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.column) == ("duplicate_column", "SURNAME")
    # Two headers that match the mapping only after ignoring case and spaces: also ambiguous.
    header = HEADER.replace("SURNAME", "Surname, surname ")
    err = contract_error(gp_source(put(tmp_path, header + "\n" + body.split("\n")[1] + "\n")))
    assert (err.rule, err.column) == ("duplicate_column", "SURNAME")
    # A repeat the config does not map is renamed, ignored and reported.
    body = lines(GOOD.format(n=1) + ",a,b").replace(HEADER, HEADER + ",NOTE,NOTE", 1)
    accepted, _, report = ingest_gp(tmp_path, body)
    assert accepted.height == 1
    assert report.columns_ignored == ["NOTE", "NOTE_duplicated_0"]


def test_extra_columns_are_ignored_and_reported(tmp_path: Path) -> None:
    # Two extra named columns and an unnamed one; a trailing delimiter on the header only.
    header = HEADER + ",GP_PRACTICE,,LAST_SEEN,"
    body = header + "\n" + GOOD.format(n=1) + ",Y12345,?,20250101\n"
    accepted, quarantined, report = ingest_gp(tmp_path, body)
    assert (accepted.height, quarantined.height) == (1, 0)
    assert report.columns_ignored == ["GP_PRACTICE", "LAST_SEEN", "column_11"]
    assert "GP_PRACTICE" not in accepted.columns


# --------------------------------------------------------------------------- types


def test_wrong_types_null_optional_values_and_quarantine_required(tmp_path: Path) -> None:
    housing = find_contract(SCHEMAS, "housing_tenancies", 1)
    cols = {
        "record_id": "ref",
        "surname": "surname",
        "start_date": "start",
        "tenure_type": "tenure",
        "bedrooms": "beds",
    }
    body = (
        "ref,surname,start,tenure,beds\n"
        "H1,Jones,2020-01-01,secure,2\n"  # clean
        "H2,Jones,2020-01-01,FREEHOLD,two\n"  # enum and integer that cannot be read
        "H3,Jones,2020-01-01,SECURE,99\n"  # integer outside min..max
        "H4,Jones,2020-01-01,SECURE,2.5\n"  # not a whole number
        "H5,Jones,01/01/2020,SECURE,1\n"  # required date in another format
    )
    src = gp_source(
        put(tmp_path, body),
        name="housing_tenancies",
        contract="housing_tenancies",
        date_formats=("%Y-%m-%d",),
        columns={k: ColumnMapping(v) for k, v in cols.items()},
    )
    accepted, quarantined, report = ingest_extract(src, housing, REF)
    assert report.reconciles and report.rows_in == 5
    assert accepted["tenure_type"].to_list() == ["SECURE", None, "SECURE", "SECURE"]
    assert accepted["bedrooms"].to_list() == [2, None, None, None]
    assert report.values_nulled == {
        "bedrooms:invalid_integer": 2,
        "bedrooms:out_of_range": 1,
        "tenure_type:not_in_allowed_values": 1,
    }
    assert quarantined["_reasons"].to_list() == ["start_date:invalid_date"]

    # A required number that is not a number, or out of range, costs the row.
    imd = find_contract(SCHEMAS, "deprivation", 1)
    ref_src = gp_source(
        put(tmp_path, "lsoa,decile\nE01,3\nE02,ten\nE03,11\nE04,3.0\nE05,NaN\n", "imd.csv"),
        name="deprivation",
        contract="deprivation",
        date_formats=(),
        columns={"lsoa": ColumnMapping("lsoa"), "imd_decile": ColumnMapping("decile")},
    )
    accepted, quarantined, report = ingest_extract(ref_src, imd, REF)
    assert report.reconciles
    assert accepted["imd_decile"].to_list() == [3, 3]
    assert reasons_by_row(quarantined) == {
        2: "imd_decile:invalid_integer",
        3: "imd_decile:out_of_range",
        5: "imd_decile:invalid_integer",
    }


def test_decimal_rejects_nan_and_infinity(tmp_path: Path) -> None:
    benefits = find_contract(SCHEMAS, "benefits_claims", 1)
    cols = {"record_id": "id", "surname": "sn", "start_date": "st", "weekly_amount": "amt"}
    body = "id,sn,st,amt\nB1,Li,2020-01-01,£1,234.50\nB2,Li,2020-01-01,NaN\n"
    body += "B3,Li,2020-01-01,inf\nB4,Li,2020-01-01,-5\nB5,Li,2020-01-01,12.5p\n"
    src = gp_source(
        put(tmp_path, body.replace("£1,234.50", '"£1,234.50"')),
        name="benefits_claims",
        contract="benefits_claims",
        date_formats=("%Y-%m-%d",),
        columns={k: ColumnMapping(v) for k, v in cols.items()},
    )
    accepted, _, report = ingest_extract(src, benefits, REF)
    assert report.reconciles and report.rows_accepted == 5
    assert accepted["weekly_amount"].to_list() == [1234.5, None, None, None, None]
    assert report.values_nulled == {
        "weekly_amount:invalid_decimal": 3,
        "weekly_amount:out_of_range": 1,
    }


def test_parquet_column_of_a_nested_type_is_named(tmp_path: Path) -> None:
    raw = pl.DataFrame(
        {
            "PATIENT_ID": ["A"],
            "SURNAME": [["Jones", "Smith"]],
            "DATE_OF_BIRTH": [date(1990, 1, 1)],
            "REGISTRATION_DATE": [date(2020, 1, 1)],
        }
    )
    path = tmp_path / "gp.parquet"
    raw.write_parquet(path)
    cols = {k: ColumnMapping(GP_COLUMNS[k]) for k in ("record_id", "surname", "dob", "start_date")}
    err = contract_error(gp_source(path, format="parquet", date_formats=(), columns=cols))
    assert (err.rule, err.column) == ("column_type", "SURNAME")


# --------------------------------------------------------------------------- empty files


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n", b" \r\n"])
def test_empty_file_is_a_contract_error(tmp_path: Path, content: bytes) -> None:
    err = contract_error(gp_source(put(tmp_path, content)))
    assert err.rule == "empty_file"


def test_header_only_file_gives_zero_rows(tmp_path: Path) -> None:
    for body in (HEADER, HEADER + "\n", HEADER + "\r\n\r\n"):
        accepted, quarantined, report = ingest_gp(tmp_path, body)
        assert (report.rows_in, accepted.height, quarantined.height) == (0, 0, 0)
        assert set(gp_contract().field_names) <= set(accepted.columns)
    # The trusted zone gets an empty source, not a crash.
    reference = build_reference(None, None, None)
    trusted = build_trusted_source(accepted, "gp_registrations", reference, MasterKey(bytes(32)))
    assert trusted.records.height == 0 and "uprn_token" in trusted.records.columns


# --------------------------------------------------------------------------- truncation


def test_truncated_last_line_with_missing_fields_is_quarantined(tmp_path: Path) -> None:
    # Cut after the UPRN's first digits: the value left looks like a valid, different UPRN.
    body = lines(GOOD.format(n=1)) + "P2,9434765919,Ann,Jones,19800102,F,LS1 4AB,1000"
    accepted, quarantined, report = ingest_gp(tmp_path, body)
    assert report.rows_in == 2 and accepted["record_id"].to_list() == ["P1"]
    assert reasons_by_row(quarantined) == {2: "row:missing_fields;start_date:missing"}
    # Fields missing from the end of a row are caught even where they are optional.
    header = HEADER.replace(",UPRN,REGISTRATION_DATE", ",REGISTRATION_DATE,UPRN")
    row = "P3,9434765919,Ann,Jones,19800102,F,LS1 4AB,20100101"  # no UPRN field at all
    accepted, quarantined, _ = ingest_gp(tmp_path, f"{header}\n{row}\n")
    assert accepted.height == 0
    assert quarantined["_reasons"].to_list() == ["row:missing_fields"]


def test_truncated_last_line_inside_a_quote_is_quarantined(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1)) + 'P2,9434765919,"Ann,Jones,19800102'
    accepted, quarantined, report = ingest_gp(tmp_path, body)
    assert report.rows_in == 2 and accepted.height == 1
    reasons = reasons_by_row(quarantined)[2]
    assert reasons.startswith("row:unclosed_quote")
    # The cut row is kept as raw text, split on the delimiter, for the engineer to inspect.
    assert quarantined["FORENAME"].to_list() == ['"Ann']


def test_unclosed_quote_mid_file_is_an_error_naming_the_line(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1), 'P2,9434765919,"Ann,Jones,19800102', GOOD.format(n=3))
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.row) == ("unclosed_quote", 3)
    assert_no_values(str(err), "Ann", "Jones")
    # A stray quote inside an unquoted value (O"Brien) is found the same way.
    body = lines(GOOD.format(n=1), GOOD.format(n=2).replace("Jones", 'O"Brien'), GOOD.format(n=3))
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.row) == ("unclosed_quote", 3)
    assert_no_values(str(err), "Brien")


def test_paired_stray_quotes_across_lines_are_an_error(tmp_path: Path) -> None:
    rows = [GOOD.format(n=2).replace("Jones", 'O"Brien'), GOOD.format(n=3).replace("Ann", 'D"Arcy')]
    err = contract_error(gp_source(put(tmp_path, lines(GOOD.format(n=1), *rows))))
    assert err.rule in {"csv_quoting", "csv_parse"}
    assert_no_values(str(err), "Brien", "Arcy")


# --------------------------------------------------------------------------- delimiter


@pytest.mark.parametrize("actual", [";", "\t", "|"])
def test_wrong_delimiter_is_named(tmp_path: Path, actual: str) -> None:
    body = lines(GOOD.format(n=1)).replace(",", actual)
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.row) == ("delimiter", 1)
    assert repr(actual) in str(err)
    accepted, _, _ = ingest_gp(tmp_path, body, delimiter=actual)
    assert accepted.height == 1


def test_delimiter_that_is_not_one_byte_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_extract(gp_source(put(tmp_path, lines(GOOD.format(n=1))), delimiter="||"))
    assert err.value.exit_code == 2


# --------------------------------------------------------------------------- encodings


def test_latin1_and_utf8_bom_are_read(tmp_path: Path) -> None:
    row = GOOD.format(n=1).replace("Ann", "Zoë").replace("Jones", "Müller")
    latin, _, _ = ingest_gp(tmp_path, lines(row).encode("latin-1"), encoding="latin-1")
    bom, _, _ = ingest_gp(tmp_path, b"\xef\xbb\xbf" + lines(row).encode(), encoding="utf-8")
    assert latin["forename"].to_list() == ["ZOE"] == bom["forename"].to_list()
    assert latin["surname"].to_list() == ["MULLER"] == bom["surname"].to_list()
    utf16, _, _ = ingest_gp(tmp_path, lines(row).encode("utf-16"), encoding="utf-16")
    assert utf16["surname"].to_list() == ["MULLER"]


def test_encoding_mismatches_are_named(tmp_path: Path) -> None:
    row = GOOD.format(n=1).replace("Jones", "Müller")
    # Latin-1 bytes declared as UTF-8: the line is named, the value is not.
    err = contract_error(gp_source(put(tmp_path, lines(GOOD.format(n=1), row).encode("latin-1"))))
    assert (err.rule, err.row) == ("encoding", 3)
    assert "latin-1" in str(err)
    # A UTF-8 BOM, or a UTF-16 one, on a file declared latin-1 would turn names into mojibake.
    for data in (b"\xef\xbb\xbf" + lines(row).encode(), lines(row).encode("utf-16")):
        err = contract_error(gp_source(put(tmp_path, data), encoding="latin-1"))
        assert err.rule == "encoding"
    # An encoding Python does not know is a mistake in the config (exit code 2).
    with pytest.raises(ConfigError) as config_err:
        read_extract(gp_source(put(tmp_path, lines(row)), encoding="latin-9x"))
    assert config_err.value.exit_code == 2


# --------------------------------------------------------------------------- quoting


def test_embedded_newlines_quotes_and_delimiters_in_quoted_fields(tmp_path: Path) -> None:
    cols = {**GP_COLUMNS, "address_line_1": "ADDRESS"}
    header = HEADER + ",ADDRESS"
    rows = [
        GOOD.format(n=1).replace("Jones", '"O\'Neil, ""Jr"""') + ',"Flat 2\r\n12 High St"',
        GOOD.format(n=2).replace("Ann", '"Mary\nAnn"') + ',"1 Low Rd,\n\nLeeds"',
        GOOD.format(n=3) + ",",
    ]
    body = header + "\r\n" + "\r\n".join(rows) + "\r\n"
    accepted, quarantined, report = ingest_gp(tmp_path, body, columns=cols_map(cols))
    assert (report.rows_in, quarantined.height) == (3, 0)
    assert accepted["surname"].to_list() == ["ONEIL JR", "JONES", "JONES"]
    assert accepted["forename"].to_list() == ["ANN", "MARY", "ANN"]
    assert accepted["middle_names"].to_list() == [None, "ANN", None]
    # Free text keeps its words, with each line break as one space.
    assert accepted["address_line_1"].to_list() == ["Flat 2 12 High St", "1 Low Rd, Leeds", None]
    assert accepted["_row"].to_list() == [1, 2, 3]


def cols_map(cols: dict[str, str]) -> dict[str, ColumnMapping]:
    return {k: ColumnMapping(v) for k, v in cols.items()}


def test_megabyte_field_fails_too_long_without_crashing(tmp_path: Path) -> None:
    big = "A" * (1 << 20)
    rows = [
        GOOD.format(n=1).replace("Ann", big),  # optional forename: nulled and counted
        GOOD.format(n=2).replace("Jones", big),  # required surname: row quarantined
        GOOD.format(n=3).replace("Ann", "B" * DEFAULT_MAX_LENGTH),  # at the limit: kept
    ]
    accepted, quarantined, report = ingest_gp(tmp_path, lines(*rows))
    assert accepted["record_id"].to_list() == ["P1", "P3"]
    assert accepted["forename"].to_list() == [None, "B" * DEFAULT_MAX_LENGTH]
    assert report.values_nulled == {"forename:too_long": 1}
    assert reasons_by_row(quarantined) == {2: "surname:too_long"}
    assert big not in str(report.to_dict())


def test_contract_max_length_overrides_the_default(tmp_path: Path) -> None:
    text = (SCHEMAS / "gp_registrations.v1.toml").read_text()
    text = text.replace('name = "surname"\n', 'name = "surname"\nmax_length = 5\n', 1)
    contract = read_contract(put(tmp_path, text, "gp_registrations.v1.toml"))
    assert contract.field("surname").length_limit == 5
    src = gp_source(put(tmp_path, lines(GOOD.format(n=1), GOOD.format(n=2).replace("Jones", "Li"))))
    _, quarantined, report = ingest_extract(src, contract, REF)
    assert report.reconciles and reasons_by_row(quarantined) == {}
    src = gp_source(put(tmp_path, lines(GOOD.format(n=1).replace("Jones", "Jonesy"))))
    _, quarantined, _ = ingest_extract(src, contract, REF)
    assert quarantined["_reasons"].to_list() == ["surname:too_long"]
    bad = text.replace("max_length = 5", "max_length = 0")
    with pytest.raises(ContractError, match="max_length"):
        read_contract(put(tmp_path, bad, "gp_registrations.v1.toml"))


# --------------------------------------------------------------------------- UPRNs

UPRN_CASES = [
    ("100023336956", 100023336956),  # plain
    ("  000123 ", 123),  # leading zeros and padding
    ("1000 2333 6956", 100023336956),  # digit groups
    ("100023336956.0", 100023336956),  # written as a float
    ("1.00023336956E+11", 100023336956),  # scientific notation holding every digit
    ("1.00023E+11", None),  # scientific notation that lost digits: never guessed
    ("UPRN100", None),  # not numeric
    ("0", None),  # zero
    ("-100023336956", None),  # negative
    ("1000233369561", None),  # 13 digits
    ("100,023,336,956", None),  # thousands separators
    ("1.5", None),  # not whole
]


def test_uprn_forms_in_an_optional_field(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=i).replace("100023336956", f'"{raw}"')
        for i, (raw, _) in enumerate(UPRN_CASES, 1)
    ]
    accepted, quarantined, report = ingest_gp(tmp_path, lines(*rows))
    assert quarantined.height == 0
    assert accepted["uprn"].to_list() == [want for _, want in UPRN_CASES]
    bad = sum(want is None for _, want in UPRN_CASES)
    assert report.values_nulled == {"uprn:invalid_uprn": bad}


def test_uprn_forms_in_a_required_field_quarantine(tmp_path: Path) -> None:
    lookup = find_contract(SCHEMAS, "uprn_lookup", 1)
    body = "UPRN,LSOA\n" + "".join(f'"{raw}",E01\n' for raw, _ in UPRN_CASES)
    src = gp_source(
        put(tmp_path, body, "lookup.csv"),
        name="uprn_lookup",
        contract="uprn_lookup",
        date_formats=(),
        columns={"uprn": ColumnMapping("UPRN"), "lsoa": ColumnMapping("LSOA")},
    )
    accepted, quarantined, report = ingest_extract(src, lookup, REF)
    assert report.reconciles
    # Four spellings of one UPRN: the first is kept, the rest are duplicates of it.
    assert accepted["uprn"].to_list() == [100023336956, 123]
    reasons = reasons_by_row(quarantined)
    assert [reasons[i] for i in (3, 4, 5)] == ["uprn:duplicate"] * 3
    assert all(reasons[i] == "uprn:invalid_uprn" for i in range(6, 13))
    assert "1.00023E+11" not in str(report.to_dict())


# --------------------------------------------------------------------------- NHS numbers


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("943 476 5919", True),
        ("9434765918", False),  # bad check digit
        ("943476591", False),  # nine digits
        ("94347659190", False),  # eleven digits
        ("9999999999", False),  # dummy: repeated digits
        ("0000000000", False),
        ("0123456789", False),  # dummy: sequential digits (passes Modulus 11)
        ("9990000018", False),  # 999 test range (passes Modulus 11)
        ("NK", False),
    ],
)
def test_nhs_number_forms(tmp_path: Path, raw: str, valid: bool) -> None:
    row = GOOD.format(n=1).replace("9434765919", raw)
    accepted, quarantined, report = ingest_gp(tmp_path, lines(row))
    assert quarantined.height == 0
    assert accepted["nhs_number"].to_list() == (["9434765919"] if valid else [None])
    assert report.values_nulled == ({} if valid else {"nhs_number:invalid_nhs_number": 1})
    assert raw not in str(report.to_dict())


# --------------------------------------------------------------------------- dates


def test_impossible_dates(tmp_path: Path) -> None:
    cols = {**GP_COLUMNS, "end_date": "LEFT"}
    body = (HEADER + ",LEFT\n") + "\n".join(
        [
            GOOD.format(n=1).replace("19800102", "20200231") + ",",  # required dob
            GOOD.format(n=2).replace("20100101", "20101301") + ",",  # required start date
            GOOD.format(n=3) + ",20200230",  # optional end date
            GOOD.format(n=4) + ",20200229",  # a real leap day
        ]
    )
    accepted, quarantined, report = ingest_gp(tmp_path, body + "\n", columns=cols_map(cols))
    assert reasons_by_row(quarantined) == {1: "dob:invalid_dob", 2: "start_date:invalid_date"}
    assert accepted["end_date"].to_list() == [None, date(2020, 2, 29)]
    assert report.values_nulled == {"end_date:invalid_date": 1}


def test_future_and_implausibly_old_dates(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=1).replace("19800102", "20260401"),  # born after the reference date
        GOOD.format(n=2).replace("19800102", "20260331"),  # born on it: accepted
        GOOD.format(n=3).replace("20100101", "20300101"),  # registered in the future
        GOOD.format(n=4).replace("19800102", "18991231"),  # born before 1900
    ]
    accepted, quarantined, _ = ingest_gp(tmp_path, lines(*rows))
    assert accepted["record_id"].to_list() == ["P2"]
    assert reasons_by_row(quarantined) == {
        1: "dob:future_date",
        3: "start_date:future_date",
        4: "dob:out_of_range",
    }


def test_two_digit_year_read_with_four_digit_format_is_out_of_range(tmp_path: Path) -> None:
    row = GOOD.format(n=1).replace("19800102", "02/01/80").replace("20100101", "01/01/10")
    _, quarantined, _ = ingest_gp(tmp_path, lines(row), date_formats=("%d/%m/%Y",))
    assert quarantined["_reasons"].to_list() == ["dob:out_of_range;start_date:out_of_range"]


def test_mixed_date_formats_in_one_column(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=1),  # 19800102
        GOOD.format(n=2).replace("19800102", "1980-01-02"),
        GOOD.format(n=3).replace("19800102", "02/01/1980"),
    ]
    # One declared format: values in any other format are not guessed at.
    accepted, quarantined, _ = ingest_gp(tmp_path, lines(*rows))
    assert accepted["record_id"].to_list() == ["P1"]
    assert quarantined["_reasons"].to_list() == ["dob:invalid_dob"] * 2
    # A list of formats is tried in order, so each value is read by the first that fits.
    formats = ("%Y%m%d", "%Y-%m-%d", "%d/%m/%Y")
    accepted, quarantined, _ = ingest_gp(tmp_path, lines(*rows), date_formats=formats)
    assert quarantined.height == 0 and accepted["dob"].to_list() == [date(1980, 1, 2)] * 3
    # An ambiguous day/month is resolved by the order given, day first here.
    row = GOOD.format(n=4).replace("19800102", "03/04/1980")
    accepted, _, _ = ingest_gp(
        tmp_path, lines(row), date_formats=("%d/%m/%Y", "%m/%d/%Y", "%Y%m%d")
    )
    assert accepted["dob"].to_list() == [date(1980, 4, 3)]


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicate_rows_keep_the_first(tmp_path: Path) -> None:
    row = GOOD.format(n=1)
    accepted, quarantined, report = ingest_gp(tmp_path, lines(row, row, GOOD.format(n=2), row))
    assert accepted["record_id"].to_list() == ["P1", "P2"]
    assert reasons_by_row(quarantined) == {2: "row:duplicate", 4: "row:duplicate"}
    assert report.quarantine_reasons == {"row:duplicate": 2}


def test_duplicate_record_ids_keep_the_first(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=1),
        GOOD.format(n=1).replace("Ann", "Bob"),
        " P1 ,,Cy,Li,19900101,,,,20100101",
    ]
    accepted, quarantined, _ = ingest_gp(tmp_path, lines(*rows))
    assert accepted["forename"].to_list() == ["ANN"]
    assert reasons_by_row(quarantined) == {2: "record_id:duplicate", 3: "record_id:duplicate"}


# --------------------------------------------------------------------------- line structure


def test_crlf_line_endings(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1), GOOD.format(n=2), eol="\r\n")
    accepted, quarantined, _ = ingest_gp(tmp_path, body)
    assert (accepted.height, quarantined.height) == (2, 0)
    assert accepted["start_date"].to_list() == [date(2010, 1, 1)] * 2  # no stray \r
    err = contract_error(gp_source(put(tmp_path, body.replace("\r\n", "\r"))))
    assert err.rule == "line_endings"


def test_row_with_more_fields_than_the_header(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=1) + ",extra",  # a value beyond the header: quarantined
        GOOD.format(n=2).replace("Jones", "Smith, Jones"),  # an unquoted comma shifts fields
        GOOD.format(n=3) + ",",  # a trailing delimiter: nothing extra, accepted
        GOOD.format(n=4) + ",,,,",
    ]
    accepted, quarantined, _ = ingest_gp(tmp_path, lines(*rows))
    assert accepted["record_id"].to_list() == ["P3", "P4"]
    reasons = reasons_by_row(quarantined)
    assert reasons[1] == "row:extra_fields"
    assert reasons[2].startswith("row:extra_fields")
    assert quarantined["_extra_fields"].to_list() == ["extra", "20100101"]


def test_nul_bytes_and_control_characters(tmp_path: Path) -> None:
    rows = [
        GOOD.format(n=1).replace("Ann", "An\x00n"),  # optional field: nulled and counted
        GOOD.format(n=2).replace("Jones", "Jo\x00nes"),  # required field: quarantined
        GOOD.format(n=3).replace("LS1 4AB", "LS1\x1b4AB"),
    ]
    accepted, quarantined, report = ingest_gp(tmp_path, lines(*rows))
    assert accepted["record_id"].to_list() == ["P1", "P3"]
    assert accepted["forename"].to_list() == [None, "ANN"]
    assert accepted["postcode"].to_list() == ["LS1 4AB", None]
    assert reasons_by_row(quarantined) == {2: "surname:control_character"}
    assert report.values_nulled == {
        "forename:control_character": 1,
        "postcode:control_character": 1,
    }


def test_whitespace_only_values_are_missing(tmp_path: Path) -> None:
    rows = [
        "  ,9434765919,Ann,Jones,19800102,F,,,20100101",
        "P2,9434765919,\u00a0,\t,19800102,F,  ,  ,20100101",
        "P3,   ,   ,Li,19800102,   ,   ,   ,20100101",
    ]
    accepted, quarantined, report = ingest_gp(tmp_path, lines(*rows))
    assert reasons_by_row(quarantined) == {1: "record_id:missing", 2: "surname:missing"}
    row = accepted.row(0, named=True)
    assert row["nhs_number"] is row["forename"] is row["sex"] is row["uprn"] is None
    assert report.values_nulled == {}  # blank is missing, not a broken value


def test_blank_lines_are_counted_not_rows(tmp_path: Path) -> None:
    body = lines("", GOOD.format(n=1), "   ", "", GOOD.format(n=2), "")
    accepted, quarantined, report = ingest_gp(tmp_path, body)
    assert (report.rows_in, accepted.height, quarantined.height) == (2, 2, 0)
    assert report.blank_lines == 4
    assert accepted["_row"].to_list() == [2, 5]  # record positions in the file are kept


def test_read_extract_marks_row_shape(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1), "", "P2,1", GOOD.format(n=3) + ",x") + 'P4,"cut'
    raw = read_extract(gp_source(put(tmp_path, body)))
    assert raw["_row"].to_list() == [1, 2, 3, 4, 5]
    assert raw["_row_issue"].to_list() == [
        None,
        "blank",
        "missing_fields",
        "extra_fields",
        "unclosed_quote",
    ]


def test_reserved_column_names_are_refused(tmp_path: Path) -> None:
    body = lines(GOOD.format(n=1) + ",1").replace(HEADER, HEADER + ",_row", 1)
    err = contract_error(gp_source(put(tmp_path, body)))
    assert (err.rule, err.column) == ("reserved_column", "_row")


# --------------------------------------------------------------------------- reference data


def test_reference_lookup_missing_uprns(tmp_path: Path) -> None:
    lookup = pl.DataFrame(
        {
            "uprn": [100023336956, 100023336957],
            "postcode": ["LS1 4AB", "LS1 4AB"],
            "oa": ["E001", "E001"],
            "lsoa": ["E01000001", "E01000001"],
            "msoa": ["E02", "E02"],
            "ward": ["E05", "E05"],
            "lad": ["E08", "E08"],
        }
    )
    imd = pl.DataFrame({"lsoa": ["E01000001"], "imd_decile": [3]})
    reference = build_reference(lookup, None, imd)
    rows = [
        GOOD.format(n=1),  # UPRN in the lookup
        GOOD.format(n=2).replace("100023336956", "999999999999"),  # missing from it
        GOOD.format(n=3).replace("100023336956", "999999999998").replace("LS1 4AB", "ZZ9 9ZZ"),
    ]
    accepted, _, _ = ingest_gp(tmp_path, lines(*rows))
    enriched = enrich_with_areas(accepted, reference)
    assert enriched.height == accepted.height  # the join neither drops nor repeats records
    assert enriched["uprn"].to_list() == [100023336956, 999999999999, 999999999998]
    assert enriched["uprn_in_lookup"].to_list() == [True, False, False]
    assert enriched["area_from"].to_list() == ["uprn", "postcode", None]
    assert enriched["lsoa"].to_list() == ["E01000001", "E01000001", None]
    assert enriched["imd_decile"].to_list() == [3, 3, None]

    trusted = build_trusted_source(accepted, "gp_registrations", reference, MasterKey(bytes(32)))
    records = trusted.records
    assert records["uprn_token"].null_count() == 0  # the UPRN is kept, as a token
    assert records["uprn_in_lookup"].to_list() == [True, False, False]
    linked = records.with_columns(pl.Series("person_id", ["a", "b", "c"]))
    quality = source_quality_table(linked).row(0, named=True)
    assert (quality["with_uprn"], quality["uprn_in_lookup"]) == (3, 1)


# --------------------------------------------------------------------------- properties

cell = st.text(
    alphabet=st.sampled_from([*"ab Z9,;\"'\n\r\t\x00|é£", "\u00a0", "\u2028"]),
    max_size=12,
)


def csv_text(rows: list[list[str]], eol: str, quoting: int = csv.QUOTE_MINIMAL) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=eol, quoting=quoting).writerows(rows)
    return buffer.getvalue()


# How exporters quote: Python's writer leaves a lone CR unquoted when lines end in LF only,
# so that combination is tested with every field quoted.
WRITERS = st.sampled_from(
    [("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)]
)


@FUZZ
@given(
    rows=st.lists(st.lists(cell, min_size=2, max_size=5), min_size=1, max_size=12),
    writer=WRITERS,
)
def test_read_extract_round_trips_csv_writer_output(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], writer: tuple[str, int]
) -> None:
    width = max(len(r) for r in rows)
    header = [f"c{i}" for i in range(width)]
    padded = [r + [""] * (width - len(r)) for r in rows]
    folder = tmp_path_factory.mktemp("round_trip")
    raw = read_extract(gp_source(put(folder, csv_text([header, *padded], *writer))))
    got = [tuple(v or None for v in r) for r in raw.select(header).rows()]
    assert got == [tuple(v or None for v in r) for r in padded]
    assert raw["_row_issue"].null_count() == raw.height
    assert raw["_row"].to_list() == list(range(1, len(rows) + 1))


@FUZZ
@given(
    rows=st.lists(st.lists(cell, min_size=0, max_size=11), min_size=1, max_size=12),
    writer=WRITERS,
)
def test_any_cells_are_accepted_or_quarantined(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], writer: tuple[str, int]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    src = gp_source(put(folder, csv_text([HEADER.split(","), *rows], *writer)))
    accepted, quarantined, report = ingest_extract(src, gp_contract(), REF)
    assert report.rows_in == report.rows_accepted + report.rows_quarantined
    assert report.rows_in + report.blank_lines == len(rows)
    assert accepted.height == report.rows_accepted
    assert quarantined.height == report.rows_quarantined
    assert all(":" in r for r in quarantined["_reasons"].to_list())
