"""Rows that hold more than one person, read as one record per person.

A council tax account lists its first and second liable parties side by side, a tenancy its
household members 1..N, a claim its claimant and partner: the source's `person_groups` names
the groups (P1, P2; LEAD, JOINT; 1..6) and a column name holding `{group}` is read once per
group (`P{group}_FORENAME` is `P1_FORENAME`, then `P2_FORENAME`). Columns without it (address,
dates, band) are shared by every group. Each group becomes its own row, tagged `_group`; a
group whose own columns are all blank (no second party) is not a person and is dropped and
counted. The record key is the row's key plus the group tag (`validate`).
"""

from __future__ import annotations

import polars as pl

from uprnlink.errors import ContractError
from uprnlink.ingest.headers import suggest_columns
from uprnlink.ingest.readers import BLANK, GROUP, ROW, ROW_ISSUE, header_key
from uprnlink.settings import GROUP_PLACEHOLDER, SourceSettings

__all__ = ["GROUP", "expand_person_groups", "group_templates"]


def group_templates(source: SourceSettings) -> list[str]:
    """The mapped column names that hold `{group}`, in mapping order, each once."""
    out: list[str] = []
    for mapping in source.columns.values():
        out += [c for c in mapping.columns if GROUP_PLACEHOLDER in c and c not in out]
    return out


def _resolve(raw: pl.DataFrame, source: SourceSettings, wanted: str) -> str:
    """The file's header column for `wanted`, matched ignoring case and spaces."""
    if wanted in raw.columns:
        return wanted
    matches = [c for c in raw.columns if header_key(c) == header_key(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ContractError(
            f"column {wanted!r} of a person group matches {len(matches)} header columns that "
            "differ only in case or spaces",
            file=str(source.path),
            column=wanted,
            rule="duplicate_column",
        )
    close = suggest_columns(wanted, list(raw.columns), "")
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ContractError(
        f"column {wanted!r} of person group is not in the file's header{hint}",
        file=str(source.path),
        column=wanted,
        rule="missing_column",
    )


def expand_person_groups(raw: pl.DataFrame, source: SourceSettings) -> tuple[pl.DataFrame, int]:
    """One row per person group of each file row (rows of the file in order, groups in the
    order configured), the group's columns under their `{group}` names; and the number of
    groups dropped because all their own columns were blank. Blank lines stay one row each."""
    templates = group_templates(source)
    if not source.person_groups or not templates:
        return raw, 0
    concrete = {
        t: {
            tag: _resolve(raw, source, t.replace(GROUP_PLACEHOLDER, tag))
            for tag in source.person_groups
        }
        for t in templates
    }
    own = {c for by_tag in concrete.values() for c in by_tag.values()}
    shared = [c for c in raw.columns if c not in own]
    frame = raw if ROW in raw.columns else raw.with_row_index(ROW, offset=1)
    blank = (
        (pl.col(ROW_ISSUE).fill_null("") == BLANK) if ROW_ISSUE in frame.columns else pl.lit(False)
    )
    frames = []
    for order, tag in enumerate(source.person_groups):
        frames.append(
            frame.select(
                *[pl.col(c) for c in shared if c in frame.columns],
                *([pl.col(ROW)] if ROW not in shared else []),
                *[pl.col(concrete[t][tag]).cast(pl.String).alias(t) for t in templates],
                pl.lit(tag).alias(GROUP),
                pl.lit(order, pl.UInt32).alias("_group_order"),
            ).filter(~blank | (pl.lit(order) == 0))
        )
    stacked = pl.concat(frames, how="vertical_relaxed").sort(ROW, "_group_order")
    filled = pl.any_horizontal(
        pl.col(t).str.strip_chars().str.len_chars().fill_null(0) > 0 for t in templates
    )
    # A group with nothing of its own is no person; a row of the wrong shape keeps its first
    # group so that it is quarantined once with its reason.
    keep = filled | blank
    if ROW_ISSUE in stacked.columns:
        keep = keep | (pl.col(ROW_ISSUE).is_not_null() & (pl.col("_group_order") == 0))
    dropped = int(stacked.select((~keep).sum()).item())
    return stacked.filter(keep).drop("_group_order"), dropped
