"""Choosing the match threshold from the data, without ground truth.

Every candidate pair the model scores carries a match probability. Summed over the pairs above a
threshold, the probabilities estimate how many of them are true matches (expected true
positives); the complements estimate the false ones; the probabilities summed below it estimate
the matches the threshold would miss. From these, the expected precision, recall and F1 of
every threshold follow, and the threshold that maximises expected F1 is the data's own choice.

The estimate is only as good as the model's calibration (Splink's probabilities come from the
trained m and u values and the prior), and it counts pairs of candidate identifier profiles
before clustering, so it is a guide to the operating point rather than a measured accuracy. The
run reports it beside the configured threshold; `threshold_mode = "auto"` (`[linkage]`) adopts
it (within `[floor, ceiling]`), and the evaluation against synthetic truth shows how close it came.

The histogram is built while predicting (one GROUP BY per scored chunk, in SQL), so no pair
below the retained floor is ever held in memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

#: Width of a histogram bin in match weight (log2 Bayes factor) units.
BIN_WIDTH = 0.25
#: Pairs below this probability are never kept for clustering: "auto" chooses at or above it.
AUTO_FLOOR = 0.5
AUTO_CEILING = 0.999


def histogram_sql(table: str) -> str:
    """Scored pairs per match-weight bin: pairs and the sum of their match probabilities."""
    return (
        f"SELECT floor(match_weight / {BIN_WIDTH}) * {BIN_WIDTH} AS weight, "
        "count(*) AS pairs, sum(match_probability) AS expected_matches "
        f"FROM {table} GROUP BY 1"
    )


def merge_histograms(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Add up per-chunk histograms (weight, pairs, expected_matches)."""
    if not parts:
        return pl.DataFrame(
            schema={"weight": pl.Float64, "pairs": pl.Int64, "expected_matches": pl.Float64}
        )
    return (
        pl.concat(
            [
                p.select(
                    pl.col("weight").cast(pl.Float64),
                    pl.col("pairs").cast(pl.Int64),
                    pl.col("expected_matches").cast(pl.Float64),
                )
                for p in parts
            ]
        )
        .group_by("weight")
        .agg(pl.col("pairs").sum(), pl.col("expected_matches").sum())
        .sort("weight")
    )


def probability(weight: float) -> float:
    """Match probability of a match weight (log2 odds)."""
    return float(1.0 / (1.0 + 2.0 ** (-weight)))


def weight_of(p: float) -> float:
    """Match weight of a probability."""
    return math.log2(p / (1.0 - p))


@dataclass(frozen=True)
class ThresholdChoice:
    """The expected-F1 operating point and the curve it was read from."""

    threshold: float
    expected_precision: float
    expected_recall: float
    expected_f1: float
    curve: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the chosen point and the curve (counts and ratios only)."""
        return asdict(self)


def expected_curve(histogram: pl.DataFrame) -> pl.DataFrame:
    """Expected precision, recall and F1 for a threshold at the lower edge of each bin."""
    h = histogram.sort("weight", descending=True)
    total = float(h.get_column("expected_matches").sum() or 0.0)
    curve = h.with_columns(
        pl.col("pairs").cum_sum().alias("_kept"),
        pl.col("expected_matches").cum_sum().alias("_tp"),
    ).with_columns(
        (pl.col("_kept") - pl.col("_tp")).alias("_fp"),
        (pl.lit(total) - pl.col("_tp")).alias("_fn"),
    )
    return curve.select(
        pl.col("weight"),
        (1.0 / (1.0 + pl.lit(2.0).pow(-pl.col("weight")))).alias("threshold"),
        pl.col("_kept").alias("pairs_kept"),
        (pl.col("_tp") / pl.col("_kept")).alias("expected_precision"),
        (pl.col("_tp") / total if total else pl.lit(0.0)).alias("expected_recall"),
        (2 * pl.col("_tp") / (2 * pl.col("_tp") + pl.col("_fp") + pl.col("_fn"))).alias(
            "expected_f1"
        ),
    ).sort("weight")


def choose_threshold(
    histogram: pl.DataFrame, floor: float = AUTO_FLOOR, ceiling: float = AUTO_CEILING
) -> ThresholdChoice | None:
    """The threshold in [floor, ceiling] with the highest expected F1 (ties: the higher
    threshold, favouring precision), or None when nothing was scored."""
    if histogram.height == 0:
        return None
    curve = expected_curve(histogram)
    window = curve.filter(pl.col("threshold").is_between(floor, ceiling))
    if window.height == 0:
        return None
    best = window.sort(["expected_f1", "threshold"], descending=[True, True]).row(0, named=True)
    shown = curve.filter(pl.col("threshold") >= floor).select(
        pl.col("threshold").round(6),
        "pairs_kept",
        pl.col("expected_precision").round(5),
        pl.col("expected_recall").round(5),
        pl.col("expected_f1").round(5),
    )
    return ThresholdChoice(
        threshold=round(float(best["threshold"]), 6),
        expected_precision=round(float(best["expected_precision"]), 5),
        expected_recall=round(float(best["expected_recall"]), 5),
        expected_f1=round(float(best["expected_f1"]), 5),
        curve=shown.to_dicts(),
    )
