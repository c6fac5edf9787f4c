"""Named questions and `uprnlink query`: ready tables, protected like any other, audited."""

from __future__ import annotations

import io
import re
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import PipelineRun, QueryService
from uprnlink.cli import main
from uprnlink.errors import ConfigError
from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
from uprnlink.publish.queries import get_query, list_queries, parse_query
from uprnlink.publish.tabulation import TableLimits, TableSpec, read_table_policy, table_sql
from uprnlink.settings import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "analyst-guide.md"
POLICY = PROJECT_ROOT / "governance" / "policy.toml"


def guide_questions() -> list[str]:
    """Named questions the analyst guide works through (`--named NAME`), in order."""
    names = re.findall(r"--named ([a-z0-9_]+)", GUIDE.read_text(encoding="utf-8"))
    return list(dict.fromkeys(names))


def test_the_library_parses_and_every_question_is_a_table_with_words_and_a_chart() -> None:
    questions = list_queries()
    assert len(questions) >= 6
    assert len({q.name for q in questions}) == len(questions)
    for q in questions:
        assert q.title and q.question and q.chart is not None, q.name
        assert q.spec.measures[0].kind == "count"


def test_the_guide_works_through_at_least_five_named_questions() -> None:
    """Each with its generated answer (tests/test_guide.py checks the generator)."""
    names = guide_questions()
    assert len(names) >= 5, names
    library = {q.name for q in list_queries()}
    assert set(names) <= library, set(names) - library
    text = GUIDE.read_text(encoding="utf-8")
    for name in names:
        assert get_query(name).title in text, name
        assert f"<!-- answer: {name} -->" in text, name


@pytest.mark.slow
@pytest.mark.parametrize("name", [q.name for q in list_queries()])
def test_every_named_question_answers_on_the_small_run(small_run: PipelineRun, name: str) -> None:
    """Each question's spec fits the release's categories and limits, and its answer is the
    table builder's: perturbed counts near the true ones, the question's column names."""
    query = get_query(name)
    policy = read_table_policy(POLICY)
    with AnalystDatabase(small_run.settings.database_path) as db:
        known = table_categories(db)
        query.spec.check(known, TableLimits())
        table = build_table(db, query.spec, policy, known)
        raw = db.run(table_sql(query.spec), max_rows=100_000).frame
    shown, withheld = query.present(table)
    assert shown.height > 0
    for column in (*query.spec.dimensions, *(query.shown(m.column) for m in query.spec.measures)):
        assert column in shown.columns, (name, column)
    assert set(withheld) == {query.shown(m.column) for m in query.spec.measures}
    counts = dict(zip(raw.select(query.spec.dimensions).rows(), raw["n"].to_list(), strict=True))
    shown_counts = shown.select(*query.spec.dimensions, query.shown("count"))
    for *key, value in shown_counts.iter_rows():
        if value is not None:
            true = counts.get(tuple(key), 0)
            assert abs(value - true) <= policy.perturbation.max_noise, (name, key, value, true)
            assert value >= policy.perturbation.threshold


def _docs_charts():
    from tests.test_guide import load_generator

    return load_generator()


@pytest.mark.slow
@pytest.mark.parametrize("name", [q.name for q in list_queries() if q.chart])
def test_the_guides_charts_draw_without_a_browser(small_run: PipelineRun, name: str) -> None:
    """Each question's chart draws (Altair, vl-convert) the column the question is about;
    withheld values are null, never zero."""
    charts = _docs_charts()
    query = get_query(name)
    with AnalystDatabase(small_run.settings.database_path) as db:
        shown = charts.answer(db, query, POLICY)
    chart = charts.chart_for(query, shown)
    spec = chart.to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert query.chart is not None
    assert [r["value"] for r in rows] == shown.get_column(query.chart.y).to_list()
    svg = io.StringIO()
    chart.save(svg, format="svg")
    assert svg.getvalue().lstrip().startswith("<svg")


@pytest.mark.parametrize(
    "text,error",
    [
        ("[table]\ndataset = 'households'", "title"),
        ("title = 't'\n[table]\ndataset = 'people'", "no dataset"),
        ("title = 't'\ncolour = 'red'\n[table]\ndataset = 'households'", "unknown keys"),
        ("title = 't'\n[table]\ndataset = 'households'\nmeasures = ['max:residents']", "measure"),
        (
            "title = 't'\n[table]\ndataset = 'households'\n[columns]\nhousehold_id = 'x'",
            "rename only",
        ),
        (
            "title = 't'\n[table]\ndataset = 'households'\ndimensions = ['tenure']\n"
            "[chart]\nkind = 'pie'\nx = 'tenure'\ny = 'count'",
            "chart",
        ),
        ("title = [", "TOML"),
    ],
)
def test_malformed_named_questions_are_refused(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_query("q", text)


def test_columns_and_chart_use_the_questions_names() -> None:
    q = parse_query(
        "q",
        "title = 'A'\nquestion = '''first part\n  second part'''\n[table]\n"
        "dataset = 'households'\ndimensions = ['tenure']\n"
        "measures = ['count', 'percent_where:overcrowded=yes']\n"
        "[columns]\npercent_overcrowded_yes = 'pct'\n[chart]\nkind = 'bars'\nx = 'tenure'\n"
        "y = 'pct'\n",
    )
    assert q.question == "first part second part"
    assert q.shown("percent_overcrowded_yes") == "pct" and q.shown("count") == "count"
    assert isinstance(q.spec, TableSpec) and q.chart is not None and q.chart.y == "pct"
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
    from_csv = pl.read_csv(csv, infer_schema=False)
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
    tables = [e for e in events if e["event"] == "table"]
    # Each file is its own released output (CSV, Parquet), then the screen's answer.
    assert [e["data"].get("named_query") for e in tables] == [name, name, name]
    assert [e["data"]["channel"] for e in tables] == ["output", "output", "service"]
    # Each file is a released output, or the same output again if this user already kept
    # the same table in the same format earlier in the session (output.duplicate).
    kept = [e for e in events if e["event"] in ("output.released", "output.duplicate")]
    assert len(kept) == 2 and len({e["data"]["output_id"] for e in kept}) == 2
    released = [e for e in kept if e["event"] == "output.released"]
    assert all(e["data"]["approved_by"] == "table-builder" for e in released)
    assert tables[0]["data"]["table"] == get_query(name).spec.to_dict()
    assert main(["audit", "verify", "--config", str(query_service.config)]) == 0
