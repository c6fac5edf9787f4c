"""The Prefect flow runs the same pipeline under a test harness; the library needs no Prefect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_demo_tree
from uprnlink.settings import read_settings


@pytest.fixture(scope="module")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_flow_runs_end_to_end_under_prefect(prefect_harness: None, tmp_path: Path) -> None:
    from pipelines.household_linkage import household_linkage

    config = make_demo_tree(tmp_path, people=600, seed=11)
    summary = household_linkage(str(config), run_id="flow-test")
    settings = read_settings(config)
    assert summary["run"]["run_id"] == "flow-test"
    assert {r["source"] for r in summary["ingest"]} == set(settings.sources)
    assert all(
        r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] for r in summary["ingest"]
    )
    assert summary["linkage"]["people"] > 300
    assert settings.database_path.exists()
    assert (settings.linked_dir / "household.parquet").exists()
    saved = json.loads(Path(summary["summary_path"]).read_text())
    assert saved["status"] == "completed"
    # Nothing the flow returned (and Prefect recorded) holds key material or passphrases.
    text = json.dumps(summary, default=str)
    assert "uprnlink-demo-passphrase" not in text
    doc = json.loads(settings.key.file.read_text())  # type: ignore[union-attr]
    assert doc["cipher"]["ciphertext"] not in text


def test_library_imports_without_prefect() -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'prefect' or name.startswith('prefect.'):\n"
        "            raise ImportError('prefect blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import uprnlink, uprnlink.pipeline, uprnlink.cli, uprnlink.synth\n"
        "assert 'prefect' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
