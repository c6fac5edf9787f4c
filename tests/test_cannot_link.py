"""Cannot-link evidence in clustering: records that cannot be one person never share a cluster."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from uprnlink.linkage.clustering import cluster_records
from uprnlink.linkage.constraints import (
    LISTING_SCHEMA,
    apply_cannot_link,
    conflict_pairs,
    dob_compatible_expr,
    listing_frame,
)
from uprnlink.linkage.stable_ids import assign_stable_ids

Node = tuple[str, str | None, date | None]  # unique_id, NHS token, date of birth
Listing = tuple[str, str, date, date | None, str | None]


def nodes_frame(nodes: list[Node]) -> pl.DataFrame:
    frame = pl.DataFrame(
        nodes, schema={"unique_id": pl.Utf8, "nhs_token": pl.Utf8, "dob": pl.Date}, orient="row"
    )
    complete = pl.col("nhs_token").is_not_null() | pl.col("dob").is_not_null()
    return frame.with_columns(complete.alias("complete"))


def pairs_frame(pairs: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        pairs, schema=["unique_id_l", "unique_id_r", "match_probability"], orient="row"
    )


def listings_frame(rows: list[Listing]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LISTING_SCHEMA, orient="row")


def cluster(
    nodes: list[Node],
    pairs: list[tuple[str, str, float]],
    listings: list[Listing] | None = None,
) -> tuple[dict[str, str], dict[str, object]]:
    """Clusters with the cannot-link rules: node -> cluster id, and the report."""
    frame = nodes_frame(nodes)
    scored = pairs_frame(pairs)
    labels = cluster_records(frame.select("unique_id", "complete"), scored, 0.95)
    out, report = apply_cannot_link(
        labels, frame, scored, 0.95, listings_frame(listings) if listings else None
    )
    return dict(out.iter_rows()), report.to_dict()


FATHER = date(1961, 4, 3)
SON = date(1989, 11, 22)


@pytest.mark.parametrize(
    ("a", "b", "compatible"),
    [
        (date(1980, 5, 3), date(1980, 5, 3), True),
        (date(1980, 5, 3), date(1980, 3, 5), True),  # day and month transposed
        (date(1980, 5, 3), date(1980, 5, 8), True),  # a slipped day
        (date(1980, 5, 3), date(1988, 5, 3), True),  # a slipped year digit
        (date(1980, 5, 3), date(1980, 6, 3), True),  # one field off
        (date(1980, 5, 3), date(1980, 6, 4), False),  # two fields
        (FATHER, SON, False),
        (date(1980, 5, 3), date(1981, 3, 5), False),  # transposed and a year off
        (date(1980, 1, 1), date(1980, 9, 23), True),  # the year known, day and month not
        (date(1981, 1, 1), date(1980, 9, 23), False),
    ],
)
def test_dates_of_birth_one_person_may_carry(a: date, b: date, compatible: bool) -> None:
    frame = pl.DataFrame({"a": [a], "b": [b]})
    assert frame.select(dob_compatible_expr(pl.col("a"), pl.col("b"))).item() is compatible


def test_father_and_son_chained_by_a_record_are_split_on_the_evidence() -> None:
    # The son's council tax record carries no date of birth; it matches the son's GP record best
    # but also the father's benefit record (same name, same address): one chain, one cluster
    # without the rules.
    nodes: list[Node] = [
        ("f-gp", "nhsF", FATHER),
        ("f-hosp", "nhsF", FATHER),
        ("f-ben", None, FATHER),
        ("s-gp", "nhsS", SON),
        ("s-hosp", "nhsS", SON),
        ("s-ct", None, None),
    ]
    pairs = [
        ("f-gp", "f-hosp", 0.9999),
        ("f-gp", "f-ben", 0.999),
        ("s-gp", "s-hosp", 0.9999),
        ("s-ct", "s-gp", 0.99),
        ("s-ct", "f-ben", 0.97),
        ("f-ben", "s-hosp", 0.96),  # a weak resemblance between the two complete sides
    ]
    c, report = cluster(nodes, pairs)
    assert c["f-gp"] == c["f-hosp"] == c["f-ben"]
    assert c["s-gp"] == c["s-hosp"] == c["s-ct"]
    assert c["f-gp"] != c["s-gp"]
    assert report["clusters_in_conflict"] == 1
    assert report["by_rule"] == {
        "nhs_number": 1,
        "date_of_birth": 1,
        "same_listing": 0,
        "under_age": 0,
    }
    assert report["people_added"] == 1


def test_a_date_the_model_weighed_on_a_direct_link_is_no_veto() -> None:
    # One person's two records, linked directly with every other field agreeing, one date of
    # birth replaced wholesale (FEBRL4 corrupts 4.5% of its dates so): the model scored the
    # disagreement and linked anyway, so the pair stays one person.
    nodes: list[Node] = [("ct", None, date(1967, 5, 9)), ("ht", None, date(1912, 7, 29))]
    c, report = cluster(nodes, [("ct", "ht", 0.999)])
    assert c["ct"] == c["ht"]
    assert report["clusters_in_conflict"] == 0


def test_a_second_nhs_number_on_a_direct_link_of_one_name_and_birthday_is_no_veto() -> None:
    # A temporary registration: the same forename and date of birth under another NHS number,
    # linked directly by the model. Twins (same birthday, other forenames) linked directly
    # stay apart on their two numbers; so does the pair when only a third record joins them,
    # or when the forenames are not known.
    born = date(2012, 12, 26)

    def people(names: list[str | None], pairs: list[tuple[str, str, float]]) -> dict[str, str]:
        frame = nodes_frame([("gp", "N1", born), ("tmp", "N2", born), ("hes", "N1", born)])
        frame = frame.with_columns(pl.Series("forename", names))
        scored = pairs_frame(pairs)
        labels = cluster_records(frame.select("unique_id", "complete"), scored, 0.95)
        out, _ = apply_cannot_link(labels, frame, scored, 0.95, None)
        return dict(out.iter_rows())

    direct = [("gp", "hes", 0.999), ("gp", "tmp", 0.99), ("hes", "tmp", 0.99)]
    c = people(["JAMES", "JAMES", "JAMES"], direct)
    assert c["gp"] == c["tmp"] == c["hes"]
    c = people(["JAMES", "JAMAL", "JAMES"], direct)
    assert c["gp"] == c["hes"] != c["tmp"]
    c = people(["JAMES", "JAMES", "JAMES"], [("gp", "hes", 0.999), ("hes", "tmp", 0.99)])
    assert c["gp"] == c["hes"] and c["gp"] != c["tmp"]
    c = people([None, None, None], direct)
    assert c["gp"] == c["hes"] != c["tmp"]
    # Two namesakes registered with the placeholder 1 January: their numbers still decide.
    born = date(1990, 1, 1)
    c = people(["MOHAMMED", "MOHAMMED", "MOHAMMED"], direct)
    assert c["gp"] == c["hes"] != c["tmp"]


def test_the_same_dates_joined_only_through_another_record_are_split() -> None:
    # The same two dates, joined only through a third record: the link between the two was
    # never scored, and the third record's own date sides with the first.
    nodes: list[Node] = [
        ("ct", None, date(1967, 5, 9)),
        ("ht", None, date(1912, 7, 29)),
        ("ben", None, date(1967, 5, 9)),
    ]
    c, report = cluster(nodes, [("ct", "ben", 0.999), ("ben", "ht", 0.96)])
    assert c["ct"] != c["ht"]
    assert report["by_rule"]["date_of_birth"] == 1


def test_two_slips_of_one_date_of_birth_are_one_person() -> None:
    # 1970-02-15 slipped to 1970-02-18 on one record and 1970-07-15 on another: the two slips
    # differ in two fields, but both are one field from the date the other records give.
    nodes: list[Node] = [
        ("a", "n1", date(1970, 2, 15)),
        ("b", None, date(1970, 2, 18)),
        ("c", None, date(1970, 7, 15)),
    ]
    pairs = [("a", "b", 0.99), ("a", "c", 0.99)]
    c, report = cluster(nodes, pairs)
    assert c["a"] == c["b"] == c["c"]
    assert report["clusters_in_conflict"] == 0


def test_two_parties_on_one_account_at_once_are_two_people() -> None:
    # Father and son on one council tax account, neither with a date of birth: the better match
    # takes the father's cluster, the other stands apart.
    nodes: list[Node] = [("f-gp", "nhsF", FATHER), ("ct-1", None, None), ("ct-2", None, None)]
    pairs = [("ct-1", "f-gp", 0.99), ("ct-2", "f-gp", 0.98), ("ct-1", "ct-2", 0.99)]
    on = date(2015, 1, 1)
    listings: list[Listing] = [
        ("ct-1", "council_tax|A1", on, None, None),
        ("ct-2", "council_tax|A1", date(2016, 1, 1), None, None),
    ]
    c, report = cluster(nodes, pairs, listings)
    assert c["ct-1"] == c["f-gp"] != c["ct-2"]
    assert report["by_rule"]["same_listing"] == 1  # type: ignore[index]


def test_listings_that_do_not_overlap_or_share_a_role_do_not_conflict() -> None:
    labels = pl.DataFrame({"unique_id": ["a", "b", "c", "d"], "cluster_id": ["a"] * 4})
    attributes = pl.DataFrame(
        {"unique_id": ["a", "b", "c", "d"], "nhs_token": [None] * 4, "dob": [None] * 4},
        schema={"unique_id": pl.Utf8, "nhs_token": pl.Utf8, "dob": pl.Date},
    )
    listings = listings_frame(
        [
            ("a", "ct|1", date(2010, 1, 1), date(2012, 1, 1), None),
            ("b", "ct|1", date(2012, 1, 2), None, None),  # after a left
            ("c", "claims|9", date(2020, 1, 1), None, "CLAIMANT"),
            ("d", "claims|9", date(2020, 6, 1), None, "CLAIMANT"),  # the claimant entered twice
        ]
    )
    assert conflict_pairs(labels, attributes, listings).height == 0
    partner = listings.with_columns(
        pl.when(pl.col("unique_id") == "d").then(pl.lit("PARTNER")).otherwise("role").alias("role")
    )
    found = conflict_pairs(labels, attributes, partner)
    assert found.select("a", "b", "rule").rows() == [("c", "d", "same_listing")]


def test_a_liability_begun_in_childhood_is_the_parents() -> None:
    # The council tax party (no date of birth) joined the son named after his father, but the
    # liability began when the son was five: it moves to the father's cluster.
    nodes: list[Node] = [
        ("s-gp", "nhsS", SON),
        ("f-gp", "nhsF", FATHER),
        ("f-hosp", "nhsF", FATHER),
        ("ct", None, None),
    ]
    pairs = [("ct", "s-gp", 0.99), ("ct", "f-gp", 0.97), ("f-gp", "f-hosp", 0.999)]
    listings: list[Listing] = [("ct", "council_tax|7", date(1995, 6, 1), None, None)]
    c, report = cluster(nodes, pairs, listings)
    assert c["ct"] == c["f-gp"] != c["s-gp"]
    assert report["by_rule"]["under_age"] == 1  # type: ignore[index]
    assert report["records_moved"] == 1
    assert report["people_added"] == 0


def test_no_conflict_leaves_the_clusters_alone() -> None:
    nodes: list[Node] = [("a", "n1", FATHER), ("b", None, FATHER), ("w", None, None)]
    pairs = [("a", "b", 0.99), ("w", "b", 0.97)]
    c, report = cluster(nodes, pairs)
    assert c == {"a": "a", "b": "a", "w": "a"}
    assert report["clusters_in_conflict"] == 0 and report["people_added"] == 0


def test_listings_from_facts_carry_the_source_and_the_role() -> None:
    facts = pl.DataFrame(
        {
            "unique_id": ["u1", "u2", "u3"],
            "claim_ref": ["HB1", "HB1", ""],
            "person_type": ["CLAIMANT", "PARTNER", "CLAIMANT"],
        }
    )
    periods = pl.DataFrame(
        {
            "unique_id": ["u1", "u2", "u3"],
            "start_date": [date(2020, 1, 1)] * 3,
            "end_date": [None, None, None],
        },
        schema={"unique_id": pl.Utf8, "start_date": pl.Date, "end_date": pl.Date},
    )
    out = listing_frame("benefits_claims", facts, periods, "benefits_claims")
    assert out is not None
    assert out.select("unique_id", "listing", "role").rows() == [
        ("u1", "benefits_claims|HB1", "CLAIMANT"),
        ("u2", "benefits_claims|HB1", "PARTNER"),
    ]
    assert listing_frame("gp", facts, periods, "gp_registrations") is None


def test_person_ids_follow_the_people_a_split_separates() -> None:
    # Last run merged father and son under one id; this run splits them: the father (more
    # records) keeps the id, the son gets a new one, and the next run changes nothing.
    previous = pl.DataFrame(
        {"unique_id": ["f1", "f2", "f3", "s1", "s2"], "person_id": ["P-old"] * 5}
    )
    split = pl.DataFrame(
        {"unique_id": ["f1", "f2", "f3", "s1", "s2"], "cluster_key": ["F", "F", "F", "S", "S"]}
    )
    ids, report = assign_stable_ids(split, previous)
    got = dict(ids.iter_rows())
    assert got["f1"] == got["f2"] == got["f3"] == "P-old"
    assert got["s1"] == got["s2"] != "P-old"
    assert (report.split, report.kept, report.created) == (1, 1, 1)
    again, report = assign_stable_ids(split, ids)
    assert dict(again.iter_rows()) == got
    assert (report.split, report.created, report.retired) == (0, 0, 0)
