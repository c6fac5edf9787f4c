"""Output checking in the query service: the queue, the decisions and the release register.

Nothing leaves the service as a file except through here. An output request runs the query on
the governed path (`publish.access.governed_query`: role check, audit), then the rules of
`publish.outputs`: what passes is released at once; what fails is refused with the rules it
broke, or, if the analyst asks, queued for an output checker. A checker (a role with
``check_outputs``) approves or rejects; never their own submission (separation of duties).
Each release gets the next number in the register and the SHA-256 of its bytes; a download
(its submitter or an IG lead only) re-hashes the bytes and refuses them if they changed.
Every request, submission, decision, download and refusal is in the audit log (ids, rule
codes, counts and fingerprints: never the query text, a justification or a value).

The store is `out/outputs/` (owner-only): one folder per output with `record.json` and the
output's bytes, written whole and renamed into place under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from uprnlink.errors import UprnlinkError
from uprnlink.governance.audit import AuditLog
from uprnlink.publish import queries
from uprnlink.publish.access import (
    Identity,
    QueryEngine,
    QueryResult,
    governed_query,
    query_fingerprint,
    safe_name,
)
from uprnlink.publish.disclosure import DisclosurePolicy
from uprnlink.publish.outputs import (
    OutputRules,
    OutputShape,
    OutputVerdict,
    RoleRights,
    RuleFinding,
    check_output,
    dominance_sql,
    shape_of_named,
    shape_of_sql,
    to_csv_bytes,
    to_parquet_bytes,
)

__all__ = [
    "OutputDesk",
    "OutputError",
    "OutputRecord",
    "OutputStore",
    "shape_of_answer",
]

OutputFormat = Literal["csv", "parquet"]
_ID_RE = re.compile(r"^out-[0-9]{6}$")
MAX_JUSTIFICATION = 2000


class OutputError(UprnlinkError):
    """An output request or decision that cannot go ahead (`status`: the HTTP status)."""

    exit_code = 8

    def __init__(self, message: str, status: int = 403, verdict: OutputVerdict | None = None):
        super().__init__(message)
        self.status = status
        self.verdict = verdict


@dataclass(frozen=True)
class OutputRecord:
    """One output: who asked, what the rules said, who decided, and what was released."""

    id: str
    status: str  # pending | released | rejected
    submitter: str
    role: str
    created_at: str
    source: str
    query_fingerprint: str
    format: str
    rows: int
    columns: list[str]
    shape: dict[str, Any]
    verdict: dict[str, Any]
    sha256: str
    size: int
    sql: str | None = None
    named: str | None = None
    justification: str = ""
    decided_by: str | None = None
    decided_at: str | None = None
    decision_note: str = ""
    release_no: int | None = None
    released_at: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.format}"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def public(self) -> dict[str, Any]:
        """As listed (without the query text: the record page shows it to those allowed)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("sql",)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class OutputStore:
    """The outputs folder: records and bytes, written whole under a lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, output_id: str) -> Path:
        if not _ID_RE.match(output_id):
            raise OutputError("no such output", 404)
        return self.root / output_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _save(self, record: OutputRecord) -> None:
        folder = self._dir(record.id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write(folder / "record.json", json.dumps(record.to_dict(), indent=2).encode())

    def records(self) -> list[OutputRecord]:
        if not self.root.exists():
            return []
        out = []
        for folder in sorted(self.root.glob("out-*")):
            try:
                out.append(self.get(folder.name))
            except OutputError:
                continue
        return out

    def get(self, output_id: str) -> OutputRecord:
        path = self._dir(output_id) / "record.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return OutputRecord(**doc)
        except FileNotFoundError:
            raise OutputError("no such output", 404) from None
        except (OSError, ValueError, TypeError):
            raise OutputError(f"output {output_id}'s record cannot be read", 500) from None

    def data(self, record: OutputRecord) -> bytes:
        return (self._dir(record.id) / record.filename).read_bytes()

    def create(self, make: Callable[[str, int | None], OutputRecord], data: bytes) -> OutputRecord:
        """A new output with the next id (and the next release number if `make` releases)."""
        with self._locked():
            existing = self.records()
            number = max((int(r.id[4:]) for r in existing), default=0) + 1
            release = max((r.release_no or 0 for r in existing), default=0) + 1
            record = make(f"out-{number:06d}", release)
            folder = self._dir(record.id)
            folder.mkdir(parents=True, exist_ok=False, mode=0o700)
            self._write(folder / record.filename, data)
            self._save(record)
            return record

    def update(
        self, output_id: str, change: Callable[[OutputRecord, int], OutputRecord]
    ) -> OutputRecord:
        """Change a record under the lock (`change` gets it and the next release number)."""
        with self._locked():
            record = self.get(output_id)
            release = max((r.release_no or 0 for r in self.records()), default=0) + 1
            new = change(record, release)
            self._save(new)
            return new


def shape_of_answer(
    table_columns: list[str],
    *,
    sql: str | None,
    named: queries.NamedQuery | None,
    relations: tuple[str, ...] | list[str] = (),
) -> OutputShape:
    """The shape of a query's answer: from a named question's header, else from its SQL."""
    if named is not None:
        return shape_of_named(named, table_columns)
    return shape_of_sql(str(sql), table_columns, relations)


class OutputDesk:
    """Requests, decisions, downloads and the register, each checked against the role's
    rights and recorded in the audit log."""

    def __init__(
        self,
        store: OutputStore,
        audit: AuditLog,
        roles: dict[str, tuple[str, ...]],
        rights: dict[str, RoleRights],
        policy: DisclosurePolicy,
        rules: OutputRules | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.roles = roles
        self.rights = rights
        self.policy = policy
        self.rules = rules or OutputRules.from_policy(policy)

    def rights_of(self, who: Identity) -> RoleRights:
        return self.rights.get(who.role, RoleRights())

    # ------------------------------------------------------------------ requests
    def check(
        self,
        db: QueryEngine,
        who: Identity,
        result: QueryResult,
        *,
        sql: str | None,
        named: queries.NamedQuery | None,
        relations: tuple[str, ...] = (),
        timeout: float = 30.0,
    ) -> tuple[OutputShape, OutputVerdict]:
        """The rules' verdict on an answer (a companion query gives the sums' largest
        contributions, on the same governed engine and role)."""
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        shape = shape_of_answer(frame.columns, sql=sql, named=named, relations=relations)
        contributions = None
        if sql is not None and shape.sums:
            companion = dominance_sql(sql, shape, frame.columns)
            granted = self.roles.get(who.role, ())
            if companion is not None and db.check(companion, granted).allowed:
                try:
                    raw = db.run(companion, max_rows=frame.height + 1, timeout=timeout)
                    contributions = pl.from_arrow(raw.table)
                except UprnlinkError:
                    contributions = None
        assert contributions is None or isinstance(contributions, pl.DataFrame)
        verdict = check_output(
            frame, shape, self.rules, rights=self.rights_of(who), contributions=contributions
        )
        if result.truncated:
            verdict = OutputVerdict(
                (
                    *verdict.findings,
                    RuleFinding(
                        "complete",
                        "the answer was cut at the service's row limit: an output must be whole",
                    ),
                )
            )
        return shape, verdict

    def request(
        self,
        db: QueryEngine,
        who: Identity,
        *,
        sql: str | None = None,
        named: queries.NamedQuery | None = None,
        fmt: OutputFormat = "csv",
        submit: bool = False,
        justification: str = "",
        max_rows: int = 100_000,
        timeout: float = 30.0,
        still_allowed: Callable[[], bool] | None = None,
        answers: Any = None,
    ) -> OutputRecord:
        """Run, check and release (or queue, or refuse) one output."""
        if fmt not in ("csv", "parquet"):
            raise OutputError("an output is csv or parquet", 400)
        justification = justification.strip()[:MAX_JUSTIFICATION]
        result = governed_query(
            db,
            self.audit,
            who,
            self.roles,
            self.policy,
            sql=sql,
            named=named,
            max_rows=max_rows,
            timeout=timeout,
            channel="output",
            still_allowed=still_allowed,
            answers=answers,
        )
        granted = self.roles.get(who.role, ())
        relations = () if named is not None else db.check(str(sql), granted).relations
        shape, verdict = self.check(
            db, who, result, sql=sql, named=named, relations=relations, timeout=timeout
        )
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        text = named.sql if named is not None else str(sql)
        user = safe_name(who.user)
        fingerprint = query_fingerprint(text, self.audit)
        base: dict[str, Any] = {
            "user": user,
            "role": safe_name(who.role),
            "query_fingerprint": fingerprint,
            "rows": frame.height,
            "format": fmt,
        }
        if named is not None:
            base["named_query"] = named.name
        self.audit.append(
            "output.checked",
            actor=user,
            data={**base, "passed": verdict.passed, "rules": verdict.rules},
        )
        if not verdict.passed and not submit:
            raise OutputError(
                f"output refused by rule ({', '.join(verdict.rules)}): {verdict.summary()}; "
                "you may submit it for review by an output checker (uprnlink query --submit WHY)",
                422,
                verdict,
            )
        if not verdict.passed and not justification:
            raise OutputError("a submission for review needs a justification", 400, verdict)
        data = (
            to_csv_bytes(frame, shape.withheld)
            if fmt == "csv"
            else to_parquet_bytes(frame, shape.withheld)
        )
        digest = hashlib.sha256(data).hexdigest()
        now = _now()

        def make(output_id: str, release: int | None) -> OutputRecord:
            released = verdict.passed
            return OutputRecord(
                id=output_id,
                status="released" if released else "pending",
                submitter=who.user,
                role=who.role,
                created_at=now,
                source=shape.source,
                query_fingerprint=fingerprint,
                format=fmt,
                rows=frame.height,
                columns=list(frame.columns),
                shape=shape.describe(),
                verdict=verdict.to_dict(),
                sha256=digest,
                size=len(data),
                sql=None if named is not None else sql,
                named=named.name if named is not None else None,
                justification=justification,
                decided_by="rules" if released else None,
                decided_at=now if released else None,
                release_no=release if released else None,
                released_at=now if released else None,
            )

        record = self.store.create(make, data)
        ids = {"output_id": record.id, "sha256": record.sha256}
        if record.status == "released":
            self.audit.append(
                "output.released",
                actor=user,
                data={**base, **ids, "release_no": record.release_no, "approved_by": "rules"},
            )
        else:
            self.audit.append(
                "output.submitted", actor=user, data={**base, **ids, "rules": verdict.rules}
            )
        return record

    def refuse_answer(self, who: Identity, text: str, verdict: OutputVerdict) -> None:
        """Record that an answer was withheld by the rules from a role that sees only
        checked answers (`unchecked_answers = false`)."""
        self.audit.append(
            "answer.refused",
            actor=safe_name(who.user),
            data={
                "user": safe_name(who.user),
                "role": safe_name(who.role),
                "query_fingerprint": query_fingerprint(text, self.audit),
                "rules": verdict.rules,
            },
        )

    # ------------------------------------------------------------------ decisions
    def decide(
        self, who: Identity, output_id: str, *, approve: bool, note: str = ""
    ) -> OutputRecord:
        """An output checker approves (releases) or rejects a pending submission."""
        user = safe_name(who.user)
        event = "output.approved" if approve else "output.rejected"
        refused = {"user": user, "role": safe_name(who.role), "action": event}
        if not self.rights_of(who).check_outputs:
            self.audit.append(
                "output.decision_refused", actor=user, data={**refused, "rule": "role"}
            )
            raise OutputError("only an output checker may approve or reject outputs", 403)
        record = self.store.get(output_id)
        if record.submitter == who.user:
            self.audit.append(
                "output.decision_refused",
                actor=user,
                data={**refused, "output_id": record.id, "rule": "own-submission"},
            )
            raise OutputError(
                "you submitted this output: another output checker must decide it", 403
            )
        note = note.strip()[:MAX_JUSTIFICATION]
        if not approve and not note:
            raise OutputError("a rejection needs a reason for the analyst", 400)
        now = _now()

        def change(current: OutputRecord, release: int) -> OutputRecord:
            if current.status != "pending":
                raise OutputError(f"output {current.id} is {current.status}, not pending", 409)
            updates: dict[str, Any] = {
                "status": "released" if approve else "rejected",
                "decided_by": who.user,
                "decided_at": now,
                "decision_note": note,
            }
            if approve:
                updates.update(release_no=release, released_at=now)
            return OutputRecord(**{**current.to_dict(), **updates})

        new = self.store.update(record.id, change)
        data = {
            "user": user,
            "role": safe_name(who.role),
            "output_id": new.id,
            "submitter": safe_name(new.submitter),
            "sha256": new.sha256,
        }
        self.audit.append(event, actor=user, data=data)
        if approve:
            self.audit.append(
                "output.released",
                actor=user,
                data={**data, "release_no": new.release_no, "approved_by": user},
            )
        return new

    # ------------------------------------------------------------------ reading
    def may_see(self, who: Identity, record: OutputRecord) -> bool:
        rights = self.rights_of(who)
        return record.submitter == who.user or rights.check_outputs or rights.audit

    def show(self, who: Identity, output_id: str) -> OutputRecord:
        record = self.store.get(output_id)
        if not self.may_see(who, record):
            raise OutputError("no such output", 404)  # others' outputs are not confirmed
        return record

    def visible(self, who: Identity) -> list[OutputRecord]:
        """The outputs a user may list: their own, or all of them for checkers and IG."""
        rights = self.rights_of(who)
        records = self.store.records()
        if rights.check_outputs or rights.audit:
            return records
        return [r for r in records if r.submitter == who.user]

    def register(self, who: Identity) -> list[OutputRecord]:
        """Everything released, in release order (checkers and IG leads)."""
        rights = self.rights_of(who)
        if not (rights.check_outputs or rights.audit):
            self.audit.append(
                "output.register_refused",
                actor=safe_name(who.user),
                data={"user": safe_name(who.user), "role": safe_name(who.role)},
            )
            raise OutputError("the release register is for output checkers and IG leads", 403)
        released = [r for r in self.store.records() if r.status == "released"]
        return sorted(released, key=lambda r: r.release_no or 0)

    def preview(self, record: OutputRecord) -> pl.DataFrame:
        """The stored output as a table (for the checker's page)."""
        data = self.store.data(record)
        if record.format == "parquet":
            return pl.read_parquet(data)
        return pl.read_csv(data, infer_schema=False)

    def download(self, who: Identity, output_id: str) -> tuple[OutputRecord, bytes]:
        """A released output's bytes, for its submitter or an IG lead, re-checked against its
        fingerprint."""
        user = safe_name(who.user)
        base = {"user": user, "role": safe_name(who.role)}
        try:
            record = self.store.get(output_id)
        except OutputError:
            self.audit.append(
                "output.download_refused", actor=user, data={**base, "rule": "unknown"}
            )
            raise
        allowed = record.submitter == who.user or self.rights_of(who).audit
        if not allowed or record.status != "released":
            rule = "not-released" if allowed else "not-submitter"
            self.audit.append(
                "output.download_refused",
                actor=user,
                data={**base, "output_id": record.id, "rule": rule},
            )
            if not allowed:
                raise OutputError("no such output", 404)
            raise OutputError(f"output {record.id} is {record.status}, not released", 409)
        data = self.store.data(record)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            self.audit.append(
                "output.tampered",
                actor=user,
                data={**base, "output_id": record.id, "sha256": record.sha256},
            )
            raise OutputError(
                f"output {record.id} no longer matches its fingerprint: not sent (logged)", 409
            )
        self.audit.append(
            "output.downloaded",
            actor=user,
            data={
                **base,
                "output_id": record.id,
                "sha256": record.sha256,
                "release_no": record.release_no,
            },
        )
        return record, data
