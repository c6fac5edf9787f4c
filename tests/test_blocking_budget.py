"""A pair budget: the rules whose blocks grow with the population get lower caps until the
delivery's candidate pairs fit, counted as prediction counts them; no rule is dropped."""

from __future__ import annotations

import random
from datetime import date, timedelta

import duckdb
import polars as pl
import pytest

from uprnlink.linkage import blocking
from uprnlink.linkage.blocking import split_blocks, split_rule_sqls

RULES: list[tuple[str, ...] | str] = [
    ("nhs_token",),
    ("surname", "dob"),
    ("forename", "surname", "substr(postcode, 1, 4)"),
    "l.surname = r.surname AND l.move_next = r.period_start",
]
SQLS = [
    "l.nhs_token = r.nhs_token",
    "l.surname = r.surname AND l.dob = r.dob",
    "l.forename = r.forename AND l.surname = r.surname "
    "AND substr(l.postcode, 1, 4) = substr(r.postcode, 1, 4)",
    "l.surname = r.surname AND l.move_next = r.period_start",
]
MOVED = date(2020, 4, 1)


def _delivery(people: int = 400, seed: int = 7) -> tuple[pl.DataFrame, set[tuple[int, int]]]:
    """A skewed delivery: three forenames, two surnames, one postcode district. Each person has
    a profile with an NHS number and one without it whose day of birth is mistyped (found only
    by the name and district rule), and every fifth person a third profile, a stay starting
    the day the first ends (with a new surname: found only by the NHS number). The true pairs
    a rule can find (the first profile with each other; the others meet through it) are
    returned with it."""
    rng = random.Random(seed)
    rows, truth = [], set()
    for person in range(people):
        forename, surname = rng.choice(["JOHN", "MARY", "ALI"]), rng.choice(["SMITH", "KHAN"])
        dob = date(1940, 1, 1) + timedelta(days=rng.randrange(60 * 365))
        sex = rng.choice("MF")
        postcode = f"AB1 {rng.randrange(10)}XY"
        ids = [3 * person, 3 * person + 1]
        rows.append((ids[0], forename, surname, dob, sex, postcode, f"n{person}", None, MOVED))
        typo = dob.replace(day=dob.day % 28 + 1)
        rows.append((ids[1], forename, surname, typo, sex, postcode, None, None, None))
        if person % 5 == 0:
            ids.append(3 * person + 2)
            rows[-2] = (*rows[-2][:7], MOVED, None)
            rows.append((ids[2], forename, "NEW", dob, sex, "ZZ9 1AA", f"n{person}", None, MOVED))
        truth |= {(ids[0], other) for other in ids[1:]}
    schema = {
        "unique_id": pl.Int64,
        "forename": pl.Utf8,
        "surname": pl.Utf8,
        "dob": pl.Date,
        "sex": pl.Utf8,
        "postcode": pl.Utf8,
        "nhs_token": pl.Utf8,
        "move_next": pl.Date,
        "period_start": pl.Date,
    }
    return pl.DataFrame(rows, schema=schema, orient="row"), truth


def _found(frame: pl.DataFrame, sqls: list[str]) -> list[set[tuple[int, int]]]:
    """The pairs (smaller id first) each rule's SQL finds, as Splink joins them."""
    con = duckdb.connect()
    con.register("t", frame.to_arrow())
    return [
        set(
            con.execute(
                f"SELECT l.unique_id, r.unique_id FROM t l JOIN t r "
                f"ON l.unique_id < r.unique_id AND ({sql})"
            ).fetchall()
        )
        for sql in sqls
    ]


def _marginal(found: list[set[tuple[int, int]]]) -> list[int]:
    seen: set[tuple[int, int]] = set()
    out = []
    for pairs in found:
        out.append(len(pairs - seen))
        seen |= pairs
    return out


def test_the_pairs_are_counted_as_prediction_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    profiles, _ = _delivery()
    for cap in (1000, 9, 3, 2):
        blocked, sqls, report = _split(profiles, cap=cap, budget=10**9)
        assert [e["block_cap"] for e in report] == [cap] * len(RULES)
        assert [e["estimated_pairs"] for e in report] == _marginal(_found(blocked, sqls))
    # Final blocks too large to list count all their pairs as new: an overestimate, never an
    # underestimate.
    monkeypatch.setattr(blocking, "LISTED_BLOCK_PAIRS", 0)
    blocked, sqls, report = _split(profiles, cap=2, budget=10**9)
    exact = _marginal(_found(blocked, sqls))
    assert all(e["estimated_pairs"] >= n for e, n in zip(report, exact, strict=True))
    assert sum(e["estimated_pairs"] for e in report) > sum(exact)


def test_a_budget_is_met_on_a_skewed_delivery_and_the_true_pairs_kept() -> None:
    profiles, truth = _delivery()
    unbudgeted = _found(profiles, SQLS)
    before = sum(_marginal(unbudgeted))
    budget = 2 * profiles.height  # two pairs per profile
    assert before > 3 * budget  # the name and district blocks hold about 130 profiles each
    blocked, sqls, report = _split(profiles, cap=1000, budget=budget)
    found = _found(blocked, sqls)
    assert [e["estimated_pairs"] for e in report] == _marginal(found)
    assert sum(_marginal(found)) <= budget
    # Only the rules on common keys were tightened; the NHS number's blocks stay whole, and
    # the surname and date of birth (two pairs) never had the most pairs to remove.
    assert [e["block_cap"] for e in report][:2] == [1000, 1000]
    assert report[2]["block_cap"] < 1000 and report[2]["blocks_split"]
    # No rule is dropped, and every true pair is still found by some rule.
    assert all(found)
    assert truth <= set().union(*found)


def test_a_true_pair_split_apart_by_one_rule_still_meets_through_another() -> None:
    profiles, truth = _delivery()
    # Person 0's typo profile gets a year of birth one off: the name and district rule's year
    # refiner separates it from person 0's other profiles, which the NHS number still joins
    # to the third profile.
    profiles = profiles.with_columns(
        pl.when(pl.col("unique_id") == 0)
        .then(pl.col("dob").dt.offset_by("1y"))
        .otherwise(pl.col("dob"))
        .alias("dob")
    )
    blocked, sqls, report = _split(profiles, cap=1000, budget=profiles.height)
    assert report[2]["split_by"] == ["dob_year", "sex"]
    found = _found(blocked, sqls)
    assert (0, 1) not in found[2]
    assert (0, 2) in found[0]
    assert truth - {(0, 1)} <= set().union(*found)


def test_no_budget_or_an_ample_one_changes_nothing() -> None:
    profiles, _ = _delivery(people=60)
    plain, plain_report = split_blocks(profiles, RULES, cap=1000)
    assert plain.columns == profiles.columns
    assert all("estimated_pairs" not in e for e in plain_report)
    ample, report = split_blocks(profiles, RULES, cap=1000, budget=10**9)
    assert ample.columns == profiles.columns
    assert [e["block_cap"] for e in report] == [1000] * len(RULES)
    assert sum(e["estimated_pairs"] for e in report) == sum(_marginal(_found(profiles, SQLS)))


def test_a_budget_out_of_reach_stops_at_the_smallest_cap() -> None:
    profiles, truth = _delivery(people=100)
    blocked, sqls, report = _split(profiles, cap=1000, budget=1)
    # Every rule but the NHS number's (one person each) is lowered to the smallest cap.
    assert [e["block_cap"] for e in report] == [1000, 2, 2, 2]
    found = _found(blocked, sqls)
    assert all(found) and sum(_marginal(found)) > 1
    assert truth <= set().union(*found)


def _split(
    profiles: pl.DataFrame, cap: int, budget: int | None
) -> tuple[pl.DataFrame, list[str], list[dict[str, object]]]:
    blocked, report = split_blocks(profiles, RULES, cap=cap, budget=budget)
    return blocked, split_rule_sqls(SQLS, report), report


def test_a_rule_whose_key_is_not_read_is_neither_counted_nor_lowered() -> None:
    profiles, _ = _delivery(people=60)
    rules = [*RULES, "substr(l.surname, 1, 3) = substr(r.surname, 1, 3)"]
    _, report = split_blocks(profiles, rules, cap=1000, budget=1)
    assert report[-1]["estimated_pairs"] is None and report[-1]["block_cap"] == 1000
    assert [e["block_cap"] for e in report[:-1]] == [1000, 2, 2, 2]
