"""What one user may take of the query service, so that nobody can stall everyone else.

An ASGI middleware in front of every route (`install_guards`):

- **Body limit while reading.** A request body is counted as it streams in (chunked bodies
  included): a declared ``Content-Length`` over the limit, or the running total passing it, is
  answered 413 at once and nothing more is read. A route that never reads its body (a stranger
  without a token) reads nothing at all.
- **Per user**: a user is the token a request authenticates with (or the portal session's
  token), else its source address. Each has a token bucket (``user_rate_per_minute``,
  ``user_burst``), at most ``user_concurrency`` requests being served and ``user_queue``
  waiting (at most ``user_queue_seconds``); beyond that, 429 with ``Retry-After``.
- **Fair workers.** The user travels with the request (`current_user`) into the query worker
  pool (`uprnlink.service.workers.FairGate`), which lets no user hold every worker and hands a
  freed worker to the waiting user holding fewest: one user's long queries never queue in
  front of another user's.

Every refusal here (413, 429) and every other failed request is counted in the audit log by
`uprnlink.service.failures` (the outer middleware).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from uprnlink.settings import ServiceSettings

__all__ = [
    "BodyTooLargeError",
    "LimitSettings",
    "LimitsMiddleware",
    "TokenBuckets",
    "UserSlots",
    "current_user",
    "source_of",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

current_user: ContextVar[str] = ContextVar("uprnlink_current_user", default="service")
"""Who the request being served belongs to (a token id or ``source:ADDRESS``); the service's
own work (preparing named answers) runs as ``service``."""

WHO_KEY = "uprnlink.who"
"""Where the middleware leaves the request's user in the ASGI scope (for failure counting)."""

UNLIMITED_PATHS = frozenset({"/api/health"})


@dataclass(frozen=True)
class LimitSettings:
    """The per-user limits (from `[service]`)."""

    max_body_bytes: int = 64 * 1024
    concurrency: int = 2
    queue: int = 4
    queue_seconds: float = 30.0
    rate_per_minute: float = 120.0
    burst: int = 60

    @classmethod
    def from_service(cls, s: ServiceSettings) -> LimitSettings:
        return cls(
            max_body_bytes=s.max_body_kib * 1024,
            concurrency=s.user_concurrency,
            queue=s.user_queue,
            queue_seconds=s.user_queue_seconds,
            rate_per_minute=float(s.user_rate_per_minute),
            burst=s.user_burst,
        )


class BodyTooLargeError(Exception):
    """Raised from `receive` when a request body passes the limit (answered 413)."""


def source_of(scope: Scope) -> str:
    """The user of a request with no valid credentials: its source address."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    return f"source:{host}"


class TokenBuckets:
    """A token bucket per user: `burst` requests at once, refilled at `rate_per_minute`. Users
    seen least recently are forgotten past `max_users` (a full bucket is the default)."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 10_000,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._max = max_users
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, who: str) -> float:
        """0 if `who` may go now (one token taken), else the seconds until a token is free."""
        now = self._clock()
        tokens, then = self._buckets.pop(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
        self._buckets[who] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


class UserSlots:
    """Per user: at most `concurrency` requests served at once and `queue` waiting (in the
    event loop: every request passes through here before any work is done on it)."""

    def __init__(self, concurrency: int, queue: int, queue_seconds: float) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.queue_seconds = queue_seconds
        self._active: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def active(self, who: str) -> int:
        return self._active.get(who, 0)

    def waiting(self, who: str) -> int:
        return len(self._waiting.get(who, ()))

    async def acquire(self, who: str) -> bool:
        """Take a slot (waiting for one if the queue has room); False: refuse (429)."""
        if self._active.get(who, 0) < self.concurrency and not self._waiting.get(who):
            self._active[who] = self._active.get(who, 0) + 1
            return True
        queue = self._waiting.setdefault(who, deque())
        if len(queue) >= self.queue:
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.queue_seconds)
            return True  # the slot was handed over by `release`
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                return True  # handed over just as the wait ran out
            turn.cancel()
            return False
        except asyncio.CancelledError:  # the client went away while waiting
            if turn.done() and not turn.cancelled():
                self.release(who)  # it was ours: pass it on
            else:
                turn.cancel()
            raise
        finally:
            if turn in queue:
                queue.remove(turn)
            if not queue:
                self._waiting.pop(who, None)

    def release(self, who: str) -> None:
        """Give the slot to the next waiter of `who`, or free it."""
        queue = self._waiting.get(who)
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on: active stays the same
                return
        count = self._active.get(who, 0) - 1
        if count > 0:
            self._active[who] = count
        else:
            self._active.pop(who, None)


async def _answer(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    body = json.dumps({"error": message}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """The body limit, the per-user rate and concurrency limits (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: LimitSettings,
        identify: Callable[[Scope], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.settings = settings
        self.identify = identify
        self.buckets = TokenBuckets(settings.rate_per_minute, settings.burst, clock=clock)
        self.slots = UserSlots(settings.concurrency, settings.queue, settings.queue_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            who = self.identify(scope)
        except Exception:  # never let identification break the service: count by source
            who = source_of(scope)
        scope[WHO_KEY] = who
        limited = scope.get("path") not in UNLIMITED_PATHS
        if limited:
            wait = self.buckets.take(who)
            if wait > 0:
                await _answer(
                    send,
                    429,
                    "too many requests: slow down (the limit is per user)",
                    max(1, math.ceil(wait)),
                )
                return
            if not await self.slots.acquire(who):
                await _answer(
                    send,
                    429,
                    "too many of your requests at once: wait for one to finish",
                    max(1, math.ceil(self.settings.queue_seconds / 4)),
                )
                return
        token = current_user.set(who)
        try:
            await self._serve(scope, receive, send)
        finally:
            current_user.reset(token)
            if limited:
                self.slots.release(who)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.settings.max_body_bytes
        declared = _content_length(scope)
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            if declared is not None and declared > limit:
                raise BodyTooLargeError
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _answer(send, 413, f"the request is larger than {limit} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def request_identifier(
    authenticate: Callable[[str], str | None],
    session_user: Callable[[str], str | None],
    cookie_name: str,
) -> Callable[[Scope], str]:
    """Who a request is, for the limits: the token id its bearer token authenticates as, else
    the token id behind its portal session, else its source address. A token that does not
    authenticate counts as its source (a claimed token id is never trusted: anyone could
    name someone else's and use up their share)."""

    def identify(scope: Scope) -> str:
        authorization = _header(scope, b"authorization")
        if authorization:
            found = authenticate(authorization)
            if found:
                return found
        cookies = _header(scope, b"cookie")
        if cookies:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(cookies)
            except Exception:
                jar = SimpleCookie()
            morsel = jar.get(cookie_name)
            if morsel is not None and morsel.value:
                found = session_user(morsel.value)
                if found:
                    return found
        return source_of(scope)

    return identify
