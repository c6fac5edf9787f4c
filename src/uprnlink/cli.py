"""The `uprnlink` command line: lay out a working folder, synthesise, run, evaluate, manage keys,
verify the audit log."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from uprnlink import __version__
from uprnlink.errors import UprnlinkError
from uprnlink.publication import NotSupplied
from uprnlink.run_summary import PublishedRelease, RunSummary, SourceReport

CONFIG_NAME = "uprnlink.toml"
CONFIG_HELP = f"run configuration (TOML; default: ./{CONFIG_NAME} when there is one)"
#: Commands that need a run configuration, and those that use one when it is there.
NEEDS_CONFIG = {"run", "runs", "landing", "check", "retention", "audit", "serve", "users", "review"}
USES_CONFIG = {"key", "map", "evaluate"}

NO_PREFECT_NOTE = (
    "uprnlink: note: Prefect is not installed, so the stages run in this process without an "
    "orchestrator (no retries, no Prefect UI); pip install 'uprnlink[flows]' adds it"
)


def _prefect_environment() -> None:
    """Offline, quiet Prefect with its home inside the project's working folder."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # A cold ephemeral server (new PREFECT_HOME, busy 2-core machine) can take over 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def peak_memory_mib() -> float:
    """Peak resident memory of this process and its children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def prefect_installed() -> bool:
    """Whether the optional orchestrator (the `flows` extra) is installed."""
    return importlib.util.find_spec("prefect") is not None


def run_flow(
    config: Path,
    run_id: str | None = None,
    rebuild: bool = False,
    retrain: bool = False,
    accept: Sequence[str] = (),
) -> RunSummary:
    """Run the household linkage Prefect flow and return its summary.

    Without Prefect the same stages run in the same order in this process
    (`uprnlink.run.runner.run_all`), after a one-line note: same outputs, no retries of
    transient I/O errors, extracts ingested one after another, nothing in a Prefect UI.
    """
    from uprnlink.progress import stop_console, use_console

    use_console()
    try:
        if not prefect_installed():
            from uprnlink.run.runner import run_all

            print(NO_PREFECT_NOTE, file=sys.stderr)
            extra: dict[str, Any] = {"accept": tuple(accept)} if accept else {}
            return run_all(str(config), run_id, rebuild=rebuild, retrain=retrain, **extra)
        _prefect_environment()
        from uprnlink.flows.household_linkage import household_linkage

        flow_extra: dict[str, Any] = {"accept": list(accept)} if accept else {}
        summary: RunSummary = household_linkage(
            str(config), run_id=run_id, rebuild=rebuild, retrain=retrain, **flow_extra
        )
        return summary
    finally:
        stop_console()


# ------------------------------------------------------------------------------ commands
def cmd_synth(args: argparse.Namespace) -> int:
    from uprnlink.synth import write_synthetic

    summary = write_synthetic(Path(args.out), people=args.people, seed=args.seed)
    print(
        f"Synthetic population: {summary.people:,} people at {summary.addresses:,} addresses "
        f"({summary.households_on_reference_date:,} households on the reference date)"
    )
    for source, n in summary.records_per_source.items():
        print(f"  {source:<20} {n:>10,} records")
    print(
        f"Extracts in {Path(args.out) / 'landing'}; ground truth in {Path(args.out) / 'truth'} "
        f"({summary.seconds:.1f} s)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from uprnlink.privacy.keys import check_keys_present
    from uprnlink.settings import read_settings

    # Fail fast, before an orchestrator starts: the configuration, then every key it names.
    check_keys_present(read_settings(Path(args.config)))
    started = time.perf_counter()
    summary = run_flow(
        Path(args.config),
        args.run_id,
        rebuild=args.rebuild,
        retrain=args.retrain,
        accept=args.accept,
    )
    print_run_summary(summary, time.perf_counter() - started)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from uprnlink.run.history import list_runs, runs_table
    from uprnlink.settings import read_settings

    settings = read_settings(Path(args.config))
    if args.json:
        runs = [r.to_dict() for r in list_runs(settings.out_dir)]
        print(json.dumps(runs[-args.limit :] if args.limit else runs, indent=2, default=str))
    else:
        print(runs_table(settings.out_dir, args.limit))
    return 0


def cmd_landing(args: argparse.Namespace) -> int:
    from uprnlink.run.landing import status_for_config, status_table

    status = status_for_config(args.config, args.settle_seconds)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(status_table(status))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from uprnlink.errors import ConfigError, ContractError
    from uprnlink.ingest.contracts import find_contract
    from uprnlink.ingest.mapping import propose_mapping
    from uprnlink.resources import schemas_dir

    schemas = Path(args.schemas) if args.schemas else schemas_dir()
    names = [n.strip() for value in args.contract for n in value.split(",") if n.strip()]
    contracts = [find_contract(schemas, name, args.version) for name in dict.fromkeys(names)]
    if len(contracts) > 1 and any(c.kind != "reference" for c in contracts):
        raise ConfigError(
            "several --contract are for one reference file serving several reference contracts "
            "(e.g. --contract uprn_lookup --contract property_class); an extract of people is "
            "one source with one contract"
        )
    if len(contracts) > 1 and args.source:
        raise ConfigError("--source names one source: leave it out with several --contract")
    config_dir = Path(args.relative_to) if args.relative_to else _landing_dir(args)
    missing: list[str] = []
    for i, contract in enumerate(contracts):
        proposal = propose_mapping(
            Path(args.file), contract, args.source, rows=args.rows, sheet_choice=_sheet(args.sheet)
        )
        if i:
            print()
        print(proposal.to_toml(config_dir), end="")
        warned = f"; {len(proposal.warnings)} warning(s) above" if proposal.warnings else ""
        print(
            f"{contract.name}: {len(proposal.columns)} of {len(contract.fields)} contract fields "
            f"mapped from {proposal.rows_sampled:,} sampled rows; "
            f"{len(proposal.unused_columns)} column(s) unmapped{warned}",
            file=sys.stderr,
        )
        missing += [f"{contract.name}.{f}" for f in proposal.missing_required]
    if missing:
        raise ContractError(
            "no column found for required field(s) " + ", ".join(missing),
            file=str(args.file),
            rule="mapping_missing",
        )
    return 0


def _sheet(value: str | None) -> str | int | None:
    """`--sheet`: a sheet's number (from 1) or its name."""
    return int(value) if value is not None and value.isdigit() else value


def _landing_dir(args: argparse.Namespace) -> Path | None:
    """The configuration's landing folder (paths in a proposal are relative to it), when a
    configuration is given or found and can be read."""
    if not args.config:
        return None
    from uprnlink.settings import read_settings

    try:
        return read_settings(Path(args.config)).landing_dir
    except UprnlinkError:
        return None  # a configuration being edited: the path is written as given


def cmd_check(args: argparse.Namespace) -> int:
    from uprnlink.ingest.preflight import check_config

    report = check_config(Path(args.config))
    for line in report.lines:
        print(line, file=sys.stderr if line.level == "error" else sys.stdout)
    errors = sum(line.level == "error" for line in report.lines)
    warnings = sum(line.level == "warn" for line in report.lines)
    print(
        f"{'not ready' if report.exit_code else 'ready to run'}: {errors} error(s), "
        f"{warnings} warning(s) (exit {report.exit_code})"
    )
    return report.exit_code


def cmd_retention(args: argparse.Namespace) -> int:
    from uprnlink.governance.retention import enforce_retention, find_expired, read_retention
    from uprnlink.run.lock import run_lock
    from uprnlink.run.runner import new_run_id
    from uprnlink.settings import read_settings
    from uprnlink.zones import Zones

    settings = read_settings(Path(args.config))
    policy = read_retention(settings.policy_path)
    if not args.apply:
        expired = find_expired(settings, policy)
        if args.json:
            print(json.dumps([e.to_dict() for e in expired], indent=2))
            return 0
        print(
            f"retention (days): landing {policy.landing_days}, quarantine "
            f"{policy.quarantine_days}, trusted {policy.trusted_days}; enforce = "
            f"{policy.enforce!r} ({settings.policy_path})"
        )
        if not expired:
            print("no file is past its retention period")
            return 0
        print(f"{'zone':<11} {'age (days)':>10} {'limit':>6} {'bytes':>12}  path")
        for e in expired:
            print(f"{e.zone:<11} {e.age_days:>10.0f} {e.limit_days:>6} {e.size:>12,}  {e.relative}")
        print(f"{len(expired)} files past retention; --apply deletes them (audited)")
        return 0
    run_id = new_run_id()
    with run_lock(Zones(settings).lock, run_id):
        result = enforce_retention(settings, run_id, delete=True)
    print(
        f"deleted {result['files_past_retention']} files past retention"
        + "".join(f"; {z}: {v['files']}" for z, v in result["by_zone"].items())
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from uprnlink.run.evaluation import evaluate_run, side_by_side
    from uprnlink.settings import read_settings

    if len(args.config) != len(args.truth):
        raise UprnlinkError("give one --truth for each --config, in the same order")
    results = []
    for config, truth in zip(args.config, args.truth, strict=True):
        settings = read_settings(Path(config))
        if len(args.config) > 1:
            print(f"\n=== {settings.name} ({config}) ===")
        result = evaluate_run(settings, Path(truth))
        print_evaluation(result, full=True)
        results.append((settings.name, result))
    if len(results) > 1:
        print()
        print(side_by_side(results))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from uprnlink.scaffold import README_NAME, write_working_folder

    result = write_working_folder(Path(args.dir), force=args.force)
    folder = result.folder
    print(f"Working folder {folder}")
    for path in result.written:
        print(f"  wrote {path.relative_to(folder)}")
    for path in result.kept:
        print(f"  kept  {path.relative_to(folder)} (already there; delete it for a fresh copy)")
    print("  made  landing/ (reference/), work/, out/")
    print(
        f"\nNext, from {folder} (commands there find uprnlink.toml; details in {README_NAME}):\n"
        f"  cd {folder}\n"
        "  uprnlink map landing/FILE --contract NAME     # paste what it prints into uprnlink.toml\n"
        "  uprnlink key init --kind audit                # the three keys, audit key first\n"
        "  uprnlink key init --kind pseudonymisation\n"
        "  uprnlink key init --kind release\n"
        "  uprnlink check\n"
        "  uprnlink run"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from uprnlink.run.evaluation import evaluate_run
    from uprnlink.scaffold import write_demo_config
    from uprnlink.settings import read_settings
    from uprnlink.synth import write_synthetic
    from uprnlink.testpop import write_test_population

    population = args.population
    folder = args.dir or population
    config = Path(args.config) if args.config else write_demo_config(Path(folder), population)
    settings = read_settings(config)
    demo_dir = settings.landing_dir.parent
    t0 = time.perf_counter()
    name = "Westmere test population" if args.population == "testpop" else "demo population"
    print(
        f"[1/4] Synthesising the {name}, {args.people:,} people (seed {args.seed}), "
        f"into {demo_dir} ..."
    )
    if args.population == "testpop":
        made = write_test_population(demo_dir, people=args.people, seed=args.seed)
        counts = made.records_per_source
    else:
        counts = write_synthetic(demo_dir, people=args.people, seed=args.seed).records_per_source
    synth_s = time.perf_counter() - t0
    print(f"      {sum(counts.values()):,} source records in {synth_s:.1f} s")

    _demo_keys(settings, args.seed)

    how = "Prefect" if prefect_installed() else "no orchestrator"
    print(f"[2/4] Running the household-linkage flow ({how}, embedded DuckDB) ...")
    t1 = time.perf_counter()
    summary = run_flow(config)
    run_s = time.perf_counter() - t1
    print("[3/4] Evaluating linkage against the synthetic ground truth ...")
    evaluation = evaluate_run(settings, demo_dir / "truth")
    # Redraw the quality report now that the synthetic truth gives recall by group.
    from uprnlink.run.runner import write_quality_report

    summary = dataclasses.replace(
        summary,
        reports=write_quality_report(str(config), summary, evaluation),
        timings={"synthesise": round(synth_s, 2), **(summary.timings or {})},
    )
    print("[4/4] Done.\n")
    print_run_summary(summary, run_s + synth_s)
    print_evaluation(evaluation, full=args.full_evaluation)
    print_example_query(settings.database_path, settings.policy_path)
    return 0


def _demo_keys(settings: Any, seed: int | None = None) -> None:
    """The demo's three keys (pseudonymisation, audit, release), created on first use with the
    public demo passphrase and their creation audited; the passphrases go into the
    environment of this process only."""
    from uprnlink.governance.audit import record_key_event
    from uprnlink.privacy.keys import create_demo_keys, use_demo_passphrases

    created = create_demo_keys(settings, seed=seed)
    use_demo_passphrases(settings)
    _banner(
        "DEMO KEYS: the demo's keys are locked with a passphrase published in the source code. "
        "Never use them for real data: create your own with `uprnlink key init --kind ...`."
    )
    for info in created:
        record_key_event(
            settings,
            "key.created",
            {"kind": info.kind, "key_id": info.key_id, "epoch": info.epoch, "demo": True},
        )
    _demo_seal(settings)


def _demo_seal(settings: Any) -> None:
    """The demo's IG lead starts sealing its audit log, once. The demo keeps the verification
    seed in <demo>/ig-lead/audit-seal.seed so the guide can use it; for real data the seed is
    shown once and kept offline (`uprnlink audit seal init`)."""
    from uprnlink.governance.audit import actor, open_audit_log
    from uprnlink.privacy.sealing import new_seed
    from uprnlink.zones import Zones

    if Zones(settings).audit_seal_state.exists():
        return
    seed_file = settings.landing_dir.parent / "ig-lead" / "audit-seal.seed"
    seed_file.unlink(missing_ok=True)
    seed, text = new_seed()
    _write_seed_file(seed_file, text, settings)
    info = open_audit_log(settings).start_sealing(seed, actor=actor())
    print(
        f"      The audit log is forward-sealed ({info.seal_id}); the demo's verification "
        f"seed is in {seed_file} (for real data: kept offline)."
    )


KEY_ENVS = {
    "pseudonymisation": "UPRNLINK_KEY_PASSPHRASE",
    "audit": "UPRNLINK_AUDIT_PASSPHRASE",
    "release": "UPRNLINK_RELEASE_PASSPHRASE",
}


def cmd_key(args: argparse.Namespace) -> int:
    from uprnlink.privacy import keys

    settings = _key_config(args)
    configured = _configured_key(settings, args.kind) if settings is not None else None
    if args.file:
        path = Path(args.file)
    elif configured is not None and configured.file is not None:
        path = configured.file
    else:
        from uprnlink.errors import ConfigError

        raise ConfigError("give the key file with --file KEY (or --config FILE that names it)")
    kind = args.kind if args.key_command == "init" else keys.read_key_info(path).kind
    if settings is not None and args.key_command != "init":
        configured = _configured_key(settings, kind)
    env = args.passphrase_env or (
        configured.passphrase_env if configured is not None and configured.passphrase_env else None
    )
    env = env or KEY_ENVS[kind]
    if args.key_command == "init":
        _key_init(settings, configured, path, kind, env)
    elif args.key_command == "show":
        info = keys.read_key_info(path)
        print(
            f"kind:       {info.kind}\nkey id:     {info.key_id}\nepoch:      {info.epoch}\n"
            f"created at: {info.created_at}"
        )
    elif args.key_command == "check":
        key = keys.load_key_file(path, _passphrase(env), kind=kind)
        print(f"OK: {kind} key {key.key_id} (epoch {key.epoch}) unlocks")
    elif args.key_command == "rotate":
        _key_rotate(settings, path, kind, env)
    return 0


def _key_init(settings: Any, configured: Any, path: Path, kind: str, env: str) -> None:
    """`uprnlink key init`: a new key file, its creation recorded in the configuration's audit
    log (when `--config` is given; checked writable before anything is written)."""
    from uprnlink.privacy import keys

    expected = configured.file if configured is not None else None
    if settings is not None and expected is not None and path.resolve() != expected.resolve():
        print(
            f"uprnlink: warning: {settings.config_path.name} expects the {kind} key at "
            f"{expected}, not {path}: set its file there, or runs will not find it",
            file=sys.stderr,
        )
    if settings is not None:
        _check_audit_ready(settings, kind)  # before anything is written
    passphrase = _passphrase(env, confirm=True)
    info = keys.create_key_file(path, passphrase, kind=kind)
    print(f"Created {info.kind} key {info.key_id} (epoch {info.epoch}) in {path}")
    if settings is not None:
        audit_key = keys.load_key_file(path, passphrase, kind=kind) if kind == keys.AUDIT else None
        from uprnlink.governance.audit import actor, open_audit_log

        open_audit_log(settings, audit_key).append(
            "key.created",
            actor=actor(),
            data={"kind": info.kind, "key_id": info.key_id, "epoch": info.epoch},
        )
        print(f"Recorded key.created in the audit log of {settings.config_path.name}")
    print(
        "Keep the passphrase in your secrets manager; the key cannot be recovered without it."
        f" Runs read it from {env}."
    )


def _key_rotate(settings: Any, path: Path, kind: str, env: str) -> None:
    """`uprnlink key rotate`: a new epoch of the key, audited (an audit key hands its log over)."""
    from uprnlink.privacy import keys

    passphrase = _passphrase(env)
    old = keys.load_key_file(path, passphrase, kind=kind)
    info = keys.rotate_key_file(path, passphrase)
    if kind == keys.AUDIT:
        _hand_over_audit_log(settings, old, keys.load_key_file(path, passphrase, kind=kind))
    _audit_key_event(
        settings,
        "key.rotated",
        {"kind": kind, "key_id": info.key_id, "epoch": info.epoch, "previous_key_id": old.key_id},
    )
    print(f"Rotated: new {kind} key {info.key_id} (epoch {info.epoch}).")
    if kind == keys.PSEUDONYMISATION:
        print(
            "Every output must be rebuilt with `uprnlink run --rebuild` on the full "
            "extracts: tokens of two epochs never mix."
        )
    elif kind == keys.RELEASE:
        print("The next run publishes new person and household ids for every analyst.")


def _key_config(args: argparse.Namespace) -> Any:
    """The run configuration a key command works with (`--config`, or the working folder's)."""
    if not args.config:
        return None
    from uprnlink.settings import read_settings

    return read_settings(Path(args.config))


def _configured_key(settings: Any, kind: str) -> Any:
    """The configuration's settings for the key of `kind` (`[key]`, `[audit]`, `[release]`)."""
    return {
        "pseudonymisation": settings.key,
        "audit": settings.audit_key,
        "release": settings.release.key,
    }[kind]


def _check_audit_ready(settings: Any, kind: str) -> None:
    """Refuse to create a key whose creation the audit log could not record, before anything is
    written: every key but the audit key itself needs the audit key (created first)."""
    from uprnlink.errors import KeyManagementError, UprnlinkError
    from uprnlink.governance.audit import open_audit_log
    from uprnlink.zones import Zones

    log_path = Zones(settings).audit_log
    if kind == "audit":
        if log_path.exists() and log_path.stat().st_size > 0:
            raise KeyManagementError(
                f"the audit log {log_path} already has entries, kept with another audit key: "
                "rotate that key (`uprnlink key rotate --kind audit`) rather than create a new "
                "one; nothing was written"
            )
        return
    try:
        open_audit_log(settings).check_key()
    except UprnlinkError as exc:
        raise KeyManagementError(
            f"the audit log records each key's creation, and it cannot be written: {exc}. "
            f"Nothing was written: create the audit key first (uprnlink key init --kind audit), "
            f"then this {kind} key"
        ) from None


def _hand_over_audit_log(settings: Any, old: Any, new: Any) -> None:
    """After an audit-key rotation: the old key records the hand-over to the new one."""
    if settings is None:
        print(
            "No --config given: the audit log still expects the old audit key. Record the "
            "hand-over by rotating with --config FILE.",
            file=sys.stderr,
        )
        return
    from uprnlink.governance.audit import actor, open_audit_log

    open_audit_log(settings, old).rotate_to(new, actor=actor())
    print(f"The audit log of {settings.config_path.name} now continues under {new.key_id}")


def _audit_key_event(settings: Any, event: str, data: dict[str, Any]) -> None:
    """Record a key lifecycle event in the audit log of `--config`, when one is given."""
    if settings is None:
        return
    from uprnlink.governance.audit import record_key_event

    record_key_event(settings, event, data)
    print(f"Recorded {event} in the audit log of {settings.config_path.name}")


def _seed(args: argparse.Namespace) -> Any:
    """The IG lead's verification seed: --seed-file, else --seed, else UPRNLINK_AUDIT_SEED;
    None when none is given (the seals are then checked for order only)."""
    from uprnlink.privacy.sealing import SEED_ENV, SealSeed

    if getattr(args, "seed_file", None):
        return SealSeed.from_file(args.seed_file)
    text = getattr(args, "seed", None) or os.environ.get(SEED_ENV)
    return SealSeed.parse(text) if text else None


def _write_seed_file(path: Path, text: str, settings: Any) -> None:
    """The new seed into a new owner-only file the IG lead takes offline; never into the
    folders the service reads (work, out, the sealing state's)."""
    from uprnlink.errors import ConfigError
    from uprnlink.zones import Zones

    target = path.expanduser().resolve()
    for folder in (settings.work_dir, settings.out_dir, Zones(settings).audit_seal_state.parent):
        if target.is_relative_to(Path(folder).resolve()):
            raise ConfigError(
                f"seed file {path} is inside {folder}, which the service can read: keep the "
                "seed offline (removable media, a safe) (rule: seed_location)"
            )
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"seed file {path} already exists: choose a new file") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write("# uprnlink audit verification seed: keep offline; never on the service host\n")
        f.write(text + "\n")


def cmd_audit(args: argparse.Namespace) -> int:
    from uprnlink.governance.audit import run_witness_files, run_witnesses, verify_run_audit
    from uprnlink.privacy.keys import audit_keys
    from uprnlink.settings import read_settings
    from uprnlink.zones import Zones

    settings = read_settings(Path(args.config))
    zones = Zones(settings)
    if args.audit_command == "seal":
        return _cmd_seal(args, settings)
    if args.seal_action:
        from uprnlink.errors import ConfigError

        raise ConfigError(f"audit {args.audit_command} takes no {args.seal_action!r}")
    seed = _seed(args)
    keys = audit_keys(settings)
    if args.audit_command == "report":
        from uprnlink.governance.report import render_audit_report

        report = render_audit_report(
            zones.audit_log,
            keys,
            head_path=zones.audit_head,
            fmt=args.format,
            witnesses=run_witnesses(settings),
            seed=seed,
            seal_state=zones.audit_seal_state,
            witness_files=run_witness_files(settings, args.witness_file),
        )
        if args.out:
            Path(args.out).write_text(report, encoding="utf-8")
            print(f"Wrote {args.format} audit report to {args.out}")
        else:
            print(report)
        # The report is written either way; the exit code still says whether the log is intact.
        intact = verify_run_audit(settings, keys, seed=seed, witness_files=args.witness_file).ok
        return 0 if intact else 1
    result = verify_run_audit(settings, keys, seed=seed, witness_files=args.witness_file)
    if not result.ok:
        print(f"TAMPERED: {result.reason}", file=sys.stderr)
        return 1
    print(f"OK: audit log intact ({result.entries} entries) at {zones.audit_log}")
    seal = result.seal
    if seal is not None:
        checked = "every seal checked with the seed" if seal.checked else "seals NOT checked"
        last = (
            f"the last at seq {seal.last_sealed_seq} (epoch {seal.last_epoch}, {seal.last_ts})"
            if seal.last_sealed_seq is not None
            else "none yet"
        )
        print(f"  sealed: {seal.seals} seal(s) under {seal.seal_id}, {checked}; {last}")
        print(
            f"  window: {seal.unsealed} entr{'y' if seal.unsealed == 1 else 'ies'} after the "
            "last seal, only hash-chained and MACed (rewritable by whoever holds the audit key "
            "and the current sealing state)"
        )
    if result.witnesses_checked:
        print(
            f"  witnessed: {result.witnesses_checked} witness(es) match the log, the furthest "
            f"at seq {result.last_witnessed_seq}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0


def _cmd_seal(args: argparse.Namespace, settings: Any) -> int:
    """`audit seal init` (the IG lead, once: a new seed, shown once) and `audit seal status`."""
    from uprnlink.errors import ConfigError
    from uprnlink.governance.audit import actor, open_audit_log
    from uprnlink.privacy.sealing import new_seed, read_seal_state_info
    from uprnlink.zones import Zones

    state_path = Zones(settings).audit_seal_state
    if args.seal_action == "status":
        info = read_seal_state_info(state_path)
        print(f"seal id:       {info.seal_id}\nepoch:         {info.epoch}")
        print(f"epoch started: {info.started}\nstate file:    {state_path}")
        if info.last_seal is not None:
            print(f"last seal:     seq {info.last_seal.seq} (epoch {info.last_seal.epoch})")
        return 0
    if args.seal_action != "init":
        raise ConfigError("audit seal needs an action: init or status")
    if state_path.exists():
        raise ConfigError(
            f"sealing state {state_path} already exists: sealing was started for this log "
            "(rule: seal_exists)"
        )
    log = open_audit_log(settings)
    seed, text = new_seed()
    if args.seed_file:
        _write_seed_file(Path(args.seed_file), text, settings)
    try:
        info = log.start_sealing(seed, actor=actor())
    except BaseException:
        if args.seed_file:
            with contextlib.suppress(OSError):
                Path(args.seed_file).expanduser().unlink()
        raise
    print(
        f"Sealing started for {log.path} under {info.seal_id}: everything so far is sealed "
        f"(epoch 0); the writers now hold epoch {info.epoch}'s key in {state_path} (owner-only; "
        "never back it up)."
    )
    if args.seed_file:
        print(f"The verification seed is in {args.seed_file}: take it offline now.")
    else:
        _banner(
            "VERIFICATION SEED, shown once. Keep it offline (never on this host, never in a "
            "ticket or a\nsecrets manager the service can read): `uprnlink audit verify "
            "--seed-file FILE` needs it.\n\n    " + text
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from uprnlink.settings import read_settings

    try:
        from uprnlink.service.app import serve
    except ImportError:
        from uprnlink.errors import ConfigError

        raise ConfigError(
            "the query service needs its extra: pip install 'uprnlink[service]'"
        ) from None
    serve(read_settings(Path(args.config)), host=args.host, port=args.port)
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from uprnlink.governance.audit import actor, open_audit_log
    from uprnlink.publish.access import read_roles
    from uprnlink.service.identities import UserStore, describe
    from uprnlink.settings import read_settings

    settings = read_settings(Path(args.config))
    store = UserStore(settings.users_file)
    if args.users_command == "list":
        users = store.users() if args.all else [u for u in store.users() if u.active]
        if args.json:
            print(json.dumps([describe(u) for u in users], indent=2))
            return 0
        print(f"{'user':<20}{'role':<16}{'token id':<20}{'created':<27}revoked")
        for u in users:
            print(f"{u.name:<20}{u.role:<16}{u.token_id:<20}{u.created_at:<27}{u.revoked_at or ''}")
        return 0
    audit = open_audit_log(settings)
    audit.check_key()  # refuse before changing anything if the change cannot be logged
    if not args.name:
        from uprnlink.errors import ConfigError

        raise ConfigError(f"users {args.users_command} needs a user name")
    if args.users_command in ("revoke", "rotate"):
        for old in store.revoke(args.name):
            audit.append(
                "user.revoked",
                actor=actor(),
                data={"user": old.name, "role": old.role, "token_id": old.token_id},
            )
            print(f"Revoked {old.name}'s token {old.token_id}")
        if args.users_command == "revoke":
            return 0
        role = args.role or old.role
    else:
        role = args.role
        if not role:
            from uprnlink.errors import ConfigError

            raise ConfigError("give the user's role with --role (a role in the policy)")
    user, token = store.add(
        args.name, role, set(read_roles(settings.policy_path)), created_by=actor()
    )
    audit.append(
        "user.added",
        actor=actor(),
        data={"user": user.name, "role": user.role, "token_id": user.token_id},
    )
    print(f"Added {user.name} ({user.role}), token id {user.token_id}. Their token, shown once:")
    print(token)
    print(
        "Give it to them by a secure channel; they set UPRNLINK_TOKEN to it. Only its hash is "
        "kept; `uprnlink users revoke NAME` withdraws it.",
        file=sys.stderr,
    )
    return 0


def _print_pair(row: dict[str, Any]) -> None:
    from uprnlink.review import SIDE_FIELDS

    print(
        f"pair {row['pair_id']}  {row['reason']}  match probability {row['match_probability']:.3f}"
    )
    for name in SIDE_FIELDS:
        left, right = row[f"{name}_l"] or "", row[f"{name}_r"] or ""
        mark = "" if left == right else "  *"
        print(f"  {name:<10}{left:<28}{right:<28}{mark}")


def cmd_review(args: argparse.Namespace) -> int:
    """`review list` (pairs awaiting a label), `review label PAIR match|non_match` (appended,
    audited) and `review export --out FILE` (the labels as Splink's labels table)."""
    from uprnlink.errors import ConfigError
    from uprnlink.governance.audit import actor, open_audit_log
    from uprnlink.review import (
        append_label,
        current_labels,
        pending_pairs,
        queue_key_id,
        read_labels,
        read_queue,
        splink_labels,
    )
    from uprnlink.settings import read_settings
    from uprnlink.zones import Zones

    settings = read_settings(Path(args.config))
    zones = Zones(settings)
    labels = read_labels(zones, queue_key_id(zones))
    if args.review_command == "list":
        pending = pending_pairs(read_queue(zones), labels)
        print(f"{pending.height} pairs to review; {labels.height} labels given")
        for row in pending.head(args.limit).iter_rows(named=True):
            _print_pair(row)
        return 0
    if args.review_command == "export":
        if not args.out:
            raise ConfigError("review export needs --out FILE (.parquet or .csv) (rule=out)")
        out = Path(args.out).resolve()
        if out.is_relative_to(settings.out_dir.resolve()):
            raise ConfigError(
                f"{out.name}: labels carry record keys and stay out of the published zone "
                "(rule=published_zone)"
            )
        table = splink_labels(labels)
        if out.suffix == ".csv":
            table.write_csv(out)
        else:
            table.write_parquet(out)
        print(f"wrote {table.height} labels ({current_labels(labels).height} pairs) to {out}")
        return 0
    if not args.pair or args.label not in ("match", "non_match"):
        raise ConfigError("review label needs PAIR and match or non_match (rule=label)")
    audit = open_audit_log(settings)
    audit.check_key()  # refuse before labelling if the label cannot be logged
    who = actor()
    entry = append_label(zones, args.pair, args.label, who)
    audit.append(
        "review.labelled",
        actor=who,
        data={"user": who, "pair": entry.pair_id, "label": entry.label, "reason": entry.reason},
    )
    print(f"labelled pair {entry.pair_id} {entry.label}; the next run uses it")
    return 0


# ------------------------------------------------------------------------------ output
def _banner(text: str) -> None:
    line = "!" * 78
    print(f"\n{line}\n{text}\n{line}\n")


def _passphrase(env_name: str | None, confirm: bool = False) -> str:
    import getpass

    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    from uprnlink.errors import KeyManagementError

    if not sys.stdin.isatty():
        raise KeyManagementError(f"no passphrase: set {env_name} or run in a terminal to be asked")
    first = getpass.getpass("Key passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyManagementError("the passphrases do not match")
    return first


def print_run_summary(summary: RunSummary, wall_seconds: float) -> None:
    """The run's counts, timings and output locations."""
    run, ingest, link = summary.run, summary.ingest, summary.linkage
    published, timings = summary.published, summary.timings
    meta = summary.metadata
    if (
        run is None
        or ingest is None
        or link is None
        or published is None
        or meta is None
        or timings is None
    ):
        raise UprnlinkError("the run summary is incomplete: the run did not finish")
    print(f"Run {run.run_id}  key {run.key_id} (epoch {run.epoch})")
    _print_ingest(ingest)
    print(
        f"\nLinked {link['records']:,} records into {link['people']:,} people "
        f"({link['pairs_above_threshold']:,} pairs >= {link['match_threshold']})"
    )
    if link.get("identifiers"):
        print("Identifiers used for linkage: " + ", ".join(link["identifiers"]))
    matched = link.get("addresses_matched") or {}
    if matched:
        print(
            "Records without a UPRN placed by their address as written: "
            + ", ".join(f"{s} {n:,}" for s, n in matched.items())
        )
    missing = summary.not_supplied or NotSupplied(sources=[], fields={})
    if missing["sources"]:
        print("Sources not supplied: " + ", ".join(missing["sources"]))
    if missing["fields"]:
        print(
            "Fields not supplied (null in every view): "
            + "; ".join(f"{s}: {', '.join(f)}" for s, f in missing["fields"].items())
        )
    model, ids = link.get("model", {}), link.get("ids", {})
    if link.get("reused"):
        print(f"No extract changed: clusters reused from run {link.get('linked_in_run')}")
    elif model:
        how = "trained" if model.get("trained") else f"reused (trained {model.get('trained_at')})"
        print(
            f"Model {how}; person ids kept {ids.get('kept', 0):,}, created "
            f"{ids.get('created', 0):,}, merged {ids.get('merged', 0):,}, "
            f"split {ids.get('split', 0):,}"
        )
    print(
        f"Households on {meta.reference_date.isoformat()}: {meta.counts.households:,} "
        f"(+ {meta.counts.communal_establishments:,} communal establishments)"
    )
    share = meta.single_person_discount_share
    if share is not None:
        print(f"Single person discounts borne out by the other accounts: {share:.2f}")
    applied = meta.residence_rules
    if "accounts_superseded" in applied:
        print(
            f"Council tax parties whose account a later one superseded: "
            f"{applied['accounts_superseded']:,}"
            + (
                f" (references shared by joint parties: {applied['joint_reference_share']:.2f})"
                if "joint_reference_share" in applied
                else ""
            )
        )
    if "in_care_homes" in applied:
        print(f"People in a care home (residential or nursing care): {applied['in_care_homes']:,}")
    confirmed = meta.residence_confirmed
    if confirmed:
        print(
            "Addresses on the day confirmed by another source: "
            + ", ".join(
                f"{r['source_dataset']} {r['share']:.2f} of {r['people']:,}" for r in confirmed
            )
        )
    print(
        "\nWall time per stage: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; total {wall_seconds:.1f} s; peak memory {peak_memory_mib():,.0f} MiB"
    )
    _print_outputs(summary, published)


def _print_ingest(ingest: Sequence[SourceReport]) -> None:
    """Each extract's rows in, accepted, quarantined and nulled, and codes left unrecoded."""
    print(
        f"\n{'source':<20}{'extract':<10}{'rows in':>10}{'accepted':>10}{'quarantined':>12}"
        f"{'nulled':>8}  reconciles"
    )
    for r in ingest:
        if r.get("skipped"):
            print(f"{r['source']:<20}{'skipped':<10}  ({r['skipped']})")
            continue
        nulled = sum(r["values_nulled"].values())
        ok = "yes" if r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] else "NO"
        status = "reused" if r.get("reused") else "ingested"
        print(
            f"{r['source']:<20}{status:<10}{r['rows_in']:>10,}{r['rows_accepted']:>10,}"
            f"{r['rows_quarantined']:>12,}{nulled:>8,}  {ok}"
        )
    if any(r.get("reused") for r in ingest):
        print("(reused = extract unchanged since it was last ingested: same SHA-256, not re-read)")
    for r in ingest:
        for fname, codes in (r.get("values_unrecoded") or {}).items():
            listed = ", ".join(f'"{c}" {n:,}' for c, n in list(codes.items())[:8])
            print(f"{r['source']}: {fname} codes not recoded (nulled): {listed}")


def _print_outputs(summary: RunSummary, published: PublishedRelease) -> None:
    """The live release and where the run's outputs are."""
    release = summary.release
    previous = release["previous"] if release else None
    print(
        f"\nRelease {release['release'] if release else None} is live"
        + (f" (replacing {previous})" if previous else "")
    )
    print(f"Published (de-identified): {published['linked_dir']}")
    print(f"Analyst database:          {published['database']}")
    print(f"Run summary:               {summary.summary_path}")
    reports = summary.reports or {}
    if reports.get("quality_report"):
        print(f"Linkage quality report:    {reports['quality_report']}  (open in a browser)")


def print_evaluation(result: dict[str, Any], *, full: bool = False) -> None:
    """Pairwise precision, recall and F1 of the person clusters (and, with `full`, the table of
    source pairs, households and bias checks)."""
    if full and result.get("print_table"):
        print()
        print(result["print_table"])
    p = result["pairwise"]
    print(
        f"\nLinkage against ground truth ({p['records']:,} records): precision {p['precision']:.4f}, "
        f"recall {p['recall']:.4f}, F1 {p['f1']:.4f}  (true pairs {p['true_pairs']:,}, "
        f"predicted {p['predicted_pairs']:,})"
    )
    ns = result.get("namesakes")
    if ns:
        print(
            f"Namesakes ({ns['people']:,} people sharing a surname and a forename or date of "
            f"birth): precision {ns['precision']:.4f}"
        )
    h = result.get("households")
    if h:
        print(
            f"Households: co-resident pairs precision {h['precision']:.4f}, recall "
            f"{h['recall']:.4f}; rebuilt exactly {h['households_exact']:,} of "
            f"{h['households']:,} ({h['households_exact'] / max(h['households'], 1):.4f})"
        )


EXAMPLE_QUESTION = "overcrowding_by_deprivation"


def print_example_query(db_path: Path, policy_path: Path) -> None:
    """One named question's table from the release just published, as an analyst gets it
    through the service (`uprnlink query --named`): built and perturbed by the table builder."""
    from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
    from uprnlink.publish.outputs import format_table
    from uprnlink.publish.queries import get_query
    from uprnlink.publish.tabulation import read_table_policy

    question = get_query(EXAMPLE_QUESTION)
    policy = read_table_policy(policy_path)
    with AnalystDatabase(db_path) as db:
        table = build_table(db, question.spec, policy, table_categories(db))
    frame, withheld = question.present(table)
    print(
        f"\nA named question, as analysts get it through the query service "
        f"(uprnlink query --named {EXAMPLE_QUESTION}; `make service` starts one):\n"
    )
    print(format_table(frame, withheld, title=question.title))


# ------------------------------------------------------------------------------ parser
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(
        prog="uprnlink",
        description="Household-level linkage of council and NHS extracts on pseudonymised UPRNs.",
    )
    p.add_argument("--version", action="version", version=f"uprnlink {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _run_commands(sub)
    _setup_commands(sub)
    _demo_commands(sub)
    _key_commands(sub)
    _service_commands(sub)
    return p


def _run_commands(sub: Subcommands) -> None:
    """`synth`, `run`, `runs` and `landing`: making data and running the pipeline."""
    s = sub.add_parser("synth", help="write a synthetic population's extracts and ground truth")
    s.add_argument("--people", type=int, default=20_000, help="people to simulate (default 20000)")
    s.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    s.add_argument("--out", required=True, help="folder for landing/ and truth/")
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("run", help="run the household-linkage flow for a config file")
    r.add_argument("--config", help=CONFIG_HELP)
    r.add_argument("--run-id", help="run id (default: timestamp + random suffix)")
    r.add_argument(
        "--rebuild",
        action="store_true",
        help="clear the trusted zone and rebuild everything from landing (needed after a key rotation)",
    )
    r.add_argument(
        "--retrain",
        action="store_true",
        help="train a new linkage model even if the saved one fits the current settings",
    )
    r.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="SOURCE",
        help="let this source's delivery through the delivery checks (audited; repeatable)",
    )
    r.set_defaults(func=cmd_run)

    h = sub.add_parser(
        "runs",
        help="list the run history (status, what changed, timings, counts)",
        description="List the runs recorded in the output folder's runs/ summaries: status "
        "(and the failed stage), which extracts were ingested or reused, whether linkage ran, "
        "people and households published. The live release's run is starred.",
    )
    h.add_argument("--config", help=CONFIG_HELP)
    h.add_argument("--limit", type=int, default=20, help="show the last N runs (0 = all)")
    h.add_argument("--json", action="store_true", help="print the full summaries as JSON")
    h.set_defaults(func=cmd_runs)

    w = sub.add_parser(
        "landing",
        help="show which extracts have landed and which a run would ingest",
        description="Compare each configured extract in the landing folder with what was last "
        "ingested (by SHA-256): missing, arriving (modified in the last --settle-seconds), new "
        "or unchanged. The landing-watch flow triggers a run on the same check.",
    )
    w.add_argument("--config", help=CONFIG_HELP)
    w.add_argument(
        "--settle-seconds",
        type=float,
        default=300.0,
        help="a file modified more recently than this is still arriving (default 300)",
    )
    w.add_argument("--json", action="store_true", help="print the status as JSON")
    w.set_defaults(func=cmd_landing)


def _setup_commands(sub: Subcommands) -> None:
    """`map`, `check`, `retention` and `init`: a partnership's folder, extracts and files."""
    m = sub.add_parser(
        "map",
        help="propose a new extract's column mapping onto a contract (TOML to paste)",
        description="Read the header and a sample of rows of an extract (CSV, Excel or Parquet) "
        "and propose its [sources.NAME] table ([reference.NAME] for a reference file): delimiter, encoding, date formats and a column for "
        "each contract field, from column names (with common council and NHS aliases) and the "
        "share of values valid for the field's type (Modulus 11 NHS numbers, postcodes, "
        "UPRNs, dates, sex codes). Evidence is printed as comments; no data value is shown. "
        "Exit 3 when a required field has no column.",
    )
    m.add_argument("file", help="the extract (CSV, Excel .xlsx/.xls or Parquet)")
    m.add_argument(
        "--contract",
        required=True,
        action="append",
        help="contract name, e.g. gp_registrations; repeat it (or separate with commas) for a "
        "reference file that serves several reference contracts (uprn_lookup, property_class)",
    )
    m.add_argument("--config", help=CONFIG_HELP + "; only for the landing folder")
    m.add_argument("--version", type=int, default=None, help="contract major version")
    m.add_argument("--source", default=None, help="source name in the config (default: contract)")
    m.add_argument("--rows", type=int, default=5000, help="rows to sample (default 5000)")
    m.add_argument(
        "--sheet",
        default=None,
        help="a workbook's sheet: its name or its number from 1 (default: the first)",
    )
    m.add_argument(
        "--schemas",
        default=None,
        help="contracts folder (default: the contracts shipped with uprnlink)",
    )
    m.add_argument(
        "--relative-to",
        default=None,
        help="write the path relative to this folder (default: the configuration's landing_dir)",
    )
    m.set_defaults(func=cmd_map)

    c = sub.add_parser(
        "check",
        help="check a run configuration and its extracts before a run (no key needed)",
        description="Check the configuration (types, contracts, mappings, person groups, "
        "recodings, the delivery-check policy) and each extract's header and a sample of its "
        "records through the ingest's own validation: the share of rows that would be "
        "quarantined, values nulled, codes left unrecoded. Nothing is written and no key is "
        "needed. Exit 0 ready (warnings may be printed), 2 the configuration is invalid, 3 a "
        "contract, mapping or file problem.",
    )
    c.add_argument("--config", help=CONFIG_HELP)
    c.set_defaults(func=cmd_check)

    t = sub.add_parser(
        "retention",
        help="list (or --apply: delete) files past the policy's retention periods",
        description="List the files in the landing, quarantine and trusted zones last written "
        "longer ago than their period in the governance policy's [retention] section "
        "(reference look-ups in the landing folder are exempt). --apply deletes them under the "
        "run lock and records one audit entry (zone, path, age). Every run reports the same "
        'list; enforce = "delete" in the policy makes every run delete it.',
    )
    t.add_argument("--config", help=CONFIG_HELP)
    t.add_argument("--apply", action="store_true", help="delete the files (needs the key)")
    t.add_argument("--json", action="store_true", help="print the list as JSON")
    t.set_defaults(func=cmd_retention)

    i = sub.add_parser(
        "init",
        help="lay out a working folder for a new partnership (config, policy, folders)",
        description="Write DIR/uprnlink.toml (a commented run configuration with a table per "
        "data contract, its folders relative to DIR), DIR/governance/policy.toml (a copy of the "
        "default policy to edit), the landing/, work/ and out/ folders and DIR/README.txt with "
        "the next steps. An existing uprnlink.toml is kept (exit 2) unless --force; an existing "
        "policy is never overwritten.",
    )
    i.add_argument("dir", help="the working folder (created if missing)")
    i.add_argument("--force", action="store_true", help="overwrite an existing uprnlink.toml")
    i.set_defaults(func=cmd_init)


def _demo_commands(sub: Subcommands) -> None:
    """`demo` and `evaluate`: the synthetic demo and scoring against its truth."""
    d = sub.add_parser(
        "demo",
        help="synthesise, run and evaluate the demo end to end",
        description="Write the packaged demo configuration to DIR/demo.toml, synthesise a "
        "population into DIR/landing and DIR/truth, create the demo key, run the pipeline into "
        "DIR/work and DIR/out, and print the evaluation against the synthetic truth.",
    )
    d.add_argument("--people", type=int, default=20_000, help="people to simulate (default 20000)")
    d.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    d.add_argument(
        "--population",
        choices=["demo", "testpop"],
        default="demo",
        help="demo: the project's own synthetic population; testpop: an independent one in "
        "other systems' layouts (uprnlink.testpop)",
    )
    where = d.add_mutually_exclusive_group()
    where.add_argument(
        "--dir",
        default=None,
        help="folder for the demo's config, data and outputs (default demo/, or testpop/ for --population testpop)",
    )
    where.add_argument(
        "--config",
        default=None,
        help="use this demo configuration instead (data beside landing_dir)",
    )
    d.add_argument(
        "--full-evaluation",
        action="store_true",
        help="print the whole evaluation table (source pairs, households, bias)",
    )
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser(
        "evaluate",
        help="score the last run's person clusters against truth (several populations side by "
        "side: repeat --config and --truth)",
    )
    e.add_argument("--config", action="append", help=CONFIG_HELP)
    e.add_argument(
        "--truth", required=True, action="append", help="folder with the synthetic truth files"
    )
    e.set_defaults(func=cmd_evaluate)


def _key_commands(sub: Subcommands) -> None:
    """`key` and `audit`: the keys and the tamper-evident audit log."""
    k = sub.add_parser(
        "key",
        help="create, inspect, check or rotate a key (pseudonymisation, audit or release)",
        description="Each key has its own file and passphrase and its own custodians "
        "(governance/key-custody.md): the pseudonymisation key (linkage tokens; the pipeline), "
        "the audit key (the audit log's MACs; whoever appends to the log and the IG lead) and "
        "the release key (analyst-facing person and household ids; the pipeline). A new key's "
        "passphrase must be strong (zxcvbn score 3 or more) and never the demo passphrase.",
    )
    k.add_argument("key_command", choices=["init", "show", "check", "rotate"])
    k.add_argument(
        "--file",
        help="encrypted key file (default: the file the configuration names for --kind)",
    )
    k.add_argument(
        "--kind",
        choices=["pseudonymisation", "audit", "release"],
        default="pseudonymisation",
        help="which key `init` creates (show, check and rotate read it from the file)",
    )
    k.add_argument(
        "--config",
        help="the run configuration whose audit log records the event and whose [key], [audit] "
        "or [release] names the file (default: ./uprnlink.toml when there is one)",
    )
    k.add_argument(
        "--passphrase-env",
        default=None,
        help="environment variable holding the passphrase (default by kind: "
        "UPRNLINK_KEY_PASSPHRASE, UPRNLINK_AUDIT_PASSPHRASE, UPRNLINK_RELEASE_PASSPHRASE; "
        "else prompt)",
    )
    k.set_defaults(func=cmd_key)

    a = sub.add_parser(
        "audit",
        help="verify the tamper-evident audit log, report on it, or start sealing it",
        description="verify: check every entry, seal and witness (exit 1 if anything fails); "
        "report: the IG lead's report; seal init: start forward sealing (the IG lead, once: "
        "prints the verification seed to keep offline); seal status: the sealing epoch.",
    )
    a.add_argument("audit_command", choices=["verify", "report", "seal"])
    a.add_argument("seal_action", nargs="?", choices=["init", "status"], help="for seal")
    a.add_argument("--config", help=CONFIG_HELP)
    a.add_argument(
        "--seed-file",
        help="verify, report: the verification seed (default: UPRNLINK_AUDIT_SEED); "
        "seal init: write the new seed to this new file instead of printing it",
    )
    a.add_argument(
        "--seed",
        help="the verification seed itself (prefer --seed-file: others on the host can read a "
        "command line)",
    )
    a.add_argument(
        "--witness-file",
        action="append",
        default=[],
        help="another witness file to check, e.g. a copy or `journalctl -t uprnlink-audit -o "
        "cat` (the configured one is always read); repeatable",
    )
    a.add_argument(
        "--format",
        choices=["markdown", "html"],
        default="markdown",
        help="report format (default markdown)",
    )
    a.add_argument("--out", help="write the report to this file (default: print it)")
    a.set_defaults(func=cmd_audit)


def _service_commands(sub: Subcommands) -> None:
    """The query service's client commands, then `serve`, `users` and `review`."""
    from uprnlink.service.client_cli import add_client_commands

    add_client_commands(sub)

    sv = sub.add_parser(
        "serve",
        help="run the query service (analysts' only way in) until interrupted",
        description="Serve the live release's analyst database to token holders: role checks "
        "by DuckDB's own parser and binder, every attempt audited before it runs, time and "
        "row limits. Run it as its own service account with the audit key's passphrase "
        "(UPRNLINK_AUDIT_PASSPHRASE) and no other key. It refuses to start when the audit log "
        "is kept with another key or is damaged.",
    )
    sv.add_argument("--config", help=CONFIG_HELP)
    sv.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: the config's, 8765)")
    sv.set_defaults(func=cmd_serve)

    us = sub.add_parser(
        "users",
        help="IG leads: add, list, rotate or revoke the query service's users and tokens",
        description="Each user has a role from the governance policy and one active token, "
        "shown once when issued; only its SHA-256 is stored (the users file, [service] "
        "users_file). Adding, rotating and revoking are audited and need the audit key.",
    )
    us.add_argument("users_command", choices=["add", "list", "rotate", "revoke"])
    us.add_argument("name", nargs="?", help="user name (add, rotate, revoke)")
    us.add_argument("--config", help=CONFIG_HELP)
    us.add_argument("--role", help="role in governance/policy.toml (add; rotate keeps it)")
    us.add_argument("--all", action="store_true", help="list revoked tokens too")
    us.add_argument("--json", action="store_true", help="list as JSON")
    us.set_defaults(func=cmd_users)

    rv = sub.add_parser(
        "review",
        help="data engineers: list, label or export the clerical review queue",
        description="The link stage queues the pairs it was least sure of (trusted/review/). "
        "Label them match or non_match: labels are appended (never rewritten), audited, and "
        "the next run uses them as must-link and cannot-link evidence.",
    )
    rv.add_argument("review_command", choices=["list", "label", "export"])
    rv.add_argument("pair", nargs="?", help="pair id (label)")
    rv.add_argument("label", nargs="?", help="match or non_match (label)")
    rv.add_argument("--config", help=CONFIG_HELP)
    rv.add_argument("--limit", type=int, default=20, help="pairs to list (default 20)")
    rv.add_argument("--out", help="file to export to (.parquet or .csv)")
    rv.set_defaults(func=cmd_review)


def _end_console() -> None:
    """Close any progress bars before an error line is printed."""
    from uprnlink.progress import stop_console

    stop_console()


def find_config(args: argparse.Namespace, cwd: Path | None = None) -> None:
    """Inside a working folder (`uprnlink init`), commands use its `uprnlink.toml` without
    `--config`, and say so on stderr; `--config` always wins."""
    command = args.command
    if command not in NEEDS_CONFIG | USES_CONFIG or getattr(args, "config", None):
        return
    found = (cwd or Path.cwd()) / CONFIG_NAME
    if found.is_file():
        args.config = [str(found)] if command == "evaluate" else str(found)
        print(
            f"uprnlink: using {found} (found in this folder; --config FILE for another)",
            file=sys.stderr,
        )
    elif command in NEEDS_CONFIG | {"evaluate"}:
        from uprnlink.errors import ConfigError

        raise ConfigError(
            f"no --config given and no {CONFIG_NAME} in {cwd or Path.cwd()}: run this from a "
            "working folder (`uprnlink init DIR`) or pass --config FILE"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand, turning uprnlink errors into a message and exit code."""
    args = build_parser().parse_args(argv)
    try:
        find_config(args)
        return int(args.func(args))
    except UprnlinkError as exc:
        _end_console()
        print(f"uprnlink: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _end_console()
        print("uprnlink: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except Exception as exc:
        _end_console()
        if os.environ.get("UPRNLINK_DEBUG"):
            raise
        # A traceback can quote data values, so by default only the error type is shown.
        print(
            f"uprnlink: unexpected {type(exc).__name__}. A failed run's summary in out/runs/ "
            "names the stage; set UPRNLINK_DEBUG=1 for a traceback (it may quote data values).",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
