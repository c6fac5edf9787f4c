"""Read extracts, map their columns onto contracts, validate, standardise and quarantine.

Every row read is either accepted or quarantined with its reasons (in = accepted + quarantined).
A bad value in an optional field is nulled and counted rather than costing the whole row.
Reasons name the field and the rule, never the value.
"""

from __future__ import annotations

import codecs
import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink import standardise as std
from uprnlink.contracts import Contract, FieldSpec
from uprnlink.errors import ContractError
from uprnlink.settings import SourceSettings

ROW = "_row"
REASONS = "_reasons"


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
    fields_not_supplied: list[str] = field(default_factory=list)
    columns_ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        """in = accepted + quarantined."""
        return self.rows_in == self.rows_accepted + self.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (no data values: only names and counts)."""
        return asdict(self)


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, so a re-delivered extract is recognised."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _decode_to_utf8(data: bytes, encoding: str, path: Path) -> bytes:
    """Bytes re-encoded as UTF-8 without a BOM, so polars reads any declared encoding."""
    codec = encoding.lower().replace("_", "-")
    if codec in {"utf8", "utf-8", "utf-8-sig", "utf8-sig"}:
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ContractError(
                'file is not valid UTF-8; set encoding (for example encoding = "latin-1") '
                "in the source's config",
                file=str(path),
                row=line,
                rule="encoding",
            ) from None
        return data
    try:
        return data.decode(codec).encode("utf-8")
    except (LookupError, UnicodeDecodeError) as exc:
        raise ContractError(
            f"cannot decode file as {encoding}: {type(exc).__name__}",
            file=str(path),
            rule="encoding",
        ) from None


def read_extract(source: SourceSettings) -> pl.DataFrame:
    """Read one extract as it is, every CSV column as text so that nothing is lost to inference."""
    path = source.path
    if not path.exists():
        raise ContractError("extract file not found", file=str(path), rule="file_missing")
    if path.stat().st_size == 0:
        raise ContractError("extract file is empty", file=str(path), rule="empty_file")
    if source.format == "parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several kinds for a damaged file
            raise ContractError(
                f"cannot read Parquet file: {type(exc).__name__}", file=str(path), rule="parquet"
            ) from None
    data = _decode_to_utf8(path.read_bytes(), source.encoding, path)
    try:
        return pl.read_csv(
            data,
            separator=source.delimiter,
            infer_schema=False,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        raise ContractError("extract file is empty", file=str(path), rule="empty_file") from None
    except pl.exceptions.ComputeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise ContractError(
            f"cannot parse CSV ({first}); check delimiter and quoting",
            file=str(path),
            rule="csv_parse",
        ) from None


def _header_key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


def check_mapping(raw: pl.DataFrame, source: SourceSettings, contract: Contract) -> dict[str, str]:
    """Each mapped field's actual header in the file; fail clearly on a gap in the mapping.

    A header that differs from the config only in case or surrounding spaces is accepted, as
    systems change those between releases; an ambiguous or absent one is an error.
    """
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
    headers = set(raw.columns)
    by_key: dict[str, list[str]] = {}
    for h in raw.columns:
        by_key.setdefault(_header_key(h), []).append(h)
    resolved: dict[str, str] = {}
    for fname, mapping in source.columns.items():
        if mapping.column in headers:
            resolved[fname] = mapping.column
        elif len(by_key.get(_header_key(mapping.column), [])) == 1:
            resolved[fname] = by_key[_header_key(mapping.column)][0]
        else:
            raise ContractError(
                f"column {mapping.column!r} (mapped to field {fname!r}) is not in the file's "
                f"header; found {len(headers)} columns",
                file=str(source.path),
                column=mapping.column,
                rule="missing_column",
            )
        spec = contract.field(fname)
        if spec.is_date and not source.date_formats_for(fname):
            dtype = raw.schema[resolved[fname]]
            if not dtype.is_temporal():
                raise ContractError(
                    f"date field {fname!r} needs a date format: set date_format for the source "
                    "or { column = ..., format = ... }",
                    file=str(source.path),
                    column=mapping.column,
                    rule="date_format_missing",
                )
    return resolved


def _text_expr(col: str) -> pl.Expr:
    """A raw column as trimmed text, empty strings as null."""
    s = pl.col(col).cast(pl.Utf8).str.strip_chars()
    return pl.when(s.str.len_chars() > 0).then(s).otherwise(None)


def typed_expr(spec: FieldSpec, col: str, formats: list[str], reference_date: date) -> pl.Expr:
    """The standardised, typed value of one field (null where the raw value breaks its rule)."""
    raw = pl.col(col)
    t = spec.type
    if t == "string":
        out = _text_expr(col)
    elif t == "forename":
        out = std.forename_expr(raw)
    elif t == "surname":
        out = std.surname_expr(raw)
    elif t == "date":
        out = std.date_expr(raw, formats)
    elif t == "dob":
        out = std.dob_expr(raw, formats, latest=reference_date)
    elif t == "postcode":
        out = std.postcode_expr(raw)
    elif t == "uprn":
        out = std.uprn_expr(raw)
    elif t == "nhs_number":
        out = std.nhs_number_expr(raw)
    elif t == "sex":
        out = std.sex_expr(raw)
    elif t == "flag":
        out = std.flag_expr(raw)
    elif t == "enum":
        up = _text_expr(col).str.to_uppercase()
        out = pl.when(up.is_in(list(spec.values))).then(up).otherwise(None)
    elif t == "integer":
        num = _text_expr(col).str.replace(r"\.0+$", "").cast(pl.Int64, strict=False)
        out = _bounded(num, spec)
    elif t == "decimal":
        num = _text_expr(col).str.replace_all(r"[£,]", "").cast(pl.Float64, strict=False)
        out = _bounded(num, spec)
    else:  # pragma: no cover - contracts reject unknown types
        raise ContractError(f"unsupported field type {t!r}", column=spec.name)
    if spec.not_future and spec.is_date:
        out = pl.when(out > pl.lit(reference_date)).then(None).otherwise(out)
    return out


def _bounded(num: pl.Expr, spec: FieldSpec) -> pl.Expr:
    ok = pl.lit(True)
    if spec.min is not None:
        ok = ok & (num >= spec.min)
    if spec.max is not None:
        ok = ok & (num <= spec.max)
    return pl.when(ok).then(num).otherwise(None)


def _rule_name(spec: FieldSpec) -> str:
    return "not_in_allowed_values" if spec.type == "enum" else f"invalid_{spec.type}"


def validate_extract(
    raw: pl.DataFrame,
    source: SourceSettings,
    contract: Contract,
    reference_date: date,
) -> tuple[pl.DataFrame, pl.DataFrame, IngestReport]:
    """Split an extract into standardised accepted rows and quarantined rows with reasons."""
    started = time.perf_counter()
    columns = check_mapping(raw, source, contract)
    report = IngestReport(
        source=source.name,
        file=source.path.name,
        contract=contract.tag,
        checksum="",
        rows_in=raw.height,
        fields_not_supplied=[f.name for f in contract.fields if f.name not in source.columns],
        columns_ignored=sorted(set(raw.columns) - set(columns.values())),
    )
    frame = raw.with_row_index(ROW, offset=1)
    typed: list[pl.Expr] = []
    reasons: list[pl.Expr] = []
    failed: dict[str, pl.Expr] = {}
    for spec in contract.fields:
        col = columns.get(spec.name)
        if col is None:
            typed.append(pl.lit(None).alias(spec.name))
            if spec.type == "forename":
                typed.append(pl.lit(None, pl.Utf8).alias("middle_names"))
            continue
        value = typed_expr(spec, col, source.date_formats_for(spec.name), reference_date)
        typed.append(value.alias(spec.name))
        if spec.type == "forename":
            typed.append(std.middle_names_expr(pl.col(col)).alias("middle_names"))
        present = _text_expr(col).is_not_null()
        bad = present & value.is_null()
        if spec.type == "sex":
            bad = bad & ~std.sex_not_known_expr(pl.col(col))
        failed[spec.name] = bad
        if spec.required:
            reasons.append(pl.when(~present).then(pl.lit(f"{spec.name}:missing")))
            reasons.append(pl.when(bad).then(pl.lit(f"{spec.name}:{_rule_name(spec)}")))
    for spec in contract.fields:
        if spec.unique and spec.name in columns:
            key = _text_expr(columns[spec.name])
            dup = key.is_not_null() & key.is_duplicated() & (pl.int_range(pl.len()).over(key) > 0)
            reasons.append(pl.when(dup).then(pl.lit(f"{spec.name}:duplicate")))

    reason_expr = (
        pl.concat_str(reasons, separator=";", ignore_nulls=True) if reasons else pl.lit("")
    )
    checked = frame.with_columns(
        reason_expr.fill_null("").alias(REASONS),
        *[e.alias(f"_bad_{n}") for n, e in failed.items()],
    )
    is_bad = pl.col(REASONS) != ""
    quarantined = checked.filter(is_bad).select(
        ROW, REASONS, *[pl.col(c).cast(pl.Utf8) for c in raw.columns]
    )
    good = checked.filter(~is_bad)
    accepted = good.select(ROW, *typed)
    nulled = good.select([pl.col(f"_bad_{n}").sum().alias(n) for n in failed]).row(0, named=True)

    report.rows_quarantined = quarantined.height
    report.rows_accepted = accepted.height
    report.values_nulled = {
        f"{n}:{_rule_name(contract.field(n))}": int(v) for n, v in nulled.items() if v
    }
    counter: Counter[str] = Counter()
    for reason_list in quarantined.get_column(REASONS).str.split(";").to_list():
        counter.update(reason_list)
    report.quarantine_reasons = dict(sorted(counter.items()))
    report.seconds = round(time.perf_counter() - started, 3)
    if not report.reconciles:  # pragma: no cover - guarded by construction
        raise ContractError("row counts do not reconcile", file=source.path.name, rule="reconcile")
    return accepted, quarantined, report


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
