"""The query service's timer: counted failures written, the log sealed and witnessed on time.

A daemon thread wakes every `tick` seconds and (1) writes every closed window of refused
requests (`FailureCounter.flush`), (2) lets the audit log seal itself if the epoch is due and
witness its head if it moved (`AuditLog.maintain`). `stop` does all three at once whatever
the time: the last window is written, everything is sealed and the head witnessed, so a
service stopped (or a host taken over after it stopped) leaves no unsealed window.
"""

from __future__ import annotations

import logging
import threading

from uprnlink.errors import AuditError
from uprnlink.governance.audit import AuditLog
from uprnlink.service.failures import FailureCounter

__all__ = ["Upkeep"]

log = logging.getLogger("uprnlink.service")


class Upkeep:
    """Runs `run_once` on a timer in a daemon thread until `stop`."""

    def __init__(self, audit: AuditLog, failures: FailureCounter, *, tick: float = 1.0) -> None:
        self.audit = audit
        self.failures = failures
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        """One round: write closed failure windows, seal if due, witness if the head moved."""
        try:
            self.failures.flush()
        except AuditError as exc:
            log.error("refused requests could not be written to the audit log yet: %s", exc)
        try:
            self.audit.maintain()
        except AuditError as exc:
            log.error("the audit log could not be sealed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            self.run_once()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="uprnlink-upkeep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the timer, then write every count, seal and witness (errors are raised)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.failures.flush(everything=True)
        self.audit.seal_now()
