"""The differencing attacker: every published table solved together by linear programming.

An attacker who holds every protected summary (their rows, columns and grand totals, and the
as-at macros' answers) writes each shown count as an equation over the finest cells they are
sums of, adds what they know for sure (counts are >= 0, a part is never more than its whole,
a household has at least one resident, a published row has at least one household) and asks,
for each withheld count, how small and how large it can be. A feasible interval of width 0
recovers the count exactly; a narrow one narrows it. scipy's HiGHS solves the linear
relaxation; the integer interval is inside [ceil(lo), floor(hi)].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from scipy.optimize import linprog
from scipy.sparse import coo_array


@dataclass(frozen=True)
class Table:
    """A published table: its key columns and counts as shown (NULL = withheld)."""

    name: str
    keys: tuple[str, ...]
    frame: pl.DataFrame


@dataclass(frozen=True)
class Bound:
    """How far the attacker can narrow one withheld count."""

    table: str
    key: tuple[object, ...]
    measure: str
    low: float
    high: float

    @property
    def width(self) -> int:
        """Width of the integer interval the relaxation allows (0: recovered)."""
        if math.isinf(self.high):
            return 2**31
        return math.floor(self.high + 1e-6) - math.ceil(self.low - 1e-6)


def attack(
    base_keys: pl.DataFrame,
    tables: Sequence[Table],
    measures: Sequence[str],
    *,
    parts: Sequence[tuple[str, str]] = (),
    at_least: Sequence[tuple[str, str]] = (),
    row_measure: str | None = "households",
) -> list[Bound]:
    """Bounds on every withheld count of `tables` from all of them together.

    `base_keys` lists the finest cells (one row per combination of every key any table uses;
    give the attacker's view: every combination that could exist). `parts` are (part, whole)
    pairs and `at_least` (small, large) pairs that hold in every finest cell. A table row
    that is published shows its cell exists: `row_measure` is then at least 1 there.
    """
    base = base_keys.with_row_index("_b")
    nb = base.height
    mi = {m: i for i, m in enumerate(measures)}
    nvar = nb * len(measures)

    def var(m: str, b: int) -> int:
        return mi[m] * nb + b

    eq_rows: list[list[int]] = []
    eq_rhs: list[float] = []
    ub_rows: list[dict[int, float]] = []
    ub_rhs: list[float] = []
    targets: list[tuple[str, tuple[object, ...], str, list[int]]] = []
    for t in tables:
        cells = _members(base, t) if t.keys else [list(range(nb))] * t.frame.height
        for r, row in enumerate(t.frame.iter_rows(named=True)):
            key = tuple(row[k] for k in t.keys)
            for m in measures:
                if m not in row:
                    continue
                idx = [var(m, b) for b in cells[r]]
                if row[m] is None:
                    targets.append((t.name, key, m, idx))
                else:
                    eq_rows.append(idx)
                    eq_rhs.append(float(row[m]))
            if row_measure is not None and row_measure in mi:
                ub_rows.append({var(row_measure, b): -1.0 for b in cells[r]})
                ub_rhs.append(-1.0)
    for small, large in [*parts, *at_least]:
        for b in range(nb):
            ub_rows.append({var(small, b): 1.0, var(large, b): -1.0})
            ub_rhs.append(0.0)

    def matrix(rows: list[dict[int, float]]) -> coo_array | None:
        if not rows:
            return None
        r = [i for i, row in enumerate(rows) for _ in row]
        c = [j for row in rows for j in row]
        v = [x for row in rows for x in row.values()]
        return coo_array((v, (r, c)), shape=(len(rows), nvar)).tocsr()

    a_eq = matrix([dict.fromkeys(row, 1.0) for row in eq_rows])
    a_ub = matrix(ub_rows)
    out = []
    for name, key, m, idx in targets:
        ends = []
        for sign in (1.0, -1.0):
            c = [0.0] * nvar
            for j in idx:
                c[j] = sign
            res = linprog(
                c,
                A_ub=a_ub,
                b_ub=ub_rhs if a_ub is not None else None,
                A_eq=a_eq,
                b_eq=eq_rhs if a_eq is not None else None,
                bounds=(0, None),
                method="highs",
            )
            assert res.status in (0, 3), (name, key, m, res.message)
            ends.append(sign * res.fun if res.status == 0 else math.inf)
        out.append(Bound(name, key, m, ends[0], ends[1]))
    return out


def _members(base: pl.DataFrame, t: Table) -> list[list[int]]:
    """The finest cells each row of `t` is the sum of."""
    members = (
        t.frame.select(*t.keys)
        .with_row_index("_r")
        .join(base.select("_b", *t.keys), on=list(t.keys), how="left", nulls_equal=True)
        .group_by("_r")
        .agg(pl.col("_b").drop_nulls())
        .sort("_r")
    )
    return [list(x) for x in members.get_column("_b").to_list()]


def recovered(bounds: Sequence[Bound], *, zeros_shown: bool = True) -> list[Bound]:
    """The withheld counts the attacker pins to one value.

    With `zeros_shown` (the policy shows zeros), a count pinned to 0 is left out: a zero is
    publishable, and such a count is withheld only to protect its difference from a whole
    that is itself withheld (a pinned whole is reported in its own right).
    """
    return [b for b in bounds if b.width <= 0 and not (zeros_shown and b.high < 0.5)]
