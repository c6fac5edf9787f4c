"""Linkage quality measures that need no model: per source, how records linked."""

from __future__ import annotations

import polars as pl


def source_quality_table(linked: pl.DataFrame) -> pl.DataFrame:
    """Per source: records, people, and counts linked to another source, with a UPRN, with a
    UPRN found in the lookup, with an NHS number."""
    sources_per_person = linked.group_by("person_id").agg(
        pl.col("source_dataset").n_unique().alias("_n_sources")
    )
    return (
        linked.join(sources_per_person, on="person_id")
        .group_by("source_dataset")
        .agg(
            pl.len().alias("records"),
            pl.col("person_id").n_unique().alias("people"),
            (pl.col("_n_sources") > 1).sum().alias("linked_to_other_source"),
            pl.col("uprn_token").is_not_null().sum().alias("with_uprn"),
            pl.col("uprn_in_lookup").fill_null(False).sum().alias("uprn_in_lookup"),
            pl.col("nhs_token").is_not_null().sum().alias("with_nhs_number"),
        )
        .sort("source_dataset")
    )
