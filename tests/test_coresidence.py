"""The co-residence pass on hand-made profiles: who joins whom, and every guard."""

from __future__ import annotations

import random
from datetime import date

import polars as pl

from uprnlink.linkage.coresidence import (
    MAX_UNIT,
    CoresidenceReport,
    link_companions,
    link_coresidents,
    link_movers,
)

D = date.fromisoformat


def _profiles(
    rows: list[tuple[int, str, str | None, str | None, str, str, str | None]],
) -> pl.DataFrame:
    """unique_id, forename, dob, nhs_token, uprn_token, period_start, period_end."""
    return pl.DataFrame(
        {
            "unique_id": [r[0] for r in rows],
            "forename": [r[1] for r in rows],
            "dob": [D(r[2]) if r[2] else None for r in rows],
            "nhs_token": [r[3] for r in rows],
            "uprn_token": [r[4] for r in rows],
            "period_start": [D(r[5]) for r in rows],
            "period_end": [D(r[6]) if r[6] else None for r in rows],
        },
        schema_overrides={"unique_id": pl.Int64},
    )


def _labels(clusters: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"unique_id": list(clusters), "cluster_id": list(clusters.values())},
        schema={"unique_id": pl.Int64, "cluster_id": pl.Int64},
    )


# Helen (cluster 10: a GP record with a date of birth, 2015 on, at U1) and a council tax party
# HELEN with no date of birth at U1 from 2018 (3, alone): she joins cluster 10.
HELEN = [
    (1, "HELEN", "1980-02-03", "N1", "U1", "2015-01-01", None),
    (2, "HELEN", None, None, "U9", "2010-01-01", "2014-12-31"),
    (3, "HELEN", None, None, "U1", "2018-04-01", None),
]


def _cluster_of(labels: pl.DataFrame, node: int) -> int:
    return int(labels.filter(pl.col("unique_id") == node).get_column("cluster_id").item())


def _shared_account(listing: str, parties: tuple[int, int], start: str, end: str) -> pl.DataFrame:
    """Listings (unique_id, listing, start, end, role) of two profiles on one account over the
    same period, with no roles."""
    return pl.DataFrame(
        {
            "unique_id": list(parties),
            "listing": [listing] * 2,
            "start": [D(start)] * 2,
            "end": [D(end)] * 2,
            "role": [None, None],
        },
        schema_overrides={"unique_id": pl.Int64, "role": pl.Utf8},
    )


def test_a_lone_party_joins_the_one_coresident_of_its_forename() -> None:
    profiles = _profiles(HELEN)
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), profiles)
    assert _cluster_of(labels, 3) == 10
    assert (report.candidates, report.linked, report.ambiguous) == (1, 1, 0)


def test_no_link_without_an_overlapping_period_or_at_another_uprn() -> None:
    earlier = _profiles([*HELEN[:2], (3, "HELEN", None, None, "U1", "2001-04-01", "2014-12-31")])
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), earlier)
    assert _cluster_of(labels, 3) == 30 and report.linked == 0
    elsewhere = _profiles([*HELEN[:2], (3, "HELEN", None, None, "U7", "2018-04-01", None)])
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), elsewhere)
    assert _cluster_of(labels, 3) == 30 and report.linked == 0


def test_another_forename_or_a_complete_record_is_never_moved() -> None:
    other_name = _profiles([*HELEN[:2], (3, "HANNAH", None, None, "U1", "2018-04-01", None)])
    labels, _ = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), other_name)
    assert _cluster_of(labels, 3) == 30
    with_dob = _profiles([*HELEN[:2], (3, "HELEN", "1990-01-01", None, "U1", "2018-04-01", None)])
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), with_dob)
    assert _cluster_of(labels, 3) == 30 and report.candidates == 0


def test_two_coresidents_of_that_forename_leave_it_alone() -> None:
    # Mother and daughter both HELEN at U1: the party could be either.
    daughter = (4, "HELEN", "2004-05-06", "N2", "U1", "2004-05-06", None)
    profiles = _profiles([*HELEN, daughter])
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30, 4: 40}), profiles)
    assert _cluster_of(labels, 3) == 30
    assert (report.linked, report.ambiguous) == (0, 1)


def _named(
    rows: list[tuple[int, str, str | None, str | None, str, str, str | None]],
    surnames: dict[int, str],
) -> pl.DataFrame:
    return _profiles(rows).with_columns(
        pl.col("unique_id").replace_strict(surnames, return_dtype=pl.Utf8).alias("surname")
    )


def test_a_party_under_an_initial_or_a_variant_joins_the_one_coresident_of_that_surname() -> None:
    # "H WOOD" and "HELLEN WOOD" (no date of birth) at U1 while HELEN WOOD lives there: with
    # surnames, a forename that is an initial of hers or one keystroke away is enough.
    for forename in ("H", "HELLEN"):
        rows = [*HELEN[:2], (3, forename, None, None, "U1", "2018-04-01", None)]
        profiles = _named(rows, {1: "WOOD", 2: "WOOD", 3: "WOOD"})
        labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), profiles)
        assert _cluster_of(labels, 3) == 10 and report.linked == 1, forename
    # Not under another surname, nor without surnames (the forename must then be the same).
    other = _named(
        [*HELEN[:2], (3, "H", None, None, "U1", "2018-04-01", None)],
        {1: "WOOD", 2: "WOOD", 3: "ROSS"},
    )
    labels, _ = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), other)
    assert _cluster_of(labels, 3) == 30
    bare = _profiles([*HELEN[:2], (3, "H", None, None, "U1", "2018-04-01", None)])
    labels, _ = link_coresidents(_labels({1: 10, 2: 10, 3: 30}), bare)
    assert _cluster_of(labels, 3) == 30


def test_an_initial_two_coresidents_share_is_left_alone() -> None:
    # HELEN and her son HARRY WOOD both live at U1: "H WOOD" could be either.
    son = (4, "HARRY", "2001-05-06", "N2", "U1", "2001-05-06", None)
    rows = [*HELEN[:2], (3, "H", None, None, "U1", "2018-04-01", None), son]
    profiles = _named(rows, {1: "WOOD", 2: "WOOD", 3: "WOOD", 4: "WOOD"})
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 3: 30, 4: 40}), profiles)
    assert _cluster_of(labels, 3) == 30
    assert (report.linked, report.ambiguous) == (0, 1)


def test_a_cluster_without_a_complete_record_is_no_anchor() -> None:
    profiles = _profiles([(1, "HELEN", None, None, "U1", "2015-01-01", None), HELEN[2]])
    labels, report = link_coresidents(_labels({1: 10, 3: 30}), profiles)
    assert _cluster_of(labels, 3) == 30 and report.linked == 0


def test_two_people_on_one_account_at_once_are_refused() -> None:
    # The party and the anchor's own council tax record (5) share account A1 over 2018-2020:
    # the cannot-link rules say two people, so the pass does not join them.
    profiles = _profiles([*HELEN, (5, "HELEN", None, None, "U1", "2018-04-01", None)])
    listings = _shared_account("A1", (3, 5), "2018-04-01", "2020-03-31")
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 5: 10, 3: 30}), profiles, listings)
    assert _cluster_of(labels, 3) == 30
    assert (report.linked, report.refused) == (0, 1)
    labels, report = link_coresidents(_labels({1: 10, 2: 10, 5: 10, 3: 30}), profiles)
    assert _cluster_of(labels, 3) == 10 and report.linked == 1


def test_a_previous_occupant_of_that_forename_is_not_the_coresident() -> None:
    # Helen's GP registration (1) runs from the extract's start; her own council tax stay at U1
    # (5) begins months after the party's (3) ended: 3 is the previous occupant.
    profiles = _profiles(
        [
            (1, "HELEN", "1980-02-03", "N1", "U1", "2016-02-01", None),
            (5, "HELEN", None, None, "U1", "2018-04-30", None),
            (3, "HELEN", None, None, "U1", "2015-06-01", "2017-12-24"),
        ]
    )
    sources = pl.DataFrame(
        {
            "unique_id": [1, 5, 3],
            "source_dataset": ["gp_registrations", "council_tax", "council_tax"],
        },
        schema_overrides={"unique_id": pl.Int64},
    )
    labels = _labels({1: 10, 5: 10, 3: 30})
    moved, report = link_coresidents(labels, profiles, None, sources)
    assert _cluster_of(moved, 3) == 30
    assert (report.linked, report.other_stay) == (0, 1)
    # Her account renamed: the new stay begins the day after the old one ends: one person.
    renamed = profiles.with_columns(
        pl.when(pl.col("unique_id") == 5)
        .then(pl.lit(D("2017-12-25")))
        .otherwise(pl.col("period_start"))
        .alias("period_start")
    )
    moved, report = link_coresidents(labels, renamed, None, sources)
    assert _cluster_of(moved, 3) == 10
    assert (report.linked, report.other_stay) == (1, 0)


# The mover pass. Helen Hughes (cluster 10: a GP record with a date of birth, and her council tax
# account at U2 from 2019-06-01); a council tax party HELEN HUGHES with no date of birth at U1
# whose liability ended 2019-05-31 (3, alone): she moved, and joins cluster 10.
MOVER = [
    (1, "HELEN", "HUGHES", "1980-02-03", "N1", "U2", "2019-06-01", None, "gp_registrations"),
    (2, "HELEN", "HUGHES", None, None, "U2", "2019-06-01", None, "council_tax"),
    (3, "HELEN", "HUGHES", None, None, "U1", "2012-04-01", "2019-05-31", "council_tax"),
]


def _movers(
    rows: list[tuple[int, str, str, str | None, str | None, str, str, str | None, str]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Profiles (MOVER_COLUMNS) and sources (unique_id, source_dataset) from rows of
    (unique_id, forename, surname, dob, nhs_token, uprn_token, period_start, period_end, source)."""
    profiles = _profiles([(r[0], r[1], r[3], r[4], r[5], r[6], r[7]) for r in rows])
    profiles = profiles.with_columns(pl.Series("surname", [r[2] for r in rows]))
    sources = pl.DataFrame(
        {"unique_id": [r[0] for r in rows], "source_dataset": [r[8] for r in rows]},
        schema_overrides={"unique_id": pl.Int64},
    )
    return profiles, sources


def _party_after_movers(
    rows: list[tuple[int, str, str, str | None, str | None, str | None, str, str | None, str]],
) -> int:
    """The cluster of the party (profile 3, cluster 30) after the mover pass over `rows`,
    profiles 1 and 2 starting in cluster 10."""
    profiles, sources = _movers(rows)
    labels = link_movers(
        _labels({1: 10, 2: 10, 3: 30}), profiles, CoresidenceReport(), None, sources
    )
    return _cluster_of(labels, 3)


def test_a_lone_party_follows_its_move_to_the_one_person_of_its_name() -> None:
    profiles, sources = _movers(MOVER)
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30}), profiles, report, None, sources)
    assert _cluster_of(labels, 3) == 10
    assert (report.movers, report.movers_ambiguous, report.movers_elsewhere) == (1, 0, 0)
    # The other way round: her stay elsewhere ended the day before the party's began.
    backwards, sources = _movers(
        [
            (
                1,
                "HELEN",
                "HUGHES",
                "1980-02-03",
                "N1",
                "U2",
                "2005-01-01",
                "2012-03-31",
                "gp_registrations",
            ),
            MOVER[2],
        ]
    )
    labels = link_movers(_labels({1: 10, 3: 30}), backwards, CoresidenceReport(), None, sources)
    assert _cluster_of(labels, 3) == 10


def test_no_mover_link_without_a_stay_that_follows_on_or_under_another_name() -> None:
    for changed in (
        (3, "HELEN", "HUGHES", None, None, "U1", "2012-04-01", "2019-04-30", "council_tax"),
        (3, "HELEN", "JONES", None, None, "U1", "2012-04-01", "2019-05-31", "council_tax"),
        (3, "HANNAH", "HUGHES", None, None, "U1", "2012-04-01", "2019-05-31", "council_tax"),
        (3, "HELEN", "HUGHES", None, None, "U2", "2012-04-01", "2019-05-31", "council_tax"),
        (3, "HELEN", "HUGHES", "1990-01-01", None, "U1", "2012-04-01", "2019-05-31", "council_tax"),
    ):
        profiles, sources = _movers([*MOVER[:2], changed])
        report = CoresidenceReport()
        labels = link_movers(_labels({1: 10, 2: 10, 3: 30}), profiles, report, None, sources)
        assert _cluster_of(labels, 3) == 30 and report.movers == 0, changed
    # Without the sources the lasting-stay guard cannot be checked: nothing moves.
    profiles, _ = _movers(MOVER)
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30}), profiles, CoresidenceReport())
    assert _cluster_of(labels, 3) == 30


def test_two_people_of_that_name_moving_in_leave_the_party_alone() -> None:
    other = (4, "HELEN", "HUGHES", "1975-07-07", "N4", "U5", "2019-05-31", None, "gp_registrations")
    profiles, sources = _movers([*MOVER, other])
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30, 4: 40}), profiles, report, None, sources)
    assert _cluster_of(labels, 3) == 30
    assert (report.movers, report.movers_ambiguous) == (0, 1)


def test_a_namesake_liable_elsewhere_through_the_stay_is_not_the_mover() -> None:
    # The Helen Hughes who moved to U2 held an account at U7 over 2014-2019, through the
    # party's own stay at U1: she is a namesake, not the party.
    liable = (5, "HELEN", "HUGHES", None, None, "U7", "2014-01-01", "2019-05-31", "council_tax")
    profiles, sources = _movers([*MOVER, liable])
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 5: 10, 3: 30}), profiles, report, None, sources)
    assert _cluster_of(labels, 3) == 30
    assert (report.movers, report.movers_elsewhere) == (0, 1)
    # The same stay held as a GP registration (a list, kept after a move) is no objection.
    listed, sources = _movers([*MOVER, (*liable[:8], "gp_registrations")])
    labels = link_movers(
        _labels({1: 10, 2: 10, 5: 10, 3: 30}), listed, CoresidenceReport(), None, sources
    )
    assert _cluster_of(labels, 3) == 10


def test_a_mover_on_one_account_with_the_person_at_once_is_refused() -> None:
    profiles, sources = _movers(MOVER)
    listings = _shared_account("A1", (2, 3), "2015-01-01", "2019-05-31")
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30}), profiles, report, listings, sources)
    assert _cluster_of(labels, 3) == 30
    assert (report.movers, report.movers_refused) == (0, 1)


def test_a_chain_of_moves_is_followed_back_and_an_initial_is_enough() -> None:
    # H HUGHES at U0 until 2012-03-31 (4, an initial only), then HELEN HUGHES at U1 (3) until
    # 2019-05-31, then Helen at U2 (cluster 10): 3 joins in the first round, 4 in the second.
    first = (4, "H", "HUGHES", None, None, "U0", "2008-01-01", "2012-03-31", "council_tax")
    profiles, sources = _movers([*MOVER, first])
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30, 4: 40}), profiles, report, None, sources)
    assert _cluster_of(labels, 3) == 10 and _cluster_of(labels, 4) == 10
    assert report.movers == 2
    labels = link_movers(
        _labels({1: 10, 2: 10, 3: 30, 4: 40}), profiles, CoresidenceReport(), None, sources, 1
    )
    assert _cluster_of(labels, 3) == 10 and _cluster_of(labels, 4) == 40
    # An initial that begins another name is no match.
    other = _movers([*MOVER, (*first[:1], "J", *first[2:])])
    labels = link_movers(
        _labels({1: 10, 2: 10, 3: 30, 4: 40}), *other[:1], CoresidenceReport(), None, other[1]
    )
    assert _cluster_of(labels, 4) == 40


def test_a_mover_is_found_under_a_slip_an_initial_or_another_name_of_the_person() -> None:
    # The liability that follows on is under a one-letter slip (HELLEN), the initial H, or a
    # married name (HELEN WOOD) whose cluster also holds her GP record as HELEN HUGHES.
    for forename, surname in (("HELLEN", "HUGHES"), ("H", "HUGHES"), ("HELEN", "HUGHESS")):
        follows = (2, forename, surname, None, None, "U2", "2019-06-01", None, "council_tax")
        assert _party_after_movers([MOVER[0], follows, MOVER[2]]) == 10, (forename, surname)
    married = (2, "HELEN", "WOOD", None, None, "U2", "2019-06-01", None, "council_tax")
    gp_elsewhere = (1, "HELEN", "HUGHES", "1980-02-03", "N1", None, "2016-02-01", None, "gp")
    profiles, sources = _movers([gp_elsewhere, married, MOVER[2]])
    report = CoresidenceReport()
    labels = link_movers(_labels({1: 10, 2: 10, 3: 30}), profiles, report, None, sources)
    assert _cluster_of(labels, 3) == 10 and report.movers == 1
    # Short names must agree exactly (ANN / ANA are two people), and a slip in both names is
    # not one person.
    for forename, surname in (("HELEN", "HUGH"), ("HELLEN", "HUGHESS")):
        follows = (2, forename, surname, None, None, "U2", "2019-06-01", None, "council_tax")
        rows = [(1, forename, surname, *MOVER[0][3:]), follows, MOVER[2]]
        assert _party_after_movers(rows) == 30, (forename, surname)


def test_an_incomplete_chain_the_model_joined_moves_as_one() -> None:
    # H HUGHES at U0 until 2012-03-31 (4) and HELEN HUGHES at U1 after (3): the model joined
    # the two accounts (cluster 30), neither with a date of birth. The cluster follows on to
    # Helen at U2 (cluster 10) and moves whole, in one round.
    first = (4, "H", "HUGHES", None, None, "U0", "2008-01-01", "2012-03-31", "council_tax")
    profiles, sources = _movers([*MOVER, first])
    report = CoresidenceReport()
    chain = _labels({1: 10, 2: 10, 3: 30, 4: 30})
    labels = link_movers(chain, profiles, report, None, sources, 1)
    assert _cluster_of(labels, 3) == 10 and _cluster_of(labels, 4) == 10
    assert report.movers == 2
    # A cluster of more than MAX_UNIT incomplete profiles is not a candidate.
    extra = [
        (20 + i, "HELEN", "HUGHES", None, None, f"U{20 + i}", "1990-01-01", "1990-12-31", "ct")
        for i in range(MAX_UNIT)
    ]
    profiles, sources = _movers([*MOVER, first, *extra])
    big = _labels({1: 10, 2: 10, 3: 30, 4: 30, **{row[0]: 30 for row in extra}})
    labels = link_movers(big, profiles, CoresidenceReport(), None, sources)
    assert _cluster_of(labels, 3) == 30
    # Refused whole: 4 shared an account with Helen's own at U0 at the same time.
    listings = _shared_account("A9", (4, 1), "2008-01-01", "2012-03-31")
    profiles, sources = _movers([*MOVER, first])
    report = CoresidenceReport()
    labels = link_movers(chain, profiles, report, listings, sources, 1)
    assert _cluster_of(labels, 3) == 30 and _cluster_of(labels, 4) == 30
    assert (report.movers, report.movers_refused) == (0, 2)


def test_a_mover_is_found_under_a_known_variant_or_two_letters_swapped() -> None:
    # The party is NELL HUGHES (a known variant of HELEN), or HLEEN (two letters swapped).
    for forename in ("NELL", "HLEEN"):
        party = (3, forename, "HUGHES", None, None, "U1", "2012-04-01", "2019-05-31", "ct")
        assert _party_after_movers([*MOVER[:2], party]) == 10, forename
    # A variant or a swap is one name's slip: the surname must then agree exactly.
    party = (3, "NELL", "HUGHS", None, None, "U1", "2012-04-01", "2019-05-31", "ct")
    assert _party_after_movers([*MOVER[:2], party]) == 30


# The companion pass. A couple billed together on account A1 at U1 until 2015 (3: HELEN HUGHES
# with no date of birth; 6: her partner, cluster 60) is found together at U2 from 2016: Helen
# (cluster 10, a GP record with a date of birth) and the partner's GP record there.
COMPANIONS = [
    (1, "HELEN", "HUGHES", "1980-02-03", "N1", "U2", "2016-03-01", None, "gp_registrations"),
    (3, "HELEN", "HUGHES", None, None, "U1", "2009-04-01", "2015-08-31", "council_tax"),
    (6, "TOM", "HUGHES", "1979-05-05", None, "U1", "2009-04-01", "2015-08-31", "council_tax"),
    (7, "TOM", "HUGHES", "1979-05-05", "N7", "U2", "2016-03-01", None, "gp_registrations"),
]
ACCOUNT = _shared_account("council_tax|A1", (3, 6), "2009-04-01", "2015-08-31")
COUPLE = {1: 10, 3: 30, 6: 60, 7: 60}


def test_a_lone_party_joins_the_one_person_of_its_name_living_with_its_co_party() -> None:
    profiles, sources = _movers(COMPANIONS)
    report = CoresidenceReport()
    labels = link_companions(_labels(COUPLE), profiles, report, ACCOUNT, sources)
    assert _cluster_of(labels, 3) == 10
    assert (report.companions, report.companions_ambiguous) == (1, 0)
    # Without the account there is no co-party to follow.
    labels = link_companions(_labels(COUPLE), profiles, CoresidenceReport(), None, sources)
    assert _cluster_of(labels, 3) == 30


def test_no_companion_link_at_another_time_under_another_name_or_with_two_such() -> None:
    later = (
        1,
        "HELEN",
        "HUGHES",
        "1980-02-03",
        "N1",
        "U2",
        "2005-01-01",
        "2008-12-31",
        "gp_registrations",
    )
    other = (
        1,
        "HANNAH",
        "HUGHES",
        "1980-02-03",
        "N1",
        "U2",
        "2016-03-01",
        None,
        "gp_registrations",
    )
    for changed in (later, other):
        profiles, sources = _movers([changed, *COMPANIONS[1:]])
        report = CoresidenceReport()
        labels = link_companions(_labels(COUPLE), profiles, report, ACCOUNT, sources)
        assert _cluster_of(labels, 3) == 30 and report.companions == 0, changed
    # Two Helen Hughes with the partner at U2 (mother and daughter): left alone.
    daughter = (
        4,
        "HELEN",
        "HUGHES",
        "2001-01-01",
        "N4",
        "U2",
        "2016-03-01",
        None,
        "gp_registrations",
    )
    profiles, sources = _movers([*COMPANIONS, daughter])
    report = CoresidenceReport()
    labels = link_companions(_labels({**COUPLE, 4: 40}), profiles, report, ACCOUNT, sources)
    assert _cluster_of(labels, 3) == 30
    assert (report.companions, report.companions_ambiguous) == (0, 1)


def _random_moves(seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Labels, profiles and sources of a small random world of chains of moves: few names,
    addresses and move dates, so candidates follow on to one, several or no people, round
    after round."""
    rng = random.Random(seed)
    rows, clusters = [], {}
    for person in range(60):
        forename, surname = rng.choice(("ANN", "HELEN", "JO")), rng.choice(("HUGHES", "WOOD"))
        dob = f"19{rng.randint(50, 99)}-01-01"
        cuts = sorted(rng.sample(range(2005, 2024), rng.randint(1, 4)))
        stays = list(zip([2000, *cuts], [*cuts, None], strict=True))
        for k, (start, end) in enumerate(stays):
            uid = 1000 * person + k
            complete = k == len(stays) - 1 and rng.random() < 0.8
            source = "gp_registrations" if complete else "council_tax"
            last = f"{end - 1}-12-31" if end else None
            rows.append(
                (uid, forename, surname, dob if complete else None, None,
                 f"U{rng.randint(0, 30)}", f"{start}-01-01", last, source)
            )  # fmt: skip
            clusters[uid] = uid if not complete or rng.random() < 0.5 else 1000 * person + 999
    profiles, sources = _movers(rows)
    return _labels(clusters), profiles, sources


def test_later_rounds_find_what_searching_every_cluster_again_would(monkeypatch) -> None:
    # After the first round the pass looks only at the clusters units joined: the clusters
    # and counts must equal those of searching every cluster in every round.
    import uprnlink.linkage.coresidence as coresidence

    def everything(labels, profiles, found, changed, units, nodes):  # type: ignore[no-untyped-def]
        return coresidence.mover_matches(labels, profiles).select(
            "unique_id", "cluster_id", "_unit"
        )

    moved = 0
    for seed in range(15):
        labels, profiles, sources = _random_moves(seed)
        fast, full = CoresidenceReport(), CoresidenceReport()
        quick = link_movers(labels, profiles, fast, None, sources)
        with monkeypatch.context() as m:
            m.setattr(coresidence, "_mover_found", everything)
            slow = link_movers(labels, profiles, full, None, sources)
        assert quick.sort("unique_id").equals(slow.sort("unique_id")), seed
        assert fast == full, seed
        moved += fast.movers
    assert moved > 0


def _random_named_moves(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Labels and profiles of a small random world of moves whose records spell names in
    several ways: variants (BILL, WILLIAM), initials, one keystroke, another surname."""
    rng = random.Random(seed)
    forenames = (("WILLIAM", "BILL", "W", "WILLAIM"), ("SUSAN", "SUE", "S", "SUSAM"), ("JO", "J"))
    surnames = (("HUGHES", "HUGHS", "HUGHES"), ("WOOD", "WOODS"), ("SMITH", "SMYTH", "JONES"))
    rows, clusters = [], {}
    for person in range(80):
        forename, surname = rng.choice(forenames), rng.choice(surnames)
        cuts = sorted(rng.sample(range(2005, 2024), rng.randint(1, 4)))
        stays = list(zip([2000, *cuts], [*cuts, None], strict=True))
        for k, (start, end) in enumerate(stays):
            uid = 1000 * person + k
            complete = rng.random() < 0.5
            begin = f"{start}-01-0{rng.choice((1, 2))}"
            last = f"{end - 1}-12-3{rng.choice((0, 1))}" if end else None
            rows.append(
                (uid, rng.choice(forename), rng.choice(surname),
                 "1970-01-01" if complete else None, None, f"U{rng.randint(0, 12)}", begin,
                 last, "gp_registrations" if complete else "council_tax")
            )  # fmt: skip
            clusters[uid] = uid if rng.random() < 0.4 else 1000 * person + 999
    profiles, _ = _movers(rows)
    return _labels(clusters), profiles


def test_mover_matches_are_the_follow_on_clusters_with_a_name_that_agrees() -> None:
    # The pass's joins (a date and one shared name, then the other part compared) against the
    # definition read literally: every candidate against every anchored cluster, a stay that
    # follows on (begins on the day or the day after the candidate's ends, or ends on the day
    # or the day before it begins) at another UPRN, and any of the cluster's names agreeing.
    import duckdb

    import uprnlink.linkage.coresidence as coresidence
    from uprnlink.linkage.model import forename_roots

    found = 0
    for seed in range(12):
        labels, profiles = _random_named_moves(seed)
        got = coresidence.mover_matches(labels, profiles).select("unique_id", "cluster_id")
        nodes = labels.join(profiles, on="unique_id")
        candidates = coresidence.mover_units(nodes)
        anchored = coresidence._anchored(nodes, [])
        candidates, anchored = (
            f.with_columns(forename_roots(f.get_column("forename")).alias("roots"))
            for f in (candidates, anchored)
        )
        con = duckdb.connect()
        con.register("c", candidates.to_arrow())
        con.register("a", anchored.to_arrow())
        expected = con.sql(
            f"""
            SELECT DISTINCT c.unique_id, s.cluster_id
            FROM c, a s, a n
            WHERE n.cluster_id = s.cluster_id AND s.uprn_token IS NOT NULL
              AND s.uprn_token <> c.uprn_token
              AND (s.period_start BETWEEN c.period_end AND c.period_end + INTERVAL 1 DAY
                   OR s.period_end BETWEEN c.period_start - INTERVAL 1 DAY AND c.period_start)
              AND n.forename IS NOT NULL AND n.surname IS NOT NULL
              AND {coresidence._NAMES_AGREE}
            """
        ).pl()
        con.close()
        key = ["unique_id", "cluster_id"]
        assert got.sort(key).equals(expected.cast(got.schema).sort(key)), seed
        found += got.height
    assert found > 50
