"""The web portal (`/portal/...`): server-rendered pages over the same governed path as the API.

Sign-in is with the user's service token, once: the portal then keeps a server-side session
named by a random cookie (HttpOnly, SameSite=Strict, Secure over HTTPS; idle sessions end
after 30 minutes). Every POST carries the session's CSRF token in a form field, and is refused
without it or from another origin. Each request re-checks that the token behind the session is
still active (a revocation ends the session). Queries, outputs, decisions and downloads go
through `governed_query` and `OutputDesk` exactly as the API's do: the same role checks, the
same audit entries. Pages load nothing from elsewhere and run no script (CSP forbids it); the
chart is an SVG drawn on the server.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from uprnlink.errors import AuditError, ConfigError, UprnlinkError
from uprnlink.html import render_page
from uprnlink.publish import queries
from uprnlink.publish.access import (
    AccessRefusedError,
    Identity,
    QueryFailedError,
    governed_query,
    safe_name,
)
from uprnlink.publish.outputs import WITHHELD, WITHHELD_NOTE
from uprnlink.service.identities import AuthenticationError
from uprnlink.service.output_api import download_response, request_output
from uprnlink.service.outputs import OutputError

if TYPE_CHECKING:
    from uprnlink.service.app import ServiceState

COOKIE = "uprnlink_portal"
IDLE_SECONDS = 30 * 60
MAX_SESSION_SECONDS = 8 * 3600
MAX_FORM_BYTES = 64 * 1024
PREVIEW_ROWS = 200
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make forms send Origin: null
}


@dataclass
class Session:
    identity: Identity
    csrf: str
    started: float
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Server-side sessions by random id (the cookie holds only the id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def new(self, identity: Identity) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(identity, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > IDLE_SECONDS or now - session.started > MAX_SESSION_SECONDS:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


class PortalError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _cells(frame: pl.DataFrame, withheld: tuple[str, ...] | list[str]) -> list[list[str]]:
    out = []
    for row in frame.head(PREVIEW_ROWS).iter_rows():
        cells = []
        for c, v in zip(frame.columns, row, strict=True):
            if v is None:
                cells.append(WITHHELD if c in withheld else "")
            elif isinstance(v, float):
                cells.append(f"{v:,.2f}".rstrip("0").rstrip("."))
            else:
                cells.append(str(v))
        cells_row = cells
        out.append(cells_row)
    return out


def chart_bars(
    frame: pl.DataFrame, dims: tuple[str, ...], measures: tuple[str, ...]
) -> dict[str, Any] | None:
    """A horizontal bar chart's geometry for the first measure by the dimensions (withheld
    cells drawn as an empty, labelled bar), or None."""
    measure = next((m for m in measures if m in frame.columns), None)
    if measure is None or frame.height == 0 or frame.height > 40:
        return None
    labels = (
        [
            " / ".join("" if v is None else str(v) for v in row)
            for row in frame.select(dims).iter_rows()
        ]
        if dims
        else [str(i + 1) for i in range(frame.height)]
    )
    values = frame[measure].cast(pl.Float64, strict=False).to_list()
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    bars = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        width = 0.0 if v is None else max(0.0, 420.0 * v / top)
        shown = WITHHELD if v is None else f"{v:,.1f}".rstrip("0").rstrip(".")
        bars.append(
            {
                "y": 22 * i,
                "label": label[:40],
                "width": width,
                "value": shown,
                "withheld": v is None,
            }
        )
    return {"measure": measure, "bars": bars, "height": 22 * len(bars) + 10}


def add_portal_routes(app: FastAPI, state: ServiceState) -> None:
    """The `/portal` pages."""
    sessions = Sessions()
    state.portal_sessions = sessions  # the per-user limits know a session's user
    keys_cache: list[Any] = []

    def page(
        template: str, title: str, status: int = 200, session: Session | None = None, **ctx: Any
    ) -> HTMLResponse:
        rights = state.desk.rights_of(session.identity) if session else None
        html = render_page(
            f"portal/{template}",
            title=title,
            who=session.identity if session else None,
            csrf=session.csrf if session else "",
            rights=rights,
            withheld_note=WITHHELD_NOTE,
            **ctx,
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def current(request: Request) -> tuple[str | None, Session | None]:
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid)
        if session is not None:
            token_id = session.identity.token_id
            if not any(u.token_id == token_id and u.active for u in state.store.users()):
                sessions.end(sid)  # the token behind the session was revoked
                return sid, None
        return sid, session

    def signed_in(request: Request) -> Session:
        _, session = current(request)
        if session is None:
            raise PortalError(401, "sign in first")
        return session

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
        host = request.headers.get("host", "")
        return urllib.parse.urlsplit(origin).netloc == host

    async def form(request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise PortalError(400, "send the form")
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            raise PortalError(413, "the form is too large")
        parsed = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    async def posted(request: Request) -> tuple[Session, dict[str, str]]:
        """A signed-in POST with its CSRF token and from this origin, or refused."""
        session = signed_in(request)
        fields = await form(request)
        if not same_origin(request) or not hmac.compare_digest(
            fields.get("csrf", ""), session.csrf
        ):
            state.audit.append(
                "portal.csrf_refused",
                actor=safe_name(session.identity.user),
                data={"user": safe_name(session.identity.user), "path": request.url.path},
            )
            raise PortalError(
                403, "the form is out of date or came from another site: reload the page"
            )
        return session, fields

    @app.exception_handler(PortalError)
    def portal_error(request: Request, exc: PortalError) -> Response:
        if exc.status == 401:
            return RedirectResponse("/portal/login", status_code=303, headers=_HEADERS)
        _, session = current(request)
        return page(
            "error.html.j2",
            "Not allowed" if exc.status == 403 else "Error",
            exc.status,
            session,
            message=exc.message,
        )

    @app.get("/portal")
    @app.get("/portal/")
    def home(request: Request) -> Response:
        session = signed_in(request)
        return page(
            "home.html.j2",
            "Ask a question",
            session=session,
            questions=queries.list_queries(),
            result=None,
        )

    @app.get("/portal/login")
    def login_form(request: Request) -> Response:
        return page("login.html.j2", "Sign in", error=None)

    @app.post("/portal/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            raise PortalError(403, "sign in from the portal's own page")
        fields = await form(request)
        token = fields.get("token", "").strip()
        try:
            who = await run_in_threadpool(state.authenticator.authenticate, f"Bearer {token}")
        except AuthenticationError:  # the 401 is counted in the audit log (service.failures)
            return page(
                "login.html.j2",
                "Sign in",
                401,
                error="That token is unknown, malformed or revoked.",
            )
        sid, _ = sessions.new(who)
        state.audit.append(
            "portal.signed_in",
            actor=safe_name(who.user),
            data={
                "user": safe_name(who.user),
                "role": safe_name(who.role),
                "token_id": who.token_id,
            },
        )
        response = RedirectResponse("/portal/", status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/portal",
            max_age=MAX_SESSION_SECONDS,
        )
        return response

    @app.post("/portal/logout")
    async def logout(request: Request) -> Response:
        session, _ = await posted(request)
        sessions.end(request.cookies.get(COOKIE))
        state.audit.append(
            "portal.signed_out",
            actor=safe_name(session.identity.user),
            data={"user": safe_name(session.identity.user)},
        )
        response = RedirectResponse("/portal/login", status_code=303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/portal")
        return response

    def run_query(session: Session, sql: str | None, named: str | None) -> dict[str, Any]:
        who = session.identity
        nq = None
        if named:
            try:
                nq = queries.get_query(named)
            except ConfigError as exc:
                raise PortalError(404, str(exc)) from None
        elif not sql:
            raise PortalError(400, "pick a question or write SQL")
        service = state.settings.service
        live = state.live()
        try:
            result = governed_query(
                live.pool,
                state.audit,
                who,
                state.roles,
                state.policy,
                sql=None if nq else sql,
                named=nq,
                max_rows=service.max_rows,
                timeout=service.timeout_seconds,
                channel="portal",
                still_allowed=state.still_allowed(who),
                answers=live.answers,
            )
        except AccessRefusedError as exc:
            return {"refused": str(exc), "named": named, "sql": sql}
        except QueryFailedError as exc:
            return {"refused": str(exc), "named": named, "sql": sql}
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        granted = state.roles.get(who.role, ())
        relations = () if nq else live.pool.check(str(sql), granted).relations
        shape, verdict = state.desk.check(
            live.pool,
            who,
            result,
            sql=None if nq else sql,
            named=nq,
            relations=relations,
            timeout=service.timeout_seconds,
        )
        if not verdict.passed and not state.desk.rights_of(who).unchecked_answers:
            state.desk.refuse_answer(who, nq.sql if nq else str(sql), verdict)
            # The answer is not shown, but it can still go to an output checker.
            return {
                "refused": f"answer refused by rule ({', '.join(verdict.rules)}): {verdict.summary()}",
                "named": named,
                "sql": sql,
                "verdict": verdict,
            }
        measures = (*shape.counts, *shape.statistics, *shape.sums)
        return {
            "refused": None,
            "named": named,
            "sql": sql,
            "title": nq.title if nq else None,
            "columns": frame.columns,
            "numeric": [c for c, t in frame.schema.items() if t.is_numeric()],
            "rows": _cells(frame, shape.withheld),
            "row_count": frame.height,
            "truncated": result.truncated,
            "has_withheld": any(
                frame[c].null_count() for c in shape.withheld if c in frame.columns
            ),
            "chart": chart_bars(frame, shape.dimensions, measures),
            "verdict": verdict,
        }

    @app.post("/portal/ask")
    async def ask(request: Request) -> Response:
        session, fields = await posted(request)
        named = fields.get("named") or None
        sql = None if named else (fields.get("sql") or None)
        try:
            result = await run_in_threadpool(run_query, session, sql, named)
        except AuditError:
            raise PortalError(503, "the audit log cannot be written, so nothing ran") from None
        status = 403 if result.get("refused") else 200
        return page(
            "home.html.j2",
            "Ask a question",
            status,
            session,
            questions=queries.list_queries(),
            result=result,
        )

    @app.post("/portal/outputs")
    async def request_out(request: Request) -> Response:
        session, fields = await posted(request)
        named = fields.get("named") or None
        sql = None if named else (fields.get("sql") or None)
        try:
            record = await run_in_threadpool(
                lambda: request_output(
                    state,
                    session.identity,
                    sql=sql,
                    named=named,
                    fmt=fields.get("format", "csv"),
                    submit=fields.get("submit") == "1",
                    justification=fields.get("justification", ""),
                )
            )
        except OutputError as exc:
            return page(
                "refused.html.j2",
                "Output refused",
                exc.status,
                session,
                message=str(exc),
                findings=exc.verdict.findings if exc.verdict else (),
                named=named,
                sql=sql,
                fmt=fields.get("format", "csv"),
            )
        except UprnlinkError as exc:
            raise PortalError(400, str(exc)) from None
        except Exception as exc:  # HTTPException from the shared path
            detail = getattr(exc, "detail", None)
            if detail is None:
                raise
            raise PortalError(getattr(exc, "status_code", 400), str(detail)) from None
        return RedirectResponse(f"/portal/outputs/{record.id}", status_code=303, headers=_HEADERS)

    @app.get("/portal/outputs")
    def outputs(request: Request) -> Response:
        session = signed_in(request)
        records = state.desk.visible(session.identity)
        return page("outputs.html.j2", "Outputs", session=session, records=list(reversed(records)))

    @app.get("/portal/outputs/{output_id}")
    def output(output_id: str, request: Request) -> Response:
        session = signed_in(request)
        try:
            record = state.desk.show(session.identity, output_id)
        except OutputError as exc:
            raise PortalError(exc.status, str(exc)) from None
        frame = state.desk.preview(record)
        rights = state.desk.rights_of(session.identity)
        return page(
            "output.html.j2",
            f"Output {record.id}",
            session=session,
            record=record,
            columns=frame.columns,
            rows=_cells(frame, ()),
            may_decide=rights.check_outputs
            and record.status == "pending"
            and record.submitter != session.identity.user,
            own=record.submitter == session.identity.user,
            may_download=record.status == "released"
            and (record.submitter == session.identity.user or rights.audit),
        )

    @app.post("/portal/outputs/{output_id}/decide")
    async def decide(output_id: str, request: Request) -> Response:
        session, fields = await posted(request)
        decision = fields.get("decision")
        if decision not in ("approve", "reject"):
            raise PortalError(400, "approve or reject")
        try:
            await run_in_threadpool(
                lambda: state.desk.decide(
                    session.identity,
                    output_id,
                    approve=decision == "approve",
                    note=fields.get("note", ""),
                )
            )
        except OutputError as exc:
            raise PortalError(exc.status, str(exc)) from None
        return RedirectResponse(f"/portal/outputs/{output_id}", status_code=303, headers=_HEADERS)

    @app.get("/portal/outputs/{output_id}/download")
    def download(output_id: str, request: Request) -> Response:
        session = signed_in(request)
        try:
            record, data = state.desk.download(session.identity, output_id)
        except OutputError as exc:
            raise PortalError(exc.status, str(exc)) from None
        return download_response(record, data)

    @app.get("/portal/governance")
    def governance(request: Request) -> Response:
        session = signed_in(request)
        rights = state.desk.rights_of(session.identity)
        if not (rights.audit or rights.check_outputs):
            state.audit.append(
                "portal.refused",
                actor=safe_name(session.identity.user),
                data={"user": safe_name(session.identity.user), "page": "governance"},
            )
            raise PortalError(403, "this page is for IG leads and output checkers")
        from uprnlink.governance.audit import read_audit_events, verify_run_audit
        from uprnlink.governance.report import summarise_audit
        from uprnlink.privacy.keys import audit_keys

        if not keys_cache:
            keys_cache.extend(audit_keys(state.settings))
        verification = verify_run_audit(state.settings, keys_cache)
        summary = summarise_audit(read_audit_events(state.audit.path))
        records = state.desk.store.records()
        return page(
            "governance.html.j2",
            "Governance",
            session=session,
            verification=verification,
            access=summary["access"],
            refused=summary["refused"],
            queue=[r for r in records if r.status == "pending"],
            register=sorted(
                (r for r in records if r.status == "released"), key=lambda r: r.release_no or 0
            ),
        )
