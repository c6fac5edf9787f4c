"""Propose a source's column mapping from a new extract: `uprnlink map FILE --contract NAME`.

Every council and NHS system names its columns its own way (``NHS_NO``, ``NHSNumber``,
``Person_Birth_Date``, ``PCODE``). Before a new extract can run, its `[sources.NAME.columns]`
table must map each contract field onto one of its columns. This module reads the header and a
sample of rows and proposes that table, from two kinds of evidence per column:

- its **name**, against the contract field's name and common aliases used by UK council and NHS
  systems (normalised: case, spaces, underscores and punctuation ignored);
- its **values**, against the field's type, with the same standardisers the ingest uses: the
  share of non-empty values that are valid NHS numbers (Modulus 11), postcodes, UPRNs, dates
  (with the date format that parses most of them, day-first preferred when both orders do),
  sex codes, flags or the contract's allowed values.

A column is proposed for a field when its name matches, or, for the identifier types whose
values speak for themselves (NHS number, postcode, date of birth), when at least 90% of its
values are valid. Each field and each column is used once, strongest evidence first.

The output is TOML to paste into the run configuration, with the evidence as comments, plus a
list of contract fields left unmapped. Neither names nor counts include any data value: the
evidence is the column name and shares of valid values only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from uprnlink.errors import ContractError
from uprnlink.ingest import standardise as std
from uprnlink.ingest.contracts import Contract, FieldSpec
from uprnlink.ingest.headers import (
    name_score,
    normal_name,
    suggest_columns,
)
from uprnlink.ingest.readers import (
    choose_sheet,
    excel_header_row,
    read_sample,
    read_sheet,
    sheet_note,
)
from uprnlink.ingest.validate import (
    CODE_PATTERN,
    MAX_CODE_LENGTH,
    MAX_CODES_LISTED,
    PERSON_LEVEL_FIELDS,
)
from uprnlink.settings import EXCEL_SUFFIXES, GROUP_PLACEHOLDER

__all__ = [
    "DATE_FORMATS",
    "ColumnProposal",
    "MappingProposal",
    "propose_mapping",
    "read_sample",
    "suggest_columns",
]

DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%Y%m%d",
    "%d-%b-%Y",
    "%d %b %Y",
    "%d/%m/%y",
    "%Y/%m/%d",
    "%m/%d/%Y",
    std.EXCEL_DATE,
)
"""Date formats tried on a date column, in order of preference when several parse every value
(UK day-first before US month-first; spreadsheet serial numbers last, and only for a column
whose name says it holds the field)."""

# Types whose values identify the field on their own (no name evidence needed).
_SELF_EVIDENT = {"nhs_number", "postcode", "dob"}
_SELF_EVIDENT_SHARE = 0.9
# The patterns of ONS geography codes (E01 LSOAs, E05 wards, E06-E09 districts; W and S for
# Wales and Scotland), which identify a geography column on their own.
ONS_CODE_PATTERNS = {
    "oa": r"^(E00|W00|S00)[0-9]{6}$",
    "lsoa": r"^(E01|W01|S01)[0-9]{6}$",
    "msoa": r"^(E02|W02|S02)[0-9]{6}$",
    "ward": r"^(E05|W05|S13)[0-9]{6}$",
    "lad": r"^(E06|E07|E08|E09|W06|S12)[0-9]{6}$",
}
#: Lower layer super output areas ranked by the English Indices of Deprivation: 2019 (2011
#: LSOAs) and 2025 (2021 LSOAs). A rank column is read as deciles of this many areas.
IMD_AREAS = {"2019": 32_844, "2025": 33_755}
# A name: letters of any alphabet, then letters, apostrophes, spaces, dots or hyphens.
_NAME_PATTERN = r"^\p{L}[\p{L}' .\-]*$"


@dataclass(frozen=True)
class ValueEvidence:
    """What a column's sampled values say about a field type."""

    share: float  # of non-empty sampled values valid for the type
    what: str  # e.g. "99.2% valid NHS numbers"
    date_format: str | None = None
    ambiguous_order: bool = False


def _date_evidence(values: pl.Series, spec: FieldSpec, today: date) -> ValueEvidence:
    best: tuple[float, str] | None = None
    parsed_counts = {}
    for fmt in DATE_FORMATS:
        if spec.type == "dob":
            expr = std.dob_expr(pl.col("v"), [fmt], latest=today)
        else:
            expr = std.date_expr(pl.col("v"), [fmt])
        ok = pl.DataFrame({"v": values}).select(expr.is_not_null().mean()).item()
        share = float(ok or 0.0)
        parsed_counts[fmt] = share
        if best is None or share > best[0] + 1e-9:
            best = (share, fmt)
    assert best is not None
    share, fmt = best
    ambiguous = fmt == "%d/%m/%Y" and parsed_counts.get("%m/%d/%Y", 0.0) >= share - 1e-9
    label = "dates of birth" if spec.type == "dob" else "dates"
    return ValueEvidence(share, f"{share:.1%} {label} as {fmt}", fmt, ambiguous)


def best_date_format(
    values: pl.Series, spec: FieldSpec, settings: object
) -> tuple[str, float] | None:
    """The date format (of `DATE_FORMATS`) that reads the most of a date column's sampled
    values, with the share it reads; None when there are none."""
    if values.len() == 0:
        return None
    reference = getattr(settings, "reference_date", None) or date.today()
    evidence = _date_evidence(values, spec, reference)
    return (evidence.date_format, evidence.share) if evidence.date_format else None


def _value_evidence(values: pl.Series, spec: FieldSpec, today: date) -> ValueEvidence | None:
    """The share of a column's non-empty sampled values that fit the field's type."""
    if values.len() == 0:
        return None
    if spec.unique:
        share = values.n_unique() / values.len()
        return ValueEvidence(share, f"{share:.1%} distinct")
    t = spec.type
    if t in {"date", "dob"}:
        return _date_evidence(values, spec, today)
    frame = pl.DataFrame({"v": values})
    checks: dict[str, tuple[pl.Expr, str]] = {
        "nhs_number": (std.nhs_number_expr(pl.col("v")).is_not_null(), "valid NHS numbers"),
        "postcode": (std.postcode_expr(pl.col("v")).is_not_null(), "valid postcodes"),
        "uprn": (std.uprn_expr(pl.col("v")).is_not_null(), "valid UPRNs (1-12 digits)"),
        "sex": (
            std.sex_expr(pl.col("v")).is_not_null() | std.sex_not_known_expr(pl.col("v")),
            "sex codes",
        ),
        "flag": (std.flag_expr(pl.col("v")).is_not_null(), "yes/no flags"),
        "integer": (pl.col("v").str.contains(r"^\s*[+-]?[0-9]+\s*$"), "whole numbers"),
        "decimal": (pl.col("v").cast(pl.Float64, strict=False).is_not_null(), "numbers"),
        "forename": (pl.col("v").str.strip_chars().str.contains(_NAME_PATTERN), "names"),
        "surname": (pl.col("v").str.strip_chars().str.contains(_NAME_PATTERN), "names"),
    }
    if spec.name in ONS_CODE_PATTERNS:
        checks["string"] = (
            pl.col("v")
            .str.strip_chars()
            .str.to_uppercase()
            .str.contains(ONS_CODE_PATTERNS[spec.name]),
            "ONS codes of the geography",
        )
    if t == "enum" and spec.values:
        allowed = [v.upper() for v in spec.values]
        checks["enum"] = (
            pl.col("v").str.strip_chars().str.to_uppercase().is_in(allowed),
            "allowed values",
        )
    if t not in checks:
        return None
    expr, what = checks[t]
    share = float(frame.select(expr.mean()).item() or 0.0)
    return ValueEvidence(share, f"{share:.1%} {what}")


@dataclass(frozen=True)
class ColumnProposal:
    """The column proposed for one contract field, with its evidence."""

    field: str
    column: str
    score: float
    evidence: str
    date_format: str | None = None
    ambiguous_order: bool = False
    name_order: str | None = None
    parts: tuple[str, ...] = ()  # a composite value (a record key of two columns)
    from_rank: int | None = None  # a decile read from an IMD rank column


@dataclass(frozen=True)
class CodeProposal:
    """One local code of a coded column, its share of the values and the contract value it
    could be recoded to ("" for a code with no value; None when already a contract value)."""

    code: str
    share: float
    value: str | None
    found: bool  # False: no contract value was recognised (the line is left commented out)


@dataclass
class MappingProposal:
    """A proposed `[sources.NAME]` table for one extract."""

    source: str
    contract: Contract
    path: Path
    delimiter: str
    encoding: str
    skip_lines: int
    rows_sampled: int
    columns: list[ColumnProposal] = field(default_factory=list)
    unmapped: list[FieldSpec] = field(default_factory=list)
    unused_columns: list[str] = field(default_factory=list)
    person_groups: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    # Per coded field: its column's codes (or a note why they are not listed).
    codes: dict[str, list[CodeProposal] | str] = field(default_factory=dict)
    # With person groups: a person-level field found only in a column shared by the row (one
    # DOB for both parties), proposed commented out for the first group (`group = ...`).
    shared: list[ColumnProposal] = field(default_factory=list)
    sheet: str | None = None  # a workbook's sheet read, and all its sheets
    sheets: list[str] = field(default_factory=list)

    @property
    def missing_required(self) -> list[str]:
        """Required contract fields no column was found for."""
        return [f.name for f in self.unmapped if f.required]

    @property
    def table(self) -> str:
        """The config table the proposal belongs in: `reference` for a reference contract (the
        UPRN lookup, property classes, deprivation), else `sources`."""
        return "reference" if self.contract.kind == "reference" else "sources"

    def date_format(self) -> str | None:
        """The source-wide date format: the one most mapped date columns use."""
        formats = [c.date_format for c in self.columns if c.date_format]
        return max(set(formats), key=formats.count) if formats else None

    def to_toml(self, config_dir: Path | None = None) -> str:
        """The proposal as TOML for the run configuration, evidence in comments."""
        path = self.path
        if config_dir is not None:
            try:
                path = self.path.resolve().relative_to(config_dir.resolve())
            except ValueError:
                path = self.path.resolve()
        table = self.table
        lines = [
            f"# Proposed by `uprnlink map` from {self.rows_sampled:,} sampled rows; check each",
            "# line before use (evidence: column names and shares of valid values only).",
            *[f"# WARNING: {w}" for w in self.warnings],
            f"[{table}.{self.source}]",
            f'contract = "{self.contract.name}"',
            f"version = {self.contract.major}",
            f"path = {_toml_string(path.as_posix())}",
        ]
        if self.sheet is not None:
            lines.append(
                f"sheet = {_toml_string(self.sheet)}  # {sheet_note(self.sheet, self.sheets)}"
            )
            if self.skip_lines:
                lines.append(f"skip_lines = {self.skip_lines}  # rows above the header")
        elif self.path.suffix.lower() != ".parquet":
            if self.delimiter != ",":
                lines.append(f"delimiter = {_toml_string(self.delimiter)}")
            if self.encoding != "utf8":
                lines.append(f"encoding = {_toml_string(self.encoding)}")
            if self.skip_lines:
                lines.append(f"skip_lines = {self.skip_lines}  # lines above the header")
        if self.person_groups:
            tags = ", ".join(_toml_string(t) for t in self.person_groups)
            lines.append(f"person_groups = [{tags}]  # several people per row: one record each")
        default_format = self.date_format()
        if default_format:
            lines.append(f"date_format = {_toml_string(default_format)}")
        lines += ["", f"[{table}.{self.source}.columns]"]
        for c in self.columns:
            if c.parts:
                value = "[" + ", ".join(_toml_string(p) for p in c.parts) + "]"
            elif c.from_rank:
                value = f"{{ column = {_toml_string(c.column)}, from_rank = {c.from_rank} }}"
            elif c.date_format and c.date_format != default_format:
                value = f"{{ column = {_toml_string(c.column)}, format = {_toml_string(c.date_format)} }}"
            elif c.name_order:
                value = (
                    f"{{ column = {_toml_string(c.column)}, "
                    f"name_order = {_toml_string(c.name_order)} }}"
                )
            else:
                value = _toml_string(c.column)
            note = c.evidence + (
                "; day/month order ambiguous, UK day-first assumed" if c.ambiguous_order else ""
            )
            lines.append(f"{c.field} = {value}  # {note}")
        shared = {c.field: c for c in self.shared}
        for f in self.unmapped:
            if f.name in shared:
                c = shared[f.name]
                lines.append(
                    f"# {f.name} = {{ column = {_toml_string(c.column)}, group = "
                    f"{_toml_string(self.person_groups[0])} }}  # NOT MAPPED: one column for "
                    f"every group ({c.evidence}); uncomment only if it is this group's"
                )
                continue
            kind = "REQUIRED, not found" if f.required else "optional, not found"
            lines.append(f"# {f.name} = ...  # {kind}")
        if self.unused_columns:
            lines.append(
                f"# {len(self.unused_columns)} column(s) not mapped (ignored by the ingest): "
                + ", ".join(self.unused_columns)
            )
        for fname, codes in self.codes.items():
            lines += self._recode_lines(fname, codes)
        return "\n".join(lines) + "\n"

    def _recode_lines(self, fname: str, codes: list[CodeProposal] | str) -> list[str]:
        """A `[sources.NAME.recode.FIELD]` table for a coded column's local codes."""
        column = next((c.column for c in self.columns if c.field == fname), "?")
        spec = self.contract.field(fname)
        allowed = (
            ", ".join(spec.values)
            if spec.type == "enum"
            else "M, F"
            if spec.type == "sex"
            else "Y, N"
        )
        if isinstance(codes, str):
            return ["", f"# {fname} ({column}): {codes}"]
        if all(c.value is None for c in codes):
            return []
        out = [
            "",
            f"# {column}: {len(codes)} distinct code(s) in the sample; contract values: {allowed};",
            '# "" = a known code with no contract value (null, not counted as unrecoded)',
            f"[{self.table}.{self.source}.recode.{fname}]",
        ]
        for c in codes:
            share = f"{c.share:.1%} of values"
            if c.value is None:
                out.append(f"# {_toml_string(c.code)} is a contract value  # {share}")
            elif c.found:
                out.append(f"{_toml_string(c.code)} = {_toml_string(c.value)}  # {share}")
            else:
                out.append(
                    f'# {_toml_string(c.code)} = ""  # {share}; no contract value recognised: '
                    'map it to one, or to ""'
                )
        return out


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return f'"{escaped}"'


@dataclass(frozen=True)
class _Sample:
    """The first rows of an extract, read as the pipeline would read it."""

    frame: pl.DataFrame
    delimiter: str
    encoding: str
    skip: int
    """Lines before the header (an Excel sheet: rows before its header row)."""
    sheet: str | None = None
    sheets: tuple[str, ...] = ()


def _read_mapping_sample(path: Path, rows: int, sheet_choice: str | int | None) -> _Sample:
    """Up to `rows` rows of a delimited file, or of a workbook's chosen sheet without its
    empty rows."""
    if path.suffix.lower() not in EXCEL_SUFFIXES:
        sample, delimiter, encoding, skip = read_sample(path, rows)
        return _Sample(sample, delimiter, encoding, skip)
    if not path.is_file():
        raise ContractError("extract not found", file=str(path), rule="file_missing")
    sheet, sheets = choose_sheet(path, sheet_choice)
    skip = excel_header_row(path, sheet)
    sample = read_sheet(path, sheet, header_row=skip, n_rows=rows)
    filled = pl.any_horizontal(
        pl.col(c).str.strip_chars().str.len_chars().fill_null(0) > 0 for c in sample.columns
    )
    sample = sample.filter(filled) if sample.columns else sample
    return _Sample(sample, ",", "utf8", skip, sheet, tuple(sheets))


def propose_mapping(
    path: Path,
    contract: Contract,
    source: str | None = None,
    *,
    rows: int = 5000,
    today: date | None = None,
    sheet_choice: str | int | None = None,
) -> MappingProposal:
    """Propose the column mapping of the extract at `path` onto `contract`."""
    today = today or date.today()
    read = _read_mapping_sample(path, rows, sheet_choice)
    sample = read.frame
    _check_header(sample.columns, path)
    groups = detect_person_groups(sample.columns, contract)
    # With several people per row, each person field is read from its group's columns: the
    # candidates are the shared columns and one `{group}` column per repeated field.
    stacked = _stack_groups(sample, groups) if groups else sample
    columns = stacked.columns
    present = {}
    for col in columns:
        values = stacked.get_column(col).str.strip_chars()
        present[col] = values.filter(values.is_not_null() & (values != ""))
    candidates = _column_candidates(columns, present, contract, today)
    chosen, used = _choose_columns(candidates, columns, groups)
    _full_name(chosen, used, columns, present, contract)
    warnings: list[str] = []
    shared = _shared_person_columns(candidates, chosen, used, groups, warnings) if groups else []
    for spec in contract.fields:
        if _is_record_key(spec):
            row_key = _record_key(sample, spec, groups, chosen, warnings)
            if row_key is not None:
                chosen[spec.name] = row_key
                used.update(row_key.parts or (row_key.column,))
    _rank_deciles(chosen, used, columns, present, contract)
    order = {name: i for i, name in enumerate(contract.field_names)}
    codes = {
        f: _codes(present[c.column], contract.field(f))
        for f, c in chosen.items()
        if contract.field(f).is_coded
    }
    own = {col for by_tag in (groups.columns.values() if groups else []) for col in by_tag.values()}
    return MappingProposal(
        source=source or contract.name,
        contract=contract,
        path=path,
        delimiter=read.delimiter,
        encoding=read.encoding,
        skip_lines=read.skip,
        rows_sampled=sample.height,
        columns=sorted(chosen.values(), key=lambda c: order[c.field]),
        unmapped=[f for f in contract.fields if f.name not in chosen],
        unused_columns=[
            c
            for c in sample.columns
            if c not in used and not (c in own and any(_group_of(c, groups, t) for t in used))
        ],
        person_groups=groups.tags if groups else (),
        warnings=warnings,
        shared=shared,
        codes={f: v for f, v in codes.items() if v},
        sheet=read.sheet,
        sheets=list(read.sheets),
    )


def _column_candidates(
    columns: list[str], present: dict[str, pl.Series], contract: Contract, today: date
) -> list[ColumnProposal]:
    """Every (field, column) pair with evidence for it, scored by name and values. Record
    keys and full-name columns are left to `_record_key` and `_full_name`."""
    evidence: dict[tuple[str, str, tuple[str, ...], bool, str], ValueEvidence | None] = {}
    candidates: list[ColumnProposal] = []
    for spec in contract.fields:
        if _is_record_key(spec):
            continue  # a key of a column or of several (`_record_key`)
        for col in columns:
            if spec.type in ("forename", "surname") and _is_full_name(col):
                continue  # both parts of a full name (`_full_name`), never one by spelling
            key = (col, spec.type, spec.values, spec.unique, spec.name)
            if key not in evidence:
                evidence[key] = _value_evidence(present[col], spec, today)
            candidate = _scored_candidate(spec, col, evidence[key])
            if candidate is not None:
                candidates.append(candidate)
    return candidates


def _scored_candidate(spec: FieldSpec, col: str, ev: ValueEvidence | None) -> ColumnProposal | None:
    """Column `col` as a candidate for `spec`: its name's score plus its values' share, or
    by values alone for identifiers that cannot be mistaken; None when there is no case."""
    by_name, name_why = name_score(_without_group(col), spec)
    if by_name == 0:
        # Values alone: only for identifier types that cannot be mistaken.
        self_evident = spec.type in _SELF_EVIDENT or spec.name in ONS_CODE_PATTERNS
        if not self_evident or ev is None or ev.share < _SELF_EVIDENT_SHARE:
            return None
        if ev.date_format == std.EXCEL_DATE:  # any column of small integers would do
            return None
        score, why = 0.5 * ev.share, ev.what
    else:
        value_share = ev.share if ev is not None else 0.5
        if ev is not None and ev.share < 0.5 and spec.type not in {"string", "enum"}:
            # A matching name whose values do not fit is weak evidence.
            value_share = ev.share / 2
        score = by_name + value_share
        why = f"{name_why}; {ev.what}" if ev is not None else name_why
    return ColumnProposal(
        spec.name,
        col,
        round(score, 4),
        why,
        ev.date_format if ev is not None else None,
        ev.ambiguous_order if ev is not None else False,
    )


def _choose_columns(
    candidates: list[ColumnProposal], columns: list[str], groups: PersonGroups | None
) -> tuple[dict[str, ColumnProposal], set[str]]:
    """Best candidate first, each field and each column used once: (field -> proposal,
    columns used)."""
    chosen: dict[str, ColumnProposal] = {}
    used: set[str] = set()
    for c in sorted(candidates, key=lambda c: (-c.score, columns.index(c.column))):
        if c.field in chosen or c.column in used:
            continue
        if groups and (GROUP_PLACEHOLDER in c.column) != (c.field in PERSON_FIELDS):
            continue  # a person's own field comes from the group's columns, and only those
        chosen[c.field] = c
        used.add(c.column)
    return chosen, used


# ------------------------------------------------------------------ record keys

#: Contract fields that name a person rather than a row: with person groups, read per group.
PERSON_FIELDS = frozenset(
    {"forename", "surname", "dob", "sex", "nhs_number", "person_type", "date_of_death"}
)


def _is_record_key(spec: FieldSpec) -> bool:
    return spec.unique and spec.type == "string" and spec.name == "record_id"


def _record_key(
    rows: pl.DataFrame,
    spec: FieldSpec,
    groups: PersonGroups | None,
    chosen: dict[str, ColumnProposal],
    warnings: list[str],
) -> ColumnProposal | None:
    """The row key: a column whose values are all present and distinct, else the pair of
    columns whose combination is (a reference and a member number, a claim and a person
    sequence, a person id and a service start). Without one, the best-named column with a
    warning giving its share of distinct values."""
    own = {c for by_tag in (groups.columns.values() if groups else []) for c in by_tag.values()}
    shared = [c for c in rows.columns if c not in own]
    n = rows.height
    if n == 0 or not shared:
        return None
    filled = {
        c: int(rows.get_column(c).str.strip_chars().str.len_chars().fill_null(0).gt(0).sum())
        for c in shared
    }
    distinct = {c: rows.get_column(c).str.strip_chars().n_unique() for c in shared}
    names = {c: name_score(c, spec) for c in shared}
    # Columns holding a person's data are no key; a reference column may serve as both.
    taken = {
        col
        for f, c in chosen.items()
        if f in PERSON_FIELDS or f in ("postcode", "uprn", "address_line_1")
        for col in (c.parts or (c.column,))
    }

    def share(c: str) -> float:
        return distinct[c] / n

    singles = [c for c in shared if filled[c] == n and distinct[c] == n and c not in taken]
    singles.sort(key=lambda c: (-names[c][0], shared.index(c)))
    if singles:
        c = singles[0]
        why = names[c][1] or "values"
        return ColumnProposal(spec.name, c, 2.0, f"{why}; 100.0% distinct, none blank")
    keyish = [c for c in shared if names[c][0] > 0 and filled[c] == n and c not in taken]
    starts = [chosen["start_date"].column] if "start_date" in chosen else []
    pairs = [
        (a, b)
        for i, a in enumerate(keyish)
        for b in [*keyish[i + 1 :], *starts]
        if a != b and filled[b] == n
    ]
    for a, b in sorted(pairs, key=lambda p: -(names[p[0]][0] + names[p[1]][0]))[:200]:
        if rows.select(pl.struct(a, b).n_unique()).item() == n:
            repeats = [
                f"{c} repeats ({n / distinct[c]:.1f} rows per value: the id of a person or a "
                "group, not of a row)"
                for c in (a, b)
                if distinct[c] < n and names[c][0] > 0
            ]
            why = "no column is unique, this pair is (100.0% distinct)"
            if repeats:
                why += "; " + "; ".join(repeats)
            return ColumnProposal(spec.name, a, 1.5, why, parts=(a, b))
    ranked = sorted(shared, key=lambda c: (-names[c][0], -share(c), shared.index(c)))
    best = ranked[0]
    warnings.append(
        f"record_id: no column, nor pair of reference columns, is unique in the sample; the "
        f"best candidate {best!r} is {share(best):.1%} distinct, so rows sharing a value would "
        "be quarantined as duplicates: find the row key in the source system's documentation "
        "(a list of columns is allowed)"
    )
    return ColumnProposal(
        spec.name, best, 0.1, f"NOT UNIQUE: {share(best):.1%} distinct; see the warning"
    )


# ------------------------------------------------------------------ person groups


def _shared_person_columns(
    candidates: list[ColumnProposal],
    chosen: dict[str, ColumnProposal],
    used: set[str],
    groups: PersonGroups,
    warnings: list[str],
) -> list[ColumnProposal]:
    """Person-level fields (date of birth, NHS number, sex) with no column per group but a
    column shared by the whole row: never mapped (each person would take the same value),
    named in a warning, and offered commented out for one group."""
    out = []
    for fname in PERSON_LEVEL_FIELDS:
        if fname in chosen:
            continue
        shared = [
            c
            for c in candidates
            if c.field == fname
            and GROUP_PLACEHOLDER not in c.column
            and c.column not in used
            and c.score >= 1.0
        ]
        if not shared:
            continue
        best = max(shared, key=lambda c: c.score)
        out.append(best)
        warnings.append(
            f"{fname}: column {best.column!r} is one {fname} for every person group "
            f"({', '.join(groups.tags)}), so it is not mapped: each group's record would take "
            f"the same value. If it is one group's (often the first), map it to that group "
            f"only (the commented {fname} line); see docs/bad-input.md"
        )
    return out


_ROLE_WORDS = (
    "lead", "joint", "main", "first", "second", "primary", "secondary", "claimant", "partner",
    "applicant", "tenant", "spouse",
)  # fmt: skip


@dataclass(frozen=True)
class PersonGroups:
    """Repeated people in one row: the group tags, and for each `{group}` column name the
    file's column of each tag."""

    tags: tuple[str, ...]
    columns: dict[str, dict[str, str]]


def _group_splits(column: str) -> list[tuple[str, str]]:
    """Each way of reading a column name as a template and a group tag: a run of digits
    (`P1_FORENAME`, `FORENAME_2`, `MEMBER3_DOB`) or a role word (`LEAD_FORENAME`)."""
    out = [
        (column[: m.start()] + GROUP_PLACEHOLDER + column[m.end() :], m.group())
        for m in re.finditer(r"[0-9]+", column)
    ]
    for m in re.finditer(r"[A-Za-z]+", column):
        word = m.group()
        parts = re.findall(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|[a-z]+", word)
        offset = m.start()
        for part in parts:
            at = column.index(part, offset)
            offset = at + len(part)
            if part.lower() in _ROLE_WORDS:
                out.append((column[:at] + GROUP_PLACEHOLDER + column[at + len(part) :], part))
    return out


def _without_group(column: str) -> str:
    """A `{group}` column's name without the placeholder, for scoring against field names."""
    return column.replace(GROUP_PLACEHOLDER, " ")


def _group_of(column: str, groups: PersonGroups | None, template: str) -> bool:
    return bool(groups) and column in (groups.columns.get(template, {}) if groups else {}).values()


def detect_person_groups(columns: Sequence[str], contract: Contract) -> PersonGroups | None:
    """Repeated person columns in a header (`P1_FORENAME ... P2_FORENAME`), if any: at least
    two of a person's own fields (names, date of birth, sex, NHS number) each repeated under
    the same two or more tags."""
    if contract.kind != "person_source":
        return None
    templates: dict[str, dict[str, str]] = {}
    for column in columns:
        for template, tag in _group_splits(column):
            templates.setdefault(template, {})[tag] = column
    person = [f for f in contract.fields if f.name in PERSON_FIELDS]
    by_tags: dict[frozenset[str], list[str]] = {}
    for template, tagged in templates.items():
        if len(tagged) < 2:
            continue
        name = _without_group(template)
        if not any(name_score(name, f)[0] >= 0.8 for f in person) and normal_name(name) not in (
            FULL_NAME_ALIASES
        ):
            continue
        by_tags.setdefault(frozenset(tagged), []).append(template)
    if not by_tags:
        return None

    def weight(found: list[str]) -> int:
        # A full name ("Lead Name", "Joint Name") is a forename and a surname.
        return sum(2 if normal_name(_without_group(t)) in FULL_NAME_ALIASES else 1 for t in found)

    tags, found = max(by_tags.items(), key=lambda kv: (weight(kv[1]), len(kv[0])))
    if weight(found) < 2:
        return None
    # Templates with these tags and perhaps more (a third party with only a name).
    chosen = {
        t: {g: templates[t][g] for g in tags}
        for t, tagged in templates.items()
        if tags <= set(tagged) and t in {x for v in by_tags.values() for x in v}
    }
    first_seen = {tag: min(columns.index(chosen[t][tag]) for t in chosen) for tag in tags}
    ordered = sorted(tags, key=lambda g: (int(g) if g.isdigit() else 10**6, first_seen[g]))
    return PersonGroups(tuple(ordered), chosen)


def _stack_groups(sample: pl.DataFrame, groups: PersonGroups) -> pl.DataFrame:
    """The sample with one row per group: shared columns, and each `{group}` column."""
    own = {c for by_tag in groups.columns.values() for c in by_tag.values()}
    shared = [c for c in sample.columns if c not in own]
    frames = [
        sample.select(
            *shared,
            *[pl.col(by_tag[tag]).alias(t) for t, by_tag in groups.columns.items()],
        )
        for tag in groups.tags
    ]
    return pl.concat(frames)


# ------------------------------------------------------------------ coded columns

#: Words by which systems name the contract's coded values (besides the value itself).
CODE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "activity_type": {
        "AE": (
            "a e",
            "a and e",
            "a&e",
            "accident and emergency",
            "accident emergency",
            "emergency department",
            "ed",
            "ed attendance",
            "type 1",
            "type 2",
            "type 3",
            "urgent treatment",
            "utc",
            "minor injuries",
            "attendance",
            "attend",
        ),
        "EMERGENCY_ADMISSION": (
            "emergency admission",
            "non elective",
            "nonelective",
            "nel",
            "em adm",
            "emergency adm",
            "admitted",
            "admission",
            "emergency inpatient",
        ),
    },
    "support_setting": {
        "COMMUNITY": (
            "community",
            "home care",
            "homecare",
            "domiciliary",
            "direct payment",
            "direct payments",
            "dp",
            "day care",
            "day centre",
            "day services",
            "supported living",
            "extra care",
            "reablement",
            "shared lives",
            "telecare",
            "equipment",
            "meals",
            "carer",
            "home support",
        ),
        "RESIDENTIAL": ("residential", "care home", "res", "residential care", "respite"),
        "NURSING": ("nursing", "nursing home", "nursing care"),
    },
    "person_type": {
        "CLAIMANT": ("claimant", "applicant", "main", "lead", "head", "main claimant"),
        "PARTNER": ("partner", "spouse", "joint", "civil partner", "joint claimant"),
        "": (
            "dependant",
            "dependent",
            "dependants",
            "child",
            "non dependant",
            "non dep",
            "nondep",
            "non dependent",
        ),
    },
    "benefit_type": {
        "HB": ("housing benefit", "hb only"),
        "CTR": (
            "council tax reduction",
            "council tax support",
            "ctr",
            "cts",
            "ctrs",
            "ctr only",
            "cts only",
        ),
        "HB+CTR": ("hb ctr", "hb and ctr", "hb cts", "hb and cts", "both", "hb ctrs"),
    },
    "tenure_type": {
        "FLEXIBLE": ("fixed term", "flexible tenancy"),
        "TEMPORARY": ("temp", "temporary accommodation"),
        "INTRODUCTORY": ("intro",),
        "LICENCE": ("license",),
    },
    "sex": {
        "M": ("male", "man", "boy", "m"),
        "F": ("female", "woman", "girl", "f"),
        "": ("unknown", "not known", "not stated", "indeterminate", "not specified", "u", "x"),
    },
}


def _code_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9&]+", text.lower().replace("&", " & ").replace(" & ", " and "))


def propose_code(code: str, spec: FieldSpec) -> str | None:
    """The contract value a local code most likely means ("" for a known code with no value),
    or None: the value whose name or known wording appears in the code, longest first."""
    words = _code_words(code)
    scores: dict[str, int] = {}
    phrases = dict(CODE_WORDS.get(spec.name if spec.name in CODE_WORDS else spec.type, {}))
    for value in spec.values:
        own = (value.lower().replace("_", " ").replace("+", " "),)
        phrases[value] = (*phrases.get(value, ()), *own)
    for value, options in phrases.items():
        for phrase in options:
            target = _code_words(phrase)
            n = len(target)
            if n and any(words[i : i + n] == target for i in range(len(words) - n + 1)):
                scores[value] = max(scores.get(value, 0), sum(len(w) for w in target))
    if not scores:
        return None
    best = max(scores.values())
    winners = [v for v, sc in scores.items() if sc == best]
    return winners[0] if len(winners) == 1 else None


def _codes(values: pl.Series, spec: FieldSpec) -> list[CodeProposal] | str:
    """A coded column's distinct codes with proposed contract values; a note instead when
    the column does not hold a short list of short codes (then it may hold personal data,
    which is never printed)."""
    if values.len() == 0:
        return []
    counts = values.value_counts(sort=True, name="n")
    n = counts.height
    code_col = counts.columns[0]
    if n > MAX_CODES_LISTED or not bool(
        counts.select(
            (
                (pl.col(code_col).str.len_chars() <= MAX_CODE_LENGTH)
                & pl.col(code_col).str.contains(CODE_PATTERN)
            ).all()
        ).item()
    ):
        return f"{n} distinct values: not a short code list, so not listed (check the mapping)"
    out = []
    total = values.len()
    for code, k in counts.iter_rows():
        frame = pl.DataFrame({"v": [code]})
        if spec.type == "enum":
            valid = std.code_key(code) in spec.values
        elif spec.type == "sex":
            valid = frame.select(
                std.sex_expr(pl.col("v")).is_not_null() | std.sex_not_known_expr(pl.col("v"))
            ).item()
        else:
            valid = frame.select(std.flag_expr(pl.col("v")).is_not_null()).item()
        if valid:
            out.append(CodeProposal(code, k / total, None, True))
            continue
        value = propose_code(code, spec)
        out.append(
            CodeProposal(code, k / total, value if value is not None else "", value is not None)
        )
    return out


# ------------------------------------------------------------------ IMD ranks


def _rank_deciles(
    chosen: dict[str, ColumnProposal],
    used: set[str],
    columns: Sequence[str],
    present: dict[str, pl.Series],
    contract: Contract,
) -> None:
    """With no IMD decile column, an IMD rank column read as deciles (`from_rank`): of the
    2025 indices' 33,755 LSOAs for 2021 LSOA codes (or ranks beyond 32,844), else the 2019
    indices' 32,844."""
    if "imd_decile" not in contract.field_names or "imd_decile" in chosen:
        return
    for col in columns:
        words = normal_name(col).split()
        if col in used or "rank" not in words or not ({"imd", "deprivation"} & set(words)):
            continue
        if {"income", "employment", "education", "health", "crime", "barriers", "living"} & set(
            words
        ):
            continue  # a domain's rank, not the index's
        ranks = present[col].cast(pl.Int64, strict=False).drop_nulls()
        if ranks.len() == 0:
            continue
        lsoa = chosen.get("lsoa")
        newer = int(ranks.max()) > IMD_AREAS["2019"] or (  # type: ignore[arg-type]
            lsoa is not None and "21" in lsoa.column
        )
        areas = IMD_AREAS["2025" if newer else "2019"]
        chosen["imd_decile"] = ColumnProposal(
            "imd_decile",
            col,
            1.0,
            f"IMD rank read as deciles of {areas:,} LSOAs (the {'2025' if newer else '2019'} "
            "indices): check against the file's notes",
            from_rank=areas,
        )
        used.add(col)
        return


FULL_NAME_ALIASES = (
    "name",
    "full name",
    "fullname",
    "patient name",
    "client name",
    "person name",
    "customer name",
    "resident name",
    "tenant name",
    "claimant name",
    "service user name",
)


def _full_name(
    chosen: dict[str, ColumnProposal],
    used: set[str],
    columns: Sequence[str],
    present: dict[str, pl.Series],
    contract: Contract,
) -> None:
    """With no forename or surname column, a full-name column serves both (name_order set
    from its values: a comma, or a first word in capitals before mixed case, means surname
    first)."""
    wanted = [f for f in contract.fields if f.type in ("forename", "surname")]
    if not wanted or any(f.name in chosen for f in wanted):
        return
    for col in columns:
        if col in used or not _is_full_name(col):
            continue
        values = present[col]
        if values.len() == 0:
            continue
        comma = values.str.contains(",").sum() / values.len()
        capital_first = values.str.contains(r"^[A-Z][A-Z'\-]+\s+[A-Z][a-z]").sum() / values.len()
        order = "surname_first" if max(comma, capital_first) >= 0.5 else "forename_first"
        why = (
            f"full name ({comma:.0%} with a comma, {capital_first:.0%} SURNAME Forename); "
            "check the order"
        )
        for f in wanted:
            chosen[f.name] = ColumnProposal(f.name, col, 1.0, why, name_order=order)
        used.add(col)
        return


def _is_full_name(column: str) -> bool:
    """Whether a column (or a `{group}` column: `{group} Name`) is named as a full name."""
    return normal_name(_without_group(column)) in FULL_NAME_ALIASES


def _check_header(columns: Sequence[str], path: Path) -> None:
    """Refuse a file whose header line looks like a record (no header row): its "column
    names" would be a person's data, and the proposal prints column names."""
    names = pl.DataFrame({"v": [c.strip() for c in columns]})
    looks_like_data = names.select(
        (
            std.nhs_number_expr(pl.col("v")).is_not_null()
            | std.postcode_expr(pl.col("v")).is_not_null()
            | std.date_expr(pl.col("v"), DATE_FORMATS[:-1]).is_not_null()
            | pl.col("v").str.contains(r"^[0-9][0-9 .,/-]*$")
        ).sum()
    ).item()
    if looks_like_data >= 2:
        raise ContractError(
            f"{looks_like_data} of the {len(columns)} header cells look like values (numbers, "
            "dates, postcodes), not column names: the file seems to have no header row, which "
            "uprnlink needs (its cells are not shown)",
            file=str(path),
            row=1,
            rule="missing_header",
        )
