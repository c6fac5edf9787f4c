"""The table builder: analysts' tables, written and protected by the service.

A `TableSpec` names a dataset of `publish.datasets`, up to a few of its dimensions, filters
on their categories and measures, all from the declaration (no column, expression or id of
the analyst's own). The service checks it against the declaration and the release's category
lists (never against the data, so a refusal tells nothing), writes the SQL (`table_sql`),
counts the units behind every cell and perturbs every count and sum (`protect_table`,
`publish.perturbation`).

At publish, `build_tables_sql` writes `tab.<dataset>` in the analysts' database (one row per
unit: one column per dimension and measure, the unit's two record keys, no id) and
`categories_sql` writes `tab.categories` (each dimension's categories, in display order).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from uprnlink.errors import ConfigError, PublishError
from uprnlink.policy import read_governance_policy
from uprnlink.publish.datasets import (
    DATASETS,
    TOTAL,
    UNKNOWN,
    Dataset,
    Dimension,
    Measure,
    TableSpecError,
    get_dataset,
)
from uprnlink.publish.perturbation import PerturbationSettings, perturb_counts, perturb_sums

__all__ = [
    "DATASETS",
    "TOTAL",
    "UNKNOWN",
    "Dataset",
    "Dimension",
    "Measure",
    "MeasureRequest",
    "TableAnswer",
    "TableLimits",
    "TablePolicy",
    "TableSpec",
    "TableSpecError",
    "build_tables_sql",
    "categories_sql",
    "dimension_types_sql",
    "get_dataset",
    "parse_measure",
    "protect_table",
    "read_table_policy",
    "table_sql",
]

# --------------------------------------------------------------------------- publishing


def build_tables_sql(source_catalog: str) -> list[str]:
    """SQL that writes `tab.<dataset>` for every dataset (one row per unit: its categories,
    its measures and its two record keys, no id) from the sources in `source_catalog` and
    the record keys in `<source_catalog>.linked.record_keys`."""
    out = ["CREATE SCHEMA IF NOT EXISTS tab"]
    for ds in DATASETS:
        dims = ",\n       ".join(
            f"coalesce(CAST(({d.expr}) AS VARCHAR), '{UNKNOWN}') AS {d.name}" for d in ds.dimensions
        )
        measures = "".join(f",\n       CAST(({m.expr}) AS BIGINT) AS {m.name}" for m in ds.measures)
        out.append(
            f"""CREATE TABLE tab.{ds.name} AS
SELECT {dims}{measures},
       k.rkey, k.rkey_m
FROM {source_catalog}.main.{ds.source} s
JOIN {source_catalog}.linked.record_keys k ON k.unit_id = s.{ds.key}"""
        )
    return out


def categories_sql() -> str:
    """SQL that writes `tab.categories` (dataset, dimension, position, category): each
    dimension's declared categories, or for an open dimension the values found at publish
    across every dataset that has it (sorted, `unknown` last), so a dimension has one list."""
    open_values: dict[str, list[str]] = {}
    for ds in DATASETS:
        for d in ds.dimensions:
            if not d.categories:
                open_values.setdefault(d.name, []).append(
                    f"SELECT DISTINCT {d.name} AS v FROM tab.{ds.name}"
                )
    parts = []
    for ds in DATASETS:
        for d in ds.dimensions:
            if d.categories:
                rows = ", ".join(f"({i}, {_quote(c)})" for i, c in enumerate(d.categories))
                parts.append(
                    f"SELECT {_quote(ds.name)} AS dataset, {_quote(d.name)} AS dimension, "
                    f"position, category FROM (VALUES {rows}) v(position, category)"
                )
            else:
                union = " UNION ".join(open_values[d.name])
                parts.append(
                    f"SELECT {_quote(ds.name)} AS dataset, {_quote(d.name)} AS dimension, "
                    "CAST(row_number() OVER (ORDER BY v = "
                    f"'{UNKNOWN}', v) - 1 AS INTEGER) AS position, v AS category "
                    f"FROM ({union}) u"
                )
    return "CREATE TABLE tab.categories AS\n" + "\nUNION ALL\n".join(parts)


def dimension_types_sql(dataset: str, dimension: str, values: Sequence[str]) -> list[str]:
    """SQL that stores one dimension of `tab.<dataset>` as an ENUM of `values` (its categories
    in display order, then any other value found in the data): a table's GROUP BY over small
    integer codes instead of text is about twice as fast, and nothing else changes."""
    if not values:  # a dimension no record holds stays text: an ENUM needs a member
        return []
    kind = f"tab.enum__{dataset}__{dimension}"
    listed = ", ".join(_quote(v) for v in dict.fromkeys(values))
    return [
        f"CREATE TYPE {kind} AS ENUM ({listed})",
        f"ALTER TABLE tab.{dataset} ALTER {dimension} TYPE {kind}",
    ]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ------------------------------------------------------------------------------ requests

MeasureKind = Literal["count", "sum", "mean", "per_1000", "count_where", "percent_where"]
_MEASURE_RE = re.compile(
    r"^(?:(count)|(sum|mean|per_1000):([a-z_][a-z0-9_]*)(?:/([a-z_][a-z0-9_]*))?"
    r"|(count_where|percent_where):([a-z_][a-z0-9_]*)=([A-Za-z0-9_+.\-]+))$"
)


@dataclass(frozen=True)
class MeasureRequest:
    """One measure of a table: `count`, `sum:x`, `mean:x` (per unit), `per_1000:x` (per
    1,000 units) or `per_1000:x/y` (per 1,000 of measure y), `count_where:dim=category` (the
    units of the cell in that category) or `percent_where:dim=category` (their share)."""

    kind: MeasureKind
    measure: str = ""
    per: str = ""
    dimension: str = ""
    category: str = ""

    @property
    def text(self) -> str:
        if self.kind == "count":
            return "count"
        if self.kind in ("count_where", "percent_where"):
            return f"{self.kind}:{self.dimension}={self.category}"
        return f"{self.kind}:{self.measure}" + (f"/{self.per}" if self.per else "")

    @property
    def column(self) -> str:
        """The answer's column name."""
        if self.kind == "count":
            return "count"
        if self.kind == "sum":
            return f"sum_{self.measure}"
        if self.kind == "mean":
            return f"mean_{self.measure}"
        if self.kind == "per_1000":
            return f"{self.measure}_per_1000" + (f"_{self.per}" if self.per else "")
        prefix = "count" if self.kind == "count_where" else "percent"
        return f"{prefix}_{self.dimension}_{_slug(self.category)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def parse_measure(text: str) -> MeasureRequest:
    """A measure from its text form (see `MeasureRequest`)."""
    m = _MEASURE_RE.match(text.strip())
    if m is None:
        raise TableSpecError(
            f"measure {text[:60]!r} is not one of count, sum:X, mean:X, per_1000:X, "
            "per_1000:X/Y, count_where:DIMENSION=CATEGORY, percent_where:DIMENSION=CATEGORY"
        )
    if m.group(1):
        return MeasureRequest("count")
    if m.group(2):
        kind: Any = m.group(2)
        if m.group(4) and kind != "per_1000":
            raise TableSpecError(f"measure {text!r}: only per_1000 takes X/Y")
        return MeasureRequest(kind, measure=m.group(3), per=m.group(4) or "")
    kind = m.group(5)
    return MeasureRequest(kind, dimension=m.group(6), category=m.group(7))


@dataclass(frozen=True)
class TableLimits:
    """How big a table may be (`[tables]` in the policy); checked on the request alone."""

    max_dimensions: int = 4
    max_cells: int = 20_000
    max_measures: int = 8


@dataclass(frozen=True)
class TableSpec:
    """A table request: a dataset, the dimensions it crosses (rows in that order), filters
    on categories, the measures and whether margins (totals) are shown."""

    dataset: str
    dimensions: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    measures: tuple[MeasureRequest, ...] = (MeasureRequest("count"),)
    totals: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TableSpec:
        """From the API's or a named question's JSON/TOML shape (checked for shape only;
        `check` checks it against the declaration)."""
        if not isinstance(raw, Mapping):
            raise TableSpecError("a table request is an object with a dataset")
        unknown = set(raw) - {"dataset", "dimensions", "filters", "measures", "totals"}
        if unknown:
            raise TableSpecError(f"unknown field(s) in the table request: {sorted(unknown)[:5]}")
        dataset = raw.get("dataset")
        if not isinstance(dataset, str):
            raise TableSpecError("dataset: a dataset name is required")
        dims = raw.get("dimensions", [])
        if not isinstance(dims, list | tuple) or not all(isinstance(d, str) for d in dims):
            raise TableSpecError("dimensions: a list of dimension names")
        filters_raw = raw.get("filters", {})
        if not isinstance(filters_raw, Mapping):
            raise TableSpecError("filters: an object of dimension -> list of categories")
        filters = []
        for name, values in filters_raw.items():
            if isinstance(values, str):
                values = [values]
            if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
                raise TableSpecError(f"filters.{str(name)[:40]}: a list of categories")
            filters.append((str(name), tuple(values)))
        measures_raw = raw.get("measures", ["count"])
        if not isinstance(measures_raw, list | tuple) or not all(
            isinstance(m, str) for m in measures_raw
        ):
            raise TableSpecError("measures: a list of measure names (e.g. count, sum:residents)")
        measures = [parse_measure(m) for m in measures_raw]
        if not any(m.kind == "count" for m in measures):
            measures.insert(0, MeasureRequest("count"))
        totals = raw.get("totals", False)
        if not isinstance(totals, bool):
            raise TableSpecError("totals: true or false")
        return cls(str(dataset), tuple(dims), tuple(filters), tuple(measures), totals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dimensions": list(self.dimensions),
            "filters": {k: list(v) for k, v in self.filters},
            "measures": [m.text for m in self.measures],
            "totals": self.totals,
        }

    def check_declared(self) -> Dataset:
        """Refuse names the declaration does not have (no release needed)."""
        ds = get_dataset(self.dataset)
        for name in (*self.dimensions, *(f for f, _ in self.filters)):
            ds.dimension(name)
        for m in self.measures:
            for name in (m.measure, m.per):
                if name:
                    ds.measure(name)
            if m.dimension:
                ds.dimension(m.dimension)
        return ds

    def check(
        self,
        categories: Mapping[str, Mapping[str, Sequence[str]]],
        limits: TableLimits,
    ) -> None:
        """Refuse a request the declaration does not allow: unknown names, too many
        dimensions, measures or cells, or filters that would make a new set of units. Depends
        on the request and the release's category lists only (never on counts), so a refusal
        tells nothing about the data.

        A filter on a dimension the table does not cross keeps one category, or every
        category but `unknown`, and counts as a dimension; one on a crossed dimension may keep
        any of its categories, but with totals only every category but `unknown`. So every
        cell is a cell of some cross of at most `max_dimensions` dimensions (with `unknown`
        left out or not): there is no arbitrary union of categories to ask for. Filters on
        such unions gave a red team hundreds of differently perturbed views of the same small
        cells, and least squares read them exactly. Named questions obey the same rules."""
        ds = self.check_declared()
        known = categories.get(ds.name, {})
        if len(self.dimensions) > limits.max_dimensions:
            raise TableSpecError(
                f"dimensions: at most {limits.max_dimensions} (asked for {len(self.dimensions)})"
            )
        self._check_filters(known, limits)
        if len(set(self.dimensions)) != len(self.dimensions):
            raise TableSpecError("dimensions: each dimension once")
        for name in self.dimensions:
            ds.dimension(name)
        seen = set()
        for name, values in self.filters:
            ds.dimension(name)
            if name in seen:
                raise TableSpecError(f"filters.{name}: given twice")
            seen.add(name)
            if not values:
                raise TableSpecError(f"filters.{name}: choose at least one category")
            missing = [v for v in values if v not in known.get(name, ())]
            if missing:
                raise TableSpecError(
                    f"filters.{name}: no category {missing[0][:40]!r} "
                    f"(categories: {', '.join(list(known.get(name, ()))[:12])}...)"
                )
        if len(self.measures) > limits.max_measures:
            raise TableSpecError(f"measures: at most {limits.max_measures}")
        for m in self.measures:
            if m.kind in ("sum", "mean", "per_1000"):
                ds.measure(m.measure)
                if m.per:
                    ds.measure(m.per)
            elif m.kind in ("count_where", "percent_where"):
                ds.dimension(m.dimension)
                if m.dimension in self.dimensions:
                    raise TableSpecError(
                        f"measure {m.text}: {m.dimension} is already a dimension of the table"
                    )
                allowed = self.filter_of(m.dimension) or tuple(known.get(m.dimension, ()))
                if m.category not in allowed:
                    raise TableSpecError(f"measure {m.text}: no such category in the table")
        if len({m.column for m in self.measures}) != len(self.measures):
            raise TableSpecError("measures: each measure once")
        cells = self.cell_count(known)
        if cells > limits.max_cells:
            raise TableSpecError(
                f"the table would have {cells:,} cells; at most {limits.max_cells:,}: "
                "use fewer dimensions or filter on fewer categories"
            )

    def _check_filters(self, known: Mapping[str, Sequence[str]], limits: TableLimits) -> None:
        """The filter rules for tables (see `check`)."""
        crossed = set(self.dimensions)
        wafers = [name for name, _ in self.filters if name not in crossed]
        for name, values in self.filters:
            chosen = set(values)
            known_only = chosen == set(known.get(name, ())) - {UNKNOWN}
            if name not in crossed and len(chosen) > 1 and not known_only:
                raise TableSpecError(
                    f"filters.{name}: keep one category, or every category but {UNKNOWN}, of "
                    f"a dimension the table does not cross (to see several, make {name} a "
                    "dimension of the table)"
                )
            if name in crossed and self.totals and not known_only:
                raise TableSpecError(
                    f"filters.{name}: a filter on a dimension of the table hides rows and "
                    f"cannot be combined with totals unless it keeps every category but "
                    f"{UNKNOWN} (a total over some categories is not a cell)"
                )
        if len(self.dimensions) + len(wafers) > limits.max_dimensions:
            raise TableSpecError(
                f"dimensions and filters: at most {limits.max_dimensions} dimensions in all, "
                "each filter on a dimension the table does not cross counting as one (asked "
                f"for {len(self.dimensions)} and {len(wafers)})"
            )

    def filter_of(self, name: str) -> tuple[str, ...]:
        for dim, values in self.filters:
            if dim == name:
                return values
        return ()

    def shown_categories(self, name: str, known: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        """The categories a dimension shows: its filter's, in catalogue order, else all."""
        chosen = set(self.filter_of(name))
        every = tuple(known.get(name, ()))
        return tuple(c for c in every if c in chosen) if chosen else every

    def cell_count(self, known: Mapping[str, Sequence[str]]) -> int:
        sizes = [
            len(self.shown_categories(d, known)) + (1 if self.totals else 0)
            for d in self.dimensions
        ]
        cells = 1
        for n in sizes:
            cells *= max(n, 1)
        return cells

    def grouping_sets(self) -> list[tuple[str, ...]]:
        """The dimension sets aggregated: the full cross, and with totals every margin."""
        if not self.totals:
            return [self.dimensions]
        return [
            tuple(d for d in self.dimensions if d in subset)
            for r in range(len(self.dimensions), -1, -1)
            for subset in itertools.combinations(self.dimensions, r)
        ]


def _where(spec: TableSpec) -> str:
    clauses = [
        f"{name} IN ({', '.join(_quote(v) for v in values)})" for name, values in spec.filters
    ]
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


def table_sql(spec: TableSpec) -> str:
    """The service's SQL for a checked spec: per cell (and margin), the units, the cell key,
    and per measure its sum, largest contribution and magnitude key (never a unit's row).

    Names and categories come from the declaration and the release's category lists (the
    spec was checked against them) and are quoted all the same."""
    ds = get_dataset(spec.dataset)
    dims = list(spec.dimensions)
    # Dimensions are stored as ENUMs (`dimension_types_sql`): grouped as such, shown as text.
    cols = (
        [
            f"CASE WHEN grouping({d}) = 1 THEN '{TOTAL}' ELSE CAST({d} AS VARCHAR) END AS {d}"
            for d in dims
        ]
        if spec.totals
        else [f"CAST({d} AS VARCHAR) AS {d}" for d in dims]
    )
    aggregates = [
        "count(*) AS n",
        "CAST(sum(rkey) % 256 AS INTEGER) AS ckey",
    ]
    wanted_sums: list[str] = []
    for m in spec.measures:
        for name in (m.measure, m.per):
            if name and name not in wanted_sums:
                wanted_sums.append(name)
    for name in wanted_sums:
        ds.measure(name)
        aggregates += [
            f"sum({name}) AS sum__{name}",
            f"max({name}) AS max__{name}",
            f"CAST(sum(rkey_m) FILTER (WHERE {name} IS NOT NULL) % 256 AS INTEGER) AS mkey__{name}",
        ]
    for m in spec.measures:
        if m.kind in ("count_where", "percent_where"):
            tag = f"{m.dimension}__{_slug(m.category)}"
            cond = f"{m.dimension} = {_quote(m.category)}"
            aggregates += [
                f"count(*) FILTER (WHERE {cond}) AS n__{tag}",
                f"CAST(coalesce(sum(rkey) FILTER (WHERE {cond}), 0) % 256 AS INTEGER) "
                f"AS ckey__{tag}",
            ]
    select = ",\n       ".join([*cols, *dict.fromkeys(aggregates)])
    if dims:
        if spec.totals:
            sets = ", ".join("(" + ", ".join(s) + ")" for s in spec.grouping_sets())
            group = f"GROUP BY GROUPING SETS ({sets})"
        else:
            group = "GROUP BY " + ", ".join(dims)
    else:
        group = ""
    return f"SELECT {select}\nFROM tab.{ds.name}\n{_where(spec)}\n{group}"


# ------------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class TableAnswer:
    """A protected table: one row per cell (margins too, `Total`), every count and sum
    perturbed; null in a `withheld` column is a withheld cell ([c])."""

    frame: pl.DataFrame
    withheld: tuple[str, ...]
    spec: TableSpec

    @property
    def measure_columns(self) -> tuple[str, ...]:
        return tuple(m.column for m in self.spec.measures)


def _grid(spec: TableSpec, known: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """Every cell the table shows, in display order (margins after the cells they total)."""
    frames = []
    for subset in spec.grouping_sets():
        columns: dict[str, list[str]] = {d: [] for d in spec.dimensions}
        choices = [
            spec.shown_categories(d, known) if d in subset else (TOTAL,) for d in spec.dimensions
        ]
        for combo in itertools.product(*choices):
            for d, value in zip(spec.dimensions, combo, strict=True):
                columns[d].append(value)
        frames.append(pl.DataFrame(columns, schema={d: pl.String for d in spec.dimensions}))
    if not spec.dimensions:
        return pl.DataFrame({"_cell": [0]})
    grid = pl.concat(frames)
    order = {
        d: {c: i for i, c in enumerate((*spec.shown_categories(d, known), TOTAL))}
        for d in spec.dimensions
    }
    keys = [pl.col(d).replace_strict(order[d], return_dtype=pl.Int64) for d in spec.dimensions]
    return grid.sort(keys, maintain_order=True)


def protect_table(
    raw: pl.DataFrame,
    spec: TableSpec,
    known: Mapping[str, Sequence[str]],
    settings: PerturbationSettings,
    *,
    exact: bool = False,
) -> TableAnswer:
    """The answer to a spec from `table_sql`'s rows: every cell of the grid (a cell with no
    units is a zero), counts perturbed by their cell keys, sums by their magnitude keys, then
    means, rates and percentages from the perturbed values only.

    `exact` leaves every count and sum as it is (no perturbation, no threshold): for
    measuring what perturbation costs (`benchmarks/queries.py`), never for an analyst."""
    dims = list(spec.dimensions)
    grid = _grid(spec, known)
    if dims:
        cells = grid.join(raw, on=dims, how="left", maintain_order="left")
    else:
        cells = raw if raw.height else pl.DataFrame({"n": [0], "ckey": [0]})
    counts = [c for c in cells.columns if c == "n" or c.startswith("n__")]
    keys = [c for c in cells.columns if c == "ckey" or c.startswith("ckey__")]
    cells = cells.with_columns(
        *(pl.col(c).fill_null(0) for c in counts), *(pl.col(c).fill_null(0) for c in keys)
    )

    def count(cells: pl.DataFrame, n: str, ckey: str, out: str) -> pl.DataFrame:
        if exact:
            return cells.with_columns(pl.col(n).cast(pl.Int64).alias(out))
        return perturb_counts(cells, settings, count=n, ckey=ckey, out=out)

    cells = count(cells, "n", "ckey", "count")
    for m in spec.measures:
        if m.kind in ("count_where", "percent_where"):
            tag = f"{m.dimension}__{_slug(m.category)}"
            if f"count__{tag}" not in cells.columns:
                cells = count(cells, f"n__{tag}", f"ckey__{tag}", f"count__{tag}")
    for name in {n for m in spec.measures for n in (m.measure, m.per) if n}:
        if exact:
            cells = cells.with_columns(pl.col(f"sum__{name}").alias(f"psum__{name}"))
            continue
        cells = perturb_sums(
            cells,
            settings,
            measure=f"{spec.dataset}.{name}",
            total=f"sum__{name}",
            largest=f"max__{name}",
            mkey=f"mkey__{name}",
            shown_count="count",
            out=f"psum__{name}",
        )
    # A part of a withheld cell is withheld with it: shown beside a [c], a part of 10 or more
    # would bound the withheld count from below.
    parts = [c for c in cells.columns if c.startswith("count__")]
    cells = cells.with_columns(
        pl.when(pl.col("count").is_null()).then(None).otherwise(pl.col(c)).alias(c) for c in parts
    )
    frame = cells.select(*dims, *(_measure_expr(m) for m in spec.measures))
    # A rate over a zero perturbed base is not a number: show it as withheld.
    frame = frame.with_columns(
        pl.when(pl.col(c).is_nan() | pl.col(c).is_infinite())
        .then(None)
        .otherwise(pl.col(c))
        .alias(c)
        for c in frame.columns
        if c not in dims and frame.schema[c].is_float()
    )
    return TableAnswer(frame, tuple(m.column for m in spec.measures), spec)


def _measure_expr(m: MeasureRequest) -> pl.Expr:
    """A measure's column from the (perturbed) counts and sums of its cell."""
    count = pl.col("count")
    if m.kind == "count":
        expr = count
    elif m.kind == "sum":
        expr = pl.col(f"psum__{m.measure}")
    elif m.kind == "mean":
        expr = (pl.col(f"psum__{m.measure}") / count).round(3)
    elif m.kind == "per_1000":
        base = pl.col(f"psum__{m.per}") if m.per else count
        expr = (1000 * pl.col(f"psum__{m.measure}") / base).round(1)
    else:
        part = pl.col(f"count__{m.dimension}__{_slug(m.category)}")
        expr = part if m.kind == "count_where" else (100 * part / count).round(1)
    return expr.alias(m.column)


# ------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class TablePolicy:
    """How tables are protected and how big they may be (`[tables]` in the policy)."""

    perturbation: PerturbationSettings = field(default_factory=PerturbationSettings)
    limits: TableLimits = field(default_factory=TableLimits)

    def describe(self) -> dict[str, Any]:
        return {
            **self.perturbation.describe(),
            "max_dimensions": self.limits.max_dimensions,
            "max_cells": self.limits.max_cells,
            "max_measures": self.limits.max_measures,
        }


def read_table_policy(path: Path) -> TablePolicy:
    """`[tables]` from a governance policy file (defaults where a key is not written)."""
    section = read_governance_policy(path, PublishError).tables
    try:
        perturbation = PerturbationSettings(
            max_noise=section.max_noise,
            variance=section.variance,
            no_small_values=section.no_small_values,
            threshold=section.threshold,
            magnitude_noise=section.magnitude_noise,
        )
    except ConfigError as exc:
        raise PublishError(f"{path}: {exc}") from None
    limits = TableLimits(section.max_dimensions, section.max_cells, section.max_measures)
    return TablePolicy(perturbation, limits)
