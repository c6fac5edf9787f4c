"""Households: who lives at which pseudonymised UPRN, from when to when.

Each residence-bearing record is a claim that a person lived at an address over a period.
Claims are first made consistent with each other (`residence_periods`): registers that stay
open after people move (GP lists, the odd council tax liability) are closed by another
source's record of leaving, people known only from a GP or care list move with the
relatives they live with, the next-door UPRN (the commonest UPRN error) is corrected from the
person's other sources and household, and a record without a UPRN is placed from the
person's own records or their relatives in the same postcode. Per person the claims are then
resolved into a timeline without overlaps: on any day the person lives where the most recent
covering move-in says (at equal start dates the more authoritative source wins). A household
on a reference date is everyone whose timeline places them at the same household token that
day. Communal establishments (care homes, hostels) are flagged and are not counted as
households.

"Relatives" are people who share a recorded surname (current or previous): the extracts hold
no relationships. Every rule that relies on them acts only on positive evidence (a relative
recorded at the right place and time), so where surnames say little about households it
fires less often rather than wrongly more often.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from uprnlink.households.ages import age_on_expr
from uprnlink.households.composition import household_composition_frame
from uprnlink.households.evidence import signs_of_life
from uprnlink.households.residence import (
    ResidenceRules,
    end_moved_stays,
    end_stale_stays,
    end_stays_beside_sole_occupiers,
    sole_occupancies,
    sole_occupancy_share,
)
from uprnlink.sources import sources_with

# Each source's roles come from the source registry (uprnlink.sources).
# Sources whose dates describe residence at the recorded address, most authoritative first.
RESIDENCE_SOURCES = sources_with("residence")
# A hospital record's usual address is a claim about one day. It is used only to fill a gap:
# where no stay covers a day, the person lives at the address of their latest attendance in
# the year before it (not past a later recorded departure from that address).
FALLBACK_SOURCES = sources_with("visits")
FALLBACK_DAYS = timedelta(days=365)  # how long an attendance's address stands as evidence
NHS_SOURCES = sources_with("nhs")
# Sources whose end date means the person left the address (a benefit claim or a care package
# can end while the person stays put).
LEAVING_SOURCES = sources_with("confirms_departure")
# Sources whose open stay at an address keeps the person there against another's end date.
CONFIRMING_SOURCES = sources_with("confirms_presence")
# Sources whose stays are tied to the household's occupancy of the address (liable people).
OCCUPANCY_SOURCES = sources_with("occupancy")
# Open-ended lists that keep people after they move, without an end of their own.
LIST_SOURCES = sources_with("open_list")
# People who move together start their new stays within this many days of each other (and
# of leaving the old address).
MOVE_WINDOW = timedelta(days=31)
OPEN_END = date(9999, 12, 31)
# AddressBase parent shells (PP property shell, PS street record): a building or a street, not
# a dwelling.
PARENT_SHELL_PREFIX = "P"


def _prio(sources: tuple[str, ...]) -> tuple[int, ...]:
    """Priority codes (as in the periods' `prio` column) of some sources."""
    order = (*RESIDENCE_SOURCES, *FALLBACK_SOURCES)
    return tuple(order.index(s) for s in sources)


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


def residence_periods(records: pl.DataFrame, rules: ResidenceRules | None = None) -> pl.DataFrame:
    """Residence claims after the consistency rules: person, household token, from, to.

    Open ends are 9999-12-31. Each residence-bearing record is one claim (`residence_claims`);
    then, in order:

    1. a claim without a UPRN takes the address of the person's own latest record in the same
       postcode (`recover_own_addresses`);
    2. a person's claims at two addresses of one postcode go to the better-supported one
       (`resolve_neighbour_conflicts`);
    3. a claim at an address the person had already left for a liability or tenancy elsewhere
       is dropped (`drop_stale_addresses`);
    4. an open claim at an address another source records the person leaving is closed
       (`close_unconfirmed_stays`);
    5. an open GP or social care claim follows the relatives it lives with when they leave
       (`follow_household_moves`), or moves next door to them (`join_relatives_next_door`);
       a stay next door to the relatives who moved in with the person moves to them
       (`join_arrivals_next_door`);
    6. an open claim still without a UPRN, or a hospital attendance without one of someone
       no record places anywhere, joins the one household in its postcode where a relative
       lives, or the one of several whose relatives were recorded at the same block of flats
       (`impute_from_relatives`);
    7. with `rules`, an open list stay ends on evidence of a move or of nothing seen there
       for a long time (`households.residence`);
    8. a hospital attendance's address stands for `rules.visit_days` (FALLBACK_DAYS without
       rules) at most, and not past a later recorded departure from it (`limit_fallback`).

    The rules that read a source's facts (`households.tables.household_memberships`) end
    stays after these; a child's attendance then stands while the relatives it lived with
    stay (`children_stay_with_relatives`).

    The result has the columns of PERIOD_COLUMNS; `build_memberships` resolves it.
    """
    surnames = person_surnames(records)
    visit = FALLBACK_DAYS if rules is None else timedelta(days=rules.visit_days)
    claims = residence_claims(records, visit)
    # Attendances without a UPRN are only imputed (step 6), never given an address by 1-5.
    unaddressed = claims.filter(pl.col("fallback") & pl.col("household_token").is_null())
    claims = claims.filter(~pl.col("fallback") | pl.col("household_token").is_not_null())
    claims = recover_own_addresses(claims)
    claims = resolve_neighbour_conflicts(claims, surnames)
    placed = claims.filter(pl.col("household_token").is_not_null())
    placed = drop_stale_addresses(placed)
    placed = close_unconfirmed_stays(placed)
    placed = follow_household_moves(placed, surnames)
    placed = join_relatives_next_door(placed, surnames)
    placed = join_arrivals_next_door(placed, surnames)
    unplaced = pl.concat([claims.filter(pl.col("household_token").is_null()), unaddressed])
    placed = pl.concat(
        [placed, impute_from_relatives(unplaced, placed, surnames, parent_shells(records))],
        how="vertical_relaxed",
    )
    if rules is not None:
        placed = apply_evidence_rules(placed, records, surnames, rules)
    return (
        limit_fallback(placed)
        .filter(pl.col("valid_to") >= pl.col("valid_from"))
        .select(*PERIOD_COLUMNS)
        .sort("person_id", "valid_from", "prio", "household_token")
    )


PERIOD_COLUMNS = (
    "person_id",
    "household_token",
    "is_communal",
    "valid_from",
    "valid_to",
    "prio",
    "fallback",
)


def _optional(records: pl.DataFrame, column: str) -> pl.Expr:
    """A text column of the records, or nulls when the frame does not carry it."""
    return pl.col(column) if column in records.columns else pl.lit(None, pl.Utf8).alias(column)


def apply_evidence_rules(
    placed: pl.DataFrame, records: pl.DataFrame, surnames: pl.DataFrame, rules: ResidenceRules
) -> pl.DataFrame:
    """End open list stays on evidence (`households.residence`): moved, then stale."""
    signs = signs_of_life(records)
    lists = _prio(LIST_SOURCES)
    if rules.move_sources:
        placed = end_moved_stays(placed, signs, lists, rules.move_sources)
    if rules.stale_after_days:
        placed = end_stale_stays(placed, signs, surnames, lists, rules.stale_after_days)
    return placed


def end_beside_sole_occupiers(
    periods: pl.DataFrame,
    records: pl.DataFrame,
    council_tax: pl.DataFrame,
    people: pl.DataFrame,
    on: date,
    min_share: float,
) -> tuple[pl.DataFrame, float | None]:
    """Periods after the single-person-discount rule (`households.residence`), and the share of
    discounted accounts the other accounts bear out (None: no discount recorded). The rule
    applies only when that share is at least `min_share`; adults are people 18 or over on `on`."""
    signs = signs_of_life(records)
    sole = sole_occupancies(council_tax)
    share = sole_occupancy_share(sole, signs)
    if share is None or share < min_share:
        return periods, share
    adults = (
        people.filter(pl.col("dob").is_not_null())
        .select("person_id", pl.col("dob").dt.offset_by("18y").alias("_adult_from"))
        .filter(pl.col("_adult_from") <= on)
    )
    ended = end_stays_beside_sole_occupiers(periods, signs, sole, adults, _prio(LIST_SOURCES))
    return ended.filter(pl.col("valid_to") >= pl.col("valid_from")).select(periods.columns), share


def residence_claims(records: pl.DataFrame, visit_days: timedelta = FALLBACK_DAYS) -> pl.DataFrame:
    """One claim per residence-bearing record, with or without a household token.

    Columns: PERIOD_COLUMNS plus `postcode` (for claims without a UPRN). A hospital
    attendance claims its usual address from the attendance for FALLBACK_DAYS. A record at a
    parent shell's UPRN (the block a flat is in) claims its postcode only.
    """
    priority = {s: i for i, s in enumerate((*RESIDENCE_SOURCES, *FALLBACK_SOURCES))}
    fallback = pl.col("source_dataset").is_in(list(FALLBACK_SOURCES))
    if "property_class" in records.columns:
        # A block's UPRN (an AddressBase parent shell) on a flat's record names the building,
        # not the home: the claim keeps its postcode and is placed like one without a UPRN.
        shell = pl.col("property_class").fill_null("").str.starts_with(PARENT_SHELL_PREFIX)
        records = records.with_columns(
            pl.when(shell).then(None).otherwise(pl.col("household_token")).alias("household_token")
        )
    return (
        records.filter(
            pl.col("source_dataset").is_in([*RESIDENCE_SOURCES, *FALLBACK_SOURCES])
            & pl.col("start_date").is_not_null()
        )
        .select(
            "person_id",
            "household_token",
            pl.col("is_communal").fill_null(False),
            pl.col("start_date").alias("valid_from"),
            pl.when(fallback)
            .then(pl.col("start_date") + visit_days)
            .otherwise(pl.col("end_date").fill_null(OPEN_END))
            .alias("valid_to"),
            pl.col("source_dataset").replace_strict(priority, return_dtype=pl.Int8).alias("prio"),
            fallback.alias("fallback"),
            _optional(records, "postcode"),
        )
        .filter(pl.col("valid_to") >= pl.col("valid_from"))
    )


def person_surnames(records: pl.DataFrame) -> pl.DataFrame:
    """Every surname each person is recorded under (current and previous): person_id, surname."""
    if "surname" not in records.columns:
        return pl.DataFrame(schema={"person_id": records.schema["person_id"], "surname": pl.Utf8})
    return (
        records.filter(pl.col("surname").is_not_null() & (pl.col("surname") != ""))
        .select("person_id", "surname")
        .unique()
    )


def recover_own_addresses(claims: pl.DataFrame) -> pl.DataFrame:
    """Give a claim without a UPRN the address of the person's own records in its postcode.

    A GP or social care record often arrives with the postcode but no UPRN. When the same
    person has records with a UPRN in that postcode, the latest of them (by start date) is
    taken as the address; with no such record the claim stays without one.
    """
    own = (
        claims.filter(pl.col("household_token").is_not_null() & pl.col("postcode").is_not_null())
        .sort("valid_from", "household_token")
        .group_by("person_id", "postcode", maintain_order=True)
        .agg(
            pl.col("household_token").last().alias("_own_token"),
            pl.col("is_communal").last().alias("_own_communal"),
        )
    )
    return (
        claims.join(own, on=["person_id", "postcode"], how="left")
        .with_columns(
            pl.coalesce("household_token", "_own_token").alias("household_token"),
            pl.when(pl.col("household_token").is_null() & pl.col("_own_token").is_not_null())
            .then(pl.col("_own_communal"))
            .otherwise(pl.col("is_communal"))
            .alias("is_communal"),
        )
        .drop("_own_token", "_own_communal")
    )


def resolve_neighbour_conflicts(claims: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Put a person's claims at two addresses of one postcode at the better-supported one.

    The commonest UPRN error is the property next door, and a real move within one postcode
    is rare next to it. When one person's records place them at two or more addresses that
    share a postcode, the addresses are ranked by, in turn: how many of the person's sources
    give it (distinct sources, hospital attendances included); whether a relative (someone
    sharing a surname) is recorded there; how the other people recorded there fit
    (`household_fit`); the most authoritative source giving it. The claims at the others
    move to the first, unless the first two tie on all four.
    """
    one = ["person_id", "household_token"]
    with_token = claims.filter(pl.col("household_token").is_not_null())
    support = _neighbour_support(with_token)
    if support.is_empty():
        return claims
    candidates = support.select(one)
    ranked = (
        support.join(_related_at(with_token, surnames, candidates), on=one, how="left")
        .join(household_fit(with_token, surnames, candidates), on=one, how="left")
        .with_columns(
            (
                pl.col("_support") * 1000
                + pl.col("_related").fill_null(0) * 100
                + pl.col("_fit").cast(pl.Int32) * 10
                + (9 - pl.col("_authority"))
            ).alias("_score")
        )
        .sort(
            ["person_id", "_pc", "_score", "household_token"],
            descending=[False, False, True, False],
        )
        .with_columns(pl.col("_score").shift(-1).over("person_id", "_pc").alias("_next"))
    )
    best = (
        ranked.group_by("person_id", "_pc", maintain_order=True)
        .first()
        .filter(pl.col("_score") > pl.col("_next"))
        .select(
            "person_id",
            "_pc",
            pl.col("household_token").alias("_best"),
            pl.col("is_communal").alias("_best_communal"),
        )
    )
    moved = (
        ranked.select(*one, "_pc")
        .join(best, on=["person_id", "_pc"])
        .filter(pl.col("_best") != pl.col("household_token"))
        .drop("_pc")
    )
    return (
        claims.join(moved, on=one, how="left")
        .with_columns(
            pl.coalesce("_best", "household_token").alias("household_token"),
            pl.when(pl.col("_best").is_not_null())
            .then(pl.col("_best_communal"))
            .otherwise(pl.col("is_communal"))
            .alias("is_communal"),
        )
        .drop("_best", "_best_communal")
    )


def _neighbour_support(with_token: pl.DataFrame) -> pl.DataFrame:
    """Each person's addresses that share a postcode (an address's usual postcode) with
    another of theirs: person_id, household_token, the distinct sources giving it (`_support`),
    the most authoritative (`_authority`), is_communal and the postcode (`_pc`)."""
    usual_postcode = (
        with_token.filter(pl.col("postcode").is_not_null())
        .group_by("household_token", "postcode")
        .len()
        .sort("len", "postcode", descending=[True, False])
        .group_by("household_token", maintain_order=True)
        .first()
        .select("household_token", pl.col("postcode").alias("_pc"))
    )
    return (
        with_token.group_by("person_id", "household_token")
        .agg(
            pl.col("prio").n_unique().cast(pl.Int32).alias("_support"),
            pl.col("prio").min().cast(pl.Int32).alias("_authority"),
            pl.col("is_communal").first(),
        )
        .join(usual_postcode, on="household_token", how="inner")
        .filter(pl.len().over("person_id", "_pc") > 1)
    )


def _related_at(
    with_token: pl.DataFrame, surnames: pl.DataFrame, candidates: pl.DataFrame
) -> pl.DataFrame:
    """The candidates (person_id, household_token) where a relative (another person sharing
    a surname) is recorded, other than by a fallback claim: those rows with `_related` 1."""
    one = ["person_id", "household_token"]
    relatives = (
        with_token.filter(~pl.col("fallback"))
        .select(pl.col("person_id").alias("_relative"), "household_token")
        .unique()
        .join(surnames.rename({"person_id": "_relative"}), on="_relative")
    )
    return (
        candidates.join(surnames, on="person_id")
        .join(relatives, on=["household_token", "surname"])
        .filter(pl.col("_relative") != pl.col("person_id"))
        .select(*one, pl.lit(1, pl.Int32).alias("_related"))
        .unique()
    )


def household_fit(
    claims: pl.DataFrame, surnames: pl.DataFrame, subjects: pl.DataFrame
) -> pl.DataFrame:
    """How each subject's claimed address fits the other people recorded there.

    A dwelling holds one household, whose liable members usually arrive together. For each
    (person_id, household_token) in `subjects`: 2 when someone else's council tax liability
    or tenancy there began within MOVE_WINDOW of one of the person's own (they arrived
    together), 0 when someone who is neither a relative (same surname) nor a co-arrival held
    one there while the person's claims there were open, else 1. Columns: person_id,
    household_token, _fit.
    """
    one = ["person_id", "household_token"]
    stays = claims.filter(~pl.col("fallback") & pl.col("household_token").is_not_null())
    occupancy = stays.filter(pl.col("prio").is_in(list(_prio(OCCUPANCY_SOURCES))))
    occ = occupancy.select(
        pl.col("person_id").alias("_other"),
        "household_token",
        pl.col("valid_from").alias("_o_from"),
        pl.col("valid_to").alias("_o_to"),
    )
    move_ins = occupancy.select("person_id", pl.col("valid_from").alias("_in"))
    spans = (
        stays.join(subjects, on=one, how="semi")
        .group_by(one)
        .agg(pl.col("valid_from").min().alias("_from"), pl.col("valid_to").max().alias("_to"))
    )
    others = (
        spans.join(occ, on="household_token")
        .filter(
            (pl.col("_other") != pl.col("person_id"))
            & (pl.col("_o_from") <= pl.col("_to"))
            & (pl.col("_o_to") >= pl.col("_from"))
        )
        .select(*one, "_other", "_o_from")
    )
    together = (
        others.join(move_ins, on="person_id")
        .filter((pl.col("_o_from") - pl.col("_in")).dt.total_days().abs() <= MOVE_WINDOW.days)
        .select(*one, "_other")
        .unique()
    )
    kin = (
        others.join(surnames, on="person_id")
        .join(surnames.rename({"person_id": "_other"}), on=["_other", "surname"])
        .select(*one, "_other")
        .unique()
    )
    foreign = (
        others.select(*one, "_other")
        .unique()
        .join(together, on=[*one, "_other"], how="anti")
        .join(kin, on=[*one, "_other"], how="anti")
        .select(*one)
        .unique()
        .with_columns(pl.lit(0, pl.Int8).alias("_f"))
    )
    arrived = together.select(*one).unique().with_columns(pl.lit(2, pl.Int8).alias("_t"))
    return (
        subjects.join(arrived, on=one, how="left")
        .join(foreign, on=one, how="left")
        .select(*one, pl.coalesce("_t", "_f", pl.lit(1, pl.Int8)).alias("_fit"))
    )


def drop_stale_addresses(periods: pl.DataFrame) -> pl.DataFrame:
    """Drop a claim at an address the person had left before it began.

    Benefit, care and GP systems sometimes carry the previous address into a new record.
    A claim from a source other than council tax or tenancies (hospital attendances included)
    is dropped when it begins after the person's council tax liability or tenancy at that
    address had ended, while a liability or tenancy at another address covers its first day.
    """
    one = ["person_id", "household_token"]
    occupancy = periods.filter(
        ~pl.col("fallback") & pl.col("prio").is_in(list(_prio(OCCUPANCY_SOURCES)))
    )
    left_at = occupancy.group_by(one).agg(pl.col("valid_to").max().alias("_left"))
    elsewhere = occupancy.select(
        "person_id",
        pl.col("household_token").alias("_other"),
        pl.col("valid_from").alias("_o_from"),
        pl.col("valid_to").alias("_o_to"),
    )
    claims = periods.with_row_index("_i")
    stale = (
        claims.filter(~pl.col("prio").is_in(list(_prio(OCCUPANCY_SOURCES))))
        .join(left_at, on=one)
        .filter(pl.col("valid_from") > pl.col("_left"))
        .join(elsewhere, on="person_id")
        .filter(
            (pl.col("_other") != pl.col("household_token"))
            & (pl.col("_o_from") <= pl.col("valid_from"))
            & (pl.col("_o_to") >= pl.col("valid_from"))
        )
        .select("_i")
        .unique()
    )
    return claims.join(stale, on="_i", how="anti").drop("_i")


def close_unconfirmed_stays(periods: pl.DataFrame) -> pl.DataFrame:
    """End an open stay at an address another source records the person leaving.

    Registers stay open after people move: GP lists keep leavers until someone deregisters
    them, a council tax liability is sometimes never closed. When a source whose end date
    means leaving the address (LEAVING_SOURCES: a council tax liability, a tenancy, a GP
    registration) shows the person's stay at an address ending, and no other source
    (CONFIRMING_SOURCES) still has the person there, an open claim at that address from any
    other source that began by then is closed on the same day. Benefit claims and care
    packages end for reasons other than moving, so their end dates close nothing; and a
    council tax liability and a tenancy do not close each other (a tenancy ends and restarts
    on a change of tenancy type, a liability on a change of account, while the household
    stays).
    """
    one = ["person_id", "household_token"]
    by_source = (
        periods.filter(~pl.col("fallback"))
        .group_by(*one, "prio")
        .agg(pl.col("valid_to").max().alias("_end"))
    )
    is_open = pl.col("_end") == OPEN_END

    def occupancy(column: str) -> pl.Expr:
        return pl.col(column).is_in(list(_prio(OCCUPANCY_SOURCES)))

    ended = by_source.filter(pl.col("prio").is_in(list(_prio(LEAVING_SOURCES))) & ~is_open).select(
        *one, pl.col("prio").alias("_by"), "_end"
    )
    confirming = by_source.filter(
        pl.col("prio").is_in(list(_prio(CONFIRMING_SOURCES))) & is_open
    ).select(*one, pl.col("prio").alias("_by"))
    # Per open claim's source there: the latest end another leaving source recorded there,
    # and how many other confirming sources still have the person there.
    against = (
        by_source.filter(is_open)
        .select(*one, "prio")
        .join(ended, on=one)
        .filter((pl.col("_by") != pl.col("prio")) & ~(occupancy("_by") & occupancy("prio")))
        .group_by(*one, "prio")
        .agg(pl.col("_end").max())
    )
    support = (
        by_source.filter(is_open)
        .select(*one, "prio")
        .join(confirming, on=one)
        .filter(pl.col("_by") != pl.col("prio"))
        .group_by(*one, "prio")
        .agg(pl.len().alias("_confirmed"))
    )
    return (
        periods.join(against, on=[*one, "prio"], how="left")
        .join(support, on=[*one, "prio"], how="left")
        .with_columns(
            pl.when(
                ~pl.col("fallback")
                & (pl.col("valid_to") == OPEN_END)
                & pl.col("_end").is_not_null()
                & pl.col("_confirmed").is_null()
                & (pl.col("valid_from") <= pl.col("_end"))
            )
            .then(pl.col("_end"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_end", "_confirmed")
    )


def follow_household_moves(periods: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Move an open GP or social care stay with the household it belongs to.

    Children and other people who hold no liability or tenancy are known at an address only
    from open-ended lists (GP, social care), which keep them there after the household moves
    away. Such a person's household is taken to be the people with a council tax liability or
    tenancy at the same address who share a surname with them (the anchors). When every
    anchor's stay there has ended, nobody else whose stay began by then stayed on, and the
    person's own claim began by then, their open claim ends when the last anchor left (a
    later hospital attendance from the address does not stop this: hospitals copy stale
    addresses too). If the anchors moved together to one other (non-communal) address,
    starting within MOVE_WINDOW of leaving, the person moves with them for as long as the
    anchors stay there.
    """
    one = ["person_id", "household_token"]
    stays = periods.filter(~pl.col("fallback"))
    occ = stays.filter(pl.col("prio").is_in(list(_prio(OCCUPANCY_SOURCES))))
    lists = pl.col("prio").is_in(list(_prio(LIST_SOURCES))) & (pl.col("valid_to") == OPEN_END)
    left = _left_behind(stays.filter(lists), occ, surnames)
    moves = _moves_with_anchors(left, occ)
    closed = (
        periods.join(left.select(*one, "_left"), on=one, how="left")
        .with_columns(
            pl.when(lists & ~pl.col("fallback") & (pl.col("valid_from") <= pl.col("_left")))
            .then(pl.col("_left"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_left")
    )
    return pl.concat([closed, moves.select(closed.columns)], how="vertical_relaxed")


def _left_behind(
    open_lists: pl.DataFrame, occ: pl.DataFrame, surnames: pl.DataFrame
) -> pl.DataFrame:
    """The open list stays (`open_lists`) of people without a liability or tenancy of their
    own there whose anchors (`occ` stays sharing their surname) have all left, with nobody
    else staying on: person_id, household_token, `_since`, `_prio`, `_left` (the day the last
    anchor left) and `_anchors`."""
    one = ["person_id", "household_token"]
    candidates = (
        open_lists.join(occ.select(one).unique(), on=one, how="anti")
        .group_by(one)
        .agg(pl.col("valid_from").min().alias("_since"), pl.col("prio").min().alias("_prio"))
    )
    anchor_stays = occ.join(surnames, on="person_id").select(
        pl.col("person_id").alias("_anchor"),
        "household_token",
        "surname",
        pl.col("valid_to").alias("_a_to"),
    )
    left = (
        candidates.join(surnames, on="person_id")
        .join(anchor_stays, on=["household_token", "surname"])
        .filter(pl.col("_anchor") != pl.col("person_id"))
        .group_by(one)
        .agg(
            pl.col("_since").first(),
            pl.col("_prio").first(),
            pl.col("_a_to").max().alias("_left"),
            pl.col("_anchor").unique().alias("_anchors"),
        )
        .filter((pl.col("_left") < OPEN_END) & (pl.col("_since") <= pl.col("_left")))
    )
    stayed_on = (
        left.select(*one, "_left")
        .join(
            occ.select(
                pl.col("person_id").alias("_other"),
                "household_token",
                pl.col("valid_from").alias("_o_from"),
                pl.col("valid_to").alias("_o_to"),
            ),
            on="household_token",
        )
        .filter(
            (pl.col("_other") != pl.col("person_id"))
            & (pl.col("_o_from") <= pl.col("_left"))
            & (pl.col("_o_to") > pl.col("_left"))
        )
        .select(one)
    )
    return left.join(stayed_on, on=one, how="anti")


def _moves_with_anchors(left: pl.DataFrame, occ: pl.DataFrame) -> pl.DataFrame:
    """A new stay, as periods, for each person `left` behind whose anchors all went to one
    other non-communal address: a liability or tenancy of theirs starting within MOVE_WINDOW
    of leaving, for as long as the anchors stay there."""
    near = (pl.col("_d_from") - pl.col("_left")).dt.total_days().abs() <= MOVE_WINDOW.days
    return (
        left.explode("_anchors")
        .join(
            occ.select(
                pl.col("person_id").alias("_anchors"),
                pl.col("household_token").alias("_dest"),
                pl.col("is_communal").alias("_d_communal"),
                pl.col("valid_from").alias("_d_from"),
                pl.col("valid_to").alias("_d_to"),
            ),
            on="_anchors",
        )
        .filter((pl.col("_dest") != pl.col("household_token")) & near)
        .group_by("person_id", "household_token")
        .agg(
            pl.col("_dest").n_unique().alias("_n"),
            pl.col("_dest").first(),
            pl.col("_d_communal").any().alias("_d_communal"),
            pl.col("_d_from").min(),
            pl.col("_d_to").max(),
            pl.col("_prio").first(),
        )
        .filter((pl.col("_n") == 1) & ~pl.col("_d_communal"))
        .select(
            "person_id",
            pl.col("_dest").alias("household_token"),
            pl.lit(False).alias("is_communal"),
            pl.col("_d_from").alias("valid_from"),
            pl.col("_d_to").alias("valid_to"),
            pl.col("_prio").alias("prio"),
            pl.lit(False).alias("fallback"),
            pl.lit(None, pl.Utf8).alias("postcode"),
        )
    )


def _relatives_at(stays: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """(person_id, household_token) where someone else sharing a surname has a stay."""
    one = ["person_id", "household_token"]
    present = stays.select(one).unique().join(surnames, on="person_id")
    return (
        present.join(
            present.select(pl.col("person_id").alias("_relative"), "household_token", "surname"),
            on=["household_token", "surname"],
        )
        .filter(pl.col("_relative") != pl.col("person_id"))
        .select(one)
        .unique()
    )


def _open_stays_by_surname(periods: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Open, non-fallback stays with a postcode, keyed for a postcode + surname join: who
    (`_relative`) lives where (`_token`, `_communal`) under which surname."""
    return (
        periods.filter(
            ~pl.col("fallback")
            & (pl.col("valid_to") == OPEN_END)
            & pl.col("postcode").is_not_null()
        )
        .join(surnames, on="person_id")
        .select(
            pl.col("person_id").alias("_relative"),
            pl.col("household_token").alias("_token"),
            pl.col("is_communal").alias("_communal"),
            "postcode",
            "surname",
        )
    )


def join_relatives_next_door(periods: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Move a list-only claim next door when the person's relatives all live there.

    A GP or social care record with the neighbouring property's UPRN is the only evidence for
    many children. When a person's open list claim at an address is backed by none of their
    other sources and no relative (same surname) has a stay there, while relatives have open
    stays at exactly one other address with the claim's postcode, the claim is moved there.
    """
    one = ["person_id", "household_token"]
    stays = periods.filter(~pl.col("fallback"))
    open_list = (
        pl.col("prio").is_in(list(_prio(LIST_SOURCES)))
        & (pl.col("valid_to") == OPEN_END)
        & pl.col("postcode").is_not_null()
    )
    backed = stays.filter(~pl.col("prio").is_in(list(_prio(LIST_SOURCES)))).select(one).unique()
    relatives_there = _relatives_at(stays, surnames)
    claims = (
        stays.filter(open_list)
        .select(*one, "postcode")
        .unique()
        .join(backed, on=one, how="anti")
        .join(relatives_there, on=one, how="anti")
    )
    relatives = _open_stays_by_surname(stays, surnames)
    moves = (
        claims.join(surnames, on="person_id")
        .join(relatives, on=["postcode", "surname"])
        .filter(
            (pl.col("_relative") != pl.col("person_id"))
            & (pl.col("_token") != pl.col("household_token"))
        )
        .group_by(*one, "postcode")
        .agg(
            pl.col("_token").n_unique().alias("_n"),
            pl.col("_token").first(),
            pl.col("_communal").any(),
        )
        .filter((pl.col("_n") == 1) & ~pl.col("_communal"))
        .select(*one, "postcode", "_token")
    )
    return (
        periods.join(moves, on=[*one, "postcode"], how="left")
        .with_columns(
            pl.when(open_list & ~pl.col("fallback") & pl.col("_token").is_not_null())
            .then(pl.col("_token"))
            .otherwise(pl.col("household_token"))
            .alias("household_token")
        )
        .drop("_token")
    )


def join_arrivals_next_door(periods: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Move a stay next door when the relatives who arrived with the person live there.

    A council tax, tenancy or benefit record with the neighbouring property's UPRN puts one
    member of a household next door to the rest, among strangers. When the stay's address
    holds nobody sharing the person's surname, nobody who moved in with them, and someone
    else (`household_fit` 0: the neighbours), while relatives whose liability or tenancy
    began within MOVE_WINDOW of the stay's start hold exactly one other address with the
    stay's postcode, the stay is moved there.
    """
    one = ["person_id", "household_token"]
    near = (pl.col("_o_from") - pl.col("valid_from")).dt.total_days().abs() <= MOVE_WINDOW.days
    indexed = periods.with_row_index("_i")
    stays = indexed.filter(~pl.col("fallback"))
    occ = stays.filter(pl.col("prio").is_in(list(_prio(OCCUPANCY_SOURCES)))).select(
        pl.col("person_id").alias("_other"),
        pl.col("household_token").alias("_token"),
        pl.col("is_communal").alias("_communal"),
        pl.col("valid_from").alias("_o_from"),
        "postcode",
    )
    claims = stays.filter(
        ~pl.col("prio").is_in(list(_prio(LIST_SOURCES))) & pl.col("postcode").is_not_null()
    ).join(_relatives_at(stays, surnames), on=one, how="anti")
    misfits = household_fit(stays, surnames, claims.select(one).unique()).filter(
        pl.col("_fit") == 0
    )
    moves = (
        claims.join(misfits, on=one, how="semi")
        .select("_i", *one, "valid_from", "postcode")
        .join(surnames, on="person_id")
        .join(
            occ.join(surnames.rename({"person_id": "_other"}), on="_other"),
            on=["postcode", "surname"],
        )
        .filter(
            (pl.col("_other") != pl.col("person_id"))
            & (pl.col("_token") != pl.col("household_token"))
            & near
        )
        .group_by("_i")
        .agg(
            pl.col("_token").n_unique().alias("_n"),
            pl.col("_token").first(),
            pl.col("_communal").any(),
        )
        .filter((pl.col("_n") == 1) & ~pl.col("_communal"))
        .select("_i", "_token")
    )
    return (
        indexed.join(moves, on="_i", how="left")
        .with_columns(pl.coalesce("_token", "household_token").alias("household_token"))
        .drop("_i", "_token")
    )


def impute_from_relatives(
    unplaced: pl.DataFrame,
    placed: pl.DataFrame,
    surnames: pl.DataFrame,
    shells: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Place a claim without a UPRN in the one household of its postcode with a relative.

    The claims imputed are open ones (a GP registration, say) of a person with no open stay
    anywhere else, and hospital attendances of a person no record places anywhere (an
    attendance keeps its own period). When exactly one address in the claim's postcode has
    someone with an open stay who shares a surname with the person, the claim is taken to be
    at that address. When several have, and the person's records name a block of flats
    (`shells`: person_id, `_shell`, the parent shell's token), the one address whose relatives
    were recorded at the same block is taken. Communal establishments are never imputed.
    Returns the imputed claims only.
    """
    open_stay = ~pl.col("fallback") & (pl.col("valid_to") == OPEN_END)
    housed = placed.filter(open_stay).select("person_id").unique()
    addressed = placed.select("person_id").unique()
    claims = (
        pl.concat(
            [
                unplaced.filter(open_stay).join(housed, on="person_id", how="anti"),
                unplaced.filter("fallback").join(addressed, on="person_id", how="anti"),
            ]
        )
        .filter(pl.col("postcode").is_not_null())
        .with_row_index("_claim")
    )
    candidates = (
        claims.join(surnames, on="person_id")
        .join(_open_stays_by_surname(placed, surnames), on=["postcode", "surname"])
        .filter(pl.col("_relative") != pl.col("person_id"))
        .select("_claim", "person_id", "_relative", "_token", "_communal")
    )
    found = _one_address(candidates)
    if shells is not None and not shells.is_empty():
        same_block = candidates.join(shells, on="person_id").join(
            shells.rename({"person_id": "_relative"}), on=["_relative", "_shell"]
        )
        found = pl.concat([found, _one_address(same_block.join(found, on="_claim", how="anti"))])
    return (
        claims.join(found, on="_claim")
        .with_columns(pl.col("_token").alias("household_token"), pl.lit(False).alias("is_communal"))
        .select(claims.drop("_claim").columns)
    )


def _one_address(candidates: pl.DataFrame) -> pl.DataFrame:
    """The claims (`_claim`) whose candidate relatives all live at one private address:
    `_claim`, `_token`."""
    return (
        candidates.group_by("_claim")
        .agg(
            pl.col("_token").n_unique().alias("_n"),
            pl.col("_token").first(),
            pl.col("_communal").any(),
        )
        .filter((pl.col("_n") == 1) & ~pl.col("_communal"))
        .select("_claim", "_token")
    )


def parent_shells(records: pl.DataFrame) -> pl.DataFrame:
    """Who was recorded at a block of flats' own UPRN (an AddressBase parent shell): person_id,
    `_shell` (the block's household token)."""
    if "property_class" not in records.columns:
        return pl.DataFrame(schema={"person_id": records.schema["person_id"], "_shell": pl.Utf8})
    shell = pl.col("property_class").fill_null("").str.starts_with(PARENT_SHELL_PREFIX)
    return (
        records.filter(shell & pl.col("household_token").is_not_null())
        .select("person_id", pl.col("household_token").alias("_shell"))
        .unique()
    )


def children_stay_with_relatives(
    periods: pl.DataFrame, people: pl.DataFrame, surnames: pl.DataFrame
) -> pl.DataFrame:
    """Let a child's hospital attendance stand while the relatives they lived with stay.

    An attendance's address stands for a while only (`visit_days`), since adults move on
    unrecorded; a child (under 18 on the day, by `people`' dates of birth) does not leave home
    alone. When someone sharing the child's surname had a stay (not from an attendance) at
    that address covering the attendance, the attendance stands until the last such stay
    ends. Run it after every rule that ends stays, so it follows the relatives' final ones,
    and then `limit_fallback`.
    """
    attendances = periods.filter(pl.col("fallback")).with_row_index("_i")
    stays = (
        periods.filter(~pl.col("fallback"))
        .join(surnames, on="person_id")
        .select(
            pl.col("person_id").alias("_relative"),
            "household_token",
            "surname",
            pl.col("valid_from").alias("_from"),
            pl.col("valid_to").alias("_to"),
        )
    )
    adult_from = people.filter(pl.col("dob").is_not_null()).select(
        "person_id", pl.col("dob").cast(pl.Date).dt.offset_by("18y").alias("_adult_from")
    )
    until = (
        attendances.select("_i", "person_id", "household_token", "valid_from", "valid_to")
        .join(adult_from, on="person_id")
        .filter(pl.col("valid_from") < pl.col("_adult_from"))
        .join(surnames, on="person_id")
        .join(stays, on=["household_token", "surname"])
        .filter(
            (pl.col("_relative") != pl.col("person_id"))
            & (pl.col("_from") <= pl.col("valid_from"))
            & (pl.col("_to") > pl.col("valid_to"))
        )
        .group_by("_i")
        .agg(pl.col("_to").max())
    )
    extended = (
        attendances.join(until, on="_i", how="left")
        .with_columns(pl.max_horizontal("valid_to", "_to").alias("valid_to"))
        .drop("_i", "_to")
    )
    return pl.concat([periods.filter(~pl.col("fallback")), extended], how="vertical_relaxed")


def limit_fallback(periods: pl.DataFrame) -> pl.DataFrame:
    """End a hospital attendance's claim at a later recorded departure from the same address.

    An attendance says where the person lived that day. A council tax liability, tenancy or
    GP registration at that address ending after the attendance is later evidence: the
    attendance's address does not outlast it.
    """
    one = ["person_id", "household_token"]
    departures = periods.filter(
        ~pl.col("fallback")
        & pl.col("prio").is_in(list(_prio(LEAVING_SOURCES)))
        & (pl.col("valid_to") < OPEN_END)
    ).select(*one, pl.col("valid_to").alias("_departed"))
    attendances = periods.filter(pl.col("fallback")).with_row_index("_i")
    cut = (
        attendances.select("_i", *one, "valid_from")
        .join(departures, on=one)
        .filter(pl.col("_departed") >= pl.col("valid_from"))
        .group_by("_i")
        .agg(pl.col("_departed").min())
    )
    limited = (
        attendances.join(cut, on="_i", how="left")
        .with_columns(
            pl.min_horizontal("valid_to", pl.col("_departed").fill_null(OPEN_END)).alias("valid_to")
        )
        .drop("_i", "_departed")
    )
    return pl.concat([periods.filter(~pl.col("fallback")), limited], how="vertical_relaxed")


def build_memberships(
    periods: pl.DataFrame, people: pl.DataFrame, rank: dict[int, int] | None = None
) -> pl.DataFrame:
    """A non-overlapping residence timeline per person, merged into membership spells.

    The person's days are cut at every period start and end. On each piece the address is the
    one from the covering period that started last (the most recent move-in), ties going to the
    source ranked first in `rank` (priority code -> rank: learned reliability, see
    `households.evidence`) or else to the more authoritative source; a piece no period covers
    is a gap. Death ends the timeline.
    """
    order = pl.col("prio").cast(pl.Int32)
    if rank:
        order = pl.col("prio").replace_strict(rank, default=len(rank), return_dtype=pl.Int32)
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
    pieces = (
        _day_cuts(periods)
        .join(periods, on="person_id", how="inner")
        .filter((pl.col("valid_from") <= pl.col("start")) & (pl.col("valid_to") >= pl.col("start")))
        .with_columns(order.alias("_rank"))
        .sort(
            ["person_id", "start", "fallback", "valid_from", "_rank", "prio"],
            descending=[False, False, False, True, False, False],
        )
        .group_by("person_id", "start", maintain_order=True)
        .first()
        .select("person_id", "start", "end", "household_token", "is_communal")
    )
    return _merge_spells(pieces)


def _day_cuts(periods: pl.DataFrame) -> pl.DataFrame:
    """Each person's days cut at every period start and end: person_id, start, end (the
    day before the next piece starts; OPEN_END for the last)."""
    one_day = timedelta(days=1)
    return (
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
            # Sorted by person and start: the next row's start, when it is the same person's.
            # (Plain shifts with a same-person test: a window `.over("person_id")` costs
            # minutes at millions of people.)
            pl.when(pl.col("person_id") == pl.col("person_id").shift(-1))
            .then(pl.col("start").shift(-1) - one_day)
            .otherwise(pl.lit(OPEN_END))
            .alias("end")
        )
    )


def _merge_spells(pieces: pl.DataFrame) -> pl.DataFrame:
    """Consecutive pieces (person_id, start, end, household_token, is_communal; sorted by
    person and start) at the same address with no gap between them merged into membership
    spells (valid_to null while open)."""
    one_day = timedelta(days=1)
    # `pieces` is sorted by person and start; a new person always starts a new spell, so one
    # global running count numbers the spells.
    new_spell = (
        (pl.col("person_id") != pl.col("person_id").shift(1))
        | (pl.col("household_token") != pl.col("household_token").shift(1))
        | (pl.col("start") != (pl.col("end").shift(1) + one_day))
    ).fill_null(True)
    return (
        pieces.with_columns(new_spell.cum_sum().alias("_spell"))
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


def household_composition(residents: pl.DataFrame, people: pl.DataFrame, on: date) -> pl.DataFrame:
    """Size and make-up of every household (and communal establishment) on a date, by the
    rules in `uprnlink.households.composition` (the as-at macros render the same SQL)."""
    r = residents.join(people.select("person_id", "dob"), on="person_id", how="left").with_columns(
        age_on_expr("dob", on).alias("age")
    )
    comp = household_composition_frame(r, "household_token").drop("middle_age")
    communal = r.group_by("household_token").agg(pl.col("is_communal").first())
    return comp.join(communal, on="household_token", how="left").with_columns(
        pl.lit(on).alias("reference_date")
    )
