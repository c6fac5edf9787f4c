"""Typed run configuration loaded from one TOML file (`uprnlink.toml`).

One pydantic model of the file (`_ConfigFile`: a strict model per table, unknown settings
refused by name) is validated once per version of the file and resolved into `RunSettings`;
each setting's declared type and bounds give the one-line error that names the file, the table
and the setting (`validation_message`), never its value.

Secrets are referenced (environment variable names, key file paths), never stored here.
Relative paths are resolved against the config file's folder (the folder of the file named,
even when that file is a symbolic link). The contracts and the policy default to the copies
shipped inside the package (`uprnlink.resources`).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo

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


NameOrder = Literal["surname_first", "forename_first"]  # a full-name column's order
NAME_ORDERS: tuple[str, ...] = get_args(NameOrder)
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


# ------------------------------------------------------------------ the config's value types
# Each setting's type says what it may be; the rule an error names is read from it
# (`validation_message`), so a type, its bounds and its error are declared once.


def _resolved_path(value: Any, info: ValidationInfo) -> Any:
    """A path as written in the config file, resolved against the file's folder."""
    if not isinstance(value, str):
        return value
    if not value:
        raise ValueError("must be a path, not empty")
    base = (info.context or {}).get("base")
    return _resolve(base, value) if isinstance(base, Path) else Path(value)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _listed(value: Any) -> Any:
    """One value or a TOML list of them, as a tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _tag(value: Any) -> Any:
    """A person group's tag: written as a string or a whole number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


PositiveWhole = Annotated[StrictInt, Field(ge=1)]
NonNegativeWhole = Annotated[StrictInt, Field(ge=0)]
Seconds = Annotated[StrictFloat, Field(gt=0, le=3600)]
Share = Annotated[StrictFloat, Field(ge=0, le=1)]
Text = Annotated[StrictStr, Field(min_length=1)]
EnvName = Annotated[StrictStr, Field(min_length=1, description="an environment variable name")]
ConfigPath = Annotated[Path, BeforeValidator(_resolved_path)]
"""A path in the config file: relative paths are relative to the file's folder."""


@dataclass(frozen=True)
class ServiceSettings:
    """The query service (`uprnlink serve`): where it listens, who may use it, its limits."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    host: Text = "127.0.0.1"
    port: PositiveWhole = 8765
    users_file: ConfigPath | None = None  # default: <work_dir>/service/users.json
    max_rows: PositiveWhole = 100_000
    timeout_seconds: Seconds = 30.0
    workers: PositiveWhole = 4  # query worker processes (each checks and runs one query at a time)
    check_timeout_seconds: Seconds = 5.0  # longest a query's check (parse, bind, plan) may take
    max_answer_mib: PositiveWhole = 64  # largest answer (Arrow data), refused while it streams
    url: Text | None = None  # where clients reach it (default http://host:port)
    # What one user (a token, a portal session's token, else a source address) may take
    # (uprnlink.service.limits): a larger body is refused with 413 while it streams; beyond
    # these, 429 with Retry-After (every refusal counted in the audit log).
    max_body_kib: PositiveWhole = 64
    user_concurrency: PositiveWhole = 2  # requests of one user served at once
    user_queue: NonNegativeWhole = 4  # more of them waiting for a turn
    user_queue_seconds: Seconds = 30.0  # longest wait for a turn
    user_rate_per_minute: PositiveWhole = 120  # token bucket: refill rate ...
    user_burst: PositiveWhole = 60  # ... and size
    workers_per_user: PositiveWhole | None = (
        None  # query workers one user may hold (default workers - 1)
    )
    failure_window_seconds: Seconds = 60.0  # refused requests are counted per this window


@dataclass(frozen=True)
class AuditSettings:
    """Where the audit log's forward-sealing state and witnesses live (`[audit]`, beside the
    audit key's settings); how often they are written is policy (`[audit]` in the policy)."""

    seal_state: Path | None = None  # default: <work_dir>/audit/seal.state (owner-only)
    witness_file: Path | None = None  # an append-only file another account owns
    witness_syslog: str | None = None  # a syslog socket such as /dev/log (journald), or none


def _auto_threshold(linkage: Any) -> Any:
    """`match_threshold = "auto"` is `threshold_mode = "auto"` (the threshold chosen from the
    model's own probabilities, uprnlink.linkage.threshold) with the default as the fallback."""
    if not isinstance(linkage, dict) or linkage.get("match_threshold") != "auto":
        return linkage
    if linkage.get("threshold_mode", "auto") != "auto":
        raise ValueError('match_threshold = "auto" contradicts threshold_mode')
    rest = {k: v for k, v in linkage.items() if k != "match_threshold"}
    return {**rest, "threshold_mode": "auto"}


def _text_table(value: Any) -> Any:
    """Spark settings: any TOML values, passed to Spark as text."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


@dataclass(frozen=True)
class LinkageSettings:
    """How people are linked: backend, threshold and resource limits."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    backend: Literal["duckdb", "spark"] = "duckdb"  # spark needs the `spark` extra and Java 17
    match_threshold: Annotated[StrictFloat, Field(gt=0, lt=1)] = 0.95
    # "auto": cluster at the threshold the model's own probabilities give the best expected F1
    # (uprnlink.linkage.threshold), within [0.5, 0.999]; match_threshold is then only the fallback.
    # `match_threshold = "auto"` in the config file means the same (with 0.95 as the fallback).
    threshold_mode: Literal["fixed", "auto"] = "fixed"
    # Reviewers' labels in training (uprnlink.linkage.review): "m" adds Splink's m from the
    # match labels as one more training session (each level's m is the median of the
    # sessions'); "threshold" moves the clustering threshold, within REVIEW_BAND_BITS, to where
    # it best separates the near-threshold labels; "off" uses them only as must-link and
    # cannot-link evidence.
    train_from_labels: Literal["off", "m", "threshold"] = "off"
    # DuckDB's cap (it spills to disk beyond it), for linkage and publishing; Spark driver memory.
    # 4GB keeps a 5M-record run within 6 GiB at no cost in time (8GB: 6.5 GiB); at 15M scoring
    # spills (232 s against 168-205 s) while the run's peak stays in publishing's polars frames.
    memory_limit: Text = "4GB"
    threads: PositiveWhole = 2
    max_pairs_u: Annotated[StrictFloat, Field(gt=0)] = 2e6  # random pairs for the u probabilities
    # Most blocked pairs each EM session trains on (a sample).
    max_pairs_em: Annotated[StrictFloat, Field(gt=0)] = 1e6
    # Most records training reads: a larger delivery trains on a fixed sample of this many
    # (chosen by a hash of the record key, so the same records each run); 0: all records.
    max_training_records: Annotated[StrictInt, Field(ge=0)] = 1_000_000
    # Profiles scored per prediction slice, each slice blocked against all of them. DuckDB's
    # memory_limit bounds scoring's memory (it spills beyond it), so a slice costs time, not
    # memory: at 13.2M profiles one slice scored in 184 s against 335 s for five.
    predict_chunk_records: PositiveWhole = 20_000_000
    # Most profiles in one block of a prediction rule: a larger block is split by a further
    # identifier (uprnlink.linkage.blocking). 0: derived from the delivery's own profiles.
    block_cap: Annotated[StrictInt, AfterValidator(_block_cap)] = 0
    # Candidate pairs per record the prediction rules may make in all: over it, the caps of the
    # rules whose blocks grow with the population are lowered (uprnlink.linkage.blocking).
    # 0 (the default): no budget, blocks capped only. Planning lists every rule pair before
    # prediction (about 7 s at 1M records on 2 cores, about what the pairs it saves cost to
    # score; about a minute at 5M), and where blocks stay over the cap after every refiner,
    # meeting it takes the growing rules' caps down to 2 and loses true pairs.
    pair_budget: Annotated[StrictFloat, Field(ge=0)] = 0.0
    baselines: StrictBool = (
        True  # also link with deterministic and plain-Splink baselines to compare
    )
    # A record without a UPRN takes the UPRN of the one address in the delivery written the same
    # way at its postcode, for linkage and the household rules (uprnlink.ingest.addresses).
    match_addresses: StrictBool = True
    # Records that cannot be one person never share a cluster (uprnlink.linkage.constraints).
    cannot_link: StrictBool = True
    # A lone record with no date of birth or NHS number joins the one person of its forename
    # at the same UPRN over an overlapping period (uprnlink.linkage.coresidence).
    coresidence: StrictBool = True
    # Then a lone record with no date of birth or NHS number joins the one person of its forename
    # and surname whose stay at another address begins as its own ends (or ends as it begins),
    # or who lived elsewhere with a co-party of its account (uprnlink.linkage.coresidence).
    coresidence_moves: StrictBool = True
    # Train on one DuckDB thread so the same inputs give bit-identical parameters (and people);
    # false trades that for speed (`make bench` measures the difference).
    repeatable_training: StrictBool = True
    # A delivery with at most this share of new identifier profiles scores only their pairs and
    # reuses the last link's (uprnlink.linkage.incremental); 0: always a full link.
    incremental_max_new: Share = 0.3
    seed: StrictInt = 42
    spark_master: Text | None = None  # e.g. "spark://host:7077"; default local[threads]
    # Extra SparkSession settings.
    spark_conf: Annotated[
        dict[str, str], BeforeValidator(_text_table), Field(description="a table of settings")
    ] = field(default_factory=dict)
    spark_dir: Text | None = None  # Parquet exchange folder all Spark nodes see (cluster runs)


def _block_cap(cap: int) -> int:
    """A block of one profile has no pair: a cap is 0 (derived from the data) or at least 2."""
    if cap < 0 or cap == 1:
        raise ValueError("must be 0 (derived) or at least 2")
    return cap


def _lasting_sources(names: tuple[str, ...]) -> tuple[str, ...]:
    """Only sources whose accounts last (not open lists, not visits) can end a registration."""
    lasting = [s for s in sources_with("residence") if s not in sources_with("open_list")]
    for name in names:
        if name not in lasting:
            raise ValueError(f"{name!r} is not a lasting account source; choose from {lasting}")
    return names


@dataclass(frozen=True)
class HouseholdSettings:
    """How residence is judged from the evidence of all sources (`[households]`; the rules are
    in `uprnlink.households.residence`, measured in docs/design.md)."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    # A hospital attendance's address places the person for this many days after it.
    visit_days: PositiveWhole = 730
    # An open GP or care registration with no sign of life at its address for this many days
    # ends then (0: never; ~730 as in the ONS admin-based population estimates).
    stale_after_days: NonNegativeWhole = 0
    # Lasting accounts (council_tax, housing_tenancies, benefits_claims) whose start at another
    # address ends an open GP or care registration (empty: none).
    move_sources: Annotated[
        tuple[StrictStr, ...],
        AfterValidator(_lasting_sources),
        Field(description="a list of source names"),
    ] = ()
    # Rank sources by how often another confirms their address, for same-day conflicts.
    learned_reliability: StrictBool = True
    # An adult known at an address only from GP, care or hospital records is not living there
    # when its open council tax account has a single person discount for someone else ...
    single_person_discount: StrictBool = True
    # ... provided at least this share of the run's discounted accounts have nobody else with
    # an open account at their address (discounts recorded at random or not kept up are not).
    single_person_min_share: Share = 0.85
    # A council tax party's stays at an address end when a later account there (another
    # account reference) names someone another source also records at the address.
    superseded_accounts: StrictBool = True
    # A residential or nursing care package (adult social care's support_setting) places the
    # person in a care home, not at the private address the record may still carry.
    care_homes: StrictBool = True


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


def check_date_format(fmt: str) -> str:
    """A date format must be strptime codes (`%d/%m/%Y`) or "excel": `dd/mm/yyyy` would match
    no date at all and quarantine every row, so it is refused (ValueError) with the equivalent."""
    if fmt == EXCEL_DATE_FORMAT:
        return fmt
    bare = re.sub(r"%[-#]?[A-Za-z%]", "", fmt)
    if "%" in fmt and not re.search(r"[dDmMyY]{2}", bare):
        return fmt
    hint = strptime_equivalent(fmt)
    suggestion = f": write {hint!r}" if hint else ' (for example "%d/%m/%Y" for 31/01/1980)'
    raise ValueError(
        f"date format {fmt!r} is not a strptime format{suggestion}, or "
        '"excel" for spreadsheet serial numbers'
    )


DateFormats = Annotated[
    tuple[Annotated[StrictStr, AfterValidator(check_date_format)], ...],
    BeforeValidator(_listed),
    Field(description='a date format (such as "%d/%m/%Y", or "excel") or a list of them'),
]
"""One strptime format or a list of them, tried in order (for extracts with mixed formats)."""


def _column_table(value: Any) -> Any:
    """A field's mapping written as a column name or a list of them: its table form."""
    return {"column": value} if isinstance(value, str | list) else value


def _column_names(value: Any) -> Any:
    """One column, or two or more making a composite value (each named once)."""
    if isinstance(value, list):
        if len(value) < 2:
            raise ValueError("a composite value needs two or more column names")
        if len(set(map(str, value))) != len(value):
            raise ValueError("a column is named twice")
    return _listed(value)


def _person_groups(value: Any) -> Any:
    tags = tuple(_tag(v) for v in value) if isinstance(value, list) else value
    if isinstance(tags, tuple) and len(set(tags)) != len(tags):
        raise ValueError("each tag must be unique")
    return tags


class _Table(BaseModel):
    """A table of the config file: strict types (a number is not a string), unknown settings
    refused by name."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _ColumnTable(_Table):
    """`{ column = ..., format = ..., name_order = ..., from_rank = ..., group = ... }`."""

    column: Annotated[tuple[Text, ...], BeforeValidator(_column_names)]
    format: DateFormats = ()
    name_order: NameOrder | None = None
    from_rank: (
        Annotated[
            StrictInt,
            Field(ge=10, description="the number of areas ranked (a whole number, 10 or more)"),
        ]
        | None
    ) = None
    group: (
        Annotated[Text, BeforeValidator(_tag), Field(description="one person group's tag")] | None
    ) = None


ColumnSpec = Annotated[
    _ColumnTable,
    BeforeValidator(_column_table),
    Field(description="a column name, a list of column names or { column = ..., format = ... }"),
]
GroupTag = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,19}$")]


def _format_of(written: str | None, path: str) -> str:
    """The extract's format: as written, else from the file's suffix."""
    suffix = Path(path).suffix.lower()
    by_suffix = (
        "parquet" if suffix == ".parquet" else "excel" if suffix in EXCEL_SUFFIXES else "csv"
    )
    return written or by_suffix


class _SourceTable(_Table):
    """`[sources.<name>]` or `[reference.<name>]`: one extract and its mapping."""

    contract: Text | None = None
    version: (
        Annotated[StrictInt, Field(description="a whole number (the contract's major version)")]
        | None
    ) = None
    path: Annotated[Text, Field(description="the extract file's path")]
    format: Literal["csv", "excel", "parquet"] | None = None
    delimiter: StrictStr = ","
    encoding: StrictStr = "utf8"
    date_format: DateFormats = ()
    columns: Annotated[
        dict[str, ColumnSpec], Field(description="map each contract field to the file's column")
    ]
    required: StrictBool = True
    skip_lines: NonNegativeWhole = 0
    person_groups: Annotated[
        tuple[GroupTag, ...],
        BeforeValidator(_person_groups),
        Field(
            min_length=2,
            description="two or more unique group tags of 1-20 letters, digits, spaces, '_' or "
            '\'-\' (for example ["P1", "P2"] or ["1", "2", "3"])',
        ),
    ] = ()
    recode: dict[
        str,
        Annotated[
            dict[StrictStr, StrictStr],
            Field(
                description="a table mapping each local code to a contract value, for example "
                '"A&E attendance" = "AE"'
            ),
        ],
    ] = Field(default_factory=dict)
    sheet: (
        Annotated[
            Text | PositiveWhole,
            Field(description="a sheet's name or its number (1 = the first)"),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _groups_and_sheet(self) -> _SourceTable:
        """Person groups need `{group}` columns and the other way round; a sheet needs a
        workbook."""
        per_group = sorted(f for f, c in self.columns.items() if _holds_placeholder(c.column))
        if self.person_groups and not per_group:
            raise ValueError(
                f"person_groups is set but no column name holds {GROUP_PLACEHOLDER} "
                f'(for example forename = "P{GROUP_PLACEHOLDER}_FORENAME")'
            )
        if per_group and not self.person_groups:
            raise ValueError(
                f"columns.{per_group[0]} holds {GROUP_PLACEHOLDER} but the source has no "
                'person_groups (for example person_groups = ["1", "2"])'
            )
        for name, c in self.columns.items():
            if c.group is not None and c.group not in self.person_groups:
                raise ValueError(
                    f"columns.{name}: group = {c.group!r} is not one of the source's "
                    f"person_groups ({', '.join(self.person_groups) or 'none'})"
                )
            if c.group is not None and _holds_placeholder(c.column):
                raise ValueError(
                    f"columns.{name}: a {GROUP_PLACEHOLDER} column is read for every group "
                    "already; group = ... is for a shared column that is one group's"
                )
        if self.sheet is not None and _format_of(self.format, self.path) != "excel":
            raise ValueError('sheet is for a workbook (format = "excel")')
        return self


def _holds_placeholder(columns: tuple[str, ...]) -> bool:
    return any(GROUP_PLACEHOLDER in c for c in columns)


def _iso_date(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date written YYYY-MM-DD") from None


class _RunTable(_Table):
    """`[run]`: the run's name, folders, reference date and service period."""

    name: StrictStr | None = None
    landing_dir: ConfigPath
    work_dir: ConfigPath
    out_dir: ConfigPath
    schemas_dir: ConfigPath | None = None
    policy: ConfigPath | None = None
    reference_date: Annotated[
        date, BeforeValidator(_iso_date), Field(description="a date written YYYY-MM-DD")
    ]
    service_period_months: PositiveWhole = 12


class _KeyTable(_Table):
    """`[key]`: where the key comes from (never the key itself)."""

    file: ConfigPath | None = None
    passphrase_env: EnvName | None = None
    key_env: EnvName | None = None


def _syslog_sink(value: Any) -> Any:
    """`witness_syslog = true` is journald's socket; false is none."""
    return "/dev/log" if value is True else None if value is False else value


class _AuditTable(_KeyTable):
    """`[audit]`: the audit key's settings, its sealing state and its witnesses."""

    seal_state: ConfigPath | None = None
    witness_file: ConfigPath | None = None
    witness_syslog: (
        Annotated[
            Text, BeforeValidator(_syslog_sink), Field(description="true, false or a socket path")
        ]
        | None
    ) = None


ProjectName = Annotated[
    StrictStr,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="1-64 letters, digits, '.', '_' or '-'",
    ),
]


class _ReleaseTable(_KeyTable):
    """`[release]`: the release key's settings and the data-sharing project."""

    project: ProjectName | None = None


def _some_sources(sources: dict[str, _SourceTable]) -> dict[str, _SourceTable]:
    if not sources:
        raise ValueError("no [sources.*] tables: name at least one extract")
    return sources


class _ConfigFile(BaseModel):
    """The whole run configuration file, as written; `read_settings` resolves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: _RunTable
    key: _KeyTable = _KeyTable()
    audit: _AuditTable = _AuditTable()
    release: _ReleaseTable = _ReleaseTable()
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    linkage: Annotated[LinkageSettings, BeforeValidator(_auto_threshold)] = Field(
        default_factory=LinkageSettings
    )
    households: HouseholdSettings = Field(default_factory=HouseholdSettings)
    sources: Annotated[dict[str, _SourceTable], AfterValidator(_some_sources)] = Field(
        default_factory=dict, validate_default=True
    )
    reference: dict[str, _SourceTable] = Field(default_factory=dict)


# ------------------------------------------------------------------ one line per mistake
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")  # models, dataclasses


def validation_message(
    exc: ValidationError, model: type, raw: Mapping[str, Any], path: Path
) -> str:
    """One line for the first mistake pydantic found in a TOML file: the file, the table, the
    setting and the rule it breaks (read from the setting's declared type), never its value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    kind, said = first["type"], first["msg"].removeprefix("Value error, ")
    table, rest = _table_and_setting(model, raw, first["loc"], kind in (*_UNKNOWN, "missing"))
    where = f"[{'.'.join(map(str, table))}]" if table else "the file"
    if not rest:
        return f"{path}: {where} {said}" if table else f"{path}: {said}"
    setting = str(rest[0])
    declared = _declared(model, [*table, setting])
    if kind in _UNKNOWN:
        allowed = ", ".join(_setting_names(_declared(model, table)))
        if not table:
            return f"{path}: unknown section [{setting}] (sections: {allowed})"
        return f"{path}: {where} {setting}: unknown setting (settings: {allowed})"
    if kind == "missing" and _is_model(declared):
        return f"{path}: needs a [{'.'.join(map(str, [*table, setting]))}] table"
    if kind == "missing":
        why = _description(declared)
        return f"{path}: {where} needs {setting}" + (f" ({why})" if why else "")
    if kind == "value_error":
        return f"{path}: {where} {setting}{' ' if said.startswith('must ') else ': '}{said}"
    return f"{path}: {where} {setting} must be {_rule(declared)}"


def _table_and_setting(
    model: Any, raw: Mapping[str, Any], loc: tuple[int | str, ...], names_setting: bool
) -> tuple[list[str | int], list[str | int]]:
    """Split an error's location into the TOML table and the setting in it, skipping the
    steps pydantic adds (union members, validators) that are not keys of the file."""
    keys: list[str | int] = []
    value: Any = raw
    for i, part in enumerate(loc):
        if _has(value, part):
            keys.append(part)
            value = value[part]
        elif names_setting and i == len(loc) - 1:
            keys.append(part)
    table: list[str | int] = []
    value = raw
    for i, part in enumerate(keys):
        value = value.get(part) if isinstance(value, dict) else None
        if names_setting and i == len(keys) - 1:
            break
        if not isinstance(value, dict) or not _is_table(_declared(model, [*table, part])):
            break
        table.append(part)
    return table, keys[len(table) :]


def _has(value: Any, part: int | str) -> bool:
    """Whether a step of an error's location is a key (or list index) of the file's value."""
    if isinstance(value, dict):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and part < len(value)


def _unwrapped(declared: Any) -> tuple[Any, list[Any]]:
    """A declared type without Annotated and None, with the metadata it carried (a Field's
    own constraints included)."""
    metadata: list[Any] = []
    while True:
        if isinstance(declared, FieldInfo):
            metadata.append(declared)
            declared = declared.annotation
        elif get_origin(declared) is Annotated:
            metadata += list(declared.__metadata__)
            declared = get_args(declared)[0]
        elif get_origin(declared) in (Union, UnionType) and type(None) in get_args(declared):
            rest = [a for a in get_args(declared) if a is not type(None)]
            if len(rest) != 1:
                declared = Union[tuple(rest)]  # noqa: UP007
                break
            declared = rest[0]
        else:
            break
    flat = [c for m in metadata if isinstance(m, FieldInfo) for c in m.metadata]
    return declared, metadata + flat


def _declared(model: Any, keys: list[str | int]) -> Any:
    """What the settings model declares at `keys` (a field's type with its metadata)."""
    declared: Any = model
    for key in keys:
        kind, _ = _unwrapped(declared)
        if _is_model(kind) and isinstance(kind, type) and issubclass(kind, BaseModel):
            declared = kind.model_fields.get(str(key))
        elif _is_model(kind):
            declared = get_type_hints(kind, include_extras=True).get(str(key))
        elif get_origin(kind) is dict:
            declared = get_args(kind)[1]
        elif get_origin(kind) in (list, tuple):
            declared = get_args(kind)[0]
        else:
            return None
    return declared


def _is_model(declared: Any) -> bool:
    kind, _ = _unwrapped(declared)
    return isinstance(kind, type) and (issubclass(kind, BaseModel) or is_dataclass(kind))


def _is_table(declared: Any) -> bool:
    """Whether a setting is written as a TOML table (a section, or a table of values)."""
    return _is_model(declared) or get_origin(_unwrapped(declared)[0]) is dict


def _setting_names(declared: Any) -> list[str]:
    kind, _ = _unwrapped(declared)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    return [f.name for f in fields(kind)] if _is_model(kind) else []


def _description(declared: Any) -> str | None:
    _, metadata = _unwrapped(declared)
    return next(
        (m.description for m in metadata if isinstance(m, FieldInfo) and m.description), None
    )


_WORDS: dict[Any, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    Path: "a path",
    date: "a date",
}


def _number(bound: Any) -> str:
    """A bound as written in a rule: 1000000, 0.5, 3600 (empty when there is none)."""
    if bound is None:
        return ""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _rule(declared: Any) -> str:
    """What a setting must be, in words, from its declared type and bounds."""
    described = _description(declared)
    if described:
        return described
    kind, metadata = _unwrapped(declared)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(kind))
    if get_origin(kind) in (Union, UnionType):
        return " or ".join(_rule(a) for a in get_args(kind))
    if get_origin(kind) in (list, tuple):
        return "a list"
    if get_origin(kind) is dict or _is_model(kind):
        return "a table"
    word = _WORDS.get(kind, "a value")
    bound = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le", "lt", "min_length")
             if getattr(m, k, None) is not None}  # fmt: skip
    if kind is str and bound.get("min_length"):
        return "a non-empty string"
    low, high = (_number(bound.get(k, bound.get(o))) for k, o in (("ge", "gt"), ("le", "lt")))
    if low and high:
        both = "ge" in bound and "le" in bound and kind is int
        return f"{word} from {low} to {high}" if both else f"{word} between {low} and {high}"
    if low:
        return f"{word} >= {low}" if "ge" in bound else f"{word} above {low}"
    if high:
        return f"{word} <= {high}" if "le" in bound else f"{word} below {high}"
    return word


# ------------------------------------------------------------------ reading the file


def read_toml(
    path: Path, what: str = "config file", error: type[UprnlinkError] = ConfigError
) -> dict[str, Any]:
    """A TOML file (a run configuration or the governance policy) as a dict; a missing or
    malformed file is `error` naming `what` and the path."""
    return parse_toml(read_text(path, what, error), path, error)


def read_text(path: Path, what: str, error: type[UprnlinkError] = ConfigError) -> str:
    """A text file's content; a missing file is `error` naming `what` and the path."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None


def parse_toml(text: str, path: Path, error: type[UprnlinkError] = ConfigError) -> dict[str, Any]:
    """TOML text read from `path` as a dict; malformed text is `error` naming the path."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def read_settings(config_path: Path) -> RunSettings:
    """Load and check a run configuration file, validated once per version of the file: every
    stage of a run (and the runner) shares the one object; a changed file is read again."""
    named = Path(config_path).expanduser()
    # The folder is resolved but the file itself is not: a config that is a link (the checkout's
    # config/demo.toml) keeps its relative paths relative to where the link is.
    config_path = named.parent.resolve() / named.name
    return _settings(config_path, read_text(config_path, "config file"))


@functools.lru_cache(maxsize=16)
def _settings(config_path: Path, text: str) -> RunSettings:
    """The settings of one version of a config file (its text is the cache key: any change,
    even one within a clock tick that leaves the size alone, is read again)."""
    raw = parse_toml(text, config_path)
    try:
        file = _ConfigFile.model_validate(raw, context={"base": config_path.parent})
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, _ConfigFile, raw, config_path)) from None
    run = file.run
    name = run.name if run.name is not None else config_path.stem
    project = file.release.project or name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", project):
        raise ConfigError(
            f"{config_path}: [release] project must be 1-64 letters, digits, '.', '_' or '-' "
            "([run] name is used when it is not set)"
        )
    key = _key_settings(file.key, "key", None)
    audit = file.audit
    return RunSettings(
        config_path=config_path,
        name=name,
        landing_dir=run.landing_dir,
        work_dir=run.work_dir,
        out_dir=run.out_dir,
        schemas_dir=run.schemas_dir or schemas_dir(),
        policy_path=run.policy or default_policy_path(),
        reference_date=run.reference_date,
        service_period_months=run.service_period_months,
        sources={n: _source(n, s, run.landing_dir) for n, s in file.sources.items()},
        reference={n: _source(n, s, run.landing_dir) for n, s in file.reference.items()},
        key=key,
        audit_key=_key_settings(audit, "audit", key.file),
        release=ReleaseSettings(_key_settings(file.release, "release", key.file), project),
        linkage=file.linkage,
        service=file.service,
        audit=AuditSettings(audit.seal_state, audit.witness_file, audit.witness_syslog),
        households=file.households,
    )


def _key_settings(table: _KeyTable, name: str, beside: Path | None) -> KeySettings:
    """One key's settings; an unset file lies beside the pseudonymisation key (`beside`)."""
    kind, default_name, passphrase_env, key_env = KEY_TABLES[name]
    file = table.file or (beside.with_name(default_name) if beside is not None else None)
    return KeySettings(
        file=file,
        passphrase_env=table.passphrase_env or passphrase_env,
        key_env=table.key_env or key_env,
        kind=kind,
    )


def _source(name: str, table: _SourceTable, landing: Path) -> SourceSettings:
    """One extract's settings: its path under the landing folder, its format and mapping."""
    return SourceSettings(
        name=name,
        contract=table.contract or name,
        contract_version=table.version,
        path=_resolve(landing, table.path),
        format=_format_of(table.format, table.path),
        delimiter=table.delimiter,
        encoding=table.encoding,
        date_formats=table.date_format,
        columns={
            field_name: ColumnMapping(
                column=c.column[0],
                formats=c.format,
                name_order=c.name_order,
                parts=c.column if len(c.column) > 1 else (),
                from_rank=c.from_rank,
                group=c.group,
            )
            for field_name, c in table.columns.items()
        },
        required=table.required,
        skip_lines=table.skip_lines,
        person_groups=table.person_groups,
        recode={field_name: dict(codes) for field_name, codes in table.recode.items()},
        sheet=table.sheet,
    )
