"""Running analysts' jobs fairly and out of the way of everyone's tables.

Typed SQL runs as a job (`service.outputs`): a red team found two ways a shared first-come
pool of job threads on the table workers hurt others. Two long jobs of one analyst held every
other user's job until they ended, and a job that ran for seconds only when a condition on the
data held slowed the submitter's own tables, one bit per job before any checker looked.

So jobs run on their own worker processes (`ServiceState.job_pool`: niced, one DuckDB thread
each, never the table workers), and this runner hands them out fairly: at most one running
job per user, the next job going to the waiting user whose job has waited longest.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["FairJobRunner"]

log = logging.getLogger("uprnlink.service")


class FairJobRunner:
    """`threads` runner threads; one running job per user; first come first served among
    users who have none running."""

    def __init__(self, threads: int = 2) -> None:
        self._cv = threading.Condition()
        self._waiting: dict[str, deque[tuple[int, Callable[[], None]]]] = {}
        self._running: set[str] = set()
        self._tickets = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"uprnlink-job-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, user: str, job: Callable[[], None]) -> None:
        """Queue `job` for `user` (it runs when a runner is free and the user has none)."""
        with self._cv:
            if self._closed:
                return
            self._waiting.setdefault(user, deque()).append((next(self._tickets), job))
            self._cv.notify()

    def _next(self) -> tuple[str, Callable[[], None]] | None:
        """The oldest waiting job of a user with none running (under the lock)."""
        eligible = [
            (q[0][0], user) for user, q in self._waiting.items() if user not in self._running
        ]
        if not eligible:
            return None
        _, user = min(eligible)
        queue = self._waiting[user]
        _, job = queue.popleft()
        if not queue:
            del self._waiting[user]
        self._running.add(user)
        return user, job

    def _loop(self) -> None:
        while True:
            with self._cv:
                picked = self._next()
                while picked is None and not self._closed:
                    self._cv.wait()
                    picked = self._next()
                if picked is None:
                    return
            user, job = picked
            try:
                job()
            except Exception as exc:  # a job reports its own failure; never stop the runner
                log.warning("a job runner caught %s", type(exc).__name__)
            finally:
                with self._cv:
                    self._running.discard(user)
                    self._cv.notify_all()

    def close(self) -> None:
        """Stop taking jobs; queued ones stay queued on disk and run at the next start."""
        with self._cv:
            self._closed = True
            self._waiting.clear()
            self._cv.notify_all()
