"""Build the trusted zone: enrich accepted rows with area data on the raw UPRN, then pseudonymise.

Area attributes (LSOA, ward, deprivation, property class) are joined on the raw UPRN *before*
it is replaced by a token, because the reference lookups are keyed on real UPRNs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import polars as pl

from uprnlink.privacy.keys import BULK_HMAC, MasterKey
from uprnlink.privacy.pseudonymise import tokenise_purposes, tokenise_series

log = logging.getLogger(__name__)

PERSON_FIELDS = (
    "record_id",
    "forename",
    "middle_names",
    "surname",
    "dob",
    "sex",
    "nhs_number",
    "address_line_1",
    "postcode",
    "uprn",
    "start_date",
    "end_date",
)
AREA_COLUMNS = ("oa", "lsoa", "msoa", "ward", "lad", "imd_decile", "property_class", "is_communal")
# AddressBase "RI" (residential institution) classes are communal establishments: care and
# nursing homes, hostels and communal residences, residential education.
COMMUNAL_CLASS_PREFIX = "RI"


@dataclass
class TrustedSource:
    """One source in the trusted zone: linkage records, source facts and the record crosswalk."""

    records: pl.DataFrame
    facts: pl.DataFrame
    crosswalk: pl.DataFrame


def build_reference(
    uprn_lookup: pl.DataFrame | None,
    property_class: pl.DataFrame | None,
    deprivation: pl.DataFrame | None,
) -> pl.DataFrame:
    """One row per UPRN with its areas, deprivation decile and property class."""
    schema = {
        "uprn": pl.Int64,
        "postcode": pl.Utf8,
        "oa": pl.Utf8,
        "lsoa": pl.Utf8,
        "msoa": pl.Utf8,
        "ward": pl.Utf8,
        "lad": pl.Utf8,
    }
    lookup = (
        uprn_lookup.select(
            [pl.col(c).cast(t) for c, t in schema.items() if c in uprn_lookup.columns]
        )
        if uprn_lookup is not None
        else pl.DataFrame(schema=schema)
    )
    for c, t in schema.items():
        if c not in lookup.columns:
            lookup = lookup.with_columns(pl.lit(None, t).alias(c))
    if property_class is not None:
        classes = property_class.select(
            pl.col("uprn").cast(pl.Int64), pl.col("class").alias("property_class")
        )
        lookup = lookup.join(classes, on="uprn", how="full", coalesce=True)
    else:
        lookup = lookup.with_columns(pl.lit(None, pl.Utf8).alias("property_class"))
    if deprivation is not None:
        imd = deprivation.select("lsoa", pl.col("imd_decile").cast(pl.Int8))
        lookup = lookup.join(imd, on="lsoa", how="left")
    else:
        lookup = lookup.with_columns(pl.lit(None, pl.Int8).alias("imd_decile"))
    return lookup.with_columns(
        pl.col("property_class")
        .str.starts_with(COMMUNAL_CLASS_PREFIX)
        .fill_null(False)
        .alias("is_communal")
    )


def postcode_areas(reference: pl.DataFrame) -> pl.DataFrame:
    """The most common output area, LSOA, MSOA, ward and LAD per postcode (fallback geography)."""
    geo = ["oa", "lsoa", "msoa", "ward", "lad"]
    return (
        reference.filter(pl.col("postcode").is_not_null() & pl.col("lsoa").is_not_null())
        .group_by("postcode", *geo)
        .len()
        .sort("len", *geo, descending=[True, False, False, False, False, False])
        .group_by("postcode", maintain_order=True)
        .first()
        .drop("len")
    )


def enrich_with_areas(df: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """Join area attributes on the raw UPRN, falling back to the postcode's usual areas."""
    ref = reference.select("uprn", *AREA_COLUMNS).with_columns(pl.lit(True).alias("uprn_in_lookup"))
    out = df.join(ref, on="uprn", how="left").with_columns(
        pl.col("uprn_in_lookup").fill_null(False)
    )
    by_pc = postcode_areas(reference)
    geo = ["oa", "lsoa", "msoa", "ward", "lad"]
    out = out.join(by_pc.rename({c: f"_pc_{c}" for c in geo}), on="postcode", how="left")
    from_uprn = pl.col("lsoa").is_not_null()
    out = out.with_columns(
        *[pl.coalesce(c, f"_pc_{c}").alias(c) for c in geo],
        pl.when(from_uprn)
        .then(pl.lit("uprn"))
        .when(pl.col("_pc_lsoa").is_not_null())
        .then(pl.lit("postcode"))
        .otherwise(None)
        .alias("area_from"),
        pl.col("is_communal").fill_null(False),
    ).drop([f"_pc_{c}" for c in geo])
    imd = reference.select("lsoa", pl.col("imd_decile").alias("_imd")).unique("lsoa")
    return (
        out.join(imd, on="lsoa", how="left")
        .with_columns(pl.coalesce("imd_decile", "_imd").alias("imd_decile"))
        .drop("_imd")
    )


def build_trusted_source(
    accepted: pl.DataFrame, source_name: str, reference: pl.DataFrame, key: MasterKey
) -> TrustedSource:
    """Enrich, then replace UPRN, NHS number and record reference by keyed tokens."""
    df = enrich_with_areas(accepted, reference)
    record_key = pl.lit(source_name + "|") + pl.col("record_id")
    df = df.with_columns(record_key.alias("_record_key"))
    started = time.perf_counter()
    # UPRN tokens for linkage and household tokens for publication share one distinct-value
    # look-up; each purpose still has its own sub-key.
    uprn = tokenise_purposes(df.get_column("uprn"), key, ("uprn", "household"))
    df = df.with_columns(
        tokenise_series(df.get_column("_record_key"), key, "record").alias("unique_id"),
        uprn["uprn"].alias("uprn_token"),
        uprn["household"].alias("household_token"),
        tokenise_series(df.get_column("nhs_number"), key, "nhs_number").alias("nhs_token"),
        pl.lit(source_name).alias("source_dataset"),
    )
    log.info(
        "%s: pseudonymised %s records (record keys, UPRNs, NHS numbers) in %.1f s%s",
        source_name,
        f"{df.height:,}",
        time.perf_counter() - started,
        ""
        if BULK_HMAC == "openssl"
        else " (pure-Python HMAC: the uprnlink.privacy._hmac extension is not built; see README)",
    )
    records = df.select(
        "unique_id",
        "source_dataset",
        "forename",
        "middle_names",
        "surname",
        "dob",
        "sex",
        "postcode",
        # The address as written: linkage compares it only where no source carries a UPRN.
        "address_line_1",
        "uprn_token",
        "household_token",
        "nhs_token",
        "start_date",
        "end_date",
        *AREA_COLUMNS,
        "uprn_in_lookup",
        "area_from",
    )
    fact_cols = [c for c in accepted.columns if c not in PERSON_FIELDS and not c.startswith("_")]
    facts = df.select("unique_id", "source_dataset", *fact_cols)
    crosswalk = df.select("unique_id", "source_dataset", "record_id", pl.col("_row").alias("row"))
    return TrustedSource(records=records, facts=facts, crosswalk=crosswalk)
