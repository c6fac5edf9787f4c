"""One run at a time per working folder: an exclusive lock file, with stale-lock recovery.

The lock records the holder's host, process id, run id and start time. A second run on the same
folders is refused with those details. A lock left by a killed run on this host (its process no
longer exists) is detected, logged and replaced; a lock from another host is never broken
automatically, since that process cannot be checked from here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uprnlink.errors import UprnlinkError

log = logging.getLogger(__name__)


class RunLockedError(UprnlinkError):
    """Another run holds the lock on these folders."""

    exit_code = 9


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def acquire(path: Path, run_id: str) -> None:
    """Take the lock or raise RunLockedError; replace a stale lock from a dead local process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run_id": run_id,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            stale = holder is None or (
                holder.get("host") == me["host"] and not process_alive(int(holder.get("pid", -1)))
            )
            if (
                holder is not None
                and holder.get("pid") == me["pid"]
                and holder.get("host") == me["host"]
            ):
                stale = True  # a lock this process left behind (an earlier run in it failed)
            if not stale:
                assert holder is not None
                raise RunLockedError(
                    f"another run ({holder.get('run_id')}, process {holder.get('pid')} on "
                    f"{holder.get('host')}, started {holder.get('started')}) is using these "
                    f"folders; wait for it to finish. If it is certainly dead, delete {path}."
                ) from None
            log.warning(
                "replacing a stale run lock left by run %s (process %s is gone)",
                holder.get("run_id") if holder else "unknown",
                holder.get("pid") if holder else "unknown",
            )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return
    raise RunLockedError(f"could not take the run lock {path}")


def release(path: Path, run_id: str) -> None:
    """Drop the lock if this run holds it."""
    holder = _read(path)
    if holder is not None and holder.get("run_id") == run_id and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(path: Path, run_id: str) -> Iterator[None]:
    """Hold the lock for the duration of a run."""
    acquire(path, run_id)
    try:
        yield
    finally:
        release(path, run_id)
