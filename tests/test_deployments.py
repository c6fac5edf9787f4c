"""prefect.yaml declares deployments that point at real flows with the documented schedules."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from uprnlink.settings import PROJECT_ROOT

yaml = pytest.importorskip("yaml")


def deployments() -> dict[str, dict]:  # type: ignore[type-arg]
    doc = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in doc["deployments"]}


def test_each_deployment_points_at_a_flow_with_matching_parameters() -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    for name, d in deployments().items():
        path, func = d["entrypoint"].split(":")
        # The entrypoints are the top-level pipelines/ files (the design card's layout), each
        # naming the package's own flow; Prefect loads them by path, as the worker will.
        assert path.startswith("pipelines/"), name
        flow = load_flow_from_entrypoint(f"{PROJECT_ROOT / path}:{func}")
        assert isinstance(flow, Flow), name
        package = importlib.import_module(f"uprnlink.flows.{Path(path).stem}")
        assert flow.name == getattr(package, func).name, name
        assert set(d["parameters"]) <= set(flow.parameters.properties), name
        assert d["work_pool"]["name"] == "uprnlink-process"
        config = PROJECT_ROOT / d["parameters"]["config_path"]
        assert config.exists(), name


def test_the_monthly_run_is_scheduled_monthly_in_uk_time() -> None:
    monthly = deployments()["monthly"]
    (schedule,) = monthly["schedules"]
    _minute, _hour, day, month, weekday = schedule["cron"].split()
    assert (day, month, weekday) != ("*", "*", "*") and month == "*" and day.isdigit()
    assert schedule["timezone"] == "Europe/London"
    assert monthly["concurrency_limit"] == 1
    watch = deployments()["landing-watch"]
    assert watch["parameters"]["deployment"] == "household-linkage/monthly"


def test_serve_script_stops_only_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uprnlink.flows import serve

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert serve.stop() == 0  # nothing recorded: nothing signalled
    (tmp_path / "serve.json").write_text('{"server": 999999999}')  # a pid that cannot exist
    assert serve.stop() == 0
    assert not (tmp_path / "serve.json").exists()


def test_serve_worker_gets_the_demo_passphrase_only_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from uprnlink.flows import serve
    from uprnlink.privacy.keys import DEMO_PASSPHRASE

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("UPRNLINK_KEY", raising=False)
    monkeypatch.delenv("UPRNLINK_KEY_PASSPHRASE", raising=False)
    env = serve.worker_env()
    assert env["UPRNLINK_KEY_PASSPHRASE"] == DEMO_PASSPHRASE
    assert env["PREFECT_HOME"] == str(tmp_path) and env["DO_NOT_TRACK"] == "1"
    assert "DEMO passphrase" in capsys.readouterr().out
    monkeypatch.setenv("UPRNLINK_KEY_PASSPHRASE", "not the demo one")
    assert serve.worker_env()["UPRNLINK_KEY_PASSPHRASE"] == "not the demo one"
    assert capsys.readouterr().out == ""


def test_serve_start_stops_its_server_when_deploying_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from uprnlink.flows import serve

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("UPRNLINK_KEY_PASSPHRASE", "a test passphrase")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    spawned: list[list[str]] = []
    commands: list[tuple[str, ...]] = []

    def spawn(args: list[str], log: Path, env: dict[str, str]) -> int:
        spawned.append(args)
        assert env["PREFECT_API_URL"] == "http://127.0.0.1:4999/api"
        return 999999999  # a pid that cannot exist: stop() has nothing to signal

    def run_prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        commands.append(args)
        return subprocess.CompletedProcess(args, 1 if args[0] == "deploy" else 0, "", "")

    monkeypatch.setattr(serve, "spawn", spawn)
    monkeypatch.setattr(serve, "healthy", lambda api_url: True)
    monkeypatch.setattr(serve, "run_prefect", run_prefect)
    assert serve.start(4999) == 1
    assert len(spawned) == 1 and spawned[0][3:5] == ["server", "start"]  # no worker
    assert [c[0] for c in commands] == ["work-pool", "deploy"]  # the pool exists: not created
    assert not serve.state_file().exists()  # stopped: no worker started, nothing recorded
    assert serve.wait_until_healthy("http://127.0.0.1:9/api", seconds=0) is True
    monkeypatch.setattr(serve, "healthy", lambda api_url: False)
    assert serve.wait_until_healthy("http://127.0.0.1:9/api", seconds=0) is False
