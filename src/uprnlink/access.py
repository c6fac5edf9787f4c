"""The analysts' query path: role-checked, read-only, and every access or refusal audited.

A query is parsed (DuckDB's own parser, via `json_serialize_sql`) to find every relation it
names; each must be a view the role may query under `governance/policy.toml`. Only single
SELECT statements run, on a read-only connection with external file access disabled, so a
query cannot reach the engineer-only tables, other files or the landing zone.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.errors import ConfigError, UprnlinkError


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
    try:
        raw = tomllib.loads(policy_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"governance policy not found: {policy_path}") from None
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
    named = tuple(sorted(relations - ctes))
    if functions and "*" not in allowed_views:
        return QueryCheck(False, named, f"table functions are not allowed: {sorted(functions)}")
    if "*" in allowed_views:
        return QueryCheck(True, named)
    refused = [r for r in named if r not in allowed_views]
    if refused:
        return QueryCheck(False, named, f"not allowed for this role: {refused}")
    return QueryCheck(True, named)


def run_query(db_path: Path, sql: str, *, limit: int | None = None) -> pl.DataFrame:
    """Run an already-checked query read-only, with no access to files outside the database."""
    if not db_path.exists():
        raise ConfigError(f"no published database at {db_path}: run the pipeline first")
    con = duckdb.connect(str(db_path), read_only=True, config={"enable_external_access": False})
    try:
        rel = con.sql(sql)
        if limit is not None:
            rel = rel.limit(limit)
        frame = pl.from_arrow(rel.to_arrow_table())
    finally:
        con.close()
    assert isinstance(frame, pl.DataFrame)
    return frame


def safe_name(text: str) -> str:
    """A user or role name fit for an audit entry (no control characters, bounded length)."""
    return re.sub(r"[^\w.@+-]", "_", text)[:64]
