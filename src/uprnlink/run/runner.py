"""The runner: the stages of a run in order, written once, under the run lock.

Each stage reads its inputs from the zones on disk and writes its outputs back, returning only
a small summary of counts and paths (never data values), so an orchestrator can call them as
tasks and record their results safely. The key is unlocked once per process
(`privacy.keys.load_run_key`) and never passed between stages.

The stage functions live with their zones (`ingest.stage`, `linkage.stage`, `publish.stage`,
`reports.stage`); only this module calls them, and orchestrators reach them through it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from uprnlink import __version__
from uprnlink.errors import ContractError, UprnlinkError
from uprnlink.governance.audit import actor, head_of, open_audit_log
from uprnlink.governance.retention import enforce_retention
from uprnlink.ingest.contracts import check_contract_table, find_contract
from uprnlink.ingest.deliveries import DeliveryHeldError, check_deliveries, record_accepted
from uprnlink.ingest.readers import estimated_rows
from uprnlink.ingest.stage import (
    check_distinct_deliveries,
    ingest_person_source,
    ingest_reference_data,
    not_supplied,
)
from uprnlink.linkage.stage import link_stage
from uprnlink.privacy.keys import check_keys_present, load_release_key, load_run_key
from uprnlink.privacy.trusted import clear_trusted_zone
from uprnlink.progress import Progress
from uprnlink.publish import releases
from uprnlink.publish.stage import keep_releases, publish_outputs, switch_release
from uprnlink.reports.stage import write_quality_report
from uprnlink.run.lock import run_lock
from uprnlink.run_summary import (
    DeliveryChecks,
    LinkSummary,
    PublishedRelease,
    ReleaseSwitch,
    RunStart,
    RunSummary,
    SourceReport,
)
from uprnlink.settings import RunSettings, read_settings
from uprnlink.zones import Zones

__all__ = [
    "LOCAL_STEPS",
    "STAGES",
    "IngestProgress",
    "Steps",
    "execute",
    "failure_reason",
    "finish_run",
    "ingest_in_order",
    "ingest_person_source",
    "ingest_reference_data",
    "link_stage",
    "new_run_id",
    "publish_outputs",
    "record_failure",
    "run_all",
    "run_log_file",
    "run_log_path",
    "source_changes",
    "start_run",
    "switch_release",
    "write_quality_report",
]

log = logging.getLogger("uprnlink")
#: Lines for the run's log file only (the console has them already, or the error line).
run_log = logging.getLogger("uprnlink.run_log")
run_log.propagate = False
RUN_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def run_log_path(settings: RunSettings, run_id: str) -> Path:
    """Where a run's log is kept: beside its summary, `out/runs/<run_id>.log`."""
    return Zones(settings).runs / f"{run_id}.log"


@contextmanager
def run_log_file(path: Path) -> Iterator[Path]:
    """Keep every line the `uprnlink` logger writes during a run (stages, counts, warnings,
    how it ended) in `path`. The pipeline logs counts, names and times only, never a data
    value (`tests/test_end_to_end.py` and the first-day walkthrough scan the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(RUN_LOG_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    library = logging.getLogger("uprnlink")
    level = library.level
    if library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)
    run_log.setLevel(logging.INFO)
    library.addHandler(handler)
    run_log.addHandler(handler)
    try:
        yield path
    finally:
        library.removeHandler(handler)
        run_log.removeHandler(handler)
        library.setLevel(level)
        handler.close()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as 20261123T101500Z-3f9a."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def start_run(config_path: str, run_id: str) -> RunStart:
    """Check the configuration, contracts and key before any data is read; audit the start."""
    settings = read_settings(Path(config_path))
    tables = [("sources", settings.sources), ("reference", settings.reference)]
    for table, name, source in [(t, n, s) for t, group in tables for n, s in group.items()]:
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        check_contract_table(table, name, source.path, contract)
        if source.required and not source.path.exists():
            raise ContractError(
                f"source {name!r} is configured but its extract is missing",
                file=str(source.path),
                rule="file_missing",
            )
    check_distinct_deliveries(settings)
    keep_releases(settings)  # a malformed [retention] policy fails here, before any data is read
    check_keys_present(settings)  # every missing key named at once, with its command
    key = load_run_key(settings)
    release_key = load_release_key(settings)
    audit = open_audit_log(settings)
    audit.append(
        "key.loaded",
        actor=actor(),
        data={"run_id": run_id, "key_id": key.key_id, "release_key_id": release_key.key_id},
    )
    audit.append(
        "run.started",
        actor=actor(),
        data={
            "run_id": run_id,
            "config": settings.config_path.name,
            "version": __version__,
            "key_id": key.key_id,
        },
    )
    return RunStart(run_id=run_id, key_id=key.key_id, epoch=key.epoch, name=settings.name)


def finish_run(
    config_path: str, run_id: str, summary: RunSummary, status: str = "completed"
) -> RunSummary:
    """Write the run summary (counts and timings only) and audit the end of the run; returns
    the summary as `execute` returns it (with its retention record and where it was written)."""
    settings = read_settings(Path(config_path))
    z = Zones(settings)
    z.runs.mkdir(parents=True, exist_ok=True)
    path = z.runs / f"{run_id}.json"
    if status == "completed":
        summary = replace(summary, retention=enforce_retention(settings, run_id))
    audit = open_audit_log(settings)
    ingest = [r for r in summary.ingest or () if not r.get("skipped")]
    finished = audit.append(
        "run.finished",
        actor=actor(),
        data={
            "run_id": run_id,
            "status": status,
            "inputs": {r["source"]: r["checksum"] for r in ingest},
            "rows_in": {r["source"]: r["rows_in"] for r in ingest},
            "rows_quarantined": {r["source"]: r["rows_quarantined"] for r in ingest},
            "contracts": {r["source"]: r["contract"] for r in ingest},
            "changes": summary.changes or {},
            **(
                {"failed_stage": summary.failed_stage, "error": summary.error}
                if status in ("failed", "held")
                else {}
            ),
        },
    )
    # The summary records the log's head: an audit log later cut short or emptied no longer
    # holds it, and `uprnlink audit verify` says so.
    path.write_text(
        json.dumps(
            {
                "run_id": run_id,
                "status": status,
                **summary.to_dict(),
                "audit_head": head_of(finished),
            },
            indent=2,
            default=str,
        )
    )
    # Seal what the run wrote and witness the head now, rather than leave it to the next
    # writer: a pipeline host taken over later can rewrite nothing of this run.
    audit.seal_now()
    return replace(summary, summary_path=str(path))


@dataclass(frozen=True)
class Steps:
    """The stage callables a run is made of, in the order `execute` calls them.

    `LOCAL_STEPS` calls the stage functions directly; the Prefect flow passes task-wrapped ones
    (and ingests the sources concurrently), so the stage order is written once, here.
    """

    clear_trusted: Callable[[str], None]
    start: Callable[[str, str], RunStart]
    ingest_reference: Callable[[str, str], list[SourceReport]]
    ingest_sources: Callable[[str, list[str], str], list[SourceReport]]
    link: Callable[[str, str, bool], LinkSummary]
    publish: Callable[[str, str, RunSummary], PublishedRelease]
    report: Callable[[str, RunSummary], dict[str, str]]
    switch: Callable[[str, str, RunSummary], ReleaseSwitch]
    finish: Callable[[str, str, RunSummary], RunSummary]


#: Most extracts ingested at once (never more than `[linkage] threads`). One extract's
#: parsing and rules keep about 1.5 of two cores busy (polars runs each expression in
#: parallel, but not every step is); a second extract fills the rest. More would add memory
#: (each extract is held whole) more than speed. The Prefect flow runs every extract as its
#: own task the same way.
INGEST_WORKERS = 2


def ingest_extracts(config_path: str, names: list[str], run_id: str) -> list[SourceReport]:
    """The sources' ingest (`ingest_in_order`), the largest extracts first, at most
    `INGEST_WORKERS` and `[linkage] threads` at a time."""
    settings = read_settings(Path(config_path))
    sizes = {name: estimated_rows(source) for name, source in settings.sources.items()}
    return ingest_in_order(
        names,
        lambda n: ingest_person_source(config_path, n, run_id),
        sizes,
        workers=min(INGEST_WORKERS, settings.linkage.threads),
    )


def ingest_in_order(
    names: list[str],
    ingest: Callable[[str], SourceReport],
    sizes: dict[str, int] | None = None,
    workers: int | None = None,
) -> list[SourceReport]:
    """Each source's ingest, `workers` (default `INGEST_WORKERS`) at a time and the largest
    extracts (`sizes`, rows) first so that no large one runs alone at the end, with a progress
    bar of extracts done and rows read; the reports come back in the order of `names`.

    Once one extract fails (or the run is interrupted) no other is started; those already
    running finish, and the first failure is raised.
    """
    progress = IngestProgress(len(names))
    ordered = sorted(names, key=lambda n: -(sizes or {}).get(n, 0))
    stop = threading.Event()

    def run(name: str) -> SourceReport | None:
        if stop.is_set():
            return None
        try:
            return ingest(name)
        except BaseException:
            stop.set()
            raise

    reports: dict[str, SourceReport] = {}
    at_once = workers or INGEST_WORKERS
    with ThreadPoolExecutor(at_once, thread_name_prefix="uprnlink-ingest") as pool:
        futures = {pool.submit(run, name): name for name in ordered}
        try:
            for future in as_completed(futures):
                report = None if future.exception() else future.result()
                if report is not None:
                    reports[futures[future]] = progress.done(report)
        except BaseException:
            stop.set()
            raise
    for future in futures:  # in the order started: the first to fail
        failure = future.exception()
        if failure is not None:
            raise failure
    return [reports[name] for name in names]


class IngestProgress:
    """Extracts ingested and rows read so far (a bar on a terminal, lines elsewhere)."""

    def __init__(self, extracts: int) -> None:
        self.progress = Progress("ingest", extracts, "extracts")
        self.rows = 0

    def done(self, report: SourceReport) -> SourceReport:
        """Count one extract's report (rows read, or reused/skipped); returns the report."""
        how = "reused" if report.get("reused") else "skipped" if report.get("skipped") else "read"
        if how == "read":
            self.rows += int(report.get("file_rows") or report.get("rows_in") or 0)
        self.progress.advance(note=f"{report['source']} {how}; {self.rows:,} rows read")
        return report


#: The stages a run reports (and a failure names), in order.
STAGES = ("start", "ingest", "link", "publish", "report", "switch", "finish")


LOCAL_STEPS = Steps(
    clear_trusted=lambda config: clear_trusted_zone(read_settings(Path(config))),
    start=lambda config, run_id: start_run(config, run_id),
    ingest_reference=lambda config, run_id: ingest_reference_data(config, run_id),
    ingest_sources=ingest_extracts,
    link=lambda config, run_id, retrain: link_stage(config, run_id, retrain),
    publish=lambda config, run_id, summary: publish_outputs(config, run_id, summary),
    report=lambda config, summary: write_quality_report(config, summary),
    switch=lambda config, run_id, summary: switch_release(config, run_id, summary),
    finish=lambda config, run_id, summary: finish_run(config, run_id, summary),
)


def source_changes(ingest: Sequence[SourceReport]) -> dict[str, str]:
    """Per source: `ingested` (new or changed extract), `reused` (unchanged) or `skipped`."""
    out = {}
    for r in ingest:
        if r.get("skipped"):
            out[r["source"]] = "skipped"
        else:
            out[r["source"]] = "reused" if r.get("reused") else "ingested"
    return out


def execute(
    config_path: str,
    steps: Steps = LOCAL_STEPS,
    run_id: str | None = None,
    *,
    rebuild: bool = False,
    retrain: bool = False,
    accept: tuple[str, ...] = (),
) -> RunSummary:
    """Run every stage in order under the run lock; a failure leaves a summary naming the stage.

    Nothing is published until the `switch` stage, so a run that fails or is killed earlier
    leaves the previous release live, and the next run starts cleanly without manual clean-up.
    After the ingest, each delivery is checked against its source's last accepted one
    (`uprnlink.ingest.deliveries`): a delivery out of line holds the run (status `held`)
    unless its source is in `accept`, and each acceptance is audited.
    """
    run_id = run_id or new_run_id()
    settings = read_settings(Path(config_path))
    timings: dict[str, float] = {}
    summary = RunSummary(started_at=_now(), rebuild=rebuild)
    stage = "start"
    t = time.perf_counter()

    def begin(name: str) -> None:
        nonlocal stage, t
        if stage != name:
            timings[stage] = round(time.perf_counter() - t, 2)
        stage, t = name, time.perf_counter()
        log.info("stage %d/%d: %s", STAGES.index(name) + 1, len(STAGES), name)

    with run_lock(Zones(settings).lock, run_id), run_log_file(run_log_path(settings, run_id)):
        run_log.info(
            "run %s of %s (uprnlink %s) started", run_id, settings.config_path.name, __version__
        )
        try:
            begin("start")
            if rebuild:
                steps.clear_trusted(config_path)
            summary = replace(summary, run=steps.start(config_path, run_id))
            begin("ingest")
            reference = steps.ingest_reference(config_path, run_id)
            ingest = steps.ingest_sources(config_path, list(settings.sources), run_id)
            summary = replace(
                summary,
                reference=tuple(reference),
                ingest=tuple(ingest),
                changes=source_changes(ingest),
                not_supplied=not_supplied(settings, ingest),
            )
            deliveries = check_deliveries(settings, ingest, accept)  # a held run stops here
            summary = replace(summary, deliveries=deliveries)
            audit_acceptances(settings, run_id, accept, deliveries)
            begin("link")
            summary = replace(summary, linkage=steps.link(config_path, run_id, retrain))
            begin("publish")
            summary = replace(summary, published=steps.publish(config_path, run_id, summary))
            begin("report")
            summary = replace(summary, reports=steps.report(config_path, summary))
            begin("switch")
            summary = replace(summary, release=steps.switch(config_path, run_id, summary))
            summary = replace(summary, reports=live_report_paths(settings.out_dir, summary.reports))
            record_accepted(settings, run_id, deliveries["profiles"])
            begin("finish")
            summary = replace(summary, timings=timings, finished_at=_now())
            summary = steps.finish(config_path, run_id, summary)
        except BaseException as exc:
            timings[stage] = round(time.perf_counter() - t, 2)
            failed = replace(summary, timings=timings, finished_at=_now())
            record_failure(config_path, run_id, stage, exc, failed)
            how = "held" if isinstance(exc, DeliveryHeldError) else f"failed in stage {stage}"
            run_log.error("run %s %s: %s", run_id, how, failure_reason(exc))
            raise
        run_log.info("run %s completed", run_id)
    return summary


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def live_report_paths(out_dir: Path, reports: dict[str, str] | None) -> dict[str, str]:
    """The reports' paths once the release is live: the staging folder they were written to
    is renamed by the switch, so the published report is named by its stable link."""
    staged = f"{releases.STAGING_PREFIX}"
    return {
        name: str(out_dir / Path(path).name) if staged in path else path
        for name, path in (reports or {}).items()
    }


def run_all(
    config_path: str,
    run_id: str | None = None,
    *,
    rebuild: bool = False,
    retrain: bool = False,
    accept: tuple[str, ...] = (),
) -> RunSummary:
    """Run every stage in order without an orchestrator (tests, notebooks, other schedulers)."""
    return execute(
        config_path, LOCAL_STEPS, run_id, rebuild=rebuild, retrain=retrain, accept=accept
    )


def audit_acceptances(
    settings: RunSettings, run_id: str, accept: tuple[str, ...], deliveries: DeliveryChecks
) -> None:
    """Record each `--accept SOURCE` in the audit log: who let which delivery through, and
    what it would otherwise have been held for (nothing, if it passed the checks anyway)."""
    if not accept:
        return
    audit = open_audit_log(settings)
    for source in sorted(set(accept)):
        reasons = [f for f in deliveries["findings"] if f["source"] == source]
        delivered = deliveries["profiles"].get(source)
        audit.append(
            "delivery.accepted",
            actor=actor(),
            data={
                "run_id": run_id,
                "source": source,
                "checksum": delivered["checksum"] if delivered else None,
                "held_for": [f["check"] for f in reasons],
                "reasons": [f["message"] for f in reasons],
            },
        )


def failure_reason(exc: BaseException) -> str:
    """A failure's message fit for logs and summaries: uprnlink errors carry no data values;
    anything else is reported by type only, as its text may quote data."""
    return str(exc) if isinstance(exc, UprnlinkError) else type(exc).__name__


def record_failure(
    config_path: str, run_id: str, stage: str, exc: BaseException, summary: RunSummary
) -> None:
    """Write a failed run's summary (which stage, why, what was kept) without masking the error."""
    settings = read_settings(Path(config_path))
    live = releases.current(settings.out_dir)
    held = isinstance(exc, DeliveryHeldError)
    summary = replace(
        summary,
        failed_stage=stage,
        error=failure_reason(exc),
        held=tuple(f.to_dict() for f in exc.findings)
        if isinstance(exc, DeliveryHeldError)
        else None,
        published_output=(
            f"unchanged: release {live} is still the live one"
            if live and live != run_id
            else ("this run's release went live before the failure" if live else "none yet")
        ),
        kept="the trusted zone keeps every source ingested before the failure; the next run "
        "reuses them and needs no clean-up",
    )
    try:
        finish_run(config_path, run_id, summary, status="held" if held else "failed")
    except Exception as inner:  # the key or folders may be the very thing that failed
        log.warning("could not record the failed run: %s", type(inner).__name__)
