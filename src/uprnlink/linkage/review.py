"""Clerical review in linkage: which pairs a reviewer should see, and reviewers' labels as
evidence for the next clustering.

The most useful labels are where the model is least sure or the clustering overrode it:
pairs scored near the threshold (either side), pairs the model linked that the clustering
kept apart (a cannot-link split, or an incomplete record joining its best match only), and
the weakest link of a sparse cluster (a chain held by one pair). A match label becomes a
must-link edge (probability 1); a non-match label a cannot-link pair (rule `clerical`).
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.linkage.model import (
    identifiers_present,
    reusable_model,
    settings_dict,
    settings_fingerprint,
    settings_json,
    splink_records,
    with_parameters,
)
from uprnlink.settings import LinkageSettings

CLERICAL = "clerical"
# Pairs kept for the queue below the threshold: down to this many match-weight bits under it.
REVIEW_BAND_BITS = 4.0
# How many pairs each reason adds to the queue, most uncertain first.
QUEUE_LIMITS = {"near_threshold": 150, "split_cluster": 30, "low_density": 20}
# A cluster of 3+ profiles with fewer of its possible pairs scored above the threshold than
# this share is held together by a chain: its weakest pair is queued.
LOW_DENSITY = 0.5
_PAIR = {"unique_id_l": "a", "unique_id_r": "b"}


def weight_of(p: float) -> float:
    """Match weight (log2 Bayes factor scale) of a probability, clipped away from 0 and 1."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log2(p / (1 - p))


def review_floor(threshold: float) -> float:
    """The lowest probability still kept for review: REVIEW_BAND_BITS under the threshold."""
    odds = 2 ** (weight_of(threshold) - REVIEW_BAND_BITS)
    return odds / (1 + odds)


def _weight_expr() -> pl.Expr:
    p = pl.col("match_probability").clip(1e-12, 1 - 1e-12)
    return (p / (1 - p)).log(2)


def near_threshold_pairs(pairs: pl.DataFrame, threshold: float, limit: int) -> pl.DataFrame:
    """The `limit` pairs whose match weight is closest to the threshold's (a, b, p, reason)."""
    return (
        pairs.rename(_PAIR)
        .with_columns((_weight_expr() - weight_of(threshold)).abs().alias("_d"))
        .sort("_d", "a", "b")
        .head(limit)
        .select("a", "b", "match_probability", pl.lit("near_threshold").alias("reason"))
    )


def split_pairs(above: pl.DataFrame, clusters: pl.DataFrame, limit: int) -> pl.DataFrame:
    """Pairs scored above the threshold whose records ended in two clusters, strongest first."""
    return (
        above.rename(_PAIR)
        .join(clusters.rename({"unique_id": "a", "cluster_id": "ca"}), on="a")
        .join(clusters.rename({"unique_id": "b", "cluster_id": "cb"}), on="b")
        .filter(pl.col("ca") != pl.col("cb"))
        .sort("match_probability", "a", "b", descending=[True, False, False])
        .head(limit)
        .select("a", "b", "match_probability", pl.lit("split_cluster").alias("reason"))
    )


def sparse_cluster_pairs(above: pl.DataFrame, clusters: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The weakest in-cluster pair of each cluster of 3+ whose pairs above the threshold are
    fewer than LOW_DENSITY of its possible pairs; sparsest clusters first."""
    inside = (
        above.rename(_PAIR)
        .join(clusters.rename({"unique_id": "a", "cluster_id": "c"}), on="a")
        .join(clusters.rename({"unique_id": "b", "cluster_id": "cb"}), on="b")
        .filter(pl.col("c") == pl.col("cb"))
    )
    sizes = clusters.group_by(pl.col("cluster_id").alias("c")).len("n").filter(pl.col("n") >= 3)
    density = (
        inside.group_by("c")
        .len("edges")
        .join(sizes, on="c")
        .with_columns((pl.col("edges") / (pl.col("n") * (pl.col("n") - 1) / 2)).alias("density"))
        .filter(pl.col("density") < LOW_DENSITY)
    )
    return (
        inside.join(density.select("c", "density"), on="c")
        .sort("c", "match_probability", "a", "b")
        .group_by("c", maintain_order=True)
        .first()
        .sort("density", "match_probability", "c")
        .head(limit)
        .select("a", "b", "match_probability", pl.lit("low_density").alias("reason"))
    )


def select_review_pairs(
    above: pl.DataFrame, below: pl.DataFrame, clusters: pl.DataFrame, threshold: float
) -> pl.DataFrame:
    """The review queue at profile level (a, b, match_probability, reason), each pair once
    (under the first reason found: split, sparse, then near the threshold).

    `above` are the pairs at or above `threshold`, `below` those kept under it (down to
    `review_floor`), `clusters` the final profile clusters (unique_id, cluster_id).
    """
    scored = pl.concat([above, below]).select([*_PAIR, "match_probability"])
    chosen = pl.concat(
        [
            split_pairs(above, clusters, QUEUE_LIMITS["split_cluster"]),
            sparse_cluster_pairs(above, clusters, QUEUE_LIMITS["low_density"]),
            near_threshold_pairs(scored, threshold, QUEUE_LIMITS["near_threshold"]),
        ]
    ).cast({"a": clusters.schema["unique_id"], "b": clusters.schema["unique_id"]})
    return chosen.unique(["a", "b"], keep="first", maintain_order=True)


def labelled_profile_pairs(labels: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Current labels (unique_id_l, unique_id_r, label) on record keys as profile pairs (a, b,
    label) for this run's profiles; pairs within one profile and unknown records dropped."""
    profile = members.select("unique_id", "profile")
    return (
        labels.select("unique_id_l", "unique_id_r", "label")
        .join(profile.rename({"unique_id": "unique_id_l", "profile": "a"}), on="unique_id_l")
        .join(profile.rename({"unique_id": "unique_id_r", "profile": "b"}), on="unique_id_r")
        .filter(pl.col("a") != pl.col("b"))
        .select(
            pl.min_horizontal("a", "b").alias("a"), pl.max_horizontal("a", "b").alias("b"), "label"
        )
        .unique(["a", "b"], keep="last", maintain_order=True)
    )


def match_label_records(labels: pl.DataFrame | None, keys: pl.Series) -> pl.DataFrame:
    """Match labels as Splink's pairwise labels table on record keys (unique_id_l,
    unique_id_r, clerical_match_score = 1), for both records among `keys`; one row per pair."""
    schema = {"unique_id_l": pl.Utf8, "unique_id_r": pl.Utf8, "clerical_match_score": pl.Float64}
    if labels is None or labels.height == 0:
        return pl.DataFrame(schema=schema)
    known = keys.implode()
    return (
        labels.filter(
            (pl.col("label") == "match")
            & (pl.col("unique_id_l") != pl.col("unique_id_r"))
            & pl.col("unique_id_l").is_in(known)
            & pl.col("unique_id_r").is_in(known)
        )
        .select(
            pl.min_horizontal("unique_id_l", "unique_id_r").alias("unique_id_l"),
            pl.max_horizontal("unique_id_l", "unique_id_r").alias("unique_id_r"),
            pl.lit(1.0).alias("clerical_match_score"),
        )
        .unique(maintain_order=True)
        .cast(schema)  # type: ignore[arg-type]
    )


def labelled_scores(
    labels: pl.DataFrame, members: pl.DataFrame, scored: pl.DataFrame
) -> pl.DataFrame:
    """The near-threshold labels (the queue's stratum sampled by distance from the threshold,
    on both sides) with this run's score of their profile pair (label, match_probability);
    pairs scored below the review floor or never blocked are left out (no threshold in the band
    can change how they fall)."""
    near = (
        labels.filter(pl.col("reason") == "near_threshold")
        if "reason" in labels.columns
        else labels
    )
    pairs = labelled_profile_pairs(near, members)
    ordered = scored.select(
        pl.min_horizontal("unique_id_l", "unique_id_r").alias("a"),
        pl.max_horizontal("unique_id_l", "unique_id_r").alias("b"),
        "match_probability",
    ).unique(["a", "b"])
    return pairs.join(ordered, on=["a", "b"]).select("label", "match_probability")


def labelled_threshold(scores: pl.DataFrame, threshold: float) -> float:
    """The threshold that best separates labelled matches (at or above it) from non-matches
    (below), within REVIEW_BAND_BITS of `threshold` in match weight; the midpoint in weight
    between two neighbouring labelled scores. `threshold` itself unless another classifies
    strictly more labels correctly (ties go to the one nearest it)."""
    if scores.height == 0:
        return threshold
    centre = weight_of(threshold)
    rows = sorted(
        (weight_of(p), label == "match")
        for label, p in scores.select("label", "match_probability").iter_rows()
    )
    weights = sorted({w for w, _ in rows})
    candidates = [centre] + [(x + y) / 2 for x, y in itertools.pairwise(weights)]
    candidates += [weights[0] - 0.01, weights[-1] + 0.01]

    def correct(cut: float) -> int:
        return sum((w >= cut) == is_match for w, is_match in rows)

    allowed = [c for c in candidates if abs(c - centre) <= REVIEW_BAND_BITS]
    best = max(allowed, key=lambda c: (correct(c), -abs(c - centre)))
    if correct(best) <= correct(centre):
        return threshold
    odds = 2**best
    return odds / (1 + odds)


def must_link_pairs(profile_labels: pl.DataFrame, like: pl.DataFrame) -> pl.DataFrame:
    """Match labels as scored pairs at probability 1, in the schema of `like` (scored pairs)."""
    return (
        profile_labels.filter(pl.col("label") == "match")
        .select(
            pl.col("a").alias("unique_id_l"),
            pl.col("b").alias("unique_id_r"),
            pl.lit(1.0).alias("match_probability"),
        )
        .cast(dict(like.schema))  # type: ignore[arg-type]
    )


def with_must_links(pairs: pl.DataFrame, must: pl.DataFrame) -> pl.DataFrame:
    """Scored pairs with every must-link pair at probability 1 (replacing its score)."""
    if must.height == 0:
        return pairs
    keyed = pairs.join(must.select("unique_id_l", "unique_id_r"), on=list(_PAIR), how="anti")
    flipped = must.select(
        pl.col("unique_id_r").alias("unique_id_l"), pl.col("unique_id_l").alias("unique_id_r")
    )
    keyed = keyed.join(flipped, on=list(_PAIR), how="anti")
    return pl.concat([keyed, must.select(pairs.columns)])


def district_expr(col: str = "postcode") -> pl.Expr:
    """The postcode district (outward code, "LS6" of "LS6 2AB"): enough to compare, not a
    full address."""
    return pl.col(col).str.strip_chars().str.split(" ").list.first()


#: The record fields a reviewer sees (`review_queue_frame`): no NHS number, UPRN or address line.
REVIEW_RECORD_COLUMNS = (
    "unique_id",
    "source_dataset",
    "forename",
    "surname",
    "dob",
    "postcode",
    "start_date",
    "end_date",
)


def _side_expr(side: str) -> list[pl.Expr]:
    period = pl.concat_str(
        pl.col("start_date").cast(pl.Utf8).fill_null("?"),
        pl.col("end_date").cast(pl.Utf8).fill_null("open"),
        separator=" to ",
    )
    return [
        pl.col("unique_id").alias(f"unique_id_{side}"),
        pl.col("source_dataset").alias(f"source_{side}"),
        pl.col("forename").cast(pl.Utf8).alias(f"forename_{side}"),
        pl.col("surname").cast(pl.Utf8).alias(f"surname_{side}"),
        pl.col("dob").cast(pl.Utf8).alias(f"dob_{side}"),
        district_expr().alias(f"district_{side}"),
        period.alias(f"period_{side}"),
    ]


def review_queue_frame(review: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """The queue a reviewer sees: each pair (record keys, probability, reason) with the two
    records' source, names, date of birth, postcode district and period, in queue order.

    Only those fields are taken from `records` (`REVIEW_RECORD_COLUMNS`): no NHS number, UPRN
    or address line reaches it.
    """
    from uprnlink.review import QUEUE_SCHEMA, pair_id_expr

    queued = pl.concat([review.get_column("unique_id_l"), review.get_column("unique_id_r")])
    wanted = records.filter(pl.col("unique_id").is_in(queued.implode()))
    shown = {side: wanted.select(_side_expr(side)) for side in ("l", "r")}
    return (
        review.with_row_index("_order")
        .join(shown["l"], on="unique_id_l", maintain_order="left")
        .join(shown["r"], on="unique_id_r", maintain_order="left")
        .sort("_order")
        .with_columns(pair_id_expr())
        .select(list(QUEUE_SCHEMA))
        .cast(QUEUE_SCHEMA)  # type: ignore[arg-type]
    )


def model_label_accuracy(
    records: pl.DataFrame,
    labels: pl.DataFrame,
    model: dict[str, Any],
    settings: LinkageSettings,
    threshold: float,
    work_dir: Path,
) -> dict[str, Any] | None:
    """Splink's labelled-pair evaluation of the saved model on reviewers' labels
    (`accuracy_analysis_from_labels_table`), read at the clustering threshold: pairs, tp, fp,
    fn, tn, precision, recall. None when the saved model is not this code's model.

    `labels` has unique_id_l, unique_id_r, clerical_match_score (`review.splink_labels`); the
    model scores every labelled pair directly, blocked or not, so this is the model's own
    accuracy, before clustering and the cannot-link rules. Every record is registered, not
    only the labelled ones: term-frequency adjustments are read from the whole population.
    """
    from splink import DuckDBAPI, Linker

    from uprnlink.linkage.backends import connect_duckdb

    identifiers = identifiers_present(records)
    creator = settings_dict(settings.match_threshold, identifiers)
    trained = reusable_model(model, settings_fingerprint(settings_json(creator)))
    keys = pl.concat([labels.get_column("unique_id_l"), labels.get_column("unique_id_r")])
    shown = records.filter(pl.col("unique_id").is_in(keys.implode()))
    labels = labels.join(shown.select(pl.col("unique_id").alias("unique_id_l")), on="unique_id_l")
    labels = labels.join(shown.select(pl.col("unique_id").alias("unique_id_r")), on="unique_id_r")
    if trained is None or labels.height == 0:
        return None
    spec = with_parameters(settings_json(creator), trained)
    spec["retain_matching_columns"] = True  # the labels analysis reads the compared values
    con = connect_duckdb(settings, work_dir / "duckdb_tmp")
    try:
        db = DuckDBAPI(con)
        sdf = db.register(
            splink_records(records, identifiers=identifiers).to_arrow(),
            dataset_display_name="records",
        )
        linker = Linker(sdf, spec, log_level=logging.ERROR)
        table = linker.table_management.register_labels_table(
            db.register(labels.to_arrow(), dataset_display_name="clerical_labels")
        )
        truth = linker.evaluation.accuracy_analysis_from_labels_table(
            table,
            threshold_match_probability=threshold,
            match_weight_round_to_nearest=0.01,
            output_type="table",
        )
        rows = pl.from_arrow(truth.as_pyarrow_table())  # type: ignore[union-attr]
    finally:
        con.close()
    assert isinstance(rows, pl.DataFrame)
    return _at_threshold(rows, labels, threshold)


def _at_threshold(rows: pl.DataFrame, labels: pl.DataFrame, threshold: float) -> dict[str, Any]:
    """The truth-space row whose cut-off is the threshold (the lowest scored weight at or above
    it: pairs scored at or above it are called matches), as counts and ratios."""
    positives = labels.filter(pl.col("clerical_match_score") >= 0.5).height
    negatives = labels.height - positives
    at = rows.filter(pl.col("truth_threshold") >= weight_of(threshold) - 1e-9).sort(
        "truth_threshold"
    )
    tp, fp = (int(at.item(0, "tp")), int(at.item(0, "fp"))) if at.height else (0, 0)
    return {
        "pairs": labels.height,
        "tp": tp,
        "fp": fp,
        "fn": positives - tp,
        "tn": negatives - fp,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / positives if positives else None,
    }
