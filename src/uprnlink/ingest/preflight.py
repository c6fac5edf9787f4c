"""`uprnlink check --config FILE`: everything about a run's configuration that can be checked
before a run, without the key and without writing anything.

The configuration is read with its types checked; each source's and reference file's contract
is found; the mapping is checked against it (required fields, unknown fields, composite keys,
person groups, recodings onto the contract's values); each file's header must hold every mapped
column; and a sample of its records goes through the ingest's own validation, so the share of
rows that would be quarantined, the values nulled and the codes left unrecoded are known before
the run. The delivery-check policy is read too. Problems name the file, column and rule; no data
value is printed.

Exit codes: 0 the configuration and files are fit to run (warnings may be printed), 2 the
configuration itself is invalid, 3 a contract, mapping or file problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from uprnlink.errors import ConfigError, ContractError, UprnlinkError
from uprnlink.ingest.contracts import Contract, check_contract_table, find_contract
from uprnlink.ingest.deliveries import read_delivery_policy
from uprnlink.ingest.readers import (
    choose_sheet,
    file_checksum,
    header_key,
    read_extract,
    sheet_note,
)
from uprnlink.ingest.validate import IngestReport, validate_extract
from uprnlink.settings import GROUP_PLACEHOLDER, RunSettings, SourceSettings, read_settings

SAMPLE_BYTES = 4 << 20
QUARANTINE_WARNING = 0.05  # share of sampled rows
QUARANTINE_ERROR = 0.5  # most sampled rows quarantined: the mapping or formats are wrong
NULLED_WARNING = 0.20  # share of sampled values of one field
DATE_FORMAT_ERROR = 0.5  # most of a date field's values unreadable: the format is wrong


@dataclass
class CheckLine:
    """One line of the check: its level (ok, warn, error), what it is about and what was found."""

    level: str
    subject: str
    text: str

    def __str__(self) -> str:
        return f"{self.level:<6} {self.subject:<28} {self.text}"


@dataclass
class CheckReport:
    """Every line of a check and the exit code it comes to."""

    lines: list[CheckLine] = field(default_factory=list)
    exit_code: int = 0

    def add(self, level: str, subject: str, text: str, code: int = 0) -> None:
        """Record a line; an error raises the exit code to `code`."""
        self.lines.append(CheckLine(level, subject, text))
        self.exit_code = max(self.exit_code, code)


def check_config(config_path: Path, today: date | None = None) -> CheckReport:
    """Check a run configuration and its files (see the module docstring)."""
    report = CheckReport()
    try:
        settings = read_settings(config_path)
    except UprnlinkError as exc:
        report.add("error", "config", str(exc), exc.exit_code)
        return report
    report.add(
        "ok",
        "config",
        f"{settings.config_path.name}: valid ({len(settings.sources)} source(s), "
        f"{len(settings.reference)} reference file(s); linkage {settings.linkage.backend}, "
        f"threshold {settings.linkage.match_threshold})",
    )
    try:
        policy = read_delivery_policy(settings.policy_path)
        report.add(
            "ok",
            "policy",
            f"delivery checks {'on' if policy.enabled else 'off'}: rows ±"
            f"{policy.max_row_change:.0%}, null share +{policy.max_null_share_rise:.0%}, "
            f"dates {policy.max_date_shortfall_days} days",
        )
    except UprnlinkError as exc:
        report.add("error", "policy", str(exc), exc.exit_code)
    checksums: dict[str, str] = {}
    for table, sources in (("sources", settings.sources), ("reference", settings.reference)):
        for name, source in sources.items():
            _check_source(report, settings, f"{table}.{name}", source, checksums)
    return report


def _check_source(
    report: CheckReport,
    settings: RunSettings,
    subject: str,
    source: SourceSettings,
    checksums: dict[str, str],
) -> None:
    table, name = subject.split(".", 1)
    try:
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        check_contract_table(table, name, source.path, contract)
    except UprnlinkError as exc:
        report.add("error", subject, str(exc), exc.exit_code)
        return
    if not _extract_found(report, subject, source):
        return
    checksum = file_checksum(source.path)
    # One reference file may serve several reference contracts (an ONS or AddressBase file
    # holding the area codes and the property class); two sources never share a file.
    if table == "sources" and checksum in checksums:
        report.add(
            "error",
            subject,
            f"the same file as {checksums[checksum]} (same SHA-256; "
            f"file={source.path.name}, rule=duplicate_delivery)",
            ContractError.exit_code,
        )
        return
    if table == "sources":
        checksums[checksum] = subject
    try:
        raw = read_extract(source, sample_bytes=SAMPLE_BYTES)
        _, _, ingest = validate_extract(raw, source, contract, settings.reference_date)
    except (ContractError, ConfigError) as exc:
        report.add("error", subject, str(exc), exc.exit_code)
        return
    report.add("ok", subject, _sample_summary(source, contract, ingest))
    date_errors = _date_format_errors(report, settings, subject, source, contract, raw, ingest)
    _report_sample_problems(report, subject, source, ingest, date_errors)


def _extract_found(report: CheckReport, subject: str, source: SourceSettings) -> bool:
    """Whether the extract is there; if not, an error (required) or a warning (optional)."""
    if source.path.exists():
        return True
    if source.required:
        report.add(
            "error",
            subject,
            f"extract not found (file={source.path}, rule=file_missing)",
            ContractError.exit_code,
        )
    else:
        report.add("warn", subject, f"optional extract not there yet ({source.path.name})")
    return False


def _quarantined_share(ingest: IngestReport) -> float:
    return ingest.rows_quarantined / ingest.rows_in if ingest.rows_in else 0.0


def _sample_summary(source: SourceSettings, contract: Contract, ingest: IngestReport) -> str:
    """One line on the sample: columns found, rows sampled, share quarantined and why."""
    where = source.path.name
    if source.format == "excel":
        where += ", " + sheet_note(*choose_sheet(source.path, source.sheet))
    text = (
        f"{where} ({contract.tag}): all {len(source.file_columns())} mapped column(s) found; "
        f"{ingest.file_rows:,} row(s) sampled"
    )
    if source.person_groups:
        text += f", {ingest.rows_in:,} person record(s) in {len(source.person_groups)} groups"
    text += f"; {_quarantined_share(ingest):.1%} would be quarantined"
    if ingest.quarantine_reasons:
        top = sorted(ingest.quarantine_reasons.items(), key=lambda kv: -kv[1])[:3]
        text += " (" + ", ".join(f"{r} {n:,}" for r, n in top) + ")"
    return text


def _report_sample_problems(
    report: CheckReport,
    subject: str,
    source: SourceSettings,
    ingest: IngestReport,
    date_errors: set[str],
) -> None:
    """Errors and warnings from the sample: many rows quarantined, many values nulled, codes
    not recoded, no records. Fields with a date format error are not counted twice."""
    sampled = ingest.rows_in
    share = _quarantined_share(ingest)
    if sampled and share > QUARANTINE_ERROR and not date_errors:
        report.add(
            "error",
            subject,
            f"{share:.1%} of sampled rows would be quarantined: check the mapping and formats "
            f"(file={source.path.name}, rule=mostly_quarantined)",
            ContractError.exit_code,
        )
    elif sampled and share > QUARANTINE_WARNING and not date_errors:
        report.add(
            "warn",
            subject,
            f"{share:.1%} of sampled rows would be quarantined: check the mapping and formats",
        )
    for rule, n in sorted(ingest.values_nulled.items()):
        if rule.split(":")[0] in date_errors:
            continue
        if sampled and n / sampled > NULLED_WARNING:
            report.add(
                "warn",
                subject,
                f"{n / sampled:.1%} of sampled values of {rule.split(':')[0]} fail "
                f"{rule.split(':')[1]} and would be nulled",
            )
    for fname, codes in ingest.values_unrecoded.items():
        listed = ", ".join(f'"{c}" ({n:,})' for c, n in list(codes.items())[:10])
        report.add(
            "warn",
            subject,
            f"{fname}: code(s) neither contract values nor recoded: {listed} "
            f"([sources.{source.name}.recode.{fname}])",
        )
    if sampled == 0:
        report.add("warn", subject, "the file holds no records")


def _date_format_errors(
    report: CheckReport,
    settings: RunSettings,
    subject: str,
    source: SourceSettings,
    contract: Contract,
    raw: pl.DataFrame,
    ingest: IngestReport,
) -> set[str]:
    """Date fields whose format fails most of their sampled values: an error each (the file,
    column, rule and share failing, and a format that reads them if one does; never a value).
    Returns the fields reported."""
    from uprnlink.ingest.mapping import best_date_format

    failed: set[str] = set()
    for spec in contract.fields:
        if not spec.is_date or spec.name not in source.columns:
            continue
        present = ingest.values_present.get(spec.name, 0)
        rule = f"{spec.name}:invalid_{spec.type}"
        bad = ingest.quarantine_reasons.get(rule, 0) + ingest.values_nulled.get(rule, 0)
        if not present or bad / present <= DATE_FORMAT_ERROR:
            continue
        failed.add(spec.name)
        mapping = source.columns[spec.name]
        formats = source.date_formats_for(spec.name)
        found = best_date_format(_column_values(raw, source, mapping.column), spec, settings)
        hint = (
            f"; {found[1]:.1%} of them read as {found[0]!r}: set date_format, or "
            f'{spec.name} = {{ column = "{mapping.column}", format = "{found[0]}" }}'
            if found and found[1] > 0.5
            else ": check the source system's date format"
        )
        report.add(
            "error",
            subject,
            f"{bad / present:.1%} of {present:,} sampled values of {spec.name} fail "
            f"invalid_{spec.type} with date format(s) {', '.join(repr(f) for f in formats)}"
            f"{hint} (file={source.path.name}, column={mapping.column}, "
            f"rule=invalid_{spec.type})",
            ContractError.exit_code,
        )
    return failed


def _column_values(raw: pl.DataFrame, source: SourceSettings, column: str) -> pl.Series:
    """The sampled values of a mapped column (of every group's column, for a `{group}` one)."""
    names = (
        [column.replace(GROUP_PLACEHOLDER, tag) for tag in source.person_groups]
        if GROUP_PLACEHOLDER in column
        else [column]
    )
    keys = {header_key(c): c for c in raw.columns}
    found = [keys[header_key(n)] for n in names if header_key(n) in keys]
    if not found:
        return pl.Series("v", [], dtype=pl.String)
    values = pl.concat([raw.get_column(c).cast(pl.String).rename("v") for c in found])
    values = values.str.strip_chars()
    return values.filter(values.is_not_null() & (values != ""))
