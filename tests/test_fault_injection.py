"""Fault injection: a run that fails or is killed in any stage leaves the previous release live
and queryable, and the next run finishes without manual clean-up.

The tests run in order on one tree. Every stage's failure is injected and checked; the full
recovery run (a whole pipeline run) follows the representative ones only (RECOVERED_AFTER):
until then each failing run is itself the next run after the one before it, so it must get past
the previous failure's leftovers (a staged release, a stale lock) to reach its own stage, and
the recovery run then cleans up after all of them at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import BaseRun
from uprnlink.publish import releases
from uprnlink.run import runner
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow

STEP_OF_STAGE = {
    "start": "start",
    "ingest": "ingest_sources",
    "link": "link",
    "publish": "publish",
    "report": "report",
    "switch": "switch",
    "finish": "finish",
}


# Where the next run is made to finish the job (the others' next run is the following test's).
# publish: the stage's work is done (a staged release on disk) when it dies; finish: the failed
# run's release is already live. Killed runs: after the switch, with the stale locks and staged
# releases of the kills before it still there.
RECOVERED_AFTER = {"publish", "finish"}
RECOVERED_AFTER_KILL = {"switch"}


@pytest.fixture(scope="module")
def tree(base_run: BaseRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared first run (baselines off): the release every failure must keep."""
    return base_run.copy(tmp_path_factory.mktemp("faults"))


def households_live(config: Path) -> tuple[str | None, int]:
    """The live release and what an analyst's query on it returns."""
    settings = read_settings(config)
    con = duckdb.connect(str(settings.database_path), read_only=True)
    try:
        rows = con.execute("SELECT count(*) FROM households").fetchall()
    finally:
        con.close()
    return releases.current(settings.out_dir), int(rows[0][0])


def touch_an_extract(config: Path) -> None:
    """Change one extract so the next run has real work in ingest and link."""
    gp = read_settings(config).sources["gp_registrations"].path
    lines = gp.read_text().splitlines(keepends=True)
    gp.write_text("".join(lines[:-3]))


@pytest.mark.parametrize("stage", runner.STAGES)
def test_a_failure_in_any_stage_keeps_the_previous_release(tree: Path, stage: str) -> None:
    settings = read_settings(tree)
    live_before, households_before = households_live(tree)
    touch_an_extract(tree)
    step = STEP_OF_STAGE[stage]
    real = getattr(runner.LOCAL_STEPS, step)

    def failing(*args: Any) -> Any:
        if stage in {"publish", "report", "ingest"}:
            real(*args)  # the worst moment: the stage's work is done, then it dies
        raise OSError("injected failure while handling 'SMITH'")

    steps = dataclasses.replace(runner.LOCAL_STEPS, **{step: failing})
    run_id = f"20260301T000000Z-{stage}"
    with pytest.raises(OSError):
        runner.execute(str(tree), steps, run_id)

    failed = json.loads((settings.out_dir / "runs" / f"{run_id}.json").read_text())
    assert failed["status"] == "failed" and failed["failed_stage"] == stage
    assert failed["error"] == "OSError" and "SMITH" not in json.dumps(failed)
    assert not Zones(settings).lock.exists()
    if stage == "finish":  # the switch had already happened: the new release is the live one
        assert households_live(tree)[0] == run_id
    else:
        assert households_live(tree) == (live_before, households_before)
        assert live_before in failed["published_output"]

    if stage in RECOVERED_AFTER:
        # The next run needs no clean-up and publishes.
        again = runner.run_all(str(tree), run_id=f"20260301T000001Z-{stage}")
        assert households_live(tree)[0] == again.run.run_id
        assert not list(releases.releases_dir(settings.out_dir).glob(".staging-*"))


KILLER = textwrap.dedent(
    """
    import dataclasses, os, signal, sys
    from uprnlink.run import runner
    from uprnlink.zones import Zones

    config, stage, step, run_id = sys.argv[1:5]
    real = getattr(runner.LOCAL_STEPS, step)

    def killed(*args):
        if stage != "link":
            real(*args)
        os.kill(os.getpid(), signal.SIGKILL)

    steps = dataclasses.replace(runner.LOCAL_STEPS, **{step: killed})
    runner.execute(config, steps, run_id)
    """
)


@pytest.mark.parametrize("stage", ["link", "publish", "switch"])
def test_a_killed_run_leaves_a_stale_lock_that_the_next_run_recovers(
    tree: Path, stage: str
) -> None:
    settings = read_settings(tree)
    live_before, households_before = households_live(tree)
    touch_an_extract(tree)
    run_id = f"20260401T000000Z-kill-{stage}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(tree), stage, STEP_OF_STAGE[stage], run_id],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lock = Zones(settings).lock
    assert lock.exists()  # killed: nothing could clean up
    if stage == "switch":  # killed after the switch: the new release is already live
        assert households_live(tree)[0] == run_id
    else:
        assert households_live(tree) == (live_before, households_before)

    if stage in RECOVERED_AFTER_KILL:
        again = runner.run_all(str(tree), run_id=f"20260401T000001Z-kill-{stage}")
        assert households_live(tree)[0] == again.run.run_id
        assert not lock.exists()
