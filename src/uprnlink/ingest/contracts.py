"""Versioned data contracts: the canonical fields each source and reference file must supply."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import ContractError

FIELD_TYPES = frozenset(
    {
        "string",
        "forename",
        "surname",
        "date",
        "dob",
        "postcode",
        "uprn",
        "nhs_number",
        "sex",
        "flag",
        "enum",
        "integer",
        "decimal",
    }
)
KINDS = frozenset({"person_source", "reference"})
_FIELD_KEYS = frozenset(
    {
        "name",
        "type",
        "required",
        "unique",
        "values",
        "not_future",
        "min",
        "max",
        "max_length",
        "description",
    }
)
FIELD_DTYPES: dict[str, Any] = {
    "string": pl.String,
    "forename": pl.String,
    "surname": pl.String,
    "date": pl.Date,
    "dob": pl.Date,
    "postcode": pl.String,
    "uprn": pl.Int64,
    "nhs_number": pl.String,
    "sex": pl.String,
    "flag": pl.Boolean,
    "enum": pl.String,
    "integer": pl.Int64,
    "decimal": pl.Float64,
}
"""The polars type of each field type once standardised: a field not supplied is a null column
of this type, so every later stage sees the same schema whichever fields a source maps."""
DEFAULT_MAX_LENGTH = 1000
"""Longest value (in characters, after trimming) any field accepts unless its contract says
otherwise: a longer value fails the rule `too_long` rather than reaching the pipeline."""


@dataclass(frozen=True)
class FieldSpec:
    """One canonical field of a contract and its rules."""

    name: str
    type: str
    required: bool = False
    unique: bool = False
    values: tuple[str, ...] = ()
    not_future: bool = False
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    description: str = ""

    @property
    def is_date(self) -> bool:
        """Whether values are parsed with a date format."""
        return self.type in {"date", "dob"}

    @property
    def dtype(self) -> pl.DataType:
        """The standardised value's polars type (also of the null column when not supplied)."""
        dtype: pl.DataType = FIELD_DTYPES[self.type]()
        return dtype

    @property
    def is_coded(self) -> bool:
        """Whether values are codes from a list (enum, sex, flag): these can be recoded."""
        return self.type in {"enum", "sex", "flag"}

    @property
    def length_limit(self) -> int:
        """Longest accepted value in characters: `max_length`, else `DEFAULT_MAX_LENGTH`."""
        return self.max_length if self.max_length is not None else DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class Contract:
    """A versioned data contract loaded from `schemas/<name>.v<major>.toml`."""

    name: str
    version: str
    kind: str
    description: str
    fields: tuple[FieldSpec, ...]
    path: Path

    @property
    def major(self) -> int:
        """Major version: a change of meaning or a removed field bumps it."""
        return int(self.version.split(".")[0])

    @property
    def tag(self) -> str:
        """`name@version`, recorded with every output."""
        return f"{self.name}@{self.version}"

    def field(self, name: str) -> FieldSpec:
        """The field called `name`."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        """Canonical field names in contract order."""
        return tuple(f.name for f in self.fields)


def _parse_field(raw: dict[str, Any], path: Path, index: int) -> FieldSpec:
    unknown = set(raw) - _FIELD_KEYS
    where = f"fields[{index}]"
    if unknown:
        raise ContractError(
            f"unknown key(s) {sorted(unknown)} in {where}", file=str(path), rule="field_keys"
        )
    if "name" not in raw or "type" not in raw:
        raise ContractError(f"{where} needs a name and a type", file=str(path), rule="field_keys")
    if raw["type"] not in FIELD_TYPES:
        raise ContractError(
            f"{where} has unknown type {raw['type']!r}; expected one of {sorted(FIELD_TYPES)}",
            file=str(path),
            column=raw["name"],
            rule="field_type",
        )
    if raw["type"] == "enum" and not raw.get("values"):
        raise ContractError(
            "an enum field needs values", file=str(path), column=raw["name"], rule="enum_values"
        )
    max_length = raw.get("max_length")
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise ContractError(
            f"{where} max_length must be a positive whole number of characters",
            file=str(path),
            column=raw["name"],
            rule="max_length",
        )
    return FieldSpec(
        name=str(raw["name"]),
        type=str(raw["type"]),
        required=bool(raw.get("required", False)),
        unique=bool(raw.get("unique", False)),
        values=tuple(str(v).upper() for v in raw.get("values", ())),
        not_future=bool(raw.get("not_future", False)),
        min=raw.get("min"),
        max=raw.get("max"),
        max_length=max_length,
        description=str(raw.get("description", "")),
    )


def read_contract(path: Path) -> Contract:
    """Load and check one contract file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError("contract file not found", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ContractError(f"contract is not valid TOML: {exc}", file=str(path)) from None
    for key in ("name", "version", "kind", "fields"):
        if key not in raw:
            raise ContractError(f"contract lacks {key!r}", file=str(path), rule="contract_keys")
    if raw["kind"] not in KINDS:
        raise ContractError(f"unknown contract kind {raw['kind']!r}", file=str(path))
    fields = tuple(_parse_field(f, path, i) for i, f in enumerate(raw["fields"]))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ContractError("duplicate field names", file=str(path), rule="field_names")
    return Contract(
        name=str(raw["name"]),
        version=str(raw["version"]),
        kind=str(raw["kind"]),
        description=str(raw.get("description", "")),
        fields=fields,
        path=path,
    )


def find_contract(schemas_dir: Path, name: str, major: int | None = None) -> Contract:
    """The contract called `name` (highest major version unless `major` is given)."""
    candidates = sorted(schemas_dir.glob(f"{name}.v*.toml"))
    if major is not None:
        candidates = [p for p in candidates if p.name == f"{name}.v{major}.toml"]
    if not candidates:
        wanted = f"{name}.v{major}" if major is not None else name
        raise ContractError(f"no contract {wanted!r} in {schemas_dir}", rule="contract_missing")
    contracts = [read_contract(p) for p in candidates]
    return max(contracts, key=lambda c: c.major)


def check_contract_table(table: str, name: str, path: Path, contract: Contract) -> None:
    """A reference contract belongs in a `[reference.NAME]` table and a person source's in
    `[sources.NAME]`: the other way round the run would read a lookup as people (or people
    as a lookup) and fail far from the cause, so it is refused here, naming what to write."""
    wanted = "reference" if contract.kind == "reference" else "sources"
    if table == wanted:
        return
    what = (
        "a reference contract (a lookup joined on the UPRN or the LSOA, not people)"
        if wanted == "reference"
        else "a contract of people (a source to link), not a reference lookup"
    )
    raise ContractError(
        f"[{table}.{name}] uses {contract.name!r}, {what}: rename the table "
        f"[{wanted}.{name}] (and its [{wanted}.{name}.columns])",
        file=path.name,
        rule=f"{wanted}_contract",
    )
