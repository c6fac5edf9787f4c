"""Prefect flow: council and NHS extracts to a de-identified household-level linked dataset.

Thin by design: each task wraps one call into `uprnlink.pipeline`, passes only the config path
and returns only counts and paths, so no personal data or key material enters Prefect's state.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from uprnlink import pipeline
from uprnlink.runlock import run_lock
from uprnlink.settings import read_settings

# Results hold counts only, but persisting them is still pointless: every stage re-reads its
# inputs from the zones on disk.
TASK_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": None}


@task(name="start-run", **TASK_OPTIONS)
def start_run(config_path: str, run_id: str) -> dict[str, Any]:
    """Check config, contracts and key; audit the start."""
    return pipeline.start_run(config_path, run_id)


@task(name="ingest-reference", retries=2, retry_delay_seconds=5, **TASK_OPTIONS)
def ingest_reference(config_path: str) -> list[dict[str, Any]]:
    """Validate the reference lookups and build the UPRN area table."""
    return pipeline.ingest_reference_data(config_path)


@task(name="ingest-source", retries=2, retry_delay_seconds=5, **TASK_OPTIONS)
def ingest_source(config_path: str, source: str) -> dict[str, Any]:
    """Validate, standardise and pseudonymise one extract."""
    return pipeline.ingest_person_source(config_path, source)


@task(name="clear-trusted-zone", **TASK_OPTIONS)
def clear_trusted(config_path: str) -> None:
    """Remove the trusted zone before a full rebuild."""
    pipeline.clear_trusted_zone(read_settings(Path(config_path)))


@task(name="link-people", **TASK_OPTIONS)
def link_people(config_path: str, run_id: str, retrain: bool) -> dict[str, Any]:
    """Train (or reuse the saved model), predict and cluster people across all sources."""
    return pipeline.link_records(config_path, retrain, run_id=run_id)


@task(name="write-quality-report", **TASK_OPTIONS)
def write_quality_report(config_path: str, summary: dict[str, Any]) -> dict[str, str]:
    """Write the HTML linkage quality report beside the outputs."""
    return pipeline.write_quality_report(config_path, summary)


@task(name="publish-outputs", retries=1, retry_delay_seconds=5, **TASK_OPTIONS)
def publish(config_path: str, run_id: str, summaries: dict[str, Any]) -> dict[str, Any]:
    """Assemble households and publish the Parquet dataset and DuckDB views."""
    return pipeline.publish_outputs(config_path, run_id, summaries)


@task(name="finish-run", **TASK_OPTIONS)
def finish_run(config_path: str, run_id: str, summary: dict[str, Any]) -> str:
    """Write the run summary and audit the end of the run."""
    return str(pipeline.finish_run(config_path, run_id, summary))


@flow(name="household-linkage", log_prints=True)
def household_linkage(
    config_path: str, run_id: str | None = None, rebuild: bool = False, retrain: bool = False
) -> dict[str, Any]:
    """Run the whole pipeline for the configuration file at `config_path`.

    `rebuild` clears the trusted zone first (a full rebuild, as a key rotation requires);
    `retrain` trains a new linkage model even when the saved one fits the settings.
    """
    logger = get_run_logger()
    run_id = run_id or pipeline.new_run_id()
    settings = read_settings(Path(config_path))
    # One run at a time on these folders; a failed run still leaves a summary saying where.
    with run_lock(pipeline.Zones(settings).lock, run_id):
        summary: dict[str, Any] = {}
        timings: dict[str, float] = {}
        stage = "start"
        try:
            if rebuild:
                clear_trusted(config_path)
            t = time.perf_counter()
            summary["run"] = start_run(config_path, run_id)
            logger.info(
                "run %s with key %s (epoch %s)",
                run_id,
                summary["run"]["key_id"],
                summary["run"]["epoch"],
            )
            stage = "ingest"
            summary["reference"] = ingest_reference(config_path)
            futures = [ingest_source.submit(config_path, name) for name in settings.sources]
            summary["ingest"] = [f.result() for f in futures]
            timings["ingest"] = round(time.perf_counter() - t, 2)

            stage, t = "link", time.perf_counter()
            summary["linkage"] = link_people(config_path, run_id, retrain)
            timings["link"] = round(time.perf_counter() - t, 2)

            stage, t = "publish", time.perf_counter()
            summary["published"] = publish(config_path, run_id, summary)
            timings["publish"] = round(time.perf_counter() - t, 2)
            stage, t = "report", time.perf_counter()
            summary["reports"] = write_quality_report(config_path, summary)
            timings["report"] = round(time.perf_counter() - t, 2)
            summary["timings"] = timings
            stage = "finish"
            summary["summary_path"] = finish_run(config_path, run_id, summary)
        except Exception as exc:
            pipeline.record_failure(
                config_path, run_id, stage, exc, {**summary, "timings": timings}
            )
            logger.error(
                "run %s failed in stage %s: %s", run_id, stage, pipeline.failure_reason(exc)
            )
            raise
    counts = summary["published"]["metadata"]["counts"]
    logger.info(
        "published %s people in %s households to %s",
        counts["people"],
        counts["households"],
        summary["published"]["linked_dir"],
    )
    return summary
