"""The query guard: DuckDB's parser names the relations, its binder says what is read.

Unit tests of `publish.access` on the small run's analyst database; the same checks tried
through the running service, with the audit log, are in tests/test_service.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import PipelineRun
from uprnlink.governance.audit import AuditLog
from uprnlink.privacy.keys import MasterKey
from uprnlink.publish.access import (
    AccessRefusedError,
    AnalystDatabase,
    Identity,
    QueryCheck,
    QueryFailedError,
    QueryResult,
    governed_query,
    query_fingerprint,
    read_roles,
    readable_tables,
    role_relations,
)
from uprnlink.settings import PROJECT_ROOT

ANALYST = ("households", "people", "area_summary")


@pytest.fixture(scope="module")
def db(small_run: PipelineRun) -> Iterator[AnalystDatabase]:
    with AnalystDatabase(small_run.settings.database_path) as database:
        yield database


@pytest.mark.parametrize(
    "sql,allowed",
    [
        ("SELECT count(*) FROM households", True),
        ("FROM households LIMIT 1", True),
        (
            "WITH h AS (SELECT * FROM households) SELECT * FROM h JOIN people USING (household_id)",
            True,
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
            "SELECT * FROM r",
            True,
        ),
        ("SELECT * FROM linked.person", False),
        ("SELECT * FROM households WHERE lsoa IN (SELECT lsoa FROM linked.household_area)", False),
        ('WITH "linked.membership" AS (SELECT 1) SELECT * FROM linked.membership', False),
        ("WITH people AS (SELECT * FROM linked.membership) SELECT * FROM people", False),
        ("SELECT * FROM read_csv('/etc/passwd')", False),
        ("SELECT * FROM duckdb_tables()", False),
        ("SHOW TABLES", False),
        ("DROP TABLE households", False),
        ("DELETE FROM households", False),
        ("SELECT 1; SELECT 2", False),
        ("SELEC nonsense", False),
        ("SELECT * FROM household_health", False),  # a view, but not granted here
    ],
)
def test_check(db: AnalystDatabase, sql: str, allowed: bool) -> None:
    check = db.check(sql, ANALYST)
    assert check.allowed is allowed, check.reason


@pytest.mark.parametrize(
    "sql,allowed",
    [
        ("SELECT * FROM households_as_at(DATE '2025-03-31')", True),
        ("SELECT * FROM households_as_at(reference_date() - INTERVAL 1 YEAR)", True),
        ("SELECT safe_count(count(*)) FROM households", True),
        ("SELECT * FROM ward_summary_as_at(DATE '2025-03-31')", False),  # not granted below
        ("SELECT * FROM _households_as_at_computed(DATE '2025-03-31')", False),
        ("SELECT * FROM query('SELECT * FROM linked.membership')", False),
        ("SELECT * FROM households_as_at((SELECT max(valid_from) FROM linked.membership))", False),
    ],
)
def test_table_macros_are_allowed_only_when_granted(
    db: AnalystDatabase, sql: str, allowed: bool
) -> None:
    check = db.check(sql, (*ANALYST, "households_as_at"))
    assert check.allowed is allowed, check.reason


def test_the_binder_reports_what_is_read(db: AnalystDatabase) -> None:
    check = db.check(
        "SELECT h.tenure, count(*) FROM households h JOIN people p USING (household_id) "
        "GROUP BY ALL",
        ANALYST,
    )
    assert check.allowed and check.reads == ("main.households", "main.people")
    macro = db.check(
        "SELECT count(*) FROM households_as_at(DATE '2025-03-31')", ("households_as_at",)
    )
    assert macro.allowed and "linked.membership" in macro.reads
    assert macro.relations == ("households_as_at",)


def test_wildcard_means_every_analyst_view_and_macro_and_nothing_else(
    db: AnalystDatabase, tmp_path: Path
) -> None:
    from uprnlink.governance.audit import AuditLog
    from uprnlink.privacy.keys import MasterKey
    from uprnlink.publish.database import MACROS, VIEWS

    log = AuditLog(tmp_path / "audit.jsonl", MasterKey(bytes(32), kind="audit"))

    assert role_relations(("*",)) == frozenset({*VIEWS, *MACROS})
    assert not db.check("SELECT * FROM linked.person", ("*",)).allowed
    assert ("main", "people") in readable_tables(role_relations(("*",)))
    assert query_fingerprint("SELECT  1\n", log) == query_fingerprint("SELECT 1", log)
    assert query_fingerprint("SELECT 1", log) != query_fingerprint("SELECT 2", log)


def test_policy_roles_cover_the_analyst_views() -> None:
    from uprnlink.publish.database import MACROS, VIEWS

    roles = read_roles(PROJECT_ROOT / "governance" / "policy.toml")
    assert "households" in roles.get("analyst", ())
    assert not any(v.startswith(("linked.", "summaries.")) for v in roles.get("analyst", ()))
    assert set(roles["analyst"]) == set(VIEWS) | set(MACROS)
    assert roles["ig_lead"] == ("run_info",)


def test_policy_grants_each_role_the_views_declared_for_it() -> None:
    """A view's declaration names the roles it is for; the shipped policy (which the IG lead
    approves) grants exactly those views, role by role (`*` roles see every view anyway)."""
    from uprnlink.publish.database import VIEWS
    from uprnlink.publish.views import declared_grants

    roles = read_roles(PROJECT_ROOT / "governance" / "policy.toml")
    declared = declared_grants()
    assert declared["analyst"] == VIEWS
    for role, granted in roles.items():
        if "*" in granted:
            continue
        views = tuple(v for v in VIEWS if v in granted)
        assert views == declared.get(role, ()), role


def test_running_cannot_read_files_and_names_no_value(db: AnalystDatabase) -> None:
    with pytest.raises(QueryFailedError) as err:
        db.run("SELECT * FROM read_csv('/etc/passwd')")
    assert "root" not in str(err.value)
    with pytest.raises(QueryFailedError, match="ConversionException") as err:
        db.run("SELECT CAST(person_id AS INTEGER) FROM people")
    assert "P" not in str(err.value).split("(")[0][-3:]


def test_row_limit_and_timeout(db: AnalystDatabase) -> None:
    result = db.run("SELECT * FROM people", max_rows=7)
    assert result.table.num_rows == 7 and result.truncated
    with pytest.raises(QueryFailedError, match="longer than"):
        db.run("SELECT count(*) FROM people a, people b, people c, people d", timeout=0.5)


class _EngineWithAHook:
    """A query engine that allows every query and, while running one, calls the test's hook: the
    test decides what happens mid-query, whatever the machine's speed."""

    def __init__(self, while_running: Callable[[], None]) -> None:
        self.while_running = while_running
        self.ran = 0

    def check(self, sql: str, granted: tuple[str, ...]) -> QueryCheck:
        return QueryCheck(True, ("households",), reads=("main.households",))

    def run(self, sql: str, *, max_rows: int, timeout: float) -> QueryResult:
        self.ran += 1
        self.while_running()
        return QueryResult(pa.table({"n": [42]}), False, 0.01)


def test_a_token_revoked_while_its_query_runs_gets_no_answer(tmp_path: Path) -> None:
    """The token is asked about again once the query has run: revoked in the meantime, the
    answer is withheld and the attempt ends refused on the record (the service's end-to-end
    version is tests/test_service.py::test_f3...)."""
    active = {"trudy": True}

    def revoke() -> None:
        active["trudy"] = False

    engine = _EngineWithAHook(while_running=revoke)
    audit = AuditLog(tmp_path / "audit.jsonl", MasterKey(os.urandom(32)))
    with pytest.raises(AccessRefusedError, match="revoked"):
        governed_query(
            engine,
            audit,
            Identity("trudy", "analyst", "tok-1"),
            {"analyst": ("households",)},
            sql="SELECT count(*) AS n FROM households",
            still_allowed=lambda: active["trudy"],
        )
    assert engine.ran == 1  # it was refused after running, not before
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["access.started", "access.refused"]
    assert events[-1]["data"]["rule"] == "revoked" and "rows" not in events[-1]["data"]
