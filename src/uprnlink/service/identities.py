"""Who may use the query service: named users with a role, each holding a revocable token.

An IG lead issues a token with `uprnlink users add NAME --role ROLE`; it is shown once and only
its SHA-256 is stored (tokens are 256 random bits, so a plain hash cannot be reversed by
guessing). A token names its own record (``ulk_<token id>_<secret>``), so checking one is a
dictionary look-up and one constant-time comparison. The role comes from this store, never
from the caller. Revoking marks the record; a revoked or unknown token is refused.

`Authenticator` is the seam for single sign-on: an OIDC authenticator would validate the
bearer JWT against the identity provider's keys and map a group claim onto a role, returning
the same `Identity`; the rest of the service does not change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.publish.access import Identity

__all__ = [
    "Authenticator",
    "TokenAuthenticator",
    "User",
    "UserStore",
    "token_id_of",
]

USERS_FORMAT = "uprnlink-users"
_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_TOKEN_RE = re.compile(r"^ulk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

Clock = Callable[[], datetime]


class AuthenticationError(UprnlinkError):
    """A request carried no token, or one that is unknown, malformed or revoked."""

    exit_code = 8


@dataclass(frozen=True)
class User:
    """One user of the query service (no secret: only the token's hash)."""

    name: str
    role: str
    token_id: str
    token_sha256: str
    created_at: str
    created_by: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def token_id_of(token: str) -> str | None:
    """The public id part of a well-formed token (safe to log), else None."""
    found = _TOKEN_RE.match(token.strip())
    return f"tok-{found.group(1)}" if found else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class UserStore:
    """The users file (JSON, owner-only): read on every check, so a revocation takes effect at
    once; written whole under a lock and renamed into place."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seen: tuple[int, int, int] | None = None
        self._users: list[User] = []

    def _read(self) -> list[User]:
        # Parsed again whenever the file changes (every write replaces it: a new inode), so a
        # revocation takes effect on the next request without re-reading the file each time.
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if version == self._seen:
            return list(self._users)
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"users file {self.path} cannot be read: {type(exc).__name__}"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != USERS_FORMAT:
            raise ConfigError(f"users file {self.path} is not a uprnlink users file")
        try:
            users = [User(**u) for u in doc.get("users", [])]
        except TypeError:
            raise ConfigError(f"users file {self.path} is malformed") from None
        self._seen, self._users = version, users
        return list(users)

    def _write(self, users: list[User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        doc = {"format": USERS_FORMAT, "version": 1, "users": [asdict(u) for u in users]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[User]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = self._read()
            yield users
            self._write(users)
        finally:
            os.close(fd)

    def users(self) -> list[User]:
        """Every user, revoked ones included."""
        return self._read()

    def add(self, name: str, role: str, roles: set[str], *, created_by: str) -> tuple[User, str]:
        """A new user with a new token; returns the user and the token (shown once)."""
        if not _NAME_RE.match(name):
            raise ConfigError(
                "a user name is 2-64 lower-case letters, digits, '.', '_' or '-', starting with "
                "a letter"
            )
        if role not in roles:
            raise ConfigError(
                f"role {role!r} is not in the governance policy; roles: {', '.join(sorted(roles))}"
            )
        token_id = secrets.token_hex(6)
        token = f"ulk_{token_id}_{secrets.token_urlsafe(32)}"
        with self._locked() as users:
            if any(u.name == name and u.active for u in users):
                raise ConfigError(
                    f"user {name!r} already has an active token: revoke it first, or use "
                    "`uprnlink users rotate`"
                )
            user = User(
                name=name,
                role=role,
                token_id=f"tok-{token_id}",
                token_sha256=_digest(token),
                created_at=self._clock().isoformat(timespec="seconds"),
                created_by=created_by,
            )
            users.append(user)
        return user, token

    def revoke(self, name: str) -> list[User]:
        """Revoke every active token of `name`; returns the revoked records."""
        now = self._clock().isoformat(timespec="seconds")
        revoked = []
        with self._locked() as users:
            for i, u in enumerate(users):
                if u.name == name and u.active:
                    users[i] = replace(u, revoked_at=now)
                    revoked.append(users[i])
        if not revoked:
            raise ConfigError(f"user {name!r} has no active token")
        return revoked

    def find(self, token: str) -> User | None:
        """The active user holding `token`, or None (unknown, malformed or revoked)."""
        token_id = token_id_of(token)
        if token_id is None:
            return None
        digest = _digest(token.strip())
        for user in self._read():
            if user.token_id == token_id and hmac.compare_digest(user.token_sha256, digest):
                return user if user.active else None
        return None


class Authenticator(Protocol):
    """Turns a request's credentials into an Identity (the role from the identity store)."""

    def authenticate(self, authorization: str | None) -> Identity: ...


class TokenAuthenticator:
    """Bearer tokens issued by `uprnlink users add`."""

    def __init__(self, store: UserStore) -> None:
        self.store = store

    def authenticate(self, authorization: str | None) -> Identity:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("no token: send Authorization: Bearer <token>")
        user = self.store.find(token)
        if user is None:
            raise AuthenticationError("the token is unknown, malformed or revoked")
        return Identity(user=user.name, role=user.role, token_id=user.token_id)


def describe(user: User) -> dict[str, Any]:
    """A user as listed to an IG lead (no hash)."""
    return {k: v for k, v in asdict(user).items() if k != "token_sha256"}
