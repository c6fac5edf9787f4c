"""The ingest stage: reference lookups and each source's extract into the trusted zone.

Each extract is validated against its contract, standardised, enriched with the area lookup on
its raw UPRN and pseudonymised in memory; only tokens and linkage quasi-identifiers are written.
An extract unchanged since its last ingest (same checksum, contract, mapping, reference data and
key) is reused, not read again."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import polars as pl

from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest import manifest
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.manifest import REFERENCE_ENTRY, reference_fingerprint
from uprnlink.ingest.readers import file_checksum
from uprnlink.ingest.validate import ingest_extract, validate_extract, write_quarantine
from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.records import build_reference, build_trusted_source
from uprnlink.privacy.trusted import write_trusted
from uprnlink.publication import NotSupplied
from uprnlink.run_summary import SourceReport
from uprnlink.settings import RunSettings, read_settings
from uprnlink.sources import PERSON_SOURCES
from uprnlink.zones import Zones

log = logging.getLogger("uprnlink")


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


def ingest_reference_data(config_path: str, run_id: str | None = None) -> list[SourceReport]:
    """Validate the reference files and write the UPRN area lookup (restricted zone).

    Unchanged reference files (same checksums, contracts and mappings as the manifest records)
    are not read again: the lookup built from them last time is reused.
    """
    settings = read_settings(Path(config_path))
    z = Zones(settings)
    reference_fp = reference_fingerprint(settings)
    entry = manifest.read_entry(settings.trusted_dir, REFERENCE_ENTRY)
    if entry is not None and entry.get("fingerprint") == reference_fp and z.reference.exists():
        log.info("reference lookups unchanged since run %s: reused", entry.get("run_id"))
        return [{**cast(SourceReport, r), "reused": True} for r in entry.get("reports", [])]
    manifest.drop_entry(settings.trusted_dir, REFERENCE_ENTRY)
    frames: dict[str, pl.DataFrame | None] = {
        n: None for n in ("uprn_lookup", "property_class", "deprivation")
    }
    reports: list[SourceReport] = []
    for name, source in settings.reference.items():
        if not source.path.exists() and not source.required:
            log.warning("optional reference file %s is absent: skipped", source.path.name)
            continue
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        accepted, quarantined, report = ingest_extract(source, contract, settings.reference_date)
        write_quarantine(quarantined, z.quarantine(f"reference_{name}"))
        frames[contract.name] = accepted
        reports.append({**cast(SourceReport, report.to_dict()), "reused": False})
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
) -> SourceReport:
    """Validate, standardise, enrich and pseudonymise one source into the trusted zone.

    An extract whose checksum, contract, mapping, reference data and key are all as the
    manifest recorded for the files already in the trusted zone is not ingested again (an
    unchanged or re-delivered extract): its report is returned marked `reused`.
    """
    settings = read_settings(Path(config_path))
    if source_name not in settings.sources:
        raise ConfigError(f"no source {source_name!r} in {settings.config_path}")
    z = Zones(settings)
    source = settings.sources[source_name]
    if not source.path.exists():
        return skip_missing_extract(settings, source_name)
    contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
    started = time.perf_counter()
    key = load_run_key(settings)
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
        last = cast(SourceReport, entry["report"])
        return {**last, "reused": True, "ingested_in_run": entry.get("run_id")}
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
    out = cast(SourceReport, report.to_dict())
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


def skip_missing_extract(settings: RunSettings, source_name: str) -> SourceReport:
    """A source with no extract: a required one is a ContractError; an optional one gets empty
    trusted-zone files and is reported `skipped`."""
    source = settings.sources[source_name]
    if source.required:
        raise ContractError(
            f"source {source_name!r} is configured but its extract is missing",
            file=str(source.path),
            rule="file_missing",
        )
    log.warning("optional source %s has no extract: skipped", source_name)
    manifest.drop_entry(settings.trusted_dir, source_name)
    write_empty_source(settings, source_name)
    return SourceReport(source=source_name, skipped="no extract (optional source)", reused=False)


def not_supplied(settings: RunSettings, reports: Sequence[SourceReport]) -> NotSupplied:
    """What this run had no data for: person sources not configured or with no extract, and
    per source the contract fields its mapping does not supply (their columns are typed nulls
    all the way to the views)."""
    configured = {s.contract for s in settings.sources.values()}
    skipped = sorted(r["source"] for r in reports if r.get("skipped"))
    fields = {
        r["source"]: list(r.get("fields_not_supplied", []))
        for r in reports
        if not r.get("skipped") and r.get("fields_not_supplied")
    }
    return NotSupplied(
        sources=sorted({*(c for c in PERSON_SOURCES if c not in configured), *skipped}),
        fields=fields,
    )


def write_empty_source(settings: RunSettings, source_name: str) -> None:
    """Trusted-zone files with no rows (but the source's own columns) for an optional source
    that sent no extract, so every later stage sees an empty source rather than a missing one."""
    z = Zones(settings)
    source = settings.sources[source_name]
    contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
    raw = pl.DataFrame(schema=dict.fromkeys(source.file_columns(), pl.Utf8))
    accepted, _, _ = validate_extract(raw, source, contract, settings.reference_date)
    key = load_run_key(settings)
    trusted = build_trusted_source(accepted, source_name, pl.read_parquet(z.reference), key)
    for path, frame in (
        (z.records(source_name), trusted.records),
        (z.facts(source_name), trusted.facts),
        (z.crosswalk(source_name), trusted.crosswalk),
    ):
        write_trusted(frame, path, key)
