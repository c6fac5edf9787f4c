"""Tests for uprnlink.governance.report: section counts, Markdown and HTML, escaping, damaged logs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from uprnlink.governance.audit import AuditLog, read_audit_events
from uprnlink.governance.report import render_audit_report, summarise_audit
from uprnlink.privacy.keys import MasterKey

KEY = MasterKey(bytes(range(32)))
NEW_KEY = MasterKey(bytes(range(1, 33)), epoch=2)
T0 = datetime(2026, 4, 1, 9, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 12, 30, 0, tzinfo=UTC)
RUN_1 = "20260401T090000Z-aaaa"
RUN_2 = "20260401T120000Z-bbbb"
EVIL = "<script>alert(1)</script>"
CHECKSUM = "ab" * 32


def step_clock(start: datetime = T0, step: timedelta = timedelta(minutes=1)):
    state = {"now": start - step}

    def clock() -> datetime:
        state["now"] += step
        return state["now"]

    return clock


def access(user: str, views: list[str], rows: int, fingerprint: str = "f" * 64) -> dict:
    return {
        "user": user,
        "role": "analyst",
        "views": views,
        "query_fingerprint": fingerprint,
        "rows": rows,
    }


def refused(user: str, reason: str, views: list[str]) -> dict:
    return {"user": user, "role": "analyst", "reason": reason, "views": views}


# Line numbers (1-based) of the log the fixture writes, for the tampering tests.
EVENTS: list[tuple[str, dict]] = [
    ("key.created", {"key_id": KEY.key_id, "epoch": 1}),  # line 1
    ("key.loaded", {"run_id": RUN_1}),
    ("run.started", {"run_id": RUN_1, "config": "demo.toml", "version": "0.1.0"}),
    (
        "publish",
        {
            "run_id": RUN_1,
            "tables": ["household", "person"],
            "counts": {"people": 1200, "households": 480},
        },
    ),
    (
        "run.finished",  # line 5
        {
            "run_id": RUN_1,
            "status": "completed",
            "inputs": {"council_tax": CHECKSUM, "gp_registrations": "cd" * 32},
            "rows_in": {"council_tax": 1000, "gp_registrations": 1500},
            "rows_quarantined": {"council_tax": 3, "gp_registrations": 4},
            "contracts": {"council_tax": "council_tax@1.0", "gp_registrations": "gp@1.0"},
        },
    ),
    ("access", access("alice", ["households", "area_summary"], 10)),  # line 6
    ("access", access("alice", ["people"], 5)),  # line 7
    ("access", access("bob", ["households"], 7)),  # line 8
    ("access.refused", refused(EVIL, "view not allowed for role", ["linked.person"])),  # line 9
    ("access.refused", refused("carol", "view not allowed for role", ["linked.household"])),
    ("key.loaded", {"run_id": RUN_2}),  # line 11
    ("run.started", {"run_id": RUN_2, "config": "demo.toml", "version": "0.1.0"}),
    ("run.failed", {"run_id": RUN_2, "reason": "linkage"}),  # line 13
]


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "out" / "audit" / "audit.jsonl"
    head = tmp_path / "work" / "audit" / "audit.head"
    audit = AuditLog(path, KEY, head_path=head, clock=step_clock())
    for event, data in EVENTS:
        audit.append(event, actor="engineer@host", data=data)
    return path, head


def report(log: tuple[Path, Path], fmt: str = "markdown", keys=KEY) -> str:
    path, head = log
    return render_audit_report(path, keys, head_path=head, fmt=fmt, now=NOW)  # type: ignore[arg-type]


def edit_line(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- summary


def test_summary_counts(log):
    s = summarise_audit(read_audit_events(log[0]))
    assert s["entries"] == len(EVENTS) and s["unverified"] == 0
    assert s["events"]["access"] == 3 and s["events"]["access.refused"] == 2
    assert s["keys"] == {
        KEY.key_id: {
            "epoch": 1,  # from the key.created event
            "entries": len(EVENTS),
            "runs": 2,
            "first_use": "2026-04-01T09:00:00.000000Z",
            "last_use": "2026-04-01T09:12:00.000000Z",
        }
    }
    assert s["key_events"] == {"key.created": 1, "key.rotated": 0}
    assert s["runs"] == {
        "total": 2,
        "by_status": {"completed": 1, "failed": 1},
        "rows_in": 2500,
        "rows_quarantined": 7,
    }
    assert s["publications"] == 1
    assert s["access"] == {
        "total": 3,
        "users": 2,
        "by_user": {"alice": 2, "bob": 1},
        "by_role": {"analyst": 3},
        "by_view": {"households": 2, "area_summary": 1, "people": 1},
        "last": "2026-04-01T09:07:00.000000Z",
        "rows": 22,
    }
    assert s["refused"]["total"] == 2 and s["refused"]["by_user"] == {EVIL: 1, "carol": 1}
    assert s["refused"]["by_reason"] == {"view not allowed for role": 2}
    assert s["refused"]["by_view"] == {"linked.person": 1, "linked.household": 1}


def test_summary_of_nothing_and_of_odd_data(tmp_path):
    assert summarise_audit([])["entries"] == 0
    audit = AuditLog(tmp_path / "a.jsonl", KEY, clock=step_clock())
    audit.append(
        "access", actor="engineer@host", data={"user": ["x"], "views": "people", "rows": "many"}
    )
    audit.append("run.finished", actor="engineer@host", data={"rows_in": {"a": "x", "b": 2}})
    s = summarise_audit(read_audit_events(audit.path), key_epochs={KEY.key_id: 7})
    assert s["keys"][KEY.key_id]["epoch"] == 7
    assert s["access"]["by_user"] == {"engineer@host": 1}  # falls back to the actor
    assert s["access"]["by_view"] == {"people": 1} and s["access"]["rows"] == 0
    assert s["runs"]["by_status"] == {"completed": 1} and s["runs"]["rows_in"] == 2


# --------------------------------------------------------------------------- intact log


def test_markdown_report_of_an_intact_log(log):
    md = report(log)
    assert md.startswith("# uprnlink audit report\n")
    # The verification result comes before every section.
    assert md.index("Audit log intact") < md.index("## Key history") < md.index("## Runs")
    assert f"All {len(EVENTS)} entries verified" in md and "FAILED" not in md
    assert "- **generated:** 2026-04-02 12:30:00 UTC" in md
    assert f"| {KEY.key_id} | 1 | {len(EVENTS)} | 2 | 2026-04-01 09:00:00 UTC |" in md
    assert "| analyst queries | 3 |" in md and "| refused access attempts | 2 |" in md
    assert "2 run(s): 1 completed, 1 failed." in md
    assert (
        f"| {RUN_2} | 2026-04-01 09:11:00 UTC | 2026-04-01 09:12:00 UTC | failed (linkage) |" in md
    )
    assert "| council_tax | council_tax@1.0 | 1,000 | 3 | abababababab… |" in md
    assert CHECKSUM not in md  # checksums are shortened
    assert "people 1,200; households 480" in md
    assert "3 queries by 2 user(s) returned 22 rows." in md
    assert "| alice | analyst | 2 | 15 | area_summary, households, people |" in md
    assert "| households | 2 | 2 | 2026-04-01 09:07:00 UTC |" in md
    assert "2 refusal(s) for 2 user(s)." in md
    assert "| carol | analyst | 1 | view not allowed for role (1) | linked.household |" in md
    assert "| verified |" not in md  # only shown when something failed


def test_markdown_escapes_values(log):
    md = report(log)
    assert EVIL not in md and not re.search(r"(?<!\\)<", md)  # no unescaped "<" at all
    assert "\\<script\\>alert(1)\\</script\\>" in md


def test_html_report_is_self_contained_and_escaped(log):
    page = report(log, "html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<style>" in page and "Content-Security-Policy" in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)  # nothing loaded from elsewhere
    assert '<section class="verdict ok" role="status"><h2>Audit log intact</h2>' in page
    assert '<td>alice</td><td>analyst</td><td class="num">2</td><td class="num">15</td>' in page
    assert '<td class="num">22</td>' not in page  # totals are in prose, not a fake row
    assert "3 queries by 2 user(s) returned 22 rows." in page


def test_html_escapes_quotes_and_ampersands(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path, KEY).append(
        "access", actor="x", data=access("a\"b&c'<d>", ['v" onmouseover="x'], 1)
    )
    page = render_audit_report(path, KEY, head_path=None, fmt="html", now=NOW)
    # Every character HTML gives meaning to becomes an entity (Jinja's autoescape spells the
    # quotes &#34; and &#39;).
    assert "a&#34;b&amp;c&#39;&lt;d&gt;" in page
    assert 'a"b' not in page and "c'<d>" not in page
    assert 'onmouseover="x' not in page


def test_empty_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.touch()
    md = render_audit_report(path, KEY, head_path=None, now=NOW)
    assert "AUDIT LOG FAILED VERIFICATION" in md and "the audit log is empty" in md
    assert "No pipeline runs recorded." in md and "No analyst access recorded." in md


# --------------------------------------------------------------------------- damaged logs


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_tampered_line_is_named(log, fmt):
    edit_line(log[0], 7, '"rows":5', '"rows":500')  # someone hides a large extract
    out = report(log, fmt)
    assert "AUDIT LOG FAILED VERIFICATION" in out
    assert "First bad entry: line 7 (seq 6)." in out
    assert "entry seq 6 (line 7) has been altered" in out
    assert "6 of 13 entries verified before it." in out
    # What could be read is still reported, with entries from the bad line on marked.
    assert "Refused access" in out and "carol" in out
    verdict_at = out.index("AUDIT LOG FAILED VERIFICATION")
    assert verdict_at < out.index("Key history")
    if fmt == "html":
        assert '<section class="verdict bad" role="alert">' in out
        assert '<tr class="unverified">' in out
        assert "&lt;script&gt;" in out and "<script" not in out
    else:
        assert "> [!CAUTION]" in out
        assert "| entries in the log | 13 |" in out and "| entries NOT verified | 7 |" in out
        assert "| **alice** | **analyst** | **2** | **510** |" in out
        assert "| area_summary | 1 | 1 | 2026-04-01 09:05:00 UTC | yes |" in out  # before line 7


def test_unreadable_line_is_reported(log):
    edit_line(
        log[0],
        9,
        "{",
        "{{",
    )
    md = report(log)
    assert "AUDIT LOG FAILED VERIFICATION" in md
    assert "line 9 (seq 8) is not valid JSON" in md
    assert "1 line(s) could not be read at all:" in md and "- line 9 is not valid JSON" in md
    assert "1 refusal(s) for 1 user(s)." in md  # the other refusal is still shown


def test_truncated_log_is_reported(log):
    path = log[0]
    lines = path.read_text().split("\n")
    path.write_text("\n".join(lines[:10]) + "\n")
    md = report(log)
    assert "AUDIT LOG FAILED VERIFICATION" in md and "truncated" in md
    assert "First bad entry: line 11 (seq 10)." in md
    assert "1 run(s): 1 completed." in md


def test_missing_checkpoint_is_reported(log):
    log[1].unlink()
    md = report(log)
    assert "AUDIT LOG FAILED VERIFICATION" in md and "is missing" in md
    assert "cannot be shown to be complete" in md
    assert "| verified |" not in md  # every entry itself verified


def test_missing_log_still_gives_a_report(tmp_path):
    out = render_audit_report(tmp_path / "nope.jsonl", KEY, head_path=None, fmt="html", now=NOW)
    assert "AUDIT LOG FAILED VERIFICATION" in out and "not found" in out
    assert "No pipeline runs recorded." in out


def test_pathological_line_gives_a_report(log):
    with log[0].open("a") as f:
        f.write("[" * 200_000 + "\n")
    md = report(log)
    assert "AUDIT LOG FAILED VERIFICATION" in md


def test_unknown_format_is_refused(log):
    with pytest.raises(ValueError, match="unknown report format"):
        report(log, "pdf")


# --------------------------------------------------------------------------- rotation


def test_log_spanning_a_rotation(log):
    path, head = log
    old = AuditLog(path, KEY, head_path=head, clock=step_clock(T0 + timedelta(days=1)))
    new = old.rotate_to(NEW_KEY, actor="ig-lead")  # the hand-over, MACed with the old key
    new.append(
        "key.rotated",
        actor="ig-lead",
        data={"old_key_id": KEY.key_id, "new_key_id": NEW_KEY.key_id, "new_epoch": 2},
    )
    new.append("run.started", actor="engineer@host", data={"run_id": "R3"})
    md = render_audit_report(path, [KEY, NEW_KEY], head_path=head, now=NOW)
    assert "Audit log intact" in md
    assert f"| {NEW_KEY.key_id} | 2 | 2 | 1 |" in md
    assert "### Key changes in the log" in md
    assert f"| 2026-04-02 09:01:00 UTC | 14 | {KEY.key_id} | {NEW_KEY.key_id} |" in md
    assert "| key.rotated | ig-lead |" in md
    s = summarise_audit(read_audit_events(path))
    assert s["key_changes"] == 1 and s["keys"][NEW_KEY.key_id]["epoch"] == 2

    only_new = render_audit_report(path, NEW_KEY, head_path=head, now=NOW)
    assert "AUDIT LOG FAILED VERIFICATION" in only_new
    assert f"MACed with key {KEY.key_id}, which was not supplied" in only_new
    assert f"| **{KEY.key_id}** | **1** | **14** | **2** |" in only_new  # unverified: bold
    assert "NO (entries cannot be verified)" in only_new


def test_epochs_from_the_cli_rotation_event(tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl", NEW_KEY, clock=step_clock())
    data = {"key_id": NEW_KEY.key_id, "epoch": 2, "previous_key_id": KEY.key_id}
    audit.append("key.rotated", actor="ig-lead", data=data)
    s = summarise_audit(read_audit_events(audit.path))
    assert s["keys"][NEW_KEY.key_id]["epoch"] == 2 and s["key_events"]["key.rotated"] == 1
    md = render_audit_report(audit.path, NEW_KEY, head_path=None, now=NOW)
    assert f"previous\\_key\\_id={KEY.key_id}" not in md  # intraword "_" stays readable
    assert f"previous_key_id={KEY.key_id}" in md


def test_reports_are_deterministic(log):
    assert report(log) == report(log)
    assert json.loads(json.dumps(summarise_audit(read_audit_events(log[0]))))


# --------------------------------------------------------------------------- issue #22, point 13


def _write(tmp_path: Path, events: list[tuple[str, dict]]) -> Path:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, KEY, clock=step_clock())
    for event, data in events:
        audit.append(event, actor="svc@host", data=data)
    return path


def test_a_refusal_shows_the_rule_the_log_records(tmp_path):
    """The log writes a refusal's rule code as ``rule``: the report used to show "-"."""
    path = _write(
        tmp_path,
        [
            ("access.refused", {"user": "ana", "role": "analyst", "rule": "relation", "views": []}),
            ("access.refused", {"user": "ana", "role": "analyst", "rule": "revoked", "views": []}),
        ],
    )
    s = summarise_audit(read_audit_events(path))
    assert s["refused"]["by_reason"] == {"relation": 1, "revoked": 1}
    md = render_audit_report(path, KEY, head_path=None, now=NOW)
    assert "| ana | analyst | 2 | relation (1), revoked (1) |" in md
    assert "| analyst | relation |" in md


OUTPUT_EVENTS = [
    (
        "answer.refused",
        {
            "user": "ana",
            "role": "analyst",
            "query_fingerprint": "a" * 16,
            "rules": ["threshold", "secondary"],
        },
    ),
    (
        "answer.refused",
        {"user": "ana", "role": "analyst", "query_fingerprint": "b" * 16, "rules": ["threshold"]},
    ),
    (
        "output.submitted",
        {
            "user": "ana",
            "role": "analyst",
            "output_id": "out-000003",
            "rules": ["dominance"],
            "sha256": "c" * 64,
        },
    ),
    (
        "output.decision_refused",
        {
            "user": "olu",
            "role": "output_checker",
            "action": "output.approved",
            "output_id": "out-000003",
            "rule": "own-submission",
        },
    ),
    (
        "output.download_refused",
        {"user": "bob", "role": "analyst", "output_id": "out-000003", "rule": "not-yours"},
    ),
]


def test_refused_answers_and_outputs_are_summarised(tmp_path):
    path = _write(tmp_path, OUTPUT_EVENTS)
    s = summarise_audit(read_audit_events(path))
    assert s["outputs"]["answer.refused"] == {
        "total": 2,
        "by_user": {"ana": 2},
        "by_rule": {"threshold": 2, "secondary": 1},
    }
    assert s["outputs"]["output.submitted"]["by_rule"] == {"dominance": 1}
    assert s["outputs"]["output.decision_refused"]["by_rule"] == {"own-submission": 1}
    assert s["outputs"]["output.download_refused"]["by_user"] == {"bob": 1}
    md = render_audit_report(path, KEY, head_path=None, now=NOW)
    assert "## Refused answers and outputs" in md
    assert "| ana | analyst | 2 | threshold (2), secondary (1) |" in md
    assert "| answers refused by the output rules | 2 |" in md
    assert "| outputs submitted for review | 1 |" in md
    assert "| output decisions or downloads refused | 2 |" in md
    assert "| olu | output_checker | 1 | own-submission (1) |" in md
    assert "| out-000003 | output.approved |" in md
    assert "| bob | analyst | 1 | not-yours (1) |" in md


def test_tables_and_released_outputs_are_reported(tmp_path):
    """The table builder is the analysts' main way in (#21): the IG lead's report lists the
    tables built per user (how many filtered, which dimensions), what was released, decided
    and downloaded, and refused table requests and jobs."""
    table = {"dataset": "households", "dimensions": ["lsoa", "tenure"], "filters": {}}
    filtered = {**table, "filters": {"lsoa": ["E01000001"]}}
    path = _write(
        tmp_path,
        [
            ("table", {"user": "ana", "role": "analyst", "table": table, "cells": 40}),
            ("table", {"user": "ana", "role": "analyst", "table": filtered, "cells": 4}),
            (
                "table",
                {
                    "user": "bob",
                    "role": "analyst",
                    "table": table,
                    "named_query": "q1",
                    "cells": 40,
                },
            ),
            ("table.refused", {"user": "bob", "role": "analyst", "rule": "spec"}),
            ("output.refused", {"user": "ana", "role": "analyst", "rule": "max_waiting_jobs"}),
            (
                "output.released",
                {
                    "user": "ana",
                    "role": "analyst",
                    "output_id": "out-000001",
                    "release_no": 1,
                    "approved_by": "table-builder",
                },
            ),
            ("output.approved", {"user": "olu", "role": "output_checker", "output_id": "o2"}),
            (
                "output.downloaded",
                {"user": "ana", "role": "analyst", "output_id": "out-000001", "release_no": 1},
            ),
        ],
    )
    s = summarise_audit(read_audit_events(path))
    assert s["tables"] == {
        "total": 3,
        "named": 1,
        "filtered": 1,
        "by_user": {"ana": 2, "bob": 1},
        "by_dataset": {"households": 3},
    }
    assert s["released"]["output.released"]["by_user"] == {"ana": 1}
    assert s["outputs"]["table.refused"]["by_rule"] == {"spec": 1}
    assert s["outputs"]["output.refused"]["by_rule"] == {"max_waiting_jobs": 1}
    md = render_audit_report(path, KEY, head_path=None, now=NOW)
    assert "## Tables built" in md
    assert "| ana | analyst | 2 | 1 | 0 | households | lsoa (2), tenure (2) |" in md
    assert "| tables built (table builder and named questions) | 3 |" in md
    assert "| outputs released | 1 |" in md and "| outputs downloaded | 1 |" in md
    assert "| output.released | ana | out-000001 | 1 | table-builder |" in md
    assert "| bob | analyst | 1 | spec (1) |" in md


def test_counted_failures_are_summarised(tmp_path):
    counts = [
        {"status": 401, "route": "api/query", "who": "source:10.0.0.9", "n": 400},
        {"status": 429, "route": "api/query", "who": "tok-aaaaaaaaaaaa", "n": 3},
        {"status": 413, "route": "portal/login", "who": "source:10.0.0.9", "n": 1},
    ]
    path = _write(
        tmp_path,
        [
            (
                "service.failures",
                {"window_start": "2026-04-01T09:00:00Z", "total": 403, "counts": counts[:2]},
            ),
            (
                "service.failures",
                {"window_start": "2026-04-01T09:01:00Z", "total": 1, "counts": counts[2:]},
            ),
        ],
    )
    s = summarise_audit(read_audit_events(path))
    assert s["failures"] == {
        "total": 404,
        "windows": 2,
        "by_status": {"401": 400, "429": 3, "413": 1},
        "by_route": {"api/query": 403, "portal/login": 1},
        "by_who": {"source:10.0.0.9": 401, "tok-aaaaaaaaaaaa": 3},
    }
    md = render_audit_report(path, KEY, head_path=None, now=NOW)
    assert "404 request(s) refused or failed in 2 counted window(s)" in md
    assert "| 401 | 400 |" in md and "| portal/login | 1 |" in md
    assert "| source:10.0.0.9 | 401 | 401 (400), 413 (1) |" in md
    assert "| refused or failed requests (counted) | 404 |" in md


def test_seals_and_witnesses_are_reported(tmp_path):
    from uprnlink.governance.audit import SealPolicy
    from uprnlink.governance.witness import FileWitnessSink, read_witness_file
    from uprnlink.privacy.sealing import SealSeed

    seed = SealSeed(bytes(range(32)))
    clock = {"now": T0}
    path = tmp_path / "audit.jsonl"
    witness = tmp_path / "witness" / "audit.witness"
    state = tmp_path / "seal.state"
    audit = AuditLog(
        path,
        KEY,
        clock=lambda: clock["now"],
        sealing=SealPolicy(state, 300, 60),
        witnesses=[FileWitnessSink(witness)],
        writer="svc@host",
    )
    audit.append("run.started", actor="engineer@host", data={"run_id": RUN_1})
    audit.start_sealing(seed, actor="ig-lead")
    for minutes in (6, 12):
        clock["now"] = T0 + timedelta(minutes=minutes)
        audit.append("access", actor="ana", data=access("ana", ["households"], 1))
        audit.maintain()
    audit.append("access", actor="ana", data=access("ana", ["households"], 1))

    def render(**kwargs):
        return render_audit_report(
            path,
            KEY,
            head_path=None,
            now=NOW,
            seal_state=state,
            witness_files=[read_witness_file(witness)],
            **kwargs,
        )

    md = render(seed=seed)
    assert "Audit log intact" in md and "## Sealing and witnesses" in md
    assert f"Forward-sealed under {seed.seal_id}: 3 seal(s), every seal checked" in md
    assert "1 entry is after the last seal, only hash-chained" in md
    assert f"- **seal id:** {seed.seal_id}" in md and "- **seals:** 3" in md
    assert "- **entries after the last seal (the window):** 1" in md
    assert "Longest time between two seals: 6.0 minutes" in md
    assert f"- **witness sinks the seals record:** file:{witness}" in md
    assert "| seals | 3 |" in md
    unchecked = render()
    assert "NOT checked (no verification seed given)" in unchecked
    assert "Not checked: seals not checked" in unchecked
    witness.write_text("")
    broken = render(seed=seed)
    assert "AUDIT LOG FAILED VERIFICATION" in broken and "witness_missing" in broken
    s = summarise_audit(read_audit_events(path))
    assert s["sealing"]["seals"] == 3 and s["sealing"]["last_epoch"] == 2


def test_html_cells_do_not_break_mid_word(log):
    """Table cells used `overflow-wrap: anywhere`, which lets a narrow column break "analyst"
    into "analy" / "st". Cells now break only between words (a long token may still wrap
    rather than overflow, and a wide table scrolls inside its section)."""
    page = report(log, "html")
    css = re.search(r"<style>(.*?)</style>", page, re.S)
    assert css is not None
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", css.group(1)))
    cell = {k.strip(): v for k, v in rules.items()}["td"]
    assert "anywhere" not in cell and "break-all" not in cell
    assert "overflow-wrap:break-word" in cell and "word-break:normal" in cell
    assert "overflow-x:auto" in {k.strip(): v for k, v in rules.items()}["section"]
