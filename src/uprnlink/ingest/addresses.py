"""Addresses without a UPRN matched to the delivery's own address index.

A record whose system holds no UPRN (a GP registration keyed from a paper form, a care
record, a council tax account at a new build the gazetteer had not reached) usually still
holds the address as written and its postcode. The other records of the same delivery are an
address index: every address line and postcode written beside a UPRN. A record without one
takes the UPRN (its pseudonymised tokens and the areas that go with it) of the one address
in the delivery written the same way at the same postcode; where two addresses share that
text and postcode (the same text under two UPRNs: a block and its flat, a moved record) it
stays without one. The text is compared after upper-casing and reducing every run of other
characters than letters and digits to one space, so "Flat 2, 3 High St." and "FLAT 2 3 HIGH
ST" agree; "3 High Street" and "3 High St" do not (no abbreviation list: a missed match costs
what the record had before, a wrong one would put a person in another home).

This is what linkage teams do with AddressBase matching, with the delivery as the gazetteer:
nothing outside the trusted zone is read, and only addresses some record already placed at a
UPRN can be matched. Linkage and the household rules both see the matched records
(`trusted_records`), so a person is compared and housed on the same evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.trusted import read_trusted_records
from uprnlink.settings import RunSettings

#: What a matched record takes from the address it matched: the UPRN's tokens, its areas and
#: class, and whether the area came from a UPRN in the lookup.
UPRN_FIELDS = (
    "uprn_token",
    "household_token",
    "oa",
    "lsoa",
    "msoa",
    "ward",
    "lad",
    "imd_decile",
    "property_class",
    "is_communal",
    "uprn_in_lookup",
)
#: `area_from` of a record whose UPRN came from its address text.
FROM_ADDRESS = "address"


def address_key_expr(column: str = "address_line_1") -> pl.Expr:
    """The address as compared: upper case, every run of characters other than A-Z and 0-9
    one space, trimmed; null when nothing is left."""
    text = pl.col(column).cast(pl.String).str.to_uppercase()
    key = text.str.replace_all(r"[^A-Z0-9]+", " ").str.strip_chars(" ")
    return pl.when(key.str.len_bytes() > 0).then(key)


@dataclass(frozen=True)
class AddressMatches:
    """Records after matching, and how many records of each source took a UPRN from their
    address (counts only)."""

    records: pl.DataFrame
    matched: dict[str, int]


def address_index(records: pl.DataFrame, postcodes: pl.DataFrame) -> pl.DataFrame:
    """(`_key`, postcode) -> `_uprn`, for the address keys at `postcodes` written beside exactly
    one UPRN token in the records."""
    placed = (
        records.lazy()
        .select("postcode", "uprn_token", "address_line_1")
        .filter(pl.col("uprn_token").is_not_null())
        .join(postcodes.lazy(), on="postcode", how="semi")
        .collect()
    )
    return (
        placed.select("postcode", "uprn_token", address_key_expr().alias("_key"))
        .drop_nulls("_key")
        .group_by("_key", "postcode")
        .agg(
            pl.col("uprn_token").n_unique().alias("_uprns"),
            pl.col("uprn_token").first().alias("_uprn"),
        )
        .filter(pl.col("_uprns") == 1)
        .drop("_uprns")
    )


def match_addresses(records: pl.DataFrame) -> AddressMatches:
    """Give each record without a UPRN token the UPRN of the one address in `records` written
    the same way at its postcode (module docstring). Records keep their rows and order; a
    matched record's `area_from` is FROM_ADDRESS."""
    needed = {"address_line_1", "postcode", "uprn_token", "source_dataset"}
    if not needed <= set(records.columns):
        return AddressMatches(records, {})
    unplaced = (
        records.lazy()
        .select("source_dataset", "postcode", "uprn_token", "address_line_1")
        .with_row_index("_row")
        .filter(pl.col("uprn_token").is_null() & pl.col("postcode").is_not_null())
        .select("_row", "source_dataset", "postcode", address_key_expr().alias("_key"))
        .drop_nulls("_key")
        .collect()
    )
    index = address_index(records, unplaced.select("postcode").unique())
    found = unplaced.join(index, on=["_key", "postcode"], how="inner")
    if found.is_empty():
        return AddressMatches(records, {})
    # Everything a UPRN brings, from one record carrying it (the same for all of them: the
    # tokens derive from the UPRN, the areas and class from the lookup by UPRN).
    fields = [c for c in UPRN_FIELDS if c in records.columns]
    brought = (
        records.lazy()
        .select(fields)
        .filter(pl.col("uprn_token").is_in(found.get_column("_uprn").unique().implode()))
        .unique("uprn_token", keep="first")
        .collect()
    )
    updates = (
        found.select("_row", pl.col("_uprn").alias("uprn_token"))
        .join(brought, on="uprn_token")
        .sort("_row")
    )
    # Only the matched rows' values change: each field is copied once and written at those
    # rows, and the other columns are shared with `records`, not copied (at 2M records a join
    # of every column took 1.7 GB).
    rows = updates.get_column("_row")
    changed = [records.get_column(c).scatter(rows, updates.get_column(c)) for c in fields]
    if "area_from" in records.columns:
        changed.append(
            records.get_column("area_from").scatter(
                rows, pl.repeat(FROM_ADDRESS, len(rows), eager=True)
            )
        )
    counts = found.group_by("source_dataset").len().sort("source_dataset")
    return AddressMatches(records.with_columns(changed), dict(counts.iter_rows()))


#: The columns matching reads besides the UPRN's own (UPRN_FIELDS).
MATCH_COLUMNS = ("source_dataset", "address_line_1", "postcode", "area_from")


def trusted_records(
    settings: RunSettings, key: MasterKey, columns: Sequence[str] | None = None
) -> AddressMatches:
    """All sources' trusted records, with addresses matched to UPRNs when the run's
    `[linkage] match_addresses` is on (every stage reads the records through this). With
    `columns`, only those (that the records have) are kept, and only they and what matching
    needs are read: a stage that compares names need not hold every column of every record."""
    matching = settings.linkage.match_addresses
    needed = (*MATCH_COLUMNS, *UPRN_FIELDS) if matching else ()
    wanted = None if columns is None else list(dict.fromkeys([*columns, *needed]))
    records = read_trusted_records(settings, key, wanted)
    matches = match_addresses(records) if matching else AddressMatches(records, {})
    if columns is None:
        return matches
    kept = [c for c in columns if c in matches.records.columns]
    return AddressMatches(matches.records.select(kept), matches.matched)
