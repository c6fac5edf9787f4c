"""Extracts of other shapes: composite record keys, several people per row (person groups),
local codes recoded onto the contract's values, deciles from IMD ranks."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.validate import ingest_extract
from uprnlink.settings import PROJECT_ROOT, read_settings

SCHEMAS = PROJECT_ROOT / "schemas"
REF = date(2026, 3, 31)


def _config(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f"""
[run]
landing_dir = "."
work_dir = "w"
out_dir = "o"
reference_date = "2026-03-31"
{table}
"""
    )
    return path


def _ingest(tmp_path: Path, csv: str, table: str, name: str) -> tuple:
    (tmp_path / "extract.csv").write_text(csv)
    settings = read_settings(_config(tmp_path, table))
    source = settings.sources[name]
    contract = find_contract(SCHEMAS, source.contract)
    return ingest_extract(source, contract, REF)


TENANCY = """TENANCY_REF,MEMBER_NO,FIRST,LAST,START
T1,1,Ann,Lee,2020-01-01
T1,2,Bob,Lee,2020-01-01
T2,1,Cat,Ray,2021-05-01
T2,1,Cat,Ray-Smith,2021-05-01
T3,,Dan,Fox,2021-05-01
"""
TENANCY_TABLE = """
[sources.housing_tenancies]
path = "extract.csv"
date_format = "%Y-%m-%d"
[sources.housing_tenancies.columns]
record_id = ["TENANCY_REF", "MEMBER_NO"]
forename = "FIRST"
surname = "LAST"
start_date = "START"
"""


def test_a_composite_record_key_joins_its_columns(tmp_path: Path) -> None:
    accepted, _, report = _ingest(tmp_path, TENANCY, TENANCY_TABLE, "housing_tenancies")
    assert accepted.get_column("record_id").to_list() == ["T1|1", "T1|2", "T2|1"]
    assert report.quarantine_reasons == {"record_id:duplicate": 1, "record_id:missing": 1}
    assert report.rows_in == 5 and report.reconciles


def test_only_text_fields_can_be_composite(tmp_path: Path) -> None:
    table = TENANCY_TABLE.replace('start_date = "START"', 'start_date = ["START", "LAST"]')
    with pytest.raises(ContractError, match="composite_field"):
        _ingest(tmp_path, TENANCY, table, "housing_tenancies")
    bad = TENANCY_TABLE.replace('["TENANCY_REF", "MEMBER_NO"]', '["TENANCY_REF"]')
    with pytest.raises(ConfigError, match="two or more column names"):
        read_settings(_config(tmp_path, bad))
    absent = TENANCY_TABLE.replace('"MEMBER_NO"]', '"MEMBER"]')
    with pytest.raises(ContractError, match=r"MEMBER.*missing_column"):
        _ingest(tmp_path, TENANCY, absent, "housing_tenancies")


COUNCIL_TAX = """ACCOUNT,P1_FORENAME,P1_SURNAME,P1_DOB,P2_FORENAME,P2_SURNAME,P2_DOB,POSTCODE,BAND,START
A1,Ann,Lee,01/02/1970,Bob,Lee,03/04/1968,LS1 4AB,C,01/01/2020
A2,Cat,Ray,05/06/1980,,,,LS2 7DB,B,01/06/2021
A3,,,,Eve,Fox,,LS3 1EP,D,01/07/2022

A4,Gus,,09/09/1990,Hal,Kay,10/10/1991,LS4 2GJ,A,01/08/2022
"""
GROUP_TABLE = """
[sources.council_tax]
path = "extract.csv"
date_format = "%d/%m/%Y"
person_groups = ["1", "2"]
[sources.council_tax.columns]
record_id = "ACCOUNT"
forename = "P{group}_FORENAME"
surname = "P{group}_SURNAME"
dob = "P{group}_DOB"
postcode = "POSTCODE"
band = "BAND"
start_date = "START"
"""


def test_person_groups_give_one_record_per_person(tmp_path: Path) -> None:
    accepted, quarantined, report = _ingest(tmp_path, COUNCIL_TAX, GROUP_TABLE, "council_tax")
    assert accepted.select("record_id", "forename", "surname", "postcode", "band").rows() == [
        ("A1|1", "ANN", "LEE", "LS1 4AB", "C"),
        ("A1|2", "BOB", "LEE", "LS1 4AB", "C"),
        ("A2|1", "CAT", "RAY", "LS2 7DB", "B"),
        ("A3|2", "EVE", "FOX", "LS3 1EP", "D"),
        ("A4|2", "HAL", "KAY", "LS4 2GJ", "A"),
    ]
    # Never the first party's forename with the second party's surname.
    assert accepted.get_column("dob").to_list()[:2] == [date(1970, 2, 1), date(1968, 4, 3)]
    assert (report.file_rows, report.groups_empty, report.blank_lines) == (4, 2, 1)
    assert report.rows_in == 6 and report.reconciles
    assert report.quarantine_reasons == {"surname:missing": 1}
    assert quarantined.get_column("_group").to_list() == ["1"]


def test_person_group_settings_are_checked(tmp_path: Path) -> None:
    no_groups = GROUP_TABLE.replace('person_groups = ["1", "2"]\n', "")
    with pytest.raises(ConfigError, match="has no person_groups"):
        read_settings(_config(tmp_path, no_groups))
    unused = GROUP_TABLE.replace("{group}", "1")
    with pytest.raises(ConfigError, match="no column name holds"):
        read_settings(_config(tmp_path, unused))
    three = GROUP_TABLE.replace('["1", "2"]', '["1", "2", "3"]')
    with pytest.raises(ContractError, match=r"P3_FORENAME.*missing_column"):
        _ingest(tmp_path, COUNCIL_TAX, three, "council_tax")


HOSPITAL = """ID,SURNAME,DOB,START,TYPE
1,Lee,1970-02-01,2025-01-01,A&E attendance
2,Lee,1970-02-01,2025-01-02,Type 1 ED
3,Lee,1970-02-01,2025-01-03,Emergency admission
4,Lee,1970-02-01,2025-01-04,Maternity
5,Lee,1970-02-01,2025-01-05,maternity
6,Lee,1970-02-01,2025-01-06,AE
7,Lee,1970-02-01,2025-01-07,Not recorded
"""
HOSPITAL_TABLE = """
[sources.hospital_activity]
path = "extract.csv"
date_format = "%Y-%m-%d"
[sources.hospital_activity.columns]
record_id = "ID"
surname = "SURNAME"
dob = "DOB"
start_date = "START"
activity_type = "TYPE"
[sources.hospital_activity.recode.activity_type]
"A&E attendance" = "AE"
"type 1 ed" = "AE"
"Emergency admission" = "EMERGENCY_ADMISSION"
"Not recorded" = ""
"""


def test_local_codes_are_recoded_and_the_rest_counted(tmp_path: Path) -> None:
    accepted, _, report = _ingest(tmp_path, HOSPITAL, HOSPITAL_TABLE, "hospital_activity")
    assert accepted.get_column("activity_type").to_list() == [
        "AE", "AE", "EMERGENCY_ADMISSION", None, None, "AE", None,
    ]  # fmt: skip
    # Codes left unrecoded are counted per code; "" marks a known code with no value.
    assert report.values_unrecoded == {"activity_type": {"Maternity": 1, "maternity": 1}}
    assert report.values_nulled == {"activity_type:not_in_allowed_values": 2}


def test_recodes_must_name_contract_values(tmp_path: Path) -> None:
    bad = HOSPITAL_TABLE.replace('= "EMERGENCY_ADMISSION"', '= "ADMITTED"')
    with pytest.raises(ContractError, match="recode_value"):
        _ingest(tmp_path, HOSPITAL, bad, "hospital_activity")
    text_field = HOSPITAL_TABLE + '[sources.hospital_activity.recode.surname]\n"x" = "y"\n'
    with pytest.raises(ContractError, match="recode_field"):
        _ingest(tmp_path, HOSPITAL, text_field, "hospital_activity")


def test_free_text_in_a_coded_field_is_summarised_not_listed(tmp_path: Path) -> None:
    rows = "".join(f"{i},Lee,1970-02-01,2025-01-01,Visitor number {i}\n" for i in range(60))
    _, _, report = _ingest(
        tmp_path, "ID,SURNAME,DOB,START,TYPE\n" + rows, HOSPITAL_TABLE, "hospital_activity"
    )
    assert report.values_unrecoded == {"activity_type": {"(60 distinct values, not listed)": 60}}


def test_imd_deciles_from_ranks(tmp_path: Path) -> None:
    csv = "LSOA21CD,IMD_RANK\nE01000001,1\nE01000002,3376\nE01000003,33755\nE01000004,0\n"
    table = """
[sources.x]
path = "x.csv"
[reference.deprivation]
path = "extract.csv"
[reference.deprivation.columns]
lsoa = "LSOA21CD"
imd_decile = { column = "IMD_RANK", from_rank = 33755 }
"""
    (tmp_path / "extract.csv").write_text(csv)
    text = table.replace("[sources.x]\npath", "[sources.x]\ncolumns = { record_id = 'a' }\npath")
    settings = read_settings(_config(tmp_path, text))
    source = settings.reference["deprivation"]
    accepted, quarantined, _ = ingest_extract(source, find_contract(SCHEMAS, "deprivation"), REF)
    assert accepted.get_column("imd_decile").to_list() == [1, 2, 10]
    assert quarantined.height == 1


def test_typed_config_errors_name_the_setting_not_a_traceback(tmp_path: Path) -> None:
    table = TENANCY_TABLE + '[linkage]\nmatch_threshold = "0.95"\n'
    with pytest.raises(
        ConfigError, match=r"\[linkage\] match_threshold must be a number between 0 and 1"
    ):
        read_settings(_config(tmp_path, table))
    with pytest.raises(ConfigError, match="required must be true or false"):
        read_settings(
            _config(tmp_path, TENANCY_TABLE.replace('path = "', 'required = "yes"\npath = "'))
        )


GP_TEXT = "ID\tSURNAME\tDOB\tSTART\n1\tZoë Brontë\t1970-02-01\t2025-01-01\n2\tO’Brien\t1971-02-01\t2025-01-01\n"
GP_TABLE = """
[sources.gp_registrations]
path = "extract.csv"
delimiter = "\\t"
encoding = "auto"
date_format = "%Y-%m-%d"
[sources.gp_registrations.columns]
record_id = "ID"
surname = "SURNAME"
dob = "DOB"
start_date = "START"
"""


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        ("utf-8", "utf8"),
        ("utf-8-sig", "utf-8"),
        ("utf-16", "utf-16"),  # Excel's "Unicode text": UTF-16 with a byte-order mark
        ("cp1252", "cp1252"),
    ],
)
def test_encodings_are_detected(tmp_path: Path, codec: str, expected: str) -> None:
    from uprnlink.ingest.mapping import propose_mapping
    from uprnlink.ingest.readers import detect_encoding

    data = GP_TEXT.encode(codec)
    assert detect_encoding(data) == expected
    (tmp_path / "extract.csv").write_bytes(data)
    source = read_settings(_config(tmp_path, GP_TABLE)).sources["gp_registrations"]
    accepted, _, _ = ingest_extract(source, find_contract(SCHEMAS, "gp_registrations"), REF)
    assert accepted.get_column("surname").to_list() == ["ZOE BRONTE", "OBRIEN"]
    proposal = propose_mapping(
        tmp_path / "extract.csv", find_contract(SCHEMAS, "gp_registrations"), today=REF
    )
    assert (proposal.encoding, proposal.delimiter) == (
        "utf8" if expected == "utf-8" else expected,
        "\t",
    )
    assert {c.field: c.column for c in proposal.columns}["surname"] == "SURNAME"


# ------------------------------------------------------------------ uprnlink map


def _write_rows(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _names(i: int) -> tuple[str, str]:
    forenames = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon"]
    surnames = ["Lee", "Ray", "Fox", "Kay", "Day", "Roe", "Poe"]
    return forenames[i % 10], surnames[(i * 7) % 7 if i % 3 else i % 7]


def test_map_proposes_person_groups_and_never_mixes_two_people(tmp_path: Path) -> None:
    from uprnlink.ingest.mapping import propose_mapping

    rows = []
    for i in range(200):
        (f1, s1), (f2, s2) = _names(i), _names(i + 3)
        second = f"MRS,{f2},{s2},1{i % 3}/0{i % 9 + 1}/1975" if i % 2 else ",,,"
        rows.append(
            f"A{i:05d},MR,{f1},{s1},0{i % 9 + 1}/0{i % 9 + 1}/1970,{second},{i} HIGH ST,"
            f"LS1 4AB,B,01/01/2020"
        )
    header = (
        "ACCOUNT_REF,P1_TITLE,P1_FORENAME,P1_SURNAME,P1_DOB,P2_TITLE,P2_FORENAME,P2_SURNAME,"
        "P2_DOB,ADDRESS_1,POSTCODE,BAND,LIAB_START"
    )
    path = _write_rows(tmp_path / "ctax.csv", header, rows)
    proposal = propose_mapping(path, find_contract(SCHEMAS, "council_tax"), today=REF)
    mapped = {c.field: c.column for c in proposal.columns}
    assert proposal.person_groups == ("1", "2")
    assert mapped["forename"] == "P{group}_FORENAME"
    assert mapped["surname"] == "P{group}_SURNAME"
    assert mapped["dob"] == "P{group}_DOB"
    assert mapped["record_id"] == "ACCOUNT_REF"
    # The proposal runs through the ingest as it is: 300 people from 200 rows.
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nlanding_dir = "."\nwork_dir = "w"\nout_dir = "o"\n'
        'reference_date = "2026-03-31"\n' + proposal.to_toml(tmp_path)
    )
    source = read_settings(config).sources["council_tax"]
    _, _, report = ingest_extract(source, find_contract(SCHEMAS, "council_tax"), REF)
    assert (report.file_rows, report.rows_accepted, report.groups_empty) == (200, 300, 100)


def test_map_proposes_a_composite_key_or_warns_with_the_share_distinct(tmp_path: Path) -> None:
    from uprnlink.ingest.mapping import propose_mapping

    rows = [
        f"T{i:04d},{m},{_names(i + m)[0]},{_names(i)[1]},1980-01-0{m},2020-01-01"
        for i in range(150)
        for m in range(1, 2 + i % 3)
    ]
    header = "TENANCY_REF,MEMBER_NO,FORENAME,SURNAME,DOB,START_DATE"
    tenancy = find_contract(SCHEMAS, "housing_tenancies")
    proposal = propose_mapping(_write_rows(tmp_path / "t.csv", header, rows), tenancy)
    key = next(c for c in proposal.columns if c.field == "record_id")
    assert key.parts == ("TENANCY_REF", "MEMBER_NO")
    assert 'record_id = ["TENANCY_REF", "MEMBER_NO"]' in proposal.to_toml()
    assert not proposal.warnings
    # With no unique column or pair: a warning with the share distinct, never silence.
    header = "CLAIM_ID,FORENAME,SURNAME,DOB,START_DATE"
    rows = [
        f"C{i // 2:04d},{_names(i)[0]},{_names(i)[1]},1980-01-01,2020-01-01" for i in range(100)
    ]
    benefits = find_contract(SCHEMAS, "benefits_claims")
    proposal = propose_mapping(_write_rows(tmp_path / "b.csv", header, rows), benefits)
    assert proposal.warnings and "50.0% distinct" in proposal.warnings[0]
    assert "# WARNING: record_id" in proposal.to_toml()


def test_map_lists_codes_with_proposed_recodes_and_no_personal_data(tmp_path: Path) -> None:
    from uprnlink.ingest.mapping import propose_mapping

    codes = ["A&E attendance", "Type 1 ED", "Emergency admission", "Maternity"]
    rows = [f"H{i},{_names(i)[1]},1970-01-01,2025-01-01,{codes[i % 4]}" for i in range(200)]
    path = _write_rows(
        tmp_path / "h.csv", "ActivityRef,Surname,DOB,ActivityDate,ActivityType", rows
    )
    text = propose_mapping(path, find_contract(SCHEMAS, "hospital_activity"), today=REF).to_toml()
    assert "[sources.hospital_activity.recode.activity_type]" in text
    assert '"A&E attendance" = "AE"' in text and '"Type 1 ED" = "AE"' in text
    assert '"Emergency admission" = "EMERGENCY_ADMISSION"' in text
    assert '# "Maternity" = ""' in text
    # A coded field mapped to a column of names is not listed.
    rows = [f"H{i},x,1970-01-01,2025-01-01,{_names(i)[0]}{i}" for i in range(200)]
    path = _write_rows(
        tmp_path / "n.csv", "ActivityRef,Surname,DOB,ActivityDate,ActivityType", rows
    )
    text = propose_mapping(path, find_contract(SCHEMAS, "hospital_activity"), today=REF).to_toml()
    assert "not a short code list" in text and "Ann0" not in text


def test_map_recognises_ons_geography_and_imd_ranks(tmp_path: Path) -> None:
    from uprnlink.ingest.mapping import propose_mapping

    rows = [
        f"{100000 + i},LS1 4AB,E00{i:06d},E01{i % 50:06d},E02{i % 10:06d},E05{i % 5:06d},E08000035"
        for i in range(100)
    ]
    header = "UPRN,PCDS,OA21CD,LSOA21CD,MSOA21CD,WD24CD,LAD24CD"
    lookup = find_contract(SCHEMAS, "uprn_lookup")
    proposal = propose_mapping(_write_rows(tmp_path / "u.csv", header, rows), lookup)
    assert {c.field: c.column for c in proposal.columns} == {
        "uprn": "UPRN", "postcode": "PCDS", "oa": "OA21CD", "lsoa": "LSOA21CD",
        "msoa": "MSOA21CD", "ward": "WD24CD", "lad": "LAD24CD",
    }  # fmt: skip
    # By the codes alone, under names no alias knows.
    header = "UPRN,GEOG_A,GEOG_B"
    rows = [f"{100000 + i},E01{i % 50:06d},E05{i % 5:06d}" for i in range(100)]
    proposal = propose_mapping(_write_rows(tmp_path / "v.csv", header, rows), lookup)
    assert {c.field: c.column for c in proposal.columns} == {
        "uprn": "UPRN", "lsoa": "GEOG_A", "ward": "GEOG_B",
    }  # fmt: skip
    header = "LSOA code (2021),Income Rank,Index of Multiple Deprivation (IMD) Rank"
    rows = [f"E01{i:06d},{i + 5},{33_000 + i}" for i in range(100)]
    imd = find_contract(SCHEMAS, "deprivation")
    proposal = propose_mapping(_write_rows(tmp_path / "d.csv", header, rows), imd)
    decile = next(c for c in proposal.columns if c.field == "imd_decile")
    assert (decile.column, decile.from_rank) == ("Index of Multiple Deprivation (IMD) Rank", 33_755)


# ------------------------------------------------------------------ uprnlink check


def test_check_passes_a_good_config_and_names_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uprnlink import cli

    (tmp_path / "extract.csv").write_text(COUNCIL_TAX)
    config = _config(tmp_path, GROUP_TABLE)
    assert cli.main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 row(s) sampled, 6 person record(s) in 2 groups" in out
    assert "ready to run" in out
    for name in ("Ann", "LEE", "LS1 4AB", "1970"):  # no data value is printed
        assert name not in out

    # A renamed column: exit 3, naming file, column and rule.
    config = _config(tmp_path, GROUP_TABLE.replace('"POSTCODE"', '"POST_CODE"'))
    assert cli.main(["check", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "column=POST_CODE" in err and "rule=missing_column" in err and "extract.csv" in err
    assert "Traceback" not in err

    # A pasted config with a wrong type: exit 2, one line.
    config = _config(tmp_path, GROUP_TABLE + '[linkage]\nthreads = "2"\n')
    assert cli.main(["check", "--config", str(config)]) == 2
    assert "[linkage] threads must be a whole number >= 1" in capsys.readouterr().err

    # Codes not recoded are warnings, a recode onto no contract value an error.
    (tmp_path / "extract.csv").write_text(HOSPITAL)
    config = _config(tmp_path, HOSPITAL_TABLE)
    assert cli.main(["check", "--config", str(config)]) == 0
    assert 'activity_type: code(s) neither contract values nor recoded: "Maternity" (1)' in (
        capsys.readouterr().out
    )
    config = _config(tmp_path, HOSPITAL_TABLE.replace('= "AE"', '= "A_AND_E"', 1))
    assert cli.main(["check", "--config", str(config)]) == 3
    assert "rule=recode_value" in capsys.readouterr().err
