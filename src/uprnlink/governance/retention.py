"""Retention: how long landing extracts, quarantined rows and trusted data may be kept.

The governance policy (`[retention]` in governance/policy.toml) sets a period per zone:

- ``landing_days``: raw extracts as delivered (every file under the landing folder except the
  configured reference look-ups, which hold no personal data);
- ``quarantine_days``: rejected rows with their raw values (work/quarantine/);
- ``trusted_days``: pseudonymised records, crosswalks, clusters and the model (work/trusted/).

A file is past retention when it was last written longer ago than its zone's period (a new
delivery or a run that rewrites the file starts the clock again). Every run reports what is
past retention in its summary and log; `enforce = "delete"` (or `uprnlink retention --apply`)
deletes it, under the run lock, with one audit entry listing what went (zone, path relative to
the zone, age). Published releases are pruned by count (``published_releases``) when a new one
goes live (`uprnlink.publish.releases`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from uprnlink.governance.audit import actor, open_audit_log
from uprnlink.policy import EnforceMode, read_governance_policy
from uprnlink.settings import RunSettings

__all__ = [
    "ENFORCE_MODES",
    "Expired",
    "RetentionPolicy",
    "apply_retention",
    "find_expired",
    "read_retention",
    "retention_summary",
]

log = logging.getLogger(__name__)

DAY = 86_400
ENFORCE_MODES: tuple[str, ...] = get_args(EnforceMode)


@dataclass(frozen=True)
class RetentionPolicy:
    """The `[retention]` section of the governance policy."""

    landing_days: int = 90
    quarantine_days: int = 90
    trusted_days: int = 365
    published_releases: int = 3
    enforce: str = "report"

    def days(self, zone: str) -> int:
        """The retention period of a zone (landing, quarantine or trusted)."""
        days: int = getattr(self, f"{zone}_days")
        return days


def read_retention(policy_path: Path) -> RetentionPolicy:
    """The retention policy (`[retention]`, checked with the whole governance policy); a
    missing section or key takes the default."""
    section = read_governance_policy(policy_path).retention
    return RetentionPolicy(
        landing_days=section.landing_days,
        quarantine_days=section.quarantine_days,
        trusted_days=section.trusted_days,
        published_releases=section.published_releases,
        enforce=section.enforce,
    )


@dataclass(frozen=True)
class Expired:
    """One file past its zone's retention period."""

    zone: str
    path: Path
    relative: str  # path under the zone's folder (file names are source names, not data)
    age_days: float
    limit_days: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "path": self.relative,
            "age_days": round(self.age_days, 1),
            "limit_days": self.limit_days,
            "bytes": self.size,
        }


def _files(root: Path, skip: Iterable[Path] = ()) -> list[Path]:
    """Regular files under root (symlinks not followed), without those in `skip`."""
    if not root.is_dir():
        return []
    skipped = {p.resolve() for p in skip}
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.resolve() not in skipped
    )


def zones(settings: RunSettings) -> dict[str, tuple[Path, list[Path]]]:
    """Each retention zone's folder and the files in it that retention applies to."""
    reference = [source.path for source in settings.reference.values()]
    return {
        "landing": (settings.landing_dir, _files(settings.landing_dir, reference)),
        "quarantine": (settings.quarantine_dir, _files(settings.quarantine_dir)),
        "trusted": (settings.trusted_dir, _files(settings.trusted_dir)),
    }


def find_expired(
    settings: RunSettings, policy: RetentionPolicy, now: float | None = None
) -> list[Expired]:
    """Files past retention in every zone, oldest first (ages from the last write)."""
    now = time.time() if now is None else now
    out = []
    for zone, (root, files) in zones(settings).items():
        limit = policy.days(zone)
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            age = (now - st.st_mtime) / DAY
            if age > limit:
                out.append(
                    Expired(zone, path, path.relative_to(root).as_posix(), age, limit, st.st_size)
                )
    return sorted(out, key=lambda e: -e.age_days)


def retention_summary(expired: list[Expired], deleted: bool) -> dict[str, Any]:
    """Counts for a run summary: files and bytes past retention per zone, and what was done."""
    zones_: dict[str, dict[str, int]] = {}
    for e in expired:
        z = zones_.setdefault(e.zone, {"files": 0, "bytes": 0})
        z["files"] += 1
        z["bytes"] += e.size
    return {
        "files_past_retention": len(expired),
        "by_zone": zones_,
        "oldest_days": round(expired[0].age_days, 1) if expired else None,
        "deleted": deleted and bool(expired),
    }


def apply_retention(expired: list[Expired]) -> list[Expired]:
    """Delete the files past retention; returns those deleted (a file already gone is
    skipped). Empty folders left behind under the zones are removed too."""
    deleted = []
    for e in expired:
        try:
            e.path.unlink()
        except FileNotFoundError:
            continue
        deleted.append(e)
        log.info("retention: deleted %s/%s (%.0f days old)", e.zone, e.relative, e.age_days)
    folders: set[Path] = set()
    for e in deleted:
        depth = len(Path(e.relative).parts) - 1  # folders between the zone root and the file
        folders.update(e.path.parents[i] for i in range(depth))
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty; the zone roots themselves stay
    return deleted


def enforce_retention(
    settings: RunSettings, run_id: str, *, delete: bool | None = None
) -> dict[str, Any]:
    """Find the files past the policy's retention periods; delete them when the policy says
    `enforce = "delete"` (or `delete=True`), with one audit entry. Counts for the summary."""
    policy = read_retention(settings.policy_path)
    expired = find_expired(settings, policy)
    if delete is None:
        delete = policy.enforce == "delete"
    deleted = apply_retention(expired) if delete else []
    if deleted:
        open_audit_log(settings).append(
            "retention.deleted",
            actor=actor(),
            data={"run_id": run_id, "files": [e.to_dict() for e in deleted]},
        )
        log.info("retention: deleted %d files past their retention period", len(deleted))
    elif expired:
        log.warning(
            "retention: %d files are past their retention period (oldest %.0f days); "
            "`uprnlink retention --config %s --apply` deletes them",
            len(expired),
            expired[0].age_days,
            settings.config_path,
        )
    return retention_summary(deleted if delete else expired, bool(deleted))
