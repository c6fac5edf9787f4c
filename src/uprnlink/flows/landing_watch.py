"""Prefect flow: watch the landing folder and run the pipeline once a complete set has arrived.

Scheduled hourly by the `landing-watch` deployment in `prefect.yaml`. Each check is cheap: it
reads file sizes, times and checksums, never the data. It triggers a run only when every
required extract is present, none was modified in the last `settle_seconds` (still being
copied in), and at least one differs from what was last ingested. The run it starts is
incremental: only the new extracts are ingested.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from uprnlink.run.landing import status_for_config, status_table


@flow(name="landing-watch", log_prints=True)
def landing_watch(
    config_path: str, settle_seconds: float = 300.0, deployment: str | None = None
) -> dict[str, Any]:
    """Check the landing folder for `config_path`; trigger the household-linkage run when a
    complete, settled set with something new has arrived.

    With `deployment` (for example "household-linkage/monthly") the run is started through that
    deployment, so it runs on its work pool with its own logs; without, it runs here as a
    subflow.
    """
    logger = get_run_logger()
    status = status_for_config(config_path, settle_seconds)
    logger.info("landing folder:\n%s", status_table(status))
    result: dict[str, Any] = {**status.to_dict(), "triggered": None}
    if not status.ready:
        return result
    if deployment:
        from prefect.deployments import run_deployment

        flow_run: Any = run_deployment(  # a FlowRun when called from a sync flow
            deployment, parameters={"config_path": config_path}, timeout=0, as_subflow=True
        )
        result["triggered"] = str(flow_run.id)
        logger.info("started %s (flow run %s)", deployment, flow_run.id)
    else:
        from uprnlink.flows.household_linkage import household_linkage

        summary = household_linkage(config_path)
        result["triggered"] = summary.id
    return result
