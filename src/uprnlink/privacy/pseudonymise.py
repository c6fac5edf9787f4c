"""Keyed tokens that replace raw UPRNs, NHS numbers and other identifiers.

Token = HMAC-SHA256(sub-key for the purpose, canonical form), truncated to the first 128 bits
and written as 32 lower-case hex characters. The sub-key comes from `MasterKey.hmac_prototype`,
so the same digits under different purposes ("uprn", "nhs_number", ...) give unrelated tokens,
and a different master key (or epoch) gives unrelated tokens for everything.

Canonical forms, hashed as UTF-8:

- ``uprn``: the decimal integer without leading zeros or sign (input: an integer column, values
  at least 1), so ``100023336956`` and ``0100023336956`` are one property.
- ``nhs_number``: exactly 10 digits (input: a string column of 10 digits, or an integer column
  that is zero-padded to 10 digits). Spaces and check digits are the standardiser's job.
- any other purpose: the string as given (integer columns are written in decimal).

There is deliberately no ``token_expr``: polars and DuckDB have no keyed HMAC, and a UDF
(``map_elements``/``map_batches``) would hash every row instead of every distinct value.
Tokenisation is therefore an eager step on a materialised column: the distinct values' canonical
bytes go to `MasterKey.hmac_hex` in one call (the `uprnlink.privacy._hmac` extension hashes them in C on
OpenSSL's SHA-256) and the tokens are mapped back to every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from uprnlink.errors import ContractError
from uprnlink.privacy.keys import MasterKey

__all__ = [
    "TOKEN_BYTES",
    "canonical_identifier",
    "pseudonymise_frame",
    "tokenise_purposes",
    "tokenise_series",
    "tokenise_value",
]

TOKEN_BYTES = 16
"""Token length in bytes (128 bits), shown as 2 * TOKEN_BYTES hex characters."""

_NHS_MAX = 9_999_999_999


def canonical_identifier(value: int | str, purpose: str) -> bytes:
    """The canonical UTF-8 bytes hashed for one identifier value (see the module docstring)."""
    if purpose == "uprn":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ContractError("a UPRN must be a positive integer", rule="uprn-positive-integer")
        return str(value).encode("ascii")
    if purpose == "nhs_number":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _NHS_MAX:
            return f"{value:010d}".encode("ascii")
        if isinstance(value, str) and len(value) == 10 and value.isascii() and value.isdigit():
            return value.encode("ascii")
        raise ContractError("an NHS number must be exactly 10 digits", rule="nhs-number-10-digits")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ContractError("an identifier must be a string or an integer", rule="identifier-type")
    return str(value).encode("utf-8")


def tokenise_value(value: int | str, key: MasterKey, purpose: str) -> str:
    """The token of a single identifier (for look-ups and tests; use `tokenise_series` in bulk)."""
    h = key.hmac_prototype(purpose)
    h.update(canonical_identifier(value, purpose))
    return h.finalize()[:TOKEN_BYTES].hex()


def _canonical(distinct: pl.Series, purpose: str) -> pl.Series:
    """The canonical forms (UTF-8 bytes) of distinct non-null input values, validated."""
    name = distinct.name
    dtype = distinct.dtype
    if purpose == "uprn":
        if not dtype.is_integer():
            raise ContractError(
                f"UPRN column must have an integer type, not {dtype}",
                column=name,
                rule="uprn-integer",
            )
        bad = int((distinct < 1).sum())
        if bad:
            raise ContractError(
                f"{bad} distinct UPRN values are not positive integers",
                column=name,
                rule="uprn-positive-integer",
            )
        canonical = distinct.cast(pl.String)
    elif purpose == "nhs_number":
        if dtype.is_integer():
            bad = int(((distinct < 0) | (distinct > _NHS_MAX)).sum())
            canonical = distinct.cast(pl.String).str.zfill(10)
        elif dtype == pl.String:
            bad = int((~distinct.str.contains(r"^[0-9]{10}$")).sum())
            canonical = distinct
        else:
            raise ContractError(
                f"NHS number column must be a string or integer type, not {dtype}",
                column=name,
                rule="nhs-number-type",
            )
        if bad:
            raise ContractError(
                f"{bad} distinct NHS number values are not exactly 10 digits",
                column=name,
                rule="nhs-number-10-digits",
            )
    elif dtype == pl.String or dtype.is_integer():
        canonical = distinct.cast(pl.String)
    else:
        raise ContractError(
            f"identifier column must be a string or integer type, not {dtype}",
            column=name,
            rule="identifier-type",
        )
    return canonical.cast(pl.Binary)


def _digests(messages: pl.Series, key: MasterKey, purpose: str) -> pl.Series:
    """Tokens (String, 32 hex chars) of canonical messages (Binary), in order: the stage's
    cost, one call into `MasterKey.hmac_hex` for the whole column."""
    return key.hmac_hex(purpose, messages, TOKEN_BYTES)


def tokenise_purposes(
    values: pl.Series, key: MasterKey, purposes: Sequence[str]
) -> dict[str, pl.Series]:
    """The tokens of one identifier column under several purposes (say ``uprn`` and
    ``household``), each a String column of 32 hex characters; nulls stay null.

    Each distinct value is hashed once per purpose, and the distinct values and their
    positions are found once for all purposes. A column whose values are all distinct (record
    keys) is hashed in place, with no look-up at all.
    """
    name = values.name
    if values.dtype == pl.Null:
        return {p: pl.Series(name, [None] * len(values), dtype=pl.String) for p in purposes}
    if isinstance(values.dtype, pl.Categorical | pl.Enum):
        values = values.cast(pl.String)
    present = values.drop_nulls()
    distinct = present.unique()
    out: dict[str, pl.Series] = {}
    if distinct.len() == present.len():
        # All distinct: hash in order, then put the nulls back where they were.
        at = values.is_not_null().arg_true() if present.len() < values.len() else None
        for purpose in purposes:
            tokens = _digests(_canonical(present, purpose), key, purpose)
            if at is not None:
                tokens = pl.Series(name, [None] * len(values), dtype=pl.String).scatter(at, tokens)
            out[purpose] = tokens.rename(name)
        return out
    # A value's dense rank is its position among the sorted distinct values (nulls stay null).
    distinct = distinct.sort()
    position = values.rank("dense") - 1
    for purpose in purposes:
        tokens = _digests(_canonical(distinct, purpose), key, purpose)
        out[purpose] = tokens.gather(position).rename(name)
    return out


def tokenise_series(values: pl.Series, key: MasterKey, purpose: str) -> pl.Series:
    """Replace each identifier by its token (String, 32 hex chars); nulls stay null.

    Each distinct value is hashed once and the tokens mapped back to every row: identifiers
    repeat across records and sources (see `tokenise_purposes`).
    """
    return tokenise_purposes(values, key, (purpose,))[purpose]


def pseudonymise_frame(
    df: pl.DataFrame, key: MasterKey, columns: Mapping[str, tuple[str, str]]
) -> pl.DataFrame:
    """Replace each raw identifier column by its token column, in the same position.

    `columns` maps ``raw_col -> (token_col, purpose)``; every raw column is dropped.
    """
    missing = [raw for raw in columns if raw not in df.columns]
    if missing:
        raise ContractError(
            "identifier column to pseudonymise is missing", column=missing[0], rule="present"
        )
    targets = [tok for tok, _ in columns.values()]
    if len(set(targets)) != len(targets):
        raise ContractError("two identifier columns map to the same token column", rule="unique")
    for raw, (tok, _) in columns.items():
        if tok in df.columns and tok not in columns:
            raise ContractError(
                f"token column for {raw!r} would overwrite an existing column",
                column=tok,
                rule="no-overwrite",
            )
    tokens = {
        raw: tokenise_series(df.get_column(raw), key, purpose).rename(tok)
        for raw, (tok, purpose) in columns.items()
    }
    return pl.DataFrame([tokens[c] if c in tokens else df.get_column(c) for c in df.columns])
