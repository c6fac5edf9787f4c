"""Governed access to the analysts' database: who may read what, checked by DuckDB itself.

Every query passes two checks before it runs, both fail-closed:

1. **Names** (DuckDB's parser, `json_serialize_sql`): exactly one plain SELECT; no SHOW,
   DESCRIBE, SUMMARIZE, PIVOT or other statement; every relation it names is a view or table
   macro the role may use, or a common table expression *in scope where it is named* (a CTE
   called ``"linked.person"`` does not hide the table ``linked.person``: names are compared as
   catalog, schema and name, never as joined strings).
2. **Reads** (DuckDB's binder and planner on the real catalog, `json_serialize_plan`): every
   scan in the bound plan — views and macros expanded, subqueries included — reads a table of
   the analysts' database that the role's views or macros are built on; a table function
   (read_csv, query, duckdb_tables, glob, ...) or another catalog refuses the query. A plan
   that cannot be serialised is refused too.

Queries then run on a read-only connection to the analysts' database with external access,
extensions and configuration changes disabled, a time limit (interrupted, not abandoned) and a
row limit. Errors raised while running (a conversion error can quote a value) are reported by
their class only; errors from checking name the query's own words and the catalog, never data.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO

import duckdb
import polars as pl
import pyarrow as pa

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.governance.audit import AuditLog
from uprnlink.policy import read_governance_policy
from uprnlink.publish.database import MACRO_INPUTS, MACROS, VIEWS
from uprnlink.publish.tabulation import (
    TableAnswer,
    TablePolicy,
    TableSpec,
    TableSpecError,
    protect_table,
    table_sql,
)

__all__ = [
    "AccessRefusedError",
    "AnalystDatabase",
    "Identity",
    "QueryCheck",
    "QueryFailedError",
    "QueryResult",
    "build_table",
    "governed_query",
    "governed_table",
    "query_fingerprint",
    "read_roles",
    "role_relations",
    "safe_name",
    "table_categories",
]


class AccessRefusedError(UprnlinkError):
    """A query was refused by policy (the refusal is audited)."""

    exit_code = 8


class QueryFailedError(UprnlinkError):
    """A permitted query failed while running (timed out, ran out of memory, raised an error)."""

    exit_code = 8


@dataclass(frozen=True)
class QueryCheck:
    """What a query names and reads, and whether the role may run it."""

    allowed: bool
    relations: tuple[str, ...]
    """Views and macros the query names (lower case; CTEs left out)."""
    reads: tuple[str, ...] = ()
    """Tables the bound plan scans (schema.table), once the query passed the name check."""
    reason: str = ""
    """Why it was refused, for the person asking (may quote their own query)."""
    rule: str = ""
    """Which rule refused it, a short code for the audit log (never quotes the query)."""


@dataclass(frozen=True)
class QueryResult:
    """A query's answer: at most the row limit, and whether more rows were left out."""

    table: pa.Table
    truncated: bool
    seconds: float

    @property
    def frame(self) -> pl.DataFrame:
        out = pl.from_arrow(self.table)
        assert isinstance(out, pl.DataFrame)
        return out


def read_roles(policy_path: Path) -> dict[str, tuple[str, ...]]:
    """Role -> views and macros it may query, from the governance policy (`*`: all of them)."""
    roles = read_governance_policy(policy_path).roles
    return {name: role.views for name, role in roles.items()}


def role_relations(granted: tuple[str, ...]) -> frozenset[str]:
    """The views and macros a grant names, `*` expanded to every analyst view and macro."""
    names = {g.lower() for g in granted}
    if "*" in names:
        names = {*VIEWS, *MACROS}
    return frozenset(n for n in names if n in VIEWS or n in MACROS)


def query_fingerprint(sql: str, audit: AuditLog) -> str:
    """A short keyed hash of the query text with whitespace normalised (the text itself is not
    logged: it may hold a value an analyst typed). Keyed under the audit key, so the same query
    matches itself across entries but a guess cannot be confirmed from the log alone."""
    return audit.fingerprint(" ".join(sql.split()))


def safe_name(text: str) -> str:
    """A user or role name fit for an audit entry (no control characters, bounded length)."""
    return re.sub(r"[^\w.@+-]", "_", text)[:64]


# ---------------------------------------------------------------------------- name check

_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}

#: Scalar functions refused by name: they read settings, the catalog or the host (paths,
#: activity, variables), write to the log, or cost far more than their size (quadratic string
#: distances, huge strings) while DuckDB binds the query.
DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getvariable",
        "getenv",
        "current_query_id",
        "write_log",
        "repeat",
        "levenshtein",
        "damerau_levenshtein",
        "editdist3",
        "jaro_similarity",
        "jaro_winkler_similarity",
        "jaccard",
        "hamming",
        "mismatches",
        "sleep_ms",
    }
)
DENIED_PREFIXES = ("pg_", "duckdb_", "sqlite_")


@dataclass
class _Names:
    tables: set[tuple[str, str, str]]
    functions: set[tuple[str, str, str]]
    problems: list[tuple[str, str]]  # (rule, reason)


def _cte_entries(node: dict[str, Any]) -> list[dict[str, Any]]:
    cte_map = node.get("cte_map")
    return list(cte_map.get("map", [])) if isinstance(cte_map, dict) else []


def _is_recursive(entry: dict[str, Any]) -> bool:
    body = entry.get("value", {}).get("query_node", {})
    return isinstance(body, dict) and body.get("type") == "RECURSIVE_CTE_NODE"


def _walk_names(node: Any, scope: frozenset[str], out: _Names, depth: int = 0) -> None:
    """Collect named relations and functions with CTE scoping as DuckDB binds it: a CTE is
    visible in the CTEs defined after it and in its query's body, and in its own body only when
    recursive."""
    if depth > 400:
        out.problems.append(("complex", "the query is nested too deeply to check"))
        return
    if isinstance(node, list):
        for value in node:
            _walk_names(value, scope, out, depth + 1)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    entries = _cte_entries(node)
    if entries:
        visible = set(scope)
        for entry in entries:
            name = str(entry.get("key", "")).lower()
            own = {name} if _is_recursive(entry) else set()
            _walk_names(entry.get("value"), frozenset(visible | own), out, depth + 1)
            visible.add(name)
        scope = frozenset(visible)
    if kind == "SHOW_REF":
        out.problems.append(("statement", "SHOW, DESCRIBE and SUMMARIZE are not allowed"))
    elif kind == "PIVOT":
        out.problems.append(("statement", "PIVOT and UNPIVOT are not allowed: use GROUP BY"))
    elif kind == "VALUE_PARAMETER" or node.get("class") == "PARAMETER":
        out.problems.append(("parameter", "query parameters ($1, ?) are not allowed"))
    elif kind == "BASE_TABLE":
        catalog = str(node.get("catalog_name") or "").lower()
        schema = str(node.get("schema_name") or "").lower()
        name = str(node.get("table_name") or "").lower()
        if node.get("at_clause") is not None:
            out.problems.append(("statement", "time travel (AT ...) is not allowed"))
        if not (catalog == "" and schema == "" and name in scope):
            out.tables.add((catalog, schema, name))
    elif kind == "TABLE_FUNCTION":
        function = node.get("function", {})
        out.functions.add(
            (
                str(function.get("catalog", "") or "").lower(),
                str(function.get("schema", "") or "").lower(),
                str(function.get("function_name", "") or "").lower(),
            )
        )
    elif node.get("class") == "FUNCTION" and "function_name" in node:
        fname = str(node.get("function_name") or "").lower()
        if fname in DENIED_FUNCTIONS or fname.startswith(DENIED_PREFIXES):
            out.problems.append(("function", f"the function {fname}() is not allowed"))
    for key, value in node.items():
        if key in {"query_location", "alias", "cte_map"}:
            continue
        _walk_names(value, scope, out, depth + 1)


def _display(parts: tuple[str, str, str]) -> str:
    return ".".join(p for p in parts if p)


def check_names(
    con: duckdb.DuckDBPyConnection, sql: str, allowed: frozenset[str], catalog: str = ""
) -> QueryCheck:
    """The parser-level check: one SELECT naming only allowed views, macros and CTEs, calling
    no denied function and taking no parameter."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        return QueryCheck(
            False, (), reason=_first_line("the query does not parse", exc), rule="parse"
        )
    if len(statements) != 1:
        return QueryCheck(
            False, (), reason="run exactly one SELECT statement at a time", rule="statement"
        )
    if statements[0].type != duckdb.StatementType.SELECT:
        return QueryCheck(False, (), reason="only SELECT queries are allowed", rule="statement")
    parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if parsed.get("error"):
        message = str(parsed.get("error_message", "cannot parse"))
        return QueryCheck(
            False, (), reason="the query does not parse: " + message[:200], rule="parse"
        )
    names = _Names(set(), set(), [])
    _walk_names(parsed.get("statements", []), frozenset(), names)
    named = tuple(
        sorted({_display(t) for t in names.tables} | {_display(f) for f in names.functions})
    )
    if names.problems:
        rule, reason = names.problems[0]
        return QueryCheck(False, named, reason=reason, rule=rule)

    def in_database(parts: tuple[str, str, str]) -> bool:
        # Unqualified, or in the analysts' database's main schema.
        return parts[1] in ("", "main") and parts[0] in ("", catalog)

    refused = [
        _display(t)
        for t in sorted(names.tables)
        if not in_database(t) or t[2] not in allowed or t[2] in MACROS
    ]
    refused += [
        _display(f)
        for f in sorted(names.functions)
        if not in_database(f) or f[2] not in allowed or f[2] not in MACROS
    ]
    if refused:
        return QueryCheck(
            False,
            named,
            reason=f"not allowed for this role: {sorted(set(refused))}",
            rule="relation",
        )
    return QueryCheck(True, named)


# ---------------------------------------------------------------------------- read check


def _scans(node: Any, out: list[tuple[tuple[str, ...], str, str, str]]) -> None:
    if isinstance(node, list):
        for value in node:
            _scans(value, out)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "LOGICAL_GET":
        data = node.get("function_data") or {}
        path = tuple(str(p) for p in (node.get("qname") or {}).get("path", []))
        out.append(
            (
                path,
                str(data.get("catalog") or ""),
                str(data.get("schema") or ""),
                str(data.get("table") or ""),
            )
        )
    for value in node.values():
        _scans(value, out)


def readable_tables(allowed: frozenset[str]) -> frozenset[tuple[str, str]]:
    """The tables of the analysts' database a role's views and macros are built on."""
    tables = {("main", v) for v in allowed if v in VIEWS}
    if any(m in allowed for m in MACROS):
        tables |= {("linked", t) for t in MACRO_INPUTS}
    return frozenset(tables)


def check_reads(
    con: duckdb.DuckDBPyConnection, sql: str, allowed: frozenset[str], catalog: str
) -> tuple[tuple[str, ...], str]:
    """The binder-level check: the tables the bound plan scans, and why it is refused ("" when
    every scan reads a table the role's views and macros are built on)."""
    plan = json.loads(con.execute("SELECT json_serialize_plan(?)", [sql]).fetchall()[0][0])
    if plan.get("error"):
        message = str(plan.get("error_message", "cannot be planned")).splitlines()[0]
        return (), "the query cannot be checked: " + message[:300]
    scans: list[tuple[tuple[str, ...], str, str, str]] = []
    _scans(plan.get("plans", []), scans)
    reads = tuple(sorted({f"{schema}.{table}" for _, _, schema, table in scans if table}))
    readable = readable_tables(allowed)
    for path, cat, schema, table in scans:
        if path != ("seq_scan",):
            return reads, f"table functions are not allowed: {'.'.join(path) or 'unknown'}"
        if cat != catalog or (schema, table) not in readable:
            return reads, f"the query reads a table the role may not: {schema}.{table}"
    return reads, ""


def _first_line(prefix: str, exc: BaseException) -> str:
    return f"{prefix}: " + str(exc).splitlines()[0][:200]


# ---------------------------------------------------------------------------- running


class AnalystDatabase:
    """The analysts' database, open read-only for governed queries: one DuckDB instance, a
    cursor per query (safe across threads), nothing outside the file reachable."""

    def __init__(
        self, path: Path, *, threads: int = 2, memory_limit: str = "2GB", readers: int = 8
    ) -> None:
        if not path.exists():
            raise ConfigError(f"no analyst database at {path}: run the pipeline first")
        self.path = path
        self._con = duckdb.connect(
            str(path),
            read_only=True,
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_persistent_secrets": False,
                # No Python objects (data frames in this process) as tables, whatever the name.
                "python_enable_replacements": False,
                "threads": threads,
                "memory_limit": memory_limit,
            },
        )
        self._con.execute("SET lock_configuration = true")
        self.catalog = str(self._con.execute("SELECT current_database()").fetchall()[0][0])
        self._slots = threading.BoundedSemaphore(readers)
        # A release never changes once published: a check (parse, bind, plan) is the same
        # every time, so each is worked out once.
        self._memo_lock = threading.Lock()
        self._checks: OrderedDict[tuple[tuple[str, ...], str], QueryCheck] = OrderedDict()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> AnalystDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._slots:
            cur = self._con.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def check(self, sql: str, granted: tuple[str, ...]) -> QueryCheck:
        """Whether a role granted `granted` may run `sql`: names, then reads (module doc)."""
        memo = (tuple(sorted(granted)), sql)
        with self._memo_lock:
            known = self._checks.get(memo)
            if known is not None:
                self._checks.move_to_end(memo)
                return known
        allowed = role_relations(granted)
        with self._cursor() as cur:
            try:
                names = check_names(cur, sql, allowed, self.catalog)
                if names.allowed:
                    reads, reason = check_reads(cur, sql, allowed, self.catalog)
                    names = QueryCheck(
                        not reason, names.relations, reads, reason, "reads" if reason else ""
                    )
            except (duckdb.Error, RecursionError, ValueError, KeyError, TypeError) as exc:
                # Fail closed: a query the guard cannot take apart does not run.
                names = QueryCheck(
                    False,
                    (),
                    reason=f"the query cannot be checked ({type(exc).__name__})",
                    rule="check",
                )
        with self._memo_lock:
            self._checks[memo] = names
            while len(self._checks) > 4096:
                self._checks.popitem(last=False)
        return names

    def run(
        self,
        sql: str,
        *,
        max_rows: int = 100_000,
        timeout: float = 30.0,
        progress: TextIO | None = None,
        max_bytes: int | None = None,
    ) -> QueryResult:
        """Run an already-checked query: at most `max_rows` rows (and `max_bytes` of Arrow
        data, refused while it streams), interrupted after `timeout` seconds. Raises
        QueryFailedError naming the error's class only."""
        started = time.perf_counter()
        with self._cursor() as cur:
            timer = threading.Timer(timeout, cur.interrupt)
            ticker = _Progress(cur, progress) if progress is not None else None
            timer.start()
            if ticker is not None:
                ticker.start()
            try:
                relation = cur.sql(sql)
                if relation is None:
                    raise QueryFailedError("the query returned no result set")
                reader = relation.to_arrow_reader(8192)
                batches, rows, size, truncated = [], 0, 0, False
                for batch in reader:
                    size += batch.nbytes
                    if max_bytes is not None and size > max_bytes:
                        raise QueryFailedError(
                            f"the answer is larger than {max_bytes >> 20} MiB: select fewer "
                            "columns or rows, or aggregate"
                        )
                    if rows + batch.num_rows > max_rows:
                        batches.append(batch.slice(0, max_rows - rows))
                        truncated = True
                        break
                    batches.append(batch)
                    rows += batch.num_rows
                table = pa.Table.from_batches(batches, schema=reader.schema)
            except duckdb.InterruptException:
                raise QueryFailedError(
                    f"the query ran longer than {timeout:g} s and was stopped"
                ) from None
            except duckdb.OutOfMemoryException:
                raise QueryFailedError("the query needed more memory than allowed") from None
            except duckdb.Error as exc:
                # Why: a conversion or error() message can quote a value from the data.
                raise QueryFailedError(
                    f"the query failed while running ({type(exc).__name__})"
                ) from None
            finally:
                timer.cancel()
                if ticker is not None:
                    ticker.stop()
        return QueryResult(table, truncated, time.perf_counter() - started)


@dataclass(frozen=True)
class Identity:
    """Who is asking, as the query service established it (never as the caller claims)."""

    user: str
    role: str
    token_id: str | None = None


class QueryEngine(Protocol):
    """What governed_query needs of a database: the guard's checks and a bounded run (an
    `AnalystDatabase` in this process, or the service's pool of worker processes)."""

    def check(self, sql: str, granted: tuple[str, ...]) -> QueryCheck: ...

    def run(self, sql: str, *, max_rows: int, timeout: float) -> QueryResult: ...


_KNOWN_NAMES = frozenset({*VIEWS, *MACROS, *(f"linked.{t}" for t in MACRO_INPUTS)})


def loggable_names(names: tuple[str, ...], audit: AuditLog) -> list[str]:
    """Relation names fit for the audit log: the published views, macros and tables as named;
    anything else (which an analyst typed, and could be anything) as a short keyed hash only."""
    return [n if n in _KNOWN_NAMES else "other:" + audit.fingerprint(n)[:8] for n in names]


def governed_query(
    db: QueryEngine,
    audit: AuditLog,
    identity: Identity,
    roles: dict[str, tuple[str, ...]],
    *,
    sql: str,
    max_rows: int = 100_000,
    timeout: float = 30.0,
    channel: str = "service",
    still_allowed: Callable[[], bool] | None = None,
) -> QueryResult:
    """Check, audit and run one typed SQL query: the one path from SQL to the analysts'
    database (for roles that see answers on screen, and for jobs held for a checker).

    Every attempt is in the audit log before any work is done on it (`access.started`), then
    ends as `access.refused` (and the rule), `access.failed` (the error's class) or `access`
    (rows). If the log cannot be written nothing runs. The query text is never logged, only its
    fingerprint; names the query uses are logged only when they are published relations.
    `still_allowed` is asked again before the query runs and before the answer is returned (a
    token revoked meanwhile stops it).
    """
    text = str(sql)
    user, role = safe_name(identity.user), safe_name(identity.role)
    base: dict[str, Any] = {
        "user": user,
        "role": role,
        "channel": channel,
        "query_fingerprint": query_fingerprint(text, audit),
    }
    if identity.token_id:
        base["token_id"] = identity.token_id
    audit.append("access.started", actor=user, data=base)

    def refuse(check: QueryCheck) -> NoReturn:
        audit.append(
            "access.refused",
            actor=user,
            data={**base, "views": loggable_names(check.relations, audit), "rule": check.rule},
        )
        raise AccessRefusedError(f"query refused: {check.reason} (logged)")

    def fail(message: str) -> NoReturn:
        audit.append("access.failed", actor=user, data={**base, "reason": message})
        raise QueryFailedError(message)

    try:
        if role not in roles:
            check = QueryCheck(False, (), reason=f"unknown role {role!r}", rule="role")
        else:
            check = db.check(text, roles[role])
    except Exception as exc:  # fail closed, and on the record
        check = QueryCheck(
            False, (), reason=f"the query cannot be checked ({type(exc).__name__})", rule="check"
        )
    if not check.allowed:
        refuse(check)
    base["views"] = loggable_names(check.relations, audit)
    base["reads"] = list(check.reads)
    if still_allowed is not None and not still_allowed():
        refuse(QueryCheck(False, check.relations, reason="the token was revoked", rule="revoked"))
    try:
        result = db.run(text, max_rows=max_rows, timeout=timeout)
    except QueryFailedError as exc:
        fail(str(exc))
    except Exception as exc:  # never an open access.started: close it, by class only
        fail(f"the query failed while running ({type(exc).__name__})")
    if still_allowed is not None and not still_allowed():
        refuse(QueryCheck(False, check.relations, reason="the token was revoked", rule="revoked"))
    audit.append(
        "access",
        actor=user,
        data={
            **base,
            "rows": result.table.num_rows,
            "truncated": result.truncated,
            "seconds": round(result.seconds, 3),
        },
    )
    return result


class _Progress:
    """A spinner line on a stream while a query runs (elapsed seconds and DuckDB's estimate)."""

    FRAMES = "|/-\\"

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: TextIO, after: float = 1.0) -> None:
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


# ---------------------------------------------------------------------------- tables

Categories = Mapping[str, Mapping[str, Sequence[str]]]
"""Dataset -> dimension -> categories in display order (a release's `tab.categories`)."""


def table_categories(db: QueryEngine, *, timeout: float = 30.0) -> dict[str, dict[str, list[str]]]:
    """The release's category lists (the same for everyone: a release never changes)."""
    rows = db.run(
        "SELECT dataset, dimension, category FROM tab.categories "
        "ORDER BY dataset, dimension, position",
        max_rows=10_000_000,
        timeout=timeout,
    ).frame
    out: dict[str, dict[str, list[str]]] = {}
    for dataset, dimension, category in rows.iter_rows():
        out.setdefault(dataset, {}).setdefault(dimension, []).append(category)
    return out


def build_table(
    db: QueryEngine,
    spec: TableSpec,
    table_policy: TablePolicy,
    categories: Categories,
    *,
    timeout: float = 30.0,
) -> TableAnswer:
    """A checked spec's protected table from a database (no audit: `governed_table` is the
    analysts' path; engineers' tools and the service's warm-up call this directly)."""
    raw = db.run(table_sql(spec), max_rows=10_000_000, timeout=timeout).frame
    return protect_table(raw, spec, categories[spec.dataset], table_policy.perturbation)


def governed_table(
    db: QueryEngine,
    audit: AuditLog,
    identity: Identity,
    spec: TableSpec,
    table_policy: TablePolicy,
    categories: Categories,
    *,
    channel: str = "service",
    named: str | None = None,
    timeout: float = 30.0,
    still_allowed: Callable[[], bool] | None = None,
    cache: MutableMapping[str, TableAnswer] | None = None,
) -> TableAnswer:
    """Check, audit, build and protect one table: the table builder's path to the data.

    The request is checked against the declaration and the release's categories only (a
    refusal depends on nothing in the data), logged (`table.started`: the request, which holds
    only declared names), then the service's own SQL counts the units behind every cell and
    every count and sum is perturbed before anything leaves (`publish.tabulation`). A release
    never changes, so an answer is kept per request in `cache` for the next asker.
    """
    user, role = safe_name(identity.user), safe_name(identity.role)
    base: dict[str, Any] = {"user": user, "role": role, "channel": channel}
    if identity.token_id:
        base["token_id"] = identity.token_id
    if named is not None:
        base["named_query"] = named
    try:
        spec.check(categories, table_policy.limits)
    except TableSpecError as exc:
        audit.append("table.refused", actor=user, data={**base, "rule": "spec"})
        raise TableSpecError(f"{exc} (logged)") from None
    # A named question's answer is the same for everyone and built at go-live; any other
    # table is kept per user, so how fast it comes back never tells who else asked for it.
    key = json.dumps(spec.to_dict(), sort_keys=True)
    if named is None:
        key = f"{user}\n{key}"
    base["table"] = spec.to_dict()
    audit.append("table.started", actor=user, data=base)
    if still_allowed is not None and not still_allowed():
        audit.append("table.refused", actor=user, data={**base, "rule": "revoked"})
        raise AccessRefusedError("query refused: the token was revoked (logged)")
    started = time.perf_counter()
    answer = cache.get(key) if cache is not None else None
    if answer is None:
        try:
            answer = build_table(db, spec, table_policy, categories, timeout=timeout)
        except QueryFailedError as exc:
            audit.append("table.failed", actor=user, data={**base, "reason": str(exc)})
            raise
        except Exception as exc:  # never an open table.started: close it, by class only
            reason = f"the table could not be built ({type(exc).__name__})"
            audit.append("table.failed", actor=user, data={**base, "reason": reason})
            raise QueryFailedError(reason) from None
        if cache is not None:
            if len(cache) > 2048:
                cache.clear()
            cache[key] = answer
    audit.append(
        "table",
        actor=user,
        data={
            **base,
            "cells": answer.frame.height,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return answer
