"""Time every named query (the analyst guide's worked questions) on a large published database.

Usage: python -m benchmarks.queries [--people 1000000] [--seed 42] [--repeats 20]
                                    [--out bench-out/queries] [--db FILE]

Building the database: a synthetic population is written (`uprnlink.synth`), every extract is
ingested by the pipeline's own ingest stage (validate, standardise, pseudonymise), and then,
instead of Splink linkage (5M records at 1M people would take most of an hour), the person id
of every record is taken from the synthetic ground truth. The pipeline's own publish stage
(`dataset.build_analysis_tables`, `publish.write_linked_dataset`, `publish.write_database`,
disclosure control included) then builds the published database exactly as a run would. With
`--db FILE` an existing database is timed instead.

Each named query runs as `uprnlink query --named` runs it, on a fresh read-only connection:
SQL, then disclosure control of the answer. It runs once to warm the file cache, then
`--repeats` times; p50 and p95 of the wall time are printed as a table and written to
`<out>/queries.json` with the database's size and the machine's core count. Target: p95 under
200 ms per question on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

TARGET_P95_MS = 200.0


def build_database(root: Path, people: int, seed: int, *, reuse: bool = False) -> Path:
    """Synthesise, ingest and publish with ground-truth person ids (no linkage); the db path.

    With `reuse` and a previous build in `root`, only the publish step runs again.
    """
    from uprnlink.ingest.stage import ingest_person_source, ingest_reference_data
    from uprnlink.privacy.keys import DEMO_PASSPHRASE, create_demo_key, load_run_key
    from uprnlink.privacy.trusted import read_trusted, write_trusted
    from uprnlink.publish.stage import publish_outputs
    from uprnlink.run import runner
    from uprnlink.settings import PROJECT_ROOT, read_settings
    from uprnlink.synth import write_synthetic
    from uprnlink.zones import Zones

    os.environ["UPRNLINK_KEY_PASSPHRASE"] = DEMO_PASSPHRASE
    os.environ.pop("UPRNLINK_KEY", None)
    config = root / "config" / "demo.toml"
    run_id = "bench-queries"
    if reuse and (root / "demo" / "work" / "trusted" / "linkage" / "clusters.parquet").exists():
        t = time.perf_counter()
        published = publish_outputs(str(config), run_id, {})
        print(f"republished in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        return Path(published["staged"]) / "uprnlink.duckdb"
    shutil.rmtree(root, ignore_errors=True)
    (root / "config").mkdir(parents=True)
    text = (PROJECT_ROOT / "config" / "demo.toml").read_text()
    config.write_text(text.replace("baselines = true", "baselines = false"))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    write_synthetic(root / "demo", people=people, seed=seed)
    timings["synthesise"] = time.perf_counter() - t
    settings = read_settings(config)
    assert settings.key.file is not None
    create_demo_key(settings.key.file)
    t = time.perf_counter()
    runner.start_run(str(config), run_id)
    ingest_reference_data(str(config), run_id)
    for source in settings.sources:
        ingest_person_source(str(config), source, run_id)
    timings["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    z = Zones(settings)
    key = load_run_key(settings)
    crosswalk = pl.concat(
        [
            read_trusted(z.crosswalk(n), key).select("unique_id", "source_dataset", "record_id")
            for n in settings.sources
            if z.crosswalk(n).exists()
        ]
    )
    truth = pl.read_parquet(root / "demo" / "truth" / "records.parquet").select(
        pl.col("source").alias("source_dataset"),
        "record_id",
        ("T" + pl.col("person_id").cast(pl.Utf8)).alias("person_id"),
    )
    clusters = crosswalk.join(truth, on=["source_dataset", "record_id"], how="inner").select(
        "unique_id", "source_dataset", "person_id"
    )
    write_trusted(clusters, z.clusters, key)
    timings["truth_clusters"] = time.perf_counter() - t

    t = time.perf_counter()
    published = publish_outputs(str(config), run_id, {})
    timings["publish"] = time.perf_counter() - t
    db = Path(published["staged"]) / "uprnlink.duckdb"
    print(
        "built "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; {clusters.height:,} records, db {db}",
        file=sys.stderr,
    )
    (root / "build_timings.json").write_text(json.dumps(timings, indent=2))
    return db


def time_queries(db: Path, repeats: int) -> list[dict[str, Any]]:
    """p50/p95 wall time of every named query (SQL + disclosure control), fresh connection."""
    from uprnlink.publish.access import AnalystDatabase
    from uprnlink.publish.database import read_policy
    from uprnlink.publish.queries import list_queries, protect_result
    from uprnlink.settings import PROJECT_ROOT

    policy = read_policy(PROJECT_ROOT / "governance" / "policy.toml")
    rows = []

    def run_query(path: Path, sql: str) -> Any:
        with AnalystDatabase(path) as database:
            return database.run(sql).frame

    for q in list_queries():
        run_query(db, q.sql)  # warm the file cache
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            frame, _ = protect_result(q, run_query(db, q.sql), policy)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        rows.append(
            {
                "query": q.name,
                "rows": frame.height,
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(p95, 1),
                "max_ms": round(times[-1], 1),
                "meets_target": p95 < TARGET_P95_MS,
            }
        )
    return rows


def database_counts(db: Path) -> dict[str, int]:
    """Rows in the tables the queries read (for the report)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in ("person", "household", "membership", "service_events"):
            out[table] = int(con.execute(f"SELECT count(*) FROM linked.{table}").fetchall()[0][0])
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--people", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="bench-out/queries")
    p.add_argument("--db", help="time this published database instead of building one")
    p.add_argument(
        "--reuse", action="store_true", help="reuse a previous build's extracts; publish again"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = (
        Path(args.db)
        if args.db
        else build_database(out / "data", args.people, args.seed, reuse=args.reuse)
    )
    counts = database_counts(db)
    rows = time_queries(db, args.repeats)
    width = max(len(r["query"]) for r in rows)
    print(f"\nNamed queries on {counts['person']:,} linked people ({db.stat().st_size >> 20} MiB)")
    print(f"{'query':<{width}}  {'rows':>5}  {'p50 ms':>8}  {'p95 ms':>8}  target")
    for r in rows:
        ok = "ok" if r["meets_target"] else f"over {TARGET_P95_MS:.0f}"
        print(f"{r['query']:<{width}}  {r['rows']:>5}  {r['p50_ms']:>8}  {r['p95_ms']:>8}  {ok}")
    result = {
        "people_requested": None if args.db else args.people,
        "database": str(db),
        "database_mib": db.stat().st_size >> 20,
        "tables": counts,
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "target_p95_ms": TARGET_P95_MS,
        "queries": rows,
    }
    (out / "queries.json").write_text(json.dumps(result, indent=2))
    print(f"\nWrote {out / 'queries.json'}")
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
