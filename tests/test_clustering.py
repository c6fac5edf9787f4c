"""Clustering scored pairs: components, and incomplete records never bridge two people."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.linkage.clustering import cluster_records, connected_components
from uprnlink.linkage.model import forename_roots


def test_connected_components_on_a_long_chain_and_singletons() -> None:
    nodes = pl.Series([f"n{i:03d}" for i in range(60)])
    chain = pl.DataFrame(
        {"a": [f"n{i:03d}" for i in range(49)], "b": [f"n{i + 1:03d}" for i in range(49)]}
    )
    out = dict(connected_components(nodes, chain).iter_rows())
    assert {out[f"n{i:03d}"] for i in range(50)} == {"n000"}
    assert all(out[f"n{i:03d}"] == f"n{i:03d}" for i in range(50, 60))


def _clusters(records: dict[str, bool], pairs: list[tuple[str, str, float]]) -> dict[str, str]:
    rec = pl.DataFrame({"unique_id": list(records), "complete": list(records.values())})
    pr = pl.DataFrame(
        pairs, schema=["unique_id_l", "unique_id_r", "match_probability"], orient="row"
    )
    return dict(cluster_records(rec, pr, 0.95).iter_rows())


def test_incomplete_record_joins_only_its_best_match() -> None:
    # mum and daughter (complete, different dates of birth) never match each other; a council
    # tax record with neither date of birth nor NHS number matches both.
    c = _clusters(
        {"mum": True, "daughter": True, "ctax": False},
        [("ctax", "mum", 0.99), ("ctax", "daughter", 0.97)],
    )
    assert c["mum"] != c["daughter"]
    assert c["ctax"] == c["mum"]


def test_complete_records_chain_and_weak_records_follow() -> None:
    c = _clusters(
        {"a": True, "b": True, "w1": False, "w2": False, "w3": False, "w4": False},
        [
            ("a", "b", 0.999),
            ("w1", "b", 0.96),
            ("w2", "w1", 0.98),  # reaches a complete record only through another weak one
            ("w3", "w4", 0.99),  # weak records matching nothing complete stay together
            ("a", "w3", 0.5),  # below the threshold: ignored
        ],
    )
    assert c["a"] == c["b"] == c["w1"] == c["w2"]
    assert c["w3"] == c["w4"] != c["a"]


def test_forename_roots_link_nicknames_both_ways() -> None:
    roots = forename_roots(pl.Series(["BILL", "WILLIAM", "BILLY", "ZEBEDEE", None])).to_list()
    assert "WILLIAM" in roots[0] and roots[1] == ["WILLIAM"] and "WILLIAM" in roots[2]
    assert roots[3] == ["ZEBEDEE"] and roots[4] is None


def _union_find(nodes: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    parent = {n: n for n in nodes}

    def find(n: int) -> int:
        while parent[n] != n:
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in nodes}


@given(
    st.integers(min_value=1, max_value=80).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
        )
    )
)
@settings(max_examples=60, deadline=None)
def test_connected_components_agree_with_union_find(
    graph: tuple[int, list[tuple[int, int]]],
) -> None:
    n, edges = graph
    nodes = [i * 7 for i in range(n)]  # sparse integer ids, not row numbers
    pairs = [(a * 7, b * 7) for a, b in edges if a != b]
    frame = (
        pl.DataFrame(pairs, schema=["a", "b"], orient="row")
        if pairs
        else pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64})
    )
    got = dict(connected_components(pl.Series(nodes), frame).iter_rows())
    assert got == _union_find(nodes, pairs)
