"""The audit log's forward-sealing keys: a seed the IG lead keeps offline, and a one-way chain
of epoch keys of which the log's writers hold only the current one.

This is key material, kept here beside `uprnlink.privacy.keys` (and, like it, never printed:
objects show only the public seal id and epoch). It uses the standard library's HMAC only.

Derivation (HKDF-SHA256 of RFC 5869, built on `hmac`; ``Expand`` of at most one block):

- ``prk = HKDF-Extract(salt=b"uprnlink/audit-seal/v1", ikm=seed)``, the seed 32 random bytes;
- seal id ``"seal-" + hex(Expand(prk, b"uprnlink/audit-seal/id/v1", 8))``: public, names the
  chain on every seal entry and in the state file, so a wrong seed is named as such;
- ``state[0] = Expand(prk, b"uprnlink/audit-seal/state/v1", 32)``;
- ``state[e + 1] = Expand(state[e], b"uprnlink/audit-seal/next/v1", 32)``: one way, so whoever
  holds ``state[e]`` can derive every later epoch's key but no earlier one;
- ``mac_key[e] = Expand(state[e], b"uprnlink/audit-seal/mac/v1", 32)`` and a seal is
  ``hex(HMAC-SHA256(mac_key[e], b"uprnlink-audit-seal/v1\\x00" + message))``;
- ``check[e] = hex(Expand(state[e], b"uprnlink/audit-seal/check/v1", 8))``, stored beside the
  state so a corrupted state file is refused rather than used.

The seed derives every epoch's key (the verifier steps forward from epoch 0); the writers hold
the state file, which is replaced (new file, fsync, rename) by the next epoch's each time a
seal is written, so the previous epoch's key is gone from the file system's names at once.
Whoever takes the state later can seal only from its epoch on: everything sealed before stays
as it was. Known limits: a copy of an old state file (a backup, a snapshot) re-opens that
epoch, so the state must never be backed up; and blocks of a replaced file may linger on disk
until reused (no file system promises secure deletion).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uprnlink.errors import AuditError

__all__ = [
    "SEED_BYTES",
    "SEED_ENV",
    "EpochKey",
    "LastSeal",
    "SealSeed",
    "SealState",
    "SealStateInfo",
    "format_seed",
    "new_seed",
    "read_seal_state",
    "read_seal_state_info",
    "seal_mac",
    "write_seal_state",
]

SEED_BYTES = 32
SEED_ENV = "UPRNLINK_AUDIT_SEED"
"""Where `uprnlink audit verify` and `report` look for the verification seed when no file is
given. Never set on the service's host."""

STATE_FORMAT = "uprnlink-audit-seal-state"
STATE_VERSION = 1

_SALT = b"uprnlink/audit-seal/v1"
_ID_INFO = b"uprnlink/audit-seal/id/v1"
_STATE_INFO = b"uprnlink/audit-seal/state/v1"
_NEXT_INFO = b"uprnlink/audit-seal/next/v1"
_MAC_INFO = b"uprnlink/audit-seal/mac/v1"
_CHECK_INFO = b"uprnlink/audit-seal/check/v1"
_SEAL_LABEL = b"uprnlink-audit-seal/v1\x00"
_SEED_PREFIX = "useal1"
_SEAL_ID_RE = re.compile(r"^seal-[0-9a-f]{16}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")

Rng = Callable[[int], bytes]


def _extract(salt: bytes, ikm: bytes | bytearray) -> bytearray:
    return bytearray(hmac.new(salt, bytes(ikm), hashlib.sha256).digest())


def _expand(prk: bytes | bytearray, info: bytes, length: int) -> bytearray:
    """HKDF-Expand for one block (length <= 32): T(1) = HMAC(PRK, info || 0x01)."""
    if not 1 <= length <= 32:
        raise ValueError("one HKDF block holds at most 32 bytes")
    return bytearray(hmac.new(bytes(prk), info + b"\x01", hashlib.sha256).digest()[:length])


def _wipe(buffer: bytearray) -> None:
    for i in range(len(buffer)):
        buffer[i] = 0


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _format_ts(dt: datetime) -> str:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise AuditError("the sealing clock must return a timezone-aware datetime")
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EpochKey:
    """One epoch's secret state (never printed): MACs that epoch's seal, derives the next."""

    __slots__ = ("_state", "epoch", "seal_id")

    def __init__(self, seal_id: str, epoch: int, state: bytes | bytearray) -> None:
        if len(state) != 32:
            raise AuditError("a sealing state is 32 bytes")
        self.seal_id = seal_id
        self.epoch = epoch
        self._state = bytearray(state)

    def mac(self, message: bytes) -> str:
        """The seal of `message` under this epoch's MAC key."""
        key = _expand(self._state, _MAC_INFO, 32)
        try:
            return hmac.new(bytes(key), _SEAL_LABEL + message, hashlib.sha256).hexdigest()
        finally:
            _wipe(key)

    def next(self) -> EpochKey:
        """The next epoch's key (this one is left as it is: `erase` it when done)."""
        following = _expand(self._state, _NEXT_INFO, 32)
        try:
            return EpochKey(self.seal_id, self.epoch + 1, following)
        finally:
            _wipe(following)

    def check(self) -> str:
        """A short public digest of the state, stored beside it to catch a corrupted file."""
        return _expand(self._state, _CHECK_INFO, 8).hex()

    def erase(self) -> None:
        """Overwrite the state in memory (best effort: Python may hold copies elsewhere)."""
        _wipe(self._state)

    def _hex(self) -> str:
        return self._state.hex()

    def __repr__(self) -> str:
        return f"EpochKey(seal_id={self.seal_id!r}, epoch={self.epoch})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise AuditError("a sealing key cannot be pickled")


def seal_mac(key: EpochKey, fields: Mapping[str, Any]) -> str:
    """The seal over `fields` (canonical JSON) under `key`."""
    return key.mac(_canonical(dict(fields)))


class SealSeed:
    """The IG lead's verification seed: derives the key of every epoch. Shown once, kept
    offline, never on the host that writes the log."""

    __slots__ = ("_prk", "seal_id")

    def __init__(self, seed: bytes | bytearray) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise AuditError(f"a verification seed is {SEED_BYTES} bytes")
        self._prk = _extract(_SALT, seed)
        self.seal_id = "seal-" + _expand(self._prk, _ID_INFO, 8).hex()

    @classmethod
    def parse(cls, text: str) -> SealSeed:
        """A seed as printed by `text` (dashes, spaces and line breaks are ignored)."""
        cleaned = re.sub(r"[\s-]", "", text or "").lower()
        if cleaned.startswith(_SEED_PREFIX):
            cleaned = cleaned[len(_SEED_PREFIX) :]
        if not _HEX64_RE.match(cleaned):
            raise AuditError(
                f"a verification seed is '{_SEED_PREFIX}-' and 64 hexadecimal digits "
                "(rule: seed_format)"
            )
        return cls(bytes.fromhex(cleaned))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SealSeed:
        """The seed kept in a file (as `text` wrote it); errors name the file, never its text."""
        p = Path(path)
        try:
            raw = p.read_text(encoding="ascii")
        except FileNotFoundError:
            raise AuditError(f"seed file {p} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not text"
            raise AuditError(f"seed file {p} cannot be read ({reason})") from None
        lines = [line for line in raw.splitlines() if line.strip() and not line.startswith("#")]
        try:
            return cls.parse("".join(lines))
        except AuditError:
            raise AuditError(f"seed file {p} does not hold a verification seed") from None

    def epoch_keys(self) -> Iterator[EpochKey]:
        """Every epoch's key in order, from epoch 0."""
        key = EpochKey(self.seal_id, 0, _expand(self._prk, _STATE_INFO, 32))
        while True:
            yield key
            following = key.next()
            key.erase()
            key = following

    def epoch_key(self, epoch: int) -> EpochKey:
        """The key of one epoch (steps forward from epoch 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise AuditError("an epoch is a whole number from 0")
        for key in self.epoch_keys():
            if key.epoch == epoch:
                return key
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"SealSeed(seal_id={self.seal_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise AuditError("a verification seed cannot be pickled")


def format_seed(seed: bytes) -> str:
    """How a seed is shown to the IG lead: ``useal1-`` and 8 groups of 8 hex digits."""
    if len(seed) != SEED_BYTES:
        raise AuditError(f"a verification seed is {SEED_BYTES} bytes")
    digits = seed.hex()
    return _SEED_PREFIX + "-" + "-".join(digits[i : i + 8] for i in range(0, 64, 8))


def new_seed(rng: Rng = os.urandom) -> tuple[SealSeed, str]:
    """A new seed and its printed form (the only time the raw seed exists as text)."""
    raw = rng(SEED_BYTES)
    return SealSeed(raw), format_seed(raw)


@dataclass(frozen=True)
class LastSeal:
    """The last seal written, kept in the state so a seal whose state was saved but whose log
    line was not (a crash between the two) is appended by the next writer."""

    seq: int
    hash: str
    prev: str
    epoch: int
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "prev": self.prev,
            "epoch": self.epoch,
            "line": self.line,
        }


@dataclass(frozen=True)
class SealStateInfo:
    """The public part of a sealing state (no key): what verification may read."""

    path: Path
    seal_id: str
    epoch: int
    started: str
    last_seal: LastSeal | None


class SealState:
    """What the writers hold: the current epoch's key, when the epoch began and the last seal."""

    __slots__ = ("key", "last_seal", "started")

    def __init__(self, key: EpochKey, started: str, last_seal: LastSeal | None = None) -> None:
        self.key = key
        self.started = started
        self.last_seal = last_seal

    @property
    def seal_id(self) -> str:
        return self.key.seal_id

    @property
    def epoch(self) -> int:
        return self.key.epoch

    @classmethod
    def first(cls, seed: SealSeed, now: datetime) -> SealState:
        """Epoch 0 of a new seed."""
        return cls(next(seed.epoch_keys()), _format_ts(now))

    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.started)

    def advanced(self, now: datetime, last_seal: LastSeal) -> SealState:
        """The next epoch's state (the caller erases this one once the new one is saved)."""
        return SealState(self.key.next(), _format_ts(now), last_seal)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "seal_id": self.seal_id,
            "epoch": self.epoch,
            "started": self.started,
            "state": self.key._hex(),
            "check": self.key.check(),
            "last_seal": None if self.last_seal is None else self.last_seal.to_dict(),
        }

    def __repr__(self) -> str:
        return f"SealState(seal_id={self.seal_id!r}, epoch={self.epoch})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise AuditError("a sealing state cannot be pickled")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_seal_state(path: Path, state: SealState, *, new: bool = False) -> None:
    """Save `state` (owner-only) in one step: a new file, flushed, renamed over the old one,
    so the old epoch's key leaves the file system's names at once. `new`: refuse to replace
    an existing state (`uprnlink audit seal init`)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = (json.dumps(state.to_dict(), indent=1) + "\n").encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            os.link(tmp, path)  # fails if a state is already there
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AuditError(
            f"sealing state {path} already exists: sealing was started for this log "
            "(rule: seal_exists)"
        ) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AuditError(f"cannot write sealing state {path}: {exc.strerror}") from None
    _fsync_dir(path.parent)


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"sealing state {path} is missing (rule: seal_state_missing)") from None
    except OSError as exc:
        raise AuditError(f"sealing state {path} cannot be read ({exc.strerror})") from None
    try:
        doc = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise AuditError(f"sealing state {path} is not valid JSON (rule: seal_state)") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise AuditError(f"sealing state {path} is not a uprnlink sealing state (rule: seal_state)")
    if doc.get("version") != STATE_VERSION:
        raise AuditError(f"sealing state {path} has an unknown version (rule: seal_state)")
    return doc


def _last_seal(path: Path, raw: Any) -> LastSeal | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("seq"), int)
        or isinstance(raw.get("seq"), bool)
        or not isinstance(raw.get("epoch"), int)
        or not all(isinstance(raw.get(k), str) for k in ("hash", "prev", "line"))
    ):
        raise AuditError(f"sealing state {path} has a malformed last seal (rule: seal_state)")
    return LastSeal(raw["seq"], raw["hash"], raw["prev"], raw["epoch"], raw["line"])


def _public(path: Path, doc: Mapping[str, Any]) -> SealStateInfo:
    seal_id, epoch, started = doc.get("seal_id"), doc.get("epoch"), doc.get("started")
    if (
        not isinstance(seal_id, str)
        or not _SEAL_ID_RE.match(seal_id)
        or isinstance(epoch, bool)
        or not isinstance(epoch, int)
        or epoch < 0
        or not isinstance(started, str)
    ):
        raise AuditError(f"sealing state {path} is malformed (rule: seal_state)")
    try:
        when = datetime.fromisoformat(started)
    except ValueError:
        raise AuditError(f"sealing state {path} has a malformed start time") from None
    if when.tzinfo is None:
        raise AuditError(f"sealing state {path} has a start time without a time zone")
    return SealStateInfo(path, seal_id, epoch, started, _last_seal(path, doc.get("last_seal")))


def read_seal_state_info(path: str | os.PathLike[str]) -> SealStateInfo:
    """The public part of a sealing state (seal id, epoch, start, last seal): no key is read."""
    p = Path(path)
    return _public(p, _read_doc(p))


def read_seal_state(path: str | os.PathLike[str]) -> SealState:
    """A sealing state, its key checked against the digest stored beside it."""
    p = Path(path)
    doc = _read_doc(p)
    info = _public(p, doc)
    raw = doc.get("state")
    if not isinstance(raw, str) or not _HEX64_RE.match(raw):
        raise AuditError(f"sealing state {p} holds no key (rule: seal_state)")
    key = EpochKey(info.seal_id, info.epoch, bytes.fromhex(raw))
    if not hmac.compare_digest(key.check(), str(doc.get("check", ""))):
        key.erase()
        raise AuditError(
            f"sealing state {p} fails its check: the file is corrupted (rule: seal_check)"
        )
    return SealState(key, info.started, info.last_seal)
