"""Incremental monthly runs: a "next month" delivery with a share of each extract's rows changed,
run once in full and once incrementally from the same last run, timed per stage.

Usage: python -m benchmarks.incremental --dir DIR [--share 0.05] [--seed 7]

DIR is a demo that has run once (`uprnlink demo --people 200000 --dir DIR`: about 1M records).
The script copies it twice (DIR-full, DIR-incr), changes `share` of the rows of every landing
extract in both copies the same way (`perturb`: a third edited, a third removed, a third new
records), turns the baselines off and runs the whole pipeline in a child process in each copy:
in DIR-full without the last link's scored pairs (a full link with the saved model, as every
monthly run did before), in DIR-incr with them. It prints and writes DIR-incremental.json: wall
time per stage and end to end, the link stage's own timings, what the incremental link reused,
and whether the two runs gave every record the same person id.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.linkage.incremental import STATE_FILE
from uprnlink.settings import SourceSettings, read_settings
from uprnlink.zones import Zones


def _new_id(value: Any, n: int) -> Any:
    """A record id no row of the extract has: the old one with a prefix (digits stay digits)."""
    if isinstance(value, int):
        return -(n + 1)
    text = str(value)
    return f"9{text}" if text.isdigit() else f"N{text}"


def perturb(frame: pl.DataFrame, source: SourceSettings, share: float, seed: int) -> pl.DataFrame:
    """`frame` (one extract) with `share` of its rows changed, deterministically: a third
    edited (a surname, forename or first address line misspelt), a third removed and as many
    new records added (a known row's address and account with another row's forename and
    date of birth under a new record id: a new person, such as a newborn or a new tenant)."""
    rng = random.Random(seed)
    n = round(frame.height * share)
    picked = rng.sample(range(frame.height), n)
    edit, drop, add = picked[: n // 3], set(picked[n // 3 : 2 * n // 3]), picked[2 * n // 3 :]
    column = {f: m.column for f, m in source.columns.items()}
    names = [column[f] for f in ("surname", "forename", "address_line_1") if f in column]
    rows = frame.to_dicts()
    for k, i in enumerate(edit):
        name = names[k % len(names)]
        value = rows[i][name]
        if isinstance(value, str) and len(value) > 3:
            rows[i][name] = value[:-2] + value[-1] + value[-2]  # the last two letters swapped
    record_id = source.columns["record_id"].column
    for k, i in enumerate(add):
        other = rows[rng.randrange(len(rows))]
        new = {**rows[i], record_id: _new_id(rows[i][record_id], k)}
        for field in ("forename", "dob"):
            if field in column:
                new[column[field]] = other[column[field]]
        rows.append(new)
    kept = [row for j, row in enumerate(rows) if j not in drop]
    return pl.DataFrame(kept, schema=frame.schema, orient="row")


def perturb_landing(config: Path, share: float, seed: int) -> dict[str, int]:
    """Change `share` of the rows of every landing extract of `config` in place; returns rows
    per source after the change."""
    settings = read_settings(config)
    out = {}
    for index, (name, source) in enumerate(sorted(settings.sources.items())):
        path = source.path
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, separator=source.delimiter, infer_schema=False)
        changed = perturb(frame, source, share, seed + index)
        if path.suffix == ".parquet":
            changed.write_parquet(path)
        else:
            changed.write_csv(path, separator=source.delimiter)
        out[name] = changed.height
    return out


def _child(config: str) -> None:
    """Run every stage once (every delivery accepted) and print the timings as JSON."""
    from uprnlink.privacy.keys import use_demo_passphrases
    from uprnlink.run.runner import run_all

    settings = read_settings(Path(config))
    use_demo_passphrases(settings)  # the demo's published passphrases, this process only
    t = time.perf_counter()
    summary = run_all(config, accept=tuple(settings.sources))
    linkage: dict[str, Any] = dict(summary.linkage or {})
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - t, 2),
                "stages": summary.timings,
                "link": linkage.get("seconds"),
                "incremental": linkage.get("incremental"),
                "people": linkage.get("people"),
                "records": linkage.get("records"),
                "profiles": linkage.get("profiles"),
                "candidate_pairs": linkage.get("candidate_pairs"),
            }
        )
    )


def _copy(
    base: Path, suffix: str, share: float, seed: int, block_cap: int
) -> tuple[Path, dict[str, int]]:
    """A copy of the demo folder with the next month's landing extracts, baselines off."""
    folder = base.with_name(f"{base.name}-{suffix}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, folder, symlinks=True)
    config = folder / "demo.toml"
    text = config.read_text().replace("baselines = true", "baselines = false")
    if block_cap:
        text = text.replace("[linkage]\n", f"[linkage]\nblock_cap = {block_cap}\n", 1)
    config.write_text(text)
    return config, perturb_landing(config, share, seed)


def _run(config: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.incremental", "--child", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"run of {config} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU seconds (user + system, all threads): on a shared machine, steadier than wall time.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["cpu_seconds"] = round(cpu, 1)
    return result


def _same_people(full: Path, incr: Path) -> dict[str, int]:
    """Records, and records whose person id differs, between the two runs' clusters."""
    a, b = (pl.read_parquet(Zones(read_settings(c)).clusters) for c in (full, incr))
    joined = a.select("unique_id", "person_id").join(
        b.select("unique_id", "person_id"), on="unique_id", how="full", coalesce=True
    )
    differ = joined.filter(pl.col("person_id").ne_missing(pl.col("person_id_right"))).height
    return {"records": joined.height, "records_with_another_person_id": differ}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", help="a demo folder that has run once")
    parser.add_argument("--share", type=float, default=0.05, help="rows changed per extract")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--block-cap", type=int, default=0, help="pin [linkage] block_cap next month (0: derived)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return 0
    base = Path(args.dir).resolve()
    full, rows = _copy(base, "full", args.share, args.seed, args.block_cap)
    incr, _ = _copy(base, "incr", args.share, args.seed, args.block_cap)
    (Zones(read_settings(full)).linkage_dir / STATE_FILE).unlink()
    results: dict[str, Any] = {"share": args.share, "block_cap": args.block_cap, "rows": rows}
    results["full"], results["incremental"] = _run(full), _run(incr)
    results["compared"] = _same_people(full, incr)
    name = f"{base.name}-incremental{f'-cap{args.block_cap}' if args.block_cap else ''}.json"
    base.with_name(name).write_text(json.dumps(results, indent=2))
    f, i = results["full"], results["incremental"]
    print(f"{'stage':<12}{'full s':>10}{'incremental s':>15}{'share':>8}")
    for stage in [*f["stages"], "link.predict", "end to end", "cpu"]:
        if stage == "end to end":
            a, b = f["seconds"], i["seconds"]
        elif stage == "cpu":
            a, b = f["cpu_seconds"], i["cpu_seconds"]
        elif stage == "link.predict":
            a, b = f["link"]["predict"], i["link"]["predict"]
        else:
            a, b = f["stages"][stage], i["stages"].get(stage, 0.0)
        print(f"{stage:<12}{a:>10.1f}{b:>15.1f}{b / a if a else 0:>8.0%}")
    print(json.dumps({"incremental": i["incremental"], **results["compared"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
