"""Outputs, jobs and the portal on a real `uprnlink serve`: tables released as built, typed SQL
held for checkers, separation of duties, downloads, the register, the attacks on each, and
each user's journey in a headless Chromium (screenshots into docs/img/portal-*.png)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import QueryService
from uprnlink.settings import PROJECT_ROOT, read_settings

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("UPRNLINK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSING_SQL = "SELECT tenure, count(*) AS households FROM households GROUP BY tenure"
SMALL_SQL = (
    "SELECT residents, tenure, count(*) AS households FROM households GROUP BY residents, "
    "tenure ORDER BY 1, 2"
)
TABLE = {
    "dataset": "residents",
    "dimensions": ["sex", "broad_age"],
    "measures": ["count", "per_1000:emergency_admissions"],
}


def api(
    svc: QueryService, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(svc.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status = resp.read(), resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
        headers = {k.lower(): v for k, v in exc.headers.items()}
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw, headers


@pytest.fixture(scope="module")
def people(query_service: QueryService) -> dict[str, str]:
    """Tokens: the fixture's ana (analyst) and ig (ig_lead), plus ana2 (analyst) and two
    output checkers, chk1 and chk2."""
    from uprnlink import cli

    tokens = {"ana": query_service.tokens["analyst"], "ig": query_service.tokens["ig_lead"]}
    for name, role in (("ana2", "analyst"), ("chk1", "output_checker"), ("chk2", "output_checker")):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(
                ["users", "add", name, "--role", role, "--config", str(query_service.config)]
            )
        assert code == 0
        tokens[name] = out.getvalue().strip().splitlines()[1]
    return tokens


def events(svc: QueryService, name: str) -> list[dict[str, Any]]:
    return [e for e in svc.audit_events() if e["event"] == name]


def tagged(sql: str, tag: str) -> str:
    """The same query with a comment of its own: a different job (the same SQL from the same
    user is not queued twice)."""
    return f"{sql} -- {tag}"


def job(svc: QueryService, token: str, sql: str, **extra: Any) -> tuple[int, Any]:
    body = {"sql": sql, "title": extra.pop("title", "a job"), "justification": "for the board"}
    body.update(extra)
    status, record, _ = api(svc, "POST", "/api/jobs", token, body)
    return status, record


def wait_for(svc: QueryService, token: str, oid: str, states: set[str]) -> dict[str, Any]:
    """A job's record, as a checker sees it, once it is in one of `states`."""
    import time

    deadline = time.monotonic() + 90
    while True:
        status, record, _ = api(svc, "GET", f"/api/outputs/{oid}", token)
        assert status == 200, record
        if record["status"] in states:
            return dict(record)
        assert time.monotonic() < deadline, record
        time.sleep(0.2)


def test_a_table_is_released_numbered_and_fingerprinted_at_once(
    query_service: QueryService, people: dict[str, str]
) -> None:
    status, record, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {"table": TABLE, "title": "ages"}
    )
    assert status == 201, record
    assert record["status"] == "released" and record["kind"] == "table"
    assert record["release_no"] >= 1 and record["title"] == "ages"
    status, data, headers = api(
        query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"]
    )
    assert status == 200 and hashlib.sha256(data).hexdigest() == record["sha256"]
    assert headers["x-uprnlink-sha256"] == record["sha256"]
    # The same table on screen has the same cells as the file.
    status, shown, _ = api(query_service, "POST", "/api/tables", people["ana"], {"table": TABLE})
    assert status == 200
    lines = data.decode().splitlines()
    assert len(lines) == shown["row_count"] + 1
    released = [
        e
        for e in events(query_service, "output.released")
        if e["data"]["output_id"] == record["id"]
    ]
    assert released and released[0]["data"]["approved_by"] == "table-builder"
    assert events(query_service, "output.downloaded")
    # Asked again, the same cells are the same output: its number, not a new one.
    status, again, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {"table": TABLE, "title": "again"}
    )
    assert status in (200, 201) and again["id"] == record["id"], again
    assert again["release_no"] == record["release_no"]
    assert any(
        e["data"]["output_id"] == record["id"] for e in events(query_service, "output.duplicate")
    )


def test_withheld_cells_leave_as_c(query_service: QueryService, people: dict[str, str]) -> None:
    named = {"named": "emergency_admissions_by_tenure_and_deprivation"}
    status, record, _ = api(query_service, "POST", "/api/outputs", people["ana"], named)
    assert status == 201, record
    _, data, _ = api(query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"])
    header, *rows = data.decode().splitlines()
    columns = header.split(",")
    measures = [i for i, c in enumerate(columns) if c not in ("imd_decile", "tenure")]
    cells = [row.split(",")[i] for row in rows for i in measures]
    assert "[c]" in cells and "" not in cells  # withheld is [c], never an empty string
    status, record, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {**named, "format": "parquet"}
    )
    _, data, _ = api(query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"])
    import polars as pl

    frame = pl.read_parquet(io.BytesIO(data))
    assert frame["residents_withheld"].any()
    assert frame.filter(pl.col("residents_withheld"))["residents"].null_count() > 0


def test_the_rules_advise_the_checker_and_release_nothing(
    query_service: QueryService, people: dict[str, str]
) -> None:
    """A job whose output passes every rule and one that breaks them both wait for a person;
    the rules' findings are shown to checkers, never to the submitter."""
    svc = query_service
    status, passing = job(svc, people["ana"], tagged(PASSING_SQL, "advice"), title="passes")
    assert status == 202 and passing["status"] == "awaiting review"
    status, small = job(svc, people["ana"], tagged(SMALL_SQL, "advice"), title="small cells")
    assert status == 202
    checker = people["chk1"]
    assert wait_for(svc, checker, passing["id"], {"pending"})["verdict"]["passed"] is True
    advice = wait_for(svc, checker, small["id"], {"pending"})["verdict"]
    assert not advice["passed"] and "threshold" in {f["rule"] for f in advice["findings"]}
    for oid in (passing["id"], small["id"]):
        status, mine, _ = api(svc, "GET", f"/api/outputs/{oid}", people["ana"])
        assert mine["status"] == "awaiting review" and "verdict" not in mine
    sums = (
        "SELECT tenure, count(*) AS households, sum(residents) AS residents "
        "FROM households GROUP BY tenure"
    )
    status, with_sums = job(svc, people["ana"], sums, title="sums")
    record = wait_for(svc, checker, with_sums["id"], {"pending"})
    assert record["shape"]["sums"] == ["residents"] and record["verdict"]["passed"]
    # The analyst's own SQL never reaches the log.
    assert "GROUP BY tenure" not in svc.audit_log.read_text()


def test_review_separation_of_duties_and_downloads(
    query_service: QueryService, people: dict[str, str]
) -> None:
    svc = query_service
    status, body, _ = api(
        svc,
        "POST",
        "/api/jobs",
        people["ana"],
        {"sql": SMALL_SQL, "title": "t", "justification": ""},
    )
    assert status == 400  # a job needs a justification
    status, rec = job(svc, people["ana"], tagged(SMALL_SQL, "duties"), title="steering group")
    assert status == 202
    oid = rec["id"]
    # Not downloadable while waiting, not approvable by an analyst or an IG lead.
    assert api(svc, "GET", f"/api/outputs/{oid}/download", people["ana"])[0] == 409
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["ana"], {})[0] == 403
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["ig"], {})[0] == 403
    # Another analyst cannot see it (not even that it exists).
    assert api(svc, "GET", f"/api/outputs/{oid}", people["ana2"])[0] == 404
    # A checker cannot approve their own job.
    status, own = job(svc, people["chk1"], "SELECT key, count(*) AS n FROM run_info GROUP BY key")
    assert status == 202, own
    wait_for(svc, people["chk2"], own["id"], {"pending"})
    status, body, _ = api(svc, "POST", f"/api/outputs/{own['id']}/approve", people["chk1"], {})
    assert status == 403 and "another output checker" in body["error"]
    assert any(
        e["data"].get("rule") == "own-submission" for e in events(svc, "output.decision_refused")
    )
    # A rejection needs a reason; a second decision is refused.
    assert api(svc, "POST", f"/api/outputs/{own['id']}/reject", people["chk2"], {})[0] == 400
    status, rejected, _ = api(
        svc, "POST", f"/api/outputs/{own['id']}/reject", people["chk2"], {"note": "no"}
    )
    assert status == 200 and rejected["status"] == "rejected"
    # Another checker approves the analyst's: released, numbered.
    wait_for(svc, people["chk1"], oid, {"pending"})
    status, approved, _ = api(
        svc, "POST", f"/api/outputs/{oid}/approve", people["chk1"], {"note": "ok"}
    )
    assert status == 200 and approved["status"] == "released" and approved["decided_by"] == "chk1"
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["chk2"], {})[0] == 409
    # Its submitter and the IG lead download it; nobody else does.
    status, data, _ = api(svc, "GET", f"/api/outputs/{oid}/download", people["ana"])
    assert status == 200 and hashlib.sha256(data).hexdigest() == approved["sha256"]
    status, mine, _ = api(svc, "GET", f"/api/outputs/{oid}", people["ana"])
    assert mine["status"] == "released" and mine["rows"] > 0 and "verdict" not in mine
    assert api(svc, "GET", f"/api/outputs/{oid}/download", people["ig"])[0] == 200
    assert api(svc, "GET", f"/api/outputs/{oid}/download", people["ana2"])[0] == 404
    assert api(svc, "GET", f"/api/outputs/{oid}/download", people["chk2"])[0] == 404
    # Path traversal and malformed ids never reach the file system.
    for bad in ("..%2F..%2Fusers.json", "out-000001%2F..%2F..", "..", "out-1", "OUT-000001"):
        assert api(svc, "GET", f"/api/outputs/{bad}/download", people["ig"])[0] in (404, 405)
    # The register: checkers and IG leads only, in release order.
    assert api(svc, "GET", "/api/outputs/register", people["ana"])[0] == 403
    status, register, _ = api(svc, "GET", "/api/outputs/register", people["ig"])
    numbers = [r["release_no"] for r in register]
    assert status == 200 and numbers == sorted(numbers) and oid in {r["id"] for r in register}
    for name in (
        "output.submitted",
        "output.job_ready",
        "output.approved",
        "output.rejected",
        "output.download_refused",
    ):
        assert events(svc, name), name
    # Bytes changed on disk after release: refused, and logged.
    stored = read_settings(svc.config).out_dir / "outputs" / oid / f"{oid}.csv"
    stored.write_bytes(stored.read_bytes() + b"x,1\n")
    status, body, _ = api(svc, "GET", f"/api/outputs/{oid}/download", people["ana"])
    assert status == 409 and "fingerprint" in body["error"]
    assert events(svc, "output.tampered")


def _cli(svc: QueryService, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPRNLINK_")}
    env.update(UPRNLINK_TOKEN=token, UPRNLINK_URL=svc.url)
    return subprocess.run(
        [sys.executable, "-m", "uprnlink", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_the_cli_keeps_tables_and_submits_jobs(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    svc = query_service
    out = _cli(svc, people["ana"], "query", "--named", "overcrowding_by_deprivation", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("imd_decile"))
    assert "overcrowded_pct" in header
    assert re.search(r"^[0-9,]+ rows?$", out.stdout, re.M)
    assert "…" not in out.stdout
    ok = _cli(
        svc,
        people["ana"],
        "table",
        "households",
        "--by",
        "tenure",
        "--csv",
        "t.csv",
        cwd=tmp_path,
    )
    assert ok.returncode == 0 and "release no." in ok.stdout, ok.stderr
    assert (tmp_path / "t.csv").read_text().startswith("tenure,count")
    refused = _cli(svc, people["ana"], "query", "--csv", "s.csv", SMALL_SQL, cwd=tmp_path)
    assert refused.returncode == 2 and "jobs submit" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "s.csv").exists()
    queued = _cli(
        svc,
        people["ana"],
        "jobs",
        "submit",
        "--title",
        "small",
        "--why",
        "for the board",
        SMALL_SQL,
        cwd=tmp_path,
    )
    assert queued.returncode == 0 and "Submitted job out-" in queued.stdout, queued.stderr
    oid = re.search(r"(out-\d{6})", queued.stdout).group(1)  # type: ignore[union-attr]
    again = _cli(
        svc,
        people["ana"],
        "jobs",
        "submit",
        "--title",
        "small",
        "--why",
        "again",
        SMALL_SQL,
        cwd=tmp_path,
    )
    assert again.returncode == 0 and "not queued twice" in again.stdout
    mine = _cli(svc, people["ana"], "jobs", "list", cwd=tmp_path)
    assert oid in mine.stdout and "awaiting review" in mine.stdout
    listing = _cli(svc, people["chk2"], "outputs", "list", cwd=tmp_path)
    assert oid in listing.stdout
    assert _cli(svc, people["ana"], "outputs", "approve", oid, cwd=tmp_path).returncode == 8
    wait_for(svc, people["chk2"], oid, {"pending"})
    shown = _cli(svc, people["chk2"], "outputs", "show", oid, cwd=tmp_path)
    assert "advice        threshold" in shown.stdout
    assert "The held output (" in shown.stdout  # the checker sees what would leave
    own = _cli(svc, people["ana"], "outputs", "show", oid, cwd=tmp_path)
    assert "held output" not in own.stdout and "advice" not in own.stdout
    approved = _cli(svc, people["chk2"], "outputs", "approve", oid, "--note", "fine", cwd=tmp_path)
    assert approved.returncode == 0 and "released as no." in approved.stdout
    got = _cli(svc, people["ana"], "outputs", "download", oid, "--out", "s.csv", cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "s.csv").exists()
    register = _cli(svc, people["ig"], "outputs", "register", cwd=tmp_path)
    assert oid in register.stdout
    cat = _cli(svc, people["ana"], "catalogue", "--dataset", "households", cwd=tmp_path)
    assert cat.returncode == 0 and "--by tenure" in cat.stdout


# ----------------------------------------------------------------------------- portal attacks


def _portal_session(svc: QueryService, token: str) -> tuple[Any, str]:
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    data = urllib.parse.urlencode({"token": token}).encode()
    req = urllib.request.Request(svc.url + "/portal/login", data=data, method="POST")
    req.add_header("Origin", svc.url)
    with opener.open(req, timeout=30) as resp:
        page = resp.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, page[:500]
    return opener, csrf.group(1)


def _post(
    opener: Any, svc: QueryService, path: str, fields: dict[str, str], origin: str | None
) -> int:
    req = urllib.request.Request(
        svc.url + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
    )
    if origin:
        req.add_header("Origin", origin)
    try:
        with opener.open(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _open(opener: Any, svc: QueryService, path: str) -> str:
    with opener.open(svc.url + path, timeout=30) as resp:
        return str(resp.read().decode())


def test_portal_sessions_and_attacks(query_service: QueryService, people: dict[str, str]) -> None:
    svc = query_service
    data = urllib.parse.urlencode({"token": people["ana"]}).encode()
    req = urllib.request.Request(svc.url + "/portal/login", data=data, method="POST")
    req.add_header("Origin", svc.url)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(req, timeout=30)
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303
        cookie = exc.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    # A wrong token is refused.
    bad = urllib.request.Request(
        svc.url + "/portal/login", data=b"token=ulk_000000000000_" + b"x" * 43, method="POST"
    )
    bad.add_header("Origin", svc.url)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=30)
    assert refused.value.code == 401
    opener, csrf = _portal_session(svc, people["ana"])
    ask = {"named": "overcrowding_by_deprivation"}
    # CSRF: no token, a wrong token, another origin.
    assert _post(opener, svc, "/portal/ask", ask, svc.url) == 403
    assert _post(opener, svc, "/portal/ask", {**ask, "csrf": "x"}, svc.url) == 403
    assert _post(opener, svc, "/portal/ask", {**ask, "csrf": csrf}, "http://evil.example") == 403
    assert _post(opener, svc, "/portal/ask", {**ask, "csrf": csrf}, svc.url) == 200
    assert events(svc, "portal.csrf_refused")
    # An analyst opening the checkers' page, SQL on screen, or someone else's output.
    with pytest.raises(urllib.error.HTTPError) as page:
        opener.open(svc.url + "/portal/governance", timeout=30)
    assert page.value.code == 403
    assert _post(opener, svc, "/portal/sql", {"sql": PASSING_SQL, "csrf": csrf}, svc.url) == 403
    status, other, _ = api(
        svc, "POST", "/api/outputs", people["ana2"], {"table": TABLE, "format": "parquet"}
    )
    assert status == 201
    for path in (
        f"/portal/outputs/{other['id']}",
        f"/portal/outputs/{other['id']}/download",
        "/portal/outputs/..%2F..%2Fusers.json/download",
    ):
        with pytest.raises(urllib.error.HTTPError) as denied:
            opener.open(svc.url + path, timeout=30)
        assert denied.value.code == 404, path
    # A job submitted from the portal: its page and the list show nothing of its output.
    assert (
        _post(
            opener,
            svc,
            "/portal/jobs",
            {
                "sql": tagged(SMALL_SQL, "portal"),
                "title": "from the portal",
                "justification": "x",
                "csrf": csrf,
            },
            svc.url,
        )
        == 200
    )
    mine = [
        r for r in api(svc, "GET", "/api/jobs", people["ana"])[1] if r["title"] == "from the portal"
    ]
    oid = mine[0]["id"]
    record = wait_for(svc, people["chk1"], oid, {"pending"})
    html = _open(opener, svc, f"/portal/outputs/{oid}")
    assert "awaiting review" in html and "threshold" not in html
    assert "The output as it would leave" not in html and "<td" not in html
    jobs_page = _open(opener, svc, "/portal/jobs")
    assert oid in jobs_page and str(record["rows"]) + " rows" not in jobs_page
    # Approving through the portal: an analyst may not.
    assert (
        _post(
            opener,
            svc,
            f"/portal/outputs/{oid}/decide",
            {"decision": "approve", "csrf": csrf},
            svc.url,
        )
        == 403
    )
    # Without a session every page sends you to sign in; / sends you to the portal.
    with urllib.request.urlopen(svc.url + "/portal/outputs", timeout=30) as resp:
        assert resp.url.endswith("/portal/login")
    with urllib.request.urlopen(svc.url + "/", timeout=30) as resp:
        assert resp.url.endswith("/portal/login")


def test_two_checkers_when_the_policy_asks_for_two(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    """`[output_checking] checkers_required = 2`: one approval keeps a job waiting, a second
    checker's releases it, and one checker cannot approve twice. With `max_waiting_jobs = 2`
    a user's third undecided job is refused until one of theirs is decided (a red team filled
    the shared queue with one analyst's jobs)."""
    from tests.conftest import free_port, service_environment, start_service
    from uprnlink.resources import default_policy_path

    root = tmp_path / "two"
    # the running service may be writing its audit head (a transient .tmp): not copied
    shutil.copytree(query_service.root, root, symlinks=True, ignore=shutil.ignore_patterns("*.tmp"))
    policy = root / "suite-policy.toml"  # the fixture's copy of the policy, copied above
    shipped = default_policy_path().read_text()
    assert "checkers_required = 1" in shipped
    assert "max_waiting_jobs = 5" in shipped
    policy.write_text(
        shipped.replace("checkers_required = 1", "checkers_required = 2", 1).replace(
            "max_waiting_jobs = 5", "max_waiting_jobs = 2", 1
        )
    )
    config = root / "config" / "demo.toml"
    config.write_text(config.read_text().replace(str(query_service.root), str(root)))
    from uprnlink.settings import read_settings

    shutil.rmtree(read_settings(config).out_dir / "outputs", ignore_errors=True)  # no old jobs
    port = free_port()
    proc = start_service(config, port, root / "two.log", service_environment())
    try:
        svc = QueryService(f"http://127.0.0.1:{port}", root, config, {}, proc, root / "two.log")
        status, rec = job(svc, people["ana"], tagged(PASSING_SQL, "two"), title="two checkers")
        assert status == 202
        wait_for(svc, people["chk1"], rec["id"], {"pending"})
        url = f"/api/outputs/{rec['id']}/approve"
        status, first, _ = api(svc, "POST", url, people["chk1"], {"note": "ok"})
        assert status == 200 and first["status"] == "pending" and first["approvals"] == ["chk1"]
        assert api(svc, "GET", f"/api/outputs/{rec['id']}/download", people["ana"])[0] == 409
        assert api(svc, "POST", url, people["chk1"], {})[0] == 409
        status, second, _ = api(svc, "POST", url, people["chk2"], {"note": "ok too"})
        assert status == 200 and second["status"] == "released"
        assert second["decided_by"] == "chk1, chk2"
        assert api(svc, "GET", f"/api/outputs/{rec['id']}/download", people["ana"])[0] == 200

        held = [job(svc, people["ana"], tagged(PASSING_SQL, f"cap {i}"))[1] for i in range(2)]
        status, refused = job(svc, people["ana"], tagged(PASSING_SQL, "cap 2"))
        assert status == 429 and "max_waiting_jobs" in json.dumps(refused)
        assert job(svc, people["ana2"], tagged(PASSING_SQL, "another user"))[0] == 202
        wait_for(svc, people["chk1"], held[0]["id"], {"pending", "failed"})
        url = f"/api/outputs/{held[0]['id']}/reject"
        assert api(svc, "POST", url, people["chk1"], {"note": "not needed"})[0] == 200
        assert job(svc, people["ana"], tagged(PASSING_SQL, "cap 2"))[0] == 202
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_trusted_desktop_role_sees_sql_answers_and_analysts_do_not(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    """The shipped policy keeps analysts to tables and jobs (their screens are outside the
    service); `unchecked_answers = true` gives a role on a trusted desktop SQL on screen."""
    from tests.conftest import free_port, service_environment, start_service

    status, body, _ = api(query_service, "POST", "/api/query", people["ana"], {"sql": PASSING_SQL})
    assert status == 403 and "job" in body["error"] and "rows" not in body
    root = tmp_path / "lenient"
    # the running service may be writing its audit head (a transient .tmp): not copied
    shutil.copytree(query_service.root, root, symlinks=True, ignore=shutil.ignore_patterns("*.tmp"))
    policy = root / "suite-policy.toml"  # the fixture's copy of the policy, copied above
    shipped = policy.read_text()
    assert "[roles.analyst]" in shipped and "unchecked_answers = false" in shipped
    policy.write_text(shipped.replace("unchecked_answers = false", "unchecked_answers = true", 1))
    config = root / "config" / "demo.toml"
    config.write_text(config.read_text().replace(str(query_service.root), str(root)))
    port = free_port()
    proc = start_service(config, port, root / "lenient.log", service_environment())
    try:
        lenient = QueryService(
            f"http://127.0.0.1:{port}", root, config, {}, proc, root / "lenient.log"
        )
        status, body, _ = api(lenient, "POST", "/api/query", people["ana"], {"sql": SMALL_SQL})
        assert status == 200 and body["row_count"] >= 1, body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- browser


def build_in_portal(
    page: Any, url: str, dataset: str, dimensions: list[str], measure: str
) -> list[list[Any]]:
    """Build a table on the portal's *Build a table* page (its chart drawing `measure`) and
    read back its rows as the API gives them."""
    page.goto(f"{url}/portal/tables?dataset={dataset}")
    for dimension in dimensions:
        page.check(f"input[name=dimension][value={dimension}]")
    page.check(f"input[name=measure][value='{measure}']")
    page.select_option("#chart-measure", measure)
    page.click("#build")
    page.wait_for_selector("#result")
    return [
        [_cell(td) for td in tr.locator("td").all_text_contents()]
        for tr in page.locator("#result table.result tbody tr").all()
    ]


def _cell(text: str) -> Any:
    text = text.strip()
    if text in ("[c]", ""):
        return None
    number = text.replace(",", "")
    try:
        return int(number)
    except ValueError:
        try:
            return float(number)
        except ValueError:
            return text


@pytest.mark.browser
def test_the_portal_end_to_end_in_a_headless_browser(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    """An analyst signs in, reads the catalogue, answers a named question (its chart draws
    the column the question is about, axes titled), builds a table whose cells are the API's,
    keeps it, and submits a job that shows nothing; a checker reviews it with the rules'
    advice and approves it; the analyst downloads it. In Debian's Chromium (`make browser`).

    The screenshots go to a temporary folder; `make screenshots` (UPRNLINK_SCREENSHOTS=1)
    writes them to docs/img/ instead, so a test run leaves the checkout as it was."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium with apt "
            "(root and apt needed)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    svc = query_service
    docs_img = PROJECT_ROOT / "docs" / "img"
    shots = docs_img if os.environ.get("UPRNLINK_SCREENSHOTS") == "1" else tmp_path / "img"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            analyst = browser.new_context(
                viewport={"width": 1200, "height": 900}, accept_downloads=True
            )
            page = analyst.new_page()
            page.goto(svc.url + "/")
            assert page.url.endswith("/portal/login")
            page.screenshot(path=str(shots / "portal-login.png"))
            page.fill("#token", people["ana"])
            page.click("#sign-in")
            page.wait_for_load_state()
            page.wait_for_selector("#whoami", timeout=60_000)
            if not page.locator("#whoami").count():
                page.screenshot(path=str(shots / "portal-debug.png"))
                raise AssertionError(page.url + " " + (page.text_content("body") or "")[:300])
            assert page.text_content("#whoami") == "ana"

            page.goto(svc.url + "/portal/catalogue")
            assert "tenure" in (page.text_content("#dataset-households") or "")
            assert "households" in (page.text_content("#views") or "")
            page.screenshot(path=str(shots / "portal-catalogue.png"), full_page=True)

            page.goto(svc.url + "/portal/")
            page.click("#ask-emergency_admissions_by_tenure_and_deprivation")
            page.wait_for_selector("#result")
            assert "deprivation" in (page.text_content("#question-text") or "")
            titles = page.locator("svg .axis-title").all_text_contents()
            assert "emergency admissions per 1000" in titles, titles
            assert page.locator("svg[role=img] rect").count() > 0
            if page.locator("td.withheld").count():
                assert page.text_content("td.withheld") == "[c]"
                assert "confidential" in (page.text_content("#footnote") or "")
            page.screenshot(path=str(shots / "portal-named-question.png"), full_page=True)

            rows = build_in_portal(
                page, svc.url, "residents", ["broad_age", "sex"], "per_1000:emergency_admissions"
            )
            status, api_table, _ = api(svc, "POST", "/api/tables", people["ana"], {"table": TABLE})
            assert status == 200 and rows == api_table["rows"]
            assert (
                "emergency admissions per 1000"
                in page.locator("svg .axis-title").all_text_contents()
            )
            page.screenshot(path=str(shots / "portal-table-builder.png"), full_page=True)
            page.click("#keep")
            page.wait_for_selector("#status")
            assert page.text_content("#status") == "released"

            page.goto(svc.url + "/portal/jobs")
            page.fill("#job-title", "Households by size and tenure")
            page.fill("#sql", tagged(SMALL_SQL, "browser"))
            page.fill("#justification", "Small-area table for the housing board.")
            page.click("#submit-job")
            page.wait_for_selector("#job-message")
            message = page.text_content("#job-message") or ""
            oid = re.search(r"out-\d{6}", message).group(0)  # type: ignore[union-attr]
            page.screenshot(path=str(shots / "portal-job-submitted.png"), full_page=True)
            page.goto(svc.url + f"/portal/outputs/{oid}")
            assert page.text_content("#status") == "awaiting review"
            assert not page.locator("table.result").count()

            wait_for(svc, people["chk1"], oid, {"pending"})
            checker = browser.new_context(viewport={"width": 1200, "height": 900})
            cpage = checker.new_page()
            cpage.goto(svc.url + "/portal/login")
            cpage.fill("#token", people["chk1"])
            cpage.click("#sign-in")
            cpage.wait_for_selector("#whoami")  # signed in (the session cookie is set)
            cpage.goto(svc.url + "/portal/governance")
            assert "intact" in (cpage.text_content("#audit-status") or "")
            assert "Households by size and tenure" in (cpage.text_content("#queue") or "")
            cpage.screenshot(path=str(shots / "portal-governance.png"), full_page=True)
            cpage.goto(svc.url + f"/portal/outputs/{oid}")
            assert "threshold" in (cpage.text_content("#findings") or "")
            assert cpage.locator("table.result tbody tr").count() > 0
            cpage.fill("#note", "Checked: cells are counts of households; approved.")
            cpage.screenshot(path=str(shots / "portal-checker-review.png"), full_page=True)
            cpage.click("#approve")
            cpage.wait_for_selector("#release-no")
            assert cpage.text_content("#status") == "released"
            assert not cpage.locator("#download").count()  # not the checker's to download

            page.goto(svc.url + f"/portal/outputs/{oid}")
            assert page.text_content("#status") == "released"
            with page.expect_download() as info:
                page.click("#download")
            path = info.value.path()
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            assert digest == page.text_content("#sha256")
            page.goto(svc.url + "/portal/outputs")
            assert "Households by size and tenure" in (page.text_content("#outputs") or "")
            page.screenshot(path=str(shots / "portal-outputs.png"), full_page=True)
        finally:
            browser.close()
    taken = {p.name for p in shots.glob("portal-*.png") if p.stat().st_size > 1000}
    assert {
        "portal-login.png",
        "portal-catalogue.png",
        "portal-named-question.png",
        "portal-table-builder.png",
        "portal-job-submitted.png",
        "portal-governance.png",
        "portal-checker-review.png",
        "portal-outputs.png",
    } <= taken


def test_the_checkers_queue_shows_jobs_in_every_state(
    query_service: QueryService, people: dict[str, str]
) -> None:
    """A failed job (no output, no advice) and a waiting one both appear in the checker's
    queue, with their titles and justifications."""
    svc = query_service
    status, failed = job(
        svc, people["ana2"], "SELECT error('x') AS e FROM households", title="fails on purpose"
    )
    assert status == 202
    wait_for(svc, people["chk1"], failed["id"], {"failed"})
    status, _ = job(svc, people["ana2"], tagged(PASSING_SQL, "queue"), title="waits")
    assert status == 202
    opener, _ = _portal_session(svc, people["chk1"])
    page = _open(opener, svc, "/portal/governance")
    assert "fails on purpose" in page and "waits" in page
    detail = _open(opener, svc, f"/portal/outputs/{failed['id']}")
    assert "failed" in detail and 'id="failure"' in detail
