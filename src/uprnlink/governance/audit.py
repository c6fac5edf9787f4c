"""Tamper-evident audit log: hash-chained, MACed JSON Lines plus a MACed head checkpoint.

Each line is one `AuditEvent`. Its ``hash`` is SHA-256 over the canonical JSON of every field
except ``hash`` and ``mac`` (sorted keys, no spaces, UTF-8), and that includes ``prev``, the
previous entry's hash (``GENESIS`` for the first), so editing, deleting, inserting or
reordering an entry breaks the chain. Anyone can recompute a hash chain, so each entry also
carries ``mac`` = HMAC-SHA256 under the master key's ``"audit"`` sub-key over a label, the
canonical bytes and the hash: without the key nobody can forge a consistent chain.

Cutting entries off the end leaves a valid chain, so every append also rewrites a separate
checkpoint (``<log>.head`` by default) holding the last seq and hash under its own MAC. Keep
the checkpoint where whoever can write the log cannot (another directory, volume or host) for
the strongest guarantee; a checkpoint and log rolled back together to an older pair cannot be
detected from the files alone.

Entries hold non-personal facts only (counts, run ids, file names, key ids): the caller must
never pass raw identifiers or data values in ``data``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac as _stdlib_hmac
import json
import math
import os
import platform
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from uprnlink.errors import AuditError
from uprnlink.privacy.keys import MasterKey, load_audit_key
from uprnlink.settings import RunSettings
from uprnlink.zones import Zones

__all__ = [
    "GENESIS",
    "KNOWN_EVENTS",
    "AuditEvent",
    "AuditLog",
    "AuditVerification",
    "Witness",
    "actor",
    "default_head_path",
    "open_audit_log",
    "read_audit_events",
    "record_key_event",
    "run_witnesses",
    "verify_audit_log",
    "verify_run_audit",
]

GENESIS = "0" * 64
"""The ``prev`` of the first entry."""

ROTATED = "audit.key_rotated"
"""The entry (MACed with the old audit key) that hands the log over to a new audit key."""

KNOWN_EVENTS = (
    "key.created",
    "key.loaded",
    "key.rotated",
    ROTATED,
    "run.started",
    "run.finished",
    "run.failed",
    "publish",
    "access",
    "access.refused",
)
"""Events uprnlink writes. Other dotted lower-case names are accepted."""

_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_SIGNED_FIELDS = ("seq", "ts", "event", "actor", "key_id", "data", "prev")
_ALL_FIELDS = frozenset((*_SIGNED_FIELDS, "hash", "mac"))
_ENTRY_LABEL = b"uprnlink-audit-entry/v1\x00"
_HEAD_LABEL = b"uprnlink-audit-head/v1\x00"
_HEAD_VERSION = 1
MAX_BATCH = 32
"""Most entries one group commit writes: after an append interrupted between the log and its
checkpoint, the checkpoint trails the log by at most this many entries."""
_MAX_DEPTH = 16

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def default_head_path(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint of log `path` lives unless told otherwise: ``<log>.head``."""
    p = Path(path)
    return p.with_name(p.name + ".head")


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _mac(proto_key: MasterKey, label: bytes, *parts: bytes) -> str:
    h = proto_key.hmac_prototype("audit")
    h.update(label)
    for part in parts:
        h.update(part)
    return h.finalize().hex()


def _entry_canonical(signed: Mapping[str, Any]) -> bytes:
    return _canonical({k: signed[k] for k in _SIGNED_FIELDS})


def _entry_mac(key: MasterKey, canonical: bytes, digest: str) -> str:
    return _mac(key, _ENTRY_LABEL, canonical, b"\x00", digest.encode())


def _entry_digests(signed: Mapping[str, Any], key: MasterKey | None) -> tuple[str, str | None]:
    canonical = _entry_canonical(signed)
    digest = hashlib.sha256(canonical).hexdigest()
    return digest, None if key is None else _entry_mac(key, canonical, digest)


def _head_mac(key: MasterKey, seq: int, digest: str, key_id: str) -> str:
    body = {"version": _HEAD_VERSION, "seq": seq, "hash": digest, "key_id": key_id}
    return _mac(key, _HEAD_LABEL, _canonical(body))


def _check_data(value: Any, where: str, depth: int = 0) -> Any:
    """A JSON-safe copy of `value`; errors name the field path, never the value."""
    if depth > _MAX_DEPTH:
        raise AuditError(f"audit data is nested deeper than {_MAX_DEPTH} levels at {where!r}")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditError(f"audit data field {where!r} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_check_data(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit data keys must be strings (under {where!r})")
            out[k] = _check_data(v, f"{where}.{k}" if where else k, depth + 1)
        return out
    raise AuditError(
        f"audit data field {where!r} has unsupported type {type(value).__name__} "
        "(use str, int, float, bool, None, list or dict)"
    )


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit log."""

    seq: int
    ts: str
    event: str
    actor: str
    key_id: str
    data: Mapping[str, Any]
    prev: str
    hash: str
    mac: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            "actor": self.actor,
            "key_id": self.key_id,
            "data": dict(self.data),
            "prev": self.prev,
            "hash": self.hash,
            "mac": self.mac,
        }

    def to_json_line(self) -> str:
        """The line as stored: fields in a readable order, compact, ASCII-only, newline-ended.

        ASCII escapes keep U+2028 and friends from splitting the line in other readers; the
        hash and MAC are over the canonical form, not over this text.
        """
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True) + "\n"

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> AuditEvent:
        return cls(**{k: obj[k] for k in _ALL_FIELDS})


@dataclass(frozen=True)
class AuditVerification:
    """Result of `verify_audit_log`: `ok`, or where the log first goes wrong and why."""

    ok: bool
    entries: int
    """Lines in the log."""
    verified: int
    """Entries that passed every check before the first failure."""
    first_bad_seq: int | None = None
    """Seq the log should have at the first bad position (for truncation: the first missing)."""
    first_bad_line: int | None = None
    """1-based line number of the first bad entry (for truncation: one past the last line)."""
    reason: str | None = None
    head_seq: int | None = None
    key_ids: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _entry_shape_problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "is not a JSON object"
    if set(obj) != _ALL_FIELDS:
        return "has missing or unexpected fields"
    if isinstance(obj["seq"], bool) or not isinstance(obj["seq"], int):
        return "has a non-integer seq"
    for name in ("ts", "event", "actor", "key_id", "prev", "hash", "mac"):
        if not isinstance(obj[name], str):
            return f"has a non-string {name}"
    if not isinstance(obj["data"], dict):
        return "has data that is not an object"
    return None


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, "is not valid JSON"
    problem = _entry_shape_problem(obj)
    return (obj, None) if problem is None else (None, problem)


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str
    key_id: str
    mac: str


def _read_head(head_path: Path) -> _Head | str | None:
    """The checkpoint, None if absent, or a string saying why it is unusable."""
    try:
        raw = head_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"checkpoint {head_path} cannot be read ({exc.strerror})"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"checkpoint {head_path} is not valid JSON"
    if (
        not isinstance(obj, dict)
        or obj.get("version") != _HEAD_VERSION
        or isinstance(obj.get("seq"), bool)
        or not isinstance(obj.get("seq"), int)
        or obj["seq"] < 0
        or not all(isinstance(obj.get(k), str) for k in ("hash", "key_id", "mac"))
    ):
        return f"checkpoint {head_path} is malformed"
    return _Head(seq=obj["seq"], hash=obj["hash"], key_id=obj["key_id"], mac=obj["mac"])


def _mac_ok(expected: str, given: str) -> bool:
    return _stdlib_hmac.compare_digest(expected.encode(), given.encode())


@contextlib.contextmanager
def _locked(path: Path, *, exclusive: bool) -> Iterator[int]:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT if exclusive else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o640)
    except FileNotFoundError:
        raise AuditError(f"audit log {path} not found") from None
    except IsADirectoryError:
        raise AuditError(f"audit log {path} is a directory") from None
    except OSError as exc:
        raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise AuditError(f"audit log {path} is a directory")
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _last_line(fd: int) -> tuple[bytes | None, bool]:
    """The last line of the file (without newline) and whether the file ends with a newline."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, True
    ends_with_newline = os.pread(fd, 1, size - 1) == b"\n"
    end = size - 1 if ends_with_newline else size
    chunk = 65536
    buf = b""
    pos = end
    while pos > 0:
        start = max(0, pos - chunk)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        nl = buf.rfind(b"\n")
        if nl >= 0:
            return buf[nl + 1 :], ends_with_newline
    return buf, ends_with_newline


def _hash_at(fd: int, seq: int, last_seq: int) -> str | None:
    """The hash of entry `seq`, read back from the end of the log (which ends at `last_seq`),
    however long its lines are."""
    size = os.fstat(fd).st_size
    want = last_seq - seq + 2  # lines from the end, with the trailing empty one
    buf, pos = b"", size
    while pos > 0 and buf.count(b"\n") <= want:
        start = max(0, pos - 65536)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
    for raw in reversed(buf.split(b"\n")[-want - 1 :]):
        obj, _ = _parse_line(raw) if raw else (None, None)
        if obj is not None and obj["seq"] == seq:
            return str(obj["hash"])
    return None


class AuditLog:
    """Appends MACed, hash-chained events to a JSON Lines audit log and its checkpoint."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: MasterKey,
        *,
        head_path: str | os.PathLike[str] | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        if not isinstance(key, MasterKey):
            raise AuditError("an audit log needs a MasterKey to MAC its entries")
        self.path = Path(path)
        self.head_path = default_head_path(self.path) if head_path is None else Path(head_path)
        self._key = key
        self._clock = clock
        self._turn = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        for directory in {self.path.parent, self.head_path.parent}:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AuditError(
                    f"cannot create directory {directory} for the audit log: {exc.strerror}"
                ) from None
        if self.path.is_dir():
            raise AuditError(f"audit log {self.path} is a directory")

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, key_id={self._key.key_id!r})"

    def _timestamp(self) -> str:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise AuditError("audit clock must return a timezone-aware datetime")
        return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _tail_state(self, fd: int) -> tuple[int, str]:
        """Seq and hash to chain from, after checking the tail agrees with the checkpoint."""
        raw, ends_with_newline = _last_line(fd)
        head = _read_head(self.head_path)
        if isinstance(head, str):
            raise AuditError(f"{head}; run `uprnlink audit verify` before appending")
        if (
            head is not None
            and head.key_id == self._key.key_id
            and not _mac_ok(_head_mac(self._key, head.seq, head.hash, head.key_id), head.mac)
        ):
            raise AuditError(
                f"checkpoint {self.head_path} fails its MAC check; "
                "run `uprnlink audit verify` before appending"
            )
        if raw is None:
            if head is not None:
                raise AuditError(
                    f"audit log {self.path} is empty but its checkpoint records seq {head.seq}: "
                    "the log has been truncated; run `uprnlink audit verify`"
                )
            return -1, GENESIS
        if not ends_with_newline:
            raise AuditError(
                f"audit log {self.path} ends with an incomplete line; "
                "run `uprnlink audit verify` before appending"
            )
        last, problem = _parse_line(raw)
        if last is None:
            raise AuditError(
                f"the last line of audit log {self.path} {problem}; "
                "run `uprnlink audit verify` before appending"
            )
        same_key = last["key_id"] == self._key.key_id
        handed_over = last["event"] == ROTATED and last["data"].get("to_key_id") == self._key.key_id
        if not (same_key or handed_over):
            # Why: a key the log does not know could append entries nobody can verify, so a
            # wrong or forged key is refused before anything is written (or queried).
            raise AuditError(
                f"audit log {self.path} is kept with audit key {last['key_id']}, not "
                f"{self._key.key_id}: use the log's audit key (a new audit key takes over only "
                "after `uprnlink key rotate --kind audit` records the hand-over)"
            )
        digest, mac = _entry_digests(last, self._key if same_key else None)
        if digest != last["hash"] or (mac is not None and not _mac_ok(mac, last["mac"])):
            raise AuditError(
                f"the last entry of audit log {self.path} (seq {last['seq']}) fails its "
                "hash or MAC check; run `uprnlink audit verify` before appending"
            )
        if head is None:
            raise AuditError(
                f"checkpoint {self.head_path} of audit log {self.path} is missing; "
                "run `uprnlink audit verify` before appending"
            )
        current = (head.seq, head.hash) == (last["seq"], last["hash"])
        one_behind = (head.seq, head.hash) == (last["seq"] - 1, last["prev"])
        behind = (
            not (current or one_behind)
            and last["seq"] - MAX_BATCH <= head.seq < last["seq"]
            and _hash_at(fd, head.seq, last["seq"]) == head.hash
        )
        if not (current or one_behind or behind):
            raise AuditError(
                f"audit log {self.path} does not match its checkpoint (the log ends at seq "
                f"{last['seq']}, the checkpoint records seq {head.seq}): it has been truncated "
                "or altered; run `uprnlink audit verify`"
            )
        return int(last["seq"]), str(last["hash"])

    def _write_head(self, seq: int, digest: str) -> None:
        body = {
            "version": _HEAD_VERSION,
            "seq": seq,
            "hash": digest,
            "key_id": self._key.key_id,
            "mac": _head_mac(self._key, seq, digest, self._key.key_id),
        }
        tmp = self.head_path.with_name(f".{self.head_path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, (json.dumps(body) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise AuditError(f"cannot write checkpoint {self.head_path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            dfd = os.open(self.head_path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def check_key(self) -> None:
        """Refuse now, before any work, if this log cannot be appended to with this key (another
        key keeps it, or its tail or checkpoint is damaged)."""
        if not self.path.exists():
            return
        with _locked(self.path, exclusive=False) as fd:
            self._tail_state(fd)

    def rotate_to(self, new_key: MasterKey, *, actor: str) -> AuditLog:
        """Hand the log over to `new_key`: an `audit.key_rotated` entry MACed with the current
        key names the new key id; later entries are MACed with the new key."""
        if not isinstance(new_key, MasterKey) or new_key.key_id == self._key.key_id:
            raise AuditError("rotate the audit log to a different audit key")
        self.append(
            ROTATED,
            actor=actor,
            data={
                "from_key_id": self._key.key_id,
                "to_key_id": new_key.key_id,
                "epoch": new_key.epoch,
            },
        )
        return AuditLog(self.path, new_key, head_path=self.head_path, clock=self._clock)

    def append(
        self, event: str, *, actor: str, data: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        """Append one event (under an exclusive file lock, fsynced) and move the checkpoint.

        Refuses to append to a log whose tail or checkpoint is damaged, so a truncation is
        never papered over by the next entry.
        """
        if not isinstance(event, str) or len(event) > 64 or not _EVENT_RE.match(event):
            raise AuditError("audit event name must be dotted lower-case words, e.g. 'run.started'")
        if not isinstance(actor, str) or not actor.strip():
            raise AuditError("audit actor must be a non-empty string")
        clean = _check_data({} if data is None else data, "")
        if not isinstance(clean, dict):
            raise AuditError("audit data must be a mapping")
        try:
            _canonical(clean)
        except (TypeError, ValueError):
            raise AuditError("audit data is not JSON-serialisable") from None
        return self._commit(_Pending(event, actor, clean))

    def _commit(self, request: _Pending) -> AuditEvent:
        """Group commit: threads appending at once share one write, one fsync and one
        checkpoint. The first to arrive writes every entry waiting (in arrival order) while
        later ones queue; each call returns only once its own entry is on disk."""
        with self._turn:
            self._queue.append(request)
            while not request.done:
                if self._writing:
                    self._turn.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._turn.release()
                try:
                    self._write_batch(batch)
                finally:
                    self._turn.acquire()
                    self._writing = False
                    self._turn.notify_all()
        if request.error is not None:
            raise request.error
        assert request.entry is not None
        return request.entry

    def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            with _locked(self.path, exclusive=True) as fd:
                last_seq, prev = self._tail_state(fd)
                lines = []
                for request in batch:
                    signed: dict[str, Any] = {
                        "seq": last_seq + 1,
                        "ts": self._timestamp(),
                        "event": request.event,
                        "actor": request.actor,
                        "key_id": self._key.key_id,
                        "data": request.data,
                        "prev": prev,
                    }
                    digest, mac = _entry_digests(signed, self._key)
                    assert mac is not None
                    request.entry = AuditEvent(**signed, hash=digest, mac=mac)
                    lines.append(request.entry.to_json_line())
                    last_seq, prev = request.entry.seq, digest
                try:
                    os.write(fd, "".join(lines).encode("utf-8"))
                    os.fsync(fd)
                except OSError as exc:
                    raise AuditError(
                        f"cannot write audit log {self.path}: {exc.strerror}"
                    ) from None
                self._write_head(last_seq, prev)
        except AuditError as exc:
            for request in batch:
                request.entry, request.error = None, exc
        except Exception as exc:  # never leave a waiting thread hanging
            error = AuditError(f"cannot write audit log {self.path}: {type(exc).__name__}")
            for request in batch:
                request.entry, request.error = None, error
        for request in batch:
            request.done = True


@dataclass
class _Pending:
    """One entry waiting for the group commit."""

    event: str
    actor: str
    data: dict[str, Any]
    entry: AuditEvent | None = None
    error: AuditError | None = None
    done: bool = False


def _iter_lines(f: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    for number, raw in enumerate(f, start=1):
        complete = raw.endswith(b"\n")
        yield number, raw[:-1] if complete else raw, complete


@dataclass(frozen=True)
class Witness:
    """A head of the log recorded somewhere else (a run summary, a release): the log must still
    hold entry `seq` with exactly this `hash`, or it was cut short or rewritten."""

    source: str
    seq: int
    hash: str


def verify_audit_log(
    path: str | os.PathLike[str],
    key: MasterKey | Iterable[MasterKey],
    *,
    head_path: str | os.PathLike[str] | None = None,
    witnesses: Iterable[Witness] = (),
) -> AuditVerification:
    """Check every entry's seq, chain link, hash and MAC, then the checkpoint and witnesses.

    `key` may be several keys (for a log that spans key rotations); each entry is checked
    with the key its ``key_id`` names. An empty log fails (a log is never empty once anything
    has been recorded, and an emptied one must not pass), as does one that no longer holds a
    head recorded in a run summary or release (`witnesses`). Tampering is reported in the
    result, never raised; `AuditError` is raised only when the log itself cannot be opened.
    """
    witnessed = sorted(witnesses, key=lambda w: w.seq)
    p = Path(path)
    hp = default_head_path(p) if head_path is None else Path(head_path)
    keys = {key.key_id: key} if isinstance(key, MasterKey) else {k.key_id: k for k in key}
    if not p.exists():
        raise AuditError(f"audit log {p} not found")
    with _locked(p, exclusive=False) as fd, os.fdopen(os.dup(fd), "rb") as f:
        head = _read_head(hp)
        prev = GENESIS
        head_entry_hash: str | None = None
        seen_keys: list[str] = []
        hashes: dict[int, str] = {}
        wanted = {w.seq for w in witnessed}
        count = 0
        failure: tuple[int, int, str] | None = None  # line, seq, reason
        for number, raw, complete in _iter_lines(f):
            count = number
            if failure is not None:
                continue
            seq = number - 1
            where = f"line {number} (seq {seq})"
            if not complete:
                failure = (number, seq, f"{where} is incomplete: no line ending (a partial write)")
                continue
            if not raw.strip():
                failure = (number, seq, f"{where} is empty")
                continue
            obj, problem = _parse_line(raw)
            if obj is None:
                failure = (number, seq, f"{where} {problem}")
                continue
            if obj["seq"] != seq:
                failure = (
                    number,
                    seq,
                    f"line {number} holds seq {obj['seq']} where seq {seq} was expected: "
                    "an entry was deleted, inserted or moved",
                )
                continue
            if obj["prev"] != prev:
                failure = (
                    number,
                    seq,
                    f"entry seq {seq} (line {number}) does not link to the entry before it: "
                    "an entry was deleted, inserted, moved or altered",
                )
                continue
            try:
                canonical = _entry_canonical(obj)
            except (TypeError, ValueError):
                failure = (number, seq, f"entry seq {seq} (line {number}) holds invalid values")
                continue
            digest = hashlib.sha256(canonical).hexdigest()
            if digest != obj["hash"]:
                failure = (
                    number,
                    seq,
                    f"entry seq {seq} (line {number}) has been altered: its hash does not "
                    "match its contents",
                )
                continue
            entry_key = keys.get(obj["key_id"])
            if entry_key is None:
                failure = (
                    number,
                    seq,
                    f"entry seq {seq} (line {number}) is MACed with key {obj['key_id']}, "
                    "which was not supplied",
                )
                continue
            if not _mac_ok(_entry_mac(entry_key, canonical, digest), obj["mac"]):
                failure = (
                    number,
                    seq,
                    f"entry seq {seq} (line {number}) fails its MAC check: it was forged or "
                    "altered by someone without the key",
                )
                continue
            if obj["key_id"] not in seen_keys:
                seen_keys.append(obj["key_id"])
            if not isinstance(head, str) and head is not None and seq == head.seq:
                head_entry_hash = digest
            if seq in wanted:
                hashes[seq] = digest
            prev = digest

    verified = count if failure is None else failure[0] - 1

    def result(
        ok: bool,
        line: int | None = None,
        seq: int | None = None,
        reason: str | None = None,
        warnings: tuple[str, ...] = (),
    ) -> AuditVerification:
        return AuditVerification(
            ok=ok,
            entries=count,
            verified=verified,
            first_bad_seq=seq,
            first_bad_line=line,
            reason=reason,
            head_seq=head.seq if isinstance(head, _Head) else None,
            key_ids=tuple(seen_keys),
            warnings=warnings,
        )

    if failure is not None:
        return result(False, *failure)
    last_seq = count - 1
    for w in witnessed:
        if w.seq > last_seq:
            return result(
                False,
                count + 1,
                count,
                f"the log ends at seq {last_seq} but {w.source} recorded its head at seq "
                f"{w.seq}: entries were cut off the end (truncated or emptied)",
            )
        if not _mac_ok(hashes.get(w.seq, ""), w.hash):
            return result(
                False,
                w.seq + 1,
                w.seq,
                f"entry seq {w.seq} does not match the head {w.source} recorded: the log was "
                "rewritten from there",
            )
    if isinstance(head, str):
        return result(False, reason=head)
    if head is None:
        if count == 0:
            return result(
                False,
                reason="the audit log is empty: nothing has been recorded, or it was emptied",
            )
        return result(
            False, reason=f"checkpoint {hp} is missing, so truncation cannot be ruled out"
        )
    head_key = keys.get(head.key_id)
    if head_key is None:
        return result(
            False, reason=f"checkpoint {hp} is MACed with key {head.key_id}, which was not supplied"
        )
    if not _mac_ok(_head_mac(head_key, head.seq, head.hash, head.key_id), head.mac):
        return result(False, reason=f"checkpoint {hp} fails its MAC check")
    if head.seq > last_seq:
        missing = head.seq - last_seq
        return result(
            False,
            count + 1,
            count,
            f"the log ends at seq {last_seq} but the checkpoint records seq {head.seq}: "
            f"{missing} entr{'y' if missing == 1 else 'ies'} cut off the end (truncated)",
        )
    if head_entry_hash is None or not _mac_ok(head_entry_hash, head.hash):
        return result(
            False,
            head.seq + 1,
            head.seq,
            f"entry seq {head.seq} (line {head.seq + 1}) does not match the checkpoint's hash: "
            "the log was rewritten from there",
        )
    if head.seq == last_seq:
        return result(True)
    if head.seq == last_seq - 1:
        return result(
            True,
            warnings=(
                "the checkpoint is one entry behind the log (an append was interrupted); "
                "the next append brings it up to date",
            ),
        )
    if head.seq >= last_seq - MAX_BATCH:
        return result(
            True,
            warnings=(
                f"the checkpoint is {last_seq - head.seq} entries behind the log (a group of "
                "appends was interrupted before its checkpoint); the next append brings it up "
                "to date",
            ),
        )
    return result(
        False,
        head.seq + 2,
        head.seq + 1,
        f"the checkpoint records seq {head.seq} but the log continues to seq {last_seq}: "
        "the checkpoint was replaced by an older copy or its updates were lost",
    )


def read_audit_events(path: str | os.PathLike[str]) -> list[AuditEvent]:
    """All entries of an audit log, parsed but NOT verified (use `verify_audit_log` for that)."""
    p = Path(path)
    events = []
    with _locked(p, exclusive=False) as fd, os.fdopen(os.dup(fd), "rb") as f:
        for number, raw, _complete in _iter_lines(f):
            obj, problem = _parse_line(raw)
            if obj is None:
                raise AuditError(f"line {number} of audit log {p} {problem}")
            events.append(AuditEvent.from_dict(obj))
    return events


# --------------------------------------------------------------------------- a run's log


def open_audit_log(settings: RunSettings, key: MasterKey | None = None) -> AuditLog:
    """The audit log of a run configuration, kept with its audit key (`[audit]`; never the
    pseudonymisation key), its folders created if need be."""
    z = Zones(settings)
    z.audit_log.parent.mkdir(parents=True, exist_ok=True)
    z.audit_head.parent.mkdir(parents=True, exist_ok=True)
    return AuditLog(z.audit_log, key or load_audit_key(settings), head_path=z.audit_head)


def record_key_event(settings: RunSettings, event: str, data: dict[str, Any]) -> AuditEvent:
    """Append a key lifecycle event (created, rotated) to the run configuration's audit log."""
    return open_audit_log(settings).append(event, actor=actor(), data=data)


def head_of(entry: AuditEvent) -> dict[str, Any]:
    """What a run summary or release records of the log: an entry's seq and hash."""
    return {"seq": entry.seq, "hash": entry.hash}


def run_witnesses(settings: RunSettings) -> list[Witness]:
    """The log heads recorded in the run summaries (`out/runs/*.json`) and the releases
    (`out/releases/*/audit_head.json`) of a run configuration."""
    z = Zones(settings)
    found: list[Witness] = []
    places = [(p, f"run summary {p.name}") for p in sorted(z.runs.glob("*.json"))]
    places += [
        (p, f"release {p.parent.name}")
        for p in sorted((settings.out_dir / "releases").glob("*/audit_head.json"))
    ]
    for path, source in places:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        head = doc.get("audit_head") if isinstance(doc, dict) else None
        if (
            isinstance(head, dict)
            and isinstance(head.get("seq"), int)
            and not isinstance(head.get("seq"), bool)
            and isinstance(head.get("hash"), str)
        ):
            found.append(Witness(source, head["seq"], head["hash"]))
    return found


def verify_run_audit(settings: RunSettings, keys: Iterable[MasterKey]) -> AuditVerification:
    """Verify a run configuration's audit log against its checkpoint and every recorded head."""
    z = Zones(settings)
    return verify_audit_log(
        z.audit_log, keys, head_path=z.audit_head, witnesses=run_witnesses(settings)
    )


def actor() -> str:
    """Who is running this: the OS user on this host."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or str(os.getuid())
    return f"{user}@{platform.node()}"
