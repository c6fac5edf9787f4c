"""Run history: the summaries each run leaves in `out/runs/`, listed and rendered for people.

Summaries hold counts, checksums, timings and names only, so they can be shown anywhere:
`uprnlink runs` prints them as a table, and the Prefect flow publishes one as a Markdown
artifact on the flow run's page.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from uprnlink.errors import UprnlinkError
from uprnlink.publish import releases
from uprnlink.run_summary import RunSummary


def list_runs(out_dir: Path) -> list[RunSummary]:
    """Every run summary in the output folder, oldest first (run ids sort by start time)."""
    folder = out_dir / "runs"
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "run_id" in data:
                runs.append(RunSummary.from_dict(data))
        except (OSError, ValueError, UprnlinkError):
            continue
    return runs


def _duration(run: RunSummary) -> float | None:
    try:
        start = datetime.fromisoformat(str(run.started_at))
        end = datetime.fromisoformat(str(run.finished_at))
    except ValueError:
        timings = run.timings or {}
        return float(sum(timings.values())) if timings else None
    return (end - start).total_seconds()


def changes_text(run: RunSummary) -> str:
    """'gp_registrations ingested; 5 reused' style summary of what a run re-read."""
    changes = run.changes or {}
    if not changes:
        return "-"
    ingested = [s for s, c in changes.items() if c == "ingested"]
    reused = [s for s, c in changes.items() if c == "reused"]
    skipped = [s for s, c in changes.items() if c == "skipped"]
    parts = []
    if ingested:
        parts.append(
            "all ingested" if len(ingested) == len(changes) else ", ".join(ingested) + " ingested"
        )
    if reused:
        parts.append("all reused" if len(reused) == len(changes) else f"{len(reused)} reused")
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    return "; ".join(parts)


def run_row(run: RunSummary, live: str | None) -> dict[str, str]:
    """One run as display strings."""
    counts = run.counts
    linkage = run.linkage
    seconds = _duration(run)
    status = run.status or "?"
    if status == "failed":
        status = f"failed in {run.failed_stage or '?'}"
    elif status == "held":
        status = "held: " + ", ".join(sorted({h["source"] for h in run.held or ()}))
    if not linkage:
        link = "-"
    elif linkage.get("reused"):
        link = "reused"
    else:
        model = linkage.get("model")  # a summary from any version: read, not assumed
        link = "linked, trained" if model and model.get("trained") else "linked"
    run_id = str(run.id)
    return {
        "run": run_id + (" *" if run_id == live else ""),
        "status": status,
        "started": str(run.started_at or "-").replace("+00:00", "Z"),
        "seconds": f"{seconds:.0f}" if seconds is not None else "-",
        "extracts": changes_text(run),
        "linkage": link,
        "people": f"{counts['people']:,}" if "people" in counts else "-",
        "households": f"{counts['households']:,}" if "households" in counts else "-",
    }


def runs_table(out_dir: Path, limit: int | None = None) -> str:
    """The run history as a fixed-width table; the live release's run is starred."""
    runs = list_runs(out_dir)
    if limit:
        runs = runs[-limit:]
    if not runs:
        return f"no runs recorded in {out_dir / 'runs'}"
    live = releases.current(out_dir)
    rows = [run_row(r, live) for r in runs]
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    right = {"seconds", "people", "households"}

    def fmt(values: dict[str, str]) -> str:
        return "  ".join(
            values[h].rjust(widths[h]) if h in right else values[h].ljust(widths[h])
            for h in headers
        ).rstrip()

    lines = [fmt({h: h for h in headers}), fmt({h: "-" * widths[h] for h in headers})]
    lines += [fmt(r) for r in rows]
    lines.append("* = the live release")
    return "\n".join(lines)


def run_markdown(summary: RunSummary) -> str:
    """A run's summary as Markdown (the Prefect run artifact): counts, quarantines, what was
    re-ingested, linkage figures, key id and timings. No data values."""
    run = summary.run
    lines = [
        f"# uprnlink run `{summary.id}`",
        "",
        f"Key `{run.key_id if run else None}` (epoch {run.epoch if run else None}); "
        f"release `{summary.release['release'] if summary.release else '-'}` is live.",
        "",
        "| source | extract | rows in | accepted | quarantined | top quarantine reason |",
        "|---|---|---:|---:|---:|---|",
    ]
    changes = summary.changes or {}
    for r in summary.ingest or ():
        if r.get("skipped"):
            lines.append(f"| {r['source']} | skipped | | | | |")
            continue
        reasons = r.get("quarantine_reasons") or {}
        top = max(reasons.items(), key=lambda kv: kv[1], default=None)
        lines.append(
            f"| {r['source']} | {changes.get(r['source'], '')} | {r['rows_in']:,} | "
            f"{r['rows_accepted']:,} | {r['rows_quarantined']:,} | "
            f"{f'{top[0]} ({top[1]:,})' if top else ''} |"
        )
    link = summary.linkage
    if link:
        ids = link.get("ids") or {}
        lines += [
            "",
            f"**Linkage** ({'reused from run ' + str(link.get('linked_in_run')) if link.get('reused') else 'linked this run'}): "
            f"{link.get('records', 0):,} records into {link.get('people', 0):,} people; "
            f"{link.get('pairs_above_threshold', 0):,} pairs at or above "
            f"{link.get('match_threshold')}; person ids kept {ids.get('kept', 0):,}, "
            f"created {ids.get('created', 0):,}, merged {ids.get('merged', 0):,}, "
            f"split {ids.get('split', 0):,}.",
        ]
    counts = summary.counts
    if counts:
        lines += [
            "",
            "**Published**: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items())
            + ".",
        ]
    risk = (summary.published.get("disclosure_risk") if summary.published else None) or {}
    if risk.get("people") and risk.get("households"):
        flag = (
            " **Above the policy's limit** for " + " and ".join(risk["above"]) + "."
            if risk.get("above")
            else ""
        )
        lines += [
            "",
            f"**Disclosure risk**: {risk['people']['share']:.1%} of people and "
            f"{risk['households']['share']:.1%} of households are unique on the "
            f"quasi-identifiers analysts see (policy max {risk['max_unique_share']:.1%}).{flag}",
        ]
    retention = summary.retention or {}
    if retention.get("files_past_retention"):
        zones = ", ".join(
            f"{zone} {z['files']:,}" for zone, z in retention.get("by_zone", {}).items()
        )
        verb = "deleted" if retention.get("deleted") else "past retention, not deleted"
        lines += [
            "",
            f"**Retention**: {retention['files_past_retention']:,} files {verb} ({zones}; "
            f"oldest {retention.get('oldest_days')} days).",
        ]
    timings = summary.timings or {}
    if timings:
        lines += [
            "",
            "| stage | seconds |",
            "|---|---:|",
            *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
        ]
    return "\n".join(lines) + "\n"
