"""The output rules on small tables: each rule, the [c] exports and the text table, and our
verdicts against ACRO's (the output-checking library UK TREs use) on the same tables."""

from __future__ import annotations

import io
import random

import polars as pl
import pytest

from uprnlink.publish.outputs import (
    WITHHELD,
    OutputRules,
    OutputShape,
    RoleRights,
    check_output,
    dominance_findings,
    dominance_sql,
    format_table,
    shape_of_sql,
    to_csv_bytes,
    to_parquet_bytes,
)

RULES = OutputRules()


def test_sql_shapes_are_read_from_duckdbs_parse() -> None:
    sql = (
        "SELECT tenure, imd_decile AS decile, count(*) AS households, sum(residents) AS r, "
        "round(avg(residents), 2) AS mean_size, max(residents) AS biggest "
        "FROM households GROUP BY tenure, imd_decile ORDER BY 1"
    )
    cols = ["tenure", "decile", "households", "r", "mean_size", "biggest"]
    shape = shape_of_sql(sql, cols, ["households"])
    assert shape.dimensions == ("tenure", "decile")
    assert shape.counts == ("households",)
    assert shape.sums == ("r",)
    assert shape.statistics == ("mean_size",)
    assert shape.extremes == ("biggest",)
    assert shape.unit_count == "households"
    companion = dominance_sql(sql, shape, cols)
    assert companion is not None and "max(residents, 2)" in companion
    assert "ORDER BY" not in companion
    assert shape_of_sql("SELECT * FROM households", ["a"], ["households"]).row_level
    assert shape_of_sql("SELECT * FROM run_info", ["a"], ["run_info"]).source == "metadata"
    summary = shape_of_sql(
        "SELECT * FROM area_summary WHERE ward = 'W1'",
        ["lsoa", "households", "overcrowded_pct"],
        ["area_summary"],
    )
    assert not summary.row_level and summary.withheld == ("households", "overcrowded_pct")
    assert shape_of_sql("SELECT 1 UNION SELECT 2", ["x"], []).problem
    safe = shape_of_sql(
        "SELECT tenure, safe_count(count(*)) AS n FROM households GROUP BY ALL",
        ["tenure", "n"],
        ["households"],
    )
    assert safe.withheld == ("n",) and safe.dimensions == ("tenure",)


def test_each_rule() -> None:
    cells = pl.DataFrame({"t": ["a", "a", "b", "b"], "d": [1, 2, 1, 2], "n": [12, None, 30, 5]})
    shape = OutputShape(dimensions=("t", "d"), counts=("n",), withheld=("n",))
    verdict = check_output(cells, shape, RULES)
    assert verdict.rules == ["secondary", "threshold"]
    assert all("5" not in f.message.split(":")[1][:3] for f in verdict.findings)
    ok = pl.DataFrame({"t": ["a", "a", "b", "b"], "d": [1, 2, 1, 2], "n": [12, 0, 30, 15]})
    assert check_output(ok, shape, RULES).passed
    assert check_output(ok, shape, OutputRules(zeros_disclosive=True)).rules == ["threshold"]
    rows = OutputShape(row_level=True)
    assert check_output(ok, rows, RULES).rules == ["row-level"]
    assert check_output(ok, rows, RULES, rights=RoleRights(row_level_outputs=True)).passed
    means = OutputShape(dimensions=("t",), statistics=("m",))
    frame = pl.DataFrame({"t": ["a"], "m": [3.5]})
    assert check_output(frame, means, RULES).rules == ["no-count"]
    sums = OutputShape(dimensions=("t",), counts=("n",), sums=("s",), unit_count="n")
    frame = pl.DataFrame({"t": ["a", "b"], "n": [20, 30], "s": [1000.0, 300.0]})
    contributions = pl.DataFrame({"t": ["b", "a"], "s": [[12.0, 11.0], [950.0, 10.0]]})
    verdict = check_output(frame, sums, RULES, contributions=contributions)
    assert verdict.rules == ["dominance"] and {f.cells for f in verdict.findings} == {1}
    assert check_output(frame, sums, RULES).rules == ["dominance"]  # not checkable: refused
    assert check_output(frame, OutputShape(problem="x"), RULES).rules == ["shape"]


def test_withheld_cells_are_marked_in_every_export() -> None:
    frame = pl.DataFrame(
        {"area": ["E1", None, "E3"], "n": [12, None, 40], "rate": [1.5, None, 2.25]}
    )
    csv = to_csv_bytes(frame, ["n", "rate"]).decode()
    assert csv.splitlines()[2] == f",{WITHHELD},{WITHHELD}"  # a missing area stays empty
    back = pl.read_parquet(io.BytesIO(to_parquet_bytes(frame, ["n", "rate"])))
    assert back["n_withheld"].to_list() == [False, True, False]
    assert back["n"].to_list() == [12, None, 40]
    assert "area_withheld" not in back.columns
    text = format_table(frame, ["n", "rate"])
    header = text.splitlines()[0]
    assert header.split() == ["area", "n", "rate"]
    assert "[c]" in text and "3 rows" in text and "confidential" in text


def test_long_names_are_not_squeezed() -> None:
    frame = pl.DataFrame(
        {"emergency_admissions_per_1000": [121.9], "owner_or_private_or_unknown": ["x"]}
    )
    text = format_table(frame)
    assert "emergency_admissions_per_1000" in text and "owner_or_private_or_unknown" in text
    assert "1 row" in text and "confidential" not in text


# ----------------------------------------------------------------------------- ACRO

acro = pytest.importorskip("acro")


def _population(seed: int, n: int = 400) -> pl.DataFrame:
    rng = random.Random(seed)
    a = rng.choices(["x", "y", "z", "w"], weights=[50, 30, 4, 2], k=n)
    b = rng.choices(["p", "q", "r"], weights=[60, 35, 5], k=n)
    v = [rng.randint(1, 100) for _ in range(n)]
    for i in rng.sample(range(n), 3):
        v[i] = 50_000  # a few dominant contributors
    return pl.DataFrame({"a": a, "b": b, "v": v})


def _acro_cells(df: pl.DataFrame, values: bool) -> dict[str, int]:
    import pandas as pd

    checker = acro.ACRO(suppress=False)
    pdf = pd.DataFrame(df.to_dict(as_series=False))
    if values:
        checker.crosstab(pdf.a, pdf.b, values=pdf.v, aggfunc="sum")
    else:
        checker.crosstab(pdf.a, pdf.b)
    cells = checker.results.get_index(-1).sdc["cells"]
    return {k: len(v) for k, v in cells.items()}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # ACRO's own pandas calls
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_our_verdicts_match_acros_on_the_same_tables(seed: int) -> None:
    df = _population(seed)
    # Every cell of the full cross-tabulation (ACRO's tables have them all, zeros included).
    grid = df.select("a").unique().join(df.select("b").unique(), how="cross")
    cells = grid.join(
        df.group_by("a", "b").agg(
            pl.len().alias("n"),
            pl.col("v").sum().alias("total"),
            pl.col("v").top_k(2).alias("top"),
        ),
        on=["a", "b"],
        how="left",
    ).with_columns(pl.col("n").fill_null(0))
    shape = OutputShape(dimensions=("a", "b"), counts=("n",))
    # ACRO's defaults (default.yaml): threshold 10, N-K n=2 k=0.9, p% 0.1, and zeros
    # disclosive; our policy shows zeros (suppress_zero = false), so compare like with like.
    ours = check_output(cells, shape, OutputRules(zeros_disclosive=True))
    ours_small = sum(f.cells for f in ours.findings if f.rule == "threshold")
    frequency = _acro_cells(df, values=False)
    assert ours_small == frequency["MinimumThresholdCheck"]
    assert frequency.get("RequiredZeroCheck", 0) == 0

    magnitude = _acro_cells(df, values=True)
    present = cells.filter(pl.col("n") > 0)
    found = dominance_findings(
        present["total"].cast(pl.Float64).to_list(), present["top"].to_list(), RULES, "v"
    )
    nk = sum(f.cells for f in found if "N-K" in f.message)
    p = sum(f.cells for f in found if "p%" in f.message)
    assert nk == magnitude["NKCheck"]
    assert p == magnitude["PPercentCheck"]
