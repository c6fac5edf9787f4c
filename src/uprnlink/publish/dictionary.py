"""The data dictionary (`data-dictionary.md`, shipped with the package and linked from docs/)
read as data, so every published view, column and macro carries its description in the
database itself (`COMMENT ON`), where DBeaver, R and Python users see it.

A view's section is a level-2 heading that is a bare name (``## households``); a table macro's
is headed by its call (``## households_as_at(as_at)``). The section's first paragraph describes
the relation; its table lists the columns in order: column, type, meaning, source, caveats.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["ColumnDoc", "RelationDoc", "comment_sql", "read_dictionary"]

_VIEW = re.compile(r"^## ([a-z_][a-z0-9_]*)\s*$")
_MACRO = re.compile(r"^## ([a-z_][a-z0-9_]*)\(([a-z_]+)\)\s*$")
_ROW = re.compile(r"^\|(.*)\|\s*$")


@dataclass(frozen=True)
class ColumnDoc:
    """One column of a view or macro, as documented."""

    name: str
    type: str
    meaning: str
    caveats: str

    @property
    def comment(self) -> str:
        """The column's database comment: its meaning, then its caveats."""
        text = _plain(self.meaning)
        caveats = _plain(self.caveats)
        return f"{text} Caveats: {caveats}" if caveats and caveats != "-" else text


@dataclass(frozen=True)
class RelationDoc:
    """A view or table macro, as documented."""

    name: str
    is_macro: bool
    summary: str
    columns: tuple[ColumnDoc, ...]


def _plain(markdown: str) -> str:
    """Markdown cell text as plain text (no backticks, links or emphasis)."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return re.sub(r"`|\*\*", "", text).strip()


def _cells(line: str) -> list[str]:
    found = _ROW.match(line)
    return [c.strip() for c in found.group(1).split("|")] if found else []


@functools.cache
def read_dictionary() -> dict[str, RelationDoc]:
    """Every documented view and table macro, by name."""
    text = (resources.files("uprnlink.publish") / "data-dictionary.md").read_text("utf-8")
    out: dict[str, RelationDoc] = {}
    name: str | None = None
    is_macro = False
    summary: list[str] = []
    in_summary = False
    columns: list[ColumnDoc] = []

    def close() -> None:
        if name is not None:
            out[name] = RelationDoc(name, is_macro, " ".join(summary), tuple(columns))

    for line in text.splitlines():
        if line.startswith("## "):
            close()
            found = _VIEW.match(line) or _MACRO.match(line)
            name = found.group(1) if found else None
            is_macro = found is not None and found.re is _MACRO
            summary, columns, in_summary = [], [], True
            continue
        if name is None:
            continue
        cells = _cells(line)
        if cells:
            in_summary = False
            if len(cells) >= 3 and cells[0] != "column" and not set(cells[0]) <= set("-: "):
                caveats = cells[4] if len(cells) > 4 else ""
                columns.append(ColumnDoc(_plain(cells[0]), cells[1], cells[2], caveats))
        elif in_summary:
            if line.strip():
                summary.append(_plain(line))
            elif summary:
                in_summary = False  # the first paragraph ends at a blank line
    close()
    return out


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_sql(relation: str, kind: str) -> list[str]:
    """COMMENT ON statements for a published relation (`kind`: TABLE, VIEW or MACRO TABLE)
    and its columns, from the dictionary; none for an undocumented relation."""
    doc = read_dictionary().get(relation)
    if doc is None:
        return []
    out = [f"COMMENT ON {kind} {relation} IS {_quote(doc.summary)}"]
    if kind != "MACRO TABLE":
        out += [
            f'COMMENT ON COLUMN {relation}."{c.name}" IS {_quote(c.comment)}' for c in doc.columns
        ]
    return out
