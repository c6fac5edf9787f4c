"""Time the named questions and the table builder on a large published database, and measure
what cell-key perturbation costs the answers.

Usage: python -m benchmarks.queries [--people 1000000] [--seed 42] [--repeats 20]
                                    [--out bench-out/queries] [--db FILE] [--clients 20]
                                    [--no-service] [--reuse] [--retime]

Building the database: a synthetic population is written (`uprnlink.synth`), every extract is
ingested by the pipeline's own ingest stage (validate, standardise, pseudonymise), and then,
instead of Splink linkage (5M records at 1M people would take most of an hour), the person id
of every record is taken from the synthetic ground truth. The pipeline's own publish stage
(`dataset.build_analysis_tables`, `publish.write_linked_dataset`, `publish.write_database`,
disclosure control included) then builds the published database exactly as a run would. With
`--db FILE` an existing database is timed instead (directly only). With `--retime`, the live
release of a previous build in `--out` is timed again, directly and through the service,
without building anything (to re-measure on a quieter machine).

Each named question is built as the service builds it (the table builder's SQL on a fresh
read-only connection, then cell-key perturbation), once to warm the file cache, then
`--repeats` times; p50 and p95 of the wall time are printed and written to
`<out>/queries.json` with the database's size and the machine's core count. Then
`--tables` different three-dimension tables of residents (random dimensions and a measure,
each asked once, so nothing comes from a cache) are timed the same way.

The perturbation's cost: for every named question, the share of cells withheld, the share of
shown counts the perturbation changed and their mean absolute change, and the mean absolute
change of its rates and percentages, against the unperturbed table.

Then through the query service (`uprnlink serve` in its own process, holding only the audit
key): `--clients` analysts (default 20), each with their own token, ask every named question
`--repeats / 4` times in their own shuffled order, all at once and back to back (no think
time), and then each asks its own share of the three-dimension tables (none repeated). Every
request is authenticated, checked, audited and protected.

Targets on 2 cores: a named question p95 under 200 ms; a three-dimension table at 1M people
p95 under 300 ms through the service with 20 analysts at once.
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
TABLE_TARGET_P95_MS = 300.0


def build_database(root: Path, people: int, seed: int, *, reuse: bool = False) -> Path:
    """Synthesise, ingest and publish with ground-truth person ids (no linkage); the db path.

    With `reuse` and a previous build in `root`, only the publish step runs again.
    """
    from uprnlink.ingest.stage import ingest_person_source, ingest_reference_data
    from uprnlink.privacy.keys import create_demo_keys, load_run_key, use_demo_passphrases
    from uprnlink.privacy.trusted import read_trusted, write_trusted
    from uprnlink.publish.stage import publish_outputs
    from uprnlink.run import runner
    from uprnlink.run_summary import RunSummary
    from uprnlink.settings import PROJECT_ROOT, read_settings
    from uprnlink.synth import write_synthetic
    from uprnlink.zones import Zones

    for name in ("UPRNLINK_KEY", "UPRNLINK_AUDIT_KEY", "UPRNLINK_RELEASE_KEY"):
        os.environ.pop(name, None)
    config = root / "config" / "demo.toml"
    run_id = "bench-queries"
    if reuse and (root / "demo" / "work" / "trusted" / "linkage" / "clusters.parquet").exists():
        use_demo_passphrases(read_settings(config))
        t = time.perf_counter()
        published = publish_outputs(str(config), run_id, RunSummary())
        runner.switch_release(str(config), run_id, RunSummary(published=published))
        print(f"republished in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        return Path(published["staged"]).parent / run_id / "uprnlink.duckdb"
    shutil.rmtree(root, ignore_errors=True)
    (root / "config").mkdir(parents=True)
    text = (PROJECT_ROOT / "config" / "demo.toml").read_text()
    config.write_text(text.replace("baselines = true", "baselines = false"))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    write_synthetic(root / "demo", people=people, seed=seed)
    timings["synthesise"] = time.perf_counter() - t
    settings = read_settings(config)
    create_demo_keys(settings)
    use_demo_passphrases(settings)
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
    published = publish_outputs(str(config), run_id, RunSummary())
    # Live, so the query service serves it.
    release = runner.switch_release(str(config), run_id, RunSummary(published=published))
    timings["publish"] = time.perf_counter() - t
    db = settings.out_dir / "releases" / release["release"] / "uprnlink.duckdb"
    print(
        "built "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; {clusters.height:,} records, db {db}",
        file=sys.stderr,
    )
    (root / "build_timings.json").write_text(json.dumps(timings, indent=2))
    return db


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _policy() -> Any:
    from uprnlink.publish.tabulation import read_table_policy
    from uprnlink.settings import PROJECT_ROOT

    return read_table_policy(PROJECT_ROOT / "governance" / "policy.toml")


def time_queries(db: Path, repeats: int) -> list[dict[str, Any]]:
    """p50/p95 wall time of every named question (the table builder's SQL and perturbation),
    each on a fresh read-only connection."""
    from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
    from uprnlink.publish.queries import list_queries

    policy = _policy()
    with AnalystDatabase(db) as database:
        known = table_categories(database)
    rows = []
    for q in list_queries():
        times = []
        for i in range(repeats + 1):
            t = time.perf_counter()
            with AnalystDatabase(db) as database:
                frame = build_table(database, q.spec, policy, known).frame
            if i:  # the first run warms the file cache
                times.append((time.perf_counter() - t) * 1000)
        rows.append(
            {
                "query": q.name,
                "rows": frame.height,
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(_pct(times, 0.95), 1),
                "max_ms": round(max(times), 1),
                "meets_target": _pct(times, 0.95) < TARGET_P95_MS,
            }
        )
    return rows


def three_dimension_tables(db: Path, count: int, seed: int = 11) -> list[dict[str, Any]]:
    """`count` different three-dimension tables of residents (random dimensions, one random
    measure), each within the policy's cell limit."""
    import random

    from uprnlink.publish.access import AnalystDatabase, table_categories
    from uprnlink.publish.datasets import get_dataset
    from uprnlink.publish.tabulation import TableSpec, TableSpecError

    policy = _policy()
    with AnalystDatabase(db) as database:
        known = table_categories(database)
    ds = get_dataset("residents")
    dims = [d.name for d in ds.dimensions]
    measures = ["count", *(f"{k}:{m.name}" for m in ds.measures for k in ("sum", "per_1000"))]
    rng = random.Random(seed)
    specs: dict[str, dict[str, Any]] = {}
    while len(specs) < count:
        raw = {
            "dataset": "residents",
            "dimensions": rng.sample(dims, 3),
            "measures": ["count", rng.choice(measures)],
        }
        try:
            TableSpec.from_dict(raw).check(known, policy.limits)
        except TableSpecError:
            continue  # over the cell limit: an analyst would be told so
        specs[json.dumps(raw, sort_keys=True)] = raw
    return list(specs.values())


def time_tables(db: Path, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 of building each table once, directly (fresh connection each)."""
    from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
    from uprnlink.publish.tabulation import TableSpec

    policy = _policy()
    with AnalystDatabase(db) as database:
        known = table_categories(database)
    times, cells = [], []
    for raw in specs:
        spec = TableSpec.from_dict(raw)
        t = time.perf_counter()
        with AnalystDatabase(db) as database:
            answer = build_table(database, spec, policy, known)
        times.append((time.perf_counter() - t) * 1000)
        cells.append(answer.frame.height)
    return {
        "tables": len(specs),
        "median_cells": int(statistics.median(cells)),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_pct(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


def perturbation_effect(db: Path) -> list[dict[str, Any]]:
    """What perturbation does to each named question's answer, against the true table:
    cells withheld, shown counts changed and by how much, rates moved."""
    from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
    from uprnlink.publish.queries import list_queries
    from uprnlink.publish.tabulation import protect_table, table_sql

    policy = _policy()
    rows = []
    with AnalystDatabase(db) as database:
        known = table_categories(database)
        for q in list_queries():
            shown = build_table(database, q.spec, policy, known).frame
            raw = database.run(table_sql(q.spec), max_rows=10_000_000).frame
            true = protect_table(
                raw, q.spec, known[q.spec.dataset], policy.perturbation, exact=True
            ).frame
            counts = [m.column for m in q.spec.measures if m.kind in ("count", "count_where")]
            rates = [
                m.column for m in q.spec.measures if m.kind in ("per_1000", "percent_where", "mean")
            ]
            both = (
                shown.join(true, on=list(q.spec.dimensions), suffix="_true")
                if (q.spec.dimensions)
                else pl.concat(
                    [shown, true.rename({c: c + "_true" for c in true.columns})], how="horizontal"
                )
            )
            n_cells = both.height * len(counts)
            withheld = sum(both[c].null_count() for c in counts)
            changed, moved = 0, []
            for c in counts:
                pair = both.select(c, c + "_true").drop_nulls()
                diff = (pair[c] - pair[c + "_true"]).abs()
                changed += int((diff > 0).sum())
                moved += diff.to_list()
            rate_moves = []
            for c in rates:
                pair = both.select(c, c + "_true").drop_nulls()
                rate_moves += (pair[c] - pair[c + "_true"]).abs().to_list()
            rows.append(
                {
                    "query": q.name,
                    "cells": n_cells,
                    "withheld_share": round(withheld / n_cells, 3) if n_cells else 0.0,
                    "changed_share": round(changed / max(1, n_cells - withheld), 3),
                    "mean_abs_change": round(statistics.mean(moved), 2) if moved else 0.0,
                    "rate_mean_abs_change": round(statistics.mean(rate_moves), 2)
                    if rate_moves
                    else 0.0,
                }
            )
    return rows


def time_service(
    config: Path,
    repeats: int,
    clients: int = 20,
    seed: int = 7,
    specs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """p50/p95 through the query service with `clients` analysts asking at once: `uprnlink
    serve` in its own process (audit key only), each client a thread with its own token and
    connection. First every named question `repeats` times each in its own shuffled order,
    then `specs` (three-dimension tables, each asked once by one client: nothing cached).
    Every request is authenticated, checked, audited and protected."""
    import contextlib
    import io
    import random
    import subprocess
    import threading
    import urllib.request

    from uprnlink import cli
    from uprnlink.privacy.keys import DEMO_PASSPHRASE
    from uprnlink.publish.queries import list_queries

    names = [q.name for q in list_queries()]
    tokens = []
    # A user name is never reused once revoked (the audit log keeps who it was), so each timing
    # run has its own analysts.
    run_tag = time.strftime("%Y%m%d%H%M%S")
    # The IG lead starts sealing the log once (the service refuses an unsealed one).
    seed_file = config.parent / "ig-lead" / "audit-seal.seed"
    if not seed_file.exists():
        with contextlib.redirect_stdout(io.StringIO()):
            sealed = cli.main(
                ["audit", "seal", "init", "--config", str(config), "--seed-file", str(seed_file)]
            )
        if sealed != 0:
            raise RuntimeError("could not start sealing the audit log (uprnlink audit seal init)")
    for i in range(clients):
        out = io.StringIO()
        user = f"bench-{run_tag}-{i:02d}"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert (
                cli.main(["users", "add", user, "--role", "analyst", "--config", str(config)]) == 0
            )
        tokens.append(out.getvalue().strip().splitlines()[-1])
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPRNLINK_")}
    env["UPRNLINK_AUDIT_PASSPHRASE"] = DEMO_PASSPHRASE
    log = config.parent / "service.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uprnlink", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ask(token: str, name: str | dict[str, Any]) -> float:
        if isinstance(name, dict):
            body = json.dumps({"table": name, "format": "arrow"}).encode()
            req = urllib.request.Request(url + "/api/tables", data=body, method="POST")
        else:
            body = json.dumps({"named": name, "format": "arrow"}).encode()
            req = urllib.request.Request(url + "/api/query", data=body, method="POST")
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
        return (time.perf_counter() - t) * 1000

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "service did not start: " + log.read_text()[-1000:]
                    ) from None
                time.sleep(0.3)
        for name in names:  # warm the file cache and the service
            ask(tokens[0], name)
        times: dict[str, list[float]] = {n: [] for n in names}
        lock = threading.Lock()
        barrier = threading.Barrier(clients)

        def client(i: int) -> None:
            order = [n for n in names for _ in range(repeats)]
            random.Random(seed + i).shuffle(order)
            barrier.wait()
            for name in order:
                ms = ask(tokens[i], name)
                with lock:
                    times[name].append(ms)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - started
        table_times: list[float] = []
        todo = list(specs or [])

        def table_client(i: int) -> None:
            mine = todo[i::clients]
            barrier.wait()
            for spec in mine:
                ms = ask(tokens[i], spec)
                with lock:
                    table_times.append(ms)

        table_started = time.perf_counter()
        threads = [threading.Thread(target=table_client, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        table_wall = time.perf_counter() - table_started
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    rows = [
        {
            "query": n,
            "requests": len(v),
            "p50_ms": round(statistics.median(v), 1),
            "p95_ms": round(_pct(v, 0.95), 1),
            "max_ms": round(max(v), 1),
            "meets_target": _pct(v, 0.95) < TARGET_P95_MS,
        }
        for n, v in times.items()
    ]
    total = sum(len(v) for v in times.values())
    tables = None
    if table_times:
        tables = {
            "tables": len(table_times),
            "p50_ms": round(statistics.median(table_times), 1),
            "p95_ms": round(_pct(table_times, 0.95), 1),
            "max_ms": round(max(table_times), 1),
            "tables_per_second": round(len(table_times) / table_wall, 1),
            "meets_target": _pct(table_times, 0.95) < TABLE_TARGET_P95_MS,
        }
    return {
        "clients": clients,
        "requests": total,
        "wall_seconds": round(wall, 1),
        "requests_per_second": round(total / wall, 1),
        "queries": rows,
        "three_dimension_tables": tables,
    }


def database_counts(db: Path) -> dict[str, int]:
    """Rows in the tables the queries read (for the report)."""
    import duckdb

    con = duckdb.connect(str(db.with_name("engineer.duckdb")), read_only=True)
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
    p.add_argument("--clients", type=int, default=20, help="analysts asking the service at once")
    p.add_argument(
        "--tables", type=int, default=200, help="different three-dimension tables to time"
    )
    p.add_argument("--no-service", action="store_true", help="time DuckDB directly only")
    p.add_argument("--out", default="bench-out/queries")
    p.add_argument("--db", help="time this published database instead of building one")
    p.add_argument(
        "--reuse", action="store_true", help="reuse a previous build's extracts; publish again"
    )
    p.add_argument(
        "--retime", action="store_true", help="time a previous build's live release again"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    live = out / "data" / "demo" / "out" / "current" / "uprnlink.duckdb"
    if args.retime and not live.exists():
        p.error(f"--retime: no previous build in {out} (expected {live})")
    if args.db:
        db = Path(args.db)
    elif args.retime:
        from uprnlink.privacy.keys import use_demo_passphrases
        from uprnlink.settings import read_settings

        use_demo_passphrases(read_settings(out / "data" / "config" / "demo.toml"))
        db = live.resolve()
    else:
        db = build_database(out / "data", args.people, args.seed, reuse=args.reuse)
    counts = database_counts(db)
    rows = time_queries(db, args.repeats)
    width = max(len(r["query"]) for r in rows)
    print(
        f"\nNamed questions on {counts['person']:,} linked people ({db.stat().st_size >> 20} MiB)"
    )
    print(f"{'question':<{width}}  {'rows':>5}  {'p50 ms':>8}  {'p95 ms':>8}  target")
    for r in rows:
        ok = "ok" if r["meets_target"] else f"over {TARGET_P95_MS:.0f}"
        print(f"{r['query']:<{width}}  {r['rows']:>5}  {r['p50_ms']:>8}  {r['p95_ms']:>8}  {ok}")
    specs = three_dimension_tables(db, args.tables)
    direct_tables = time_tables(db, specs)
    print(
        f"\n{direct_tables['tables']} different three-dimension tables of residents, directly: "
        f"p50 {direct_tables['p50_ms']} ms, p95 {direct_tables['p95_ms']} ms "
        f"(median {direct_tables['median_cells']} cells)"
    )
    effect = perturbation_effect(db)
    print("\nWhat perturbation does to the named questions' answers (against the true table)")
    print(
        f"{'question':<{width}}  {'cells':>6}  {'withheld':>8}  {'changed':>8}  "
        f"{'mean |change|':>13}  {'rates: mean |change|':>20}"
    )
    for r in effect:
        print(
            f"{r['query']:<{width}}  {r['cells']:>6}  {r['withheld_share']:>8.1%}  "
            f"{r['changed_share']:>8.1%}  {r['mean_abs_change']:>13}  "
            f"{r['rate_mean_abs_change']:>20}"
        )
    service: dict[str, Any] | None = None
    if not args.no_service and not args.db:
        config = out / "data" / "config" / "demo.toml"
        service = time_service(config, max(1, args.repeats // 4), args.clients, specs=specs)
        print(
            f"\nThrough the query service, {service['clients']} analysts at once "
            f"({service['requests']:,} requests, {service['requests_per_second']} per second)"
        )
        print(f"{'query':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  direct p95  target")
        direct = {r["query"]: r["p95_ms"] for r in rows}
        for r in service["queries"]:
            ok = "ok" if r["meets_target"] else f"over {TARGET_P95_MS:.0f}"
            print(
                f"{r['query']:<{width}}  {r['p50_ms']:>8}  {r['p95_ms']:>8}  "
                f"{direct[r['query']]:>10}  {ok}"
            )
        t3 = service["three_dimension_tables"]
        if t3:
            ok = "ok" if t3["meets_target"] else f"over {TABLE_TARGET_P95_MS:.0f}"
            print(
                f"{t3['tables']} different three-dimension tables through the service, "
                f"{service['clients']} analysts at once: p50 {t3['p50_ms']} ms, p95 "
                f"{t3['p95_ms']} ms ({t3['tables_per_second']} per second)  {ok}"
            )
    result = {
        "people_requested": None if args.db or args.retime else args.people,
        "database": str(db),
        "database_mib": db.stat().st_size >> 20,
        "tables": counts,
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "target_p95_ms": TARGET_P95_MS,
        "queries": rows,
        "three_dimension_tables": direct_tables,
        "perturbation_effect": effect,
        "service": service,
    }
    (out / "queries.json").write_text(json.dumps(result, indent=2))
    print(f"\nWrote {out / 'queries.json'}")
    met = all(r["meets_target"] for r in rows) and (
        service is None
        or (
            all(r["meets_target"] for r in service["queries"])
            and (service["three_dimension_tables"] or {}).get("meets_target", True)
        )
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
