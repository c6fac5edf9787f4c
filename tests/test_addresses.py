"""Addresses without a UPRN matched to the delivery's own address index (ingest.addresses)."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import PipelineRun
from uprnlink.ingest.addresses import FROM_ADDRESS, address_key_expr, match_addresses


def _records(rows: list[tuple[str, str | None, str | None, str | None]]) -> pl.DataFrame:
    """unique_id, source_dataset, address_line_1, postcode, uprn_token (+ its household
    token and areas) from (source, address, postcode, uprn token)."""
    n = len(rows)
    tokens = [r[3] for r in rows]
    return pl.DataFrame(
        {
            "unique_id": [f"r{i}" for i in range(n)],
            "source_dataset": [r[0] for r in rows],
            "address_line_1": [r[1] for r in rows],
            "postcode": [r[2] for r in rows],
            "uprn_token": tokens,
            "household_token": [None if t is None else f"h-{t}" for t in tokens],
            "lsoa": [None if t is None else f"E0{t}" for t in tokens],
            "is_communal": [False] * n,
            "area_from": ["uprn" if t else "postcode" for t in tokens],
        },
        schema_overrides={
            c: pl.String
            for c in ("address_line_1", "postcode", "uprn_token", "household_token", "lsoa")
        },
    )


def _row(out: pl.DataFrame, uid: str) -> dict[str, object]:
    return out.filter(pl.col("unique_id") == uid).row(0, named=True)


def test_a_record_takes_the_uprn_of_the_one_address_written_alike_at_its_postcode() -> None:
    records = _records(
        [
            ("council_tax", "Flat 2, 3 High St.", "AB1 2CD", "U1"),
            ("gp_registrations", "FLAT 2 3 HIGH ST", "AB1 2CD", None),
        ]
    )
    found = match_addresses(records)
    gp = _row(found.records, "r1")
    assert (gp["uprn_token"], gp["household_token"], gp["lsoa"]) == ("U1", "h-U1", "E0U1")
    assert gp["area_from"] == FROM_ADDRESS
    assert found.matched == {"gp_registrations": 1}
    assert found.records.columns == records.columns
    assert found.records.get_column("unique_id").to_list() == ["r0", "r1"]
    # The values are written into copies: the records matched from are unchanged.
    assert records.get_column("uprn_token").to_list() == ["U1", None]
    assert records.get_column("area_from").to_list() == ["uprn", "postcode"]


def test_no_match_at_another_postcode_under_other_words_or_where_two_uprns_share_the_text() -> None:
    records = _records(
        [
            ("council_tax", "3 High Street", "AB1 2CD", "U1"),
            ("gp_registrations", "3 High Street", "AB1 9ZZ", None),  # another postcode
            ("gp_registrations", "3 High St", "AB1 2CD", None),  # not written alike
            ("council_tax", "1 Mill Lane", "AB1 2CD", "U2"),
            ("housing_tenancies", "1 Mill Lane", "AB1 2CD", "U3"),  # two UPRNs, one text
            ("gp_registrations", "1 MILL LANE", "AB1 2CD", None),
            ("gp_registrations", None, "AB1 2CD", None),  # no address
        ]
    )
    found = match_addresses(records)
    assert found.matched == {}
    assert found.records.equals(records)


def test_the_same_uprn_written_twice_alike_is_one_address() -> None:
    records = _records(
        [
            ("council_tax", "3 High Street", "AB1 2CD", "U1"),
            ("housing_tenancies", "3 high street", "AB1 2CD", "U1"),
            ("adult_social_care", "3 High Street", "AB1 2CD", None),
        ]
    )
    assert _row(match_addresses(records).records, "r2")["uprn_token"] == "U1"


def test_without_address_columns_nothing_is_matched() -> None:
    records = _records([("council_tax", "3 High Street", "AB1 2CD", "U1")]).drop("address_line_1")
    found = match_addresses(records)
    assert found.matched == {} and found.records.equals(records)


def test_the_address_key_ignores_case_and_punctuation_only() -> None:
    keys = pl.DataFrame({"address_line_1": ["Flat 2, 3 High St.", "  flat 2 3  HIGH st", "---"]})
    got = keys.select(address_key_expr()).to_series().to_list()
    assert got == ["FLAT 2 3 HIGH ST", "FLAT 2 3 HIGH ST", None]


_ADDRESSES = st.sampled_from(["1 Mill Lane", "1 MILL LANE", "2 Mill Lane", "Flat 1", None])
_POSTCODES = st.sampled_from(["AB1 2CD", "AB1 2CE", None])
_TOKENS = st.sampled_from(["U1", "U2", "U3", None])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_ADDRESSES, _POSTCODES, _TOKENS), min_size=1, max_size=12))
def test_matching_keeps_every_record_and_only_fills_from_one_alike_address(
    rows: list[tuple[str | None, str | None, str | None]],
) -> None:
    records = _records([("src", a, p, t) for a, p, t in rows])
    out = match_addresses(records).records
    assert out.height == records.height
    assert out.get_column("unique_id").to_list() == records.get_column("unique_id").to_list()
    keyed = records.with_columns(address_key_expr().alias("_k"))
    for before, after, k in zip(
        records.iter_rows(named=True),
        out.iter_rows(named=True),
        keyed.get_column("_k").to_list(),
        strict=True,
    ):
        if before["uprn_token"] is not None:
            assert after == before  # a record with a UPRN is never touched
        elif after["uprn_token"] is not None:
            alike = keyed.filter(
                (pl.col("_k") == k)
                & (pl.col("postcode") == before["postcode"])
                & pl.col("uprn_token").is_not_null()
            )
            assert alike.get_column("uprn_token").unique().to_list() == [after["uprn_token"]]


def test_a_stage_reads_only_the_columns_it_asks_for(small_run: PipelineRun) -> None:
    from uprnlink.ingest.addresses import trusted_records
    from uprnlink.privacy.keys import load_run_key

    key = load_run_key(small_run.settings)
    whole = trusted_records(small_run.settings, key)
    wanted = ("unique_id", "forename", "uprn_token", "area_from", "no_such_column")
    narrow = trusted_records(small_run.settings, key, wanted)
    assert narrow.records.columns == ["unique_id", "forename", "uprn_token", "area_from"]
    assert narrow.matched == whole.matched and sum(whole.matched.values()) > 0
    assert narrow.records.equals(whole.records.select(narrow.records.columns))
    # With matching off, the records are read as stored: nothing is placed.
    off = replace(
        small_run.settings, linkage=replace(small_run.settings.linkage, match_addresses=False)
    )
    unmatched = trusted_records(off, key, wanted)
    assert unmatched.matched == {}
    assert unmatched.records.columns == narrow.records.columns
    assert (
        unmatched.records.get_column("uprn_token").null_count()
        > narrow.records.get_column("uprn_token").null_count()
    )
