"""The Prefect flow runs the same pipeline under a test harness; the library needs no Prefect."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import copy_tree, no_baselines
from uprnlink.run_summary import RunSummary
from uprnlink.settings import read_settings


@dataclass
class FlowRun:
    root: Path
    config: Path
    summary: RunSummary


@pytest.fixture(scope="module")
def flow_run(
    prefect_harness: None, population: Path, tmp_path_factory: pytest.TempPathFactory
) -> FlowRun:
    """The household linkage flow run once on a copy of the shared population (300 people, about
    530 linked people; baselines off). The incremental flow test runs on from a copy of it."""
    from uprnlink.flows.household_linkage import household_linkage

    root = tmp_path_factory.mktemp("flow")
    config = no_baselines(copy_tree(population, root))
    summary = household_linkage(str(config), run_id="flow-test")
    return FlowRun(root, config, summary)


@pytest.mark.slow
def test_flow_runs_end_to_end_under_prefect(flow_run: FlowRun) -> None:
    config, summary = flow_run.config, flow_run.summary
    settings = read_settings(config)
    assert summary.run.run_id == "flow-test"
    assert {r["source"] for r in summary.ingest} == set(settings.sources)
    assert all(r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] for r in summary.ingest)
    assert summary.linkage["people"] > 300
    assert settings.database_path.exists()
    assert (settings.linked_dir / "household.parquet").exists()
    saved = json.loads(Path(summary.summary_path).read_text())
    assert saved["status"] == "completed"
    # Nothing the flow returned (and Prefect recorded) holds key material or passphrases.
    text = json.dumps(summary.to_dict(), default=str)
    assert "uprnlink-demo-passphrase" not in text
    doc = json.loads(settings.key.file.read_text())  # type: ignore[union-attr]
    assert doc["cipher"]["ciphertext"] not in text


def test_library_imports_without_prefect() -> None:
    """Every module but the flows imports with Prefect blocked (the library has no Prefect)."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'prefect' or name.startswith('prefect.'):\n"
        "            raise ImportError('prefect blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib, pkgutil, uprnlink\n"
        "for m in pkgutil.walk_packages(uprnlink.__path__, 'uprnlink.'):\n"
        "    if not m.name.startswith('uprnlink.flows'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'prefect' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_incremental_flow_run_after_one_extract_changes(flow_run: FlowRun, tmp_path: Path) -> None:
    """The landing watch sees one changed extract and triggers a run that re-ingests only it,
    reuses the model and keeps person ids; the run publishes its Prefect artifact."""
    from prefect.client.orchestration import get_client

    from uprnlink.flows.landing_watch import landing_watch
    from uprnlink.zones import Zones

    # A copy of the first flow run (its extracts, trusted zone, model and release).
    shutil.copytree(flow_run.root, tmp_path, symlinks=True, dirs_exist_ok=True)
    config = tmp_path / flow_run.config.relative_to(flow_run.root)
    settings = read_settings(config)
    first = flow_run.summary
    zones = Zones(settings)
    stamps = {n: zones.records(n).stat().st_mtime_ns for n in settings.sources}

    idle = landing_watch(str(config), settle_seconds=0)
    assert idle["triggered"] is None and idle["changed"] == []

    gp = settings.sources["gp_registrations"].path
    lines = gp.read_text().splitlines(keepends=True)
    gp.write_text("".join(lines[: int(len(lines) * 0.9)]))
    waiting = landing_watch(str(config), settle_seconds=3600)  # just written: still arriving
    assert waiting["triggered"] is None and "gp_registrations" in waiting["waiting_for"]

    watched = landing_watch(str(config), settle_seconds=0)
    assert watched["changed"] == ["gp_registrations"]
    run_id = watched["triggered"]
    second = RunSummary.from_dict(
        json.loads((settings.out_dir / "runs" / f"{run_id}.json").read_text())
    )
    assert second.changes is not None and second.linkage is not None
    assert second.changes["gp_registrations"] == "ingested"
    for name in set(settings.sources) - {"gp_registrations"}:
        assert second.changes[name] == "reused"
        assert zones.records(name).stat().st_mtime_ns == stamps[name]  # not rewritten
    assert zones.records("gp_registrations").stat().st_mtime_ns != stamps["gp_registrations"]
    assert second.linkage["model"]["trained"] is False
    ids = second.linkage["ids"]
    assert ids["kept"] >= 0.9 * first.linkage["people"]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    keys = {a.key for a in artifacts}
    assert {"household-linkage-summary", "linkage-quality-report"} <= keys
    markdown = next(a.data for a in artifacts if a.key == "household-linkage-summary")
    assert "gp_registrations" in str(markdown) and "uprnlink-demo-passphrase" not in str(markdown)
