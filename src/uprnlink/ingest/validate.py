"""Validate extracts: map their columns onto contracts, check, standardise and quarantine.

Every row read is either accepted or quarantined with its reasons (in = accepted + quarantined).
A bad value in an optional field is nulled and counted rather than costing the whole row.
Reasons name the field and the rule, never the value. `docs/bad-input.md` lists what happens
to each kind of malformed input and the test that proves it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import ContractError
from uprnlink.ingest import standardise as std
from uprnlink.ingest.contracts import Contract, FieldSpec
from uprnlink.ingest.groups import expand_person_groups
from uprnlink.ingest.headers import suggest_columns
from uprnlink.ingest.readers import (
    BLANK,
    EXTRA_FIELDS,
    GROUP,
    REASON_COLUMNS,
    REASONS,
    RESERVED_COLUMNS,
    ROW,
    ROW_ISSUE,
    file_checksum,
    header_key,
    header_line,
    read_extract,
)
from uprnlink.settings import GROUP_PLACEHOLDER, ColumnMapping, SourceSettings

MAX_CODES_LISTED = 50
MAX_CODE_LENGTH = 40
CODE_PATTERN = r"^[\p{L}0-9 &/+()._',:-]+$"
#: The identifiers whose null share a delivery check watches.
PROFILED_FIELDS = ("record_id", "nhs_number", "uprn", "dob", "postcode", "forename", "surname")
#: Fields that identify one person: with person groups, a column shared by the whole row
#: cannot hold them for every group (each party would take the lead's date of birth).
PERSON_LEVEL_FIELDS = ("dob", "nhs_number", "sex", "date_of_death")
EARLIEST_DATE = date(1900, 1, 1)
"""Dates before this fail `out_of_range` (a two-digit year read with %Y lands in year 80)."""


@dataclass
class IngestReport:
    """What happened to one extract: counts that always reconcile, and why rows were lost."""

    source: str
    file: str
    contract: str
    checksum: str
    rows_in: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    values_nulled: dict[str, int] = field(default_factory=dict)
    # Per mapped field, how many records hold a value (not blank): the base of the share of
    # a field's values that fail a rule (`uprnlink check`).
    values_present: dict[str, int] = field(default_factory=dict)
    fields_not_supplied: list[str] = field(default_factory=list)
    columns_ignored: list[str] = field(default_factory=list)
    blank_lines: int = 0
    # Rows of the file (not blank lines); with person groups each row gives one record per
    # group that has anything of its own, and `groups_empty` counts the groups that had not.
    file_rows: int = 0
    groups_empty: int = 0
    # Per coded field, the local codes that are neither a contract value nor recoded, with how
    # many values each (codes only: a column of more than `MAX_CODES_LISTED` distinct such
    # values, or of long ones, is summarised, never listed).
    values_unrecoded: dict[str, dict[str, int]] = field(default_factory=dict)
    # Delivery profile for the checks against the last accepted delivery (uprnlink.ingest.deliveries):
    # the share of accepted records without each identifier, and the latest date in the extract.
    null_shares: dict[str, float] = field(default_factory=dict)
    latest_date: str | None = None
    seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        """in = accepted + quarantined."""
        return self.rows_in == self.rows_accepted + self.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (no data values: only names and counts)."""
        return asdict(self)


# --------------------------------------------------------------------------- reading


# --------------------------------------------------------------------------- mapping


def check_mapping(
    raw: pl.DataFrame, source: SourceSettings, contract: Contract
) -> dict[str, tuple[str, ...]]:
    """Each mapped field's actual header(s) in the file; fail clearly on a gap in the mapping.

    A header that differs from the config only in case or surrounding spaces is accepted, as
    systems change those between releases; an ambiguous or absent one is an error. A field
    read from several columns (a composite key) has each of them, in order.
    """
    _check_mapped_fields(source, contract)
    for fname, mapping in source.columns.items():
        _check_field_mapping(source, fname, mapping, contract.field(fname))
    _check_person_level_fields(source)
    unmapped_recode = sorted(set(source.recode) - set(source.columns))
    if unmapped_recode:
        raise ContractError(
            f"recode of field {unmapped_recode[0]!r}, which has no column mapping",
            file=str(source.path),
            column=unmapped_recode[0],
            rule="recode_field",
        )
    data_columns = [c for c in raw.columns if c not in RESERVED_COLUMNS]
    match = _match_headers(data_columns, source)
    if match.absent:
        _raise_missing_columns(source, data_columns, match)
    _check_column_types(raw, source, contract, match.resolved)
    return match.resolved


def _check_mapped_fields(source: SourceSettings, contract: Contract) -> None:
    """Every mapped field is in the contract and every required field is mapped."""
    unknown = set(source.columns) - set(contract.field_names)
    if unknown:
        raise ContractError(
            f"config maps field(s) {sorted(unknown)} that contract {contract.tag} does not have",
            file=str(source.path),
            rule="mapping_unknown_field",
        )
    for spec in contract.fields:
        if spec.required and spec.name not in source.columns:
            raise ContractError(
                f"required field {spec.name!r} of contract {contract.tag} has no column mapping "
                f"in [sources.{source.name}.columns]",
                file=str(source.path),
                column=spec.name,
                rule="mapping_missing",
            )


def _check_field_mapping(
    source: SourceSettings, fname: str, mapping: ColumnMapping, spec: FieldSpec
) -> None:
    """A field's mapping options (several columns, from_rank, recode) suit its type."""
    if mapping.parts and spec.type != "string":
        raise ContractError(
            f"field {fname!r} is a {spec.type}: only text fields (such as record_id) can be "
            "made of several columns",
            file=str(source.path),
            column=mapping.column,
            rule="composite_field",
        )
    if mapping.from_rank is not None and spec.type != "integer":
        raise ContractError(
            f"from_rank is for a decile field read from a rank column, not {spec.type} "
            f"field {fname!r}",
            file=str(source.path),
            column=mapping.column,
            rule="from_rank",
        )
    if fname in source.recode and not spec.is_coded:
        raise ContractError(
            f"field {fname!r} is a {spec.type}: only coded fields (enum, sex, flag) can be recoded",
            file=str(source.path),
            column=mapping.column,
            rule="recode_field",
        )
    for value in source.recode.get(fname, {}).values():
        problem = _recode_value_problem(fname, spec, value)
        if problem is not None:
            raise ContractError(
                problem, file=str(source.path), column=mapping.column, rule="recode_value"
            )


def _recode_value_problem(fname: str, spec: FieldSpec, value: str) -> str | None:
    """Why a recode target is not a value of the coded field, or None if it is."""
    if not value:
        return None
    if spec.type == "enum" and value.upper() not in spec.values:
        return (
            f"recode of field {fname!r} maps a code to {value!r}, which is not one of "
            f"the contract's values {list(spec.values)}"
        )
    if spec.type == "sex" and value.upper() not in ("M", "F"):
        return f'recode of field {fname!r} must map codes to M, F or "" (not known)'
    if spec.type == "flag" and value.upper() not in ("Y", "N"):
        return f'recode of field {fname!r} must map codes to Y, N or ""'
    return None


def _check_person_level_fields(source: SourceSettings) -> None:
    """With person groups, no person-level field is read from a column shared by every group."""
    if not source.person_groups:
        return
    for fname in PERSON_LEVEL_FIELDS:
        shared = source.columns.get(fname)
        if shared is None or shared.per_group or shared.group is not None:
            continue
        tags = ", ".join(source.person_groups)
        raise ContractError(
            f"{fname} is mapped to a column shared by every person group ({tags}), so each "
            f"group's record would take the same {fname}: map a column per group "
            f'("{{group}} ..."), or give the column to the one group it belongs to, '
            f'{fname} = {{ column = "{shared.column}", group = "{source.person_groups[0]}" }}, '
            "or leave it out (docs/bad-input.md)",
            file=str(source.path),
            column=shared.column,
            rule="shared_person_field",
        )


@dataclass(frozen=True)
class _HeaderMatch:
    """The mapped columns found in a file's header, and those that are not there."""

    resolved: dict[str, tuple[str, ...]]
    """Field -> its header(s), for fields whose every column was found."""
    absent: list[tuple[str, str]]
    """(field, configured column) for each column not in the header."""


def _match_headers(data_columns: list[str], source: SourceSettings) -> _HeaderMatch:
    """Each mapped column matched to the header exactly, or else ignoring case and spaces."""
    headers = set(data_columns)
    by_key: dict[str, list[str]] = {}
    for h in data_columns:
        by_key.setdefault(header_key(h), []).append(h)
    resolved: dict[str, tuple[str, ...]] = {}
    absent: list[tuple[str, str]] = []
    for fname, mapping in source.columns.items():
        found: list[str] = []
        for column in mapping.columns:
            matches = by_key.get(header_key(column), [])
            if column in headers:
                found.append(column)
            elif len(matches) == 1:
                found.append(matches[0])
            elif len(matches) > 1:
                raise ContractError(
                    f"column {column!r} (mapped to field {fname!r}) matches {len(matches)} "
                    "header columns that differ only in case or spaces, so the mapping is "
                    "ambiguous",
                    file=str(source.path),
                    column=column,
                    rule="duplicate_column",
                )
            else:
                absent.append((fname, column))
        if len(found) == len(mapping.columns):
            resolved[fname] = tuple(found)
    return _HeaderMatch(resolved, absent)


def _raise_missing_columns(
    source: SourceSettings, data_columns: list[str], match: _HeaderMatch
) -> None:
    """Fail on the first mapped column not in the header, with a hint: the header line, when
    none is found, or the closest unmapped headers."""
    headers = set(data_columns)
    absent, resolved = match.absent, match.resolved
    if not resolved:
        found_at = header_line(source, source.file_columns()) if source.format == "csv" else None
        hint = (
            f"; they are on line {found_at}: set skip_lines = {found_at - 1} for the lines "
            "before the header"
            if found_at
            else ": the header row is missing, or the file is another extract"
        )
        raise ContractError(
            f"none of the {len(absent)} mapped columns is in the file's header (found "
            f"{len(headers)} columns){hint}",
            file=str(source.path),
            column=absent[0][1],
            row=1,
            rule="missing_header",
        )
    fname, column = absent[0]
    others = f" ({len(absent) - 1} other mapped column(s) missing too)" if len(absent) > 1 else ""
    used = {c for cols in resolved.values() for c in cols}
    unmapped = [h for h in data_columns if h not in used]
    close = suggest_columns(column, unmapped, fname)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ContractError(
        f"column {column!r} (mapped to field {fname!r}) is not in the file's header; found "
        f"{len(headers)} columns{others}{hint} (`uprnlink map FILE --contract NAME` "
        "proposes a mapping from the header)",
        file=str(source.path),
        column=column,
        rule="missing_column",
    )


def _check_column_types(
    raw: pl.DataFrame,
    source: SourceSettings,
    contract: Contract,
    resolved: dict[str, tuple[str, ...]],
) -> None:
    """Each resolved column holds values a field can take; a text date field has a format."""
    for fname, cols in resolved.items():
        for col in cols:
            dtype = raw.schema[col]
            if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
                raise ContractError(
                    f"column holds {dtype} values, which no contract field type accepts",
                    file=str(source.path),
                    column=col,
                    rule="column_type",
                )
        spec = contract.field(fname)
        if (
            spec.is_date
            and not source.date_formats_for(fname)
            and not raw.schema[cols[0]].is_temporal()
        ):
            raise ContractError(
                f"date field {fname!r} needs a date format: set date_format for the source "
                "or { column = ..., format = ... }",
                file=str(source.path),
                column=source.columns[fname].column,
                rule="date_format_missing",
            )


# --------------------------------------------------------------------------- field rules


def _text_expr(col: str) -> pl.Expr:
    """A raw column as trimmed text, empty strings as null."""
    s = pl.col(col).cast(pl.Utf8).str.strip_chars()
    return pl.when(s.str.len_chars() > 0).then(s).otherwise(None)


def parse_expr(spec: FieldSpec, col: str, formats: list[str]) -> pl.Expr:
    """The standardised value of one field, null where it cannot be read as its type.

    Ranges (min/max, dates before 1900, future dates) are checked by `rule_expr`, not here.
    """
    raw = pl.col(col)
    t = spec.type
    if t == "string":
        return std.text_expr(raw)
    if t == "forename":
        return std.forename_expr(raw)
    if t == "surname":
        return std.surname_expr(raw)
    if t in {"date", "dob"}:
        return std.date_expr(raw, formats)
    if t == "postcode":
        return std.postcode_expr(raw)
    if t == "uprn":
        return std.uprn_expr(raw)
    if t == "nhs_number":
        return std.nhs_number_expr(raw)
    if t == "sex":
        return std.sex_expr(raw)
    if t == "flag":
        return std.flag_expr(raw)
    if t == "enum":
        up = _text_expr(col).str.to_uppercase()
        return pl.when(up.is_in(list(spec.values))).then(up).otherwise(None)
    if t == "integer":
        return _text_expr(col).str.replace(r"\.0+$", "").cast(pl.Int64, strict=False)
    if t == "decimal":
        num = _text_expr(col).str.replace_all(r"[£,]", "").cast(pl.Float64, strict=False)
        return pl.when(num.is_finite()).then(num).otherwise(None)
    raise ContractError(f"unsupported field type {t!r}", column=spec.name)  # pragma: no cover


def _type_rule(spec: FieldSpec) -> str:
    return "not_in_allowed_values" if spec.type == "enum" else f"invalid_{spec.type}"


def field_rules(spec: FieldSpec) -> tuple[str, ...]:
    """Every rule a present value of this field can fail, in the order they are checked."""
    rules = ["control_character", "too_long", _type_rule(spec)]
    if spec.is_date or spec.min is not None or spec.max is not None:
        rules.append("out_of_range")
    if spec.type == "dob" or (spec.is_date and spec.not_future):
        rules.append("future_date")
    return tuple(rules)


def rule_expr(spec: FieldSpec, col: str, parsed: pl.Expr, reference_date: date) -> pl.Expr:
    """The first rule the field's raw value fails, or null (also null when it is blank)."""
    text = _text_expr(col)
    present = text.is_not_null()
    unreadable = parsed.is_null()
    if spec.type == "sex":
        unreadable = unreadable & ~std.sex_not_known_expr(pl.col(col))
    in_range = pl.lit(True)
    if spec.is_date:
        in_range = parsed >= pl.lit(EARLIEST_DATE)
    else:
        if spec.min is not None:
            in_range = in_range & (parsed >= spec.min)
        if spec.max is not None:
            in_range = in_range & (parsed <= spec.max)
    future = pl.lit(False)
    if "future_date" in field_rules(spec):
        future = parsed > pl.lit(reference_date)
    return (
        pl.when(~present)
        .then(pl.lit(None, pl.String))
        .when(text.str.contains(std.CONTROL_CHARACTERS))
        .then(pl.lit("control_character"))
        .when(text.str.len_chars() > spec.length_limit)
        .then(pl.lit("too_long"))
        .when(unreadable)
        .then(pl.lit(_type_rule(spec)))
        .when(parsed.is_not_null() & ~in_range)
        .then(pl.lit("out_of_range"))
        .when(parsed.is_not_null() & future)
        .then(pl.lit("future_date"))
        .otherwise(pl.lit(None, pl.String))
    )


# --------------------------------------------------------------------------- validation


def validate_extract(
    raw: pl.DataFrame,
    source: SourceSettings,
    contract: Contract,
    reference_date: date,
) -> tuple[pl.DataFrame, pl.DataFrame, IngestReport]:
    """Split an extract into standardised accepted rows and quarantined rows with reasons.

    Reasons are `field:rule` (`surname:missing`, `dob:future_date`, `record_id:duplicate`) or
    `row:rule` for the record as a whole (`row:duplicate`, `row:missing_fields`,
    `row:extra_fields`, `row:unclosed_quote`). Blank lines are not rows; they are counted.
    """
    started = time.perf_counter()
    frame, file_rows, groups_empty = _numbered_records(raw, source)
    grouped = GROUP in frame.columns
    resolved = check_mapping(frame, source, contract)
    data_columns = [c for c in frame.columns if c not in RESERVED_COLUMNS]
    frame, blank_lines = _without_blank_lines(frame)
    rows_in = frame.height
    specs = [s for s in contract.fields if s.name in resolved]
    frame, columns = _derived_columns(frame, source, specs, resolved, grouped)
    checked = _checked_values(frame, source, specs, columns, reference_date)
    reasons = _quarantine_reasons(checked, source, specs, columns, resolved, data_columns)
    checked = checked.with_columns(
        pl.concat_str([r.text for r in reasons], separator=";", ignore_nulls=True)
        .fill_null("")
        .alias(REASONS),
        *(
            [
                pl.concat_str([r.about for r in reasons], separator=";", ignore_nulls=True).alias(
                    REASON_COLUMNS
                )
            ]
            if grouped
            else []
        ),
    )
    is_bad = pl.col(REASONS) != ""
    quarantined = checked.filter(is_bad).select(
        ROW,
        REASONS,
        *([REASON_COLUMNS, GROUP] if grouped else []),
        *_file_columns(source, data_columns, grouped),
        *([EXTRA_FIELDS] if EXTRA_FIELDS in checked.columns else []),
    )
    good = checked.filter(~is_bad)
    accepted = good.select(ROW, *_typed_columns(contract, columns))
    used = {c for cols in resolved.values() for c in cols}
    latest = _latest_date(accepted, contract, reference_date)
    report = IngestReport(
        source=source.name,
        file=source.path.name,
        contract=contract.tag,
        checksum="",
        rows_in=rows_in,
        fields_not_supplied=[f.name for f in contract.fields if f.name not in source.columns],
        columns_ignored=sorted(set(data_columns) - used),
        blank_lines=blank_lines,
        file_rows=file_rows,
        groups_empty=groups_empty,
        values_unrecoded=_unrecoded(checked, specs, resolved),
        null_shares=_null_shares(accepted),
        latest_date=latest.isoformat() if latest is not None else None,
        values_nulled=_values_nulled(good, specs),
        values_present=_values_present(checked, specs, columns),
        rows_quarantined=quarantined.height,
        rows_accepted=accepted.height,
        quarantine_reasons=_reason_counts(quarantined),
        seconds=round(time.perf_counter() - started, 3),
    )
    if not report.reconciles:  # pragma: no cover - guarded by construction
        raise ContractError("row counts do not reconcile", file=source.path.name, rule="reconcile")
    return accepted, quarantined, report


def _numbered_records(raw: pl.DataFrame, source: SourceSettings) -> tuple[pl.DataFrame, int, int]:
    """The extract with its file row numbers, one record per person group: (frame, rows of
    the file that are not blank lines, person groups left empty)."""
    frame = raw if ROW in raw.columns else raw.with_row_index(ROW, offset=1)
    frame = frame.with_columns(pl.col(ROW).cast(pl.UInt32))
    file_rows = frame.height
    if ROW_ISSUE in frame.columns:
        file_rows -= int(frame.select((pl.col(ROW_ISSUE).fill_null("") == BLANK).sum()).item())
    frame, groups_empty = expand_person_groups(frame, source)
    return frame, file_rows, groups_empty


def _without_blank_lines(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The frame without the blank lines the reader marked, and how many there were."""
    if ROW_ISSUE not in frame.columns:
        return frame, 0
    is_blank = pl.col(ROW_ISSUE).fill_null("") == BLANK
    blank_lines = int(frame.select(is_blank.sum()).item())
    return frame.filter(~is_blank), blank_lines


def _checked_values(
    frame: pl.DataFrame,
    source: SourceSettings,
    specs: list[FieldSpec],
    columns: dict[str, str],
    reference_date: date,
) -> pl.DataFrame:
    """Every mapped field parsed once (``_val_<field>``), then the first rule each value
    fails (``_rule_<field>``, null when it passes)."""
    parsed = frame.with_columns(
        parse_expr(s, columns[s.name], source.date_formats_for(s.name)).alias(f"_val_{s.name}")
        for s in specs
    )
    return parsed.with_columns(
        rule_expr(s, columns[s.name], pl.col(f"_val_{s.name}"), reference_date).alias(
            f"_rule_{s.name}"
        )
        for s in specs
    )


@dataclass(frozen=True)
class _Reason:
    """One quarantine reason: its text where it applies, and the file column(s) it concerns."""

    text: pl.Expr
    about: pl.Expr


def _quarantine_reasons(
    checked: pl.DataFrame,
    source: SourceSettings,
    specs: list[FieldSpec],
    columns: dict[str, str],
    resolved: dict[str, tuple[str, ...]],
    data_columns: list[str],
) -> list[_Reason]:
    """Why a row is quarantined, in order: the reader's row issue, an exact duplicate row, a
    required field missing or failing a rule, a repeated unique key."""
    grouped = GROUP in checked.columns

    def reason(condition: pl.Expr, text: pl.Expr | str, fname: str | None = None) -> _Reason:
        label = _column_label(source, fname, resolved) if fname else pl.lit("row")
        return _Reason(
            pl.when(condition).then(text if isinstance(text, pl.Expr) else pl.lit(text)),
            pl.when(condition).then(label),
        )

    reasons: list[_Reason] = []
    if ROW_ISSUE in checked.columns:
        reasons.append(reason(pl.col(ROW_ISSUE).is_not_null(), "row:" + pl.col(ROW_ISSUE)))
    compared = [
        *data_columns,
        *([EXTRA_FIELDS] if EXTRA_FIELDS in checked.columns else []),
        *([GROUP] if grouped else []),
    ]
    exact_dup = (
        ~pl.struct(compared).is_first_distinct() if compared and checked.height else pl.lit(False)
    )
    reasons.append(reason(exact_dup, "row:duplicate"))
    for spec in specs:
        if spec.required:
            present = _text_expr(columns[spec.name]).is_not_null()
            rule = pl.col(f"_rule_{spec.name}")
            reasons.append(reason(~present, f"{spec.name}:missing", spec.name))
            reasons.append(reason(rule.is_not_null(), f"{spec.name}:" + rule, spec.name))
    for spec in specs:
        if spec.unique:
            ok = pl.col(f"_rule_{spec.name}").is_null()
            key = pl.when(ok).then(pl.col(f"_val_{spec.name}"))
            repeat = key.is_not_null() & (pl.int_range(pl.len()).over(key) > 0) & ~exact_dup
            reasons.append(reason(repeat, f"{spec.name}:duplicate", spec.name))
    return reasons


def _typed_columns(contract: Contract, columns: dict[str, str]) -> list[pl.Expr]:
    """Every contract field as its parsed value, null where it failed a rule or is not
    supplied; a forename field also gives ``middle_names``."""
    typed: list[pl.Expr] = []
    for spec in contract.fields:
        if spec.name not in columns:
            typed.append(pl.lit(None, spec.dtype).alias(spec.name))
            if spec.type == "forename":
                typed.append(pl.lit(None, pl.Utf8).alias("middle_names"))
            continue
        ok = pl.col(f"_rule_{spec.name}").is_null()
        typed.append(pl.when(ok).then(pl.col(f"_val_{spec.name}")).alias(spec.name))
        if spec.type == "forename":
            middle = std.middle_names_expr(pl.col(columns[spec.name]))
            typed.append(pl.when(ok).then(middle).alias("middle_names"))
    return typed


def _null_shares(accepted: pl.DataFrame) -> dict[str, float]:
    """Share of accepted records without each profiled identifier."""
    return {
        name: round(accepted.get_column(name).null_count() / accepted.height, 4)
        for name in PROFILED_FIELDS
        if name in accepted.columns and accepted.height
    }


def _values_nulled(good: pl.DataFrame, specs: list[FieldSpec]) -> dict[str, int]:
    """Per ``field:rule``, the values of accepted rows nulled for failing that rule."""
    counts = [
        (pl.col(f"_rule_{s.name}") == r).sum().alias(f"{s.name}:{r}")
        for s in specs
        for r in field_rules(s)
    ]
    nulled = good.select(counts).row(0, named=True) if counts else {}
    return {k: int(v) for k, v in nulled.items() if v}


def _values_present(
    checked: pl.DataFrame, specs: list[FieldSpec], columns: dict[str, str]
) -> dict[str, int]:
    """Per mapped field, how many records hold a value (not blank)."""
    if not specs:
        return {}
    present_counts = checked.select(
        _text_expr(columns[s.name]).is_not_null().sum().alias(s.name) for s in specs
    ).row(0, named=True)
    return {k: int(v) for k, v in present_counts.items()}


def _reason_counts(quarantined: pl.DataFrame) -> dict[str, int]:
    """How many quarantined rows give each reason, by reason."""
    counter: Counter[str] = Counter()
    for reason_list in quarantined.get_column(REASONS).str.split(";").to_list():
        counter.update(reason_list)
    return dict(sorted(counter.items()))


def _column_label(
    source: SourceSettings, fname: str, resolved: dict[str, tuple[str, ...]]
) -> pl.Expr:
    """The file column(s) a field is read from, as the file names them: a `{group}` column
    becomes the group's own (`{group} Name` is `Joint Name` on the joint party's record)."""
    names = " + ".join(resolved.get(fname, (source.columns[fname].column,)))
    if GROUP_PLACEHOLDER not in names:
        return pl.lit(names)
    pieces: list[pl.Expr] = []
    for i, text in enumerate(names.split(GROUP_PLACEHOLDER)):
        if i:
            pieces.append(pl.col(GROUP))
        pieces.append(pl.lit(text))
    return pl.concat_str(pieces)


def _file_columns(source: SourceSettings, data_columns: list[str], grouped: bool) -> list[pl.Expr]:
    """A quarantine's data columns under the file's own names: with person groups each
    `{group}` column is written once per group (`Lead Name`, `Joint Name`), holding the value
    on that group's records only."""
    out: list[pl.Expr] = []
    for c in data_columns:
        if grouped and GROUP_PLACEHOLDER in c:
            out += [
                pl.when(pl.col(GROUP) == tag)
                .then(pl.col(c).cast(pl.Utf8))
                .otherwise(None)
                .alias(c.replace(GROUP_PLACEHOLDER, tag))
                for tag in source.person_groups
            ]
        else:
            out.append(pl.col(c).cast(pl.Utf8))
    return out


def _derived_columns(
    frame: pl.DataFrame,
    source: SourceSettings,
    specs: list[FieldSpec],
    resolved: dict[str, tuple[str, ...]],
    grouped: bool,
) -> tuple[pl.DataFrame, dict[str, str]]:
    """One column per mapped field, read as usual: a composite key joined from its parts (and
    a person group's tag), a full name's part, a recoded code, a decile from a rank."""
    columns = {name: cols[0] for name, cols in resolved.items()}
    for spec in specs:
        mapping = source.columns[spec.name]
        cols = resolved[spec.name]
        derived = f"_uprnlink_{spec.name}"
        if len(cols) > 1 or (grouped and spec.unique):
            parts = [_text_expr(c) for c in cols]
            if spec.unique:
                # A key: every part is needed (a blank part leaves the key missing), and each
                # person group of a row is a record of its own.
                if grouped:
                    parts.append(pl.col(GROUP))
                value = pl.concat_str(parts, separator="|")
            else:
                value = pl.concat_str(parts, separator=" ", ignore_nulls=True)
            frame = frame.with_columns(value.alias(derived))
            columns[spec.name] = derived
        if mapping.group is not None and grouped:
            frame = frame.with_columns(
                pl.when(pl.col(GROUP) == mapping.group)
                .then(pl.col(columns[spec.name]))
                .otherwise(None)
                .alias(f"{derived}_of_group")
            )
            columns[spec.name] = f"{derived}_of_group"
        if mapping.name_order is not None:
            if spec.type not in ("forename", "surname"):
                raise ContractError(
                    f"name_order is for forename and surname fields, not {spec.type} field "
                    f"{spec.name!r}",
                    file=str(source.path),
                    column=cols[0],
                    rule="name_order",
                )
            frame = frame.with_columns(
                std.name_part_expr(pl.col(columns[spec.name]), mapping.name_order, spec.type).alias(
                    f"{derived}_part"
                )
            )
            columns[spec.name] = f"{derived}_part"
        if spec.name in source.recode:
            table = {std.code_key(k): v for k, v in source.recode[spec.name].items()}
            code = std.code_key_expr(pl.col(columns[spec.name]))
            value = code.replace_strict(table, default=None, return_dtype=pl.String)
            recoded = (
                pl.when(code.is_in(list(table)))
                .then(pl.when(value != "").then(value))
                .otherwise(pl.col(columns[spec.name]).cast(pl.String))
            )
            frame = frame.with_columns(recoded.alias(f"{derived}_recoded"))
            columns[spec.name] = f"{derived}_recoded"
        if mapping.from_rank is not None:
            rank = _text_expr(columns[spec.name]).cast(pl.Float64, strict=False)
            whole = pl.when((rank >= 1) & (rank <= mapping.from_rank) & (rank == rank.floor()))
            # Decile k holds ranks up to k tenths of the areas ranked (rank 1 = most deprived).
            decile = whole.then(((rank * 10).ceil() / mapping.from_rank).ceil().cast(pl.Int64))
            frame = frame.with_columns(
                pl.when(_text_expr(columns[spec.name]).is_null())
                .then(None)
                .otherwise(decile.cast(pl.String).fill_null("not a rank"))
                .alias(f"{derived}_decile")
            )
            columns[spec.name] = f"{derived}_decile"
    return frame, columns


def _unrecoded(
    checked: pl.DataFrame, specs: list[FieldSpec], resolved: dict[str, tuple[str, ...]]
) -> dict[str, dict[str, int]]:
    """Per coded field, each local code that is not a contract value (nor recoded to one) and
    how many values it held. Only short codes of a short list are named: a column with more
    such values, or longer ones, is likely free text or a wrong mapping, and is summarised."""
    out: dict[str, dict[str, int]] = {}
    for spec in specs:
        if not spec.is_coded:
            continue
        failed = pl.col(f"_rule_{spec.name}") == _type_rule(spec)
        codes = (
            checked.filter(failed)
            .select(_text_expr(resolved[spec.name][0]).alias("code"))
            .group_by("code")
            .len()
            .sort("len", "code", descending=[True, False])
        )
        if not codes.height:
            continue
        listable = codes.height <= MAX_CODES_LISTED and bool(
            codes.select(
                (
                    (pl.col("code").str.len_chars() <= MAX_CODE_LENGTH)
                    & pl.col("code").str.contains(CODE_PATTERN)
                ).all()
            ).item()
        )
        if listable:
            out[spec.name] = {str(c): int(n) for c, n in codes.iter_rows()}
        else:
            total = int(codes.get_column("len").sum())
            out[spec.name] = {f"({codes.height} distinct values, not listed)": total}
    return out


def _latest_date(accepted: pl.DataFrame, contract: Contract, on: date) -> date | None:
    """The latest start or end date on or before the reference date (where the extract's
    records stop)."""
    dates = [
        f.name
        for f in contract.fields
        if f.type == "date" and f.name in accepted.columns and f.name != "date_of_death"
    ]
    if not dates or not accepted.height:
        return None
    latest = accepted.select(
        pl.max_horizontal(pl.col(c).filter(pl.col(c) <= on).max() for c in dates).alias("latest")
    ).item()
    return latest if isinstance(latest, date) else None


def ingest_extract(
    source: SourceSettings, contract: Contract, reference_date: date
) -> tuple[pl.DataFrame, pl.DataFrame, IngestReport]:
    """Read and validate one extract file."""
    raw = read_extract(source)
    accepted, quarantined, report = validate_extract(raw, source, contract, reference_date)
    report.checksum = file_checksum(source.path)
    return accepted, quarantined, report


def write_quarantine(quarantined: pl.DataFrame, path: Path) -> None:
    """Write quarantined rows (raw values: restricted zone) as Parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quarantined.write_parquet(path)
