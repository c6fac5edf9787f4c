"""Typed run configuration loaded from one TOML file (`uprnlink.toml`).

Secrets are referenced (environment variable names, key file paths), never stored here.
Relative paths are resolved against the config file's folder (the folder of the file named,
even when that file is a symbolic link). The contracts and the policy default to the copies
shipped inside the package (`uprnlink.resources`).
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.resources import default_policy_path, schemas_dir
from uprnlink.sources import sources_with

# The git checkout: only for what exists nowhere else (benchmarks, docs, prefect.yaml, tests).
# Package data (contracts, policy, templates) is found through `uprnlink.resources` instead.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


GROUP_PLACEHOLDER = "{group}"
"""In a column name, stands for a person group's tag (`P{group}_FORENAME` is `P1_FORENAME` for
group `1`): the column is read once per group, each group a person record of its own."""


@dataclass(frozen=True)
class ColumnMapping:
    """Where a canonical field comes from in a source file, and its date format if any.

    `parts` (two or more columns) make a composite value, such as a record key made of a
    tenancy reference and a household member number; `column` is then the first of them.
    """

    column: str
    formats: tuple[str, ...] = ()
    name_order: str | None = None  # a full-name column: "surname_first" or "forename_first"
    parts: tuple[str, ...] = ()
    from_rank: int | None = None  # an IMD rank column read as deciles of this many areas
    # With person groups: a column shared by the row that belongs to one group only (the
    # lead party's date of birth in a file with one DOB column); the other groups have none.
    group: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the field is read from (several for a composite value)."""
        return self.parts or (self.column,)

    @property
    def per_group(self) -> bool:
        """Whether the column is read once per person group (its name holds `{group}`)."""
        return any(GROUP_PLACEHOLDER in c for c in self.columns)


NAME_ORDERS = ("surname_first", "forename_first")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
"""Workbooks, read with `polars.read_excel` (`format = "excel"`)."""
ENCODING_AUTO = "auto"


@dataclass(frozen=True)
class SourceSettings:
    """One extract: its file, format and the mapping of its columns onto its contract."""

    name: str
    contract: str
    contract_version: int | None
    path: Path
    format: str
    delimiter: str
    encoding: str
    date_formats: tuple[str, ...]
    columns: dict[str, ColumnMapping]
    required: bool = True
    skip_lines: int = 0  # lines before the header (a report title, export notes)
    # Several people in one row: each tag names one (P1, P2; LEAD, JOINT; 1..6). Columns whose
    # name holds `{group}` are read once per tag; the others are shared by every group.
    person_groups: tuple[str, ...] = ()
    # Per coded field: local code (compared trimmed, case-insensitively) -> contract value;
    # "" means a known code with no contract value (null, not counted as unrecoded).
    recode: dict[str, dict[str, str]] = field(default_factory=dict)
    sheet: str | int | None = None  # a workbook's sheet: its name, or its number from 1

    def file_columns(self) -> list[str]:
        """Every column of the file the mapping reads, with each person group's own columns."""
        out: list[str] = []
        for mapping in self.columns.values():
            for column in mapping.columns:
                names = (
                    [column.replace(GROUP_PLACEHOLDER, tag) for tag in self.person_groups]
                    if GROUP_PLACEHOLDER in column
                    else [column]
                )
                out += [n for n in names if n not in out]
        return out

    def date_formats_for(self, field_name: str) -> list[str]:
        """Date formats to try for `field_name`: its own first, then the source default(s)."""
        own = self.columns[field_name].formats if field_name in self.columns else ()
        formats: list[str] = []
        for fmt in (*own, *self.date_formats):
            if fmt not in formats:
                formats.append(fmt)
        return formats


@dataclass(frozen=True)
class KeySettings:
    """Where a key comes from (never the key itself): its file, the environment variable holding
    the file's passphrase, or one holding the raw key from a secrets manager."""

    file: Path | None
    passphrase_env: str | None = "UPRNLINK_KEY_PASSPHRASE"
    key_env: str | None = "UPRNLINK_KEY"
    kind: str = "pseudonymisation"  # or "audit", "release" (uprnlink.privacy.keys)


#: Each key's table in the config, its kind, default file name (beside the pseudonymisation
#: key unless configured) and default environment variables.
KEY_TABLES = {
    "key": ("pseudonymisation", "uprnlink.key", "UPRNLINK_KEY_PASSPHRASE", "UPRNLINK_KEY"),
    "audit": ("audit", "audit.key", "UPRNLINK_AUDIT_PASSPHRASE", "UPRNLINK_AUDIT_KEY"),
    "release": ("release", "release.key", "UPRNLINK_RELEASE_PASSPHRASE", "UPRNLINK_RELEASE_KEY"),
}


@dataclass(frozen=True)
class ReleaseSettings:
    """How analyst-facing ids are made: the release key and the data-sharing project.

    Published person and household ids are keyed hashes of the internal ids under the release
    key and the project name, so each project sees its own ids (as SAIL's project-specific
    ids), stable from run to run, and nobody without the release key can reverse them.
    """

    key: KeySettings
    project: str


@dataclass(frozen=True)
class ServiceSettings:
    """The query service (`uprnlink serve`): where it listens, who may use it, its limits."""

    host: str = "127.0.0.1"
    port: int = 8765
    users_file: Path | None = None  # default: <work_dir>/service/users.json
    max_rows: int = 100_000
    timeout_seconds: float = 30.0
    workers: int = 4  # query worker processes (each checks and runs one query at a time)
    check_timeout_seconds: float = 5.0  # longest a query's check (parse, bind, plan) may take
    max_answer_mib: int = 64  # largest answer (Arrow data), refused while it streams
    url: str | None = None  # where clients reach it (default http://host:port)
    # What one user (a token, a portal session's token, else a source address) may take
    # (uprnlink.service.limits): a larger body is refused with 413 while it streams; beyond
    # these, 429 with Retry-After (every refusal counted in the audit log).
    max_body_kib: int = 64
    user_concurrency: int = 2  # requests of one user served at once
    user_queue: int = 4  # more of them waiting for a turn
    user_queue_seconds: float = 30.0  # longest wait for a turn
    user_rate_per_minute: int = 120  # token bucket: refill rate ...
    user_burst: int = 60  # ... and size
    workers_per_user: int | None = None  # query workers one user may hold (default workers - 1)
    failure_window_seconds: float = 60.0  # refused requests are counted per this window


@dataclass(frozen=True)
class AuditSettings:
    """Where the audit log's forward-sealing state and witnesses live (`[audit]`, beside the
    audit key's settings); how often they are written is policy (`[audit]` in the policy)."""

    seal_state: Path | None = None  # default: <work_dir>/audit/seal.state (owner-only)
    witness_file: Path | None = None  # an append-only file another account owns
    witness_syslog: str | None = None  # a syslog socket such as /dev/log (journald), or none


@dataclass(frozen=True)
class LinkageSettings:
    """How people are linked: backend, threshold and resource limits."""

    backend: str = "duckdb"  # or "spark" (needs the `spark` extra and Java 17)
    match_threshold: float = 0.95
    # "auto": cluster at the threshold the model's own probabilities give the best expected F1
    # (uprnlink.linkage.threshold), within [0.5, 0.999]; match_threshold is then only the fallback.
    # `match_threshold = "auto"` in the config file means the same (with 0.95 as the fallback).
    threshold_mode: str = "fixed"
    memory_limit: str = "8GB"  # DuckDB's cap (it spills to disk beyond it); Spark driver memory
    threads: int = 2
    max_pairs_u: float = 2e6  # random pairs for the u probabilities
    max_pairs_em: float = 1e6  # most blocked pairs each EM session trains on (a sample)
    predict_chunk_records: int = 3_000_000  # profiles per prediction slice (bounds memory)
    # Most profiles in one block of a prediction rule: a larger block is split by a further
    # identifier (uprnlink.linkage.blocking). 0: derived from the delivery's own profiles.
    block_cap: int = 0
    baselines: bool = True  # also link with deterministic and plain-Splink baselines to compare
    # Records that cannot be one person never share a cluster (uprnlink.linkage.constraints).
    cannot_link: bool = True
    # A lone record with no date of birth or NHS number joins the one person of its forename
    # at the same UPRN over an overlapping period (uprnlink.linkage.coresidence).
    coresidence: bool = True
    # Train on one DuckDB thread so the same inputs give bit-identical parameters (and people);
    # false trades that for speed (`make bench` measures the difference).
    repeatable_training: bool = True
    seed: int = 42
    spark_master: str | None = None  # e.g. "spark://host:7077"; default local[threads]
    spark_conf: dict[str, str] = field(default_factory=dict)  # extra SparkSession settings
    spark_dir: str | None = None  # Parquet exchange folder all Spark nodes see (cluster runs)


@dataclass(frozen=True)
class HouseholdSettings:
    """How residence is judged from the evidence of all sources (`[households]`; the rules are
    in `uprnlink.households.residence`, measured in docs/design.md)."""

    # A hospital attendance's address places the person for this many days after it.
    visit_days: int = 730
    # An open GP or care registration with no sign of life at its address for this many days
    # ends then (0: never; ~730 as in the ONS admin-based population estimates).
    stale_after_days: int = 0
    # Lasting accounts (council_tax, housing_tenancies, benefits_claims) whose start at another
    # address ends an open GP or care registration (empty: none).
    move_sources: tuple[str, ...] = ()
    # Rank sources by how often another confirms their address, for same-day conflicts.
    learned_reliability: bool = True
    # An adult known at an address only from GP, care or hospital records is not living there
    # when its open council tax account has a single person discount for someone else ...
    single_person_discount: bool = True
    # ... provided at least this share of the run's discounted accounts have nobody else with
    # an open account at their address (discounts recorded at random or not kept up are not).
    single_person_min_share: float = 0.85


@dataclass(frozen=True)
class RunSettings:
    """Everything a pipeline run needs to know, from one TOML file."""

    config_path: Path
    name: str
    landing_dir: Path
    work_dir: Path
    out_dir: Path
    schemas_dir: Path
    policy_path: Path
    reference_date: date
    service_period_months: int
    sources: dict[str, SourceSettings]
    reference: dict[str, SourceSettings]
    key: KeySettings
    audit_key: KeySettings
    release: ReleaseSettings
    linkage: LinkageSettings = field(default_factory=LinkageSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    households: HouseholdSettings = field(default_factory=HouseholdSettings)

    @property
    def users_file(self) -> Path:
        """The query service's users (names, roles, hashed tokens)."""
        return self.service.users_file or self.work_dir / "service" / "users.json"

    @property
    def service_url(self) -> str:
        """Where clients reach the query service."""
        return self.service.url or f"http://{self.service.host}:{self.service.port}"

    @property
    def trusted_dir(self) -> Path:
        """Engineer-only zone: pseudonymised tokens and linkage quasi-identifiers."""
        return self.work_dir / "trusted"

    @property
    def quarantine_dir(self) -> Path:
        """Restricted zone: rejected rows with their raw values and reasons."""
        return self.work_dir / "quarantine"

    @property
    def linked_dir(self) -> Path:
        """De-identified Parquet dataset for analysts."""
        return self.out_dir / "linked"

    @property
    def database_path(self) -> Path:
        """The analysts' DuckDB database (their views only; read by the query service)."""
        return self.out_dir / "uprnlink.duckdb"

    @property
    def engineer_database_path(self) -> Path:
        """The engineers' DuckDB database (every published table; owner-only)."""
        return self.out_dir / "engineer.duckdb"


_TOP_KEYS = {
    "run",
    "key",
    "audit",
    "release",
    "service",
    "linkage",
    "households",
    "sources",
    "reference",
}
_RUN_KEYS = {
    "name",
    "landing_dir",
    "work_dir",
    "out_dir",
    "schemas_dir",
    "policy",
    "reference_date",
    "service_period_months",
}
_SOURCE_KEYS = {
    "contract",
    "version",
    "path",
    "format",
    "delimiter",
    "encoding",
    "date_format",
    "columns",
    "required",
    "skip_lines",
    "person_groups",
    "recode",
    "sheet",
}
_COLUMN_KEYS = {"column", "format", "name_order", "from_rank", "group"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, path: Path) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {sorted(unknown)} in [{where}]; allowed: {sorted(allowed)}"
        )


def _path(base: Path, value: Any, where: str, config: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{config}: [{where}] needs a path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


EXCEL_DATE_FORMAT = "excel"
"""The date format of spreadsheet serial numbers (days since 1899-12-30)."""
# Spreadsheet and database notations for the parts of a date, longest first, and the strptime
# code each means: what people write when they mean %d/%m/%Y.
_NOTATION = (
    ("yyyy", "%Y"), ("yy", "%y"), ("mmmm", "%B"), ("mmm", "%b"), ("mon", "%b"),
    ("mm", "%m"), ("dd", "%d"), ("hh24", "%H"), ("hh", "%H"), ("mi", "%M"), ("ss", "%S"),
)  # fmt: skip


def strptime_equivalent(notation: str) -> str | None:
    """The strptime format meant by a date written in spreadsheet notation (`dd/mm/yyyy` is
    `%d/%m/%Y`), or None when it is not one."""
    out, i, text = "", 0, notation
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):  # a strptime code already: kept
            out, i = out + text[i : i + 2], i + 2
            continue
        for word, code in _NOTATION:
            if text[i : i + len(word)].lower() == word:
                out, i = out + code, i + len(word)
                break
        else:
            if text[i].isalpha():
                return None
            out, i = out + text[i].replace("%", "%%"), i + 1
    return out if "%" in out else None


def check_date_format(fmt: str, where: str, config: Path) -> str:
    """A date format must be strptime codes (`%d/%m/%Y`) or "excel": `dd/mm/yyyy` would match
    no date at all and quarantine every row, so it is refused with the equivalent."""
    if fmt == EXCEL_DATE_FORMAT:
        return fmt
    bare = re.sub(r"%[-#]?[A-Za-z%]", "", fmt)
    if "%" in fmt and not re.search(r"[dDmMyY]{2}", bare):
        return fmt
    hint = strptime_equivalent(fmt)
    suggestion = f": write {hint!r}" if hint else ' (for example "%d/%m/%Y" for 31/01/1980)'
    raise ConfigError(
        f"{config}: [{where}] date format {fmt!r} is not a strptime format{suggestion}, or "
        '"excel" for spreadsheet serial numbers'
    )


def _formats(value: Any, where: str, config: Path) -> tuple[str, ...]:
    """One strptime format or a list of them, tried in order (for extracts with mixed formats)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (check_date_format(value, where, config),)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(check_date_format(v, where, config) for v in value)
    raise ConfigError(f"{config}: [{where}] date format must be a string or a list of strings")


def _source(
    name: str, raw: dict[str, Any], landing: Path, config: Path, table: str
) -> SourceSettings:
    where = f"{table}.{name}"
    _check_keys(raw, _SOURCE_KEYS, where, config)
    if "path" not in raw:
        raise ConfigError(f"{config}: [{where}] needs path (the extract file)")
    if "columns" not in raw or not isinstance(raw["columns"], dict):
        raise ConfigError(
            f"{config}: [{where}.columns] is missing: map each contract field to the file's column"
        )
    columns = {
        fname: _column_mapping(fname, spec, f"{where}.columns", config)
        for fname, spec in raw["columns"].items()
    }
    groups = _person_groups(raw.get("person_groups"), where, config)
    per_group = sorted(f for f, m in columns.items() if m.per_group)
    if groups and not per_group:
        raise ConfigError(
            f"{config}: [{where}] person_groups is set but no column name holds "
            f'{GROUP_PLACEHOLDER} (for example forename = "P{GROUP_PLACEHOLDER}_FORENAME")'
        )
    if per_group and not groups:
        raise ConfigError(
            f"{config}: [{where}.columns] {per_group[0]} holds {GROUP_PLACEHOLDER} but the source "
            'has no person_groups (for example person_groups = ["1", "2"])'
        )
    for fname, m in columns.items():
        if m.group is None:
            continue
        if m.group not in groups:
            raise ConfigError(
                f"{config}: [{where}.columns] {fname}: group = {m.group!r} is not one of the "
                f"source's person_groups ({', '.join(groups) or 'none'})"
            )
        if m.per_group:
            raise ConfigError(
                f"{config}: [{where}.columns] {fname}: a {GROUP_PLACEHOLDER} column is read for "
                "every group already; group = ... is for a shared column that is one group's"
            )
    recode = _recode(raw.get("recode", {}), where, config)
    for key, kind in (("delimiter", str), ("encoding", str), ("contract", str), ("format", str)):
        if key in raw and not isinstance(raw[key], kind):
            raise ConfigError(f"{config}: [{where}] {key} must be a string")
    for key in ("required",):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{config}: [{where}] {key} must be true or false")
    if "version" in raw and (
        isinstance(raw["version"], bool) or not isinstance(raw["version"], int)
    ):
        raise ConfigError(f"{config}: [{where}] version must be a whole number (the major version)")
    path = _path(landing, raw["path"], where, config)
    suffix = path.suffix.lower()
    by_suffix = (
        "parquet" if suffix == ".parquet" else "excel" if suffix in EXCEL_SUFFIXES else "csv"
    )
    fmt = str(raw.get("format") or by_suffix)
    if fmt not in {"csv", "parquet", "excel"}:
        raise ConfigError(f"{config}: [{where}] format must be csv, excel or parquet, not {fmt!r}")
    sheet = raw.get("sheet")
    if sheet is not None:
        if fmt != "excel":
            raise ConfigError(f'{config}: [{where}] sheet is for a workbook (format = "excel")')
        if isinstance(sheet, bool) or not isinstance(sheet, str | int) or sheet == "":
            raise ConfigError(
                f"{config}: [{where}] sheet must be a sheet's name or its number (1 = the first)"
            )
    version = raw.get("version")
    skip = raw.get("skip_lines", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ConfigError(f"{config}: [{where}] skip_lines must be a whole number >= 0")
    return SourceSettings(
        name=name,
        contract=str(raw.get("contract", name)),
        contract_version=int(version) if version is not None else None,
        path=path,
        format=fmt,
        delimiter=str(raw.get("delimiter", ",")),
        encoding=str(raw.get("encoding", "utf8")),
        date_formats=_formats(raw.get("date_format"), where, config),
        columns=columns,
        required=bool(raw.get("required", True)),
        skip_lines=skip,
        person_groups=groups,
        recode=recode,
        sheet=sheet,
    )


def _column_mapping(fname: str, spec: Any, where: str, config: Path) -> ColumnMapping:
    """One field's mapping: a column name, a list of columns (a composite value), or a table
    `{ column = ..., format = ..., name_order = ..., from_rank = ... }`."""
    if isinstance(spec, str | list):
        spec = {"column": spec}
    if not isinstance(spec, dict) or "column" not in spec:
        raise ConfigError(
            f"{config}: [{where}] {fname} must be a column name, a list of column names or "
            "{ column = ..., format = ... }"
        )
    _check_keys(spec, _COLUMN_KEYS, f"{where}.{fname}", config)
    column = spec["column"]
    parts: tuple[str, ...] = ()
    if isinstance(column, list):
        if len(column) < 2 or not all(isinstance(c, str) and c for c in column):
            raise ConfigError(
                f"{config}: [{where}] {fname}: a composite value needs two or more column names"
            )
        if len(set(column)) != len(column):
            raise ConfigError(f"{config}: [{where}] {fname}: a column is named twice")
        parts = tuple(column)
        column = column[0]
    if not isinstance(column, str) or not column:
        raise ConfigError(f"{config}: [{where}] {fname}: column must be a column name")
    order = spec.get("name_order")
    if order is not None and order not in NAME_ORDERS:
        raise ConfigError(
            f"{config}: [{where}] {fname}: name_order must be one of {', '.join(NAME_ORDERS)}"
        )
    rank = spec.get("from_rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 10):
        raise ConfigError(
            f"{config}: [{where}] {fname}: from_rank must be the number of areas ranked "
            "(a whole number, 10 or more)"
        )
    group = spec.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, str | int)):
        raise ConfigError(f"{config}: [{where}] {fname}: group must be one person group's tag")
    return ColumnMapping(
        column,
        _formats(spec.get("format"), f"{where}.{fname}", config),
        order,
        parts,
        rank,
        None if group is None else str(group),
    )


def _person_groups(value: Any, where: str, config: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(
            f"{config}: [{where}] person_groups must list two or more group tags "
            '(for example ["P1", "P2"] or ["1", "2", "3"])'
        )
    tags = tuple(str(v) for v in value)
    if len(set(tags)) != len(tags) or not all(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _-]{0,19}", t) for t in tags
    ):
        raise ConfigError(
            f"{config}: [{where}] person_groups: each tag must be unique, 1-20 letters, digits, "
            "spaces, '_' or '-'"
        )
    return tags


def _recode(value: Any, where: str, config: Path) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{config}: [{where}.recode] must be a table of fields")
    out: dict[str, dict[str, str]] = {}
    for fname, table in value.items():
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise ConfigError(
                f"{config}: [{where}.recode.{fname}] must map each local code to a contract "
                'value, for example "A&E attendance" = "AE"'
            )
        out[fname] = dict(table)
    return out


def read_toml(
    path: Path, what: str = "config file", error: type[UprnlinkError] = ConfigError
) -> dict[str, Any]:
    """A TOML file (a run configuration or the governance policy) as a dict; a missing or
    malformed file is `error` naming `what` and the path."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


POLICY_SECTIONS = frozenset(
    {
        "disclosure",
        "outputs",
        "retention",
        "deliveries",
        "roles",
        "audit",
        "key",
        "tables",
        "output_checking",
    }
)
"""The governance policy's sections; each is read by its own zone's reader."""


def read_policy_file(path: Path, error: type[UprnlinkError] = ConfigError) -> dict[str, Any]:
    """The governance policy as a dict, read and parsed once per version of the file (every
    section's reader, and the service's several, share it), with an unknown section refused
    by name: a misspelt `[table]` would otherwise leave `[tables]`' defaults in force."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise error(f"governance policy not found: {path}") from None
    try:
        raw = _parsed_policy(str(resolved), stat.st_mtime_ns, stat.st_size)
    except ConfigError as exc:
        raise error(str(exc)) from None
    unknown = sorted(set(raw) - POLICY_SECTIONS)
    if unknown:
        raise error(
            f"{path}: unknown section [{unknown[0]}] (sections: "
            f"{', '.join(sorted(POLICY_SECTIONS))})"
        )
    return copy.deepcopy(raw)


@functools.lru_cache(maxsize=8)
def _parsed_policy(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    del mtime_ns, size  # the cache key: a changed file is read again
    return read_toml(Path(path), "governance policy")


def _key_settings(
    raw: dict[str, Any],
    table: str,
    base: Path,
    config: Path,
    beside: Path | None,
    extra: set[str] | None = None,
) -> KeySettings:
    """One key's settings; an unset file lies beside the pseudonymisation key (`beside`)."""
    kind, default_name, passphrase_env, key_env = KEY_TABLES[table]
    spec = raw.get(table, {})
    if not isinstance(spec, dict):
        raise ConfigError(f"{config}: [{table}] must be a table")
    _check_keys(spec, {"file", "passphrase_env", "key_env", *(extra or set())}, table, config)
    for name in ("passphrase_env", "key_env"):
        if name in spec and not isinstance(spec[name], str):
            raise ConfigError(f"{config}: [{table}] {name} must be an environment variable name")
    if "file" in spec:
        file: Path | None = _path(base, spec["file"], f"{table}.file", config)
    else:
        file = beside.with_name(default_name) if beside is not None else None
    return KeySettings(
        file=file,
        passphrase_env=spec.get("passphrase_env", passphrase_env),
        key_env=spec.get("key_env", key_env),
        kind=kind,
    )


def _service_settings(raw: Any, base: Path, config: Path) -> ServiceSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: [service] must be a table")
    allowed = {f.name for f in fields(ServiceSettings)}
    _check_keys(raw, allowed, "service", config)
    values: dict[str, Any] = {}
    for name, kind in (("host", str), ("url", str)):
        if name in raw:
            if not isinstance(raw[name], kind) or not raw[name]:
                raise ConfigError(f"{config}: [service] {name} must be a non-empty string")
            values[name] = raw[name]
    for name in (
        "port",
        "max_rows",
        "workers",
        "max_answer_mib",
        "max_body_kib",
        "user_concurrency",
        "user_rate_per_minute",
        "user_burst",
        "workers_per_user",
    ):
        if name in raw:
            if isinstance(raw[name], bool) or not isinstance(raw[name], int) or raw[name] < 1:
                raise ConfigError(f"{config}: [service] {name} must be a positive whole number")
            values[name] = raw[name]
    if "user_queue" in raw:
        q = raw["user_queue"]
        if isinstance(q, bool) or not isinstance(q, int) or q < 0:
            raise ConfigError(f"{config}: [service] user_queue must be a whole number >= 0")
        values["user_queue"] = q
    for name in (
        "timeout_seconds",
        "check_timeout_seconds",
        "user_queue_seconds",
        "failure_window_seconds",
    ):
        if name in raw:
            t = raw[name]
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 3600:
                raise ConfigError(f"{config}: [service] {name} must be between 0 and 3600")
            values[name] = float(t)
    if "users_file" in raw:
        values["users_file"] = _path(base, raw["users_file"], "service.users_file", config)
    return ServiceSettings(**values)


_AUDIT_EXTRA = {"seal_state", "witness_file", "witness_syslog"}


def _audit_settings(raw: Any, base: Path, config: Path) -> AuditSettings:
    """The sealing state and witness sinks named in `[audit]` (its key settings are read by
    `_key_settings`)."""
    spec = raw.get("audit", {}) if isinstance(raw, dict) else {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{config}: [audit] must be a table")
    values: dict[str, Any] = {}
    for name in ("seal_state", "witness_file"):
        if name in spec:
            values[name] = _path(base, spec[name], f"audit.{name}", config)
    if "witness_syslog" in spec:
        sink = spec["witness_syslog"]
        if sink is True:
            values["witness_syslog"] = "/dev/log"
        elif sink is False:
            values["witness_syslog"] = None
        elif isinstance(sink, str) and sink:
            values["witness_syslog"] = sink
        else:
            raise ConfigError(
                f"{config}: [audit] witness_syslog must be true, false or a socket path"
            )
    return AuditSettings(**values)


def _typed(kind: type[_T], raw: dict[str, Any], where: str, config: Path) -> _T:
    """A settings dataclass from a config table, each value checked against its declared type
    (pydantic, strict: "0.95" is not a number); the first mismatch is a ConfigError naming
    the table, the setting and the type expected (never the value)."""
    from pydantic import ConfigDict, ValidationError, create_model

    hints = get_type_hints(kind)
    model = create_model(  # type: ignore[call-overload]
        kind.__name__,
        __config__=ConfigDict(strict=True, extra="forbid"),
        **{
            f.name: (
                hints[f.name],
                f.default if f.default is not MISSING else f.default_factory(),  # type: ignore[operator]
            )
            for f in fields(kind)  # type: ignore[arg-type]
        },
    )
    try:
        return kind(**dict(model.model_validate(raw)))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(p) for p in first["loc"]) or where
        found = type(raw.get(str(first["loc"][0]))).__name__ if first["loc"] else "?"
        raise ConfigError(
            f"{config}: [{where}] {name}: {first['msg'].lower()} (found a {_TYPE_WORDS.get(found, found)})"
        ) from None


def _whole(value: Any, where: str, config: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{config}: [{where}] service_period_months must be a whole number >= 1")
    return value


_TYPE_WORDS = {"str": "string", "int": "whole number", "float": "number", "bool": "true/false"}
_T = TypeVar("_T")


def _auto_threshold(link_raw: dict[str, Any], config_path: Path) -> dict[str, Any]:
    """`match_threshold = "auto"` is `threshold_mode = "auto"` (the threshold chosen from the
    model's own probabilities, uprnlink.linkage.threshold) with the default as the fallback."""
    if link_raw.get("match_threshold") != "auto":
        return link_raw
    if link_raw.get("threshold_mode", "auto") != "auto":
        raise ConfigError(
            f'{config_path}: [linkage] match_threshold = "auto" contradicts threshold_mode'
        )
    rest = {k: v for k, v in link_raw.items() if k != "match_threshold"}
    return {**rest, "threshold_mode": "auto"}


def read_settings(config_path: Path) -> RunSettings:
    """Load and check a run configuration file."""
    named = Path(config_path).expanduser()
    # The folder is resolved but the file itself is not: a config that is a link (the checkout's
    # config/demo.toml) keeps its relative paths relative to where the link is.
    config_path = named.parent.resolve() / named.name
    raw = read_toml(config_path)
    _check_keys(raw, _TOP_KEYS, "top level", config_path)
    base = config_path.parent
    run = raw.get("run", {})
    _check_keys(run, _RUN_KEYS, "run", config_path)
    for needed in ("landing_dir", "work_dir", "out_dir", "reference_date"):
        if needed not in run:
            raise ConfigError(f"{config_path}: [run] needs {needed}")
    landing = _path(base, run["landing_dir"], "run.landing_dir", config_path)
    ref_date = run["reference_date"]
    if isinstance(ref_date, str):
        try:
            ref_date = date.fromisoformat(ref_date)
        except ValueError:
            raise ConfigError(f"{config_path}: [run] reference_date must be YYYY-MM-DD") from None
    if not isinstance(ref_date, date):
        raise ConfigError(f"{config_path}: [run] reference_date must be a date")

    sources_raw = raw.get("sources", {})
    if not sources_raw:
        raise ConfigError(f"{config_path}: no [sources.*] tables: name at least one extract")
    sources = {n: _source(n, s, landing, config_path, "sources") for n, s in sources_raw.items()}
    reference = {
        n: _source(n, s, landing, config_path, "reference")
        for n, s in raw.get("reference", {}).items()
    }
    key = _key_settings(raw, "key", base, config_path, None)
    audit_key = _key_settings(raw, "audit", base, config_path, key.file, extra=_AUDIT_EXTRA)
    audit = _audit_settings(raw, base, config_path)
    release_raw = raw.get("release", {})
    project = release_raw.get("project", run.get("name", config_path.stem))
    if not isinstance(project, str) or not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", project
    ):
        raise ConfigError(
            f"{config_path}: [release] project must be 1-64 letters, digits, '.', '_' or '-'"
        )
    release = ReleaseSettings(
        key=_key_settings(raw, "release", base, config_path, key.file, extra={"project"}),
        project=project,
    )
    service = _service_settings(raw.get("service", {}), base, config_path)
    link_raw = raw.get("linkage", {})
    _check_keys(link_raw, {f.name for f in fields(LinkageSettings)}, "linkage", config_path)
    if not isinstance(link_raw.get("spark_conf", {}), dict):
        raise ConfigError(f"{config_path}: [linkage.spark_conf] must be a table of settings")
    link_raw = {
        **link_raw,
        "spark_conf": {str(k): str(v) for k, v in link_raw.get("spark_conf", {}).items()},
    }
    link_raw = _auto_threshold(link_raw, config_path)
    linkage = _typed(LinkageSettings, link_raw, "linkage", config_path)
    if linkage.backend not in {"duckdb", "spark"}:
        raise ConfigError(f"{config_path}: [linkage] backend must be duckdb or spark")
    if not 0.0 < linkage.match_threshold < 1.0:
        raise ConfigError(f"{config_path}: [linkage] match_threshold must be between 0 and 1")
    if linkage.threshold_mode not in {"fixed", "auto"}:
        raise ConfigError(f"{config_path}: [linkage] threshold_mode must be fixed or auto")
    if linkage.predict_chunk_records < 1:
        raise ConfigError(f"{config_path}: [linkage] predict_chunk_records must be positive")
    if linkage.block_cap < 0 or linkage.block_cap == 1:
        raise ConfigError(f"{config_path}: [linkage] block_cap must be 0 (derived) or at least 2")
    households = _household_settings(raw.get("households", {}), config_path)
    return RunSettings(
        config_path=config_path,
        name=str(run.get("name", config_path.stem)),
        landing_dir=landing,
        work_dir=_path(base, run["work_dir"], "run.work_dir", config_path),
        out_dir=_path(base, run["out_dir"], "run.out_dir", config_path),
        schemas_dir=_path(base, run["schemas_dir"], "run.schemas_dir", config_path)
        if "schemas_dir" in run
        else schemas_dir(),
        policy_path=_path(base, run["policy"], "run.policy", config_path)
        if "policy" in run
        else default_policy_path(),
        reference_date=ref_date,
        service_period_months=_whole(run.get("service_period_months", 12), "run", config_path),
        sources=sources,
        reference=reference,
        key=key,
        audit_key=audit_key,
        release=release,
        linkage=linkage,
        service=service,
        audit=audit,
        households=households,
    )


def _household_settings(raw: Any, config: Path) -> HouseholdSettings:
    """The `[households]` table, typed and checked (each error names the setting and rule)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: [households] must be a table")
    _check_keys(raw, {f.name for f in fields(HouseholdSettings)}, "households", config)
    moves = raw.get("move_sources", [])
    if not isinstance(moves, list):
        raise ConfigError(f"{config}: [households] move_sources must be a list of source names")
    typed = _typed(HouseholdSettings, {**raw, "move_sources": tuple(moves)}, "households", config)
    if typed.visit_days < 1:
        raise ConfigError(f"{config}: [households] visit_days must be a whole number >= 1")
    if not 0.0 <= typed.single_person_min_share <= 1.0:
        raise ConfigError(f"{config}: [households] single_person_min_share must be between 0 and 1")
    if typed.stale_after_days < 0:
        raise ConfigError(f"{config}: [households] stale_after_days must be >= 0 (0: never stale)")
    lasting = [s for s in sources_with("residence") if s not in sources_with("open_list")]
    for name in typed.move_sources:
        if name not in lasting:
            raise ConfigError(
                f"{config}: [households] move_sources: {name!r} is not a lasting account "
                f"source; choose from {lasting}"
            )
    return typed
