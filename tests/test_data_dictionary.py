"""docs/data-dictionary.md documents every analyst view and every column, in order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import PipelineRun
from uprnlink.settings import PROJECT_ROOT

DICTIONARY = PROJECT_ROOT / "docs" / "data-dictionary.md"
# A view section is a level-2 heading that is a bare identifier ("## households"); other
# sections ("## Disclosure control") have spaces in their titles.
VIEW_HEADING = re.compile(r"^## ([a-z_][a-z0-9_]*)\s*$")
# A table macro's section is headed by its call: "## households_as_at(as_at)".
MACRO_HEADING = re.compile(r"^## ([a-z_][a-z0-9_]*)\(([a-z_]+)\)\s*$")
TABLE_ROW = re.compile(r"^\|\s*`?([^|`]+?)`?\s*\|")


def documented_columns(path: Path, heading: re.Pattern[str] = VIEW_HEADING) -> dict[str, list[str]]:
    """View (or macro) name -> the column names of its section's table, in the order written."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            m = heading.match(line)
            current = m.group(1) if m else None
            if current is not None:
                assert current not in sections, f"view {current} documented twice"
                sections[current] = []
            continue
        if current is None or not line.startswith("|"):
            continue
        m = TABLE_ROW.match(line)
        if m is None:
            continue
        name = m.group(1).strip()
        if name == "column" or set(name) <= set("-: "):
            continue  # header and separator rows
        sections[current].append(name)
    return sections


@pytest.fixture(scope="module")
def documented() -> dict[str, list[str]]:
    sections = documented_columns(DICTIONARY)
    assert sections, f"no view sections found in {DICTIONARY}"
    return sections


@pytest.fixture(scope="module")
def database(small_run: PipelineRun) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    yield con
    con.close()


def test_every_documented_view_matches_describe(
    documented: dict[str, list[str]], database: duckdb.DuckDBPyConnection
) -> None:
    for view, columns in documented.items():
        assert columns, f"section {view} has no column table"
        actual = [row[0] for row in database.execute(f'DESCRIBE "{view}"').fetchall()]
        assert columns == actual, f"{view}: documented {columns} != DESCRIBE {actual}"


def test_every_analyst_view_has_a_section(
    documented: dict[str, list[str]], database: duckdb.DuckDBPyConnection
) -> None:
    # In the analysts' database each view's rows are a table of the view's name (schema main).
    views = {
        row[0]
        for row in database.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall()
    }
    assert views, "the analysts' database has no views"
    missing = views - set(documented)
    assert not missing, f"views with no section in {DICTIONARY.name}: {sorted(missing)}"
    extra = set(documented) - views
    assert not extra, f"sections for views the database does not have: {sorted(extra)}"


def test_every_table_macro_matches_describe_and_has_a_section(
    database: duckdb.DuckDBPyConnection,
) -> None:
    documented = documented_columns(DICTIONARY, MACRO_HEADING)
    assert documented, f"no macro sections found in {DICTIONARY}"
    macros = {
        row[0]
        for row in database.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type = 'table_macro' AND NOT internal"
        ).fetchall()
        if not row[0].startswith("_")  # internal helpers analysts cannot call
    }
    assert macros == set(documented), (sorted(macros), sorted(documented))
    for macro, columns in documented.items():
        actual = [
            row[0]
            for row in database.execute(
                f"DESCRIBE SELECT * FROM {macro}(reference_date())"
            ).fetchall()
        ]
        assert columns == actual, f"{macro}: documented {columns} != DESCRIBE {actual}"


def test_every_view_column_and_macro_carries_its_comment(
    database: duckdb.DuckDBPyConnection,
) -> None:
    """The dictionary travels with the data: DBeaver, R and Python users see each view's and
    column's meaning in the database itself (COMMENT ON), equal to this file's."""
    from uprnlink.publish.dictionary import read_dictionary

    docs = read_dictionary()
    tables = dict(
        database.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall()
    )
    assert tables and set(tables) <= set(docs)
    for table, comment in tables.items():
        assert comment == docs[table].summary and comment, table
    columns = database.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() "
        "WHERE schema_name = 'main' AND database_name = current_database() AND NOT internal"
    ).fetchall()
    by_name = {(t, c.name): c.comment for t in tables for c in docs[t].columns}
    assert len(columns) == len(by_name)
    for table, column, comment in columns:
        assert comment and comment == by_name[(table, column)], (table, column)
    macros = dict(
        database.execute(
            "SELECT DISTINCT function_name, comment FROM duckdb_functions() "
            "WHERE function_type = 'table_macro' AND NOT internal AND function_name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()
    )
    assert macros and all(comment == docs[m].summary for m, comment in macros.items())


def test_every_declared_view_is_documented_column_by_column_with_its_type() -> None:
    """The declarations (`uprnlink.publish.views`) and the dictionary agree without a run:
    each view has a section listing the declared columns, in order, with the declared types."""
    from uprnlink.publish.views import ANALYST_VIEWS, undocumented

    assert len(ANALYST_VIEWS) == len({v.name for v in ANALYST_VIEWS}), "a view declared twice"
    assert undocumented() == []


def test_undocumented_names_the_view_and_the_disagreement() -> None:
    from uprnlink.publish.views import Column, View, undocumented

    missing = View("no_such_view", (Column("x", "INTEGER"),), "FROM linked.household")
    retyped = View("run_info", (Column("key", "VARCHAR"), Column("value", "JSON")), "FROM t")
    problems = undocumented((missing, retyped))
    assert problems[0] == "view no_such_view: no section in data-dictionary.md"
    assert problems[1].startswith("view run_info: declared columns") and "JSON" in problems[1]


def test_every_view_has_the_declared_columns_and_types(
    database: duckdb.DuckDBPyConnection,
) -> None:
    from uprnlink.publish.views import ANALYST_VIEWS

    for view in ANALYST_VIEWS:
        actual = [(r[0], r[1]) for r in database.execute(f'DESCRIBE "{view.name}"').fetchall()]
        assert actual == [(c.name, c.type) for c in view.columns], view.name
