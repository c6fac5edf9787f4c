"""The cap per block: over-common blocks are split by a further identifier, the rest untouched."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import polars as pl

from uprnlink.linkage.blocking import (
    CAP_FLOOR,
    BlockKey,
    derived_block_cap,
    key_of,
    split_blocks,
    split_rule_sqls,
)

DOB = date(1980, 1, 1)
MOVE_RULE = "l.surname = r.surname AND l.move_next = r.period_start"


def _profiles(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "unique_id": pl.Int64,
            "forename": pl.Utf8,
            "surname": pl.Utf8,
            "dob": pl.Date,
            "sex": pl.Utf8,
            "move_next": pl.Date,
            "period_start": pl.Date,
        },
        orient="row",
    )


def _pairs(frame: pl.DataFrame, sql: str) -> list[tuple[int, int]]:
    """The pairs a blocking rule's SQL finds among the profiles (each pair once)."""
    con = duckdb.connect()
    con.register("t", frame.to_arrow())
    found = con.execute(
        f"SELECT l.unique_id, r.unique_id FROM t l JOIN t r ON l.unique_id <> r.unique_id "
        f"AND ({sql}) ORDER BY 1, 2"
    ).fetchall()
    return sorted({(min(a, b), max(a, b)) for a, b in found})


SMITHS = [
    (1, "JOHN", "SMITH", DOB, "M", None, None),
    (2, "JOHN", "SMITH", DOB, "M", None, None),  # the true pair: one person twice
    (3, "JANE", "SMITH", DOB, "F", None, None),
    (4, "ANNA", "SMITH", DOB, "F", None, None),
    (5, "ANNE", "SMITH", DOB, "F", None, None),
    (6, "PAUL", "SMITH", DOB, "M", None, None),
    (7, "MARY", "JONES", DOB, "F", None, None),
    (8, "MARIE", "JONES", DOB, "F", None, None),
]
RULE_SQL = "l.surname = r.surname AND l.dob = r.dob"


def test_the_keys_of_the_rules_are_read_from_their_columns_or_sql() -> None:
    assert key_of(("surname", "dob")) == BlockKey(("surname", "dob"), ("surname", "dob"))
    assert key_of(("surname", "dob")).refiners == ("forename_initial", "sex")  # type: ignore[union-attr]
    move = key_of(MOVE_RULE)
    assert move == BlockKey(("surname", "move_next"), ("surname", "period_start"))
    assert move.refiners == ("forename_initial", "dob_year")
    reverse = key_of("l.surname = r.surname AND r.move_next = l.period_start")
    assert reverse == BlockKey(("surname", "period_start"), ("surname", "move_next"))
    initial = key_of(
        "l.forename = r.forename AND substr(l.surname, 1, 1) = substr(r.surname, 1, 1)"
    )
    assert initial == BlockKey(("forename", "surname_initial"), ("forename", "surname_initial"))
    # Never split: it exists for pairs whose date of birth and one name disagree.
    assert initial.refiners == ()
    assert key_of("split_part(l.a, ' ', 1) = split_part(r.a, ' ', 1)") is None


def test_a_block_over_the_cap_is_split_and_its_true_pair_still_found() -> None:
    profiles = _profiles(SMITHS)
    rule = ("surname", "dob")
    before = _pairs(profiles, RULE_SQL)
    assert len(before) == 15 + 1  # six SMITHs and two JONESes born the same day
    blocked, report = split_blocks(profiles, [rule], cap=3)
    assert report == [
        {
            "blocks_split": 1,
            "blocks_over_cap": 0,
            "split_by": ["forename_initial", "sex"],
            "block_cap": 3,
        }
    ]
    (sql,) = split_rule_sqls([RULE_SQL], report)
    after = _pairs(blocked, sql)
    # The SMITHs split by forename initial (J: 3, A: 2, P: 1); the JONES block is under the cap.
    assert after == [(1, 2), (1, 3), (2, 3), (4, 5), (7, 8)]
    assert set(after) <= set(before)


def test_a_block_still_over_the_cap_is_split_by_the_next_identifier() -> None:
    profiles = _profiles(SMITHS)
    blocked, report = split_blocks(profiles, [("surname", "dob")], cap=2)
    assert report[0]["blocks_split"] == 1  # SMITH; JONES is one pair, the cap
    (sql,) = split_rule_sqls([RULE_SQL], report)
    # The J SMITHs (three pairs) are split again, by sex.
    assert _pairs(blocked, sql) == [(1, 2), (4, 5), (7, 8)]


def test_a_block_under_the_cap_keeps_the_rule_as_it_reads() -> None:
    profiles = _profiles(SMITHS)
    blocked, report = split_blocks(profiles, [("surname", "dob")], cap=6)
    assert report[0]["blocks_split"] == 0
    assert blocked.columns == profiles.columns
    assert split_rule_sqls([RULE_SQL], report) == [RULE_SQL]


def test_a_move_on_a_common_date_is_split_on_both_sides() -> None:
    first = date(2020, 4, 1)
    rows = [
        # Stays ending on 31 March (move_next 1 April) and stays starting on 1 April.
        *[(i, f"{n}X", "SMITH", None, None, first, None) for i, n in enumerate("ABCDE", 1)],
        *[(10 + i, f"{n}Y", "SMITH", None, None, None, first) for i, n in enumerate("ABCDE", 1)],
        (20, "AZ", "JONES", None, None, first, None),
        (21, "QZ", "JONES", None, None, None, first),
    ]
    profiles = _profiles(rows)
    before = _pairs(profiles, MOVE_RULE)
    assert len(before) == 25 + 1
    blocked, report = split_blocks(profiles, [MOVE_RULE], cap=4)  # 6 pairs at most
    assert report[0]["blocks_split"] == 1 and report[0]["blocks_over_cap"] == 0
    (sql,) = split_rule_sqls([MOVE_RULE], report)
    # Each SMITH ending meets only the SMITH starting with its forename's initial; the JONES
    # block (one pair) is untouched though its initials differ.
    assert _pairs(blocked, sql) == [(i, 10 + i) for i in range(1, 6)] + [(20, 21)]


def test_the_cap_is_derived_from_the_profiles_one_person_has() -> None:
    assert derived_block_cap(_profiles(SMITHS)) == CAP_FLOOR
    many = pl.DataFrame({"nhs_token": ["a"] * 9 + ["b"] * 2 + [f"c{i}" for i in range(500)]})
    assert derived_block_cap(many) == 9  # the nine profiles of one NHS number


def test_a_rule_read_the_other_way_round_splits_as_if_alone() -> None:
    # The mover rules come in pairs (l.move_next = r.period_start and r.move_next =
    # l.period_start): the second reuses the first's blocks with its sides swapped, and must
    # give the refining columns it would give on its own.
    import random

    rng = random.Random(5)
    days = [date(2020, 4, 1), date(2021, 4, 1), date(2022, 1, 1)]
    rows = [
        (
            i,
            rng.choice(("ANN", "BOB", "CAT", "DAN")) + rng.choice("XY"),
            rng.choice(("SMITH", "JONES")),
            date(rng.randint(1950, 1990), 1, 1),
            rng.choice("MF"),
            rng.choice([*days, None]),
            rng.choice([*days, None]),
        )
        for i in range(400)
    ]
    profiles = _profiles(rows)
    mirror = "l.surname = r.surname AND r.move_next = l.period_start"
    together, report = split_blocks(profiles, [MOVE_RULE, mirror], cap=4)
    alone, alone_report = split_blocks(profiles, [mirror], cap=4)
    assert report[1]["blocks_split"] > 0 and report[1] == alone_report[0]
    for side in ("l", "r"):
        assert together.get_column(f"_blk1_{side}").equals(alone.get_column(f"_blk0_{side}"))
    assert not together.get_column("_blk1_l").equals(together.get_column("_blk0_l"))
