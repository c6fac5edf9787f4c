"""Turning scored record pairs into people, without letting incomplete records bridge people.

Connected components over every pair above the threshold let one record that lacks a date of
birth and an NHS number (a council tax party, say) join two people it resembles equally, such as
a mother and daughter of the same name at one address. Here records with a date of birth or an
NHS number ("complete") are clustered first, on pairs between complete records only; each
incomplete record then joins the single cluster it matches best; incomplete records matching
nothing complete cluster among themselves.

Node ids may be strings or integers. Internally every node becomes a dense row number, so the
work is array gathers and integer group-bys whatever the ids look like (1M records and 2M
pairs cluster in about a second).
"""

from __future__ import annotations

import polars as pl

from uprnlink.errors import LinkageError

MAX_ROUNDS = 100


def _dense_labels(n: int, src: pl.Series, dst: pl.Series) -> pl.Series:
    """Per node 0..n-1, the smallest node reachable over the undirected edges src-dst.

    Label propagation (each node takes the smallest label among its neighbours) with pointer
    jumping (each node takes its label's label), which halves long chains every round.
    """
    label = pl.Series("label", range(n), dtype=pl.UInt32)
    if src.len() == 0:
        return label
    # Both directions of every edge, sorted by node once: the per-round group-by then runs
    # on a sorted key, several times faster than hashing it every round.
    both = pl.DataFrame(
        {
            "node": pl.concat([src, dst]).cast(pl.UInt32),
            "other": pl.concat([dst, src]).cast(pl.UInt32),
        }
    ).sort("node")
    node, other = both.get_column("node").set_sorted(), both.get_column("other")
    for _ in range(MAX_ROUNDS):
        proposed = (
            pl.DataFrame({"node": node, "nb": label.gather(other)})
            .group_by("node")
            .agg(pl.col("nb").min())
        )
        at = proposed.get_column("node")
        current, offered = label.gather(at), proposed.get_column("nb")
        updated = label.clone()
        updated.scatter(at, current.zip_with(current <= offered, offered))
        # A label is never larger than its node, so a label's label is never larger either.
        updated = updated.gather(updated)
        if updated.equals(label):
            return label
        label = updated
    raise LinkageError(f"clustering did not converge in {MAX_ROUNDS} rounds")


def connected_components(nodes: pl.Series, edges: pl.DataFrame) -> pl.DataFrame:
    """Component label (smallest node id in it) for every node, given undirected edges a-b.

    Edges naming a node that is not in `nodes` are ignored.
    """
    index = nodes.rename("node").unique().sort().to_frame().with_row_index("i")
    ends = edges.select("a", "b")
    mapped = ends.join(index.rename({"node": "a", "i": "ia"}), on="a", how="inner").join(
        index.rename({"node": "b", "i": "ib"}), on="b", how="inner"
    )
    label = _dense_labels(index.height, mapped.get_column("ia"), mapped.get_column("ib"))
    names = index.get_column("node")
    return pl.DataFrame({"node": names, "component": names.gather(label)})


def cluster_records(records: pl.DataFrame, pairs: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Cluster records (unique_id, complete) from scored pairs (unique_id_l, unique_id_r,
    match_probability); returns unique_id, cluster_id (the smallest complete record id of the
    cluster, or the smallest id of a cluster of incomplete records)."""
    above = pairs.filter(pl.col("match_probability") >= threshold).select(
        pl.col("unique_id_l").alias("a"), pl.col("unique_id_r").alias("b"), "match_probability"
    )
    flags = records.select("unique_id", "complete")
    flagged = above.join(
        flags.rename({"unique_id": "a", "complete": "ca"}), on="a", how="inner"
    ).join(flags.rename({"unique_id": "b", "complete": "cb"}), on="b", how="inner")
    complete = flags.filter(pl.col("complete")).get_column("unique_id")
    weak = flags.filter(~pl.col("complete")).get_column("unique_id")

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
    assigned = [labels]
    reached = labels.select(pl.col("unique_id").alias("other"), "cluster_id")
    pending = mixed
    for _ in range(MAX_ROUNDS):
        # Each weak record not yet placed joins the cluster of its best match among records
        # already placed (highest probability, then smallest cluster id).
        best = (
            pending.join(reached, on="other", how="inner")
            .sort(["weak", "match_probability", "cluster_id"], descending=[False, True, False])
            .group_by("weak", maintain_order=True)
            .first()
            .select(pl.col("weak").alias("unique_id"), "cluster_id")
        )
        if best.height == 0:
            break
        assigned.append(best)
        reached = best.rename({"unique_id": "other"})
        pending = pending.join(
            best.select(pl.col("unique_id").alias("weak")), on="weak", how="anti"
        )
    placed = pl.concat(assigned)
    rest_nodes = weak.to_frame().join(placed, on="unique_id", how="anti").get_column("unique_id")
    if rest_nodes.len():
        among = pending.filter(pl.col("other").is_in(rest_nodes.implode())).select(
            pl.col("weak").alias("a"), pl.col("other").alias("b")
        )
        rest = connected_components(rest_nodes, among).rename(
            {"node": "unique_id", "component": "cluster_id"}
        )
        placed = pl.concat([placed, rest])
    return placed
