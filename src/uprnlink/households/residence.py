"""Residence from evidence: when a stay ends, judged from the signs of life of every source.

A register says where someone was put, not that they are still there: GP lists keep people who
left without deregistering, an account is sometimes never closed. The rules here end a stay on
evidence (`households.evidence.signs_of_life`), the way the ONS admin-based population
estimates count a person at an address only with recent activity:

* moved: an open stay from a list (GP, social care) ends the day before a later lasting
  account (liability, tenancy, claim: `move_sources`) of the person's at another address
  begins, when nothing of the person's is seen at the stay's address after that;
* stale: an open list stay with no sign of life at its address (the person's own records, or
  a lasting account there of someone sharing their surname) for `stale_after_days` ends
  that many days after the last sign;
* alone: an adult known at an address only from lists and attendances is not living there
  when the council tax account there is billed to someone else with a single person discount
  (only when the run's discounts are borne out by the other accounts often enough:
  `sole_occupancy_share` >= `single_person_min_share`);
* died: a recorded death ends every stay (`timelines.build_memberships`).

Every rule gives a date that does not depend on the reference date, so the memberships, the
as-at tables and the summaries all follow one history. Where claims conflict on the same day,
sources are ranked by how often another source confirms their address on the reference date
(`evidence.reliability_rank`) when `learned_reliability` is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from uprnlink.households.evidence import LASTING_SOURCES, OPEN_END

ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class ResidenceRules:
    """The evidence rules' parameters, resolved from the run config's `[households]`."""

    visit_days: int = 730
    stale_after_days: int = 0  # 0: never stale
    move_sources: tuple[str, ...] = ()
    learned_reliability: bool = True
    single_person_discount: bool = True
    single_person_min_share: float = 0.85
    superseded_accounts: bool = True
    care_homes: bool = True


def last_seen(signs: pl.DataFrame, surnames: pl.DataFrame) -> pl.DataFrame:
    """Per (person_id, household_token): the last day the person was seen there (`_seen`).

    A sign is the person's own record there; a lasting account there held by someone sharing
    a surname with them; or a lasting account there that was open when the person was last
    seen there themselves (the household they were seen with is still billed).
    """
    one = ["person_id", "household_token"]
    own = signs.group_by(one).agg(pl.col("seen_to").max().alias("_own"))
    accounts = signs.filter(pl.col("source_dataset").is_in(list(LASTING_SOURCES))).select(
        pl.col("person_id").alias("_holder"), "household_token", "seen_from", "seen_to"
    )
    kin = (
        own.select(one)
        .join(surnames, on="person_id")
        .join(
            accounts.join(surnames.rename({"person_id": "_holder"}), on="_holder"),
            on=["household_token", "surname"],
        )
        .filter(pl.col("_holder") != pl.col("person_id"))
        .group_by(one)
        .agg(pl.col("seen_to").max().alias("_kin"))
    )
    household = (
        own.join(accounts, on="household_token")
        .filter(
            (pl.col("_holder") != pl.col("person_id"))
            & (pl.col("seen_from") <= pl.col("_own"))
            & (pl.col("seen_to") >= pl.col("_own"))
        )
        .group_by(one)
        .agg(pl.col("seen_to").max().alias("_household"))
    )
    return (
        own.join(kin, on=one, how="left")
        .join(household, on=one, how="left")
        .select(*one, pl.max_horizontal("_own", "_kin", "_household").alias("_seen"))
    )


def end_stale_stays(
    periods: pl.DataFrame,
    signs: pl.DataFrame,
    surnames: pl.DataFrame,
    list_prios: tuple[int, ...],
    stale_after_days: int,
) -> pl.DataFrame:
    """End an open list stay `stale_after_days` after the last sign of life at its address.

    Only open, non-fallback stays from list sources (`list_prios`) are judged; a stay whose
    address has no sign at all (moved there by a household rule) is judged by its relatives'
    accounts alone, and one with neither is left as it is.
    """
    one = ["person_id", "household_token"]
    seen = last_seen(signs, surnames)
    stale_at = (pl.col("_seen") + timedelta(days=stale_after_days)).alias("_stale")
    judged = (
        ~pl.col("fallback")
        & (pl.col("valid_to") == OPEN_END)
        & pl.col("prio").is_in(list(list_prios))
        & (pl.col("_seen") < OPEN_END - timedelta(days=stale_after_days))
    )
    return (
        periods.join(seen, on=one, how="left")
        .with_columns(stale_at)
        .with_columns(
            pl.when(judged & (pl.col("_stale") >= pl.col("valid_from")))
            .then(pl.col("_stale"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_seen", "_stale")
    )


def end_moved_stays(
    periods: pl.DataFrame,
    signs: pl.DataFrame,
    list_prios: tuple[int, ...],
    move_sources: tuple[str, ...],
) -> pl.DataFrame:
    """End an open list stay the day before a later account elsewhere begins.

    The account must be the person's own, from `move_sources`, at another address, begin
    after the stay began and after the last day the person was seen at the stay's address.
    """
    one = ["person_id", "household_token"]
    seen = signs.group_by(one).agg(pl.col("seen_to").max().alias("_seen"))
    moves = signs.filter(pl.col("source_dataset").is_in(list(move_sources))).select(
        "person_id", pl.col("household_token").alias("_to"), pl.col("seen_from").alias("_moved")
    )
    stays = periods.with_row_index("_i")
    ended = (
        stays.filter(
            ~pl.col("fallback")
            & (pl.col("valid_to") == OPEN_END)
            & pl.col("prio").is_in(list(list_prios))
        )
        .select("_i", *one, "valid_from")
        .join(seen, on=one, how="left")
        .join(moves, on="person_id")
        .filter(
            (pl.col("_to") != pl.col("household_token"))
            & (pl.col("_moved") > pl.col("valid_from"))
            & (pl.col("_moved") > pl.col("_seen").fill_null(pl.col("valid_from")))
        )
        .group_by("_i")
        .agg((pl.col("_moved").min() - ONE_DAY).alias("_end"))
    )
    return (
        stays.join(ended, on="_i", how="left")
        .with_columns(pl.coalesce("_end", "valid_to").alias("valid_to"))
        .drop("_i", "_end")
    )


def sole_occupancies(council_tax: pl.DataFrame) -> pl.DataFrame:
    """Open council tax accounts with a single person discount: person_id (the liable person),
    household_token, `_since` (the account's start). Empty when the fact is not supplied."""
    return council_tax.filter(
        pl.col("single_person_discount").fill_null(False)
        & pl.col("end_date").is_null()
        & pl.col("household_token").is_not_null()
    ).select("person_id", "household_token", pl.col("start_date").alias("_since"))


def sole_occupancy_share(sole: pl.DataFrame, signs: pl.DataFrame) -> float | None:
    """How often a single person discount is borne out: the share of discounted accounts at
    whose address nobody else holds an open lasting account (None: no discounted account).

    A discount recorded at random (or not maintained) is contradicted by the second liable
    adult of a couple; one kept up to date rarely is.
    """
    if sole.is_empty():
        return None
    holders = signs.filter(
        pl.col("source_dataset").is_in(list(LASTING_SOURCES)) & (pl.col("seen_to") == OPEN_END)
    ).select(pl.col("person_id").alias("_other"), "household_token")
    accounts = sole.select("person_id", "household_token").unique()
    contradicted = (
        accounts.join(holders, on="household_token")
        .filter(pl.col("_other") != pl.col("person_id"))
        .select("person_id", "household_token")
        .unique()
        .height
    )
    return 1.0 - contradicted / accounts.height


def end_stays_beside_sole_occupiers(
    periods: pl.DataFrame,
    signs: pl.DataFrame,
    sole: pl.DataFrame,
    adults: pl.DataFrame,
    list_prios: tuple[int, ...],
) -> pl.DataFrame:
    """End list and attendance stays of other adults at an address billed to one adult alone.

    A single person discount says the liable person is the only adult there. An adult
    (`adults`: person_id, `_adult_from`, the day they turned 18) whose own evidence at that
    address is only list entries and attendances is taken to have left: their stays there end
    on the latest of their last sign there, the discounted account's start and their 18th
    birthday. A lasting account of theirs there that is still open, or that began after the
    discounted one, is evidence against the discount: such a person is left alone.
    """
    one = ["person_id", "household_token"]
    lasting = pl.col("source_dataset").is_in(list(LASTING_SOURCES))
    own = signs.group_by(one).agg(
        pl.col("seen_to").max().alias("_seen"),
        (lasting & (pl.col("seen_to") == OPEN_END)).any().alias("_open"),
        pl.col("seen_from").filter(lasting).max().alias("_joined"),
    )
    ends = (
        sole.select(pl.col("person_id").alias("_liable"), "household_token", "_since")
        .join(periods.select(one).unique(), on="household_token")
        .filter(pl.col("person_id") != pl.col("_liable"))
        .join(adults, on="person_id")
        .join(own, on=one, how="left")
        .filter(
            ~pl.col("_open").fill_null(False)
            & ~(pl.col("_joined") >= pl.col("_since")).fill_null(False)
        )
        .group_by(one)
        .agg(pl.col("_seen").max(), pl.col("_since").min(), pl.col("_adult_from").first())
        .select(*one, pl.max_horizontal("_seen", "_since", "_adult_from").alias("_end"))
    )
    judged = pl.col("fallback") | pl.col("prio").is_in(list(list_prios))
    return (
        periods.join(ends, on=one, how="left")
        .with_columns(
            pl.when(judged & pl.col("_end").is_not_null() & (pl.col("valid_to") > pl.col("_end")))
            .then(pl.col("_end"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_end")
    )


#: The least share of council tax references naming two or more people for them to be read as
#: accounts (joint liable parties share one); demo 0.58, Westmere 0.47.
JOINT_MIN_SHARE = 0.05


def joint_share(accounts: pl.DataFrame) -> float:
    """The share of account references (`account_ref`) naming two or more people (0 when
    there are none)."""
    parties = accounts.group_by("account_ref").agg(pl.col("person_id").n_unique().alias("_n"))
    if parties.is_empty():
        return 0.0
    return parties.filter(pl.col("_n") > 1).height / parties.height


def superseded_accounts(council_tax: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """Council tax parties whose account at an address was followed there by another one:
    person_id, household_token, `_end` (the day before the first such account began).

    A property has one council tax account at a time, its liable parties sharing the account
    reference. A later account there under another reference, not naming the person, whose
    party another source also records at the address (a registration, a tenancy, a claim: a
    real new occupier, not a record with a wrong UPRN), says the person's liability there has
    ended, whether or not the council closed it. Empty without account references, and when
    fewer than JOINT_MIN_SHARE of the references name two or more people: the extract's
    reference then identifies a party, not an account (a joint party added later would look
    like a new account).
    """
    schema = pl.Schema(
        {
            "person_id": records.schema["person_id"],
            "household_token": records.schema["household_token"],
            "_end": pl.Date(),
        }
    )
    if "account_ref" not in council_tax.columns or council_tax.schema["account_ref"] == pl.Null:
        return pl.DataFrame(schema=schema)
    accounts = council_tax.filter(
        pl.col("household_token").is_not_null() & pl.col("account_ref").is_not_null()
    ).select("person_id", "household_token", "account_ref", "start_date", "end_date")
    if joint_share(accounts) < JOINT_MIN_SHARE:
        return pl.DataFrame(schema=schema)
    elsewhere = (
        records.filter(
            (pl.col("source_dataset") != "council_tax") & pl.col("household_token").is_not_null()
        )
        .select("person_id", "household_token")
        .unique()
    )
    newer = accounts.join(elsewhere, on=["person_id", "household_token"], how="semi").select(
        "household_token", pl.col("account_ref").alias("_ref"), pl.col("start_date").alias("_new")
    )
    named = accounts.select("person_id", "household_token", pl.col("account_ref").alias("_ref"))
    return (
        accounts.join(newer, on="household_token")
        .filter(
            (pl.col("_ref") != pl.col("account_ref"))
            & (pl.col("_new") > pl.col("start_date"))
            & (pl.col("end_date").is_null() | (pl.col("end_date") >= pl.col("_new")))
        )
        .join(named, on=["person_id", "household_token", "_ref"], how="anti")
        .group_by("person_id", "household_token")
        .agg((pl.col("_new").min() - ONE_DAY).alias("_end"))
        .cast(schema)
    )


def end_superseded_stays(
    periods: pl.DataFrame, records: pl.DataFrame, superseded: pl.DataFrame
) -> pl.DataFrame:
    """End a person's stays at an address whose account was superseded (`superseded_accounts`)
    on the day before the new account began, unless a record of theirs there begins after
    it (a later registration, attendance or account: they are still about)."""
    one = ["person_id", "household_token"]
    later = (
        records.filter(pl.col("household_token").is_not_null())
        .select(*one, "start_date")
        .join(superseded, on=one)
        .filter(pl.col("start_date") > pl.col("_end"))
        .select(one)
        .unique()
    )
    ends = superseded.join(later, on=one, how="anti")
    return (
        periods.join(ends, on=one, how="left")
        .with_columns(
            pl.when(
                pl.col("_end").is_not_null()
                & (pl.col("valid_from") <= pl.col("_end"))
                & (pl.col("valid_to") > pl.col("_end"))
            )
            .then(pl.col("_end"))
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_end")
    )


#: Adult social care settings that are a care home (SALT): the person lives there, not at the
#: private address the record may still carry.
CARE_HOME_SETTINGS = ("RESIDENTIAL", "NURSING")


def care_home_stays(social_care: pl.DataFrame) -> pl.DataFrame:
    """Residential and nursing care packages (`social_care`: adult social care facts joined to
    their records): person_id, `_from` (the start), `_to` (the end; OPEN_END while open). The
    address the record carries is not kept: the person is not there. Empty when the setting
    is not supplied."""
    schema = pl.Schema(
        {
            "person_id": social_care.schema["person_id"],
            "_from": pl.Date(),
            "_to": pl.Date(),
        }
    )
    if "support_setting" not in social_care.columns:
        return pl.DataFrame(schema=schema)
    return (
        social_care.filter(
            pl.col("support_setting").is_in(list(CARE_HOME_SETTINGS))
            & pl.col("start_date").is_not_null()
        )
        .select(
            "person_id",
            pl.col("start_date").alias("_from"),
            pl.col("end_date").fill_null(OPEN_END).alias("_to"),
        )
        .cast(schema)
    )


def end_stays_in_care(periods: pl.DataFrame, care: pl.DataFrame, care_prio: int) -> pl.DataFrame:
    """A person in a care home (`care_home_stays`, packages still open) does not live at a
    private address.

    A council's care record often keeps the home the person came from: while a residential or
    nursing package is open, a care record's claim at a private address (wherever the timeline
    rules put it) places nobody; the person's stays at private addresses that began before
    the package end the day before it began; and a hospital attendance at a private address
    does not place them there. A stay that begins after the package began (a tenancy, a
    registration: they came home) is kept, and so is the care home's own address. A package
    that has ended (respite, a stay in hospital) ends nothing.
    """
    private = ~pl.col("is_communal")
    open_ = care.filter(pl.col("_to") == OPEN_END).group_by("person_id").agg(pl.col("_from").min())
    stays = periods.join(open_, on="person_id", how="left")
    since = pl.col("_from").is_not_null() & (pl.col("valid_from") >= pl.col("_from"))
    dropped = private & since & (pl.col("fallback") | (pl.col("prio") == care_prio))
    ending = (
        private
        & ~pl.col("fallback")
        & (pl.col("valid_from") < pl.col("_from"))
        & (pl.col("valid_to") >= pl.col("_from"))
    )
    return (
        stays.filter(~dropped)
        .with_columns(
            pl.when(ending.fill_null(False))
            .then(pl.col("_from") - ONE_DAY)
            .otherwise(pl.col("valid_to"))
            .alias("valid_to")
        )
        .drop("_from")
    )
