"""A readable audit report for an information governance (IG) lead: Markdown or one HTML page.

The report opens with the verification result, then summarises the key history, runs,
publications, analyst access and refused access from the log's entries. A log that fails
verification still gets a report: every line that can be read is summarised and every entry
from the first bad line on is marked unverified. An IG lead needs to see what a damaged log
claims as much as where it was damaged, and a traceback shows neither.

Every value from the log is treated as untrusted text: the Markdown escapes the characters that
Markdown and inline HTML give meaning to, and the HTML page escapes every value, declares a
Content-Security-Policy that forbids scripts and loads nothing from elsewhere (the shared
templates of `uprnlink.html`, `audit.html.j2`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from uprnlink.errors import AuditError
from uprnlink.governance.audit import (
    FAILURES,
    SEAL_STARTED,
    SEALED,
    AuditEvent,
    AuditVerification,
    Witness,
    WitnessFile,
    verify_audit_log,
)
from uprnlink.html import render_page
from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.sealing import SealSeed

__all__ = ["ReportFormat", "render_audit_report", "summarise_audit"]

ReportFormat = Literal["markdown", "html"]

RECENT_ROWS = 20
"""How many of the latest access and refusal events the report lists one by one."""

_NO_RUN = "(no run id)"
_UNKNOWN = "-"
_FIELDS = frozenset(("seq", "ts", "event", "actor", "key_id", "data", "prev", "hash", "mac"))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Entry:
    """One readable line of the log: its 1-based line number, the entry, and whether it verified."""

    line: int
    event: AuditEvent
    verified: bool = True


def _event_from_line(raw: bytes) -> AuditEvent | str:
    """The entry on one line, or why the line is not an entry (never raises)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is not valid JSON"
    if not isinstance(obj, dict) or not obj.keys() >= _FIELDS:
        return "is not an audit entry (fields missing)"
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        return "has a non-integer seq"
    if not all(isinstance(obj[k], str) for k in ("ts", "event", "actor", "key_id")):
        return "has a non-text ts, event, actor or key_id"
    if not isinstance(obj["data"], dict):
        return "has data that is not an object"
    return AuditEvent(
        seq=seq,
        ts=obj["ts"],
        event=obj["event"],
        actor=obj["actor"],
        key_id=obj["key_id"],
        data=obj["data"],
        prev=str(obj["prev"]),
        hash=str(obj["hash"]),
        mac=str(obj["mac"]),
    )


def _read_entries(path: Path) -> tuple[list[_Entry], list[tuple[int, str]], str | None]:
    """Readable entries, unreadable lines with the reason, and why the file cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], [], f"audit log {path} not found"
    except IsADirectoryError:
        return [], [], f"audit log {path} is a directory"
    except OSError as exc:
        return [], [], f"cannot read audit log {path}: {exc.strerror}"
    entries: list[_Entry] = []
    unreadable: list[tuple[int, str]] = []
    parts = raw.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for number, line in enumerate(parts, start=1):
        parsed = _event_from_line(line)
        if isinstance(parsed, str):
            unreadable.append((number, parsed))
        else:
            entries.append(_Entry(number, parsed))
    return entries, unreadable, None


def _verify(
    path: Path,
    keys: Sequence[MasterKey],
    head_path: Path | None,
    unreadable: str | None,
    witnesses: Sequence[Witness] = (),
    *,
    seed: SealSeed | None = None,
    seal_state: Path | None = None,
    witness_files: Sequence[WitnessFile] = (),
) -> AuditVerification:
    """`verify_audit_log`, with anything that stops it turned into a failed result."""
    if unreadable is not None:
        return AuditVerification(ok=False, entries=0, verified=0, reason=unreadable)
    try:
        return verify_audit_log(
            path,
            keys,
            head_path=head_path,
            witnesses=witnesses,
            seed=seed,
            seal_state=seal_state,
            witness_files=witness_files,
        )
    except AuditError as exc:
        return AuditVerification(ok=False, entries=0, verified=0, reason=str(exc))
    except RecursionError:
        # Why: json.loads recurses on nesting, so a line of 100,000 "[" can stop the verifier.
        return AuditVerification(
            ok=False,
            entries=0,
            verified=0,
            reason="the log holds a line nested too deeply to parse",
        )


# --------------------------------------------------------------------------- values


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    """A scalar value as text; None for null, containers and missing values."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _texts(value: Any) -> list[str]:
    """A list of names (a bare string counts as one)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for t in (_text(v) for v in value) if t is not None]
    return []


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if _int(v) is not None}


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): t for k, v in value.items() if (t := _text(v)) is not None}


def _show(value: Any) -> str:
    """Any JSON value as compact text for a details cell."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _ts(ts: str | None) -> str:
    """An audit timestamp as 'YYYY-MM-DD HH:MM:SS UTC'; anything unparseable as given."""
    if not ts:
        return _UNKNOWN
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return ts
    if dt.tzinfo is None:
        return ts
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(n: int | None) -> str:
    return _UNKNOWN if n is None else f"{n:,}"


def _short(digest: str, keep: int = 12) -> str:
    return digest if len(digest) <= keep else digest[:keep] + "…"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _join(items: Iterable[str]) -> str:
    out = ", ".join(items)
    return out or _UNKNOWN


# --------------------------------------------------------------------------- summary


@dataclass
class _KeyUse:
    key_id: str
    entries: int = 0
    unverified: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _KeyEvent:
    entry: _Entry
    details: dict[str, Any]


@dataclass
class _Run:
    run_id: str
    unverified: bool = False
    started: str | None = None
    finished: str | None = None
    status: str | None = None
    key_ids: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)
    config: str | None = None
    version: str | None = None
    failure: str | None = None
    published: int = 0
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    contracts: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if self.status is not None:
            return self.status
        return "no finish recorded"

    @property
    def sources(self) -> list[str]:
        return _unique([*self.rows_in, *self.rows_quarantined, *self.contracts, *self.inputs])


@dataclass(frozen=True)
class _Publication:
    entry: _Entry
    run_id: str
    tables: list[str]
    counts: dict[str, int]
    risk: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Access:
    entry: _Entry
    user: str
    role: str
    views: list[str]
    fingerprint: str
    rows: int | None
    reason: str = ""


@dataclass(frozen=True)
class _Refusal:
    """An answer refused by the output rules, an output submitted for review, or an output
    decision or download refused."""

    entry: _Entry
    user: str
    role: str
    rules: list[str]
    output_id: str
    action: str


@dataclass(frozen=True)
class _TableUse:
    """A table the service built for a user (``table``): the table builder, a named question
    or a kept table output."""

    entry: _Entry
    user: str
    role: str
    dataset: str
    dimensions: list[str]
    filtered: bool
    named: str
    cells: int | None


@dataclass(frozen=True)
class _OutputEvent:
    """An output released (by the table builder or by checkers), decided or downloaded."""

    entry: _Entry
    user: str
    output_id: str
    release_no: int | None
    approved_by: str


OUTPUT_EVENTS = ("output.released", "output.approved", "output.rejected", "output.downloaded")
"""The output events the report lists as what left, or was decided (not refusals)."""

OUTPUT_REFUSALS = (
    "answer.refused",
    "output.submitted",
    "output.decision_refused",
    "output.download_refused",
    "output.refused",
    "table.refused",
)
"""The output events the report summarises one by one (what was withheld or held back)."""
_REFUSAL_TITLES = {
    "answer.refused": "Answers refused by the output rules",
    "output.submitted": "Outputs submitted for review",
    "output.decision_refused": "Output decisions refused",
    "output.download_refused": "Output downloads refused",
    "output.refused": "Jobs refused (the guard, or too many awaiting review)",
    "table.refused": "Table requests refused (outside the declaration, or a revoked token)",
}


@dataclass(frozen=True)
class _FailureCount:
    entry: _Entry
    status: str
    route: str
    who: str
    n: int


@dataclass
class _Summary:
    entries: list[_Entry]
    events: Counter[str]
    keys: dict[str, _KeyUse]
    key_epochs: dict[str, int]
    key_events: list[_KeyEvent]
    key_changes: list[tuple[_Entry, str, str]]
    runs: dict[str, _Run]
    publications: list[_Publication]
    access: list[_Access]
    refused: list[_Access]
    deletions: list[_Entry] = field(default_factory=list)
    outputs: dict[str, list[_Refusal]] = field(default_factory=dict)
    seal_started: _Entry | None = None
    seals: list[_Entry] = field(default_factory=list)
    failures: list[_FailureCount] = field(default_factory=list)
    failure_windows: list[_Entry] = field(default_factory=list)
    tables: list[_TableUse] = field(default_factory=list)
    released: dict[str, list[_OutputEvent]] = field(default_factory=dict)


def _epochs_from_key_events(events: Iterable[_Entry]) -> dict[str, int]:
    """Key id -> epoch where key events name them (``key_id``/``epoch``, ``old_*``, ``new_*``)."""
    found: dict[str, int] = {}
    for e in events:
        data = e.event.data
        for prefix in ("", "old_", "new_"):
            kid = _text(data.get(f"{prefix}key_id"))
            epoch = _int(data.get(f"{prefix}epoch"))
            if kid and epoch is not None:
                found[kid] = epoch
        # `uprnlink key rotate` records the new key and epoch with ``previous_key_id``; a
        # rotation always moves to the next epoch.
        previous, epoch = _text(data.get("previous_key_id")), _int(data.get("epoch"))
        if previous and epoch is not None and epoch > 1:
            found.setdefault(previous, epoch - 1)
    return found


def _summarise(entries: Sequence[_Entry], key_epochs: Mapping[str, int]) -> _Summary:
    s = _Summary(
        entries=list(entries),
        events=Counter(e.event.event for e in entries),
        keys={},
        key_epochs={},
        key_events=[],
        key_changes=[],
        runs={},
        publications=[],
        access=[],
        refused=[],
    )
    previous_key: str | None = None
    for entry in entries:
        ev = entry.event
        _note_key_use(s, entry)
        if previous_key is not None and ev.key_id != previous_key:
            s.key_changes.append((entry, previous_key, ev.key_id))
        previous_key = ev.key_id
        _note_event(s, entry)
    s.key_epochs = {**_epochs_from_key_events(e.entry for e in s.key_events), **key_epochs}
    return s


def _note_key_use(s: _Summary, entry: _Entry) -> None:
    """Count an entry against the key that MACed it."""
    ev = entry.event
    run_id = _text(ev.data.get("run_id"))
    use = s.keys.setdefault(ev.key_id, _KeyUse(ev.key_id))
    use.entries += 1
    use.unverified += not entry.verified
    use.first_ts = use.first_ts or ev.ts
    use.first_seq = ev.seq if use.first_seq is None else use.first_seq
    use.last_ts, use.last_seq = ev.ts, ev.seq
    if run_id and run_id not in use.run_ids:
        use.run_ids.append(run_id)


def _note_event(s: _Summary, entry: _Entry) -> None:
    """File an entry under the part of the summary its event belongs to."""
    ev = entry.event
    if ev.event in ("key.created", "key.rotated"):
        s.key_events.append(_KeyEvent(entry, dict(ev.data)))
    elif ev.event in ("key.loaded", "run.started", "run.finished", "run.failed", "publish"):
        _note_run_event(s, entry)
    elif ev.event == "retention.deleted":
        s.deletions.append(entry)
    elif ev.event in ("access", "access.refused"):
        (s.access if ev.event == "access" else s.refused).append(_access(entry))
    elif ev.event in OUTPUT_REFUSALS:
        s.outputs.setdefault(ev.event, []).append(_refusal(entry))
    elif ev.event == "table":
        s.tables.append(_table_use(entry))
    elif ev.event in OUTPUT_EVENTS:
        s.released.setdefault(ev.event, []).append(_output_event(entry))
    elif ev.event == SEAL_STARTED:
        s.seal_started = s.seal_started or entry
    elif ev.event == SEALED:
        s.seals.append(entry)
    elif ev.event == FAILURES:
        s.failure_windows.append(entry)
        s.failures.extend(_failure_window_counts(entry))


def _note_run_event(s: _Summary, entry: _Entry) -> None:
    """Fold a run's key load, start, finish, failure or publication into its `_Run`."""
    ev = entry.event
    data = ev.data
    run_id = _text(data.get("run_id"))
    run = s.runs.setdefault(run_id or _NO_RUN, _Run(run_id or _NO_RUN))
    run.unverified |= not entry.verified
    if ev.key_id not in run.key_ids:
        run.key_ids.append(ev.key_id)
    if ev.actor not in run.actors:
        run.actors.append(ev.actor)
    if ev.event == "run.started":
        run.started = run.started or ev.ts
        run.config = _text(data.get("config")) or run.config
        run.version = _text(data.get("version")) or run.version
    elif ev.event == "run.finished":
        run.finished = ev.ts
        run.status = _text(data.get("status")) or "completed"
        run.rows_in.update(_int_map(data.get("rows_in")))
        run.rows_quarantined.update(_int_map(data.get("rows_quarantined")))
        run.contracts.update(_text_map(data.get("contracts")))
        run.inputs.update(_text_map(data.get("inputs")))
    elif ev.event == "run.failed":
        run.finished = ev.ts
        run.status = _text(data.get("status")) or "failed"
        run.failure = _text(data.get("reason")) or _text(data.get("error")) or run.failure
    elif ev.event == "publish":
        run.published += 1
        s.publications.append(
            _Publication(
                entry,
                run_id or _NO_RUN,
                _texts(data.get("tables")),
                _int_map(data.get("counts")),
                _risk(data.get("disclosure_risk")),
            )
        )


def _access(entry: _Entry) -> _Access:
    data = entry.event.data
    return _Access(
        entry,
        user=_text(data.get("user")) or entry.event.actor,
        role=_text(data.get("role")) or _UNKNOWN,
        views=_texts(data.get("views")),
        fingerprint=_text(data.get("query_fingerprint")) or "",
        rows=_int(data.get("rows")),
        # The log writes the refusal's rule code as ``rule``; older entries (and other
        # writers) may say ``reason``.
        reason=_text(data.get("rule")) or _text(data.get("reason")) or "",
    )


def _refusal(entry: _Entry) -> _Refusal:
    data = entry.event.data
    return _Refusal(
        entry,
        user=_text(data.get("user")) or entry.event.actor,
        role=_text(data.get("role")) or _UNKNOWN,
        rules=_texts(data.get("rules")) or _texts(data.get("rule")),
        output_id=_text(data.get("output_id")) or "",
        action=_text(data.get("action")) or "",
    )


def _output_event(entry: _Entry) -> _OutputEvent:
    data = entry.event.data
    return _OutputEvent(
        entry,
        user=_text(data.get("user")) or entry.event.actor,
        output_id=_text(data.get("output_id")) or "",
        release_no=_int(data.get("release_no")),
        approved_by=_text(data.get("approved_by")) or "",
    )


def _failure_window_counts(entry: _Entry) -> list[_FailureCount]:
    """The per status, route and caller counts of a failure-window entry."""
    found = []
    for c in entry.event.data.get("counts") or []:
        if isinstance(c, dict) and (n := _int(c.get("n"))) is not None:
            found.append(
                _FailureCount(
                    entry,
                    status=_text(c.get("status")) or _UNKNOWN,
                    route=_text(c.get("route")) or _UNKNOWN,
                    who=_text(c.get("who")) or _UNKNOWN,
                    n=n,
                )
            )
    return found


def _table_use(entry: _Entry) -> _TableUse:
    data = entry.event.data
    raw = data.get("table")
    spec: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    return _TableUse(
        entry,
        user=_text(data.get("user")) or entry.event.actor,
        role=_text(data.get("role")) or _UNKNOWN,
        dataset=_text(spec.get("dataset")) or _UNKNOWN,
        dimensions=_texts(spec.get("dimensions")),
        filtered=bool(spec.get("filters")),
        named=_text(data.get("named_query")) or "",
        cells=_int(data.get("cells")),
    )


def _access_counts(records: Sequence[_Access], *, refused: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "total": len(records),
        "users": len({r.user for r in records}),
        "by_user": dict(Counter(r.user for r in records)),
        "by_role": dict(Counter(r.role for r in records)),
        "by_view": dict(Counter(v for r in records for v in _unique(r.views))),
        "last": records[-1].entry.event.ts if records else None,
    }
    if refused:
        out["by_reason"] = dict(Counter(r.reason or _UNKNOWN for r in records))
    else:
        out["rows"] = sum(r.rows or 0 for r in records)
    return out


def _counts(s: _Summary) -> dict[str, Any]:
    runs = list(s.runs.values())
    return {
        "entries": len(s.entries),
        "unverified": sum(not e.verified for e in s.entries),
        "events": dict(s.events),
        "keys": {
            kid: {
                "epoch": s.key_epochs.get(kid),
                "entries": use.entries,
                "runs": len(use.run_ids),
                "first_use": use.first_ts,
                "last_use": use.last_ts,
            }
            for kid, use in s.keys.items()
        },
        "key_events": {name: s.events.get(name, 0) for name in ("key.created", "key.rotated")},
        "key_changes": len(s.key_changes),
        "runs": {
            "total": len(runs),
            "by_status": dict(Counter(r.outcome for r in runs)),
            "rows_in": sum(sum(r.rows_in.values()) for r in runs),
            "rows_quarantined": sum(sum(r.rows_quarantined.values()) for r in runs),
        },
        "publications": len(s.publications),
        "retention": {
            "deletions": len(s.deletions),
            "files_deleted": sum(len(_files(e)) for e in s.deletions),
        },
        "access": _access_counts(s.access, refused=False),
        "refused": _access_counts(s.refused, refused=True),
        "outputs": {
            event: {
                "total": len(s.outputs.get(event, [])),
                "by_user": dict(Counter(r.user for r in s.outputs.get(event, []))),
                "by_rule": dict(
                    Counter(rule for r in s.outputs.get(event, []) for rule in r.rules)
                ),
            }
            for event in OUTPUT_REFUSALS
        },
        "tables": {
            "total": len(s.tables),
            "named": sum(bool(t.named) for t in s.tables),
            "filtered": sum(t.filtered for t in s.tables),
            "by_user": dict(Counter(t.user for t in s.tables)),
            "by_dataset": dict(Counter(t.dataset for t in s.tables)),
        },
        "released": {
            event: {
                "total": len(s.released.get(event, [])),
                "by_user": dict(Counter(r.user for r in s.released.get(event, []))),
            }
            for event in OUTPUT_EVENTS
        },
        "sealing": {
            "seal_id": _seal_id(s),
            "seals": len(s.seals),
            "last_epoch": _int(s.seals[-1].event.data.get("epoch")) if s.seals else None,
            "last_seal": s.seals[-1].event.ts if s.seals else None,
        },
        "failures": _failure_counts(s.failures, len(s.failure_windows)),
    }


def _seal_id(s: _Summary) -> str | None:
    first = s.seal_started or (s.seals[0] if s.seals else None)
    return None if first is None else _text(first.event.data.get("seal_id"))


def _failure_counts(records: Sequence[_FailureCount], windows: int) -> dict[str, Any]:
    def total(key: str) -> dict[str, int]:
        out: Counter[str] = Counter()
        for r in records:
            out[getattr(r, key)] += r.n
        return dict(out)

    return {
        "total": sum(r.n for r in records),
        "windows": windows,
        "by_status": total("status"),
        "by_route": total("route"),
        "by_who": total("who"),
    }


def summarise_audit(
    events: Iterable[AuditEvent], *, key_epochs: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Counts per report section for `events` (pure: no file, no key, no verification).

    `key_epochs` maps key ids to epochs where the caller knows them (from the key files);
    otherwise epochs come from ``key.created``/``key.rotated`` events, if any.
    """
    entries = [_Entry(i, e) for i, e in enumerate(events, start=1)]
    return _counts(_summarise(entries, key_epochs or {}))


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class _Heading:
    kind: ClassVar[str] = "heading"
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    kind: ClassVar[str] = "para"
    text: str
    strong: bool = False


@dataclass(frozen=True)
class _Facts:
    kind: ClassVar[str] = "facts"
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Bullets:
    kind: ClassVar[str] = "bullets"
    items: tuple[str, ...]


@dataclass(frozen=True)
class _Alert:
    kind: ClassVar[str] = "alert"
    ok: bool
    title: str
    lead: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Table:
    kind: ClassVar[str] = "table"
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: frozenset[int] = frozenset()
    flagged: frozenset[int] = frozenset()
    """Row indices drawn from unverified entries."""


_Block = _Heading | _Para | _Facts | _Bullets | _Alert | _Table


def _table(
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], bool]],
    *,
    numeric: Iterable[int] = (),
    show_verified: bool,
) -> _Table:
    """A table whose rows are (cells, verified); a "verified" column is added when it matters."""
    body: list[tuple[str, ...]] = []
    flagged: set[int] = set()
    for i, (cells, verified) in enumerate(rows):
        if not verified:
            flagged.add(i)
        body.append((*cells, "yes" if verified else "NO") if show_verified else tuple(cells))
    head = (*headers, "verified") if show_verified else tuple(headers)
    return _Table(head, tuple(body), frozenset(numeric), frozenset(flagged))


def _verdict_block(result: AuditVerification) -> _Alert:
    if result.ok:
        if result.entries == 0:
            lead = "The log is empty and no checkpoint records any entry."
        else:
            lead = (
                f"All {result.entries:,} entries verified: sequence numbers, hash chain, MACs "
                f"and the checkpoint (seq {_num(result.head_seq)}) agree."
            )
        lines = [f"Key ids in the log: {_join(result.key_ids)}."] if result.key_ids else []
        lines += _seal_lines(result)
        lines += [f"Warning: {w}" for w in result.warnings]
        lines += [f"Not checked: {n}." for n in result.notes]
        return _Alert(True, "Audit log intact", lead, tuple(lines))
    lines = []
    if result.first_bad_line is not None:
        lines.append(
            f"First bad entry: line {result.first_bad_line} (seq {_num(result.first_bad_seq)})."
        )
        lines.append(
            f"{result.verified:,} of {result.entries:,} entries verified before it. Entries from "
            f"line {result.first_bad_line} on are listed below marked unverified: do not rely on them."
        )
    elif result.entries:
        lines.append(
            f"All {result.entries:,} entries pass the chain and MAC checks, but the checkpoint "
            "does not, so the log cannot be shown to be complete."
        )
    lines.append(
        "Treat this as a possible security incident: keep copies of the log and checkpoint "
        "exactly as they are (copy, never edit) and follow your incident procedure "
        "(see docs/governance.md)."
    )
    return _Alert(False, "AUDIT LOG FAILED VERIFICATION", result.reason or "", tuple(lines))


def _seal_lines(result: AuditVerification) -> list[str]:
    """What the seals and witnesses prove, for the verdict."""
    lines = []
    seal = result.seal
    if seal is not None:
        how = (
            "every seal checked with the verification seed"
            if seal.checked
            else "seals in order but NOT checked (no verification seed given)"
        )
        where = (
            f"the last at seq {seal.last_sealed_seq} (epoch {seal.last_epoch}, {_ts(seal.last_ts)})"
            if seal.last_sealed_seq is not None
            else "no seal yet"
        )
        lines.append(
            f"Forward-sealed under {seal.seal_id}: {seal.seals:,} seal(s), {how}; {where}."
        )
        lines.append(
            f"{seal.unsealed:,} entr{'y is' if seal.unsealed == 1 else 'ies are'} after the last "
            "seal, only hash-chained and MACed: whoever holds the audit key and the current "
            "sealing state could still rewrite them."
        )
    if result.witnesses_checked:
        lines.append(
            f"{result.witnesses_checked:,} witness(es) match the log, the furthest at seq "
            f"{_num(result.last_witnessed_seq)}."
        )
    return lines


def _key_blocks(s: _Summary, supplied: Mapping[str, MasterKey], flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Key history")]
    kids = _unique([*s.keys, *supplied])
    if not kids:
        return [*blocks, _Para("No key ids in the log and no keys supplied.")]
    blocks.append(
        _Para(
            f"{len(s.keys)} key id(s) seen in the log. A key id is a fingerprint of the "
            "audit key that MACed the entries (aud-...), never the key itself; a new key id "
            "starts a new audit key epoch. Pseudonymisation and release key ids (kid-..., "
            "rel-...) appear in the key and run events below."
        )
    )
    blocks.append(_key_use_table(s, kids, supplied, flag))
    if s.key_changes:
        blocks.append(_Heading(3, "Key changes in the log"))
        blocks.append(
            _table(
                ("time", "seq", "from key id", "to key id"),
                (
                    ((_ts(e.event.ts), str(e.event.seq), old, new), e.verified)
                    for e, old, new in s.key_changes
                ),
                numeric=(1,),
                show_verified=flag,
            )
        )
    blocks.append(_Heading(3, "Key events"))
    blocks.append(_key_events_block(s, flag))
    return blocks


def _key_use_table(
    s: _Summary, kids: Sequence[str], supplied: Mapping[str, MasterKey], flag: bool
) -> _Table:
    """One row per key id: its epoch, use in the log, and whether it was supplied."""
    rows = []
    for kid in kids:
        use = s.keys.get(kid, _KeyUse(kid))
        epoch = s.key_epochs.get(kid)
        key = supplied.get(kid)
        created = key.created_at if key is not None else None
        rows.append(
            (
                (
                    kid,
                    _num(epoch),
                    _num(use.entries),
                    _num(len(use.run_ids)),
                    _ts(use.first_ts),
                    _ts(use.last_ts),
                    "yes" if key is not None else "NO (entries cannot be verified)",
                    _ts(created.isoformat()) if created is not None else _UNKNOWN,
                ),
                use.unverified == 0,
            )
        )
    return _table(
        (
            "key id",
            "epoch",
            "entries",
            "runs",
            "first use",
            "last use",
            "key supplied",
            "key created",
        ),
        rows,
        numeric=(1, 2, 3),
        show_verified=flag,
    )


def _key_events_block(s: _Summary, flag: bool) -> _Block:
    """The key.created and key.rotated events, or a note that there are none."""
    if not s.key_events:
        return _Para(
            "No key.created or key.rotated events in the log: check key creation and "
            "rotation against the key custody register."
        )
    return _table(
        ("time", "event", "actor", "key id", "details"),
        (
            (
                (
                    _ts(k.entry.event.ts),
                    k.entry.event.event,
                    k.entry.event.actor,
                    k.entry.event.key_id,
                    _join(f"{n}={_show(v)}" for n, v in sorted(k.details.items())),
                ),
                k.entry.verified,
            )
            for k in s.key_events
        ),
        show_verified=flag,
    )


def _run_blocks(s: _Summary, flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Runs")]
    runs = list(s.runs.values())
    if not runs:
        return [*blocks, _Para("No pipeline runs recorded.")]
    statuses = Counter(r.outcome for r in runs)
    blocks.append(
        _Para(
            f"{len(runs)} run(s): "
            + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
            + "."
        )
    )
    blocks.append(
        _table(
            (
                "run id",
                "started",
                "finished",
                "status",
                "key id",
                "sources",
                "rows in",
                "quarantined",
                "published",
            ),
            (
                (
                    (
                        r.run_id,
                        _ts(r.started),
                        _ts(r.finished),
                        r.outcome + (f" ({r.failure})" if r.failure else ""),
                        _join(r.key_ids),
                        _num(len(r.sources)),
                        _num(sum(r.rows_in.values())) if r.rows_in else _UNKNOWN,
                        _num(sum(r.rows_quarantined.values())) if r.rows_quarantined else _UNKNOWN,
                        "yes" if r.published else "no",
                    ),
                    not r.unverified,
                )
                for r in runs
            ),
            numeric=(5, 6, 7),
            show_verified=flag,
        )
    )
    for r in runs:
        if not r.sources:
            continue
        blocks.append(_Heading(3, f"Run {r.run_id}"))
        facts = [("run by", _join(r.actors)), ("key id", _join(r.key_ids))]
        if r.config:
            facts.append(("configuration", r.config))
        if r.version:
            facts.append(("uprnlink version", r.version))
        blocks.append(_Facts(tuple(facts)))
        blocks.append(
            _table(
                ("source", "contract", "rows in", "quarantined", "input checksum (SHA-256)"),
                (
                    (
                        (
                            src,
                            r.contracts.get(src, _UNKNOWN),
                            _num(r.rows_in.get(src)),
                            _num(r.rows_quarantined.get(src)),
                            _short(r.inputs[src]) if src in r.inputs else _UNKNOWN,
                        ),
                        not r.unverified,
                    )
                    for src in r.sources
                ),
                numeric=(2, 3),
                show_verified=flag,
            )
        )
    return blocks


def _risk(value: Any) -> dict[str, Any]:
    """The uniqueness shares a publish entry records (people, households, the policy's max)."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    for k in ("people", "households"):
        v = value.get(k)
        if isinstance(v, dict) and isinstance(v.get("share"), int | float):
            out[k] = (float(v["share"]), _int(v.get("unique")), _int(v.get("of")))
    limit = value.get("max_unique_share")
    if isinstance(limit, int | float):
        out["max"] = float(limit)
    return out


def _over(p: _Publication) -> bool:
    return "max" in p.risk and any(
        k in p.risk and p.risk[k][0] > p.risk["max"] for k in ("people", "households")
    )


def _share(p: _Publication, kind: str) -> str:
    if kind not in p.risk:
        return _UNKNOWN
    share, unique, of = p.risk[kind]
    over = " (above max)" if "max" in p.risk and share > p.risk["max"] else ""
    return f"{share:.1%} ({_num(unique)} of {_num(of)}){over}"


def _publication_blocks(s: _Summary, flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Publications")]
    if not s.publications:
        return [*blocks, _Para("No publications recorded.")]
    blocks.append(_Para(f"{len(s.publications)} publication(s) of the de-identified dataset."))
    if any(p.risk for p in s.publications):
        over = [p.run_id for p in s.publications if _over(p)]
        blocks.append(
            _Para(
                "People unique, households unique: the share of people and of households no "
                "one else shares the quasi-identifiers analysts can see with (sex, age band, "
                "LSOA, household size; a household's LSOA and its residents' sex and age "
                "bands), against the policy's [disclosure] max_unique_share. "
                + (
                    f"{len(over)} publication(s) above it: record-level views need output "
                    "checking before anything leaves the partnership."
                    if over
                    else "No publication is above it."
                )
            )
        )
    blocks.append(
        _table(
            (
                "time",
                "run id",
                "key id",
                "by",
                "tables",
                "counts",
                "people unique",
                "households unique",
            ),
            (
                (
                    (
                        _ts(p.entry.event.ts),
                        p.run_id,
                        p.entry.event.key_id,
                        p.entry.event.actor,
                        _join(p.tables),
                        "; ".join(f"{name} {n:,}" for name, n in p.counts.items()) or _UNKNOWN,
                        _share(p, "people"),
                        _share(p, "households"),
                    ),
                    p.entry.verified,
                )
                for p in s.publications
            ),
            show_verified=flag,
        )
    )
    return blocks


def _files(entry: _Entry) -> list[dict[str, Any]]:
    """The files a retention.deleted entry lists (zone, path, age_days, limit_days, bytes)."""
    files = entry.event.data.get("files")
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def _retention_blocks(s: _Summary, flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Retention")]
    if not s.deletions:
        return [
            *blocks,
            _Para(
                "No files deleted under the retention policy (runs list files past their "
                "period in their summaries; `uprnlink retention` shows them)."
            ),
        ]
    total = sum(len(_files(e)) for e in s.deletions)
    blocks.append(_Para(f"{total:,} file(s) deleted in {len(s.deletions)} deletion(s)."))

    def by_zone(entry: _Entry) -> str:
        zones = Counter(_text(f.get("zone")) or _UNKNOWN for f in _files(entry))
        return "; ".join(f"{zone} {n:,}" for zone, n in sorted(zones.items())) or _UNKNOWN

    def oldest(entry: _Entry) -> str:
        ages = [a for f in _files(entry) if isinstance(a := f.get("age_days"), int | float)]
        return f"{max(ages):,.0f}" if ages else _UNKNOWN

    blocks.append(
        _table(
            ("time", "run id", "by", "files by zone", "oldest (days)"),
            (
                (
                    (
                        _ts(e.event.ts),
                        _text(e.event.data.get("run_id")) or _UNKNOWN,
                        e.event.actor,
                        by_zone(e),
                        oldest(e),
                    ),
                    e.verified,
                )
                for e in s.deletions
            ),
            numeric=(4,),
            show_verified=flag,
        )
    )
    return blocks


def _by_user(records: Sequence[_Access]) -> dict[str, list[_Access]]:
    groups: dict[str, list[_Access]] = {}
    for r in records:
        groups.setdefault(r.user, []).append(r)
    return groups


def _by_view(records: Sequence[_Access]) -> dict[str, list[_Access]]:
    groups: dict[str, list[_Access]] = {}
    for r in records:
        for view in _unique(r.views) or [_UNKNOWN]:
            groups.setdefault(view, []).append(r)
    return dict(sorted(groups.items()))


def _all_verified(records: Iterable[_Access]) -> bool:
    return all(r.entry.verified for r in records)


def _table_blocks(s: _Summary, flag: bool) -> list[_Block]:
    """Tables the service built, by user: how many, of which datasets and dimensions, how many
    filtered (the requests a differencing attempt would need), and the latest ones."""
    blocks: list[_Block] = [_Heading(2, "Tables built")]
    records = s.tables
    if not records:
        return [*blocks, _Para("No table built (table builder or named question).")]
    users: dict[str, list[_TableUse]] = {}
    for t in records:
        users.setdefault(t.user, []).append(t)
    blocks.append(
        _Para(
            f"{len(records):,} tables by {len(users)} user(s), {sum(t.filtered for t in records):,}"
            f" with filters, {sum(bool(t.named) for t in records):,} named questions. Every count "
            "and sum in them was perturbed by the service; many filtered tables of one small "
            "area from one user are worth a look."
        )
    )
    blocks.append(
        _table(
            ("user", "role", "tables", "filtered", "named", "datasets", "dimensions", "last"),
            (
                (
                    (
                        user,
                        _join(_unique(t.role for t in ts)),
                        _num(len(ts)),
                        _num(sum(t.filtered for t in ts)),
                        _num(sum(bool(t.named) for t in ts)),
                        _join(sorted({t.dataset for t in ts})),
                        _join(
                            f"{d} ({n})"
                            for d, n in Counter(d for t in ts for d in t.dimensions).most_common(6)
                        ),
                        _ts(ts[-1].entry.event.ts),
                    ),
                    all(t.entry.verified for t in ts),
                )
                for user, ts in sorted(users.items())
            ),
            numeric=(2, 3, 4),
            show_verified=flag,
        )
    )
    recent = records[-RECENT_ROWS:]
    blocks.append(_Heading(3, f"Latest {len(recent)} of {len(records):,} tables"))
    blocks.append(
        _table(
            ("time", "user", "dataset", "dimensions", "filtered", "named question", "cells"),
            (
                (
                    (
                        _ts(t.entry.event.ts),
                        t.user,
                        t.dataset,
                        _join(t.dimensions) or "-",
                        "yes" if t.filtered else "no",
                        t.named or "-",
                        _num(t.cells),
                    ),
                    t.entry.verified,
                )
                for t in reversed(recent)
            ),
            numeric=(6,),
            show_verified=flag,
        )
    )
    return blocks


def _released_blocks(s: _Summary, flag: bool) -> list[_Block]:
    """What left: outputs released (tables at once, jobs on approval), checkers' decisions and
    downloads, latest first."""
    blocks: list[_Block] = [_Heading(2, "Outputs released, decided and downloaded")]
    events = sorted((r for rs in s.released.values() for r in rs), key=lambda r: r.entry.event.seq)
    if not events:
        return [*blocks, _Para("No output released, decided or downloaded.")]
    counts = Counter(r.entry.event.event for r in events)
    blocks.append(
        _Para(
            ", ".join(f"{event} {counts.get(event, 0):,}" for event in OUTPUT_EVENTS)
            + ". A table output is released by the table builder itself (already protected); "
            "a job's only by its checkers."
        )
    )
    recent = events[-RECENT_ROWS:]
    blocks.append(
        _table(
            ("time", "event", "user", "output", "release no.", "approved by"),
            (
                (
                    (
                        _ts(r.entry.event.ts),
                        r.entry.event.event,
                        r.user,
                        r.output_id or _UNKNOWN,
                        _num(r.release_no),
                        r.approved_by or "-",
                    ),
                    r.entry.verified,
                )
                for r in reversed(recent)
            ),
            numeric=(4,),
            show_verified=flag,
        )
    )
    return blocks


def _access_blocks(s: _Summary, flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Analyst access")]
    records = s.access
    if not records:
        return [*blocks, _Para("No analyst access recorded.")]
    users = _by_user(records)
    last = records[-1]
    blocks.append(
        _Para(
            f"{len(records):,} queries by {len(users)} user(s) returned "
            f"{sum(r.rows or 0 for r in records):,} rows. Last access {_ts(last.entry.event.ts)} "
            f"by {last.user}."
        )
    )
    blocks.append(_Heading(3, "By user"))
    blocks.append(
        _table(
            ("user", "role", "queries", "rows returned", "views", "last access"),
            (
                (
                    (
                        user,
                        _join(_unique(r.role for r in rs)),
                        _num(len(rs)),
                        _num(sum(r.rows or 0 for r in rs)),
                        _join(sorted({v for r in rs for v in r.views})),
                        _ts(rs[-1].entry.event.ts),
                    ),
                    _all_verified(rs),
                )
                for user, rs in sorted(users.items())
            ),
            numeric=(2, 3),
            show_verified=flag,
        )
    )
    blocks.append(_Heading(3, "By view"))
    blocks.append(
        _table(
            ("view", "queries", "users", "last access"),
            (
                (
                    (
                        view,
                        _num(len(rs)),
                        _num(len({r.user for r in rs})),
                        _ts(rs[-1].entry.event.ts),
                    ),
                    _all_verified(rs),
                )
                for view, rs in _by_view(records).items()
            ),
            numeric=(1, 2),
            show_verified=flag,
        )
    )
    recent = records[-RECENT_ROWS:]
    blocks.append(_Heading(3, f"Latest {len(recent)} of {len(records):,} queries"))
    blocks.append(
        _table(
            ("time", "user", "role", "views", "query fingerprint", "rows"),
            (
                (
                    (
                        _ts(r.entry.event.ts),
                        r.user,
                        r.role,
                        _join(r.views),
                        _short(r.fingerprint) or _UNKNOWN,
                        _num(r.rows),
                    ),
                    r.entry.verified,
                )
                for r in reversed(recent)
            ),
            numeric=(5,),
            show_verified=flag,
        )
    )
    return blocks


def _refused_blocks(s: _Summary, flag: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Refused access")]
    records = s.refused
    if not records:
        return [*blocks, _Para("No refused access recorded.")]
    users = _by_user(records)
    last = records[-1]
    blocks.append(
        _Para(
            f"{len(records):,} refusal(s) for {len(users)} user(s). Last refusal "
            f"{_ts(last.entry.event.ts)} for {last.user}."
        )
    )
    blocks.append(_Heading(3, "By user"))
    blocks.append(
        _table(
            ("user", "role", "refusals", "reasons", "views requested", "last refusal"),
            (
                (
                    (
                        user,
                        _join(_unique(r.role for r in rs)),
                        _num(len(rs)),
                        _join(
                            f"{why} ({n})"
                            for why, n in Counter(r.reason or _UNKNOWN for r in rs).items()
                        ),
                        _join(sorted({v for r in rs for v in r.views})),
                        _ts(rs[-1].entry.event.ts),
                    ),
                    _all_verified(rs),
                )
                for user, rs in sorted(users.items())
            ),
            numeric=(2,),
            show_verified=flag,
        )
    )
    recent = records[-RECENT_ROWS:]
    blocks.append(_Heading(3, f"Latest {len(recent)} of {len(records):,} refusals"))
    blocks.append(
        _table(
            ("time", "user", "role", "reason", "views requested"),
            (
                (
                    (_ts(r.entry.event.ts), r.user, r.role, r.reason or _UNKNOWN, _join(r.views)),
                    r.entry.verified,
                )
                for r in reversed(recent)
            ),
            show_verified=flag,
        )
    )
    return blocks


def _output_blocks(s: _Summary, flag: bool) -> list[_Block]:
    """Answers refused by the output rules, outputs held for review, refused decisions and
    downloads: one table each, by user and rule, then the latest ones."""
    blocks: list[_Block] = [_Heading(2, "Refused answers and outputs")]
    if not any(s.outputs.values()):
        return [
            *blocks,
            _Para(
                "No answer refused by the output rules, no output submitted for review, no "
                "output decision or download refused, and no job or table request refused."
            ),
        ]
    for event in OUTPUT_REFUSALS:
        records = s.outputs.get(event, [])
        blocks.append(_Heading(3, f"{_REFUSAL_TITLES[event]} ({event})"))
        if not records:
            blocks.append(_Para("None recorded."))
            continue
        groups: dict[str, list[_Refusal]] = {}
        for r in records:
            groups.setdefault(r.user, []).append(r)
        blocks.append(
            _table(
                ("user", "role", "count", "rules", "last"),
                (
                    (
                        (
                            user,
                            _join(_unique(r.role for r in rs)),
                            _num(len(rs)),
                            _join(
                                f"{rule} ({n})"
                                for rule, n in Counter(x for r in rs for x in r.rules).items()
                            ),
                            _ts(rs[-1].entry.event.ts),
                        ),
                        all(r.entry.verified for r in rs),
                    )
                    for user, rs in sorted(groups.items())
                ),
                numeric=(2,),
                show_verified=flag,
            )
        )
        recent = records[-RECENT_ROWS:]
        blocks.append(
            _table(
                ("time", "user", "rules", "output", "action"),
                (
                    (
                        (
                            _ts(r.entry.event.ts),
                            r.user,
                            _join(r.rules),
                            r.output_id or _UNKNOWN,
                            r.action or _UNKNOWN,
                        ),
                        r.entry.verified,
                    )
                    for r in reversed(recent)
                ),
                show_verified=flag,
            )
        )
    return blocks


def _failure_blocks(s: _Summary, flag: bool) -> list[_Block]:
    """The query service's refused and failed requests, counted per window
    (``service.failures``): totals by status, route and user or source."""
    blocks: list[_Block] = [_Heading(2, "Refused and failed requests")]
    if not s.failure_windows:
        return [*blocks, _Para("No refused or failed request counted.")]
    counts = _failure_counts(s.failures, len(s.failure_windows))
    peak = max(s.failure_windows, key=lambda e: _int(e.event.data.get("total")) or 0)
    blocks.append(
        _Para(
            f"{counts['total']:,} request(s) refused or failed in {counts['windows']:,} counted "
            f"window(s); the busiest began {_ts(_text(peak.event.data.get('window_start')))} "
            f"with {_num(_int(peak.event.data.get('total')))}. A user is a token id, or the "
            "source address of a request without a valid token; a flood is counted, never "
            "dropped."
        )
    )
    for title, key, header in (
        ("By status", "status", "status"),
        ("By route", "route", "route"),
    ):
        blocks.append(_Heading(3, title))
        blocks.append(
            _table(
                (header, "requests"),
                (
                    (
                        (name, _num(n)),
                        all(r.entry.verified for r in s.failures if getattr(r, key) == name),
                    )
                    for name, n in sorted(counts[f"by_{key}"].items())
                ),
                numeric=(1,),
                show_verified=flag,
            )
        )
    blocks.append(_Heading(3, f"Top {RECENT_ROWS} users and sources"))
    top = sorted(counts["by_who"].items(), key=lambda kv: (-kv[1], kv[0]))[:RECENT_ROWS]

    def statuses(who: str) -> str:
        found: Counter[str] = Counter()
        for r in s.failures:
            if r.who == who:
                found[r.status] += r.n
        return _join(f"{status} ({n:,})" for status, n in sorted(found.items()))

    blocks.append(
        _table(
            ("user or source", "requests", "statuses"),
            (
                (
                    (who, _num(n), statuses(who)),
                    all(r.entry.verified for r in s.failures if r.who == who),
                )
                for who, n in top
            ),
            numeric=(1,),
            show_verified=flag,
        )
    )
    return blocks


def _sealing_blocks(s: _Summary, result: AuditVerification, flag: bool) -> list[_Block]:
    """Sealing and witnesses: what the seals cover, the window after them, the witnesses."""
    blocks: list[_Block] = [_Heading(2, "Sealing and witnesses")]
    seal = result.seal
    seal_id = _seal_id(s)
    if seal_id is None:
        blocks.append(
            _Para(
                "The log is not forward-sealed (no audit.seal_started entry): whoever holds the "
                "audit key can rewrite all of it. The IG lead starts sealing with `uprnlink "
                "audit seal init` (docs/governance.md)."
            )
        )
    else:
        started = s.seal_started
        items = [
            ("seal id", seal_id),
            ("sealing started", _ts(started.event.ts) if started else _UNKNOWN),
            ("seals", _num(len(s.seals))),
            (
                "checked with the seed",
                "yes" if seal is not None and seal.checked else "NO (no verification seed given)",
            ),
        ]
        if s.seals:
            last = s.seals[-1].event
            items.append(
                (
                    "last seal",
                    f"seq {last.seq}, epoch {_num(_int(last.data.get('epoch')))}, {_ts(last.ts)}",
                )
            )
        if seal is not None:
            items.append(("entries after the last seal (the window)", _num(seal.unsealed)))
        blocks.append(_Facts(tuple(items)))
        times = [datetime.fromisoformat(e.event.ts) for e in s.seals if _parses(e.event.ts)]
        longest = max(
            ((later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)),
            default=None,
        )
        if longest is not None:
            blocks.append(
                _Para(
                    f"Longest time between two seals: {longest / 60:,.1f} minutes (the service "
                    "seals every [audit] seal_minutes while it writes; longer gaps are times "
                    "nothing was written or no writer ran)."
                )
            )
    witness_items = [
        ("witnesses matched", _num(result.witnesses_checked)),
        ("furthest witnessed seq", _num(result.last_witnessed_seq)),
    ]
    sinks = sorted(
        {
            str(w.get("sink"))
            for e in s.seals
            for w in (e.event.data.get("witness") or [])
            if isinstance(w, dict)
        }
    )
    if sinks:
        witness_items.append(("witness sinks the seals record", _join(sinks)))
    blocks.append(_Facts(tuple(witness_items)))
    if result.notes:
        blocks.append(_Bullets(tuple(f"Not checked: {n}" for n in result.notes)))
    return blocks


def _parses(ts: str) -> bool:
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        return False
    return True


def _overview_block(s: _Summary) -> _Table:
    counts = _counts(s)
    rows = [
        ("entries in the log", _num(counts["entries"])),
        ("key ids", _num(len(counts["keys"]))),
        ("runs", _num(counts["runs"]["total"])),
        ("publications", _num(counts["publications"])),
        ("tables built (table builder and named questions)", _num(counts["tables"]["total"])),
        ("outputs released", _num(counts["released"]["output.released"]["total"])),
        ("outputs downloaded", _num(counts["released"]["output.downloaded"]["total"])),
        ("analyst queries", _num(counts["access"]["total"])),
        ("refused access attempts", _num(counts["refused"]["total"])),
        ("answers refused by the output rules", _num(counts["outputs"]["answer.refused"]["total"])),
        ("outputs submitted for review", _num(counts["outputs"]["output.submitted"]["total"])),
        (
            "output decisions or downloads refused",
            _num(
                counts["outputs"]["output.decision_refused"]["total"]
                + counts["outputs"]["output.download_refused"]["total"]
            ),
        ),
        ("refused or failed requests (counted)", _num(counts["failures"]["total"])),
        ("seals", _num(counts["sealing"]["seals"])),
    ]
    if counts["unverified"]:
        rows.insert(1, ("entries NOT verified", _num(counts["unverified"])))
    return _Table(("what", "count"), tuple(rows), frozenset({1}))


def _report_blocks(
    log_path: Path,
    head_path: Path | None,
    keys: Sequence[MasterKey],
    result: AuditVerification,
    entries: list[_Entry],
    unreadable: list[tuple[int, str]],
    now: datetime,
) -> list[_Block]:
    supplied = {k.key_id: k for k in keys}
    summary = _summarise(entries, {k.key_id: k.epoch for k in keys})
    flag = not all(e.verified for e in entries)
    blocks: list[_Block] = [
        _Heading(1, "uprnlink audit report"),
        _Facts(
            (
                ("audit log", str(log_path)),
                ("checkpoint", str(head_path) if head_path is not None else f"{log_path}.head"),
                ("generated", _ts(now.isoformat())),
                ("keys supplied", _join(f"{k.key_id} (epoch {k.epoch})" for k in keys)),
            )
        ),
        _verdict_block(result),
    ]
    if unreadable:
        blocks.append(_Para(f"{len(unreadable)} line(s) could not be read at all:", strong=True))
        blocks.append(_Bullets(tuple(f"line {n} {why}" for n, why in unreadable[:RECENT_ROWS])))
    blocks.append(_Heading(2, "Overview"))
    blocks.append(_overview_block(summary))
    blocks += _key_blocks(summary, supplied, flag)
    blocks += _run_blocks(summary, flag)
    blocks += _publication_blocks(summary, flag)
    blocks += _retention_blocks(summary, flag)
    blocks += _table_blocks(summary, flag)
    blocks += _released_blocks(summary, flag)
    blocks += _access_blocks(summary, flag)
    blocks += _refused_blocks(summary, flag)
    blocks += _output_blocks(summary, flag)
    blocks += _failure_blocks(summary, flag)
    blocks += _sealing_blocks(summary, result, flag)
    return blocks


# --------------------------------------------------------------------------- Markdown


_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~#!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def _md(text: str) -> str:
    """Plain text made inert in Markdown: one line, every active character backslash-escaped."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), _CONTROL.sub(" ", text))


def _markdown(blocks: Sequence[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            out.append(f"{'#' * b.level} {_md(b.text)}")
        elif isinstance(b, _Para):
            out.append(f"**{_md(b.text)}**" if b.strong else _md(b.text))
        elif isinstance(b, _Facts):
            out.append("\n".join(f"- **{_md(k)}:** {_md(v)}" for k, v in b.items))
        elif isinstance(b, _Bullets):
            out.append("\n".join(f"- {_md(item)}" for item in b.items))
        elif isinstance(b, _Alert):
            kind = "TIP" if b.ok else "CAUTION"
            lines = [f"> [!{kind}]", f"> **{_md(b.title)}**"]
            if b.lead:
                lines += [">", f"> **{_md(b.lead)}**"]
            for line in b.lines:
                lines += [">", f"> {_md(line)}"]
            out.append("\n".join(lines))
        else:
            sep = ["---:" if i in b.numeric else "---" for i in range(len(b.headers))]
            rows = [
                "| " + " | ".join(_md(h) for h in b.headers) + " |",
                "| " + " | ".join(sep) + " |",
            ]
            for i, row in enumerate(b.rows):
                cells = [_md(c) for c in row]
                if i in b.flagged:
                    cells = [f"**{c}**" if c else c for c in cells]
                rows.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(rows))
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML


def _sections(blocks: Sequence[_Block]) -> list[list[_Block]]:
    """Blocks grouped for the page: a verdict alone, and a section from each second-level
    heading to the next."""
    sections: list[list[_Block]] = []
    for b in blocks:
        starts = isinstance(b, _Alert) or (isinstance(b, _Heading) and b.level == 2)
        if starts or not sections or isinstance(sections[-1][0], _Alert):
            sections.append([])
        sections[-1].append(b)
    return sections


def _html(blocks: Sequence[_Block], title: str) -> str:
    """The page: the report's first-level heading in the page header, then its sections."""
    first, rest = blocks[0], blocks[1:]
    if not (isinstance(first, _Heading) and first.level == 1):
        raise ValueError("an audit report starts with its first-level heading")
    return render_page("audit.html.j2", title=title, heading=first.text, sections=_sections(rest))


# --------------------------------------------------------------------------- entry point


def render_audit_report(
    log_path: Path,
    keys: MasterKey | Sequence[MasterKey],
    *,
    head_path: Path | None,
    fmt: ReportFormat = "markdown",
    now: datetime | None = None,
    witnesses: Sequence[Witness] = (),
    seed: SealSeed | None = None,
    seal_state: Path | None = None,
    witness_files: Sequence[WitnessFile] = (),
) -> str:
    """The audit report for `log_path` as Markdown or a self-contained HTML page.

    `keys` are every key the log may have been written with (the current key and retired
    ones, for a log that spans rotations); `head_path` is the checkpoint (None: next to the
    log). Never raises for a damaged, missing or unreadable log: the report says what is wrong.
    """
    if fmt not in ("markdown", "html"):
        raise ValueError(f"unknown report format {fmt!r}: use 'markdown' or 'html'")
    key_list = [keys] if isinstance(keys, MasterKey) else list(keys)
    log_path = Path(log_path)
    head = None if head_path is None else Path(head_path)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    entries, unreadable, cannot_read = _read_entries(log_path)
    result = _verify(
        log_path,
        key_list,
        head,
        cannot_read,
        witnesses,
        seed=seed,
        seal_state=seal_state,
        witness_files=witness_files,
    )
    # Lines past `verified` are unverified: after the first bad entry, or appended after the
    # verifier read the log, or all of them if the verifier could not run.
    entries = [_Entry(e.line, e.event, e.line <= result.verified) for e in entries]
    blocks = _report_blocks(log_path, head, key_list, result, entries, unreadable, now)
    if fmt == "html":
        return _html(blocks, f"uprnlink audit report: {log_path.name}")
    return _markdown(blocks)
