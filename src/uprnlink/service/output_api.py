"""Jobs and outputs over HTTP: `/api/jobs` (typed SQL held for a checker) and `/api/outputs`
(files of tables and named questions, listing, decisions, downloads, the register), each
through `OutputDesk` (role rights, audit)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from uprnlink.publish.access import Identity
from uprnlink.publish.tabulation import TableSpec, TableSpecError
from uprnlink.service.outputs import MAX_JUSTIFICATION, MAX_TITLE, OutputError, OutputRecord
from uprnlink.service.state import ServiceState
from uprnlink.service.tables_api import answer_table, named_answer

MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
MAX_BODY = 64 * 1024


class JobRequest(BaseModel):
    """A typed SQL job: the SQL, a title and a justification for the output checker."""

    sql: str = Field(max_length=20_000)
    title: str = Field(max_length=MAX_TITLE)
    justification: str = Field(max_length=MAX_JUSTIFICATION)
    format: Literal["csv", "parquet"] = "csv"


class OutputRequest(BaseModel):
    """A file of a named question or a table (released at once: protected by construction),
    or of typed SQL (a job, as `POST /api/jobs`)."""

    named: str | None = Field(default=None, max_length=100)
    table: dict[str, Any] | None = None
    sql: str | None = Field(default=None, max_length=20_000)
    format: Literal["csv", "parquet"] = "csv"
    title: str = Field(default="", max_length=MAX_TITLE)
    justification: str = Field(default="", max_length=MAX_JUSTIFICATION)


class Decision(BaseModel):
    note: str = Field(default="", max_length=MAX_JUSTIFICATION)


def submit_job(
    state: ServiceState, who: Identity, *, sql: str, title: str, justification: str, fmt: str
) -> tuple[OutputRecord, bool]:
    """Queue a job and start it in the background (refusals as OutputError)."""
    live = state.live()
    record, duplicate = state.desk.submit_job(
        live.pool, who, sql=sql, title=title, justification=justification, fmt=fmt
    )
    if not duplicate:
        service = state.settings.service
        state.desk.start(
            record,
            state.job_pool,
            max_rows=service.max_rows,
            timeout=service.timeout_seconds,
            still_allowed=state.still_allowed(who),
        )
    return record, duplicate


def request_output(state: ServiceState, who: Identity, body: OutputRequest) -> OutputRecord:
    """A file: a named question's or a table's, released at once; typed SQL becomes a job."""
    chosen = [x is not None for x in (body.named, body.table, body.sql)]
    if sum(chosen) != 1:
        raise HTTPException(400, "send one of named, table or sql")
    if body.sql is not None:
        record, _ = submit_job(
            state,
            who,
            sql=body.sql,
            title=body.title,
            justification=body.justification,
            fmt=body.format,
        )
        return record
    if body.named is not None:
        nq, frame, withheld = named_answer(state, who, body.named, channel="output")
        return state.desk.release_table(
            who,
            frame,
            withheld,
            fmt=body.format,
            title=body.title or nq.title,
            table=nq.spec.to_dict(),
            named=nq.name,
        )
    try:
        spec = TableSpec.from_dict(body.table or {})
    except TableSpecError as exc:
        raise HTTPException(400, f"table refused: {exc}") from None
    answer = answer_table(state, who, spec, channel="output")
    return state.desk.release_table(
        who,
        answer.frame,
        answer.withheld,
        fmt=body.format,
        title=body.title or f"Table of {spec.dataset}",
        table=spec.to_dict(),
    )


def _error(exc: OutputError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def download_response(record: OutputRecord, data: bytes) -> Response:
    return Response(
        data,
        media_type=MEDIA.get(record.format, "application/octet-stream"),
        headers={
            "Content-Disposition": f'attachment; filename="{record.filename}"',
            "X-Uprnlink-Sha256": record.sha256,
            "X-Uprnlink-Release": str(record.release_no),
            "Cache-Control": "no-store",
        },
    )


async def _body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(413, "the request is too large")
    return raw


def add_output_routes(app: FastAPI, state: ServiceState) -> None:
    """The `/api/jobs` and `/api/outputs` routes."""
    _add_job_routes(app, state)
    _add_file_routes(app, state)
    _add_decision_routes(app, state)


def _add_job_routes(app: FastAPI, state: ServiceState) -> None:
    """`/api/jobs`: submit typed SQL for a checker, list the caller's jobs."""

    @app.post("/api/jobs")
    async def create_job(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = await run_in_threadpool(state.identify, authorization, request)
        raw = await _body(request)
        try:
            body = JobRequest.model_validate_json(raw)
        except ValidationError:
            raise HTTPException(
                400, 'the request must be JSON: {"sql": ..., "title": ..., "justification": ...}'
            ) from None
        try:
            record, duplicate = await run_in_threadpool(
                lambda: submit_job(
                    state,
                    who,
                    sql=body.sql,
                    title=body.title,
                    justification=body.justification,
                    fmt=body.format,
                )
            )
        except OutputError as exc:
            return _error(exc)
        view = {**state.desk.view(who, record), "duplicate": duplicate}
        return JSONResponse(view, status_code=200 if duplicate else 202)

    @app.get("/api/jobs")
    def jobs(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = state.identify(authorization, request)
        return [state.desk.view(who, r) for r in state.desk.visible(who) if r.kind == "sql"]


def _add_file_routes(app: FastAPI, state: ServiceState) -> None:
    """`/api/outputs`: request a file, list them, the register, one output."""

    @app.post("/api/outputs")
    async def create(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = await run_in_threadpool(state.identify, authorization, request)
        raw = await _body(request)
        try:
            body = OutputRequest.model_validate_json(raw)
        except ValidationError:
            raise HTTPException(
                400, 'the request must be JSON: {"named": ...}, {"table": ...} or {"sql": ...}'
            ) from None
        try:
            record = await run_in_threadpool(request_output, state, who, body)
        except OutputError as exc:
            return _error(exc)
        status = 202 if record.kind == "sql" else 201
        return JSONResponse(state.desk.view(who, record), status_code=status)

    @app.get("/api/outputs")
    def listing(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = state.identify(authorization, request)
        return [state.desk.view(who, r) for r in state.desk.visible(who)]

    # Before `/api/outputs/{output_id}`, which would otherwise take "register" as an id.
    @app.get("/api/outputs/register")
    def register(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = state.identify(authorization, request)
        try:
            return [state.desk.view(who, r) for r in state.desk.register(who)]
        except OutputError as exc:
            return _error(exc)

    @app.get("/api/outputs/{output_id}")
    def show(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        who = state.identify(authorization, request)
        try:
            record = state.desk.show(who, output_id)
        except OutputError as exc:
            return _error(exc)
        view = state.desk.view(who, record)
        preview = state.desk.preview(who, record)
        if preview is not None and state.desk.is_checker(who):
            view["preview"] = json.loads(preview.head(200).write_json())
        return view


async def _decide(
    state: ServiceState, output_id: str, approve: bool, request: Request, authorization: str | None
) -> Any:
    """A checker's decision on one output, with an optional note."""
    who = await run_in_threadpool(state.identify, authorization, request)
    raw = await _body(request)
    try:
        body = Decision.model_validate_json(raw or b"{}")
    except ValidationError:
        raise HTTPException(400, 'the request must be JSON: {"note": ...}') from None
    try:
        record = await run_in_threadpool(
            lambda: state.desk.decide(who, output_id, approve=approve, note=body.note)
        )
    except OutputError as exc:
        return _error(exc)
    return state.desk.view(who, record)


def _add_decision_routes(app: FastAPI, state: ServiceState) -> None:
    """`/api/outputs/{id}/...`: approve, reject, download."""

    @app.post("/api/outputs/{output_id}/approve")
    async def approve(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        return await _decide(state, output_id, True, request, authorization)

    @app.post("/api/outputs/{output_id}/reject")
    async def reject(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        return await _decide(state, output_id, False, request, authorization)

    @app.get("/api/outputs/{output_id}/download")
    def download(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        who = state.identify(authorization, request)
        try:
            record, data = state.desk.download(who, output_id)
        except OutputError as exc:
            return _error(exc)
        return download_response(record, data)
