"""Incremental linkage: a delivery with a few changed records scores only the pairs of its new
profiles, reuses the last link's other pairs, and clusters exactly as a full relink would."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.test_linkage import SETTINGS, synthetic_records
from uprnlink.linkage.incremental import (
    ScoredPairs,
    plan_increment,
    read_scored_pairs,
    rescaled_pairs,
    settled_pairs,
    term_frequencies,
    write_scored_pairs,
)
from uprnlink.linkage.predict import LinkageResult, link_people
from uprnlink.linkage.stable_ids import assign_stable_ids
from uprnlink.privacy.keys import MasterKey

PEOPLE = 300


def next_month(records: pl.DataFrame, share: float = 0.05, seed: int = 11) -> pl.DataFrame:
    """`records` with `share` of them changed, deterministically: a third edited (a forename
    misspelt, a postcode moved), a third removed, and as many new records added (another
    record of a known person, and new people)."""
    rng = random.Random(seed)
    n = max(3, round(records.height * share))
    picked = rng.sample(range(records.height), n)
    edited, removed = set(picked[: n // 3]), set(picked[n // 3 : 2 * n // 3])
    rows = records.to_dicts()
    out = []
    for i, row in enumerate(rows):
        if i in removed:
            continue
        if i in edited:
            if i % 2:
                row = {**row, "forename": row["forename"][:-1] + "X"}
            else:
                row = {**row, "postcode": "ZZ9 9ZZ", "uprn_token": None}
        out.append(row)
    strangers = synthetic_records(people=max(20, n), seed=seed + 1).to_dicts()
    for j, i in enumerate(picked[2 * n // 3 :]):
        extra = {**rows[i]} if j % 2 else {**strangers[j], "true_id": f"S{j}"}
        out.append({**extra, "unique_id": f"m{j:05d}"})
    return pl.DataFrame(out, schema=records.schema)


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Month 1 linked in full (the model trained), then month 2 linked in full and
    incrementally with that model."""
    work = tmp_path_factory.mktemp("incremental_linkage")
    first_records = synthetic_records(people=PEOPLE, seed=7)
    first = link_people(first_records, SETTINGS, work_dir=work / "1")
    second_records = next_month(first_records)
    full = link_people(second_records, SETTINGS, work_dir=work / "2", model=first.model)
    incr = link_people(
        second_records, SETTINGS, work_dir=work / "3", model=first.model, previous=first.scored
    )
    return {"first": first, "full": full, "incr": incr, "records": second_records}


def _pairs(result: LinkageResult) -> pl.DataFrame:
    assert result.scored is not None
    return result.scored.pairs.sort(pl.all())


def test_a_five_percent_delivery_scores_only_the_new_profiles_pairs(
    months: dict[str, Any],
) -> None:
    first, full, incr = months["first"], months["full"], months["incr"]
    assert first.incremental is None and full.incremental is None
    assert not incr.model_trained
    counts = incr.incremental
    assert counts is not None
    assert 0 < counts["new_profiles"] < 0.1 * incr.profiles
    assert counts["dropped_profiles"] > 0
    assert counts["pairs_kept"] > 0
    assert counts["pairs_scored"] == incr.candidate_pairs
    assert counts["pairs_scored"] < 0.5 * full.candidate_pairs


def test_incremental_clusters_equal_a_full_relink(months: dict[str, Any]) -> None:
    full, incr = months["full"], months["incr"]
    assert incr.clusters.sort("unique_id").equals(full.clusters.sort("unique_id"))
    assert incr.pairs_above_threshold == full.pairs_above_threshold
    # The same pairs, by profile key, with the same weights: kept pairs score as they would.
    got, want = _pairs(incr), _pairs(full)
    assert got.drop("match_weight").equals(want.drop("match_weight"))
    diff = (got.get_column("match_weight") - want.get_column("match_weight")).abs()
    assert diff.max() < 1e-9  # type: ignore[operator]


def test_stable_ids_carry_over_the_same_way(months: dict[str, Any]) -> None:
    first, full, incr = months["first"], months["full"], months["incr"]
    before = first.clusters.select("unique_id", "person_id")

    def ids(result: LinkageResult) -> pl.DataFrame:
        clusters = result.clusters.select("unique_id", pl.col("person_id").alias("cluster_key"))
        return assign_stable_ids(clusters, before)[0].sort("unique_id")

    assert ids(incr).equals(ids(full))
    kept = (
        ids(incr)
        .join(before, on="unique_id")
        .filter(pl.col("person_id") == pl.col("person_id_right"))
    )
    assert kept.height > 0.9 * before.height


def test_too_many_new_profiles_or_an_auto_threshold_link_in_full(
    months: dict[str, Any], tmp_path: Path
) -> None:
    first, records = months["first"], months["records"]
    strict = link_people(
        records,
        replace(SETTINGS, incremental_max_new=0.01),
        work_dir=tmp_path / "a",
        model=first.model,
        previous=first.scored,
    )
    assert strict.incremental is None
    assert strict.candidate_pairs == months["full"].candidate_pairs
    shuffled = next_month(records, share=0.9, seed=3)
    assert (
        link_people(
            shuffled, SETTINGS, work_dir=tmp_path / "b", model=first.model, previous=first.scored
        ).incremental
        is None
    )
    # On Spark the incremental path is not verified: a full link, decided before any scoring.
    from uprnlink.linkage.predict import _increment

    spark = replace(SETTINGS, backend="spark")
    assert _increment(pl.DataFrame(), first.scored, spark, frozenset(first.identifiers)) is None
    auto = replace(SETTINGS, threshold_mode="auto")
    assert (
        link_people(
            records, auto, work_dir=tmp_path / "d", model=first.model, previous=first.scored
        ).incremental
        is None
    )
    other = replace(first.scored, identifiers=("forename",))
    assert (
        link_people(
            records, SETTINGS, work_dir=tmp_path / "c", model=first.model, previous=other
        ).incremental
        is None
    )


def test_a_profile_whose_blocks_split_differently_is_rescored() -> None:
    keys = {"profile_h1": [1, 2, 3], "profile_h2": [4, 5, 6]}
    blocks = {"blocks": pl.UInt64}
    previous = ScoredPairs(
        pairs=pl.DataFrame(
            {
                **{"a_h1": [1, 1], "a_h2": [4, 4], "b_h1": [2, 3], "b_h2": [5, 6]},
                "match_weight": [9.5, 8.0],
            }
        ),
        profiles=pl.DataFrame({**keys, "blocks": [7, 8, 9]}, schema_overrides=blocks),
        frequencies=term_frequencies(pl.DataFrame({"forename": ["A"]}), ["forename"]),
        identifiers=("forename",),
    )
    current = pl.DataFrame(
        {"unique_id": [0, 1, 2], **keys, "blocks": [7, 8, 10]},
        schema_overrides={"blocks": pl.UInt64},
    )
    plan = plan_increment(current, previous)
    assert plan.fresh.to_list() == [False, False, True]
    assert plan.kept.rows() == [(0, 1, 9.5)]
    assert plan.new_profiles == 1 and plan.dropped_profiles == 0 and plan.reblocked_profiles == 1
    gone = plan_increment(current.head(2), previous)
    assert gone.dropped_profiles == 1 and gone.kept.height == 1


def test_stored_pairs_are_reused_only_on_the_same_basis_and_key(
    months: dict[str, Any], tmp_path: Path
) -> None:
    scored = months["first"].scored
    key = MasterKey(bytes(range(32)))
    write_scored_pairs(scored, tmp_path, key, basis="b1")
    again = read_scored_pairs(tmp_path, key, "b1")
    assert again is not None and again.pairs.equals(scored.pairs)
    assert again.identifiers == scored.identifiers
    assert read_scored_pairs(tmp_path, key, "b2") is None  # model or settings changed
    assert read_scored_pairs(tmp_path, MasterKey(bytes(32), epoch=2), "b1") is None
    assert read_scored_pairs(tmp_path / "none", key, "b1") is None


def test_a_kept_pairs_score_moves_with_the_frequency_of_the_name_it_agrees_on() -> None:
    kept = pl.DataFrame({"unique_id_l": [0, 0], "unique_id_r": [1, 2], "match_weight": 2.0})
    profiles = pl.DataFrame({"unique_id": [0, 1, 2], "forename": ["ANN", "ANN", "ANNE"]})
    before = term_frequencies(pl.DataFrame({"forename": ["ANN", "BOB"]}), ["forename"])
    after = term_frequencies(pl.DataFrame({"forename": ["ANN", "BOB", "BOB", "BOB"]}), ["forename"])
    moved = rescaled_pairs(kept, profiles, {"forename": 1.0}, before, after)
    # ANN was 1/2 of the forenames and is now 1/4: a match on it is worth one bit more.
    assert moved.get_column("match_weight").to_list() == pytest.approx([3.0, 2.0])
    settled = settled_pairs(moved, floor=0.5)
    assert settled.get_column("match_probability").to_list() == pytest.approx([8 / 9, 0.8])
    assert settled_pairs(moved, floor=0.85).height == 1
