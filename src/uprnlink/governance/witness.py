"""Witnesses of the audit log's head, written where the log's writers cannot rewrite them.

A witness is one JSON line (`witness_line`): the log's last seq and
hash, when, the seal id and epoch. The writers send it, after every seal and at least every
``[audit] witness_minutes`` while the log moves, to:

- a **file sink** (``[audit] witness_file``): meant to be another account's file that the
  service and pipeline may only append to (a separate ``uprnlink-witness`` account owning the
  folder, the file group-writable by the writers and marked ``chattr +a`` by root, or a small
  witness process of its own account feeding it). Each seal records the file's size, so a
  witness file later found shorter than a sealed size was truncated; verification reads it
  and fails when it is missing, unreadable, corrupted or truncated, or when any witness does
  not match the log (one past the log's end means the log was cut short).
- **syslog** (``[audit] witness_syslog``, e.g. ``/dev/log``): the same line as the message of
  a datagram with the tag ``uprnlink-audit``, facility authpriv. Under journald with Forward
  Secure Sealing (``journalctl --setup-keys``) the witnesses are sealed by the journal too;
  ``journalctl -t uprnlink-audit -o cat > witnesses.jsonl`` exports them for
  ``uprnlink audit verify --witness-file witnesses.jsonl``.

Setting the sinks up: docs/operations.md, "Witnessing the audit log".
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from uprnlink.errors import AuditError
from uprnlink.settings import AuditSettings

__all__ = [
    "WITNESS_FORMAT",
    "FileWitnessSink",
    "SyslogWitnessSink",
    "Witness",
    "WitnessFile",
    "WitnessSink",
    "read_witness_file",
    "witness_line",
    "witness_sinks",
]

_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
SYSLOG_TAG = "uprnlink-audit"
_AUTHPRIV_NOTICE = 10 * 8 + 5  # facility authpriv, severity notice


class WitnessSink(Protocol):
    """Somewhere the log's head is written that the log's writers cannot rewrite."""

    name: str
    """What the seal entries record of it (``file:/path`` or ``syslog:/dev/log``)."""

    def write(self, line: str) -> None:
        """Append one witness line (one JSON object, newline-ended)."""
        ...

    def size(self) -> int | None:
        """Bytes the sink holds now (a file), or None where that cannot be known (syslog)."""
        ...


@dataclass(frozen=True)
class Witness:
    """A head of the log recorded somewhere else (a run summary, a release, a witness file):
    the log must still hold entry `seq` with exactly this `hash`, or it was cut short or
    rewritten. A witness that could not be read carries the `problem` instead, and fails
    verification (nothing is skipped)."""

    source: str
    seq: int
    hash: str
    problem: str | None = None


WITNESS_FORMAT = "uprnlink-audit-witness/v1"


def witness_line(
    *, seq: int, digest: str, ts: str, seal_id: str | None, epoch: int | None, by: str
) -> str:
    """One witness: the log's head (seq and hash) at `ts`, as a JSON line. The same text goes
    to a witness file and, as the message, to syslog, so a journald export reads back alike."""
    body = {
        "witness": WITNESS_FORMAT,
        "seq": seq,
        "hash": digest,
        "ts": ts,
        "seal_id": seal_id,
        "epoch": epoch,
        "by": by,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True) + "\n"


@dataclass(frozen=True)
class WitnessFile:
    """A witness file as read for verification: its witnesses, its size, or what is wrong."""

    path: Path
    witnesses: tuple[Witness, ...] = ()
    size: int = 0
    problem: str | None = None


class FileWitnessSink:
    """Appends witnesses to a file (opened for append only, each line flushed to disk)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"

    def write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def size(self) -> int | None:
        return self.path.stat().st_size

    def __repr__(self) -> str:
        return f"FileWitnessSink({str(self.path)!r})"


class SyslogWitnessSink:
    """Sends witnesses to a local syslog socket (journald's ``/dev/log``) as RFC 3164 lines."""

    def __init__(self, address: str = "/dev/log", *, timeout: float = 1.0) -> None:
        self.address = address
        self.name = f"syslog:{address}"
        self.timeout = timeout

    def message(self, line: str) -> bytes:
        """The datagram for one witness: priority, tag and pid, then the witness itself."""
        return f"<{_AUTHPRIV_NOTICE}>{SYSLOG_TAG}[{os.getpid()}]: {line.strip()}".encode("ascii")

    def write(self, line: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            sock.sendto(self.message(line), self.address)

    def size(self) -> int | None:
        return None

    def __repr__(self) -> str:
        return f"SyslogWitnessSink({self.address!r})"


def witness_sinks(settings: AuditSettings) -> list[WitnessSink]:
    """The sinks `[audit]` names (none: no witnesses beyond the run summaries)."""
    sinks: list[WitnessSink] = []
    if settings.witness_file is not None:
        sinks.append(FileWitnessSink(settings.witness_file))
    if settings.witness_syslog:
        sinks.append(SyslogWitnessSink(settings.witness_syslog))
    return sinks


def _witness(obj: Any) -> tuple[int, str] | None:
    if not isinstance(obj, dict) or obj.get("witness") != WITNESS_FORMAT:
        return None
    seq, digest = obj.get("seq"), obj.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    if not isinstance(digest, str) or not _HEX64_RE.match(digest):
        return None
    return seq, digest


def read_witness_file(path: str | os.PathLike[str]) -> WitnessFile:
    """Every witness in a witness file (or a journald export of the syslog ones). A file that
    is missing, unreadable, empty, cut mid-line or holds a line that is not a witness is
    returned with its `problem`, which fails verification."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return WitnessFile(p, problem="is missing (rule: witness_missing)")
    except IsADirectoryError:
        return WitnessFile(p, problem="is a directory (rule: witness_unreadable)")
    except OSError as exc:
        return WitnessFile(p, problem=f"cannot be read ({exc.strerror}) (rule: witness_unreadable)")
    if not raw:
        return WitnessFile(p, problem="is empty: it holds no witness (rule: witness_missing)")
    if not raw.endswith(b"\n"):
        return WitnessFile(
            p,
            size=len(raw),
            problem="ends in an incomplete line: it was cut (rule: witness_truncated)",
        )
    seen: dict[tuple[int, str], Witness] = {}
    for number, line in enumerate(raw[:-1].split(b"\n"), start=1):
        try:
            found = _witness(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, RecursionError):
            found = None
        if found is None:
            return WitnessFile(
                p,
                size=len(raw),
                problem=f"line {number} is not a witness: the file was altered or corrupted "
                "(rule: witness_corrupt)",
            )
        if found not in seen:
            seen[found] = Witness(f"witness file {p.name} line {number}", *found)
    return WitnessFile(p, tuple(seen.values()), size=len(raw))


def check_sink_writable(sink: WitnessSink) -> None:
    """Refuse at start-up a file sink that cannot be opened for append (a service that cannot
    witness its log would run unwitnessed)."""
    if isinstance(sink, FileWitnessSink):
        try:
            sink.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(sink.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise AuditError(
                f"witness file {sink.path} cannot be opened for append ({exc.strerror}) "
                "(rule: witness_sink)"
            ) from None
        os.close(fd)
