"""`make bench`: end-to-end and pseudonymisation figures, with baselines measured in the same run.

Usage: python -m benchmarks.run [--records 100000 1000000] [--full | --scale]
                                [--populations demo testpop] [--repeat] [--out bench-out]
                                [--no-febrl]

Two populations are measured side by side: the demo's own (`uprnlink.synth`, the one the model
was developed on) and the independent Westmere population (`uprnlink.testpop`, other systems'
layouts and habits of error, config/testpop.toml). For each population and size (about 100,000
and 1,000,000 source records; `--full` adds 5,000,000, `--scale` 5,000,000 and 15,000,000) it
synthesises extracts (not timed), then runs every pipeline stage from ingest to the published
views in a child process with `[linkage] baselines = false`, recording wall time and peak
resident memory (the process and its children) per stage, and records per second. In the same
run, a second child links the same trusted records with the plain Splink model and its common
blocking (`block_on` forename + surname, surname + date of birth) and the deterministic rules,
and scores all three against the synthetic truth. The pseudonymisation stage is compared with a
per-record stdlib HMAC loop on the same identifiers.

Each child runs under a memory cap (`--memory-cap-gib`, enforced by sampling its resident
memory) and a time limit; a child that is killed, by the cap, the limit or the kernel, is
reported as such, and the next population still runs. `--repeat` rebuilds each population's
work and output folders from scratch a second time (same extracts, same key) and compares the
people and households of the two runs, with a third run training on all threads to price the
one-thread (repeatable) training. Then FEBRL4, the public two-file benchmark, goes through the
project's own config (`benchmarks/febrl.py`). Figures go to bench-out/results.json and
bench-out/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.privacy import keys
from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.pseudonymise import tokenise_series
from uprnlink.settings import PROJECT_ROOT

RECORDS_PER_PERSON = 5.24  # measured: 20,000 people give 105,036 records, 200,000 give 1,047,829
# Westmere: 20,000 residents give 95,455 records.
TESTPOP_RECORDS_PER_PERSON = 4.77
POPULATIONS = ("demo", "testpop")
DEFAULT_RECORDS = (100_000, 1_000_000)
FULL_RECORDS = 5_000_000
# `--scale`: an integrated care system's size (15M records, about 3M people) beside 5M.
SCALE_RECORDS = (5_000_000, 15_000_000)
GIB = 1024**3

TARGETS = {
    "seconds_at_1m": 180,
    "peak_gib_at_1m": 6,
    "peak_gib_at_5m": 20,
    "growth_100k_to_1m": 11,
    "pairs_per_record": 3.5,  # at every size, on both populations
    "recall_drop": 0.002,  # recall at any size within this of the smallest size's
    "pseudonymisation_distinct_per_core_s": 1.5e6,
}


# ----------------------------------------------------------------------------- memory


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(found.group(1)) * 1024 if found else 0
        todo.extend(int(c) for c in children)
    return total


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be used without swapping)."""
    found = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return int(found.group(1)) * 1024 if found else 0


def run_capped(
    args: list[str], cap_bytes: int, time_limit: float, log_path: Path
) -> dict[str, Any]:
    """Run a child (its own process group), sampling its tree's memory; kill it past the cap or
    the time limit. Returns returncode, the last stdout line, peak tree RSS and why it died."""
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
        peak, killed = 0, None
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            if rss > cap_bytes:
                killed = f"memory cap {cap_bytes / GIB:.1f} GiB exceeded"
            elif time.perf_counter() - started > time_limit:
                killed = f"time limit {time_limit:.0f} s exceeded"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
        out = proc.stdout.read() if proc.stdout else ""
    if killed is None and proc.returncode == -signal.SIGKILL:
        killed = "killed by the kernel (out of memory?)"
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    return {
        "returncode": proc.returncode,
        "result": json.loads(lines[-1]) if lines else None,
        "peak_tree_bytes": peak,
        "killed": killed,
        "seconds": time.perf_counter() - started,
        "log": str(log_path),
    }


# ----------------------------------------------------------------------------- children

# Runs the pipeline stages (uprnlink.run.runner.execute with the local steps), measuring each
# step's wall time and peak memory: VmHWM of this process (reset before each step through
# /proc/self/clear_refs) and the sampled resident memory of any children (a Spark JVM).
PIPELINE_CHILD = r"""
import dataclasses, json, os, re, sys, threading, time
from pathlib import Path
from uprnlink.privacy.keys import DEMO_PASSPHRASE
for _env in ("UPRNLINK_KEY_PASSPHRASE", "UPRNLINK_AUDIT_PASSPHRASE",
             "UPRNLINK_RELEASE_PASSPHRASE"):
    os.environ[_env] = DEMO_PASSPHRASE
from benchmarks.run import tree_rss
from uprnlink.run import runner
from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.trusted import read_trusted_records, write_trusted
from uprnlink.run.evaluation import evaluate_run
from uprnlink.zones import Zones

def hwm():
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024

stage_seconds, stage_peak, current = {}, {}, ["setup"]
def sample():
    while True:
        step = current[0]
        stage_peak[step] = max(stage_peak.get(step, 0), tree_rss(os.getpid()))
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()

def measured(name, fn):
    def run(*args, **kwargs):
        current[0] = name
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stage_seconds[name] = stage_seconds.get(name, 0) + time.perf_counter() - t
            stage_peak[name] = max(stage_peak.get(name, 0), hwm())
            current[0] = "between"
    return run

config = sys.argv[1]
t = time.perf_counter()
steps = runner.Steps(**{
    f.name: measured(f.name, getattr(runner.LOCAL_STEPS, f.name))
    for f in dataclasses.fields(runner.Steps)
})
summary = runner.execute(config, steps, run_id="bench").to_dict()
wall = time.perf_counter() - t
print(json.dumps({
    "wall": wall,
    "timings": summary.get("timings", {}),
    "step_seconds": stage_seconds,
    "step_peak_bytes": stage_peak,
    "linkage": {k: v for k, v in summary["linkage"].items() if k != "blocking"},
    "blocking": summary["linkage"].get("blocking", []),
    "records": sum(r["rows_in"] for r in summary["ingest"]),
}, default=str))
"""

# Links the same trusted records with the baselines (plain Splink, deterministic), then scores
# the model and both baselines against the synthetic truth.
BASELINE_CHILD = r"""
import json, os, re, sys, time
from pathlib import Path
from uprnlink.privacy.keys import DEMO_PASSPHRASE
for _env in ("UPRNLINK_KEY_PASSPHRASE", "UPRNLINK_AUDIT_PASSPHRASE",
             "UPRNLINK_RELEASE_PASSPHRASE"):
    os.environ[_env] = DEMO_PASSPHRASE
from uprnlink.run import runner
from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.trusted import read_trusted_records, write_trusted
from uprnlink.run.evaluation import evaluate_run
from uprnlink.zones import Zones
from uprnlink.linkage.baselines import deterministic_clusters, plain_splink_clusters
from uprnlink.settings import read_settings

def hwm():
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024

config, truth, which = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
settings = read_settings(config)
z = Zones(settings)
key = load_run_key(settings)
records = read_trusted_records(settings, key)
out = {}
for name in which:
    Path("/proc/self/clear_refs").write_text("5")
    t = time.perf_counter()
    if name == "plain_splink":
        found = plain_splink_clusters(records, settings.linkage, z.linkage_dir,
                                      settings.linkage.match_threshold)
    else:
        found = deterministic_clusters(records)
    seconds = time.perf_counter() - t
    clusters = found.join(records.select("unique_id", "source_dataset"), on="unique_id")
    write_trusted(clusters.select("unique_id", "source_dataset", "person_id"),
                           z.linkage_dir / f"baseline_{name}.parquet", key)
    out[name] = {"seconds": seconds, "peak_bytes": hwm()}
evaluation = evaluate_run(settings, truth)
h = evaluation.get("households") or {}
print(json.dumps({"baselines": out, "pairwise": evaluation["pairwise"],
                  "baseline_pairwise": evaluation.get("baselines", {}),
                  "namesakes": (evaluation.get("namesakes") or {}).get("precision"),
                  "households": {k: h.get(k) for k in ("precision", "recall", "households",
                                                       "households_exact")},
                  "cannot_link": evaluation.get("cannot_link")}, default=str))
"""

# A digest of a finished run's people (record -> person id) and households (published
# memberships), to compare two rebuilds from scratch.
DIGEST_CHILD = r"""
import hashlib, json, os, sys
from pathlib import Path
import polars as pl
from uprnlink.privacy.keys import DEMO_PASSPHRASE
for _env in ("UPRNLINK_KEY_PASSPHRASE", "UPRNLINK_AUDIT_PASSPHRASE",
             "UPRNLINK_RELEASE_PASSPHRASE"):
    os.environ[_env] = DEMO_PASSPHRASE
from uprnlink.privacy.keys import load_run_key
from uprnlink.privacy.trusted import read_trusted
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

settings = read_settings(Path(sys.argv[1]))
z = Zones(settings)
clusters = read_trusted(z.clusters, load_run_key(settings)).select("unique_id", "person_id")
members = pl.read_parquet(settings.linked_dir / "membership.parquet")
def digest(frame):
    rows = frame.sort(frame.columns).write_csv().encode()
    return hashlib.sha256(rows).hexdigest()
print(json.dumps({"people": digest(clusters), "households": digest(members),
                  "person_ids": clusters.get_column("person_id").n_unique(),
                  "memberships": members.height}))
"""

SYNTH_CHILD = r"""
import json, sys, time
from pathlib import Path
from uprnlink.privacy.keys import create_demo_key
from uprnlink.synth import write_synthetic
from uprnlink.testpop import write_test_population
t = time.perf_counter()
write = write_test_population if sys.argv[4] == "testpop" else write_synthetic
s = write(Path(sys.argv[1]), people=int(sys.argv[2]), seed=int(sys.argv[3]))
keys = Path(sys.argv[1]) / "work" / "keys"
for kind, name in (("pseudonymisation", "uprnlink.key"), ("audit", "audit.key"),
                   ("release", "release.key")):
    create_demo_key(keys / name, kind=kind)
print(json.dumps({"seconds": time.perf_counter() - t, "records": sum(s.records_per_source.values())}))
"""


# ----------------------------------------------------------------------------- stages


def _best(fn: Any, repeats: int = 3) -> tuple[float, float, Any]:
    """Best wall and best CPU seconds of `repeats` calls (the machine is shared), and the
    last result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def bench_pseudonymisation(
    n_records: int = 3_000_000, n_distinct: int = 1_000_000
) -> dict[str, Any]:
    """Tokens per second on the same 12-digit UPRNs, in one run:

    - hashing: `MasterKey.hmac_hex` on the distinct canonical values, on one thread (so
      "per core" is per core), through the C extension and through the pure-Python fallback;
    - tokenising: `tokenise_series` on every record (find the distinct values, hash each once
      on every core, map the tokens back), per CPU second of the whole process;
    - baseline: a per-record stdlib `hmac.digest` loop.
    """
    rng = random.Random(1)
    distinct = rng.sample(range(10_000_000_000, 999_999_999_999), n_distinct)
    values = pl.Series("uprn", [distinct[rng.randrange(n_distinct)] for _ in range(n_records)])
    key = MasterKey(bytes(range(32)))
    n_hashed = values.n_unique()
    messages = values.unique().cast(pl.String).cast(pl.Binary)

    hash_wall, hash_cpu, _ = _best(lambda: key.hmac_hex("uprn", messages, 16, threads=1))
    saved = keys._bulk_hmac
    keys._bulk_hmac = None  # the fallback a build without the extension takes
    try:
        python_wall, _, _ = _best(lambda: key.hmac_hex("uprn", messages, 16), repeats=1)
    finally:
        keys._bulk_hmac = saved
    best_wall, best_cpu, tokens = _best(lambda: tokenise_series(values, key, "uprn"))

    raw_key = hashlib.sha256(b"baseline").digest()
    listed = values.to_list()
    wall, cpu = time.perf_counter(), time.process_time()
    baseline = [hmac.digest(raw_key, str(v).encode(), "sha256")[:16].hex() for v in listed]
    base_wall, base_cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert tokens.len() == len(baseline)
    return {
        "records": n_records,
        "distinct": n_hashed,
        "hmac_path": keys.BULK_HMAC,
        "hash_seconds": round(hash_wall, 3),
        "hash_distinct_per_core_s": round(n_hashed / hash_cpu),
        "python_hash_seconds": round(python_wall, 3),
        "python_hash_distinct_per_s": round(n_hashed / python_wall),
        "uprnlink_seconds": round(best_wall, 3),
        "uprnlink_cpu_seconds": round(best_cpu, 3),
        "uprnlink_records_per_s": round(n_records / best_wall),
        "uprnlink_distinct_per_s": round(n_hashed / best_wall),
        "uprnlink_distinct_per_core_s": round(n_hashed / best_cpu),
        "baseline_per_record_hmac_seconds": round(base_wall, 3),
        "baseline_records_per_s": round(n_records / base_wall),
        "baseline_records_per_core_s": round(n_records / base_cpu),
        "speedup": round(base_wall / best_wall, 2),
    }


def _config(
    root: Path, threads: int, memory_limit: str, population: str = "demo", **linkage: bool | float
) -> Path:
    """The population's configuration pointed at root/<population>, with the evaluation
    baselines off (they are timed separately), the given DuckDB resources and any other
    [linkage] switches."""
    text = (PROJECT_ROOT / "config" / f"{population}.toml").read_text()
    text = re.sub(r"(?m)^baselines\s*=.*$", "baselines = false", text)
    text = re.sub(r"(?m)^threads\s*=.*$", f"threads = {threads}", text)
    text = re.sub(r"(?m)^memory_limit\s*=.*$", f'memory_limit = "{memory_limit}"', text)
    extra = "".join(f"{k} = {str(v).lower()}\n" for k, v in linkage.items())
    text = text.replace("[linkage]\n", "[linkage]\n" + extra, 1)
    name = population if not linkage else f"{population}-{'-'.join(linkage)}"
    config = root / "config" / f"{name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return config


def bench_population(
    records: int, args: argparse.Namespace, work: Path, population: str = "demo"
) -> dict[str, Any]:
    """Synthesise about `records` source records of a population, then run and measure the
    pipeline and the baselines in capped child processes (and, with --repeat, rebuild from
    scratch and compare)."""
    per_person = TESTPOP_RECORDS_PER_PERSON if population == "testpop" else RECORDS_PER_PERSON
    people = max(200, round(records / per_person))
    root = work / f"{population}_{records}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    result: dict[str, Any] = {"population": population, "target_records": records, "people": people}
    cap = min(int(args.memory_cap_gib * GIB), available_bytes() - GIB // 2)
    if cap < 2 * GIB:
        return {**result, "status": "skipped", "why": "less than 2.5 GiB of memory available"}
    result["memory_cap_gib"] = round(cap / GIB, 1)
    python = sys.executable
    data = root / population

    print(f"  synthesising {people:,} people ({population}) ...", flush=True)
    synth = run_capped(
        [python, "-c", SYNTH_CHILD, str(data), str(people), str(args.seed), population],
        cap,
        args.time_limit,
        root / "synth.log",
    )
    if synth["result"] is None:
        return {**result, "status": "failed", "stage": "synthesis", "why": _why(synth)}
    result["synth_seconds"] = round(synth["result"]["seconds"], 1)
    budget = {} if args.pair_budget is None else {"pair_budget": args.pair_budget}
    config = _config(root, args.threads, args.duckdb_memory, population, **budget)

    print("  running the pipeline (ingest to published views) ...", flush=True)
    run = run_capped(
        [python, "-c", PIPELINE_CHILD, str(config)], cap, args.time_limit, root / "pipeline.log"
    )
    result["peak_tree_gib"] = round(run["peak_tree_bytes"] / GIB, 2)
    if run["result"] is None:
        return {
            **result,
            "status": "killed" if run["killed"] else "failed",
            "why": _why(run),
            "seconds_before_stop": round(run["seconds"], 1),
        }
    r = run["result"]
    steps = r["step_seconds"]
    peaks = r["step_peak_bytes"]
    stage_seconds = {
        "ingest": steps.get("ingest_reference", 0) + steps.get("ingest_sources", 0),
        **{k: v for k, v in steps.items() if not k.startswith("ingest")},
    }
    stage_peak = {
        "ingest": max(peaks.get("ingest_reference", 0), peaks.get("ingest_sources", 0)),
        **{k: v for k, v in peaks.items() if not k.startswith("ingest") and k in steps},
    }
    result.update(
        {
            "status": "ok",
            "records": r["records"],
            "wall_seconds": round(r["wall"], 1),
            "records_per_s": round(r["records"] / r["wall"]),
            "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
            "stage_peak_gib": {k: round(v / GIB, 2) for k, v in stage_peak.items()},
            "peak_gib": round(max([run["peak_tree_bytes"], *stage_peak.values()]) / GIB, 2),
            "link_seconds": r["linkage"].get("seconds", {}),
            "cannot_link": r["linkage"].get("cannot_link"),
            "profiles": r["linkage"].get("profiles"),
            "candidate_pairs": r["linkage"]["candidate_pairs"],
            "pairs_per_record": round(r["linkage"]["candidate_pairs"] / r["records"], 2),
            "pairs_above_threshold": r["linkage"]["pairs_above_threshold"],
            "people_linked": r["linkage"]["people"],
            "blocking": r["blocking"],
        }
    )
    if args.repeat:
        result["repeat"] = _repeat(root, config, args, cap)

    if args.no_baselines:
        result["baselines"] = {"status": "skipped", "why": "--no-baselines"}
    else:
        print("  linking the same records with the baselines and scoring ...", flush=True)
        base = run_capped(
            [
                python,
                "-c",
                BASELINE_CHILD,
                str(config),
                str(data / "truth"),
                "deterministic,plain_splink",
            ],
            cap,
            args.baseline_time_limit,
            root / "baselines.log",
        )
        if base["result"] is None:
            result["baselines"] = {
                "status": "killed" if base["killed"] else "failed",
                "why": _why(base),
                "seconds_before_stop": round(base["seconds"], 1),
                "peak_tree_gib": round(base["peak_tree_bytes"] / GIB, 2),
            }
        else:
            b = base["result"]
            result["pairwise"] = _scores(b["pairwise"])
            result["quality"] = {
                "namesake_precision": b.get("namesakes"),
                "households": b.get("households"),
            }
            result["baselines"] = {
                "status": "ok",
                **{
                    name: {
                        "seconds": round(fig["seconds"], 1),
                        "peak_gib": round(fig["peak_bytes"] / GIB, 2),
                        **_scores(b["baseline_pairwise"].get(name, {})),
                    }
                    for name, fig in b["baselines"].items()
                },
            }
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return result


def _repeat(root: Path, config: Path, args: argparse.Namespace, cap: int) -> dict[str, Any]:
    """Rebuild from scratch twice more on the same extracts and key: once as configured
    (people and households must come out identical), once training on all threads (what
    the one-thread, repeatable training costs)."""
    python = sys.executable
    settings_dir = config.parent.parent / config.stem.split("-")[0]
    out: dict[str, Any] = {}
    digests = []
    for label, cfg in (
        ("first", config),
        ("rebuild", config),
        (
            "all_threads",
            _config(
                root,
                args.threads,
                args.duckdb_memory,
                config.stem.split("-")[0],
                repeatable_training=False,
            ),
        ),
    ):
        if label != "first":
            print(f"  rebuilding from scratch ({label}) ...", flush=True)
            shutil.rmtree(settings_dir / "out", ignore_errors=True)
            for folder in (settings_dir / "work").iterdir():
                if folder.name != "keys":
                    shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
            run = run_capped(
                [python, "-c", PIPELINE_CHILD, str(cfg)],
                cap,
                args.time_limit,
                root / f"{label}.log",
            )
            if run["result"] is None:
                out[label] = {"status": "failed", "why": _why(run)}
                continue
            seconds = run["result"]["linkage"].get("seconds", {})
            out[label] = {"wall_seconds": round(run["result"]["wall"], 1), "link": seconds}
        digest = run_capped(
            [python, "-c", DIGEST_CHILD, str(cfg)], cap, args.time_limit, root / "digest.log"
        )
        d = digest["result"] or {}
        out.setdefault(label, {}).update(d)
        digests.append(d)
    if len(digests) >= 2:
        out["identical_people"] = digests[0].get("people") == digests[1].get("people")
        out["identical_households"] = digests[0].get("households") == digests[1].get("households")
    return out


def _scores(pairwise: dict[str, Any]) -> dict[str, Any]:
    return {k: round(float(pairwise[k]), 4) for k in ("precision", "recall", "f1") if k in pairwise}


def _why(run: dict[str, Any]) -> str:
    if run["killed"]:
        return str(run["killed"])
    tail = Path(run["log"]).read_text(errors="replace").strip().splitlines()[-1:]
    return f"exit {run['returncode']}: {tail[0][:300] if tail else 'no output'}"


# ----------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows for the issue's targets."""
    by_size = {
        r["target_records"]: r for r in results["pipeline"] if r.get("population", "demo") == "demo"
    }
    rows: list[tuple[str, str, str]] = []
    one = by_size.get(1_000_000)
    if one and one["status"] == "ok":
        rows.append(
            (
                "1M records end to end <= 180 s",
                f"{one['wall_seconds']} s",
                _verdict(one["wall_seconds"] <= TARGETS["seconds_at_1m"]),
            )
        )
        rows.append(
            (
                "1M records peak memory <= 6 GiB",
                f"{one['peak_gib']} GiB",
                _verdict(one["peak_gib"] <= TARGETS["peak_gib_at_1m"]),
            )
        )
    small = by_size.get(100_000)
    if one and small and one["status"] == small["status"] == "ok":
        growth = one["wall_seconds"] / small["wall_seconds"]
        rows.append(
            (
                "time growth 100k -> 1M <= 11x",
                f"{growth:.1f}x",
                _verdict(growth <= TARGETS["growth_100k_to_1m"]),
            )
        )
    five = by_size.get(FULL_RECORDS)
    if five:
        if five["status"] == "ok":
            rows.append(
                (
                    "5M records run, peak <= 20 GiB",
                    f"{five['wall_seconds']} s, {five['peak_gib']} GiB",
                    _verdict(five["peak_gib"] <= TARGETS["peak_gib_at_5m"]),
                )
            )
        else:
            rows.append(("5M records run, peak <= 20 GiB", five["status"], "**not met**"))
    rows += scale_targets(results)
    p = results["pseudonymisation"]
    if p:
        rows.append(
            (
                "pseudonymisation >= 1.5M distinct identifiers/s per core",
                f"{p['hash_distinct_per_core_s'] / 1e6:.2f}M hashed on one core "
                f"({p['hmac_path']}); {p['uprnlink_distinct_per_core_s'] / 1e6:.2f}M per CPU "
                "second with finding distinct values and mapping back",
                _verdict(
                    p["hash_distinct_per_core_s"] >= TARGETS["pseudonymisation_distinct_per_core_s"]
                ),
            )
        )
    return rows


def scale_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows for blocking and recall by size, per population:
    candidate pairs per record at every size, and recall at each larger size against the
    smallest size's."""
    rows: list[tuple[str, str, str]] = []
    for population in POPULATIONS:
        runs = sorted(
            (r for r in results["pipeline"] if r.get("population", "demo") == population),
            key=lambda r: r["target_records"],
        )
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            continue
        worst = max(r["pairs_per_record"] for r in ok)
        rows.append(
            (
                f"{population}: pairs per record <= {TARGETS['pairs_per_record']} at every size",
                ", ".join(f"{r['pairs_per_record']} at {r['records']:,}" for r in ok),
                _verdict(worst <= TARGETS["pairs_per_record"] and len(ok) == len(runs)),
            )
        )
        scored = [r for r in ok if r.get("pairwise", {}).get("recall") is not None]
        for r in scored[1:]:
            drop = scored[0]["pairwise"]["recall"] - r["pairwise"]["recall"]
            rows.append(
                (
                    f"{population}: recall at {r['records']:,} within "
                    f"{TARGETS['recall_drop']} of {scored[0]['records']:,}",
                    f"{r['pairwise']['recall']} vs {scored[0]['pairwise']['recall']} "
                    f"(change {-drop:+.4f})",
                    _verdict(drop <= TARGETS["recall_drop"]),
                )
            )
    return rows


def blocking_markdown(results: dict[str, Any]) -> str:
    """Blocking and recall by population size: pairs per record, the blocks the cap split (and
    those still over it after the refiners, uprnlink.linkage.blocking), the lowest cap the pair
    budget set on a rule, precision and recall."""
    lines = [
        "",
        "## Blocking and recall by population size",
        "",
        "| population | records | pairs/record | blocks split | still over the cap "
        "| lowest cap | precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(
        (r for r in results["pipeline"] if r["status"] == "ok"),
        key=lambda r: (r.get("population", "demo"), r["records"]),
    ):
        blocking = r.get("blocking", [])
        split = sum(b.get("blocks_split", 0) for b in blocking)
        over = sum(b.get("blocks_over_cap", 0) for b in blocking)
        lowest = min((b["block_cap"] for b in blocking if "block_cap" in b), default="")
        pw = r.get("pairwise", {})
        lines.append(
            f"| {r.get('population', 'demo')} | {r['records']:,} | {r['pairs_per_record']} "
            f"| {split:,} | {over:,} | {lowest} | {pw.get('precision', '')} "
            f"| {pw.get('recall', '')} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, load average at start "
        f"{m['load_at_start']}; Python {m['python']}. Started {results['started']}.",
        "",
        "## End to end (ingest to published views; synthesis and baselines not timed)",
        "",
        "| population | records | people | status | wall s | ingest s | link s | publish s "
        "| report s | records/s | peak GiB | pairs/record | precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["pipeline"]:
        pop = r.get("population", "demo")
        if r["status"] != "ok":
            why = r.get("why", "")
            lines.append(
                f"| {pop} | ~{r['target_records']:,} | {r['people']:,} | {r['status']}: {why} "
                "| | | | | | | | | | |"
            )
            continue
        st = r["stage_seconds"]
        pw = r.get("pairwise", {})
        lines.append(
            f"| {pop} | {r['records']:,} | {r['people']:,} | ok | {r['wall_seconds']} "
            f"| {st.get('ingest', 0):.1f} | {st.get('link', 0):.1f} | {st.get('publish', 0):.1f} "
            f"| {st.get('report', 0):.1f} | {r['records_per_s']:,} | {r['peak_gib']} "
            f"| {r['pairs_per_record']} | {pw.get('precision', '')} | {pw.get('recall', '')} |"
        )
    lines += _quality_lines(results)
    lines += ["", "### Peak memory per stage (GiB, process and children)", ""]
    stages = ["ingest", "link", "publish", "report", "switch", "finish"]
    lines.append("| population | records | " + " | ".join(stages) + " |")
    lines.append("| --- | --- |" + " --- |" * len(stages))
    for r in results["pipeline"]:
        if r["status"] == "ok":
            lines.append(
                f"| {r.get('population', 'demo')} | {r['records']:,} | "
                + " | ".join(str(r["stage_peak_gib"].get(s, "")) for s in stages)
                + " |"
            )
    lines += ["", "### Linkage steps (seconds)", ""]
    for r in results["pipeline"]:
        if r["status"] == "ok":
            steps = ", ".join(f"{k} {v}" for k, v in r["link_seconds"].items())
            lines.append(
                f"* {r.get('population', 'demo')}, {r['records']:,} records "
                f"({r['profiles']:,} distinct profiles, "
                f"{r['candidate_pairs']:,} pairs scored): {steps}"
            )
    lines += [
        "",
        "## Baselines on the same records",
        "",
        "| population | records | method | seconds | peak GiB | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["pipeline"]:
        if r["status"] != "ok":
            continue
        pw = r.get("pairwise", {})
        pop = r.get("population", "demo")
        lines.append(
            f"| {pop} | {r['records']:,} | uprnlink (link stage) "
            f"| {r['stage_seconds'].get('link', 0):.1f} "
            f"| {r['stage_peak_gib'].get('link', '')} | {pw.get('precision', '')} "
            f"| {pw.get('recall', '')} | {pw.get('f1', '')} |"
        )
        b = r.get("baselines", {})
        if b.get("status") != "ok":
            lines.append(
                f"| {pop} | {r['records']:,} | baselines | {b.get('status')}: {b.get('why', '')} "
                "| | | | |"
            )
            continue
        for name in ("plain_splink", "deterministic"):
            f = b.get(name, {})
            lines.append(
                f"| {pop} | {r['records']:,} | {name.replace('_', ' ')} | {f.get('seconds', '')} "
                f"| {f.get('peak_gib', '')} | {f.get('precision', '')} | {f.get('recall', '')} "
                f"| {f.get('f1', '')} |"
            )
    p = results["pseudonymisation"]
    lines += ["", "## Pseudonymisation", ""]
    if p:
        lines += [
            "| method | records | seconds | records/s | distinct/s | distinct/s per core |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| hashing only: {p['distinct']:,} distinct values, C extension, one thread "
            f"| | {p['hash_seconds']} | | {round(p['distinct'] / p['hash_seconds']):,} "
            f"| {p['hash_distinct_per_core_s']:,} |",
            f"| hashing only: the same, pure-Python fallback (no extension) "
            f"| | {p['python_hash_seconds']} | | {p['python_hash_distinct_per_s']:,} | |",
            f"| uprnlink tokenise_series (distinct values hashed once, all cores, mapped back) "
            f"| {p['records']:,} | {p['uprnlink_seconds']} | {p['uprnlink_records_per_s']:,} "
            f"| {p['uprnlink_distinct_per_s']:,} | {p['uprnlink_distinct_per_core_s']:,} |",
            f"| baseline: stdlib HMAC per record | {p['records']:,} "
            f"| {p['baseline_per_record_hmac_seconds']} | {p['baseline_records_per_s']:,} | | |",
            f"| ratio | | {p['speedup']}x | | | |",
        ]
    else:
        lines.append("Skipped (--no-pseudonymisation).")
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {v} | {ok} |" for t, v, ok in targets(results)]
    return "\n".join(lines) + "\n"


def _quality_lines(results: dict[str, Any]) -> list[str]:
    """Both populations side by side: linkage, namesakes, households, cannot-link splits and
    what they cost, and (with --repeat) whether two rebuilds agree."""
    lines = [
        "",
        "## The two populations side by side",
        "",
        "| population | records | precision | recall | F1 | plain Splink F1 | namesake precision "
        "| household pairs P / R | households exact | cannot-link s | splits (NHS, DOB, listing, "
        "under age) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    repeats = []
    for r in results["pipeline"]:
        if r["status"] != "ok":
            continue
        pw = r.get("pairwise", {})
        q = r.get("quality", {})
        h = q.get("households") or {}
        plain = r.get("baselines", {}).get("plain_splink", {}).get("f1", "")
        cl = r.get("cannot_link") or {}
        rules = cl.get("by_rule", {})
        exact = (
            f"{h['households_exact'] / h['households']:.4f}"
            if h.get("households") and h.get("households_exact") is not None
            else ""
        )
        pair = (
            f"{h['precision']:.4f} / {h['recall']:.4f}"
            if h.get("precision") is not None and h.get("recall") is not None
            else ""
        )
        namesake = q.get("namesake_precision")
        lines.append(
            f"| {r.get('population', 'demo')} | {r['records']:,} | {pw.get('precision', '')} "
            f"| {pw.get('recall', '')} | {pw.get('f1', '')} | {plain} "
            f"| {f'{namesake:.4f}' if namesake is not None else ''} | {pair} | {exact} "
            f"| {r['link_seconds'].get('cannot_link', '')} "
            f"| {', '.join(str(rules.get(k, '')) for k in ('nhs_number', 'date_of_birth', 'same_listing', 'under_age'))} |"
        )
        if r.get("repeat"):
            repeats.append(r)
    if repeats:
        lines += [
            "",
            "### Two rebuilds from scratch (same extracts, same key)",
            "",
            "| population | records | identical people | identical households | train s (one "
            "thread) | train s (all threads) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in repeats:
            rep = r["repeat"]
            one = rep.get("rebuild", {}).get("link", {}).get("train", "")
            every = rep.get("all_threads", {}).get("link", {}).get("train", "")
            lines.append(
                f"| {r.get('population', 'demo')} | {r['records']:,} "
                f"| {rep.get('identical_people')} | {rep.get('identical_households')} "
                f"| {one} | {every} |"
            )
    return lines


def main() -> int:
    """Run the benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--records", type=int, nargs="+", default=list(DEFAULT_RECORDS), help="source records"
    )
    parser.add_argument("--full", action="store_true", help="also run 5,000,000 records")
    parser.add_argument(
        "--scale", action="store_true", help="also run 5,000,000 and 15,000,000 records"
    )
    parser.add_argument("--out", default="bench-out", help="where results.json/.md go")
    parser.add_argument("--work", default=None, help="where populations are built (default OUT)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--duckdb-memory", default="4GB", help="DuckDB memory_limit")
    parser.add_argument("--memory-cap-gib", type=float, default=20.0, help="kill a child above")
    parser.add_argument("--time-limit", type=float, default=3600, help="seconds per child")
    parser.add_argument("--baseline-time-limit", type=float, default=1800)
    parser.add_argument("--no-baselines", action="store_true", help="skip the baseline linkage")
    parser.add_argument("--no-pseudonymisation", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic populations")
    parser.add_argument(
        "--populations",
        nargs="+",
        choices=POPULATIONS,
        default=list(POPULATIONS),
        help="demo (uprnlink.synth) and/or testpop (the independent Westmere population)",
    )
    parser.add_argument(
        "--repeat",
        action="store_true",
        help="rebuild each population from scratch twice more: identical people and "
        "households, and the cost of one-thread training",
    )
    parser.add_argument("--no-febrl", action="store_true", help="skip the FEBRL4 benchmark")
    parser.add_argument(
        "--pair-budget",
        type=float,
        default=None,
        help="[linkage] pair_budget for the populations' runs (default: the project's, off)",
    )
    args = parser.parse_args()
    extra = [*([FULL_RECORDS] if args.full else []), *(SCALE_RECORDS if args.scale else [])]
    sizes = list(dict.fromkeys([*args.records, *extra]))
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB),
            "load_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "targets": TARGETS,
        "pipeline": [],
    }
    if args.no_pseudonymisation:
        results["pseudonymisation"] = {}
    else:
        print("pseudonymisation: 3M records, 1M distinct UPRNs ...", flush=True)
        results["pseudonymisation"] = bench_pseudonymisation()
    for records in sizes:
        for population in args.populations:
            print(f"pipeline: {population}, about {records:,} records ...", flush=True)
            results["pipeline"].append(bench_population(records, args, work, population))
            (out / "results.json").write_text(json.dumps(results, indent=2))
    if not args.no_febrl:
        from benchmarks import febrl

        print("FEBRL4: two council extracts through the project's config ...", flush=True)
        results["febrl4"] = febrl.run_variants(work / "febrl")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = to_markdown(results) + blocking_markdown(results)
    if "febrl4" in results:
        from benchmarks import febrl

        md += "\n## FEBRL4 (benchmarks/febrl.py)\n\n" + febrl.to_markdown(results["febrl4"])
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
