"""Households: who lives at which pseudonymised UPRN, from when to when.

Each residence-bearing record says a person lived at an address over a period. Per person the
periods are resolved into a timeline without overlaps: on any day the person lives where the
most recent covering move-in says (at equal start dates the more authoritative source wins). A household on a
reference date is everyone whose timeline places them at the same household token that day.
Communal establishments (care homes, hostels) are flagged and are not counted as households.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

# Sources whose dates describe residence at the recorded address, most authoritative first.
RESIDENCE_SOURCES = (
    "council_tax",
    "housing_tenancies",
    "benefits_claims",
    "adult_social_care",
    "gp_registrations",
)
COUNCIL_SOURCE_COUNT = 3  # the first three residence sources are council records of stays
# A hospital record's usual address is a claim about one day. It is used only to fill a gap:
# where no stay covers a day, the person lives at the address of their latest attendance in
# the year before it.
FALLBACK_SOURCES = ("hospital_activity",)
FALLBACK_DAYS = timedelta(days=365)  # how long an attendance's address stands as evidence
NHS_SOURCES = ("gp_registrations", "hospital_activity", "adult_social_care")
OPEN_END = date(9999, 12, 31)


def person_attributes(records: pl.DataFrame, facts_gp: pl.DataFrame | None) -> pl.DataFrame:
    """One row per person: consensus sex and date of birth, date of death, sources seen."""
    nhs_first = pl.col("source_dataset").is_in(list(NHS_SOURCES))
    dob = (
        records.filter(pl.col("dob").is_not_null())
        .group_by("person_id", "dob")
        .agg(pl.len().alias("n"), nhs_first.any().alias("nhs"))
        .sort(["person_id", "nhs", "n", "dob"], descending=[False, True, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select("person_id", "dob")
    )
    sex = (
        records.filter(pl.col("sex").is_not_null())
        .group_by("person_id", "sex")
        .len()
        .sort(["person_id", "len", "sex"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select("person_id", "sex")
    )
    people = (
        records.group_by("person_id")
        .agg(
            pl.len().alias("n_records"),
            pl.col("source_dataset").unique().sort().alias("sources"),
        )
        .join(dob, on="person_id", how="left")
        .join(sex, on="person_id", how="left")
    )
    if facts_gp is not None and "date_of_death" in facts_gp.columns:
        deaths = (
            facts_gp.filter(pl.col("date_of_death").is_not_null())
            .group_by("person_id")
            .agg(pl.col("date_of_death").max())
        )
        people = people.join(deaths, on="person_id", how="left")
    else:
        people = people.with_columns(pl.lit(None, pl.Date).alias("date_of_death"))
    return people


def residence_periods(records: pl.DataFrame) -> pl.DataFrame:
    """Raw residence claims: person, household token, from, to (open ends as 9999-12-31)."""
    priority = {s: i for i, s in enumerate((*RESIDENCE_SOURCES, *FALLBACK_SOURCES))}
    return (
        records.filter(
            pl.col("source_dataset").is_in([*RESIDENCE_SOURCES, *FALLBACK_SOURCES])
            & pl.col("household_token").is_not_null()
            & pl.col("start_date").is_not_null()
        )
        .select(
            "person_id",
            "household_token",
            "is_communal",
            pl.col("start_date").alias("valid_from"),
            pl.when(pl.col("source_dataset").is_in(list(FALLBACK_SOURCES)))
            .then(pl.col("start_date") + FALLBACK_DAYS)
            .otherwise(pl.col("end_date").fill_null(OPEN_END))
            .alias("valid_to"),
            pl.col("source_dataset").replace_strict(priority, return_dtype=pl.Int8).alias("prio"),
            pl.col("source_dataset").is_in(list(FALLBACK_SOURCES)).alias("fallback"),
        )
        .filter(pl.col("valid_to") >= pl.col("valid_from"))
        .pipe(close_unconfirmed_stays)
    )


def close_unconfirmed_stays(periods: pl.DataFrame) -> pl.DataFrame:
    """End open GP and social care stays at an address the council says the person has left.

    GP lists keep people who moved away until someone deregisters them. When a council source
    (council tax, tenancy, benefits) shows the same person's stay at the same address ending,
    with no council stay there still open, an open registration there that began before that
    end is closed on the same day.
    """
    council = pl.col("prio") < COUNCIL_SOURCE_COUNT
    ended = (
        periods.filter(council)
        .group_by("person_id", "household_token")
        .agg(
            pl.col("valid_to").max().alias("_council_end"),
        )
        .filter(pl.col("_council_end") < OPEN_END)
    )
    return (
        periods.join(ended, on=["person_id", "household_token"], how="left")
        .with_columns(
            pl.when(
                ~council
                & (pl.col("valid_to") == OPEN_END)
                & pl.col("_council_end").is_not_null()
                & (pl.col("valid_from") <= pl.col("_council_end"))
            )
            .then(pl.col("_council_end"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_council_end")
    )


def build_memberships(periods: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """A non-overlapping residence timeline per person, merged into membership spells.

    The person's days are cut at every period start and end. On each piece the address is the
    one from the covering period that started last (the most recent move-in), ties going to the
    more authoritative source; a piece no period covers is a gap. Death ends the timeline.
    """
    one_day = timedelta(days=1)
    deaths = people.select("person_id", "date_of_death")
    periods = (
        periods.join(deaths, on="person_id", how="left")
        .with_columns(
            pl.min_horizontal("valid_to", pl.col("date_of_death").fill_null(OPEN_END)).alias(
                "valid_to"
            )
        )
        .drop("date_of_death")
        .filter(pl.col("valid_to") >= pl.col("valid_from"))
    )
    cuts = (
        pl.concat(
            [
                periods.select("person_id", pl.col("valid_from").alias("start")),
                periods.filter(pl.col("valid_to") < OPEN_END).select(
                    "person_id", (pl.col("valid_to") + one_day).alias("start")
                ),
            ]
        )
        .unique()
        .sort("person_id", "start")
        .with_columns(
            (pl.col("start").shift(-1).over("person_id") - one_day).fill_null(OPEN_END).alias("end")
        )
    )
    pieces = (
        cuts.join(periods, on="person_id", how="inner")
        .filter((pl.col("valid_from") <= pl.col("start")) & (pl.col("valid_to") >= pl.col("start")))
        .sort(
            ["person_id", "start", "fallback", "valid_from", "prio"],
            descending=[False, False, False, True, False],
        )
        .group_by("person_id", "start", maintain_order=True)
        .first()
        .select("person_id", "start", "end", "household_token", "is_communal")
    )
    # Merge consecutive pieces at the same address with no gap between them.
    new_spell = (
        (pl.col("household_token") != pl.col("household_token").shift(1).over("person_id"))
        | (pl.col("start") != (pl.col("end").shift(1).over("person_id") + one_day))
    ).fill_null(True)
    return (
        pieces.with_columns(new_spell.cum_sum().over("person_id").alias("_spell"))
        .group_by("person_id", "_spell")
        .agg(
            pl.col("household_token").first(),
            pl.col("is_communal").first(),
            pl.col("start").min().alias("valid_from"),
            pl.col("end").max().alias("valid_to"),
        )
        .drop("_spell")
        .with_columns(
            pl.when(pl.col("valid_to") == OPEN_END)
            .then(None)
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .sort("person_id", "valid_from")
    )


def residents_on(memberships: pl.DataFrame, on: date) -> pl.DataFrame:
    """Who lives where on a date: person_id, household_token, is_communal."""
    return memberships.filter(
        (pl.col("valid_from") <= on) & (pl.col("valid_to").fill_null(OPEN_END) >= on)
    ).select("person_id", "household_token", "is_communal")


def age_on_expr(dob: str, on: date, *, at_death: str | None = None) -> pl.Expr:
    """Age in whole years on a date (or on the date in column `at_death`, when given)."""
    d = pl.col(dob)
    when = pl.col(at_death) if at_death else pl.lit(on)
    before_birthday = (d.dt.month() > when.dt.month()) | (
        (d.dt.month() == when.dt.month()) & (d.dt.day() > when.dt.day())
    )
    return (when.dt.year() - d.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int16)


def age_band_expr(age: str) -> pl.Expr:
    """Five-year age bands to 85+ (ONS style), null where age is unknown."""
    a = pl.col(age)
    lower = (a // 5 * 5).clip(0, 85)
    return (
        pl.when(a.is_null())
        .then(None)
        .when(lower >= 85)
        .then(pl.lit("85+"))
        .otherwise(lower.cast(pl.Utf8).str.zfill(2) + "-" + (lower + 4).cast(pl.Utf8).str.zfill(2))
    )


def household_composition(residents: pl.DataFrame, people: pl.DataFrame, on: date) -> pl.DataFrame:
    """Size and make-up of every household (and communal establishment) on a date."""
    r = residents.join(people.select("person_id", "dob"), on="person_id", how="left").with_columns(
        age_on_expr("dob", on).alias("age")
    )
    a = pl.col("age")
    comp = r.group_by("household_token").agg(
        pl.col("is_communal").first(),
        pl.len().cast(pl.Int32).alias("residents"),
        (a >= 18).sum().cast(pl.Int32).alias("adults"),
        (a < 18).sum().cast(pl.Int32).alias("children_0_17"),
        (a <= 4).sum().cast(pl.Int32).alias("children_0_4"),
        ((a >= 5) & (a <= 15)).sum().cast(pl.Int32).alias("children_5_15"),
        (a >= 65).sum().cast(pl.Int32).alias("people_65_plus"),
        (a >= 85).sum().cast(pl.Int32).alias("people_85_plus"),
        a.is_null().sum().cast(pl.Int32).alias("age_unknown"),
        a.min().alias("youngest_age"),
        a.max().alias("oldest_age"),
    )
    return comp.with_columns(
        (pl.col("residents") == 1).alias("living_alone"),
        ((pl.col("adults") == 1) & (pl.col("children_0_17") > 0)).alias("lone_adult_with_children"),
        (pl.col("residents") > 10).alias("improbable_size"),
        pl.lit(on).alias("reference_date"),
    )
