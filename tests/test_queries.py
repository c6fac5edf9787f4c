"""The named query library and `uprnlink query`: ready questions, protected answers, audited."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import PipelineRun, QueryService
from uprnlink.cli import main
from uprnlink.errors import ConfigError
from uprnlink.publish.access import AnalystDatabase, read_roles
from uprnlink.publish.database import read_policy
from uprnlink.publish.queries import get_query, list_queries, parse_query, protect_result
from uprnlink.settings import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "analyst-guide.md"
POLICY = PROJECT_ROOT / "governance" / "policy.toml"


def guide_questions() -> list[str]:
    """Named queries the analyst guide works through (`--named NAME`), in order."""
    names = re.findall(r"--named ([a-z0-9_]+)", GUIDE.read_text(encoding="utf-8"))
    return list(dict.fromkeys(names))


def run_query(path: Path, sql: str) -> pl.DataFrame:
    """A query's whole answer from the analysts' database (no governance: tests only)."""
    with AnalystDatabase(path) as db:
        return db.run(sql, max_rows=10_000_000).frame


def test_the_library_parses_and_every_query_is_allowed_for_analysts(
    small_run: PipelineRun,
) -> None:
    queries = list_queries()
    assert len(queries) >= 5
    assert len({q.name for q in queries}) == len(queries)
    analyst = read_roles(POLICY)["analyst"]
    db = AnalystDatabase(small_run.settings.database_path)
    for q in queries:
        assert q.title and q.question, q.name
        check = db.check(q.sql, analyst)
        assert check.allowed, (q.name, check.reason)
        assert not any(r.startswith("linked.") for r in check.relations)
        if q.disclosure != "published":
            assert q.counts and all(p in q.counts and w in q.counts for p, w in q.parts)
    db.close()


def test_the_guide_works_through_at_least_five_named_queries() -> None:
    names = guide_questions()
    assert len(names) >= 5, names
    library = {q.name for q in list_queries()}
    assert set(names) <= library, set(names) - library
    text = GUIDE.read_text(encoding="utf-8")
    for name in names:
        # Each worked question shows its SQL: the query file's body appears in the guide.
        body = [line for line in get_query(name).sql.splitlines() if not line.startswith("--")]
        assert body[0] in text, (name, body[0])


@pytest.mark.parametrize("name", [q.name for q in list_queries()])
def test_every_named_query_answers_on_the_small_run(small_run: PipelineRun, name: str) -> None:
    query = get_query(name)
    policy = read_policy(POLICY)
    raw = run_query(small_run.settings.database_path, query.sql)
    shown, _ = protect_result(query, raw, policy)
    assert shown.height > 0, name
    for c in (*query.dimensions, *query.counts, *(r.name for r in query.rates)):
        assert c in shown.columns, (name, c)
    if query.disclosure != "published":
        for c in query.counts:
            exact = raw.get_column(c).cast(pl.Int64).to_list()
            for v, t in zip(shown.get_column(c).to_list(), exact, strict=True):
                assert v is None or (v == t and not policy.is_primary(t)), (name, c, t)
        for part, whole in query.parts:
            for row in shown.iter_rows(named=True):
                if row[part] is not None and row[whole] is not None:
                    assert not policy.is_primary(row[whole] - row[part]), (name, part)


def _docs_charts() -> Any:
    """docs/img/make_charts.py, the guide's chart script, as a module."""
    import importlib.util

    path = PROJECT_ROOT / "docs" / "img" / "make_charts.py"
    spec = importlib.util.spec_from_file_location("make_charts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", [q.name for q in list_queries() if q.chart])
def test_the_guides_charts_draw_without_a_browser(small_run: PipelineRun, name: str) -> None:
    """Each chart hint draws (Altair, vl-convert); withheld values are null, never zero."""
    charts = _docs_charts()
    query = get_query(name)
    shown, _ = protect_result(
        query, run_query(small_run.settings.database_path, query.sql), read_policy(POLICY)
    )
    chart = charts.chart_for(query, shown)
    spec = chart.to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    value = query.chart.split()[-1]
    assert [r["value"] for r in rows] == shown.get_column(value).to_list()
    svg = io.StringIO()
    chart.save(svg, format="svg")
    assert svg.getvalue().lstrip().startswith("<svg")


@pytest.mark.parametrize(
    "text,error",
    [
        ("SELECT 1", "title"),
        ("-- title: t\n-- disclosure: magic\nSELECT 1", "disclosure"),
        ("-- title: t\n-- dimensions: a\nSELECT 1", "counts"),
        ("-- title: t\n-- counts: n\n-- rates: r = n / / 2\nSELECT 1", "rate"),
        ("-- title: t\n-- counts: n\n-- parts: m of n\nSELECT 1", "part"),
    ],
)
def test_malformed_named_queries_are_refused(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_query("q", text)


def test_header_values_continue_over_lines() -> None:
    q = parse_query(
        "q",
        "-- title: A\n-- question: first part\n--   second part\n-- counts: n, m\n"
        "-- parts: m of n\n-- rates: r = m / n * 100\nSELECT 1",
    )
    assert q.question == "first part second part"
    assert q.parts == (("m", "n"),) and q.rates[0].per == 100.0
    assert q.disclosure == "crosstab"
    with pytest.raises(ConfigError, match="--list"):
        get_query("no_such_question")


def test_list_needs_no_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--list"]) == 0
    out = capsys.readouterr().out
    for q in list_queries():
        assert q.name in out and q.title in out


@pytest.mark.slow
def test_cli_named_query_writes_csv_and_parquet_and_is_audited(
    query_service: QueryService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPRNLINK_TOKEN", query_service.tokens["analyst"])
    csv, parquet = tmp_path / "a.csv", tmp_path / "a.parquet"
    name = "emergency_admissions_by_tenure_and_deprivation"
    args = ["query", "--url", query_service.url, "--named", name]
    before = len(query_service.audit_events())
    assert main([*args, "--csv", str(csv), "--parquet", str(parquet)]) == 0
    from_csv = pl.read_csv(csv)
    from_parquet = pl.read_parquet(parquet)
    assert from_csv.height == from_parquet.height > 0
    assert "emergency_admissions_per_1000" in from_parquet.columns
    assert main(args) == 0
    assert get_query(name).title in capsys.readouterr().out

    # A query and --named at once, or neither, is a usage error; nothing runs.
    assert main(["query", "--url", query_service.url, "--named", name, "SELECT 1"]) == 2
    assert main(["query", "--url", query_service.url]) == 2
    assert main(["query", "--url", query_service.url, "--named", "nope"]) == 8

    events = query_service.audit_events()[before:]
    access = [e for e in events if e["event"] == "access"]
    # Each file is its own checked output (CSV, Parquet), then the screen's answer.
    assert [e["data"].get("named_query") for e in access] == [name, name, name]
    assert [e["data"]["channel"] for e in access] == ["output", "output", "service"]
    released = [e for e in events if e["event"] == "output.released"]
    assert [e["data"]["format"] for e in released] == ["csv", "parquet"]
    assert access[0]["data"]["views"] == ["deprivation_summary"]
    assert access[0]["data"]["rows"] == from_csv.height
    assert main(["audit", "verify", "--config", str(query_service.config)]) == 0
