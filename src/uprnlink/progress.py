"""Progress of long steps and the console of the command line.

Everything logs through the `uprnlink` logger at INFO (counts and times only, never data), so
a run's log file, the Prefect flow and CI see the same lines. On a terminal the command line
shows the long steps as progress bars instead (`use_console`, rich's live display), with every
other line printed once above them; elsewhere (CI, a pipe, a file) each line is plain text.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

log = logging.getLogger("uprnlink")

PROGRESS = "uprnlink_progress"
"""Set on a log record that a progress bar shows on a terminal (the console skips it there;
the run's log file and plain consoles keep it)."""


class LiveBars:
    """rich progress bars on a terminal, with log lines printed above them."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(file=stream, highlight=False, markup=False, soft_wrap=True)
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        """Print one line above the bars."""
        with self.lock:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def add(self, description: str, total: float | None) -> Any:
        with self.lock:
            if not self.bars.live.is_started:
                self.bars.start()
            return self.bars.add_task(description, total=total)

    def update(self, task: Any, **fields: Any) -> None:
        with self.lock:
            self.bars.update(task, **fields)

    def remove(self, task: Any) -> None:
        with self.lock:
            self.bars.remove_task(task)
            if not self.bars.tasks and self.bars.live.is_started:
                self.bars.stop()


_LIVE: LiveBars | None = None


class ConsoleHandler(logging.Handler):
    """The command line's console: each `uprnlink` log line once, on stderr; a line a progress
    bar is showing is left to the bar."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(logging.INFO)
        self._stream = stream
        self.setFormatter(logging.Formatter("      %(asctime)s  %(message)s", "%H:%M:%S"))

    @property
    def stream(self) -> IO[str]:
        """The stream given, else whatever `sys.stderr` is when a line is written (a handler
        outliving one command, e.g. under a test runner's capture, never writes to a closed
        stream)."""
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            live = _LIVE
            if live is not None and getattr(record, PROGRESS, False):
                return
            text = self.format(record)
            if live is not None:
                live.line(text)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(record)


def console_active() -> bool:
    """Whether the command line prints the `uprnlink` lines itself (so an orchestrator's copy
    of them must stay off the console)."""
    return any(isinstance(h, ConsoleHandler) for h in log.handlers)


def use_console(stream: IO[str] | None = None, *, bars: bool | None = None) -> None:
    """Print the pipeline's lines (counts only, never data) on `stream` (stderr), each once:
    the `uprnlink` logger stops propagating, so no other handler prints them again. `bars`
    (default: when the stream is a terminal and NO_COLOR/TERM=dumb do not say otherwise) shows
    long steps as progress bars."""
    global _LIVE
    given = stream
    stream = stream or sys.stderr
    if bars is None:
        bars = bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get(
            "TERM", ""
        ) not in ("dumb",)
    if bars:
        import importlib.util

        bars = importlib.util.find_spec("rich") is not None  # a dependency; plain lines without
    for handler in [h for h in log.handlers if isinstance(h, ConsoleHandler)]:
        log.removeHandler(handler)
    log.addHandler(ConsoleHandler(given))
    log.setLevel(logging.INFO)
    log.propagate = False
    _LIVE = LiveBars(stream) if bars else None


def stop_console() -> None:
    """Close any progress bars still shown (at the end of a command)."""
    global _LIVE
    live, _LIVE = _LIVE, None
    if live is not None and live.bars.live.is_started:
        live.bars.stop()


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
        self._bar = _LIVE.add(f"{step} ({unit})", total) if _LIVE is not None else None

    @property
    def elapsed(self) -> float:
        """Seconds since the step started."""
        return time.perf_counter() - self.started

    def advance(self, amount: float = 1, note: str = "") -> None:
        """Record `amount` more parts done and log where the step stands."""
        self.done += amount
        finished = self.done >= self.total
        live = _LIVE
        if self._bar is not None and live is not None:
            live.update(
                self._bar,
                completed=self.done,
                description=f"{self.step}" + (f": {note}" if note else f" ({self.unit})"),
            )
            if finished:
                live.remove(self._bar)
                self._bar = None
        log.info(
            "%s: %s/%s %s%s (%s)",
            self.step,
            f"{self.done:,.0f}",
            f"{self.total:,.0f}",
            self.unit,
            f", {note}" if note else "",
            eta_text(self.done, self.total, self.elapsed),
            extra={PROGRESS: not finished},
        )


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Log when a step starts and how long it took."""
    started = time.perf_counter()
    live = _LIVE
    bar = live.add(step, None) if live is not None else None
    log.info("%s ...", step, extra={PROGRESS: True})
    try:
        yield
    finally:
        if bar is not None and live is not None:
            live.remove(bar)
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
                log.info(
                    "%s: running (elapsed %s)",
                    step,
                    _seconds(time.perf_counter() - started),
                    extra={PROGRESS: True},
                )
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
                extra={PROGRESS: True},
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
