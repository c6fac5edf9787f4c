"""The query service as the privacy boundary, tried the way a curious or hostile user would.

Every attack here ran against `uprnlink serve` (a real process holding only the audit key's
passphrase). An analyst's typed SQL is never answered on screen (it is refused before anything
about it is looked at, or submitted as a job: `test_analyst_outputs.py`), so the relation guard
is tried with the token of a role that does see SQL answers (a data engineer on a trusted
desktop) and with analysts' job submissions: each attack must be refused (or, where the query
is allowed but fails, must leak nothing), and each attempt must be in the audit log before
anything ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from tests.conftest import QueryService, free_port, service_environment, start_service
from uprnlink.governance.audit import AuditLog
from uprnlink.publish.access import query_fingerprint
from uprnlink.publish.database import MACRO_INPUTS, VIEWS

pytestmark = pytest.mark.slow


def call(
    svc: QueryService, body: dict[str, Any] | None, token: str | None, path: str = "/api/query"
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(svc.url + path, data=data, method="POST" if body else "GET")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def keyed(svc: QueryService) -> AuditLog:
    """The service's audit log opened with its audit key (fingerprints are keyed with it)."""
    from uprnlink.privacy.keys import load_audit_key
    from uprnlink.settings import read_settings

    return AuditLog(svc.audit_log, load_audit_key(read_settings(svc.config)))


def events_for(svc: QueryService, sql: str) -> list[str]:
    fp = query_fingerprint(sql, keyed(svc))
    return [e["event"] for e in svc.audit_events() if e["data"].get("query_fingerprint") == fp]


def failures_after(svc: QueryService, before: int, status: int, enough: int) -> list[dict]:
    """The counts of `status` in the service.failures entries after entry `before`, once they
    add up to `enough` (the service writes each window when it closes; wait for it)."""
    deadline = time.monotonic() + 60
    while True:
        entries = [e for e in svc.audit_events()[before:] if e["event"] == "service.failures"]
        counts = [c for e in entries for c in e["data"]["counts"] if c["status"] == status]
        if sum(c["n"] for c in counts) >= enough or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


# Attacks on the relation guard: each is refused (for any role), and logged as access.refused.
ATTACKS = {
    # 2. the CTE-shadow bypass of the old allow-list, and its relatives
    "cte named like a table": 'WITH "linked.person" AS (SELECT 1) SELECT count(*) FROM linked.person',
    "cte named like macro input": 'WITH "linked.membership" AS (SELECT 1) '
    "SELECT * FROM linked.membership",
    "cte shadowing a view": "WITH households AS (SELECT * FROM linked.membership) "
    "SELECT * FROM households",
    "nested cte": "WITH a AS (WITH b AS (SELECT * FROM linked.membership) SELECT * FROM b) "
    "SELECT * FROM a",
    "recursive cte": "WITH RECURSIVE r AS (SELECT * FROM linked.membership UNION ALL "
    "SELECT * FROM r) SELECT * FROM r LIMIT 1",
    "cte defined in a subquery used outside": "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, "
    "linked.household_area",
    # engineer tables and catalog views
    "macro input": "SELECT * FROM linked.membership",
    "macro input, quoted": 'SELECT * FROM "linked"."membership"',
    "macro input, case": "SELECT * FROM LiNkEd.MeMbErShIp",
    "macro input, catalog-qualified": "SELECT * FROM uprnlink.linked.membership",
    "macro input, unicode lookalike": "SELECT * FROM l\u0456nked.membership",
    "engineer table": "SELECT * FROM linked.person",
    "summaries schema": "SELECT * FROM summaries.area_summary",
    "information_schema": "SELECT * FROM information_schema.tables",
    "information_schema columns": "SELECT * FROM information_schema.columns",
    "pg_catalog": "SELECT * FROM pg_catalog.pg_class",
    "show": "SHOW TABLES",
    "show all": "SHOW ALL TABLES",
    "describe": "DESCRIBE households",
    "summarize": "SUMMARIZE people",
    "pivot": "PIVOT households ON tenure USING count(*)",
    # table functions, files, replacement scans
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_parquet": "SELECT * FROM read_parquet('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "glob": "SELECT * FROM glob('/*')",
    "replacement scan": "SELECT * FROM '/etc/passwd'",
    "replacement scan parquet": "SELECT * FROM 'out/linked/person.parquet'",
    "query()": "SELECT * FROM query('SELECT * FROM linked.membership')",
    "query_table()": "SELECT * FROM query_table('linked.membership')",
    "duckdb_tables": "SELECT * FROM duckdb_tables()",
    "duckdb_columns": "SELECT * FROM duckdb_columns()",
    "duckdb_settings": "SELECT * FROM duckdb_settings()",
    "pragma_table_info": "SELECT * FROM pragma_table_info('linked.membership')",
    "internal macro": "SELECT * FROM _households_as_at_computed(DATE '2025-03-31')",
    # subqueries reaching past the allow-list
    "scalar subquery": "SELECT (SELECT count(*) FROM linked.membership) AS n",
    "in subquery": "SELECT count(*) FROM households WHERE household_id IN "
    "(SELECT household_id FROM linked.membership)",
    "macro argument subquery": "SELECT * FROM households_as_at("
    "(SELECT max(valid_from) FROM linked.membership))",
    # statements other than one SELECT
    "two statements": "SELECT 1; SELECT * FROM linked.membership",
    "attach": "ATTACH '/tmp/x.duckdb' AS x",
    "detach": "DETACH uprnlink",
    "copy out": "COPY households TO '/tmp/households.csv'",
    "export": "EXPORT DATABASE '/tmp/export'",
    "pragma": "PRAGMA show_tables",
    "set": "SET threads = 1",
    "reset": "RESET enable_external_access",
    "call": "CALL duckdb_tables()",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "create": "CREATE TABLE t AS SELECT 1",
    "drop": "DROP TABLE households",
    "delete": "DELETE FROM households",
    "update": "UPDATE households SET residents = 0",
    "insert": "INSERT INTO households SELECT * FROM households",
    "use": "USE system.main",
    "explain": "EXPLAIN SELECT * FROM linked.membership",
    "not sql": "SELEC nonsense",
    # found by the red team (FINDINGS.md on the redteam branch): each now refused and logged
    "F1 quadratic work while binding": "SELECT household_id FROM households "
    "LIMIT levenshtein(repeat('a', 90000), repeat('b', 90000))",
    "F2 sample clause crashed the guard": "SELECT count(*) FROM linked.person USING SAMPLE 10%",
    "F2 deep expression crashed the guard": "SELECT "
    + "-".join(["1"] * 600)
    + " FROM linked.person",
    "F4 later cte is not visible to an earlier one": "WITH a AS (SELECT * FROM linked.membership), "
    "membership AS (SELECT 1) SELECT * FROM a",
    "F10 settings and paths": "SELECT current_setting('temp_directory')",
    "F10 activity counters": "SELECT current_query_id()",
    "F10 postgres functions": "SELECT pg_postmaster_start_time()",
    "F12 query parameter": "SELECT $1",
    "F12 write to the server log": "SELECT write_log('x')",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_each_attack_is_refused_and_logged(query_service: QueryService, name: str) -> None:
    sql = ATTACKS[name]
    status, body = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
    assert status == 403, (name, status, body)
    assert "refused" in body["error"]
    assert events_for(query_service, sql) == ["access.started", "access.refused"], name


@pytest.mark.parametrize("name", list(ATTACKS))
def test_each_attack_from_an_analyst_is_refused_unread_or_as_a_job(
    query_service: QueryService, name: str
) -> None:
    """An analyst's SQL on screen is refused before anything about it is looked at (the
    refusal is the same whatever the SQL says), and the same SQL as a job is refused at once
    by the guard, never queued."""
    sql = ATTACKS[name]
    token = query_service.tokens["analyst"]
    before = len(query_service.audit_events())
    status, body = call(query_service, {"sql": sql}, token)
    assert status == 403 and "job" in body["error"], (name, body)
    events = [
        e
        for e in query_service.audit_events()[before:]
        if e["data"].get("query_fingerprint") == query_fingerprint(sql, keyed(query_service))
    ]
    assert [e["event"] for e in events] == ["access.refused"]
    assert events[0]["data"]["rule"] == "sql-is-a-job"
    job = {"sql": sql, "title": "t", "justification": "j"}
    status, body = call(query_service, job, token, "/api/jobs")
    assert status == 403 and "job refused" in body["error"], (name, body)


def test_the_engineer_role_reaches_no_more_than_the_analyst_views(
    query_service: QueryService,
) -> None:
    """The service serves the analysts' database only: even `*` roles cannot name engineer
    tables, which are not in the file at all."""
    for sql in ("SELECT * FROM linked.person", "SELECT * FROM linked.membership"):
        status, _ = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
        assert status == 403
    status, body = call(
        query_service, {"sql": "SELECT count(*) AS n FROM people"}, query_service.tokens["ig_lead"]
    )
    assert status == 403 and "people" in body["error"]


def test_the_analyst_database_holds_only_the_analyst_views_data(
    query_service: QueryService,
) -> None:
    out = query_service.root / "demo" / "out"
    con = duckdb.connect(str(out / "uprnlink.duckdb"), read_only=True)
    try:
        tables = {
            (s, t)
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables()"
            ).fetchall()
        }
    finally:
        con.close()
    from uprnlink.publish.datasets import DATASETS

    assert tables == (
        {("main", v) for v in VIEWS}
        | {("linked", t) for t in MACRO_INPUTS}
        | {("tab", d.name) for d in DATASETS}
        | {("tab", "categories")}
    )
    engineer = (out / "engineer.duckdb").resolve()
    assert engineer.stat().st_mode & 0o077 == 0  # owner only
    assert (out / "linked").resolve().stat().st_mode & 0o077 == 0
    assert (out / "uprnlink.duckdb").resolve().stat().st_mode & 0o007 == 0


def test_an_analyst_asks_a_named_question_and_an_engineer_sql(query_service: QueryService) -> None:
    token = query_service.tokens["analyst"]
    status, body = call(query_service, {"named": "overcrowding_by_deprivation"}, token)
    assert status == 200 and body["row_count"] > 0 and body["title"]
    table = [e for e in query_service.audit_events() if e["event"] == "table"][-1]
    assert table["actor"] == "ana" and table["data"]["named_query"] == "overcrowding_by_deprivation"
    sql = "SELECT tenure, count(*) AS n FROM households GROUP BY tenure ORDER BY tenure"
    status, body = call(query_service, {"sql": sql}, token)
    assert status == 403
    token = query_service.tokens["data_engineer"]
    status, body = call(query_service, {"sql": sql}, token)
    assert status == 200 and [c["name"] for c in body["columns"]] == ["tenure", "n"]
    assert events_for(query_service, sql)[-2:] == ["access.started", "access"]
    access = [e for e in query_service.audit_events() if e["event"] == "access"][-1]
    assert access["actor"] == "eng" and access["data"]["role"] == "data_engineer"
    assert access["data"]["reads"] == ["main.households"]
    assert sql not in query_service.audit_log.read_text()  # a fingerprint, not the text
    status, body = call(query_service, {"sql": sql, "format": "csv"}, token)
    assert status == 200 and body.decode().startswith('"tenure","n"')


def test_the_role_comes_from_the_token_never_the_caller(query_service: QueryService) -> None:
    """3. a self-declared role or user is ignored: the store decides."""
    token = query_service.tokens["analyst"]
    body = {"sql": "SELECT * FROM linked.person", "role": "data_engineer", "user": "someone_else"}
    status, _ = call(query_service, body, token)
    assert status == 403
    refused = [e for e in query_service.audit_events() if e["event"] == "access.refused"][-1]
    assert refused["actor"] == "ana" and refused["data"]["role"] == "analyst"
    assert refused["data"]["rule"] == "sql-is-a-job"
    status, who = call(query_service, None, token, "/api/whoami")
    assert status == 200 and who["user"] == "ana" and who["role"] == "analyst"


def test_no_token_a_forged_token_and_a_revoked_token_are_refused(
    query_service: QueryService,
) -> None:
    from uprnlink import cli

    sql = {"named": "overcrowding_by_deprivation"}
    first = len(query_service.audit_events())
    assert call(query_service, sql, None)[0] == 401
    assert call(query_service, sql, "ulk_000000000000_" + "A" * 43)[0] == 401
    assert call(query_service, sql, query_service.tokens["analyst"] + "x")[0] == 401
    before = len(query_service.audit_events())
    # A token issued and revoked: refused at once, no restart needed.
    import contextlib
    import io

    out = io.StringIO()
    config = str(query_service.config)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["users", "add", "mallory", "--role", "analyst", "--config", config]) == 0
    token = out.getvalue().strip().splitlines()[1]
    reply = call(query_service, sql, token)
    assert reply[0] == 200, reply
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["users", "revoke", "mallory", "--config", config]) == 0
    assert call(query_service, sql, token)[0] == 401
    events = [e["event"] for e in query_service.audit_events()[before:]]
    assert "user.added" in events and "user.revoked" in events
    # Every refused token is counted (service.failures, per window, by source), never dropped.
    refused = failures_after(query_service, first, 401, 4)
    assert sum(c["n"] for c in refused) >= 4
    assert {c["route"] for c in refused} == {"api/query"}
    assert all(c["who"].startswith("source:") for c in refused)
    assert token not in query_service.audit_log.read_text()
    users = (query_service.root / "demo" / "work" / "service" / "users.json").read_text()
    assert token not in users


def test_errors_from_running_leak_no_value_and_are_logged(query_service: QueryService) -> None:
    """5. a failing query (error() over the data, a conversion error quoting a value) returns
    the error's class only, and is logged as started, then failed (an analyst never sees
    even that: `test_analyst_outputs.py`)."""
    token = query_service.tokens["data_engineer"]
    ids = pl.read_parquet(query_service.root / "demo" / "out" / "linked" / "person.parquet")
    some_ids = set(ids.get_column("person_id").head(50).to_list())
    for sql in (
        "SELECT error((SELECT string_agg(person_id, ',') FROM people))",
        "SELECT CAST(person_id AS INTEGER) FROM people",
        "SELECT CAST(household_id AS DATE) FROM households",
    ):
        status, body = call(query_service, {"sql": sql}, token)
        assert status == 422, body
        text = json.dumps(body)
        assert not any(i in text for i in some_ids)
        assert not re.search(r"[PH][0-9a-f]{16}", text)
        assert events_for(query_service, sql)[-2:] == ["access.started", "access.failed"]


def test_time_and_row_limits(query_service: QueryService) -> None:
    token = query_service.tokens["data_engineer"]
    slow = "SELECT count(*) FROM people a, people b, people c, people d"
    status, body = call(query_service, {"sql": slow}, token)
    assert status == 422 and "longer than" in body["error"]
    assert events_for(query_service, slow)[-2:] == ["access.started", "access.failed"]
    # The row limit.
    engineer = query_service.tokens["data_engineer"]
    status, body = call(query_service, {"sql": "SELECT * FROM people", "max_rows": 10}, engineer)
    assert status == 200 and body["row_count"] == 10 and body["truncated"] is True


def test_the_cli_is_a_client_that_holds_no_key(query_service: QueryService, tmp_path: Path) -> None:
    """1. an analyst's shell has a token and nothing else: no passphrase, no key, no database;
    it builds tables, asks named questions and submits jobs, and typed SQL is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPRNLINK_")}
    env["UPRNLINK_TOKEN"] = query_service.tokens["analyst"]
    env["UPRNLINK_DEBUG"] = "1"
    url = ["--url", query_service.url]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "uprnlink", *args, *url],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    out = tmp_path / "answer.csv"
    ok = run("table", "households", "--by", "tenure", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert out.read_text().startswith("tenure,count")
    shown = run("table", "residents", "--by", "sex", "--measure", "per_1000:emergency_admissions")
    assert shown.returncode == 0 and "emergency_admissions_per_1000" in shown.stdout, shown.stderr
    named = run("query", "--named", "overcrowding_by_deprivation")
    assert named.returncode == 0 and "overcrowded_pct" in named.stdout, named.stderr
    leak = "SELECT error((SELECT string_agg(person_id, ',') FROM people))"
    bad = run("query", leak)
    assert bad.returncode == 8 and "Traceback" not in bad.stderr and "job" in bad.stderr
    assert not re.search(r"P[0-9a-f]{16}", bad.stdout + bad.stderr)
    job = run("jobs", "submit", "--title", "leak?", "--why", "testing", leak)
    assert job.returncode == 0 and "held for an output checker" in job.stdout, job.stderr
    assert not re.search(r"P[0-9a-f]{16}", job.stdout + job.stderr)
    refused = run("jobs", "submit", "--title", "t", "--why", "w", "SELECT * FROM linked.person")
    assert refused.returncode == 8 and "not allowed" in refused.stderr
    unknown = run("table", "households", "--by", "household_id")
    assert unknown.returncode == 8 and "no dimension" in unknown.stderr


def test_the_service_refuses_to_start_with_a_key_the_log_does_not_know(
    query_service: QueryService, tmp_path: Path
) -> None:
    """5. any 32-byte key used to run queries: refused before anything runs."""
    env = service_environment()
    env.pop("UPRNLINK_AUDIT_PASSPHRASE")
    env["UPRNLINK_AUDIT_KEY"] = os.urandom(32).hex()
    log = tmp_path / "bad.log"
    proc = start_service(query_service.config, free_port(), log, env)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert "kept with audit key" in log.read_text()


def test_an_emptied_log_fails_verification(query_service: QueryService, tmp_path: Path) -> None:
    """4. emptying the log and deleting its checkpoint needs no key, and must not pass."""
    import shutil

    from uprnlink import cli

    copy = tmp_path / "copy"
    shutil.copytree(query_service.root, copy, symlinks=True)
    config = str(copy / "config" / "demo.toml")
    (copy / "demo" / "out" / "audit" / "audit.jsonl").write_text("")
    (copy / "demo" / "work" / "audit" / "audit.head").unlink()
    assert cli.main(["audit", "verify", "--config", config]) == 1


# ------------------------------------------------------------------ red-team regressions


def test_f1_work_while_checking_is_stopped_and_logged_first(query_service: QueryService) -> None:
    """A query that costs minutes to bind (constant folding) is stopped at the check's time
    limit (2 s here), in a worker that is then killed and replaced; the attempt was logged
    before any of it. What proves the stop is the refusal's reason and the killed worker, not
    a wall-clock bound (which measured the machine: a loaded one restarts workers slowly)."""
    token = query_service.tokens["data_engineer"]
    burner = (
        "SELECT household_id FROM households "
        "LIMIT length(list_reduce(range(40000000), lambda a, b: a + b)::VARCHAR)"
    )
    call(query_service, {"sql": "SELECT 1 AS warm"}, token)  # the workers are running
    workers = set(query_service.query_workers())
    status, body = call(query_service, {"sql": burner}, token)
    assert status == 403, body
    assert "cannot be checked: the query ran longer than 2 s and was stopped" in body["error"]
    assert workers - set(query_service.query_workers()), "the overrunning worker was not killed"
    assert events_for(query_service, burner) == ["access.started", "access.refused"]
    ok, _ = call(query_service, {"sql": "SELECT count(*) AS n FROM households"}, token)
    assert ok == 200  # the service carries on with a fresh worker


def test_f4_the_log_names_what_was_really_read(query_service: QueryService) -> None:
    sql = (
        "WITH a AS (SELECT * FROM households), households AS (SELECT * FROM area_summary) "
        "SELECT count(*) AS households FROM a"
    )
    status, body = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
    assert status == 200, body
    access = [e for e in query_service.audit_events() if e["event"] == "access"][-1]
    assert "households" in access["data"]["views"]
    assert access["data"]["reads"] == ["main.households"]


def test_f6_an_answer_too_large_is_refused_while_it_streams(query_service: QueryService) -> None:
    sql = "SELECT a.*, b.* FROM people a, people b LIMIT 40000"
    status, body = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
    assert status == 422 and "larger than 2 MiB" in body["error"]
    assert events_for(query_service, sql)[-2:] == ["access.started", "access.failed"]


def test_f7_other_dates_are_moved_to_the_end_of_their_month(query_service: QueryService) -> None:
    def dates(day: str) -> list[str]:
        sql = (
            f"SELECT as_at_date, count(*) AS households FROM households_as_at({day}) "
            "GROUP BY as_at_date"
        )
        status, body = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
        assert status == 200, body
        return [row[0] for row in body["rows"]]

    assert dates("DATE '2025-06-15'") == ["2025-06-30"]
    assert dates("reference_date()") == ["2026-03-31"]  # a snapshot date is kept


def test_f8_a_named_answer_is_the_same_table_for_every_role(query_service: QueryService) -> None:
    """A named question's answer is the table builder's protected table, whoever asks."""
    for name in (
        "people_85_plus_living_alone_without_social_care",
        "long_term_conditions_by_household_type",
    ):
        status, analyst = call(query_service, {"named": name}, query_service.tokens["analyst"])
        assert status == 200
        engineer_token = query_service.tokens["data_engineer"]
        status, engineer = call(query_service, {"named": name}, engineer_token)
        assert status == 200 and engineer["rows"] == analyst["rows"]


def test_f9_what_an_analyst_types_does_not_reach_the_log(query_service: QueryService) -> None:
    sql = 'SELECT * FROM "Jane Smith, 12 Acacia Avenue, NHS 943 476 5919"'
    for role in ("analyst", "data_engineer"):
        status, _ = call(query_service, {"sql": sql}, query_service.tokens[role])
        assert status == 403
        job = {"sql": sql, "title": "t", "justification": "j"}
        assert call(query_service, job, query_service.tokens[role], "/api/jobs")[0] == 403
    text = query_service.audit_log.read_text()
    assert "Jane" not in text and "Acacia" not in text and "943 476" not in text
    refused = [e for e in query_service.audit_events() if e["event"] == "access.refused"][-1]
    assert refused["data"]["views"][0].startswith("other:")
    # A reader of the log who guesses the query (or the name in it) cannot confirm the guess:
    # the fingerprints are keyed with the audit key, not plain hashes of the text.
    import hashlib

    guesses = [sql, " ".join(sql.split()), "Jane Smith, 12 Acacia Avenue, NHS 943 476 5919"]
    for guess in guesses:
        plain = hashlib.sha256(guess.encode()).hexdigest()
        assert plain[:16] not in text and plain[:8] not in text
    assert refused["data"]["query_fingerprint"] == query_fingerprint(sql, keyed(query_service))


def test_f11_strangers_are_not_read_echoed_or_allowed_to_flood_the_log(
    query_service: QueryService,
) -> None:
    before = len(query_service.audit_events())
    big = {"sql": "SELECT 1", "padding": "x" * 200_000}
    status, body = call(query_service, big, None)
    assert status == 401 and "x" * 100 not in json.dumps(body)
    for _ in range(150):
        assert call(query_service, {"sql": "SELECT 1"}, "ulk_bad")[0] == 401
    # Every one of the 151 refusals is counted, in a few entries (one per window), not 151.
    counts = failures_after(query_service, before, 401, 151)
    assert sum(c["n"] for c in counts) >= 151
    entries = [e for e in query_service.audit_events()[before:] if e["event"] == "service.failures"]
    assert len(entries) < 50
    assert "ulk_bad" not in query_service.audit_log.read_text()
    token = query_service.tokens["analyst"]
    status, body = call(query_service, big, token)
    assert status == 413  # too large, refused before it is parsed


def test_f3_a_token_revoked_while_its_query_runs_gets_no_answer(
    query_service: QueryService,
) -> None:
    """The query cannot finish before the revocation: its worker is paused (SIGSTOP) from before
    it is sent until after the token is revoked, and the revocation waits for the service to log
    the query as started. (Before, a 0.3 s sleep bet that a cross join would outlast it.)"""
    import contextlib
    import io
    import threading

    from uprnlink import cli

    config = str(query_service.config)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert (
            cli.main(["users", "add", "trudy", "--role", "data_engineer", "--config", config]) == 0
        )
    token = out.getvalue().strip().splitlines()[1]
    sql = "SELECT count(*) AS revoked_mid_query FROM people"
    # The same query for another analyst first: the service has its workers and has checked
    # this query once (checks are kept per release), so nothing but the run needs a worker.
    status, _ = call(query_service, {"sql": sql}, query_service.tokens["data_engineer"])
    assert status == 200
    answer: dict[str, Any] = {}

    def ask() -> None:
        answer["reply"] = call(query_service, {"sql": sql}, token)

    asking = threading.Thread(target=ask)
    before = len(query_service.audit_events())
    with query_service.workers_paused():
        asking.start()
        query_service.wait_for_event(
            "access.started",
            before,
            user="trudy",
            query_fingerprint=query_fingerprint(sql, keyed(query_service)),
        )
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["users", "revoke", "trudy", "--config", config]) == 0
    asking.join(timeout=120)
    assert not asking.is_alive()
    status, body = answer["reply"]
    assert status == 403 and "revoked" in body["error"], body
    assert events_for(query_service, sql)[-1] == "access.refused"
    refused = [e for e in query_service.audit_events() if e["event"] == "access.refused"][-1]
    assert refused["actor"] == "trudy" and refused["data"]["rule"] == "revoked"


def test_f5_a_release_switched_during_a_query_breaks_nothing(
    query_service: QueryService,
) -> None:
    import shutil
    import threading

    from uprnlink.publish import releases

    out = query_service.root / "demo" / "out"
    token = query_service.tokens["data_engineer"]
    sql = "SELECT count(*) AS asked_before_the_switch FROM people"
    # Asked once first: the service has its workers and has checked this query on this release.
    assert call(query_service, {"sql": sql}, token)[0] == 200
    answer: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: answer.update(reply=call(query_service, {"sql": sql}, token))
    )
    before = len(query_service.audit_events())
    # The query waits in a paused worker of the old release while the release switches (no
    # sleep: it cannot finish first, however fast the machine).
    with query_service.workers_paused():
        thread.start()
        query_service.wait_for_event(
            "access.started",
            before,
            user="eng",
            query_fingerprint=query_fingerprint(sql, keyed(query_service)),
        )
        live = releases.current(out)
        assert live is not None
        staged = releases.staging_dir(out, "switched-release")
        shutil.copytree(out / "releases" / live, staged, symlinks=True)
        releases.switch(out, "switched-release")
        assert thread.is_alive()  # still waiting on the old release, now switched away
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert answer["reply"][0] == 200, answer["reply"]
    # New queries are served by the new release's workers.
    status, _ = call(query_service, {"sql": "SELECT count(*) AS n FROM households"}, token)
    assert status == 200
    status, health = call(query_service, None, None, "/api/health")
    assert health["release"] == "switched-release"
    # Every attempt that started ended on the record (an analyst's SQL refused unread never
    # started).
    events = [
        e["event"] for e in query_service.audit_events() if e["data"].get("rule") != "sql-is-a-job"
    ]
    started = events.count("access.started")
    closed = sum(events.count(e) for e in ("access", "access.failed", "access.refused"))
    assert started == closed
