"""A small TOML writer for tests that build run configurations (the standard library only
reads TOML)."""

from __future__ import annotations

import json
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text for nested dicts: scalars and lists first, then a [table] per sub-dict (a dict
    holding only scalars under a `columns` or `recode` key is still written as a table)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) or _inline(k, prefix)}
    tables = {k: v for k, v in data.items() if k not in scalars}
    out = [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        out.append(f"\n[{name}]")
        out.append(dumps(v, name))
    return "\n".join(line for line in out if line != "")


def _inline(key: str, prefix: str) -> bool:
    """A dict under a column mapping (`{ column = ..., format = ... }`) is written inline."""
    return prefix.endswith(".columns")
