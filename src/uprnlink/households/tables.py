"""Assemble the de-identified analysis tables: person, household, membership, service events.

Inputs are trusted-zone frames (already pseudonymised) with person ids from linkage. Outputs
carry no names, no raw UPRN or NHS number and no exact date of birth: only person and
household ids, ages, areas and facts.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from uprnlink.households.ages import (
    FIVE_YEAR_BANDS,
    HOUSEHOLD_GROUPS,
    AgeBands,
    age_band_expr,
    age_on_expr,
)
from uprnlink.households.composition import GENERATION_GAP, derived_expr
from uprnlink.households.evidence import confirmation_on, reliability_rank, signs_of_life
from uprnlink.households.residence import (
    ResidenceRules,
    care_home_stays,
    end_stays_in_care,
    end_superseded_stays,
    joint_share,
    sole_occupancies,
    sole_occupancy_share,
    superseded_accounts,
)
from uprnlink.households.timelines import (
    FALLBACK_SOURCES,
    OPEN_END,
    RESIDENCE_SOURCES,
    build_memberships,
    children_stay_with_relatives,
    end_beside_sole_occupiers,
    household_composition,
    limit_fallback,
    person_attributes,
    person_surnames,
    residence_periods,
    residents_on,
)
from uprnlink.sources import PERSON_SOURCES, fact_types

#: The long-term condition flags: the GP registrations' `ltc_*` facts (source registry).
LTC_FLAGS = tuple(c for c in fact_types()["gp_registrations"] if c.startswith("ltc_"))
# Heuristics for what the extracts cannot say (no relationships between residents): see
# docs/data-dictionary.md, households.multigenerational / lone_parent / bedrooms_needed.
COUPLE_MAX_AGE_GAP = 15  # a man and a woman 18+ this close in age may be a couple
SOURCES = PERSON_SOURCES  # the source registry's (uprnlink.sources)


# The facts each source's analysis reads, with their types, from the source registry: a source
# that was not delivered (or not configured) contributes no rows but the same columns.
FACT_COLUMNS: dict[str, dict[str, type[pl.DataType]]] = {
    source: {c: getattr(pl, t) for c, t in facts.items()} for source, facts in fact_types().items()
}


@dataclass
class AnalysisTables:
    """The published tables, ready to write."""

    person: pl.DataFrame
    household: pl.DataFrame
    membership: pl.DataFrame
    service_events: pl.DataFrame
    household_area: pl.DataFrame


def _active_on(on: date) -> pl.Expr:
    return (pl.col("start_date") <= on) & (pl.col("end_date").fill_null(OPEN_END) >= on)


def _facts(records: pl.DataFrame, facts: dict[str, pl.DataFrame], source: str) -> pl.DataFrame:
    """A source's facts joined to its records (person, household token, dates)."""
    base = records.filter(pl.col("source_dataset") == source).select(
        "unique_id", "person_id", "household_token", "start_date", "end_date"
    )
    expected = FACT_COLUMNS.get(source, {})
    if source not in facts:
        return base.clear().with_columns(pl.lit(None, t).alias(c) for c, t in expected.items())
    joined = base.join(facts[source].drop("source_dataset"), on="unique_id", how="inner")
    # A fact column of no type (written before fields were typed when not supplied) or absent.
    return joined.with_columns(
        pl.lit(None, t).alias(c)
        if c not in joined.columns or joined.schema[c] == pl.Null
        else pl.col(c).cast(t)
        for c, t in expected.items()
    )


def residence_rank(
    records: pl.DataFrame,
    on: date,
    rules: ResidenceRules | None,
    confirmed: Mapping[str, float] | None = None,
) -> dict[int, int] | None:
    """Priority code -> rank by learned reliability (how often another source confirms each
    source's address on `on`: `confirmed`, source -> share, when the caller has it), or None
    when the rules do not ask for it."""
    if rules is None or not rules.learned_reliability:
        return None
    order = (*RESIDENCE_SOURCES, *FALLBACK_SOURCES)
    shares = (
        confirmation_on(records, on, rules.visit_days)
        if confirmed is None
        else pl.DataFrame(
            {"source_dataset": list(confirmed), "share": list(confirmed.values())},
            schema={"source_dataset": pl.Utf8, "share": pl.Float64},
        )
    )
    ranks = reliability_rank(shares, order)
    return {order.index(s): r for s, r in ranks.items()}


def single_person_share(records: pl.DataFrame, facts: dict[str, pl.DataFrame]) -> float | None:
    """How often the run's single person discounts are borne out by the other accounts
    (`households.residence.sole_occupancy_share`; None when no discount is recorded)."""
    sole = sole_occupancies(_facts(records, facts, "council_tax"))
    return sole_occupancy_share(sole, signs_of_life(records))


def residence_rule_counts(
    records: pl.DataFrame, facts: dict[str, pl.DataFrame], on: date, rules: ResidenceRules
) -> dict[str, float | int]:
    """What the rules that read a source's facts act on, for the run summary (counts only):
    council tax parties whose account a later one superseded (`superseded_accounts`, with the
    share of references joint parties share) and people with a residential or nursing package
    open on the reference date (`care_homes`). A rule switched off is left out."""
    out: dict[str, float | int] = {}
    if rules.superseded_accounts:
        council_tax = _facts(records, facts, "council_tax")
        if "account_ref" in council_tax.columns and council_tax.schema["account_ref"] != pl.Null:
            accounts = council_tax.filter(pl.col("account_ref").is_not_null())
            out["joint_reference_share"] = round(joint_share(accounts), 4)
        out["accounts_superseded"] = superseded_accounts(council_tax, records).height
    if rules.care_homes:
        care = care_home_stays(_facts(records, facts, "adult_social_care"))
        open_on = (pl.col("_from") <= on) & (pl.col("_to") >= on)
        out["in_care_homes"] = care.filter(open_on).get_column("person_id").n_unique()
    return out


def months_before(on: date, months: int) -> date:
    """The same day `months` months earlier (start of a look-back period, inclusive).

    A day past the end of the earlier month is clipped to its last day (31 May less 3 months
    is 28 or 29 February), as DuckDB's `date - INTERVAL n MONTH` does in the as-at macros.
    """
    y, m = divmod(on.year * 12 + on.month - 1 - months, 12)
    return date(y, m + 1, min(on.day, calendar.monthrange(y, m + 1)[1]))


@dataclass(frozen=True)
class ServiceFacts:
    """The sources' facts as the household tables read them on the reference date."""

    gp: pl.DataFrame  # every GP registration (conditions, deaths)
    housing: pl.DataFrame  # tenancies active on the date
    council_tax: pl.DataFrame  # liabilities active on the date
    benefits: pl.DataFrame  # awards active on the date
    social_care: pl.DataFrame  # every care service
    care_in_period: pl.DataFrame  # care services overlapping the service period
    hospital_all: pl.DataFrame  # all hospital activity
    hospital: pl.DataFrame  # hospital activity in the service period


def service_facts(
    records: pl.DataFrame, facts: dict[str, pl.DataFrame], on: date, period_start: date
) -> ServiceFacts:
    """Each source's facts, cut to the reference date or the service period ending on it."""
    social_care = _facts(records, facts, "adult_social_care")
    hospital_all = _facts(records, facts, "hospital_activity")
    return ServiceFacts(
        gp=_facts(records, facts, "gp_registrations"),
        housing=_facts(records, facts, "housing_tenancies").filter(_active_on(on)),
        council_tax=_facts(records, facts, "council_tax").filter(_active_on(on)),
        benefits=_facts(records, facts, "benefits_claims").filter(_active_on(on)),
        social_care=social_care,
        care_in_period=social_care.filter(
            (pl.col("start_date") <= on) & (pl.col("end_date").fill_null(OPEN_END) >= period_start)
        ),
        hospital_all=hospital_all,
        hospital=hospital_all.filter(
            (pl.col("start_date") >= period_start) & (pl.col("start_date") <= on)
        ),
    )


def build_analysis_tables(
    records: pl.DataFrame,
    facts: dict[str, pl.DataFrame],
    *,
    reference_date: date,
    service_period_months: int,
    age_bands: AgeBands = FIVE_YEAR_BANDS,
    death_end_precision: str = "month",
    rules: ResidenceRules | None = None,
    confirmed: Mapping[str, float] | None = None,
) -> AnalysisTables:
    """All published tables from linked trusted records (records carry `person_id`).

    `age_bands` are the person table's `age_band` (governance policy); spells ended by a
    death are published to `death_end_precision` (see `published_memberships`). `rules` are
    the residence evidence rules (`households.residence`); None keeps the timeline rules only.
    `confirmed` (source -> share of its addresses another source confirms on the reference
    date) saves computing them again when the caller has them.
    """
    on = reference_date
    records, ids = coded_ids(records)
    cut = service_facts(records, facts, on, months_before(on, service_period_months))
    people = person_attributes(records, cut.gp)
    areas = household_areas(records)
    memberships = household_memberships(records, facts, people, areas, on, rules, confirmed)
    residents = residents_on(memberships, on)
    alive = people.filter(pl.col("date_of_death").is_null() | (pl.col("date_of_death") > on))
    residents = residents.join(alive.select("person_id"), on="person_id", how="semi")

    person_flags = person_flags_table(people, cut)
    household = household_table(residents, people, areas, cut, person_flags, on)
    person = person_table(people, residents, areas, person_flags, on, age_bands)
    # Each spell carries its person's age on the reference date, so the as-at macros can age
    # the household on another date without joining every spell to its person.
    membership = (
        published_memberships(memberships, people, reference_date=on, precision=death_end_precision)
        .join(person.select("person_id", "age_on_reference_date"), on="person_id", how="left")
        .rename({"household_token": "household_id"})
    )
    household_area = areas.select(
        pl.col("household_token").alias("household_id"),
        "lsoa",
        "msoa",
        "ward",
        "imd_decile",
        "property_class",
        pl.col("is_communal").fill_null(False),
    ).sort("household_id")
    return AnalysisTables(
        person=decoded_ids(person, ids),
        household=decoded_ids(household, ids),
        membership=decoded_ids(membership, ids),
        service_events=decoded_ids(service_events(cut, residents), ids),
        household_area=decoded_ids(household_area, ids),
    )


#: The ids the household rules join, group and sort on most: coded while the rules run.
CODED_IDS = ("person_id", "household_token")
#: The published tables' id columns and the ids they hold.
_DECODE = {"person_id": "person_id", "household_id": "household_token"}


def coded_ids(records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """`records` with person ids and household tokens as UInt32 codes numbered in the ids' own
    sort order, so every join, group, sort and comparison gives what the strings give, on four
    bytes instead of 17 to 32 characters; and the sorted ids that decode them."""
    ids = {c: records.get_column(c).drop_nulls().unique().sort() for c in CODED_IDS}
    # Each id's code is its place among the sorted distinct ids, found by a hash join (a
    # dense rank sorted every row's id again: 2.1 against 1.1 s for 5M rows).
    coded = records.with_columns(
        records.select(c)
        .join(ids[c].to_frame().with_row_index("_code"), on=c, how="left", maintain_order="left")
        .get_column("_code")
        .cast(pl.UInt32)
        .alias(c)
        for c in CODED_IDS
    )
    return coded, ids


def decoded_ids(frame: pl.DataFrame, ids: dict[str, pl.Series]) -> pl.DataFrame:
    """A built table with its person and household id columns back as the ids (`coded_ids`)."""
    return frame.with_columns(
        ids[coded].gather(frame.get_column(column)).alias(column)
        for column, coded in _DECODE.items()
        if column in frame.columns
    )


def household_areas(records: pl.DataFrame) -> pl.DataFrame:
    """Areas of each household token, from the records at it (all share the same UPRN)."""
    return (
        records.filter(pl.col("household_token").is_not_null())
        .group_by("household_token")
        .agg(
            *(
                pl.col(c).drop_nulls().first()
                for c in ("oa", "lsoa", "msoa", "ward", "lad", "imd_decile", "property_class")
            ),
            pl.col("is_communal").drop_nulls().first(),
        )
    )


def household_memberships(
    records: pl.DataFrame,
    facts: dict[str, pl.DataFrame],
    people: pl.DataFrame,
    areas: pl.DataFrame,
    on: date,
    rules: ResidenceRules | None,
    confirmed: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """Each person's residence spells at household tokens (`households.timelines`).

    The timeline rules (`residence_periods`), then the rules that read a source's facts
    (single person discounts, superseded accounts, care homes), then children's attendances
    standing while their relatives stay (`children_stay_with_relatives`, on the relatives'
    final stays). Communal or not is a property of the address, whichever record put a person
    there (a spell moved next door by the timeline rules keeps its own record's flag
    otherwise).
    """
    periods = residence_periods(records, rules)
    if rules is not None:
        council_tax = _facts(records, facts, "council_tax")
        if rules.single_person_discount:
            periods, _ = end_beside_sole_occupiers(
                periods, records, council_tax, people, on, rules.single_person_min_share
            )
        if rules.superseded_accounts:
            superseded = superseded_accounts(council_tax, records)
            periods = end_superseded_stays(periods, records, superseded)
        if rules.care_homes:
            care = care_home_stays(_facts(records, facts, "adult_social_care"))
            care_prio = (*RESIDENCE_SOURCES, *FALLBACK_SOURCES).index("adult_social_care")
            periods = end_stays_in_care(periods, care, care_prio)
    periods = limit_fallback(
        children_stay_with_relatives(periods, people, person_surnames(records))
    )
    spells = build_memberships(periods, people, residence_rank(records, on, rules, confirmed))
    return (
        spells.drop("is_communal")
        .join(areas.select("household_token", "is_communal"), on="household_token", how="left")
        .with_columns(pl.col("is_communal").fill_null(False))
        .select(spells.columns)
    )


def household_table(
    residents: pl.DataFrame,
    people: pl.DataFrame,
    areas: pl.DataFrame,
    cut: ServiceFacts,
    person_flags: pl.DataFrame,
    on: date,
) -> pl.DataFrame:
    """One row per household token with residents on the reference date: composition, the
    bedroom standard, area, tenure, council tax and the residents' conditions and service use."""
    tenancy = cut.housing.group_by("household_token").agg(
        pl.col("tenure_type").drop_nulls().first().alias("tenancy_type"),
        pl.len().alias("_active_tenancies"),
        pl.col("bedrooms").drop_nulls().max().alias("bedrooms"),
    )
    ctax = cut.council_tax.group_by("household_token").agg(
        pl.col("band").drop_nulls().mode().sort().first().alias("council_tax_band"),
        pl.col("council_tax_reduction").any().alias("council_tax_reduction"),
        pl.col("single_person_discount").any().alias("single_person_discount"),
    )
    return (
        household_composition(residents, people, on)
        .join(household_profile(residents, people, on), on="household_token", how="left")
        .join(areas.drop("is_communal"), on="household_token", how="left")
        .join(tenancy, on="household_token", how="left")
        .join(ctax, on="household_token", how="left")
        .join(residents_service_use(residents, person_flags), on="household_token", how="left")
        .with_columns(
            pl.when(pl.col("_active_tenancies").fill_null(0) > 0)
            .then(pl.lit("social_rented"))
            .otherwise(pl.lit("owner_or_private_or_unknown"))
            .alias("tenure"),
        )
        .with_columns(
            (pl.col("bedrooms").cast(pl.Int32) - pl.col("bedrooms_needed")).alias(
                "occupancy_rating"
            ),
        )
        .with_columns(
            (pl.col("occupancy_rating") < 0).alias("overcrowded"),
            (pl.col("occupancy_rating") >= 2).alias("under_occupied"),
        )
        .drop("_active_tenancies")
        .rename({"household_token": "household_id"})
        .sort("household_id")
    )


def residents_service_use(residents: pl.DataFrame, person_flags: pl.DataFrame) -> pl.DataFrame:
    """Per household token: its residents' conditions, benefits, care and hospital use."""

    def count(expr: pl.Expr, name: str) -> pl.Expr:
        return expr.sum().cast(pl.Int32).alias(name)

    ae = pl.col("ae_attendances").fill_null(0)
    ea = pl.col("emergency_admissions").fill_null(0)
    benefits = pl.col("receives_benefits").fill_null(False)
    care = pl.col("social_care_client").fill_null(False)
    return (
        residents.join(person_flags, on="person_id", how="left")
        .group_by("household_token")
        .agg(
            count(pl.col("ltc_any").fill_null(False), "people_with_ltc"),
            benefits.any().alias("any_benefits"),
            care.any().alias("any_social_care"),
            count(ae, "ae_attendances"),
            count(ea, "emergency_admissions"),
            count(pl.col("ltc_count").fill_null(0) >= 2, "people_with_2plus_ltc"),
            pl.col("ltc_any").is_null().sum().cast(pl.Int32).alias("people_ltc_unknown"),
            count(benefits, "residents_receiving_benefits"),
            pl.col("housing_benefit").fill_null(False).any().alias("housing_benefit"),
            count(care, "residents_with_social_care"),
            count(ae > 0, "people_with_ae"),
            count(ea > 0, "people_with_emergency_admission"),
        )
    )


def person_table(
    people: pl.DataFrame,
    residents: pl.DataFrame,
    areas: pl.DataFrame,
    person_flags: pl.DataFrame,
    on: date,
    age_bands: AgeBands,
    sources: tuple[str, ...] = SOURCES,
) -> pl.DataFrame:
    """One row per linked person: household and area on the reference date, age band,
    conditions, service use and the sources they appear in (one `in_<source>` per source of
    the registry, `sources`)."""
    return (
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
            # Age on the reference date whether or not the person was alive then: the as-at
            # macros shift it to another date without publishing the date of birth.
            age_on_expr("dob", on).alias("age_on_reference_date"),
            (pl.col("date_of_death").is_not_null() & (pl.col("date_of_death") <= on)).alias(
                "died_before_reference_date"
            ),
            pl.col("date_of_death").dt.year().alias("death_year"),
            pl.col("is_communal").fill_null(False).alias("lives_in_communal_establishment"),
            *[pl.col("sources").list.contains(s).alias(f"in_{s}") for s in sources],
        )
        .with_columns(
            age_band_expr("age", age_bands).alias("age_band"),
            age_band_expr("age", HOUSEHOLD_GROUPS).alias("age_group"),
        )
        .rename({"household_token": "household_id"})
        .drop("dob", "date_of_death", "sources", "is_communal")
        .sort("person_id")
    )


def service_events(cut: ServiceFacts, residents: pl.DataFrame) -> pl.DataFrame:
    """Hospital activity and care services by person and date, with the household of each
    person on the reference date. All hospital activity (not only the service period), so the
    as-at macros can count a period ending on another date."""
    return (
        pl.concat(
            [
                cut.hospital_all.select(
                    "person_id",
                    pl.lit("hospital_activity").alias("source"),
                    pl.col("activity_type").alias("event_type"),
                    pl.col("start_date").alias("event_date"),
                ),
                cut.social_care.select(
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


def published_memberships(
    memberships: pl.DataFrame,
    people: pl.DataFrame,
    *,
    reference_date: date | None = None,
    precision: str = "month",
) -> pl.DataFrame:
    """Memberships as published: a spell ended by a death ends a period before it.

    The residence timeline ends on the date of death, which published as it is (or the day
    before) would give the date of death away. A spell that ends on the date of death is
    published as ending on the last day of the month (`precision`: or quarter, or year)
    before the death, or on the reference date when that falls between the two, so the
    person is counted on the reference date exactly as the reference-date tables count them
    (alive on it), and on every month end just as before: resident on the last month end
    before their death, not on the next. A spell left with no day is dropped.
    """
    unit = {"month": "1mo", "quarter": "1q", "year": "1y"}[precision]
    one_day = timedelta(days=1)
    death = pl.col("date_of_death")
    before = death.dt.truncate(unit) - one_day
    if reference_date is not None:
        on = pl.lit(reference_date)
        before = pl.when((on < death) & (on > before)).then(on).otherwise(before)
    return (
        memberships.join(people.select("person_id", "date_of_death"), on="person_id", how="left")
        .with_columns(
            pl.when(pl.col("valid_to").is_not_null() & (pl.col("valid_to") == death))
            .then(before)
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .filter(pl.col("valid_to").is_null() | (pl.col("valid_to") >= pl.col("valid_from")))
        .drop("date_of_death")
    )


def household_profile(residents: pl.DataFrame, people: pl.DataFrame, on: date) -> pl.DataFrame:
    """The bedroom standard (the other household measures: `uprnlink.households.composition`).

    The extracts record no relationships between residents, so this is a heuristic on ages
    and sex, documented in docs/data-dictionary.md:

    * couples (for the bedroom standard): men and women aged 18+, paired oldest with oldest,
      when their ages differ by at most COUPLE_MAX_AGE_GAP; a resident aged 18-24 who lives
      with someone GENERATION_GAP years older is taken to be a son or daughter, not a partner;
    * bedroom standard (English Housing Survey): a bedroom for each couple, each other person
      21+, each pair of 10-20 year olds of the same sex, each pair of children under 10; an
      unpaired 10-20 year old shares with an unpaired under-10 of the same sex if possible,
      else each gets a room. Residents of unknown age count as adults; 10-20 year olds of
      unknown sex get a room each.
    """
    hh = "household_token"
    a = pl.col("age")
    r = (
        residents.select(hh, "person_id")
        .join(people.select("person_id", "dob", "sex"), on="person_id", how="left")
        .with_columns(age_on_expr("dob", on).alias("age"))
    )
    pairs = likely_couples(r)
    coupled = pl.concat([pairs.get_column("_m"), pairs.get_column("_f")])
    couples = pairs.group_by(hh).agg(pl.len().cast(pl.Int32).alias("_couples"))

    single = ~pl.col("_coupled")
    teen = single & a.is_between(10, 20)
    kid = a < 10
    sex = pl.col("sex")
    counts = (
        r.with_columns(pl.col("person_id").is_in(coupled.implode()).alias("_coupled"))
        .group_by(hh)
        .agg(
            (single & (a.is_null() | (a >= 21))).sum().cast(pl.Int32).alias("_own"),
            (teen & sex.is_null()).sum().cast(pl.Int32).alias("_teen_u"),
            (teen & (sex == "M")).sum().cast(pl.Int32).alias("_teen_m"),
            (teen & (sex == "F")).sum().cast(pl.Int32).alias("_teen_f"),
            kid.sum().cast(pl.Int32).alias("_kid"),
            (kid & (sex == "M")).sum().cast(pl.Int32).alias("_kid_m"),
            (kid & (sex == "F")).sum().cast(pl.Int32).alias("_kid_f"),
        )
        .join(couples, on=hh, how="left")
        .with_columns(pl.col("_couples").fill_null(0))
    )
    return counts.select(hh, bedrooms_needed_expr().alias("bedrooms_needed"))


def likely_couples(residents: pl.DataFrame) -> pl.DataFrame:
    """Pairs of residents (`household_token`, `person_id`, `age`, `sex`) taken to be couples
    by `household_profile`'s rule: per household, the men's ids and ages (`_m`, `_m_age`) and
    the women's (`_f`, `_f_age`), paired oldest with oldest."""
    hh = "household_token"
    a = pl.col("age")
    elder = a.max().over(hh)
    candidates = (
        residents.filter(
            a.is_not_null()
            & (a >= 18)
            & pl.col("sex").is_in(["M", "F"])
            & ~((a <= 24) & (elder >= a + GENERATION_GAP))
        )
        .sort([hh, "sex", "age", "person_id"], descending=[False, False, True, False])
        .with_columns(pl.int_range(pl.len()).over([hh, "sex"]).alias("_rank"))
    )
    men = candidates.filter(pl.col("sex") == "M").select(
        hh, "_rank", pl.col("person_id").alias("_m"), pl.col("age").alias("_m_age")
    )
    women = candidates.filter(pl.col("sex") == "F").select(
        hh, "_rank", pl.col("person_id").alias("_f"), pl.col("age").alias("_f_age")
    )
    return men.join(women, on=[hh, "_rank"], how="inner").filter(
        (pl.col("_m_age") - pl.col("_f_age")).abs() <= COUPLE_MAX_AGE_GAP
    )


def bedrooms_needed_expr() -> pl.Expr:
    """Bedrooms by the standard, from `household_profile`'s per-household counts: couples,
    others 21+ (or of unknown age), 10-20 year olds by sex, children under 10, an odd
    10-20 year old sharing with an odd under-10 of the same sex."""
    c = pl.col
    odd_kid = c("_kid") % 2 == 1
    shares = odd_kid & (
        ((c("_teen_m") % 2 == 1) & (c("_kid_m") > 0))
        | ((c("_teen_f") % 2 == 1) & (c("_kid_f") > 0))
    )
    needed = (
        c("_couples")
        + c("_own")
        + c("_teen_u")
        + c("_teen_m") // 2
        + c("_teen_m") % 2
        + c("_teen_f") // 2
        + c("_teen_f") % 2
        + c("_kid") // 2
        + c("_kid") % 2
        - shares.cast(pl.Int32)
    )
    return needed.cast(pl.Int32)


def lone_parent_expr() -> pl.Expr:
    """One resident aged 18+, at least one aged 0-15, everyone else under 18, no age unknown."""
    return derived_expr("lone_parent")


def household_type_expr() -> pl.Expr:
    """One household type per household, first rule that applies (data dictionary)."""
    return derived_expr("household_type")


def person_flags_table(people: pl.DataFrame, cut: ServiceFacts) -> pl.DataFrame:
    """Per-person conditions and service use."""
    gp, benefits, housing = cut.gp, cut.benefits, cut.housing
    care_in_period, hospital = cut.care_in_period, cut.hospital
    flags = [c for c in LTC_FLAGS if c in gp.columns]
    ltc = gp.group_by("person_id").agg([pl.col(c).fill_null(False).any() for c in flags])
    ltc = ltc.with_columns(
        pl.any_horizontal(flags).alias("ltc_any") if flags else pl.lit(False).alias("ltc_any"),
        pl.sum_horizontal([pl.col(c).cast(pl.Int8) for c in flags]).cast(pl.Int8).alias("ltc_count")
        if flags
        else pl.lit(0, pl.Int8).alias("ltc_count"),
    )
    use = hospital.group_by("person_id").agg(
        (pl.col("activity_type") == "AE").sum().cast(pl.Int32).alias("ae_attendances"),
        (pl.col("activity_type") == "EMERGENCY_ADMISSION")
        .sum()
        .cast(pl.Int32)
        .alias("emergency_admissions"),
    )
    hb = (
        benefits.filter(pl.col("benefit_type").str.contains("HB"))
        if "benefit_type" in benefits.columns
        else benefits.clear()
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
            .is_in(hb.get_column("person_id").implode())
            .alias("housing_benefit"),
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
