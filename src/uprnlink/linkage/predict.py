"""Scoring and clustering: distinct identifier profiles are scored once, in slices, and
clustered into people."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.linkage.backends import DuckDBLinkage, SparkLinkage, linkage_backend
from uprnlink.linkage.blocking import derived_block_cap, split_blocks, with_split_rules
from uprnlink.linkage.clustering import cluster_records
from uprnlink.linkage.comparisons import ADDRESS_COLUMN
from uprnlink.linkage.constraints import CannotLinkReport, apply_cannot_link, profile_listings
from uprnlink.linkage.coresidence import (
    CORESIDENT_COLUMNS,
    MOVER_COLUMNS,
    CoresidenceReport,
    link_companions,
    link_coresidents,
    link_movers,
)
from uprnlink.linkage.incremental import (
    KEY_COLUMNS,
    Increment,
    ScoredPairs,
    fresh_last,
    original_numbers,
    plan_increment,
    profile_blocks,
    rescaled_pairs,
    scored_pairs,
    settled_pairs,
    term_frequencies,
    tf_weights,
    with_fresh_rules,
)
from uprnlink.linkage.model import (
    FULL_IDENTIFIERS,
    LINKAGE_COLUMNS,
    PERIOD_COLUMNS,
    address_text_expr,
    blocking_rule_sqls,
    check_records,
    compared_columns,
    comparison_names,
    forename_roots,
    identifiers_present,
    model_artefact,
    period_exprs,
    reusable_model,
    rule_specs,
    settings_dict,
    settings_fingerprint,
    settings_json,
    splink_records,
    train_model,
    with_parameters,
)
from uprnlink.linkage.review import (
    labelled_profile_pairs,
    labelled_scores,
    labelled_threshold,
    match_label_records,
    must_link_pairs,
    review_floor,
    select_review_pairs,
    with_must_links,
)
from uprnlink.linkage.threshold import (
    AUTO_FLOOR,
    ThresholdChoice,
    choose_threshold,
    merge_histograms,
)
from uprnlink.progress import Progress, timed
from uprnlink.settings import LinkageSettings

log = logging.getLogger(__name__)

#: The profile columns clustering, the cannot-link rules and the co-residence passes read: once
#: the backend holds the profiles for scoring, the polars copy keeps only these.
CLUSTERED_COLUMNS = MOVER_COLUMNS


@dataclass
class LinkageResult:
    """Clusters (record -> person) and what it took to get them."""

    clusters: pl.DataFrame  # unique_id, source_dataset, person_id
    records: int
    people: int
    candidate_pairs: int
    pairs_above_threshold: int
    match_threshold: float
    model: dict[str, Any]  # MODEL_VERSION header + the Splink model JSON (see model_artefact)
    seconds: dict[str, float] = field(default_factory=dict)
    model_trained: bool = True  # False when a saved model was reused
    blocking: list[dict[str, Any]] = field(default_factory=list)
    profiles: int = 0  # distinct identifier profiles scored (see linkage_profiles)
    # The expected-F1 operating point read from the scored pairs (uprnlink.linkage.threshold).
    threshold_choice: dict[str, Any] | None = None
    # What the cannot-link rules split (uprnlink.linkage.constraints), counts by rule.
    cannot_link: dict[str, Any] | None = None
    # What the co-residence pass linked (uprnlink.linkage.coresidence), counts.
    coresidence: dict[str, Any] | None = None
    # What the model was built from: the identifiers the records carry, and so its comparisons,
    # blocking rules and training steps (uprnlink.linkage.model.identifiers_present).
    identifiers: list[str] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)
    training: list[str] = field(default_factory=list)
    # Pairs for clerical review (unique_id_l, unique_id_r: record keys; match_probability,
    # reason), and how many reviewers' labels this run applied (uprnlink.linkage.review).
    review: pl.DataFrame | None = None
    labels_applied: dict[str, int] | None = None
    # Every pair kept from prediction, by profile key, for the next link to reuse
    # (uprnlink.linkage.incremental), and what this link reused (None: a full link).
    scored: ScoredPairs | None = None
    incremental: dict[str, int] | None = None


def person_id_expr(col: str = "cluster_id") -> pl.Expr:
    """A person id derived from the cluster's smallest record key (already a keyed token)."""
    from uprnlink.linkage.stable_ids import derived_ids

    return pl.col(col).map_batches(derived_ids, return_dtype=pl.Utf8)


def with_person_ids(clusters: pl.DataFrame) -> pl.DataFrame:
    """Replace cluster_id by the person id of the cluster's smallest record key."""
    canonical = (
        clusters.group_by("cluster_id")
        .agg(pl.col("unique_id").min().alias("_min"))
        .select("cluster_id", person_id_expr("_min").alias("person_id"))
    )
    return clusters.join(canonical, on="cluster_id", how="left").drop("cluster_id")


# What Splink compares. Records agreeing on all of these get identical comparison vectors
# against every other record, so they are scored once, as one profile.
PROFILE_COLUMNS = (*LINKAGE_COLUMNS[2:], "period_start", "period_end")


def profile_columns(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> tuple[str, ...]:
    """The columns a profile is made of for these identifiers (`PROFILE_COLUMNS`, and the
    address as written where it is compared)."""
    return (*compared_columns(identifiers), "period_start", "period_end")


def linkage_profiles(
    records: pl.DataFrame,
    listings: pl.DataFrame | None = None,
    identifiers: frozenset[str] = FULL_IDENTIFIERS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Distinct identifier profiles, and the profile of every record.

    Hospital activity repeats a patient's identifiers at every attendance, and other sources
    hold the same person twice: linking each distinct combination once, then expanding, cuts the
    records Splink scores by about a tenth and the pairs sharing an NHS number by half.

    Two records on one account, tenancy or claim (`listings`, see
    `uprnlink.linkage.constraints`) that agree on every compared value still get a profile each:
    they may be two people (a father and son on one account, neither with a date of birth), and
    one profile could not be split between them.

    Returns `profiles` (unique_id: a profile number 0..n-1, the same for the same records in
    every run; the compared columns, forename roots, move_next and the profile's key
    `KEY_COLUMNS`, which does not depend on the other records) and `members` (unique_id,
    source_dataset, profile) with one row per record.
    """
    columns = profile_columns(identifiers)
    compared = pl.struct(columns)
    address = [address_text_expr()] if ADDRESS_COLUMN in columns else []
    keyed = (
        records.lazy()
        .select("unique_id", "source_dataset", *compared_columns(identifiers), *PERIOD_COLUMNS)
        .with_columns(*period_exprs()[:2], *address)
        .drop(PERIOD_COLUMNS)
        # Two independent 64-bit hashes of the compared values: grouping on them is several
        # times faster than on nine nullable columns, and a collision (about 1e-27 at a
        # million profiles) is out of reach.
        .with_columns(compared.hash(seed=1).alias("_h1"), compared.hash(seed=2).alias("_h2"))
        .collect()
    )
    if listings is not None and listings.height:
        alike = (
            listings.select("unique_id", "listing")
            .join(keyed.select("unique_id", "_h1", "_h2"), on="unique_id")
            .filter(pl.len().over("listing", "_h1", "_h2") > 1)
            .select("unique_id")
            .unique()
            .with_columns(pl.lit(True).alias("_alone"))
        )
        if alike.height:
            own = pl.col("_alone").fill_null(False)
            keyed = (
                keyed.join(alike, on="unique_id", how="left", maintain_order="left")
                .with_columns(
                    pl.when(own)
                    .then(pl.struct("_h1", "unique_id").hash(seed=3))
                    .otherwise(pl.col("_h1"))
                    .alias("_h1")
                )
                .drop("_alone")
            )
    # Sorted by hash, each profile's records are adjacent: numbering the first of each run
    # gives dense, reproducible profile numbers without sorting or grouping on strings.
    ordered = (
        keyed.sort("_h1", "_h2")
        .with_columns(pl.struct("_h1", "_h2").is_first_distinct().alias("_new"))
        .with_columns((pl.col("_new").cum_sum() - 1).cast(pl.Int64).alias("profile"))
    )
    members = ordered.select("unique_id", "source_dataset", "profile")
    profiles = ordered.filter(pl.col("_new")).select(
        pl.col("profile").alias("unique_id"),
        *columns,
        (pl.col("period_end") + timedelta(days=1)).alias("move_next"),
        *(pl.col(h).alias(k) for h, k in zip(("_h1", "_h2"), KEY_COLUMNS, strict=True)),
    )
    profiles = profiles.with_columns(forename_roots(profiles.get_column("forename")))
    return profiles, members


def _apply_labels(
    review_labels: pl.DataFrame | None, members: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int] | None]:
    """Reviewers' labels as profile pairs (a, b, label), the non-match ones (a, b) and counts
    (None when there are no labels)."""
    empty = pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "label": pl.Utf8})
    if review_labels is None or review_labels.height == 0:
        return empty, empty.drop("label"), None
    labelled = labelled_profile_pairs(review_labels, members)
    applied = {
        "labels": review_labels.height,
        "match": labelled.filter(pl.col("label") == "match").height,
        "non_match": labelled.filter(pl.col("label") == "non_match").height,
    }
    applied["not_applied"] = applied["labels"] - applied["match"] - applied["non_match"]
    log.info(
        "linkage: clerical labels applied: %d must-link, %d cannot-link (%d name no pair of "
        "distinct profiles in these records)",
        applied["match"],
        applied["non_match"],
        applied["not_applied"],
    )
    clerical = labelled.filter(pl.col("label") == "non_match").select("a", "b")
    return labelled, clerical, applied


def review_record_pairs(chosen: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Profile pairs chosen for review (a, b, match_probability, reason) as pairs of records:
    each profile shown by its smallest record key (every record of a profile agrees on all the
    compared values)."""
    shown = members.group_by("profile").agg(pl.col("unique_id").min().alias("key"))
    return (
        chosen.join(
            shown.rename({"profile": "a", "key": "unique_id_l"}), on="a", maintain_order="left"
        )
        .join(shown.rename({"profile": "b", "key": "unique_id_r"}), on="b", maintain_order="left")
        .select("unique_id_l", "unique_id_r", "match_probability", "reason")
    )


def _predict(
    linker: Any,
    backend: DuckDBLinkage | SparkLinkage,
    threshold: float,
    chunks: int,
    histograms: list[pl.DataFrame] | None = None,
    identifiers: frozenset[str] = FULL_IDENTIFIERS,
) -> tuple[pl.DataFrame, list[dict[str, Any]], int]:
    """Score every blocked pair, `chunks` slices of the profiles at a time (bounded memory,
    progress with an estimate); returns the pairs at or above `threshold`, the pairs each
    blocking rule added and the number of pairs scored."""
    progress = Progress("linkage: scoring pairs", chunks, "slices of the profiles")
    by_rule: dict[str, int] = {}
    kept = []
    for chunk in range(1, chunks + 1):
        with backend.progress(f"linkage: scoring slice {chunk}/{chunks}"):
            predictions = linker.inference.predict_chunk(
                left_chunk=(chunk, chunks), right_chunk=(1, 1), warning_mode="never"
            )
        counts, above = backend.scored(predictions, threshold)
        if histograms is not None:
            histograms.append(backend.histogram(predictions))
        predictions.drop_table_from_database_and_remove_from_cache()
        for rule, n in counts.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
        kept.append(above)
        progress.advance(note=f"{sum(counts.values()):,} pairs scored, {above.height:,} kept")
    rules = blocking_rule_sqls(identifiers)
    blocking, cumulative = [], 0
    for i, rule in enumerate(rules):
        cumulative += by_rule.get(str(i), 0)
        blocking.append(
            {
                "rule": rule,
                "marginal_pairs": by_rule.get(str(i), 0),
                "cumulative_pairs": cumulative,
                "estimate": False,
            }
        )
    return pl.concat(kept), blocking, cumulative


def _coresidence_pass(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    members: pl.DataFrame,
    listings: pl.DataFrame | None,
    movers: bool = True,
) -> tuple[pl.DataFrame, CoresidenceReport]:
    """The co-residence pass (uprnlink.linkage.coresidence) on the profile clusters, then the
    mover and companion passes when `movers` is set and the profiles carry surnames, logged."""
    sources = members.select(pl.col("profile").alias("unique_id"), "source_dataset").unique()
    labels, report = link_coresidents(
        labels,
        profiles.select(
            *CORESIDENT_COLUMNS, *(["surname"] if "surname" in profiles.columns else [])
        ),
        listings,
        sources,
    )
    log.info(
        "linkage: co-residence pass: %s of %s lone records without a date of birth joined "
        "the one co-resident of their name (%s ambiguous, %s another stay, %s refused "
        "by the rules)",
        f"{report.linked:,}",
        f"{report.candidates:,}",
        f"{report.ambiguous:,}",
        f"{report.other_stay:,}",
        f"{report.refused:,}",
    )
    if movers and set(MOVER_COLUMNS) <= set(profiles.columns):
        labels = link_movers(labels, profiles.select(*MOVER_COLUMNS), report, listings, sources)
        log.info(
            "linkage: mover pass: %s records without a date of birth (alone, or in a small "
            "cluster without one) joined the one person of their name whose stay elsewhere "
            "follows on (%s ambiguous, %s held an account elsewhere, %s refused by the rules)",
            f"{report.movers:,}",
            f"{report.movers_ambiguous:,}",
            f"{report.movers_elsewhere:,}",
            f"{report.movers_refused:,}",
        )
        labels = link_companions(labels, profiles.select(*MOVER_COLUMNS), report, listings, sources)
        log.info(
            "linkage: companion pass: %s lone records without a date of birth joined the one "
            "person of their name living with a co-party of their account elsewhere (%s ambiguous)",
            f"{report.companions:,}",
            f"{report.companions_ambiguous:,}",
        )
    return labels, report


@dataclass
class LinkInputs:
    """What linkage keeps of the records once their profiles are made (`link_inputs`): the
    profiles and each record's profile, the model to reuse (`saved`, its parameters, and
    `model`, its artefact; `saved` None: train one), the records training reads (a sample of
    at most `max_training_records`; None with a saved model, and released once trained), the
    match labels it learns from and the reviewers' labels. Scoring then needs no record, so a
    caller that drops its records holds only these while DuckDB scores; once the backend
    holds the profiles, `profiles` keeps only `CLUSTERED_COLUMNS`."""

    records: int
    profiles: pl.DataFrame
    members: pl.DataFrame
    identifiers: frozenset[str]
    creator: dict[str, Any]
    fingerprint: str
    model: dict[str, Any] | None
    saved: dict[str, Any] | None
    training: pl.DataFrame | None
    taught: pl.DataFrame | None
    review_labels: pl.DataFrame | None
    listings: pl.DataFrame | None
    seconds: dict[str, float]


def link_inputs(
    records: pl.DataFrame,
    settings: LinkageSettings,
    *,
    model: dict[str, Any] | None = None,
    retrain: bool = False,
    listings: pl.DataFrame | None = None,
    review_labels: pl.DataFrame | None = None,
) -> LinkInputs:
    """The records' profiles, the model to reuse or the training sample, and the labels
    (`LinkInputs`): everything `link_profiles` needs from the records. Arguments as for
    `link_people`."""
    check_records(records, LINKAGE_COLUMNS)
    identifiers = identifiers_present(records)
    timings: dict[str, float] = {}
    if not settings.cannot_link:
        listings = None
    profiles, members = _profiles(records, listings, identifiers, settings, timings)
    creator = settings_dict(settings.match_threshold, identifiers)
    fingerprint = settings_fingerprint(settings_json(creator))
    taught = _training_labels(settings, review_labels, records)
    fresh = retrain or (model or {}).get("trained_on_labels") != _labels_digest(taught)
    saved = None if fresh else reusable_model(model, fingerprint)
    training = (
        training_sample(records, settings.max_training_records, settings.seed)
        if saved is None
        else None
    )
    return LinkInputs(
        records=records.height,
        profiles=profiles,
        members=members,
        identifiers=identifiers,
        creator=creator,
        fingerprint=fingerprint,
        model=model,
        saved=saved,
        training=training,
        taught=taught,
        review_labels=review_labels,
        listings=listings,
        seconds=timings,
    )


def link_people(
    records: pl.DataFrame,
    settings: LinkageSettings,
    *,
    work_dir: Path,
    model: dict[str, Any] | None = None,
    retrain: bool = False,
    listings: pl.DataFrame | None = None,
    review_labels: pl.DataFrame | None = None,
    previous: ScoredPairs | None = None,
) -> LinkageResult:
    """Predict pairs and cluster the records into people, with a saved model when it fits.

    `model` is an artefact from an earlier `LinkageResult.model`; it is reused unless `retrain`
    is set or it was built for another MODEL_VERSION or settings fingerprint, in which case a
    model is trained on these records. `listings` (unique_id, listing, start, end, role: who is
    on which account, tenancy or claim, and when) feed the cannot-link rules, which run when
    `settings.cannot_link` is set. `review_labels` (unique_id_l, unique_id_r, label: the
    reviewers' current labels on record keys) add match labels as must-link pairs and
    non-match labels as cannot-link pairs (rule `clerical`). `previous` (the last link's
    pairs, scored with this model) makes the link incremental when few profiles are new.

    Along Splink's own seams: profiles and the training sample (`link_inputs`), then
    `link_profiles`: training (or the saved model) and inference in one backend session
    (`_score`), the threshold (`_pick_threshold`), clustering with the cannot-link rules and
    the co-residence pass (`_cluster`), then person ids.
    """
    inputs = link_inputs(
        records,
        settings,
        model=model,
        retrain=retrain,
        listings=listings,
        review_labels=review_labels,
    )
    return link_profiles(inputs, settings, work_dir=work_dir, previous=previous)


def link_profiles(
    inputs: LinkInputs,
    settings: LinkageSettings,
    *,
    work_dir: Path,
    previous: ScoredPairs | None = None,
) -> LinkageResult:
    """`link_people` from the records' `LinkInputs`: scoring, clustering and person ids need
    no record."""
    timings = dict(inputs.seconds)
    scored = _score(inputs, settings, work_dir, timings, previous)
    profiles, members, listings = inputs.profiles, inputs.members, inputs.listings
    review_labels = inputs.review_labels
    threshold, choice, pairs, below = _pick_threshold(settings, scored)
    if settings.train_from_labels == "threshold" and review_labels is not None:
        threshold, pairs, below = _label_threshold(review_labels, members, threshold, pairs, below)
    labelled, clerical, applied = _apply_labels(review_labels, members)
    pairs = with_must_links(pairs, must_link_pairs(labelled, pairs))
    by_profile, report, coresidence = _cluster(
        profiles, members, pairs, threshold, settings, listings, clerical, timings
    )
    review = review_record_pairs(select_review_pairs(pairs, below, by_profile, threshold), members)
    clusters = _person_ids(members, by_profile, timings)
    return LinkageResult(
        clusters=clusters,
        records=inputs.records,
        people=clusters.get_column("person_id").n_unique(),
        candidate_pairs=scored.n_scored,
        pairs_above_threshold=pairs.height,
        match_threshold=threshold,
        model=scored.artefact,
        seconds=timings,
        model_trained=inputs.saved is None,
        blocking=scored.blocking,
        profiles=profiles.height,
        threshold_choice=choice.to_dict() if choice is not None else None,
        cannot_link=report.to_dict() if report is not None else None,
        coresidence=coresidence.to_dict() if coresidence is not None else None,
        identifiers=sorted(inputs.identifiers),
        comparisons=comparison_names(inputs.identifiers),
        training=scored.training,
        review=review,
        labels_applied=applied,
        scored=scored.state,
        incremental=scored.increment,
    )


def _profiles(
    records: pl.DataFrame,
    listings: pl.DataFrame | None,
    identifiers: frozenset[str],
    settings: LinkageSettings,
    timings: dict[str, float],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The records' distinct identifier profiles and each record's profile
    (`linkage_profiles`), timed and logged."""
    t0 = time.perf_counter()
    profiles, members = linkage_profiles(records, listings, identifiers)
    timings["profiles"] = round(time.perf_counter() - t0, 2)
    log.info(
        "linkage: %s records hold %s distinct identifier profiles (%s backend)",
        f"{records.height:,}",
        f"{profiles.height:,}",
        settings.backend,
    )
    log.info("linkage: identifiers carried: %s", ", ".join(sorted(identifiers)))
    return profiles, members


def _training_labels(
    settings: LinkageSettings, review_labels: pl.DataFrame | None, records: pl.DataFrame
) -> pl.DataFrame | None:
    """The match labels training uses (`train_from_labels = "m"`, Splink's pairwise labels
    table on record keys), or None when it uses none."""
    if settings.train_from_labels != "m":
        return None
    taught = match_label_records(review_labels, records.get_column("unique_id"))
    return taught if taught.height else None


def _labels_digest(taught: pl.DataFrame | None) -> str | None:
    """What a model was trained on beyond the records (the match labels' SHA-256), so a saved
    model is reused only for the same labels; None without labels (a model as before)."""
    if taught is None:
        return None
    rows = sorted(f"{a}|{b}" for a, b in taught.select("unique_id_l", "unique_id_r").iter_rows())
    return "sha256:" + hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _label_threshold(
    review_labels: pl.DataFrame,
    members: pl.DataFrame,
    threshold: float,
    pairs: pl.DataFrame,
    below: pl.DataFrame,
) -> tuple[float, pl.DataFrame, pl.DataFrame]:
    """`train_from_labels = "threshold"`: the clustering threshold moved to where it best
    separates the near-threshold labels (`labelled_threshold`), and the pairs at or above it
    and just below it."""
    everything = pl.concat([pairs, below])
    moved = labelled_threshold(labelled_scores(review_labels, members, everything), threshold)
    log.info("linkage: clerical labels place the threshold at %.4f (was %.4f)", moved, threshold)
    if moved == threshold:
        return threshold, pairs, below
    at_or_above = pl.col("match_probability") >= moved
    return moved, everything.filter(at_or_above), everything.filter(~at_or_above)


def _person_ids(
    members: pl.DataFrame, by_profile: pl.DataFrame, timings: dict[str, float]
) -> pl.DataFrame:
    """Each record's person id from its profile's cluster (unique_id, source_dataset,
    person_id); the time is added to the clustering's."""
    t5 = time.perf_counter()
    with timed("linkage: person ids"):
        clusters = members.join(
            by_profile.rename({"unique_id": "profile"}), on="profile", how="left"
        ).drop("profile")
        clusters = with_person_ids(clusters).select("unique_id", "source_dataset", "person_id")
    timings["cluster"] = round(timings["cluster"] + time.perf_counter() - t5, 2)
    return clusters


@dataclass
class _Scored:
    """What one backend session gives: the model, the pairs kept, the pairs just below (for
    review) and the score histograms (for the threshold)."""

    artefact: dict[str, Any]
    training: list[str]
    pairs: pl.DataFrame
    below: pl.DataFrame
    blocking: list[dict[str, Any]]
    n_scored: int
    histograms: list[pl.DataFrame]
    state: ScoredPairs  # every pair kept from prediction, by profile key (for the next link)
    increment: dict[str, int] | None = None  # counts, when the link was incremental


def _score(
    inputs: LinkInputs,
    settings: LinkageSettings,
    work_dir: Path,
    timings: dict[str, float],
    previous: ScoredPairs | None = None,
) -> _Scored:
    """Train a model on the training records (or load the saved one), then score the profiles'
    pairs (with `previous` pairs that still hold, only those of new profiles), in one session.
    The training records are released once trained (`inputs.training` is None after)."""
    from splink import Linker

    profiles, identifiers, creator, saved = (
        inputs.profiles, inputs.identifiers, inputs.creator, inputs.saved
    )  # fmt: skip
    backend = linkage_backend(settings, work_dir)
    try:
        t1 = time.perf_counter()
        reuse = previous if saved is not None else None
        blocked = _blocked_profiles(profiles, settings, identifiers, creator, reuse, inputs.records)
        split, increment = blocked.split, blocked.increment
        sdf = backend.register(blocked.profiles, "profiles")
        blocked.profiles = blocked.profiles.clear()
        # Scoring reads the backend's copy; clustering and its passes read only these.
        inputs.profiles = profiles = profiles.select(
            c for c in CLUSTERED_COLUMNS if c in profiles.columns
        )
        template = with_split_rules(settings_json(creator, backend.dialect), split)
        if increment is not None:
            template = with_fresh_rules(template)
        parameters, artefact, training = _model_parameters(inputs, backend, settings)
        linker = Linker(sdf, with_parameters(template, parameters), log_level=logging.ERROR)
        timings["load_model" if saved is not None else "train"] = round(time.perf_counter() - t1, 2)

        t2 = time.perf_counter()
        n_profiles = profiles.height
        chunks = max(1, -(-n_profiles // settings.predict_chunk_records))
        retain = _retained(settings)
        histograms: list[pl.DataFrame] = []
        floor = min(retain, review_floor(retain))
        # What clustering reads next waits on disk while DuckDB scores, not beside its buffers.
        del profiles
        aside = _set_aside(inputs, blocked, work_dir / ASIDE_DIR)
        pairs, blocking, n_scored = _predict(
            linker, backend, floor, chunks, histograms, identifiers
        )
        for entry, rule_split in zip(blocking, split, strict=True):
            entry.update(rule_split)
        # Scoring is done: DuckDB's memory goes before the pairs are settled and kept (at 4.9M
        # records the run's peak was here, DuckDB's buffers beside polars' copies).
        backend.close()
        _take_back(aside, inputs, blocked)
        if increment is not None:
            found = original_numbers(pairs, n_profiles).drop("match_probability")
            pairs = pl.concat([increment.kept, found], how="vertical_relaxed")
        # One order and one value whatever Splink's threads or an incremental link gave:
        # clustering and its passes then see the same pairs in the same order.
        pairs = settled_pairs(pairs.select("unique_id_l", "unique_id_r", "match_weight"), floor)
        state = scored_pairs(blocked.current, pairs, blocked.frequencies, identifiers)
        pairs = pairs.drop("match_weight")
        below = pairs.filter(pl.col("match_probability") < retain)
        pairs = pairs.filter(pl.col("match_probability") >= retain)
        timings["predict"] = round(time.perf_counter() - t2, 2)
    finally:
        backend.close()
        shutil.rmtree(work_dir / ASIDE_DIR, ignore_errors=True)
    counts = increment.counts(n_scored) if increment is not None else None
    return _Scored(artefact, training, pairs, below, blocking, n_scored, histograms, state, counts)


def _model_parameters(
    inputs: LinkInputs,
    backend: DuckDBLinkage | SparkLinkage,
    settings: LinkageSettings,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The parameters to score with, the model artefact to keep and the training steps taken:
    the saved model's, or trained now on the training sample (released once trained)."""
    if inputs.saved is not None:
        assert inputs.model is not None
        return inputs.saved, inputs.model, []
    assert inputs.training is not None
    sample, inputs.training = inputs.training, None
    trained, training = _train(
        backend, sample, settings, inputs.identifiers, inputs.creator, inputs.taught
    )
    del sample
    canonical = with_parameters(settings_json(inputs.creator), trained)
    artefact = model_artefact(canonical, inputs.fingerprint, inputs.records)
    if inputs.taught is not None:
        artefact["trained_on_labels"] = _labels_digest(inputs.taught)
    return trained, artefact, training


#: The linkage work folder's subfolder holding what clustering reads while DuckDB scores.
ASIDE_DIR = "aside"


def _set_aside(inputs: LinkInputs, blocked: _Blocked, folder: Path) -> dict[str, Path]:
    """Write the frames clustering reads after scoring (the profiles, each record's profile,
    the listings, each profile's blocks) to Parquet under `folder` and leave their empty
    shells in their place: at 15M records they were 3 GB of the link stage's peak beside
    DuckDB's buffers. `_take_back` reads them back, identical."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = {"profiles": inputs.profiles, "members": inputs.members, "current": blocked.current}
    if inputs.listings is not None:
        frames["listings"] = inputs.listings
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / f"{name}.parquet"
        frame.write_parquet(paths[name], compression="lz4")
    inputs.profiles, inputs.members = inputs.profiles.clear(), inputs.members.clear()
    blocked.current = blocked.current.clear()
    if inputs.listings is not None:
        inputs.listings = inputs.listings.clear()
    return paths


def _take_back(paths: dict[str, Path], inputs: LinkInputs, blocked: _Blocked) -> None:
    """Read back what `_set_aside` wrote (`_score` removes the folder). Each frame comes back in
    one chunk, as it went (joins and groups on the 40 chunks of a Parquet read were slower: at 5M
    records clustering and its passes took 6 s more)."""
    frames = {name: pl.read_parquet(path).rechunk() for name, path in paths.items()}
    inputs.profiles, inputs.members = frames["profiles"], frames["members"]
    blocked.current = frames["current"]
    if "listings" in frames:
        inputs.listings = frames["listings"]


@dataclass
class _Blocked:
    """The profiles as Splink scores them (`_split_blocks`; with a `FRESH` column when the
    link is incremental), what was split and each rule's cap, each profile's key and blocks
    (`profile_blocks`), the term frequencies of the adjusted columns and the increment over
    the last link (None for a full link)."""

    profiles: pl.DataFrame
    split: list[dict[str, Any]]
    current: pl.DataFrame
    frequencies: pl.DataFrame
    increment: Increment | None


def training_sample(records: pl.DataFrame, most: int, seed: int) -> pl.DataFrame:
    """At most `most` of the records (all when `most` is 0 or more than there are): those with
    the lowest hash of their record key, so the same records are drawn whatever their order
    (with the same polars: its hash is not promised across versions).

    Every record is drawn with the same chance, whatever it agrees with, so a pair of records
    is kept with the same chance too: the share of matching pairs (lambda) and the m and u
    probabilities of the sample's pairs estimate the whole delivery's. Training time and memory
    then stop growing with the delivery (at 2M records training read every record into
    DuckDB)."""
    if most == 0 or records.height <= most:
        return records
    rank = pl.col("unique_id").hash(seed=seed)
    return records.filter(rank <= rank.bottom_k(most).max())


def _train(
    backend: DuckDBLinkage | SparkLinkage,
    records: pl.DataFrame,
    settings: LinkageSettings,
    identifiers: frozenset[str],
    creator: dict[str, Any],
    taught: pl.DataFrame | None,
) -> tuple[dict[str, Any], list[str]]:
    """The trained parameters and the training steps taken, on the records themselves (and
    the match labels in `taught`, with `train_from_labels = "m"`).

    The parameters describe pairs of records (on 1M synthetic records, training on profiles
    instead lost 0.0004 precision and 0.0008 recall); every training step samples, and a
    delivery of more than `max_training_records` trains on a sample of them
    (`training_sample`, drawn by `link_inputs`), so this stays bounded."""
    training_records = splink_records(records, identifiers=identifiers)
    table = backend.register(training_records, "records")
    one_thread = backend.repeatable() if settings.repeatable_training else nullcontext()
    labels = None if taught is None else backend.register(taught, "clerical_labels")
    with backend.progress("linkage: training"), one_thread:
        trained, training = train_model(
            table, creator, settings, identifiers, training_records,
            None if labels is None or taught is None else (labels, taught.height),
        )  # fmt: skip
    del training_records
    for registered in (table, labels):
        if registered is not None:
            backend.release(registered)
    return trained, training


def _blocked_profiles(
    profiles: pl.DataFrame,
    settings: LinkageSettings,
    identifiers: frozenset[str],
    creator: dict[str, Any],
    previous: ScoredPairs | None,
    records: int,
) -> _Blocked:
    """The profiles blocked for scoring (a pair budget counted per record of the `records`),
    incrementally over `previous` when it fits."""
    blocked, split = _split_blocks(profiles.drop(KEY_COLUMNS), settings, identifiers, records)
    current = profile_blocks(profiles, blocked, len(split))
    weights = tf_weights(settings_json(creator))
    frequencies = term_frequencies(profiles, weights or {})
    increment = _increment(current, previous, settings, identifiers, weights is not None)
    if increment is not None and previous is not None:
        blocked = fresh_last(blocked, increment.fresh)
        moved = rescaled_pairs(
            increment.kept, profiles, weights or {}, previous.frequencies, frequencies
        )
        increment = replace(increment, kept=moved)
    return _Blocked(blocked, split, current, frequencies, increment)


def _increment(
    current: pl.DataFrame,
    previous: ScoredPairs | None,
    settings: LinkageSettings,
    identifiers: frozenset[str],
    rescalable: bool = True,
) -> Increment | None:
    """The increment over the last link's pairs, or None (a full link) when there are none to
    reuse, the backend is not DuckDB (the incremental path is verified there only), the link
    chooses its threshold from all scored pairs, the identifiers changed, a term-frequency
    adjustment cannot be rescaled (`tf_weights`) or more than `incremental_max_new` of the
    profiles are new; the path taken is logged."""
    if previous is None:
        return None
    refusal = None
    if settings.backend != "duckdb":
        refusal = f"incremental links are verified on DuckDB only, not {settings.backend}"
    elif settings.threshold_mode == "auto":
        refusal = "the threshold is chosen from every scored pair (threshold_mode auto)"
    elif previous.identifiers != tuple(sorted(identifiers)):
        refusal = "the identifiers the records carry changed"
    elif not rescalable:
        refusal = "a term-frequency adjustment that kept pairs cannot be rescaled for"
    if refusal is not None:
        log.info("linkage: full link (%s)", refusal)
        return None
    increment = plan_increment(current, previous)
    share = increment.new_profiles / max(1, current.height)
    if share > settings.incremental_max_new:
        log.info(
            "linkage: full link (%.1f%% of the profiles are new, over incremental_max_new %.1f%%)",
            100 * share,
            100 * settings.incremental_max_new,
        )
        return None
    log.info(
        "linkage: incremental link: %s new profiles (%.1f%%) scored against all %s, %s gone; "
        "%s pairs of the last link kept",
        f"{increment.new_profiles:,}",
        100 * share,
        f"{current.height:,}",
        f"{increment.dropped_profiles:,}",
        f"{increment.kept.height:,}",
    )
    return increment


def _split_blocks(
    profiles: pl.DataFrame, settings: LinkageSettings, identifiers: frozenset[str], records: int
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The profiles with the refining columns of every rule with a block over its cap
    (configured, or derived from these profiles; lowered where the rules' pairs exceed
    `pair_budget` pairs per record), and per rule what was split and its cap."""
    cap = settings.block_cap or derived_block_cap(profiles)
    budget = round(settings.pair_budget * records) if settings.pair_budget else None
    with timed(f"linkage: blocks over {cap} profiles split"):
        blocked, split = split_blocks(profiles, rule_specs(identifiers), cap, budget)
    log.info(
        "linkage: blocking cap %d profiles (lowest %d): %s blocks split, %s still over it%s",
        cap,
        min(s["block_cap"] for s in split),
        f"{sum(s['blocks_split'] for s in split):,}",
        f"{sum(s['blocks_over_cap'] for s in split):,}",
        ""
        if budget is None
        else f"; {sum(s['estimated_pairs'] or 0 for s in split):,} pairs for a budget of "
        f"{budget:,}",
    )
    return blocked, split


def _retained(settings: LinkageSettings) -> float:
    """The lowest match probability kept from prediction (with `auto`, low enough for any
    threshold the data may choose)."""
    if settings.threshold_mode == "auto":
        return min(settings.match_threshold, AUTO_FLOOR)
    return settings.match_threshold


def _pick_threshold(
    settings: LinkageSettings, scored: _Scored
) -> tuple[float, ThresholdChoice | None, pl.DataFrame, pl.DataFrame]:
    """The clustering threshold (configured, or with `auto` where the model's expected F1
    peaks), and the pairs at or above it and just below it."""
    auto = settings.threshold_mode == "auto"
    choice = choose_threshold(merge_histograms(scored.histograms))
    threshold = settings.match_threshold
    pairs, below = scored.pairs, scored.below
    if auto and choice is not None:
        threshold = choice.threshold
        below = pl.concat([below, pairs.filter(pl.col("match_probability") < threshold)])
        pairs = pairs.filter(pl.col("match_probability") >= threshold)
    if choice is not None:
        log.info(
            "linkage: the model's expected F1 peaks at threshold %.4f (expected precision %.4f, "
            "recall %.4f); clustering at %.4f (%s)",
            choice.threshold,
            choice.expected_precision,
            choice.expected_recall,
            threshold,
            "chosen from the data" if auto and threshold == choice.threshold else "configured",
        )
    return threshold, choice, pairs, below


def _cluster(
    profiles: pl.DataFrame,
    members: pl.DataFrame,
    pairs: pl.DataFrame,
    threshold: float,
    settings: LinkageSettings,
    listings: pl.DataFrame | None,
    clerical: pl.DataFrame,
    timings: dict[str, float],
) -> tuple[pl.DataFrame, CannotLinkReport | None, CoresidenceReport | None]:
    """Profiles clustered on the pairs, split where the cannot-link rules (and clerical
    non-match labels) object, then the co-residence pass: (by profile, report, co-residence)."""
    t3 = time.perf_counter()
    with timed(f"linkage: clustering {profiles.height:,} profiles on {pairs.height:,} pairs"):
        complete = profiles.select(
            "unique_id",
            (pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()).alias("complete"),
        )
        by_profile = cluster_records(complete, pairs, threshold)
    timings["cluster"] = round(time.perf_counter() - t3, 2)
    report: CannotLinkReport | None = None
    node_listings = profile_listings(listings, members) if listings is not None else None
    if settings.cannot_link or clerical.height:
        t4 = time.perf_counter()
        by_profile, report = apply_cannot_link(
            by_profile,
            profiles.select("unique_id", "nhs_token", "dob", "forename").join(
                complete, on="unique_id"
            ),
            pairs,
            threshold,
            node_listings,
            clerical,
        )
        report.seconds = round(time.perf_counter() - t4, 2)
        timings["cannot_link"] = report.seconds
        log.info(
            "linkage: cannot-link rules split %s clusters into %s more people (%s)",
            f"{report.clusters_in_conflict:,}",
            f"{report.people_added:,}",
            ", ".join(f"{rule} {n:,}" for rule, n in report.by_rule.items()),
        )
    coresidence: CoresidenceReport | None = None
    if settings.coresidence:
        t6 = time.perf_counter()
        by_profile, coresidence = _coresidence_pass(
            by_profile, profiles, members, node_listings, settings.coresidence_moves
        )
        timings["coresidence"] = round(time.perf_counter() - t6, 2)
    return by_profile, report, coresidence
