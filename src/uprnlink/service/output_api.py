"""The output-checking API (`/api/outputs/...`): request, list, show, decide, download and the
release register, each through `OutputDesk` (role rights, audit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from uprnlink.errors import ConfigError
from uprnlink.publish import queries
from uprnlink.publish.access import Identity
from uprnlink.service.app import governed_http_errors
from uprnlink.service.outputs import MAX_JUSTIFICATION, OutputError, OutputRecord

if TYPE_CHECKING:
    from uprnlink.service.app import ServiceState

MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class OutputRequest(BaseModel):
    """One output: SQL or a named question, its format, and (to queue a result the rules
    refuse) a justification for the output checker."""

    sql: str | None = Field(default=None, max_length=20_000)
    named: str | None = Field(default=None, max_length=100)
    format: Literal["csv", "parquet"] = "csv"
    submit: bool = False
    justification: str = Field(default="", max_length=MAX_JUSTIFICATION)


class Decision(BaseModel):
    note: str = Field(default="", max_length=MAX_JUSTIFICATION)


def request_output(
    state: ServiceState,
    who: Identity,
    *,
    sql: str | None,
    named: str | None,
    fmt: str,
    submit: bool,
    justification: str,
) -> OutputRecord:
    """Run, check and release or queue one output (HTTPException on refusal)."""
    if (sql is None) == (named is None):
        raise HTTPException(400, "send either sql or named")
    nq = None
    if named is not None:
        try:
            nq = queries.get_query(named)
        except ConfigError as exc:
            raise HTTPException(404, str(exc)) from None
    service = state.settings.service
    with governed_http_errors():
        live = state.live()
        return state.desk.request(
            live.pool,
            who,
            sql=sql,
            named=nq,
            fmt="parquet" if fmt == "parquet" else "csv",
            submit=submit,
            justification=justification,
            max_rows=service.max_rows,
            timeout=service.timeout_seconds,
            still_allowed=state.still_allowed(who),
            answers=live.answers,
        )


def _error(exc: OutputError) -> JSONResponse:
    body: dict[str, Any] = {"error": str(exc)}
    if exc.verdict is not None:
        body["rules"] = exc.verdict.to_dict()["findings"]
    return JSONResponse(body, status_code=exc.status)


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


def add_output_routes(app: FastAPI, state: ServiceState) -> None:
    """The `/api/outputs` routes."""

    def who_is(authorization: str | None, request: Request) -> Identity:
        return state.identify(authorization, request)

    @app.post("/api/outputs")
    async def create(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = await run_in_threadpool(who_is, authorization, request)
        raw = await request.body()
        if len(raw) > 64 * 1024:
            raise HTTPException(413, "the request is too large")
        try:
            body = OutputRequest.model_validate_json(raw)
        except ValidationError:
            raise HTTPException(
                400, 'the request must be JSON: {"sql": ...} or {"named": ...}'
            ) from None
        try:
            record = await run_in_threadpool(
                request_output,
                state,
                who,
                sql=body.sql,
                named=body.named,
                fmt=body.format,
                submit=body.submit,
                justification=body.justification,
            )
        except OutputError as exc:
            return _error(exc)
        return JSONResponse(record.public(), status_code=201)

    @app.get("/api/outputs")
    def listing(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = who_is(authorization, request)
        return [r.public() for r in state.desk.visible(who)]

    @app.get("/api/outputs/register")
    def register(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = who_is(authorization, request)
        try:
            return [r.public() for r in state.desk.register(who)]
        except OutputError as exc:
            return _error(exc)

    @app.get("/api/outputs/{output_id}")
    def show(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        who = who_is(authorization, request)
        try:
            return state.desk.show(who, output_id).to_dict()
        except OutputError as exc:
            return _error(exc)

    async def decide(
        output_id: str, approve: bool, request: Request, authorization: str | None
    ) -> Any:
        who = await run_in_threadpool(who_is, authorization, request)
        raw = await request.body()
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
        return record.public()

    @app.post("/api/outputs/{output_id}/approve")
    async def approve(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        return await decide(output_id, True, request, authorization)

    @app.post("/api/outputs/{output_id}/reject")
    async def reject(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        return await decide(output_id, False, request, authorization)

    @app.get("/api/outputs/{output_id}/download")
    def download(
        output_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        who = who_is(authorization, request)
        try:
            record, data = state.desk.download(who, output_id)
        except OutputError as exc:
            return _error(exc)
        return download_response(record, data)
