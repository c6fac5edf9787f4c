"""A failed run says which stage failed and why, releases its lock and keeps the last publication."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.conftest import BaseRun
from uprnlink.errors import ContractError
from uprnlink.run import runner
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow


def test_failed_runs_leave_a_summary_and_the_previous_publication(
    base_run: BaseRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = base_run.copy(tmp_path)  # a good run, published
    settings = read_settings(config)
    db = settings.database_path
    before = (
        duckdb.connect(str(db), read_only=True)
        .execute("SELECT count(*) FROM households")
        .fetchall()
    )

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full while writing 'SMITH'")

    monkeypatch.setattr(runner, "publish_outputs", boom)
    with pytest.raises(RuntimeError):
        runner.run_all(str(config), run_id="bad-publish")
    failed = json.loads((settings.out_dir / "runs" / "bad-publish.json").read_text())
    assert failed["status"] == "failed" and failed["failed_stage"] == "publish"
    assert failed["error"] == "RuntimeError"  # the message could quote data: type only
    assert "SMITH" not in json.dumps(failed)
    after = (
        duckdb.connect(str(db), read_only=True)
        .execute("SELECT count(*) FROM households")
        .fetchall()
    )
    assert after == before
    assert not Zones(settings).lock.exists()

    monkeypatch.undo()
    (settings.landing_dir / "hospital_activity.csv").unlink()
    with pytest.raises(ContractError):
        runner.run_all(str(config), run_id="no-extract")
    failed = json.loads((settings.out_dir / "runs" / "no-extract.json").read_text())
    assert failed["failed_stage"] == "start"
    assert "hospital_activity" in failed["error"] and "file_missing" in failed["error"]
    events = [
        json.loads(line)
        for line in (settings.out_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    finished = [e["data"] for e in events if e["event"] == "run.finished"]
    assert [f["status"] for f in finished] == ["completed", "failed", "failed"]
    assert finished[-1]["failed_stage"] == "start"
