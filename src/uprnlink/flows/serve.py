"""Start or stop a local Prefect server, the uprnlink deployments and a process worker.

`make serve` runs `python -m uprnlink.flows.serve start`; `make stop` runs `... stop`. Start:

1. starts `prefect server start` on 127.0.0.1 (unless PREFECT_API_URL already names a server:
   then that server is used and nothing is started for it);
2. creates the process work pool `uprnlink-process` if it is missing;
3. registers the deployments declared in `prefect.yaml` (`prefect deploy --all`);
4. starts a worker on the pool, which runs each scheduled or triggered flow in a subprocess;
5. prints the UI address.

Process ids go to `.prefect/serve.json`; stop signals exactly those process groups (and
nothing else). Logs: `.prefect/server.log`, `.prefect/worker.log`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from uprnlink.run.lock import process_alive
from uprnlink.settings import PROJECT_ROOT

PROJECT = PROJECT_ROOT
POOL = "uprnlink-process"


def prefect_home() -> Path:
    home = Path(os.environ.get("PREFECT_HOME", PROJECT / ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    return home


def state_file() -> Path:
    return prefect_home() / "serve.json"


def prefect_cli() -> list[str]:
    return [sys.executable, "-m", "prefect"]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def spawn(args: list[str], log: Path, env: dict[str, str]) -> int:
    """Start a detached process (its own process group) logging to `log`; return its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def worker_env() -> dict[str, str]:
    """The environment for the server and worker: this checkout, no telemetry, a key source.

    Without a passphrase or key in the environment the worker gets the demo passphrase, said
    loudly, so that `make serve` works on the demo and never silently on real data.
    """
    env = {
        **os.environ,
        "UPRNLINK_HOME": str(PROJECT),
        "PREFECT_HOME": str(prefect_home()),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    if not env.get("UPRNLINK_KEY_PASSPHRASE") and not env.get("UPRNLINK_KEY"):
        from uprnlink.privacy.keys import DEMO_PASSPHRASE

        env["UPRNLINK_KEY_PASSPHRASE"] = DEMO_PASSPHRASE
        print(
            "!! No UPRNLINK_KEY_PASSPHRASE set: the worker uses the DEMO passphrase (demo data "
            "only). For real data, export the passphrase (or UPRNLINK_KEY) before `make serve`."
        )
    return env


def start_server(port: int, env: dict[str, str], pids: dict[str, int]) -> str:
    """The Prefect API's address: PREFECT_API_URL's server, else one started here (its pid
    recorded in `pids` and the state file, and its address put in `env`)."""
    external = os.environ.get("PREFECT_API_URL")
    if external:
        api_url = external.rstrip("/")
        print(f"using the Prefect server at {api_url} (PREFECT_API_URL)")
        return api_url
    api_url = f"http://127.0.0.1:{port}/api"
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    print(f"starting a Prefect server on 127.0.0.1:{port} ...")
    pids["server"] = spawn(
        [*prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        prefect_home() / "server.log",
        env,
    )
    state_file().write_text(json.dumps(pids))
    return api_url


def wait_until_healthy(api_url: str, seconds: float = 180) -> bool:
    """Whether the server answered its health check within `seconds`."""
    deadline = time.monotonic() + seconds
    while not healthy(api_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def run_prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One `prefect --no-prompt ...` command in this checkout, its output captured."""
    return subprocess.run(
        [*prefect_cli(), "--no-prompt", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def deploy(env: dict[str, str]) -> bool:
    """Create the work pool if missing and register `prefect.yaml`'s deployments (the
    failing command's output printed)."""
    if run_prefect(env, "work-pool", "inspect", POOL).returncode != 0:
        made = run_prefect(env, "work-pool", "create", POOL, "--type", "process")
        if made.returncode != 0:
            print(made.stdout + made.stderr)
            return False
    deployed = run_prefect(env, "deploy", "--all", "--prefect-file", str(PROJECT / "prefect.yaml"))
    if deployed.returncode != 0:
        print(deployed.stdout + deployed.stderr)
        return False
    return True


def start(port: int) -> int:
    """Start the server (unless PREFECT_API_URL names one), deploy, start a worker."""
    if state_file().exists():
        print(f"already serving (see {state_file()}); `make stop` first", file=sys.stderr)
        return 1
    env = worker_env()
    pids: dict[str, int] = {}
    api_url = start_server(port, env, pids)
    if not wait_until_healthy(api_url):
        print(f"the server did not answer at {api_url}; see .prefect/server.log")
        stop()
        return 1
    if not deploy(env):
        stop()
        return 1
    pids["worker"] = spawn(
        [*prefect_cli(), "worker", "start", "--pool", POOL, "--type", "process"],
        prefect_home() / "worker.log",
        env,
    )
    state_file().write_text(json.dumps(pids))
    ui = api_url.removesuffix("/api")
    print(
        f"\nPrefect UI: {ui}\n"
        f"Deployments: household-linkage/monthly (03rd of each month 06:00 Europe/London), "
        f"landing-watch/landing-watch (hourly)\n"
        f"Run one now: PREFECT_API_URL={api_url} .venv/bin/prefect deployment run "
        f"household-linkage/monthly\n"
        f"Logs: .prefect/server.log, .prefect/worker.log; stop with `make stop`."
    )
    return 0


def stop() -> int:
    path = state_file()
    if not path.exists():
        print("nothing to stop (no .prefect/serve.json)")
        return 0
    pids: dict[str, int] = json.loads(path.read_text())
    for name in ("worker", "server"):
        pid = pids.get(name)
        if pid is None or not process_alive(pid):
            continue
        print(f"stopping the {name} (process group {pid}) ...")
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 20
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    path.unlink()
    print("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start", help="start server (unless PREFECT_API_URL is set), deploy, worker")
    s.add_argument("--port", type=int, default=4200)
    sub.add_parser("stop", help="stop what `start` started")
    args = parser.parse_args(argv)
    return start(args.port) if args.action == "start" else stop()


if __name__ == "__main__":
    sys.exit(main())
