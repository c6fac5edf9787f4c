"""Signs of life: where each source places a person, when, and how often another agrees.

Every record that carries an address is evidence that its person lived there: an account that
lasts (a council tax liability, a tenancy, a benefit claim) for as long as it is open, because
it is billed, paid or assessed all that time; a list entry (a GP registration, a care package)
and a hospital attendance only on the day it was made, because lists keep people who have left
and hospitals copy old addresses. The residence rules (`households.residence`) read these signs;
the run summary, quality report and `uprnlink evaluate` report how often each source's address
on the reference date is confirmed by another source (`confirmation_on`), and the same shares,
learned from the data, rank sources where their claims conflict (`reliability_rank`).
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from uprnlink.sources import sources_with

OPEN_END = date(9999, 12, 31)
# Lasting accounts: evidence for every day they are open. Lists and visits: on their day only.
LASTING_SOURCES = tuple(s for s in sources_with("residence") if s not in sources_with("open_list"))
VISIT_SOURCES = sources_with("visits")
SIGN_COLUMNS = ("person_id", "household_token", "source_dataset", "seen_from", "seen_to")


def signs_of_life(records: pl.DataFrame) -> pl.DataFrame:
    """One sign per record with an address and a date: SIGN_COLUMNS (seen_to 9999-12-31 = open).

    A lasting account is a sign from its start to its end (open: still seen); any other record
    (a list entry, an attendance) is a sign on its start date only.
    """
    lasting = pl.col("source_dataset").is_in(list(LASTING_SOURCES))
    return records.filter(
        pl.col("household_token").is_not_null() & pl.col("start_date").is_not_null()
    ).select(
        "person_id",
        "household_token",
        "source_dataset",
        pl.col("start_date").alias("seen_from"),
        pl.when(lasting)
        .then(pl.col("end_date").fill_null(OPEN_END))
        .otherwise(pl.col("start_date"))
        .alias("seen_to"),
    )


def claims_on(records: pl.DataFrame, on: date, visit_days: int) -> pl.DataFrame:
    """Where each source places each person on a date: person_id, source_dataset,
    household_token (unique rows).

    A stay counts when it covers the date; an attendance when it fell in the `visit_days`
    before it (the address a visit gives stands that long, as in the residence rules).
    """
    visit = pl.col("source_dataset").is_in(list(VISIT_SOURCES))
    since = on - timedelta(days=visit_days)
    covers = (
        pl.when(visit)
        .then((pl.col("start_date") <= on) & (pl.col("start_date") > since))
        .otherwise((pl.col("start_date") <= on) & (pl.col("end_date").fill_null(OPEN_END) >= on))
    )
    return (
        records.filter(pl.col("household_token").is_not_null() & pl.col("start_date").is_not_null())
        .filter(covers)
        .select("person_id", "source_dataset", "household_token")
        .unique()
    )


def confirmation_on(records: pl.DataFrame, on: date, visit_days: int) -> pl.DataFrame:
    """Per source, how often its address on a date is confirmed by another source.

    Columns: source_dataset, people (placed by the source that day), confirmed (of those,
    placed at the same address by at least one other source that day), share (confirmed /
    people). Sorted by source name.
    """
    claims = claims_on(records, on, visit_days)
    others = claims.select("person_id", "household_token", pl.col("source_dataset").alias("_other"))
    confirmed = (
        claims.join(others, on=["person_id", "household_token"])
        .filter(pl.col("_other") != pl.col("source_dataset"))
        .select("person_id", "source_dataset")
        .unique()
        .with_columns(pl.lit(True).alias("_confirmed"))
    )
    return (
        claims.select("person_id", "source_dataset")
        .unique()
        .join(confirmed, on=["person_id", "source_dataset"], how="left")
        .group_by("source_dataset")
        .agg(
            pl.len().cast(pl.Int64).alias("people"),
            pl.col("_confirmed").fill_null(False).sum().cast(pl.Int64).alias("confirmed"),
        )
        .with_columns((pl.col("confirmed") / pl.col("people")).round(4).alias("share"))
        .sort("source_dataset")
    )


def reliability_rank(confirmation: pl.DataFrame, sources: tuple[str, ...]) -> dict[str, int]:
    """Sources ranked by how often their address is confirmed (0 = most reliable).

    Sources the confirmation frame does not hold (no claims that day) rank last, in the order
    given; ties keep the order given (the registry's order of authority).
    """
    share = dict(
        zip(
            confirmation.get_column("source_dataset").to_list(),
            confirmation.get_column("share").to_list(),
            strict=True,
        )
    )
    ordered = sorted(sources, key=lambda s: (-share.get(s, -1.0), sources.index(s)))
    return {s: i for i, s in enumerate(ordered)}
