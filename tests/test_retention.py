"""Retention: the policy's periods are read strictly, files past them are found per zone (the
reference look-ups exempt), deleted only when asked, and the deletion is audited."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from uprnlink import cli
from uprnlink.errors import ConfigError
from uprnlink.governance.audit import verify_audit_log
from uprnlink.governance.report import render_audit_report
from uprnlink.governance.retention import (
    RetentionPolicy,
    apply_retention,
    enforce_retention,
    find_expired,
    read_retention,
)
from uprnlink.privacy.keys import create_demo_keys, load_audit_key
from uprnlink.run_summary import RunSummary
from uprnlink.settings import PROJECT_ROOT, read_settings
from uprnlink.zones import Zones

DAY = 86_400
NOW = time.time()


def _policy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return path


def test_the_governance_policy_reads():
    policy = read_retention(PROJECT_ROOT / "governance" / "policy.toml")
    assert policy == RetentionPolicy(90, 90, 365, 3, "report")


def test_missing_section_takes_the_defaults(tmp_path):
    assert read_retention(_policy(tmp_path, "[disclosure]\nmin_count = 10\n")) == (
        RetentionPolicy()
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("landing_days = 0", "landing_days must be a whole number >= 1"),
        ("trusted_days = -5", "trusted_days must be a whole number >= 1"),
        ("quarantine_days = 1.5", "quarantine_days must be a whole number"),
        ("published_releases = true", "published_releases must be a whole number"),
        ("enforce = 'always'", "enforce must be one of report, delete"),
        ("landing_dayz = 90", r"\[retention\] landing_dayz: unknown setting"),
    ],
)
def test_bad_retention_policy_is_refused(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        read_retention(_policy(tmp_path, f"[retention]\n{body}\n"))


def test_unreadable_policy_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_retention(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_retention(_policy(tmp_path, "[retention\n"))


def _touch(path: Path, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    then = NOW - age_days * DAY
    os.utime(path, (then, then))
    return path


@pytest.fixture
def tree(tmp_path):
    """The demo configuration over an empty tree with files of known ages in every zone."""
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "demo.toml"
    shutil.copy(PROJECT_ROOT / "config" / "demo.toml", config)
    settings = read_settings(config)
    landing, work = settings.landing_dir, settings.work_dir
    files = {
        "old_extract": _touch(landing / "gp_registrations.csv", 120),
        "new_extract": _touch(landing / "council_tax.csv", 3),
        "old_unknown": _touch(landing / "archive" / "2025-06" / "gp_registrations.csv", 400),
        "old_reference": _touch(landing / "reference" / "uprn_lookup.csv", 900),
        "old_quarantine": _touch(work / "quarantine" / "benefits_claims.parquet", 95),
        "new_quarantine": _touch(work / "quarantine" / "council_tax.parquet", 80),
        "old_trusted": _touch(work / "trusted" / "records" / "benefits_claims.parquet", 370),
        "new_trusted": _touch(work / "trusted" / "linkage" / "model.json", 300),
    }
    return config, settings, files


def test_find_expired_per_zone(tree):
    _, settings, files = tree
    expired = find_expired(settings, RetentionPolicy(), now=NOW)
    found = {(e.zone, e.relative) for e in expired}
    assert found == {
        ("landing", "gp_registrations.csv"),
        ("landing", "archive/2025-06/gp_registrations.csv"),
        ("quarantine", "benefits_claims.parquet"),
        ("trusted", "records/benefits_claims.parquet"),
    }
    assert [round(e.age_days) for e in expired] == [400, 370, 120, 95]  # oldest first
    assert all(e.size == 10 for e in expired)
    # Shorter periods catch more; the reference look-ups are never caught.
    short = find_expired(settings, RetentionPolicy(1, 1, 1), now=NOW)
    assert len(short) == 7
    assert files["old_reference"] not in {e.path for e in short}


def test_apply_deletes_exactly_the_expired_files(tree):
    _, settings, files = tree
    expired = find_expired(settings, RetentionPolicy(), now=NOW)
    deleted = apply_retention(expired)
    assert deleted == expired
    for name, path in files.items():
        assert path.exists() == name.startswith(("new_", "old_reference")), name
    # Emptied folders under a zone go; the zone folders themselves stay.
    assert not (settings.landing_dir / "archive").exists()
    assert settings.quarantine_dir.is_dir()
    assert (settings.trusted_dir / "linkage").is_dir()
    assert apply_retention(expired) == []  # already gone: nothing to do, no error


def test_enforce_reports_or_deletes_by_policy_and_audits(tree, tmp_path):
    config, settings, files = tree
    create_demo_keys(settings)
    key = load_audit_key(settings)
    report = enforce_retention(settings, "run-1")
    assert report["files_past_retention"] == 4
    assert report["by_zone"]["landing"] == {"files": 2, "bytes": 20}
    assert report["deleted"] is False
    assert files["old_extract"].exists()
    assert not Zones(settings).audit_log.exists()  # nothing done, nothing audited

    deleting = settings.policy_path.read_text().replace('enforce = "report"', 'enforce = "delete"')
    assert 'enforce = "delete"' in deleting
    policy = tmp_path / "governance" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(deleting)
    text = config.read_text().replace("[run]\n", f'[run]\npolicy = "{policy.as_posix()}"\n', 1)
    config.write_text(text)
    settings = read_settings(config)
    done = enforce_retention(settings, "run-2")
    assert done["deleted"] is True
    assert done["files_past_retention"] == 4
    assert not files["old_extract"].exists()
    assert files["new_extract"].exists()

    log = Zones(settings).audit_log
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["retention.deleted"]
    assert {f["path"] for f in entries[0]["data"]["files"]} == {
        "gp_registrations.csv",
        "archive/2025-06/gp_registrations.csv",
        "benefits_claims.parquet",
        "records/benefits_claims.parquet",
    }
    assert verify_audit_log(log, [key], head_path=Zones(settings).audit_head).ok
    # The IG lead's audit report has the deletion: when, which run, by whom, files per zone.
    report = render_audit_report(log, key, head_path=Zones(settings).audit_head)
    section = report.split("## Retention", 1)[1].split("\n## ", 1)[0]
    assert "4 file(s) deleted in 1 deletion(s)" in section
    assert "run-2" in section
    assert "landing 2; quarantine 1; trusted 1" in section


def test_cli_lists_then_applies(tree, capsys):
    config, settings, files = tree
    create_demo_keys(settings)
    assert cli.main(["retention", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 files past retention" in out
    assert "archive/2025-06/gp_registrations.csv" in out
    assert files["old_extract"].exists()

    assert cli.main(["retention", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["zone"] for row in listed] == ["landing", "trusted", "landing", "quarantine"]

    assert cli.main(["retention", "--config", str(config), "--apply"]) == 0
    assert "deleted 4 files past retention" in capsys.readouterr().out
    assert not files["old_trusted"].exists()
    assert cli.main(["retention", "--config", str(config)]) == 0
    assert "no file is past its retention period" in capsys.readouterr().out


def test_a_run_reports_retention_in_its_summary(small_run):
    retention = small_run.summary.retention
    assert retention["files_past_retention"] == 0  # everything was written just now
    assert retention["deleted"] is False
    written = json.loads(Path(small_run.summary.summary_path).read_text())
    assert written["retention"] == retention


def test_run_artifact_mentions_files_past_retention():
    from uprnlink.run.history import run_markdown

    summary = {
        "run_id": "r1",
        "retention": {
            "files_past_retention": 3,
            "by_zone": {"landing": {"files": 2, "bytes": 20}, "trusted": {"files": 1, "bytes": 5}},
            "oldest_days": 400.0,
            "deleted": False,
        },
    }
    text = run_markdown(RunSummary.from_dict(summary))
    assert "3 files past retention, not deleted (landing 2, trusted 1; oldest 400.0 days)" in text
    empty = RunSummary.from_dict({"run_id": "r2", "retention": {}})
    assert "Retention" not in run_markdown(empty)
