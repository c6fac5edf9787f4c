"""The table builder and the catalogue over HTTP: `POST /api/tables`, `GET /api/catalogue`.

An analyst asks for a table from the declaration (`publish.datasets`); the service checks
the request, builds it with its own SQL and perturbs every count and sum
(`publish.access.governed_table`). The catalogue is what a newcomer needs to ask well: each
dataset with its dimensions (and their categories), measures and caveats, the named
questions, how answers are protected, and for typed SQL jobs the views and columns their
role may use, with the data dictionary's descriptions.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from uprnlink.errors import ConfigError
from uprnlink.publish import queries
from uprnlink.publish.access import Identity, governed_table, role_relations
from uprnlink.publish.datasets import DATASETS
from uprnlink.publish.dictionary import read_dictionary
from uprnlink.publish.tabulation import TableAnswer, TableSpec, TableSpecError
from uprnlink.service.answers import encode_answer, governed_http_errors
from uprnlink.service.state import ServiceState

MAX_TABLE_BODY = 16 * 1024


class TableRequest(BaseModel):
    """`POST /api/tables`: a table spec, the answer's format, and optionally a file to keep
    (`output: true` records it as a released, numbered output)."""

    table: dict[str, Any]
    format: Literal["json", "csv", "arrow", "parquet"] = "json"
    output: bool = False
    title: str = Field(default="", max_length=200)


def answer_table(
    state: ServiceState,
    who: Identity,
    spec: TableSpec,
    *,
    channel: str = "service",
    named: str | None = None,
) -> TableAnswer:
    """One protected table for this user (refusals raise HTTPException 400/403)."""
    live = state.live()
    try:
        with governed_http_errors():
            return governed_table(
                live.pool,
                state.audit,
                who,
                spec,
                state.table_policy,
                state.categories(live),
                channel=channel,
                named=named,
                timeout=state.settings.service.timeout_seconds,
                still_allowed=state.still_allowed(who),
                cache=live.tables,
            )
    except TableSpecError as exc:
        raise HTTPException(400, f"table refused: {exc}") from None


def named_answer(
    state: ServiceState, who: Identity, name: str, *, channel: str = "service"
) -> tuple[queries.NamedQuery, Any, tuple[str, ...]]:
    """A named question's protected answer under its own column names."""
    try:
        nq = queries.get_query(name)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    answer = answer_table(state, who, nq.spec, channel=channel, named=nq.name)
    frame, withheld = nq.present(answer)
    return nq, frame, withheld


def _dataset_entries(known: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """Each tabulatable dataset: its dimensions (with the categories seen), its measures."""
    datasets = []
    for ds in DATASETS:
        cats = known.get(ds.name, {})
        datasets.append(
            {
                "name": ds.name,
                "label": ds.label,
                "unit": ds.unit,
                "description": ds.description,
                "dimensions": [
                    {
                        "name": d.name,
                        "label": d.label,
                        "description": d.description,
                        "categories": list(cats.get(d.name, [])),
                    }
                    for d in ds.dimensions
                ],
                "measures": [
                    {"name": m.name, "label": m.label, "description": m.description}
                    for m in ds.measures
                ],
            }
        )
    return datasets


def _view_entries(state: ServiceState, who: Identity) -> list[dict[str, Any]]:
    """The views and macros this user's role may name in a SQL job, from the dictionary."""
    granted = role_relations(state.roles.get(who.role, ()))
    docs = read_dictionary()
    return [
        {
            "name": name,
            "kind": "macro" if doc.is_macro else "view",
            "description": doc.summary,
            "columns": [
                {"name": c.name, "type": c.type, "description": c.comment} for c in doc.columns
            ],
        }
        for name, doc in sorted(docs.items())
        if name in granted
    ]


def catalogue(state: ServiceState, who: Identity) -> dict[str, Any]:
    """What this user may ask for, described."""
    live = state.live()
    perturbation = state.table_policy.perturbation
    datasets = _dataset_entries(state.categories(live))
    views = _view_entries(state, who)
    rights = state.desk.rights_of(who)
    return {
        "datasets": datasets,
        "measures_syntax": [
            "count",
            "sum:MEASURE",
            "mean:MEASURE",
            "per_1000:MEASURE",
            "per_1000:MEASURE/MEASURE",
            "count_where:DIMENSION=CATEGORY",
            "percent_where:DIMENSION=CATEGORY",
        ],
        "limits": {
            "max_dimensions": state.table_policy.limits.max_dimensions,
            "max_cells": state.table_policy.limits.max_cells,
            "max_measures": state.table_policy.limits.max_measures,
        },
        "protection": {
            "method": "cell-key perturbation",
            "explained": (
                "Every count and sum is perturbed by a small amount fixed by the units behind "
                "the cell: the same cell has the same value in every table, and differencing "
                f"two tables gives noise, not a person. Counts below {perturbation.threshold} "
                "after perturbation are withheld ([c]); tables do not add up exactly to their "
                "totals. Rates, means and percentages come from perturbed values."
            ),
            **perturbation.describe(),
        },
        "named_questions": [q.to_dict() for q in queries.list_queries()],
        "sql_jobs": {
            "views": views,
            "explained": (
                "Typed SQL over these views runs as a job: its output is held until an output "
                "checker approves it, and nothing of it (rows, errors, timing) is shown before."
            ),
        },
        "sees_sql_answers": rights.unchecked_answers,
    }


def add_table_routes(app: FastAPI, state: ServiceState) -> None:
    """The `/api/tables` and `/api/catalogue` routes."""

    @app.get("/api/catalogue")
    def get_catalogue(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = state.identify(authorization, request)
        try:
            return catalogue(state, who)
        except ConfigError as exc:
            raise HTTPException(503, str(exc)) from None

    @app.post("/api/tables")
    async def tables(request: Request, authorization: str | None = Header(default=None)) -> Any:
        who = await run_in_threadpool(state.identify, authorization, request)
        raw = await request.body()
        if len(raw) > MAX_TABLE_BODY:
            raise HTTPException(413, f"the request is larger than {MAX_TABLE_BODY} bytes")
        try:
            body = TableRequest.model_validate_json(raw)
            spec = TableSpec.from_dict(body.table)
        except ValidationError:
            raise HTTPException(
                400, 'the request must be JSON: {"table": {"dataset": ..., ...}}'
            ) from None
        except TableSpecError as exc:
            raise HTTPException(400, f"table refused: {exc}") from None
        answer = await run_in_threadpool(answer_table, state, who, spec)
        if body.output or body.format == "parquet":
            fmt = "parquet" if body.format == "parquet" else "csv"
            record = await run_in_threadpool(
                lambda: state.desk.release_table(
                    who,
                    answer.frame,
                    answer.withheld,
                    fmt=fmt,
                    title=body.title or f"Table of {spec.dataset}",
                    table=spec.to_dict(),
                )
            )
            return JSONResponse(state.desk.view(who, record), status_code=201)
        meta = {"row_count": answer.frame.height, "withheld": ",".join(answer.withheld)}
        return encode_answer(answer.frame.to_arrow(), body.format, meta)
