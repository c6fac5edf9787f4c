"""Ages and age bands: one banding function, several sets of bands.

A set of bands is a tuple of (lowest age, label) in increasing order; the last band is open
(85+). An age below the first band's lowest age falls in the first band.
"""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from typing import Any

import polars as pl

AgeBands = tuple[tuple[int, str], ...]

#: Five-year bands to 85+ (ONS style): the person table's `age_band`.
FIVE_YEAR_BANDS: AgeBands = (
    *((low, f"{low:02d}-{low + 4:02d}") for low in range(0, 85, 5)),
    (85, "85+"),
)


def bands_from(lowest_ages: tuple[int, ...]) -> AgeBands:
    """Bands from the lowest age of each (`(0, 5, ..., 85)` -> `00-04`, ..., `85+`)."""
    bands = [
        (low, f"{low:02d}-{high - 1:02d}" if high - 1 > low else f"{low:02d}")
        for low, high in pairwise(lowest_ages)
    ]
    return (*bands, (lowest_ages[-1], f"{lowest_ages[-1]}+"))


#: Broad groups for household analysis: the person table's `age_group`.
HOUSEHOLD_GROUPS: AgeBands = (
    (0, "00-04"),
    (5, "05-15"),
    (16, "16-17"),
    (18, "18-64"),
    (65, "65-84"),
    (85, "85+"),
)
#: The evaluation's bias-check bands (recall by age).
BIAS_BANDS: AgeBands = ((0, "0-17"), (18, "18-39"), (40, "40-64"), (65, "65-84"), (85, "85+"))


def age_on_expr(dob: str, on: date, *, at_death: str | None = None) -> pl.Expr:
    """Age in whole years on a date (or on the date in column `at_death`, when given)."""
    d = pl.col(dob)
    when = pl.col(at_death) if at_death else pl.lit(on)
    before_birthday = (d.dt.month() > when.dt.month()) | (
        (d.dt.month() == when.dt.month()) & (d.dt.day() > when.dt.day())
    )
    return (when.dt.year() - d.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int16)


def age_band_expr(
    age: str | pl.Expr, bands: AgeBands = FIVE_YEAR_BANDS, *, unknown: str | None = None
) -> pl.Expr:
    """The label of the band each age falls in; `unknown` (default null) where age is null."""
    a = pl.col(age) if isinstance(age, str) else age
    expr: Any = pl.when(a.is_null()).then(pl.lit(unknown, pl.Utf8))
    for lower, label in reversed(bands[1:]):
        expr = expr.when(a >= lower).then(pl.lit(label))
    band: pl.Expr = expr.otherwise(pl.lit(bands[0][1]))
    return band
