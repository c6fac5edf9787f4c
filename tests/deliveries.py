"""Run configurations for deliveries of other shapes than the demo's: a subset of the sources,
a subset of each source's optional fields, identifiers removed. Built from the demo config, on
one synthetic population shared by a test module."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tests.toml_writer import dumps
from uprnlink.ingest.contracts import find_contract
from uprnlink.resources import schemas_dir

#: Quick linkage for small populations (the baselines are the evaluation's business).
QUICK_LINKAGE = {
    "max_pairs_u": 200_000.0,
    "max_pairs_em": 200_000.0,
    "baselines": False,
    "threads": 1,
    "memory_limit": "2GB",
}
IDENTIFIER_FIELDS = ("nhs_number", "uprn", "postcode", "address_line_1", "sex")


def demo_settings(config: Path) -> dict[str, Any]:
    """The demo config (as written by `make_demo_tree`) as a dict with absolute folders."""
    raw = tomllib.loads(config.read_text())
    base = config.parent
    for key in ("landing_dir", "work_dir", "out_dir"):
        raw["run"][key] = str((base / raw["run"][key]).resolve())
    for table in ("key", "audit", "release"):
        if "file" in raw.get(table, {}):
            raw[table]["file"] = str((base / raw[table]["file"]).resolve())
    return raw


def required_fields(contract: str) -> set[str]:
    """The contract fields a source must map."""
    return {f.name for f in find_contract(schemas_dir(), contract).fields if f.required}


def variant(
    demo: dict[str, Any],
    folder: Path,
    sources: dict[str, set[str] | None],
    *,
    linkage: dict[str, Any] | None = None,
) -> Path:
    """A config for the demo's extracts that maps only `sources` (each with only the given
    optional fields, or all of them for None), working in `folder`."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in demo.items()}
    raw["run"] = {
        **demo["run"],
        "work_dir": str(folder / "work"),
        "out_dir": str(folder / "out"),
    }
    raw["linkage"] = {**demo.get("linkage", {}), **QUICK_LINKAGE, **(linkage or {})}
    chosen = {}
    for name, keep in sources.items():
        table = dict(demo["sources"][name])
        columns = dict(table["columns"])
        if keep is not None:
            wanted = required_fields(table["contract"]) | keep
            columns = {f: c for f, c in columns.items() if f in wanted}
        table["columns"] = columns
        chosen[name] = table
    raw["sources"] = chosen
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.toml"
    path.write_text(dumps(raw) + "\n")
    return path


def optional_fields(demo: dict[str, Any], source: str) -> list[str]:
    """The demo mapping's optional fields of one source."""
    required = required_fields(demo["sources"][source]["contract"])
    return sorted(f for f in demo["sources"][source]["columns"] if f not in required)
