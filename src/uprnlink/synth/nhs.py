"""NHS numbers: the Modulus 11 check, and seeded unique numbers in NHS England's ranges."""

from __future__ import annotations

import random

import polars as pl

from uprnlink.synth.draws import uniform

#: First digits of numbers issued in England (400 000 000-499 999 999, 600 000 000-799 999 999).
_PREFIX_WEIGHTS = ((4, 0.6), (6, 0.2), (7, 0.2))


def nhs_check_digit(first_nine: str) -> int | None:
    """Modulus 11 check digit of nine digits, or None where no valid check digit exists."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def is_valid_nhs_number(value: str) -> bool:
    """True for ten digits whose last is the Modulus 11 check digit of the other nine."""
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


def _check_expr(base: pl.Expr) -> pl.Expr:
    total = pl.lit(0, dtype=pl.Int64)
    for i, w in enumerate(range(10, 1, -1)):
        total = total + ((base // 10 ** (8 - i)) % 10) * w
    return 11 - total % 11


def draw_nhs_numbers(rng: random.Random, n: int) -> pl.Series:
    """n distinct valid NHS numbers as 10-digit strings, in draw order."""
    got: pl.Series = pl.Series("nhs_number", [], dtype=pl.Int64)
    while got.len() < n:
        m = int((n - got.len()) * 1.25) + 64
        u_prefix, u_rest = uniform(rng, m), uniform(rng, m)
        prefix = pl.Series([p for p, _ in _PREFIX_WEIGHTS])
        cum = pl.Series([0.6, 0.8, 2.0])
        first = prefix.gather(cum.search_sorted(u_prefix, side="right"))
        base = first * 100_000_000 + (u_rest * 100_000_000).floor().cast(pl.Int64)
        frame = pl.DataFrame({"base": base}).with_columns(check=_check_expr(pl.col("base")))
        frame = frame.filter(pl.col("check") != 10).with_columns(
            nhs=pl.col("base") * 10
            + pl.when(pl.col("check") == 11).then(0).otherwise(pl.col("check"))
        )
        got = pl.concat([got, frame["nhs"].alias("nhs_number")]).unique(maintain_order=True)
    return got.head(n).cast(pl.Utf8)
