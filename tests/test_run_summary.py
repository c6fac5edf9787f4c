"""The run summary as a typed record: read from and written back to the same mapping."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import ConfigError
from uprnlink.publication import PublicationMetadata
from uprnlink.run.history import list_runs, run_row
from uprnlink.run_summary import RunStart, RunSummary

FAILED = {
    "run_id": "20260301T000000Z-link",
    "status": "failed",
    "started_at": "2026-03-01T00:00:00+00:00",
    "rebuild": False,
    "run": {"run_id": "20260301T000000Z-link", "key_id": "k1", "epoch": 1, "name": "demo"},
    "reference": [{"source": "uprn_lookup", "reused": True}],
    "ingest": [{"source": "gp_registrations", "rows_in": 10, "reused": False}],
    "changes": {"gp_registrations": "ingested"},
    "finished_at": "2026-03-01T00:00:09+00:00",
    "timings": {"start": 1.0, "ingest": 2.0, "link": 6.0},
    "failed_stage": "link",
    "error": "OSError",
    "published_output": "unchanged: release r0 is still the live one",
    "kept": "the trusted zone keeps every source ingested before the failure",
    "audit_head": {"seq": 7, "hash": "0" * 64},
}


def test_a_failed_runs_summary_reads_back_as_written() -> None:
    summary = RunSummary.from_dict(FAILED)
    assert summary.to_dict() == FAILED
    assert summary.id == "20260301T000000Z-link" and summary.failed_stage == "link"
    assert summary.run == RunStart("20260301T000000Z-link", "k1", 1, "demo")
    assert summary.linkage is None and summary.counts == {} and summary.reference_date is None
    assert summary.metadata is None
    assert isinstance(summary.ingest, tuple)


def test_keys_it_does_not_know_and_nulls_are_kept() -> None:
    data = {**FAILED, "from_a_later_version": {"x": 1}, "deliveries": None}
    assert RunSummary.from_dict(data).to_dict() == data


def test_a_start_record_missing_a_field_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'epoch'.*rule: run_summary_shape"):
        RunSummary.from_dict({"run": {"run_id": "r", "key_id": "k", "name": "n"}})


@pytest.mark.slow
def test_the_returned_summary_is_the_one_on_disk(small_run: PipelineRun) -> None:
    summary = small_run.summary
    assert isinstance(summary, RunSummary) and summary.summary_path
    written = json.loads(Path(summary.summary_path).read_text())
    # The written file is the returned summary plus its status, id and audit head.
    back = RunSummary.from_dict(written)
    assert back.to_dict() == written
    assert back.id == summary.id == "test-run" and back.status == "completed"
    returned = summary.to_dict()
    returned.pop("summary_path")
    assert {k: v for k, v in written.items() if k not in ("run_id", "status", "audit_head")} == (
        json.loads(json.dumps(returned, default=str))
    )
    assert summary.reference_date == small_run.settings.reference_date
    assert isinstance(summary.reference_date, date)
    meta = summary.metadata
    assert meta is not None and meta.reference_date == summary.reference_date
    assert summary.counts["people"] == meta.counts.people > 0
    assert summary.counts == meta.counts.to_dict()
    # The metadata file is the typed record's mapping, byte for byte.
    on_disk = (small_run.settings.linked_dir / "run_metadata.json").read_text()
    assert json.dumps(PublicationMetadata.from_dict(json.loads(on_disk)).to_dict(), indent=2) == (
        on_disk
    )
    runs = list_runs(small_run.settings.out_dir)
    assert [r.id for r in runs] == ["test-run"]
    assert run_row(runs[0], "test-run")["run"] == "test-run *"
