"""Linkage evaluation: known answers on tiny hand-made frames, and a run on a small population."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import ConfigError
from uprnlink.households.ages import BIAS_BANDS, age_band_expr
from uprnlink.run.evaluation import (
    GroundTruth,
    LinkageEvaluation,
    evaluate_linkage,
    pairwise_scores,
    read_ground_truth,
)

REF = date(2026, 3, 31)

# (source, record id, our person, true person)
Record = tuple[str, str, str, int]


def outputs(records: list[Record]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Clusters, crosswalk and truth records for hand-made records."""
    uid = [f"u-{s}-{r}" for s, r, _, _ in records]
    clusters = pl.DataFrame(
        {
            "unique_id": uid,
            "source_dataset": [s for s, _, _, _ in records],
            "person_id": [p for _, _, p, _ in records],
        }
    )
    crosswalk = pl.DataFrame({"unique_id": uid, "record_id": [r for _, r, _, _ in records]})
    truth = pl.DataFrame(
        {
            "source": [s for s, _, _, _ in records],
            "record_id": [r for _, r, _, _ in records],
            "person_id": [t for _, _, _, t in records],
        }
    )
    return clusters, crosswalk, truth


def people(rows: list[tuple[int, str, date, date | None]]) -> pl.DataFrame:
    """Truth people: person id, sex, date of birth, date of death."""
    return pl.DataFrame(
        rows,
        schema={"person_id": pl.Int64, "sex": pl.Utf8, "dob": pl.Date, "date_of_death": pl.Date},
        orient="row",
    )


def residence(rows: list[tuple[int, int, date, date | None]]) -> pl.DataFrame:
    """Truth residence: person id, UPRN, from, to (inclusive, null = still there)."""
    return pl.DataFrame(
        rows,
        schema={
            "person_id": pl.Int64,
            "uprn": pl.Int64,
            "valid_from": pl.Date,
            "valid_to": pl.Date,
        },
        orient="row",
    )


def membership(rows: list[tuple[str, str, bool, date, date | None]]) -> pl.DataFrame:
    """Our memberships: person id, household id, communal, from, to (null = open)."""
    return pl.DataFrame(
        rows,
        schema={
            "person_id": pl.Utf8,
            "household_id": pl.Utf8,
            "is_communal": pl.Boolean,
            "valid_from": pl.Date,
            "valid_to": pl.Date,
        },
        orient="row",
    )


D0 = date(2010, 1, 1)

# Person clusters. True person 1 is split (a3 apart); true persons 2 and 3 are wrongly merged;
# person 4's duplicate GP registration is found; person 5's duplicate council tax record is not.
CLUSTER_RECORDS: list[Record] = [
    ("gp", "a1", "ours-P1", 1),
    ("ct", "a2", "ours-P1", 1),
    ("hosp", "a3", "ours-P2", 1),
    ("gp", "b1", "ours-P3", 2),
    ("ct", "b2", "ours-P3", 2),
    ("gp", "c1", "ours-P3", 3),
    ("gp", "d1", "ours-P4", 4),
    ("gp", "d2", "ours-P4", 4),
    ("ct", "e1", "ours-P5", 5),
    ("ct", "e2", "ours-P6", 5),
]
CLUSTER_PEOPLE = people(
    [
        (1, "F", date(2015, 6, 1), None),  # 10 on the reference date
        (2, "M", date(1995, 6, 1), None),  # 30
        (3, "F", date(1950, 6, 1), date(2014, 1, 1)),  # died at 63 (75 on the reference date)
        (4, "M", date(1955, 6, 1), None),  # 70
        (5, "F", date(1935, 6, 1), None),  # 90
    ]
)
CLUSTER_RESIDENCE = residence(
    [
        (1, 100, D0, date(2019, 12, 31)),
        (1, 101, date(2020, 1, 1), None),
        (2, 102, D0, None),
        (3, 102, D0, date(2014, 1, 1)),
        (4, 103, D0, None),
        (5, 104, D0, date(2019, 12, 31)),
        (5, 105, date(2020, 1, 1), None),
    ]
)


def cluster_evaluation() -> LinkageEvaluation:
    clusters, crosswalk, truth = outputs(CLUSTER_RECORDS)
    return evaluate_linkage(
        clusters,
        crosswalk,
        GroundTruth(records=truth, people=CLUSTER_PEOPLE, residence=CLUSTER_RESIDENCE),
        reference_date=REF,
    )


def test_pairwise_scores_overall() -> None:
    ev = cluster_evaluation()
    s = ev.overall
    assert (s.records, s.true_pairs, s.predicted_pairs, s.true_positive_pairs) == (10, 6, 5, 3)
    assert s.precision == pytest.approx(0.6)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 * 0.6 * 0.5 / 1.1)


def test_pairwise_scores_per_source_pair() -> None:
    ev = cluster_evaluation()
    expected = {  # (records, true, predicted, true positive)
        ("ct", "ct"): (4, 1, 0, 0),
        ("ct", "gp"): (9, 2, 3, 2),
        ("ct", "hosp"): (5, 1, 0, 0),
        ("gp", "gp"): (5, 1, 2, 1),
        ("gp", "hosp"): (6, 1, 0, 0),
        ("hosp", "hosp"): (1, 0, 0, 0),
    }
    got = {
        (p.source_a, p.source_b): (
            p.scores.records,
            p.scores.true_pairs,
            p.scores.predicted_pairs,
            p.scores.true_positive_pairs,
        )
        for p in ev.source_pairs
    }
    assert got == expected
    assert ev.source_pair("gp", "ct").precision == pytest.approx(2 / 3)
    assert ev.source_pair("gp", "ct").recall == 1.0
    assert ev.source_pair("gp", "gp").precision == 0.5  # the wrong merge within GP
    assert ev.source_pair("ct", "ct").recall == 0.0  # the missed duplicate
    # Every pair of records falls in exactly one source pair.
    for field in ("true_pairs", "predicted_pairs", "true_positive_pairs"):
        total = sum(getattr(p.scores, field) for p in ev.source_pairs)
        assert total == getattr(ev.overall, field)


def test_recall_by_age_band_sex_and_mover() -> None:
    ev = cluster_evaluation()

    def groups(dim: str) -> dict[str, tuple[int, int, int]]:
        return {
            g.group: (g.people, g.true_pairs, g.true_positive_pairs)
            for g in ev.bias_check(dim).groups
        }

    assert groups("age_band") == {
        "0-17": (1, 3, 1),
        "18-39": (1, 1, 1),
        "40-64": (1, 0, 0),  # aged at death, not on the reference date
        "65-84": (1, 1, 1),
        "85+": (1, 1, 0),
    }
    age = ev.bias_check("age_band")
    assert age.gap_points == pytest.approx(100.0)
    assert age.gap_between == ("18-39", "85+")
    assert groups("sex") == {"F": (3, 4, 1), "M": (2, 2, 2)}
    assert ev.bias_check("sex").gap_points == pytest.approx(75.0)
    assert groups("mover") == {"mover": (2, 4, 1), "non-mover": (3, 2, 2)}
    mover = ev.bias_check("mover")
    assert mover.gap_points == pytest.approx(75.0)
    assert mover.gap_between == ("non-mover", "mover")


def test_age_bands_at_their_edges() -> None:
    ages = pl.DataFrame({"age": [0, 17, 18, 39, 40, 64, 65, 84, 85, 104, None]})
    bands = (
        ages.select(age_band_expr(pl.col("age"), BIAS_BANDS, unknown="unknown"))
        .to_series()
        .to_list()
    )
    assert bands == [
        "0-17",
        "0-17",
        "18-39",
        "18-39",
        "40-64",
        "40-64",
        "65-84",
        "65-84",
        "85+",
        "85+",
        "unknown",
    ]


def test_a_perfect_clustering_scores_one_everywhere() -> None:
    perfect = [(s, r, f"ours-{t}", t) for s, r, _, t in CLUSTER_RECORDS]
    clusters, crosswalk, truth = outputs(perfect)
    ev = evaluate_linkage(clusters, crosswalk, GroundTruth(records=truth), reference_date=REF)
    assert ev.overall.precision == ev.overall.recall == ev.overall.f1 == 1.0
    assert all(p.scores.precision == p.scores.recall == 1.0 for p in ev.source_pairs)
    assert ev.households is None  # no residence truth, no memberships


# Households on the reference date. U1 (1001) is a family of three with t3 misplaced into
# t4 and t5's household; U3 (1003) is a care home; t8 moved from U2 to U4 and a ghost (t12, who
# left the area) is placed with him; t9 died in 2025 with his residence left open; t11 is never
# placed; t13 lives alone and is rebuilt exactly.
COMMUNAL = 1003
HOUSEHOLD_RECORDS: list[Record] = [
    ("gp", "h1", "ours-P1", 1),
    ("gp", "h2", "ours-P2", 2),
    ("gp", "h3", "ours-P3", 3),
    ("gp", "h4", "ours-P4", 4),
    ("gp", "h5", "ours-P5", 5),
    ("gp", "h6", "ours-P6", 6),
    ("gp", "h7", "ours-P7", 7),
    ("gp", "h8", "ours-P8", 8),
    ("gp", "h10", "ours-P10", 10),
    ("gp", "h11", "ours-P11", 11),
    ("gp", "h12", "ours-P12", 12),
    ("gp", "h13", "ours-P13", 13),
]
HOUSEHOLD_RESIDENCE = residence(
    [
        (1, 1001, D0, None),
        (2, 1001, D0, None),
        (3, 1001, D0, None),
        (4, 1002, D0, None),
        (5, 1002, D0, None),
        (6, COMMUNAL, D0, None),
        (7, COMMUNAL, D0, None),
        (8, 1002, D0, date(2019, 12, 31)),
        (8, 1004, date(2020, 1, 1), None),
        (9, 1002, D0, None),
        (10, 1005, D0, None),
        (11, 1005, D0, None),
        (12, 1009, D0, date(2024, 1, 1)),
        (13, 1006, D0, None),
    ]
)
HOUSEHOLD_PEOPLE = people(
    [(i, "F", date(1980, 1, 1), date(2025, 6, 1) if i == 9 else None) for i in range(1, 14)]
)
ADDRESSES = pl.DataFrame(
    {
        "uprn": [1001, 1002, COMMUNAL, 1004, 1005, 1006, 1009],
        "is_communal": [False, False, True, False, False, False, False],
    }
)
HOUSEHOLD_MEMBERSHIP = membership(
    [
        ("ours-P1", "ours-H9", False, D0, date(2019, 12, 31)),  # an old spell, ignored
        ("ours-P1", "ours-H1", False, date(2020, 1, 1), None),
        ("ours-P2", "ours-H1", False, D0, None),
        ("ours-P3", "ours-H2", False, D0, None),
        ("ours-P4", "ours-H2", False, D0, None),
        ("ours-P5", "ours-H2", False, D0, None),
        ("ours-P6", "ours-C1", True, D0, None),
        ("ours-P7", "ours-C1", True, D0, None),
        ("ours-P8", "ours-H3", False, date(2020, 1, 1), None),
        ("ours-P12", "ours-H3", False, D0, None),
        ("ours-P10", "ours-H5", False, D0, date(2026, 3, 31)),  # ends on the date: covers it
        ("ours-P13", "ours-H6", False, D0, None),
    ]
)


def household_evaluation(records: list[Record], members: pl.DataFrame) -> LinkageEvaluation:
    clusters, crosswalk, truth = outputs(records)
    return evaluate_linkage(
        clusters,
        crosswalk,
        GroundTruth(
            records=truth,
            people=HOUSEHOLD_PEOPLE,
            residence=HOUSEHOLD_RESIDENCE,
            addresses=ADDRESSES,
        ),
        reference_date=REF,
        membership=members,
    )


def test_household_assignment_on_the_reference_date() -> None:
    h = household_evaluation(HOUSEHOLD_RECORDS, HOUSEHOLD_MEMBERSHIP).households
    assert h is not None
    assert h.reference_date == REF
    assert (h.residents, h.residents_placed) == (9, 8)  # t11 never placed
    assert (h.households, h.predicted_households, h.households_exact) == (5, 5, 1)
    # True pairs: U1 three, U2 one (t9 is dead), U5 one; the care home does not count.
    assert (h.true_pairs, h.true_pairs_placed) == (5, 2)
    assert h.true_pairs_unplaced == 1  # t10-t11
    # Ours: H1 one, H2 three (two wrong, with t3), H3 one (wrong, the ghost).
    assert (h.predicted_pairs, h.predicted_pairs_true) == (5, 2)
    assert h.predicted_pairs_non_resident == 1  # t8-t12
    assert h.recall == pytest.approx(0.4)
    assert h.precision == pytest.approx(0.4)
    assert h.f1 == pytest.approx(0.4)
    assert h.recall_among_placed == pytest.approx(0.5)
    assert h.precision_among_residents == pytest.approx(0.5)


def test_households_merged_or_split_people_are_not_pairs() -> None:
    # t1 and t2 (who live together) are linked into one cluster; t4's records are split over
    # two clusters, both placed with t5. Each true person maps to the cluster with most records.
    records: list[Record] = [
        ("gp", "m1", "ours-P1", 1),
        ("gp", "m2", "ours-P1", 2),
        ("gp", "s1", "ours-P4", 4),
        ("ct", "s2", "ours-P4", 4),
        ("hosp", "s3", "ours-P4b", 4),
        ("gp", "s5", "ours-P5", 5),
    ]
    members = membership(
        [
            ("ours-P1", "ours-H1", False, D0, None),
            ("ours-P4", "ours-H2", False, D0, None),
            ("ours-P4b", "ours-H2", False, D0, None),
            ("ours-P5", "ours-H2", False, D0, None),
        ]
    )
    h = household_evaluation(records, members).households
    assert h is not None
    # True pairs among residents: U1 {t1, t2, t3} three, U2 {t4, t5} one, U5 one.
    assert (h.true_pairs, h.true_pairs_unplaced) == (5, 3)  # t3, t11 have no records
    assert h.true_pairs_placed == 1  # t4-t5 only: t1 and t2 are one of our people
    # H2 holds three of our people but only two true people: two pairs of three are true.
    assert (h.predicted_pairs, h.predicted_pairs_true) == (3, 2)
    assert h.predicted_pairs_non_resident == 0


def test_to_dict_is_json_ready_and_free_of_identifiers() -> None:
    ev = household_evaluation(HOUSEHOLD_RECORDS, HOUSEHOLD_MEMBERSHIP)
    d = ev.to_dict()
    text = json.dumps(d)
    assert "ours-" not in text and "u-gp" not in text
    assert set(d) == {"pairwise", "source_pairs", "households", "bias", "namesakes"}
    assert set(d["pairwise"]) == {
        "records",
        "predicted_pairs",
        "true_pairs",
        "true_positive_pairs",
        "precision",
        "recall",
        "f1",
    }
    assert d["households"]["reference_date"] == "2026-03-31"
    assert d["households"]["recall"] == pytest.approx(0.4)
    assert set(d["bias"]) == {"age_band", "sex", "mover"}


def test_to_table_shows_every_section() -> None:
    table = cluster_evaluation().to_table()
    assert "all records" in table
    assert "ct + gp" in table
    assert "within gp" in table
    assert "largest gap 100.00 points: 18-39 vs 85+" in table
    assert "mover non-mover" in table
    households = household_evaluation(HOUSEHOLD_RECORDS, HOUSEHOLD_MEMBERSHIP).to_table()
    assert "Households on 2026-03-31" in households
    assert "true pairs we place together (recall)" in households
    assert "wrong: one of them not resident *" in households


def test_namesake_precision_and_relations() -> None:
    """A father and the son named after him are merged; twins are kept apart; a neighbour
    with the father's name is merged with him; someone with no namesake does not count."""
    records: list[Record] = [
        ("gp", "f1", "ours-A", 1),
        ("ct", "f2", "ours-A", 1),
        ("gp", "s1", "ours-A", 2),  # the son, in the father's cluster
        ("gp", "t1", "ours-B", 3),
        ("hosp", "t2", "ours-B", 3),
        ("gp", "u1", "ours-C", 4),  # twin of 3, apart
        ("gp", "n1", "ours-A", 5),  # a neighbour with the father's name, merged too
        ("gp", "x1", "ours-D", 6),
        ("ct", "x2", "ours-D", 6),
    ]
    clusters, crosswalk, truth = outputs(records)
    folk = pl.DataFrame(
        [
            (1, "JOHN", "SMITH", date(1960, 1, 2), None, None),
            (2, "John", "Smith", date(1990, 3, 4), None, 1),
            (3, "AMY", "JONES", date(2001, 5, 6), None, None),
            (4, "BETH", "JONES", date(2001, 5, 6), None, None),
            (5, "JOHN", "SMITH", date(1975, 7, 8), None, None),
            (6, "CARL", "BROWN", date(1980, 9, 10), None, None),
        ],
        schema={
            "person_id": pl.Int64,
            "forename": pl.Utf8,
            "surname": pl.Utf8,
            "dob": pl.Date,
            "mother_id": pl.Int64,
            "father_id": pl.Int64,
        },
        orient="row",
    )
    folk = folk.with_columns(sex=pl.lit("M"), date_of_death=pl.lit(None, pl.Date))
    ev = evaluate_linkage(
        clusters, crosswalk, GroundTruth(records=truth, people=folk), reference_date=REF
    )
    ns = ev.namesakes
    assert ns is not None
    assert ns.people == 5
    # Correct: f1-f2 and t1-t2. Wrong: f x s (2), f x n (2), s x n (1).
    assert (ns.correct_pairs, ns.wrong_pairs) == (2, 5)
    assert ns.precision == pytest.approx(2 / 7)
    assert ns.merged == {"parent and child": 1, "twins or same birthday": 0, "other": 2}
    assert "Namesakes:" in ev.to_table()
    # Without names in the truth there is nothing to score.
    bare = GroundTruth(records=truth, people=folk.drop("forename"))
    assert evaluate_linkage(clusters, crosswalk, bare, reference_date=REF).namesakes is None


def test_pairwise_scores_ignores_records_without_truth() -> None:
    frame = pl.DataFrame({"person_id": ["a", "a", "a"], "true_id": [1, 1, None]})
    s = pairwise_scores(frame)
    assert (s.records, s.predicted_pairs, s.true_pairs, s.true_positive_pairs) == (2, 1, 1, 1)


@pytest.mark.slow
def test_evaluate_run_on_a_small_population(small_run: PipelineRun) -> None:
    from uprnlink.run.evaluation import evaluate_run

    result = evaluate_run(small_run.settings, small_run.root / "demo" / "truth")
    written = json.loads((small_run.settings.out_dir / "evaluation.json").read_text())
    assert "print_table" not in written
    assert written["pairwise"] == result["pairwise"]
    assert isinstance(result["print_table"], str) and "Households on" in result["print_table"]

    ratios = [result["pairwise"][k] for k in ("precision", "recall", "f1")]
    for pair in result["source_pairs"]:
        ratios += [pair["precision"], pair["recall"], pair["f1"]]
    for check in result["bias"].values():
        ratios += [g["recall"] for g in check["groups"]]
        assert check["gap_points"] is None or 0 <= check["gap_points"] <= 100
    h = result["households"]
    ratios += [h["precision"], h["recall"], h["f1"]]
    # The small run is the suite's one run with the baselines on: they are scored on the same
    # records, and shown beside the model.
    baselines = result["baselines"]
    assert set(baselines) == {"deterministic", "plain_splink"}
    for scores in baselines.values():
        ratios += [scores["precision"], scores["recall"], scores["f1"]]
        assert scores["records"] == result["pairwise"]["records"]
    assert "Model against baselines on the same records" in result["print_table"]
    assert all(0.0 <= r <= 1.0 for r in ratios)
    assert h["true_pairs"] > 0 and h["predicted_pairs"] > 0
    assert h["recall"] > 0.8, h
    assert h["recall_among_placed"] > 0.8, h
    assert h["precision_among_residents"] > 0.8, h
    # Overall precision is lower: people who left the area but stay registered with their GP
    # (15% of leavers in the synthetic data) are still placed in their old household.
    assert h["precision"] > 0.7, h
    assert len(result["source_pairs"]) == 21  # six sources: 15 pairs and 6 within
    # The link stage's cannot-link counts come with the evaluation (counts only).
    splits = result["cannot_link"]
    assert set(splits["by_rule"]) == {"nhs_number", "date_of_birth", "same_listing", "under_age"}
    assert splits["clusters_in_conflict"] >= max(splits["by_rule"].values())
    assert "Cannot-link rules" in result["print_table"]
    assert result["namesakes"]["people"] > 0


def test_equal_recalls_have_no_gap_but_name_two_groups() -> None:
    records: list[Record] = [
        ("gp", "a1", "ours-P1", 1),
        ("ct", "a2", "ours-P1", 1),
        ("gp", "b1", "ours-P2", 2),
        ("ct", "b2", "ours-P2", 2),
    ]
    clusters, crosswalk, truth = outputs(records)
    ev = evaluate_linkage(
        clusters,
        crosswalk,
        GroundTruth(records=truth, people=CLUSTER_PEOPLE),
        reference_date=REF,
    )
    sex = ev.bias_check("sex")
    assert sex.gap_points == 0.0
    assert sex.gap_between == ("F", "M")
    assert [b.dimension for b in ev.bias] == ["age_band", "sex"]  # no residence: no movers


def test_read_ground_truth_needs_only_records(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ground truth"):
        read_ground_truth(tmp_path)
    _, _, truth = outputs(CLUSTER_RECORDS)
    truth.write_parquet(tmp_path / "records.parquet")
    read = read_ground_truth(tmp_path)
    assert read.records.height == len(CLUSTER_RECORDS)
    assert read.people is None and read.residence is None and read.addresses is None


def test_populations_side_by_side() -> None:
    from uprnlink.run.evaluation import side_by_side

    first = {
        "pairwise": {"records": 10, "precision": 1.0, "recall": 0.5, "f1": 2 / 3},
        "namesakes": {"precision": 0.99},
        "households": {"precision": 0.9, "recall": 0.8, "households": 4, "households_exact": 3},
        "cannot_link": {
            "by_rule": {"nhs_number": 2, "date_of_birth": 1, "same_listing": 0, "under_age": 0},
            "people_added": 3,
        },
        "baselines": {"plain_splink": {"f1": 0.5}},
    }
    second = {"pairwise": {"records": 20, "precision": 0.9, "recall": 0.9, "f1": 0.9}}
    table = side_by_side([("demo", first), ("testpop", second)])
    lines = table.splitlines()
    assert lines[0] == "Populations side by side"
    assert lines[1].split() == ["demo", "testpop"]
    assert "households rebuilt exactly" in table and "0.7500" in table
    assert next(ln for ln in lines if "namesake-pair precision" in ln).split()[-2:] == [
        "0.9900",
        "-",
    ]
