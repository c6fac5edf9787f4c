"""The declared comparisons: which level a hand-made pair lands in, their priors, and the
DOB + postcode blocking rule (DuckDB on one-row frames, no training)."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from uprnlink.linkage.comparisons import (
    DECLARED,
    Comparison,
    Declared,
    Level,
    comparisons_for,
    forename,
    sql_level,
    surname,
)
from uprnlink.linkage.model import FULL_IDENTIFIERS, IDENTIFIERS, blocking_rule_sqls

NAMES = frozenset({"forename", "surname"})


def level_of(comparison: Comparison, left: dict[str, Any], right: dict[str, Any]) -> str:
    """The label of the first level whose SQL holds for the pair (left, right)."""
    levels = comparison.creator().get_comparison("duckdb").as_dict()["comparison_levels"]
    cases = " ".join(
        f"WHEN {lvl['sql_condition']} THEN {i}"
        for i, lvl in enumerate(levels)
        if lvl["sql_condition"] != "ELSE"
    )
    columns = {f"{k}_l": v for k, v in left.items()} | {f"{k}_r": v for k, v in right.items()}
    con = duckdb.connect()
    select = ", ".join(f"${k} AS {k}" for k in columns)
    row = con.execute(f"SELECT CASE {cases} END FROM (SELECT {select})", columns).fetchall()
    index = row[0][0]
    return "else" if index is None else str(levels[index]["label_for_charts"])


def _names(first: str, last: str) -> dict[str, Any]:
    return {"forename": first, "surname": last, "forename_roots": [first]}


def test_names_recorded_the_other_way_round_agree_on_both_names() -> None:
    a, b = _names("CALVIN", "WHITE"), _names("WHITE", "CALVIN")
    assert level_of(forename(NAMES), a, b) == "Forename is the other's surname"
    assert level_of(surname(NAMES), a, b) == "Forename and surname reversed"


def test_half_a_reversal_counts_once() -> None:
    # A forename filed as the surname and another name in its place: one agreement, not two.
    a, b = _names("CALVIN", "WHITE"), _names("WHITE", "TIMOTHY")
    assert level_of(forename(NAMES), a, b) == "Forename is the other's surname"
    assert level_of(surname(NAMES), a, b) == "else"


def test_one_edit_in_a_short_name_has_its_own_level() -> None:
    # JON / JAN: Jaro-Winkler 0.80, below the 0.92 level; one substitution.
    label = level_of(forename(NAMES), _names("JON", "X"), _names("JAN", "Y"))
    assert label.startswith("Damerau-Levenshtein distance of forename <= 1")
    assert level_of(surname(NAMES), _names("A", "REES"), _names("B", "REIS")).startswith(
        "Damerau-Levenshtein distance of surname <= 1"
    )


def test_exact_names_stay_exact_and_reversal_needs_both_names() -> None:
    a = _names("ANNA", "POPA")
    assert level_of(forename(NAMES), a, a) == "Exact match on forename"
    assert "Forename is the other's surname" not in str(
        forename(frozenset({"forename"})).creator().get_comparison("duckdb").as_dict()
    )


def test_every_declared_comparison_has_one_prior_per_level_summing_to_one() -> None:
    optional = [i for i in IDENTIFIERS if i != "surname"]
    for n in range(len(optional) + 1):
        for subset in itertools.combinations(optional, n):
            ids = frozenset({"surname", *subset})
            for comparison in comparisons_for(ids):
                nulls = [lvl for lvl in comparison.levels if lvl.m is None]
                assert len(nulls) == 1, (comparison.name, ids)
                assert comparison.m_probabilities == pytest.approx(
                    [m for m in comparison.m_probabilities if m > 0]
                )
                assert sum(comparison.m_probabilities) == pytest.approx(1.0), (comparison.name, ids)
    assert {d.declare.__name__ for d in DECLARED} >= {"forename", "surname", "address", "move"}


def test_date_of_birth_and_postcode_find_a_pair_whose_names_both_differ() -> None:
    rules = blocking_rule_sqls(FULL_IDENTIFIERS)
    rule = next(r for r in rules if '"dob"' in r and '"postcode"' in r)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES "
        "(1, 'JON', 'SMYTHE', DATE '1980-02-03', 'AB1 2CD'), "
        "(2, 'JOHN', 'SMITH', DATE '1980-02-03', 'AB1 2CD'), "
        "(3, 'JOHN', 'SMITH', DATE '1980-02-03', 'ZZ9 9ZZ')) "
        "AS v(unique_id, forename, surname, dob, postcode)"
    )
    found = con.execute(
        f"SELECT l.unique_id, r.unique_id FROM t l JOIN t r "
        f"ON l.unique_id < r.unique_id AND ({rule})"
    ).fetchall()
    assert found == [(1, 2)]
    assert not [r for r in blocking_rule_sqls(FULL_IDENTIFIERS - {"postcode"}) if "postcode" in r]


def test_the_model_compares_dates_as_dates() -> None:
    # A transposed day and month is its own level, ahead of "one character different".
    from uprnlink.linkage.comparisons import date_of_birth

    dob = date_of_birth(FULL_IDENTIFIERS)
    assert (
        level_of(dob, {"dob": date(1980, 3, 5)}, {"dob": date(1980, 5, 3)})
        == "Day and month transposed"
    )


def test_without_a_place_one_name_and_the_others_initial_find_a_pair() -> None:
    # Names and dates of birth only, the date missing on one side: a typo in the surname
    # (SMITH / SMYTH) is found by the forename and the surname's initial, not JONES.
    rules = blocking_rule_sqls(frozenset({"forename", "surname", "dob"}))
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES "
        "(1, 'JOHN', 'SMITH', DATE '1980-02-03'), (2, 'JOHN', 'SMYTH', NULL), "
        "(3, 'JOHN', 'JONES', NULL), (4, 'JAHN', 'SMYTH', NULL)) "
        "AS v(unique_id, forename, surname, dob)"
    )
    either = " OR ".join(f"({r})" for r in rules)
    found = con.execute(
        f"SELECT l.unique_id, r.unique_id FROM t l JOIN t r "
        f"ON l.unique_id < r.unique_id AND ({either}) ORDER BY 1, 2"
    ).fetchall()
    assert found == [(1, 2), (2, 4)]
    # With a UPRN or a postcode to pin a place, these looser rules are not used.
    initials = [r for r in rules if r.count(", 1, 1)") == 2]
    assert len(initials) == 2
    assert not set(initials) & set(blocking_rule_sqls(FULL_IDENTIFIERS))


def birth_year(identifiers: frozenset[str]) -> Comparison:
    """Year of birth: the same, or not (docs/design.md, "Adding a comparison": the example)."""
    import splink.comparison_level_library as cll

    return Comparison(
        "birth_year",
        "Year of birth",
        (
            Level(cll.NullLevel("dob")),
            Level(sql_level("year(dob_l) = year(dob_r)", "Same year of birth"), 0.97),
            Level(cll.ElseLevel(), 0.03),
        ),
    )


def test_a_declared_comparison_reaches_the_trained_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One `Declared` added to DECLARED, nothing else: the model compares, trains and saves it,
    and a model saved without it is no longer reused."""
    from tests.test_linkage import SETTINGS, synthetic_records
    from uprnlink.linkage import comparisons
    from uprnlink.linkage.model import current_fingerprint, reusable_model
    from uprnlink.linkage.predict import link_people

    before = current_fingerprint(SETTINGS)
    extra = Declared(birth_year, all_of=frozenset({"dob"}))
    monkeypatch.setattr(comparisons, "DECLARED", (*comparisons.DECLARED, extra))
    result = link_people(synthetic_records(), SETTINGS, work_dir=tmp_path)
    assert result.comparisons[-1] == "birth_year"
    assert result.model["settings_fingerprint"] == current_fingerprint(SETTINGS) != before
    saved = {c["output_column_name"]: c for c in result.model["splink"]["comparisons"]}
    null, same, other = saved["birth_year"]["comparison_levels"]
    assert null["is_null_level"] and same["label_for_charts"] == "Same year of birth"
    # Trained: u from random pairs (about 1 in 70 share a year), m by EM (no longer the prior).
    assert 0 < same["u_probability"] < 0.1 < other["u_probability"]
    assert same["m_probability"] != 0.97 and same["m_probability"] > 0.5
    assert reusable_model(result.model, before) is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # A system that knows only the year of birth records 1 January of it.
        (date(1978, 1, 1), date(1978, 4, 4), "Known to the year or month only"),
        (date(1978, 4, 4), date(1978, 1, 1), "Known to the year or month only"),
        # ... or the 1st of the month when it knows the month.
        (date(1980, 8, 1), date(1980, 8, 29), "Known to the year or month only"),
        # 1 January of another year, and the 1st of another month, are not partial dates of it.
        (date(1979, 1, 1), date(1978, 4, 4), "Abs difference of 'dob <= 1 year'"),
        (date(1980, 7, 1), date(1980, 8, 29), "Abs difference of 'dob <= 1 year'"),
    ],
)
def test_a_date_known_only_to_the_year_or_month_is_its_own_level(
    a: date, b: date, expected: str
) -> None:
    from uprnlink.linkage.comparisons import date_of_birth

    assert level_of(date_of_birth(FULL_IDENTIFIERS), {"dob": a}, {"dob": b}) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("SMITH JONES", "JONES", "One surname a part of the other"),
        ("SMITH", "SMITH JONES", "One surname a part of the other"),
        ("DE LA CRUZ", "CRUZ", "One surname a part of the other"),
        # A word that merely begins the other is not a part of it.
        ("SMITH JONES", "JONESON", "else"),
    ],
)
def test_a_double_barrelled_surname_against_one_of_its_halves(
    a: str, b: str, expected: str
) -> None:
    from uprnlink.linkage.comparisons import surname

    found = level_of(surname(FULL_IDENTIFIERS), _names("ANNA", a), _names("ANNA", b))
    assert found == expected
