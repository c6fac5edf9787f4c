"""The query service: the one way analysts reach the published data.

It runs as its own service account (`uprnlink serve`), holding the analysts' database
(read-only) and the audit key (to append), never the pseudonymisation or release keys and
never the trusted zone. Users authenticate with a bearer token; the role comes from the user
store. Every attempt goes through `publish.access.governed_query`: refused, or logged as started
before it runs, then as answered or failed. Answers come back as JSON, CSV or Arrow.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from uprnlink import __version__
from uprnlink.errors import AuditError, ConfigError
from uprnlink.governance.audit import AuditLog, actor, open_audit_log
from uprnlink.publish import queries
from uprnlink.publish.access import (
    AccessRefusedError,
    AnalystDatabase,
    Identity,
    QueryFailedError,
    governed_query,
    read_roles,
)
from uprnlink.publish.database import read_policy
from uprnlink.service.identities import (
    AuthenticationError,
    Authenticator,
    TokenAuthenticator,
    UserStore,
    token_id_of,
)
from uprnlink.settings import RunSettings

log = logging.getLogger("uprnlink.service")

MAX_SQL_CHARS = 20_000


class QueryRequest(BaseModel):
    """One query: SQL or a named question, and the answer's format."""

    sql: str | None = Field(default=None, max_length=MAX_SQL_CHARS)
    named: str | None = Field(default=None, max_length=100)
    format: Literal["json", "csv", "arrow"] = "json"
    max_rows: int | None = Field(default=None, ge=1)


@dataclass
class _Live:
    path: str
    db: AnalystDatabase


class ServiceState:
    """What the service holds: the live analysts' database (reopened when a new release goes
    live), the audit log, the roles and the disclosure policy."""

    def __init__(
        self,
        settings: RunSettings,
        audit: AuditLog | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit or open_audit_log(settings)
        # Refuse to start with an audit key the log does not know: nothing could be logged.
        self.audit.check_key()
        self.authenticator = authenticator or TokenAuthenticator(UserStore(settings.users_file))
        self.roles = read_roles(settings.policy_path)
        self.policy = read_policy(settings.policy_path)
        self._lock = threading.Lock()
        self._live: _Live | None = None
        self._previous: _Live | None = None

    def database(self) -> AnalystDatabase:
        """The analysts' database of the live release (the one `out/uprnlink.duckdb` points
        at now); queries already running keep the release they started on."""
        path = os.path.realpath(self.settings.database_path)
        with self._lock:
            if self._live is None or self._live.path != path:
                if not Path(path).exists():
                    raise ConfigError("no release is live yet: run the pipeline first")
                db = AnalystDatabase(Path(path), readers=16)
                # Queries already running on the previous release finish on it; the one before
                # that is closed.
                if self._previous is not None:
                    self._previous.db.close()
                self._previous, self._live = self._live, _Live(path, db)
                log.info("serving release %s", Path(path).parent.name)
                threading.Thread(target=self._warm, args=(db,), daemon=True).start()
            return self._live.db

    def _warm(self, db: AnalystDatabase) -> None:
        """Work out every named question's protected answer on a new release before anyone
        asks (a release never changes, so each is worked out once)."""
        limit = self.settings.service.max_rows
        for named in queries.list_queries():
            try:
                db.named_answer(
                    named,
                    self.policy,
                    max_rows=limit,
                    timeout=self.settings.service.timeout_seconds,
                )
            except Exception as exc:  # an analyst asking will see (and the log record) it
                log.warning("named question %s not prepared: %s", named.name, type(exc).__name__)

    def close(self) -> None:
        with self._lock:
            for live in (self._live, self._previous):
                if live is not None:
                    live.db.close()
            self._live = self._previous = None

    def identify(self, authorization: str | None, request: Request) -> Identity:
        try:
            return self.authenticator.authenticate(authorization)
        except AuthenticationError as exc:
            token = (authorization or "").partition(" ")[2]
            self.audit.append(
                "auth.failed",
                actor="unknown",
                data={"token_id": token_id_of(token), "path": request.url.path},
            )
            raise HTTPException(status_code=401, detail=str(exc)) from None


def _json_body(table: pa.Table) -> dict[str, Any]:
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = [list(r.values()) for r in table.to_pylist()]
    return {"columns": columns, "rows": rows}


def _encode(table: pa.Table, fmt: str, meta: dict[str, Any]) -> Response:
    # Header values must be Latin-1: percent-encode them (a title may hold any character).
    headers = {
        f"X-Uprnlink-{k.replace('_', '-').title()}": urllib.parse.quote(str(v))
        for k, v in meta.items()
    }
    if fmt == "csv":
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer)
        return Response(buffer.getvalue(), media_type="text/csv", headers=headers)
    if fmt == "arrow":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(
            sink.getvalue().to_pybytes(),
            media_type="application/vnd.apache.arrow.stream",
            headers=headers,
        )
    body = {**meta, **_json_body(table)}
    return Response(
        json.dumps(body, default=str, separators=(",", ":")),
        media_type="application/json",
        headers=headers,
    )


def create_app(state: ServiceState) -> FastAPI:
    """The service's HTTP API (`/api/...`)."""
    app = FastAPI(
        title="uprnlink query service",
        version=__version__,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        live = Path(os.path.realpath(state.settings.database_path))
        return {
            "status": "ok" if live.exists() else "no release",
            "release": live.parent.name if live.exists() else None,
            "version": __version__,
        }

    @app.get("/api/whoami")
    def whoami(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = state.identify(authorization, request)
        granted = state.roles.get(who.role, ())
        return {"user": who.user, "role": who.role, "may_query": sorted(granted)}

    @app.get("/api/queries")
    def named_queries(request: Request, authorization: str | None = Header(default=None)) -> Any:
        state.identify(authorization, request)
        return [{"name": q.name, "title": q.title} for q in queries.list_queries()]

    @app.post("/api/query")
    def query(
        body: QueryRequest, request: Request, authorization: str | None = Header(default=None)
    ) -> Response:
        who = state.identify(authorization, request)
        if (body.sql is None) == (body.named is None):
            raise HTTPException(400, "send either sql or named")
        named = None
        if body.named is not None:
            try:
                named = queries.get_query(body.named)
            except ConfigError as exc:
                raise HTTPException(404, str(exc)) from None
        limit = min(
            body.max_rows or state.settings.service.max_rows, state.settings.service.max_rows
        )
        try:
            result = governed_query(
                state.database(),
                state.audit,
                who,
                state.roles,
                state.policy,
                sql=body.sql,
                named=named,
                max_rows=limit,
                timeout=state.settings.service.timeout_seconds,
            )
        except AccessRefusedError as exc:
            raise HTTPException(403, str(exc)) from None
        except QueryFailedError as exc:
            raise HTTPException(422, str(exc)) from None
        except AuditError:
            log.error("the audit log cannot be written: query refused")
            raise HTTPException(503, "the audit log cannot be written, so nothing ran") from None
        except ConfigError as exc:
            raise HTTPException(503, str(exc)) from None
        meta = {
            "row_count": result.table.num_rows,
            "truncated": result.truncated,
            "seconds": round(result.seconds, 3),
        }
        if named is not None:
            meta["title"] = named.title
        return _encode(result.table, body.format, meta)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app


def serve(settings: RunSettings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the service in this process until interrupted (`uprnlink serve`)."""
    import uvicorn

    state = ServiceState(settings)
    app = create_app(state)
    host = host or settings.service.host
    port = port or settings.service.port
    log.info("audit log %s, user store %s", state.audit.path, settings.users_file)
    print(f"uprnlink query service on http://{host}:{port} (audit key {state.audit.key_id})")
    state.audit.append(
        "service.started",
        actor=actor(),
        data={"host": host, "port": port, "version": __version__},
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        state.close()
        state.audit.append("service.stopped", actor=actor(), data={"host": host, "port": port})
