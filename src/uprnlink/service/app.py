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

import contextlib
import io
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from uprnlink import __version__
from uprnlink.errors import AuditError, ConfigError
from uprnlink.governance.audit import AuditLog, actor, open_audit_log
from uprnlink.publish import queries
from uprnlink.publish.access import (
    AccessRefusedError,
    Identity,
    QueryFailedError,
    build_table,
    governed_query,
    query_fingerprint,
    read_roles,
    safe_name,
    table_categories,
)
from uprnlink.publish.database import read_policy
from uprnlink.publish.outputs import read_role_rights
from uprnlink.publish.tabulation import TableAnswer, TableSpecError, read_table_policy
from uprnlink.service.failures import FailureCounter
from uprnlink.service.guards import install_guards
from uprnlink.service.identities import (
    AuthenticationError,
    Authenticator,
    TokenAuthenticator,
    UserStore,
)
from uprnlink.service.limits import LimitSettings
from uprnlink.service.outputs import OutputDesk, OutputStore, read_output_checking
from uprnlink.service.upkeep import Upkeep
from uprnlink.service.workers import PoolSettings, WorkerPool
from uprnlink.settings import RunSettings

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


@contextlib.contextmanager
def governed_http_errors() -> Iterator[None]:
    """The governed path's outcomes as HTTP answers, for every route that runs a query: refused
    403, failed 422, and 503 when the audit log cannot be written (so nothing ran)."""
    try:
        yield
    except AccessRefusedError as exc:
        raise HTTPException(403, str(exc)) from None
    except QueryFailedError as exc:
        raise HTTPException(422, str(exc)) from None
    except AuditError:
        log.error("the audit log cannot be written: query refused")
        raise HTTPException(503, "the audit log cannot be written, so nothing ran") from None


@dataclass
class _Live:
    path: str
    pool: WorkerPool
    tables: dict[str, TableAnswer] = field(default_factory=dict)
    categories: dict[str, dict[str, list[str]]] | None = None


class ServiceState:
    """What the service holds: a pool of query workers on the live analysts' database (a new
    pool when a new release goes live; the old one finishes its queries, then stops), the
    audit log, the roles, the disclosure policy and the user store."""

    def __init__(
        self,
        settings: RunSettings,
        audit: AuditLog | None = None,
        authenticator: Authenticator | None = None,
        pool_settings: PoolSettings | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit or open_audit_log(settings)
        # Refuse to start with an audit key the log does not know: nothing could be logged;
        # on a log that is not forward-sealed, or with the IG lead's seed in reach.
        self.audit.check_key()
        check_sealed_service(self.audit)
        self.failures = FailureCounter(
            self.audit, window_seconds=settings.service.failure_window_seconds
        )
        self.limits = LimitSettings.from_service(settings.service)
        self.portal_sessions: Any = None  # the portal's sessions, for the per-user limits
        self.store = UserStore(settings.users_file)
        self.authenticator = authenticator or TokenAuthenticator(self.store)
        self.roles = read_roles(settings.policy_path)
        self.policy = read_policy(settings.policy_path)
        self.rights = read_role_rights(settings.policy_path)
        self.table_policy = read_table_policy(settings.policy_path)
        checking = read_output_checking(settings.policy_path)
        self.desk = OutputDesk(
            OutputStore(settings.out_dir / "outputs"),
            self.audit,
            self.roles,
            self.rights,
            self.policy,
            checkers_required=checking.checkers_required,
            max_waiting_jobs=checking.max_waiting_jobs,
        )
        self.pool_settings = pool_settings or PoolSettings(
            workers=settings.service.workers,
            check_timeout=settings.service.check_timeout_seconds,
            max_bytes=settings.service.max_answer_mib * 2**20,
            per_user=settings.service.workers_per_user,
        )
        self._lock = threading.Lock()
        self._live: _Live | None = None

    def live(self) -> _Live:
        """The live release's workers (the one `out/uprnlink.duckdb` points at now); queries
        already running on the previous release finish there."""
        path = os.path.realpath(self.settings.database_path)
        with self._lock:
            if self._live is None or self._live.path != path:
                if not Path(path).exists():
                    raise ConfigError("no release is live yet: run the pipeline first")
                old = self._live
                self._live = _Live(path, WorkerPool(Path(path), self.pool_settings))
                if old is not None:
                    old.pool.retire()
                log.info("serving release %s", Path(path).parent.name)
                threading.Thread(target=self._warm, args=(self._live,), daemon=True).start()
            return self._live

    def categories(self, live: _Live) -> dict[str, dict[str, list[str]]]:
        """The live release's category lists, read once."""
        if live.categories is None:
            live.categories = table_categories(
                live.pool, timeout=self.settings.service.timeout_seconds
            )
        return live.categories

    def _warm(self, live: _Live) -> None:
        """Read the release's categories and build every named question's table before anyone
        asks (a release never changes, so each is built once)."""
        try:
            known = self.categories(live)
            for named in queries.list_queries():
                spec = named.spec
                spec.check(known, self.table_policy.limits)
                key = json.dumps(spec.to_dict(), sort_keys=True)
                live.tables[key] = build_table(
                    live.pool,
                    spec,
                    self.table_policy,
                    known,
                    timeout=self.settings.service.timeout_seconds,
                )
        except Exception as exc:  # an analyst asking will see (and the log record) it
            log.warning("named questions not prepared: %s", type(exc).__name__)

    def start_jobs(self) -> None:
        """Run the jobs a previous service left queued or running."""
        for record in self.desk.waiting_jobs():
            self.desk.start(
                record,
                lambda: self.live().pool,
                max_rows=self.settings.service.max_rows,
                timeout=self.settings.service.timeout_seconds,
            )

    def close(self) -> None:
        self.desk.close()
        with self._lock:
            if self._live is not None:
                self._live.pool.close()
                self._live = None

    def identify(self, authorization: str | None, request: Request) -> Identity:
        # A refusal is counted in the audit log by the failure counter (every 401, never
        # dropped: uprnlink.service.failures), not logged one entry per attempt.
        try:
            return self.authenticator.authenticate(authorization)
        except AuthenticationError as exc:
            raise HTTPException(status_code=401, detail=str(exc)) from None

    def still_allowed(self, who: Identity) -> Callable[[], bool]:
        """Asked again before a query runs and before its answer leaves: is the token still
        active (a revocation takes effect mid-query)?"""

        def check() -> bool:
            return any(u.token_id == who.token_id and u.active for u in self.store.users())

        return check


def _json_body(table: pa.Table) -> dict[str, Any]:
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = [list(r.values()) for r in table.to_pylist()]
    return {"columns": columns, "rows": rows}


def encode_answer(table: pa.Table, fmt: str, meta: dict[str, Any]) -> Response:
    """An answer as JSON (with `meta`), CSV or Arrow (meta in `X-Uprnlink-*` headers)."""
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
        return await run_in_threadpool(_answer, who, body)

    def _answer(who: Identity, body: QueryRequest) -> Response:
        if (body.sql is None) == (body.named is None):
            raise HTTPException(400, "send either sql or named")
        service = state.settings.service
        limit = min(body.max_rows or service.max_rows, service.max_rows)
        if body.named is not None:
            from uprnlink.service.tables_api import named_answer

            nq, frame, withheld = named_answer(state, who, body.named)
            meta: dict[str, Any] = {
                "row_count": frame.height,
                "truncated": False,
                "withheld": ",".join(withheld),
                "title": nq.title,
            }
            return encode_answer(frame.to_arrow(), body.format, meta)
        if not state.desk.rights_of(who).unchecked_answers:
            # Refused before anything about the query is looked at: a refusal that depended
            # on the query's result would itself be an answer.
            user = safe_name(who.user)
            state.audit.append(
                "access.refused",
                actor=user,
                data={
                    "user": user,
                    "role": safe_name(who.role),
                    "channel": "service",
                    "query_fingerprint": query_fingerprint(str(body.sql), state.audit),
                    "rule": "sql-is-a-job",
                },
            )
            raise HTTPException(
                403,
                "typed SQL is not answered on screen for this role: build a table "
                "(POST /api/tables, `uprnlink table`), ask a named question, or submit the SQL "
                "as a job an output checker reviews (POST /api/jobs, `uprnlink jobs submit`)",
            )
        with governed_http_errors():
            live = state.live()
            result = governed_query(
                live.pool,
                state.audit,
                who,
                state.roles,
                sql=str(body.sql),
                max_rows=limit,
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

    from uprnlink.service.output_api import add_output_routes
    from uprnlink.service.portal import add_portal_routes
    from uprnlink.service.tables_api import add_table_routes

    add_table_routes(app, state)
    add_output_routes(app, state)
    add_portal_routes(app, state)

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

    install_guards(app, state)
    return app


def check_sealed_service(audit: AuditLog) -> None:
    """What the service refuses to start with: an audit log that is not forward-sealed, a
    witness file it cannot append to, or the IG lead's verification seed in its environment
    (the seed derives every sealing key, so it must never be where the service runs)."""
    from uprnlink.governance.witness import check_sink_writable
    from uprnlink.privacy.sealing import SEED_ENV

    if os.environ.get(SEED_ENV):
        raise AuditError(
            f"{SEED_ENV} is set in the query service's environment: the verification seed "
            "must never be on the service's host (rule: seed_location)"
        )
    audit.require_sealing()
    for sink in audit.witness_sinks:
        check_sink_writable(sink)


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
