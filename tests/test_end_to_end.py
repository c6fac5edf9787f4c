"""End to end on a small seeded synthetic population: counts, quality, outputs and privacy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.run.evaluation import evaluate_run

pytestmark = pytest.mark.slow


def test_every_row_is_accepted_or_quarantined(small_run: PipelineRun) -> None:
    landing = small_run.settings.landing_dir
    truth = pl.read_parquet(small_run.root / "demo" / "truth" / "records.parquet")
    for report in small_run.summary.ingest:
        assert report["rows_in"] == report["rows_accepted"] + report["rows_quarantined"]
        expected = truth.filter(pl.col("source") == report["source"]).height
        assert report["rows_in"] == expected, report["source"]
        q = pl.read_parquet(small_run.settings.quarantine_dir / f"{report['source']}.parquet")
        assert q.height == report["rows_quarantined"]
        assert q["_reasons"].str.contains(":").all()
    # The deliberately malformed rows in the synthetic extracts were caught.
    assert sum(r["rows_quarantined"] for r in small_run.summary.ingest) > 0
    assert landing.exists()


def test_linkage_quality_on_synthetic_truth(small_run: PipelineRun) -> None:
    result = evaluate_run(small_run.settings, small_run.root / "demo" / "truth")
    p = result["pairwise"]
    assert p["precision"] >= 0.95, p
    assert p["recall"] >= 0.90, p
    assert json.loads((small_run.settings.out_dir / "evaluation.json").read_text())["pairwise"] == p


def test_published_views_answer_household_questions(small_run: PipelineRun) -> None:
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    try:
        n_households, mean_size = con.execute(
            "SELECT count(*), avg(residents) FROM households"
        ).fetchall()[0]
        assert n_households > 300
        assert 1.5 < mean_size < 3.5
        with_area = con.execute(
            "SELECT avg((imd_decile IS NOT NULL)::INT), avg((lsoa IS NOT NULL)::INT) FROM households"
        ).fetchall()[0]
        assert min(with_area) > 0.99
        people_cols = {r[0] for r in con.execute("DESCRIBE people").fetchall()}
        assert {"person_id", "age_band", "household_id"} <= people_cols
        assert not {"dob", "forename", "surname", "nhs_number", "uprn"} & people_cols
        views = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            ).fetchall()
        }
        # The analysts' database holds each view's rows as a table of the view's name.
        assert {"households", "people", "area_summary", "deprivation_summary"} <= views
    finally:
        con.close()


def test_area_summary_suppresses_small_counts(small_run: PipelineRun) -> None:
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT households, residents, people_65_plus_living_alone, emergency_admissions, "
            "ae_attendances FROM area_summary UNION ALL SELECT households, residents, NULL, "
            "emergency_admissions, ae_attendances FROM deprivation_summary"
        ).fetchall()
    finally:
        con.close()
    shown = [v for row in rows for v in row if v is not None]
    assert shown, "expected some published counts"
    assert all(v == 0 or v >= 10 for v in shown)


def _published_values(run: PipelineRun) -> tuple[set[str], str]:
    """Every cell of every published Parquet file and DuckDB view, and all published text."""
    values: set[str] = set()
    texts = []
    for path in sorted(run.settings.linked_dir.glob("*.parquet")):
        df = pl.read_parquet(path).select(pl.all().cast(pl.Utf8))
        for col in df.columns:
            values.update(v for v in df.get_column(col).unique().to_list() if v is not None)
    for path in [
        *run.settings.linked_dir.glob("*.json"),
        *(run.settings.out_dir / "runs").glob("*.json"),
        *(run.settings.out_dir / "audit").glob("*.jsonl"),
    ]:
        texts.append(path.read_text())
    con = duckdb.connect(str(run.settings.database_path), read_only=True)
    try:
        for (view,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall():
            for row in con.execute(f"SELECT * FROM {view}").fetchall():
                values.update(str(v) for v in row if v is not None)
    finally:
        con.close()
    return values, "\n".join([*texts, *values])


def test_no_raw_identifier_or_key_material_is_published(small_run: PipelineRun) -> None:
    truth = small_run.root / "demo" / "truth"
    people = pl.read_parquet(truth / "people.parquet")
    addresses = pl.read_parquet(truth / "addresses.parquet")
    values, text = _published_values(small_run)
    digit_runs = set(re.findall(r"\d{6,}", text))
    nhs = set(people["nhs_number"].cast(pl.Utf8).to_list())
    uprns = {str(u) for u in addresses["uprn"].to_list()}
    assert not digit_runs & nhs
    assert not digit_runs & uprns
    names = {n.upper() for n in people["surname"].to_list() + people["forename"].to_list()}
    upper_values = {v.upper() for v in values}
    assert not upper_values & names, sorted(upper_values & names)[:5]
    # No exact date of birth: the person table has no date column at all, and no published
    # column is a birth date under another name.
    person = pl.read_parquet(small_run.settings.linked_dir / "person.parquet")
    assert not [c for c, t in person.schema.items() if t.is_temporal()]
    for path in small_run.settings.linked_dir.glob("*.parquet"):
        assert not [c for c in pl.read_parquet_schema(path) if "birth" in c or c == "dob"]
    # The key file's ciphertext and salt never appear in outputs.
    doc = json.loads(Path(small_run.settings.key.file).read_text())  # type: ignore[arg-type]
    secrets = [doc["kdf"]["salt"], doc["cipher"]["nonce"], doc["cipher"]["ciphertext"]]
    assert not any(s in text for s in secrets)
    assert doc["key_id"] in text  # the fingerprint, not the key, identifies the key used


def test_outputs_record_key_id_and_contract_versions(small_run: PipelineRun) -> None:
    meta = json.loads((small_run.settings.linked_dir / "run_metadata.json").read_text())
    assert meta["key_id"] == small_run.summary.run.key_id
    assert meta["contracts"]["gp_registrations"] == "gp_registrations@1.0"
    import pyarrow.parquet as pq

    kv = pq.read_metadata(small_run.settings.linked_dir / "person.parquet").metadata
    assert json.loads(kv[b"uprnlink"])["run_id"] == "test-run"


def test_logs_and_printed_output_hold_no_identifiers(small_run: PipelineRun) -> None:
    truth = small_run.root / "demo" / "truth"
    people = pl.read_parquet(truth / "people.parquet")
    addresses = pl.read_parquet(truth / "addresses.parquet")
    run_log = small_run.settings.out_dir / "runs" / "test-run.log"
    assert run_log.is_file(), "each run keeps its log beside its summary"
    logged = run_log.read_text()
    assert "stage 7/7: finish" in logged and "run test-run completed" in logged
    text = small_run.log_text + logged + json.dumps(small_run.summary.to_dict(), default=str)
    assert len(small_run.log_text) > 0, "expected the run to log something"
    digit_runs = set(re.findall(r"\d{6,}", text))
    assert not digit_runs & set(people["nhs_number"].cast(pl.Utf8).to_list())
    assert not digit_runs & {str(u) for u in addresses["uprn"].to_list()}
    words = set(re.findall(r"[A-Z][A-Za-z'-]{3,}", text.upper()))
    surnames = {s.upper() for s in people["surname"].to_list() if len(s) > 5}
    assert not words & surnames, sorted(words & surnames)[:5]
    assert "uprnlink-demo-passphrase" not in text
