"""The analysts' query path: role-checked, read-only, and every access or refusal audited.

A query is parsed (DuckDB's own parser, via `json_serialize_sql`) to find every relation it
names; each must be a view (or an as-at table macro) the role may query under
`governance/policy.toml`. Only single SELECT statements run, on a read-only connection with
external file access disabled, so a query cannot reach the engineer-only tables, other files
or the landing zone. A query that runs longer than a second shows its progress on stderr.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import duckdb
import polars as pl

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.governance.audit import AuditLog
from uprnlink.publish import queries
from uprnlink.publish.database import read_policy
from uprnlink.settings import RunSettings, read_toml


class AccessRefusedError(UprnlinkError):
    """A query was refused by policy (the refusal is audited)."""

    exit_code = 8


@dataclass(frozen=True)
class QueryCheck:
    """What a query touches and whether the role may run it."""

    allowed: bool
    relations: tuple[str, ...]
    reason: str = ""


def read_roles(policy_path: Path) -> dict[str, tuple[str, ...]]:
    """Role -> views it may query, from the governance policy (`*` means every relation)."""
    raw = read_toml(policy_path, "governance policy")
    roles = raw.get("roles", {})
    return {name: tuple(spec.get("views", ())) for name, spec in roles.items()}


def query_fingerprint(sql: str) -> str:
    """A short hash of the query text with whitespace normalised (the query itself is not logged)."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


def _walk(node: Any, relations: set[str], ctes: set[str], functions: set[str]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "BASE_TABLE" and "table_name" in node:
            schema = node.get("schema_name") or ""
            name = node["table_name"]
            relations.add(f"{schema}.{name}" if schema and schema != "main" else name)
        elif kind == "TABLE_FUNCTION":
            functions.add(str(node.get("function", {}).get("function_name", "table function")))
        for entry in node.get("cte_map", {}).get("map", []) if "cte_map" in node else []:
            ctes.add(str(entry.get("key")))
        for value in node.values():
            _walk(value, relations, ctes, functions)
    elif isinstance(node, list):
        for value in node:
            _walk(value, relations, ctes, functions)


def check_query(sql: str, allowed_views: tuple[str, ...]) -> QueryCheck:
    """Parse `sql` and decide whether a role allowed `allowed_views` may run it."""
    con = duckdb.connect()
    try:
        parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    finally:
        con.close()
    if parsed.get("error"):
        message = str(parsed.get("error_message", "cannot parse"))
        reason = (
            "only SELECT queries are allowed"
            if "Only SELECT" in message
            else "the query does not parse: " + message.splitlines()[0][:200]
        )
        return QueryCheck(False, (), reason)
    if len(parsed.get("statements", [])) != 1:
        return QueryCheck(False, (), "run one SELECT statement at a time")
    relations: set[str] = set()
    ctes: set[str] = set()
    functions: set[str] = set()
    _walk(parsed, relations, ctes, functions)
    named = tuple(sorted((relations - ctes) | functions))
    if "*" in allowed_views:
        return QueryCheck(True, named)
    # Table functions (read_csv, query, duckdb_tables, ...) are refused; the published as-at
    # macros are table functions too, allowed when the role lists them like views.
    other_functions = sorted(f for f in functions if f not in allowed_views)
    if other_functions:
        return QueryCheck(False, named, f"table functions are not allowed: {other_functions}")
    refused = [r for r in named if r not in allowed_views]
    if refused:
        return QueryCheck(False, named, f"not allowed for this role: {refused}")
    return QueryCheck(True, named)


def run_query(
    db_path: Path,
    sql: str,
    *,
    limit: int | None = None,
    progress: TextIO | None = None,
    progress_after: float = 1.0,
) -> pl.DataFrame:
    """Run an already-checked query read-only, with no access to files outside the database.

    With `progress` (a terminal stream), a query still running after `progress_after` seconds
    shows a spinner, the elapsed time and DuckDB's own estimate of how far it has got.
    """
    if not db_path.exists():
        raise ConfigError(f"no published database at {db_path}: run the pipeline first")
    con = duckdb.connect(str(db_path), read_only=True, config={"enable_external_access": False})
    ticker = _Progress(con, progress, progress_after) if progress is not None else None
    try:
        if ticker is not None:
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
            ticker.start()
        rel = con.sql(sql)
        if limit is not None:
            rel = rel.limit(limit)
        frame = pl.from_arrow(rel.to_arrow_table())
    finally:
        if ticker is not None:
            ticker.stop()
        con.close()
    assert isinstance(frame, pl.DataFrame)
    return frame


class _Progress:
    """A spinner line on a stream while a query runs (elapsed seconds and DuckDB's estimate)."""

    FRAMES = "|/-\\"

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: TextIO, after: float) -> None:
        self.con, self.stream, self.after = con, stream, after
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.shown = False

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()

    def _run(self) -> None:
        if self.done.wait(self.after):
            return
        tick = 0
        while not self.done.is_set():
            try:
                pct = self.con.query_progress()
            except duckdb.Error:
                pct = -1.0
            elapsed = time.monotonic() - self.started
            estimate = f", about {pct:.0f}% done" if pct >= 0 else ""
            frame = self.FRAMES[tick % len(self.FRAMES)]
            self.stream.write(f"\r{frame} query running: {elapsed:.1f} s{estimate}   ")
            self.stream.flush()
            self.shown = True
            tick += 1
            self.done.wait(0.2)


def safe_name(text: str) -> str:
    """A user or role name fit for an audit entry (no control characters, bounded length)."""
    return re.sub(r"[^\w.@+-]", "_", text)[:64]


def governed_query(
    settings: RunSettings,
    audit: AuditLog,
    *,
    user: str,
    role: str,
    sql: str | None = None,
    named: queries.NamedQuery | None = None,
    progress: TextIO | None = None,
) -> pl.DataFrame:
    """Check one query against the role's views, audit it, run it read-only and protect a named
    query's answer; the one path by which a query reaches the analyst database.

    A refusal is audited (`access.refused`) and raised as `AccessRefusedError`; an answered
    query is audited (`access`) with the relations it read and its row count, never its text.
    """
    if (sql is None) == (named is None):
        raise ConfigError("give either one SELECT statement or a named query")
    text = named.sql if named is not None else str(sql)
    user, role = safe_name(user), safe_name(role)
    roles = read_roles(settings.policy_path)
    check = check_query(text, roles.get(role, ()))
    if role not in roles:
        check = QueryCheck(False, check.relations, f"unknown role {role!r}")
    base: dict[str, Any] = {
        "user": user,
        "role": role,
        "views": list(check.relations),
        "query_fingerprint": query_fingerprint(text),
    }
    if named is not None:
        base["named_query"] = named.name
    if not check.allowed:
        audit.append("access.refused", actor=user, data={**base, "reason": check.reason})
        raise AccessRefusedError(f"query refused: {check.reason} (logged)")
    frame = run_query(settings.database_path, text, progress=progress)
    if named is not None:
        # A named query's answer is protected (suppression, rounding) before anyone sees it.
        frame, _ = queries.protect_result(named, frame, read_policy(settings.policy_path))
    audit.append("access", actor=user, data={**base, "rows": frame.height})
    return frame
