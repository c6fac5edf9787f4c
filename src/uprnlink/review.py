"""The clerical review files: the queue the link stage writes for reviewers, and the labels
they give back (`trusted/review/`), read by the portal, the CLI and the next link.

Shared by the pipeline and the query service, so it holds no key and imports no zone: the
queue carries the record keys (keyed tokens, never raw identifiers) and only what a reviewer
needs to decide (names, date of birth, postcode district, source, period; never an NHS number
or a UPRN). Labels are JSON Lines appended under an exclusive lock, one file per day: a label
is never changed or removed; a later label of the same pair supersedes it when read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import UprnlinkError
from uprnlink.zones import Zones

LABELS = ("match", "non_match")
REASONS = ("near_threshold", "split_cluster", "low_density")
# What one side of a pair shows a reviewer (suffix _l or _r in the queue).
SIDE_FIELDS = ("source", "forename", "surname", "dob", "district", "period")
QUEUE_SCHEMA: dict[str, Any] = {
    "pair_id": pl.Utf8,
    "reason": pl.Utf8,
    "match_probability": pl.Float64,
    "unique_id_l": pl.Utf8,
    "unique_id_r": pl.Utf8,
    **{f"{f}_{side}": pl.Utf8 for side in ("l", "r") for f in SIDE_FIELDS},
}
LABEL_SCHEMA: dict[str, Any] = {
    "pair_id": pl.Utf8,
    "unique_id_l": pl.Utf8,
    "unique_id_r": pl.Utf8,
    "label": pl.Utf8,
    "reviewer": pl.Utf8,
    "at": pl.Utf8,
    "key_id": pl.Utf8,
    "reason": pl.Utf8,
    "match_probability": pl.Float64,
}
_PAIR_RE = re.compile(r"^[0-9a-f]{16}$")
Clock = Callable[[], datetime]


class ReviewError(UprnlinkError):
    """A review queue or label that cannot be read or written as asked."""

    exit_code = 2


@dataclass(frozen=True)
class Label:
    """One reviewer's decision on one queued pair (record keys only, no personal data)."""

    pair_id: str
    unique_id_l: str
    unique_id_r: str
    label: str
    reviewer: str
    at: str
    key_id: str
    reason: str
    match_probability: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_id_of(a: str, b: str) -> str:
    """The same id for a pair of record keys in either order, in every run (of one key epoch)."""
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{lo}|{hi}".encode()).hexdigest()[:16]


def pair_id_expr(a: str = "unique_id_l", b: str = "unique_id_r") -> pl.Expr:
    """`pair_id_of` over two columns of record keys."""
    return (
        pl.struct(a, b)
        .map_elements(lambda s: pair_id_of(s[a], s[b]), return_dtype=pl.Utf8)
        .alias("pair_id")
    )


def read_queue(zones: Zones) -> pl.DataFrame:
    """The last link's review queue (empty, typed, when there is none)."""
    path = zones.review_queue
    if not path.exists():
        return pl.DataFrame(schema=QUEUE_SCHEMA)
    try:
        return pl.read_parquet(path).select(list(QUEUE_SCHEMA))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ReviewError(f"{path.name}: the review queue cannot be read (rule=queue)") from exc


def queue_key_id(zones: Zones) -> str:
    """The key id the queue's record keys were made under ("" when there is no queue)."""
    path = zones.review_queue
    if not path.exists():
        return ""
    return str(pl.read_parquet_metadata(path).get("uprnlink_key_id", ""))


def read_labels(zones: Zones, key_id: str | None = None) -> pl.DataFrame:
    """Every label given, oldest first (of `key_id` only, when given: record keys of another
    key epoch name no record of this one)."""
    folder = zones.review_labels
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append({k: row[k] for k in LABEL_SCHEMA})
            except (ValueError, KeyError, TypeError) as exc:
                raise ReviewError(
                    f"{path.name}: label line {n} is malformed (row={n}, rule=label_line)"
                ) from exc
    labels = pl.DataFrame(rows, schema=LABEL_SCHEMA, orient="row")
    if key_id is not None:
        labels = labels.filter(pl.col("key_id") == key_id)
    return labels


def current_labels(labels: pl.DataFrame) -> pl.DataFrame:
    """The latest label of each pair (later labels supersede earlier ones; none is lost)."""
    return labels.with_row_index("_n").sort("_n").group_by("pair_id").last().sort("_n").drop("_n")


def pending_pairs(queue: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Queued pairs nobody has labelled yet, most uncertain first (the queue's order)."""
    return queue.join(labels.select("pair_id").unique(), on="pair_id", how="anti")


@contextlib.contextmanager
def _locked_append(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def append_label(
    zones: Zones, pair_id: str, label: str, reviewer: str, *, clock: Clock | None = None
) -> Label:
    """Record a reviewer's label of a queued pair (appended; nothing is rewritten)."""
    if label not in LABELS:
        raise ReviewError(f"label must be one of {', '.join(LABELS)} (rule=label)")
    if not _PAIR_RE.match(pair_id):
        raise ReviewError("a pair id is 16 hexadecimal characters (rule=pair_id)")
    found = read_queue(zones).filter(pl.col("pair_id") == pair_id)
    if found.height == 0:
        raise ReviewError(f"pair {pair_id} is not in the review queue (rule=not_queued)")
    row = found.row(0, named=True)
    now = (clock or (lambda: datetime.now(UTC)))()
    entry = Label(
        pair_id=pair_id,
        unique_id_l=row["unique_id_l"],
        unique_id_r=row["unique_id_r"],
        label=label,
        reviewer=reviewer,
        at=now.isoformat(timespec="seconds"),
        key_id=queue_key_id(zones),
        reason=row["reason"],
        match_probability=float(row["match_probability"]),
    )
    path = zones.review_labels / f"{now.date().isoformat()}.jsonl"
    with _locked_append(path) as fd:
        os.write(fd, (json.dumps(entry.to_dict(), sort_keys=True) + "\n").encode("utf-8"))
    return entry


def splink_labels(labels: pl.DataFrame) -> pl.DataFrame:
    """Current labels as Splink's labels table: unique_id_l, unique_id_r, clerical_match_score."""
    return current_labels(labels).select(
        "unique_id_l",
        "unique_id_r",
        (pl.col("label") == "match").cast(pl.Float64).alias("clerical_match_score"),
    )
