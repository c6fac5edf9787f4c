"""Linkage on a tiny synthetic population: model reuse, settings fingerprints, baselines."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from uprnlink.errors import LinkageError
from uprnlink.linkage import predict
from uprnlink.linkage.backends import spark_memory
from uprnlink.linkage.baselines import (
    _em_session,
    deterministic_clusters,
    plain_settings,
    plain_splink_clusters,
)
from uprnlink.linkage.blocking import CAP_FLOOR
from uprnlink.linkage.model import (
    MODEL_VERSION,
    blocking_rule_sqls,
    current_fingerprint,
    model_json,
    reusable_model,
    settings_dict,
    settings_fingerprint,
    settings_json,
    with_parameters,
)
from uprnlink.linkage.predict import (
    ASIDE_DIR,
    CLUSTERED_COLUMNS,
    link_inputs,
    link_people,
    link_profiles,
    linkage_profiles,
)
from uprnlink.linkage.stable_ids import derived_id
from uprnlink.run.evaluation import pairwise_scores
from uprnlink.settings import LinkageSettings

FORENAMES = [
    "OLIVER", "AMELIA", "GEORGE", "ISLA", "HARRY", "AVA", "NOAH", "MIA", "JACK", "ELLA",
    "LEO", "GRACE", "ARTHUR", "LILY", "OSCAR", "FREYA", "CHARLIE", "EMILY", "THOMAS", "SOPHIE",
]  # fmt: skip
SURNAMES = [
    "SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES", "ROBINSON",
    "WRIGHT", "THOMPSON", "EVANS", "WALKER", "WHITE", "ROBERTS", "GREEN", "HALL", "WOOD",
]  # fmt: skip
SOURCES = ("gp_registrations", "council_tax", "hospital_activity")
SETTINGS = LinkageSettings(memory_limit="1GB", threads=1, max_pairs_u=2e5, max_pairs_em=2e5)


def _typo(name: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(name))
    return name[:i] + name[i + 1 :]


def synthetic_records(people: int = 120, seed: int = 3) -> pl.DataFrame:
    """Records of `people` people across three sources, with typos and gaps; `true_id` is the
    person each record belongs to."""
    rng = random.Random(seed)
    rows = []
    for p in range(people):
        forename, surname = rng.choice(FORENAMES), rng.choice(SURNAMES)
        dob = date(1940, 1, 1) + timedelta(days=rng.randrange(25000))
        sex = rng.choice("MF")
        postcode = f"AB{rng.randrange(1, 9)} {rng.randrange(1, 9)}{rng.choice('ABDEF')}Q"
        uprn, nhs = f"u{p % (people // 2):05d}", f"n{p:05d}"
        start = date(2015, 1, 1) + timedelta(days=rng.randrange(2000))
        for k in range(rng.randrange(2, 5)):
            source = SOURCES[k % 3]
            rows.append(
                {
                    "unique_id": f"r{len(rows):05d}",
                    "source_dataset": source,
                    "forename": _typo(forename, rng) if rng.random() < 0.1 else forename,
                    "surname": surname,
                    "dob": None if source == "council_tax" and rng.random() < 0.3 else dob,
                    "sex": None if source == "council_tax" else sex,
                    "postcode": postcode,
                    "uprn_token": uprn if rng.random() < 0.9 else None,
                    "nhs_token": None if source == "council_tax" else nhs,
                    "start_date": start,
                    "end_date": None,
                    "true_id": f"T{p}",
                }
            )
    return pl.DataFrame(rows, schema_overrides={"end_date": pl.Date, "dob": pl.Date})


@pytest.fixture(scope="module")
def records() -> pl.DataFrame:
    return synthetic_records()


@pytest.fixture
def trained(linked_synthetic_records: Any) -> Any:
    """The records linked once with SETTINGS (tests/conftest.py: one training per session)."""
    return linked_synthetic_records


def _scores(clusters: pl.DataFrame, records: pl.DataFrame) -> tuple[float, float]:
    s = pairwise_scores(clusters.join(records.select("unique_id", "true_id"), on="unique_id"))
    return s.true_positive_pairs / s.predicted_pairs, s.true_positive_pairs / s.true_pairs


def test_a_small_block_cap_splits_blocks_and_keeps_the_true_pairs(
    records: pl.DataFrame, trained: Any, tmp_path: Path
) -> None:
    capped = link_people(
        records, replace(SETTINGS, block_cap=3), work_dir=tmp_path, model=trained.model
    )
    assert not capped.model_trained  # the cap chooses pairs; the model's definition is the same
    assert {b["block_cap"] for b in capped.blocking} == {3}
    assert trained.blocking[0]["block_cap"] >= CAP_FLOOR
    assert not any(b["blocks_split"] for b in trained.blocking)
    split = [b for b in capped.blocking if b["blocks_split"]]
    assert len(split) >= 3 and all(b["split_by"] for b in split)
    assert capped.candidate_pairs < trained.candidate_pairs
    precision, recall = _scores(capped.clusters, records)
    assert precision > 0.95 and recall > 0.9, (precision, recall)  # as without the cap


def test_saved_model_is_reused_and_gives_identical_clusters(
    records: pl.DataFrame, trained: Any, tmp_path: Path
) -> None:
    first = trained
    assert first.model_trained and "train" in first.seconds
    header = first.model
    assert header["version"] == MODEL_VERSION
    assert header["records_trained_on"] == records.height
    assert header["settings_fingerprint"] == current_fingerprint(SETTINGS)
    precision, recall = _scores(first.clusters, records)
    assert precision > 0.95 and recall > 0.9, (precision, recall)

    again = link_people(records, SETTINGS, work_dir=tmp_path, model=first.model)
    assert not again.model_trained and "train" not in again.seconds
    assert again.model == first.model  # the saved artefact, header and all
    assert again.clusters.sort("unique_id").equals(first.clusters.sort("unique_id"))

    # Scoring the profiles in several slices (bounded memory) finds exactly the same pairs.
    sliced = link_people(
        records,
        replace(SETTINGS, predict_chunk_records=100),
        work_dir=tmp_path,
        model=first.model,
    )
    assert sliced.blocking == first.blocking and sliced.candidate_pairs == first.candidate_pairs
    assert sliced.clusters.sort("unique_id").equals(first.clusters.sort("unique_id"))
    # The pairs each blocking rule added are counted while predicting, in rule order.
    assert [b["rule"] for b in first.blocking] == blocking_rule_sqls()
    assert first.blocking[-1]["cumulative_pairs"] == first.candidate_pairs
    assert sum(b["marginal_pairs"] for b in first.blocking) == first.candidate_pairs

    forced = link_people(records, SETTINGS, work_dir=tmp_path, model=first.model, retrain=True)
    assert forced.model_trained


def test_scoring_holds_no_record_and_training_lets_its_sample_go(
    records: pl.DataFrame, trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link stage drops its records before scoring: what linkage needs of them is in the
    inputs, the training sample is released once trained, and the people are the same."""
    reused = link_inputs(records, SETTINGS, model=trained.model)
    assert reused.saved is not None and reused.training is None  # nothing to train on
    members = reused.members.height
    seen: dict[str, Any] = {}
    scoring = predict._predict

    def watched(*args: Any, **kwargs: Any) -> Any:
        # While DuckDB scores, what clustering reads next is on disk, not in memory.
        seen["files"] = sorted(p.name for p in (tmp_path / "a" / ASIDE_DIR).iterdir())
        seen["held"] = (reused.profiles.height, reused.members.height)
        return scoring(*args, **kwargs)

    monkeypatch.setattr(predict, "_predict", watched)
    again = link_profiles(reused, SETTINGS, work_dir=tmp_path / "a")
    assert again.clusters.sort("unique_id").equals(trained.clusters.sort("unique_id"))
    assert seen["files"] == ["current.parquet", "members.parquet", "profiles.parquet"]
    assert seen["held"] == (0, 0) and reused.members.height == members
    assert not (tmp_path / "a" / ASIDE_DIR).exists()
    monkeypatch.undo()

    sampled = replace(SETTINGS, max_training_records=records.height // 2)
    fresh = link_inputs(records, sampled, retrain=True)
    assert fresh.saved is None and fresh.training is not None
    assert fresh.training.height == records.height // 2
    linked = link_profiles(fresh, sampled, work_dir=tmp_path / "b")
    assert fresh.training is None and linked.model_trained
    assert set(fresh.profiles.columns) <= set(CLUSTERED_COLUMNS)  # what clustering reads
    assert linked.model["records_trained_on"] == records.height == linked.records


def test_model_of_another_version_or_definition_is_not_reused() -> None:
    fingerprint = current_fingerprint(SETTINGS)
    splink_model = settings_json(settings_dict(SETTINGS.match_threshold))
    model = {"version": MODEL_VERSION, "settings_fingerprint": fingerprint, "splink": splink_model}
    assert reusable_model(model, fingerprint) == splink_model
    assert reusable_model({**model, "version": "uprnlink-model/0"}, fingerprint) is None
    assert reusable_model(model, "sha256:other") is None
    assert reusable_model(None, fingerprint) is None
    legacy = {"version": MODEL_VERSION, "splink": splink_model}  # saved before fingerprints
    assert reusable_model(legacy, fingerprint) is None


def test_fingerprint_follows_the_definition_not_the_trained_parameters() -> None:
    base = settings_json(settings_dict(0.95))
    fingerprint = settings_fingerprint(base)
    assert fingerprint == current_fingerprint(SETTINGS)

    trained = settings_json(settings_dict(0.95))
    trained["probability_two_random_records_match"] = 0.001
    trained["linker_uid"] = "other"
    for comparison in trained["comparisons"]:
        for level in comparison["comparison_levels"]:
            level["m_probability"], level["u_probability"] = 0.5, 0.01
    assert settings_fingerprint(trained) == fingerprint

    changed = settings_json(settings_dict(0.95))
    forename_levels = changed["comparisons"][0]["comparison_levels"]
    forename_levels[2]["sql_condition"] = forename_levels[2]["sql_condition"].replace("0.92", "0.9")
    assert settings_fingerprint(changed) != fingerprint

    dropped = settings_json(settings_dict(0.95))
    dropped["comparisons"] = dropped["comparisons"][:-1]
    assert settings_fingerprint(dropped) != fingerprint

    blocking = settings_json(settings_dict(0.95))
    blocking["blocking_rules_to_generate_predictions"].pop()
    assert settings_fingerprint(blocking) != fingerprint


def test_deterministic_baseline_on_a_hand_made_case() -> None:
    dob = date(1980, 5, 1)
    frame = pl.DataFrame(
        {
            "unique_id": ["a", "b", "c", "d", "e", "f"],
            "forename": ["ANN", "ANNE", "ANNE", "ANNE", "ANN", "BOB"],
            "surname": ["LEE"] * 5 + ["RAY"],
            "dob": [dob, dob, dob, dob, None, dob],
            "uprn_token": ["u1", "u1", "u1", "u2", "u1", None],
            "nhs_token": ["n1", "n1", None, None, None, None],
        }
    )
    # a-b share an NHS number; b-c share name, date of birth and UPRN; d lives elsewhere;
    # e has no date of birth; f has no UPRN: neither rule joins them to anyone.
    got = deterministic_clusters(frame)
    assert got.columns == ["unique_id", "person_id"]
    ids = dict(zip(got["unique_id"].to_list(), got["person_id"].to_list(), strict=True))
    assert ids["a"] == ids["b"] == ids["c"] == derived_id("a")
    assert {ids["d"], ids["e"], ids["f"]} == {derived_id("d"), derived_id("e"), derived_id("f")}


def test_plain_splink_baseline_clusters_every_record(records: pl.DataFrame, tmp_path: Path) -> None:
    got = plain_splink_clusters(records, SETTINGS, tmp_path)
    assert got.columns == ["unique_id", "person_id"]
    assert got.height == records.height and got["person_id"].null_count() == 0
    precision, recall = _scores(got, records)
    assert precision > 0.8 and recall > 0.6, (precision, recall)


def test_plain_baseline_undoes_an_em_session_splink_cannot_finish(
    records: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session that changes the model and then fails (as an m estimated at exactly 0 does)
    leaves the model as it was before the session, through Splink's public API."""
    import duckdb
    from splink import DuckDBAPI, Linker

    data = records.select("unique_id", "forename", "surname", "dob", "postcode", "uprn_token")
    table = DuckDBAPI(duckdb.connect()).register(data.to_arrow(), dataset_display_name="records")
    linker = Linker(table, plain_settings(), log_level=logging.ERROR)
    linker.training.estimate_u_using_random_sampling(max_pairs=SETTINGS.max_pairs_u, seed=1)
    before = model_json(linker)
    real = linker.training.estimate_parameters_using_expectation_maximisation

    def half_done(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise ValueError("m probability of exactly 0")

    monkeypatch.setattr(
        linker.training, "estimate_parameters_using_expectation_maximisation", half_done
    )
    got = _em_session(linker, table, ("forename", "surname"), SETTINGS)
    assert _described(model_json(linker)) != _described(before)  # the session changed it
    assert got is not linker and _described(model_json(got)) == _described(before)


def _described(model: dict[str, Any]) -> dict[str, Any]:
    """A model without its comparisons' descriptions (a linker rebuilt from a saved model
    describes every comparison as 'CustomComparison'; the levels and parameters are the same)."""
    out = json.loads(json.dumps(model))
    for comparison in out["comparisons"]:
        comparison.pop("comparison_description", None)
    return dict(out)


def test_identical_identifier_profiles_are_linked_once_and_expanded(
    records: pl.DataFrame,
) -> None:
    # Every record twice more under new keys, as repeat hospital attendances would be.
    repeats = pl.concat(
        [records] + [records.with_columns(pl.col("unique_id") + f"#{i}") for i in range(1, 3)]
    )
    profiles, members = linkage_profiles(repeats)
    assert profiles.height == linkage_profiles(records)[0].height
    assert members.height == repeats.height and members["profile"].null_count() == 0
    assert profiles["unique_id"].to_list() == list(range(profiles.height))
    # The same records give the same profile numbers whatever their order.
    again = linkage_profiles(repeats.reverse())[1]
    assert again.sort("unique_id").equals(members.sort("unique_id"))
    # A record and its repeats share a profile; the compared values come through unchanged.
    by_key = dict(zip(members["unique_id"], members["profile"], strict=True))
    assert all(by_key[k] == by_key[k + "#1"] == by_key[k + "#2"] for k in records["unique_id"])
    assert {"forename_roots", "move_next", "period_start"} <= set(profiles.columns)


def test_repeated_records_join_their_person(records: pl.DataFrame, tmp_path: Path) -> None:
    repeats = pl.concat([records, records.with_columns(pl.col("unique_id") + "#1")])
    linked = link_people(repeats, SETTINGS, work_dir=tmp_path)
    ids = dict(zip(linked.clusters["unique_id"], linked.clusters["person_id"], strict=True))
    assert all(ids[k] == ids[k + "#1"] for k in records["unique_id"])
    assert linked.profiles == linkage_profiles(records)[0].height


def test_trained_parameters_move_between_sql_dialects() -> None:
    duckdb = settings_json(settings_dict(0.95))
    trained = settings_json(settings_dict(0.95))
    trained["probability_two_random_records_match"] = 0.0012
    for comparison in trained["comparisons"]:
        for level in comparison["comparison_levels"]:
            if not level.get("is_null_level"):
                level["m_probability"], level["u_probability"] = 0.3, 0.02
    spark = with_parameters(settings_json(settings_dict(0.95), "spark"), trained)
    assert spark["probability_two_random_records_match"] == 0.0012
    assert spark["sql_dialect"] == "spark" and settings_fingerprint(
        with_parameters(duckdb, trained)
    ) == settings_fingerprint(duckdb)
    levels = [lvl for c in spark["comparisons"] for lvl in c["comparison_levels"]]
    assert all(lvl["m_probability"] == 0.3 for lvl in levels if not lvl.get("is_null_level"))
    # The custom DuckDB SQL was translated for Spark, level by level.
    assert json.dumps(spark["comparisons"]) != json.dumps(duckdb["comparisons"])


def test_spark_memory_sizes() -> None:
    assert spark_memory("8GB") == "8192m"
    assert spark_memory("512MiB") == "512m"
    with pytest.raises(LinkageError):
        spark_memory("lots")


def test_progress_lines_give_counts_and_an_estimate(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import duckdb

    from uprnlink.progress import Progress, duckdb_progress, eta_text

    assert eta_text(1, 4, 10.0) == "elapsed 10 s, about 30 s left"
    assert eta_text(0, 4, 10.0) == eta_text(4, 4, 10.0) == "elapsed 10 s"
    with caplog.at_level("INFO", logger="uprnlink"):
        step = Progress("scoring", 4, "slices")
        # The step's clock stands still: the line cannot depend on how fast this machine is.
        monkeypatch.setattr(Progress, "elapsed", property(lambda self: 0.2))
        step.advance(note="10 pairs")
        monkeypatch.undo()
        con = duckdb.connect()
        with duckdb_progress(con, "query", every=0.01):
            con.execute("SELECT count(*) FROM range(3000000) a JOIN range(10) b ON true").fetchall()
    assert "scoring: 1/4 slices, 10 pairs (elapsed 0 s" in caplog.text
    assert not [t for t in threading.enumerate() if t.name == "progress-query"]


def test_vectorised_person_ids_match_the_derivation_in_order() -> None:
    from uprnlink.linkage.stable_ids import derived_ids

    keys = [f"{i:032x}" for i in range(0, 300_000, 3)] + ["Zoë", None]
    got = derived_ids(pl.Series("k", keys)).to_list()
    assert got == [None if k is None else derived_id(k) for k in keys]


def test_threshold_chosen_from_the_data_in_auto_mode(
    records: pl.DataFrame, trained: Any, tmp_path: Path
) -> None:
    fixed = trained  # trained and clustered at the fixed threshold
    choice = fixed.threshold_choice
    assert choice is not None and 0.5 <= choice["threshold"] <= 0.999
    assert fixed.match_threshold == SETTINGS.match_threshold  # fixed: reported, not used
    auto = link_people(
        records, replace(SETTINGS, threshold_mode="auto"), work_dir=tmp_path, model=fixed.model
    )
    assert auto.match_threshold == choice["threshold"]
    assert auto.threshold_choice == choice  # the same model scores the same pairs
    assert auto.candidate_pairs == fixed.candidate_pairs


def _trained_parameters(model: dict[str, object]) -> str:
    splink = dict(model["splink"])  # type: ignore[call-overload]
    splink.pop("linker_uid", None)
    return json.dumps(splink, sort_keys=True)


@pytest.mark.slow  # 40,000 synthetic people trained twice: the run tests' loop, not test-fast's
def test_training_twice_on_the_same_records_gives_identical_parameters(tmp_path: Path) -> None:
    """Two trainings on the same records (two threads, sampled EM) give bit-identical m and u:
    EM's sums run on one thread, so clusters do not move between rebuilds."""
    many = synthetic_records(people=40_000, seed=5).drop("true_id")
    settings = replace(SETTINGS, threads=2, max_pairs_em=5e4, max_pairs_u=1e5)
    first = link_people(many, settings, work_dir=tmp_path / "a", retrain=True)
    second = link_people(many, settings, work_dir=tmp_path / "b", retrain=True)
    assert _trained_parameters(first.model) == _trained_parameters(second.model)
    assert first.clusters.sort("unique_id").equals(second.clusters.sort("unique_id"))


def test_training_reads_a_fixed_sample_of_a_large_delivery() -> None:
    from uprnlink.linkage.predict import training_sample

    records = pl.DataFrame({"unique_id": [f"r{i:05d}" for i in range(5_000)]})
    sample = training_sample(records, 1_000, seed=42)
    assert sample.height == 1_000
    # The same records whatever their order, another set under another seed, and all of a
    # delivery no larger than the bound (or with no bound).
    again = training_sample(records.sample(fraction=1.0, shuffle=True, seed=7), 1_000, seed=42)
    assert set(again.get_column("unique_id")) == set(sample.get_column("unique_id"))
    other = training_sample(records, 1_000, seed=43)
    assert set(other.get_column("unique_id")) != set(sample.get_column("unique_id"))
    assert training_sample(records, 5_000, seed=42).height == 5_000
    assert training_sample(records, 0, seed=42).height == 5_000
    # Drawn evenly: each fifth of the keys holds about a fifth of the sample.
    fifths = sample.get_column("unique_id").str.slice(1).cast(pl.Int64) // 1_000
    assert fifths.value_counts().get_column("count").min() > 150
