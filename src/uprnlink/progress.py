"""Progress lines for long steps: done/total, elapsed and an estimate of the time left.

Everything logs through the `uprnlink` logger at INFO (counts and times only, never data), so
the terminal and the Prefect flow show the same lines.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("uprnlink")

QUERY_POLL_SECONDS = 10.0


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def eta_text(done: float, total: float, elapsed: float) -> str:
    """'elapsed 12 s, about 30 s left' (no estimate before any progress or past the total)."""
    text = f"elapsed {_seconds(elapsed)}"
    if 0 < done < total:
        text += f", about {_seconds(elapsed * (total - done) / done)} left"
    return text


class Progress:
    """Count the parts of a step as they finish and log each with an estimate of the rest."""

    def __init__(self, step: str, total: float, unit: str = "parts") -> None:
        self.step, self.total, self.unit = step, total, unit
        self.done = 0.0
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the step started."""
        return time.perf_counter() - self.started

    def advance(self, amount: float = 1, note: str = "") -> None:
        """Record `amount` more parts done and log where the step stands."""
        self.done += amount
        log.info(
            "%s: %s/%s %s%s (%s)",
            self.step,
            f"{self.done:,.0f}",
            f"{self.total:,.0f}",
            self.unit,
            f", {note}" if note else "",
            eta_text(self.done, self.total, self.elapsed),
        )


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Log when a step starts and how long it took."""
    started = time.perf_counter()
    log.info("%s ...", step)
    yield
    log.info("%s: done in %s", step, _seconds(time.perf_counter() - started))


@contextmanager
def duckdb_progress(con: Any, step: str, every: float = QUERY_POLL_SECONDS) -> Iterator[None]:
    """While the block runs, log the progress DuckDB reports for its current query every
    `every` seconds (a step may run several queries; each restarts the percentage)."""
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    stop = threading.Event()
    started = time.perf_counter()

    def poll() -> None:
        query_started, last = time.perf_counter(), -1.0
        while not stop.wait(every):
            try:
                pct = float(con.query_progress())
            except Exception:  # the connection may be between queries or closing
                continue
            if pct < 0:
                continue
            if pct == 0:  # DuckDB has no estimate for this query (yet): a heartbeat instead
                log.info("%s: running (elapsed %s)", step, _seconds(time.perf_counter() - started))
                continue
            if pct < last:
                query_started = time.perf_counter()
            last = pct
            # DuckDB's percentage is coarse early in a query; estimate only past a tenth.
            query = time.perf_counter() - query_started
            left = f", query about {_seconds(query * (100 - pct) / pct)} left" if pct >= 10 else ""
            log.info(
                "%s: current query %.0f%% done (elapsed %s%s)",
                step,
                pct,
                _seconds(time.perf_counter() - started),
                left,
            )

    # Run the poller in this context, so an orchestrator's run context (Prefect's, which
    # routes the `uprnlink` logger to the run's logs) is seen from the thread too.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(poll,), name=f"progress-{step}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
