"""Ingest: column mapping, validation, quarantine with reasons, and reconciliation."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from uprnlink.errors import ContractError
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.readers import read_extract
from uprnlink.ingest.validate import ingest_extract, validate_extract
from uprnlink.settings import PROJECT_ROOT, ColumnMapping, SourceSettings

SCHEMAS = PROJECT_ROOT / "schemas"
REF = date(2026, 3, 31)
GP_COLUMNS = {
    "record_id": "PATIENT_ID",
    "nhs_number": "NHS_NUMBER",
    "forename": "FORENAME",
    "surname": "SURNAME",
    "dob": "DATE_OF_BIRTH",
    "sex": "SEX",
    "postcode": "POSTCODE",
    "uprn": "UPRN",
    "start_date": "REGISTRATION_DATE",
}
HEADER = "PATIENT_ID,NHS_NUMBER,FORENAME,SURNAME,DATE_OF_BIRTH,SEX,POSTCODE,UPRN,REGISTRATION_DATE,EXTRA\n"


def gp_source(path: Path, **overrides: object) -> SourceSettings:
    cols = {k: ColumnMapping(v) for k, v in GP_COLUMNS.items()}
    kwargs: dict[str, object] = dict(
        name="gp_registrations",
        contract="gp_registrations",
        contract_version=1,
        path=path,
        format="csv",
        delimiter=",",
        encoding="utf8",
        date_formats=("%Y%m%d",),
        columns=cols,
    )
    kwargs.update(overrides)
    return SourceSettings(**kwargs)  # type: ignore[arg-type]


def write(tmp_path: Path, body: str, name: str = "gp.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(body.encode(encoding))
    return p


def test_rows_reconcile_and_reasons_name_field_and_rule(tmp_path: Path) -> None:
    body = HEADER + (
        "P1,943 476 5919,John,Smith,19800102,M,ls1 4ab,100023336956,20100101,x\n"
        ",9434765919,Ann,Jones,19800102,F,LS1 4AB,1,20100101,x\n"  # no record id
        "P3,9434765919,Ann,,19800102,F,LS1 4AB,1,20100101,x\n"  # no surname
        "P4,9434765919,Ann,Jones,19800231,F,LS1 4AB,1,20100101,x\n"  # impossible dob
        "P5,9434765918,Ann,Jones,19800102,F,NOT A PC,1.00023E+11,20100101,x\n"  # bad optionals
        "P1,9434765919,Ann,Jones,19800102,F,LS1 4AB,2,20100101,x\n"  # duplicate id
        "P7,,Bob,Brown,20300101,M,LS1 4AB,3,20100101,x\n"  # future dob
    )
    src = gp_source(write(tmp_path, body))
    contract = find_contract(SCHEMAS, "gp_registrations", 1)
    accepted, quarantined, report = ingest_extract(src, contract, REF)
    assert report.rows_in == 7
    assert report.rows_accepted + report.rows_quarantined == report.rows_in
    assert accepted.height == 2 and quarantined.height == 5
    reasons = dict(
        zip(quarantined["_row"].to_list(), quarantined["_reasons"].to_list(), strict=True)
    )
    assert reasons[2] == "record_id:missing"
    assert reasons[3] == "surname:missing"
    assert reasons[4] == "dob:invalid_dob"
    assert reasons[6] == "record_id:duplicate"
    assert reasons[7] == "dob:future_date"
    # The bad optional values cost nothing but the value, and are counted.
    row5 = accepted.filter(pl.col("record_id") == "P5").row(0, named=True)
    assert row5["postcode"] is None and row5["uprn"] is None and row5["nhs_number"] is None
    assert report.values_nulled == {
        "nhs_number:invalid_nhs_number": 1,
        "postcode:invalid_postcode": 1,
        "uprn:invalid_uprn": 1,
    }
    row1 = accepted.filter(pl.col("record_id") == "P1").row(0, named=True)
    assert row1["postcode"] == "LS1 4AB" and row1["uprn"] == 100023336956
    assert row1["nhs_number"] == "9434765919" and row1["forename"] == "JOHN"
    assert row1["dob"] == date(1980, 1, 2)
    assert report.columns_ignored == ["EXTRA"]
    assert "end_date" in report.fields_not_supplied


def test_reasons_never_contain_values(tmp_path: Path) -> None:
    body = HEADER + "P1,9434765919,Zebedee,,19800231,M,LS1 4AB,1,20100101,x\n"
    src = gp_source(write(tmp_path, body))
    _, quarantined, report = ingest_extract(src, find_contract(SCHEMAS, "gp_registrations"), REF)
    text = str(report.to_dict()) + " ".join(quarantined["_reasons"].to_list())
    assert "Zebedee" not in text and "19800231" not in text


def test_missing_mapping_for_required_field_is_a_clear_error(tmp_path: Path) -> None:
    cols = {k: ColumnMapping(v) for k, v in GP_COLUMNS.items() if k != "surname"}
    src = gp_source(write(tmp_path, HEADER + "P1,,A,B,19800101,M,,,20100101,x\n"), columns=cols)
    with pytest.raises(ContractError, match=r"required field .surname.*mapping_missing"):
        ingest_extract(src, find_contract(SCHEMAS, "gp_registrations"), REF)


def test_mapped_column_absent_from_file_names_file_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path, HEADER.replace("SURNAME", "FAMILY_NAME") + "P1,,A,B,19800101,M,,,20100101,x\n"
    )
    with pytest.raises(ContractError) as err:
        ingest_extract(gp_source(path), find_contract(SCHEMAS, "gp_registrations"), REF)
    msg = str(err.value)
    assert "gp.csv" in msg and "column=SURNAME" in msg and "rule=missing_column" in msg


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="empty"):
        read_extract(gp_source(write(tmp_path, "")))


def test_latin1_and_bom_are_read(tmp_path: Path) -> None:
    row = "P1,,Zoë,O'Brien,19800101,F,,,20100101,x\n"
    latin = write(tmp_path, HEADER + row, "latin.csv", "latin-1")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + row).encode())
    contract = find_contract(SCHEMAS, "gp_registrations")
    a1, _, _ = ingest_extract(gp_source(latin, encoding="latin-1"), contract, REF)
    a2, _, _ = ingest_extract(gp_source(bom), contract, REF)
    assert a1["forename"].to_list() == ["ZOE"] == a2["forename"].to_list()
    assert a1["surname"].to_list() == ["OBRIEN"]
    with pytest.raises(ContractError, match="encoding"):
        ingest_extract(gp_source(latin), contract, REF)


def test_validate_in_memory_frame_with_native_dates() -> None:
    raw = pl.DataFrame(
        {
            "PATIENT_ID": ["A", "B"],
            "FORENAME": ["x", "y"],
            "SURNAME": ["s", "t"],
            "DATE_OF_BIRTH": [date(1990, 1, 1), None],
            "REGISTRATION_DATE": [date(2020, 1, 1), date(2020, 1, 1)],
            "NHS_NUMBER": [None, None],
            "SEX": ["1", "2"],
            "POSTCODE": [None, None],
            "UPRN": [None, None],
        }
    )
    src = gp_source(Path("mem.parquet"), format="parquet", date_formats=())
    accepted, quarantined, report = validate_extract(
        raw, src, find_contract(SCHEMAS, "gp_registrations"), REF
    )
    assert accepted["dob"].to_list() == [date(1990, 1, 1)]
    assert accepted["sex"].to_list() == ["M"]
    assert quarantined["_reasons"].to_list() == ["dob:missing"]
    assert report.reconciles


def test_timestamps_in_date_fields_keep_their_date() -> None:
    from uprnlink.ingest.standardise import date_expr

    df = pl.DataFrame(
        {"d": ["1980-01-02 00:00:00", "1980-01-02T13:45:00.000Z", "02/01/1980 1:05 PM", "x"]}
    )
    out = df.select(date_expr("d", ["%Y-%m-%d", "%d/%m/%Y"]))["d"].to_list()
    assert out == [date(1980, 1, 2)] * 3 + [None]


def test_headers_differing_in_case_or_spaces_are_matched(tmp_path: Path) -> None:
    header = HEADER.replace("SURNAME", " surname ").replace("PATIENT_ID", "Patient_Id")
    path = write(tmp_path, header + "P1,,Ann,Jones,19800102,F,,,20100101,x\n")
    accepted, _, report = ingest_extract(
        gp_source(path), find_contract(SCHEMAS, "gp_registrations"), REF
    )
    assert accepted["surname"].to_list() == ["JONES"]
    assert report.columns_ignored == ["EXTRA"]


def test_mixed_date_formats_from_a_list(tmp_path: Path) -> None:
    body = HEADER + "P1,,Ann,Jones,1980-01-02,F,,,02/01/2010,x\nP2,,Bo,Li,19800102,M,,,20100101,x\n"
    src = gp_source(write(tmp_path, body), date_formats=("%Y%m%d", "%Y-%m-%d", "%d/%m/%Y"))
    accepted, quarantined, _ = ingest_extract(src, find_contract(SCHEMAS, "gp_registrations"), REF)
    assert quarantined.height == 0
    assert accepted["dob"].to_list() == [date(1980, 1, 2)] * 2
    assert accepted["start_date"].to_list() == [date(2010, 1, 2), date(2010, 1, 1)]


def test_ingest_has_no_python_udfs() -> None:
    import inspect

    from uprnlink.ingest import readers, standardise, validate

    for module in (readers, validate, standardise):
        source = inspect.getsource(module)
        assert "map_elements" not in source and "map_batches" not in source, module.__name__


def test_file_checksum_follows_every_rewrite(tmp_path: Path) -> None:
    import hashlib
    import os

    from uprnlink.ingest.readers import file_checksum

    path = tmp_path / "extract.csv"
    path.write_bytes(b"a,b\n1,2\n")
    first = file_checksum(path)
    assert first == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert file_checksum(path) == first  # the same version: read once, same answer
    stat = path.stat()
    path.write_bytes(b"a,b\n1,3\n")  # same size, new bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_checksum(path) == hashlib.sha256(b"a,b\n1,3\n").hexdigest()


def test_typed_parquet_columns_are_read(tmp_path: Path) -> None:
    """A Parquet extract from a typed system: integer ids and NHS numbers (a leading zero
    lost), Date and Datetime columns, UPRNs as floats, sex as NHS codes 1/2/0/9."""
    from datetime import datetime

    frame = pl.DataFrame(
        {
            "PATIENT_ID": [1, 2, 3],
            "NHS_NUMBER": [9434765919, 101012349, None],
            "FORENAME": ["Ann", "Bob", "Cy"],
            "SURNAME": ["Lee", "Khan", "Ng"],
            "DATE_OF_BIRTH": [date(1980, 1, 2), date(1990, 5, 6), date(2001, 7, 8)],
            "SEX": [2, 1, 9],
            "POSTCODE": ["LS1 4AB", "ls6 2qd", "BD7 1DP"],
            "UPRN": [100023336956.0, 1.0, None],
            "REGISTRATION_DATE": [datetime(2010, 1, 1, 12, 30)] * 3,
        }
    )
    path = tmp_path / "gp.parquet"
    frame.write_parquet(path)
    src = gp_source(path, format="parquet", date_formats=())
    accepted, quarantined, report = ingest_extract(
        src, find_contract(SCHEMAS, "gp_registrations"), REF
    )
    assert (report.rows_in, report.rows_accepted, quarantined.height) == (3, 3, 0)
    assert accepted.get_column("record_id").to_list() == ["1", "2", "3"]
    assert accepted.get_column("nhs_number").to_list() == ["9434765919", "0101012349", None]
    assert accepted.get_column("dob").to_list() == [
        date(1980, 1, 2),
        date(1990, 5, 6),
        date(2001, 7, 8),
    ]
    assert accepted.get_column("sex").to_list() == ["F", "M", None]
    assert accepted.get_column("uprn").to_list() == [100023336956, 1, None]
    assert accepted.get_column("start_date").to_list() == [date(2010, 1, 1)] * 3


def test_extracts_are_ingested_two_at_a_time_largest_first_and_reported_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from uprnlink.run import runner

    monkeypatch.setattr(runner, "INGEST_WORKERS", 2)
    both_running = threading.Barrier(2, timeout=30)
    started: list[str] = []
    lock = threading.Lock()

    def ingest(name: str) -> dict[str, object]:
        with lock:
            started.append(name)
        if name in ("big", "bigger"):
            both_running.wait()  # raises BrokenBarrierError unless the two run at once
        return {"source": name, "rows_in": 1}

    sizes = {"small": 10, "big": 1_000, "bigger": 2_000, "middling": 100}
    reports = runner.ingest_in_order(list(sizes), ingest, sizes)  # type: ignore[arg-type]
    assert [r["source"] for r in reports] == list(sizes)
    assert started[:2] == ["bigger", "big"] and sorted(started) == sorted(sizes)


def test_a_failing_extract_is_raised_and_no_later_one_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uprnlink.run import runner

    started: list[str] = []

    def ingest(name: str) -> dict[str, object]:
        started.append(name)
        if name == "b":
            raise ContractError("bad extract", file="b.csv", rule="test")
        return {"source": name, "rows_in": 1}

    with pytest.raises(ContractError, match="bad extract"):
        runner.ingest_in_order(["a", "b", "c", "d"], ingest, workers=1)  # type: ignore[arg-type]
    assert started == ["a", "b"]


def test_estimated_rows_reads_little_and_is_close(tmp_path: Path) -> None:
    from uprnlink.ingest.readers import estimated_rows

    lines = [HEADER] + [
        f"P{i:06d},,FORENAME{i % 7},SURNAME,1980-01-01,F,AB1 2CD,{100000 + i},2020-01-01,\n"
        for i in range(20_000)
    ]
    csv = tmp_path / "gp.csv"
    csv.write_text("".join(lines))
    assert abs(estimated_rows(gp_source(csv)) - 20_001) < 200
    parquet = tmp_path / "gp.parquet"
    pl.DataFrame({"a": range(12_345)}).write_parquet(parquet)
    assert estimated_rows(gp_source(parquet, format="parquet")) == 12_345
    assert estimated_rows(gp_source(tmp_path / "missing.csv")) == 0


def test_the_run_ingests_no_more_extracts_at_once_than_its_threads(
    demo_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uprnlink.run import runner

    seen: dict[str, object] = {}

    def planned(names, ingest, sizes=None, workers=None):  # type: ignore[no-untyped-def]
        seen.update(names=names, sizes=sizes, workers=workers)
        return []

    monkeypatch.setattr(runner, "ingest_in_order", planned)
    text = demo_tree.read_text()
    for threads, workers in ((1, 1), (2, 2), (8, runner.INGEST_WORKERS)):
        demo_tree.write_text(re.sub(r"(?m)^threads\s*=.*$", f"threads = {threads}", text))
        runner.ingest_extracts(str(demo_tree), ["gp_registrations"], "run")
        assert seen["workers"] == workers
    sizes = seen["sizes"]
    assert isinstance(sizes, dict) and min(sizes.values()) > 0  # every extract's rows estimated
