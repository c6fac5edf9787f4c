"""Cell-key perturbation: how every count and sum an analyst sees is protected.

The method is the one the ABS TableBuilder and the ONS table builders for Census 2021 use
(Thompson, Broadfoot and Elazar 2013; ONS's `cell-key-perturbation` package):

* every unit (person, household) carries a random **record key**, 0-255, fixed at publish
  and never shown (`publish.tabulation` derives it from the release key, so it is stable
  from release to release while ids are);
* a cell's **cell key** is the sum of its units' record keys modulo 256, so it depends only
  on *which units* are in the cell, never on how the table that produced it was asked for;
* the **p-table** maps (cell value, cell key) to a small perturbation, so the same cell gets
  the same value in every table, and two cells that differ by one unit get independent
  noise: differencing them gives the unit's contribution plus noise, not the unit.

The p-table is generated from the policy (`[tables]`): perturbations within ±`max_noise`,
unbiased, with variance `variance` where the bounds allow it, chosen by maximum entropy (the
construction of the `ptable` package of Enderle, Giessing and Tent, used by Destatis and ONS);
perturbed values 1..`no_small_values` never occur (ONS practice: no 1s and 2s), and counts
below `threshold` after perturbation are withheld, exactly as the ONS package does (zeros
included). It has the ONS package's layout (`pcv`, `ckey`, `pvalue`; pcv 1-750, cell values
above 750 reuse rows 501-750), and `tests/test_perturbation.py` checks our tables against that
package on the same data and p-table.

Sums of a declared non-negative measure get magnitude noise from a second record key: the
cell's largest contribution times a factor of ±(`magnitude_noise` range), plus a count's
noise (the p-table's row for a large count), both picked by that key through a lookup of
256 entries shuffled per measure. So one unit's value is hidden by noise at least half its
own size; a sum of 0/1 values moves like a count (by 0 to about ±4, either parity), never by
exactly ±1; the direction is not a bit of the key; and two measures summed over the same
units get independent noise, so one cannot be used to read the other's factor. Means and
rates are computed from the perturbed sums and counts, never from true values.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from uprnlink.errors import ConfigError

__all__ = [
    "KEY_RANGE",
    "MAX_PCV",
    "PerturbationSettings",
    "magnitude_factor_expr",
    "magnitude_noise_table",
    "noise_distribution",
    "pcv_expr",
    "perturb_counts",
    "perturb_sums",
    "ptable",
]

KEY_RANGE = 256
"""Record and cell keys run from 0 to 255 (the ONS package's default key range)."""
MAX_PCV = 750
"""The p-table covers cell values 1-750; larger values reuse rows 501-750 (ONS)."""
_REUSE_FROM = 501
_REUSE_SPAN = 250


@dataclass(frozen=True)
class PerturbationSettings:
    """The perturbation a release's tables get (`[tables]` in the governance policy)."""

    max_noise: int = 3
    """Largest change to a count, either way (D)."""
    variance: float = 2.0
    """Variance of the change where the bounds allow it (V)."""
    no_small_values: int = 2
    """Perturbed counts 1..this never occur (ONS: no 1s and 2s)."""
    threshold: int = 10
    """Perturbed counts below this are withheld ([c]), zeros included, as the ONS package
    does; 0 shows every perturbed value."""
    magnitude_noise: tuple[float, float] = (0.5, 1.5)
    """A sum moves by this share (low, high) of its largest contribution, up or down."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_noise <= 20:
            raise ConfigError("[tables] max_noise must be from 1 to 20")
        if not 0 < self.variance < self.max_noise**2:
            raise ConfigError("[tables] variance must be above 0 and below max_noise squared")
        if not 0 <= self.no_small_values <= self.max_noise:
            # A count of 1 must be able to reach no_small_values + 1 to stay unbiased.
            raise ConfigError("[tables] no_small_values must be from 0 to max_noise")
        if self.threshold < 0:
            raise ConfigError("[tables] threshold must not be negative")
        low, high = self.magnitude_noise
        if not 0 < low <= high <= 5:
            raise ConfigError("[tables] magnitude_noise must be [low, high] with 0 < low <= high")

    def describe(self) -> dict[str, object]:
        return {
            "method": "cell-key perturbation",
            "max_noise": self.max_noise,
            "variance": self.variance,
            "no_small_values": self.no_small_values,
            "threshold": self.threshold,
            "magnitude_noise": list(self.magnitude_noise),
        }


# ------------------------------------------------------------------------------- p-table


def _support(value: int, s: PerturbationSettings) -> list[int]:
    """Perturbed values a cell of `value` may take: within ±max_noise, never negative and
    never 1..no_small_values."""
    low = max(0, value - s.max_noise)
    return [v for v in range(low, value + s.max_noise + 1) if not 1 <= v <= s.no_small_values]


def _moments(ws: Sequence[float], a: float, b: float) -> tuple[list[float], float, float]:
    exps = [a * w + b * w * w for w in ws]
    top = max(exps)
    weights = [math.exp(e - top) for e in exps]
    total = sum(weights)
    ps = [x / total for x in weights]
    mean = sum(p * w for p, w in zip(ps, ws, strict=True))
    second = sum(p * w * w for p, w in zip(ps, ws, strict=True))
    return ps, mean, second


def _max_entropy(ws: list[float], variance: float) -> list[float]:
    """Probabilities on centred support `ws` with mean 0 and the given variance, of maximum
    entropy (p ~ exp(a w + b w^2)); if that variance cannot be reached, mean 0 alone."""
    a, b = 0.0, -1.0 / (2 * variance)
    for _ in range(200):
        ps, m1, m2 = _moments(ws, a, b)
        r1, r2 = m1, m2 - variance
        if abs(r1) < 1e-12 and abs(r2) < 1e-12:
            return ps
        m3 = sum(p * w**3 for p, w in zip(ps, ws, strict=True))
        m4 = sum(p * w**4 for p, w in zip(ps, ws, strict=True))
        j11, j12, j22 = m2 - m1 * m1, m3 - m1 * m2, m4 - m2 * m2
        det = j11 * j22 - j12 * j12
        if det <= 1e-15:
            break
        da = (r1 * j22 - r2 * j12) / det
        db = (r2 * j11 - r1 * j12) / det
        step = 1.0
        while step > 1e-6:
            na, nb = a - step * da, b - step * db
            _, n1, n2 = _moments(ws, na, nb)
            if abs(n1) + abs(n2 - variance) < abs(r1) + abs(r2):
                a, b = na, nb
                break
            step /= 2
        else:
            break
        if abs(a) > 50 or abs(b) > 50:
            break
    # Mean zero only (the bounds rule the variance out): solve exp(a w) for a by bisection.
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        _, m1, _ = _moments(ws, mid, 0.0)
        if m1 > 0:
            hi = mid
        else:
            lo = mid
    return _moments(ws, (lo + hi) / 2, 0.0)[0]


def noise_distribution(value: int, settings: PerturbationSettings) -> dict[int, float]:
    """Perturbed value -> probability, for a cell of true count `value` (>= 1)."""
    support = _support(value, settings)
    if len(support) == 1:
        return {support[0]: 1.0}
    ps = _max_entropy([v - value for v in support], settings.variance)
    return {v: p for v, p in zip(support, ps, strict=True) if p > 0}


def _quantise(dist: dict[int, float], value: int) -> list[int]:
    """The perturbed value for each of the 256 cell keys: each value gets a run of keys in
    proportion to its probability (largest remainders), then single keys move between values
    while that brings the mean closer to `value` (unbiased as far as 1/256 allows)."""
    values = sorted(dist)
    raw = [dist[v] * KEY_RANGE for v in values]
    slots = [math.floor(x) for x in raw]
    order = sorted(range(len(values)), key=lambda i: raw[i] - slots[i], reverse=True)
    for i in order[: KEY_RANGE - sum(slots)]:
        slots[i] += 1

    def bias(s: list[int]) -> int:
        return sum(n * (v - value) for n, v in zip(s, values, strict=True))

    for _ in range(KEY_RANGE):
        current = abs(bias(slots))
        if current == 0:
            break
        best: tuple[int, int, int] | None = None
        for i in range(len(values)):
            if slots[i] <= 1:
                continue
            for j in range(len(values)):
                if i == j:
                    continue
                moved = slots.copy()
                moved[i] -= 1
                moved[j] += 1
                after = abs(bias(moved))
                if after < current and (best is None or after < best[0]):
                    best = (after, i, j)
        if best is None:
            break
        slots[best[1]] -= 1
        slots[best[2]] += 1
    out: list[int] = []
    for n, v in zip(slots, values, strict=True):
        out.extend([v] * n)
    return out


@functools.lru_cache(maxsize=8)
def ptable(settings: PerturbationSettings) -> pl.DataFrame:
    """The p-table (`pcv`, `ckey`, `pvalue`) for cell values 1-750 and cell keys 0-255, in the
    ONS package's layout. Rows differ only where the bounds bite (small values); every row
    above them is the same symmetric distribution."""
    pcvs: list[int] = []
    ckeys: list[int] = []
    pvalues: list[int] = []
    generic: list[int] | None = None
    edge = settings.max_noise + settings.no_small_values
    for value in range(1, MAX_PCV + 1):
        if value > edge and generic is not None:
            perturbed = [generic_value + value for generic_value in generic]
        else:
            perturbed = _quantise(noise_distribution(value, settings), value)
            if value > edge:
                generic = [p - value for p in perturbed]
        pcvs.extend([value] * KEY_RANGE)
        ckeys.extend(range(KEY_RANGE))
        pvalues.extend(p - value for p in perturbed)
    return pl.DataFrame(
        {"pcv": pcvs, "ckey": ckeys, "pvalue": pvalues},
        schema={"pcv": pl.Int64, "ckey": pl.Int64, "pvalue": pl.Int64},
    )


# ------------------------------------------------------------------------------ applying


def pcv_expr(count: pl.Expr) -> pl.Expr:
    """The p-table row a cell value reads (ONS: values above 750 reuse rows 501-750)."""
    return (
        pl.when(count <= MAX_PCV)
        .then(count)
        .otherwise((count - 1) % _REUSE_SPAN + _REUSE_FROM)
        .cast(pl.Int64)
    )


@functools.lru_cache(maxsize=8)
def _pvalues(settings: PerturbationSettings) -> pl.Series:
    """The p-table as one flat series: row (pcv - 1) * 256 + ckey (a lookup, not a join)."""
    return ptable(settings).sort("pcv", "ckey").get_column("pvalue")


def perturb_counts(
    cells: pl.DataFrame,
    settings: PerturbationSettings,
    *,
    count: str = "count",
    ckey: str = "ckey",
    out: str = "count",
) -> pl.DataFrame:
    """Each cell's count perturbed by its cell key and withheld (null) below the threshold.

    `cells` holds the true count and the cell key (sum of record keys mod 256) per cell; the
    result replaces `out` with the perturbed count (Int64, null where withheld) and drops the
    true count and the key."""
    pcv = pcv_expr(pl.col(count))
    row = ((pcv - 1).clip(lower_bound=0) * KEY_RANGE + pl.col(ckey).cast(pl.Int64)).cast(pl.Int64)
    pvalue = pl.when(pcv <= 0).then(0).otherwise(pl.lit(_pvalues(settings)).gather(row))
    perturbed = pl.col(count).cast(pl.Int64) + pvalue
    shown = pl.when(perturbed < settings.threshold).then(None).otherwise(perturbed)
    drop = {count, ckey} - {out}
    return cells.with_columns(shown.cast(pl.Int64).alias(out)).drop(*drop)


def _magnitude_factors(settings: PerturbationSettings) -> list[float]:
    """The 256 factors, in key order before shuffling: sizes spread evenly over the
    `magnitude_noise` range, each once up and once down, so their mean is zero."""
    low, high = settings.magnitude_noise
    half = KEY_RANGE // 2
    sizes = [low + (high - low) * ((i + 0.5) / half) for i in range(half)]
    return [*sizes, *(-size for size in sizes)]


@functools.lru_cache(maxsize=64)
def magnitude_noise_table(settings: PerturbationSettings, measure: str) -> pl.DataFrame:
    """Per magnitude key (0-255) of `measure`: its `factor` (times the cell's largest
    contribution) and its `count_noise` (a large count's p-table perturbation).

    Both columns are shuffled by a seed from the measure's name, independently, so the
    factor's sign is no bit of the key, the two noises are unrelated, and two measures summed
    over the same units (the same key) get unrelated noise. The shuffle is public; what hides
    a cell's noise is its key, a sum of record keys no analyst can see."""
    seed = hashlib.sha256(f"uprnlink-magnitude-noise/{measure}".encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    factors = _magnitude_factors(settings)
    rng.shuffle(factors)
    large = _pvalues(settings)[(MAX_PCV - 1) * KEY_RANGE : MAX_PCV * KEY_RANGE].to_list()
    rng.shuffle(large)
    return pl.DataFrame(
        {"factor": factors, "count_noise": large},
        schema={"factor": pl.Float64, "count_noise": pl.Int64},
    )


def magnitude_factor_expr(mkey: pl.Expr, settings: PerturbationSettings, measure: str) -> pl.Expr:
    """A cell's magnitude factor for `measure` from its magnitude key (0-255)."""
    table = magnitude_noise_table(settings, measure)
    return pl.lit(table["factor"]).gather(mkey.cast(pl.Int64))


def perturb_sums(
    cells: pl.DataFrame,
    settings: PerturbationSettings,
    *,
    measure: str,
    total: str,
    largest: str,
    mkey: str,
    shown_count: str,
    out: str,
) -> pl.DataFrame:
    """A sum of `measure` perturbed by its largest contribution times the cell's magnitude
    factor plus a count's noise, rounded and never below zero; withheld where the cell's
    perturbed count is (`shown_count` null)."""
    key = pl.col(mkey).cast(pl.Int64).fill_null(0)
    factor = magnitude_factor_expr(key, settings, measure)
    count_noise = magnitude_noise_table(settings, measure)["count_noise"]
    extra = pl.lit(count_noise).gather(key).cast(pl.Float64)
    noisy = pl.col(total).cast(pl.Float64) + pl.col(largest).cast(pl.Float64) * factor + extra
    value = pl.max_horizontal(noisy.round(0), pl.lit(0.0)).cast(pl.Int64)
    return cells.with_columns(
        pl.when(pl.col(shown_count).is_null() | pl.col(total).is_null())
        .then(None)
        .otherwise(value)
        .alias(out)
    )
