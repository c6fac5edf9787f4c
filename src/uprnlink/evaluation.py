"""Linkage quality against ground truth: pairwise precision, recall and F1 of person clusters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class PairwiseScores:
    """Pairwise confusion counts and scores of a clustering against true identities."""

    records: int
    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int

    @property
    def precision(self) -> float:
        """Share of predicted same-person pairs that are truly the same person."""
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        """Share of true same-person pairs that the clustering put together."""
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and scores as plain values."""
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _pairs(col: pl.Expr) -> pl.Expr:
    return (col * (col - 1) // 2).sum()


def pairwise_scores(
    frame: pl.DataFrame, predicted: str = "person_id", truth: str = "true_id"
) -> PairwiseScores:
    """Pairwise scores of `predicted` cluster ids against `truth` ids, one row per record."""
    df = frame.select(predicted, truth).drop_nulls()
    counts = pl.col("len").cast(pl.Int64)
    pred = df.group_by(predicted).len().select(_pairs(counts)).item()
    true = df.group_by(truth).len().select(_pairs(counts)).item()
    both = df.group_by(predicted, truth).len().select(_pairs(counts)).item()
    return PairwiseScores(
        records=df.height,
        predicted_pairs=int(pred or 0),
        true_pairs=int(true or 0),
        true_positive_pairs=int(both or 0),
    )


def label_clusters(
    clusters: pl.DataFrame, crosswalk: pl.DataFrame, truth_records: pl.DataFrame
) -> pl.DataFrame:
    """Clusters (unique_id, person_id) with each record's true person id attached."""
    truth = truth_records.select(
        pl.col("source").alias("source_dataset"),
        pl.col("record_id").cast(pl.Utf8),
        pl.col("person_id").alias("true_id"),
    )
    return (
        clusters.join(crosswalk.select("unique_id", "record_id"), on="unique_id", how="left")
        .join(truth, on=["source_dataset", "record_id"], how="left")
        .select("unique_id", "source_dataset", "person_id", "true_id")
    )
