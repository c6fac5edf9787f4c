"""Every request the query service refuses or fails is counted in the audit log, none dropped.

An ASGI middleware (outermost, so it also sees the limits' 413 and 429) notes the status of
every response; 400, 401, 403, 404, 405, 408, 413, 422 and 429 are counted per window
(``[service] failure_window_seconds``, a minute by default) and per (status, route family,
user). A user is a token id when the request authenticated, else ``source:ADDRESS``; a route
family is one of the service's own route prefixes (``api/query``, ``portal/login``) or
``other``: nothing a caller typed reaches the log. One ``service.failures`` entry per window
holds every count, so a flood of bad tokens costs one entry a minute and loses no count. Past
`MAX_GROUPS` distinct groups in one window the rest are added up under ``who: "others"``.
Windows are written when they close (`FailureCounter.flush`, on the service's upkeep timer)
and at shutdown; a window that cannot be written stays in memory for the next try.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from uprnlink.errors import AuditError
from uprnlink.governance.audit import FAILURES, AuditLog
from uprnlink.service.limits import WHO_KEY, ASGIApp, Message, Receive, Scope, Send, source_of

__all__ = ["COUNTED", "FailureCounter", "FailureCountingMiddleware", "route_families"]

log = logging.getLogger("uprnlink.service")

COUNTED = frozenset({400, 401, 403, 404, 405, 408, 413, 422, 429})
"""Statuses counted in the audit log."""
MAX_GROUPS = 256
"""Distinct (status, route, user) groups one window keeps apart."""

Clock = Callable[[], datetime]
_Group = tuple[int, str, str]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FailureCounter:
    """Counts refused and failed requests per window and writes each closed window as one
    ``service.failures`` audit entry."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        window_seconds: float = 60.0,
        clock: Clock = _utc_now,
        actor: str = "query-service",
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("the window must be positive")
        self.audit = audit
        self.window = float(window_seconds)
        self._clock = clock
        self._actor = actor
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._windows: dict[int, dict[_Group, int]] = {}

    def _window_of(self, when: datetime) -> int:
        return int(when.timestamp() // self.window)

    def count(self, status: int, route: str, who: str, n: int = 1) -> None:
        """Add `n` requests answered `status` on `route` for `who` to the current window."""
        with self._lock:
            groups = self._windows.setdefault(self._window_of(self._clock()), {})
            key = (status, route, who)
            if key not in groups and len(groups) >= MAX_GROUPS:
                key = (status, route, "others")
            groups[key] = groups.get(key, 0) + n

    def pending(self) -> int:
        """Requests counted but not yet written."""
        with self._lock:
            return sum(sum(g.values()) for g in self._windows.values())

    def flush(self, *, everything: bool = False) -> int:
        """Write every closed window (`everything`: the open one too, at shutdown); returns the
        entries written. A window that cannot be written is kept and tried again."""
        with self._flushing:
            current = self._window_of(self._clock())
            with self._lock:
                due = sorted(w for w in self._windows if everything or w < current)
                taken = {w: self._windows.pop(w) for w in due}
            written = 0
            for w in due:
                groups = taken.pop(w)
                try:
                    self.audit.append(FAILURES, actor=self._actor, data=self._entry(w, groups))
                    written += 1
                except AuditError:
                    with self._lock:  # never dropped: merge back for the next flush
                        kept = self._windows.setdefault(w, {})
                        for key, n in groups.items():
                            kept[key] = kept.get(key, 0) + n
                        for rest, rest_groups in taken.items():
                            kept_rest = self._windows.setdefault(rest, {})
                            for key, n in rest_groups.items():
                                kept_rest[key] = kept_rest.get(key, 0) + n
                    raise
            return written

    def _entry(self, window: int, groups: dict[_Group, int]) -> dict[str, Any]:
        start = datetime.fromtimestamp(window * self.window, UTC)
        counts = [
            {"status": status, "route": route, "who": who, "n": n}
            for (status, route, who), n in sorted(groups.items())
        ]
        return {
            "window_start": _iso(start),
            "window_end": _iso(start + timedelta(seconds=self.window)),
            "total": sum(groups.values()),
            "counts": counts,
        }


def route_families(paths: Iterable[str]) -> frozenset[str]:
    """The service's route prefixes (the first two fixed segments of each route's path)."""
    families = set()
    for path in paths:
        parts = [p for p in path.strip("/").split("/") if p and "{" not in p][:2]
        if parts:
            families.add("/".join(parts))
            families.add(parts[0])
    return frozenset(families)


def family_of(path: str, families: frozenset[str]) -> str:
    """A request path as one of the service's route families, else ``other``."""
    parts = [p for p in path.strip("/").split("/") if p][:2]
    for n in (2, 1):
        candidate = "/".join(parts[:n])
        if len(parts) >= n and candidate in families:
            return candidate
    return "other"


class FailureCountingMiddleware:
    """Counts the responses in `COUNTED` (outermost: sees every other middleware's answers)."""

    def __init__(
        self, app: ASGIApp, *, counter: FailureCounter, families: Callable[[], frozenset[str]]
    ) -> None:
        self.app = app
        self.counter = counter
        self.families = families

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def noting_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            if status and status[0] in COUNTED:
                who = scope.get(WHO_KEY) or source_of(scope)
                route = family_of(str(scope.get("path", "")), self.families())
                try:
                    self.counter.count(status[0], route, str(who))
                except Exception:  # counting must never break an answer
                    log.exception("a refused request could not be counted")
