"""Shared fixtures: seeded synthetic populations, and pipeline runs on them, built once per session.

Two populations are synthesised per test session, never more: `small_run`'s 1,500 people (seed 7),
run once with everything on, for the tests that only read a finished run; and `population`'s
300 people (seed 5), for the tests that need a tree of their own to change. Those copy it
(`copy_tree`), or copy `base_run` (that population already run once, baselines off), which is
far cheaper than synthesising and running again.

Markers (pyproject.toml): `slow` is every test that needs a synthetic population or a pipeline
run (applied here to any test using one of the fixtures below); `wheel`, `spark` and `browser`
name the tests that build and install the wheel, start Spark, or drive Chromium. `make
test-fast` leaves all four out; `make test` runs everything.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from uprnlink.run_summary import RunSummary
from uprnlink.settings import PROJECT_ROOT, RunSettings, read_settings

SMALL_PEOPLE = 1500
SMALL_SEED = 7
# The population every other end-to-end test copies. 300 people give about 530 linked people
# over the extracts' history (the flow test asserts more than 300).
POPULATION_PEOPLE = 300
POPULATION_SEED = 5
BASE_RUN_ID = "20260101T000000Z-0001"

# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: on a loaded CI
# machine a first example that compiles a polars expression overruns it and the test fails at
# random. Every property test here runs without one (most already said so themselves).
hypothesis_settings.register_profile(
    "uprnlink", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("uprnlink")


@dataclass
class PipelineRun:
    """A finished pipeline run on a small synthetic population."""

    root: Path
    config: Path
    settings: RunSettings
    summary: RunSummary
    log_text: str


def make_demo_tree(root: Path, people: int, seed: int) -> Path:
    """Synthesise a population under root/demo and copy the demo config to root/config."""
    from uprnlink.privacy.keys import create_demo_keys
    from uprnlink.synth import write_synthetic

    (root / "config").mkdir(parents=True, exist_ok=True)
    config = root / "config" / "demo.toml"
    shutil.copy(PROJECT_ROOT / "config" / "demo.toml", config)
    write_synthetic(root / "demo", people=people, seed=seed)
    # Keys from the population's seed (public demo keys, as `make demo` makes them): every
    # run of the suite perturbs the same cells the same way, so the attack tests' outcomes
    # are reproducible rather than a fresh draw each session.
    create_demo_keys(read_settings(config), seed=seed)
    return config


def no_baselines(config: Path) -> Path:
    """The config with the evaluation baselines (deterministic and plain Splink) off: tests that
    never look at them skip their training."""
    text = config.read_text().replace("baselines = true", "baselines = false")
    config.write_text(text)
    return config


def copy_tree(source: Path, root: Path) -> Path:
    """A copy of a tree made by `make_demo_tree` (a population, or a finished run on one) under
    root; returns its config. Folders in the config are relative, so the copy is independent."""
    shutil.copytree(source, root, symlinks=True, dirs_exist_ok=True)
    return root / "config" / "demo.toml"


# Fixtures that give a test a synthetic population or a pipeline run: a test using any of them,
# directly or through another fixture, is `slow` (not in `make test-fast`).
RUN_FIXTURES = frozenset(
    {"small_run", "query_service", "population", "base_run", "prefect_harness"}
)


# The longest test files (their tests' time added up, `pytest --durations`), longest first.
# `make test` runs files whole on two workers (`--dist loadfile --no-loadscope-reorder`), handing
# each worker the next file as it frees: starting with the longest leaves the short ones to fill
# the end, so neither worker waits long for the other (longest-first scheduling). A file not
# listed keeps its place after these.
LONGEST_FILES = (
    "test_first_day.py",
    "test_fault_injection.py",
    "test_deliveries.py",
    "test_linkage.py",
    "test_spark.py",
    "test_service.py",
    "test_adaptive_linkage.py",
    "test_wheel.py",
    "test_febrl.py",
    "test_portal.py",
    "test_flow.py",
    "test_incremental.py",
    "test_review_loop.py",
    "test_access.py",
    "test_mapping.py",
    "test_delivery_checks.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within


PASSPHRASE_ENVS = (
    "UPRNLINK_KEY_PASSPHRASE",
    "UPRNLINK_AUDIT_PASSPHRASE",
    "UPRNLINK_RELEASE_PASSPHRASE",
)
RAW_KEY_ENVS = ("UPRNLINK_KEY", "UPRNLINK_AUDIT_KEY", "UPRNLINK_RELEASE_KEY")


@pytest.fixture(scope="session", autouse=True)
def _demo_passphrase() -> Iterator[None]:
    from uprnlink.privacy.keys import DEMO_PASSPHRASE

    old = {n: os.environ.get(n) for n in (*PASSPHRASE_ENVS, *RAW_KEY_ENVS)}
    for name in PASSPHRASE_ENVS:
        os.environ[name] = DEMO_PASSPHRASE
    for name in RAW_KEY_ENVS:
        os.environ.pop(name, None)
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """The whole pipeline (no orchestrator) on a seeded population of 1,500 people."""
    from uprnlink.run.runner import run_all

    root = tmp_path_factory.mktemp("small")
    config = make_demo_tree(root, SMALL_PEOPLE, SMALL_SEED)
    # Capture every log record (any logger, DEBUG up) and everything printed during the run,
    # so the leak test can scan them.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            summary = run_all(str(config), run_id="test-run")
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    return PipelineRun(
        root=root,
        config=config,
        settings=read_settings(config),
        summary=summary,
        log_text=stream.getvalue(),
    )


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared population's tree (300 people, seed 5, demo config and keys): read it, or
    copy it with `copy_tree` (or the `demo_tree` fixture) to change anything."""
    root = tmp_path_factory.mktemp("population")
    make_demo_tree(root, POPULATION_PEOPLE, POPULATION_SEED)
    return root


@pytest.fixture
def demo_tree(population: Path, tmp_path: Path) -> Path:
    """This test's own copy of the shared population; returns its config."""
    return copy_tree(population, tmp_path / "tree")


@dataclass
class BaseRun:
    """The shared population run once (no orchestrator, baselines off, run BASE_RUN_ID)."""

    root: Path
    config: Path
    summary: RunSummary

    def copy(self, root: Path) -> Path:
        """A copy of the finished run under root, to run on from; returns its config."""
        return copy_tree(self.root, root)


@pytest.fixture(scope="session")
def base_run(population: Path, tmp_path_factory: pytest.TempPathFactory) -> BaseRun:
    """The first run that many tests start from (a previous release, a model, ids to keep):
    run once, copied by each (`base_run.copy`)."""
    from uprnlink.run.runner import run_all

    root = tmp_path_factory.mktemp("base_run")
    config = no_baselines(copy_tree(population, root))
    summary = run_all(str(config), run_id=BASE_RUN_ID)
    return BaseRun(root=root, config=config, summary=summary)


@pytest.fixture(scope="session")
def linked_synthetic_records(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tests/test_linkage.py's synthetic records (120 people, three sources) linked once with
    its SETTINGS: the model trained on them and the clusters, for the linkage tests that start
    from that model (training is repeatable, so each would train this very one)."""
    from tests.test_linkage import SETTINGS, synthetic_records
    from uprnlink.linkage.predict import link_people

    work = tmp_path_factory.mktemp("linked_records")
    return link_people(synthetic_records(), SETTINGS, work_dir=work)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A Prefect test server for the session's flow runs (the flow tests and `uprnlink run`
    through the CLI), started once: each start costs 10-20 s."""
    import prefect.main  # noqa: F401  (Prefect configures its logging on this import)
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    # Prefect's console handlers write to the sys.stderr of the moment they are made. Make them
    # now, on the session's stream: made inside a test's capsys (the first flow run of a test
    # that reads the CLI's output), they would write to a stream closed when that test ends.
    setup_logging(incremental=False)
    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class QueryService:
    """`uprnlink serve` on a copy of the small run, with one user per role."""

    url: str
    root: Path
    config: Path
    tokens: dict[str, str]  # role -> token
    process: subprocess.Popen[bytes]
    log: Path
    seed_file: Path | None = None  # the IG lead's verification seed (the service never reads it)

    @property
    def audit_log(self) -> Path:
        return read_settings(self.config).out_dir / "audit" / "audit.jsonl"

    def audit_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def wait_for_event(
        self, event: str, after: int, timeout: float = 120.0, **data: Any
    ) -> dict[str, Any]:
        """The first `event` past the first `after` entries whose data has these values, waited
        for (a deadline far beyond any machine's speed: it only stops a broken test hanging)."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.audit_events()[after:]:
                if entry["event"] == event and all(
                    entry["data"].get(k) == v for k, v in data.items()
                ):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} {data} in the audit log after {timeout:g} s")
            time.sleep(0.02)

    def query_workers(self) -> list[int]:
        """The service's query worker processes (its children started by multiprocessing's
        spawn; Linux /proc)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (
                    (stat.parent / "cmdline").read_bytes() if ppid == self.process.pid else b""
                )
            except (OSError, ValueError, IndexError):
                continue
            if b"spawn_main" in cmdline:
                pids.append(int(stat.parent.name))
        return pids

    @contextlib.contextmanager
    def workers_paused(self) -> Iterator[list[int]]:
        """Every query worker stopped (SIGSTOP) until the block ends (SIGCONT). A query sent
        meanwhile is checked and logged, then waits in a worker, however fast the machine,
        until the test lets it go: the test, not a sleep, decides what happens during a query.
        Leave the block well within the service's time limit (8 s), or the query is stopped."""
        if not Path("/proc/self/stat").exists():
            pytest.skip("pausing the query workers needs Linux /proc")
        pids = self.query_workers()
        assert pids, "the service has no query workers yet: ask it something first"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_environment() -> dict[str, str]:
    """The service account's environment: the audit key's passphrase and no other key."""
    from uprnlink.privacy.keys import DEMO_PASSPHRASE

    env = {k: v for k, v in os.environ.items() if not k.startswith("UPRNLINK_")}
    env["UPRNLINK_AUDIT_PASSPHRASE"] = DEMO_PASSPHRASE
    return env


def start_service(
    config: Path, port: int, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `uprnlink serve` and wait until it answers /api/health (or has exited)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uprnlink", "serve", "--config", str(config), "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the query service did not start: " + log.read_text()[-2000:])


@pytest.fixture(scope="session")
def query_service(
    small_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QueryService]:
    """The query service on a copy of the small run; users ana (analyst), eng (data_engineer)
    and ig (ig_lead); 8 s to run, 2 s to check, 50,000 rows and 2 MiB per answer."""
    from uprnlink import cli

    root = tmp_path_factory.mktemp("service")
    shutil.copytree(small_run.root, root, symlinks=True, dirs_exist_ok=True)
    config = root / "config" / "demo.toml"
    # The shipped policy, but the suite submits dozens of jobs as one analyst (the per-user
    # cap on jobs awaiting review is tried in test_portal's two-checkers test).
    from uprnlink.resources import default_policy_path

    policy = root / "suite-policy.toml"
    shipped = default_policy_path().read_text()
    assert "max_waiting_jobs = 5" in shipped
    policy.write_text(shipped.replace("max_waiting_jobs = 5", "max_waiting_jobs = 100", 1))
    config.write_text(
        config.read_text().replace("[run]\n", f'[run]\npolicy = "{policy}"\n', 1)
        + "\n[service]\ntimeout_seconds = 8\ncheck_timeout_seconds = 2\nmax_rows = 50000\n"
        + "max_answer_mib = 2\nworkers = 3\nfailure_window_seconds = 1\n"
        # Generous per-user limits: the suite asks hundreds of questions as one analyst
        # (tests/test_limits.py tries tight ones).
        + "user_rate_per_minute = 60000\nuser_burst = 5000\nuser_concurrency = 3\n"
    )
    # The IG lead starts sealing the log (the service refuses an unsealed one).
    seed_file = root / "ig-lead" / "audit-seal.seed"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert (
            cli.main(
                ["audit", "seal", "init", "--config", str(config), "--seed-file", str(seed_file)]
            )
            == 0
        )
    tokens = {}
    for name, role in (
        ("ana", "analyst"),
        ("eng", "data_engineer"),
        ("ig", "ig_lead"),
        ("chk", "output_checker"),
    ):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["users", "add", name, "--role", role, "--config", str(config)]) == 0
        tokens[role] = out.getvalue().strip().splitlines()[1]
    port = free_port()
    log = root / "service.log"
    proc = start_service(config, port, log, service_environment())
    assert proc.poll() is None, log.read_text()
    try:
        yield QueryService(f"http://127.0.0.1:{port}", root, config, tokens, proc, log, seed_file)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def db(small_run: PipelineRun) -> Iterator[duckdb.DuckDBPyConnection]:
    """The small run's analysts' database, read only (one connection per test module)."""
    con = duckdb.connect(str(small_run.settings.database_path), read_only=True)
    yield con
    con.close()


def frame(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """A query's answer as a polars frame."""
    out = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(out, pl.DataFrame)
    return out
