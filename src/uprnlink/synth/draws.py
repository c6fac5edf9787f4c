"""Seeded random columns for polars, drawn from a `random.Random` so runs repeat exactly."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import polars as pl
import pyarrow as pa

_TWO_POW_53 = 9007199254740992.0


def uniform(rng: random.Random, n: int, name: str = "u") -> pl.Series:
    """n floats uniform on [0, 1), from the generator's bytes (no global or hash-based state)."""
    if n == 0:
        return pl.Series(name, [], dtype=pl.Float64)
    buf = pa.py_buffer(rng.randbytes(8 * n))
    raw = pl.Series(name, pa.Array.from_buffers(pa.uint64(), n, [None, buf]))
    return ((raw // 2048).cast(pl.Float64) / _TWO_POW_53).alias(name)


def uniforms(rng: random.Random, n: int, names: Sequence[str]) -> pl.DataFrame:
    """A frame of independent uniform columns, one per name."""
    return pl.DataFrame([uniform(rng, n, name) for name in names])


def weighted_index(u: pl.Series, weights: Sequence[float]) -> pl.Series:
    """Index into `weights` chosen with those weights, one per uniform in u."""
    total = float(sum(weights))
    cum: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    cum[-1] = math.inf
    idx = pl.Series(cum).search_sorted(u, side="right")
    return idx.clip(0, len(weights) - 1).cast(pl.Int64)


def with_poisson_counts(
    frame: pl.DataFrame, lam: str, u: str, out: str, max_k: int = 48
) -> pl.DataFrame:
    """frame with column `out`: Poisson(lam) counts by inverting the CDF at uniform u."""
    f = frame.with_columns((-pl.col(lam)).exp().alias("_p")).with_columns(
        pl.col("_p").alias("_cdf"), pl.lit(0, dtype=pl.Int64).alias(out)
    )
    for k in range(max_k):
        f = f.with_columns(
            (pl.col(out) + (pl.col(u) > pl.col("_cdf")).cast(pl.Int64)).alias(out),
            (pl.col("_p") * pl.col(lam) / (k + 1)).alias("_p"),
        ).with_columns((pl.col("_cdf") + pl.col("_p")).alias("_cdf"))
    return f.drop("_p", "_cdf")
