"""Person ids carried across runs: kept, created, merged, split and retired on small cases."""

from __future__ import annotations

import polars as pl

from uprnlink.linkage.stable_ids import IdChangeReport, assign_stable_ids, derived_id


def _new(clusters: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(uid, key) for key, uids in clusters.items() for uid in uids],
        schema={"unique_id": pl.Utf8, "cluster_key": pl.Utf8},
        orient="row",
    )


def _previous(people: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(uid, pid) for pid, uids in people.items() for uid in uids],
        schema={"unique_id": pl.Utf8, "person_id": pl.Utf8},
        orient="row",
    )


def _ids(frame: pl.DataFrame) -> dict[str, str]:
    return dict(zip(frame["unique_id"].to_list(), frame["person_id"].to_list(), strict=True))


def test_first_run_derives_ids_from_the_smallest_record() -> None:
    ids, report = assign_stable_ids(_new({"x": ["b", "a"], "y": ["c"]}), None)
    assert _ids(ids) == {"a": derived_id("a"), "b": derived_id("a"), "c": derived_id("c")}
    assert ids["unique_id"].to_list() == ["b", "a", "c"]  # order of `new`
    assert report == IdChangeReport(kept=0, created=2, merged=0, split=0, retired=0)


def test_identical_rerun_keeps_every_id() -> None:
    first, _ = assign_stable_ids(_new({"x": ["a", "b", "c"], "y": ["d"], "z": ["e", "f"]}), None)
    # Same partition under other cluster labels (as a fresh clustering would give).
    again, report = assign_stable_ids(
        _new({"k1": ["e", "f"], "k2": ["d"], "k3": ["c", "b", "a"]}), first
    )
    assert _ids(again) == _ids(first)
    assert report == IdChangeReport(kept=3, created=0, merged=0, split=0, retired=0)


def test_split_keeps_the_id_on_the_larger_part() -> None:
    ids, report = assign_stable_ids(
        _new({"x": ["a", "b", "c"], "y": ["d"]}), _previous({"P1": ["a", "b", "c", "d"]})
    )
    got = _ids(ids)
    assert got["a"] == got["b"] == got["c"] == "P1"
    assert got["d"] == derived_id("d")
    assert report == IdChangeReport(kept=1, created=1, merged=0, split=1, retired=0)


def test_merge_keeps_the_larger_contributor_and_retires_the_other() -> None:
    ids, report = assign_stable_ids(
        _new({"x": ["a", "b", "c"]}), _previous({"P2": ["a", "b"], "P1": ["c"]})
    )
    assert set(_ids(ids).values()) == {"P2"}
    assert report == IdChangeReport(kept=1, created=0, merged=1, split=0, retired=1)


def test_tie_goes_to_the_smallest_previous_id() -> None:
    ids, report = assign_stable_ids(_new({"x": ["a", "b"]}), _previous({"P2": ["a"], "P1": ["b"]}))
    assert set(_ids(ids).values()) == {"P1"}
    assert report == IdChangeReport(kept=1, created=0, merged=1, split=0, retired=1)


def test_a_cluster_outbid_for_one_id_falls_back_to_its_next_best() -> None:
    ids, report = assign_stable_ids(
        _new({"x": ["a", "b", "c"], "y": ["d", "e", "f"]}),
        _previous({"P1": ["a", "b", "c", "d", "e"], "P2": ["f"]}),
    )
    got = _ids(ids)
    assert got["a"] == "P1" and got["d"] == "P2"
    assert report == IdChangeReport(kept=2, created=0, merged=1, split=1, retired=0)


def test_records_of_a_vanished_person_retire_its_id_and_new_people_get_new_ids() -> None:
    ids, report = assign_stable_ids(
        _new({"x": ["a"], "y": ["z"]}), _previous({"P1": ["a"], "P9": ["gone"]})
    )
    assert _ids(ids) == {"a": "P1", "z": derived_id("z")}
    assert report == IdChangeReport(kept=1, created=1, merged=0, split=0, retired=1)


def test_a_new_id_never_reuses_a_previous_one() -> None:
    # {b, c} inherits derived_id("a"); the new cluster {a} would derive the same id.
    previous = _previous({derived_id("a"): ["a", "b", "c"]})
    ids, report = assign_stable_ids(_new({"x": ["a"], "y": ["b", "c"]}), previous)
    got = _ids(ids)
    assert got["b"] == derived_id("a")
    assert got["a"] not in {derived_id("a")}
    assert got["a"] == derived_id("a#1")
    assert report == IdChangeReport(kept=1, created=1, merged=0, split=1, retired=0)
