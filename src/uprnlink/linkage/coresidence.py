"""The co-residence pass: records that carry too little to link on their own (a council tax
party with a name and an address, no date of birth or NHS number) join the one person who
lived at the same property, under the same forename, at the same time.

The model scores such a record on its names and address alone, so a liable adult filed under
another surname (married, or a previous name the council never updated) stays alone even when a
resident of the same pseudonymised UPRN with the same forename was registered there over the
same months. The pass is guarded so that it cannot join two people:

* only a record left alone by clustering (its own cluster) with no date of birth and no NHS
  number, at a UPRN token, with a forename and a residence period, is a candidate;
* it joins a cluster that holds a record with a date of birth or an NHS number, at the same
  UPRN token with the same forename, whose residence period overlaps the candidate's;
* exactly one such cluster, or nothing (two Helens at the address: no link);
* and never where the cannot-link rules (`uprnlink.linkage.constraints`) would then find a
  conflict in the cluster (two people on one account at once).

It works on identifier profiles (`uprnlink.linkage.predict.linkage_profiles`), after the
cannot-link rules, and reports counts only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from uprnlink.linkage.constraints import conflict_pairs

_NODE = ("uprn_token", "forename", "period_start", "period_end")
#: The profile columns the pass reads.
CORESIDENT_COLUMNS = ("unique_id", "dob", "nhs_token", *_NODE)


@dataclass
class CoresidenceReport:
    """What the co-residence pass did (counts only)."""

    candidates: int = 0  # alone, no date of birth or NHS number, at a UPRN with a period
    linked: int = 0  # joined the one co-resident of that forename
    ambiguous: int = 0  # more than one such co-resident: left alone
    refused: int = 0  # the cannot-link rules would have found a conflict: left alone

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return asdict(self)


def overlap_expr(start: str, end: str, other_start: str, other_end: str) -> pl.Expr:
    """Two periods (an open end runs on) share at least one day."""
    return (pl.col(end).is_null() | (pl.col(other_start) <= pl.col(end))) & (
        pl.col(other_end).is_null() | (pl.col(start) <= pl.col(other_end))
    )


def coresident_matches(labels: pl.DataFrame, profiles: pl.DataFrame) -> pl.DataFrame:
    """For each candidate (a profile alone in its cluster with no date of birth or NHS number),
    the clusters holding a complete profile at the same UPRN token with the same forename over
    an overlapping period: unique_id, cluster_id (the target), targets (how many clusters
    qualify)."""
    nodes = labels.join(profiles, on="unique_id", how="inner")
    known = [pl.col(c).is_not_null() for c in _NODE[:3]]
    complete = pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()
    alone = pl.len().over("cluster_id") == 1
    candidates = nodes.filter(alone & ~complete, *known).select("unique_id", *_NODE)
    anchored = nodes.filter(complete.any().over("cluster_id"), *known).select(
        "cluster_id",
        "uprn_token",
        "forename",
        pl.col("period_start").alias("other_start"),
        pl.col("period_end").alias("other_end"),
    )
    found = (
        candidates.join(anchored, on=["uprn_token", "forename"])
        .filter(overlap_expr("period_start", "period_end", "other_start", "other_end"))
        .select("unique_id", "cluster_id")
        .unique()
    )
    return found.with_columns(pl.len().over("unique_id").alias("targets"))


def link_coresidents(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    listings: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, CoresidenceReport]:
    """Clusters (unique_id, cluster_id) with each lone incomplete profile moved into the one
    cluster of a co-resident of the same forename (see the module docstring for the guards).

    `profiles` has unique_id, forename, dob, nhs_token, uprn_token, period_start, period_end;
    `listings` (unique_id, listing, start, end, role) are the profiles' accounts, tenancies and
    claims for the cannot-link check, or None.
    """
    nodes = labels.join(profiles, on="unique_id", how="inner")
    complete = pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()
    report = CoresidenceReport(
        candidates=nodes.filter(
            (pl.len().over("cluster_id") == 1) & ~complete,
            *[pl.col(c).is_not_null() for c in _NODE[:3]],
        ).height
    )
    matches = coresident_matches(labels, profiles)
    report.ambiguous = matches.filter(pl.col("targets") > 1).get_column("unique_id").n_unique()
    moves = matches.filter(pl.col("targets") == 1).select(
        "unique_id", pl.col("cluster_id").alias("_to")
    )
    if moves.height == 0:
        return labels, report
    dtype = labels.schema["cluster_id"]
    moved = (
        labels.join(moves, on="unique_id", how="left")
        .with_columns(pl.coalesce("_to", "cluster_id").cast(dtype).alias("cluster_id"))
        .drop("_to")
    )
    attributes = profiles.select("unique_id", "nhs_token", "dob")
    touched = moved.filter(pl.col("cluster_id").is_in(moves.get_column("_to").implode()))
    conflicts = conflict_pairs(touched, attributes, listings)
    refused = pl.concat([conflicts.get_column("a"), conflicts.get_column("b")]).unique()
    refused_moves = moves.filter(pl.col("unique_id").is_in(refused.implode()))
    report.refused = refused_moves.height
    report.linked = moves.height - report.refused
    if report.refused:
        moves = moves.filter(~pl.col("unique_id").is_in(refused.implode()))
        moved = (
            labels.join(moves, on="unique_id", how="left")
            .with_columns(pl.coalesce("_to", "cluster_id").cast(dtype).alias("cluster_id"))
            .drop("_to")
        )
    return moved, report
