"""The run summary as a typed record: what `execute`/`run_all` return, what `out/runs/<run>.json`
holds, and what the CLI, the run history and the quality report read.

Each stage reports a small record of counts and paths, declared here (`RunStart`, and as
TypedDicts, so they stay plain JSON-ready mappings inside Prefect and on disk: `LinkSummary`,
`SourceReport`, `DeliveryChecks`, `LinkSummary`, `PublishedRelease`, `ReleaseSwitch`); the summary gathers them under named, typed fields, so a
reader names `summary.linkage` rather than chaining `.get(..., {})`, and mypy checks what one
part hands the next. `from_dict` reads a summary
written by any run (a failed or held one lacks the later stages: those fields are None);
`to_dict` gives back the same mapping, keys a reader does not know included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, NotRequired, Required, TypedDict

from uprnlink.errors import ConfigError
from uprnlink.publication import NotSupplied, PublicationMetadata

__all__ = [
    "BaselineRecord",
    "DeliveryChecks",
    "DeliveryProfile",
    "LinkSummary",
    "ModelRecord",
    "PublishedRelease",
    "ReleaseSwitch",
    "ReviewRecord",
    "RunStart",
    "RunSummary",
    "SourceReport",
]


@dataclass(frozen=True)
class RunStart:
    """The `start` stage's record: the run id, the key it ran with and the configuration's name."""

    run_id: str
    key_id: str
    epoch: int
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "key_id": self.key_id,
            "epoch": self.epoch,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunStart:
        try:
            return cls(
                str(data["run_id"]), str(data["key_id"]), int(data["epoch"]), str(data["name"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"run summary: field 'run' lacks or mistypes {exc} (rule: run_summary_shape)"
            ) from exc


class SourceReport(TypedDict, total=False):
    """The ingest stage's record of one extract (a person source or a reference file): its
    `ingest.validate.IngestReport` as a mapping, with whether it was reused (and from which
    run), skipped (why), and, for a person source, identifier coverage and seconds."""

    source: Required[str]
    reused: Required[bool]
    skipped: str
    ingested_in_run: str | None
    file: str
    contract: str
    checksum: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int]
    values_nulled: dict[str, int]
    values_present: dict[str, int]
    fields_not_supplied: list[str]
    columns_ignored: list[str]
    blank_lines: int
    file_rows: int
    groups_empty: int
    values_unrecoded: dict[str, dict[str, int]]
    null_shares: dict[str, float]
    latest_date: str | None
    seconds: float
    uprn_present: int
    uprn_in_lookup: int
    nhs_number_present: int


class DeliveryProfile(TypedDict):
    """What a delivery is compared on with its source's last accepted one (counts, shares,
    the latest date and the file's checksum)."""

    rows: int
    null_shares: dict[str, float]
    latest_date: str | None
    checksum: str | None


class DeliveryChecks(TypedDict):
    """The delivery checks' record (`ingest.deliveries.check_deliveries`): the policy applied,
    findings (held and accepted), the sources let through with `--accept`, each profile."""

    policy: dict[str, Any]
    findings: list[dict[str, Any]]
    accepted: list[str]
    profiles: dict[str, DeliveryProfile]


class ModelRecord(TypedDict):
    """The Splink model a link used: trained this run or reused, and from what."""

    trained: bool
    trained_at: str | None
    records_trained_on: int | None
    settings_fingerprint: str | None


class ReviewRecord(TypedDict):
    """Pairs queued for clerical review, and reviewers' labels this run applied (by outcome)."""

    queued: int
    labels_applied: NotRequired[dict[str, int]]


class BaselineRecord(TypedDict):
    """One baseline method's people and seconds (for the evaluation to compare)."""

    people: int
    seconds: float


class LinkSummary(TypedDict):
    """The link stage's record (`linkage.stage.link_stage`): counts, the threshold, the model,
    person id changes and timings. A reused link is the last link's record, marked `reused`."""

    records: int
    profiles: int
    people: int
    candidate_pairs: int
    pairs_above_threshold: int
    match_threshold: float
    threshold_mode: str
    threshold_choice: dict[str, Any] | None
    identifiers: list[str]
    comparisons: list[str]
    training: list[str]
    retrain: bool
    model: ModelRecord
    ids: dict[str, int]
    seconds: dict[str, float]
    blocking: list[dict[str, Any]]
    cannot_link: dict[str, Any] | None
    review: ReviewRecord
    coresidence: dict[str, Any] | None
    # Records per source that took a UPRN from their address text (uprnlink.ingest.addresses).
    addresses_matched: NotRequired[dict[str, int]]
    baselines: NotRequired[dict[str, BaselineRecord]]
    reused: NotRequired[bool]
    linked_in_run: NotRequired[str | None]
    # What an incremental link reused (new_profiles, dropped_profiles, pairs_scored, pairs_kept).
    incremental: NotRequired[dict[str, int]]


class PublishedRelease(TypedDict):
    """The publish stage's record (`publish.stage.publish_outputs`): disclosure risk (counts
    and shares), the publication's metadata as written (`PublicationMetadata.to_dict`), and
    where the staged release and its databases are."""

    disclosure_risk: dict[str, Any]
    metadata: dict[str, Any]
    tables: list[str]
    staged: str
    linked_dir: str
    database: str
    engineer_database: str
    analyst_tables: list[str]


class ReleaseSwitch(TypedDict):
    """The switch stage's record: the release made live, the one it replaced, those pruned."""

    release: str
    previous: str | None
    pruned: list[str]


#: Fields held as a tuple of per-source reports (a JSON list on disk).
_LISTS = frozenset({"reference", "ingest", "held"})


@dataclass(frozen=True)
class RunSummary:
    """One run's summary: counts, checksums, timings, paths and names, never a data value.

    Fields are in the order a completed run writes them; each is None where the run did not
    get that far (or, for `run_id`, `status` and `audit_head`, in the summary `execute` returns
    rather than the one written to disk). `extra` keeps keys this version does not know.
    """

    run_id: str | None = None
    status: str | None = None
    started_at: str | None = None
    rebuild: bool | None = None
    run: RunStart | None = None
    reference: tuple[SourceReport, ...] | None = None
    ingest: tuple[SourceReport, ...] | None = None
    changes: dict[str, str] | None = None
    not_supplied: NotSupplied | None = None
    deliveries: DeliveryChecks | None = None
    linkage: LinkSummary | None = None
    published: PublishedRelease | None = None
    reports: dict[str, str] | None = None
    release: ReleaseSwitch | None = None
    timings: dict[str, float] | None = None
    finished_at: str | None = None
    failed_stage: str | None = None
    error: str | None = None
    held: tuple[dict[str, Any], ...] | None = None
    published_output: str | None = None
    kept: str | None = None
    retention: dict[str, Any] | None = None
    summary_path: str | None = None
    audit_head: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """A summary from its mapping (as `execute` builds it or `json.loads` reads it)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known or value is None:
                extra[key] = value  # a None kept as it was, so to_dict gives it back
            elif key == "run":
                values[key] = value if isinstance(value, RunStart) else RunStart.from_dict(value)
            elif key in _LISTS:
                values[key] = tuple(value)
            else:
                values[key] = value
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a plain mapping (JSON-ready but for dates), fields in order."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if isinstance(value, RunStart):
                value = value.to_dict()
            elif f.name in _LISTS:
                value = list(value)
            out[f.name] = value
        out.update(self.extra)
        return out

    @property
    def id(self) -> str | None:
        """The run's id (on disk at the top; in a returned summary, in its start record)."""
        return self.run_id or (self.run.run_id if self.run else None)

    @property
    def metadata(self) -> PublicationMetadata | None:
        """The publication's metadata (counts, reference date, versions), or None before the
        publish stage."""
        if self.published is None:
            return None
        meta: Any = self.published.get("metadata")
        if meta is None or isinstance(meta, PublicationMetadata):
            return meta
        return PublicationMetadata.from_dict(meta)

    @property
    def counts(self) -> dict[str, int]:
        """The published counts (people, households, ...), or {} before the publish stage (read
        as written, so a summary from an older version gives its own)."""
        meta = self.published.get("metadata") if self.published else None
        counts = meta.get("counts") if isinstance(meta, Mapping) else None
        return dict(counts) if isinstance(counts, Mapping) else {}

    @property
    def reference_date(self) -> date | None:
        """The published reference date (a date; it is text on disk only)."""
        meta = self.metadata
        return meta.reference_date if meta else None
