"""Person ids that stay the same across runs while the clusters behind them change.

A fresh run clusters records from scratch; analysts follow people by id from one publication to
the next. Each new cluster therefore inherits the previous id it shares the most records with,
and each previous id goes to at most one cluster, so a split keeps the id on its larger part and
a merge keeps the id of its larger contributor.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import duckdb
import polars as pl

from uprnlink.errors import LinkageError

MAX_REHASH = 100


@dataclass(frozen=True)
class IdChangeReport:
    """How person ids changed from the previous run to this one (counts only)."""

    kept: int  # new clusters that carry a previous id
    created: int  # new clusters with a new id
    merged: int  # new clusters holding records of two or more previous ids
    split: int  # previous ids whose records are now in two or more clusters
    retired: int  # previous ids no cluster carries any more

    def to_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for run summaries)."""
        return asdict(self)


def derived_id(value: str) -> str:
    """A new person id from the cluster's smallest record key (as `linkage.person_id_expr`)."""
    return "P" + hashlib.sha256(value.encode()).hexdigest()[:15]


def derived_ids(values: pl.Series) -> pl.Series:
    """`derived_id` of every value, vectorised (DuckDB's SHA-256 of the same UTF-8 bytes), for
    the millions of clusters a large run creates; nulls stay null."""
    con = duckdb.connect()
    try:
        con.register("keys", pl.DataFrame({"v": values.cast(pl.Utf8)}).to_arrow())
        out: pl.DataFrame = con.sql(
            "SELECT 'P' || substr(sha256(v), 1, 15) AS person_id FROM keys"
        ).pl()
    finally:
        con.close()
    return out.get_column("person_id").rename(values.name)


def _inherit(overlap: pl.DataFrame) -> pl.DataFrame:
    """Cluster -> previous id, greedily by overlap: each round every unassigned cluster proposes
    its best free previous id (most shared records, then smallest id) and each proposed id goes
    to its proposer with the most shared records (then the smallest record key)."""
    assigned = pl.DataFrame(
        schema={"cluster_key": overlap.schema["cluster_key"], "person_id": pl.Utf8}
    )
    free = overlap
    while free.height:
        proposals = (
            free.sort(["cluster_key", "n", "person_id"], descending=[False, True, False])
            .group_by("cluster_key", maintain_order=True)
            .first()
        )
        winners = (
            proposals.sort(["person_id", "n", "_min"], descending=[False, True, False])
            .group_by("person_id", maintain_order=True)
            .first()
            .select("cluster_key", "person_id")
        )
        assigned = pl.concat([assigned, winners])
        free = free.filter(
            ~pl.col("cluster_key").is_in(winners.get_column("cluster_key").implode())
            & ~pl.col("person_id").is_in(winners.get_column("person_id").implode())
        )
    return assigned


def _fresh_ids(minimums: pl.Series, previous: pl.Series) -> pl.Series:
    """Derived ids for new clusters, rehashed (key#1, key#2, ...) where one would reuse a
    previous id, so an id never comes to mean a different person."""
    first = derived_ids(minimums).rename("person_id")
    if first.n_unique() == first.len() and not first.is_in(previous.implode()).any():
        return first  # the usual case, checked in bulk
    taken = set(previous.to_list())
    ids = first.to_list()
    for i, value in enumerate(minimums.to_list()):
        n = 0
        while ids[i] in taken:
            n += 1
            if n > MAX_REHASH:
                raise LinkageError("could not derive a person id that is not already in use")
            ids[i] = derived_id(f"{value}#{n}")
        taken.add(ids[i])
    return pl.Series("person_id", ids, dtype=pl.Utf8)


def assign_stable_ids(
    new: pl.DataFrame, previous: pl.DataFrame | None
) -> tuple[pl.DataFrame, IdChangeReport]:
    """Person ids for new clusters (unique_id, cluster_key), carrying over the previous run's
    ids (unique_id, person_id) where the clusters overlap; returns unique_id, person_id in the
    order of `new` and a report of what changed."""
    new = new.select("unique_id", "cluster_key")
    canon = new.group_by("cluster_key").agg(pl.col("unique_id").min().alias("_min"))
    if previous is None:
        previous = pl.DataFrame(schema={"unique_id": pl.Utf8, "person_id": pl.Utf8})
    previous = previous.select("unique_id", pl.col("person_id").cast(pl.Utf8))
    overlap = (
        new.join(previous, on="unique_id", how="inner")
        .group_by("cluster_key", "person_id")
        .agg(pl.len().alias("n"))
        .join(canon, on="cluster_key")
    )
    kept = _inherit(overlap)
    fresh = canon.join(kept, on="cluster_key", how="anti").sort("_min")
    previous_ids = previous.get_column("person_id").unique()
    fresh = fresh.with_columns(_fresh_ids(fresh.get_column("_min"), previous_ids))
    mapping = pl.concat([kept, fresh.select("cluster_key", "person_id")])
    ids = new.join(mapping, on="cluster_key", how="left", maintain_order="left").select(
        "unique_id", "person_id"
    )
    merged = overlap.group_by("cluster_key").len().filter(pl.col("len") >= 2).height
    split = overlap.group_by("person_id").len().filter(pl.col("len") >= 2).height
    report = IdChangeReport(
        kept=kept.height,
        created=fresh.height,
        merged=merged,
        split=split,
        retired=previous_ids.len() - kept.height,
    )
    return ids, report
