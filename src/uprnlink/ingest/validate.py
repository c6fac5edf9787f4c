"""Read extracts, map their columns onto contracts, validate, standardise and quarantine.

Every row read is either accepted or quarantined with its reasons (in = accepted + quarantined).
A bad value in an optional field is nulled and counted rather than costing the whole row.
Reasons name the field and the rule, never the value. `docs/bad-input.md` lists what happens
to each kind of malformed input and the test that proves it.
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

from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest import standardise as std
from uprnlink.ingest.contracts import Contract, FieldSpec
from uprnlink.settings import SourceSettings

ROW = "_row"
REASONS = "_reasons"
ROW_ISSUE = "_row_issue"
"""Set by `read_extract` on a CSV record whose shape is wrong: `blank` (an empty line, not a
row), `missing_fields`, `extra_fields` or `unclosed_quote`."""
EXTRA_FIELDS = "_extra_fields"
"""The fields of a CSV record beyond the header's columns, joined by the delimiter."""
RESERVED_COLUMNS = frozenset({ROW, REASONS, ROW_ISSUE, EXTRA_FIELDS})

EARLIEST_DATE = date(1900, 1, 1)
"""Dates before this fail `out_of_range` (a two-digit year read with %Y lands in year 80)."""
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
_BLANK = "blank"
_QUOTE = '"'


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
    blank_lines: int = 0
    seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        """in = accepted + quarantined."""
        return self.rows_in == self.rows_accepted + self.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (no data values: only names and counts)."""
        return asdict(self)


_CHECKSUMS: dict[tuple[str, int, int, int, int], str] = {}


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, so a re-delivered extract is recognised.

    A run asks for an extract's checksum several times (the duplicate-delivery check, the
    manifest, the ingest report); the bytes are read once per version of the file, recognised
    by device, inode, size and modification time in nanoseconds (any rewrite or replacement
    changes at least one of them).
    """
    st = path.stat()
    version = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if (known := _CHECKSUMS.get(version)) is not None:
        return known
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    if len(_CHECKSUMS) > 256:
        _CHECKSUMS.clear()
    _CHECKSUMS[version] = digest = h.hexdigest()
    return digest


# --------------------------------------------------------------------------- reading


def _decode(data: bytes, encoding: str, path: Path) -> str:
    """The file's text in its declared encoding, without a byte-order mark."""
    codec = encoding.lower().replace("_", "-")
    utf8 = codec in {"utf8", "utf-8", "utf-8-sig", "utf8-sig"}
    wide = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if wide and "16" not in codec and "32" not in codec:
        raise ContractError(
            f"file starts with a UTF-16 byte-order mark but its encoding is set to {encoding}; "
            'set encoding = "utf-16" in the source\'s config',
            file=str(path),
            rule="encoding",
        )
    if data.startswith(codecs.BOM_UTF8):
        if not utf8:
            raise ContractError(
                f"file starts with a UTF-8 byte-order mark but its encoding is set to {encoding}; "
                'set encoding = "utf-8" in the source\'s config',
                file=str(path),
                rule="encoding",
            )
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8" if utf8 else codec)
    except LookupError:
        raise ConfigError(f"{path}: unknown encoding {encoding!r} in the source's config") from None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = ' (for example encoding = "latin-1")' if utf8 else ""
        raise ContractError(
            f"file is not valid {encoding} at line {line}; set the source's encoding{hint}",
            file=str(path),
            row=line,
            rule="encoding",
        ) from None
    return text.removeprefix("\ufeff")


def _record_layout(text: str, sep: str) -> tuple[pl.DataFrame, bool]:
    """One row per CSV record (record 0 is the header): first line, lines, fields, blank.

    Computed on the text's lines with vectorised string operations: a line continues the
    previous record while the quotes before it are unbalanced, and only delimiters outside
    quotes separate fields. Also whether the file ends inside an open quote.
    """
    lines = pl.Series("text", [text]).str.split("\n").explode()
    if text.endswith("\n"):
        lines = lines.slice(0, lines.len() - 1)
    frame = pl.DataFrame({"text": lines}).with_row_index("line", offset=1)
    frame = frame.with_columns(
        pl.col("text").str.count_matches(sep, literal=True).alias("_d"),
        pl.col("text").str.strip_chars().eq("").alias("_empty"),
    )
    unclosed = False
    multi_line = False
    if _QUOTE in text:
        quotes = pl.col("text").str.count_matches(_QUOTE, literal=True)
        frame = frame.with_columns(quotes.alias("_q")).with_columns(
            ((pl.col("_q").cum_sum() - pl.col("_q")) % 2 == 1).alias("_inside")
        )
        unclosed = int(frame.get_column("_q").sum()) % 2 == 1
        multi_line = bool(frame.get_column("_inside").any())
        # Only lines touching a quote need the slower count of delimiters outside quotes.
        parts = pl.col("text").str.split(_QUOTE)
        outside = (
            pl.when(pl.col("_inside"))
            .then(parts.list.gather_every(2, 1))
            .otherwise(parts.list.gather_every(2, 0))
        )
        quoted = frame.filter((pl.col("_q") > 0) | pl.col("_inside")).select(
            "line", outside.list.join("").str.count_matches(sep, literal=True).alias("_dq")
        )
        frame = frame.join(quoted, on="line", how="left", maintain_order="left").with_columns(
            pl.coalesce("_dq", "_d").alias("_d")
        )
    if multi_line:
        frame = frame.with_columns(((~pl.col("_inside")).cum_sum() - 1).alias("record"))
        records = frame.group_by("record", maintain_order=True).agg(
            pl.col("line").first(),
            pl.len().alias("lines"),
            pl.col("_d").sum().alias("_d"),
            pl.col("_empty").first(),
        )
    else:
        records = frame.select("line", pl.lit(1, pl.UInt32).alias("lines"), "_d", "_empty")
    records = records.select(
        "line",
        "lines",
        (pl.col("_d") + 1).alias("fields"),
        ((pl.col("lines") == 1) & (pl.col("_d") == 0) & pl.col("_empty")).alias(_BLANK),
    )
    return records, unclosed


def _check_delimiter(header: str, sep: str, source: SourceSettings) -> None:
    """A one-column header where the mapping needs several columns: name the likely delimiter."""
    if len({m.column for m in source.columns.values()}) < 2:
        return
    counts = {c: header.count(c) for c in DELIMITER_CANDIDATES if c != sep}
    best = max(counts, key=lambda c: counts[c])
    if counts[best]:
        raise ContractError(
            f"the header is one column when split on {sep!r} but {counts[best] + 1} when split "
            f"on {best!r}: set delimiter = {best!r} for this source",
            file=str(source.path),
            row=1,
            rule="delimiter",
        )


def _header_names(values: list[str | None], source: SourceSettings, used: int) -> list[str]:
    """Column names from the header record: blanks named by position, repeats made unique.

    Unnamed columns after the last name (a trailing delimiter) are dropped unless a row holds
    data in them (`used` columns do). A repeated name the config maps is ambiguous and an
    error; an unmapped repeat is renamed (`NAME_duplicated_0`) and ignored like any other
    unmapped column.
    """
    named = max((i + 1 for i, v in enumerate(values) if v is not None and v.strip()), default=0)
    if named == 0:
        raise ContractError(
            "the header row has no column names", file=str(source.path), row=1, rule="no_header"
        )
    width = max(named, used)
    mapped = {_header_key(m.column): m.column for m in source.columns.values()}
    names: list[str] = []
    seen: Counter[str] = Counter()
    seen_keys: set[str] = set()
    for i, value in enumerate(values[:width]):
        name = value if value is not None and value.strip() else f"column_{i + 1}"
        key = _header_key(name)
        if name in RESERVED_COLUMNS:
            raise ContractError(
                f"the header uses a name uprnlink reserves ({sorted(RESERVED_COLUMNS)})",
                file=str(source.path),
                column=name,
                row=1,
                rule="reserved_column",
            )
        if key in mapped and key in seen_keys:
            raise ContractError(
                "a mapped column appears more than once in the header (ignoring case and "
                "spaces), so the mapping is ambiguous",
                file=str(source.path),
                column=mapped[key],
                row=1,
                rule="duplicate_column",
            )
        seen_keys.add(key)
        names.append(f"{name}_duplicated_{seen[name] - 1}" if seen[name] else name)
        seen[name] += 1
    return names


def _parse_csv(text: str, sep: str, width: int, source: SourceSettings) -> pl.DataFrame:
    """All records as text columns c0..c{width-1}; a first line of `width` empty fields makes
    polars keep that many columns, so fields beyond the header are read, not refused."""
    pad = sep * (width - 1) + "\n"
    try:
        parsed = pl.read_csv(
            (pad + text).encode("utf-8"),
            has_header=False,
            separator=sep,
            schema={f"c{i}": pl.String for i in range(width)},
            infer_schema=False,
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        # polars' message can quote the offending field, so only its kind is reported.
        raise ContractError(
            f"cannot parse CSV ({type(exc).__name__}); check delimiter and quoting",
            file=str(source.path),
            rule="csv_parse",
        ) from None
    return parsed.slice(1)


def _tail_frame(line: str, sep: str, names: list[str], row: int) -> pl.DataFrame:
    """The final record, cut off inside a quote, split on the delimiter with quotes as text."""
    values: list[str | None] = [v or None for v in line.split(sep)]
    values += [None] * (len(names) - len(values))
    extra = sep.join(v or "" for v in values[len(names) :]) or None
    data: dict[str, Any] = {n: [v] for n, v in zip(names, values, strict=False)}
    data.update({ROW: [row], ROW_ISSUE: ["unclosed_quote"], EXTRA_FIELDS: [extra]})
    schema: dict[str, Any] = dict.fromkeys(names, pl.String)
    schema.update({ROW: pl.UInt32, ROW_ISSUE: pl.String, EXTRA_FIELDS: pl.String})
    return pl.DataFrame(data, schema=schema)


def _skip_lines(text: str, source: SourceSettings) -> str:
    """The text after the `skip_lines` lines before the header (row numbers in messages then
    count from the header line)."""
    at = 0
    for _ in range(source.skip_lines):
        nl = text.find("\n", at)
        if nl < 0:
            raise ContractError(
                f"the file has fewer than skip_lines = {source.skip_lines} lines before a header",
                file=str(source.path),
                rule="skip_lines",
            )
        at = nl + 1
    return text[at:]


def header_line(source: SourceSettings, names: list[str], look: int = 50) -> int | None:
    """The line (1 = first line of the file) among the first `look` that holds most of the
    mapped column `names` as fields, if that is not the line the config expects. Only the line
    number is reported, never the line."""
    try:
        with source.path.open("rb") as f:
            head = f.read(65_536)
        text = head.decode(source.encoding.replace("utf8", "utf-8"), errors="replace")
    except (OSError, LookupError):
        return None
    wanted = {_header_key(n) for n in names}
    for i, line in enumerate(text.splitlines()[:look]):
        fields = {_header_key(f.strip().strip(_QUOTE)) for f in line.split(source.delimiter)}
        if len(wanted & fields) * 2 > len(wanted):
            return None if i == source.skip_lines else i + 1
    return None


def _read_csv(source: SourceSettings) -> pl.DataFrame:
    path, sep = source.path, source.delimiter
    if len(sep.encode("utf-8")) != 1 or sep in {_QUOTE, "\n", "\r"}:
        raise ConfigError(
            f"{path}: delimiter must be one single-byte character other than a quote or a "
            f"line break, not {sep!r}"
        )
    text = _decode(path.read_bytes(), source.encoding, path)
    if source.skip_lines:
        text = _skip_lines(text, source)
    if not text.strip():
        raise ContractError("extract file is empty", file=str(path), rule="empty_file")
    if "\n" not in text and "\r" in text:
        raise ContractError(
            "lines end in a carriage return only; re-export with LF or CRLF line endings",
            file=str(path),
            rule="line_endings",
        )
    records, unclosed = _record_layout(text, sep)
    header_fields = int(records.get_column("fields")[0])
    if header_fields == 1:
        end = text.find("\n")
        _check_delimiter(text if end < 0 else text[:end], sep, source)
    tail: str | None = None
    if unclosed:
        start, lines = (int(v) for v in records.select("line", "lines").row(-1))
        if records.height == 1 or lines > 1:
            raise ContractError(
                f"a quote opened in the record starting on line {start} is never closed, so the "
                "rest of the file cannot be split into records; check the file is complete and "
                "that quotes inside values are doubled",
                file=str(path),
                row=start,
                rule="unclosed_quote",
            )
        end = len(text) - 1 if text.endswith("\n") else len(text)
        cut = text.rfind("\n", 0, end) + 1
        tail, text = text[cut:end].removesuffix("\r"), text[:cut]
        records = records.slice(0, records.height - 1)
    max_fields = int(records.get_column("fields").max())  # type: ignore[arg-type]
    width = max(header_fields, min(max_fields, 2 * header_fields + 1))
    parsed = _parse_csv(text, sep, width, source)
    if parsed.height != records.height:
        multi = records.filter(pl.col("lines") > 1)
        hint = int(multi.get_column("line")[0]) if multi.height else None
        raise ContractError(
            "quote characters appear inside values that are not themselves quoted, so records "
            "cannot be delimited reliably; re-export with standard CSV quoting",
            file=str(path),
            row=hint,
            rule="csv_quoting",
        )
    data = parsed.slice(1)
    body = records.slice(1)
    filled = data.select(
        (pl.col(f"c{i}").str.strip_chars().str.len_chars() > 0).any() for i in range(header_fields)
    ).row(0)
    used = max((i + 1 for i, any_value in enumerate(filled) if any_value), default=0)
    names = _header_names(list(parsed.row(0))[:header_fields], source, used)
    n = len(names)
    extra_cols = data.columns[n:]
    if extra_cols:
        beyond = pl.concat_list([pl.col(c).fill_null("") for c in extra_cols])
        extra = beyond.list.head(pl.col("_fields") - n).list.join(sep)
        has_extra_text = pl.any_horizontal(
            pl.col(c).str.strip_chars().str.len_chars() > 0 for c in extra_cols
        ).fill_null(False)
    else:
        extra, has_extra_text = pl.lit(None, pl.String), pl.lit(False)
    fields = pl.Series("_fields", body.get_column("fields"))
    blank = pl.Series("_blank", body.get_column(_BLANK))
    issue = (
        pl.when(pl.col("_blank"))
        .then(pl.lit(_BLANK))
        .when(pl.col("_fields") < n)
        .then(pl.lit("missing_fields"))
        .when((pl.col("_fields") > width) | ((pl.col("_fields") > n) & has_extra_text))
        .then(pl.lit("extra_fields"))
        .otherwise(pl.lit(None, pl.String))
    )
    out = data.with_columns(fields, blank).select(
        *[pl.col(f"c{i}").alias(name) for i, name in enumerate(names)],
        pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(ROW),
        issue.alias(ROW_ISSUE),
        pl.when(pl.col("_fields") > n).then(extra).otherwise(None).alias(EXTRA_FIELDS),
    )
    if tail is not None:
        out = pl.concat([out, _tail_frame(tail, sep, names, out.height + 1)])
    return out


def read_extract(source: SourceSettings) -> pl.DataFrame:
    """Read one extract as it is, every CSV column as text so that nothing is lost to inference.

    A CSV extract also gets `_row` (1 = first record after the header), `_row_issue` (a record
    with missing or extra fields, cut off inside a quote, or a blank line) and `_extra_fields`.
    """
    path = source.path
    if not path.exists():
        raise ContractError("extract file not found", file=str(path), rule="file_missing")
    if path.stat().st_size == 0:
        raise ContractError("extract file is empty", file=str(path), rule="empty_file")
    if source.format == "parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several kinds for a damaged file
            raise ContractError(
                f"cannot read Parquet file: {type(exc).__name__}", file=str(path), rule="parquet"
            ) from None
        reserved = sorted(RESERVED_COLUMNS & set(frame.columns))
        if reserved:
            raise ContractError(
                "the file uses a column name uprnlink reserves",
                file=str(path),
                column=reserved[0],
                rule="reserved_column",
            )
        return frame
    return _read_csv(source)


# --------------------------------------------------------------------------- mapping


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
    data_columns = [c for c in raw.columns if c not in RESERVED_COLUMNS]
    headers = set(data_columns)
    by_key: dict[str, list[str]] = {}
    for h in data_columns:
        by_key.setdefault(_header_key(h), []).append(h)
    resolved: dict[str, str] = {}
    absent: list[tuple[str, str]] = []
    for fname, mapping in source.columns.items():
        matches = by_key.get(_header_key(mapping.column), [])
        if mapping.column in headers:
            resolved[fname] = mapping.column
        elif len(matches) == 1:
            resolved[fname] = matches[0]
        elif len(matches) > 1:
            raise ContractError(
                f"column {mapping.column!r} (mapped to field {fname!r}) matches {len(matches)} "
                "header columns that differ only in case or spaces, so the mapping is ambiguous",
                file=str(source.path),
                column=mapping.column,
                rule="duplicate_column",
            )
        else:
            absent.append((fname, mapping.column))
    if absent and not resolved:
        found_at = (
            header_line(source, [m.column for m in source.columns.values()])
            if source.format == "csv"
            else None
        )
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
    if absent:
        from uprnlink.ingest.mapping import suggest_columns

        fname, column = absent[0]
        others = (
            f" ({len(absent) - 1} other mapped column(s) missing too)" if len(absent) > 1 else ""
        )
        unmapped = [h for h in data_columns if h not in resolved.values()]
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
    for fname, col in resolved.items():
        dtype = raw.schema[col]
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
            raise ContractError(
                f"column holds {dtype} values, which no contract field type accepts",
                file=str(source.path),
                column=source.columns[fname].column,
                rule="column_type",
            )
        spec = contract.field(fname)
        if spec.is_date and not source.date_formats_for(fname) and not dtype.is_temporal():
            raise ContractError(
                f"date field {fname!r} needs a date format: set date_format for the source "
                "or { column = ..., format = ... }",
                file=str(source.path),
                column=source.columns[fname].column,
                rule="date_format_missing",
            )
    return resolved


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


def typed_expr(spec: FieldSpec, col: str, formats: list[str], reference_date: date) -> pl.Expr:
    """The standardised, typed value of one field (null where the raw value breaks a rule)."""
    parsed = parse_expr(spec, col, formats)
    return pl.when(rule_expr(spec, col, parsed, reference_date).is_null()).then(parsed)


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
    columns = check_mapping(raw, source, contract)
    data_columns = [c for c in raw.columns if c not in RESERVED_COLUMNS]
    frame = raw if ROW in raw.columns else raw.with_row_index(ROW, offset=1)
    frame = frame.with_columns(pl.col(ROW).cast(pl.UInt32))
    blank_lines = 0
    if ROW_ISSUE in frame.columns:
        is_blank = pl.col(ROW_ISSUE).fill_null("") == _BLANK
        blank_lines = int(frame.select(is_blank.sum()).item())
        frame = frame.filter(~is_blank)
    report = IngestReport(
        source=source.name,
        file=source.path.name,
        contract=contract.tag,
        checksum="",
        rows_in=frame.height,
        fields_not_supplied=[f.name for f in contract.fields if f.name not in source.columns],
        columns_ignored=sorted(set(data_columns) - set(columns.values())),
        blank_lines=blank_lines,
    )
    specs = [s for s in contract.fields if s.name in columns]
    # A full name in one column: each part becomes a column of its own, read as usual.
    for spec in specs:
        order = source.columns[spec.name].name_order
        if order is None:
            continue
        if spec.type not in ("forename", "surname"):
            raise ContractError(
                f"name_order is for forename and surname fields, not {spec.type} field "
                f"{spec.name!r}",
                file=str(source.path),
                column=columns[spec.name],
                rule="name_order",
            )
        derived = f"_uprnlink_{spec.name}_part"
        frame = frame.with_columns(
            std.name_part_expr(pl.col(columns[spec.name]), order, spec.type).alias(derived)
        )
        columns = {**columns, spec.name: derived}

    # 1. parse every mapped field once; 2. find the first rule each value fails.
    parsed = frame.with_columns(
        parse_expr(s, columns[s.name], source.date_formats_for(s.name)).alias(f"_val_{s.name}")
        for s in specs
    )
    checked = parsed.with_columns(
        rule_expr(s, columns[s.name], pl.col(f"_val_{s.name}"), reference_date).alias(
            f"_rule_{s.name}"
        )
        for s in specs
    )

    reasons: list[pl.Expr] = []
    if ROW_ISSUE in checked.columns:
        reasons.append(pl.when(pl.col(ROW_ISSUE).is_not_null()).then("row:" + pl.col(ROW_ISSUE)))
    compared = [*data_columns, *([EXTRA_FIELDS] if EXTRA_FIELDS in checked.columns else [])]
    exact_dup = (
        ~pl.struct(compared).is_first_distinct() if compared and frame.height else pl.lit(False)
    )
    reasons.append(pl.when(exact_dup).then(pl.lit("row:duplicate")))
    for spec in specs:
        if spec.required:
            present = _text_expr(columns[spec.name]).is_not_null()
            rule = pl.col(f"_rule_{spec.name}")
            reasons.append(pl.when(~present).then(pl.lit(f"{spec.name}:missing")))
            reasons.append(pl.when(rule.is_not_null()).then(f"{spec.name}:" + rule))
    for spec in specs:
        if spec.unique:
            ok = pl.col(f"_rule_{spec.name}").is_null()
            key = pl.when(ok).then(pl.col(f"_val_{spec.name}"))
            repeat = key.is_not_null() & (pl.int_range(pl.len()).over(key) > 0) & ~exact_dup
            reasons.append(pl.when(repeat).then(pl.lit(f"{spec.name}:duplicate")))
    checked = checked.with_columns(
        pl.concat_str(reasons, separator=";", ignore_nulls=True).fill_null("").alias(REASONS)
    )

    is_bad = pl.col(REASONS) != ""
    extra_out = [EXTRA_FIELDS] if EXTRA_FIELDS in checked.columns else []
    quarantined = checked.filter(is_bad).select(
        ROW, REASONS, *[pl.col(c).cast(pl.Utf8) for c in data_columns], *extra_out
    )
    good = checked.filter(~is_bad)
    typed: list[pl.Expr] = []
    for spec in contract.fields:
        if spec.name not in columns:
            typed.append(pl.lit(None).alias(spec.name))
            if spec.type == "forename":
                typed.append(pl.lit(None, pl.Utf8).alias("middle_names"))
            continue
        ok = pl.col(f"_rule_{spec.name}").is_null()
        typed.append(pl.when(ok).then(pl.col(f"_val_{spec.name}")).alias(spec.name))
        if spec.type == "forename":
            middle = std.middle_names_expr(pl.col(columns[spec.name]))
            typed.append(pl.when(ok).then(middle).alias("middle_names"))
    accepted = good.select(ROW, *typed)

    counts = [
        (pl.col(f"_rule_{s.name}") == r).sum().alias(f"{s.name}:{r}")
        for s in specs
        for r in field_rules(s)
    ]
    nulled = good.select(counts).row(0, named=True) if counts else {}
    report.values_nulled = {k: int(v) for k, v in nulled.items() if v}
    report.rows_quarantined = quarantined.height
    report.rows_accepted = accepted.height
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
