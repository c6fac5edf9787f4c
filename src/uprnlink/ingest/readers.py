"""Readers: extracts (CSV or Parquet) as text columns, every record accounted for.

CSV is read with every column as text (nothing lost to type inference) in its declared
encoding; records of the wrong shape are kept and marked (`ROW_ISSUE`) for the validator to
quarantine. `sniff_csv` finds a new file's delimiter, encoding and header line for
`uprnlink map`. Checksums identify a delivery.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import ConfigError, ContractError
from uprnlink.settings import ENCODING_AUTO, SourceSettings

log = logging.getLogger(__name__)

ROW = "_row"
REASONS = "_reasons"

ROW_ISSUE = "_row_issue"
"""Set by `read_extract` on a CSV record whose shape is wrong: `blank` (an empty line, not a
row), `missing_fields`, `extra_fields` or `unclosed_quote`."""


EXTRA_FIELDS = "_extra_fields"
"""The fields of a CSV record beyond the header's columns, joined by the delimiter."""
GROUP = "_group"
"""The person group a row was read from (its tag), on sources with `person_groups`."""
REASON_COLUMNS = "_columns"
"""In a person-group source's quarantine: for each reason, the file column(s) it is about."""
RESERVED_COLUMNS = frozenset({ROW, REASONS, ROW_ISSUE, EXTRA_FIELDS, GROUP, REASON_COLUMNS})


DELIMITER_CANDIDATES = (",", ";", "\t", "|")


BLANK = "blank"


_QUOTE = '"'


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


def detect_encoding(data: bytes) -> str:
    """The encoding of an extract's bytes: a byte-order mark (UTF-8, UTF-16, UTF-32) says so;
    bytes that are valid UTF-8 are UTF-8; otherwise charset-normalizer decides, with
    Windows-1252 (what Excel and most council and NHS Windows systems export) preferred
    whenever it reads the bytes as the detector's choice would."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        data.decode("utf-8")
        return "utf8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return "utf8"  # a sample cut inside a character
        at = exc.start
    from charset_normalizer import from_bytes

    # The start of the file and the bytes around the first that is not UTF-8.
    sample = data[:200_000] if at < 200_000 else data[:100_000] + data[at - 50_000 : at + 50_000]
    matches = list(from_bytes(sample))
    if not matches:
        return "cp1252"
    best = matches[0]
    try:
        windows = sample.decode("cp1252")
    except UnicodeDecodeError:
        return str(best.encoding)
    # The detector lists each distinct reading once, under one of the encodings giving it.
    for m in matches:
        if m.chaos <= best.chaos + 0.01 and (m.encoding == "cp1252" or str(m) == windows):
            return "cp1252"
    return str(best.encoding)


def _decode(data: bytes, encoding: str, path: Path) -> str:
    """The file's text in its declared encoding (or the one detected, for "auto"), without a
    byte-order mark."""
    if encoding.lower() == ENCODING_AUTO:
        encoding = detect_encoding(data)
        log.info("%s: encoding detected as %s", path.name, encoding)
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
        ((pl.col("lines") == 1) & (pl.col("_d") == 0) & pl.col("_empty")).alias(BLANK),
    )
    return records, unclosed


def _check_delimiter(header: str, sep: str, source: SourceSettings) -> None:
    """A one-column header where the mapping needs several columns: name the likely delimiter."""
    if len(source.file_columns()) < 2:
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
    mapped = {header_key(c): c for c in source.file_columns()}
    names: list[str] = []
    seen: Counter[str] = Counter()
    seen_keys: set[str] = set()
    for i, value in enumerate(values[:width]):
        name = value if value is not None and value.strip() else f"column_{i + 1}"
        key = header_key(name)
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
        encoding = source.encoding
        if encoding.lower() == ENCODING_AUTO:
            encoding = detect_encoding(head)
        text = head.decode(encoding.replace("utf8", "utf-8"), errors="replace")
    except (OSError, LookupError):
        return None
    wanted = {header_key(n) for n in names}
    for i, line in enumerate(text.splitlines()[:look]):
        fields = {header_key(f.strip().strip(_QUOTE)) for f in line.split(source.delimiter)}
        if len(wanted & fields) * 2 > len(wanted):
            return None if i == source.skip_lines else i + 1
    return None


def _head_bytes(path: Path, limit: int) -> bytes:
    """The start of a file cut after a whole record: at a line end outside any quote."""
    with path.open("rb") as fh:
        data = fh.read(limit)
    if len(data) < limit:
        return data
    cut = data.rfind(b"\n")
    while cut > 0 and data[:cut].count(b'"') % 2:
        cut = data.rfind(b"\n", 0, cut)
    return data[: cut + 1] if cut > 0 else data


def _read_csv(source: SourceSettings, limit: int | None = None) -> pl.DataFrame:
    path, sep = source.path, source.delimiter
    text = _csv_text(source, limit)
    records, unclosed = _record_layout(text, sep)
    header_fields = int(records.get_column("fields")[0])
    if header_fields == 1:
        end = text.find("\n")
        _check_delimiter(text if end < 0 else text[:end], sep, source)
    tail: str | None = None
    if unclosed:
        text, records, tail = _without_unclosed_tail(text, records, path)
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
    out, names = _records_frame(parsed, records, header_fields, width, source)
    if tail is not None:
        out = pl.concat([out, _tail_frame(tail, sep, names, out.height + 1)])
    return out


def _csv_text(source: SourceSettings, limit: int | None) -> str:
    """The file's text (its first `limit` bytes), decoded, after the lines to skip; fails on
    a bad delimiter, an empty file or carriage-return-only line endings."""
    path, sep = source.path, source.delimiter
    if len(sep.encode("utf-8")) != 1 or sep in {_QUOTE, "\n", "\r"}:
        raise ConfigError(
            f"{path}: delimiter must be one single-byte character other than a quote or a "
            f"line break, not {sep!r}"
        )
    content = path.read_bytes() if limit is None else _head_bytes(path, limit)
    text = _decode(content, source.encoding, path)
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
    return text


def _without_unclosed_tail(
    text: str, records: pl.DataFrame, path: Path
) -> tuple[str, pl.DataFrame, str]:
    """A last record whose quote is never closed, cut off to be read on its own: (text
    without it, records without it, its line). Fails when the open quote swallowed more
    than that one line."""
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
    return text[:cut], records.slice(0, records.height - 1), text[cut:end].removesuffix("\r")


def _records_frame(
    parsed: pl.DataFrame,
    records: pl.DataFrame,
    header_fields: int,
    width: int,
    source: SourceSettings,
) -> tuple[pl.DataFrame, list[str]]:
    """The parsed records under their header names, each with its row number, its issue
    (blank, missing or extra fields) and any text beyond the header's columns: (frame, names)."""
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
        extra = beyond.list.head(pl.col("_fields") - n).list.join(source.delimiter)
        has_extra_text = pl.any_horizontal(
            pl.col(c).str.strip_chars().str.len_chars() > 0 for c in extra_cols
        ).fill_null(False)
    else:
        extra, has_extra_text = pl.lit(None, pl.String), pl.lit(False)
    fields = pl.Series("_fields", body.get_column("fields"))
    blank = pl.Series("_blank", body.get_column(BLANK))
    issue = (
        pl.when(pl.col("_blank"))
        .then(pl.lit(BLANK))
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
    return out, names


def excel_sheets(path: Path) -> list[str]:
    """The names of a workbook's sheets, in order."""
    try:
        import fastexcel

        return list(fastexcel.read_excel(str(path)).sheet_names)
    except Exception as exc:  # fastexcel raises its own kinds for a damaged or foreign file
        raise ContractError(
            f"cannot read the workbook ({type(exc).__name__}); check it opens in a spreadsheet "
            "program and is not password-protected",
            file=str(path),
            rule="unreadable",
        ) from None


def choose_sheet(path: Path, sheet: str | int | None) -> tuple[str, list[str]]:
    """The sheet to read (by name, by number from 1, or the first) and every sheet's name."""
    names = excel_sheets(path)
    if not names:
        raise ContractError("the workbook has no sheets", file=str(path), rule="empty_file")
    if sheet is None:
        return names[0], names
    if isinstance(sheet, int):
        if 1 <= sheet <= len(names):
            return names[sheet - 1], names
        raise ContractError(
            f"sheet = {sheet}, but the workbook has {len(names)} sheet(s)",
            file=str(path),
            rule="sheet",
        )
    for name in names:
        if name == sheet or name.strip().casefold() == sheet.strip().casefold():
            return name, names
    raise ContractError(
        f"the workbook has no sheet {sheet!r}; its sheets: {', '.join(repr(n) for n in names)}",
        file=str(path),
        rule="sheet",
    )


def sheet_note(sheet: str, names: list[str]) -> str:
    """Which sheet was read, in words: "sheet 'GP list' (the first of 2: 'GP list', 'Notes')"."""
    if len(names) == 1:
        return f"sheet {sheet!r} (the only one)"
    position = names.index(sheet) + 1
    where = "the first" if position == 1 else f"number {position}"
    return f"sheet {sheet!r} ({where} of {len(names)}: {', '.join(repr(n) for n in names)})"


def read_sheet(
    path: Path, sheet: str, *, header_row: int | None, n_rows: int | None = None
) -> pl.DataFrame:
    """One sheet, every cell as text (as CSV is read), empty rows and columns kept."""
    options: dict[str, Any] = {"header_row": header_row}
    if n_rows is not None:
        options["n_rows"] = n_rows
    try:
        frame = pl.read_excel(
            path,
            sheet_name=sheet,
            has_header=header_row is not None,
            infer_schema_length=0,
            drop_empty_rows=False,
            drop_empty_cols=False,
            raise_if_empty=False,
            read_options=options,
        )
    except Exception as exc:  # calamine's errors can quote a cell: its kind only
        raise ContractError(
            f"cannot read sheet {sheet!r} ({type(exc).__name__})", file=str(path), rule="unreadable"
        ) from None
    assert isinstance(frame, pl.DataFrame)
    renamed = {
        c: f"column_{i + 1}" for i, c in enumerate(frame.columns) if c.startswith("__UNNAMED__")
    }
    return frame.rename(renamed).select(pl.all().cast(pl.String))


def excel_header_row(path: Path, sheet: str, look: int = 50) -> int:
    """Rows above a sheet's header (a report title, notes): the header is the first row with as
    many filled cells as the fullest of the first `look` rows."""
    head = read_sheet(path, sheet, header_row=None, n_rows=look)
    if head.height == 0:
        return 0
    filled = head.select(
        pl.sum_horizontal(
            pl.col(c).str.strip_chars().str.len_chars().fill_null(0) > 0 for c in head.columns
        )
    ).to_series()
    widest = int(filled.max())  # type: ignore[arg-type]
    return next(i for i, n in enumerate(filled.to_list()) if n == widest)


def _read_excel(source: SourceSettings, sample_rows: int | None = None) -> pl.DataFrame:
    """A workbook's sheet (the configured one, else the first) as text columns, each row
    numbered from 1 after the header; a row with no filled cell is a blank line."""
    path = source.path
    sheet, names = choose_sheet(path, source.sheet)
    frame = read_sheet(path, sheet, header_row=source.skip_lines, n_rows=sample_rows)
    if not frame.columns:
        raise ContractError(f"sheet {sheet!r} is empty", file=str(path), rule="empty_file")
    log.info("%s: %s", path.name, sheet_note(sheet, names))
    reserved = sorted(RESERVED_COLUMNS & set(frame.columns))
    if reserved:
        raise ContractError(
            "the sheet uses a column name uprnlink reserves",
            file=str(path),
            column=reserved[0],
            row=1,
            rule="reserved_column",
        )
    empty = pl.all_horizontal(
        pl.col(c).str.strip_chars().str.len_chars().fill_null(0) == 0 for c in frame.columns
    )
    return frame.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(ROW),
        pl.when(empty).then(pl.lit(BLANK)).otherwise(pl.lit(None, pl.String)).alias(ROW_ISSUE),
    )


def read_extract(source: SourceSettings, sample_bytes: int | None = None) -> pl.DataFrame:
    """Read one extract as it is, every CSV column as text so that nothing is lost to inference.

    A CSV extract also gets `_row` (1 = first record after the header), `_row_issue` (a record
    with missing or extra fields, cut off inside a quote, or a blank line) and `_extra_fields`.
    With `sample_bytes`, only the records in about that many bytes from the start are read
    (`uprnlink check`).
    """
    path = source.path
    if not path.exists():
        raise ContractError("extract file not found", file=str(path), rule="file_missing")
    if path.stat().st_size == 0:
        raise ContractError("extract file is empty", file=str(path), rule="empty_file")
    if source.format == "excel":
        return _read_excel(source, None if sample_bytes is None else 20_000)
    if source.format == "parquet":
        try:
            frame = pl.read_parquet(path, n_rows=None if sample_bytes is None else 20_000)
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
    return _read_csv(source, sample_bytes)


def estimated_rows(source: SourceSettings) -> int:
    """About how many rows an extract holds, cheaply, to order work by (0 if unreadable): a
    Parquet file's own count, a text file's size over the length of its first lines, a
    workbook's size in bytes."""
    path = source.path
    try:
        size = path.stat().st_size
        if source.format == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if source.format == "excel":
            return size
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except Exception:  # an unreadable file is reported by its own ingest, not here
        return 0
    return size * max(head.count(b"\n"), 1) // max(len(head), 1)


SAMPLE_BYTES = 32 << 20
"""How much of an extract `uprnlink map` (and `uprnlink check`) reads: enough for many thousand
rows, never a whole multi-gigabyte file."""


def _head_text(path: Path, limit: int = SAMPLE_BYTES) -> tuple[str, str]:
    """The start of a text file, decoded (whole lines only), and its encoding as detected."""
    with path.open("rb") as fh:
        head = fh.read(limit)
    encoding = detect_encoding(head)
    codec = "utf-8-sig" if encoding in ("utf8", "utf-8") else encoding
    text = head.decode(codec, errors="replace")
    if len(head) == limit:  # cut at the last complete line
        text = text[: text.rfind("\n") + 1] or text
    return text.removeprefix("\ufeff"), encoding


def sniff_csv(path: Path) -> tuple[str, str, int]:
    """Delimiter, encoding and lines before the header of a CSV extract, from its start.

    The encoding is detected (`detect_encoding`); the delimiter is the one most of the first
    50 lines agree on (the same number of them per line); the header is the first line with
    that number, so a report title or export notes above it are skipped."""
    text, encoding = _head_text(path, 65_536)
    delimiter, skip = _sniff_text(text)
    return delimiter, encoding, skip


def _sniff_text(text: str) -> tuple[str, int]:
    """Delimiter and lines before the header, from decoded text."""
    # Delimiters inside quoted values do not count.
    lines = [re.sub(r'"[^"]*"', "", line) for line in text.splitlines()[:50]]
    best: tuple[tuple[int, int], str, int] | None = None
    for candidate in DELIMITER_CANDIDATES:
        counts = [line.count(candidate) for line in lines]
        agreeing = Counter(c for c in counts if c > 0).most_common(1)
        if agreeing:
            fields, n_lines = agreeing[0]
            if best is None or (n_lines, fields) > best[0]:
                best = ((n_lines, fields), candidate, counts.index(fields))
    if best is None:
        return ",", 0
    return best[1], best[2]


def read_sample(path: Path, rows: int = 5000) -> tuple[pl.DataFrame, str, str, int]:
    """The first `rows` rows of an extract, every column as text; with the delimiter,
    encoding and lines before the header found (CSV) or defaults (Parquet)."""
    if not path.is_file():
        raise ContractError("extract not found", file=str(path), rule="file_missing")
    if path.stat().st_size == 0:
        raise ContractError("extract file is empty", file=str(path), rule="empty_file")
    if path.suffix.lower() == ".parquet":
        try:
            frame = pl.read_parquet(path, n_rows=rows)
        except Exception as exc:  # polars raises several kinds for a damaged file
            raise ContractError(
                f"cannot read Parquet file: {type(exc).__name__}", file=str(path), rule="parquet"
            ) from None
        # Nested columns (lists, structs) hold no contract field: left out of the sample.
        text_columns = [
            pl.col(c).cast(pl.String)
            for c, dtype in frame.schema.items()
            if not dtype.is_nested() and dtype not in (pl.Binary, pl.Object)
        ]
        return frame.select(text_columns), ",", "utf8", 0
    text, encoding = _head_text(path)
    delimiter, skip = _sniff_text(text)
    body = "".join(text.splitlines(keepends=True)[skip:])
    try:
        frame = pl.read_csv(
            body.encode("utf-8"),
            separator=delimiter,
            infer_schema=False,
            n_rows=rows,
            truncate_ragged_lines=True,
        )
    except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError) as exc:
        raise ContractError(
            f"the extract cannot be read as CSV ({type(exc).__name__}); check it is a text "
            "file and its encoding",
            file=str(path),
            rule="unreadable",
        ) from None
    if "\x00" in body[:4096]:
        raise ContractError(
            "the extract holds NUL bytes: it is not a text file (or not in a text encoding "
            "uprnlink can detect)",
            file=str(path),
            rule="unreadable",
        )
    return frame, delimiter, "utf8" if encoding == "utf-8" else encoding, skip


def header_key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()
