"""`make bench`: end-to-end and pseudonymisation figures, with baselines measured in the same run.

Usage: python -m benchmarks.run [--people 20000 100000] [--out bench-out]

For each population size it synthesises extracts, runs every pipeline stage (no orchestrator)
in a child process and records wall time per stage, records per second and peak memory. The
pseudonymisation stage is compared with a per-record stdlib HMAC loop on the same identifiers.
Figures go to bench-out/results.json and bench-out/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.keys import MasterKey
from uprnlink.pseudonymise import tokenise_series
from uprnlink.settings import PROJECT_ROOT


def bench_pseudonymisation(
    n_records: int = 3_000_000, n_distinct: int = 1_000_000
) -> dict[str, Any]:
    """Tokens per second: uprnlink (distinct values once) vs a per-record stdlib HMAC loop."""
    rng = random.Random(1)
    distinct = [rng.randrange(10_000_000_000, 999_999_999_999) for _ in range(n_distinct)]
    values = pl.Series("uprn", [distinct[rng.randrange(n_distinct)] for _ in range(n_records)])
    key = MasterKey(bytes(range(32)))
    t = time.perf_counter()
    tokens = tokenise_series(values, key, "uprn")
    ours = time.perf_counter() - t
    raw_key = hashlib.sha256(b"baseline").digest()
    t = time.perf_counter()
    baseline = [
        hmac.digest(raw_key, str(v).encode(), "sha256")[:16].hex() for v in values.to_list()
    ]
    base = time.perf_counter() - t
    assert tokens.len() == len(baseline)
    return {
        "records": n_records,
        "distinct": n_distinct,
        "uprnlink_seconds": round(ours, 3),
        "uprnlink_records_per_s": round(n_records / ours),
        "uprnlink_distinct_per_s": round(n_distinct / ours),
        "baseline_per_record_hmac_seconds": round(base, 3),
        "baseline_records_per_s": round(n_records / base),
        "speedup": round(base / ours, 2),
    }


CHILD = """
import json, os, resource, sys, time
from uprnlink.keys import DEMO_PASSPHRASE
os.environ["UPRNLINK_KEY_PASSPHRASE"] = DEMO_PASSPHRASE
from uprnlink.pipeline import run_all, evaluate_run
from uprnlink.settings import read_settings
from pathlib import Path
cfg = sys.argv[1]
t = time.perf_counter()
s = run_all(cfg, run_id="bench")
wall = time.perf_counter() - t
ev = evaluate_run(read_settings(Path(cfg)), Path(sys.argv[2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "timings": s["timings"], "linkage": s["linkage"],
                  "records": sum(r["rows_in"] for r in s["ingest"]),
                  "peak_mib": peak, "pairwise": ev["pairwise"]}))
"""


def bench_pipeline(people: int, out: Path) -> dict[str, Any]:
    """Synthesise `people` and run the whole pipeline in a child process."""
    from uprnlink.keys import create_demo_key
    from uprnlink.synth import write_synthetic

    root = out / f"pop_{people}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "config").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "config" / "demo.toml", root / "config" / "demo.toml")
    t = time.perf_counter()
    write_synthetic(root / "demo", people=people, seed=42)
    synth_s = time.perf_counter() - t
    create_demo_key(root / "demo" / "work" / "keys" / "uprnlink.key")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(root / "config" / "demo.toml"),
            str(root / "demo" / "truth"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {
            "people": people,
            "status": "failed",
            "error": proc.stderr.strip().splitlines()[-1:],
        }
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "people": people,
        "status": "ok",
        "records": r["records"],
        "synth_seconds": round(synth_s, 1),
        "wall_seconds": round(r["wall"], 1),
        "stage_seconds": r["timings"],
        "records_per_s": round(r["records"] / r["wall"]),
        "peak_mib": round(r["peak_mib"]),
        "candidate_pairs": r["linkage"]["candidate_pairs"],
        "precision": round(r["pairwise"]["precision"], 4),
        "recall": round(r["pairwise"]["recall"], 4),
        "f1": round(r["pairwise"]["f1"], 4),
    }


def to_markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    lines = [
        "## End to end",
        "",
        "| people | records | wall s | ingest s | link s | publish s | records/s | peak MiB | precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["pipeline"]:
        if r["status"] != "ok":
            lines.append(f"| {r['people']:,} | {r['status']} | | | | | | | | |")
            continue
        st = r["stage_seconds"]
        lines.append(
            f"| {r['people']:,} | {r['records']:,} | {r['wall_seconds']} | {st['ingest']} | {st['link']} | "
            f"{st['publish']} | {r['records_per_s']:,} | {r['peak_mib']:,} | {r['precision']} | {r['recall']} |"
        )
    p = results["pseudonymisation"]
    lines += [
        "",
        "## Pseudonymisation",
        "",
        "| method | records | seconds | records/s |",
        "| --- | --- | --- | --- |",
        f"| uprnlink (each of {p['distinct']:,} distinct values once) | {p['records']:,} | {p['uprnlink_seconds']} | {p['uprnlink_records_per_s']:,} |",
        f"| baseline: stdlib HMAC per record | {p['records']:,} | {p['baseline_per_record_hmac_seconds']} | {p['baseline_records_per_s']:,} |",
        f"| ratio | | | {p['speedup']}x |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "pipeline": []}
    print("pseudonymisation: 3M records, 1M distinct UPRNs ...", flush=True)
    results["pseudonymisation"] = bench_pseudonymisation()
    for people in args.people:
        print(f"pipeline: {people:,} people ...", flush=True)
        results["pipeline"].append(bench_pipeline(people, out))
    results["bench_peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = to_markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
