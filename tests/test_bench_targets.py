"""`make bench`'s scale targets: pairs per record at every size, recall against the smallest."""

from __future__ import annotations

from typing import Any

from benchmarks.run import blocking_markdown, scale_targets


def _run(population: str, records: int, pairs: float, recall: float | None) -> dict[str, Any]:
    run: dict[str, Any] = {
        "population": population,
        "target_records": records,
        "records": records,
        "status": "ok",
        "pairs_per_record": pairs,
    }
    if recall is not None:
        run["pairwise"] = {"recall": recall}
    return run


def test_scale_targets_judge_every_size_against_the_smallest() -> None:
    results = {
        "pipeline": [
            _run("demo", 1_000_000, 2.9, 0.9950),
            _run("demo", 100_000, 2.4, 0.9960),
            _run("testpop", 100_000, 3.4, 0.9600),
            _run("testpop", 1_000_000, 3.6, 0.9500),
            {**_run("testpop", 5_000_000, 0, None), "status": "killed"},
        ]
    }
    rows = {target: (measured, verdict) for target, measured, verdict in scale_targets(results)}
    assert rows["demo: pairs per record <= 3.5 at every size"] == (
        "2.4 at 100,000, 2.9 at 1,000,000",
        "met",
    )
    assert rows["demo: recall at 1,000,000 within 0.002 of 100,000"][1] == "met"
    # Over 3.5 at 1M, and a size that did not finish, are not met.
    assert rows["testpop: pairs per record <= 3.5 at every size"][1] == "**not met**"
    assert rows["testpop: recall at 1,000,000 within 0.002 of 100,000"] == (
        "0.95 vs 0.96 (change -0.0100)",
        "**not met**",
    )


def test_the_blocking_table_sums_each_runs_split_blocks() -> None:
    run = _run("testpop", 1_000_000, 3.9, 0.95)
    run["blocking"] = [
        {"blocks_split": 3, "blocks_over_cap": 1, "block_cap": 11},
        {"blocks_split": 0, "blocks_over_cap": 0, "block_cap": 11},
        {"blocks_split": 1200, "blocks_over_cap": 0, "block_cap": 4},
    ]
    table = blocking_markdown({"pipeline": [run]})
    assert "| testpop | 1,000,000 | 3.9 | 1,203 | 1 | 4 |  | 0.95 |" in table
