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
from uprnlink.reports.quality import (
    build_quality_report,
    check_no_identifiers,
    cluster_size_table,
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
    "link-rates",
)
TRUTH_SECTIONS = ("bias", "evaluation")


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
    run = small_run.summary["run"]
    assert run["run_id"] in page and run["key_id"] in page
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
