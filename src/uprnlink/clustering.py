"""Turning scored record pairs into people, without letting incomplete records bridge people.

Connected components over every pair above the threshold let one record that lacks a date of
birth and an NHS number (a council tax party, say) join two people it resembles equally, such as
a mother and daughter of the same name at one address. Here records with a date of birth or an
NHS number ("complete") are clustered first, on pairs between complete records only; each
incomplete record then joins the single cluster it matches best; incomplete records matching
nothing complete cluster among themselves.
"""

from __future__ import annotations

import polars as pl

MAX_ROUNDS = 100


def connected_components(nodes: pl.Series, edges: pl.DataFrame) -> pl.DataFrame:
    """Component label (smallest node id in it) for every node, given undirected edges a-b."""
    labels = nodes.rename("node").unique().to_frame().with_columns(pl.col("node").alias("label"))
    both = pl.concat(
        [
            edges.select(pl.col("a"), pl.col("b")),
            edges.select(pl.col("b").alias("a"), pl.col("a").alias("b")),
        ]
    )
    for _ in range(MAX_ROUNDS):
        proposed = (
            both.join(labels.rename({"node": "b", "label": "nb"}), on="b")
            .group_by("a")
            .agg(pl.col("nb").min())
            .rename({"a": "node"})
        )
        updated = (
            labels.join(proposed, on="node", how="left")
            .with_columns(pl.min_horizontal("label", "nb").alias("label"))
            .drop("nb")
        )
        # Pointer jumping: adopt the label of your label, which halves long chains each round.
        updated = (
            updated.join(updated.rename({"node": "label", "label": "ll"}), on="label", how="left")
            .with_columns(pl.min_horizontal("label", "ll").alias("label"))
            .drop("ll")
        )
        changed = (
            updated.join(labels, on="node", suffix="_old")
            .filter(pl.col("label") != pl.col("label_old"))
            .height
        )
        labels = updated
        if changed == 0:
            break
    return labels.rename({"label": "component"})


def cluster_records(records: pl.DataFrame, pairs: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Cluster records (unique_id, complete) from scored pairs (unique_id_l, unique_id_r,
    match_probability); returns unique_id, cluster_id."""
    above = pairs.filter(pl.col("match_probability") >= threshold).select(
        pl.col("unique_id_l").alias("a"), pl.col("unique_id_r").alias("b"), "match_probability"
    )
    complete = records.filter(pl.col("complete")).get_column("unique_id")
    weak = records.filter(~pl.col("complete")).get_column("unique_id")
    is_complete = {
        "a": pl.col("a").is_in(complete.implode()),
        "b": pl.col("b").is_in(complete.implode()),
    }
    flagged = above.with_columns(is_complete["a"].alias("ca"), is_complete["b"].alias("cb"))

    strong = flagged.filter(pl.col("ca") & pl.col("cb")).select("a", "b")
    labels = connected_components(complete, strong).rename(
        {"node": "unique_id", "component": "cluster_id"}
    )

    # Every weak-to-anything edge, seen from the weak record's side.
    mixed = pl.concat(
        [
            flagged.filter(~pl.col("ca")).select(
                pl.col("a").alias("weak"), pl.col("b").alias("other"), "match_probability"
            ),
            flagged.filter(~pl.col("cb")).select(
                pl.col("b").alias("weak"), pl.col("a").alias("other"), "match_probability"
            ),
        ]
    )
    assigned = labels
    pending = weak
    for _ in range(MAX_ROUNDS):
        best = (
            mixed.filter(pl.col("weak").is_in(pending.implode()))
            .join(assigned.rename({"unique_id": "other"}), on="other", how="inner")
            .sort(["weak", "match_probability", "cluster_id"], descending=[False, True, False])
            .group_by("weak", maintain_order=True)
            .first()
            .select(pl.col("weak").alias("unique_id"), "cluster_id")
        )
        if best.height == 0:
            break
        assigned = pl.concat([assigned, best])
        pending = pending.filter(~pending.is_in(best.get_column("unique_id").implode()))
    if pending.len():
        among = mixed.filter(
            pl.col("weak").is_in(pending.implode()) & pl.col("other").is_in(pending.implode())
        ).select(pl.col("weak").alias("a"), pl.col("other").alias("b"))
        rest = connected_components(pending, among).rename(
            {"node": "unique_id", "component": "cluster_id"}
        )
        assigned = pl.concat([assigned, rest])
    return assigned
