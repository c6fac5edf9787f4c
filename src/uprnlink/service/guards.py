"""The query service's guards, put in front of its routes in one call (`install_guards`).

Outermost first: failure counting (`uprnlink.service.failures`: every refused request in the
audit log), then the limits (`uprnlink.service.limits`: body size while reading, per-user rate
and concurrency, the user passed on to the fair worker pool).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI

from uprnlink.errors import UprnlinkError
from uprnlink.service.failures import FailureCounter, FailureCountingMiddleware, route_families
from uprnlink.service.identities import Authenticator
from uprnlink.service.limits import LimitSettings, LimitsMiddleware, request_identifier

__all__ = ["install_guards"]

PORTAL_COOKIE = "uprnlink_portal"


class _State(Protocol):
    authenticator: Authenticator
    failures: FailureCounter
    limits: LimitSettings
    portal_sessions: Any


def install_guards(app: FastAPI, state: _State) -> None:
    """Wrap `app` in the failure counter and the per-user limits (call once the routes are
    added: the route families come from them)."""

    def authenticate(authorization: str) -> str | None:
        try:
            who = state.authenticator.authenticate(authorization)
        except UprnlinkError:
            return None
        return who.token_id or f"user:{who.user}"

    def session_user(sid: str) -> str | None:
        sessions = state.portal_sessions
        session = sessions.get(sid) if sessions is not None else None
        if session is None:
            return None
        return session.identity.token_id or f"user:{session.identity.user}"

    families: list[frozenset[str]] = []

    def known_families() -> frozenset[str]:
        if not families:
            families.append(route_families(getattr(r, "path", "") for r in app.routes))
        return families[0]

    app.add_middleware(
        LimitsMiddleware,
        settings=state.limits,
        identify=request_identifier(authenticate, session_user, PORTAL_COOKIE),
    )
    app.add_middleware(FailureCountingMiddleware, counter=state.failures, families=known_families)
