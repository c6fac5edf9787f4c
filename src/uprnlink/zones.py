"""Where each zone's files live for one run configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uprnlink.settings import RunSettings


@dataclass(frozen=True)
class Zones:
    """Paths of one run's working and published zones."""

    settings: RunSettings

    @property
    def reference(self) -> Path:
        """Area lookup keyed on raw UPRN (restricted: holds real UPRNs)."""
        return self.settings.work_dir / "reference" / "reference.parquet"

    def records(self, source: str) -> Path:
        """Pseudonymised linkage records of one source."""
        return self.settings.trusted_dir / "records" / f"{source}.parquet"

    def facts(self, source: str) -> Path:
        """Pseudonymised source facts of one source."""
        return self.settings.trusted_dir / "facts" / f"{source}.parquet"

    def crosswalk(self, source: str) -> Path:
        """Record key to the source's own row reference (engineer-only)."""
        return self.settings.trusted_dir / "crosswalk" / f"{source}.parquet"

    def quarantine(self, source: str) -> Path:
        """Rejected rows of one source with their reasons (raw values: restricted)."""
        return self.settings.quarantine_dir / f"{source}.parquet"

    @property
    def release_ids(self) -> Path:
        """Internal person and household ids to the published ones (engineer-only)."""
        return self.settings.trusted_dir / "release" / "ids.parquet"

    @property
    def clusters(self) -> Path:
        """Record to person id, from linkage."""
        return self.settings.trusted_dir / "linkage" / "clusters.parquet"

    @property
    def linkage_dir(self) -> Path:
        """Linkage working folder (model, spill files)."""
        return self.settings.trusted_dir / "linkage"

    @property
    def review_queue(self) -> Path:
        """Pairs chosen for clerical review by the last link (engineer-only, pseudonymised)."""
        return self.settings.trusted_dir / "review" / "queue.parquet"

    @property
    def review_labels(self) -> Path:
        """Reviewers' match / non-match labels: JSON Lines files, appended to, never rewritten."""
        return self.settings.trusted_dir / "review" / "labels"

    @property
    def audit_log(self) -> Path:
        """Hash-chained audit log (no personal data)."""
        return self.settings.out_dir / "audit" / "audit.jsonl"

    @property
    def audit_head(self) -> Path:
        """Checkpoint of the audit chain head, kept apart from the log."""
        return self.settings.work_dir / "audit" / "audit.head"

    @property
    def audit_seal_state(self) -> Path:
        """The audit log's current sealing key (owner-only; never backed up)."""
        return self.settings.audit.seal_state or self.settings.work_dir / "audit" / "seal.state"

    @property
    def lock(self) -> Path:
        """One run at a time on these folders."""
        return self.settings.work_dir / "run.lock"

    @property
    def runs(self) -> Path:
        """Run summaries (counts and timings only)."""
        return self.settings.out_dir / "runs"
