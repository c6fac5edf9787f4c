"""Working folders: the one `uprnlink init` lays out for a partnership, the one `uprnlink demo` runs in.

Both are written from the files shipped in the package (`uprnlink.resources`): the config
template, the default policy, the demo configuration and the data contracts, so they work the
same from a wheel as from a checkout.
"""

from __future__ import annotations

import json
import re
import shutil
import string
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from uprnlink import __version__
from uprnlink.errors import ConfigError
from uprnlink.ingest.contracts import Contract, FieldSpec, read_contract
from uprnlink.resources import default_policy_path, schemas_dir, template_path
from uprnlink.settings import read_settings
from uprnlink.sources import PERSON_SOURCES, REFERENCE_SOURCES

CONFIG_NAME = "uprnlink.toml"
POLICY_NAME = Path("governance") / "policy.toml"
README_NAME = "README.txt"
FOLDERS = ("landing", "landing/reference", "work", "out")
DEMO_CONFIG_NAME = "demo.toml"
# The demo configuration's folders, relative to the checkout's config/ folder (where
# config/demo.toml links to it); a demo folder of its own holds them directly.
_DEMO_PATH = re.compile(
    r'^(\s*(?:landing_dir|work_dir|out_dir|file|witness_file)\s*=\s*")\.\./(?:demo|testpop)/',
    re.M,
)
# The populations `uprnlink demo` can synthesise, each with its packaged configuration: the
# demo's own (uprnlink.synth), and an independent second one in other systems' layouts
# (uprnlink.testpop), so figures are not only measured on the first.
DEMO_CONFIGS = {"demo": DEMO_CONFIG_NAME, "testpop": "testpop.toml"}
_DEFAULT_DATE_FORMAT = "%d/%m/%Y"


@dataclass
class InitResult:
    """What `write_working_folder` wrote and what it found already there and left alone."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def shipped_contracts() -> list[Contract]:
    """The newest major version of each contract shipped with uprnlink, pipeline order first."""
    newest: dict[str, Contract] = {}
    for path in sorted(schemas_dir().glob("*.v*.toml")):
        contract = read_contract(path)
        if contract.name not in newest or contract.major > newest[contract.name].major:
            newest[contract.name] = contract
    order = {name: i for i, name in enumerate((*PERSON_SOURCES, *REFERENCE_SOURCES))}
    return sorted(newest.values(), key=lambda c: (order.get(c.name, len(order)), c.name))


def _rules(spec: FieldSpec) -> str:
    """A field's type and rules, as a short comment."""
    parts = [spec.type]
    if spec.required:
        parts.append("required")
    if spec.unique:
        parts.append("unique")
    if spec.values:
        parts.append("one of " + "/".join(spec.values))
    if spec.min is not None or spec.max is not None:
        low = "" if spec.min is None else f"{spec.min:g}"
        high = "" if spec.max is None else f"{spec.max:g}"
        parts.append(f"{low}..{high}")
    if spec.not_future:
        parts.append("not after the reference date")
    return ", ".join(parts)


def _commented(text: str, comment: str, column: int = 33) -> str:
    return f"{text:<{column}}  # {comment}"


def source_table_toml(contract: Contract) -> str:
    """The `[sources.NAME]` (or `[reference.NAME]`) table for one contract: every field, the
    required ones mapped to a placeholder column of their own name, the optional ones commented."""
    table = "reference" if contract.kind == "reference" else "sources"
    name = contract.name
    path = f"reference/{name}.csv" if table == "reference" else f"{name}.csv"
    has_dates = any(f.is_date for f in contract.fields)
    lines = [
        "",
        f"# {'-' * 40} {name} (contract {contract.tag})",
        f"# {contract.description}" if contract.description else "#",
        f"[{table}.{name}]",
        f"contract = {json.dumps(name)}",
        f"version = {contract.major}",
        _commented(f"path = {json.dumps(path)}", "in landing_dir; CSV or Parquet"),
        _commented('# delimiter = ","', "CSV only; `uprnlink map` finds it"),
        _commented('# encoding = "utf8"', "or latin-1, cp1252, ..."),
        _commented("# skip_lines = 0", "lines above the header (a report title, notes)"),
    ]
    if has_dates:
        lines.append(
            _commented(
                f"date_format = {json.dumps(_DEFAULT_DATE_FORMAT)}", "the file's date format(s)"
            )
        )
    if table == "sources":
        lines.append(_commented("# required = false", "a run goes on when the extract is absent"))
    lines += ["", f"[{table}.{name}.columns]"]
    mappings = [f"{spec.name} = {json.dumps(spec.name)}" for spec in contract.fields]
    width = max(len(m) for m in mappings) + 2
    for spec, mapping in zip(contract.fields, mappings, strict=True):
        comment = _rules(spec) + (f": {spec.description}" if spec.description else "")
        lines.append(_commented(("" if spec.required else "# ") + mapping, comment, width))
    return "\n".join(lines) + "\n"


def config_template_text(name: str, reference_date: date, contracts: Iterable[Contract]) -> str:
    """A commented run configuration for a new working folder: the packaged template's
    `[run]`, `[key]` and `[linkage]` tables, then one table per contract."""
    head = string.Template(template_path(CONFIG_NAME).read_text(encoding="utf-8")).substitute(
        name=name, reference_date=reference_date.isoformat()
    )
    return head + "".join(source_table_toml(c) for c in contracts)


def last_month_end(today: date) -> date:
    """The last day of the month before `today`: the default reference date."""
    return today.replace(day=1) - timedelta(days=1)


def write_working_folder(
    folder: Path, *, force: bool = False, today: date | None = None
) -> InitResult:
    """Lay out a working folder for a new partnership (`uprnlink init`).

    Writes `uprnlink.toml`, `governance/policy.toml`, `README.txt` and the landing, work and out
    folders. An existing config is a `ConfigError` unless `force`; an existing policy is never
    overwritten, as its edits are governance decisions.
    """
    folder = Path(folder).expanduser().resolve()
    config = folder / CONFIG_NAME
    if config.exists() and not force:
        raise ConfigError(f"{config} already exists: pass --force to overwrite it")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder")
    result = InitResult(folder)
    contracts = shipped_contracts()
    name = folder.name or "uprnlink"
    for sub in FOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    config.write_text(
        config_template_text(name, last_month_end(today or date.today()), contracts),
        encoding="utf-8",
    )
    result.written.append(config)
    policy = folder / POLICY_NAME
    if policy.exists():
        result.kept.append(policy)
    else:
        policy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(default_policy_path(), policy)
        result.written.append(policy)
    readme = folder / README_NAME
    readme.write_text(
        string.Template(template_path(README_NAME).read_text(encoding="utf-8")).substitute(
            name=name,
            version=__version__,
            contracts=textwrap.fill(
                "Contracts: " + ", ".join(c.name for c in contracts) + ".",
                width=95,
                initial_indent="   ",
                subsequent_indent="   ",
            ),
        ),
        encoding="utf-8",
    )
    result.written.append(readme)
    read_settings(config)  # what was written must load
    return result


def demo_config_text(population: str = "demo") -> str:
    """A packaged demo configuration with its folders relative to its own folder."""
    text = template_path(DEMO_CONFIGS[population]).read_text(encoding="utf-8")
    return _DEMO_PATH.sub(r"\1", text)


def write_demo_config(folder: Path, population: str = "demo") -> Path:
    """Write a demo configuration into `folder` (`uprnlink demo --dir`) and return its path.

    Refuses a working folder made by `uprnlink init`: the demo would write synthetic extracts
    over the landing folder's real ones.
    """
    folder = Path(folder).expanduser().resolve()
    if (folder / CONFIG_NAME).exists():
        raise ConfigError(
            f"{folder} is a working folder ({CONFIG_NAME}): give the demo a folder of its own"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / DEMO_CONFIGS[population]
    config.write_text(demo_config_text(population), encoding="utf-8")
    settings = read_settings(config)
    inside = (settings.landing_dir, settings.work_dir, settings.out_dir, settings.key.file)
    if any(p is None or not p.is_relative_to(folder) for p in inside):
        raise ConfigError(f"{config}: the packaged demo configuration points outside {folder}")
    return config
