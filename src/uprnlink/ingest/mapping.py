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

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from uprnlink.errors import ContractError
from uprnlink.ingest import standardise as std
from uprnlink.ingest.contracts import Contract, FieldSpec
from uprnlink.ingest.readers import read_sample

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

ALIASES: dict[str, tuple[str, ...]] = {
    "record_id": (
        "id",
        "record id",
        "row id",
        "patient id",
        "person id",
        "client id",
        "local patient id",
        "local patient identifier",
        "party ref",
        "party id",
        "customer ref",
        "system id",
        "unique id",
        "pas id",
        "mosaic id",
    ),
    "forename": (
        "forename",
        "forenames",
        "first name",
        "firstname",
        "first names",
        "given name",
        "given names",
        "person given name",
        "christian name",
        "fname",
    ),
    "surname": (
        "surname",
        "last name",
        "lastname",
        "family name",
        "person family name",
        "sname",
        "lname",
    ),
    "dob": (
        "dob",
        "date of birth",
        "birth date",
        "birthdate",
        "person birth date",
        "birth dt",
        "d o b",
    ),
    "sex": (
        "sex",
        "gender",
        "sex code",
        "gender code",
        "person stated gender code",
        "person gender code",
        "stated gender",
    ),
    "nhs_number": (
        "nhs number",
        "nhs no",
        "nhsno",
        "nhs num",
        "nhs",
        "nhs number value",
        "patient nhs number",
    ),
    "address_line_1": (
        "address line 1",
        "address 1",
        "address1",
        "addr1",
        "add1",
        "address",
        "street",
        "house",
    ),
    "postcode": (
        "postcode",
        "post code",
        "pcode",
        "postal code",
        "pc",
        "postcode of usual address",
        "patient postcode",
    ),
    "uprn": (
        "uprn",
        "property uprn",
        "address uprn",
        "unique property reference number",
        "uprn number",
    ),
    "start_date": (
        "start date",
        "start",
        "date from",
        "from date",
        "valid from",
        "effective from",
        "registration date",
        "date registered",
        "reg date",
        "liability start",
        "tenancy start",
        "claim start",
        "admission date",
        "arrival date",
        "activity date",
        "service start",
    ),
    "end_date": (
        "end date",
        "end",
        "date to",
        "to date",
        "valid to",
        "effective to",
        "deregistration date",
        "date deregistered",
        "dereg date",
        "liability end",
        "tenancy end",
        "claim end",
        "discharge date",
        "service end",
    ),
    "date_of_death": ("date of death", "dod", "death date"),
}
"""Common names of the contract fields in council and NHS extracts (normalised spelling)."""

# Last words of a column name that say it holds a reference (a candidate record key).
_KEY_WORDS = {"id", "ref", "reference", "key", "no", "number", "seq", "identifier"}
# Types whose values identify the field on their own (no name evidence needed).
_SELF_EVIDENT = {"nhs_number", "postcode", "dob"}
_SELF_EVIDENT_SHARE = 0.9
# A name: letters of any alphabet, then letters, apostrophes, spaces, dots or hyphens.
_NAME_PATTERN = r"^\p{L}[\p{L}' .\-]*$"
# Last words of a column name that mark the start or the end of a period.
_PERIOD_WORDS = {
    "start_date": {"from", "start", "started", "begin", "commenced"},
    "end_date": {"to", "end", "ended", "until", "ceased"},
}


def _normal(name: str) -> str:
    """A header or field name in one spelling: lower case words split on anything else, and
    on camelCase boundaries (``NHSNumber`` -> ``nhs number``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(re.findall(r"[a-z0-9]+", spaced.lower()))


def _name_score(header: str, spec: FieldSpec) -> tuple[float, str]:
    """How well a header names a field (0-1) and why."""
    h = _normal(header)
    if not h:
        return 0.0, ""
    candidates = (_normal(spec.name), *ALIASES.get(spec.name, ()))
    if h in candidates:
        return 1.0, "name"
    if h.replace(" ", "") in {c.replace(" ", "") for c in candidates}:
        return 1.0, "name"
    words = f" {h} "
    for c in candidates:
        if len(c) >= 3 and f" {c} " in words:
            return 0.8, f"name contains {c!r}"
    field_words = _normal(spec.name).split()
    if len(field_words) >= 2 and h.split()[0] == "".join(w[0] for w in field_words):
        return 0.7, "name is the field's initials"
    best = max(difflib.SequenceMatcher(None, h, c).ratio() for c in candidates)
    if best >= 0.85:
        return 0.6 * best, "name close"
    if h.split()[-1] in _PERIOD_WORDS.get(spec.name, ()):
        return 0.8, f"name ends {h.split()[-1]!r}"
    if spec.unique and h.split()[-1] in _KEY_WORDS:
        return 0.5, "name of a reference"
    return 0.0, ""


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

    @property
    def missing_required(self) -> list[str]:
        """Required contract fields no column was found for."""
        return [f.name for f in self.unmapped if f.required]

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
        lines = [
            f"# Proposed by `uprnlink map` from {self.rows_sampled:,} sampled rows; check each",
            "# line before use (evidence: column names and shares of valid values only).",
            f"[sources.{self.source}]",
            f'contract = "{self.contract.name}"',
            f"version = {self.contract.major}",
            f"path = {_toml_string(path.as_posix())}",
        ]
        if self.path.suffix.lower() != ".parquet":
            if self.delimiter != ",":
                lines.append(f"delimiter = {_toml_string(self.delimiter)}")
            if self.encoding != "utf8":
                lines.append(f"encoding = {_toml_string(self.encoding)}")
            if self.skip_lines:
                lines.append(f"skip_lines = {self.skip_lines}  # lines above the header")
        default_format = self.date_format()
        if default_format:
            lines.append(f"date_format = {_toml_string(default_format)}")
        lines += ["", f"[sources.{self.source}.columns]"]
        for c in self.columns:
            if c.date_format and c.date_format != default_format:
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
        for f in self.unmapped:
            kind = "REQUIRED, not found" if f.required else "optional, not found"
            lines.append(f"# {f.name} = ...  # {kind}")
        if self.unused_columns:
            lines.append(
                f"# {len(self.unused_columns)} column(s) not mapped (ignored by the ingest): "
                + ", ".join(self.unused_columns)
            )
        return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return f'"{escaped}"'


def propose_mapping(
    path: Path,
    contract: Contract,
    source: str | None = None,
    *,
    rows: int = 5000,
    today: date | None = None,
) -> MappingProposal:
    """Propose the column mapping of the extract at `path` onto `contract`."""
    today = today or date.today()
    sample, delimiter, encoding, skip = read_sample(path, rows)
    columns = sample.columns
    _check_header(columns, path)
    present = {}
    for col in columns:
        values = sample.get_column(col).str.strip_chars()
        present[col] = values.filter(values.is_not_null() & (values != ""))
    evidence: dict[tuple[str, str, tuple[str, ...], bool], ValueEvidence | None] = {}
    candidates: list[ColumnProposal] = []
    for spec in contract.fields:
        for col in columns:
            name_score, name_why = _name_score(col, spec)
            key = (col, spec.type, spec.values, spec.unique)
            if key not in evidence:
                evidence[key] = _value_evidence(present[col], spec, today)
            ev = evidence[key]
            if name_score == 0:
                # Values alone: only for identifier types that cannot be mistaken.
                if spec.type not in _SELF_EVIDENT or ev is None or ev.share < _SELF_EVIDENT_SHARE:
                    continue
                if ev.date_format == std.EXCEL_DATE:  # any column of small integers would do
                    continue
                score, why = 0.5 * ev.share, ev.what
            else:
                value_share = ev.share if ev is not None else 0.5
                if ev is not None and ev.share < 0.5 and spec.type not in {"string", "enum"}:
                    # A matching name whose values do not fit is weak evidence.
                    value_share = ev.share / 2
                score = name_score + value_share
                why = f"{name_why}; {ev.what}" if ev is not None else name_why
            candidates.append(
                ColumnProposal(
                    spec.name,
                    col,
                    round(score, 4),
                    why,
                    ev.date_format if ev is not None else None,
                    ev.ambiguous_order if ev is not None else False,
                )
            )
    chosen: dict[str, ColumnProposal] = {}
    used: set[str] = set()
    for c in sorted(candidates, key=lambda c: (-c.score, columns.index(c.column))):
        if c.field in chosen or c.column in used:
            continue
        chosen[c.field] = c
        used.add(c.column)
    _full_name(chosen, used, columns, present, contract)
    order = {name: i for i, name in enumerate(contract.field_names)}
    return MappingProposal(
        source=source or contract.name,
        contract=contract,
        path=path,
        delimiter=delimiter,
        encoding=encoding,
        skip_lines=skip,
        rows_sampled=sample.height,
        columns=sorted(chosen.values(), key=lambda c: order[c.field]),
        unmapped=[f for f in contract.fields if f.name not in chosen],
        unused_columns=[c for c in columns if c not in used],
    )


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
        if col in used or _normal(col) not in FULL_NAME_ALIASES:
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


def suggest_columns(missing: str, headers: Sequence[str], field_name: str) -> list[str]:
    """Header columns that could be the missing mapped column (by name only), best first."""
    spec = FieldSpec(field_name, "string")
    scored = []
    for h in headers:
        score, _ = _name_score(h, spec)
        close = difflib.SequenceMatcher(None, _normal(missing), _normal(h)).ratio()
        best = max(score, close if close >= 0.7 else 0.0)
        if best > 0:
            scored.append((best, h))
    return [h for _, h in sorted(scored, key=lambda t: -t[0])[:3]]


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
