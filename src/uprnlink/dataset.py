"""Assemble the de-identified analysis tables: person, household, membership, service events.

Inputs are trusted-zone frames (already pseudonymised) with person ids from linkage. Outputs
carry no names, no raw UPRN or NHS number and no exact date of birth: only person and
household ids, ages, areas and facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from uprnlink.households import (
    OPEN_END,
    age_band_expr,
    age_on_expr,
    build_memberships,
    household_composition,
    person_attributes,
    residence_periods,
    residents_on,
)

LTC_FLAGS = (
    "ltc_asthma",
    "ltc_copd",
    "ltc_diabetes",
    "ltc_chd",
    "ltc_hypertension",
    "ltc_depression",
    "ltc_dementia",
)
SOURCES = (
    "council_tax",
    "housing_tenancies",
    "benefits_claims",
    "adult_social_care",
    "gp_registrations",
    "hospital_activity",
)


@dataclass
class AnalysisTables:
    """The published tables, ready to write."""

    person: pl.DataFrame
    household: pl.DataFrame
    membership: pl.DataFrame
    service_events: pl.DataFrame


def _active_on(on: date) -> pl.Expr:
    return (pl.col("start_date") <= on) & (pl.col("end_date").fill_null(OPEN_END) >= on)


def _facts(records: pl.DataFrame, facts: dict[str, pl.DataFrame], source: str) -> pl.DataFrame:
    """A source's facts joined to its records (person, household token, dates)."""
    base = records.filter(pl.col("source_dataset") == source).select(
        "unique_id", "person_id", "household_token", "start_date", "end_date"
    )
    if source not in facts:
        return base.clear()
    return base.join(facts[source].drop("source_dataset"), on="unique_id", how="inner")


def months_before(on: date, months: int) -> date:
    """The same day `months` months earlier (start of a look-back period, inclusive)."""
    y, m = divmod(on.year * 12 + on.month - 1 - months, 12)
    day = min(on.day, 28)
    return date(y, m + 1, day) + (on - on.replace(day=day))


def build_analysis_tables(
    records: pl.DataFrame,
    facts: dict[str, pl.DataFrame],
    *,
    reference_date: date,
    service_period_months: int,
) -> AnalysisTables:
    """All published tables from linked trusted records (records carry `person_id`)."""
    on = reference_date
    period_start = months_before(on, service_period_months)
    gp = _facts(records, facts, "gp_registrations")
    people = person_attributes(records, gp)
    memberships = build_memberships(residence_periods(records), people)
    residents = residents_on(memberships, on)
    alive = people.filter(pl.col("date_of_death").is_null() | (pl.col("date_of_death") > on))
    residents = residents.join(alive.select("person_id"), on="person_id", how="semi")
    composition = household_composition(residents, people, on)

    # Areas of each household token, from the records at it (all share the same UPRN).
    areas = (
        records.filter(pl.col("household_token").is_not_null())
        .group_by("household_token")
        .agg(
            pl.col(c).drop_nulls().first()
            for c in ("oa", "lsoa", "msoa", "ward", "lad", "imd_decile", "property_class")
        )
    )

    # Household circumstances on the reference date.
    housing = _facts(records, facts, "housing_tenancies").filter(_active_on(on))
    council_tax = _facts(records, facts, "council_tax").filter(_active_on(on))
    benefits = _facts(records, facts, "benefits_claims").filter(_active_on(on))
    social_care = _facts(records, facts, "adult_social_care")
    hospital = _facts(records, facts, "hospital_activity").filter(
        (pl.col("start_date") >= period_start) & (pl.col("start_date") <= on)
    )
    care_in_period = social_care.filter(
        (pl.col("start_date") <= on) & (pl.col("end_date").fill_null(OPEN_END) >= period_start)
    )

    tenancy = housing.group_by("household_token").agg(
        pl.col("tenure_type").drop_nulls().first().alias("tenancy_type"),
        pl.len().alias("_active_tenancies"),
        pl.col("bedrooms").drop_nulls().max().alias("bedrooms"),
    )
    ctax = council_tax.group_by("household_token").agg(
        pl.col("band").drop_nulls().mode().sort().first().alias("council_tax_band"),
        pl.col("council_tax_reduction").any().alias("council_tax_reduction"),
        pl.col("single_person_discount").any().alias("single_person_discount"),
    )

    person_flags = _person_flags(people, gp, benefits, housing, care_in_period, hospital)
    per_household_people = (
        residents.join(person_flags, on="person_id", how="left")
        .group_by("household_token")
        .agg(
            (pl.col("ltc_any").fill_null(False)).sum().cast(pl.Int32).alias("people_with_ltc"),
            pl.col("receives_benefits").fill_null(False).any().alias("any_benefits"),
            pl.col("social_care_client").fill_null(False).any().alias("any_social_care"),
            pl.col("ae_attendances").fill_null(0).sum().cast(pl.Int32).alias("ae_attendances"),
            pl.col("emergency_admissions")
            .fill_null(0)
            .sum()
            .cast(pl.Int32)
            .alias("emergency_admissions"),
        )
    )
    household = (
        composition.join(areas, on="household_token", how="left")
        .join(tenancy, on="household_token", how="left")
        .join(ctax, on="household_token", how="left")
        .join(per_household_people, on="household_token", how="left")
        .with_columns(
            pl.when(pl.col("_active_tenancies").fill_null(0) > 0)
            .then(pl.lit("social_rented"))
            .otherwise(pl.lit("owner_or_private_or_unknown"))
            .alias("tenure"),
        )
        .drop("_active_tenancies")
        .rename({"household_token": "household_id"})
        .sort("household_id")
    )

    person = (
        people.join(
            residents.select("person_id", "household_token", "is_communal"),
            on="person_id",
            how="left",
        )
        .join(
            areas.select("household_token", "lsoa", "msoa", "ward", "imd_decile"),
            on="household_token",
            how="left",
        )
        .join(person_flags, on="person_id", how="left")
        .with_columns(
            pl.when(pl.col("date_of_death") <= on)
            .then(age_on_expr("dob", on, at_death="date_of_death"))
            .otherwise(age_on_expr("dob", on))
            .alias("age"),
            (pl.col("date_of_death").is_not_null() & (pl.col("date_of_death") <= on)).alias(
                "died_before_reference_date"
            ),
            pl.col("date_of_death").dt.year().alias("death_year"),
            pl.col("is_communal").fill_null(False).alias("lives_in_communal_establishment"),
            *[pl.col("sources").list.contains(s).alias(f"in_{s}") for s in SOURCES],
        )
        .with_columns(age_band_expr("age").alias("age_band"))
        .rename({"household_token": "household_id"})
        .drop("dob", "date_of_death", "sources", "is_communal")
        .sort("person_id")
    )

    membership = memberships.rename({"household_token": "household_id"})
    events = (
        pl.concat(
            [
                hospital.select(
                    "person_id",
                    pl.lit("hospital_activity").alias("source"),
                    pl.col("activity_type").alias("event_type"),
                    pl.col("start_date").alias("event_date"),
                ),
                social_care.select(
                    "person_id",
                    pl.lit("adult_social_care").alias("source"),
                    (pl.lit("SOCIAL_CARE_") + pl.col("support_setting").fill_null("UNKNOWN")).alias(
                        "event_type"
                    ),
                    pl.col("start_date").alias("event_date"),
                ),
            ]
        )
        .join(
            residents.select("person_id", pl.col("household_token").alias("household_id")),
            on="person_id",
            how="left",
        )
        .sort("event_date", "person_id")
    )
    return AnalysisTables(
        person=person, household=household, membership=membership, service_events=events
    )


def _person_flags(
    people: pl.DataFrame,
    gp: pl.DataFrame,
    benefits: pl.DataFrame,
    housing: pl.DataFrame,
    care_in_period: pl.DataFrame,
    hospital: pl.DataFrame,
) -> pl.DataFrame:
    """Per-person conditions and service use."""
    flags = [c for c in LTC_FLAGS if c in gp.columns]
    ltc = gp.group_by("person_id").agg([pl.col(c).fill_null(False).any() for c in flags])
    ltc = ltc.with_columns(
        pl.any_horizontal(flags).alias("ltc_any") if flags else pl.lit(False).alias("ltc_any")
    )
    use = hospital.group_by("person_id").agg(
        (pl.col("activity_type") == "AE").sum().cast(pl.Int32).alias("ae_attendances"),
        (pl.col("activity_type") == "EMERGENCY_ADMISSION")
        .sum()
        .cast(pl.Int32)
        .alias("emergency_admissions"),
    )
    out = (
        people.select("person_id")
        .join(ltc, on="person_id", how="left")
        .join(use, on="person_id", how="left")
        .with_columns(
            pl.col("person_id")
            .is_in(benefits.get_column("person_id").implode())
            .alias("receives_benefits"),
            pl.col("person_id")
            .is_in(housing.get_column("person_id").implode())
            .alias("social_tenant"),
            pl.col("person_id")
            .is_in(care_in_period.get_column("person_id").implode())
            .alias("social_care_client"),
            pl.col("ae_attendances").fill_null(0),
            pl.col("emergency_admissions").fill_null(0),
        )
    )
    return out
