"""What has landed: which configured extracts are present, settled and new since last ingested.

The landing watch flow (`src/uprnlink/flows/landing_watch.py`) asks this before triggering a run: a run
starts only when every required extract is present, none is still being written (unchanged for
`settle_seconds`), and at least one differs from what the trusted zone was built from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uprnlink.ingest import manifest
from uprnlink.ingest.readers import file_checksum
from uprnlink.settings import RunSettings, read_settings


@dataclass(frozen=True)
class ExtractState:
    """One configured extract as found in the landing folder (names and times only)."""

    source: str
    file: str
    required: bool
    present: bool
    settled: bool
    changed: bool
    age_seconds: float | None

    @property
    def state(self) -> str:
        """missing, arriving (still being written), new (differs from the last ingest) or
        unchanged."""
        if not self.present:
            return "missing"
        if not self.settled:
            return "arriving"
        return "new" if self.changed else "unchanged"


@dataclass(frozen=True)
class LandingStatus:
    """The landing folder against the configuration and the manifest."""

    extracts: list[ExtractState]

    @property
    def complete(self) -> bool:
        """Every required extract present and settled."""
        return all(e.present and e.settled for e in self.extracts if e.required)

    @property
    def changed(self) -> list[str]:
        """Sources whose extract differs from the one last ingested."""
        return [e.source for e in self.extracts if e.present and e.changed]

    @property
    def waiting_for(self) -> list[str]:
        """Required sources missing or still arriving."""
        return [
            e.source for e in self.extracts if e.required and e.state in {"missing", "arriving"}
        ]

    @property
    def ready(self) -> bool:
        """A run would do new work now."""
        return self.complete and bool(self.changed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (names, flags and ages only)."""
        return {
            "complete": self.complete,
            "ready": self.ready,
            "changed": self.changed,
            "waiting_for": self.waiting_for,
            "extracts": [{**asdict(e), "state": e.state} for e in self.extracts],
        }


def landing_status(settings: RunSettings, settle_seconds: float = 300.0) -> LandingStatus:
    """Compare each configured extract (sources and reference files) with the manifest."""
    from uprnlink.ingest.manifest import REFERENCE_ENTRY
    from uprnlink.ingest.manifest import reference_fingerprint as _reference_fingerprint

    now = time.time()
    states = []
    reference_changed = False
    entry = manifest.read_entry(settings.trusted_dir, REFERENCE_ENTRY)
    try:
        reference_changed = entry is None or entry.get("fingerprint") != _reference_fingerprint(
            settings
        )
    except OSError:
        reference_changed = True
    for group, sources in (("reference", settings.reference), ("source", settings.sources)):
        for name, source in sources.items():
            path: Path = source.path
            present = path.is_file()
            age = now - path.stat().st_mtime if present else None
            settled = present and age is not None and age >= settle_seconds
            if not present:
                changed = False
            elif group == "reference":
                changed = reference_changed
            else:
                last = manifest.read_entry(settings.trusted_dir, name) or {}
                changed = last.get("checksum") != file_checksum(path) if settled else True
            states.append(
                ExtractState(
                    source=name if group == "source" else f"reference:{name}",
                    file=path.name,
                    required=source.required,
                    present=present,
                    settled=settled,
                    changed=changed,
                    age_seconds=round(age, 1) if age is not None else None,
                )
            )
    return LandingStatus(states)


def status_for_config(config_path: str, settle_seconds: float = 300.0) -> LandingStatus:
    """`landing_status` for a configuration file."""
    return landing_status(read_settings(Path(config_path)), settle_seconds)


def status_table(status: LandingStatus) -> str:
    """The landing status as a fixed-width table for a terminal."""
    lines = [f"{'extract':<32}{'file':<28}{'state':<11}{'age':>10}"]
    for e in status.extracts:
        age = f"{e.age_seconds / 60:.0f} min" if e.age_seconds is not None else "-"
        lines.append(f"{e.source:<32}{e.file:<28}{e.state:<11}{age:>10}")
    if status.ready:
        lines.append(f"ready: a run would ingest {', '.join(status.changed)}")
    elif not status.complete:
        lines.append(f"waiting for: {', '.join(status.waiting_for)}")
    else:
        lines.append("nothing new since the last ingest")
    return "\n".join(lines)
