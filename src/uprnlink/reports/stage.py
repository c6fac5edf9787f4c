"""The report stage: the linkage quality report (de-identified page in the release, engineer
page in the trusted zone)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from uprnlink.errors import PublishError
from uprnlink.ingest.addresses import trusted_records
from uprnlink.linkage.model import COMPARED_COLUMNS
from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.trusted import read_trusted
from uprnlink.publish import releases
from uprnlink.publish.database import read_policy
from uprnlink.reports.quality import build_quality_report
from uprnlink.run_summary import RunSummary
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

log = logging.getLogger("uprnlink")

#: The record columns the report reads: linkage's (the engineer page scores its example pairs
#: with the model), coverage by source and the identifier columns the pages are checked
#: against; not every column of every record (the stage's peak at 4.9M records
#: 5.44 -> 4.25 GiB).
REPORT_COLUMNS = (*COMPARED_COLUMNS, "uprn_in_lookup", "household_token")


def write_quality_report(
    config_path: str, summary: RunSummary, evaluation: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write the linkage quality report: de-identified page in out/, engineer page in work/."""

    settings = read_settings(Path(config_path))
    z = Zones(settings)
    key = load_run_key(settings)
    log.info("writing the linkage quality report ...")
    model_path = z.linkage_dir / "model.json"
    model = json.loads(model_path.read_text()) if model_path.exists() else {}
    records = trusted_records(settings, key, REPORT_COLUMNS).records
    clusters = read_trusted(z.clusters, key)
    # Into the run's staged release when there is one (it goes live with the data), else into
    # the live release (a report rewritten after `uprnlink evaluate`).
    run_id = summary.run.run_id if summary.run else None
    staged = releases.staging_dir(settings.out_dir, run_id) if run_id else None
    target = staged if staged is not None and staged.is_dir() else settings.out_dir
    out_path = target / "quality_report.html"
    engineer_path = z.linkage_dir / "quality_report_engineer.html"
    kwargs: dict[str, Any] = {
        "model": model,
        "records": records,
        "clusters": clusters,
        "run_summary": summary,
        "evaluation": evaluation,
        "min_count": read_policy(settings.policy_path).min_count,
    }
    try:
        build_quality_report(**kwargs, out_path=out_path, engineer_path=engineer_path)
        return {"quality_report": str(out_path), "engineer_report": str(engineer_path)}
    except PublishError:
        raise
    except Exception as exc:  # the engineer page is a convenience; the published page stands
        log.warning("engineer quality page not written: %s", type(exc).__name__)
    build_quality_report(**kwargs, out_path=out_path)
    return {"quality_report": str(out_path)}
