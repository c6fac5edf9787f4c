"""Disclosure control: no small count is shown, and no withheld count can be recovered."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uprnlink.errors import PublishError
from uprnlink.publish.disclosure import (
    PRESETS,
    DisclosurePolicy,
    Grouping,
    lattice,
    protect,
    protect_rows,
    read_policy,
    secondary_suppression,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small counts are the interesting ones: many cells near the threshold, some zeros, some large.
cell_values = st.one_of(st.integers(0, 12), st.integers(0, 60))


@st.composite
def crosstabs(draw: st.DrawFn) -> pl.DataFrame:
    """A random table of rows x columns with an additive count and a part of it."""
    n_rows = draw(st.integers(1, 6))
    n_cols = draw(st.integers(1, 5))
    rows, cols, n, part = [], [], [], []
    for r in range(n_rows):
        for c in range(n_cols):
            v = draw(cell_values)
            rows.append(f"r{r}")
            cols.append(f"c{c}")
            n.append(v)
            part.append(draw(st.integers(0, v)))
    return pl.DataFrame({"row": rows, "col": cols, "n": n, "part": part})


policies = st.builds(
    DisclosurePolicy,
    min_count=st.integers(2, 12),
    suppress_zero=st.booleans(),
    round_to=st.sampled_from([1, 1, 5]),
    secondary=st.just(True),
)


def solve_by_differencing(
    known: dict[tuple[str, ...], int | None], equations: list[tuple[tuple, list[tuple]]]
) -> dict[tuple, int]:
    """The attacker: repeatedly solve any equation with exactly one unknown entry."""
    values = {k: v for k, v in known.items() if v is not None}
    changed = True
    while changed:
        changed = False
        for total, parts in equations:
            members = [total, *parts]
            unknown = [m for m in members if m not in values]
            if len(unknown) != 1:
                continue
            (u,) = unknown
            if u == total:
                values[u] = sum(values[p] for p in parts)
            else:
                values[u] = values[total] - sum(values[p] for p in parts if p != u)
            changed = True
    return values


def all_levels(frame: pl.DataFrame, policy: DisclosurePolicy, subsets=()):
    """Protect a row x col table with every margin published, so the test can see them."""
    groupings, relations = lattice(["row", "col"])
    shown = [Grouping(g.name, g.dims, published=True) for g in groupings]
    return protect(frame, ["n", "part"], shown, relations, policy, subsets=subsets).tables


def exact_levels(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {
        "row,col": frame,
        "row": frame.group_by("row").agg(pl.col("n", "part").sum()),
        "col": frame.group_by("col").agg(pl.col("n", "part").sum()),
        "total": frame.select(pl.col("n", "part").sum()),
    }


def cells(tables: dict[str, pl.DataFrame], count: str) -> dict[tuple, int | None]:
    """(level, row key, col key) -> value, for every level of the table."""
    out: dict[tuple, int | None] = {}
    for level, frame in tables.items():
        for rec in frame.iter_rows(named=True):
            out[(level, rec.get("row"), rec.get("col"))] = rec[count]
    return out


def margin_equations(frame: pl.DataFrame) -> list[tuple[tuple, list[tuple]]]:
    rows = sorted(set(frame["row"]))
    cols = sorted(set(frame["col"]))
    eqs = []
    for r in rows:
        eqs.append((("row", r, None), [("row,col", r, c) for c in cols]))
    for c in cols:
        eqs.append((("col", None, c), [("row,col", r, c) for r in rows]))
    eqs.append((("total", None, None), [("row", r, None) for r in rows]))
    eqs.append((("total", None, None), [("col", None, c) for c in cols]))
    return eqs


@PROPERTY
@given(frame=crosstabs(), policy=policies)
def test_no_published_cell_is_a_small_count(frame: pl.DataFrame, policy: DisclosurePolicy) -> None:
    shown = all_levels(frame, policy, subsets=[("part", "n")])
    exact = exact_levels(frame)
    for count in ("n", "part"):
        published, true = cells(shown, count), cells(exact, count)
        for key, value in published.items():
            t = true[key]
            if value is None:
                continue
            assert not policy.is_primary(t), (key, t)
            assert t == 0 or t >= policy.min_count
            assert value == policy.rounded(t)
    # The rest of a part (n - part) is never a small number that could be worked out.
    n, part, tn, tp = (
        cells(shown, "n"),
        cells(shown, "part"),
        cells(exact, "n"),
        cells(exact, "part"),
    )
    for key in n:
        if n[key] is not None and part[key] is not None:
            assert not policy.is_primary(tn[key] - tp[key]), key


@PROPERTY
@given(frame=crosstabs(), policy=policies)
def test_no_line_has_exactly_one_withheld_entry(
    frame: pl.DataFrame, policy: DisclosurePolicy
) -> None:
    """For every row and column with a total, the withheld cells are never exactly one, unless
    the total is withheld too (then the line has two withheld entries)."""
    shown = all_levels(frame, policy)
    for count in ("n", "part"):
        published = cells(shown, count)
        for total, parts in margin_equations(frame):
            withheld = [published[p] is None for p in parts]
            if sum(withheld) == 1:
                assert published[total] is None, (count, total)
            assert sum(withheld) + (published[total] is None) != 1


@PROPERTY
@given(
    frame=crosstabs(),
    policy=policies.map(lambda p: DisclosurePolicy(p.min_count, p.suppress_zero, 1, True)),
)
def test_withheld_counts_cannot_be_recovered_by_differencing(
    frame: pl.DataFrame, policy: DisclosurePolicy
) -> None:
    shown = all_levels(frame, policy, subsets=[("part", "n")])
    exact = exact_levels(frame)
    for count in ("n", "part"):
        published, true = cells(shown, count), cells(exact, count)
        recovered = solve_by_differencing(published, margin_equations(frame))
        for key, t in true.items():
            if policy.is_primary(t):
                assert key not in recovered, (count, key, t)


def test_a_row_with_one_small_cell_loses_its_next_smallest_cell() -> None:
    frame = pl.DataFrame(
        {
            "row": ["a", "a", "a", "b", "b", "b"],
            "col": ["x", "y", "z"] * 2,
            "n": [40, 3, 25, 50, 60, 70],
        }
    )
    out, _ = protect_rows(frame, ["row", "col"], ["n"], DisclosurePolicy(secondary=True))
    by_key = {(r["row"], r["col"]): r["n"] for r in out.iter_rows(named=True)}
    assert by_key[("a", "y")] is None  # primary
    # Row a: the smallest other cell (25) goes; column y: the only other cell (60) goes; then
    # column z has one withheld cell (25), so its smallest other cell (70) goes too.
    assert by_key[("a", "z")] is None and by_key[("b", "y")] is None
    assert by_key[("b", "z")] is None
    assert by_key[("a", "x")] == 40 and by_key[("b", "x")] == 50


def test_primary_only_leaves_single_withheld_cells() -> None:
    frame = pl.DataFrame({"row": ["a", "b"], "n": [3, 50]})
    out, _ = protect_rows(frame, ["row"], ["n"], DisclosurePolicy(secondary=False))
    assert out["n"].to_list() == [None, 50]
    out, _ = protect_rows(frame, ["row"], ["n"], DisclosurePolicy(secondary=True))
    assert out["n"].to_list() == [None, None]


def test_rows_without_margins_protect_only_each_row() -> None:
    frame = pl.DataFrame({"date": [1, 2], "n": [3, 50], "part": [0, 45]})
    out, _ = protect_rows(
        frame, ["date"], ["n", "part"], DisclosurePolicy(), margins=False, subsets=[("part", "n")]
    )
    # Row 1: n is small. Row 2: 50 - 45 = 5 is small, so the part (the smaller) is withheld.
    assert out.rows() == [(1, None, 0), (2, 50, None)]


def test_secondary_suppression_engine_on_a_known_answer() -> None:
    # total 0 = parts 1 + 2 + 3; part 1 withheld -> the smallest non-zero other part goes.
    values = [30, 5, 10, 15]
    out = secondary_suppression(values, [False, True, False, False], [(0, [1, 2, 3])])
    assert out == [False, True, True, False]
    # Only zeros left: the total goes instead.
    out = secondary_suppression([12, 12, 0], [False, False, False], [(0, [1, 2])])
    assert out == [False, False, False]
    out = secondary_suppression([12, 12, 0], [False, True, False], [(0, [1, 2])])
    assert out == [True, True, False]


def test_rounding_is_to_the_nearest_multiple_halves_up() -> None:
    p = DisclosurePolicy(round_to=5)
    assert [p.rounded(v) for v in (10, 12, 13, 17, 18, 102)] == [10, 10, 15, 15, 20, 100]
    assert DisclosurePolicy(round_to=10).rounded(15) == 20
    assert DisclosurePolicy().rounded(13) == 13


@pytest.mark.parametrize(
    "policy",
    [
        DisclosurePolicy(),
        *[
            DisclosurePolicy(p.min_count, p.suppress_zero, p.round_to, p.secondary)
            for p in PRESETS.values()
        ],
    ],
)
def test_sql_helpers_match_the_python_rule(policy: DisclosurePolicy) -> None:
    values = list(range(0, 40))
    rows = duckdb.sql(
        f"SELECT v, {policy.safe_count_sql('v')} FROM (SELECT unnest(?) AS v)", params=[values]
    ).fetchall()
    for v, shown in rows:
        expected = None if policy.is_primary(v) else policy.rounded(v)
        assert shown == expected, (v, shown)
    frame = pl.DataFrame({"v": values}).select(policy.shown_expr("v"))
    assert frame["v"].to_list() == [
        None if policy.is_primary(v) else policy.rounded(v) for v in values
    ]


def test_presets_and_overrides_from_the_policy_file(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text('[disclosure]\npreset = "nhs_england_hes"\n')
    hes = read_policy(p)
    assert (hes.min_count, hes.round_to, hes.secondary, hes.preset) == (
        8,
        5,
        False,
        "nhs_england_hes",
    )
    assert hes.is_primary(7) and not hes.is_primary(8) and not hes.is_primary(0)
    p.write_text('[disclosure]\npreset = "nhs_england_hes"\nsecondary = true\n')
    assert read_policy(p).secondary is True
    p.write_text('[disclosure]\npreset = "hes_pre_2018"\n')
    assert read_policy(p).min_count == 6
    p.write_text('[disclosure]\npreset = "no_such_rule"\n')
    with pytest.raises(PublishError, match=r"\[disclosure\] preset must be one of threshold_10,"):
        read_policy(p)
    p.write_text("[disclosure]\nround_to = 0\n")
    with pytest.raises(PublishError, match="round_to"):
        read_policy(p)
    # The project's own policy: the default rule with secondary suppression.
    from uprnlink.settings import PROJECT_ROOT

    own = read_policy(PROJECT_ROOT / "governance" / "policy.toml")
    assert own == DisclosurePolicy(min_count=10, suppress_zero=False, round_to=1, secondary=True)
    assert own.preset == "threshold_10"


def test_every_preset_is_documented_for_governance() -> None:
    from uprnlink.settings import PROJECT_ROOT

    roles = (PROJECT_ROOT / "governance" / "roles.md").read_text(encoding="utf-8")
    policy = (PROJECT_ROOT / "governance" / "policy.toml").read_text(encoding="utf-8")
    for name in PRESETS:
        assert f"`{name}`" in roles, name
        assert name in policy, name
