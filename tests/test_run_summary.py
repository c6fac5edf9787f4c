"""The run summary as a typed record: read from and written back to the same mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, NotRequired, Required, get_origin, get_type_hints

import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import ConfigError
from uprnlink.publication import NotSupplied, PublicationMetadata
from uprnlink.run.history import list_runs, run_row
from uprnlink.run_summary import (
    BaselineRecord,
    DeliveryChecks,
    DeliveryProfile,
    LinkSummary,
    ModelRecord,
    PublishedRelease,
    ReleaseSwitch,
    ReviewRecord,
    RunStart,
    RunSummary,
    SourceReport,
)

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


def _keys(record: type) -> tuple[set[str], set[str]]:
    """A TypedDict's required and declared keys (read from its hints: with postponed
    annotations `__required_keys__` does not see `NotRequired`)."""
    hints = get_type_hints(record, include_extras=True)
    total = record.__total__  # type: ignore[attr-defined]
    required = {
        k
        for k, v in hints.items()
        if get_origin(v) is Required or (total and get_origin(v) is not NotRequired)
    }
    return required, set(hints)


def _conforms(data: Mapping[str, Any], record: type) -> bool:
    required, declared = _keys(record)
    return required <= set(data) <= declared


def test_a_record_missing_a_required_key_or_with_an_undeclared_one_does_not_conform() -> None:
    switch = {"release": "r1", "previous": None, "pruned": []}
    assert _conforms(switch, ReleaseSwitch)
    assert not _conforms({"release": "r1", "previous": None}, ReleaseSwitch)
    assert not _conforms({**switch, "kept": 1}, ReleaseSwitch)
    assert _conforms({"source": "a", "reused": True}, SourceReport)
    assert not _conforms({"source": "a"}, SourceReport)


@pytest.mark.slow
def test_each_stage_returns_the_record_it_declares(small_run: PipelineRun) -> None:
    summary = small_run.summary
    assert summary.linkage and summary.published and summary.release and summary.ingest
    assert summary.reference and summary.not_supplied is not None
    assert _conforms(summary.linkage, LinkSummary)
    assert _conforms(summary.linkage["model"], ModelRecord)
    assert _conforms(summary.linkage["review"], ReviewRecord)
    for baseline in summary.linkage.get("baselines", {}).values():
        assert _conforms(baseline, BaselineRecord)
    assert _conforms(summary.published, PublishedRelease)
    assert _conforms(summary.release, ReleaseSwitch)
    assert _conforms(summary.not_supplied, NotSupplied)
    assert summary.deliveries and _conforms(summary.deliveries, DeliveryChecks)
    for delivered in summary.deliveries["profiles"].values():
        assert _conforms(delivered, DeliveryProfile)
    for report in (*summary.reference, *summary.ingest):
        assert _conforms(report, SourceReport), report["source"]
    assert isinstance(summary.run, RunStart)
