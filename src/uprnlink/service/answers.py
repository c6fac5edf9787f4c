"""How the query service's answers and refusals go out over HTTP: the governed path's outcomes
as status codes, and an answer encoded as JSON, CSV or Arrow. Shared by every route module."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
from fastapi import HTTPException
from fastapi.responses import Response

from uprnlink.errors import AuditError
from uprnlink.publish.access import AccessRefusedError, QueryFailedError

__all__ = ["encode_answer", "governed_http_errors"]

log = logging.getLogger("uprnlink.service")


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
