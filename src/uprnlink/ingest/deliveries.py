"""Delivery checks: a delivery unlike the source's last accepted one is held, not published.

A GP extract delivered with its header and no rows is a valid file; ingested as it is, its
release would go live with every GP-derived figure gone. So after the ingest, each extract's
profile (rows in the file, the share of records without each identifier, the latest start or
end date) is compared with the profile of the last delivery of that source that went live. A
source whose rows fall or rise beyond the policy's share, whose identifiers' null shares jump,
or whose dates stop short is **held**: the run ends with status `held` and the reasons, nothing
is published (the previous release stays live), and `uprnlink run --accept SOURCE` lets that
delivery through (audited). Thresholds are in the governance policy's `[deliveries]` table.

Profiles hold counts, shares and a date only (the latest activity date of a whole extract),
never a record's value. They live in `work/deliveries.json`, outside the trusted zone, so a
full rebuild keeps them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.policy import read_governance_policy
from uprnlink.run_summary import DeliveryChecks, DeliveryProfile
from uprnlink.settings import RunSettings


class DeliveryHeldError(UprnlinkError):
    """A delivery differs from its source's last accepted one beyond the policy: held."""

    exit_code = 10

    def __init__(self, findings: list[Finding]) -> None:
        sources = sorted({f.source for f in findings})
        reasons = "; ".join(f"{f.source}: {f.message}" for f in findings)
        super().__init__(
            f"run held, nothing published (the previous release stays live): {reasons}. "
            "If the delivery is right, run again with "
            + " ".join(f"--accept {s}" for s in sources)
            + " (audited)"
        )
        self.findings = findings


@dataclass(frozen=True)
class DeliveryPolicy:
    """How far a delivery may move from its last accepted one before it is held."""

    max_row_change: float = 0.25  # share of rows, either way
    max_null_share_rise: float = 0.10  # absolute rise in the share of records without an identifier
    max_date_shortfall_days: int = 45  # latest date earlier than the last accepted one's by more
    enabled: bool = True


@dataclass(frozen=True)
class Finding:
    """One reason to hold a source's delivery (names and numbers only)."""

    source: str
    check: str  # rows, null_share:<field>, dates
    message: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return asdict(self)


def read_delivery_policy(policy_path: Path) -> DeliveryPolicy:
    """The `[deliveries]` table of the governance policy (defaults where absent)."""
    section = read_governance_policy(policy_path).deliveries
    return DeliveryPolicy(
        max_row_change=section.max_row_change,
        max_null_share_rise=section.max_null_share_rise,
        max_date_shortfall_days=section.max_date_shortfall_days,
        enabled=section.enabled,
    )


def profile(report: Mapping[str, Any]) -> DeliveryProfile:
    """A delivery's profile from its ingest report."""
    return DeliveryProfile(
        rows=int(report.get("file_rows") or report.get("rows_in") or 0),
        null_shares=dict(report.get("null_shares") or {}),
        latest_date=report.get("latest_date"),
        checksum=report.get("checksum"),
    )


def accepted_path(settings: RunSettings) -> Path:
    """Where the profiles of the last accepted deliveries are kept."""
    return settings.work_dir / "deliveries.json"


def read_accepted(settings: RunSettings) -> dict[str, Any]:
    """Each source's last accepted delivery profile (with the run it went live in)."""
    try:
        data = json.loads(accepted_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def compare(
    source: str, now: DeliveryProfile, before: Mapping[str, Any], policy: DeliveryPolicy
) -> list[Finding]:
    """The reasons to hold a delivery with profile `now` against the accepted `before`."""
    out: list[Finding] = []
    rows, prev = now["rows"], int(before.get("rows") or 0)
    run = before.get("run_id") or "an earlier run"
    if prev > 0:
        change = (rows - prev) / prev
        if abs(change) > policy.max_row_change:
            way = "fell" if change < 0 else "rose"
            out.append(
                Finding(
                    source,
                    "rows",
                    f"rows {way} from {prev:,} to {rows:,} ({change:+.0%}; the policy allows "
                    f"±{policy.max_row_change:.0%}) against the delivery accepted in run {run}",
                )
            )
    if rows == 0:
        return out  # no records: null shares and dates say nothing more
    for name, share in sorted(now["null_shares"].items()):
        old = before.get("null_shares", {}).get(name)
        if old is not None and share - old > policy.max_null_share_rise:
            out.append(
                Finding(
                    source,
                    f"null_share:{name}",
                    f"{name} is missing from {share:.1%} of records, up from {old:.1%} (the "
                    f"policy allows a rise of {policy.max_null_share_rise:.0%})",
                )
            )
    latest, old_latest = now.get("latest_date"), before.get("latest_date")
    if latest and old_latest:
        short = (date.fromisoformat(old_latest) - date.fromisoformat(latest)).days
        if short > policy.max_date_shortfall_days:
            out.append(
                Finding(
                    source,
                    "dates",
                    f"its latest start or end date is {short} days earlier than the last "
                    f"accepted delivery's (the policy allows {policy.max_date_shortfall_days})",
                )
            )
    return out


def check_deliveries(
    settings: RunSettings, reports: Sequence[Mapping[str, Any]], accept: tuple[str, ...] = ()
) -> DeliveryChecks:
    """Compare each delivered extract with its source's last accepted delivery.

    Returns the findings (held and accepted) and each delivery's profile; raises
    `DeliveryHeldError` when a source has findings and is not in `accept`.
    """
    unknown = sorted(set(accept) - set(settings.sources))
    if unknown:
        raise ConfigError(
            f"--accept {unknown[0]}: no such source in {settings.config_path.name} "
            f"(sources: {', '.join(sorted(settings.sources))})"
        )
    policy = read_delivery_policy(settings.policy_path)
    accepted = read_accepted(settings)
    findings: list[Finding] = []
    profiles: dict[str, DeliveryProfile] = {}
    for report in reports:
        if report.get("skipped"):
            continue
        name = report["source"]
        profiles[name] = now = profile(report)
        before = accepted.get(name)
        if policy.enabled and before and before.get("checksum") != now["checksum"]:
            findings += compare(name, now, before, policy)
    held = [f for f in findings if f.source not in accept]
    result = DeliveryChecks(
        policy=asdict(policy),
        findings=[f.to_dict() for f in findings],
        accepted=sorted({f.source for f in findings if f.source in accept}),
        profiles=profiles,
    )
    if held:
        raise DeliveryHeldError(held)
    return result


def record_accepted(
    settings: RunSettings, run_id: str, profiles: Mapping[str, DeliveryProfile]
) -> None:
    """The deliveries of a run that went live become the ones the next run is compared with."""
    accepted = read_accepted(settings)
    for name, prof in profiles.items():
        accepted[name] = {**prof, "run_id": run_id}
    path = accepted_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(accepted, indent=2, sort_keys=True))
    os.replace(tmp, path)
