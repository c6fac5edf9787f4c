"""Queries checked and run in worker processes the service can stop, whatever they do.

DuckDB can only interrupt a query between batches of rows, and it binds a query (evaluating
constant expressions such as a LIMIT) before it runs anything: one short query can hold a core
for hours (`levenshtein` on two long strings, found by the red team). So the service never
checks or runs a query in its own process. Each worker process opens the analysts' database
read-only, under an address-space limit, and answers one request at a time; the service waits
for at most the time allowed and kills the worker if it overruns (a new one takes its place).
An answer larger than the byte limit is refused while it streams, before it can fill memory.

One pool serves one release. When a new release goes live the service starts a new pool; the
old one finishes the requests it already has and then shuts down.

Workers are shared, so they are handed out fairly (`FairGate`): one user (the request's
`uprnlink.service.limits.current_user`) holds at most ``workers_per_user`` of them (default:
all but one), and a freed worker goes to the waiting user who holds fewest. Five long queries
from one analyst therefore never queue in front of another analyst's query.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import resource
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from uprnlink.publish.access import AnalystDatabase, QueryCheck, QueryFailedError, QueryResult
from uprnlink.service.limits import current_user

__all__ = ["FairGate", "PoolSettings", "WorkerPool"]

log = logging.getLogger("uprnlink.service")

_GRACE = 2.0  # seconds a worker gets past its time limit to stop by itself before it is killed


@dataclass(frozen=True)
class PoolSettings:
    """How many workers, and what each may spend."""

    workers: int = 4
    check_timeout: float = 5.0
    memory_bytes: int = 3 * 2**30  # address space of a worker
    duckdb_memory: str = "1GB"
    max_bytes: int = 64 * 2**20  # largest answer, in Arrow bytes
    per_user: int | None = None  # workers one user may hold (None: all but one)
    nice: int = 0  # added to each worker's niceness (jobs: 19, so tables keep the cores)

    @property
    def user_share(self) -> int:
        """Workers one user may hold at once."""
        workers = max(1, self.workers)
        if self.per_user is not None:
            return max(1, min(self.per_user, workers))
        return max(1, workers - 1)


class FairGate:
    """`capacity` slots shared fairly: at most `per_user` to one user, and a freed slot goes to
    the waiting user who holds fewest (the longest waiting among equals)."""

    def __init__(self, capacity: int, per_user: int) -> None:
        self.capacity = capacity
        self.per_user = per_user
        self._cond = threading.Condition()
        self._free = capacity
        self._held: dict[str, int] = {}
        self._waiting: list[tuple[int, str]] = []
        self._tickets = itertools.count()

    def held(self, user: str) -> int:
        with self._cond:
            return self._held.get(user, 0)

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _next(self) -> int | None:
        best: tuple[int, int] | None = None
        for ticket, user in self._waiting:
            held = self._held.get(user, 0)
            if held < self.per_user and (best is None or held < best[0]):
                best = (held, ticket)
        return None if best is None else best[1]

    def acquire(self, user: str, timeout: float | None = None) -> bool:
        """Wait for a slot for `user` (False if `timeout` passed first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append((ticket, user))
            try:
                while not (self._free > 0 and self._next() == ticket):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._free -= 1
                self._held[user] = self._held.get(user, 0) + 1
                return True
            finally:
                self._waiting.remove((ticket, user))
                self._cond.notify_all()

    def release(self, user: str) -> None:
        with self._cond:
            self._free += 1
            left = self._held.get(user, 0) - 1
            if left > 0:
                self._held[user] = left
            else:
                self._held.pop(user, None)
            self._cond.notify_all()


def _worker_main(conn: Connection, path: str, settings: PoolSettings) -> None:
    """A worker: the analysts' database, read-only, one request at a time."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (settings.memory_bytes, settings.memory_bytes))
    if settings.nice:
        with contextlib.suppress(OSError):
            os.nice(settings.nice)
    db = AnalystDatabase(Path(path), threads=1, memory_limit=settings.duckdb_memory, readers=1)
    conn.send(("ready", None))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if op == "check":
                conn.send(("ok", db.check(*args)))
            elif op == "run":
                sql, max_rows, timeout = args
                result = db.run(
                    sql, max_rows=max_rows, timeout=timeout, max_bytes=settings.max_bytes
                )
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, result.table.schema) as writer:
                    writer.write_table(result.table)
                conn.send(("ok", (sink.getvalue().to_pybytes(), result.truncated, result.seconds)))
            else:
                conn.send(("error", f"unknown request {op!r}"))
        except QueryFailedError as exc:
            conn.send(("failed", str(exc)))
        except MemoryError:
            conn.send(("failed", "the query needed more memory than allowed"))
        except Exception as exc:  # reported by class only: a message could quote a value
            conn.send(("failed", f"the query failed while running ({type(exc).__name__})"))


_STARTUP = 120.0  # seconds a new worker may take to import and open the database


class _Worker:
    def __init__(self, ctx: Any, path: str, settings: PoolSettings) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, path, settings), daemon=True, name="uprnlink-query"
        )
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the worker has started (a query's time limit starts after this)."""
        if self.ready:
            return
        if not self.conn.poll(_STARTUP):
            raise QueryFailedError("a query worker did not start")
        status, _ = self.conn.recv()
        if status != "ready":
            raise QueryFailedError("a query worker did not start")
        self.ready = True

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.conn.close()


class WorkerPool:
    """Worker processes on one release's analysts' database."""

    def __init__(self, path: Path, settings: PoolSettings | None = None) -> None:
        self.path = path
        self.settings = settings or PoolSettings()
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._checks: dict[tuple[tuple[str, ...], str], QueryCheck] = {}
        self._in_flight = 0
        self._retired = False
        self._closed = False
        self.gate = FairGate(max(1, self.settings.workers), self.settings.user_share)
        for _ in range(max(1, self.settings.workers)):
            self._idle.put(_Worker(self._ctx, str(path), self.settings))

    # ------------------------------------------------------------------------- requests

    def _call(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        with self._lock:
            if self._closed:
                raise QueryFailedError("this release is no longer served: ask again")
            self._in_flight += 1
        user = current_user.get()
        self.gate.acquire(user)
        held = [self._idle.get()]
        try:
            return self._exchange(held, op, args, timeout)
        finally:
            self._idle.put(held[0])
            self.gate.release(user)
            with self._lock:
                self._in_flight -= 1
                done = self._retired and self._in_flight == 0
            if done:
                self._shutdown()

    def _exchange(self, held: list[_Worker], op: str, args: tuple[Any, ...], timeout: float) -> Any:
        """One request to the worker in `held` (taken through the gate): its answer. A worker
        that overran or died is killed and replaced in `held`, which goes back to the pool."""
        worker = held[0]
        try:
            worker.wait_ready()
        except (QueryFailedError, EOFError, OSError):
            worker.kill()
            held[0] = _Worker(self._ctx, str(self.path), self.settings)
            raise QueryFailedError("a query worker did not start: ask again") from None
        try:
            worker.conn.send((op, args))
            ready = worker.conn.poll(timeout + _GRACE)
            reply = worker.conn.recv() if ready else None
        except (EOFError, OSError, BrokenPipeError):
            reply, ready = None, True
        if reply is None:
            # Overran its time, or died (out of memory): replace it.
            worker.kill()
            held[0] = _Worker(self._ctx, str(self.path), self.settings)
            if not ready:
                raise QueryFailedError(f"the query ran longer than {timeout:g} s and was stopped")
            raise QueryFailedError("the query needed more memory than allowed")
        status, payload = reply
        if status == "ok":
            return payload
        raise QueryFailedError(str(payload))

    def check(self, sql: str, granted: tuple[str, ...]) -> QueryCheck:
        """The guard's two checks (`AnalystDatabase.check`), in a worker, time-limited; each
        query and grant is checked once per release."""
        memo = (tuple(sorted(granted)), sql)
        with self._lock:
            known = self._checks.get(memo)
        if known is not None:
            return known
        try:
            found: QueryCheck = self._call("check", (sql, granted), self.settings.check_timeout)
        except QueryFailedError as exc:
            return QueryCheck(False, (), reason=f"the query cannot be checked: {exc}", rule="check")
        with self._lock:
            if len(self._checks) > 4096:
                self._checks.clear()
            self._checks[memo] = found
        return found

    def run(self, sql: str, *, max_rows: int, timeout: float) -> QueryResult:
        """Run a checked query in a worker: at most `max_rows` rows and the byte limit, stopped
        after `timeout` seconds (killed, if it will not stop)."""
        data, truncated, seconds = self._call("run", (sql, max_rows, timeout), timeout)
        return QueryResult(pa.ipc.open_stream(data).read_all(), truncated, seconds)

    # ------------------------------------------------------------------------- lifetime

    def retire(self) -> None:
        """Stop taking requests once the ones in flight are answered (a new release is live)."""
        with self._lock:
            self._retired = True
            done = self._in_flight == 0
        if done:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break

    def close(self) -> None:
        self._shutdown()
