"""Tests for uprnlink.privacy.pseudonymise: known-answer tokens, canonical forms and properties."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal, assert_series_equal

from uprnlink.errors import ContractError
from uprnlink.privacy.keys import HKDF_SALT, MasterKey
from uprnlink.privacy.pseudonymise import (
    canonical_identifier,
    pseudonymise_frame,
    tokenise_purposes,
    tokenise_series,
    tokenise_value,
)

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "hmac_hkdf.json").read_text(encoding="utf-8")
)
KEY = MasterKey(bytes.fromhex(VECTORS["keys"][0]["master_key_hex"]))
OTHER_KEY = MasterKey(bytes.fromhex(VECTORS["keys"][1]["master_key_hex"]))

UPRN = st.integers(min_value=1, max_value=999_999_999_999)
NHS = st.integers(min_value=0, max_value=9_999_999_999).map(lambda n: f"{n:010d}")
KEY_BYTES = st.binary(min_size=32, max_size=32)


def reference_token(master: bytes, purpose: str, canonical: str) -> str:
    """Token computed with the stdlib only (RFC 5869 HKDF by hand), independent of uprnlink."""
    prk = hmac.new(HKDF_SALT, master, hashlib.sha256).digest()
    info = b"uprnlink/" + purpose.encode() + b"/v1"
    subkey = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
    return hmac.new(subkey, canonical.encode("utf-8"), hashlib.sha256).digest()[:16].hex()


# --------------------------------------------------------------------------- vectors


def _token_cases():
    for vector in VECTORS["keys"]:
        for case in vector["tokens"]:
            yield pytest.param(
                vector["master_key_hex"],
                case,
                id=f"{vector['key_id']}-{case['purpose']}-{case['value']}",
            )


@pytest.mark.parametrize(("master_hex", "case"), list(_token_cases()))
def test_token_vectors(master_hex, case):
    key = MasterKey(bytes.fromhex(master_hex))
    assert canonical_identifier(case["value"], case["purpose"]) == case["canonical"].encode()
    assert tokenise_value(case["value"], key, case["purpose"]) == case["token"]
    series = pl.Series("x", [case["value"], None])
    assert tokenise_series(series, key, case["purpose"]).to_list() == [case["token"], None]


def test_reference_token_matches_vectors():
    vector = VECTORS["keys"][0]
    case = vector["tokens"][0]
    master = bytes.fromhex(vector["master_key_hex"])
    assert reference_token(master, case["purpose"], case["canonical"]) == case["token"]


def test_vector_same_digits_differ_by_purpose():
    tokens = {(c["purpose"], c["canonical"]): c["token"] for c in VECTORS["keys"][0]["tokens"]}
    assert tokens[("uprn", "9434765919")] != tokens[("nhs_number", "9434765919")]


# --------------------------------------------------------------------------- series / frames


def test_tokenise_series_shape_nulls_and_repeats():
    s = pl.Series("uprn", [100023336956, None, 1, 100023336956, None], dtype=pl.Int64)
    out = tokenise_series(s, KEY, "uprn")
    assert out.name == "uprn" and out.dtype == pl.String and out.len() == 5
    values = out.to_list()
    assert values[1] is None and values[4] is None
    assert values[0] == values[3] != values[2]
    assert all(len(v) == 32 and v == v.lower() for v in values if v is not None)
    assert all(set(v) <= set("0123456789abcdef") for v in values if v is not None)


def test_tokenise_series_empty_and_all_null():
    empty = tokenise_series(pl.Series("u", [], dtype=pl.Int64), KEY, "uprn")
    assert empty.dtype == pl.String and empty.len() == 0
    nulls = tokenise_series(pl.Series("u", [None, None], dtype=pl.Int64), KEY, "uprn")
    assert nulls.to_list() == [None, None] and nulls.dtype == pl.String
    untyped = tokenise_series(pl.Series("u", [None, None]), KEY, "uprn")
    assert untyped.to_list() == [None, None] and untyped.dtype == pl.String


def test_all_distinct_and_repeated_columns_give_per_value_tokens():
    # Record keys are all distinct (hashed in place); UPRNs repeat (hashed once, mapped back).
    for values in (["b", None, "a", "c"], ["b", None, "a", "b", None, "a"]):
        series = pl.Series("k", values)
        expected = [None if v is None else tokenise_value(v, KEY, "record") for v in values]
        assert tokenise_series(series, KEY, "record").to_list() == expected


def test_tokenise_purposes_share_the_look_up_but_not_the_key():
    uprns = pl.Series("uprn", [7, None, 100023336956, 7], dtype=pl.Int64)
    both = tokenise_purposes(uprns, KEY, ("uprn", "household"))
    assert_series_equal(both["uprn"], tokenise_series(uprns, KEY, "uprn"))
    assert_series_equal(both["household"], tokenise_series(uprns, KEY, "household"))
    assert both["uprn"][0] != both["household"][0]


def test_integer_widths_and_nhs_integer_input_agree():
    wide = tokenise_series(pl.Series("u", [5, 42], dtype=pl.Int64), KEY, "uprn")
    narrow = tokenise_series(pl.Series("u", [5, 42], dtype=pl.UInt8), KEY, "uprn")
    assert_series_equal(wide, narrow)
    as_int = tokenise_series(pl.Series("n", [123456789, 9434765919]), KEY, "nhs_number")
    as_str = tokenise_series(pl.Series("n", ["0123456789", "9434765919"]), KEY, "nhs_number")
    assert_series_equal(as_int, as_str)


def test_categorical_identifiers_tokenise_like_strings():
    cat = pl.Series("r", ["a", "b", None, "a"], dtype=pl.Categorical)
    plain = pl.Series("r", ["a", "b", None, "a"])
    assert_series_equal(tokenise_series(cat, KEY, "record"), tokenise_series(plain, KEY, "record"))


@pytest.mark.parametrize(
    ("series", "purpose", "rule"),
    [
        (pl.Series("uprn", ["100023336956"]), "uprn", "uprn-integer"),
        (pl.Series("uprn", [5, 0, -7, None]), "uprn", "uprn-positive-integer"),
        (pl.Series("nhs", ["943 476 5919"]), "nhs_number", "nhs-number-10-digits"),
        (pl.Series("nhs", ["94347659190"]), "nhs_number", "nhs-number-10-digits"),
        (pl.Series("nhs", [12_345_678_901]), "nhs_number", "nhs-number-10-digits"),
        (pl.Series("nhs", [1.5]), "nhs_number", "nhs-number-type"),
        (pl.Series("ref", [1.5]), "record", "identifier-type"),
    ],
)
def test_bad_identifier_columns_fail_without_values(series, purpose, rule):
    with pytest.raises(ContractError) as err:
        tokenise_series(series, KEY, purpose)
    assert err.value.rule == rule and err.value.column == series.name
    message = str(err.value)
    for value in series.drop_nulls().cast(pl.String).to_list():
        if len(value) > 2:
            assert value not in message


def test_bad_uprn_message_counts_distinct_values():
    with pytest.raises(ContractError, match="2 distinct UPRN values"):
        tokenise_series(pl.Series("uprn", [5, 0, -7, -7, None]), KEY, "uprn")


def test_canonical_identifier_single_values():
    assert canonical_identifier(100023336956, "uprn") == b"100023336956"
    assert canonical_identifier(123456789, "nhs_number") == b"0123456789"
    assert canonical_identifier("Zoë", "record") == "Zoë".encode()
    for value, purpose in [("1", "uprn"), (0, "uprn"), (True, "uprn"), ("12345", "nhs_number"),
                           ("١٢٣٤٥٦٧٨٩٠", "nhs_number"), (1.0, "record")]:  # fmt: skip
        with pytest.raises(ContractError):
            canonical_identifier(value, purpose)  # type: ignore[arg-type]


def test_pseudonymise_frame_replaces_in_place_and_drops_raw():
    df = pl.DataFrame(
        {
            "record_ref": ["a1", "a2", "a3"],
            "uprn": pl.Series([100023336956, None, 200003455212], dtype=pl.Int64),
            "age_band": ["30-39", "40-49", "30-39"],
            "nhs_number": ["9434765919", "0123456789", None],
        }
    )
    out = pseudonymise_frame(
        df,
        KEY,
        {
            "uprn": ("uprn_token", "uprn"),
            "nhs_number": ("nhs_token", "nhs_number"),
            "record_ref": ("record_ref", "record"),
        },
    )
    assert out.columns == ["record_ref", "uprn_token", "age_band", "nhs_token"]
    expected = pl.DataFrame(
        {
            "record_ref": tokenise_series(df["record_ref"], KEY, "record"),
            "uprn_token": tokenise_series(df["uprn"], KEY, "uprn"),
            "age_band": df["age_band"],
            "nhs_token": tokenise_series(df["nhs_number"], KEY, "nhs_number"),
        }
    )
    assert_frame_equal(out, expected)
    assert "9434765919" not in str(out.rows()) and "100023336956" not in str(out.rows())


def test_pseudonymise_frame_errors():
    df = pl.DataFrame({"uprn": [1], "uprn_token": ["x"], "nhs": ["9434765919"]})
    with pytest.raises(ContractError, match="missing") as err:
        pseudonymise_frame(df, KEY, {"postcode": ("pc_token", "record")})
    assert err.value.column == "postcode"
    with pytest.raises(ContractError, match="overwrite"):
        pseudonymise_frame(df, KEY, {"uprn": ("uprn_token", "uprn")})
    with pytest.raises(ContractError, match="same token column"):
        pseudonymise_frame(df, KEY, {"uprn": ("t", "uprn"), "nhs": ("t", "nhs_number")})


def test_empty_mapping_returns_frame_unchanged():
    df = pl.DataFrame({"a": [1, 2]})
    assert_frame_equal(pseudonymise_frame(df, KEY, {}), df)


# --------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(KEY_BYTES, KEY_BYTES, UPRN)
def test_property_different_keys_give_different_tokens(a, b, uprn):
    assume(a != b)
    assert tokenise_value(uprn, MasterKey(a), "uprn") != tokenise_value(uprn, MasterKey(b), "uprn")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=9_999_999_999))
def test_property_uprn_and_nhs_with_same_digits_never_share_a_token(n):
    digits = f"{n:010d}"
    uprn_token = tokenise_series(pl.Series([n], dtype=pl.Int64), KEY, "uprn")[0]
    nhs_token = tokenise_series(pl.Series([digits]), KEY, "nhs_number")[0]
    assert uprn_token != nhs_token
    if digits == str(n):  # same canonical bytes, different sub-key
        assert canonical_identifier(n, "uprn") == canonical_identifier(digits, "nhs_number")


@settings(max_examples=50, deadline=None)
@given(KEY_BYTES, st.lists(st.one_of(st.none(), UPRN), max_size=60))
def test_property_tokenise_series_equals_per_value_hmac(master, values):
    out = tokenise_series(pl.Series("u", values, dtype=pl.Int64), MasterKey(master), "uprn")
    expected = [None if v is None else reference_token(master, "uprn", str(v)) for v in values]
    assert out.to_list() == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), NHS), max_size=60))
def test_property_nhs_series_equals_per_value_hmac_and_keeps_nulls(values):
    out = tokenise_series(pl.Series("n", values, dtype=pl.String), OTHER_KEY, "nhs_number")
    master = bytes.fromhex(VECTORS["keys"][1]["master_key_hex"])
    assert out.to_list() == [
        None if v is None else reference_token(master, "nhs_number", v) for v in values
    ]
    assert out.is_null().to_list() == [v is None for v in values]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=40))
def test_property_other_identifiers_hash_their_utf8(values):
    out = tokenise_series(pl.Series("r", values, dtype=pl.String), KEY, "record")
    master = bytes.fromhex(VECTORS["keys"][0]["master_key_hex"])
    assert out.to_list() == [
        None if v is None else reference_token(master, "record", v) for v in values
    ]


@settings(max_examples=100, deadline=None)
@given(UPRN, st.integers(min_value=0, max_value=6))
def test_property_uprn_leading_zeros_do_not_matter(uprn, zeros):
    # Input is Int64, so "0…0123" from a text extract parses to the same integer.
    padded = "0" * zeros + str(uprn)
    parsed = pl.Series([padded]).cast(pl.Int64)
    assert tokenise_series(parsed, KEY, "uprn")[0] == tokenise_value(uprn, KEY, "uprn")
    assert canonical_identifier(int(padded), "uprn") == str(uprn).encode()


@settings(max_examples=50, deadline=None)
@given(st.lists(UPRN, min_size=1, max_size=30, unique=True))
def test_property_distinct_uprns_get_distinct_tokens(values):
    out = tokenise_series(pl.Series(values, dtype=pl.Int64), KEY, "uprn")
    assert out.n_unique() == len(values)
