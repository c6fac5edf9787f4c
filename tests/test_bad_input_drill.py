"""The bad-input drill: a real extract with every row-level defect from docs/bad-input.md mixed
in goes through the whole pipeline; counts reconcile, every defect is accounted for by its
reason, nothing is lost, and no planted value appears in the logs, summaries or outputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import no_baselines
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.validate import ingest_extract
from uprnlink.run import runner
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow

MARK = "ZQXDRILL"  # a surname no generator would produce: any leak of the planted rows shows it


def planted_rows(header: list[str], template: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(expected outcome, row) for each defect, built from one good row of the extract."""

    def row(n: int, **changes: str) -> list[str]:
        values = {**template, "PATIENT_ID": f"DRILL{n:03d}", "SURNAME": f"{MARK}{n}", **changes}
        return [values[h] for h in header]

    return [
        ("quarantined", row(1, DATE_OF_BIRTH="20200231")),  # impossible date
        ("quarantined", row(2, DATE_OF_BIRTH="20990101")),  # future date of birth
        ("quarantined", row(3, DATE_OF_BIRTH="01/02/1980")),  # another format than configured
        ("quarantined", row(4, SURNAME="")),  # required field blank
        ("quarantined", row(5, SURNAME="   ")),  # whitespace only
        ("nulled", row(6, FORENAME="A\x00NN")),  # NUL byte in an optional field
        ("quarantined", row(7, PATIENT_ID="DRILL001")),  # duplicate record id
        ("nulled", row(8, UPRN="1.00023E+11")),  # spreadsheet notation that lost digits
        ("nulled", row(9, UPRN="-100023336956")),
        ("nulled", row(10, UPRN="0")),
        ("nulled", row(11, UPRN="1000233369561234")),  # more than 12 digits
        ("nulled", row(12, UPRN="UNKNOWN")),
        ("accepted", row(13, UPRN="000100023336956")),  # leading zeros
        ("accepted", row(14, UPRN=" 100023336956 ")),
        ("nulled", row(15, NHS_NUMBER="9434765918")),  # bad check digit
        ("nulled", row(16, NHS_NUMBER="12345")),
        ("nulled", row(17, NHS_NUMBER="9999999999")),  # dummy
        ("accepted", row(18, ADDRESS_LINE_1='FLAT 2\nTHE "OLD" MILL, 4 HIGH ST')),
        ("nulled", row(19, ADDRESS_LINE_1="X" * 1_048_576)),  # a 1 MB field
    ]


def test_a_messy_extract_loses_nothing_end_to_end(demo_tree: Path, tmp_path: Path) -> None:
    config = no_baselines(demo_tree)
    settings = read_settings(config)
    gp = settings.sources["gp_registrations"].path
    with gp.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        original = list(reader)
    planted = planted_rows(header, dict(zip(header, original[0], strict=True)))
    # The synthetic extract has its own realistic errors: measure them first.
    source = settings.sources["gp_registrations"]
    contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
    _, _, baseline = ingest_extract(source, contract, settings.reference_date)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # CRLF, as Windows exports write
    writer.writerow(header)
    writer.writerows(original)
    writer.writerow(original[5])  # an exact duplicate row
    writer.writerows(r for _, r in planted)
    writer.writerow([*original[6], "SPARE", "VALUES"])  # more fields than the header
    truncated = ",".join(original[7][:4])  # the last line cut short mid-row
    gp.write_bytes((buffer.getvalue() + "\r\n" + truncated).encode("utf-8"))

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            summary = runner.run_all(str(config), run_id="drill")
    finally:
        logging.getLogger().removeHandler(handler)

    report = next(r for r in summary.ingest if r["source"] == "gp_registrations")
    sent = len(original) + 1 + len(planted) + 1 + 1
    assert report["rows_in"] == sent
    assert report["rows_in"] == report["rows_accepted"] + report["rows_quarantined"]
    planted_quarantine = sum(1 for o, _ in planted if o == "quarantined")
    # + the exact duplicate, the over-long row and the truncated last line
    assert report["rows_quarantined"] == baseline.rows_quarantined + planted_quarantine + 3
    reasons, before = report["quarantine_reasons"], baseline.quarantine_reasons
    for rule in (
        "dob:invalid_dob",
        "dob:future_date",
        "surname:missing",
        "record_id:duplicate",
        "row:duplicate",
        "row:extra_fields",
        "row:missing_fields",
    ):
        assert reasons.get(rule, 0) > before.get(rule, 0), rule
    nulled, was = report["values_nulled"], baseline.values_nulled
    for rule, planted_count in (
        ("uprn:invalid_uprn", 5),
        ("nhs_number:invalid_nhs_number", 3),
        ("address_line_1:too_long", 1),
        ("forename:control_character", 1),
    ):
        assert nulled.get(rule, 0) - was.get(rule, 0) == planted_count, rule

    # Every row is either in the trusted zone or in quarantine: none lost.
    z = Zones(settings)
    trusted = pl.read_parquet(z.records("gp_registrations")).height
    quarantined = pl.read_parquet(z.quarantine("gp_registrations")).height
    assert trusted + quarantined == sent

    # The planted values appear nowhere an analyst, a scheduler or a log reader would look.
    texts = [stream.getvalue(), json.dumps(summary.to_dict(), default=str)]
    texts += [p.read_text() for p in (settings.out_dir / "runs").glob("*.json")]
    run_logs = list((settings.out_dir / "runs").glob("*.log"))
    assert run_logs, "each run keeps its log beside its summary"
    texts += [p.read_text() for p in run_logs]
    texts.append((settings.out_dir / "audit" / "audit.jsonl").read_text())
    for text in texts:
        assert MARK not in text and "20200231" not in text
    con = duckdb.connect(str(settings.database_path), read_only=True)
    try:
        for (view,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall():
            table = con.sql(f"SELECT * FROM {view}").to_arrow_table()
            dump = pl.from_arrow(table).write_csv()  # type: ignore[union-attr]
            assert MARK not in dump
    finally:
        con.close()
    (tmp_path / "drill.json").write_text(json.dumps(report, indent=2))
