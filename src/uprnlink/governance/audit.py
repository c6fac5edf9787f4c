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

Anyone holding the audit key can rewrite all of that consistently, and the query service must
hold it. So the log is also **forward-sealed** (as journald's Forward Secure Sealing does it,
with a hash chain of keys instead of FSPRG): `uprnlink audit seal init` gives the IG lead a
seed to keep offline and the writers an epoch-0 sealing state (`uprnlink.privacy.sealing`).
At least every ``[audit] seal_minutes`` (policy) while anything is written, a writer appends an
``audit.sealed`` entry whose ``seal`` is a MAC, under that epoch's key, of the entry itself
(its seq, time, epoch and ``prev``: the chain's head), then replaces the state with the next
epoch's key, derived one way from the last. Seals are numbered 0, 1, 2, ... without gaps; the
verifier derives every epoch key from the seed and checks every seal, so whoever later takes
the service (its audit key and current sealing state) can rewrite only what came after the
last seal. The pipeline's appends and the service's share one state file, read and replaced
only under the log's exclusive lock; a seal saved in the state but not yet in the log (a crash
between the two) is appended by the next writer before anything else.

The log's head is also **witnessed**, after each seal and at least every ``[audit]
witness_minutes`` while it moves, to sinks the writers cannot rewrite (another account's
append-only file, syslog/journald: `uprnlink.governance.witness`). Verification reads the
witness file: every witness must match the log, one past its end means truncation, and a
missing, truncated or unreadable witness file fails.

Entries hold non-personal facts only (counts, run ids, file names, key ids): the caller must
never pass raw identifiers or data values in ``data``. Text an analyst typed reaches the log
only as a keyed fingerprint (`AuditLog.fingerprint`), which nobody reading the log can confirm
a guess against without the audit key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac as _stdlib_hmac
import json
import logging
import math
import os
import platform
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from uprnlink.errors import AuditError
from uprnlink.governance.witness import (
    Witness,
    WitnessFile,
    WitnessSink,
    read_witness_file,
    witness_line,
    witness_sinks,
)
from uprnlink.policy import read_governance_policy
from uprnlink.privacy.keys import MasterKey, load_audit_key
from uprnlink.privacy.sealing import (
    LastSeal,
    SealSeed,
    SealState,
    SealStateInfo,
    read_seal_state,
    read_seal_state_info,
    seal_mac,
    write_seal_state,
)
from uprnlink.settings import RunSettings
from uprnlink.zones import Zones

__all__ = [
    "GENESIS",
    "KNOWN_EVENTS",
    "SEALED",
    "SEAL_STARTED",
    "AuditEvent",
    "AuditLog",
    "AuditPolicy",
    "AuditVerification",
    "SealPolicy",
    "Witness",
    "WitnessFile",
    "WitnessSink",
    "actor",
    "default_head_path",
    "keyed_fingerprint",
    "open_audit_log",
    "read_audit_events",
    "read_audit_policy",
    "record_key_event",
    "run_witnesses",
    "verify_audit_log",
    "verify_run_audit",
]

log = logging.getLogger("uprnlink.audit")

GENESIS = "0" * 64
"""The ``prev`` of the first entry."""

ROTATED = "audit.key_rotated"
"""The entry (MACed with the old audit key) that hands the log over to a new audit key."""
SEAL_STARTED = "audit.seal_started"
"""The entry `uprnlink audit seal init` writes: sealing begins, under the seal id it names."""
SEALED = "audit.sealed"
"""A seal: MACs the log's head under one epoch's sealing key (`uprnlink.privacy.sealing`)."""
FAILURES = "service.failures"
"""The query service's refused and failed requests, counted per window (never dropped)."""

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
    SEAL_STARTED,
    SEALED,
    FAILURES,
)
"""Events uprnlink writes. Other dotted lower-case names are accepted."""

_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_SIGNED_FIELDS = ("seq", "ts", "event", "actor", "key_id", "data", "prev")
_ALL_FIELDS = frozenset((*_SIGNED_FIELDS, "hash", "mac"))
_ENTRY_LABEL = b"uprnlink-audit-entry/v1\x00"
_FINGERPRINT_PURPOSE = "audit_fingerprint"
FINGERPRINT_HEX = 16
"""Hex digits of a keyed fingerprint (64 bits: enough to tell queries apart in one log)."""
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


def keyed_fingerprint(key: MasterKey, text: str) -> str:
    """A short HMAC of `text` under the audit key's fingerprint sub-key: the same text gives the
    same fingerprint in one log (so attempts can be matched up), but nobody without the key can
    test a guess (a query holding a name or an id) against the log."""
    h = key.hmac_prototype(_FINGERPRINT_PURPOSE)
    h.update(text.encode("utf-8"))
    return h.finalize().hex()[:FINGERPRINT_HEX]


def _seal_message(signed: Mapping[str, Any]) -> dict[str, Any]:
    """What a seal MACs: the seal entry's signed fields without the seal itself (so its seq,
    time, epoch and ``prev``, the hash of the head it seals)."""
    data = {k: v for k, v in signed["data"].items() if k != "seal"}
    return {**{k: signed[k] for k in _SIGNED_FIELDS}, "data": data}


@dataclass(frozen=True)
class AuditPolicy:
    """How often the log is sealed and witnessed (`[audit]` in the governance policy)."""

    seal_minutes: float = 5.0
    witness_minutes: float = 1.0


def read_audit_policy(policy_path: Path) -> AuditPolicy:
    """`[audit]` of the governance policy (defaults where absent); errors name the setting."""
    section = read_governance_policy(policy_path, AuditError).audit
    return AuditPolicy(seal_minutes=section.seal_minutes, witness_minutes=section.witness_minutes)


@dataclass(frozen=True)
class SealPolicy:
    """Where a log's sealing state lives and how often it is sealed and witnessed."""

    state_path: Path
    seal_seconds: float = 300.0
    witness_seconds: float = 60.0


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
    seal: SealSummary | None = None
    """What the seals say (None: the log was never sealed)."""
    witnesses_checked: int = 0
    """Witnesses (run summaries, releases, witness files) matched against the log."""
    last_witnessed_seq: int | None = None
    """The furthest seq a witness recorded: entries after it can still be cut off unseen."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What was not checked, and why (no seed given, no witness file, ...)."""


@dataclass(frozen=True)
class SealSummary:
    """The seals of a log as verification found them."""

    seal_id: str
    seals: int
    """Seal entries (epochs 0 .. seals - 1)."""
    checked: bool
    """Whether every seal's MAC was checked with the seed (False: no seed was given)."""
    last_sealed_seq: int | None
    """Seq of the last seal entry: everything up to it is sealed."""
    last_epoch: int | None
    last_ts: str | None
    unsealed: int
    """Entries after the last seal: only hash-chained and MACed with the audit key, so whoever
    holds the audit key and the current sealing state can still rewrite them (the window)."""


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


@dataclass(frozen=True)
class _Tail:
    """Where the log ends: the seq and hash to chain from, and the last entry's event."""

    seq: int
    hash: str
    event: str | None


class AuditLog:
    """Appends MACed, hash-chained events to a JSON Lines audit log and its checkpoint; seals
    and witnesses it when given a `SealPolicy` and witness sinks."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: MasterKey,
        *,
        head_path: str | os.PathLike[str] | None = None,
        clock: Clock = _utc_now,
        sealing: SealPolicy | None = None,
        witnesses: Sequence[WitnessSink] = (),
        writer: str | None = None,
    ) -> None:
        if not isinstance(key, MasterKey):
            raise AuditError("an audit log needs a MasterKey to MAC its entries")
        self.path = Path(path)
        self.head_path = default_head_path(self.path) if head_path is None else Path(head_path)
        self._key = key
        self._clock = clock
        self.sealing = sealing
        self.witness_sinks: tuple[WitnessSink, ...] = tuple(witnesses)
        self._writer = writer
        self._turn = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        self._witnessed: tuple[int, str] | None = None
        self._witnessed_at: datetime | None = None
        self._state_seen: tuple[tuple[int, int, int], SealStateInfo] | None = None
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

    def fingerprint(self, text: str) -> str:
        """`keyed_fingerprint` of `text` under this log's audit key."""
        return keyed_fingerprint(self._key, text)

    def _timestamp(self) -> str:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise AuditError("audit clock must return a timezone-aware datetime")
        return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _actor(self) -> str:
        return self._writer or actor()

    # ------------------------------------------------------------------ the tail

    def _tail_state(self, fd: int) -> tuple[int, str]:
        """Seq and hash to chain from, after checking the tail agrees with the checkpoint."""
        tail = self._tail(fd)
        return tail.seq, tail.hash

    def _tail(self, fd: int) -> _Tail:
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
            return _Tail(-1, GENESIS, None)
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
        return _Tail(int(last["seq"]), str(last["hash"]), str(last["event"]))

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
            self._tail(fd)

    # ------------------------------------------------------------------ sealing

    def seal_state_info(self) -> SealStateInfo | None:
        """The sealing state's public part (no key), or None when sealing has not been started
        (no state file). Re-read only when the file changes (every seal replaces it)."""
        if self.sealing is None:
            return None
        path = self.sealing.state_path
        try:
            st = path.stat()
        except FileNotFoundError:
            self._state_seen = None
            return None
        except OSError as exc:
            raise AuditError(f"sealing state {path} cannot be read ({exc.strerror})") from None
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._state_seen is not None and self._state_seen[0] == version:
            return self._state_seen[1]
        info = read_seal_state_info(path)
        self._state_seen = (version, info)
        return info

    def require_sealing(self) -> SealStateInfo:
        """The sealing state, or refuse: a service must not run on an unsealed log."""
        if self.sealing is None:
            raise AuditError(f"audit log {self.path} has no sealing configured")
        info = self.seal_state_info()
        if info is None:
            raise AuditError(
                f"audit log {self.path} is not forward-sealed: sealing state "
                f"{self.sealing.state_path} is missing. The IG lead runs `uprnlink audit seal "
                "init --config FILE` first (docs/governance.md) (rule: seal_state_missing)"
            )
        read_seal_state(self.sealing.state_path).key.erase()  # refuse a corrupted state now
        return info

    def _recover(self, fd: int, tail: _Tail) -> _Tail:
        """Append the seal the state records but the log lacks (a writer stopped between
        saving the state and writing the seal); refuse a log cut back past the last seal."""
        info = self.seal_state_info()
        last = None if info is None else info.last_seal
        if last is None or last.seq < tail.seq:
            return tail
        if last.seq == tail.seq:
            if last.hash != tail.hash:
                raise AuditError(
                    f"audit log {self.path} does not hold the seal its sealing state records "
                    f"at seq {last.seq}: it was rewritten; run `uprnlink audit verify`"
                )
            return tail
        if last.seq == tail.seq + 1 and last.prev == tail.hash:
            self._write_lines(fd, [last.line if last.line.endswith("\n") else last.line + "\n"])
            return _Tail(last.seq, last.hash, SEALED)
        raise AuditError(
            f"audit log {self.path} ends at seq {tail.seq} but its sealing state records a seal "
            f"at seq {last.seq} (epoch {last.epoch}): the log was cut back; run "
            "`uprnlink audit verify` (rule: seal_missing)"
        )

    def _write_lines(self, fd: int, lines: Sequence[str]) -> None:
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        except OSError as exc:
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror}") from None

    def _seal_due(self, info: SealStateInfo | None, tail: _Tail, force: bool) -> bool:
        if self.sealing is None or info is None or tail.seq < 0 or tail.event == SEALED:
            return False
        if force:
            return True
        started = datetime.fromisoformat(info.started)
        return (self._clock() - started).total_seconds() >= self.sealing.seal_seconds

    def _seal(self, fd: int, tail: _Tail) -> _Tail:
        """Write the seal of the current epoch over the head `tail`, then move the state on.

        Order, so that a crash at any point loses nothing and keeps no old key: (1) compute
        the seal entry under this epoch's key; (2) save the next epoch's state, which records
        that entry (the old key leaves the file system's names here); (3) append the entry.
        A crash between (2) and (3) leaves the entry in the state: `_recover` appends it."""
        assert self.sealing is not None
        state = read_seal_state(self.sealing.state_path)
        try:
            ts = self._timestamp()
            data: dict[str, Any] = {
                "seal_id": state.seal_id,
                "epoch": state.epoch,
                "head_seq": tail.seq,
                "head_hash": tail.hash,
                "epoch_started": state.started,
            }
            sizes = self._witness_sizes()
            if sizes:
                data["witness"] = sizes
            signed: dict[str, Any] = {
                "seq": tail.seq + 1,
                "ts": ts,
                "event": SEALED,
                "actor": self._actor(),
                "key_id": self._key.key_id,
                "data": data,
                "prev": tail.hash,
            }
            data["seal"] = seal_mac(state.key, _seal_message(signed))
            digest, mac = _entry_digests(signed, self._key)
            assert mac is not None
            entry = AuditEvent(**signed, hash=digest, mac=mac)
            line = entry.to_json_line()
            following = state.advanced(
                self._clock(), LastSeal(entry.seq, digest, tail.hash, state.epoch, line)
            )
            try:
                write_seal_state(self.sealing.state_path, following)
            finally:
                following.key.erase()
        finally:
            state.key.erase()
        self._write_lines(fd, [line])
        return _Tail(entry.seq, digest, SEALED)

    def _witness_sizes(self) -> list[dict[str, Any]]:
        """What each witness sink with a size holds now, for the seal to record: a witness file
        later found shorter than a sealed size was truncated."""
        out = []
        for sink in self.witness_sinks:
            try:
                found = sink.size()
            except OSError:
                found = None
            if isinstance(found, int):
                out.append({"sink": sink.name, "bytes": found})
        return out

    def seal_now(self) -> AuditEvent | None:
        """Seal whatever is not sealed yet (the end of a run, the service stopping), and
        witness the new head. Returns the seal entry, or None if there was nothing to seal
        or sealing has not been started."""
        return self._maintain(force_seal=True)

    def maintain(self) -> AuditEvent | None:
        """What a long-running writer does on a timer: seal if the epoch is due, and witness
        the head if it moved and the last witness is older than the policy allows (or a seal
        was just written)."""
        return self._maintain(force_seal=False)

    def _maintain(self, *, force_seal: bool) -> AuditEvent | None:
        sealed: AuditEvent | None = None
        info = self.seal_state_info() if self.path.exists() else None
        if info is not None:
            sealed = self._exclusive(lambda: self._seal_under_lock(force_seal))
        witness_due = (
            self._witnessed_at is None
            or self.sealing is None
            or (self._clock() - self._witnessed_at).total_seconds() >= self.sealing.witness_seconds
        )
        if self.witness_sinks and (sealed is not None or force_seal or witness_due):
            try:
                self.witness()
            except AuditError as exc:  # the log itself is fine; say which sink failed
                log.error("%s", exc)
        return sealed

    def _seal_under_lock(self, force: bool) -> AuditEvent | None:
        with _locked(self.path, exclusive=True) as fd:
            tail = self._recover(fd, self._tail(fd))
            sealed = None
            if self._seal_due(self.seal_state_info(), tail, force):
                tail = self._seal(fd, tail)
                sealed = tail
            self._write_head(tail.seq, tail.hash)
        if sealed is None:
            return None
        return self._entry_at(sealed.seq)

    def _entry_at(self, seq: int) -> AuditEvent | None:
        with _locked(self.path, exclusive=False) as fd:
            raw, _ = _last_line(fd)
        obj, _ = _parse_line(raw) if raw else (None, None)
        if obj is not None and obj["seq"] == seq:
            return AuditEvent.from_dict(obj)
        return None

    def _exclusive(self, work: Callable[[], Any]) -> Any:
        """Run `work` while no group commit of this object is writing."""
        with self._turn:
            while self._writing:
                self._turn.wait()
            self._writing = True
        try:
            return work()
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()

    def start_sealing(
        self, seed: SealSeed, *, actor: str, seal_minutes: float | None = None
    ) -> SealStateInfo:
        """Begin forward sealing (`uprnlink audit seal init`): save the epoch-0 state, record
        ``audit.seal_started`` and seal everything written so far at once. Refuses a log that
        was already sealed (by any seed) or whose state exists."""
        if self.sealing is None:
            raise AuditError(f"audit log {self.path} has no sealing configured")
        state_path = self.sealing.state_path
        if state_path.exists():
            raise AuditError(
                f"sealing state {state_path} already exists: sealing was started for this log "
                "(rule: seal_exists)"
            )
        if self.path.exists() and any(
            e.event in (SEALED, SEAL_STARTED) for e in read_audit_events(self.path)
        ):
            raise AuditError(
                f"audit log {self.path} already holds seals but its sealing state is missing: "
                "run `uprnlink audit verify` with the seed; a log cannot be sealed twice "
                "(rule: seal_exists)"
            )
        self.check_key()
        state = SealState.first(seed, self._clock())
        try:
            write_seal_state(state_path, state, new=True)
        finally:
            state.key.erase()
        self._state_seen = None
        try:
            self.append(
                SEAL_STARTED,
                actor=actor,
                data={
                    "seal_id": seed.seal_id,
                    "seal_minutes": round(self.sealing.seal_seconds / 60, 3),
                    "witness_minutes": round(self.sealing.witness_seconds / 60, 3),
                    "witness_sinks": [s.name for s in self.witness_sinks],
                },
            )
        except AuditError:
            with contextlib.suppress(OSError):
                state_path.unlink()
            raise
        self.seal_now()
        info = self.seal_state_info()
        assert info is not None
        return info

    # ------------------------------------------------------------------ witnesses

    def head(self) -> tuple[int, str] | None:
        """The log's last seq and hash as they are on disk now (None: empty or missing)."""
        if not self.path.exists():
            return None
        with _locked(self.path, exclusive=False) as fd:
            raw, _ = _last_line(fd)
        obj, _ = _parse_line(raw) if raw else (None, None)
        return None if obj is None else (int(obj["seq"]), str(obj["hash"]))

    def witness(self, *, force: bool = False) -> Witness | None:
        """Write the log's head to every witness sink (skipped when it has not moved since this
        object last witnessed it, unless `force`). A sink that fails is reported and the
        others still written; the error names the sink, never a key."""
        head = self.head()
        if head is None or not self.witness_sinks:
            return None
        now = self._clock()
        if head == self._witnessed and not force:
            self._witnessed_at = now
            return None
        info = self.seal_state_info()
        line = witness_line(
            seq=head[0],
            digest=head[1],
            ts=self._timestamp(),
            seal_id=None if info is None else info.seal_id,
            epoch=None if info is None else info.epoch,
            by=self._actor(),
        )
        failures = []
        for sink in self.witness_sinks:
            try:
                sink.write(line)
            except (OSError, AuditError) as exc:
                failures.append(f"{sink.name} ({getattr(exc, 'strerror', None) or exc})")
        self._witnessed, self._witnessed_at = head, now
        if failures:
            raise AuditError("cannot write the audit witness to " + "; ".join(failures))
        return Witness("witness", head[0], head[1])

    # ------------------------------------------------------------------ appending

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
        return AuditLog(
            self.path,
            new_key,
            head_path=self.head_path,
            clock=self._clock,
            sealing=self.sealing,
            witnesses=self.witness_sinks,
            writer=self._writer,
        )

    def append(
        self, event: str, *, actor: str, data: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        """Append one event (under an exclusive file lock, fsynced) and move the checkpoint.

        Refuses to append to a log whose tail or checkpoint is damaged, so a truncation is
        never papered over by the next entry. When the sealing epoch is due, the same commit
        seals the log after the entry (and witnesses the new head).
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
        sealed = False
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
                    sealed = self._write_batch(batch)
                finally:
                    self._turn.acquire()
                    self._writing = False
                    self._turn.notify_all()
        if request.error is not None:
            raise request.error
        assert request.entry is not None
        if sealed and self.witness_sinks:
            try:
                self.witness()
            except AuditError as exc:  # the entry is written; say which sink failed
                log.error("%s", exc)
        return request.entry

    def _write_batch(self, batch: list[_Pending]) -> bool:
        """Write `batch` (and a seal after it when the epoch is due); True if it sealed."""
        sealed = False
        try:
            with _locked(self.path, exclusive=True) as fd:
                tail = self._recover(fd, self._tail(fd))
                last_seq, prev = tail.seq, tail.hash
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
                self._write_lines(fd, lines)
                tail = _Tail(last_seq, prev, batch[-1].event if batch else tail.event)
                try:
                    if self._seal_due(self.seal_state_info(), tail, force=False):
                        tail = self._seal(fd, tail)
                        sealed = True
                except AuditError as exc:
                    # The batch is on disk: report the seal that failed (the timer and the next
                    # append try again; verification shows the growing window), do not fail
                    # entries that were written.
                    log.error("the audit log could not be sealed: %s", exc)
                finally:
                    self._write_head(tail.seq, tail.hash)
        except AuditError as exc:
            for request in batch:
                request.entry, request.error = None, exc
        except Exception as exc:  # never leave a waiting thread hanging
            error = AuditError(f"cannot write audit log {self.path}: {type(exc).__name__}")
            for request in batch:
                request.entry, request.error = None, error
        for request in batch:
            request.done = True
        return sealed


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


class _SealCheck:
    """Follows the seals through a log while it is verified: contiguous epochs, each sealing
    the entry before it, each MAC checked with the seed when one is given."""

    def __init__(self, seed: SealSeed | None) -> None:
        self.seed = seed
        self.seal_id: str | None = None
        self.next_epoch = 0
        self.count = 0
        self.last: tuple[int, int, str] | None = None  # seq, epoch, ts
        self.sizes: dict[str, tuple[int, int, int]] = {}  # sink -> bytes, epoch, seq
        self._keys: Iterator[Any] | None = None

    def see(self, obj: Mapping[str, Any], seq: int, number: int) -> str | None:
        event, data = obj["event"], obj["data"]
        where = f"entry seq {seq} (line {number})"
        if event == SEAL_STARTED:
            seal_id = data.get("seal_id")
            if not isinstance(seal_id, str):
                return f"{where} starts sealing without a seal id"
            if self.seal_id is not None:
                return (
                    f"{where} starts sealing again (seal id {seal_id}) after {self.seal_id}: a "
                    "log is sealed once, so sealing was restarted to rewrite it (rule: seal_restart)"
                )
            self.seal_id = seal_id
            if self.seed is not None:
                if self.seed.seal_id != seal_id:
                    return (
                        f"{where}: the log is sealed under {seal_id} but the seed given is for "
                        f"{self.seed.seal_id} (rule: wrong_seed)"
                    )
                self._keys = self.seed.epoch_keys()
            return None
        if event != SEALED:
            return None
        epoch, head_seq = data.get("epoch"), data.get("head_seq")
        if (
            not isinstance(epoch, int)
            or isinstance(epoch, bool)
            or not isinstance(head_seq, int)
            or isinstance(head_seq, bool)
            or not all(isinstance(data.get(k), str) for k in ("seal_id", "head_hash", "seal"))
        ):
            return f"{where} is a malformed seal (rule: seal_shape)"
        if self.seal_id is None:
            return f"{where} is a seal before sealing started (rule: seal_order)"
        if data["seal_id"] != self.seal_id:
            return (
                f"{where} is sealed under {data['seal_id']}, not the log's {self.seal_id} "
                "(rule: seal_id)"
            )
        if epoch != self.next_epoch:
            return (
                f"{where} seals epoch {epoch} where epoch {self.next_epoch} was expected: a seal "
                "was removed, repeated or moved (rule: seal_epoch)"
            )
        if head_seq != seq - 1 or data["head_hash"] != obj["prev"]:
            return f"{where} does not seal the entry before it (rule: seal_head)"
        if self._keys is not None:
            key = next(self._keys)
            if not _mac_ok(seal_mac(key, _seal_message(obj)), data["seal"]):
                return (
                    f"seal epoch {epoch} ({where}) does not verify under the seed: the entries "
                    "before it were rewritten after they were sealed, or the seal was forged "
                    "(rule: seal_mac)"
                )
        for record in data.get("witness") or []:
            if isinstance(record, dict) and isinstance(record.get("sink"), str):
                size = record.get("bytes")
                if isinstance(size, int) and not isinstance(size, bool):
                    known = self.sizes.get(record["sink"])
                    if known is None or size >= known[0]:
                        self.sizes[record["sink"]] = (size, epoch, seq)
        self.next_epoch += 1
        self.count += 1
        self.last = (seq, epoch, str(obj["ts"]))
        return None

    def summary(self, entries: int) -> SealSummary | None:
        if self.seal_id is None:
            return None
        last_seq = None if self.last is None else self.last[0]
        return SealSummary(
            seal_id=self.seal_id,
            seals=self.count,
            checked=self.seed is not None,
            last_sealed_seq=last_seq,
            last_epoch=None if self.last is None else self.last[1],
            last_ts=None if self.last is None else self.last[2],
            unsealed=entries if last_seq is None else entries - 1 - last_seq,
        )


def _match_witness_file(
    sink: str, files: Sequence[WitnessFile], sinks: Sequence[str]
) -> WitnessFile | None:
    """The witness file read for a sink the seals name: the same path, or the only file read
    for the only file sink (a copy the IG lead took)."""
    path = sink.removeprefix("file:")
    for f in files:
        if os.path.abspath(f.path) == os.path.abspath(path):
            return f
    if len(files) == 1 and len(sinks) == 1:
        return files[0]
    return None


def _state_problem(
    state_path: Path, seals: _SealCheck, last_seq: int, last_hash: str
) -> tuple[str | None, str | None]:
    """What the sealing state's public part says about the log: (failure, warning). The state
    only moves forward (nobody can derive an earlier epoch), so a log whose last seal is older
    than the state's epoch was cut back, whatever else was rewritten."""
    try:
        info = read_seal_state_info(state_path)
    except AuditError as exc:
        if seals.seal_id is None and not state_path.exists():
            return None, None
        return f"{exc}: the log's sealing cannot be confirmed", None
    if seals.seal_id is None:
        return (
            f"sealing state {state_path} exists (seal id {info.seal_id}, epoch {info.epoch}) "
            "but the log holds no audit.seal_started: the log was cut back or replaced "
            "(rule: seal_missing)",
            None,
        )
    if info.seal_id != seals.seal_id:
        return (
            f"sealing state {state_path} is for {info.seal_id}, the log is sealed under "
            f"{seals.seal_id} (rule: seal_id)",
            None,
        )
    log_epoch = seals.next_epoch  # the epoch the state should hold after the log's last seal
    pending = info.last_seal
    if (
        info.epoch == log_epoch + 1
        and pending is not None
        and pending.epoch == log_epoch
        and pending.seq == last_seq + 1
        and pending.prev == last_hash
    ):
        return None, (
            f"seal epoch {pending.epoch} is saved in the sealing state but not yet in the log "
            "(a writer stopped between the two); the next append writes it"
        )
    if info.epoch > log_epoch:
        return (
            f"sealing state {state_path} is at epoch {info.epoch} but the log's seals end at "
            f"epoch {log_epoch - 1}: the seals of epochs {log_epoch} to {info.epoch - 1} and "
            "what they sealed were cut off (rule: seal_missing)",
            None,
        )
    if info.epoch < log_epoch:
        return (
            f"sealing state {state_path} is at epoch {info.epoch}, older than the log's last "
            f"seal (epoch {log_epoch - 1}): it was replaced by an older copy, which can "
            "re-seal from its epoch on (rule: seal_state_old)",
            None,
        )
    return None, None


@dataclass(frozen=True)
class _Failure:
    """Where verification first fails and why (line and seq None: not at one entry)."""

    reason: str
    line: int | None = None
    seq: int | None = None


@dataclass(frozen=True)
class _GoodEntry:
    """An entry that passed every check: the key that MACed it and its hash."""

    key_id: str
    digest: str


@dataclass(frozen=True)
class _LogScan:
    """What one pass over the log's lines found."""

    count: int
    """Lines in the log."""
    verified: int
    """Entries that passed every check before the first failure."""
    failure: _Failure | None
    last_hash: str
    key_ids: tuple[str, ...]
    head: _Head | str | None
    head_entry_hash: str | None
    """Hash of the entry at the checkpoint's seq (None: not reached or no checkpoint)."""
    hashes: Mapping[int, str]
    """Hashes of the entries at the seqs witnesses recorded."""


def _check_entry(
    number: int,
    raw: bytes,
    complete: bool,
    prev: str,
    keys: Mapping[str, MasterKey],
    seals: _SealCheck,
) -> _GoodEntry | str:
    """Line `number` checked for shape, seq, chain link, hash, MAC and seal order: the entry,
    or why it fails."""
    seq = number - 1
    where = f"line {number} (seq {seq})"
    if not complete:
        return f"{where} is incomplete: no line ending (a partial write)"
    if not raw.strip():
        return f"{where} is empty"
    obj, problem = _parse_line(raw)
    if obj is None:
        return f"{where} {problem}"
    if obj["seq"] != seq:
        return (
            f"line {number} holds seq {obj['seq']} where seq {seq} was expected: "
            "an entry was deleted, inserted or moved"
        )
    if obj["prev"] != prev:
        return (
            f"entry seq {seq} (line {number}) does not link to the entry before it: "
            "an entry was deleted, inserted, moved or altered"
        )
    try:
        canonical = _entry_canonical(obj)
    except (TypeError, ValueError):
        return f"entry seq {seq} (line {number}) holds invalid values"
    digest = hashlib.sha256(canonical).hexdigest()
    if digest != obj["hash"]:
        return (
            f"entry seq {seq} (line {number}) has been altered: its hash does not "
            "match its contents"
        )
    entry_key = keys.get(obj["key_id"])
    if entry_key is None:
        return (
            f"entry seq {seq} (line {number}) is MACed with key {obj['key_id']}, "
            "which was not supplied"
        )
    if not _mac_ok(_entry_mac(entry_key, canonical, digest), obj["mac"]):
        return (
            f"entry seq {seq} (line {number}) fails its MAC check: it was forged or "
            "altered by someone without the key"
        )
    seal_problem = seals.see(obj, seq, number)
    if seal_problem is not None:
        return seal_problem
    return _GoodEntry(obj["key_id"], digest)


def _scan_log(
    p: Path,
    hp: Path,
    keys: Mapping[str, MasterKey],
    seals: _SealCheck,
    wanted: set[int],
) -> _LogScan:
    """Every line of the log checked in order, under a shared lock, with the checkpoint read
    under the same lock; lines after the first failure are only counted."""
    with _locked(p, exclusive=False) as fd, os.fdopen(os.dup(fd), "rb") as f:
        head = _read_head(hp)
        prev = GENESIS
        head_entry_hash: str | None = None
        seen_keys: list[str] = []
        hashes: dict[int, str] = {}
        count = 0
        failure: _Failure | None = None
        for number, raw, complete in _iter_lines(f):
            count = number
            if failure is not None:
                continue
            seq = number - 1
            checked = _check_entry(number, raw, complete, prev, keys, seals)
            if isinstance(checked, str):
                failure = _Failure(checked, number, seq)
                continue
            if checked.key_id not in seen_keys:
                seen_keys.append(checked.key_id)
            if isinstance(head, _Head) and seq == head.seq:
                head_entry_hash = checked.digest
            if seq in wanted:
                hashes[seq] = checked.digest
            prev = checked.digest
    return _LogScan(
        count=count,
        verified=count if failure is None or failure.line is None else failure.line - 1,
        failure=failure,
        last_hash=prev,
        key_ids=tuple(seen_keys),
        head=head,
        head_entry_hash=head_entry_hash,
        hashes=hashes,
    )


def _seal_notes(summary: SealSummary | None) -> tuple[str, ...]:
    """What the seals leave unchecked: none at all, or their MACs without the seed."""
    if summary is None:
        return ("the log is not forward-sealed (no audit.seal_started entry)",)
    if not summary.checked:
        return (
            f"seals not checked: {summary.seals} seal(s) in order, but their MACs need the IG "
            "lead's verification seed (--seed-file)",
        )
    return ()


def _witness_failure(
    unreadable: Sequence[Witness],
    witness_files: Sequence[WitnessFile],
    witnessed: Sequence[Witness],
    scan: _LogScan,
) -> _Failure | None:
    """The first witness that cannot be read, lies beyond the log's end or records a hash the
    log no longer holds."""
    last_seq = scan.count - 1
    if unreadable:
        w = unreadable[0]
        return _Failure(f"{w.source} {w.problem}: a witness that cannot be read fails verification")
    for wf in witness_files:
        if wf.problem is not None:
            return _Failure(
                f"witness file {wf.path} {wf.problem}: a witness that cannot be read "
                "fails verification"
            )
    for w in witnessed:
        if w.seq > last_seq:
            return _Failure(
                f"the log ends at seq {last_seq} but {w.source} recorded its head at seq "
                f"{w.seq}: entries were cut off the end (truncated or emptied)",
                scan.count + 1,
                scan.count,
            )
        if not _mac_ok(scan.hashes.get(w.seq, ""), w.hash):
            return _Failure(
                f"entry seq {w.seq} does not match the head {w.source} recorded: the log was "
                "rewritten from there",
                w.seq + 1,
                w.seq,
            )
    return None


def _sink_failure(
    seals: _SealCheck, sinks: Sequence[str], witness_files: Sequence[WitnessFile]
) -> _Failure | None:
    """The first witness file the seals name that was not read or is shorter than recorded."""
    for sink in sinks:
        size, epoch, at = seals.sizes[sink]
        found = _match_witness_file(sink, witness_files, sinks)
        if found is None:
            return _Failure(
                f"the seals record witnesses written to {sink.removeprefix('file:')} "
                "but no such witness file was read: a missing witness fails verification "
                "(rule: witness_missing)"
            )
        if found.size < size:
            return _Failure(
                f"witness file {found.path} holds {found.size} bytes but seal epoch "
                f"{epoch} (seq {at}) recorded {size}: the witness file was truncated "
                "(rule: witness_truncated)"
            )
    return None


def _sealing_failure(
    seed: SealSeed | None,
    summary: SealSummary | None,
    seal_state: str | os.PathLike[str] | None,
    seals: _SealCheck,
    scan: _LogScan,
) -> tuple[_Failure | None, str | None]:
    """Whether the seals were cut off, judged by the seed and the sealing state: (failure,
    warning)."""
    if seed is not None and summary is None:
        return _Failure(
            f"a verification seed ({seed.seal_id}) was given but the log holds no "
            "audit.seal_started: its sealed part was cut off or the log replaced "
            "(rule: seal_missing)"
        ), None
    if seal_state is None:
        return None, None
    last_hash = scan.last_hash if scan.count else GENESIS
    problem, warning = _state_problem(Path(seal_state), seals, scan.count - 1, last_hash)
    return (None if problem is None else _Failure(problem)), warning


def _check_checkpoint(
    hp: Path, keys: Mapping[str, MasterKey], scan: _LogScan
) -> _Failure | tuple[str, ...]:
    """The checkpoint checked against the log: why it fails, or the warnings it gives (it may
    trail the log by up to `MAX_BATCH` entries after an interrupted append)."""
    head, count, last_seq = scan.head, scan.count, scan.count - 1
    if isinstance(head, str):
        return _Failure(head)
    if head is None:
        if count == 0:
            return _Failure("the audit log is empty: nothing has been recorded, or it was emptied")
        return _Failure(f"checkpoint {hp} is missing, so truncation cannot be ruled out")
    head_key = keys.get(head.key_id)
    if head_key is None:
        return _Failure(f"checkpoint {hp} is MACed with key {head.key_id}, which was not supplied")
    if not _mac_ok(_head_mac(head_key, head.seq, head.hash, head.key_id), head.mac):
        return _Failure(f"checkpoint {hp} fails its MAC check")
    if head.seq > last_seq:
        missing = head.seq - last_seq
        return _Failure(
            f"the log ends at seq {last_seq} but the checkpoint records seq {head.seq}: "
            f"{missing} entr{'y' if missing == 1 else 'ies'} cut off the end (truncated)",
            count + 1,
            count,
        )
    if scan.head_entry_hash is None or not _mac_ok(scan.head_entry_hash, head.hash):
        return _Failure(
            f"entry seq {head.seq} (line {head.seq + 1}) does not match the checkpoint's hash: "
            "the log was rewritten from there",
            head.seq + 1,
            head.seq,
        )
    if head.seq == last_seq:
        return ()
    if head.seq == last_seq - 1:
        return (
            "the checkpoint is one entry behind the log (an append was interrupted); "
            "the next append brings it up to date",
        )
    if head.seq >= last_seq - MAX_BATCH:
        return (
            f"the checkpoint is {last_seq - head.seq} entries behind the log (a group of "
            "appends was interrupted before its checkpoint); the next append brings it up "
            "to date",
        )
    return _Failure(
        f"the checkpoint records seq {head.seq} but the log continues to seq {last_seq}: "
        "the checkpoint was replaced by an older copy or its updates were lost",
        head.seq + 2,
        head.seq + 1,
    )


def _failed(base: AuditVerification, failure: _Failure) -> AuditVerification:
    return replace(
        base,
        ok=False,
        first_bad_line=failure.line,
        first_bad_seq=failure.seq,
        reason=failure.reason,
    )


def verify_audit_log(
    path: str | os.PathLike[str],
    key: MasterKey | Iterable[MasterKey],
    *,
    head_path: str | os.PathLike[str] | None = None,
    witnesses: Iterable[Witness] = (),
    seed: SealSeed | None = None,
    seal_state: str | os.PathLike[str] | None = None,
    witness_files: Sequence[WitnessFile] = (),
) -> AuditVerification:
    """Check every entry's seq, chain link, hash and MAC, the seals, then the checkpoint and
    witnesses.

    `key` may be several keys (for a log that spans key rotations); each entry is checked
    with the key its ``key_id`` names. An empty log fails (a log is never empty once anything
    has been recorded, and an emptied one must not pass), as does one that no longer holds a
    head recorded in a run summary, release or witness file (`witnesses`, `witness_files`),
    and one where a witness cannot be read. Seals are checked for order everywhere and, with
    the IG lead's `seed`, for their MACs; `seal_state` (the writers' state file, public part
    only) shows whether seals were cut off the end. Tampering is reported in the result, never
    raised; `AuditError` is raised only when the log itself cannot be opened.
    """
    given = list(witnesses)
    for wf in witness_files:
        given.extend(wf.witnesses)
    unreadable = [w for w in given if w.problem is not None]
    witnessed = sorted((w for w in given if w.problem is None), key=lambda w: w.seq)
    p = Path(path)
    hp = default_head_path(p) if head_path is None else Path(head_path)
    keys = {key.key_id: key} if isinstance(key, MasterKey) else {k.key_id: k for k in key}
    seals = _SealCheck(seed)
    if not p.exists():
        raise AuditError(f"audit log {p} not found")
    scan = _scan_log(p, hp, keys, seals, {w.seq for w in witnessed})
    summary = seals.summary(scan.verified)
    base = AuditVerification(
        ok=False,
        entries=scan.count,
        verified=scan.verified,
        head_seq=scan.head.seq if isinstance(scan.head, _Head) else None,
        key_ids=scan.key_ids,
        seal=summary,
        witnesses_checked=len(witnessed),
        last_witnessed_seq=max((w.seq for w in witnessed), default=None),
        notes=_seal_notes(summary),
    )
    sinks = sorted(s for s in seals.sizes if s.startswith("file:"))
    failure = (
        scan.failure
        or _witness_failure(unreadable, witness_files, witnessed, scan)
        or _sink_failure(seals, sinks, witness_files)
    )
    if failure is not None:
        return _failed(base, failure)
    if not witness_files and not sinks:
        base = replace(base, notes=(*base.notes, "no witness file read"))
    failure, state_warning = _sealing_failure(seed, summary, seal_state, seals, scan)
    if failure is not None:
        return _failed(base, failure)
    checkpoint = _check_checkpoint(hp, keys, scan)
    if isinstance(checkpoint, _Failure):
        return _failed(base, checkpoint)
    extra = (state_warning,) if state_warning else ()
    return replace(base, ok=True, warnings=(*checkpoint, *extra))


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


def seal_policy(settings: RunSettings) -> SealPolicy:
    """Where a run configuration's sealing state lives and how often the policy wants the log
    sealed and witnessed."""
    policy = read_audit_policy(settings.policy_path)
    return SealPolicy(
        state_path=Zones(settings).audit_seal_state,
        seal_seconds=policy.seal_minutes * 60,
        witness_seconds=policy.witness_minutes * 60,
    )


def open_audit_log(
    settings: RunSettings, key: MasterKey | None = None, *, clock: Clock = _utc_now
) -> AuditLog:
    """The audit log of a run configuration, kept with its audit key (`[audit]`; never the
    pseudonymisation key), sealed and witnessed as its settings and policy say, its folders
    created if need be."""
    z = Zones(settings)
    z.audit_log.parent.mkdir(parents=True, exist_ok=True)
    z.audit_head.parent.mkdir(parents=True, exist_ok=True)
    return AuditLog(
        z.audit_log,
        key or load_audit_key(settings),
        head_path=z.audit_head,
        clock=clock,
        sealing=seal_policy(settings),
        witnesses=witness_sinks(settings.audit),
    )


def record_key_event(settings: RunSettings, event: str, data: dict[str, Any]) -> AuditEvent:
    """Append a key lifecycle event (created, rotated) to the run configuration's audit log."""
    return open_audit_log(settings).append(event, actor=actor(), data=data)


def head_of(entry: AuditEvent) -> dict[str, Any]:
    """What a run summary or release records of the log: an entry's seq and hash."""
    return {"seq": entry.seq, "hash": entry.hash}


def run_witnesses(settings: RunSettings) -> list[Witness]:
    """The log heads recorded in the run summaries (`out/runs/*.json`) and the releases
    (`out/releases/*/audit_head.json`) of a run configuration. Every run summary and release
    records one, so a file that cannot be read or lacks its head is returned as a witness with
    a `problem` (and fails verification): corrupting a witness must not make it disappear."""
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
        except OSError as exc:
            found.append(
                Witness(
                    source, -1, "", f"cannot be read ({exc.strerror}) (rule: witness_unreadable)"
                )
            )
            continue
        except (ValueError, UnicodeDecodeError):
            found.append(Witness(source, -1, "", "is not valid JSON (rule: witness_corrupt)"))
            continue
        head = doc.get("audit_head") if isinstance(doc, dict) else None
        if (
            isinstance(head, dict)
            and isinstance(head.get("seq"), int)
            and not isinstance(head.get("seq"), bool)
            and head["seq"] >= 0
            and isinstance(head.get("hash"), str)
        ):
            found.append(Witness(source, head["seq"], head["hash"]))
        else:
            found.append(Witness(source, -1, "", "records no audit head (rule: witness_corrupt)"))
    return found


def run_witness_files(
    settings: RunSettings, extra: Sequence[str | os.PathLike[str]] = ()
) -> list[WitnessFile]:
    """The configured witness file (`[audit] witness_file`) and any others given (a copy, a
    journald export), each read whole."""
    paths = [Path(p) for p in extra]
    if settings.audit.witness_file is not None and not any(
        os.path.abspath(p) == os.path.abspath(settings.audit.witness_file) for p in paths
    ):
        paths.insert(0, settings.audit.witness_file)
    return [read_witness_file(p) for p in paths]


def verify_run_audit(
    settings: RunSettings,
    keys: Iterable[MasterKey],
    *,
    seed: SealSeed | None = None,
    witness_files: Sequence[str | os.PathLike[str]] = (),
) -> AuditVerification:
    """Verify a run configuration's audit log against its checkpoint, every recorded head,
    its witness files and sealing state, and (with the IG lead's seed) every seal."""
    z = Zones(settings)
    return verify_audit_log(
        z.audit_log,
        keys,
        head_path=z.audit_head,
        witnesses=run_witnesses(settings),
        seed=seed,
        seal_state=z.audit_seal_state,
        witness_files=run_witness_files(settings, witness_files),
    )


def actor() -> str:
    """Who is running this: the OS user on this host."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or str(os.getuid())
    return f"{user}@{platform.node()}"
