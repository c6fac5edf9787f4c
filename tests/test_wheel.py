"""A release build works on its own: the sdist and the pure-Python wheel (`py3-none-any`, the
published artefact) hold the package data, and the wheel, installed into a fresh virtual
environment outside the checkout, lays out a working folder and runs a small demo; the native
wheel (`make dist-native`) carries the C extension on the stable ABI.

Slow: about 50 s on 2 cores with pip's cache warm (build 9 s, install 9 s, demo 23 s), about
75 s cold (build 22 s, install 25 s). Dependencies are the versions in constraints.txt (pip's
cache and the index). Prefect is not installed, so the run also proves the in-process fallback
of `uprnlink run`. `pytest -s` prints the time of each step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

import uprnlink
from uprnlink.settings import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.wheel]

PACKAGE = Path(uprnlink.__file__).parent
CONTRACTS = sorted(p.name for p in (PACKAGE / "schemas").glob("*.v*.toml"))
# Files a wheel must carry, with the package's copy each must equal (links followed).
PACKAGE_DATA = [
    *(f"schemas/{name}" for name in CONTRACTS),
    "schemas/README.md",
    "templates/policy.toml",
    "templates/uprnlink.toml",
    "templates/demo.toml",
    "templates/README.txt",
    "py.typed",
    "__main__.py",
    "flows/__init__.py",
    "flows/household_linkage.py",
    "flows/landing_watch.py",
    "flows/serve.py",
    "privacy/_hmac.c",
    "privacy/_hmac.pyi",
]
TIMINGS: dict[str, float] = {}


def _run(step: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run one step, fail with its output, record how long it took."""
    started = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    TIMINGS[step] = time.perf_counter() - started
    assert out.returncode == 0, (
        f"{args} exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout + out.stderr


def _source_copy(root: Path) -> Path:
    """A copy of the files git knows about (so build/ and *.egg-info left in a checkout never
    leak into a build)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    source = root / "source"
    for name in filter(None, files.split("\0")):
        src = PROJECT_ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            (source / name).symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, source / name)
    return source


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built from it, as `python -m build` (`make dist`) makes them for a
    release, from a copy of the checkout."""
    root = tmp_path_factory.mktemp("build")
    source = _source_copy(root)
    env = {k: v for k, v in os.environ.items() if k != "UPRNLINK_BUILD_HMAC"}
    _run(
        "build",
        [sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(source)],
        root,
        env,
    )
    return root / "dist"


def test_native_wheel_holds_the_c_extension_on_the_stable_abi(tmp_path: Path) -> None:
    """`make dist-native`: the same package with `uprnlink.privacy._hmac` built against
    Python's stable ABI, so one wheel serves CPython 3.11 and later on its platform."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the extension cannot be built here")
    source = _source_copy(tmp_path)
    env = {**os.environ, "UPRNLINK_BUILD_HMAC": "1"}
    _run(
        "build-native",
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("uprnlink-*.whl")
    assert "-cp311-abi3-" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        assert any(
            n.startswith("uprnlink/privacy/_hmac.") and n.endswith(".so") for n in zf.namelist()
        ), "the C extension was not built into the native wheel (gcc and OpenSSL headers?)"


def test_sdist_and_wheel_carry_the_package_data(dist: Path) -> None:
    (wheel,) = dist.glob("uprnlink-*.whl")
    (sdist,) = dist.glob("uprnlink-*.tar.gz")
    version = uprnlink.__version__
    assert (
        wheel.name.startswith(f"uprnlink-{version}-") and sdist.name == f"uprnlink-{version}.tar.gz"
    )
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for rel in PACKAGE_DATA:
            assert f"uprnlink/{rel}" in names, rel
            # A real file with the package's content, never the text of a link.
            assert zf.read(f"uprnlink/{rel}") == (PACKAGE / rel).read_bytes(), rel
        # The published wheel is pure Python: it installs on any supported Python.
        assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
        assert not any(n.endswith((".so", ".pyd")) for n in names)
        assert "Root-Is-Purelib: true" in zf.read(f"uprnlink-{version}.dist-info/WHEEL").decode()
        meta = zf.read(f"uprnlink-{version}.dist-info/METADATA").decode()
        assert f"Version: {version}" in meta and "License-Expression: MIT" in meta
        assert "Requires-Python: >=3.11" in meta
        for minor in (11, 12, 13):
            assert f"Classifier: Programming Language :: Python :: 3.{minor}" in meta
        assert f"uprnlink-{version}.dist-info/licenses/LICENSE" in names
        assert "Provides-Extra: flows" in meta
        assert not any(
            n.startswith(("tests/", "schemas/", "governance/", "config/")) for n in names
        )
    with tarfile.open(sdist) as tf:
        members = {m.name: m for m in tf.getmembers()}
        top = f"uprnlink-{version}"
        for rel in ("LICENSE", "pyproject.toml", "setup.py", "README.md"):
            assert f"{top}/{rel}" in members, rel
        for rel in PACKAGE_DATA:
            assert members[f"{top}/src/uprnlink/{rel}"].isfile(), rel


def test_installed_wheel_inits_and_runs_a_demo_outside_the_checkout(
    dist: Path, tmp_path: Path
) -> None:
    (wheel,) = dist.glob("uprnlink-*.whl")
    venv = tmp_path / "venv"
    # No pip in the new environment: this interpreter's pip installs into it (saves ~15 s).
    _run("venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run(
        "install",
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--no-compile", "--disable-pip-version-check",
            "-c", str(PROJECT_ROOT / "constraints.txt"), str(wheel),
        ],
        tmp_path,
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "UPRNLINK_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    where = _run(
        "locate",
        [
            str(python), "-c",
            "import importlib.util, uprnlink, uprnlink.resources as r; "
            "import uprnlink.privacy.keys as k; "
            "print(uprnlink.__file__); print(r.schemas_dir()); print(r.default_policy_path()); "
            "print(importlib.util.find_spec('prefect')); print(k.BULK_HMAC)",
        ],
        work,
        env,
    ).splitlines()  # fmt: skip
    site = venv / "lib"
    assert all(Path(p).is_relative_to(site) for p in where[:3]), where
    assert where[3] == "None", "Prefect is an extra: the plain install must not have it"
    assert where[4] == "python", "the pure wheel hashes with the cryptography package"

    _run("init", [str(python), "-m", "uprnlink", "init", "partnership"], work, env)
    for name in ("uprnlink.toml", "governance/policy.toml", "README.txt", "landing", "work", "out"):
        assert (work / "partnership" / name).exists(), name
    landing = _run(
        "landing",
        [str(venv / "bin" / "uprnlink"), "landing", "--config", "partnership/uprnlink.toml"],
        work,
        env,
    )
    assert "council_tax" in landing and "missing" in landing

    demo = _run("demo", [str(venv / "bin" / "uprnlink"), "demo", "--people", "300"], work, env)
    assert "Prefect is not installed" in demo
    assert "precision" in demo and "recall" in demo
    figures = demo.split("Linkage against ground truth", 1)[1]
    precision = float(figures.split("precision ", 1)[1].split(",", 1)[0])
    recall = float(figures.split("recall ", 1)[1].split(",", 1)[0])
    assert precision > 0.9 and recall > 0.9, figures
    summaries = list((work / "demo" / "out" / "runs").glob("*.json"))
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["status"] == "completed"
    # Nothing was read from (or points back into) the checkout.
    checkout = str(PROJECT_ROOT)
    assert checkout not in demo and checkout not in summaries[0].read_text()
    assert checkout not in (work / "demo" / "demo.toml").read_text()
    print("wheel test timings: " + ", ".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))
