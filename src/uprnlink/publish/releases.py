"""Published releases: each run publishes into a folder of its own, and one rename makes it live.

Layout of the output folder::

    out/
      releases/<run_id>/linked/*.parquet      one complete publication per run (0700)
      releases/<run_id>/uprnlink.duckdb       the analysts' database (their views only; 0640)
      releases/<run_id>/engineer.duckdb       the engineers' database (every table; 0600)
      releases/<run_id>/quality_report.html
      releases/<run_id>/audit_head.json       the audit log's head when it went live
      releases/.staging-<run_id>/             a publication being written (never read)
      current -> releases/<run_id>            the live release: switched by one atomic rename
      linked -> current/linked                stable paths for analysts and tools
      uprnlink.duckdb -> current/uprnlink.duckdb
      engineer.duckdb -> current/engineer.duckdb
      quality_report.html -> current/quality_report.html

A run writes its whole publication (dataset, database, report) into the staging folder, then
renames it to `releases/<run_id>` and replaces the `current` link with a new one in a single
`rename(2)`. Until that rename the previous release is untouched and stays queryable; after it,
readers that already had the old database open keep reading it (the old files are only removed
when they fall out of the retention count, and an open file outlives its removal on POSIX).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
ANALYST_DATABASE = "uprnlink.duckdb"
ENGINEER_DATABASE = "engineer.duckdb"
#: Names under `out/` that always point into the current release.
ENTRY_POINTS = ("linked", ANALYST_DATABASE, ENGINEER_DATABASE, "quality_report.html")


def releases_dir(out_dir: Path) -> Path:
    """Where every release (and the staging folder) lives."""
    return out_dir / RELEASES


def staging_dir(out_dir: Path, run_id: str) -> Path:
    """The folder a run writes its publication into before it is switched live."""
    return releases_dir(out_dir) / f"{STAGING_PREFIX}{run_id}"


def release_dir(out_dir: Path, run_id: str) -> Path:
    """The folder of one published release."""
    return releases_dir(out_dir) / run_id


def begin(out_dir: Path, run_id: str) -> Path:
    """An empty staging folder for this run; leftovers of killed runs are cleared first.

    Call only while holding the run lock: no other run can be writing a staging folder then.
    """
    root = releases_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f"{STAGING_PREFIX}*"):
        log.info("removing an unfinished publication left by an interrupted run")
        shutil.rmtree(leftover, ignore_errors=True)
    staged = staging_dir(out_dir, run_id)
    staged.mkdir(parents=True)
    return staged


def _link(path: Path, target: str) -> None:
    """Point symlink `path` at `target` in one atomic rename (never a moment without a link)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    if path.exists() and not path.is_symlink():
        # An output folder from before releases existed: its real file or folder gives way to
        # the link (once; that publication is superseded by the release being switched in).
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    os.replace(tmp, path)


def switch(out_dir: Path, run_id: str) -> Path:
    """Make this run's staged publication the current release; returns its folder."""
    staged = staging_dir(out_dir, run_id)
    final = release_dir(out_dir, run_id)
    if not staged.is_dir():
        raise FileNotFoundError(f"no staged publication for run {run_id}")
    if final.exists():  # the same run id published twice (a retried task): replace it
        shutil.rmtree(final)
    os.replace(staged, final)
    _link(out_dir / CURRENT, f"{RELEASES}/{run_id}")
    for name in ENTRY_POINTS:
        if (final / name).exists():
            _link(out_dir / name, f"{CURRENT}/{name}")
    return final


def current(out_dir: Path) -> str | None:
    """The run id of the live release, or None before the first publication."""
    link = out_dir / CURRENT
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def published(out_dir: Path) -> list[str]:
    """Run ids of the releases on disk, oldest first (run ids sort by time)."""
    root = releases_dir(out_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def prune(out_dir: Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases (never the current one); returns those removed."""
    live = current(out_dir)
    others = [r for r in published(out_dir) if r != live]
    surplus = others[: max(0, len(others) - max(keep - 1, 0))]
    for run_id in surplus:
        shutil.rmtree(release_dir(out_dir, run_id), ignore_errors=True)
    return surplus
