"""The query service: the one way analysts reach the published data.

It runs as its own service account (`uprnlink serve`), holding the analysts' database
(read-only) and the audit key (to append), never the pseudonymisation or release keys and
never the trusted zone. Users authenticate with a bearer token; the role comes from the user
store. What comes back is decided by construction:

* tables the service builds and protects (`POST /api/tables`, named questions through
  `POST /api/query`): `publish.access.governed_table`, cell-key perturbation;
* typed SQL as a job (`POST /api/jobs`, `service.outputs`): held until an output checker
  approves it, nothing of it shown before;
* typed SQL answered on screen (`POST /api/query` with `sql`) only for roles on a trusted
  desktop (`unchecked_answers = true`: data engineers, an accredited researcher inside a
  TRE), through `publish.access.governed_query`; for every other role it is refused before
  anything about it is looked at.

Every attempt is logged before it runs, refusals and failures included. Answers come back as
JSON, CSV or Arrow.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, NoReturn

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from uprnlink import __version__
from uprnlink.errors import AuditError
from uprnlink.governance.audit import actor
from uprnlink.publish import queries
from uprnlink.publish.access import Identity, governed_query, query_fingerprint, safe_name
from uprnlink.publish.tabulation import TableSpecError
from uprnlink.service.answers import encode_answer, governed_http_errors
from uprnlink.service.guards import install_guards
from uprnlink.service.output_api import add_output_routes
from uprnlink.service.portal import add_portal_routes
from uprnlink.service.state import ServiceState
from uprnlink.service.tables_api import add_table_routes, named_answer
from uprnlink.service.upkeep import Upkeep
from uprnlink.settings import RunSettings

__all__ = ["ServiceState", "create_app", "serve"]

log = logging.getLogger("uprnlink.service")

MAX_SQL_CHARS = 20_000
MAX_BODY_BYTES = 64 * 1024


class QueryRequest(BaseModel):
    """One query: a named question, or SQL (answered on screen only for roles on a trusted
    desktop), and the answer's format."""

    sql: str | None = Field(default=None, max_length=MAX_SQL_CHARS)
    named: str | None = Field(default=None, max_length=100)
    format: Literal["json", "csv", "arrow"] = "json"
    max_rows: int | None = Field(default=None, ge=1)


def create_app(state: ServiceState) -> FastAPI:
    """The service's HTTP API (`/api/...`)."""
    app = FastAPI(
        title="uprnlink query service",
        version=__version__,
        docs_url=None,
        redoc_url=None,
    )
    _add_info_routes(app, state)
    _add_query_route(app, state)
    add_table_routes(app, state)
    add_output_routes(app, state)
    add_portal_routes(app, state)
    _add_error_handlers(app)
    install_guards(app, state)
    return app


def _add_info_routes(app: FastAPI, state: ServiceState) -> None:
    """The routes that describe the service and the caller: root, health, whoami, queries."""

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/portal/", status_code=303)

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
        rights = state.desk.rights_of(who)
        return {
            "user": who.user,
            "role": who.role,
            "may_query": sorted(granted),
            "sees_sql_answers": rights.unchecked_answers,
            "checks_outputs": rights.check_outputs,
        }

    @app.get("/api/queries")
    def named_queries(request: Request, authorization: str | None = Header(default=None)) -> Any:
        state.identify(authorization, request)
        return [
            {"name": q.name, "title": q.title, "question": q.question}
            for q in queries.list_queries()
        ]


def _add_query_route(app: FastAPI, state: ServiceState) -> None:
    """`POST /api/query`: a named question, or SQL answered on screen for trusted desktops."""

    @app.post("/api/query")
    async def query(request: Request, authorization: str | None = Header(default=None)) -> Response:
        # The token first: nothing of the request is read, parsed or echoed for a stranger.
        who = await run_in_threadpool(state.identify, authorization, request)
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request is larger than {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request is larger than {MAX_BODY_BYTES} bytes")
        try:
            body = QueryRequest.model_validate_json(raw)
        except ValidationError:
            raise HTTPException(
                400, 'the request must be JSON: {"sql": ...} or {"named": ...}'
            ) from None
        return await run_in_threadpool(_answer, state, who, body)


def _answer(state: ServiceState, who: Identity, body: QueryRequest) -> Response:
    """One query's answer: a named question's table, or governed SQL for a trusted desktop."""
    if (body.sql is None) == (body.named is None):
        raise HTTPException(400, "send either sql or named")
    if body.named is not None:
        nq, frame, withheld = named_answer(state, who, body.named)
        meta: dict[str, Any] = {
            "row_count": frame.height,
            "truncated": False,
            "withheld": ",".join(withheld),
            "title": nq.title,
        }
        return encode_answer(frame.to_arrow(), body.format, meta)
    if not state.desk.rights_of(who).unchecked_answers:
        _refuse_sql(state, who, str(body.sql))
    service = state.settings.service
    with governed_http_errors():
        live = state.live()
        result = governed_query(
            live.pool,
            state.audit,
            who,
            state.roles,
            sql=str(body.sql),
            max_rows=min(body.max_rows or service.max_rows, service.max_rows),
            timeout=service.timeout_seconds,
            still_allowed=state.still_allowed(who),
        )
    meta = {
        "row_count": result.table.num_rows,
        "truncated": result.truncated,
        "seconds": round(result.seconds, 3),
        "withheld": "",
    }
    return encode_answer(result.table, body.format, meta)


def _refuse_sql(state: ServiceState, who: Identity, sql: str) -> NoReturn:
    """Log and refuse typed SQL from a role without on-screen answers.

    Refused before anything about the query is looked at: a refusal that depended on the
    query's result would itself be an answer.
    """
    user = safe_name(who.user)
    state.audit.append(
        "access.refused",
        actor=user,
        data={
            "user": user,
            "role": safe_name(who.role),
            "channel": "service",
            "query_fingerprint": query_fingerprint(sql, state.audit),
            "rule": "sql-is-a-job",
        },
    )
    raise HTTPException(
        403,
        "typed SQL is not answered on screen for this role: build a table "
        "(POST /api/tables, `uprnlink table`), ask a named question, or submit the SQL "
        "as a job an output checker reviews (POST /api/jobs, `uprnlink jobs submit`)",
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Errors come back as `{"error": ...}` and never echo the request."""

    @app.exception_handler(TableSpecError)
    def table_refused(request: Request, exc: TableSpecError) -> JSONResponse:
        return JSONResponse({"error": f"table refused: {exc}"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the request back.
        return JSONResponse({"error": "the request is not valid"}, status_code=400)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def serve(settings: RunSettings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the service in this process until interrupted (`uprnlink serve`)."""
    import uvicorn

    state = ServiceState(settings)
    app = create_app(state)
    state.start_jobs()
    host = host or settings.service.host
    port = port or settings.service.port
    log.info("audit log %s, user store %s", state.audit.path, settings.users_file)
    print(f"uprnlink query service on http://{host}:{port} (audit key {state.audit.key_id})")
    state.audit.append(
        "service.started",
        actor=actor(),
        data={"host": host, "port": port, "version": __version__},
    )
    upkeep = Upkeep(state.audit, state.failures)
    try:
        state.audit.witness(force=True)
    except AuditError as exc:  # a syslog sink down; the file sink was checked above
        log.error("%s", exc)
    upkeep.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        state.close()
        state.audit.append("service.stopped", actor=actor(), data={"host": host, "port": port})
        upkeep.stop()  # the last counts written, everything sealed, the head witnessed
