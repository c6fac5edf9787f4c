"""Reviewers' labels in training (`[linkage] train_from_labels`): "m" adds Splink's m from the
match labels as a training session, "threshold" moves the clustering threshold to where it best
separates the near-threshold labels; with no labels the model is the one trained without."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from uprnlink.linkage.predict import link_people
from uprnlink.linkage.review import (
    REVIEW_BAND_BITS,
    labelled_threshold,
    match_label_records,
    weight_of,
)


def _scores(rows: list[tuple[str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["label", "match_probability"], orient="row")


def test_the_threshold_moves_to_separate_the_labels() -> None:
    # Two non-matches just above 0.95, matches well above: the cut goes between them.
    scores = _scores([("non_match", 0.96), ("non_match", 0.97), ("match", 0.995), ("match", 0.99)])
    moved = labelled_threshold(scores, 0.95)
    assert 0.97 < moved < 0.99
    assert weight_of(moved) == pytest.approx((weight_of(0.97) + weight_of(0.99)) / 2)
    # A match below the threshold pulls it down.
    assert 0.6 < labelled_threshold(_scores([("match", 0.9), ("non_match", 0.7)]), 0.95) < 0.9


def test_the_threshold_stays_without_a_strict_gain_or_beyond_the_band() -> None:
    assert labelled_threshold(_scores([]), 0.95) == 0.95
    # Already separated: nothing gained, nothing moves.
    assert labelled_threshold(_scores([("match", 0.99), ("non_match", 0.5)]), 0.95) == 0.95
    # The only separating cut is more than REVIEW_BAND_BITS above: refused.
    far = 2 ** (weight_of(0.95) + REVIEW_BAND_BITS + 2)
    p = far / (1 + far)
    assert labelled_threshold(_scores([("non_match", p), ("match", 1 - 1e-9)]), 0.95) == 0.95
    # Ties go to the cut nearest the configured threshold.
    tie = _scores([("non_match", 0.96), ("match", 0.98), ("non_match", 0.985)])
    assert 0.96 < labelled_threshold(tie, 0.95) < 0.98


def test_match_labels_become_splinks_labels_table() -> None:
    labels = pl.DataFrame(
        {
            "unique_id_l": ["r2", "r1", "r3", "r1", "r9"],
            "unique_id_r": ["r1", "r2", "r4", "r1", "r1"],
            "label": ["match", "match", "non_match", "match", "match"],
        }
    )
    table = match_label_records(labels, pl.Series(["r1", "r2", "r3", "r4"]))
    # One row per pair, smaller key first; non-matches, self-pairs and unknown records dropped.
    assert table.rows() == [("r1", "r2", 1.0)]
    assert table.columns == ["unique_id_l", "unique_id_r", "clerical_match_score"]
    assert match_label_records(None, pl.Series(["r1"])).height == 0


def _truth_labels(records: pl.DataFrame, queue: pl.DataFrame) -> pl.DataFrame:
    truth = dict(records.select("unique_id", "true_id").iter_rows())
    return queue.select(
        "unique_id_l",
        "unique_id_r",
        "reason",
        pl.struct("unique_id_l", "unique_id_r")
        .map_elements(
            lambda s: (
                "match" if truth[s["unique_id_l"]] == truth[s["unique_id_r"]] else "non_match"
            ),
            return_dtype=pl.Utf8,
        )
        .alias("label"),
    )


def _m(model: dict[str, Any]) -> list[list[Any]]:
    return [
        [level.get("m_probability") for level in c["comparison_levels"]]
        for c in model["splink"]["comparisons"]
    ]


def test_match_labels_change_the_trained_m_and_none_change_nothing(
    linked_synthetic_records: Any, tmp_path: Path
) -> None:
    from tests.test_linkage import SETTINGS, synthetic_records

    records = synthetic_records()
    first = linked_synthetic_records
    labels = _truth_labels(records, first.review)
    assert labels.filter(pl.col("label") == "match").height >= 5
    taught = replace(SETTINGS, train_from_labels="m")
    # With no labels "m" trains the very model "off" trained.
    plain = link_people(records, taught, work_dir=tmp_path / "a", retrain=True)

    def trained(model: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in model["splink"].items() if k != "linker_uid"}

    assert trained(plain.model) == trained(first.model)
    assert "trained_on_labels" not in plain.model
    # With labels: one more training session, and m moves on the levels the labels observe.
    with_labels = link_people(
        records, taught, work_dir=tmp_path / "b", model=first.model, review_labels=labels
    )
    assert with_labels.model_trained  # the saved model was trained without these labels
    assert any("clerical match labels" in line for line in with_labels.training)
    assert _m(with_labels.model) != _m(first.model)
    assert with_labels.model["trained_on_labels"].startswith("sha256:")
    # The same labels again reuse that model; "off" uses them as evidence only.
    again = link_people(
        records, taught, work_dir=tmp_path / "c", model=with_labels.model, review_labels=labels
    )
    assert not again.model_trained
    off = link_people(
        records, SETTINGS, work_dir=tmp_path / "d", model=first.model, review_labels=labels
    )
    assert not off.model_trained and off.model == first.model


def test_near_threshold_labels_move_the_threshold(
    linked_synthetic_records: Any, tmp_path: Path
) -> None:
    from tests.test_linkage import SETTINGS, synthetic_records

    records = synthetic_records()
    first = linked_synthetic_records
    near = first.review.filter(
        (pl.col("reason") == "near_threshold") & (pl.col("match_probability") >= 0.95)
    ).sort("match_probability")
    assert near.height >= 1
    # The reviewer calls the weakest linked near-threshold pair a non-match: the threshold rises
    # past it (and no further than the band).
    weakest = near.head(1)
    labels = weakest.select(
        "unique_id_l", "unique_id_r", "reason", pl.lit("non_match").alias("label")
    )
    moved = link_people(
        records,
        replace(SETTINGS, train_from_labels="threshold"),
        work_dir=tmp_path,
        model=first.model,
        review_labels=labels,
    )
    p = weakest.get_column("match_probability").item()
    assert p < moved.match_threshold <= 1 / (1 + 2 ** -(weight_of(0.95) + REVIEW_BAND_BITS))
    assert moved.model == first.model  # the model itself is untouched
    # Labels of other reasons do not move it.
    other = labels.with_columns(pl.lit("split_cluster").alias("reason"))
    kept = link_people(
        records,
        replace(SETTINGS, train_from_labels="threshold"),
        work_dir=tmp_path / "k",
        model=first.model,
        review_labels=other,
    )
    assert kept.match_threshold == 0.95
