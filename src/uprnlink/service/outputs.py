"""Outputs in the query service: typed SQL as jobs a person checks, tables released as built.

Nothing leaves the service as a file except through here, and what an analyst's own SQL
produces never reaches them before a person has looked at it:

* **A job** (typed SQL, any role): the guard checks it at once (parse, names, binding: a
  function of the query's text and the catalogue, never of the data) and refuses it there
  if it must be refused; otherwise it is queued and runs in the background as its
  submitter. Its output is held. The submitter sees only "awaiting review" until an output
  checker decides: no preview, no row count, no error class, no rule's verdict, no timing.
  Checkers see everything: the SQL, the output, and the rules of `publish.outputs` as
  advice (the cells that fail them flagged, as ACRO does); the rules never release a job.
  A job is approved by `checkers_required` checkers (policy `[outputs]`, one or two, as
  OpenSAFELY has two), never by its submitter, or rejected with a note.
* **A table** (the table builder or a named question): protected by construction (every
  count and sum perturbed by the service), so it is released at once as a numbered output.

Each release gets the next number in the register and the SHA-256 of its bytes; a download
(its submitter or an IG lead only) re-hashes the bytes and refuses them if they changed.
Every submission, run, decision, download and refusal is in the audit log (ids, rule codes,
counts and fingerprints: never the query text, a justification or a value).

The store is `out/outputs/` (owner-only): one folder per output with `record.json` and the
output's bytes, written whole and renamed into place under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from uprnlink.errors import UprnlinkError
from uprnlink.governance.audit import AuditLog
from uprnlink.publish.access import (
    Identity,
    QueryCheck,
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
    shape_of_sql,
    to_csv_bytes,
    to_parquet_bytes,
)
from uprnlink.service.job_runner import FairJobRunner
from uprnlink.service.limits import current_user

__all__ = [
    "OutputDesk",
    "OutputError",
    "OutputRecord",
    "OutputStore",
]

log = logging.getLogger("uprnlink.service")

OutputFormat = Literal["csv", "parquet"]
_ID_RE = re.compile(r"^out-[0-9]{6}$")
MAX_JUSTIFICATION = 2000
MAX_TITLE = 200
WAITING = ("queued", "running", "pending", "failed")
"""A job's states before a checker decides: its submitter sees each as "awaiting review"."""


class OutputError(UprnlinkError):
    """An output request or decision that cannot go ahead (`status`: the HTTP status)."""

    exit_code = 8

    def __init__(self, message: str, status: int = 403, verdict: OutputVerdict | None = None):
        super().__init__(message)
        self.status = status
        self.verdict = verdict


@dataclass(frozen=True)
class OutputRecord:
    """One output: who asked, what ran, what the rules advise, who decided, what left."""

    id: str
    kind: str  # sql | table | named
    status: str  # queued | running | pending | failed | released | rejected
    submitter: str
    role: str
    created_at: str
    query_fingerprint: str
    format: str
    title: str = ""
    justification: str = ""
    sql: str | None = None
    named: str | None = None
    table: dict[str, Any] | None = None
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    shape: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    failure: str = ""
    sha256: str = ""
    size: int = 0
    approvals: list[str] = field(default_factory=list)
    decided_by: str | None = None
    decided_at: str | None = None
    decision_note: str = ""
    release_no: int | None = None
    released_at: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.format}"

    @property
    def decided(self) -> bool:
        return self.status in ("released", "rejected")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def for_checker(self) -> dict[str, Any]:
        """Everything, for output checkers and IG leads."""
        return self.to_dict()

    def for_submitter(self) -> dict[str, Any]:
        """What its submitter may know: their own request and the decision, and the output's
        size and fingerprint only once it is released. While a job waits, nothing that
        depends on the data (rows, columns, the rules' advice, a failure, timing)."""
        out = {
            k: getattr(self, k)
            for k in (
                "id",
                "kind",
                "submitter",
                "created_at",
                "format",
                "title",
                "justification",
                "sql",
                "named",
                "table",
                "decided_by",
                "decided_at",
                "decision_note",
                "release_no",
                "released_at",
            )
        }
        out["status"] = "awaiting review" if self.status in WAITING else self.status
        if self.status == "released":
            out.update(rows=self.rows, columns=self.columns, sha256=self.sha256, size=self.size)
        return out


def _job_text(sql: str, title: str, justification: str, fmt: str) -> tuple[str, str]:
    """A job's title and justification, tidied; OutputError (400) for a job missing one."""
    if fmt not in ("csv", "parquet"):
        raise OutputError("an output is csv or parquet", 400)
    title = " ".join(title.split())[:MAX_TITLE]
    justification = justification.strip()[:MAX_JUSTIFICATION]
    if not sql.strip():
        raise OutputError("a job needs SQL", 400)
    if not title or not justification:
        raise OutputError("a job needs a title and a justification for the output checker", 400)
    return title, justification


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

    def create(
        self, make: Callable[[str, int], OutputRecord], data: bytes | None = None
    ) -> OutputRecord:
        """A new output with the next id (`make` gets it and the next release number), its
        bytes written now if it has them (a job's come when it has run)."""
        with self._locked():
            existing = self.records()
            number = max((int(r.id[4:]) for r in existing), default=0) + 1
            release = max((r.release_no or 0 for r in existing), default=0) + 1
            record = make(f"out-{number:06d}", release)
            folder = self._dir(record.id)
            folder.mkdir(parents=True, exist_ok=False, mode=0o700)
            if data is not None:
                self._write(folder / record.filename, data)
            self._save(record)
            return record

    def update(
        self,
        output_id: str,
        change: Callable[[OutputRecord, int], OutputRecord],
        data: bytes | None = None,
    ) -> OutputRecord:
        """Change a record under the lock (`change` gets it and the next release number),
        writing its bytes first when given."""
        with self._locked():
            record = self.get(output_id)
            release = max((r.release_no or 0 for r in self.records()), default=0) + 1
            new = change(record, release)
            if data is not None:
                self._write(self._dir(new.id) / new.filename, data)
            self._save(new)
            return new


class OutputDesk:
    """Jobs, table outputs, decisions, downloads and the register, each checked against the
    role's rights and recorded in the audit log."""

    def __init__(
        self,
        store: OutputStore,
        audit: AuditLog,
        roles: dict[str, tuple[str, ...]],
        rights: dict[str, RoleRights],
        policy: DisclosurePolicy,
        *,
        checkers_required: int = 1,
        max_waiting_jobs: int = 5,
        job_workers: int = 2,
        rules: OutputRules | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.roles = roles
        self.rights = rights
        self.policy = policy
        self.rules = rules or OutputRules.from_policy(policy)
        self.checkers_required = checkers_required
        self.max_waiting_jobs = max_waiting_jobs
        self._jobs = FairJobRunner(job_workers)
        self._lock = threading.Lock()

    def rights_of(self, who: Identity) -> RoleRights:
        return self.rights.get(who.role, RoleRights())

    def close(self) -> None:
        self._jobs.close()

    def _base(self, who: Identity) -> dict[str, Any]:
        return {"user": safe_name(who.user), "role": safe_name(who.role)}

    # ------------------------------------------------------------------ the rules' advice
    def check(
        self,
        db: QueryEngine,
        who: Identity,
        result: QueryResult,
        *,
        sql: str,
        relations: tuple[str, ...] = (),
        timeout: float = 30.0,
    ) -> tuple[OutputShape, OutputVerdict]:
        """The rules' verdict on a job's output, for its checkers (a companion query gives the
        sums' largest contributions, on the same governed engine and role)."""
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        shape = shape_of_sql(sql, frame.columns, relations)
        contributions = None
        if shape.sums:
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

    # ------------------------------------------------------------------ jobs
    def submit_job(
        self,
        db: QueryEngine,
        who: Identity,
        *,
        sql: str,
        title: str,
        justification: str,
        fmt: str = "csv",
    ) -> tuple[OutputRecord, bool]:
        """Queue a typed SQL job (the record, and whether it was already waiting: the same
        query and format from the same user is not queued twice). The guard's check runs now
        (it depends on the text and the catalogue only) and refuses at once; nothing else
        about the job reaches the submitter before a checker decides."""
        title, justification = _job_text(sql, title, justification, fmt)
        base = self._base(who)
        fingerprint = query_fingerprint(sql, self.audit)
        with self._lock:
            # The user's own jobs awaiting a decision: a repeat is the same job, and there may
            # be at most max_waiting_jobs of them.
            undecided = [
                r
                for r in self.store.records()
                if r.kind == "sql" and r.submitter == who.user and not r.decided
            ]
            for r in undecided:
                if r.query_fingerprint == fingerprint and r.format == fmt:
                    self.audit.append(
                        "output.duplicate",
                        actor=base["user"],
                        data={**base, "output_id": r.id, "query_fingerprint": fingerprint},
                    )
                    return r, True
            self._admit_job(db, who, sql, base, fingerprint, waiting=len(undecided))
            now = _now()

            def make(output_id: str, release: int) -> OutputRecord:
                del release
                return OutputRecord(
                    id=output_id,
                    kind="sql",
                    status="queued",
                    submitter=who.user,
                    role=who.role,
                    created_at=now,
                    query_fingerprint=fingerprint,
                    format=fmt,
                    title=title,
                    justification=justification,
                    sql=sql,
                )

            record = self.store.create(make)
        self.audit.append(
            "output.submitted",
            actor=base["user"],
            data={**base, "output_id": record.id, "query_fingerprint": fingerprint, "format": fmt},
        )
        return record, False

    def _admit_job(
        self,
        db: QueryEngine,
        who: Identity,
        sql: str,
        base: dict[str, Any],
        fingerprint: str,
        *,
        waiting: int,
    ) -> None:
        """Refuse (logged) a job the guard refuses, or one over the user's max_waiting_jobs."""
        check = self._check(db, who, sql)
        if not check.allowed:
            self.audit.append(
                "output.refused",
                actor=base["user"],
                data={**base, "query_fingerprint": fingerprint, "rule": check.rule},
            )
            raise OutputError(f"job refused: {check.reason} (logged)", 403)
        if waiting >= self.max_waiting_jobs:
            # Counts only the user's own jobs, which they know of: it tells them nothing.
            self.audit.append(
                "output.refused",
                actor=base["user"],
                data={**base, "query_fingerprint": fingerprint, "rule": "max_waiting_jobs"},
            )
            raise OutputError(
                f"you have {waiting} jobs awaiting review, the most one user may have "
                "([output_checking] max_waiting_jobs): wait for a decision, or ask a "
                "checker to reject one you no longer need",
                429,
            )

    def _check(self, db: QueryEngine, who: Identity, sql: str) -> QueryCheck:
        role = safe_name(who.role)
        if role not in self.roles:
            return QueryCheck(False, (), reason=f"unknown role {role!r}", rule="role")
        try:
            return db.check(sql, self.roles[role])
        except Exception as exc:  # fail closed
            name = type(exc).__name__
            return QueryCheck(
                False, (), reason=f"the query cannot be checked ({name})", rule="check"
            )

    def start(
        self,
        record: OutputRecord,
        engine: Callable[[], QueryEngine],
        *,
        max_rows: int,
        timeout: float,
        still_allowed: Callable[[], bool] | None = None,
    ) -> None:
        """Run a queued job in the background (its outcome goes to the checkers only)."""
        self._jobs.submit(
            record.submitter,
            lambda: self._run_job(record.id, engine, max_rows, timeout, still_allowed),
        )

    def waiting_jobs(self) -> list[OutputRecord]:
        """Jobs not yet run (queued, or interrupted while running): run again at start-up."""
        return [
            r for r in self.store.records() if r.kind == "sql" and r.status in ("queued", "running")
        ]

    def _run_job(
        self,
        output_id: str,
        engine: Callable[[], QueryEngine],
        max_rows: int,
        timeout: float,
        still_allowed: Callable[[], bool] | None,
    ) -> None:
        try:
            self._run_job_now(output_id, engine, max_rows, timeout, still_allowed)
        except Exception as exc:  # a job must end as failed, never stay "running"
            log.warning("job %s failed: %s", output_id, type(exc).__name__)
            self._finish(output_id, "failed", failure=f"the job failed ({type(exc).__name__})")

    def _finish(self, output_id: str, status: str, **updates: Any) -> OutputRecord:
        data = updates.pop("data", None)

        def change(current: OutputRecord, release: int) -> OutputRecord:
            del release
            return OutputRecord(**{**current.to_dict(), "status": status, **updates})

        return self.store.update(output_id, change, data)

    def _run_job_now(
        self,
        output_id: str,
        engine: Callable[[], QueryEngine],
        max_rows: int,
        timeout: float,
        still_allowed: Callable[[], bool] | None,
    ) -> None:
        record = self._finish(output_id, "running")
        who = Identity(record.submitter, record.role)
        # Jobs share the query workers fairly with everyone's requests, as their submitter.
        current_user.set(f"job:{record.submitter}")
        db = engine()
        sql = str(record.sql)
        try:
            result = governed_query(
                db,
                self.audit,
                who,
                self.roles,
                sql=sql,
                max_rows=max_rows,
                timeout=timeout,
                channel="job",
                still_allowed=still_allowed,
            )
        except UprnlinkError as exc:
            self._finish(output_id, "failed", failure=str(exc))
            self.audit.append(
                "output.job_failed",
                actor=safe_name(who.user),
                data={**self._base(who), "output_id": output_id},
            )
            return
        relations = db.check(sql, self.roles.get(who.role, ())).relations
        shape, verdict = self.check(db, who, result, sql=sql, relations=relations, timeout=timeout)
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        data = (
            to_csv_bytes(frame, shape.withheld)
            if record.format == "csv"
            else to_parquet_bytes(frame, shape.withheld)
        )
        self._finish(
            output_id,
            "pending",
            rows=frame.height,
            columns=list(frame.columns),
            shape=shape.describe(),
            verdict=verdict.to_dict(),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            data=data,
        )
        self.audit.append(
            "output.job_ready",
            actor=safe_name(who.user),
            data={
                **self._base(who),
                "output_id": output_id,
                "rows": frame.height,
                "rules": verdict.rules,
            },
        )

    # ------------------------------------------------------------------ tables
    def release_table(
        self,
        who: Identity,
        frame: pl.DataFrame,
        withheld: tuple[str, ...],
        *,
        fmt: str,
        title: str,
        table: dict[str, Any],
        named: str | None = None,
    ) -> OutputRecord:
        """A table builder answer (or a named question's) as a released output: protected by
        construction, so it needs no checker."""
        if fmt not in ("csv", "parquet"):
            raise OutputError("an output is csv or parquet", 400)
        data = to_csv_bytes(frame, withheld) if fmt == "csv" else to_parquet_bytes(frame, withheld)
        digest = hashlib.sha256(data).hexdigest()
        now = _now()
        fingerprint = query_fingerprint(json.dumps(table, sort_keys=True), self.audit)

        def make(output_id: str, release: int) -> OutputRecord:
            return OutputRecord(
                id=output_id,
                kind="named" if named else "table",
                status="released",
                submitter=who.user,
                role=who.role,
                created_at=now,
                query_fingerprint=fingerprint,
                format=fmt,
                title=" ".join(title.split())[:MAX_TITLE],
                named=named,
                table=table,
                rows=frame.height,
                columns=list(frame.columns),
                verdict={"findings": [], "protected_by": "cell-key perturbation"},
                sha256=digest,
                size=len(data),
                decided_by="table builder",
                decided_at=now,
                release_no=release,
                released_at=now,
            )

        base = self._base(who)
        with self._lock:
            for r in self.store.records():
                if (
                    r.kind in ("named", "table")
                    and r.submitter == who.user
                    and r.query_fingerprint == fingerprint
                    and r.sha256 == digest
                ):
                    # The same table with the same cells (same release, same format) is the
                    # same output: its number again, not a new one in the register.
                    self.audit.append(
                        "output.duplicate",
                        actor=base["user"],
                        data={**base, "output_id": r.id, "query_fingerprint": fingerprint},
                    )
                    return r
            record = self.store.create(make, data)
        data_out = {
            **base,
            "output_id": record.id,
            "sha256": digest,
            "release_no": record.release_no,
            "approved_by": "table-builder",
            "rows": frame.height,
        }
        if named:
            data_out["named_query"] = named
        self.audit.append("output.released", actor=base["user"], data=data_out)
        return record

    # ------------------------------------------------------------------ decisions
    def decide(
        self, who: Identity, output_id: str, *, approve: bool, note: str = ""
    ) -> OutputRecord:
        """An output checker approves or rejects a job; it is released once
        `checkers_required` different checkers (never its submitter) have approved it."""
        base = self._base(who)
        user = base["user"]
        event = "output.approved" if approve else "output.rejected"
        refused = {**base, "action": event}
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
            if current.decided:
                raise OutputError(f"output {current.id} is {current.status} already", 409)
            if not approve:
                updates: dict[str, Any] = {
                    "status": "rejected",
                    "decided_by": who.user,
                    "decided_at": now,
                    "decision_note": note,
                }
                return OutputRecord(**{**current.to_dict(), **updates})
            if current.status != "pending":
                raise OutputError(
                    f"output {current.id} has no output to approve ({current.status})", 409
                )
            if who.user in current.approvals:
                raise OutputError("you have approved this output already", 409)
            approvals = [*current.approvals, who.user]
            updates = {"approvals": approvals, "decision_note": note or current.decision_note}
            if len(approvals) >= self.checkers_required:
                updates.update(
                    status="released",
                    decided_by=", ".join(approvals),
                    decided_at=now,
                    release_no=release,
                    released_at=now,
                )
            return OutputRecord(**{**current.to_dict(), **updates})

        new = self.store.update(record.id, change)
        data = {
            **base,
            "output_id": new.id,
            "submitter": safe_name(new.submitter),
            "sha256": new.sha256,
        }
        self.audit.append(event, actor=user, data=data)
        if new.status == "released":
            self.audit.append(
                "output.released",
                actor=user,
                data={**data, "release_no": new.release_no, "approved_by": new.decided_by},
            )
        return new

    # ------------------------------------------------------------------ reading
    def is_checker(self, who: Identity) -> bool:
        rights = self.rights_of(who)
        return rights.check_outputs or rights.audit

    def view(self, who: Identity, record: OutputRecord) -> dict[str, Any]:
        """A record as this user may see it: everything for checkers and IG leads, the
        submitter's view for its submitter."""
        return record.for_checker() if self.is_checker(who) else record.for_submitter()

    def show(self, who: Identity, output_id: str) -> OutputRecord:
        record = self.store.get(output_id)
        if not (record.submitter == who.user or self.is_checker(who)):
            raise OutputError("no such output", 404)  # others' outputs are not confirmed
        return record

    def visible(self, who: Identity) -> list[OutputRecord]:
        """The outputs a user may list: their own, or all of them for checkers and IG."""
        records = self.store.records()
        if self.is_checker(who):
            return records
        return [r for r in records if r.submitter == who.user]

    def register(self, who: Identity) -> list[OutputRecord]:
        """Everything released, in release order (checkers and IG leads)."""
        if not self.is_checker(who):
            self.audit.append(
                "output.register_refused", actor=safe_name(who.user), data=self._base(who)
            )
            raise OutputError("the release register is for output checkers and IG leads", 403)
        released = [r for r in self.store.records() if r.status == "released"]
        return sorted(released, key=lambda r: r.release_no or 0)

    def preview(self, who: Identity, record: OutputRecord) -> pl.DataFrame | None:
        """A job's held output as a table, for checkers (and, once released, its submitter);
        None when there is none yet."""
        may = self.is_checker(who) or (record.submitter == who.user and record.status == "released")
        if not may or record.status not in ("pending", "released"):
            return None
        data = self.store.data(record)
        if record.format == "parquet":
            return pl.read_parquet(data)
        return pl.read_csv(data, infer_schema=False)

    def download(self, who: Identity, output_id: str) -> tuple[OutputRecord, bytes]:
        """A released output's bytes, for its submitter or an IG lead, re-checked against its
        fingerprint."""
        base = self._base(who)
        user = base["user"]
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
            raise OutputError(f"output {record.id} is not released", 409)
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


@dataclass(frozen=True)
class OutputChecking:
    """`[output_checking]` of the governance policy."""

    checkers_required: int = 1
    """How many output checkers must approve a job (1 or 2)."""
    max_waiting_jobs: int = 5
    """Jobs one user may have awaiting review at once (queued, run or failed, undecided), so
    one analyst cannot fill the queue the others' jobs wait in."""


def read_output_checking(policy_path: Path) -> OutputChecking:
    """`[output_checking]` from the policy (defaults where a key is not written)."""
    from uprnlink.errors import ConfigError
    from uprnlink.policy import read_governance_policy

    try:
        section = read_governance_policy(policy_path).output_checking
    except ConfigError as exc:
        raise OutputError(str(exc), 500) from None
    return OutputChecking(
        checkers_required=section.checkers_required, max_waiting_jobs=section.max_waiting_jobs
    )
