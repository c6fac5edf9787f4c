"""Prefect flow: council and NHS extracts to a de-identified household-level linked dataset.

Thin by design: each task wraps one stage of `uprnlink.run.runner`, passes only the config path
and returns only counts and paths, so no personal data or key material enters Prefect's state.
The stage order lives once, in `uprnlink.run.runner.execute`; this module supplies the stages as
Prefect tasks (the extracts are ingested concurrently) and publishes a run artifact.

Run it once from a shell with `python -m uprnlink.flows.household_linkage --config FILE`, or
schedule it with the deployments in `prefect.yaml` (`make serve`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from uprnlink.errors import UprnlinkError
from uprnlink.ingest.deliveries import DeliveryHeldError
from uprnlink.progress import console_active
from uprnlink.run import runner
from uprnlink.run.history import run_markdown
from uprnlink.run_summary import (
    LinkSummary,
    PublishedRelease,
    ReleaseSwitch,
    RunStart,
    RunSummary,
    SourceReport,
)

# Results hold counts only, but persisting them is still pointless: every stage re-reads its
# inputs from the zones on disk.
TASK_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": None}


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass on a second try (file system and network hiccups); a broken
    contract or a wrong key fails the same way every time."""
    try:
        state.result()
    except (OSError, TimeoutError) as exc:
        return not isinstance(exc, FileNotFoundError | PermissionError)
    except Exception:
        return False
    return False


IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [5, 30],
    "retry_condition_fn": transient,
}


class HandledErrors(logging.Filter):
    """Prefect's engine logs a failed task and flow with a traceback, and then their final
    state quoting the exception's text. A traceback, or a polars or DuckDB message, can quote
    data values; the flow logs one line of its own for every failure (`run ID failed: ...`:
    uprnlink's message, which names file, column, row and rule, or only the type of anything
    else). So the engine's records of an exception are dropped, whatever the exception is.
    With UPRNLINK_DEBUG=1 they are kept, traceback and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("UPRNLINK_DEBUG"):
            return True
        if record.exc_info:
            return False
        if record.levelno >= logging.ERROR and isinstance(record.msg, str):
            text = record.msg.lstrip()
            return not text.startswith(("Finished in state", "Encountered exception"))
        return True


class CommandLineConsole(logging.Filter):
    """When `uprnlink run` prints the run's lines itself (uprnlink.progress.use_console),
    Prefect's copies of the flow's and tasks' records stay off the console: they still reach
    the Prefect API and UI, and the console shows each message once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("UPRNLINK_DEBUG") or not console_active():
            return True
        return not record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    if not any(isinstance(f, HandledErrors) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(HandledErrors())


def quiet_console() -> None:
    """Put `CommandLineConsole` on Prefect's console handlers (set up when Prefect is imported)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, CommandLineConsole) for f in handler.filters
        ):
            handler.addFilter(CommandLineConsole())


quiet_console()


@task(name="clear-trusted-zone", **TASK_OPTIONS)
def clear_trusted(config_path: str) -> None:
    """Remove the trusted zone before a full rebuild."""
    runner.LOCAL_STEPS.clear_trusted(config_path)


@task(name="start-run", **TASK_OPTIONS)
def start_run(config_path: str, run_id: str) -> RunStart:
    """Check config, contracts and key; audit the start."""
    return runner.start_run(config_path, run_id)


@task(name="ingest-reference", **IO_RETRIES, **TASK_OPTIONS)
def ingest_reference(config_path: str, run_id: str) -> list[SourceReport]:
    """Validate the reference lookups and build the UPRN area table (reused when unchanged)."""
    return runner.ingest_reference_data(config_path, run_id)


@task(name="ingest-source", task_run_name="ingest-{source}", **IO_RETRIES, **TASK_OPTIONS)
def ingest_source(config_path: str, source: str, run_id: str) -> SourceReport:
    """Validate, standardise and pseudonymise one extract (reused when its checksum is unchanged)."""
    return runner.ingest_person_source(config_path, source, run_id)


def ingest_sources(config_path: str, names: list[str], run_id: str) -> list[SourceReport]:
    """All sources at once: each extract is an independent task."""
    futures = [ingest_source.submit(config_path, name, run_id) for name in names]
    progress = runner.IngestProgress(len(names))
    return [progress.done(f.result()) for f in futures]


@task(name="link-people", **TASK_OPTIONS)
def link_people(config_path: str, run_id: str, retrain: bool) -> LinkSummary:
    """Train (or reuse the saved model), predict and cluster people across all sources."""
    return runner.link_stage(config_path, run_id, retrain)


@task(name="stage-publication", **IO_RETRIES, **TASK_OPTIONS)
def publish(config_path: str, run_id: str, summary: RunSummary) -> PublishedRelease:
    """Assemble households and write the Parquet dataset and DuckDB views to a staged release."""
    return runner.publish_outputs(config_path, run_id, summary)


@task(name="write-quality-report", **TASK_OPTIONS)
def write_quality_report(config_path: str, summary: RunSummary) -> dict[str, str]:
    """Write the HTML linkage quality report into the staged release."""
    return runner.write_quality_report(config_path, summary)


@task(name="switch-release", **IO_RETRIES, **TASK_OPTIONS)
def switch_release(config_path: str, run_id: str, summary: RunSummary) -> ReleaseSwitch:
    """Make the staged release live in one atomic step."""
    return runner.switch_release(config_path, run_id, summary)


@task(name="finish-run", **TASK_OPTIONS)
def finish_run(config_path: str, run_id: str, summary: RunSummary) -> RunSummary:
    """Write the run summary and audit the end of the run."""
    return runner.finish_run(config_path, run_id, summary)


PREFECT_STEPS = runner.Steps(
    clear_trusted=clear_trusted,
    start=start_run,
    ingest_reference=ingest_reference,
    ingest_sources=ingest_sources,
    link=link_people,
    publish=publish,
    report=write_quality_report,
    switch=switch_release,
    finish=finish_run,
)


class _ForwardToPrefect(logging.Handler):
    """Send the library's progress lines (the `uprnlink` logger) to the flow run's log."""

    def __init__(self, target: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, "%s", record.getMessage())


@flow(name="household-linkage", log_prints=True)
def household_linkage(
    config_path: str,
    run_id: str | None = None,
    rebuild: bool = False,
    retrain: bool = False,
    accept: list[str] | None = None,
) -> RunSummary:
    """Run the whole pipeline for the configuration file at `config_path`.

    Unchanged extracts are recognised by checksum and reused; `rebuild` clears the trusted zone
    first (a full rebuild, as a key rotation requires); `retrain` trains a new linkage model
    even when the saved one fits the settings; `accept` lets the named sources' deliveries
    through the delivery checks (audited).
    """
    logger = get_run_logger()
    quiet_console()
    run_id = run_id or runner.new_run_id()
    library = logging.getLogger("uprnlink")
    handler = _ForwardToPrefect(logger)
    library.addHandler(handler)
    level, propagate = library.level, library.propagate
    if library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)
    # The flow run's logger prints each line to the console already; propagating as well
    # would print it twice.
    library.propagate = False
    try:
        summary = runner.execute(
            config_path,
            PREFECT_STEPS,
            run_id,
            rebuild=rebuild,
            retrain=retrain,
            accept=tuple(accept or ()),
        )
    except Exception as exc:
        how = "held" if isinstance(exc, DeliveryHeldError) else "failed"
        logger.error("run %s %s: %s", run_id, how, runner.failure_reason(exc))
        raise
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
        library.propagate = propagate
    publish_artifacts(summary)
    counts = summary.counts
    logger.info(
        "published %s people in %s households (release %s)",
        counts["people"],
        counts["households"],
        summary.release["release"] if summary.release else None,
    )
    return summary


def publish_artifacts(summary: RunSummary) -> None:
    """A Markdown summary of the run (counts, quarantines, linkage, key id, timings) and a link
    to its quality report, shown on the flow run's page in the Prefect UI."""
    run_id = summary.id
    create_markdown_artifact(
        key="household-linkage-summary",
        markdown=run_markdown(summary),
        description=f"uprnlink run {run_id}",
    )
    report = (summary.reports or {}).get("quality_report")
    if report and summary.published:
        live = Path(summary.published["linked_dir"]).parent / "quality_report.html"
        create_link_artifact(
            key="linkage-quality-report",
            link=live.resolve().as_uri(),
            link_text=f"Linkage quality report (run {run_id})",
        )


def main(argv: list[str] | None = None) -> int:
    """Run the flow once from a shell (outside a deployment)."""
    parser = argparse.ArgumentParser(description=household_linkage.description)
    parser.add_argument("--config", required=True, help="run configuration TOML file")
    parser.add_argument("--rebuild", action="store_true", help="clear the trusted zone first")
    parser.add_argument("--retrain", action="store_true", help="train a new linkage model")
    parser.add_argument(
        "--accept", action="append", default=[], metavar="SOURCE", help="accept a held delivery"
    )
    args = parser.parse_args(argv)
    try:
        household_linkage(
            args.config, rebuild=args.rebuild, retrain=args.retrain, accept=args.accept
        )
    except Exception as exc:
        return exc.exit_code if isinstance(exc, UprnlinkError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
