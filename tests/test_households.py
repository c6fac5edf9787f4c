"""Residence timelines and household composition on tiny frames."""

from __future__ import annotations

from datetime import date

import polars as pl

from uprnlink.households import (
    age_band_expr,
    age_on_expr,
    build_memberships,
    household_composition,
    residence_periods,
    residents_on,
)

D = date


def records(rows: list[tuple[str, str, str, date, date | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_id": [r[0] for r in rows],
            "source_dataset": [r[1] for r in rows],
            "household_token": [r[2] for r in rows],
            "is_communal": [False] * len(rows),
            "start_date": [r[3] for r in rows],
            "end_date": [r[4] for r in rows],
        },
        schema_overrides={"start_date": pl.Date, "end_date": pl.Date},
    )


def no_deaths(*ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"person_id": list(ids), "date_of_death": [None] * len(ids)},
        schema_overrides={"date_of_death": pl.Date},
    )


def timeline(
    rows: list[tuple[str, str, str, date, date | None]],
) -> list[tuple[str, date, date | None]]:
    people = no_deaths(*{r[0] for r in rows})
    m = build_memberships(residence_periods(records(rows)), people)
    return [(r["household_token"], r["valid_from"], r["valid_to"]) for r in m.iter_rows(named=True)]


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
