"""The named query library: ready questions for analysts, each one `.sql` file in this package.

A file starts with `-- key: value` header lines (a line `--   more` continues the previous
value), then one SELECT over the analyst views:

* `title`, `question`: what it answers (shown by `uprnlink query --list`).
* `disclosure`: how its result is protected before anyone sees it:
  `published` - it reads summaries already protected at publish time, shown as they are;
  `crosstab` (the default) - the rows are the cells of a table of `dimensions` whose
  `counts` add up, protected like the published summaries (primary and secondary suppression
  against every row, column and grand total, then rounding);
  `rows` - rows that do not add up (e.g. the same households on several dates): each row is
  protected on its own (primary suppression, `parts`, rounding).
* `dimensions`, `counts`: the result's category columns and additive count columns.
* `parts`: `part of whole; ...` - a count that is part of another in every row (children with
  asthma of children): the difference is protected too, so it cannot reveal a small number.
* `rates`: `name = numerator / denominator * multiplier; ...`, computed after protection from
  the counts as shown, so a rate never reveals a withheld count.
* `chart`: a hint for docs/img/make_charts.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import polars as pl

from uprnlink.errors import ConfigError
from uprnlink.publish.disclosure import DisclosurePolicy, protect_rows, rate_expr

_HEADER = re.compile(r"^--\s*([a-z_]+):\s*(.*)$")
_CONTINUED = re.compile(r"^--\s{2,}(\S.*)$")
_RATE = re.compile(
    r"^\s*([a-z_][a-z0-9_]*)\s*=\s*([a-z_][a-z0-9_]*)\s*/\s*([a-z_][a-z0-9_]*)\s*\*\s*([0-9.]+)\s*$"
)
DISCLOSURE_MODES = ("published", "crosstab", "rows")
_PART = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s+of\s+([a-z_][a-z0-9_]*)\s*$")


@dataclass(frozen=True)
class Rate:
    """A rate recomputed from protected counts."""

    name: str
    numerator: str
    denominator: str
    per: float


@dataclass(frozen=True)
class NamedQuery:
    """One ready question: its SQL and how to protect and show its answer."""

    name: str
    title: str
    question: str
    sql: str
    disclosure: str
    dimensions: tuple[str, ...]
    counts: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    rates: tuple[Rate, ...]
    chart: str | None


def parse_query(name: str, text: str) -> NamedQuery:
    """A named query from its file text (header lines, then SQL)."""
    header: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if (m := _CONTINUED.match(line)) and last is not None:
            header[last] += " " + m.group(1).strip()
        elif m := _HEADER.match(line):
            last = m.group(1)
            header[last] = m.group(2).strip()
        else:
            last = None

    if "title" not in header:
        raise ConfigError(f"named query {name}: no `-- title:` line")

    def split(key: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in header.get(key, "").split(",") if x.strip())

    dims, counts = split("dimensions"), split("counts")
    mode = header.get("disclosure", "crosstab")
    if mode not in DISCLOSURE_MODES:
        raise ConfigError(f"named query {name}: disclosure {mode!r} not in {DISCLOSURE_MODES}")
    if mode != "published" and not counts:
        raise ConfigError(f"named query {name}: `counts` are needed to protect the result")
    rates = []
    for part in filter(None, (p.strip() for p in header.get("rates", "").split(";"))):
        m = _RATE.match(part)
        if m is None:
            raise ConfigError(f"named query {name}: cannot read rate {part!r}")
        rates.append(Rate(m.group(1), m.group(2), m.group(3), float(m.group(4))))
    parts = []
    for part in filter(None, (p.strip() for p in header.get("parts", "").split(";"))):
        m = _PART.match(part)
        if m is None or m.group(1) not in counts or m.group(2) not in counts:
            raise ConfigError(f"named query {name}: cannot read part {part!r} (count of count)")
        parts.append((m.group(1), m.group(2)))
    return NamedQuery(
        name=name,
        title=header["title"],
        question=header.get("question", ""),
        sql=text,
        disclosure=mode,
        dimensions=dims,
        counts=counts,
        parts=tuple(parts),
        rates=tuple(rates),
        chart=header.get("chart"),
    )


def list_queries() -> list[NamedQuery]:
    """Every named query shipped with uprnlink, by name."""
    files = resources.files(__name__)
    out = []
    for entry in sorted(files.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            out.append(parse_query(entry.name[:-4], entry.read_text(encoding="utf-8")))
    return out


def get_query(name: str) -> NamedQuery:
    """The named query `name`, or a ConfigError listing the names there are."""
    queries = {q.name: q for q in list_queries()}
    if name not in queries:
        raise ConfigError(
            f"no named query {name!r}; `uprnlink query --list` shows them: {sorted(queries)}"
        )
    return queries[name]


def protect_result(
    query: NamedQuery, frame: pl.DataFrame, policy: DisclosurePolicy
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The query's raw result as it may be shown: protected counts, then rates from them."""
    if query.disclosure == "published":
        return frame, []
    missing = [c for c in (*query.dimensions, *query.counts) if c not in frame.columns]
    if missing:
        raise ConfigError(f"named query {query.name}: result has no column(s) {missing}")
    shown, stats = protect_rows(
        frame,
        query.dimensions,
        query.counts,
        policy,
        margins=query.disclosure == "crosstab",
        subsets=query.parts,
    )
    shown = shown.with_columns(
        rate_expr(r.numerator, r.denominator, r.per, r.name) for r in query.rates
    )
    return shown, stats
