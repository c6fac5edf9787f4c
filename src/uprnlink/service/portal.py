"""The web portal (`/portal/...`): server-rendered pages over the same paths as the API.

Sign-in is with the user's service token, once: the portal then keeps a server-side session
named by a random cookie (HttpOnly, SameSite=Strict, Secure over HTTPS; idle sessions end
after 30 minutes). Every POST carries the session's CSRF token in a form field, and is refused
without it or from another origin. Each request re-checks that the token behind the session is
still active (a revocation ends the session).

What an analyst can do here is what the API allows, through the same functions and audit
entries: browse the catalogue, answer a named question, build a table (the form is generated
from the declaration, `publish.datasets`), keep a table as a released file, and submit typed
SQL as a job (its output is never shown to its submitter before an output checker approves
it). Output checkers see the queue with each job's SQL, output and the rules' advice, and
decide. Roles on a trusted desktop (`unchecked_answers = true`) also get SQL on screen. Pages
load nothing from elsewhere and run no script (CSP forbids it); charts are SVG drawn on the
server.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from uprnlink.errors import AuditError, ConfigError, UprnlinkError
from uprnlink.html import render_page
from uprnlink.publish import queries
from uprnlink.publish.access import Identity, governed_query, safe_name
from uprnlink.publish.datasets import DATASETS, get_dataset
from uprnlink.publish.outputs import WITHHELD, WITHHELD_NOTE
from uprnlink.publish.tabulation import TableSpec, TableSpecError, parse_measure
from uprnlink.review import (
    LABELS,
    SIDE_FIELDS,
    ReviewError,
    append_label,
    pending_pairs,
    queue_key_id,
    read_labels,
    read_queue,
)
from uprnlink.service.charts import Chart, bar_chart, line_chart, pick_measure
from uprnlink.service.identities import AuthenticationError
from uprnlink.service.output_api import download_response, submit_job
from uprnlink.service.outputs import OutputError
from uprnlink.service.state import ServiceState
from uprnlink.service.tables_api import answer_table, catalogue, named_answer
from uprnlink.zones import Zones

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
Fields = dict[str, list[str]]


MAX_SESSIONS_PER_TOKEN = 5
"""Portal sessions one token may hold at once; signing in again ends the oldest."""


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
        """A new session; expired ones are dropped, and a token keeps at most
        `MAX_SESSIONS_PER_TOKEN` (its oldest ends), so sessions cannot pile up."""
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(identity, secrets.token_urlsafe(32), now, now)
        with self._lock:
            for old in [k for k, v in self._by_id.items() if self._expired(v, now)]:
                del self._by_id[old]
            mine = sorted(
                (v.started, k)
                for k, v in self._by_id.items()
                if (v.identity.token_id or v.identity.user) == (identity.token_id or identity.user)
            )
            for _, old in mine[: max(0, len(mine) - MAX_SESSIONS_PER_TOKEN + 1)]:
                del self._by_id[old]
            self._by_id[sid] = session
        return sid, session

    @staticmethod
    def _expired(session: Session, now: float) -> bool:
        return now - session.seen > IDLE_SECONDS or now - session.started > MAX_SESSION_SECONDS

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if self._expired(session, now):
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


def _first(fields: Fields, name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0] if values else default


def cells(frame: pl.DataFrame, withheld: tuple[str, ...] | list[str]) -> list[list[str]]:
    """A table's first rows as display text: thousands separated, withheld cells [c]."""
    out = []
    for row in frame.head(PREVIEW_ROWS).iter_rows():
        shown = []
        for c, v in zip(frame.columns, row, strict=True):
            if v is None:
                shown.append(WITHHELD if c in withheld else "")
            elif isinstance(v, float):
                shown.append(f"{v:,.2f}".rstrip("0").rstrip("."))
            elif isinstance(v, int) and not isinstance(v, bool):
                shown.append(f"{v:,}")
            else:
                shown.append(str(v))
        out.append(shown)
    return out


def result_context(
    frame: pl.DataFrame,
    withheld: tuple[str, ...],
    chart: Chart | None,
    *,
    title: str,
) -> dict[str, Any]:
    """What the result template shows: the table, its chart and the [c] footnote."""
    return {
        "title": title,
        "columns": frame.columns,
        "numeric": [c for c, t in frame.schema.items() if t.is_numeric()],
        "rows": cells(frame, withheld),
        "row_count": frame.height,
        "truncated": False,
        "has_withheld": any(frame[c].null_count() for c in withheld if c in frame.columns),
        "chart": chart,
    }


def draw(
    frame: pl.DataFrame,
    dims: tuple[str, ...],
    withheld: tuple[str, ...],
    *,
    y: str | None,
    kind: str = "bars",
    x: str | None = None,
    series: str | None = None,
    title: str = "",
) -> Chart | None:
    """The chart of the column a table is about, by its first dimension (and its second as
    series)."""
    measure = pick_measure(frame.columns, withheld, y)
    if measure is None or not dims:
        return None
    x = x or dims[0]
    series = series if series is not None else (dims[1] if len(dims) > 1 else None)
    make = line_chart if kind == "line" else bar_chart
    return make(frame, x=x, y=measure, series=series, title=title)


class Portal:
    """Sessions, CSRF and page rendering shared by the portal's routes."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.sessions = Sessions()
        state.portal_sessions = self.sessions  # the per-user limits know a session's user
        self.keys_cache: list[Any] = []

    def page(
        self,
        template: str,
        title: str,
        status: int = 200,
        session: Session | None = None,
        **ctx: Any,
    ) -> HTMLResponse:
        rights = self.state.desk.rights_of(session.identity) if session else None
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

    def current(self, request: Request) -> tuple[str | None, Session | None]:
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid)
        if session is not None:
            token_id = session.identity.token_id
            if not any(u.token_id == token_id and u.active for u in self.state.store.users()):
                self.sessions.end(sid)  # the token behind the session was revoked
                return sid, None
        return sid, session

    def signed_in(self, request: Request) -> Session:
        _, session = self.current(request)
        if session is None:
            raise PortalError(401, "sign in first")
        return session

    @staticmethod
    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
        host = request.headers.get("host", "")
        return urllib.parse.urlsplit(origin).netloc == host

    @staticmethod
    async def form(request: Request) -> Fields:
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise PortalError(400, "send the form")
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            raise PortalError(413, "the form is too large")
        return urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

    async def posted(self, request: Request) -> tuple[Session, Fields]:
        """A signed-in POST with its CSRF token and from this origin, or refused."""
        session = self.signed_in(request)
        fields = await self.form(request)
        if not self.same_origin(request) or not hmac.compare_digest(
            _first(fields, "csrf"), session.csrf
        ):
            user = safe_name(session.identity.user)
            self.state.audit.append(
                "portal.csrf_refused", actor=user, data={"user": user, "path": request.url.path}
            )
            raise PortalError(
                403, "the form is out of date or came from another site: reload the page"
            )
        return session, fields

    def redirect(self, path: str) -> Response:
        return RedirectResponse(path, status_code=303, headers=_HEADERS)


def _http_to_portal(exc: Exception) -> PortalError:
    """An API refusal (HTTPException, OutputError, a table's) as a portal error page."""
    if isinstance(exc, HTTPException):
        return PortalError(exc.status_code, str(exc.detail))
    if isinstance(exc, OutputError):
        return PortalError(exc.status, str(exc))
    if isinstance(exc, AuditError):
        return PortalError(503, "the audit log cannot be written, so nothing ran")
    return PortalError(400, str(exc))


async def _run(call: Any) -> Any:
    try:
        return await run_in_threadpool(call)
    except (HTTPException, OutputError, AuditError, TableSpecError) as exc:
        raise _http_to_portal(exc) from None


def add_portal_routes(app: FastAPI, state: ServiceState) -> None:
    """The `/portal` pages."""
    portal = Portal(state)

    @app.exception_handler(PortalError)
    def portal_error(request: Request, exc: PortalError) -> Response:
        if exc.status == 401:
            return RedirectResponse("/portal/login", status_code=303, headers=_HEADERS)
        _, session = portal.current(request)
        title = "Not allowed" if exc.status == 403 else "Error"
        return portal.page("error.html.j2", title, exc.status, session, message=exc.message)

    _sign_in_routes(app, portal)
    _question_routes(app, portal)
    _builder_routes(app, portal)
    _keep_routes(app, portal)
    _job_routes(app, portal)
    _sql_routes(app, portal)
    _output_routes(app, portal)
    _governance_routes(app, portal)
    _review_routes(app, portal)


# ------------------------------------------------------------------------------ sign-in


def _sign_in_routes(app: FastAPI, portal: Portal) -> None:
    state = portal.state

    @app.get("/portal/login")
    def login_form(request: Request) -> Response:
        return portal.page("login.html.j2", "Sign in", error=None)

    @app.post("/portal/login")
    async def login(request: Request) -> Response:
        if not portal.same_origin(request):
            raise PortalError(403, "sign in from the portal's own page")
        fields = await portal.form(request)
        token = _first(fields, "token").strip()
        try:
            who = await run_in_threadpool(state.authenticator.authenticate, f"Bearer {token}")
        except AuthenticationError:  # the 401 is counted in the audit log (service.failures)
            return portal.page(
                "login.html.j2",
                "Sign in",
                401,
                error="That token is unknown, malformed or revoked.",
            )
        sid, _ = portal.sessions.new(who)
        user = safe_name(who.user)
        state.audit.append(
            "portal.signed_in",
            actor=user,
            data={"user": user, "role": safe_name(who.role), "token_id": who.token_id},
        )
        response = portal.redirect("/portal/")
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
        session, _ = await portal.posted(request)
        portal.sessions.end(request.cookies.get(COOKIE))
        user = safe_name(session.identity.user)
        state.audit.append("portal.signed_out", actor=user, data={"user": user})
        response = portal.redirect("/portal/login")
        response.delete_cookie(COOKIE, path="/portal")
        return response


# ---------------------------------------------------------------- questions and catalogue


def _spec_text(spec: TableSpec) -> list[str]:
    """A table request in words, line by line (a question's definition)."""
    ds = get_dataset(spec.dataset)
    lines = [f"{ds.label}: {ds.description}"]
    if spec.dimensions:
        lines.append(
            "By " + ", ".join(ds.dimension(d).label.lower() for d in spec.dimensions) + "."
        )
    for name, values in spec.filters:
        lines.append(f"Only {ds.dimension(name).label.lower()}: {', '.join(values)}.")
    lines.append("Measures: " + ", ".join(m.text for m in spec.measures) + ".")
    return lines


def _question_routes(app: FastAPI, portal: Portal) -> None:
    state = portal.state

    @app.get("/portal")
    @app.get("/portal/")
    def home(request: Request) -> Response:
        session = portal.signed_in(request)
        return portal.page(
            "home.html.j2",
            "Ask a question",
            session=session,
            questions=queries.list_queries(),
            datasets=DATASETS,
        )

    @app.get("/portal/catalogue")
    def catalogue_page(request: Request) -> Response:
        session = portal.signed_in(request)
        try:
            doc = catalogue(state, session.identity)
        except ConfigError as exc:
            raise PortalError(503, str(exc)) from None
        return portal.page("catalogue.html.j2", "Catalogue", session=session, doc=doc)

    @app.post("/portal/ask")
    async def ask(request: Request) -> Response:
        session, fields = await portal.posted(request)
        name = _first(fields, "named")
        nq, frame, withheld = await _run(
            lambda: named_answer(state, session.identity, name, channel="portal")
        )
        chart = None
        if nq.chart is not None:
            chart = draw(
                frame,
                nq.spec.dimensions,
                withheld,
                y=nq.chart.y,
                kind=nq.chart.kind,
                x=nq.chart.x,
                series=nq.chart.series or "",
                title=nq.title,
            )
        return portal.page(
            "question.html.j2",
            nq.title,
            session=session,
            question=nq,
            definition=_spec_text(nq.spec),
            result=result_context(frame, withheld, chart, title=nq.title),
        )


# --------------------------------------------------------------------------- the builder


def _measure_options(dataset: str) -> list[tuple[str, str]]:
    """(measure text, label) a dataset's form offers."""
    ds = get_dataset(dataset)
    out = [("count", f"Number of {ds.unit}")]
    for m in ds.measures:
        out += [
            (f"sum:{m.name}", f"{m.label}: total"),
            (
                f"mean:{m.name}",
                f"{m.label}: mean per {ds.unit[:-1] if ds.unit.endswith('s') else ds.unit}",
            ),
            (f"per_1000:{m.name}", f"{m.label}: per 1,000 {ds.unit}"),
        ]
    for d in ds.dimensions:
        if d.categories[:2] == ("yes", "no"):
            out += [
                (f"percent_where:{d.name}=yes", f"% {d.label.lower()}"),
                (f"count_where:{d.name}=yes", f"Number {d.label.lower()}"),
            ]
    return out


def _spec_from_form(fields: Fields) -> TableSpec:
    dataset = _first(fields, "dataset")
    ds = get_dataset(dataset)
    filters = {
        d.name: fields[f"filter_{d.name}"] for d in ds.dimensions if fields.get(f"filter_{d.name}")
    }
    measures = ["count", *(m for m in fields.get("measure", []) if m != "count")]
    return TableSpec.from_dict(
        {
            "dataset": dataset,
            "dimensions": fields.get("dimension", []),
            "filters": filters,
            "measures": measures,
            "totals": _first(fields, "totals") == "1",
        }
    )


def _builder_page(
    portal: Portal, session: Session, dataset: str, fields: Fields, result: dict[str, Any] | None
) -> Response:
    """The table builder's form for a dataset, with the last table built (if any)."""
    state = portal.state
    try:
        ds = get_dataset(dataset)
    except TableSpecError as exc:
        raise PortalError(404, str(exc)) from None
    known = state.categories(state.live()).get(ds.name, {})
    return portal.page(
        "builder.html.j2",
        "Build a table",
        session=session,
        datasets=DATASETS,
        ds=ds,
        known=known,
        measures=_measure_options(ds.name),
        chosen=fields,
        filters_open=any(k.startswith("filter_") for k in fields),
        limits=state.table_policy.limits,
        result=result,
    )


def _builder_routes(app: FastAPI, portal: Portal) -> None:
    """`/portal/tables`: the table builder's form, and a table built from it."""
    state = portal.state

    @app.get("/portal/tables")
    def builder(request: Request, dataset: str = "households") -> Response:
        session = portal.signed_in(request)
        return _builder_page(portal, session, dataset, {}, None)

    @app.post("/portal/tables")
    async def build(request: Request) -> Response:
        session, fields = await portal.posted(request)
        try:
            spec = _spec_from_form(fields)
        except TableSpecError as exc:
            raise PortalError(400, f"table refused: {exc}") from None
        answer = await _run(lambda: answer_table(state, session.identity, spec, channel="portal"))
        wanted = _first(fields, "chart") or None
        if wanted:
            wanted = parse_measure(wanted).column if ":" in wanted or wanted == "count" else wanted
        chart = draw(answer.frame, spec.dimensions, answer.withheld, y=wanted)
        result = result_context(answer.frame, answer.withheld, chart, title="Your table")
        result["spec_json"] = json.dumps(spec.to_dict())
        return _builder_page(portal, session, spec.dataset, fields, result)


def _keep_routes(app: FastAPI, portal: Portal) -> None:
    """`POST /portal/outputs`: keep a built table or a named question's answer as a file."""
    state = portal.state

    @app.post("/portal/outputs")
    async def keep(request: Request) -> Response:
        """Keep a table or a named question's answer as a released file."""
        session, fields = await portal.posted(request)
        who = session.identity
        fmt = "parquet" if _first(fields, "format") == "parquet" else "csv"
        named = _first(fields, "named")
        if named:
            nq, frame, withheld = await _run(
                lambda: named_answer(state, who, named, channel="output")
            )
            record = await _run(
                lambda: state.desk.release_table(
                    who,
                    frame,
                    withheld,
                    fmt=fmt,
                    title=nq.title,
                    table=nq.spec.to_dict(),
                    named=nq.name,
                )
            )
        else:
            try:
                spec = TableSpec.from_dict(json.loads(_first(fields, "table", "{}")))
            except (TableSpecError, ValueError) as exc:
                raise PortalError(400, f"table refused: {exc}") from None
            answer = await _run(lambda: answer_table(state, who, spec, channel="output"))
            title = _first(fields, "title") or f"Table of {spec.dataset}"
            record = await _run(
                lambda: state.desk.release_table(
                    who,
                    answer.frame,
                    answer.withheld,
                    fmt=fmt,
                    title=title,
                    table=spec.to_dict(),
                )
            )
        return portal.redirect(f"/portal/outputs/{record.id}")


# --------------------------------------------------------------------------------- jobs


def _jobs_page(portal: Portal, session: Session, message: str = "", status: int = 200) -> Response:
    """The caller's own SQL jobs, newest first, with a message about the last submission."""
    state = portal.state
    own = [
        state.desk.view(session.identity, r)
        for r in reversed(state.desk.visible(session.identity))
        if r.kind == "sql" and r.submitter == session.identity.user
    ]
    granted = state.roles.get(session.identity.role, ())
    return portal.page(
        "jobs.html.j2",
        "SQL jobs",
        status,
        session=session,
        jobs=own,
        message=message,
        views=sorted(v for v in granted if v != "*") or ["every view"],
    )


def _job_routes(app: FastAPI, portal: Portal) -> None:
    """`/portal/jobs`: the caller's jobs, and typed SQL submitted as a job."""
    state = portal.state

    @app.get("/portal/jobs")
    def jobs(request: Request) -> Response:
        return _jobs_page(portal, portal.signed_in(request))

    @app.post("/portal/jobs")
    async def submit(request: Request) -> Response:
        session, fields = await portal.posted(request)
        try:
            record, duplicate = await run_in_threadpool(
                lambda: submit_job(
                    state,
                    session.identity,
                    sql=_first(fields, "sql"),
                    title=_first(fields, "title"),
                    justification=_first(fields, "justification"),
                    fmt="parquet" if _first(fields, "format") == "parquet" else "csv",
                )
            )
        except (OutputError, HTTPException, AuditError) as exc:
            err = _http_to_portal(exc)
            return _jobs_page(portal, session, err.message, err.status)
        note = (
            f"That job is already waiting as {record.id}: not queued twice."
            if duplicate
            else f"Submitted as {record.id}. An output checker will review it; nothing of its "
            "output is shown before."
        )
        return _jobs_page(portal, session, note)


def _sql_routes(app: FastAPI, portal: Portal) -> None:
    """`/portal/sql`: SQL answered on screen, for roles on a trusted desktop only."""
    state = portal.state

    @app.get("/portal/sql")
    def sql_form(request: Request) -> Response:
        session = portal.signed_in(request)
        if not state.desk.rights_of(session.identity).unchecked_answers:
            return portal.redirect("/portal/jobs")
        return portal.page("sql.html.j2", "SQL on screen", session=session, result=None, sql="")

    @app.post("/portal/sql")
    async def sql_run(request: Request) -> Response:
        session, fields = await portal.posted(request)
        who = session.identity
        if not state.desk.rights_of(who).unchecked_answers:
            raise PortalError(403, "SQL on screen is for roles on a trusted desktop: submit a job")
        sql = _first(fields, "sql")
        service = state.settings.service

        def run() -> Any:
            return governed_query(
                state.live().pool,
                state.audit,
                who,
                state.roles,
                sql=sql,
                max_rows=service.max_rows,
                timeout=service.timeout_seconds,
                channel="portal",
                still_allowed=state.still_allowed(who),
            )

        try:
            result = await run_in_threadpool(run)
        except UprnlinkError as exc:
            return portal.page(
                "sql.html.j2",
                "SQL on screen",
                403,
                session=session,
                result=None,
                sql=sql,
                refused=str(exc),
            )
        frame = result.frame
        ctx = {**result_context(frame, (), None, title="Result"), "truncated": result.truncated}
        return portal.page("sql.html.j2", "SQL on screen", session=session, result=ctx, sql=sql)


# ------------------------------------------------------------------------------ outputs


def _findings_by_cell(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    return list(verdict.get("findings", []))


def _output_routes(app: FastAPI, portal: Portal) -> None:
    state = portal.state

    @app.get("/portal/outputs")
    def outputs(request: Request) -> Response:
        session = portal.signed_in(request)
        who = session.identity
        records = [state.desk.view(who, r) for r in reversed(state.desk.visible(who))]
        return portal.page(
            "outputs.html.j2",
            "Outputs",
            session=session,
            records=records,
            checker=state.desk.is_checker(who),
        )

    @app.get("/portal/outputs/{output_id}")
    def output(output_id: str, request: Request) -> Response:
        session = portal.signed_in(request)
        who = session.identity
        try:
            record = state.desk.show(who, output_id)
        except OutputError as exc:
            raise PortalError(exc.status, str(exc)) from None
        checker = state.desk.is_checker(who)
        preview = state.desk.preview(who, record) if checker else None
        rights = state.desk.rights_of(who)
        return portal.page(
            "output.html.j2",
            f"Output {record.id}",
            session=session,
            record=state.desk.view(who, record),
            checker=checker,
            findings=_findings_by_cell(record.verdict) if checker else [],
            columns=preview.columns if preview is not None else [],
            rows=cells(preview, ()) if preview is not None else [],
            may_decide=rights.check_outputs
            and not record.decided
            and record.submitter != who.user
            and who.user not in record.approvals,
            checkers_required=state.desk.checkers_required,
            may_download=record.status == "released"
            and (record.submitter == who.user or rights.audit),
        )

    @app.post("/portal/outputs/{output_id}/decide")
    async def decide(output_id: str, request: Request) -> Response:
        session, fields = await portal.posted(request)
        decision = _first(fields, "decision")
        if decision not in ("approve", "reject"):
            raise PortalError(400, "approve or reject")
        await _run(
            lambda: state.desk.decide(
                session.identity,
                output_id,
                approve=decision == "approve",
                note=_first(fields, "note"),
            )
        )
        return portal.redirect(f"/portal/outputs/{output_id}")

    @app.get("/portal/outputs/{output_id}/download")
    def download(output_id: str, request: Request) -> Response:
        session = portal.signed_in(request)
        try:
            record, data = state.desk.download(session.identity, output_id)
        except OutputError as exc:
            raise PortalError(exc.status, str(exc)) from None
        return download_response(record, data)


# ---------------------------------------------------------------------------- governance


def _governance_routes(app: FastAPI, portal: Portal) -> None:
    state = portal.state

    @app.get("/portal/governance")
    def governance(request: Request) -> Response:
        session = portal.signed_in(request)
        if not state.desk.is_checker(session.identity):
            user = safe_name(session.identity.user)
            state.audit.append(
                "portal.refused", actor=user, data={"user": user, "page": "governance"}
            )
            raise PortalError(403, "this page is for IG leads and output checkers")
        from uprnlink.governance.audit import read_audit_events, verify_run_audit
        from uprnlink.governance.report import summarise_audit
        from uprnlink.privacy.keys import audit_keys

        if not portal.keys_cache:
            portal.keys_cache.extend(audit_keys(state.settings))
        verification = verify_run_audit(state.settings, portal.keys_cache)
        summary = summarise_audit(read_audit_events(state.audit.path))
        records = state.desk.store.records()
        return portal.page(
            "governance.html.j2",
            "Governance",
            session=session,
            verification=verification,
            access=summary["access"],
            refused=summary["refused"],
            queue=[r for r in records if r.kind == "sql" and not r.decided],
            register=sorted(
                (r for r in records if r.status == "released"), key=lambda r: r.release_no or 0
            ),
        )


# ------------------------------------------------------------------------ clerical review

REVIEW_PAGE_PAIRS = 20
SIDE_LABELS = {
    "source": "source",
    "forename": "forename",
    "surname": "surname",
    "dob": "date of birth",
    "district": "postcode district",
    "period": "period",
}


def _reviewer(portal: Portal, session: Session, page: str) -> str:
    """The signed-in user's name if their role may label linkage pairs; else logged and 403."""
    state = portal.state
    user = safe_name(session.identity.user)
    if not state.desk.rights_of(session.identity).review_linkage:
        state.audit.append("portal.refused", actor=user, data={"user": user, "page": page})
        raise PortalError(403, "clerical review is for data engineers")
    return user


def _review_routes(app: FastAPI, portal: Portal) -> None:
    state = portal.state
    zones = Zones(state.settings)

    @app.get("/portal/review")
    def review(request: Request) -> Response:
        session = portal.signed_in(request)
        user = _reviewer(portal, session, "review")
        labels = read_labels(zones, queue_key_id(zones))
        pending = pending_pairs(read_queue(zones), labels)
        shown = pending.head(REVIEW_PAGE_PAIRS)
        # Names and dates of birth leave the trusted zone here: logged before they are shown.
        state.audit.append(
            "review.viewed",
            actor=user,
            data={"user": user, "pairs": shown.height, "pending": pending.height},
        )
        pairs = [
            {
                "id": row["pair_id"],
                "reason": row["reason"].replace("_", " "),
                "probability": f"{row['match_probability']:.3f}",
                "fields": [
                    (SIDE_LABELS[f], row[f"{f}_l"] or "", row[f"{f}_r"] or "") for f in SIDE_FIELDS
                ],
            }
            for row in shown.iter_rows(named=True)
        ]
        return portal.page(
            "review.html.j2",
            "Clerical review",
            session=session,
            pairs=pairs,
            pending=pending.height,
            labelled=labels.height,
            choices=LABELS,
        )

    @app.post("/portal/review/{pair_id}")
    async def label(pair_id: str, request: Request) -> Response:
        session, fields = await portal.posted(request)
        user = _reviewer(portal, session, "review")
        choice = _first(fields, "label")
        if choice not in LABELS:
            raise PortalError(400, "label the pair match or non_match")
        try:
            entry = await run_in_threadpool(lambda: append_label(zones, pair_id, choice, user))
        except ReviewError as exc:
            raise PortalError(400, str(exc)) from None
        state.audit.append(
            "review.labelled",
            actor=user,
            data={"user": user, "pair": entry.pair_id, "label": choice, "reason": entry.reason},
        )
        return portal.redirect("/portal/review")
