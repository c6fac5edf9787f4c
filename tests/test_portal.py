"""Output checking and the portal on a real `uprnlink serve`: releases, the queue, separation of
duties, downloads, the register, the attacks on each, and the whole journey in a headless
Chromium (screenshots into docs/img/portal-*.png)."""

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


def test_a_passing_output_is_released_numbered_and_fingerprinted(
    query_service: QueryService, people: dict[str, str]
) -> None:
    status, record, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {"sql": PASSING_SQL}
    )
    assert status == 201, record
    assert record["status"] == "released" and record["decided_by"] == "rules"
    assert record["release_no"] >= 1 and "sql" not in record
    status, data, headers = api(
        query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"]
    )
    assert status == 200 and hashlib.sha256(data).hexdigest() == record["sha256"]
    assert headers["x-uprnlink-sha256"] == record["sha256"]
    released = [
        e
        for e in events(query_service, "output.released")
        if e["data"]["output_id"] == record["id"]
    ]
    assert released and released[0]["data"]["approved_by"] == "rules"
    assert events(query_service, "output.downloaded")
    # The analyst's own SQL never reaches the log.
    assert "GROUP BY tenure" not in query_service.audit_log.read_text()


def test_sums_are_checked_for_dominance_by_a_companion_query(
    query_service: QueryService, people: dict[str, str]
) -> None:
    sql = (
        "SELECT tenure, count(*) AS households, sum(residents) AS residents "
        "FROM households GROUP BY tenure"
    )
    status, record, _ = api(query_service, "POST", "/api/outputs", people["ana"], {"sql": sql})
    assert status == 201, record  # checked (not "could not be checked"), and no cell dominated
    assert record["shape"]["sums"] == ["residents"] and record["verdict"]["passed"]
    # Without a count beside the sum the rules cannot see the units behind it.
    status, body, _ = api(
        query_service,
        "POST",
        "/api/outputs",
        people["ana"],
        {"sql": "SELECT tenure, sum(residents) AS residents FROM households GROUP BY tenure"},
    )
    assert status == 422 and "no-count" in {f["rule"] for f in body["rules"]}


def test_withheld_cells_leave_as_c(query_service: QueryService, people: dict[str, str]) -> None:
    named = {"named": "emergency_admissions_by_tenure_and_deprivation"}
    status, record, _ = api(query_service, "POST", "/api/outputs", people["ana"], named)
    assert status == 201, record
    _, data, _ = api(query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"])
    header, *rows = data.decode().splitlines()
    withheld = [header.split(",").index(c) for c in record["shape"]["withheld"]]
    cells = [row.split(",")[i] for row in rows for i in withheld]
    assert "[c]" in cells and "" not in cells  # withheld is [c], never an empty string
    status, record, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {**named, "format": "parquet"}
    )
    _, data, _ = api(query_service, "GET", f"/api/outputs/{record['id']}/download", people["ana"])
    import polars as pl

    frame = pl.read_parquet(io.BytesIO(data))
    assert frame["emergency_admissions_withheld"].any()
    assert (
        frame.filter(pl.col("emergency_admissions_withheld"))["emergency_admissions"].null_count()
        > 0
    )


def test_refused_outputs_name_their_rules(
    query_service: QueryService, people: dict[str, str]
) -> None:
    status, body, _ = api(
        query_service, "POST", "/api/outputs", people["ana"], {"sql": "SELECT * FROM households"}
    )
    assert status == 422 and [f["rule"] for f in body["rules"]] == ["row-level"]
    status, body, _ = api(query_service, "POST", "/api/outputs", people["ana"], {"sql": SMALL_SQL})
    assert status == 422 and "threshold" in {f["rule"] for f in body["rules"]}
    assert not re.search(r"\b[0-9]\b cells? \w+ [0-9]", body["error"])  # counts of cells, no values
    checked = events(query_service, "output.checked")
    assert any(not e["data"]["passed"] and "row-level" in e["data"]["rules"] for e in checked)
    # Nothing was stored for a refusal that was not submitted.
    status, mine, _ = api(query_service, "GET", "/api/outputs", people["ana"])
    assert all(r["status"] != "pending" for r in mine)


def test_review_separation_of_duties_and_downloads(
    query_service: QueryService, people: dict[str, str]
) -> None:
    svc = query_service
    status, body, _ = api(
        svc, "POST", "/api/outputs", people["ana"], {"sql": SMALL_SQL, "submit": True}
    )
    assert status == 400  # a submission needs a justification
    status, rec, _ = api(
        svc,
        "POST",
        "/api/outputs",
        people["ana"],
        {"sql": SMALL_SQL, "submit": True, "justification": "for the steering group"},
    )
    assert status == 201 and rec["status"] == "pending"
    oid = rec["id"]
    # Not downloadable while pending, not approvable by an analyst.
    assert api(svc, "GET", f"/api/outputs/{oid}/download", people["ana"])[0] == 409
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["ana"], {})[0] == 403
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["ig"], {})[0] == 403
    # Another analyst cannot see it (not even that it exists).
    assert api(svc, "GET", f"/api/outputs/{oid}", people["ana2"])[0] == 404
    # A checker cannot approve their own submission.
    status, own, _ = api(
        svc,
        "POST",
        "/api/outputs",
        people["chk1"],
        {
            "sql": "SELECT key, count(*) AS n FROM run_info GROUP BY key",
            "submit": True,
            "justification": "mine",
        },
    )
    assert status == 201 and own["status"] == "pending", own
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
    status, approved, _ = api(
        svc, "POST", f"/api/outputs/{oid}/approve", people["chk1"], {"note": "ok"}
    )
    assert status == 200 and approved["status"] == "released" and approved["decided_by"] == "chk1"
    assert api(svc, "POST", f"/api/outputs/{oid}/approve", people["chk2"], {})[0] == 409
    # Its submitter and the IG lead download it; nobody else does.
    status, data, _ = api(svc, "GET", f"/api/outputs/{oid}/download", people["ana"])
    assert status == 200 and hashlib.sha256(data).hexdigest() == approved["sha256"]
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


def test_the_cli_writes_only_checked_outputs_and_prints_readable_tables(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    svc = query_service
    out = _cli(svc, people["ana"], "query", "--named", "overcrowding_by_deprivation", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("imd_decile"))
    assert "households_bedrooms_known" in header or "overcrowded" in header
    assert re.search(r"^[0-9,]+ rows?$", out.stdout, re.M)
    assert "…" not in out.stdout
    ok = _cli(svc, people["ana"], "query", "--csv", "t.csv", PASSING_SQL, cwd=tmp_path)
    assert ok.returncode == 0 and "release no." in ok.stdout, ok.stderr
    assert (tmp_path / "t.csv").read_text().startswith("tenure,households")
    refused = _cli(svc, people["ana"], "query", "--csv", "s.csv", SMALL_SQL, cwd=tmp_path)
    assert refused.returncode == 8 and "threshold" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "s.csv").exists()
    queued = _cli(
        svc,
        people["ana"],
        "query",
        "--csv",
        "s.csv",
        "--submit",
        "for the board",
        SMALL_SQL,
        cwd=tmp_path,
    )
    assert queued.returncode == 0 and "Submitted out-" in queued.stdout
    oid = re.search(r"(out-\d{6})", queued.stdout).group(1)  # type: ignore[union-attr]
    listing = _cli(svc, people["chk2"], "outputs", "list", cwd=tmp_path)
    assert oid in listing.stdout
    assert _cli(svc, people["ana"], "outputs", "approve", oid, cwd=tmp_path).returncode == 8
    approved = _cli(svc, people["chk2"], "outputs", "approve", oid, "--note", "fine", cwd=tmp_path)
    assert approved.returncode == 0 and "released as no." in approved.stdout
    got = _cli(svc, people["ana"], "outputs", "download", oid, "--out", "s.csv", cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "s.csv").exists()
    register = _cli(svc, people["ig"], "outputs", "register", cwd=tmp_path)
    assert oid in register.stdout


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
    # CSRF: no token, a wrong token, another origin.
    assert (
        _post(opener, svc, "/portal/ask", {"named": "overcrowding_by_deprivation"}, svc.url) == 403
    )
    assert (
        _post(
            opener,
            svc,
            "/portal/ask",
            {"named": "overcrowding_by_deprivation", "csrf": "x"},
            svc.url,
        )
        == 403
    )
    assert (
        _post(
            opener,
            svc,
            "/portal/ask",
            {"named": "overcrowding_by_deprivation", "csrf": csrf},
            "http://evil.example",
        )
        == 403
    )
    assert (
        _post(
            opener,
            svc,
            "/portal/ask",
            {"named": "overcrowding_by_deprivation", "csrf": csrf},
            svc.url,
        )
        == 200
    )
    assert events(svc, "portal.csrf_refused")
    # An analyst opening the checkers' page, or someone else's output.
    with pytest.raises(urllib.error.HTTPError) as page:
        opener.open(svc.url + "/portal/governance", timeout=30)
    assert page.value.code == 403
    status, other, _ = api(
        svc, "POST", "/api/outputs", people["ana2"], {"sql": PASSING_SQL, "format": "parquet"}
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
    # Approving through the portal: an analyst may not.
    status, pending, _ = api(
        svc,
        "POST",
        "/api/outputs",
        people["ana2"],
        {"sql": SMALL_SQL, "submit": True, "justification": "x"},
    )
    assert (
        _post(
            opener,
            svc,
            f"/portal/outputs/{pending['id']}/decide",
            {"decision": "approve", "csrf": csrf},
            svc.url,
        )
        == 403
    )
    # Without a session every page sends you to sign in.
    with urllib.request.urlopen(svc.url + "/portal/outputs", timeout=30) as resp:
        assert resp.url.endswith("/portal/login")


# ----------------------------------------------------------------------------- browser


@pytest.mark.browser
def test_the_portal_end_to_end_in_a_headless_browser(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    """Sign-in, a named question, a refused query, an output submitted, approved by a checker
    and downloaded, in Debian's Chromium (`make browser` installs it).

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
            page.goto(svc.url + "/portal/")
            assert page.url.endswith("/portal/login")
            page.screenshot(path=str(shots / "portal-login.png"))
            page.fill("#token", people["ana"])
            page.click("#sign-in")
            page.wait_for_load_state()
            if not page.locator("#whoami").count():
                page.screenshot(path=str(shots / "portal-debug.png"))
                raise AssertionError(page.url + " " + (page.text_content("body") or "")[:300])
            assert page.text_content("#whoami") == "ana"
            page.select_option("#named", "emergency_admissions_by_tenure_and_deprivation")
            page.click("#ask-named")
            page.wait_for_selector("#result")
            assert "rows" in (page.text_content("#row-count") or "")
            assert page.locator("svg[role=img] rect").count() > 0
            if page.locator("td.withheld").count():
                assert page.text_content("td.withheld") == "[c]"
                assert "confidential" in (page.text_content("#footnote") or "")
            page.screenshot(path=str(shots / "portal-named-question.png"), full_page=True)
            page.fill("#sql", "SELECT count(*) AS n FROM read_csv('/etc/hosts')")
            page.click("#ask-sql")
            page.wait_for_selector("#refused")
            assert "refused" in (page.text_content("#refused") or "").lower()
            page.screenshot(path=str(shots / "portal-refused.png"))
            page.fill("#sql", SMALL_SQL)
            page.click("#ask-sql")
            page.wait_for_selector("#verdict")
            assert "threshold" in (page.text_content("#verdict") or "")
            page.fill(
                "#justification", "Small-area table for the housing board; cells checked by hand."
            )
            page.screenshot(path=str(shots / "portal-output-check.png"), full_page=True)
            page.click("#submit-review")
            page.wait_for_selector("#status")
            assert page.text_content("#status") == "pending"
            output_url = page.url
            oid = output_url.rsplit("/", 1)[1]

            checker = browser.new_context(viewport={"width": 1200, "height": 900})
            cpage = checker.new_page()
            cpage.goto(svc.url + "/portal/login")
            cpage.fill("#token", people["chk1"])
            cpage.click("#sign-in")
            cpage.goto(svc.url + "/portal/governance")
            assert "intact" in (cpage.text_content("#audit-status") or "")
            assert oid in (cpage.text_content("#queue") or "")
            cpage.screenshot(path=str(shots / "portal-governance.png"), full_page=True)
            cpage.goto(output_url)
            cpage.fill("#note", "Checked: cells are counts of households; approved.")
            cpage.screenshot(path=str(shots / "portal-checker-review.png"), full_page=True)
            cpage.click("#approve")
            cpage.wait_for_selector("#release-no")
            assert cpage.text_content("#status") == "released"
            assert not cpage.locator("#download").count()  # not the checker's to download

            page.goto(output_url)
            assert page.text_content("#status") == "released"
            with page.expect_download() as info:
                page.click("#download")
            path = info.value.path()
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            assert digest == page.text_content("#sha256")
            page.goto(svc.url + "/portal/outputs")
            page.screenshot(path=str(shots / "portal-outputs.png"), full_page=True)
        finally:
            browser.close()
    taken = {p.name for p in shots.glob("portal-*.png") if p.stat().st_size > 1000}
    assert {
        "portal-login.png",
        "portal-named-question.png",
        "portal-refused.png",
        "portal-output-check.png",
        "portal-governance.png",
        "portal-checker-review.png",
        "portal-outputs.png",
    } <= taken


def test_analysts_see_only_checked_answers_and_a_role_can_be_let_see_more(
    query_service: QueryService, people: dict[str, str], tmp_path: Path
) -> None:
    """The shipped policy holds analysts to checked answers on screen too (they read from their
    own machines, so every answer leaves the service); `unchecked_answers = true` lets a role
    see answers the rules would refuse, files still checked."""
    from tests.conftest import free_port, service_environment, start_service
    from uprnlink.resources import default_policy_path

    status, body, _ = api(query_service, "POST", "/api/query", people["ana"], {"sql": SMALL_SQL})
    assert status == 422 and "threshold" in body["error"], body
    assert "rows" not in body
    status, body, _ = api(query_service, "POST", "/api/query", people["ana"], {"sql": PASSING_SQL})
    assert status == 200 and body["row_count"] >= 1
    refused = events(query_service, "answer.refused")
    assert refused and refused[-1]["data"]["rules"] == ["threshold"]

    root = tmp_path / "lenient"
    shutil.copytree(query_service.root, root, symlinks=True)
    policy = root / "lenient-policy.toml"
    shipped = default_policy_path().read_text()
    assert "[roles.analyst]" in shipped and "unchecked_answers = false" in shipped
    policy.write_text(shipped.replace("unchecked_answers = false", "unchecked_answers = true", 1))
    config = root / "config" / "demo.toml"
    config.write_text(config.read_text().replace("[run]\n", f'[run]\npolicy = "{policy}"\n', 1))
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
