"""A client of the query service for `uprnlink query` and scripts (standard library only).

Analysts need nothing but this and a token: no key, no database file. Python users can call
`QueryClient` directly; R and other languages speak the same HTTP API (docs/analyst-guide.md).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from uprnlink.errors import ConfigError, UprnlinkError

__all__ = ["QueryClient", "ServiceAnswer", "ServiceError", "read_token"]

TOKEN_ENV = "UPRNLINK_TOKEN"


class ServiceError(UprnlinkError):
    """The service refused or failed a request (its message, never a data value)."""

    exit_code = 8


@dataclass(frozen=True)
class ServiceAnswer:
    """A query's answer as the service sent it (Arrow), with its row count and flags."""

    table: pa.Table
    truncated: bool
    seconds: float
    title: str | None = None
    withheld: tuple[str, ...] = ()
    """Columns where NULL means withheld ([c]), not missing."""


def read_token(token_file: str | None = None, env: str = TOKEN_ENV) -> str:
    """The caller's token: from a file (first line) or an environment variable."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip().splitlines()[0]
        except (OSError, IndexError):
            raise ConfigError(f"token file {token_file} cannot be read") from None
        return token
    token = os.environ.get(env, "").strip()
    if not token:
        raise ConfigError(
            f"no token: set {env} (an IG lead issues one with `uprnlink users add`) or pass "
            "--token-file"
        )
    return token


class QueryClient:
    """Talks to `uprnlink serve` over HTTP with a bearer token."""

    def __init__(self, url: str, token: str, *, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
            },
        )
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read().decode("utf-8")).get("error")
            except (ValueError, AttributeError):
                detail = None
            raise ServiceError(
                f"the query service said {exc.code}: {detail or exc.reason}"
            ) from None
        except urllib.error.URLError as exc:
            raise ServiceError(
                f"cannot reach the query service at {self.url} ({exc.reason}); is `uprnlink "
                "serve` running?"
            ) from None

    def whoami(self) -> dict[str, Any]:
        with self._request("GET", "/api/whoami") as resp:
            return dict(json.loads(resp.read()))

    def named_queries(self) -> list[dict[str, str]]:
        with self._request("GET", "/api/queries") as resp:
            return list(json.loads(resp.read()))

    def query(
        self, sql: str | None = None, *, named: str | None = None, max_rows: int | None = None
    ) -> ServiceAnswer:
        """Run one query (SQL or a named question); the answer as Arrow."""
        body: dict[str, Any] = {"format": "arrow"}
        if sql is not None:
            body["sql"] = sql
        if named is not None:
            body["named"] = named
        if max_rows is not None:
            body["max_rows"] = max_rows
        with self._request("POST", "/api/query", body) as resp:
            payload = resp.read()
            headers = resp.headers
        table = pa.ipc.open_stream(payload).read_all()
        return ServiceAnswer(
            table=table,
            truncated=headers.get("X-Uprnlink-Truncated") == "True",
            seconds=float(headers.get("X-Uprnlink-Seconds") or 0),
            title=urllib.parse.unquote(headers["X-Uprnlink-Title"])
            if headers.get("X-Uprnlink-Title")
            else None,
            withheld=tuple(
                c
                for c in urllib.parse.unquote(headers.get("X-Uprnlink-Withheld") or "").split(",")
                if c
            ),
        )

    def catalogue(self) -> dict[str, Any]:
        """What may be tabulated (datasets, dimensions, categories, measures), the named
        questions and the views a job may use."""
        with self._request("GET", "/api/catalogue") as resp:
            return dict(json.loads(resp.read()))

    def table(self, spec: dict[str, Any]) -> ServiceAnswer:
        """A protected table (the table builder); the answer as Arrow."""
        with self._request("POST", "/api/tables", {"table": spec, "format": "arrow"}) as resp:
            payload = resp.read()
            headers = resp.headers
        return ServiceAnswer(
            table=pa.ipc.open_stream(payload).read_all(),
            truncated=False,
            seconds=0.0,
            title=None,
            withheld=tuple(
                c
                for c in urllib.parse.unquote(headers.get("X-Uprnlink-Withheld") or "").split(",")
                if c
            ),
        )

    # ------------------------------------------------------------------ outputs
    def request_output(
        self,
        *,
        named: str | None = None,
        table: dict[str, Any] | None = None,
        fmt: str = "csv",
        title: str = "",
    ) -> dict[str, Any]:
        """Keep a named question's or a table's answer as a released output (protected by
        construction, released at once)."""
        body: dict[str, Any] = {"format": fmt, "title": title}
        if named is not None:
            body["named"] = named
        if table is not None:
            body["table"] = table
        with self._request("POST", "/api/outputs", body) as resp:
            return dict(json.loads(resp.read()))

    def submit_job(
        self, sql: str, *, title: str, justification: str, fmt: str = "csv"
    ) -> dict[str, Any]:
        """Submit typed SQL as a job: held for an output checker (nothing of it comes back)."""
        body = {"sql": sql, "title": title, "justification": justification, "format": fmt}
        with self._request("POST", "/api/jobs", body) as resp:
            return dict(json.loads(resp.read()))

    def jobs(self) -> list[dict[str, Any]]:
        with self._request("GET", "/api/jobs") as resp:
            return list(json.loads(resp.read()))

    def outputs(self) -> list[dict[str, Any]]:
        with self._request("GET", "/api/outputs") as resp:
            return list(json.loads(resp.read()))

    def register(self) -> list[dict[str, Any]]:
        with self._request("GET", "/api/outputs/register") as resp:
            return list(json.loads(resp.read()))

    def output(self, output_id: str) -> dict[str, Any]:
        with self._request("GET", f"/api/outputs/{urllib.parse.quote(output_id, safe='')}") as resp:
            return dict(json.loads(resp.read()))

    def decide(self, output_id: str, *, approve: bool, note: str = "") -> dict[str, Any]:
        action = "approve" if approve else "reject"
        path = f"/api/outputs/{urllib.parse.quote(output_id, safe='')}/{action}"
        with self._request("POST", path, {"note": note}) as resp:
            return dict(json.loads(resp.read()))

    def download(self, output_id: str) -> tuple[bytes, str]:
        """A released output's bytes and the fingerprint the service recorded; the bytes are
        checked against it here too."""
        import hashlib

        path = f"/api/outputs/{urllib.parse.quote(output_id, safe='')}/download"
        with self._request("GET", path) as resp:
            data = resp.read()
            digest = resp.headers.get("X-Uprnlink-Sha256") or ""
        if hashlib.sha256(data).hexdigest() != digest:
            raise ServiceError(f"output {output_id} does not match its fingerprint: not saved")
        return data, digest
