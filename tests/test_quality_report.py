"""The linkage quality report: self-contained, complete, and free of identifiers."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import PublishError
from uprnlink.linkage.quality import source_quality_table
from uprnlink.reports.charts import Bar, count_chart, share_chart
from uprnlink.reports.quality import (
    build_quality_report,
    check_no_identifiers,
    cluster_size_table,
    link_records,
    safe_rate,
    shown_count,
)

SECTIONS = (
    "run",
    "model",
    "clusters",
    "match-rates",
    "uprn-coverage",
    "nhs-coverage",
    "residence",
    "link-rates",
)
TRUTH_SECTIONS = ("bias", "evaluation")
OWN_CHARTS = (
    "records_per_person",
    "sources_per_person",
    "share_linked",
    "share_uprn",
    "share_lookup",
    "share_nhs",
    "link_rate_age_band",
    "link_rate_sex",
)
HOSTILE = '<script>alert("x")</script>'


def chart_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a chart draws: its top-level dataset (inline, or named in `datasets`)."""
    data = spec["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def page_specs(page: str) -> dict[str, dict[str, Any]]:
    """The Vega-Lite specs a page draws, by chart key."""
    found = re.search(r'<script type="application/json" id="vega-specs">(.*?)</script>', page, re.S)
    assert found is not None
    specs: dict[str, dict[str, Any]] = json.loads(found.group(1))
    return specs


# ----------------------------------------------------------------------------- unit


def test_small_counts_are_suppressed() -> None:
    assert shown_count(0) == "0"
    assert shown_count(1) == "<10"
    assert shown_count(9) == "<10"
    assert shown_count(10) == "10"
    assert shown_count(12345) == "12,345"


def test_rates_respect_suppression() -> None:
    assert safe_rate(50, 100) == (0.5, "50.0%")
    assert safe_rate(5, 8) == (None, "–")  # denominator suppressed
    assert safe_rate(5, 1000) == (None, "<1.0%")  # numerator suppressed: a bound only
    value, text = safe_rate(995, 1000)  # complement (5) suppressed: a bound only
    assert value == pytest.approx(0.99) and text == ">99.0%"
    assert safe_rate(0, 1000) == (0.0, "0.0%")
    assert safe_rate(1000, 1000) == (1.0, "100.0%")


def test_share_chart_carries_the_figures_shown() -> None:
    spec = share_chart(
        [Bar("a", 0.5, "50.0%"), Bar("b", None, "–"), Bar("c", 0.99, ">99.0%")],
        title="Share",
        reference=(0.4, "40.0%"),
        highlight=["c"],
    )
    assert chart_rows(spec) == [
        {"group": "a", "value": 0.5, "text": "50.0%", "highlight": False},
        {"group": "b", "value": None, "text": "–", "highlight": False},  # withheld: not drawn
        {"group": "c", "value": 0.99, "text": ">99.0%", "highlight": True},
    ]
    rule = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert spec["datasets"][rule["data"]["name"]] == [{"value": 0.4, "label": "40.0%"}]
    # Altair's hash-named datasets (32 hex: a token's shape) are numbered instead.
    assert not re.search(r"[0-9a-f]{32}", json.dumps(spec))


def test_count_chart_never_draws_a_suppressed_count() -> None:
    counts = {"1": 3, "2": 0, "3": 12}
    spec = count_chart(
        [Bar(k, None if 0 < n < 10 else n, shown_count(n)) for k, n in counts.items()],
        title="People",
        x_label="records per person",
    )
    assert chart_rows(spec) == [
        {"size": "1", "people": None, "text": "<10", "label_at": 0},
        {"size": "2", "people": 0, "text": "0", "label_at": 0},
        {"size": "3", "people": 12, "text": "12", "label_at": 12},
    ]


def _tiny_linked() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "unique_id": [f"r{i}" for i in range(6)],
            "source_dataset": ["a", "b", "a", "a", "b", "b"],
            "person_id": ["p1", "p1", "p2", "p3", "p3", "p3"],
            "uprn_token": ["u1", None, "u2", "u3", "u3", None],
            "uprn_in_lookup": [True, False, False, True, True, False],
            "nhs_token": [None, "n1", None, None, "n3", "n3"],
        }
    )


def test_cluster_sizes_count_people_by_records_and_sources() -> None:
    sizes = cluster_size_table(_tiny_linked())
    by_records = dict(sizes.filter(by="records").select("size", "people").iter_rows())
    by_sources = dict(sizes.filter(by="sources").select("size", "people").iter_rows())
    assert by_records["1"] == 1 and by_records["2"] == 1 and by_records["3"] == 1
    assert by_records["20+"] == 0
    assert by_sources == {"1": 1, "2": 2}


def test_source_quality_counts() -> None:
    q = source_quality_table(_tiny_linked()).to_dicts()
    a, b = q
    assert a == {
        "source_dataset": "a",
        "records": 3,
        "people": 3,
        "linked_to_other_source": 2,
        "with_uprn": 3,
        "uprn_in_lookup": 2,
        "with_nhs_number": 0,
    }
    assert b["linked_to_other_source"] == 3 and b["with_nhs_number"] == 3


def test_identifier_guard_refuses_a_token() -> None:
    token = "0123456789abcdef0123456789abcdef"
    records = pl.DataFrame({"unique_id": ["x"], "uprn_token": [token], "nhs_token": [None]})
    check_no_identifiers("<p>fedcba9876543210fedcba9876543210</p>", records)
    with pytest.raises(PublishError, match="uprn_token"):
        check_no_identifiers(f"<p>{token}</p>", records)


# ----------------------------------------------------------------------------- on a run


def _inputs(run: PipelineRun) -> dict[str, Any]:
    s = run.settings
    records = pl.concat(
        [pl.read_parquet(p) for p in sorted((s.trusted_dir / "records").glob("*.parquet"))],
        how="vertical_relaxed",
    )
    return {
        "model": json.loads((s.trusted_dir / "linkage" / "model.json").read_text()),
        "records": records,
        "clusters": pl.read_parquet(s.trusted_dir / "linkage" / "clusters.parquet"),
        "run_summary": run.summary,
    }


@pytest.fixture(scope="module")
def evaluation(small_run: PipelineRun) -> dict[str, Any]:
    from uprnlink.run.evaluation import evaluate_run

    result = evaluate_run(small_run.settings, small_run.root / "demo" / "truth")
    result.pop("print_table")
    return result


@pytest.fixture(scope="module")
def reports(
    small_run: PipelineRun, evaluation: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("quality_report")
    inputs = _inputs(small_run)
    with_truth = build_quality_report(
        **inputs,
        evaluation=evaluation,
        out_path=out / "out" / "quality_report.html",
        engineer_path=out / "work" / "quality_report_engineer.html",
    )
    without_truth = build_quality_report(
        **inputs, evaluation=None, out_path=out / "out" / "quality_report_no_truth.html"
    )
    return {
        "with_truth": with_truth,
        "without_truth": without_truth,
        "engineer": out / "work" / "quality_report_engineer.html",
    }


def _external_refs(page: str) -> list[str]:
    """src/href attributes, and CSS url()/@import, that point off the page."""
    attrs = re.findall(
        r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""",
        page,
        flags=re.I,
    )
    css = re.findall(r"""url\(\s*["']?(https?:)""", page) + re.findall(r"@import", page)
    return [a for a in attrs if not a.startswith("#")] + css


def _own_text(page: str) -> str:
    """The page without the bundled chart libraries (code, not data)."""
    return re.sub(r"<script>.*?</script>", "", page, flags=re.S)


@pytest.mark.parametrize("which", ["with_truth", "without_truth", "engineer"])
def test_report_is_self_contained(reports: dict[str, Path], which: str) -> None:
    page = reports[which].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert _external_refs(page) == []
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", _own_text(page))
    # The charting libraries are inline, so Splink's charts draw with no network.
    assert "vegaEmbed" in page and "<script>" in page
    # No CDN anywhere, the bundled libraries included, and no script or link loaded by address.
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "esm.sh", "skypack"):
        assert cdn not in page, cdn
    assert not re.search(r"""<(?:script|link)\b[^>]*\b(?:src|href)\s*=""", page, flags=re.I)


def test_report_has_every_section(reports: dict[str, Path], small_run: PipelineRun) -> None:
    page = reports["with_truth"].read_text(encoding="utf-8")
    for section in (*SECTIONS, *TRUTH_SECTIONS):
        assert f'<section id="{section}">' in page, section
    assert 'id="chart-match_weights"' in page and 'id="chart-m_u_parameters"' in page
    run = small_run.summary.run
    assert run is not None and run.run_id in page and run.key_id in page
    assert small_run.settings.reference_date.isoformat() in page
    for source in small_run.settings.sources:
        assert source in page
    assert "2-point target" in page
    plain = reports["without_truth"].read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in plain, section
    for section in TRUTH_SECTIONS:
        assert f'<section id="{section}">' not in plain


@pytest.mark.parametrize("which", ["with_truth", "without_truth"])
def test_report_holds_no_identifiers(
    reports: dict[str, Path], small_run: PipelineRun, which: str
) -> None:
    page = reports[which].read_text(encoding="utf-8")
    own = _own_text(page)
    truth = pl.read_parquet(small_run.root / "demo" / "truth" / "people.parquet")
    # Case-sensitive, as the truth (Title) and the trusted records (UPPER) spell them: the
    # page's own words ("best group", "field") may be common surnames in lower case.
    words = set(re.findall(r"[A-Za-z][A-Za-z'-]+", own))
    surnames = set(truth.get_column("surname").drop_nulls().unique().to_list())
    # Words of the model's own level labels ("Day and month transposed") are not data.
    model_text = (small_run.settings.trusted_dir / "linkage" / "model.json").read_text()
    labels = set(re.findall(r"[A-Za-z][A-Za-z'-]+", model_text))
    leaked = ((surnames | {s.upper() for s in surnames}) & words) - labels
    assert not leaked, f"{len(leaked)} surnames on the page"

    nhs = set(truth.get_column("nhs_number").drop_nulls().to_list())
    assert not nhs & set(re.findall(r"\d{10}", page))

    records = _inputs(small_run)["records"]
    clusters = pl.read_parquet(small_run.settings.trusted_dir / "linkage" / "clusters.parquet")
    hex_runs = set(re.findall(r"[0-9a-f]{32}", page))
    for col in ("unique_id", "uprn_token", "nhs_token", "household_token"):
        assert not hex_runs & set(records.get_column(col).drop_nulls().to_list()), col
    assert not set(clusters.get_column("person_id").to_list()) & set(
        re.findall(r"P[0-9a-f]{15}", page)
    )

    # The only dates are the reference date and the day the report was made.
    dates = {date.fromisoformat(d) for d in re.findall(r"\b\d{4}-\d{2}-\d{2}\b", own)}
    assert dates <= {small_run.settings.reference_date, date.today()}


def test_record_values_never_reach_the_page(small_run: PipelineRun, tmp_path: Path) -> None:
    """Canary values in every record's names and postcode must not appear anywhere."""
    inputs = _inputs(small_run)
    inputs["records"] = inputs["records"].with_columns(
        pl.lit("QZCANARYSURNAME").alias("surname"),
        pl.lit("QZCANARYFORENAME").alias("forename"),
        pl.lit("QZ9 9ZZ").alias("postcode"),
    )
    page = build_quality_report(
        **inputs, evaluation=None, out_path=tmp_path / "report.html"
    ).read_text(encoding="utf-8")
    assert "QZCANARY" not in page and "QZ9 9ZZ" not in page


def test_engineer_page_has_waterfalls(reports: dict[str, Path]) -> None:
    page = reports["engineer"].read_text(encoding="utf-8")
    assert "Engineer only" in page
    assert page.count('id="chart-waterfall_') >= 2
    assert reports["engineer"].parent.name == "work"


def test_charts_carry_the_tables_figures(reports: dict[str, Path], small_run: PipelineRun) -> None:
    page = reports["with_truth"].read_text(encoding="utf-8")
    specs = page_specs(page)
    assert {"match_weights", "m_u_parameters", *OWN_CHARTS, "bias_0"} <= set(specs)
    for key in specs:  # every spec has its element, every element its spec
        assert page.count(f'id="chart-{key}"') == 1, key
    assert len(re.findall(r'id="chart-', page)) == len(specs)

    inputs = _inputs(small_run)
    linked = link_records(inputs["records"], inputs["clusters"])
    sizes = cluster_size_table(linked).filter(by="records").to_dicts()
    assert chart_rows(specs["records_per_person"]) == [
        {
            "size": r["size"],
            "people": None if 0 < r["people"] < 10 else r["people"],
            "text": shown_count(r["people"]),
            "label_at": 0 if 0 < r["people"] < 10 else r["people"],
        }
        for r in sizes
    ]
    quality = source_quality_table(linked).to_dicts()
    assert chart_rows(specs["share_linked"]) == [
        {
            "group": q["source_dataset"],
            "value": safe_rate(q["linked_to_other_source"], q["records"])[0],
            "text": safe_rate(q["linked_to_other_source"], q["records"])[1],
            "highlight": False,
        }
        for q in quality
    ]
    # What the chart labels say is what the table beside it says.
    table = re.search(r'<section id="match-rates">.*?</section>', page, re.S)
    assert table is not None
    for row in chart_rows(specs["share_linked"]):
        assert f'<td class="num">{row["text"].replace(">", "&gt;")}</td>' in table.group(0)
    # No own chart draws a suppressed count.
    for key in ("records_per_person", "sources_per_person"):
        assert not [r for r in chart_rows(specs[key]) if r["people"] in range(1, 10)]
    # Splink's charts carry the model's comparisons.
    weights = json.dumps(specs["match_weights"])
    for comparison in inputs["model"].get("splink", inputs["model"])["comparisons"]:
        assert comparison["output_column_name"] in weights


def test_engineer_page_charts_are_splinks_waterfalls(reports: dict[str, Path]) -> None:
    specs = page_specs(reports["engineer"].read_text(encoding="utf-8"))
    assert len(specs) >= 2 and all(k.startswith("waterfall_") for k in specs)
    for spec in specs.values():
        assert spec["data"]["values"], "a waterfall with no bars"


def test_hostile_source_name_is_escaped(small_run: PipelineRun, tmp_path: Path) -> None:
    """A source named like markup is text in the tables and data in the charts, never markup."""
    inputs = _inputs(small_run)
    inputs["records"] = inputs["records"].with_columns(
        pl.when(pl.col("source_dataset") == "council_tax")
        .then(pl.lit(HOSTILE))
        .otherwise(pl.col("source_dataset"))
        .alias("source_dataset")
    )
    page = build_quality_report(
        **inputs, evaluation=None, out_path=tmp_path / "report.html"
    ).read_text(encoding="utf-8")
    assert HOSTILE not in page and "<script>alert" not in page
    assert "<td>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</td>" in page
    groups = [r["group"] for r in chart_rows(page_specs(page)["share_linked"])]
    assert HOSTILE in groups  # the chart draws it as text


def test_report_without_chart_libraries_keeps_its_figures(
    small_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chart failure must not stop the run's report: no script at all, every table kept."""
    from uprnlink.reports import quality

    def broken() -> tuple[str, ...]:
        raise RuntimeError("no libraries")

    monkeypatch.setattr(quality, "chart_libraries", broken)
    page = build_quality_report(
        **_inputs(small_run), evaluation=None, out_path=tmp_path / "report.html"
    ).read_text(encoding="utf-8")
    assert "<script" not in page and "script-src" not in page and 'id="chart-' not in page
    assert "Splink charts could not be drawn" in page
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert page.count("<table>") >= 8


def test_near_miss_examples_from_the_first_records_are_those_from_all(monkeypatch) -> None:
    # The engineer page looks for near misses among the first records before all of them:
    # the pairs must be those a search over every record finds, however few it looks among.
    import random

    import uprnlink.reports.quality as quality

    rng = random.Random(3)
    rows = []
    for i in range(400):
        person = rng.randrange(150)
        rows.append(
            {
                "unique_id": f"r{rng.randrange(10**6):06d}-{i}",
                "person_id": f"p{person}",
                "source_dataset": rng.choice(("gp", "council_tax")),
                "surname": rng.choice(("SMITH", "JONES", None)),
                "dob": rng.choice((date(1980, 1, 1), date(1990, 5, 5), None)),
            }
        )
    linked = pl.DataFrame(rows)
    everything = quality.example_pairs(linked, n_near=4)
    assert any(kind.startswith("different people") for kind, _, _ in everything)
    for prefix in (1, 3, 20):
        monkeypatch.setattr(quality, "NEAR_PREFIX", prefix)
        assert quality.example_pairs(linked, n_near=4) == everything, prefix
