"""Residence timelines and household composition on tiny frames."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.households.ages import age_band_expr, age_on_expr
from uprnlink.households.tables import CODED_IDS, coded_ids, decoded_ids
from uprnlink.households.timelines import (
    build_memberships,
    children_stay_with_relatives,
    household_composition,
    limit_fallback,
    person_surnames,
    residence_periods,
    residents_on,
)

D = date
REFERENCE_DATE = date(2026, 3, 31)


Row = (
    tuple[str, str, str | None, date, date | None]
    | tuple[str, str, str | None, date, date | None, str]
    | tuple[str, str, str | None, date, date | None, str, str]
)


def records(rows: Sequence[Row]) -> pl.DataFrame:
    """Trusted-style records: person, source, token, start, end (and surname, postcode)."""
    return pl.DataFrame(
        {
            "person_id": [r[0] for r in rows],
            "source_dataset": [r[1] for r in rows],
            "household_token": [r[2] for r in rows],
            "is_communal": [False] * len(rows),
            "start_date": [r[3] for r in rows],
            "end_date": [r[4] for r in rows],
            "surname": [r[5] if len(r) > 5 else None for r in rows],
            "postcode": [r[6] if len(r) > 6 else None for r in rows],
        },
        schema_overrides={
            "household_token": pl.Utf8,
            "start_date": pl.Date,
            "end_date": pl.Date,
            "surname": pl.Utf8,
            "postcode": pl.Utf8,
        },
    )


def no_deaths(*ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"person_id": list(ids), "date_of_death": [None] * len(ids)},
        schema_overrides={"date_of_death": pl.Date},
    )


def memberships(rows: Sequence[Row]) -> pl.DataFrame:
    people = no_deaths(*sorted({r[0] for r in rows}))
    return build_memberships(residence_periods(records(rows)), people)


def timeline(rows: Sequence[Row], person: str | None = None) -> list[tuple[str, date, date | None]]:
    m = memberships(rows)
    if person is not None:
        m = m.filter(pl.col("person_id") == person)
    return [(r["household_token"], r["valid_from"], r["valid_to"]) for r in m.iter_rows(named=True)]


def placed_on(rows: Sequence[Row], on: date = REFERENCE_DATE) -> dict[str, str]:
    """Who lives where on a date."""
    return dict(residents_on(memberships(rows), on).select("person_id", "household_token").rows())


def test_move_ends_the_earlier_open_period() -> None:
    rows = [
        ("p", "gp_registrations", "A", D(2010, 1, 1), None),  # GP never updated start
        ("p", "council_tax", "B", D(2020, 6, 1), None),
    ]
    assert timeline(rows) == [("A", D(2010, 1, 1), D(2020, 5, 31)), ("B", D(2020, 6, 1), None)]


def test_short_closed_period_inside_an_open_one_does_not_end_residence() -> None:
    rows = [
        ("p", "council_tax", "A", D(2016, 10, 22), None),
        ("p", "benefits_claims", "A", D(2016, 11, 17), D(2018, 1, 22)),
    ]
    assert timeline(rows) == [("A", D(2016, 10, 22), None)]


def test_equal_starts_go_to_the_more_authoritative_source() -> None:
    rows = [
        ("p", "gp_registrations", "A", D(2020, 1, 1), None),
        ("p", "council_tax", "B", D(2020, 1, 1), None),
    ]
    assert timeline(rows) == [("B", D(2020, 1, 1), None)]


def test_gap_between_periods_is_kept_and_returns_merge() -> None:
    rows = [
        ("p", "council_tax", "A", D(2015, 1, 1), D(2016, 12, 31)),
        ("p", "council_tax", "A", D(2018, 1, 1), None),
        ("p", "housing_tenancies", "A", D(2019, 1, 1), D(2020, 1, 1)),
    ]
    assert timeline(rows) == [("A", D(2015, 1, 1), D(2016, 12, 31)), ("A", D(2018, 1, 1), None)]


def test_death_ends_the_timeline_and_hospital_addresses_are_not_residence() -> None:
    recs = records(
        [
            ("p", "council_tax", "A", D(2015, 1, 1), None),
            ("p", "hospital_activity", "Z", D(2024, 1, 1), None),
        ]
    )
    people = pl.DataFrame({"person_id": ["p"], "date_of_death": [D(2025, 2, 1)]})
    m = build_memberships(residence_periods(recs), people)
    assert m.select("household_token", "valid_from", "valid_to").rows() == [
        ("A", D(2015, 1, 1), D(2025, 2, 1))
    ]
    assert residents_on(m, D(2026, 3, 31)).height == 0


def test_household_composition_counts_ages() -> None:
    on = D(2026, 3, 31)
    residents = pl.DataFrame(
        {
            "person_id": ["a", "b", "c", "d", "e"],
            "household_token": ["H1", "H1", "H1", "H2", "C1"],
            "is_communal": [False, False, False, False, True],
        }
    )
    people = pl.DataFrame(
        {
            "person_id": ["a", "b", "c", "d", "e"],
            "dob": [D(1990, 5, 1), D(2023, 1, 1), D(2015, 4, 1), D(1940, 1, 1), D(1935, 1, 1)],
        }
    )
    comp = household_composition(residents, people, on).sort("household_token")
    h1 = comp.filter(pl.col("household_token") == "H1").row(0, named=True)
    assert (h1["residents"], h1["adults"], h1["children_0_4"], h1["children_5_15"]) == (3, 1, 1, 1)
    assert h1["lone_adult_with_children"] and not h1["living_alone"]
    h2 = comp.filter(pl.col("household_token") == "H2").row(0, named=True)
    assert h2["living_alone"] and h2["people_85_plus"] == 1
    assert comp.filter(pl.col("household_token") == "C1")["is_communal"].item()


def test_age_and_band_around_birthdays() -> None:
    df = pl.DataFrame({"dob": [D(2000, 3, 31), D(2000, 4, 1), D(1930, 1, 1), None]})
    out = df.with_columns(age_on_expr("dob", D(2026, 3, 31)).alias("age")).with_columns(
        age_band_expr("age").alias("band")
    )
    assert out["age"].to_list() == [26, 25, 96, None]
    assert out["band"].to_list() == ["25-29", "25-29", "85+", None]


def test_council_end_closes_a_stale_gp_registration_at_the_same_address() -> None:
    rows = [
        ("p", "gp_registrations", "A", D(2005, 1, 1), None),  # never deregistered
        ("p", "council_tax", "A", D(2010, 1, 1), D(2024, 6, 30)),  # council: left A
    ]
    assert timeline(rows) == [("A", D(2005, 1, 1), D(2024, 6, 30))]
    # A council stay still open at the address keeps the registration open.
    rows.append(("p", "housing_tenancies", "A", D(2024, 7, 1), None))
    assert timeline(rows) == [("A", D(2005, 1, 1), None)]
    # A registration at another address is untouched.
    other = [
        ("q", "gp_registrations", "B", D(2005, 1, 1), None),
        ("q", "council_tax", "A", D(2010, 1, 1), D(2024, 6, 30)),
    ]
    assert timeline(other)[-1] == ("B", D(2024, 7, 1), None)


def test_hospital_address_only_fills_gaps_for_a_year() -> None:
    rows = [
        ("p", "council_tax", "A", D(2015, 1, 1), None),
        ("p", "hospital_activity", "Z", D(2024, 1, 1), None),  # a visit: not a move
        ("q", "hospital_activity", "B", D(2025, 6, 1), D(2025, 6, 3)),  # no stay known at all
        ("r", "hospital_activity", "C", D(2020, 1, 1), None),  # too long ago to place r today
    ]
    people = no_deaths("p", "q", "r")
    m = build_memberships(residence_periods(records(rows)), people)
    now = dict(residents_on(m, D(2026, 3, 31)).select("person_id", "household_token").iter_rows())
    assert now == {"p": "A", "q": "B"}


# ------------------------------------------------------------------ consistency rules
CT, HT, BN, SC, GP, HA = (
    "council_tax",
    "housing_tenancies",
    "benefits_claims",
    "adult_social_care",
    "gp_registrations",
    "hospital_activity",
)


def test_gp_deregistration_closes_a_stale_council_liability_but_a_benefit_end_closes_nothing() -> (
    None
):
    rows: Sequence[Row] = [
        ("p", CT, "A", D(2010, 1, 1), None),  # liability never closed
        ("p", GP, "A", D(2005, 1, 1), D(2024, 6, 30)),  # deregistered: left the area
    ]
    assert timeline(rows) == [("A", D(2005, 1, 1), D(2024, 6, 30))]
    # A benefit award can end while the claimant stays: the open registration stands.
    kept: list[Row] = [
        ("q", GP, "A", D(2005, 1, 1), None),
        ("q", BN, "A", D(2010, 1, 1), D(2024, 6, 30)),
    ]
    assert timeline(kept) == [("A", D(2005, 1, 1), None)]
    # A liability and a tenancy do not close each other.
    both: list[Row] = [
        ("r", CT, "A", D(2010, 1, 1), None),
        ("r", HT, "A", D(2010, 1, 1), D(2024, 6, 30)),
    ]
    assert timeline(both) == [("A", D(2010, 1, 1), None)]


def test_a_later_record_at_an_address_already_left_is_stale() -> None:
    rows: Sequence[Row] = [
        ("p", CT, "A", D(2010, 1, 1), D(2019, 12, 31)),
        ("p", CT, "B", D(2020, 1, 1), None),
        ("p", BN, "A", D(2021, 1, 1), None),  # new award carrying the old address
    ]
    assert timeline(rows) == [("A", D(2010, 1, 1), D(2019, 12, 31)), ("B", D(2020, 1, 1), None)]
    # Without a liability elsewhere the same record is taken as a return to A.
    back: list[Row] = [
        ("q", CT, "A", D(2010, 1, 1), D(2019, 12, 31)),
        ("q", BN, "A", D(2021, 1, 1), None),
    ]
    assert placed_on(back) == {"q": "A"}


FAMILY: list[Row] = [
    ("mum", CT, "A", D(2012, 1, 1), D(2022, 5, 31), "OWEN", "LS1 1AA"),
    ("dad", CT, "A", D(2012, 1, 1), D(2022, 5, 31), "OWEN", "LS1 1AA"),
    ("kid", GP, "A", D(2014, 3, 1), None, "OWEN", "LS1 1AA"),  # GP never told of the move
]


def test_a_child_known_only_to_the_gp_moves_with_the_parents() -> None:
    moved: list[Row] = [
        *FAMILY,
        ("mum", CT, "B", D(2022, 6, 1), None, "OWEN", "LS2 2BB"),
        ("dad", CT, "B", D(2022, 6, 1), None, "OWEN", "LS2 2BB"),
    ]
    assert timeline(moved, "kid") == [
        ("A", D(2014, 3, 1), D(2022, 5, 31)),
        ("B", D(2022, 6, 1), None),
    ]
    # Parents who left the area take the child with them: no household today.
    assert placed_on(FAMILY) == {}


def test_a_child_stays_when_someone_who_lived_with_them_stays_on() -> None:
    rows: Sequence[Row] = [
        *FAMILY,
        ("gran", CT, "A", D(2012, 1, 1), None, "BAKER", "LS1 1AA"),  # stays at A
    ]
    assert placed_on(rows) == {"kid": "A", "gran": "A"}
    # A child registered after the relatives left is not theirs.
    later: list[Row] = [*FAMILY[:2], ("kid", GP, "A", D(2023, 1, 1), None, "OWEN", "LS1 1AA")]
    assert placed_on(later) == {"kid": "A"}


def test_next_door_uprn_goes_to_the_address_more_sources_give() -> None:
    rows: Sequence[Row] = [
        ("p", CT, "A2", D(2015, 1, 1), None, "KHAN", "LS1 1AA"),  # neighbouring property
        ("p", HT, "A1", D(2015, 1, 1), None, "KHAN", "LS1 1AA"),
        ("p", GP, "A1", D(2001, 1, 1), None, "KHAN", "LS1 1AA"),
    ]
    assert timeline(rows) == [("A1", D(2001, 1, 1), None)]
    # Another postcode is not a neighbour: the later move-in stands.
    moved: list[Row] = [
        ("q", CT, "B", D(2015, 1, 1), None, "KHAN", "LS2 2BB"),
        ("q", HT, "A1", D(2010, 1, 1), None, "KHAN", "LS1 1AA"),
        ("q", GP, "A1", D(2001, 1, 1), None, "KHAN", "LS1 1AA"),
    ]
    assert placed_on(moved) == {"q": "B"}


def test_next_door_tie_goes_to_the_household_that_arrived_together() -> None:
    rows: Sequence[Row] = [
        # p's liability carries the neighbour's UPRN; the GP has the right one.
        ("p", CT, "N", D(2019, 4, 1), None, "COLE", "LS1 1AA"),
        ("p", GP, "T", D(2001, 1, 1), None, "COLE", "LS1 1AA"),
        ("partner", CT, "T", D(2019, 4, 1), None, "WARD", "LS1 1AA"),  # moved in with p
        ("neighbour", CT, "N", D(2008, 1, 1), None, "HILL", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"p": "T", "partner": "T", "neighbour": "N"}


def test_a_record_without_uprn_takes_the_persons_own_address_in_its_postcode() -> None:
    rows: Sequence[Row] = [
        ("p", HA, "A", D(2015, 5, 1), D(2015, 5, 2), "LEE", "LS1 1AA"),
        ("p", GP, None, D(2001, 1, 1), None, "LEE", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"p": "A"}
    # ... and is then closed like any other stay there when the council records them leaving.
    left: list[Row] = [
        ("q", CT, "A", D(2010, 1, 1), D(2020, 1, 31), "LEE", "LS1 1AA"),
        ("q", GP, None, D(2001, 1, 1), None, "LEE", "LS1 1AA"),
    ]
    assert placed_on(left) == {}


def test_a_record_without_uprn_joins_the_one_household_of_relatives_in_its_postcode() -> None:
    rows: Sequence[Row] = [
        ("mum", CT, "A", D(2015, 1, 1), None, "PATEL", "LS1 1AA"),
        ("kid", GP, None, D(2016, 2, 1), None, "PATEL", "LS1 1AA"),
        ("other", CT, "B", D(2015, 1, 1), None, "JONES", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"mum": "A", "kid": "A", "other": "B"}
    # Two households of that surname in the postcode: no guess.
    two: list[Row] = [*rows, ("aunt", CT, "C", D(2015, 1, 1), None, "PATEL", "LS1 1AA")]
    assert "kid" not in placed_on(two)
    # Nor into a communal establishment, nor for someone housed elsewhere.
    housed: list[Row] = [*rows, ("kid", CT, "D", D(2024, 1, 1), None, "PATEL", "LS9 9ZZ")]
    assert placed_on(housed)["kid"] == "D"


def test_a_gp_only_child_next_door_joins_the_relatives() -> None:
    rows: Sequence[Row] = [
        ("mum", CT, "A", D(2015, 1, 1), None, "WOOD", "LS1 1AA"),
        ("kid", GP, "B", D(2016, 2, 1), None, "WOOD", "LS1 1AA"),  # neighbour's UPRN
        ("other", CT, "B", D(2015, 1, 1), None, "JONES", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"mum": "A", "kid": "A", "other": "B"}
    # A child with a relative at the GP's address stays there.
    cousin: list[Row] = [*rows, ("aunt", CT, "B", D(2015, 1, 1), None, "WOOD", "LS1 1AA")]
    assert placed_on(cousin)["kid"] == "B"


def test_a_liability_next_door_joins_the_relatives_who_moved_in_the_same_day() -> None:
    rows: Sequence[Row] = [
        ("him", CT, "A", D(2020, 3, 1), None, "EVANS", "LS1 1AA"),
        ("her", CT, "B", D(2020, 3, 1), None, "EVANS", "LS1 1AA"),  # neighbour's UPRN
        ("other", CT, "B", D(2010, 1, 1), None, "BROWN", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"him": "A", "her": "A", "other": "B"}
    # Relatives who arrived years apart are not taken to be one move.
    apart: list[Row] = [*rows[:1], ("her", CT, "B", D(2023, 3, 1), None, "EVANS", "LS1 1AA")]
    assert placed_on(apart) == {"him": "A", "her": "B"}


def test_a_hospital_address_does_not_outlast_a_later_recorded_departure() -> None:
    rows: Sequence[Row] = [
        ("p", CT, "A", D(2010, 1, 1), D(2025, 12, 31)),
        ("p", HA, "A", D(2025, 6, 1), D(2025, 6, 3)),  # attended while still at A
    ]
    assert timeline(rows) == [("A", D(2010, 1, 1), D(2025, 12, 31))]
    # An attendance after leaving still fills the gap for a year.
    later: list[Row] = [*rows[:1], ("p", HA, "A", D(2026, 2, 1), None)]
    assert placed_on(later) == {"p": "A"}


def test_records_without_surname_or_postcode_columns_still_resolve() -> None:
    rows: list[Row] = [
        ("p", GP, "A", D(2005, 1, 1), None),
        ("p", CT, "A", D(2010, 1, 1), D(2024, 6, 30)),
    ]
    bare = records(rows).drop("surname", "postcode")
    periods = residence_periods(bare)
    assert periods.columns == [
        "person_id",
        "household_token",
        "is_communal",
        "valid_from",
        "valid_to",
        "prio",
        "fallback",
    ]
    m = build_memberships(periods, no_deaths("p"))
    assert m.select("household_token", "valid_from", "valid_to").rows() == [
        ("A", D(2005, 1, 1), D(2024, 6, 30))
    ]


def test_a_blocks_uprn_on_a_flats_record_is_only_a_postcode() -> None:
    # The GP holds the block's UPRN (an AddressBase parent shell) for a flat's resident: the
    # claim is placed from the person's own council tax record in the postcode, not at the block.
    rows: list[Row] = [
        ("p", "council_tax", "flat-2", D(2020, 1, 1), None, "JONES", "OL1 2AB"),
        ("p", "gp_registrations", "block", D(2021, 5, 1), None, "JONES", "OL1 2AB"),
        ("q", "gp_registrations", "block", D(2021, 5, 1), None, "KHAN", "OL1 2AB"),
    ]
    frame = records(rows).with_columns(
        pl.when(pl.col("household_token") == "block")
        .then(pl.lit("PP"))
        .otherwise(pl.lit("RD06"))
        .alias("property_class")
    )
    mem = build_memberships(residence_periods(frame), no_deaths("p", "q"))
    on = residents_on(mem, REFERENCE_DATE)
    placed = dict(on.select("person_id", "household_token").iter_rows())
    assert placed == {"p": "flat-2"}  # q, known only at the block, is placed nowhere


def test_an_attendance_without_uprn_joins_the_one_household_of_relatives_in_its_postcode() -> None:
    # A child known only from hospital attendances without a UPRN: the attendance stands (a
    # year without the evidence rules' visit_days) at the one address in its postcode where someone of the surname lives.
    rows: list[Row] = [
        ("mum", CT, "A", D(2015, 1, 1), None, "SHAH", "LS1 1AA"),
        ("kid", HA, None, D(2025, 9, 1), D(2025, 9, 1), "SHAH", "LS1 1AA"),
        ("other", CT, "B", D(2015, 1, 1), None, "JONES", "LS1 1AA"),
    ]
    assert placed_on(rows) == {"mum": "A", "kid": "A", "other": "B"}
    assert timeline(rows, "kid") == [("A", D(2025, 9, 1), D(2026, 9, 1))]
    # Not when the surname lives at two addresses there, and never beside an address the
    # person's own records give (someone who left is not brought back by an attendance).
    two: list[Row] = [*rows, ("aunt", CT, "C", D(2015, 1, 1), None, "SHAH", "LS1 1AA")]
    assert "kid" not in placed_on(two)
    left: list[Row] = [*rows, ("kid", GP, "D", D(2010, 1, 1), D(2020, 1, 1), "SHAH", "LS9 9ZZ")]
    assert "kid" not in placed_on(left)


def test_a_childs_attendance_stands_while_the_relatives_there_stay() -> None:
    # A child seen at hospital three years ago, at the address a parent still lives at: the
    # attendance stands while the parent stays. An adult's does not (adults move on unrecorded),
    # nor a child's past the last day of the relatives' stays there.
    rows: list[Row] = [
        ("mum", CT, "A", D(2015, 1, 1), None, "SHAH"),
        ("kid", HA, "A", D(2023, 3, 1), D(2023, 3, 1), "SHAH"),
        ("lodger", HA, "A", D(2023, 3, 1), D(2023, 3, 1), "SHAH"),
        ("dad", CT, "B", D(2015, 1, 1), D(2024, 6, 30), "EVANS"),
        ("son", HA, "B", D(2023, 3, 1), D(2023, 3, 1), "EVANS"),
    ]
    born = {"mum": D(1985, 1, 1), "kid": D(2012, 5, 5), "lodger": D(1990, 1, 1)}
    born |= {"dad": D(1980, 1, 1), "son": D(2010, 1, 1)}
    frame = records(rows).with_columns(
        pl.col("person_id").replace_strict(born, return_dtype=pl.Date).alias("dob")
    )
    folk = no_deaths(*born).with_columns(
        pl.col("person_id").replace_strict(born, return_dtype=pl.Date).alias("dob")
    )
    periods = children_stay_with_relatives(residence_periods(frame), folk, person_surnames(frame))
    mem = build_memberships(limit_fallback(periods), folk)
    placed = dict(residents_on(mem, REFERENCE_DATE).select("person_id", "household_token").rows())
    assert placed == {"mum": "A", "kid": "A"}
    son = mem.filter(pl.col("person_id") == "son").select("valid_from", "valid_to").rows()
    assert son == [(D(2023, 3, 1), D(2024, 6, 30))]


def test_the_block_a_claim_names_picks_among_households_of_relatives() -> None:
    # Two SHAH households in the postcode; the child's GP registration holds the block's UPRN,
    # as does the registration of the adult in flat 2: the child is taken to live in flat 2.
    rows: list[Row] = [
        ("dad", "council_tax", "flat-2", D(2015, 1, 1), None, "SHAH", "OL1 2AB"),
        ("dad", "gp_registrations", "block", D(2015, 1, 1), None, "SHAH", "OL1 2AB"),
        ("aunt", "council_tax", "flat-7", D(2015, 1, 1), None, "SHAH", "OL1 2AB"),
        ("kid", "gp_registrations", "block", D(2016, 2, 1), None, "SHAH", "OL1 2AB"),
    ]

    def placed(rows: list[Row]) -> dict[str, str]:
        frame = records(rows).with_columns(
            pl.when(pl.col("household_token") == "block")
            .then(pl.lit("PP"))
            .otherwise(pl.lit("RD06"))
            .alias("property_class")
        )
        mem = build_memberships(residence_periods(frame), no_deaths("dad", "aunt", "kid"))
        return dict(residents_on(mem, REFERENCE_DATE).select("person_id", "household_token").rows())

    assert placed(rows) == {"dad": "flat-2", "aunt": "flat-7", "kid": "flat-2"}
    # When both households' adults were registered at the block, it decides nothing.
    both: list[Row] = [
        *rows,
        ("aunt", "gp_registrations", "block", D(2015, 1, 1), None, "SHAH", "OL1 2AB"),
    ]
    assert "kid" not in placed(both)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text("ab0Pf", min_size=1, max_size=6), min_size=1, max_size=30),
    st.lists(
        st.one_of(st.none(), st.text("c1e", min_size=1, max_size=5)), min_size=30, max_size=30
    ),
)
def test_coded_ids_keep_the_order_and_equalities_of_the_ids(
    people: list[str], tokens: list[str | None]
) -> None:
    """The household rules run on codes: codes sort, group and compare as the ids do, and
    decode to the same ids (nulls stay null)."""
    records = pl.DataFrame(
        {"person_id": people, "household_token": tokens[: len(people)]},
        schema={"person_id": pl.String, "household_token": pl.String},
    )
    coded, ids = coded_ids(records)
    assert coded.schema["person_id"] == coded.schema["household_token"] == pl.UInt32
    for column in CODED_IDS:
        strings = records.get_column(column).to_list()
        codes = coded.get_column(column).to_list()
        assert [s is None for s in strings] == [c is None for c in codes]
        for i, j in itertools.product(range(len(strings)), repeat=2):
            if strings[i] is not None and strings[j] is not None:
                assert (strings[i] < strings[j]) == (codes[i] < codes[j])
                assert (strings[i] == strings[j]) == (codes[i] == codes[j])
    back = decoded_ids(coded.rename({"household_token": "household_id"}), ids)
    assert back.get_column("person_id").to_list() == people
    assert back.get_column("household_id").to_list() == tokens[: len(people)]
