"""One run at a time: a live holder refuses a second run; a dead holder's lock is recovered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uprnlink.run.lock import RunLockedError, acquire, release, run_lock

# The holder keeps the lock until the test kills it: it waits on its stdin, which the test never
# writes or closes (it used to sleep 60 s, a bet on how fast the test would be).
HOLD = """
import sys
from pathlib import Path
from uprnlink.run.lock import acquire
acquire(Path(sys.argv[1]), "holder-run")
print("held", flush=True)
sys.stdin.read()
"""


def test_second_run_is_refused_and_stale_lock_recovered(tmp_path: Path) -> None:
    lock = tmp_path / "work" / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as err:
            acquire(lock, "second-run")
        assert "holder-run" in str(err.value) and str(holder.pid) in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed without releasing: its lock is stale and is taken over.
    with run_lock(lock, "third-run"):
        assert json.loads(lock.read_text())["run_id"] == "third-run"
    assert not lock.exists()


def test_release_only_drops_our_own_lock(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    acquire(lock, "mine")
    release(lock, "someone-else")
    assert lock.exists()
    release(lock, "mine")
    assert not lock.exists()


def test_lock_from_another_host_is_never_broken(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "run_id": "remote", "started": "x"}))
    with pytest.raises(RunLockedError, match="remote"):
        acquire(lock, "local")
