"""Each user's first day, as a newcomer does it (issue #22): the data engineer (items 1-8), then the analyst (the service and the portal) and the IG lead (the audit report).

`test_first_day_walkthrough` drives the command line in a fresh working folder, as separate
processes with no `--config` (the folder's `uprnlink.toml` is found), on three extracts the rest
of the suite never uses (`tests/first_day_extracts.py`): a council tax file with a full name per
party and one shared DOB column, an Excel GP list, and an ONS lookup holding area codes and
property classes. init, map (pasting what it proposes), keys, check, run: no step prints a
traceback, every message appears once, exit codes are the README's, the run keeps a log file
with no personal data value in it, bars on a terminal and plain lines elsewhere.

The tests before it check each point on its own, quickly, without running the pipeline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from tests.first_day_extracts import Extracts, write_extracts
from uprnlink.settings import PROJECT_ROOT

PASSPHRASES = {
    "UPRNLINK_KEY_PASSPHRASE": "copper kettle lighthouse orchard 61",
    "UPRNLINK_AUDIT_PASSPHRASE": "velvet quarry meadow lantern 28",
    "UPRNLINK_RELEASE_PASSPHRASE": "harbour thistle violin saffron 94",
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def environment(**extra: str) -> dict[str, str]:
    """The newcomer's environment: the three passphrases, no debug, no raw keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("UPRNLINK_") and k not in ("COLUMNS", "FORCE_COLOR")
    }
    env.update(PASSPHRASES)
    env.update(extra)
    return env


class Shell:
    """Runs `uprnlink ...` in a folder as its own process and checks what every step owes a
    newcomer: no traceback, each message once."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = env or environment()
        self.outputs: list[str] = []

    def __call__(
        self, *args: str, code: int = 0, env: dict[str, str] | None = None, once: bool = True
    ) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "uprnlink", *args],
            cwd=self.cwd,
            env=env or self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=600,
        )
        out, err = done.stdout, done.stderr
        self.outputs.append(out + err)
        assert done.returncode == code, (
            f"uprnlink {' '.join(args)}: exit {done.returncode}\n{out}\n{err}"
        )
        assert "Traceback" not in out + err, f"uprnlink {' '.join(args)} printed a traceback\n{err}"
        if once:
            assert_once(err, f"uprnlink {' '.join(args)}")
        return out, err


def assert_once(text: str, what: str) -> None:
    """Every non-blank line appears once."""
    lines = Counter(line.strip() for line in ANSI.sub("", text).splitlines() if line.strip())
    repeated = [line for line, n in lines.items() if n > 1]
    assert not repeated, f"{what} printed a message more than once: {repeated[:3]}"


def paste(config: Path, proposals: list[str]) -> None:
    """What the README says: keep the template's [run], [key] and [linkage], delete the tables
    of extracts not received, paste each table `uprnlink map` printed."""
    text = config.read_text(encoding="utf-8")
    head = re.split(r"\n# -{40}|\n# Proposed by `uprnlink map`", text, maxsplit=1)[0]
    config.write_text(head + "\n\n" + "\n\n".join(proposals), encoding="utf-8")


def leaks(text: str, extracts: Extracts) -> list[str]:
    """Personal data values of the extracts found in `text`."""
    return sorted({v for v in extracts.values if v and v in text})


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Extracts, Shell]:
    """`uprnlink init` in an empty folder, with the three extracts landed."""
    shell = Shell(tmp_path)
    shell("init", "north-partnership")
    work = tmp_path / "north-partnership"
    return work, write_extracts(work, households=60), Shell(work)


# ------------------------------------------------------------------ 1. keys


def test_key_init_needs_the_audit_key_first_and_writes_nothing_before(
    folder: tuple[Path, Extracts, Shell],
) -> None:
    work, _, sh = folder
    _, err = sh("key", "init", "--kind", "pseudonymisation", code=4)
    assert "uprnlink: using" in err and "create the audit key first" in err
    assert "--kind audit" in err
    assert not (work / "keys" / "uprnlink.key").exists(), "nothing may be written"
    # A missing passphrase is a key error (exit 4), not "anything else".
    no_pass = environment(UPRNLINK_AUDIT_PASSPHRASE="")
    _, err = sh("key", "init", "--kind", "audit", code=4, env=no_pass)
    assert "no passphrase: set UPRNLINK_AUDIT_PASSPHRASE" in err
    out, _ = sh("key", "init", "--kind", "audit")
    out2, _ = sh("key", "init", "--kind", "pseudonymisation")
    assert "Recorded key.created" in out and "Recorded key.created" in out2
    events = [
        json.loads(line)["event"]
        for line in (work / "out" / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    assert events == ["key.created", "key.created"]


def test_init_readme_names_all_three_keys_with_their_kind(
    folder: tuple[Path, Extracts, Shell],
) -> None:
    work, _, _ = folder
    readme = (work / "README.txt").read_text()
    for kind, env in (
        ("audit", "UPRNLINK_AUDIT_PASSPHRASE"),
        ("pseudonymisation", "UPRNLINK_KEY_PASSPHRASE"),
        ("release", "UPRNLINK_RELEASE_PASSPHRASE"),
    ):
        assert f"uprnlink key init --kind {kind}" in readme and env in readme
    assert readme.index("--kind audit") < readme.index("--kind pseudonymisation")
    assert "exit 4" in readme


# ------------------------------------------------------------------ 2. reference files


def test_reference_contracts_are_proposed_as_reference_tables_one_file_serving_two(
    folder: tuple[Path, Extracts, Shell],
) -> None:
    work, ex, sh = folder
    out, _ = sh(
        "map", str(ex.ons_lookup), "--contract", "uprn_lookup", "--contract", "property_class"
    )
    assert "[reference.uprn_lookup]" in out and "[reference.property_class]" in out
    assert "[sources." not in out
    assert 'path = "reference/ons_uprn_lookup.csv"' in out  # relative to the landing folder
    assert 'class = "CLASS"' in out and 'lsoa = "LSOA21CD"' in out
    config = work / "uprnlink.toml"
    gp, _ = sh("map", str(ex.gp_list), "--contract", "gp_registrations")
    paste(config, [gp, out])
    out_check, _ = sh("check")
    assert "2 reference file(s)" in out_check and "duplicate" not in out_check
    # Pasted as a person source, it is refused in one line naming file, contract, the fix.
    paste(config, [gp, out.replace("[reference.uprn_lookup", "[sources.uprn_lookup")])
    _, err = sh("check", code=3)
    assert "[sources.uprn_lookup] uses 'uprn_lookup', a reference contract" in err
    assert "[reference.uprn_lookup]" in err and "file=ons_uprn_lookup.csv" in err


# ------------------------------------------------------------------ 3. person groups


def test_full_names_per_group_are_proposed_and_a_shared_dob_is_never_everyones(
    folder: tuple[Path, Extracts, Shell],
) -> None:
    work, ex, sh = folder
    out, err = sh("map", str(ex.council_tax), "--contract", "council_tax")
    assert 'person_groups = ["Lead", "Joint"]' in out
    assert 'forename = { column = "{group} Name", name_order = "forename_first" }' in out
    assert 'surname = { column = "{group} Name", name_order = "forename_first" }' in out
    assert "# WARNING: dob: column 'DOB' is one dob for every person group" in out
    assert '# dob = { column = "DOB", group = "Lead" }' in out
    assert "1 warning(s) above" in err and "WARNING" not in err  # said once, in the proposal
    config = work / "uprnlink.toml"
    paste(config, [out])
    sh("check")
    # Written by hand as a shared column: refused, naming the file, column and rule.
    by_hand = out.replace("# dob = ...", "").replace(
        "[sources.council_tax.columns]", '[sources.council_tax.columns]\ndob = "DOB"'
    )
    paste(config, [by_hand])
    _, err = sh("check", code=3)
    assert "rule=shared_person_field" in err and "column=DOB" in err
    assert 'dob = { column = "DOB", group = "Lead" }' in err
    # Given to the lead only: accepted.
    paste(
        config,
        [
            out.replace(
                '# dob = { column = "DOB", group = "Lead" }',
                'dob = { column = "DOB", group = "Lead" }',
            )
        ],
    )
    sh("check")


def test_quarantine_names_the_files_own_columns_not_the_group_template(tmp_path: Path) -> None:
    from uprnlink.ingest.contracts import find_contract
    from uprnlink.ingest.validate import validate_extract
    from uprnlink.resources import schemas_dir
    from uprnlink.settings import ColumnMapping, SourceSettings

    source = SourceSettings(
        name="council_tax",
        contract="council_tax",
        contract_version=1,
        path=tmp_path / "ctax.csv",
        format="csv",
        delimiter=",",
        encoding="utf8",
        date_formats=("%d/%m/%Y",),
        columns={
            "record_id": ColumnMapping("Account Ref"),
            "forename": ColumnMapping("{group} Name", name_order="forename_first"),
            "surname": ColumnMapping("{group} Name", name_order="forename_first"),
            "dob": ColumnMapping("DOB", group="Lead"),
            "start_date": ColumnMapping("Liable From"),
        },
        person_groups=("Lead", "Joint"),
    )
    raw = pl.DataFrame(
        {
            "Account Ref": ["A1", "A2"],
            "Lead Name": ["Emrys Carrow", "Nye Ormerod"],
            "Joint Name": [",", ""],  # a name with no surname: quarantined
            "DOB": ["01/02/1970", "30/02/1971"],
            "Liable From": ["01/01/2010", "01/01/2011"],
        }
    )
    contract = find_contract(schemas_dir(), "council_tax", 1)
    accepted, quarantined, report = validate_extract(raw, source, contract, ex_date(2026, 3, 31))
    assert report.rows_in == 3 and report.reconciles  # A2's empty joint party is no person
    assert report.rows_quarantined == 1
    assert "{group} Name" not in quarantined.columns
    assert {"Lead Name", "Joint Name", "_columns", "_group"} <= set(quarantined.columns)
    joint = quarantined.filter(pl.col("_group") == "Joint").row(0, named=True)
    assert joint["_reasons"] == "surname:missing"
    assert joint["_columns"] == "Joint Name"
    assert joint["Lead Name"] is None
    # The lead's DOB is the lead's only (A2's lead's, 30 February, is nulled and counted).
    assert accepted.select("record_id", "dob").rows() == [
        ("A1|Lead", ex_date(1970, 2, 1)),
        ("A2|Lead", None),
    ]
    assert report.values_nulled == {"dob:invalid_dob": 1}


def ex_date(year: int, month: int, day: int) -> object:
    from datetime import date

    return date(year, month, day)


# ------------------------------------------------------------------ 4. dates and Excel


def test_a_wrong_date_format_is_not_ready_and_spreadsheet_notation_is_refused(
    folder: tuple[Path, Extracts, Shell],
) -> None:
    work, ex, sh = folder
    gp, err = sh("map", str(ex.gp_list), "--contract", "gp_registrations")
    assert "sheet = \"Registrations\"  # sheet 'Registrations' (the first of 2:" in gp
    assert 'date_format = "%Y-%m-%d"' in gp and 'nhs_number = "NHS Number"' in gp
    config = work / "uprnlink.toml"
    paste(config, [gp.replace('date_format = "%Y-%m-%d"', 'date_format = "dd/mm/yyyy"')])
    _, err = sh("check", code=2)
    assert "date format 'dd/mm/yyyy' is not a strptime format: write '%d/%m/%Y'" in err
    paste(config, [gp.replace('date_format = "%Y-%m-%d"', 'date_format = "%d/%m/%Y"')])
    out, err = sh("check", code=3)
    assert "not ready" in out
    assert "100.0% of" in err and "sampled values of dob fail invalid_dob" in err
    assert "column=Date of Birth" in err and "file=gp_list_march.xlsx" in err
    assert "read as '%Y-%m-%d'" in err
    assert not leaks(out + err, ex)
    paste(config, [gp])
    out, _ = sh("check")
    assert "gp_list_march.xlsx, sheet 'Registrations' (the first of 2" in out


def test_a_named_sheet_is_read_and_a_missing_one_is_named(tmp_path: Path) -> None:
    from uprnlink.errors import ContractError
    from uprnlink.ingest.readers import choose_sheet

    ex = write_extracts(tmp_path, households=5)
    assert choose_sheet(ex.gp_list, "notes") == ("Notes", ["Registrations", "Notes"])
    assert choose_sheet(ex.gp_list, 2)[0] == "Notes"
    with pytest.raises(ContractError, match="no sheet 'GP'; its sheets: 'Registrations', 'Notes'"):
        choose_sheet(ex.gp_list, "GP")


# ------------------------------------------------------------------ 5-6. the console


def test_console_prints_each_line_once_plainly_when_not_a_terminal() -> None:
    import io
    import logging

    from uprnlink.progress import Progress, stop_console, use_console

    stream = io.StringIO()
    library = logging.getLogger("uprnlink")
    handlers, propagate, level = list(library.handlers), library.propagate, library.level
    try:
        use_console(stream)  # a StringIO is no terminal: plain lines
        step = Progress("linkage: scoring pairs", 2, "slices")
        step.advance(note="10 pairs scored")
        step.advance(note="20 pairs scored")
        logging.getLogger("uprnlink").warning("a warning")
        stop_console()
    finally:
        library.handlers[:] = handlers
        library.propagate, library.level = propagate, level
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "1/2 slices, 10 pairs scored" in lines[0]
    assert lines[2].endswith("a warning")
    assert "━" not in stream.getvalue()


def test_the_console_writes_to_stderr_as_it_is_now_not_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The console handler outlives the command that set it up (the `uprnlink` logger keeps
    it): after that command's stderr is gone, the next line goes to the current stderr, with
    no "--- Logging error ---" traceback (a test runner's capture made that happen)."""
    import io
    import logging

    from uprnlink.progress import use_console

    library = logging.getLogger("uprnlink")
    handlers, propagate, level = list(library.handlers), library.propagate, library.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        use_console(bars=False)
        library.info("during the command")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        library.info("after it")
    finally:
        library.handlers[:] = handlers
        library.propagate, library.level = propagate, level
    assert second.getvalue().rstrip().endswith("after it")
    assert "Logging error" not in second.getvalue()


# ------------------------------------------------------------------ 7. the working folder


def test_commands_without_config_outside_a_working_folder_say_what_to_do(tmp_path: Path) -> None:
    _, err = Shell(tmp_path)("check", code=2)
    assert "no --config given and no uprnlink.toml in" in err and "uprnlink init DIR" in err


# ------------------------------------------------------------------ 8. the wheel


def test_supported_pythons_are_declared_and_documented() -> None:
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    versions = {c.rsplit(" ", 1)[-1] for c in project["classifiers"] if ":: 3." in c}
    assert versions == {"3.11", "3.12", "3.13"}
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "CPython 3.11, 3.12 and 3.13" in readme and "UPRNLINK_BUILD_HMAC=1" in readme


# ------------------------------------------------------------------ the walkthrough


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (as at a desk): exit code, stdout, the terminal."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, cwd=cwd, env={**env, "TERM": "xterm", "COLUMNS": "120"}, stdout=subprocess.PIPE,
        stderr=slave, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = proc.stdout.read() if proc.stdout else ""
    code = proc.wait(timeout=600)
    reader.join(timeout=10)
    os.close(master)
    return code, out, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_first_day_walkthrough(tmp_path: Path) -> None:
    started = time.perf_counter()
    sh = Shell(tmp_path)
    out, _ = sh("init", "north-partnership")
    assert "uprnlink key init --kind audit" in out
    work = tmp_path / "north-partnership"
    ex = write_extracts(work)
    sh = Shell(work)

    # map each extract, and paste what it proposes (the council tax DOB is the lead's).
    ctax, _ = sh("map", "landing/ctax_accounts_march.csv", "--contract", "council_tax")
    ctax = ctax.replace(
        '# dob = { column = "DOB", group = "Lead" }', 'dob = { column = "DOB", group = "Lead" }'
    )
    gp, _ = sh("map", "landing/gp_list_march.xlsx", "--contract", "gp_registrations")
    ons, _ = sh(
        "map", "landing/reference/ons_uprn_lookup.csv", "--contract", "uprn_lookup,property_class"
    )
    config = work / "uprnlink.toml"
    paste(config, [ctax, gp, ons])
    out, err = sh("check")
    assert "ready to run: 0 error(s)" in out and "2 source(s), 2 reference file(s)" in out
    assert "uprnlink: using" in err

    # A run before the keys: every missing key named with its --kind, exit 4.
    _, err = sh("run", code=4)
    assert "3 of the run's 3 keys missing" in err
    for kind in ("audit", "pseudonymisation", "release"):
        assert f"uprnlink key init --kind {kind}" in err
    for kind in ("audit", "pseudonymisation", "release"):
        out, _ = sh("key", "init", "--kind", kind)
        assert "Recorded key.created" in out

    # The run, at a desk: progress bars on the terminal; each message once; no traceback.
    env = environment()
    code, out, terminal = _on_a_terminal([sys.executable, "-m", "uprnlink", "run"], work, env)
    plain = ANSI.sub("", terminal)
    assert code == 0, plain[-3000:] + out[-2000:]
    assert "Traceback" not in plain + out
    assert "━" in terminal, "no progress bar on a terminal"
    for line in ("stage 3/7: link", "stage 7/7: finish"):
        assert plain.count(line) == 1, (line, plain[-3000:])
    assert "Release" in out and "is live" in out
    (log,) = (work / "out" / "runs").glob("*.log")
    text = log.read_text()
    assert "stage 7/7: finish" in text and "ingest: 2/2 extracts" in text
    assert re.search(r"run \S+ completed", text)
    assert not leaks(text + out + plain, ex), "a personal data value reached the log or console"

    # In CI (no terminal): plain lines, each once; the second run reuses both extracts.
    out, err = sh("run")
    assert "━" not in err and "ingest: 2/2 extracts, gp_registrations reused" in err
    assert_once(out, "the run summary")
    assert len(list((work / "out" / "runs").glob("*.log"))) == 2
    sh("runs")
    out, _ = sh("audit", "verify")
    assert out.startswith("OK: audit log intact")
    summary = json.loads(sorted((work / "out" / "runs").glob("*.json"))[0].read_text())
    by_source = {r["source"]: r for r in summary["ingest"]}
    assert by_source["council_tax"]["file_rows"] == ex.accounts
    assert by_source["gp_registrations"]["rows_in"] == ex.gp_rows
    assert summary["linkage"]["people"] <= ex.people * 1.2
    # The lead's date of birth, and only the lead's, reached the trusted zone.
    assert by_source["council_tax"]["values_present"]["dob"] == ex.accounts

    # The IG lead starts sealing the log and adds an analyst; the service runs on this folder.
    sh("audit", "seal", "init", "--seed-file", "ig-lead/audit-seal.seed")
    out, _ = sh("users", "add", "amira", "--role", "analyst")
    (work / "amira.token").write_text(out.strip().splitlines()[1])
    from tests.conftest import free_port, start_service

    # The service account holds the audit key's passphrase only.
    service_env = {k: v for k, v in env.items() if not k.startswith("UPRNLINK_")}
    service_env["UPRNLINK_AUDIT_PASSPHRASE"] = PASSPHRASES["UPRNLINK_AUDIT_PASSPHRASE"]
    port = free_port()
    proc = start_service(work / "uprnlink.toml", port, work / "service.log", service_env)
    try:
        assert proc.poll() is None, (work / "service.log").read_text()[-2000:]
        # The analyst's first day: what may be tabulated, then a protected table of it.
        url = f"http://127.0.0.1:{port}"
        analyst = ("--url", url, "--token-file", str(work / "amira.token"))
        out, _ = sh("catalogue", *analyst)
        assert "households" in out and "tenure" in out
        table = ("table", "households", "--by", "tenure", "--measure", "mean:residents")
        out, _ = sh(*table, "--totals", *analyst)
        assert "tenure" in out and "Total" in out and "mean_residents" in out
        kept, _ = sh(*table, "--totals", "--out", "tenure.csv", *analyst)
        assert "output out-000001, release no. 1" in kept
        kept = (work / "tenure.csv").read_text()
        assert "count" in kept and "Total" in kept and not re.search(r"[PH][0-9a-f]{16}", kept)
        assert not leaks(out + kept, ex)
        # ... and in the portal, in headless Chromium: the catalogue, a table, its chart.
        _portal_first_day(url, (work / "amira.token").read_text().strip(), ex)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The IG lead's report names the analyst's table and verifies the log.
    out, _ = sh("audit", "report", "--seed-file", "ig-lead/audit-seal.seed")
    assert "## Tables built" in out and "| amira | analyst | 4 |" in out  # CLI 2, API, portal
    assert "| output.downloaded | amira | out-000001 | 1 |" in out
    assert not leaks(out + (work / "service.log").read_text(), ex)

    # An unexpected error under Prefect: one line, its type only, exit 1; the traceback only
    # with UPRNLINK_DEBUG=1.
    boom = (
        "import sys, uprnlink.run.runner as r\n"
        "def boom(*a, **k): raise ValueError('Rhodri Abernethy 4123456789')\n"
        "r.start_run = boom\n"
        "from uprnlink.cli import main\n"
        "sys.exit(main(['run']))\n"
    )
    failed = subprocess.run(
        [sys.executable, "-c", boom], cwd=work, env=env, capture_output=True, text=True,
        check=False, timeout=600,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr and "Rhodri" not in failed.stderr
    assert "uprnlink: unexpected ValueError" in failed.stderr
    assert_once(failed.stderr, "a failed run")
    debug = subprocess.run(
        [sys.executable, "-c", boom], cwd=work, env={**env, "UPRNLINK_DEBUG": "1"},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert "Traceback" in debug.stderr
    failed_log = max((work / "out" / "runs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    assert "failed in stage start: ValueError" in failed_log.read_text()
    assert "Rhodri" not in failed_log.read_text()
    print(f"first-day walkthrough: {time.perf_counter() - started:.1f} s")


def _portal_first_day(url: str, token: str, ex: Extracts) -> None:
    """The analyst's first visit to the portal on the walkthrough's own release: signs in,
    finds the households' dimensions in the catalogue, builds a table whose cells are the
    API's, and its chart draws the measure asked for (axis titled). Needs Debian's Chromium
    (`make browser`, which `make test` runs first)."""
    import json as _json
    import urllib.request

    from tests.test_portal import CHROMIUM, CHROMIUM_FLAGS, build_in_portal

    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: `make browser` installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    table = {"dataset": "residents", "dimensions": ["sex"],
             "measures": ["count", "per_1000:emergency_admissions"]}  # fmt: skip
    req = urllib.request.Request(
        url + "/api/tables",
        data=_json.dumps({"table": table}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        api_rows = _json.loads(resp.read())["rows"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/")
            page.fill("#token", token)
            page.click("#sign-in")
            page.wait_for_selector("#whoami", timeout=60_000)
            assert page.text_content("#whoami") == "amira"
            page.goto(url + "/portal/catalogue")
            assert "tenure" in (page.text_content("#dataset-households") or "")
            rows = build_in_portal(page, url, "residents", ["sex"], "per_1000:emergency_admissions")
            assert rows == api_rows, (rows, api_rows)
            titles = page.locator("svg .axis-title").all_text_contents()
            assert "emergency admissions per 1000" in titles, titles
            assert not leaks(page.content(), ex)
        finally:
            browser.close()
