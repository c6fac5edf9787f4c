"""Choosing the match threshold from the model's own probabilities (no ground truth)."""

from __future__ import annotations

import math

import duckdb
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.linkage.threshold import choose_threshold, expected_curve, histogram_sql, weight_of


def histogram_of(probabilities: list[float]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "match_probability": probabilities,
            "match_weight": [weight_of(p) for p in probabilities],
        }
    )
    con = duckdb.connect()
    con.register("scored", frame.to_arrow())
    table = con.sql(histogram_sql("scored")).to_arrow_table()
    return pl.from_arrow(table)  # type: ignore[return-value]


def brute_force(probabilities: list[float], threshold: float) -> tuple[float, float, float]:
    kept = [p for p in probabilities if p >= threshold]
    tp = sum(kept)
    fp = len(kept) - tp
    fn = sum(probabilities) - tp
    return tp / len(kept), tp / sum(probabilities), 2 * tp / (2 * tp + fp + fn)


def test_expected_scores_match_a_brute_force_count() -> None:
    probabilities = [0.999] * 50 + [0.9] * 10 + [0.6] * 10 + [0.2] * 30 + [0.01] * 100
    curve = expected_curve(histogram_of(probabilities))
    for row in curve.iter_rows(named=True):
        # every pair in a bin is at or above its lower edge, so the bin's threshold keeps it
        p, r, f = brute_force(probabilities, row["threshold"] - 1e-12)
        assert math.isclose(row["expected_precision"], p, rel_tol=1e-9)
        assert math.isclose(row["expected_recall"], r, rel_tol=1e-9)
        assert math.isclose(row["expected_f1"], f, rel_tol=1e-9)


def test_a_clear_gap_between_matches_and_non_matches_is_where_it_chooses() -> None:
    probabilities = [0.9999] * 500 + [0.98] * 20 + [0.03] * 2000
    choice = choose_threshold(histogram_of(probabilities))
    assert choice is not None
    assert 0.5 <= choice.threshold <= 0.98
    assert choice.expected_precision > 0.99
    # the 2,000 low pairs still hold 60 expected matches (3% each): calibration is taken at
    # its word, so expected recall is 519.6 / 579.6
    assert math.isclose(choice.expected_recall, (500 * 0.9999 + 20 * 0.98) / 579.55, rel_tol=1e-3)


def test_nothing_scored_gives_no_choice() -> None:
    assert choose_threshold(histogram_of([])) is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=0.9999), min_size=1, max_size=300))
def test_the_choice_is_the_best_expected_f1_in_the_window(probabilities: list[float]) -> None:
    histogram = histogram_of(probabilities)
    choice = choose_threshold(histogram)
    if choice is None:  # no bin's lower edge falls in the window: the configured one stands
        edges = expected_curve(histogram).get_column("threshold")
        assert not edges.is_between(0.5, 0.999).any()
        return
    assert 0.5 <= choice.threshold <= 0.999
    assert choice.expected_f1 == max(
        c["expected_f1"] for c in choice.curve if 0.5 <= c["threshold"] <= 0.999
    )
