"""Named questions: ready tables for analysts, each a `.toml` file in this package.

A named question is a table builder request (`[table]`, a `publish.tabulation.TableSpec`)
with its words: `title` and `question` (shown by `uprnlink query --list`, the catalogue and
the portal), `[columns]` (the answer's column names as the question shows them) and
`[chart]` (what the portal and the guide draw: `kind` bars or line, the dimension on `x`, an
optional `series` dimension and the column `y` the question is about). Its answer is the
table builder's: every count and sum perturbed, so it is the same cell for cell as the same
table built by hand.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import polars as pl

from uprnlink.errors import ConfigError
from uprnlink.publish.tabulation import TableAnswer, TableSpec, TableSpecError

__all__ = ["Chart", "NamedQuery", "get_query", "list_queries", "parse_query"]


@dataclass(frozen=True)
class Chart:
    """What a question's answer is drawn as."""

    kind: Literal["bars", "line"]
    x: str
    y: str
    series: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": self.x, "y": self.y, "series": self.series}


@dataclass(frozen=True)
class NamedQuery:
    """One ready question: its words, its table and how its answer is shown."""

    name: str
    title: str
    question: str
    spec: TableSpec
    columns: tuple[tuple[str, str], ...] = ()
    chart: Chart | None = None

    def shown(self, column: str) -> str:
        """The name an answer column is shown under."""
        return dict(self.columns).get(column, column)

    def present(self, answer: TableAnswer) -> tuple[pl.DataFrame, tuple[str, ...]]:
        """The answer with the question's column names, and its withheld columns."""
        frame = answer.frame.rename({c: self.shown(c) for c in answer.frame.columns})
        return frame, tuple(self.shown(c) for c in answer.withheld)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "question": self.question,
            "table": self.spec.to_dict(),
            "columns": dict(self.columns),
            "chart": self.chart.to_dict() if self.chart else None,
        }


def parse_query(name: str, text: str) -> NamedQuery:
    """A named question from its TOML text (checked for shape; the release's categories are
    checked when it is asked)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"named question {name}: not valid TOML ({exc})") from None
    unknown = set(raw) - {"title", "question", "table", "columns", "chart"}
    if unknown or "title" not in raw or "table" not in raw:
        raise ConfigError(
            f"named question {name}: needs title and [table]"
            + (f"; unknown keys {sorted(unknown)}" if unknown else "")
        )
    try:
        spec = TableSpec.from_dict(raw["table"])
        spec.check_declared()
    except TableSpecError as exc:
        raise ConfigError(f"named question {name}: [table] {exc}") from None
    columns = raw.get("columns", {})
    answer_columns = {*spec.dimensions, *(m.column for m in spec.measures)}
    if not isinstance(columns, dict) or not set(columns) <= answer_columns:
        raise ConfigError(
            f"named question {name}: [columns] may rename only {sorted(answer_columns)}"
        )
    chart = None
    if "chart" in raw:
        c = raw["chart"]
        shown = {columns.get(col, col) for col in answer_columns}
        if (
            not isinstance(c, dict)
            or c.get("kind") not in ("bars", "line")
            or c.get("x") not in spec.dimensions
            or c.get("y") not in shown
            or (c.get("series") is not None and c.get("series") not in spec.dimensions)
        ):
            raise ConfigError(
                f"named question {name}: [chart] needs kind (bars, line), x and series from "
                "the dimensions and y from the answer's columns"
            )
        chart = Chart(c["kind"], c["x"], c["y"], c.get("series"))
    return NamedQuery(
        name=name,
        title=str(raw["title"]),
        question=" ".join(str(raw.get("question", "")).split()),
        spec=spec,
        columns=tuple((str(k), str(v)) for k, v in columns.items()),
        chart=chart,
    )


def list_queries() -> list[NamedQuery]:
    """Every named question shipped with uprnlink, by name."""
    files = resources.files(__name__)
    out = []
    for entry in sorted(files.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            out.append(parse_query(entry.name[:-5], entry.read_text(encoding="utf-8")))
    return out


def get_query(name: str) -> NamedQuery:
    """The named question `name`, or a ConfigError listing the names there are."""
    found = {q.name: q for q in list_queries()}
    if name not in found:
        raise ConfigError(
            f"no named question {name!r}; `uprnlink query --list` shows them: {sorted(found)}"
        )
    return found[name]
