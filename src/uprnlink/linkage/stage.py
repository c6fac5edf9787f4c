"""The link stage: all sources' trusted records into people (record -> person id clusters)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import polars as pl

from uprnlink.errors import KeyManagementError
from uprnlink.ingest import manifest
from uprnlink.ingest.addresses import trusted_records
from uprnlink.ingest.readers import file_checksum
from uprnlink.linkage.baselines import deterministic_clusters, plain_splink_clusters
from uprnlink.linkage.constraints import LISTING_FIELDS, RULES_VERSION, listing_frame
from uprnlink.linkage.coresidence import PASSES_VERSION
from uprnlink.linkage.incremental import STATE_FORMAT, read_scored_pairs, write_scored_pairs
from uprnlink.linkage.model import COMPARED_COLUMNS, MODEL_VERSION, current_fingerprint
from uprnlink.linkage.predict import LinkageResult, link_inputs, link_profiles
from uprnlink.linkage.review import REVIEW_RECORD_COLUMNS, review_queue_frame
from uprnlink.linkage.stable_ids import IdChangeReport, assign_stable_ids
from uprnlink.privacy.keys import MasterKey, load_run_key
from uprnlink.privacy.trusted import read_trusted, read_trusted_records, write_trusted
from uprnlink.review import current_labels, read_labels
from uprnlink.run_summary import BaselineRecord, LinkSummary, ModelRecord, ReviewRecord
from uprnlink.settings import RunSettings, read_settings
from uprnlink.zones import Zones

log = logging.getLogger("uprnlink")


def link_records(
    config_path: str,
    retrain: bool = False,
    *,
    baselines: bool = True,
    run_id: str | None = None,
) -> LinkSummary:
    """Link and deduplicate people across all sources; write record -> person clusters.

    The saved model (`trusted/linkage/model.json`) is reused unless `retrain` is set or the
    model definition changed; person ids carry over from the previous clusters where the
    clusters overlap. With `baselines`, the deterministic and plain-Splink baselines are written
    beside the clusters for the evaluation to compare.
    """

    settings = read_settings(Path(config_path))
    z = Zones(settings)
    key = load_run_key(settings)
    # Only what linkage compares is read and stays in memory while Splink runs.
    matches = trusted_records(settings, key, COMPARED_COLUMNS)
    records, addresses_matched = matches.records, matches.matched
    del matches
    labels = current_labels(read_labels(z, key.key_id))
    log.info("linking %d records from %d sources ...", records.height, len(settings.sources))
    z.linkage_dir.mkdir(parents=True, exist_ok=True)
    model_path = z.linkage_dir / "model.json"
    saved = json.loads(model_path.read_text()) if model_path.exists() else None
    previous = None
    if not retrain and settings.linkage.incremental_max_new > 0:
        previous = read_scored_pairs(z.linkage_dir, key, scoring_basis(settings))
    inputs = link_inputs(
        records,
        settings.linkage,
        model=saved,
        retrain=retrain,
        listings=read_listings(settings, key, records),
        review_labels=labels if labels.height else None,
    )
    # Scoring needs only the profiles: the records go before DuckDB takes its memory (at 15M
    # records they were 3 GB of the link stage's peak) and are read again for what follows.
    del records
    result = link_profiles(inputs, settings.linkage, work_dir=z.linkage_dir, previous=previous)
    del previous, inputs
    if result.review is not None:
        shown = read_trusted_records(settings, key, REVIEW_RECORD_COLUMNS)
        write_trusted(review_queue_frame(result.review, shown), z.review_queue, key)
    if result.model_trained:
        write_model(result.model, z.linkage_dir, run_id)
    if result.scored is not None:
        write_scored_pairs(result.scored, z.linkage_dir, key, scoring_basis(settings))
    report = write_clusters(result, z, key)
    summary = link_summary(result, report, settings.linkage.threshold_mode, retrain)
    summary["addresses_matched"] = addresses_matched
    if result.incremental is not None:
        summary["incremental"] = result.incremental
    log.info(
        "linked into %d people (%s model; ids kept %d, created %d)",
        result.people,
        "trained" if result.model_trained else "reused",
        report.kept,
        report.created,
    )
    if baselines and settings.linkage.baselines:
        log.info("linking the same records with the two baselines ...")
        records = trusted_records(settings, key, COMPARED_COLUMNS).records
        summary["baselines"] = write_baselines(records, settings, key)
    shutil.rmtree(z.linkage_dir / "duckdb_tmp", ignore_errors=True)
    return summary


def write_clusters(result: LinkageResult, z: Zones, key: MasterKey) -> IdChangeReport:
    """Give the clusters stable person ids (carried over from the previous clusters where they
    overlap) and write them to the trusted zone; returns how the ids changed."""
    t = time.perf_counter()
    ids, report = assign_stable_ids(
        result.clusters.select("unique_id", pl.col("person_id").alias("cluster_key")),
        read_previous_clusters(z.clusters, key),
    )
    clusters = result.clusters.drop("person_id").join(ids, on="unique_id", how="left")
    result.seconds["stable_ids"] = round(time.perf_counter() - t, 2)
    write_trusted(clusters, z.clusters, key)
    return report


def link_summary(
    result: LinkageResult, ids: IdChangeReport, threshold_mode: str, retrain: bool
) -> LinkSummary:
    """The link stage's record of one link (counts, threshold, model, id changes, timings)."""
    review = ReviewRecord(queued=result.review.height if result.review is not None else 0)
    if result.labels_applied is not None:
        review["labels_applied"] = result.labels_applied
    return LinkSummary(
        records=result.records,
        profiles=result.profiles,
        people=result.people,
        candidate_pairs=result.candidate_pairs,
        pairs_above_threshold=result.pairs_above_threshold,
        match_threshold=result.match_threshold,
        threshold_mode=threshold_mode,
        threshold_choice=result.threshold_choice,
        identifiers=result.identifiers,
        comparisons=result.comparisons,
        training=result.training,
        retrain=retrain,
        model=ModelRecord(
            trained=result.model_trained,
            trained_at=result.model.get("trained_at"),
            records_trained_on=result.model.get("records_trained_on"),
            settings_fingerprint=result.model.get("settings_fingerprint"),
        ),
        ids=ids.to_dict(),
        seconds=result.seconds,
        blocking=result.blocking,
        cannot_link=result.cannot_link,
        review=review,
        coresidence=result.coresidence,
    )


def read_listings(
    settings: RunSettings, key: MasterKey, records: pl.DataFrame
) -> pl.DataFrame | None:
    """Who is on which council tax account, tenancy or claim, and when (for the cannot-link
    rules), from the trusted facts of the sources whose contracts have accounts."""
    z = Zones(settings)
    frames = []
    for name, source in settings.sources.items():
        if source.contract not in LISTING_FIELDS or not z.facts(name).exists():
            continue
        facts = read_trusted(z.facts(name), key)
        periods = records.filter(pl.col("source_dataset") == name)
        found = listing_frame(name, facts, periods, source.contract)
        if found is not None:
            frames.append(found)
    return pl.concat(frames) if frames else None


def _linkage_inputs(settings: RunSettings) -> str:
    """Digest of what linkage reads: every source's manifest fingerprint, the linkage
    settings, the saved model and the version of the model definition and cannot-link rules."""
    z = Zones(settings)
    model_path = z.linkage_dir / "model.json"
    labels = read_labels(z)
    # New labels link afresh (as do labels retention removed); with none the fingerprint is
    # what it was before reviews existed.
    reviewed = {"labels": labels.hash_rows().sum()} if labels.height else {}
    return manifest.fingerprint(
        {
            **reviewed,
            "sources": {
                n: (manifest.read_entry(settings.trusted_dir, n) or {}).get("fingerprint")
                for n in sorted(settings.sources)
            },
            "linkage": asdict(settings.linkage),
            "model": file_checksum(model_path) if model_path.exists() else None,
            # New code that compares or clusters differently links afresh.
            "definition": [
                MODEL_VERSION,
                current_fingerprint(settings.linkage),
                RULES_VERSION,
                PASSES_VERSION,
            ],
        }
    )


# The linkage settings a kept pair depends on: how it is scored and which pairs are kept. The
# blocks (block_cap) are not among them: each profile's refining values are kept with it, and
# a profile whose blocks changed is scored afresh (uprnlink.linkage.incremental).
_SCORING_SETTINGS = ("backend", "match_threshold", "threshold_mode")


def scoring_basis(settings: RunSettings) -> str:
    """Digest of what a scored pair depends on besides its two profiles: the saved model, the
    settings that choose and score pairs, the versions of the model definition and cannot-link
    rules, and the libraries that key the profiles (polars' hashes) and score them (Splink)."""
    model_path = Zones(settings).linkage_dir / "model.json"
    chosen = {name: getattr(settings.linkage, name) for name in _SCORING_SETTINGS}
    return manifest.fingerprint(
        {
            "linkage": chosen,
            "model": file_checksum(model_path) if model_path.exists() else None,
            "definition": [MODEL_VERSION, current_fingerprint(settings.linkage), RULES_VERSION],
            "libraries": [pl.__version__, version("splink")],
            "format": STATE_FORMAT,
        }
    )


def link_stage(config_path: str, run_id: str | None = None, retrain: bool = False) -> LinkSummary:
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
        last = cast(LinkSummary, previous["summary"])
        return {**last, "reused": True, "linked_in_run": previous["run_id"]}
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


def write_baselines(
    records: pl.DataFrame, settings: RunSettings, key: MasterKey
) -> dict[str, BaselineRecord]:
    """Cluster the records with each baseline method and write `baseline_<name>.parquet` beside
    the clusters; returns people and seconds per baseline."""
    z = Zones(settings)
    out: dict[str, BaselineRecord] = {}
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
        out[name] = BaselineRecord(
            people=clusters.get_column("person_id").n_unique(),
            seconds=round(time.perf_counter() - t, 2),
        )
    return out
