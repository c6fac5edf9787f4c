"""The pipeline's stages as plain functions over a run configuration.

Each stage reads its inputs from the zones on disk and writes its outputs back, returning only
a small summary of counts and paths (never data values), so an orchestrator can call them as
tasks and record their results safely. The key is resolved inside the stages that need it and
never passed between them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink import __version__
from uprnlink.errors import ConfigError, ContractError, KeyManagementError, PublishError
from uprnlink.governance.audit import AuditLog
from uprnlink.households.tables import build_analysis_tables
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.validate import file_checksum, ingest_extract, write_quarantine
from uprnlink.linkage.model import link_people
from uprnlink.privacy.keys import MasterKey, resolve_key
from uprnlink.privacy.records import build_reference, build_trusted_source
from uprnlink.publish.database import (
    read_policy,
    write_database,
    write_linked_dataset,
)
from uprnlink.settings import RunSettings, read_settings

log = logging.getLogger("uprnlink")


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
    def clusters(self) -> Path:
        """Record to person id, from linkage."""
        return self.settings.trusted_dir / "linkage" / "clusters.parquet"

    @property
    def linkage_dir(self) -> Path:
        """Linkage working folder (model, spill files)."""
        return self.settings.trusted_dir / "linkage"

    @property
    def audit_log(self) -> Path:
        """Hash-chained audit log (no personal data)."""
        return self.settings.out_dir / "audit" / "audit.jsonl"

    @property
    def audit_head(self) -> Path:
        """Checkpoint of the audit chain head, kept apart from the log."""
        return self.settings.work_dir / "audit" / "audit.head"

    @property
    def lock(self) -> Path:
        """One run at a time on these folders."""
        return self.settings.work_dir / "run.lock"

    @property
    def runs(self) -> Path:
        """Run summaries (counts and timings only)."""
        return self.settings.out_dir / "runs"


KEY_ID_META = "uprnlink_key_id"
REFERENCE_ENTRY = "_reference"


def write_trusted(frame: pl.DataFrame, path: Path, key: MasterKey) -> None:
    """Write a trusted-zone file stamped with the key id (and epoch) its tokens came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(
        path, metadata={KEY_ID_META: key.key_id, "uprnlink_key_epoch": str(key.epoch)}
    )


def read_trusted(path: Path, key: MasterKey) -> pl.DataFrame:
    """Read a trusted-zone file, refusing one whose tokens came from another key epoch."""
    meta = pl.read_parquet_metadata(path)
    found = meta.get(KEY_ID_META)
    if found != key.key_id:
        raise KeyManagementError(
            f"{path.name} in the trusted zone was pseudonymised under key {found} "
            f"(epoch {meta.get('uprnlink_key_epoch')}) but this run's key is {key.key_id} "
            f"(epoch {key.epoch}). Tokens of two key epochs never mix in one dataset: after a "
            "rotation, rebuild everything from the landing extracts with `uprnlink run "
            "--config FILE --rebuild` (it clears the trusted zone first)."
        )
    return pl.read_parquet(path)


def clear_trusted_zone(settings: RunSettings) -> None:
    """Remove every trusted-zone file (a full rebuild, for example after a key rotation)."""
    shutil.rmtree(settings.trusted_dir, ignore_errors=True)
    shutil.rmtree(Zones(settings).reference.parent, ignore_errors=True)


def load_key(settings: RunSettings) -> MasterKey:
    """The pseudonymisation key named by the run configuration."""
    return resolve_key(
        key_file=settings.key.file,
        passphrase_env=settings.key.passphrase_env,
        key_env=settings.key.key_env,
        prompt=False,
    )


def audit_log(settings: RunSettings, key: MasterKey) -> AuditLog:
    """The run's audit log."""
    z = Zones(settings)
    z.audit_log.parent.mkdir(parents=True, exist_ok=True)
    z.audit_head.parent.mkdir(parents=True, exist_ok=True)
    return AuditLog(z.audit_log, key, head_path=z.audit_head)


def record_key_event(
    settings: RunSettings, key: MasterKey, event: str, data: dict[str, Any]
) -> None:
    """Append a key lifecycle event (created, rotated) to the run configuration's audit log."""
    audit_log(settings, key).append(event, actor=_actor(), data=data)


def audit_keys(settings: RunSettings) -> list[MasterKey]:
    """The current key plus retired epochs that open with the same passphrase (to verify a log
    that spans rotations)."""
    from uprnlink.privacy.keys import load_key_file

    keys = [load_key(settings)]
    key_file = settings.key.file
    passphrase = os.environ.get(settings.key.passphrase_env or "", "")
    if key_file is not None and passphrase:
        for retired in sorted(key_file.parent.glob(key_file.name + ".epoch*.retired")):
            try:
                keys.append(load_key_file(retired, passphrase))
            except KeyManagementError:
                log.warning("retired key file %s does not open with this passphrase", retired.name)
    return keys


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as 20261123T101500Z-3f9a."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def start_run(config_path: str, run_id: str) -> dict[str, Any]:
    """Check the configuration, contracts and key before any data is read; audit the start."""
    settings = read_settings(Path(config_path))
    for name, source in {**settings.sources, **settings.reference}.items():
        find_contract(settings.schemas_dir, source.contract, source.contract_version)
        if source.required and not source.path.exists():
            raise ContractError(
                f"source {name!r} is configured but its extract is missing",
                file=str(source.path),
                rule="file_missing",
            )
    check_distinct_deliveries(settings)
    keep_releases(settings)  # a malformed [retention] policy fails here, before any data is read
    key = load_key(settings)
    audit = audit_log(settings, key)
    audit.append("key.loaded", actor=_actor(), data={"run_id": run_id})
    audit.append(
        "run.started",
        actor=_actor(),
        data={"run_id": run_id, "config": settings.config_path.name, "version": __version__},
    )
    return {"run_id": run_id, "key_id": key.key_id, "epoch": key.epoch, "name": settings.name}


def check_distinct_deliveries(settings: RunSettings) -> None:
    """Refuse a delivery in which two sources' extracts are the same file (same SHA-256):
    one system's extract copied under another's name would otherwise be counted twice."""
    seen: dict[str, str] = {}
    for name, source in settings.sources.items():
        if not source.path.exists():
            continue
        checksum = file_checksum(source.path)
        if checksum in seen:
            raise ContractError(
                f"the extracts for sources {seen[checksum]!r} and {name!r} are byte-for-byte "
                "the same file (same SHA-256): one was probably delivered under the wrong name",
                file=source.path.name,
                rule="duplicate_delivery",
            )
        seen[checksum] = name


def _reference_fingerprint(settings: RunSettings) -> str:
    """Digest of the reference files (checksums), their contracts and their mappings."""
    from uprnlink.ingest.manifest import code_fingerprint, fingerprint

    parts: dict[str, Any] = {}
    for name, source in sorted(settings.reference.items()):
        if not source.path.exists():
            parts[name] = None
            continue
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        settings_part = {k: v for k, v in asdict(source).items() if k != "path"}
        parts[name] = [file_checksum(source.path), contract.tag, settings_part]
    return fingerprint({"reference": parts, "code": code_fingerprint()})


def ingest_reference_data(config_path: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Validate the reference files and write the UPRN area lookup (restricted zone).

    Unchanged reference files (same checksums, contracts and mappings as the manifest records)
    are not read again: the lookup built from them last time is reused.
    """
    from uprnlink.ingest import manifest

    settings = read_settings(Path(config_path))
    z = Zones(settings)
    reference_fp = _reference_fingerprint(settings)
    entry = manifest.read_entry(settings.trusted_dir, REFERENCE_ENTRY)
    if entry is not None and entry.get("fingerprint") == reference_fp and z.reference.exists():
        log.info("reference lookups unchanged since run %s: reused", entry.get("run_id"))
        return [{**r, "reused": True} for r in entry.get("reports", [])]
    manifest.drop_entry(settings.trusted_dir, REFERENCE_ENTRY)
    frames: dict[str, pl.DataFrame | None] = {
        n: None for n in ("uprn_lookup", "property_class", "deprivation")
    }
    reports = []
    for name, source in settings.reference.items():
        if not source.path.exists() and not source.required:
            log.warning("optional reference file %s is absent: skipped", source.path.name)
            continue
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        accepted, quarantined, report = ingest_extract(source, contract, settings.reference_date)
        write_quarantine(quarantined, z.quarantine(f"reference_{name}"))
        frames[contract.name] = accepted
        reports.append({**report.to_dict(), "reused": False})
    reference = build_reference(
        frames["uprn_lookup"], frames["property_class"], frames["deprivation"]
    )
    z.reference.parent.mkdir(parents=True, exist_ok=True)
    staged = z.reference.with_name(z.reference.name + ".tmp")
    reference.write_parquet(staged)
    os.replace(staged, z.reference)
    manifest.write_entry(
        settings.trusted_dir,
        REFERENCE_ENTRY,
        {"fingerprint": reference_fp, "run_id": run_id, "reports": reports},
    )
    log.info("reference: %d UPRNs with areas", reference.height)
    return reports


def ingest_person_source(
    config_path: str, source_name: str, run_id: str | None = None
) -> dict[str, Any]:
    """Validate, standardise, enrich and pseudonymise one source into the trusted zone.

    An extract whose checksum, contract, mapping, reference data and key are all as the
    manifest recorded for the files already in the trusted zone is not ingested again (an
    unchanged or re-delivered extract): its report is returned marked `reused`.
    """
    from uprnlink.ingest import manifest

    settings = read_settings(Path(config_path))
    if source_name not in settings.sources:
        raise ConfigError(f"no source {source_name!r} in {settings.config_path}")
    z = Zones(settings)
    source = settings.sources[source_name]
    if not source.path.exists():
        if source.required:
            raise ContractError(
                f"source {source_name!r} is configured but its extract is missing",
                file=str(source.path),
                rule="file_missing",
            )
        log.warning("optional source %s has no extract: skipped", source_name)
        manifest.drop_entry(settings.trusted_dir, source_name)
        write_empty_source(settings, source_name)
        return {"source": source_name, "skipped": "no extract (optional source)", "reused": False}
    contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
    started = time.perf_counter()
    key = load_key(settings)
    reference_entry = manifest.read_entry(settings.trusted_dir, REFERENCE_ENTRY) or {}
    checksum = file_checksum(source.path)
    source_fp = manifest.source_fingerprint(
        source,
        checksum,
        contract.tag,
        key_id=key.key_id,
        reference=str(reference_entry.get("fingerprint")),
        reference_date=settings.reference_date.isoformat(),
    )
    entry = manifest.read_entry(settings.trusted_dir, source_name)
    outputs = (z.records(source_name), z.facts(source_name), z.crosswalk(source_name))
    if (
        entry is not None
        and entry.get("fingerprint") == source_fp
        and all(p.exists() for p in outputs)
    ):
        log.info(
            "%s: extract unchanged (same checksum) since run %s: reused",
            source_name,
            entry.get("run_id"),
        )
        return {**entry["report"], "reused": True, "ingested_in_run": entry.get("run_id")}
    manifest.drop_entry(settings.trusted_dir, source_name)
    accepted, quarantined, report = ingest_extract(source, contract, settings.reference_date)
    write_quarantine(quarantined, z.quarantine(source_name))
    reference = pl.read_parquet(z.reference)
    trusted = build_trusted_source(accepted, source_name, reference, key)
    for path, frame in (
        (z.records(source_name), trusted.records),
        (z.facts(source_name), trusted.facts),
        (z.crosswalk(source_name), trusted.crosswalk),
    ):
        write_trusted(frame, path, key)
    out = report.to_dict()
    out["uprn_present"] = int(trusted.records.get_column("uprn_token").is_not_null().sum())
    out["uprn_in_lookup"] = int(trusted.records.get_column("uprn_in_lookup").sum())
    out["nhs_number_present"] = int(trusted.records.get_column("nhs_token").is_not_null().sum())
    out["seconds"] = round(time.perf_counter() - started, 2)
    manifest.write_entry(
        settings.trusted_dir,
        source_name,
        {"fingerprint": source_fp, "checksum": checksum, "run_id": run_id, "report": out},
    )
    log.info(
        "%s: %d in, %d accepted, %d quarantined",
        source_name,
        report.rows_in,
        report.rows_accepted,
        report.rows_quarantined,
    )
    return {**out, "reused": False}


def write_empty_source(settings: RunSettings, source_name: str) -> None:
    """Trusted-zone files with no rows (but the source's own columns) for an optional source
    that sent no extract, so every later stage sees an empty source rather than a missing one."""
    from uprnlink.ingest.validate import validate_extract

    z = Zones(settings)
    source = settings.sources[source_name]
    contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
    raw = pl.DataFrame(schema={m.column: pl.Utf8 for m in source.columns.values()})
    accepted, _, _ = validate_extract(raw, source, contract, settings.reference_date)
    key = load_key(settings)
    trusted = build_trusted_source(accepted, source_name, pl.read_parquet(z.reference), key)
    for path, frame in (
        (z.records(source_name), trusted.records),
        (z.facts(source_name), trusted.facts),
        (z.crosswalk(source_name), trusted.crosswalk),
    ):
        write_trusted(frame, path, key)


def read_trusted_records(settings: RunSettings, key: MasterKey) -> pl.DataFrame:
    """All sources' trusted linkage records as one frame (all from the current key epoch)."""
    z = Zones(settings)
    frames = [read_trusted(z.records(n), key) for n in settings.sources if z.records(n).exists()]
    if not frames:
        raise ContractError("no trusted records: run the ingest stage first", rule="no_records")
    return pl.concat(frames, how="vertical_relaxed")


def link_records(
    config_path: str,
    retrain: bool = False,
    *,
    baselines: bool = True,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Link and deduplicate people across all sources; write record -> person clusters.

    The saved model (`trusted/linkage/model.json`) is reused unless `retrain` is set or the
    model definition changed; person ids carry over from the previous clusters where the
    clusters overlap. With `baselines`, the deterministic and plain-Splink baselines are written
    beside the clusters for the evaluation to compare.
    """
    from uprnlink.linkage.model import LINKAGE_COLUMNS, PERIOD_COLUMNS
    from uprnlink.linkage.stable_ids import assign_stable_ids

    settings = read_settings(Path(config_path))
    z = Zones(settings)
    key = load_key(settings)
    # Only what linkage compares stays in memory while Splink runs.
    records = read_trusted_records(settings, key).select(*LINKAGE_COLUMNS, *PERIOD_COLUMNS)
    log.info("linking %d records from %d sources ...", records.height, len(settings.sources))
    z.linkage_dir.mkdir(parents=True, exist_ok=True)
    model_path = z.linkage_dir / "model.json"
    saved = json.loads(model_path.read_text()) if model_path.exists() else None
    result = link_people(
        records, settings.linkage, work_dir=z.linkage_dir, model=saved, retrain=retrain
    )
    if result.model_trained:
        write_model(result.model, z.linkage_dir, run_id)
    t = time.perf_counter()
    ids, report = assign_stable_ids(
        result.clusters.select("unique_id", pl.col("person_id").alias("cluster_key")),
        read_previous_clusters(z.clusters, key),
    )
    clusters = result.clusters.drop("person_id").join(ids, on="unique_id", how="left")
    result.seconds["stable_ids"] = round(time.perf_counter() - t, 2)
    write_trusted(clusters, z.clusters, key)
    summary: dict[str, Any] = {
        "records": result.records,
        "profiles": result.profiles,
        "people": result.people,
        "candidate_pairs": result.candidate_pairs,
        "pairs_above_threshold": result.pairs_above_threshold,
        "match_threshold": result.match_threshold,
        "threshold_mode": settings.linkage.threshold_mode,
        "threshold_choice": result.threshold_choice,
        "retrain": retrain,
        "model": {
            "trained": result.model_trained,
            "trained_at": result.model.get("trained_at"),
            "records_trained_on": result.model.get("records_trained_on"),
            "settings_fingerprint": result.model.get("settings_fingerprint"),
        },
        "ids": report.to_dict(),
        "seconds": result.seconds,
        "blocking": result.blocking,
    }
    log.info(
        "linked into %d people (%s model; ids kept %d, created %d)",
        result.people,
        "trained" if result.model_trained else "reused",
        report.kept,
        report.created,
    )
    if baselines and settings.linkage.baselines:
        log.info("linking the same records with the two baselines ...")
        summary["baselines"] = write_baselines(records, settings, key)
    shutil.rmtree(z.linkage_dir / "duckdb_tmp", ignore_errors=True)
    return summary


def _linkage_inputs(settings: RunSettings) -> str:
    """Digest of what linkage reads: every source's manifest fingerprint, the linkage
    settings and the saved model."""
    from uprnlink.ingest import manifest

    z = Zones(settings)
    model_path = z.linkage_dir / "model.json"
    return manifest.fingerprint(
        {
            "sources": {
                n: (manifest.read_entry(settings.trusted_dir, n) or {}).get("fingerprint")
                for n in sorted(settings.sources)
            },
            "linkage": asdict(settings.linkage),
            "model": file_checksum(model_path) if model_path.exists() else None,
        }
    )


def link_stage(
    config_path: str, run_id: str | None = None, retrain: bool = False
) -> dict[str, Any]:
    """Link people, or reuse the last clusters when no source, setting or model has changed
    since they were made (a re-run of the same delivery); `retrain` always links afresh."""
    settings = read_settings(Path(config_path))
    z = Zones(settings)
    marker = z.linkage_dir / "inputs.json"
    try:
        previous = json.loads(marker.read_text()) if marker.exists() else None
    except ValueError:
        previous = None
    if (
        not retrain
        and previous is not None
        and previous.get("fingerprint") == _linkage_inputs(settings)
        and z.clusters.exists()
    ):
        log.info("no source changed since run %s: its clusters are reused", previous["run_id"])
        return {**previous["summary"], "reused": True, "linked_in_run": previous["run_id"]}
    marker.unlink(missing_ok=True)
    summary = link_records(config_path, retrain, run_id=run_id)
    marker.write_text(
        json.dumps(
            {"fingerprint": _linkage_inputs(settings), "run_id": run_id, "summary": summary},
            default=str,
        )
    )
    return {**summary, "reused": False}


def write_model(model: dict[str, Any], linkage_dir: Path, run_id: str | None) -> Path:
    """Save a newly trained model as `model.json` (the one the next run reuses) and a copy
    under `models/` named after the run (or the time it was trained)."""
    stamp = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = linkage_dir / "models" / f"{stamp}.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model, indent=2)
    copy.write_text(text)
    current = linkage_dir / "model.json"
    staged = current.with_suffix(".json.tmp")
    staged.write_text(text)
    os.replace(staged, current)
    return copy


def read_previous_clusters(path: Path, key: MasterKey) -> pl.DataFrame | None:
    """The last run's record -> person ids, or None if there is none from this key epoch
    (record keys of another epoch never match, so its ids cannot carry over)."""
    if not path.exists():
        return None
    try:
        return read_trusted(path, key).select("unique_id", "person_id")
    except KeyManagementError:
        log.warning("previous clusters are from another key epoch: person ids start afresh")
        return None


def write_baselines(records: pl.DataFrame, settings: RunSettings, key: MasterKey) -> dict[str, Any]:
    """Cluster the records with each baseline method and write `baseline_<name>.parquet` beside
    the clusters; returns people and seconds per baseline."""
    from uprnlink.linkage.model import deterministic_clusters, plain_splink_clusters

    z = Zones(settings)
    out: dict[str, Any] = {}
    for name in ("deterministic", "plain_splink"):
        t = time.perf_counter()
        if name == "deterministic":
            found = deterministic_clusters(records)
        else:
            found = plain_splink_clusters(
                records, settings.linkage, z.linkage_dir, settings.linkage.match_threshold
            )
        clusters = found.join(
            records.select("unique_id", "source_dataset"), on="unique_id", how="left"
        )
        write_trusted(
            clusters.select("unique_id", "source_dataset", "person_id"),
            z.linkage_dir / f"baseline_{name}.parquet",
            key,
        )
        out[name] = {
            "people": clusters.get_column("person_id").n_unique(),
            "seconds": round(time.perf_counter() - t, 2),
        }
    return out


def linkage_quality_table(linked: pl.DataFrame) -> pl.DataFrame:
    """Per source: records, people, and the shares linked to another source, with a UPRN, with a
    UPRN found in the lookup and with an NHS number (the published linkage_quality table)."""
    from uprnlink.reports.quality import source_quality_table

    counts = source_quality_table(linked)
    share = {
        "linked_to_other_source": "share_linked_to_other_source",
        "with_uprn": "share_with_uprn",
        "uprn_in_lookup": "share_uprn_in_lookup",
        "with_nhs_number": "share_with_nhs_number",
    }
    return counts.select(
        "source_dataset",
        "records",
        "people",
        *[(pl.col(c) / pl.col("records")).round(4).alias(name) for c, name in share.items()],
    )


def publish_outputs(
    config_path: str, run_id: str, stage_summaries: dict[str, Any]
) -> dict[str, Any]:
    """Assemble the de-identified tables and switch the published dataset and database in."""
    settings = read_settings(Path(config_path))
    z = Zones(settings)
    key = load_key(settings)
    records = read_trusted_records(settings, key)
    clusters = read_trusted(z.clusters, key).select("unique_id", "person_id")
    linked = records.join(clusters, on="unique_id", how="inner")
    facts = {}
    for name in settings.sources:
        if z.facts(name).exists():
            facts[name] = (
                read_trusted(z.facts(name), key)
                .join(clusters, on="unique_id", how="inner")
                .drop("person_id")
            )
    log.info("assembling households on %s and publishing ...", settings.reference_date)
    tables = build_analysis_tables(
        linked,
        facts,
        reference_date=settings.reference_date,
        service_period_months=settings.service_period_months,
    )
    quality = linkage_quality_table(linked)
    contracts = {
        n: find_contract(settings.schemas_dir, s.contract, s.contract_version).tag
        for n, s in {**settings.sources, **settings.reference}.items()
    }
    metadata = {
        "run_id": run_id,
        "key_id": key.key_id,
        "key_epoch": key.epoch,
        "uprnlink_version": __version__,
        "reference_date": settings.reference_date.isoformat(),
        "service_period_months": settings.service_period_months,
        "contracts": contracts,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": {
            "people": tables.person.height,
            "households": int(tables.household.filter(~pl.col("is_communal")).height),
            "communal_establishments": int(tables.household.filter(pl.col("is_communal")).height),
            "memberships": tables.membership.height,
            "service_events": tables.service_events.height,
        },
    }
    from uprnlink.publish import releases

    staging = releases.begin(settings.out_dir, run_id)
    paths = write_linked_dataset(tables, quality, staging / "linked", metadata)
    policy = read_policy(settings.policy_path)
    # The database copies the staged Parquet into its own tables: it depends on no other file.
    write_database(staging / "uprnlink.duckdb", paths, metadata, policy)
    log.info("publication staged; it goes live when the run finishes")
    return {
        "metadata": metadata,
        "tables": sorted(paths),
        "staged": str(staging),
        "linked_dir": str(settings.linked_dir),
        "database": str(settings.database_path),
    }


def switch_release(config_path: str, run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Make this run's staged publication the live one in one atomic step, prune old releases
    and audit the publication."""
    from uprnlink.publish import releases

    settings = read_settings(Path(config_path))
    key = load_key(settings)
    previous = releases.current(settings.out_dir)
    final = releases.switch(settings.out_dir, run_id)
    pruned = releases.prune(settings.out_dir, keep_releases(settings))
    published = summary.get("published", {})
    audit_log(settings, key).append(
        "publish",
        actor=_actor(),
        data={
            "run_id": run_id,
            "release": final.name,
            "replaced": previous,
            "tables": published.get("tables", []),
            "counts": published.get("metadata", {}).get("counts", {}),
        },
    )
    log.info("release %s is live (previous: %s)", final.name, previous or "none")
    return {"release": final.name, "previous": previous, "pruned": pruned}


def keep_releases(settings: RunSettings) -> int:
    """How many published releases to keep on disk (governance policy [retention])."""
    from uprnlink.governance.retention import read_retention

    return read_retention(settings.policy_path).published_releases


def enforce_retention(
    settings: RunSettings, key: MasterKey, run_id: str, *, delete: bool | None = None
) -> dict[str, Any]:
    """Find the files past the policy's retention periods; delete them when the policy says
    `enforce = "delete"` (or `delete=True`), with one audit entry. Counts for the summary."""
    from uprnlink.governance.retention import apply_retention, find_expired, read_retention
    from uprnlink.governance.retention import retention_summary as summarise

    policy = read_retention(settings.policy_path)
    expired = find_expired(settings, policy)
    if delete is None:
        delete = policy.enforce == "delete"
    deleted = apply_retention(expired) if delete else []
    if deleted:
        audit_log(settings, key).append(
            "retention.deleted",
            actor=_actor(),
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
    return summarise(deleted if delete else expired, bool(deleted))


def finish_run(
    config_path: str, run_id: str, summary: dict[str, Any], status: str = "completed"
) -> Path:
    """Write the run summary (counts and timings only) and audit the end of the run."""
    settings = read_settings(Path(config_path))
    z = Zones(settings)
    z.runs.mkdir(parents=True, exist_ok=True)
    path = z.runs / f"{run_id}.json"
    key = load_key(settings)
    if status == "completed":
        summary["retention"] = enforce_retention(settings, key, run_id)
    path.write_text(
        json.dumps({"run_id": run_id, "status": status, **summary}, indent=2, default=str)
    )
    audit = audit_log(settings, key)
    ingest = [r for r in summary.get("ingest", []) if not r.get("skipped")]
    audit.append(
        "run.finished",
        actor=_actor(),
        data={
            "run_id": run_id,
            "status": status,
            "inputs": {r["source"]: r["checksum"] for r in ingest},
            "rows_in": {r["source"]: r["rows_in"] for r in ingest},
            "rows_quarantined": {r["source"]: r["rows_quarantined"] for r in ingest},
            "contracts": {r["source"]: r["contract"] for r in ingest},
            "changes": summary.get("changes", {}),
            **(
                {"failed_stage": summary["failed_stage"], "error": summary.get("error")}
                if status == "failed"
                else {}
            ),
        },
    )
    return path


def _actor() -> str:
    """Who is running this: the OS user on this host."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or str(os.getuid())
    return f"{user}@{platform.node()}"


def evaluate_run(settings: RunSettings, truth_dir: Path) -> dict[str, Any]:
    """Score the last run against synthetic ground truth; write evaluation.json beside outputs.

    Person clusters overall and per pair of sources, households on the reference date, and
    recall by age band, sex and mover status. The JSON holds counts and ratios only; the
    returned dict adds `print_table`, the same figures as text for a terminal.
    """
    from uprnlink.run.evaluation import evaluate_linkage, read_ground_truth

    z = Zones(settings)
    truth = read_ground_truth(truth_dir)
    key = load_key(settings)
    clusters = read_trusted(z.clusters, key).select("unique_id", "source_dataset", "person_id")
    crosswalk = pl.concat(
        [
            read_trusted(z.crosswalk(n), key).select("unique_id", "record_id")
            for n in settings.sources
            if z.crosswalk(n).exists()
        ]
    )
    membership_path = settings.linked_dir / "membership.parquet"
    membership = pl.read_parquet(membership_path) if membership_path.exists() else None
    evaluation = evaluate_linkage(
        clusters,
        crosswalk,
        truth,
        reference_date=settings.reference_date,
        membership=membership,
    )
    result = evaluation.to_dict()
    # The baselines linked the same records in the same run: score them the same way.
    from uprnlink.run.evaluation import label_clusters, pairwise_scores

    baselines: dict[str, Any] = {}
    table = evaluation.to_table()
    rows = [
        f"  {'model (uprnlink)':<34}{result['pairwise']['precision']:>10.4f}"
        f"{result['pairwise']['recall']:>8.4f}{result['pairwise']['f1']:>8.4f}"
    ]
    for path in sorted(z.linkage_dir.glob("baseline_*.parquet")):
        name = path.stem.removeprefix("baseline_")
        labelled = label_clusters(
            read_trusted(path, key).join(
                clusters.select("unique_id", "source_dataset"), on="unique_id"
            ),
            crosswalk,
            truth.records,
        )
        scores = pairwise_scores(labelled).to_dict()
        baselines[name] = scores
        rows.append(
            f"  {'baseline: ' + name:<34}{scores['precision']:>10.4f}"
            f"{scores['recall']:>8.4f}{scores['f1']:>8.4f}"
        )
    if baselines:
        result["baselines"] = baselines
        table += (
            "\n\nModel against baselines on the same records\n"
            f"  {'':<34}{'precision':>10}{'recall':>8}{'F1':>8}\n" + "\n".join(rows)
        )
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    return {**result, "print_table": table}


@dataclass(frozen=True)
class Steps:
    """The stage callables a run is made of, in the order `execute` calls them.

    `LOCAL_STEPS` calls the stage functions directly; the Prefect flow passes task-wrapped ones
    (and ingests the sources concurrently), so the stage order is written once, here.
    """

    clear_trusted: Callable[[str], None]
    start: Callable[[str, str], dict[str, Any]]
    ingest_reference: Callable[[str, str], list[dict[str, Any]]]
    ingest_sources: Callable[[str, list[str], str], list[dict[str, Any]]]
    link: Callable[[str, str, bool], dict[str, Any]]
    publish: Callable[[str, str, dict[str, Any]], dict[str, Any]]
    report: Callable[[str, dict[str, Any]], dict[str, str]]
    switch: Callable[[str, str, dict[str, Any]], dict[str, Any]]
    finish: Callable[[str, str, dict[str, Any]], Any]


#: The stages a run reports (and a failure names), in order.
STAGES = ("start", "ingest", "link", "publish", "report", "switch", "finish")


LOCAL_STEPS = Steps(
    clear_trusted=lambda config: clear_trusted_zone(read_settings(Path(config))),
    start=lambda config, run_id: start_run(config, run_id),
    ingest_reference=lambda config, run_id: ingest_reference_data(config, run_id),
    ingest_sources=lambda config, names, run_id: [
        ingest_person_source(config, n, run_id) for n in names
    ],
    link=lambda config, run_id, retrain: link_stage(config, run_id, retrain),
    publish=lambda config, run_id, summary: publish_outputs(config, run_id, summary),
    report=lambda config, summary: write_quality_report(config, summary),
    switch=lambda config, run_id, summary: switch_release(config, run_id, summary),
    finish=lambda config, run_id, summary: finish_run(config, run_id, summary),
)


def source_changes(ingest: list[dict[str, Any]]) -> dict[str, str]:
    """Per source: `ingested` (new or changed extract), `reused` (unchanged) or `skipped`."""
    out = {}
    for r in ingest:
        if r.get("skipped"):
            out[r["source"]] = "skipped"
        else:
            out[r["source"]] = "reused" if r.get("reused") else "ingested"
    return out


def execute(
    config_path: str,
    steps: Steps = LOCAL_STEPS,
    run_id: str | None = None,
    *,
    rebuild: bool = False,
    retrain: bool = False,
) -> dict[str, Any]:
    """Run every stage in order under the run lock; a failure leaves a summary naming the stage.

    Nothing is published until the `switch` stage, so a run that fails or is killed earlier
    leaves the previous release live, and the next run starts cleanly without manual clean-up.
    """
    from uprnlink.run.lock import run_lock

    run_id = run_id or new_run_id()
    settings = read_settings(Path(config_path))
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rebuild": rebuild,
    }
    stage = "start"
    t = time.perf_counter()

    def begin(name: str) -> None:
        nonlocal stage, t
        if stage != name:
            timings[stage] = round(time.perf_counter() - t, 2)
        stage, t = name, time.perf_counter()
        log.info("stage %d/%d: %s", STAGES.index(name) + 1, len(STAGES), name)

    with run_lock(Zones(settings).lock, run_id):
        try:
            begin("start")
            if rebuild:
                steps.clear_trusted(config_path)
            summary["run"] = steps.start(config_path, run_id)
            begin("ingest")
            summary["reference"] = steps.ingest_reference(config_path, run_id)
            summary["ingest"] = steps.ingest_sources(config_path, list(settings.sources), run_id)
            summary["changes"] = source_changes(summary["ingest"])
            begin("link")
            summary["linkage"] = steps.link(config_path, run_id, retrain)
            begin("publish")
            summary["published"] = steps.publish(config_path, run_id, summary)
            begin("report")
            summary["reports"] = steps.report(config_path, summary)
            begin("switch")
            summary["release"] = steps.switch(config_path, run_id, summary)
            begin("finish")
            summary["timings"] = timings
            summary["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            summary["summary_path"] = str(steps.finish(config_path, run_id, summary))
        except BaseException as exc:
            timings[stage] = round(time.perf_counter() - t, 2)
            summary["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            record_failure(config_path, run_id, stage, exc, {**summary, "timings": timings})
            raise
    return summary


def run_all(
    config_path: str, run_id: str | None = None, *, rebuild: bool = False, retrain: bool = False
) -> dict[str, Any]:
    """Run every stage in order without an orchestrator (tests, notebooks, other schedulers)."""
    return execute(config_path, LOCAL_STEPS, run_id, rebuild=rebuild, retrain=retrain)


def failure_reason(exc: BaseException) -> str:
    """A failure's message fit for logs and summaries: uprnlink errors carry no data values;
    anything else is reported by type only, as its text may quote data."""
    from uprnlink.errors import UprnlinkError

    return str(exc) if isinstance(exc, UprnlinkError) else type(exc).__name__


def record_failure(
    config_path: str, run_id: str, stage: str, exc: BaseException, summary: dict[str, Any]
) -> None:
    """Write a failed run's summary (which stage, why, what was kept) without masking the error."""
    from uprnlink.publish import releases

    settings = read_settings(Path(config_path))
    live = releases.current(settings.out_dir)
    summary = {
        **summary,
        "failed_stage": stage,
        "error": failure_reason(exc),
        "published_output": (
            f"unchanged: release {live} is still the live one"
            if live and live != run_id
            else ("this run's release went live before the failure" if live else "none yet")
        ),
        "kept": "the trusted zone keeps every source ingested before the failure; the next run "
        "reuses them and needs no clean-up",
    }
    try:
        finish_run(config_path, run_id, summary, status="failed")
    except Exception as inner:  # the key or folders may be the very thing that failed
        log.warning("could not record the failed run: %s", type(inner).__name__)


def write_quality_report(
    config_path: str, summary: dict[str, Any], evaluation: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write the linkage quality report: de-identified page in out/, engineer page in work/."""
    from uprnlink.publish.database import read_policy
    from uprnlink.reports.quality import build_quality_report

    settings = read_settings(Path(config_path))
    z = Zones(settings)
    key = load_key(settings)
    log.info("writing the linkage quality report ...")
    model_path = z.linkage_dir / "model.json"
    model = json.loads(model_path.read_text()) if model_path.exists() else {}
    records = read_trusted_records(settings, key)
    clusters = read_trusted(z.clusters, key)
    # Into the run's staged release when there is one (it goes live with the data), else into
    # the live release (a report rewritten after `uprnlink evaluate`).
    from uprnlink.publish import releases

    run_id = summary.get("run", {}).get("run_id")
    staged = releases.staging_dir(settings.out_dir, run_id) if run_id else None
    target = staged if staged is not None and staged.is_dir() else settings.out_dir
    out_path = target / "quality_report.html"
    engineer_path = z.linkage_dir / "quality_report_engineer.html"
    kwargs: dict[str, Any] = {
        "model": model,
        "records": records,
        "clusters": clusters,
        "run_summary": summary,
        "evaluation": evaluation,
        "min_count": read_policy(settings.policy_path).min_count,
    }
    try:
        build_quality_report(**kwargs, out_path=out_path, engineer_path=engineer_path)
        return {"quality_report": str(out_path), "engineer_report": str(engineer_path)}
    except PublishError:
        raise
    except Exception as exc:  # the engineer page is a convenience; the published page stands
        log.warning("engineer quality page not written: %s", type(exc).__name__)
    build_quality_report(**kwargs, out_path=out_path)
    return {"quality_report": str(out_path)}
