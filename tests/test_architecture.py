"""The rules the code keeps: import contracts (import-linter), one DuckDB writer, one unlock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import no_baselines
from uprnlink.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "uprnlink"
PUBLISHER = PACKAGE / "publish" / "database.py"


def test_import_contracts_are_kept() -> None:
    """Splink only in linkage, cryptography only in privacy.keys, Prefect only in flows, stage
    modules only through the runner, zones layered one way (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(lint), "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


# Splink's private modules (splink.internals) change without notice. Known remaining use:
# the blocking rules' SQL (no public equivalent of BlockingRuleCreator in Splink 5.0).
PRIVATE_SPLINK_ALLOWED = {"linkage/model.py"}


def _private_splink_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        if any(n == "splink.internals" or n.startswith("splink.internals.") for n in names):
            lines.append(node.lineno)
    return lines


def test_splink_is_used_through_its_public_api() -> None:
    """Charts included: the offline chart libraries come from a chart's `to_html(inline=True)`."""
    offenders = {
        rel: found
        for path in PACKAGE.rglob("*.py")
        if (rel := str(path.relative_to(PACKAGE))) not in PRIVATE_SPLINK_ALLOWED
        and (found := _private_splink_imports(path))
    }
    assert offenders == {}


def _writable_connects(path: Path) -> list[int]:
    """Lines of `duckdb.connect(...)` calls that open a database file without read_only=True."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "connect" or getattr(node.func.value, "id", None) != "duckdb":
            continue
        database = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == "database":
                database = kw.value
        in_memory = database is None or (
            isinstance(database, ast.Constant) and database.value in ("", ":memory:")
        )
        read_only = any(
            kw.arg == "read_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in node.keywords
        )
        if not (in_memory or read_only):
            lines.append(node.lineno)
    return lines


def test_only_the_publisher_opens_a_duckdb_file_for_writing() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in PACKAGE.rglob("*.py")
        if path != PUBLISHER and (found := _writable_connects(path))
    }
    assert offenders == {}
    assert _writable_connects(PUBLISHER), "the publisher writes the analyst database"


@pytest.mark.slow
def test_a_run_unlocks_each_key_once(demo_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt runs once per key and process (pseudonymisation, release, audit), however many
    stages ask for them."""
    from uprnlink.privacy import keys
    from uprnlink.run import runner

    config = no_baselines(demo_tree)
    keys.forget_run_keys()
    calls: list[int] = []
    real = keys._derive_kek

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keys, "_derive_kek", counting)
    runner.run_all(str(config), run_id="20260101T000000Z-once")
    assert len(calls) == 3
