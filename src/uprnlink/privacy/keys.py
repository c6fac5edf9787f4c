"""The pseudonymisation master key: derivation, encrypted key files, rotation and resolution.

This is the only module that touches key material (with `uprnlink.privacy.sealing`, the audit
log's forward-sealing key chain, which needs no `cryptography`). Everything else receives a `MasterKey`
and asks it for a keyed HMAC object (`MasterKey.hmac_prototype`) or for the tokens of a whole
column (`MasterKey.hmac_hex`); the raw key bytes and the derived sub-keys never leave this
module, except into the C extension `uprnlink.privacy._hmac` that hashes a column in one call (it keeps
nothing: key-derived state lives on its stack and is wiped before it returns).

Derivation (all HKDF-SHA256 over the 32-byte master key, salt `HKDF_SALT`):

- sub-key for a purpose: ``info = b"uprnlink/" + purpose + b"/v1"``, 32 bytes. A UPRN and an
  NHS number with the same digits are hashed under different sub-keys, so never share a token.
- key id: ``info = b"uprnlink:key-id:v1"``, 8 bytes, shown as ``"kid-" + 16 hex chars``. The
  label cannot collide with a purpose label (different separator), so the fingerprint reveals
  nothing about any sub-key, and it is safe to print, log and record with every output.

Three kinds of key, each in its own file with its own passphrase, held by different parties
(governance/key-custody.md): the **pseudonymisation** key (``kid-``: linkage tokens; the
pipeline only), the **audit** key (``aud-``: MACs the audit log; the processes that append to
it and the IG lead who verifies it) and the **release** key (``rel-``: the analyst-facing person
and household ids, so knowing every UPRN and the pseudonymisation key does not reverse them;
the pipeline only). A file records its kind (bound into the associated data) and is refused
where another kind is expected; the same bytes give a different key id under each kind.

Key file (JSON, ``format = "uprnlink-key"``, ``version = 1``): the master key is encrypted
with AES-256-GCM under a key-encryption key derived from the passphrase by scrypt. The
associated data is the canonical JSON of the whole header (format, version, key_id, epoch,
created_at, kdf parameters and salt), so editing any of those fails authentication exactly
like a wrong passphrase does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import hashlib
import hmac as _stdlib_hmac
import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import polars as pl
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from uprnlink.errors import KeyManagementError
from uprnlink.settings import KeySettings, RunSettings

_bulk_hmac: ModuleType | None
try:  # the C extension built by setup.py; optional (no compiler or OpenSSL headers: absent)
    import uprnlink.privacy._hmac as _bulk_hmac
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _bulk_hmac = None

__all__ = [
    "AUDIT",
    "BULK_HMAC",
    "DEMO_PASSPHRASE",
    "DEMO_SCRYPT_N",
    "HKDF_SALT",
    "KEY_FILE_FORMAT",
    "KEY_FILE_VERSION",
    "KEY_LENGTH",
    "MIN_PASSPHRASE_LENGTH",
    "PSEUDONYMISATION",
    "PURPOSES",
    "RELEASE",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "KdfParams",
    "KeyInfo",
    "MasterKey",
    "audit_keys",
    "create_demo_key",
    "create_demo_keys",
    "create_key_file",
    "key_from_env",
    "load_audit_key",
    "load_key_file",
    "load_release_key",
    "load_run_key",
    "passphrase_weakness",
    "read_key_info",
    "resolve_key",
    "rotate_key_file",
    "unlock",
    "use_demo_passphrases",
]

KEY_LENGTH = 32
"""Bytes in a master key (and in every derived sub-key)."""

HKDF_SALT = b"uprnlink/hkdf-salt/v1"
"""Fixed, public HKDF salt. RFC 5869 allows a non-secret salt; fixing it keeps tokens stable for
a given master key while separating uprnlink's derivations from any other use of the key."""

_KEY_ID_INFO = b"uprnlink:key-id:v1"
_KEY_ID_BYTES = 8

PSEUDONYMISATION = "pseudonymisation"
AUDIT = "audit"
RELEASE = "release"
KEY_KINDS: dict[str, tuple[str, bytes]] = {
    PSEUDONYMISATION: ("kid", _KEY_ID_INFO),
    AUDIT: ("aud", b"uprnlink:audit-key-id:v1"),
    RELEASE: ("rel", b"uprnlink:release-key-id:v1"),
}
"""Kind -> (key id prefix, HKDF info of its key id)."""
_KEY_ID_RE = re.compile(r"^(kid|aud|rel)-[0-9a-f]{16}$")

PURPOSES = ("uprn", "nhs_number", "record", "person", "household", "audit")
"""Purposes uprnlink derives sub-keys for. Others are allowed if they match `_PURPOSE_RE`."""
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

BULK_HMAC = "openssl" if _bulk_hmac is not None else "python"
"""How `MasterKey.hmac_hex` hashes: ``openssl`` (the `uprnlink.privacy._hmac` extension: one call per
batch into OpenSSL's SHA-256, the GIL released) or ``python`` (a per-message loop over the
`cryptography` package's HMAC, about a third of the speed). Tokens are identical either way."""
_PARALLEL_MIN = 200_000  # messages per batch before the extension's work is split over threads

KEY_FILE_FORMAT = "uprnlink-key"
KEY_FILE_VERSION = 1

SCRYPT_N = 2**17
"""Default scrypt cost (about 0.5 s and 128 MiB per unlock on a CI-class core)."""
SCRYPT_R = 8
SCRYPT_P = 1
DEMO_SCRYPT_N = 2**14
_SCRYPT_MAX_MEMORY = 2**30  # refuse files asking for more than 1 GiB (128 * r * n * p bytes)
_SALT_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16

MIN_PASSPHRASE_LENGTH = 12
MIN_PASSPHRASE_SCORE = 3
"""The lowest zxcvbn score (0-4) a new passphrase may have."""

DEMO_PASSPHRASE = "uprnlink-demo-passphrase-not-for-real-data"
"""Public passphrase of the demo key. A demo key protects synthetic data only."""

Rng = Callable[[int], bytes]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=HKDF_SALT, info=info).derive(ikm)


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _format_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _normalise_created_at(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise KeyManagementError(
            "key creation time must be timezone-aware (the clock gave a naive datetime)"
        )
    return dt.astimezone(UTC).replace(microsecond=0)


class MasterKey:
    """A 32-byte pseudonymisation master key with its epoch; prints only its key id."""

    __slots__ = ("_created_at", "_epoch", "_key", "_key_id", "_kind", "_subkeys")

    _key: bytes
    _epoch: int
    _created_at: datetime | None
    _key_id: str
    _kind: str
    _subkeys: dict[str, bytes]

    def __init__(
        self,
        key: bytes,
        *,
        epoch: int = 1,
        created_at: datetime | None = None,
        kind: str = PSEUDONYMISATION,
    ) -> None:
        if not isinstance(key, bytes | bytearray):
            raise KeyManagementError(f"master key must be bytes, got {type(key).__name__}")
        if len(key) != KEY_LENGTH:
            raise KeyManagementError(
                f"master key must be exactly {KEY_LENGTH} bytes, got {len(key)} bytes"
            )
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise KeyManagementError("key epoch must be a positive integer")
        if kind not in KEY_KINDS:
            raise KeyManagementError(f"key kind must be one of {', '.join(KEY_KINDS)}")
        if created_at is not None:
            created_at = _normalise_created_at(created_at)
        raw = bytes(key)
        prefix, id_info = KEY_KINDS[kind]
        object.__setattr__(self, "_key", raw)
        object.__setattr__(self, "_epoch", epoch)
        object.__setattr__(self, "_created_at", created_at)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_key_id", f"{prefix}-" + _hkdf(raw, id_info, _KEY_ID_BYTES).hex())
        object.__setattr__(self, "_subkeys", {})

    @classmethod
    def generate(
        cls,
        *,
        epoch: int = 1,
        rng: Rng = os.urandom,
        clock: Clock = _utc_now,
        kind: str = PSEUDONYMISATION,
    ) -> MasterKey:
        """A new random master key (randomness and clock injectable for exact tests)."""
        return cls(rng(KEY_LENGTH), epoch=epoch, created_at=clock(), kind=kind)

    @property
    def key_id(self) -> str:
        """Public fingerprint of the key (``kid-`` + 16 hex chars); safe to log and publish."""
        return self._key_id

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def kind(self) -> str:
        """pseudonymisation, audit or release."""
        return self._kind

    @property
    def created_at(self) -> datetime | None:
        """UTC creation time, or None for a key supplied raw by a secrets manager."""
        return self._created_at

    def hmac_prototype(self, purpose: str) -> crypto_hmac.HMAC:
        """A fresh HMAC-SHA256 object keyed with the sub-key for `purpose`.

        Callers keep it as a prototype and `.copy()` it per message: copying a keyed HMAC
        skips re-keying, which is about three times faster than a new object per message.
        """
        return crypto_hmac.HMAC(self._subkey(purpose), hashes.SHA256())

    def hmac_hex(
        self, purpose: str, messages: pl.Series, take: int = 32, *, threads: int | None = None
    ) -> pl.Series:
        """HMAC-SHA256 of every message under the sub-key for `purpose`, each digest cut to
        its first `take` bytes and written as lower-case hex (String, same order and name).

        `messages` is a Binary series without nulls. With the `uprnlink.privacy._hmac` extension
        (`BULK_HMAC == "openssl"`) the whole series is hashed in one call per thread, the
        Arrow buffers passed as they are; without it, in a loop over `hmac_prototype` copies.
        `threads` caps the threads (default: every core, for batches of 200,000 or more).
        """
        if messages.dtype != pl.Binary:
            raise KeyManagementError(f"messages must be a Binary series, not {messages.dtype}")
        if messages.null_count():
            raise KeyManagementError("messages must not contain nulls")
        if isinstance(take, bool) or not isinstance(take, int) or not 1 <= take <= 32:
            raise KeyManagementError("take must be 1 to 32 bytes")
        if _bulk_hmac is None or messages.len() == 0:
            return _hmac_hex_python(self.hmac_prototype(purpose), messages, take)
        return _hmac_hex_bulk(self._subkey(purpose), messages, take, threads)

    def _subkey(self, purpose: str) -> bytes:
        """The HKDF sub-key for `purpose` (derived once, kept for the key's lifetime)."""
        if not isinstance(purpose, str) or not _PURPOSE_RE.match(purpose):
            raise KeyManagementError(
                "key purpose must be lower-case letters, digits and underscores "
                f"(1-64 chars, starting with a letter), e.g. one of {', '.join(PURPOSES)}"
            )
        sub = self._subkeys.get(purpose)
        if sub is None:
            sub = _hkdf(self._key, b"uprnlink/" + purpose.encode("ascii") + b"/v1", KEY_LENGTH)
            self._subkeys[purpose] = sub
        return sub

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self._key_id!r}, epoch={self._epoch}, kind={self._kind!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return (
            self._epoch == other._epoch
            and self._kind == other._kind
            and _stdlib_hmac.compare_digest(self._key, other._key)
        )

    def __hash__(self) -> int:
        return hash((self._key_id, self._epoch))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MasterKey is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("MasterKey is immutable")

    def __reduce__(self) -> NoReturn:
        # Why: a key that pickles would end up in Prefect results, caches or worker payloads.
        raise KeyManagementError(
            "MasterKey cannot be pickled: pass the key file path or environment variable name "
            "and resolve the key where it is used"
        )

    def __getstate__(self) -> NoReturn:
        self.__reduce__()
        raise AssertionError  # unreachable

    def __copy__(self) -> MasterKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> MasterKey:
        return self


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters of a key file (the salt stays in the file)."""

    n: int
    r: int
    p: int
    name: str = "scrypt"


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about a key file; reading them needs no passphrase."""

    path: Path
    key_id: str
    epoch: int
    created_at: datetime
    kdf: KdfParams
    format_version: int = KEY_FILE_VERSION
    kind: str = PSEUDONYMISATION


# --------------------------------------------------------------------------- key files


def _hmac_hex_python(prototype: crypto_hmac.HMAC, messages: pl.Series, take: int) -> pl.Series:
    """`MasterKey.hmac_hex` without the extension: one copy of a keyed HMAC per message."""
    copy = prototype.copy

    def digests() -> list[bytes]:
        out = []
        for message in messages:
            h = copy()
            h.update(message)
            out.append(h.finalize()[:take])
        return out

    return pl.Series(messages.name, digests(), dtype=pl.Binary).bin.encode("hex")


def _hmac_hex_bulk(sub: bytes, messages: pl.Series, take: int, threads: int | None) -> pl.Series:
    """`MasterKey.hmac_hex` through `uprnlink.privacy._hmac`: the messages' Arrow buffers go to C as
    they are, split over threads (the extension releases the GIL) for large batches."""
    assert _bulk_hmac is not None
    arrow = messages.to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    if arrow.type != pa.large_binary():
        arrow = arrow.cast(pa.large_binary())
    count = len(arrow)
    _, offsets_buffer, data_buffer = arrow.buffers()
    assert offsets_buffer is not None
    offsets = memoryview(offsets_buffer)[arrow.offset * 8 : (arrow.offset + count + 1) * 8]
    data: Any = data_buffer if data_buffer is not None else b""
    threads = min(threads or _cpu_count(), 8) if count >= _PARALLEL_MIN else 1
    bounds = [count * i // threads for i in range(threads + 1)]
    parts = [(bounds[i], bounds[i + 1]) for i in range(threads)]

    def run(part: tuple[int, int]) -> bytes:
        lo, hi = part
        tokens: bytes = _bulk_hmac.tokens(sub, data, offsets[lo * 8 : (hi + 1) * 8], hi - lo, take)
        return tokens

    if threads == 1:
        hexes = run(parts[0])
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="uprnlink-hmac") as pool:
            hexes = b"".join(pool.map(run, parts))
    width = 2 * take
    starts = pl.int_range(0, width * (count + 1), width, dtype=pl.Int64, eager=True)
    strings = pa.Array.from_buffers(
        pa.large_string(), count, [None, starts.to_arrow().buffers()[1], pa.py_buffer(hexes)]
    )
    return pl.Series(messages.name, strings)


def _cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _is_demo_passphrase(passphrase: str) -> bool:
    squashed = re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", passphrase).casefold())
    return squashed == re.sub(r"[\W_]+", "", DEMO_PASSPHRASE)


def passphrase_weakness(passphrase: str) -> str | None:
    """Why a new passphrase is refused, or None when it is strong enough.

    Strength is zxcvbn's estimate (Dropbox's guess-count model of dictionaries, names, dates,
    keyboard walks and repeats): at least score 3 ("safely unguessable", about 10^8 guesses or
    more, against an offline attacker who must pay scrypt for each guess). The demo passphrase,
    printed in the README, is refused whatever its score.
    """
    from zxcvbn import zxcvbn

    if _is_demo_passphrase(passphrase):
        return "it is the demo passphrase, which is published in the README and the source"
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        return (
            f"it is too short: use at least {MIN_PASSPHRASE_LENGTH} characters "
            "(for example four random words)"
        )
    estimate = zxcvbn(passphrase[:100])
    if estimate["score"] < MIN_PASSPHRASE_SCORE:
        hint = estimate.get("feedback", {}).get("warning") or "it is too easy to guess"
        return f"it is too weak ({hint.rstrip('.').lower()}); use four or more random words"
    return None


def _check_passphrase(passphrase: object, *, new: bool, allow_demo: bool = False) -> bytes:
    if not isinstance(passphrase, str):
        raise KeyManagementError("passphrase must be a string")
    if new and not (allow_demo and passphrase == DEMO_PASSPHRASE):
        weakness = passphrase_weakness(passphrase)
        if weakness:
            raise KeyManagementError(f"passphrase refused: {weakness}")
    if not passphrase:
        raise KeyManagementError("passphrase is empty")
    # NFC so the same passphrase typed on different systems unlocks the same file.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _check_scrypt(path: Path, n: object, r: object, p: object) -> KdfParams:
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p))
    if ok:
        assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
        ok = (
            n >= 2
            and n & (n - 1) == 0
            and 1 <= r <= 64
            and 1 <= p <= 16
            and 128 * n * r * p <= _SCRYPT_MAX_MEMORY
        )
    if not ok:
        raise KeyManagementError(
            f"unsupported scrypt parameters for key file {path}: n must be a power of two, "
            f"1 <= r <= 64, 1 <= p <= 16 and 128*n*r*p at most {_SCRYPT_MAX_MEMORY} bytes"
        )
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    return KdfParams(n=n, r=r, p=p)


def _derive_kek(secret: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    return Scrypt(salt=salt, length=KEY_LENGTH, n=kdf.n, r=kdf.r, p=kdf.p).derive(secret)


def _header(key: MasterKey, kdf: KdfParams, salt: bytes) -> dict[str, Any]:
    assert key.created_at is not None
    # A pseudonymisation key file carries no "kind" (files written before kinds existed
    # authenticate exactly as before); audit and release files do, bound into the AAD.
    kind = {} if key.kind == PSEUDONYMISATION else {"kind": key.kind}
    return {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "key_id": key.key_id,
        **kind,
        "epoch": key.epoch,
        "created_at": _format_ts(key.created_at),
        "kdf": {
            "name": "scrypt",
            "n": kdf.n,
            "r": kdf.r,
            "p": kdf.p,
            "salt": base64.b64encode(salt).decode("ascii"),
        },
    }


def _encrypt_key_file(key: MasterKey, secret: bytes, kdf: KdfParams, rng: Rng) -> bytes:
    salt = rng(_SALT_BYTES)
    nonce = rng(_NONCE_BYTES)
    if len(salt) != _SALT_BYTES or len(nonce) != _NONCE_BYTES:
        raise KeyManagementError("random source returned the wrong number of bytes")
    header = _header(key, kdf, salt)
    ciphertext = AESGCM(_derive_kek(secret, salt, kdf)).encrypt(
        nonce, key._key, _canonical_json(header)
    )
    doc = dict(header)
    doc["cipher"] = {
        "name": "AES-256-GCM",
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }
    return (json.dumps(doc, indent=2) + "\n").encode("ascii")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(path: Path, content: bytes) -> Path:
    """Write `content` to a new 0600 temporary file next to `path` and fsync it."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyManagementError(f"cannot write key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise KeyManagementError(f"cannot write key file {path}: {exc.strerror}") from None
    os.close(fd)
    return tmp


def _info_from_header(path: Path, header: Mapping[str, Any]) -> KeyInfo:
    kdf = header["kdf"]
    return KeyInfo(
        path=path,
        key_id=header["key_id"],
        epoch=header["epoch"],
        created_at=datetime.fromisoformat(header["created_at"]),
        kdf=KdfParams(n=kdf["n"], r=kdf["r"], p=kdf["p"]),
        format_version=header["version"],
        kind=header.get("kind", PSEUDONYMISATION),
    )


def create_key_file(
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    epoch: int = 1,
    rng: Rng = os.urandom,
    clock: Clock = _utc_now,
    scrypt_n: int = SCRYPT_N,
    scrypt_r: int = SCRYPT_R,
    scrypt_p: int = SCRYPT_P,
    kind: str = PSEUDONYMISATION,
    _allow_demo: bool = False,
) -> KeyInfo:
    """Create a new random key of `kind` and write it encrypted to `path` (never overwrites).

    The file is written to a temporary name with mode 0600, fsynced, then hard-linked into
    place, so it appears complete or not at all and an existing file is never replaced. A weak
    passphrase, or the demo passphrase, is refused (`passphrase_weakness`).
    """
    path = Path(path)
    if kind not in KEY_KINDS:
        raise KeyManagementError(f"key kind must be one of {', '.join(KEY_KINDS)}")
    secret = _check_passphrase(passphrase, new=True, allow_demo=_allow_demo)
    kdf = _check_scrypt(path, scrypt_n, scrypt_r, scrypt_p)
    if path.exists() or path.is_symlink():
        raise KeyManagementError(
            f"key file {path} already exists; refusing to overwrite it (rotate it instead)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyManagementError(
            f"cannot create directory for key file {path}: {exc.strerror}"
        ) from None
    key = MasterKey.generate(epoch=epoch, rng=rng, clock=clock, kind=kind)
    content = _encrypt_key_file(key, secret, kdf, rng)
    tmp = _write_temp(path, content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyManagementError(
            f"key file {path} already exists; refusing to overwrite it (rotate it instead)"
        ) from None
    except OSError as exc:
        raise KeyManagementError(f"cannot write key file {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return _info_from_header(path, _header(key, kdf, b""))


def _fail(path: Path, what: str) -> NoReturn:
    raise KeyManagementError(f"key file {path} {what}") from None


def _read_key_doc(path: Path) -> dict[str, Any]:
    """Read and structurally validate a key file, returning its JSON document."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyManagementError(
            f"key file {path} not found (create one with `uprnlink key init`)"
        ) from None
    except IsADirectoryError:
        raise KeyManagementError(f"key file {path} is a directory, not a key file") from None
    except OSError as exc:
        raise KeyManagementError(f"cannot read key file {path}: {exc.strerror}") from None
    if not raw.strip():
        _fail(path, "is empty (truncated)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(path, "is corrupted: not UTF-8 text")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            _fail(path, f"is truncated: its JSON ends unexpectedly after {len(raw)} bytes")
        _fail(path, f"is corrupted: not valid JSON (line {exc.lineno}, column {exc.colno})")
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        _fail(path, f'is not a uprnlink key file (no "format": "{KEY_FILE_FORMAT}")')
    version = doc.get("version")
    if version != KEY_FILE_VERSION or isinstance(version, bool):
        shown = version if isinstance(version, int) else type(version).__name__
        _fail(
            path,
            f"has unknown format version {shown}; this uprnlink reads version {KEY_FILE_VERSION}",
        )

    def field(obj: Any, dotted: str, kind: type | tuple[type, ...]) -> Any:
        cur = obj
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                _fail(path, f"is corrupted: missing field {dotted!r}")
            cur = cur[part]
        if not isinstance(cur, kind) or (kind is int and isinstance(cur, bool)):
            _fail(path, f"is corrupted: field {dotted!r} has the wrong type")
        return cur

    key_id = field(doc, "key_id", str)
    if not _KEY_ID_RE.match(key_id):
        _fail(path, "is corrupted: field 'key_id' is malformed")
    kind = doc.get("kind", PSEUDONYMISATION)
    if kind not in KEY_KINDS or (kind == PSEUDONYMISATION and "kind" in doc):
        _fail(path, "is corrupted: field 'kind' is not audit or release")
    if not key_id.startswith(KEY_KINDS[kind][0] + "-"):
        _fail(path, "is corrupted: its key id does not match its kind")
    if field(doc, "epoch", int) < 1:
        _fail(path, "is corrupted: field 'epoch' must be a positive integer")
    try:
        created = datetime.fromisoformat(field(doc, "created_at", str))
    except ValueError:
        _fail(path, "is corrupted: field 'created_at' is not an ISO 8601 time")
    if created.tzinfo is None:
        _fail(path, "is corrupted: field 'created_at' has no time zone")
    if field(doc, "kdf.name", str) != "scrypt":
        _fail(path, "uses an unsupported key derivation function (expected scrypt)")
    _check_scrypt(
        path, field(doc, "kdf.n", int), field(doc, "kdf.r", int), field(doc, "kdf.p", int)
    )
    if field(doc, "cipher.name", str) != "AES-256-GCM":
        _fail(path, "uses an unsupported cipher (expected AES-256-GCM)")
    for name in ("kdf.salt", "cipher.nonce", "cipher.ciphertext"):
        field(doc, name, str)
    return doc


def _b64(path: Path, doc: Mapping[str, Any], section: str, name: str) -> bytes:
    try:
        return base64.b64decode(doc[section][name], validate=True)
    except (binascii.Error, ValueError):
        _fail(path, f"is corrupted: field '{section}.{name}' is not valid base64")


def read_key_info(path: str | os.PathLike[str]) -> KeyInfo:
    """Key id, epoch, creation time and scrypt parameters of a key file (no passphrase needed).

    These facts are not authenticated until the file is unlocked with `load_key_file`.
    """
    p = Path(path)
    doc = _read_key_doc(p)
    return _info_from_header(p, doc)


def _describe_kind(kind: str) -> str:
    return {PSEUDONYMISATION: "a pseudonymisation key", AUDIT: "an audit key"}.get(
        kind, "a release key"
    )


def load_key_file(
    path: str | os.PathLike[str], passphrase: str, *, kind: str = PSEUDONYMISATION
) -> MasterKey:
    """Decrypt the key in `path` with `passphrase`; it must be a key of `kind`."""
    p = Path(path)
    doc = _read_key_doc(p)
    found = doc.get("kind", PSEUDONYMISATION)
    if found != kind:
        raise KeyManagementError(
            f"key file {p} holds {_describe_kind(found)}, not {_describe_kind(kind)}: each "
            "key has its own file (governance/key-custody.md)"
        )
    secret = _check_passphrase(passphrase, new=False)
    salt = _b64(p, doc, "kdf", "salt")
    nonce = _b64(p, doc, "cipher", "nonce")
    ciphertext = _b64(p, doc, "cipher", "ciphertext")
    if len(salt) < _SALT_BYTES:
        _fail(p, f"is corrupted: the scrypt salt must be at least {_SALT_BYTES} bytes")
    if len(nonce) != _NONCE_BYTES:
        _fail(p, f"is corrupted: the AES-GCM nonce must be {_NONCE_BYTES} bytes")
    if len(ciphertext) < _TAG_BYTES:
        _fail(p, "is truncated: the ciphertext is shorter than its authentication tag")
    kd = doc["kdf"]
    kdf = KdfParams(n=kd["n"], r=kd["r"], p=kd["p"])
    header: dict[str, Any] = {
        k: doc[k]
        for k in ("format", "version", "key_id", "kind", "epoch", "created_at")
        if k in doc
    }
    header["kdf"] = {k: kd[k] for k in ("name", "n", "r", "p", "salt")}
    try:
        plain = AESGCM(_derive_kek(secret, salt, kdf)).decrypt(
            nonce, ciphertext, _canonical_json(header)
        )
    except InvalidTag:
        raise KeyManagementError(
            f"cannot unlock key file {p}: wrong passphrase or the key file has been altered"
        ) from None
    if len(plain) != KEY_LENGTH:
        _fail(p, f"decrypts to a key of {len(plain)} bytes; expected {KEY_LENGTH} bytes")
    key = MasterKey(
        plain, epoch=doc["epoch"], created_at=datetime.fromisoformat(doc["created_at"]), kind=found
    )
    if not _stdlib_hmac.compare_digest(key.key_id, doc["key_id"]):
        _fail(p, "is inconsistent: the stored key id does not match the decrypted key")
    return key


def rotate_key_file(
    path: str | os.PathLike[str],
    passphrase: str,
    new_passphrase: str | None = None,
    *,
    rng: Rng = os.urandom,
    clock: Clock = _utc_now,
    scrypt_n: int | None = None,
    scrypt_r: int | None = None,
    scrypt_p: int | None = None,
) -> KeyInfo:
    """Replace the key in `path` by a new random key of the next epoch.

    The old file is kept, unchanged, as ``<name>.epoch<N>.retired`` (hard link, then an atomic
    replace), so `path` always holds a complete key and the old epoch can still be unlocked to
    verify old audit entries. scrypt parameters default to the old file's.
    """
    p = Path(path)
    info = read_key_info(p)
    old = load_key_file(p, passphrase, kind=info.kind)
    # A demo key (unlocked by the demo passphrase) may keep it; no other key may take it up.
    demo = passphrase == DEMO_PASSPHRASE and new_passphrase in (None, DEMO_PASSPHRASE)
    secret = _check_passphrase(
        passphrase if new_passphrase is None else new_passphrase, new=True, allow_demo=demo
    )
    kdf = _check_scrypt(
        p,
        info.kdf.n if scrypt_n is None else scrypt_n,
        info.kdf.r if scrypt_r is None else scrypt_r,
        info.kdf.p if scrypt_p is None else scrypt_p,
    )
    retired = p.with_name(f"{p.name}.epoch{old.epoch}.retired")
    if retired.exists() or retired.is_symlink():
        raise KeyManagementError(
            f"cannot rotate key file {p}: retired file {retired} already exists"
        )
    new = MasterKey.generate(epoch=old.epoch + 1, rng=rng, clock=clock, kind=old.kind)
    content = _encrypt_key_file(new, secret, kdf, rng)
    tmp = _write_temp(p, content)
    try:
        try:
            os.link(p, retired)
        except FileExistsError:
            raise KeyManagementError(
                f"cannot rotate key file {p}: retired file {retired} already exists"
            ) from None
        os.replace(tmp, p)
    except OSError as exc:
        raise KeyManagementError(f"cannot rotate key file {p}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(p.parent)
    return _info_from_header(p, _header(new, kdf, b""))


def create_demo_key(
    path: str | os.PathLike[str],
    *,
    rng: Rng = os.urandom,
    clock: Clock = _utc_now,
    kind: str = PSEUDONYMISATION,
) -> KeyInfo:
    """Create a key file for the demo, locked with the public `DEMO_PASSPHRASE`.

    Cheaper scrypt (`DEMO_SCRYPT_N`) keeps the demo quick; never use this for real data (and
    `uprnlink key init` refuses the demo passphrase).
    """
    return create_key_file(
        path,
        DEMO_PASSPHRASE,
        rng=rng,
        clock=clock,
        scrypt_n=DEMO_SCRYPT_N,
        kind=kind,
        _allow_demo=True,
    )


# --------------------------------------------------------------------------- environment

_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


def key_from_env(
    var_name: str,
    *,
    epoch: int | None = None,
    environ: Mapping[str, str] | None = None,
    kind: str = PSEUDONYMISATION,
) -> MasterKey:
    """The raw master key from environment variable `var_name` (set by a secrets manager).

    The value is 64 hex characters or standard/URL-safe base64 of 32 bytes. The epoch is
    `epoch`, else the integer in ``<var_name>_EPOCH``, else 1.
    """
    env = os.environ if environ is None else environ
    value = env.get(var_name, "").strip()
    if not value:
        raise KeyManagementError(f"environment variable {var_name} is not set or empty")
    if _HEX_RE.match(value) and len(value) != 43:  # 43 chars: unpadded base64 of 32 bytes
        encoding = "hex"
        raw = bytes.fromhex(value) if len(value) % 2 == 0 else None
    else:
        encoding = "base64"
        try:
            data = value.encode("ascii")
            alt = b"-_" if b"-" in data or b"_" in data else None
            raw = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        raise KeyManagementError(
            f"environment variable {var_name} does not hold a key: expected 64 hex characters "
            f"or base64 of {KEY_LENGTH} bytes ({len(value)} characters given)"
        )
    if len(raw) != KEY_LENGTH:
        raise KeyManagementError(
            f"environment variable {var_name} holds a key of {len(raw)} bytes (read as "
            f"{encoding}); expected {KEY_LENGTH} bytes: 64 hex characters or 44 base64 characters"
        )
    if epoch is None:
        epoch_text = env.get(f"{var_name}_EPOCH", "").strip()
        if not epoch_text:
            epoch = 1
        elif epoch_text.isdigit() and int(epoch_text) >= 1:
            epoch = int(epoch_text)
        else:
            raise KeyManagementError(
                f"environment variable {var_name}_EPOCH must be a positive integer"
            )
    return MasterKey(raw, epoch=epoch, kind=kind)


def resolve_key(
    *,
    key_file: str | os.PathLike[str] | None,
    passphrase_env: str | None,
    key_env: str | None,
    prompt: bool,
    environ: Mapping[str, str] | None = None,
    getpass_fn: Callable[[str], str] = getpass.getpass,
    kind: str = PSEUDONYMISATION,
) -> MasterKey:
    """Find a key of `kind`: a raw key in `key_env` wins; else unlock `key_file`.

    The key file's passphrase comes from `passphrase_env`, else from an interactive prompt if
    `prompt` is true; otherwise this raises a `KeyManagementError` saying what to set.
    """
    env = os.environ if environ is None else environ
    if key_env and env.get(key_env, "").strip():
        return key_from_env(key_env, environ=env, kind=kind)
    if key_file is None:
        hint = f"set environment variable {key_env}, or " if key_env else ""
        raise KeyManagementError(f"no {kind} key available: {hint}configure a key file")
    path = Path(key_file)
    if not path.exists() and not path.is_symlink():
        raise KeyManagementError(
            f"{kind} key file {path} not found: create it with "
            f"`uprnlink key init --kind {kind} --file {path}`"
            + (f" (or set {key_env} to the raw key)" if key_env else "")
        )
    read_key_info(path)  # fail on a corrupted file before asking for a passphrase
    if passphrase_env and env.get(passphrase_env):
        return load_key_file(path, env[passphrase_env], kind=kind)
    if prompt:
        try:
            passphrase = getpass_fn(f"Passphrase for key file {path}: ")
        except (EOFError, KeyboardInterrupt):
            raise KeyManagementError(f"no passphrase entered for key file {path}") from None
        return load_key_file(path, passphrase, kind=kind)
    sources = []
    if passphrase_env:
        sources.append(f"set environment variable {passphrase_env}")
    if key_env:
        sources.append(f"set environment variable {key_env} to the raw key")
    sources.append("run interactively to be prompted")
    raise KeyManagementError(f"key file {path} needs a passphrase: " + ", or ".join(sources))


# --------------------------------------------------------------------------- a run's key

log = logging.getLogger("uprnlink")

_UNLOCKED: dict[str, tuple[tuple[str, int | None, int | None, str], MasterKey]] = {}


def unlock(ks: KeySettings) -> MasterKey:
    """The key a configuration's key settings name, unlocked once per process.

    scrypt makes each unlock deliberately slow and every stage asks for its keys, so each
    unlocked key is kept for the life of the process (one per kind), under where it came from:
    the key file (path, size, modification time: a rotation rewrites it) and a digest of the
    environment values that unlock it (a changed passphrase or raw key unlocks afresh).
    """
    values = "\0".join(os.environ.get(n, "") if n else "" for n in (ks.passphrase_env, ks.key_env))
    stat = ks.file.stat() if ks.file is not None and ks.file.exists() else None
    cache_key = (
        str(ks.file),
        stat.st_mtime_ns if stat else None,
        stat.st_size if stat else None,
        hashlib.sha256(values.encode()).hexdigest(),
    )
    known = _UNLOCKED.get(ks.kind)
    if known is not None and known[0] == cache_key:
        return known[1]
    key = resolve_key(
        key_file=ks.file,
        passphrase_env=ks.passphrase_env,
        key_env=ks.key_env,
        prompt=False,
        kind=ks.kind,
    )
    _UNLOCKED[ks.kind] = (cache_key, key)
    return key


def missing_keys(settings: RunSettings) -> list[KeySettings]:
    """The configuration's keys (pseudonymisation, audit, release) that a run could not find:
    no raw key in the environment and no key file where the configuration says."""
    out = []
    for ks in (settings.key, settings.audit_key, settings.release.key):
        if ks.key_env and os.environ.get(ks.key_env, "").strip():
            continue
        if ks.file is None or not (ks.file.exists() or ks.file.is_symlink()):
            out.append(ks)
    return out


def check_keys_present(settings: RunSettings) -> None:
    """Refuse a run, before anything starts, when any of its three keys is missing, naming
    every missing key and the command that creates it (the audit key first: each key's
    creation is recorded in the audit log)."""
    missing = missing_keys(settings)
    if not missing:
        return
    order = {AUDIT: 0, PSEUDONYMISATION: 1, RELEASE: 2}
    missing.sort(key=lambda ks: order.get(ks.kind, 3))
    config = settings.config_path.name
    steps = "; ".join(
        f"uprnlink key init --kind {ks.kind} --file {ks.file} --config {config}"
        if ks.file is not None
        else f"set {ks.key_env} ([{ks.kind}] names no file)"
        for ks in missing
    )
    raise KeyManagementError(
        f"{len(missing)} of the run's 3 keys missing ({', '.join(ks.kind for ks in missing)}): "
        f"create them in this order: {steps}"
    )


def load_run_key(settings: RunSettings) -> MasterKey:
    """The pseudonymisation key of a run configuration (`[key]`), unlocked once per process."""
    return unlock(settings.key)


def load_audit_key(settings: RunSettings) -> MasterKey:
    """The audit key of a run configuration (`[audit]`), unlocked once per process."""
    return unlock(settings.audit_key)


def load_release_key(settings: RunSettings) -> MasterKey:
    """The release key of a run configuration (`[release]`), unlocked once per process."""
    return unlock(settings.release.key)


def forget_run_keys() -> None:
    """Drop every unlocked key (tests; a long-lived process after a rotation)."""
    _UNLOCKED.clear()


def retired_keys(ks: KeySettings) -> list[MasterKey]:
    """The retired epochs of a key file that open with the same passphrase (to verify a log
    that spans rotations)."""
    out: list[MasterKey] = []
    passphrase = os.environ.get(ks.passphrase_env or "", "")
    if ks.file is not None and passphrase:
        for retired in sorted(ks.file.parent.glob(ks.file.name + ".epoch*.retired")):
            try:
                out.append(load_key_file(retired, passphrase, kind=ks.kind))
            except KeyManagementError:
                log.warning("retired key file %s does not open with this passphrase", retired.name)
    return out


def audit_keys(settings: RunSettings) -> list[MasterKey]:
    """The current audit key plus its retired epochs (to verify a log that spans rotations)."""
    return [load_audit_key(settings), *retired_keys(settings.audit_key)]


# --------------------------------------------------------------------------- the demo


def demo_key_settings(settings: RunSettings) -> tuple[KeySettings, ...]:
    """A configuration's three keys: pseudonymisation, audit, release."""
    return (settings.key, settings.audit_key, settings.release.key)


def use_demo_passphrases(
    settings: RunSettings, environ: MutableMapping[str, str] | None = None
) -> None:
    """Put the demo passphrase in each key's passphrase variable (this process only)."""
    env = os.environ if environ is None else environ
    for ks in demo_key_settings(settings):
        if ks.passphrase_env:
            env[ks.passphrase_env] = DEMO_PASSPHRASE


def demo_rng(seed: int, kind: str) -> Rng:
    """Bytes a demo key is made from, fixed by the population's seed: the same demo (people,
    seed) gives the same keys, tokens, people and perturbed tables on every checkout, so the
    guide's figures can be checked anywhere. The demo's keys are public anyway (their
    passphrase is in the source): never for real data."""
    stream = hashlib.shake_256(f"uprnlink-demo-key/{kind}/{seed}".encode()).digest(4096)
    offset = [0]

    def rng(n: int) -> bytes:
        start = offset[0]
        offset[0] += n
        if offset[0] > len(stream):
            raise KeyManagementError("the demo's key stream ran out")
        return stream[start : offset[0]]

    return rng


def create_demo_keys(settings: RunSettings, *, seed: int | None = None) -> list[KeyInfo]:
    """The demo's three keys, created where their files are missing (the demo passphrase, cheap
    scrypt: synthetic data only); with `seed`, made from it (`demo_rng`), else random. Returns
    the ones created."""
    created = []
    for ks in demo_key_settings(settings):
        if ks.file is None:
            raise KeyManagementError(f"the configuration names no {ks.kind} key file")
        if not ks.file.exists():
            rng = demo_rng(seed, ks.kind) if seed is not None else os.urandom
            created.append(create_demo_key(ks.file, kind=ks.kind, rng=rng))
    return created
