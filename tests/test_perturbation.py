"""Cell-key perturbation: the p-table, the ONS method's answers, and what differencing leaves.

The ONS publishes its method as the `cell-key-perturbation` package; the test that matters
most here runs it and our table builder on the same microdata, record keys and p-table and
asks for the same perturbed cells.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.errors import ConfigError
from uprnlink.publish.perturbation import (
    KEY_RANGE,
    MAX_PCV,
    PerturbationSettings,
    magnitude_factor_expr,
    magnitude_noise_table,
    noise_distribution,
    perturb_counts,
    perturb_sums,
    ptable,
)
from uprnlink.publish.tabulation import (
    TableSpec,
    protect_table,
    table_sql,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ptable.json").read_text())
DEFAULT = PerturbationSettings()


# ------------------------------------------------------------------------------ p-table


def test_the_default_ptable_is_the_pinned_one() -> None:
    """Perturbed values stay the same from release to release only while the p-table does."""
    table = ptable(DEFAULT)
    assert DEFAULT.describe() == VECTORS["settings"]
    assert hashlib.sha256(table.write_csv().encode()).hexdigest() == VECTORS["sha256_of_csv"]
    for value, row in VECTORS["rows"].items():
        assert table.filter(pl.col("pcv") == int(value))["pvalue"].to_list() == row
    assert table.filter(pl.col("pcv") == 100)["pvalue"].to_list() == VECTORS["generic_row"]


@pytest.mark.parametrize(
    "s",
    [
        DEFAULT,
        PerturbationSettings(max_noise=5, variance=4.0, no_small_values=0, threshold=0),
        PerturbationSettings(max_noise=2, variance=1.0, no_small_values=2),
    ],
    ids=["default", "wide", "narrow"],
)
def test_ptable_rows_are_bounded_unbiased_and_never_small(s: PerturbationSettings) -> None:
    table = ptable(s)
    assert table.height == MAX_PCV * KEY_RANGE
    assert set(table["ckey"].unique()) == set(range(KEY_RANGE))
    perturbed = table["pcv"] + table["pvalue"]
    assert table["pvalue"].abs().max() <= s.max_noise
    assert perturbed.min() >= 0
    assert not perturbed.is_between(1, s.no_small_values).any() if s.no_small_values else True
    rows = table.group_by("pcv").agg(
        pl.col("pvalue").mean().alias("bias"), pl.col("pvalue").var(ddof=0).alias("var")
    )
    # Unbiased to within one cell key's worth of the largest move.
    assert rows["bias"].abs().max() <= s.max_noise / KEY_RANGE
    generic = rows.filter(pl.col("pcv") > s.max_noise + s.no_small_values + 1)
    assert generic["var"].min() == pytest.approx(s.variance, abs=0.1)


def test_small_values_distributions() -> None:
    """1 and 2 go to 0 or 3+ and stay unbiased: no perturbed 1s and 2s (ONS practice)."""
    one = noise_distribution(1, DEFAULT)
    assert set(one) <= {0, 3, 4}
    assert sum(v * p for v, p in one.items()) == pytest.approx(1.0)
    two = noise_distribution(2, DEFAULT)
    assert sum(v * p for v, p in two.items()) == pytest.approx(2.0)


def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match="max_noise"):
        PerturbationSettings(max_noise=0)
    with pytest.raises(ConfigError, match="variance"):
        PerturbationSettings(max_noise=2, variance=9)
    with pytest.raises(ConfigError, match="no_small_values"):
        PerturbationSettings(max_noise=2, variance=1.0, no_small_values=3)
    with pytest.raises(ConfigError, match="magnitude_noise"):
        PerturbationSettings(magnitude_noise=(1.0, 0.5))


# ------------------------------------------------------------------- the ONS package


def _microdata(rows: int, seed: int) -> pl.DataFrame:
    """Units with two categorical variables and a geography, skewed so cells run from empty
    through single units to well above 750 (where the p-table rows are reused)."""
    rng = random.Random(seed)
    areas = [f"E0100{i:04d}" for i in range(6)]
    return pl.DataFrame(
        {
            "lsoa": [rng.choices(areas, weights=[60, 20, 10, 6, 3, 1])[0] for _ in range(rows)],
            "sex": [rng.choice(["F", "M"]) for _ in range(rows)],
            "age_group": [
                rng.choices(
                    ["00-04", "05-15", "16-17", "18-64", "65-84", "85+"],
                    weights=[6, 13, 2, 60, 17, 2],
                )[0]
                for _ in range(rows)
            ],
            "emergency_admissions": [rng.choice([0, 0, 0, 0, 1, 1, 2, 5]) for _ in range(rows)],
            "rkey": [rng.randrange(KEY_RANGE) for _ in range(rows)],
            "rkey_m": [rng.randrange(KEY_RANGE) for _ in range(rows)],
        }
    )


def _categories(frame: pl.DataFrame, dims: list[str]) -> dict[str, list[str]]:
    return {d: sorted(frame[d].unique().to_list()) for d in dims}


def _ours(frame: pl.DataFrame, spec: TableSpec, s: PerturbationSettings) -> pl.DataFrame:
    con = duckdb.connect()
    con.register("units", frame.to_arrow())
    con.execute("CREATE SCHEMA tab; CREATE TABLE tab.residents AS SELECT * FROM units")
    raw = pl.from_arrow(con.sql(table_sql(spec)).to_arrow_table())
    assert isinstance(raw, pl.DataFrame)
    known = _categories(frame, list(spec.dimensions))
    return protect_table(raw, spec, known, s).frame


@pytest.mark.parametrize("threshold", [10, 0])
def test_our_tables_match_the_ons_package_on_the_same_data_and_ptable(threshold: int) -> None:
    ons = pytest.importorskip("cell_key_perturbation.create_perturbed_table")
    pd = pytest.importorskip("pandas")
    s = PerturbationSettings(threshold=threshold)
    micro = _microdata(12_000, seed=3)
    dims = ["lsoa", "sex", "age_group"]
    spec = TableSpec("residents", dimensions=tuple(dims))
    theirs = ons.create_perturbed_table(
        data=micro.to_pandas(),
        ptable=ptable(s).to_pandas(),
        geog=["lsoa"],
        tab_vars=["sex", "age_group"],
        record_key="rkey",
        threshold=threshold,
    )
    theirs_pl = pl.from_pandas(
        theirs[[*dims, "pre_sdc_count", "count"]]
        .astype({"count": "float64"})
        .replace({pd.NA: None})
    ).with_columns(pl.col("count").cast(pl.Int64))
    ours = _ours(micro, spec, s)
    both = ours.join(theirs_pl, on=dims, how="full", coalesce=True)
    assert both.height == ours.height == theirs_pl.height
    assert both.filter(pl.col("pre_sdc_count") > MAX_PCV).height > 0  # rows 501-750 reused
    assert both.filter(pl.col("pre_sdc_count").is_between(1, 9)).height > 0
    mismatch = both.filter(pl.col("count").ne_missing(pl.col("count_right")))
    assert mismatch.height == 0, mismatch
    # The perturbation did change cells (the test would pass on an identity p-table too).
    assert both.filter(pl.col("count").ne_missing(pl.col("pre_sdc_count"))).height > 0


# --------------------------------------------------------------- consistency and noise


def test_the_same_units_get_the_same_value_in_every_table() -> None:
    """A cell's value depends on its units only: a filter, a margin or another layout that
    holds the same units gives the same number."""
    micro = _microdata(5_000, seed=11)
    crossed = _ours(
        micro, TableSpec("residents", dimensions=("sex", "age_group"), totals=True), DEFAULT
    )
    filtered = _ours(
        micro,
        TableSpec("residents", dimensions=("age_group",), filters=(("sex", ("F",)),)),
        DEFAULT,
    )
    by_age = _ours(micro, TableSpec("residents", dimensions=("age_group",)), DEFAULT)
    women = crossed.filter(pl.col("sex") == "F").drop("sex")
    assert women.filter(pl.col("age_group") != "Total").equals(filtered)
    assert (
        crossed.filter(pl.col("sex") == "Total")
        .drop("sex")
        .filter(pl.col("age_group") != "Total")
        .equals(by_age)
    )


def test_a_unit_added_to_a_cell_is_hidden_by_noise() -> None:
    """Two tables whose cells differ by one unit: the best guess at whether the unit is there,
    from the two perturbed values, is right little more often than a coin (exact, from the
    p-table: every pair of cell keys is equally likely)."""
    table = ptable(DEFAULT)
    for n in (12, 40, 300, 900):
        base = table.filter(pl.col("pcv") == (n if n <= MAX_PCV else (n - 1) % 250 + 501))
        plus = table.filter(pl.col("pcv") == (n + 1 if n + 1 <= MAX_PCV else n % 250 + 501))
        p = base["pvalue"].value_counts().rows()
        q = plus["pvalue"].value_counts().rows()

        # The observed difference d = (n + 1 + b) - (n + a) with the unit, (n + b') - (n + a)
        # without: both convolutions of the same noise, shifted by one.
        def dist(rows_a, rows_b, shift):
            out: dict[int, float] = {}
            for va, ca in rows_a:
                for vb, cb in rows_b:
                    d = vb - va + shift
                    out[d] = out.get(d, 0.0) + ca * cb / KEY_RANGE**2
            return out

        with_unit = dist(p, q, 1)
        without = dist(p, p, 0)
        accuracy = 0.5 + 0.25 * sum(
            abs(with_unit.get(d, 0) - without.get(d, 0)) for d in set(with_unit) | set(without)
        )
        assert accuracy < 0.62, (n, accuracy)


def test_magnitude_noise_is_unbiased_and_never_small() -> None:
    keys = pl.DataFrame({"k": list(range(KEY_RANGE))})
    factors = keys.select(magnitude_factor_expr(pl.col("k"), DEFAULT, "people.x").alias("f"))["f"]
    assert abs(factors.mean() or 0.0) < 1e-9
    assert factors.abs().min() >= 0.5 and factors.abs().max() <= 1.5
    table = magnitude_noise_table(DEFAULT, "people.x")
    assert table["count_noise"].sum() == 0 and table["count_noise"].abs().max() <= 3
    cells = pl.DataFrame(
        {"total": [100, 3, 50], "largest": [5, 3, 50], "mkey": [1, 2, 3], "shown": [20, 12, None]}
    )
    out = perturb_sums(
        cells,
        DEFAULT,
        measure="people.x",
        total="total",
        largest="largest",
        mkey="mkey",
        shown_count="shown",
        out="s",
    )["s"].to_list()
    assert abs(out[0] - 100) <= 1.5 * 5 + 3 + 1  # 0.5-1.5 of the largest (5), plus a count's
    assert out[1] >= 0
    assert out[2] is None  # withheld with its count


def _sum_noise(measure: str, total: int, largest: int) -> list[int]:
    """The shown sum minus the true one for each of the 256 magnitude keys."""
    cells = pl.DataFrame(
        {
            "total": [total] * KEY_RANGE,
            "largest": [largest] * KEY_RANGE,
            "mkey": list(range(KEY_RANGE)),
            "shown": [100] * KEY_RANGE,
        }
    )
    out = perturb_sums(
        cells,
        DEFAULT,
        measure=measure,
        total="total",
        largest="largest",
        mkey="mkey",
        shown_count="shown",
        out="s",
    )
    return [s - total for s in out["s"].to_list()]


def test_a_sum_of_ones_does_not_give_away_its_parity() -> None:
    """Attack: a sum whose contributions are all 0 or 1 (an indicator, e.g. admissions in a
    small cell) once moved by exactly ±1, so the shown sum's parity gave the true one's. Now
    it moves like a count: both parities, zero included, and S and S+1 look alike."""
    noise = _sum_noise("people.emergency_admissions", 40, 1)
    assert {d % 2 for d in noise} == {0, 1}
    assert 0 in noise
    shown_s = Counter(40 + d for d in noise)
    shown_s1 = Counter(41 + d for d in _sum_noise("people.emergency_admissions", 41, 1))
    # Best guess of S versus S+1 from the shown value: close to a coin toss.
    accuracy = 0.5 + 0.25 * sum(
        abs(shown_s[v] - shown_s1[v]) / KEY_RANGE for v in set(shown_s) | set(shown_s1)
    )
    assert accuracy < 0.7, accuracy


def test_the_noises_direction_is_no_bit_of_the_key() -> None:
    """Attack: the sign came from the key's low bit, the size from the rest. Now neither
    the low bit nor any other single bit of the key tells the direction."""
    noise = _sum_noise("households.residents", 1000, 20)
    for bit in range(8):
        ups = [d > 0 for k, d in enumerate(noise) if (k >> bit) & 1]
        downs = [d > 0 for k, d in enumerate(noise) if not (k >> bit) & 1]
        assert 0.3 < sum(ups) / len(ups) < 0.7, bit
        assert 0.3 < sum(downs) / len(downs) < 0.7, bit


def test_two_measures_over_the_same_units_get_unrelated_noise() -> None:
    """Attack: two sums over the same units share one magnitude key; with one factor for
    both, a measure the analyst can bound gave away the other's factor. Now each measure
    shuffles its own lookup: the factors agree for about as many keys as chance allows."""
    a = magnitude_noise_table(DEFAULT, "people.ltc_count")["factor"].to_list()
    b = magnitude_noise_table(DEFAULT, "people.emergency_admissions")["factor"].to_list()
    same_sign = sum((x > 0) == (y > 0) for x, y in zip(a, b, strict=True)) / KEY_RANGE
    assert 0.35 < same_sign < 0.65
    close = sum(abs(x - y) < 0.05 for x, y in zip(a, b, strict=True))
    assert close < 20
    assert sorted(a) == sorted(b)  # the same distribution, differently keyed


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    keys=st.lists(st.integers(min_value=0, max_value=255), min_size=40, max_size=40),
)
def test_perturbed_counts_respect_the_threshold_and_bounds(counts, keys) -> None:
    cells = pl.DataFrame({"n": counts, "ckey": keys[: len(counts)]})
    out = perturb_counts(cells, DEFAULT, count="n", ckey="ckey", out="count")
    for true, shown in zip(counts, out["count"].to_list(), strict=True):
        if shown is None:
            continue
        assert shown >= DEFAULT.threshold
        assert abs(shown - true) <= DEFAULT.max_noise
