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


# Splink's private state changes without notice: no module imports `splink.internals`, and a
# module that imports Splink reads no underscore attribute (`linker._settings_obj`) except its
# own (`self._x`, `cls._x`).
OWN_NAMES = frozenset({"self", "cls"})


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in a module, `from a import b` giving `a.b`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def private_splink_use(source: str) -> list[str]:
    """Where a module's source uses Splink's private state: `line: what` for each import of
    `splink.internals` and, in a module importing Splink, each private attribute access."""
    tree = ast.parse(source)
    imports = _imports(tree)
    offences = [
        f"{line}: import {name}"
        for line, name in imports
        if name == "splink.internals" or name.startswith("splink.internals.")
    ]
    if not any(name == "splink" or name.startswith("splink.") for _, name in imports):
        return offences
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in OWN_NAMES:
            continue
        offences.append(f"{node.lineno}: .{node.attr}")
    return offences


def test_splink_is_used_through_its_public_api() -> None:
    """Charts included: the offline chart libraries come from a chart's `to_html(inline=True)`;
    a failed EM session is undone by rebuilding the linker from `save_model_to_json`."""
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in PACKAGE.rglob("*.py")
        if (found := private_splink_use(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    ("snippet", "offences"),
    [
        (
            "from splink.internals.blocking_rule_creator import BlockingRuleCreator",
            ["1: import splink.internals.blocking_rule_creator.BlockingRuleCreator"],
        ),
        ("import splink.internals.settings", ["1: import splink.internals.settings"]),
        ("from splink import internals", ["1: import splink.internals"]),
        (
            "from splink import Linker\n"
            "def f(linker):\n"
            "    saved = linker._settings_obj.core_model_settings.copy()\n"
            "    linker.misc._linker._cache.clear()\n",
            ["3: ._settings_obj", "4: ._cache", "4: ._linker"],
        ),
        ("import splink\nx = splink._version", ["2: ._version"]),
        # Allowed: a class's own state, dunders, and any access in a module without Splink.
        ("import splink\nclass A:\n    def f(self):\n        return self._x, A.__name__", []),
        ("def f(linker):\n    return linker._settings_obj", []),
        (
            "from splink import Linker\ndef f(linker):\n    return linker.misc.save_model_to_json()",
            [],
        ),
    ],
)
def test_private_splink_use_is_found(snippet: str, offences: list[str]) -> None:
    assert sorted(private_splink_use(snippet)) == sorted(offences)


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


#: The synthetic populations (the simulation's long generators) are outside the rule.
SYNTHETIC = ("synth", "testpop")
MAX_FUNCTION_LINES = 80


def _long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """Functions (nested ones too) longer than `limit` lines, def line to last line."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_is_longer_than_80_lines() -> None:
    """House style: a function does one thing and reads on one screen; a longer one is split
    along its own seams (the synthetic populations' generators excepted)."""
    offenders = {
        f"{path.relative_to(PACKAGE)}:{name}": lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in SYNTHETIC
        for name, lines in _long_functions(path.read_text())
    }
    assert offenders == {}


def test_the_length_rule_counts_def_to_last_line() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    assert _long_functions(f"def f():\n{body}\n") == []  # 80 lines
    assert _long_functions(f"def f():\n{body}\n    y = 1\n") == [("f", 81)]
    inner = "\n".join(f"        x{i} = {i}" for i in range(80))
    assert _long_functions(f"def outer():\n    def inner():\n{inner}\n") == [
        ("outer", 82),
        ("inner", 81),
    ]


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
