"""The clerical review loop measured: a run, N queued pairs labelled by a reviewer who is always
right (the synthetic truth), the next run, and people precision / recall before and after.

The reviewer takes the queue in its order (the pairs the link was least sure of first), as a
person at the portal's Review page would. Labels go through the same append-only store as the
portal's and the CLI's.

Usage: python -m benchmarks.review_loop --config demo/demo.toml --truth demo/truth [--labels 50]
(on a finished run; the run is repeated in place, so use a copy of anything you want to keep).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.trusted import read_trusted
from uprnlink.review import append_label, pending_pairs, queue_key_id, read_labels, read_queue
from uprnlink.run.evaluation import evaluate_run, label_clusters, read_ground_truth
from uprnlink.settings import RunSettings, read_settings
from uprnlink.zones import Zones


def label_from_truth(
    settings: RunSettings, truth_dir: Path, n: int, reviewer: str = "truth"
) -> dict[str, int]:
    """Label the first `n` pending queued pairs as the synthetic truth says; returns how many
    of each label were given."""
    z = Zones(settings)
    key = load_run_key(settings)
    pending = pending_pairs(read_queue(z), read_labels(z, queue_key_id(z))).head(n)
    crosswalk = pl.concat(
        [
            read_trusted(z.crosswalk(s), key).select("unique_id", "record_id")
            for s in settings.sources
            if z.crosswalk(s).exists()
        ]
    )
    keys = pl.concat([pending.get_column("unique_id_l"), pending.get_column("unique_id_r")])
    records = read_trusted(z.clusters, key).filter(pl.col("unique_id").is_in(keys.implode()))
    truth = label_clusters(records, crosswalk, read_ground_truth(truth_dir).records)
    true_id = dict(truth.select("unique_id", "true_id").iter_rows())
    given = {"match": 0, "non_match": 0}
    for row in pending.iter_rows(named=True):
        same = true_id.get(row["unique_id_l"]) == true_id.get(row["unique_id_r"])
        label = "match" if same else "non_match"
        append_label(z, row["pair_id"], label, reviewer)
        given[label] += 1
    return given


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """People and household figures of an evaluation."""
    h = result.get("households") or {}
    return {
        "precision": result["pairwise"]["precision"],
        "recall": result["pairwise"]["recall"],
        "f1": result["pairwise"]["f1"],
        "household_pairs_f1": h.get("f1"),
        "households_exact": (
            h["households_exact"] / h["households"] if h.get("households") else None
        ),
        "review": result.get("review"),
    }


def main(argv: list[str] | None = None) -> int:
    from uprnlink.run.runner import run_all

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--labels", type=int, default=50)
    args = parser.parse_args(argv)
    settings = read_settings(Path(args.config))
    # Labelled first, so "before" scores the clusters the reviewer saw on the labels too.
    given = label_from_truth(settings, Path(args.truth), args.labels)
    before = headline(evaluate_run(settings, Path(args.truth)))
    run_all(args.config)
    after = headline(evaluate_run(settings, Path(args.truth)))
    print(json.dumps({"labels": given, "before": before, "after": after}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
