"""Statistical disclosure control for published counts, driven by `governance/policy.toml`.

Three steps, applied to every count a summary shows:

1. **Primary suppression**: a count from 1 to `min_count - 1` (and 0 too if `suppress_zero`) is
   withheld (NULL).
2. **Secondary (complementary) suppression**: a table's cells add up to its margins (row,
   column and grand totals, published or not). Whenever exactly one entry of such an equation is
   withheld, it could be recovered by subtraction, so another entry is withheld too: the
   smallest non-zero cell of the equation, else its total. This repeats over every equation
   until none has exactly one withheld entry. Every margin is treated as known unless it is
   itself withheld, because margins are easy to obtain elsewhere (other summaries, run counts,
   other publications).
3. **Rounding** (optional, `round_to`): every count still shown is rounded to the nearest
   multiple (halves round up). Rates are computed from the rounded counts.

Suppression decisions are made on the exact counts; rounding is applied afterwards. The
secondary step is the usual heuristic ("at least two withheld entries in every line"). It
prevents recovery from any single equation; it does not compute protection intervals against
an attacker who combines many equations (as tau-ARGUS's optimal methods do), which is why
outputs still go through output checking before they leave the partnership.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import polars as pl

from uprnlink.errors import PublishError
from uprnlink.policy import DeathEndPrecision, read_governance_policy


@dataclass(frozen=True)
class Preset:
    """A named disclosure rule (see governance/roles.md, "Disclosure presets")."""

    min_count: int
    suppress_zero: bool
    round_to: int
    secondary: bool
    description: str


# The rules as their owners publish them; governance/roles.md cites the sources.
PRESETS: dict[str, Preset] = {
    "threshold_10": Preset(
        min_count=10,
        suppress_zero=False,
        round_to=1,
        secondary=True,
        description=(
            "ONS Secure Research Service / SDAP 'rules of thumb': at least 10 units behind "
            "every published count; 1-9 withheld, with secondary suppression so no withheld "
            "count can be recovered from totals; no rounding. The uprnlink default."
        ),
    ),
    "nhs_england_hes": Preset(
        min_count=8,
        suppress_zero=False,
        round_to=5,
        secondary=False,
        description=(
            "NHS England (formerly NHS Digital) HES/ECDS sub-national outputs since September "
            "2018: 1-7 withheld, every other count rounded to the nearest 5, zero shown; "
            "rounding replaces secondary suppression; rates from the rounded counts."
        ),
    ),
    "nhs_england_hes_secondary": Preset(
        min_count=8,
        suppress_zero=False,
        round_to=5,
        secondary=True,
        description=(
            "As nhs_england_hes, plus secondary suppression: for small-area tables whose "
            "totals are published elsewhere. Close to OpenSAFELY's output rule (counts of 7 "
            "or fewer redacted, others rounded to 5)."
        ),
    ),
    "hes_pre_2018": Preset(
        min_count=6,
        suppress_zero=False,
        round_to=1,
        secondary=True,
        description=(
            "The HES rule before September 2018: 1-5 withheld with secondary suppression, no "
            "rounding. For reproducing older outputs only."
        ),
    ),
}
DEFAULT_PRESET = "threshold_10"


#: Default age bands (lowest age of each band): five-year bands to 85+, as ONS publishes.
DEFAULT_AGE_BANDS = (*range(0, 85, 5), 85)
#: How a residence spell ended by a death is published: its end moved back to the end of the
#: month (quarter, year) before the death, so no published date falls on or next to it.
DEATH_END_PRECISIONS: tuple[str, ...] = get_args(DeathEndPrecision)


@dataclass(frozen=True)
class DisclosurePolicy:
    """The disclosure rule from governance policy: threshold, zeros, rounding, secondary;
    and what record-level views may show: age bands, spell ends at death, uniqueness."""

    min_count: int = 10
    suppress_zero: bool = False
    round_to: int = 1
    secondary: bool = True
    # Which preset the values came from: a label, not part of the rule itself.
    preset: str | None = field(default=None, compare=False)
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS
    death_end_precision: str = "month"
    max_unique_share: float = 0.05

    def is_primary(self, value: int | None) -> bool:
        """True when `value` may not be shown at all (a small count)."""
        if value is None:
            return False
        low = 0 if self.suppress_zero else 1
        return low <= value <= self.min_count - 1

    def rounded(self, value: int) -> int:
        """`value` rounded to the nearest multiple of `round_to` (halves up)."""
        r = self.round_to
        return value if r <= 1 else (value + r // 2) // r * r

    def shown_expr(self, column: str) -> pl.Expr:
        """A count column as published under primary suppression and rounding only."""
        v = pl.col(column).cast(pl.Int64)
        low = 0 if self.suppress_zero else 1
        r = self.round_to
        shown = v if r <= 1 else (v + r // 2) // r * r
        return (
            pl.when(v.is_between(low, self.min_count - 1)).then(None).otherwise(shown).alias(column)
        )

    def suppress_sql(self, expr: str) -> str:
        """SQL that shows `expr` only when it is not a small count (primary suppression only)."""
        low = 0 if self.suppress_zero else 1
        return (
            f"CASE WHEN ({expr}) BETWEEN {low} AND {self.min_count - 1} THEN NULL ELSE ({expr}) END"
        )

    def safe_count_sql(self, expr: str) -> str:
        """SQL for a count as published: primary suppression, then rounding."""
        shown = self.suppress_sql(expr)
        r = self.round_to
        if r <= 1:
            return f"CAST({shown} AS BIGINT)"
        return f"CAST((({shown}) + {r // 2}) // {r} * {r} AS BIGINT)"

    def describe(self) -> dict[str, Any]:
        """The rule as plain values (for run_info and reports)."""
        return {
            "preset": self.preset,
            "min_count": self.min_count,
            "suppress_zero": self.suppress_zero,
            "round_to": self.round_to,
            "secondary": self.secondary,
            "age_bands": list(self.age_bands),
            "death_end_precision": self.death_end_precision,
            "max_unique_share": self.max_unique_share,
        }


def read_policy(path: Path) -> DisclosurePolicy:
    """The disclosure rule from a governance policy file: a preset, then explicit keys."""
    d = read_governance_policy(path, PublishError).disclosure
    base = DisclosurePolicy()
    if d.preset is not None:
        p = PRESETS[d.preset]
        base = DisclosurePolicy(p.min_count, p.suppress_zero, p.round_to, p.secondary)
    return DisclosurePolicy(
        min_count=base.min_count if d.min_count is None else d.min_count,
        suppress_zero=base.suppress_zero if d.suppress_zero is None else d.suppress_zero,
        round_to=base.round_to if d.round_to is None else d.round_to,
        secondary=base.secondary if d.secondary is None else d.secondary,
        preset=d.preset,
        age_bands=DEFAULT_AGE_BANDS if d.age_bands is None else d.age_bands,
        death_end_precision=d.death_end_precision,
        max_unique_share=d.max_unique_share,
    )


# ------------------------------------------------------------------------------ the engine
Equation = tuple[int, list[int]]  # (index of the total, indices of the parts that sum to it)


def secondary_suppression(
    values: Sequence[int], withheld: Sequence[bool], equations: Iterable[Equation]
) -> list[bool]:
    """Withhold more entries until no equation has exactly one withheld entry.

    The complement chosen for an equation is a non-zero part still shown: first one that also
    mends another equation left with a single withheld entry (so one cell protects two lines),
    then the smallest (ties: the lower index). If there is none, the total goes, else the
    smallest part (a zero). Entries are only ever added, so the loop ends; the result is
    deterministic for the same input order.
    """
    out = list(withheld)
    eqs = [[t, *parts] for t, parts in equations]
    member_of: dict[int, list[int]] = defaultdict(list)
    for e, members in enumerate(eqs):
        for i in members:
            member_of[i].append(e)

    def single(e: int) -> bool:
        return sum(out[i] for i in eqs[e]) == 1

    changed = True
    while changed:
        changed = False
        for e, (total, *parts) in enumerate(eqs):
            if not single(e):
                continue
            shown = [i for i in parts if not out[i]]
            positive = [i for i in shown if values[i] > 0]
            if positive:
                pick = min(
                    positive,
                    key=lambda i: (-sum(single(f) for f in member_of[i] if f != e), values[i], i),
                )
            elif not out[total]:
                pick = total
            elif shown:
                pick = min(shown)
            else:  # cannot happen: one withheld member means another is shown
                continue
            out[pick] = True
            changed = True
    return out


#: Two primes the withheld entries' equations are solved modulo (`determined_entries`).
SOLVE_PRIMES = (2**61 - 1, 2**31 - 1)


def determined_entries(withheld: Sequence[bool], equations: Iterable[Equation]) -> list[int]:
    """Withheld entries whose value all the equations together fix, whatever the others are.

    The single-line rule of `secondary_suppression` leaves no equation with one withheld
    entry, but several equations can still combine to isolate one (a withheld cell joining two
    otherwise separate suppression cycles of a table is fixed by its row and column totals).
    Solved exactly: the equations restricted to the withheld entries, in reduced row echelon
    form, one connected group of entries at a time; an entry is fixed when its pivot row has no
    other entry. The elimination runs over the integers modulo each of SOLVE_PRIMES (machine
    integers, not fractions: at a million records the rational version took minutes) and an
    entry fixed modulo either prime counts as fixed. An entry fixed over the rationals is fixed
    modulo every prime that divides no denominator of the elimination, so it is never missed
    unless both primes do; the other way, a prime can only add entries (withheld more, never
    shown more). tests/test_differencing.py compares it with the rational elimination.
    """
    rows: list[dict[int, int]] = []
    for total, parts in equations:
        row: dict[int, int] = {}
        for i, coef in ((total, -1), *((p, 1) for p in parts)):
            if withheld[i]:
                row[i] = row.get(i, 0) + coef
        row = {i: c for i, c in row.items() if c}
        if row:
            rows.append(row)
    fixed: set[int] = set()
    for group in _connected_rows(rows):
        for prime in SOLVE_PRIMES:
            fixed.update(_fixed_modulo(group, prime))
    return sorted(fixed)


def _connected_rows(rows: list[dict[int, int]]) -> list[list[dict[int, int]]]:
    """The rows grouped by the entries they share (union-find over the entries)."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row in rows:
        first, *rest = row
        for i in rest:
            parent[find(i)] = find(first)
    groups: dict[int, list[dict[int, int]]] = defaultdict(list)
    for row in rows:
        groups[find(next(iter(row)))].append(row)
    return list(groups.values())


def _fixed_modulo(group: list[dict[int, int]], prime: int) -> list[int]:
    """The entries whose pivot row is the entry alone, in the reduced row echelon form of the
    rows modulo `prime` (Gauss-Jordan).

    Which entries are fixed does not depend on the order of elimination (an entry is fixed
    when its unit vector is in the rows' span), so the order is chosen for speed: the
    shortest rows first, so a total over hundreds of cells is reduced by the short rows'
    pivots instead of filling them in, and an index of the pivot rows holding each entry, so
    eliminating a new pivot touches only those rows. Summaries at 4.9M records: 50 s -> 0.5 s.
    """
    pivots: dict[int, dict[int, int]] = {}
    holders: dict[int, set[int]] = defaultdict(set)  # entry -> pivots whose rows hold it
    for original in sorted(group, key=len):
        row = {j: c % prime for j, c in original.items() if c % prime}
        for p in [p for p in row if p in pivots]:
            _subtract(row, row.pop(p), pivots[p], p, prime)
        if not row:
            continue
        q = min(row)
        inverse = pow(row[q], -1, prime)
        row = {j: c * inverse % prime for j, c in row.items()}
        for r in holders.pop(q, ()):
            prow = pivots[r]
            for j, gone in _subtract(prow, prow.pop(q), row, q, prime):
                (holders[j].discard if gone else holders[j].add)(r)
        for j in row:
            if j != q:
                holders[j].add(q)
        pivots[q] = row
    return [q for q, row in pivots.items() if len(row) == 1]


def _subtract(
    row: dict[int, int], factor: int, pivot_row: dict[int, int], pivot: int, prime: int
) -> list[tuple[int, bool]]:
    """row -= factor * pivot_row modulo `prime`, over the pivot row's entries but its pivot
    (already taken out of `row`); returns the entries that appeared in or left `row` (True:
    left), so the caller can keep its index of rows per entry."""
    changed: list[tuple[int, bool]] = []
    for j, c in pivot_row.items():
        if j == pivot:
            continue
        v = (row.get(j, 0) - factor * c) % prime
        if v:
            if j not in row:
                changed.append((j, False))
            row[j] = v
        elif j in row:
            del row[j]
            changed.append((j, True))
    return changed


def complete_suppression(
    values: Sequence[int],
    withheld: Sequence[bool],
    equations: Sequence[Equation],
    *,
    zeros_shown: bool = True,
) -> list[bool]:
    """Secondary suppression until no equation has one withheld entry and no combination of
    equations fixes a withheld entry (a zero fixed is no disclosure when zeros are shown).

    For a fixed entry another entry of the nearest equation with one shown is withheld (the
    smallest non-zero part shown, else the total, else a zero part), then the single-line
    rule runs again. Entries are only ever added, so the loop ends.
    """
    out = secondary_suppression(values, withheld, equations)
    member_of: dict[int, list[int]] = defaultdict(list)
    for e, (total, parts) in enumerate(equations):
        for i in (total, *parts):
            member_of[i].append(e)
    while True:
        fixed = [i for i in determined_entries(out, equations) if values[i] != 0 or not zeros_shown]
        if not fixed:
            return out
        pick = _nearest_complement(fixed[0], values, out, equations, member_of)
        if pick is None:  # everything connected to it is withheld already
            return out
        out[pick] = True
        out = secondary_suppression(values, out, equations)


def _nearest_complement(
    start: int,
    values: Sequence[int],
    withheld: Sequence[bool],
    equations: Sequence[Equation],
    member_of: dict[int, list[int]],
) -> int | None:
    """An entry to withhold so that `start` is no longer fixed, from the equations nearest to
    it (its own, then those of the withheld entries they share): the smallest non-zero part
    shown in the nearest equation that has one; else a total shown (margins are best kept,
    being published elsewhere too); else a zero part."""
    order: list[int] = []
    seen_entries, seen_equations = {start}, set()
    queue = [start]
    while queue:
        entry = queue.pop(0)
        for e in member_of[entry]:
            if e in seen_equations:
                continue
            seen_equations.add(e)
            order.append(e)
            total, parts = equations[e]
            for i in (total, *parts):
                if withheld[i] and i not in seen_entries:
                    seen_entries.add(i)
                    queue.append(i)
    for e in order:
        positive = [p for p in equations[e][1] if not withheld[p] and values[p] > 0]
        if positive:
            return min(positive, key=lambda p: (values[p], p))
    for e in order:
        if not withheld[equations[e][0]]:
            return equations[e][0]
    for e in order:
        shown = [p for p in equations[e][1] if not withheld[p]]
        if shown:  # only zeros left: a withheld zero unfixes the others
            return min(shown)
    return None


@dataclass(frozen=True)
class Grouping:
    """One level of a table: the dimensions its cells are keyed by."""

    name: str
    dims: tuple[str, ...]
    published: bool = True


@dataclass
class ProtectedTables:
    """Published cells per grouping, and how many cells each step withheld."""

    tables: dict[str, pl.DataFrame]
    stats: list[dict[str, Any]]


@dataclass(frozen=True)
class _CellIndex:
    """Where each cell of each grouping and measure sits in one flat list of cells:
    measure-major, then grouping order, then row order."""

    keys: dict[str, list[tuple[Any, ...]]]
    """Per grouping, the dims of each of its rows (one empty key for a grand total)."""
    offsets: dict[str, int]
    """Per grouping, the position of its first row within one measure."""
    per_measure: int
    """Cells of one measure over all groupings."""

    def at(self, measure: int, grouping: str, row: int) -> int:
        return measure * self.per_measure + self.offsets[grouping] + row


def protect(
    base: pl.DataFrame,
    counts: Sequence[str],
    groupings: Sequence[Grouping],
    relations: Sequence[tuple[str, str]],
    policy: DisclosurePolicy,
    *,
    subsets: Sequence[tuple[str, str]] = (),
) -> ProtectedTables:
    """Apply the disclosure rule to additive counts at several levels of aggregation at once.

    `base` holds the finest cells: one row per combination of every dimension any grouping
    uses, with the `counts` columns (non-negative integers). Each grouping's cells are sums of
    `base`. A relation (child, parent) says every parent cell is the sum of the child cells
    that share its keys (the parent's dims must be a subset of the child's). A subset
    (part, whole) says one count is part of another in every cell (people with asthma of
    children): the difference is a count too, so it must not be a small number either and
    must not be recoverable; it is protected as a hidden third entry of `whole = part + rest`.
    All counts are protected together over all groupings, so a cell shown in two places gets
    the same decision in both. Returns, per published grouping, its dims and counts (withheld
    as NULL, rounded), plus per-grouping statistics.
    """
    by_name = {g.name: g for g in groupings}
    for child, parent in relations:
        if not set(by_name[parent].dims) <= set(by_name[child].dims):
            raise ValueError(f"{parent} is not a margin of {child}")
    for part, whole in subsets:
        if part not in counts or whole not in counts:
            raise ValueError(f"subset {part} of {whole}: both must be counts")
    rests = [f"_{whole}_minus_{part}" for part, whole in subsets]
    base = base.with_columns(
        (pl.col(whole) - pl.col(part)).alias(rest)
        for (part, whole), rest in zip(subsets, rests, strict=True)
    )
    measures = [*counts, *rests]
    frames = _grouping_frames(base, groupings, measures)
    index = _cell_index(frames, groupings)
    equations = [
        *_margin_equations(index, by_name, relations, len(measures)),
        *_subset_equations(index, groupings, subsets, measures, len(counts)),
    ]
    values: list[int] = []
    for measure in measures:
        for g in groupings:
            values += [int(v or 0) for v in frames[g.name].get_column(measure).to_list()]
    primary = [policy.is_primary(v) for v in values]
    withheld = (
        complete_suppression(values, primary, equations, zeros_shown=not policy.suppress_zero)
        if policy.secondary
        else primary
    )
    return _protected_tables(frames, groupings, counts, index, values, primary, withheld, policy)


def _grouping_frames(
    base: pl.DataFrame, groupings: Sequence[Grouping], measures: Sequence[str]
) -> dict[str, pl.DataFrame]:
    """Each grouping's cells: `base` summed over its dims (a grand total: one row, zeros for
    an empty `base`)."""
    agg = [pl.col(c).sum().cast(pl.Int64) for c in measures]
    frames: dict[str, pl.DataFrame] = {}
    for g in groupings:
        if g.dims:
            frames[g.name] = (
                base.group_by(list(g.dims)).agg(agg).sort(list(g.dims), nulls_last=True)
            )
        elif base.height:
            frames[g.name] = base.select(agg)
        else:
            frames[g.name] = pl.DataFrame(
                {c: [0] for c in measures}, schema=dict.fromkeys(measures, pl.Int64)
            )
    return frames


def _cell_index(frames: dict[str, pl.DataFrame], groupings: Sequence[Grouping]) -> _CellIndex:
    offsets: dict[str, int] = {}
    keys: dict[str, list[tuple[Any, ...]]] = {}
    n = 0
    for g in groupings:
        offsets[g.name] = n
        keys[g.name] = list(frames[g.name].select(list(g.dims)).iter_rows()) if g.dims else [()]
        n += len(keys[g.name])
    return _CellIndex(keys, offsets, n)


def _margin_equations(
    index: _CellIndex,
    by_name: dict[str, Grouping],
    relations: Sequence[tuple[str, str]],
    measures: int,
) -> list[Equation]:
    """For each relation and measure, each parent cell as the sum of its child cells."""
    equations: list[Equation] = []
    for child, parent in relations:
        pdims, cdims = by_name[parent].dims, by_name[child].dims
        pos = [cdims.index(d) for d in pdims]
        parent_row = {k: i for i, k in enumerate(index.keys[parent])}
        parts: dict[int, list[int]] = defaultdict(list)
        for i, k in enumerate(index.keys[child]):
            parts[parent_row[tuple(k[p] for p in pos)]].append(i)
        for m in range(measures):
            equations += [
                (index.at(m, parent, prow), [index.at(m, child, i) for i in rows])
                for prow, rows in parts.items()
            ]
    return equations


def _subset_equations(
    index: _CellIndex,
    groupings: Sequence[Grouping],
    subsets: Sequence[tuple[str, str]],
    measures: Sequence[str],
    first_rest: int,
) -> list[Equation]:
    """For each subset and cell, ``whole = part + rest`` (the rests follow the counts)."""
    equations: list[Equation] = []
    for j, (part, whole) in enumerate(subsets):
        mp, mw, mr = measures.index(part), measures.index(whole), first_rest + j
        for g in groupings:
            equations += [
                (index.at(mw, g.name, i), [index.at(mp, g.name, i), index.at(mr, g.name, i)])
                for i in range(len(index.keys[g.name]))
            ]
    return equations


def _protected_tables(
    frames: dict[str, pl.DataFrame],
    groupings: Sequence[Grouping],
    counts: Sequence[str],
    index: _CellIndex,
    values: list[int],
    primary: list[bool],
    withheld: list[bool],
    policy: DisclosurePolicy,
) -> ProtectedTables:
    """Each published grouping's dims and counts, withheld cells NULL and the rest rounded,
    with per grouping and count statistics."""
    stats: list[dict[str, Any]] = []
    tables = {}
    for g in groupings:
        cols = []
        for mi, c in enumerate(counts):
            lo = index.at(mi, g.name, 0)
            hi = lo + len(index.keys[g.name])
            cols.append(
                pl.Series(
                    c,
                    [None if withheld[i] else policy.rounded(values[i]) for i in range(lo, hi)],
                    dtype=pl.Int64,
                )
            )
            stats.append(
                {
                    "grouping": g.name,
                    "count": c,
                    "cells": hi - lo,
                    "primary": sum(primary[lo:hi]),
                    "secondary": sum(withheld[lo:hi]) - sum(primary[lo:hi]),
                    "published": g.published,
                }
            )
        if g.published:
            f = frames[g.name].select(list(g.dims))
            tables[g.name] = f.with_columns(cols) if g.dims else pl.DataFrame(cols)
    return ProtectedTables(tables=tables, stats=stats)


def lattice(dims: Sequence[str]) -> tuple[list[Grouping], list[tuple[str, str]]]:
    """The full cross-tabulation of `dims`: the published cells and every margin below them.

    Margins (each proper subset of the dims, down to the grand total) are not published but
    treated as known; each cell level is related to the levels one dimension coarser.
    """
    dims = tuple(dims)
    name = ",".join

    groupings = [Grouping(name(dims) or "total", dims, published=True)]
    relations: list[tuple[str, str]] = []
    for size in range(len(dims) - 1, -1, -1):
        for sub in itertools.combinations(dims, size):
            groupings.append(Grouping(name(sub) or "total", sub, published=False))
    for g in groupings:
        for d in g.dims:
            parent = tuple(x for x in g.dims if x != d)
            relations.append((g.name, name(parent) or "total"))
    return groupings, relations


def protect_rows(
    frame: pl.DataFrame,
    dims: Sequence[str],
    counts: Sequence[str],
    policy: DisclosurePolicy,
    *,
    margins: bool = True,
    subsets: Sequence[tuple[str, str]] = (),
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Protect a query result whose rows are keyed by `dims` and whose `counts` add up.

    With `margins`, the rows are the cells of a cross-tabulation of `dims` and every row,
    column and grand total is protected too (`lattice`); without, each row stands alone (rows
    that do not add up, such as dates) and only `subsets` link counts within a row. Rows keep
    their order; only dims and counts are returned (recompute rates from the counts shown).
    """
    dims_used = list(dims)
    if margins:
        groupings, relations = lattice(dims_used)
    else:
        groupings, relations = [Grouping("rows", tuple(dims_used))], []
    base = frame.select(*dims_used, *[pl.col(c).fill_null(0).cast(pl.Int64) for c in counts])
    result = protect(base, counts, groupings, relations, policy, subsets=subsets)
    top = result.tables[groupings[0].name]
    if not dims_used:
        return top, result.stats
    ordered = (
        frame.select(dims_used)
        .with_row_index("_order")
        .join(top, on=dims_used, how="left", nulls_equal=True)
    )
    return ordered.sort("_order").drop("_order"), result.stats


def rate_expr(num: str, den: str, per: float, name: str, digits: int = 1) -> pl.Expr:
    """A rate from published counts: NULL when either is withheld or the denominator is 0."""
    return (
        pl.when(pl.col(num).is_null() | pl.col(den).is_null() | (pl.col(den) == 0))
        .then(None)
        .otherwise((per * pl.col(num) / pl.col(den)).round(digits))
        .alias(name)
    )
