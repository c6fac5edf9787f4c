"""Analyst query path: policy-checked, read-only, every access and refusal audited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import PipelineRun
from uprnlink.cli import main
from uprnlink.publish.access import check_query, query_fingerprint, read_roles, run_query
from uprnlink.settings import PROJECT_ROOT

ANALYST = ("households", "people", "area_summary")


@pytest.mark.parametrize(
    "sql,allowed",
    [
        ("SELECT count(*) FROM households", True),
        (
            "WITH h AS (SELECT * FROM households) SELECT * FROM h JOIN people USING (household_id)",
            True,
        ),
        ("SELECT * FROM linked.person", False),
        ("SELECT * FROM households WHERE lsoa IN (SELECT lsoa FROM linked.household)", False),
        ("SELECT * FROM read_csv('/etc/passwd')", False),
        ("SELECT * FROM duckdb_tables()", False),
        ("DROP TABLE linked.person", False),
        ("DELETE FROM households", False),
        ("SELECT 1; SELECT 2", False),
        ("SELEC nonsense", False),
    ],
)
def test_check_query(sql: str, allowed: bool) -> None:
    assert check_query(sql, ANALYST).allowed is allowed


@pytest.mark.parametrize(
    "sql,allowed",
    [
        ("SELECT * FROM households_as_at(DATE '2025-03-31')", True),
        ("SELECT * FROM households_as_at(reference_date() - INTERVAL 1 YEAR)", True),
        ("SELECT safe_count(count(*)) FROM households", True),
        ("SELECT * FROM ward_summary_as_at(DATE '2025-03-31')", False),  # not granted below
        ("SELECT * FROM _households_as_at_computed(DATE '2025-03-31')", False),
        ("SELECT * FROM query('SELECT * FROM linked.person')", False),
        ("SELECT * FROM households_as_at((SELECT max(valid_from) FROM linked.membership))", False),
    ],
)
def test_table_macros_are_allowed_only_when_granted(sql: str, allowed: bool) -> None:
    check = check_query(sql, (*ANALYST, "households_as_at"))
    assert check.allowed is allowed, check.reason


def test_engineer_wildcard_and_fingerprint() -> None:
    assert check_query("SELECT * FROM linked.person", ("*",)).allowed
    assert query_fingerprint("SELECT  1\n") == query_fingerprint("SELECT 1")
    assert query_fingerprint("SELECT 1") != query_fingerprint("SELECT 2")


def test_policy_roles_cover_the_analyst_views() -> None:
    from uprnlink.publish.database import MACROS, VIEWS

    roles = read_roles(PROJECT_ROOT / "governance" / "policy.toml")
    assert "households" in roles.get("analyst", ())
    assert not any(v.startswith(("linked.", "summaries.")) for v in roles.get("analyst", ()))
    assert set(roles["analyst"]) == set(VIEWS) | set(MACROS)
    assert roles["ig_lead"] == ("run_info",)


@pytest.mark.slow
def test_cli_query_runs_refuses_and_audits(
    small_run: PipelineRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_run.root, copy)
    config = str(copy / "config" / "demo.toml")
    out = tmp_path / "result.csv"
    sql = "SELECT tenure, count(*) AS n FROM households GROUP BY tenure"
    assert main(["query", "--config", config, "--user", "ana", "--out", str(out), sql]) == 0
    assert out.read_text().startswith("tenure,n")
    code = main(["query", "--config", config, "--user", "ana", "SELECT * FROM linked.person"])
    assert code == 8
    assert "not allowed" in capsys.readouterr().err
    code = main(["query", "--config", config, "--user", "eve", "--role", "hacker", "SELECT 1"])
    assert code == 8

    log = copy / "demo" / "out" / "audit" / "audit.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    access = [e for e in events if e["event"] == "access"]
    refused = [e for e in events if e["event"] == "access.refused"]
    assert len(access) == 1 and access[0]["data"]["views"] == ["households"]
    assert access[0]["data"]["rows"] == len(out.read_text().splitlines()) - 1
    assert len(refused) == 2 and refused[0]["data"]["views"] == ["linked.person"]
    assert sql not in log.read_text()  # the fingerprint is logged, not the query text
    assert main(["audit", "verify", "--config", config]) == 0


def test_run_query_cannot_read_files(small_run: PipelineRun) -> None:
    with pytest.raises(Exception, match=r"(?i)permission|disabled"):
        run_query(small_run.settings.database_path, "SELECT * FROM read_csv('/etc/passwd')")
