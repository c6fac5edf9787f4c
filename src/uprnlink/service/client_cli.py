"""The analysts' command line: `uprnlink query`, `table`, `catalogue`, `jobs` and `outputs`.

Every command here is a client of the query service holding only a token (`UPRNLINK_TOKEN`
or `--token-file`): parse, ask, print. Tables and named questions come back protected;
typed SQL is answered on screen only for roles on a trusted desktop, and otherwise goes in as
a job (`uprnlink jobs submit`) whose output an output checker releases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

__all__ = ["add_client_commands"]


def _service_url(args: argparse.Namespace) -> str:
    """The query service's address: --url, else UPRNLINK_URL, else the config's [service]."""
    if getattr(args, "url", None):
        return str(args.url)
    if os.environ.get("UPRNLINK_URL"):
        return os.environ["UPRNLINK_URL"]
    if getattr(args, "config", None):
        from uprnlink.settings import read_settings

        return read_settings(Path(args.config)).service_url
    from uprnlink.errors import ConfigError

    raise ConfigError("where is the query service? give --url URL (or set UPRNLINK_URL)")


def _client(args: argparse.Namespace) -> Any:
    from uprnlink.service.client import QueryClient, read_token

    return QueryClient(_service_url(args), read_token(args.token_file))


def _print_answer(answer: Any, limit: int, started: float) -> None:
    import polars as pl

    from uprnlink.publish.outputs import format_table

    frame = pl.from_arrow(answer.table)
    assert isinstance(frame, pl.DataFrame)
    print(format_table(frame, answer.withheld, limit=limit, title=answer.title))
    if answer.truncated:
        print(f"(only the first {frame.height:,} rows: the service's row limit)", file=sys.stderr)
    print(
        f"({frame.height:,} rows in {time.perf_counter() - started:.2f} s; access logged)",
        file=sys.stderr,
    )


def _targets(args: argparse.Namespace) -> list[tuple[Path, str]]:
    targets = [(Path(f), "csv") for f in (args.csv or [])]
    targets += [(Path(f), "parquet") for f in (args.parquet or [])]
    if getattr(args, "out", None):
        out = Path(args.out)
        targets.append((out, "parquet" if out.suffix.lower() == ".parquet" else "csv"))
    return targets


def _keep(client: Any, path: Path, kind: str, **request: Any) -> None:
    record = client.request_output(fmt=kind, **request)
    data, digest = client.download(record["id"])
    path.write_bytes(data)
    print(
        f"Wrote {record['rows']:,} rows to {path}: output {record['id']}, release "
        f"no. {record['release_no']}, sha256 {digest[:16]}..."
    )


# ------------------------------------------------------------------------------ commands


def cmd_query(args: argparse.Namespace) -> int:
    from uprnlink.errors import ConfigError

    if args.list:
        from uprnlink.publish import queries

        # The questions ship with the package: listing them needs no service, token or data.
        for nq in queries.list_queries():
            print(f"{nq.name}\n    {nq.title}\n    {nq.question}\n")
        print("Ask one with: uprnlink query --named NAME")
        return 0
    if bool(args.sql) == bool(args.named):
        raise ConfigError("give either one SELECT statement or --named NAME (--list shows names)")
    client = _client(args)
    started = time.perf_counter()
    targets = _targets(args)
    if targets and args.sql:
        raise ConfigError(
            "typed SQL leaves as a file only through an output checker: "
            'uprnlink jobs submit --title "..." --why "..." "SQL"'
        )
    for path, kind in targets:
        _keep(client, path, kind, named=args.named)
    if targets:
        return 0
    _print_answer(client.query(args.sql, named=args.named), args.limit, started)
    return 0


def _spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from uprnlink.errors import ConfigError

    filters: dict[str, list[str]] = {}
    for item in args.where or []:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--where {item!r}: write DIMENSION=CATEGORY[,CATEGORY...]")
        filters.setdefault(name.strip(), []).extend(v.strip() for v in values.split(","))
    dims = [d.strip() for part in (args.by or []) for d in part.split(",") if d.strip()]
    measures = ["count", *(args.measure or [])]
    return {
        "dataset": args.dataset,
        "dimensions": dims,
        "filters": filters,
        "measures": list(dict.fromkeys(measures)),
        "totals": bool(args.totals),
    }


def cmd_table(args: argparse.Namespace) -> int:
    client = _client(args)
    started = time.perf_counter()
    spec = _spec_from_args(args)
    targets = _targets(args)
    for path, kind in targets:
        _keep(client, path, kind, table=spec, title=args.title or "")
    if targets:
        return 0
    _print_answer(client.table(spec), args.limit, started)
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    doc = _client(args).catalogue()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(textwrap.fill(doc["protection"]["explained"], 88), end="\n\n")
    for ds in doc["datasets"]:
        if args.dataset and ds["name"] != args.dataset:
            continue
        print(f"{ds['name']}: {ds['label']} (counts {ds['unit']})")
        print(textwrap.fill(ds["description"], 88, initial_indent="    ", subsequent_indent="    "))
        for d in ds["dimensions"]:
            cats = d["categories"]
            shown = ", ".join(cats[:10]) + (f", ... ({len(cats)} in all)" if len(cats) > 10 else "")
            print(f"  --by {d['name']:<26} {d['label']}: {shown}")
        for m in ds["measures"]:
            print(f"  --measure sum:{m['name']:<20} {m['description']}")
        print()
    if not args.dataset:
        named = ", ".join(q["name"] for q in doc["named_questions"])
        views = ", ".join(v["name"] for v in doc["sql_jobs"]["views"])
        for line in (
            "Measures: " + ", ".join(doc["measures_syntax"]),
            f"Named questions (uprnlink query --named NAME): {named}",
            f"Views for SQL jobs (uprnlink jobs submit): {views}",
        ):
            print(textwrap.fill(line, 88, subsequent_indent="    "))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from uprnlink.errors import ConfigError

    client = _client(args)
    if args.jobs_command == "list":
        jobs = client.jobs()
        if args.json:
            print(json.dumps(jobs, indent=2))
            return 0
        print(f"{'job':<12}{'status':<18}{'created':<27}title")
        for j in jobs:
            print(f"{j['id']:<12}{j['status']:<18}{j['created_at']:<27}{j['title']}")
        print(f"\n{len(jobs)} job{'s' if len(jobs) != 1 else ''}")
        return 0
    sql = args.sql
    if args.file:
        sql = Path(args.file).read_text(encoding="utf-8")
    if not sql:
        raise ConfigError('jobs submit needs SQL (or --file FILE), --title "..." and --why "..."')
    record = client.submit_job(
        sql, title=args.title, justification=args.why, fmt="parquet" if args.parquet else "csv"
    )
    if record.get("duplicate"):
        print(f"Job {record['id']} with the same SQL is already waiting: not queued twice.")
    else:
        print(
            f"Submitted job {record['id']}: its output is held for an output checker; nothing "
            "of it is shown before. `uprnlink jobs list` shows its status; once released: "
            f"uprnlink outputs download {record['id']} --out FILE"
        )
    return 0


def _print_preview(record: dict[str, Any]) -> None:
    """The held output's first rows, which the service sends to output checkers only."""
    rows = record.get("preview")
    if not rows:
        return
    import polars as pl

    frame = pl.DataFrame(rows)
    total = record.get("rows")
    shown = f"{frame.height} of {total}" if total else str(frame.height)
    print(f"\nThe held output ({shown} rows; shown to you as an output checker):")
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_hide_dataframe_shape=True, fmt_str_lengths=40):
        print(frame)


def cmd_outputs(args: argparse.Namespace) -> int:
    from uprnlink.errors import ConfigError

    client = _client(args)
    command = args.outputs_command
    if command in ("list", "register"):
        records = client.outputs() if command == "list" else client.register()
        if args.json:
            print(json.dumps(records, indent=2))
            return 0
        print(f"{'output':<12}{'status':<18}{'release':>8}  {'submitter':<16}{'created':<27}title")
        for r in records:
            print(
                f"{r['id']:<12}{r['status']:<18}{r.get('release_no') or '':>8}  "
                f"{r['submitter']:<16}{r['created_at']:<27}{r.get('title', '')}"
            )
        print(f"\n{len(records)} output{'s' if len(records) != 1 else ''}")
        return 0
    if not args.id:
        raise ConfigError(f"outputs {command} needs an output id (see `uprnlink outputs list`)")
    if command == "show":
        record = client.output(args.id)
        if args.json:
            print(json.dumps(record, indent=2))
            return 0
        for key in (
            "id",
            "kind",
            "title",
            "status",
            "submitter",
            "role",
            "created_at",
            "named",
            "format",
            "rows",
            "sha256",
            "approvals",
            "release_no",
            "released_at",
            "decided_by",
            "decision_note",
            "justification",
            "failure",
        ):
            if record.get(key) not in (None, "", []):
                print(f"{key:<14}{record[key]}")
        if record.get("sql"):
            print(f"{'sql':<14}{record['sql']}")
        for f in (record.get("verdict") or {}).get("findings", []):
            print(f"advice        {f['rule']}: {f['message']}")
        _print_preview(record)
        return 0
    if command in ("approve", "reject"):
        record = client.decide(args.id, approve=command == "approve", note=args.note or "")
        if record["status"] == "released":
            done = f"released as no. {record['release_no']}"
        elif command == "approve":
            done = f"approved by {', '.join(record['approvals'])}; another checker must approve"
        else:
            done = "rejected"
        print(f"Output {record['id']} {done}")
        return 0
    data, digest = client.download(args.id)
    out = Path(args.out or args.id)
    out.write_bytes(data)
    print(f"Wrote output {args.id} to {out} (sha256 {digest}, checked)")
    return 0


# ------------------------------------------------------------------------------ parsers


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the service (default: UPRNLINK_URL, else the config's)")
    p.add_argument("--config", help="run configuration, only to find the service's address")
    p.add_argument(
        "--token-file", help="file holding your token (default: the UPRNLINK_TOKEN variable)"
    )


def _file_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--csv", action="append", metavar="FILE", help=f"keep {what} as a CSV file")
    p.add_argument("--parquet", action="append", metavar="FILE", help=f"keep {what} as Parquet")
    p.add_argument("--out", help=f"keep {what} as FILE.csv or FILE.parquet (by suffix)")
    p.add_argument("--limit", type=int, default=50, help="rows to show on screen (default 50)")


def add_client_commands(sub: Any) -> None:
    """The analysts' subcommands, on the main parser's subparsers."""
    _add_query_parser(sub)
    _add_table_parser(sub)
    _add_catalogue_parser(sub)
    _add_jobs_parser(sub)
    _add_outputs_parser(sub)


def _add_query_parser(sub: Any) -> None:
    """`uprnlink query`: a named question, or SQL on a trusted desktop."""
    q = sub.add_parser(
        "query",
        help="a named question (or, on a trusted desktop, SQL) through the query service",
        description="A client of the query service (`uprnlink serve`): analysts hold only a "
        "token (UPRNLINK_TOKEN, issued by `uprnlink users add`), never a key or a database "
        "file. A named question's answer is a protected table (every count perturbed). Typed "
        "SQL is answered on screen only for roles on a trusted desktop; analysts submit it as "
        "a job (`uprnlink jobs submit`).",
    )
    _service_args(q)
    q.add_argument("--list", action="store_true", help="list the named questions and exit")
    q.add_argument("--named", metavar="NAME", help="ask a named question (see --list)")
    _file_args(q, "the answer")
    q.add_argument("sql", nargs="?", help="one SELECT statement (trusted-desktop roles only)")
    q.set_defaults(func=cmd_query)


def _add_table_parser(sub: Any) -> None:
    """`uprnlink table`: the table builder."""
    t = sub.add_parser(
        "table",
        help="build a protected table (the table builder) through the query service",
        description="Build a table from the catalogue (`uprnlink catalogue`): a dataset, "
        "dimensions, filters on their categories and measures. The service counts the units "
        "and perturbs every count and sum (cell-key perturbation); counts below the threshold "
        "are [c]. Example: uprnlink table households --by imd_decile,tenure "
        "--measure sum:emergency_admissions --measure per_1000:emergency_admissions",
    )
    _service_args(t)
    t.add_argument("dataset", help="households, residents or household_snapshots")
    t.add_argument("--by", action="append", metavar="DIM[,DIM]", help="dimensions (rows)")
    t.add_argument(
        "--where",
        action="append",
        metavar="DIM=CAT[,CAT]",
        help="keep only these categories of a dimension (repeatable)",
    )
    t.add_argument(
        "--measure",
        action="append",
        metavar="MEASURE",
        help="sum:X, mean:X, per_1000:X, per_1000:X/Y, count_where:DIM=CAT, "
        "percent_where:DIM=CAT (count is always shown)",
    )
    t.add_argument("--totals", action="store_true", help="add totals (margins)")
    t.add_argument("--title", help="a title for a kept file")
    _file_args(t, "the table")
    t.set_defaults(func=cmd_table)


def _add_catalogue_parser(sub: Any) -> None:
    """`uprnlink catalogue`: what may be tabulated."""
    c = sub.add_parser(
        "catalogue",
        help="what may be tabulated: datasets, dimensions, categories, measures, questions",
    )
    _service_args(c)
    c.add_argument("--dataset", help="only this dataset")
    c.add_argument("--json", action="store_true", help="the whole catalogue as JSON")
    c.set_defaults(func=cmd_catalogue)


def _add_jobs_parser(sub: Any) -> None:
    """`uprnlink jobs submit|list`: typed SQL held for an output checker."""
    j = sub.add_parser(
        "jobs",
        help="submit typed SQL as a job for an output checker, or list your jobs",
        description="A job runs your SQL over the record-level views; its output is held and "
        "nothing of it (rows, errors, timing) is shown to you until an output checker "
        "approves it. Then `uprnlink outputs download ID`.",
    )
    jobs = j.add_subparsers(dest="jobs_command", required=True, metavar="submit|list")
    js = jobs.add_parser("submit", help="submit one SELECT statement as a job")
    js.add_argument("sql", nargs="?", help="one SELECT statement (or --file)")
    js.add_argument("--file", help="read the SQL from this file")
    js.add_argument("--title", required=True, help="a short title")
    js.add_argument("--why", required=True, help="why the output should leave, for the checker")
    js.add_argument("--parquet", action="store_true", help="a Parquet output (default CSV)")
    _service_args(js)
    js.set_defaults(func=cmd_jobs)
    jl = jobs.add_parser("list", help="your jobs and their status")
    jl.add_argument("--json", action="store_true", help="as JSON")
    _service_args(jl)
    jl.set_defaults(func=cmd_jobs)


def _add_outputs_parser(sub: Any) -> None:
    """`uprnlink outputs`: list, show, decide, download; the register."""
    o = sub.add_parser(
        "outputs",
        help="outputs: list, show, approve, reject or download; the release register",
        description="Outputs through the query service (your token): an analyst lists and "
        "downloads their own; an output checker approves or rejects others' jobs (never their "
        "own); checkers and IG leads see every output and the release register.",
    )
    o.add_argument(
        "outputs_command", choices=["list", "show", "approve", "reject", "download", "register"]
    )
    o.add_argument(
        "id", nargs="?", help="output id, e.g. out-000001 (show, approve, reject, download)"
    )
    o.add_argument("--note", help="approve/reject: a note to the analyst (needed to reject)")
    o.add_argument("--out", help="download: the file to write (default: the output id)")
    o.add_argument("--json", action="store_true", help="list, register, show: as JSON")
    _service_args(o)
    o.set_defaults(func=cmd_outputs)
