"""The publish and switch stages: de-identified tables and the analyst database, staged, then
made live in one step."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl

from uprnlink import __version__
from uprnlink.governance.audit import actor, head_of, open_audit_log
from uprnlink.governance.retention import read_retention
from uprnlink.households.ages import bands_from
from uprnlink.households.evidence import confirmation_on
from uprnlink.households.residence import ResidenceRules
from uprnlink.households.tables import (
    AnalysisTables,
    build_analysis_tables,
    residence_rule_counts,
    single_person_share,
)
from uprnlink.ingest.addresses import trusted_records
from uprnlink.ingest.contracts import find_contract
from uprnlink.linkage.quality import source_quality_table
from uprnlink.privacy.keys import MasterKey, load_release_key, load_run_key
from uprnlink.privacy.release import record_keys, release_ids
from uprnlink.privacy.trusted import read_trusted, write_trusted
from uprnlink.publication import (
    NotSupplied,
    PublicationCounts,
    PublicationMetadata,
    ResidenceConfirmed,
)
from uprnlink.publish import releases
from uprnlink.publish.database import (
    DuckDBLimits,
    read_policy,
    write_analyst_database,
    write_database,
    write_linked_dataset,
)
from uprnlink.publish.releases import ANALYST_DATABASE, ENGINEER_DATABASE
from uprnlink.run_summary import PublishedRelease, ReleaseSwitch, RunSummary
from uprnlink.settings import RunSettings, read_settings
from uprnlink.zones import Zones

log = logging.getLogger("uprnlink")

#: Trusted record columns no household rule reads: linkage identifiers and the linkage quality
#: table's inputs (made first), dropped before the households are assembled (less memory).
NOT_FOR_HOUSEHOLDS = (
    "forename",
    "middle_names",
    "address_line_1",
    "area_from",
    "nhs_token",
    "uprn_token",
    "uprn_in_lookup",
)


def residence_rules(settings: RunSettings) -> ResidenceRules:
    """The households stage's evidence rules from the run config's `[households]`."""
    h = settings.households
    return ResidenceRules(
        visit_days=h.visit_days,
        stale_after_days=h.stale_after_days,
        move_sources=h.move_sources,
        learned_reliability=h.learned_reliability,
        single_person_discount=h.single_person_discount,
        single_person_min_share=h.single_person_min_share,
        superseded_accounts=h.superseded_accounts,
        care_homes=h.care_homes,
    )


def duckdb_limits(settings: RunSettings) -> DuckDBLimits:
    """The publish databases' DuckDB limits: the run's DuckDB memory cap and threads
    (`[linkage] memory_limit`, `threads`), spilling to the restricted work zone (the spill
    files hold published rows, and the staging folder goes live as it is)."""
    return DuckDBLimits(
        memory_limit=settings.linkage.memory_limit,
        threads=settings.linkage.threads,
        temp_dir=settings.work_dir / "duckdb_tmp" / "publish",
    )


def linkage_quality_table(linked: pl.DataFrame) -> pl.DataFrame:
    """Per source: records, people, and the shares linked to another source, with a UPRN, with a
    UPRN found in the lookup and with an NHS number (the published linkage_quality table)."""
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


def published_ids(settings: RunSettings, tables: AnalysisTables, key: MasterKey) -> AnalysisTables:
    """The tables with analyst-facing person and household ids (release key, project); the
    crosswalk to the internal ids goes to the trusted zone (engineer-only)."""
    frames, crosswalk = release_ids(
        {f.name: getattr(tables, f.name) for f in fields(tables)},
        load_release_key(settings),
        settings.release.project,
    )
    write_trusted(crosswalk, Zones(settings).release_ids, key)
    return AnalysisTables(
        person=frames["person"].sort("person_id"),
        household=frames["household"].sort("household_id"),
        membership=frames["membership"].sort("person_id", "valid_from"),
        service_events=frames["service_events"].sort("event_date", "person_id"),
        household_area=frames["household_area"].sort("household_id"),
    )


def unit_record_keys(settings: RunSettings, tables: AnalysisTables) -> pl.DataFrame:
    """Every published person and household id's record keys (cell-key perturbation)."""
    ids = pl.concat(
        [
            tables.person.get_column("person_id").cast(pl.String),
            tables.household.get_column("household_id").cast(pl.String),
            tables.membership.get_column("household_id").cast(pl.String),
        ]
    )
    return record_keys(ids, load_release_key(settings), settings.release.project)


def linked_inputs(
    settings: RunSettings, key: MasterKey
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], pl.DataFrame]:
    """The trusted records with their person ids, less the columns no household rule reads
    (`NOT_FOR_HOUSEHOLDS`); each source's facts of linked records; and the linkage quality
    table (made before those columns go). The whole trusted records and clusters are freed on
    return."""
    z = Zones(settings)
    records = trusted_records(settings, key).records
    clusters = read_trusted(z.clusters, key).select("unique_id", "person_id")
    linked = records.join(clusters, on="unique_id", how="inner")
    del records
    quality = linkage_quality_table(linked)
    linked = linked.drop(*NOT_FOR_HOUSEHOLDS, strict=False)
    facts = {
        name: read_trusted(z.facts(name), key)
        .join(clusters, on="unique_id", how="inner")
        .drop("person_id")
        for name in settings.sources
        if z.facts(name).exists()
    }
    return linked, facts, quality


@dataclass(frozen=True)
class ResidenceEvidence:
    """What the publication records of the residence evidence, taken from the linked records
    before they are freed."""

    confirmed: tuple[ResidenceConfirmed, ...]
    discount_share: float | None
    rules: dict[str, float | int]


def residence_evidence(
    settings: RunSettings, linked: pl.DataFrame, facts: dict[str, pl.DataFrame]
) -> ResidenceEvidence:
    """Per source, the people it places on the reference date and how many of them another
    source places at the same address that day (households.evidence); and the share of single
    person discounts no other open account contradicts (the discount rule applies at or above
    [households] single_person_min_share; None: no discounts); and what the superseded
    accounts and care homes rules act on (`residence_rule_counts`)."""
    on = settings.reference_date
    confirmed = confirmation_on(linked, on, settings.households.visit_days)
    share = single_person_share(linked, facts)
    return ResidenceEvidence(
        confirmed=tuple(cast(list[ResidenceConfirmed], confirmed.to_dicts())),
        discount_share=None if share is None else round(share, 4),
        rules=residence_rule_counts(linked, facts, on, residence_rules(settings)),
    )


def publication_counts(tables: AnalysisTables) -> PublicationCounts:
    """Rows published per table (private households and communal establishments apart)."""
    communal = pl.col("is_communal")
    return PublicationCounts(
        people=tables.person.height,
        households=int(tables.household.filter(~communal).height),
        communal_establishments=int(tables.household.filter(communal).height),
        memberships=tables.membership.height,
        service_events=tables.service_events.height,
    )


def publication_metadata(
    settings: RunSettings,
    run_id: str,
    key: MasterKey,
    not_supplied: NotSupplied,
    *,
    evidence: ResidenceEvidence,
    tables: AnalysisTables,
) -> PublicationMetadata:
    """What this publication records about itself: run, keys, versions, contracts, what was not
    supplied, residence evidence and row counts."""
    contracts = {
        n: find_contract(settings.schemas_dir, s.contract, s.contract_version).tag
        for n, s in {**settings.sources, **settings.reference}.items()
    }
    return PublicationMetadata(
        run_id=run_id,
        key_id=key.key_id,
        key_epoch=key.epoch,
        release_key_id=load_release_key(settings).key_id,
        project=settings.release.project,
        uprnlink_version=__version__,
        reference_date=settings.reference_date,
        service_period_months=settings.service_period_months,
        contracts=contracts,
        not_supplied=not_supplied,
        residence_confirmed=evidence.confirmed,
        single_person_discount_share=evidence.discount_share,
        residence_rules=evidence.rules,
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts=publication_counts(tables),
    )


def publish_outputs(config_path: str, run_id: str, summary: RunSummary) -> PublishedRelease:
    """Assemble the de-identified tables and switch the published dataset and database in."""
    settings = read_settings(Path(config_path))
    key = load_run_key(settings)
    linked, facts, quality = linked_inputs(settings, key)
    log.info("assembling households on %s and publishing ...", settings.reference_date)
    policy = read_policy(settings.policy_path)
    evidence = residence_evidence(settings, linked, facts)
    tables = build_analysis_tables(
        linked,
        facts,
        reference_date=settings.reference_date,
        service_period_months=settings.service_period_months,
        age_bands=bands_from(policy.age_bands),
        death_end_precision=policy.death_end_precision,
        rules=residence_rules(settings),
        confirmed={r["source_dataset"]: r["share"] for r in evidence.confirmed},
    )
    del linked, facts  # each whole-population frame goes once its last reader is done
    # Sources and fields this release had no data for (their columns are typed nulls).
    not_supplied = summary.not_supplied or NotSupplied(sources=[], fields={})
    tables = published_ids(settings, tables, key)
    metadata = publication_metadata(
        settings, run_id, key, not_supplied, evidence=evidence, tables=tables
    )
    staging = releases.begin(settings.out_dir, run_id)
    paths = write_linked_dataset(tables, quality, staging / "linked", metadata)
    unit_keys = unit_record_keys(settings, tables)
    del tables  # the databases read the staged Parquet, not these frames
    # The engineers' database copies the staged Parquet into its own tables (it depends on no
    # other file); the analysts' holds only what their views show. Separate files, separate
    # permissions: analysts reach theirs through the query service only. Both run in DuckDB
    # under the run's memory cap, spilling beyond it.
    engineer_db = staging / ENGINEER_DATABASE
    limits = duckdb_limits(settings)
    published = write_database(
        engineer_db, paths, metadata, policy, record_keys=unit_keys, limits=limits
    )
    del unit_keys
    analyst_tables = write_analyst_database(
        engineer_db, staging / ANALYST_DATABASE, policy, limits=limits
    )
    os.chmod(staging / "linked", 0o700)
    risk = published.disclosure["uniqueness"]
    warn_uniqueness(risk)
    log.info("publication staged; it goes live when the run finishes")
    return PublishedRelease(
        disclosure_risk=risk,
        metadata=metadata.to_dict(),
        tables=sorted(paths),
        staged=str(staging),
        linked_dir=str(settings.linked_dir),
        database=str(settings.database_path),
        engineer_database=str(settings.engineer_database_path),
        analyst_tables=analyst_tables,
    )


def warn_uniqueness(risk: dict[str, Any]) -> None:
    """One console line when more people or households are unique on what analysts see than
    the policy allows (counts and shares only)."""
    above = risk.get("above") or []
    if not above:
        return
    shares = ", ".join(
        f"{risk[k]['share']:.1%} of {k} ({risk[k]['unique']:,} of {risk[k]['of']:,})" for k in above
    )
    log.warning(
        "disclosure risk: %s are unique on the quasi-identifiers analysts see, above the "
        "policy's max_unique_share %.1f%%; record-level views need output checking "
        "(governance/roles.md)",
        shares,
        100 * float(risk["max_unique_share"]),
    )


def switch_release(config_path: str, run_id: str, summary: RunSummary) -> ReleaseSwitch:
    """Make this run's staged publication the live one in one atomic step, prune old releases
    and audit the publication."""
    settings = read_settings(Path(config_path))
    previous = releases.current(settings.out_dir)
    final = releases.switch(settings.out_dir, run_id)
    pruned = releases.prune(settings.out_dir, keep_releases(settings))
    published = summary.published
    entry = open_audit_log(settings).append(
        "publish",
        actor=actor(),
        data={
            "run_id": run_id,
            "release": final.name,
            "replaced": previous,
            "tables": published["tables"] if published else [],
            "counts": summary.counts,
            "disclosure_risk": published["disclosure_risk"] if published else {},
        },
    )
    # The release keeps the log's head: a log later cut short no longer holds it.
    (final / "audit_head.json").write_text(json.dumps({"audit_head": head_of(entry)}))
    log.info("release %s is live (previous: %s)", final.name, previous or "none")
    return ReleaseSwitch(release=final.name, previous=previous, pruned=pruned)


def keep_releases(settings: RunSettings) -> int:
    """How many published releases to keep on disk (governance policy [retention])."""
    return read_retention(settings.policy_path).published_releases
