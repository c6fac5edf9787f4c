"""Output checking by rule: what each column of a result is, whether it may leave, and how it
is written out with its withheld cells marked.

The rules are the SDAP / Five Safes "safe outputs" rules of thumb, as ACRO (the output-checking
library UK TREs use) applies them to tables, with the thresholds of `governance/policy.toml`:

* ``row-level``: a result that is not aggregated (one row per household or person) leaves only
  for a role granted ``row_level_outputs``.
* ``threshold``: every count shown, and every sum or statistic, stands for at least
  ``min_count`` units (zero counts too when ``suppress_zero``).
* ``secondary``: no withheld count can be worked out from the others in its line (a row or
  column of the table, its total treated as known), i.e. no line has exactly one withheld cell.
* ``dominance``: a sum may not be dominated by its largest contributors: the top ``nk_n``
  contributors hold at most ``nk_k`` of the cell (N-K rule), and the cell less its two largest
  contributors is at least ``p_ratio`` of the largest (p% rule). The contributions come from a
  companion query the service runs on the same rows (`dominance_sql`).
* ``no-count``: a sum or statistic is shown only beside a count of the units behind each cell.
* ``extremes``: minimums and maximums are single units' values: never released by rule.
* ``shape``: a result whose columns the rules cannot read (a UNION, a window) needs a person.

The rules release nothing: they are the output checker's advice on a job's output (the cells
that fail flagged, as ACRO does), and a person decides (`service.outputs`).

Withheld cells are marked ``[c]`` (the GSS convention for confidential) on screen and in CSV;
in Parquet they stay NULL beside a boolean ``<column>_withheld`` column.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from uprnlink.errors import ConfigError
from uprnlink.policy import read_governance_policy
from uprnlink.publish.database import (
    SUMMARY_COUNTS,
    SUMMARY_GROUPINGS,
    SUMMARY_RATES,
    SUMMARY_VIEWS,
)
from uprnlink.publish.disclosure import DisclosurePolicy

__all__ = [
    "WITHHELD",
    "WITHHELD_NOTE",
    "OutputRules",
    "OutputShape",
    "OutputVerdict",
    "RoleRights",
    "RuleFinding",
    "check_output",
    "dominance_findings",
    "dominance_sql",
    "format_table",
    "read_role_rights",
    "shape_of_sql",
    "to_csv_bytes",
    "to_parquet_bytes",
]

WITHHELD = "[c]"
WITHHELD_NOTE = (
    "[c] confidential: withheld to protect individuals (a count below the threshold after "
    "perturbation, possibly zero, or a figure computed from one); not missing."
)

_COUNT_FUNCTIONS = frozenset({"count", "count_star", "safe_count"})
_SUM_FUNCTIONS = frozenset({"sum", "fsum", "sumkahan", "kahan_sum"})
_EXTREME_FUNCTIONS = frozenset(
    {
        "min",
        "max",
        "arg_min",
        "arg_max",
        "argmin",
        "argmax",
        "min_by",
        "max_by",
        "first",
        "last",
        "any_value",
        "list",
        "array_agg",
        "string_agg",
        "group_concat",
        "listagg",
        "histogram",
        "mode",
    }
)
_STAT_FUNCTIONS = frozenset(
    {
        "avg",
        "mean",
        "median",
        "quantile",
        "quantile_cont",
        "quantile_disc",
        "stddev",
        "stddev_samp",
        "stddev_pop",
        "var_samp",
        "var_pop",
        "variance",
        "corr",
        "covar_pop",
        "covar_samp",
        "sem",
        "kurtosis",
        "skewness",
        "entropy",
        "approx_count_distinct",
        "bool_and",
        "bool_or",
        "safe_rate",
    }
)
_AGGREGATES = _COUNT_FUNCTIONS | _SUM_FUNCTIONS | _EXTREME_FUNCTIONS | _STAT_FUNCTIONS
_SUMMARY_DIMENSIONS = frozenset(k for g in SUMMARY_GROUPINGS for k in g.dims)
_SUMMARY_RATE_NAMES = frozenset(r[0] for r in SUMMARY_RATES)
_AS_AT_SUMMARIES = frozenset({"ward_summary_as_at", "decile_summary_as_at"})
_PROTECTED_SOURCES = frozenset(SUMMARY_VIEWS) | _AS_AT_SUMMARIES
_METADATA_SOURCES = frozenset({"run_info"})


@dataclass(frozen=True)
class RoleRights:
    """What a role may do with outputs, from `[roles.*]` in the governance policy."""

    check_outputs: bool = False
    """May approve or reject others' submissions (the output checker)."""
    audit: bool = False
    """Sees the audit status, the queue and the release register; downloads any release."""
    row_level_outputs: bool = False
    """May release a result that is not aggregated."""
    review_linkage: bool = False
    """Labels the clerical review queue's pairs (names and dates of birth from the trusted
    zone, pseudonymised): data engineers only."""
    unchecked_answers: bool = True
    """Sees answers on screen (`/api/query`, the portal's table) without the output rules, as
    on a TRE desktop; false applies the rules to every answer too (refused if they fail)."""


def read_role_rights(policy_path: Any) -> dict[str, RoleRights]:
    """Role -> its output rights, from the governance policy (booleans; default no)."""
    return {
        name: RoleRights(
            check_outputs=role.check_outputs,
            audit=role.audit,
            row_level_outputs=role.row_level_outputs,
            review_linkage=role.review_linkage,
            unchecked_answers=role.unchecked_answers,
        )
        for name, role in read_governance_policy(policy_path).roles.items()
    }


@dataclass(frozen=True)
class OutputRules:
    """The thresholds the rules apply (ACRO's names in brackets)."""

    min_count: int = 10  # safe_threshold
    zeros_disclosive: bool = False  # zeros_are_disclosive
    nk_n: int = 2  # safe_nk_n
    nk_k: float = 0.9  # safe_nk_k
    p_ratio: float = 0.1  # safe_pratio_p

    @classmethod
    def from_policy(cls, policy: DisclosurePolicy) -> OutputRules:
        return cls(min_count=policy.min_count, zeros_disclosive=policy.suppress_zero)

    def describe(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "zeros_disclosive": self.zeros_disclosive,
            "nk_n": self.nk_n,
            "nk_k": self.nk_k,
            "p_ratio": self.p_ratio,
        }


@dataclass(frozen=True)
class OutputShape:
    """What each column of a result is, as the rules read it."""

    dimensions: tuple[str, ...] = ()
    counts: tuple[str, ...] = ()
    sums: tuple[str, ...] = ()
    statistics: tuple[str, ...] = ()
    """Means, rates and other values computed from a cell's units (need the cell's count)."""
    extremes: tuple[str, ...] = ()
    row_level: bool = False
    margins: bool = True
    """The rows are the cells of one table whose lines add up (secondary suppression applies)."""
    withheld: tuple[str, ...] = ()
    """Columns where NULL means withheld, not missing (marked [c])."""
    unit_count: str | None = None
    """The count of units behind each cell (for sums and statistics)."""
    problem: str | None = None
    """Why the columns could not be read (the `shape` rule)."""
    source: str = "sql"

    def describe(self) -> dict[str, Any]:
        return {
            "dimensions": list(self.dimensions),
            "counts": list(self.counts),
            "sums": list(self.sums),
            "statistics": list(self.statistics),
            "extremes": list(self.extremes),
            "row_level": self.row_level,
            "withheld": list(self.withheld),
            "source": self.source,
        }


@dataclass(frozen=True)
class RuleFinding:
    """One rule a result breaks: where (column, how many cells), never which values."""

    rule: str
    message: str
    column: str | None = None
    cells: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "column": self.column,
            "cells": self.cells,
            "message": self.message,
        }


@dataclass(frozen=True)
class OutputVerdict:
    """The rules' verdict on one result: passed, or the findings that refuse it."""

    findings: tuple[RuleFinding, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def rules(self) -> list[str]:
        return sorted({f.rule for f in self.findings})

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "findings": [f.to_dict() for f in self.findings]}

    def summary(self) -> str:
        if self.passed:
            return "passed every rule"
        return "; ".join(f.message for f in self.findings)


# ------------------------------------------------------------------------------ shapes


def _parse(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    doc = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if doc.get("error"):
        raise ConfigError("the query does not parse")
    return dict(doc)


def _unwrap(expr: dict[str, Any]) -> dict[str, Any]:
    while expr.get("class") == "CAST":
        expr = expr["child"]
    return expr


def _functions_in(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, list):
        for v in node:
            found |= _functions_in(v)
    elif isinstance(node, dict):
        if node.get("class") == "FUNCTION" and "function_name" in node:
            found.add(str(node["function_name"]).lower())
        if node.get("class") == "SUBQUERY":
            return found  # a subquery's aggregates are its own
        for v in node.values():
            found |= _functions_in(v)
    return found


def _column_name(expr: dict[str, Any]) -> str | None:
    if expr.get("class") == "COLUMN_REF":
        names = expr.get("column_names") or []
        return str(names[-1]) if names else None
    return None


def shape_of_sql(
    sql: str, columns: Sequence[str], relations: Iterable[str], *, con: Any = None
) -> OutputShape:
    """A typed query's shape, read from DuckDB's parse of its outermost SELECT: group-by
    columns are dimensions, count() a count, sum() a sum, min()/max() extremes, other
    aggregates statistics; no aggregate at all is row level, unless every relation read is a
    protected summary (its counts are already protected) or `run_info` (metadata)."""
    names = {r.lower() for r in relations}
    own = con is None
    con = con or duckdb.connect()
    try:
        doc = _parse(con, sql)
    except (duckdb.Error, ConfigError):
        return OutputShape(problem="the query does not parse")
    finally:
        if own:
            con.close()
    statements = doc.get("statements") or []
    node = statements[0].get("node", {}) if statements else {}
    if node.get("type") != "SELECT_NODE":
        return OutputShape(problem="only a plain SELECT ... GROUP BY can be checked by rule")
    select = [_unwrap(e) for e in node.get("select_list", [])]
    groups = node.get("group_expressions") or []
    group_all = node.get("aggregate_handling") == "FORCE_AGGREGATES"
    has_star = any(e.get("class") == "STAR" for e in select)
    aggregated = bool(groups) or group_all or any(_functions_in(e) & _AGGREGATES for e in select)
    if not aggregated:
        return _unaggregated_shape(names, columns)
    if has_star or len(select) != len(columns):
        return OutputShape(problem="list the table's columns instead of *")
    group_names = {_column_name(_unwrap(g)) for g in groups} - {None}
    return _aggregated_shape(columns, select, group_names, group_all)


def _unaggregated_shape(names: set[str], columns: Sequence[str]) -> OutputShape:
    """A query with no aggregate: metadata, a copy of a protected summary, or row level."""
    if names and names <= _METADATA_SOURCES:
        return OutputShape(source="metadata")
    if names and names <= (_PROTECTED_SOURCES | _METADATA_SOURCES):
        s_counts = tuple(c for c in columns if c in SUMMARY_COUNTS)
        s_stats = tuple(c for c in columns if c in _SUMMARY_RATE_NAMES)
        # A filtered or partial copy of a protected table: its rows need not add up.
        return OutputShape(
            dimensions=tuple(c for c in columns if c in _SUMMARY_DIMENSIONS),
            counts=s_counts,
            statistics=s_stats,
            margins=False,
            withheld=(*s_counts, *s_stats),
            unit_count="households" if "households" in s_counts else None,
            source="summary",
        )
    return OutputShape(row_level=True, source="record")


def _column_role(
    column: str, expr: dict[str, Any], group_names: set[str | None], group_all: bool
) -> tuple[str, bool]:
    """Which part of an aggregated shape one output column is, and whether NULL in it means
    withheld (a `safe_count` or `safe_rate` inside it)."""
    funcs = _functions_in(expr)
    top = str(expr.get("function_name", "")).lower() if expr.get("class") == "FUNCTION" else ""
    if not funcs & _AGGREGATES:
        named = _column_name(expr)
        if (
            (named is not None and (group_all or named in group_names or column in group_names))
            or group_all
            or not funcs
        ):
            return "dimensions", False
        return "statistics", False
    if funcs & _EXTREME_FUNCTIONS:
        return "extremes", False
    if top in _COUNT_FUNCTIONS:
        return "counts", top == "safe_count"
    if top in _SUM_FUNCTIONS:
        return "sums", False
    return "statistics", "safe_rate" in funcs or "safe_count" in funcs


def _aggregated_shape(
    columns: Sequence[str],
    select: list[dict[str, Any]],
    group_names: set[str | None],
    group_all: bool,
) -> OutputShape:
    """A GROUP BY query's shape: each column's role, and the count of units behind a cell
    (the first unfiltered count(*), else the first count)."""
    parts: dict[str, list[str]] = {
        k: [] for k in ("dimensions", "counts", "sums", "statistics", "extremes")
    }
    withheld: list[str] = []
    for column, expr in zip(columns, select, strict=True):
        role, held = _column_role(column, expr, group_names, group_all)
        parts[role].append(column)
        if held:
            withheld.append(column)
    counts = parts["counts"]
    unit = next(
        (
            c
            for c, e in zip(columns, select, strict=True)
            if c in counts
            and str(_unwrap(e).get("function_name", "")) == "count_star"
            and not _unwrap(e).get("filter")
        ),
        None,
    )
    return OutputShape(
        dimensions=tuple(parts["dimensions"]),
        counts=tuple(counts),
        sums=tuple(parts["sums"]),
        statistics=tuple(parts["statistics"]),
        extremes=tuple(parts["extremes"]),
        withheld=tuple(withheld),
        unit_count=unit or (counts[0] if counts else None),
        source="sql",
    )


def dominance_sql(
    sql: str, shape: OutputShape, columns: Sequence[str], *, con: Any = None
) -> str | None:
    """A companion query giving, per cell of a typed query with sums, each sum's two largest
    contributions: the same FROM, WHERE, GROUP BY and HAVING, with ``sum(x)`` replaced by
    ``max(x, 2)``. None when there is nothing to check or the query cannot be rewritten."""
    if not shape.sums or shape.problem:
        return None
    own = con is None
    con = con or duckdb.connect()
    try:
        doc = _parse(con, sql)
        node = doc["statements"][0]["node"]
        template = _parse(con, "SELECT max(x, 2)")["statements"][0]["node"]["select_list"][0]
        new_list = []
        for column, expr in zip(columns, node["select_list"], strict=True):
            inner = _unwrap(expr)
            if column in shape.dimensions:
                new_list.append(expr)
            elif column in shape.sums:
                fn = json.loads(json.dumps(template))
                fn["arguments"][0]["expression"] = inner["arguments"][0]["expression"]
                fn["filter"] = inner.get("filter")
                fn["alias"] = column
                new_list.append(fn)
        node["select_list"] = new_list
        node["modifiers"] = []
        out = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(doc)]).fetchall()[0][0]
        return str(out)
    except (duckdb.Error, ConfigError, KeyError, IndexError, TypeError, ValueError):
        return None
    finally:
        if own:
            con.close()


# ------------------------------------------------------------------------------ the rules


def dominance_findings(
    totals: Sequence[float | None],
    tops: Sequence[Sequence[float] | None],
    rules: OutputRules,
    column: str,
) -> list[RuleFinding]:
    """The N-K and p% rules over a sum column's cells, given each cell's total and its
    largest contributions (largest first)."""
    nk_cells = p_cells = 0
    for total, top in zip(totals, tops, strict=True):
        if total is None or not top:
            continue
        values = sorted((abs(float(v)) for v in top if v is not None), reverse=True)
        whole = abs(float(total))
        if whole <= 0 or not values:
            continue
        if sum(values[: rules.nk_n]) > rules.nk_k * whole:
            nk_cells += 1
        second = values[1] if len(values) > 1 else 0.0
        if whole - values[0] - second < rules.p_ratio * values[0]:
            p_cells += 1
    out = []
    if nk_cells:
        out.append(
            RuleFinding(
                "dominance",
                f"{column}: {nk_cells} cell(s) where the largest {rules.nk_n} contributors hold "
                f"more than {rules.nk_k:.0%} of the total (N-K rule)",
                column,
                nk_cells,
            )
        )
    if p_cells:
        out.append(
            RuleFinding(
                "dominance",
                f"{column}: {p_cells} cell(s) that would tell the largest contributor's value "
                f"to within {rules.p_ratio:.0%} (p% rule)",
                column,
                p_cells,
            )
        )
    return out


def _small(values: pl.Series, rules: OutputRules) -> int:
    low = 0 if rules.zeros_disclosive else 1
    v = values.cast(pl.Float64, strict=False)
    return int(((v >= low) & (v <= rules.min_count - 1)).sum() or 0)


def _secondary(frame: pl.DataFrame, dims: Sequence[str], column: str) -> int:
    """Lines (all dimensions but one fixed) with exactly one withheld cell among shown ones."""
    if not dims:
        return 0
    lines = 0
    flag = pl.col(column).is_null().cast(pl.Int64)
    for free in dims:
        fixed = [d for d in dims if d != free]
        grouped = (
            frame.group_by(fixed).agg(flag.sum().alias("w"), pl.len().alias("n"))
            if fixed
            else frame.select(flag.sum().alias("w"), pl.len().alias("n"))
        )
        lines += grouped.filter((pl.col("w") == 1) & (pl.col("n") > 1)).height
    return lines


def check_output(
    frame: pl.DataFrame,
    shape: OutputShape,
    rules: OutputRules,
    *,
    rights: RoleRights | None = None,
    contributions: pl.DataFrame | None = None,
) -> OutputVerdict:
    """Every rule (module doc) over one result; `contributions` holds, per cell in the same
    order, each sum column's largest contributions as a list (from `dominance_sql`)."""
    rights = rights or RoleRights()
    if shape.problem:
        return OutputVerdict((RuleFinding("shape", shape.problem),))
    if shape.row_level:
        return OutputVerdict(tuple(_row_level_findings(frame, rights)))
    found = [
        *_extremes_findings(frame, shape),
        *_count_findings(frame, shape, rules),
        *_unit_count_findings(frame, shape, rules),
        *_few_unit_findings(frame, shape, rules),
        *_secondary_findings(frame, shape),
        *_sum_dominance_findings(frame, shape, rules, contributions),
    ]
    return OutputVerdict(tuple(found))


def _row_level_findings(frame: pl.DataFrame, rights: RoleRights) -> list[RuleFinding]:
    """`row-level`: one row per unit leaves only for a role allowed row-level outputs."""
    if rights.row_level_outputs:
        return []
    return [
        RuleFinding(
            "row-level",
            f"the result is row level ({frame.height} rows, one per unit): only "
            "aggregated tables may leave; aggregate with GROUP BY and count(*)",
            cells=frame.height,
        )
    ]


def _extremes_findings(frame: pl.DataFrame, shape: OutputShape) -> list[RuleFinding]:
    """`extremes`: a minimum or maximum is one unit's own value."""
    return [
        RuleFinding(
            "extremes",
            f"{column}: a minimum or maximum is one unit's own value",
            column,
            frame.height,
        )
        for column in shape.extremes
    ]


def _count_findings(
    frame: pl.DataFrame, shape: OutputShape, rules: OutputRules
) -> list[RuleFinding]:
    """`threshold`: counts below the minimum (zeros too, where they are disclosive)."""
    found = []
    for column in shape.counts:
        small = _small(frame[column], rules)
        if small:
            found.append(
                RuleFinding(
                    "threshold",
                    f"{column}: {small} count(s) below {rules.min_count}"
                    + (" (zeros included)" if rules.zeros_disclosive else ""),
                    column,
                    small,
                )
            )
    return found


def _unit_count_findings(
    frame: pl.DataFrame, shape: OutputShape, rules: OutputRules
) -> list[RuleFinding]:
    """Sums and statistics need a count of units per cell (`no-count`); a unit count that is
    not itself a checked count is held to the threshold."""
    if not (shape.sums or shape.statistics):
        return []
    unit = shape.unit_count
    if unit is None or unit not in frame.columns:
        cols = [*shape.sums, *shape.statistics]
        return [
            RuleFinding(
                "no-count",
                f"{', '.join(cols)}: shown without a count of the units behind each cell; "
                "add count(*) to the table",
                cols[0],
                frame.height,
            )
        ]
    if unit in shape.counts:
        return []
    small = _small(frame[unit], rules)
    if not small:
        return []
    return [
        RuleFinding(
            "threshold",
            f"{unit}: {small} cell(s) stand for fewer than {rules.min_count} units",
            unit,
            small,
        )
    ]


def _few_unit_findings(
    frame: pl.DataFrame, shape: OutputShape, rules: OutputRules
) -> list[RuleFinding]:
    """`threshold`: a sum or mean shown over a cell of fewer units than the threshold (the
    count shown or withheld): the value itself is withheld or the output refused."""
    unit = shape.unit_count
    if not (shape.sums or shape.statistics) or unit is None or unit not in frame.columns:
        return []
    units = frame[unit].cast(pl.Float64, strict=False)
    low = 0 if rules.zeros_disclosive else 1
    few = (units >= low) & (units <= rules.min_count - 1)
    found = []
    for column in (*shape.sums, *shape.statistics):
        if column in shape.withheld:
            continue
        shown_few = int((few & frame[column].is_not_null()).sum() or 0)
        if shown_few and unit in shape.counts:
            continue  # already reported as the count's threshold finding
        if shown_few:
            found.append(
                RuleFinding(
                    "threshold",
                    f"{column}: {shown_few} cell(s) over fewer than {rules.min_count} units",
                    column,
                    shown_few,
                )
            )
    return found


def _secondary_findings(frame: pl.DataFrame, shape: OutputShape) -> list[RuleFinding]:
    """`secondary`: a line of a table with margins holding exactly one withheld cell."""
    if not shape.margins:
        return []
    found = []
    for column in shape.counts:
        lines = _secondary(frame, shape.dimensions, column)
        if lines:
            found.append(
                RuleFinding(
                    "secondary",
                    f"{column}: {lines} line(s) of the table with exactly one withheld cell "
                    "(it can be worked out from the total)",
                    column,
                    lines,
                )
            )
    return found


def _sum_dominance_findings(
    frame: pl.DataFrame,
    shape: OutputShape,
    rules: OutputRules,
    contributions: pl.DataFrame | None,
) -> list[RuleFinding]:
    """`dominance`: each sum's largest contributions, or a finding that they were not checked."""
    if not shape.sums:
        return []
    if contributions is None:
        return [
            RuleFinding(
                "dominance",
                f"{', '.join(shape.sums)}: the largest contributions to each sum could not be "
                "checked",
                shape.sums[0],
                frame.height,
            )
        ]
    # The companion query has no ORDER BY: its cells are matched on the dimensions.
    dims = [d for d in shape.dimensions if d in contributions.columns]
    tops = contributions.select(
        *dims, *(pl.col(c).alias(f"{c}__top") for c in shape.sums if c in contributions.columns)
    )
    joined = (
        frame.join(tops, on=dims, how="left", nulls_equal=True)
        if dims
        else frame.with_columns(tops.head(1))
    )
    found: list[RuleFinding] = []
    for column in shape.sums:
        if f"{column}__top" in joined.columns:
            found += dominance_findings(
                joined[column].cast(pl.Float64, strict=False).to_list(),
                joined[f"{column}__top"].to_list(),
                rules,
                column,
            )
    return found


# ------------------------------------------------------------------------------ writing out


def _marked(frame: pl.DataFrame, withheld: Sequence[str]) -> pl.DataFrame:
    """Every column as text, NULL in a withheld column as [c] (missing elsewhere: empty)."""
    exprs = []
    for c in frame.columns:
        text = pl.col(c).cast(pl.String)
        if c in withheld:
            text = pl.when(pl.col(c).is_null()).then(pl.lit(WITHHELD)).otherwise(text)
        exprs.append(text.alias(c))
    return frame.select(exprs)


def to_csv_bytes(frame: pl.DataFrame, withheld: Sequence[str]) -> bytes:
    """CSV with withheld cells as the string [c] (a missing value stays empty)."""
    buffer = io.BytesIO()
    _marked(frame, [c for c in withheld if c in frame.columns]).write_csv(buffer)
    return buffer.getvalue()


def to_parquet_bytes(frame: pl.DataFrame, withheld: Sequence[str]) -> bytes:
    """Parquet with withheld cells NULL and a boolean ``<column>_withheld`` beside each
    column that can hold them (NULL there means missing)."""
    cols = [c for c in withheld if c in frame.columns]
    out = frame.with_columns(pl.col(c).is_null().alias(f"{c}_withheld") for c in cols)
    buffer = io.BytesIO()
    out.write_parquet(buffer, metadata={"uprnlink_withheld": WITHHELD_NOTE})
    return buffer.getvalue()


def _cell(value: Any, withheld: bool) -> str:
    if value is None:
        return WITHHELD if withheld else ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def format_table(
    frame: pl.DataFrame,
    withheld: Sequence[str] = (),
    *,
    limit: int = 50,
    max_width: int = 40,
    title: str | None = None,
) -> str:
    """A result as a readable text table: full column names, widths from the values, numbers
    right-aligned, withheld cells [c], the row count and a footnote."""
    shown = frame.head(limit)
    numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
    rows = [
        [_cell(v, c in withheld)[:max_width] for c, v in zip(frame.columns, r, strict=True)]
        for r in shown.iter_rows()
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(frame.columns)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if name in numeric else cell.ljust(w)
            for cell, w, name in zip(cells, widths, frame.columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out += [title, ""]
    out.append(line(list(frame.columns)))
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows]
    count = f"{frame.height:,} row{'s' if frame.height != 1 else ''}"
    if frame.height > limit:
        count += f" ({limit} shown; save them all with --csv FILE or --parquet FILE)"
    out += ["", count]
    if any(frame[c].null_count() for c in withheld if c in frame.columns):
        out.append(WITHHELD_NOTE)
    return "\n".join(out)
