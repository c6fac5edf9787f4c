"""Incremental and repeated runs: unchanged extracts are reused by checksum, outputs repeat
exactly, one changed extract re-ingests only itself, and ids stay stable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import BASE_RUN_ID, BaseRun
from uprnlink.errors import ContractError
from uprnlink.publish import releases
from uprnlink.run import runner
from uprnlink.run.history import runs_table
from uprnlink.settings import RunSettings, read_settings
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow

TABLES = ("person", "household", "membership", "service_events", "linkage_quality")


def published_tables(settings: RunSettings, run_id: str) -> dict[str, pl.DataFrame]:
    folder = releases.release_dir(settings.out_dir, run_id) / "linked"
    return {t: pl.read_parquet(folder / f"{t}.parquet") for t in TABLES}


def assert_same_content(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for name in TABLES:
        left, right = a[name], b[name]
        assert left.columns == right.columns, name
        key = left.columns
        assert left.sort(key).equals(right.sort(key)), f"{name} differs"


@pytest.fixture(scope="module")
def tree(base_run: BaseRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared first run (run BASE_RUN_ID, 20260101T000000Z-0001, baselines off);
    the tests below run on from it, in order."""
    assert BASE_RUN_ID == "20260101T000000Z-0001"
    return base_run.copy(tmp_path_factory.mktemp("incremental"))


def test_rerun_of_the_same_delivery_reuses_everything_and_repeats_the_outputs(
    tree: Path, base_run: BaseRun
) -> None:
    settings = read_settings(tree)
    first = base_run.summary  # the first run, on a fresh tree: everything ingested
    assert set(first.changes.values()) == {"ingested"}
    assert first.linkage["reused"] is False

    second = runner.run_all(str(tree), run_id="20260101T000000Z-0002")
    assert set(second.changes.values()) == {"reused"}
    assert all(r["reused"] for r in second.reference)
    assert second.linkage["reused"] is True
    # Reused reports are the original counts, not counted again.
    for a, b in zip(first.ingest, second.ingest, strict=True):
        assert (a["rows_in"], a["rows_accepted"], a["checksum"]) == (
            b["rows_in"],
            b["rows_accepted"],
            b["checksum"],
        )
    # Idempotent: the same inputs and key give the same published content.
    assert_same_content(
        published_tables(settings, "20260101T000000Z-0001"),
        published_tables(settings, "20260101T000000Z-0002"),
    )
    assert releases.current(settings.out_dir) == "20260101T000000Z-0002"
    history = runs_table(settings.out_dir)
    assert "all ingested" in history and "all reused" in history


def test_one_changed_extract_is_the_only_one_ingested_and_ids_stay_stable(tree: Path) -> None:
    settings = read_settings(tree)
    before = published_tables(settings, releases.current(settings.out_dir) or "")
    gp = settings.sources["gp_registrations"].path
    lines = gp.read_text().splitlines(keepends=True)
    # Next month's extract: the same list less the last 5% of registrations.
    gp.write_text("".join(lines[: int(len(lines) * 0.95)]))

    third = runner.run_all(str(tree), run_id="20260201T000000Z-0003")
    assert third.changes["gp_registrations"] == "ingested"
    assert {s for s, c in third.changes.items() if c == "reused"} == set(settings.sources) - {
        "gp_registrations"
    }
    link = third.linkage
    assert link["reused"] is False
    assert link["model"]["trained"] is False  # the saved model is reused
    # Only the pairs of new profiles are scored; the last link's others are kept.
    scored = link["incremental"]
    assert scored["dropped_profiles"] > 0 and scored["pairs_kept"] > 0
    assert scored["pairs_scored"] == link["candidate_pairs"] < scored["pairs_kept"]
    ids = link["ids"]
    assert ids["kept"] >= 0.9 * (ids["kept"] + ids["created"])
    after = published_tables(settings, "20260201T000000Z-0003")
    # Most people keep their published person id.
    shared = set(before["person"]["person_id"]) & set(after["person"]["person_id"])
    assert len(shared) >= 0.9 * before["person"].height
    audit = [
        json.loads(line)
        for line in (settings.out_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    finished = [e["data"] for e in audit if e["event"] == "run.finished"]
    assert finished[-1]["changes"]["gp_registrations"] == "ingested"
    assert "gp_registrations ingested; 5 reused" in runs_table(settings.out_dir)


def test_rebuild_ingests_everything_again_and_gives_the_same_content(tree: Path) -> None:
    settings = read_settings(tree)
    summary = runner.run_all(str(tree), run_id="20260201T000000Z-0004", rebuild=True)
    assert set(summary.changes.values()) == {"ingested"}
    assert summary.linkage["model"]["trained"] is True
    assert "incremental" not in summary.linkage  # a new model scores every pair
    # From scratch again (a new model, no previous ids) on the same inputs and key: the same
    # content, person and household ids included.
    again = runner.run_all(str(tree), run_id="20260201T000000Z-0014", rebuild=True)
    assert again.linkage["model"]["trained"] is True
    assert_same_content(
        published_tables(settings, "20260201T000000Z-0004"),
        published_tables(settings, "20260201T000000Z-0014"),
    )


def test_an_extract_delivered_under_two_names_is_refused(tree: Path) -> None:
    settings = read_settings(tree)
    ct = settings.sources["council_tax"].path
    saved = ct.read_bytes()
    shutil.copy(settings.sources["housing_tenancies"].path, ct)
    try:
        with pytest.raises(ContractError, match="duplicate_delivery"):
            runner.run_all(str(tree), run_id="20260201T000000Z-0005")
    finally:
        ct.write_bytes(saved)
    failed = json.loads((settings.out_dir / "runs" / "20260201T000000Z-0005.json").read_text())
    assert failed["failed_stage"] == "start"


def test_an_optional_source_without_an_extract_is_skipped(tree: Path) -> None:
    text = tree.read_text().replace(
        'path = "adult_social_care.csv"', 'path = "adult_social_care.csv"\nrequired = false'
    )
    assert text != tree.read_text()
    optional = tree.with_name("optional.toml")
    optional.write_text(text)
    settings = read_settings(optional)
    extract = settings.sources["adult_social_care"].path
    moved = extract.with_suffix(".held")
    extract.rename(moved)
    try:
        summary = runner.run_all(str(optional), run_id="20260201T000000Z-0006")
    finally:
        moved.rename(extract)
    assert summary.changes["adult_social_care"] == "skipped"
    assert pl.read_parquet(Zones(settings).records("adult_social_care")).height == 0
    services = published_tables(settings, "20260201T000000Z-0006")["service_events"]
    assert services.height > 0


def test_runs_and_landing_commands_show_history_and_state(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uprnlink.cli import main

    assert main(["runs", "--config", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "20260101T000000Z-0001" in out and "failed in start" in out and "* = the live" in out
    assert main(["landing", "--config", str(tree), "--settle-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "gp_registrations" in out and "unchanged" in out
