"""The trusted zone's files: pseudonymised records, facts and crosswalks, stamped with the key
epoch their tokens came from, so tokens of two epochs never mix in one dataset."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from uprnlink.errors import ContractError, KeyManagementError
from uprnlink.privacy.keys import MasterKey
from uprnlink.settings import RunSettings
from uprnlink.zones import Zones

KEY_ID_META = "uprnlink_key_id"


def write_trusted(frame: pl.DataFrame, path: Path, key: MasterKey) -> None:
    """Write a trusted-zone file stamped with the key id (and epoch) its tokens came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(
        path, metadata={KEY_ID_META: key.key_id, "uprnlink_key_epoch": str(key.epoch)}
    )


def read_trusted(path: Path, key: MasterKey, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read a trusted-zone file (only `columns` of it, those it has, when given), refusing one
    whose tokens came from another key epoch."""
    meta = pl.read_parquet_metadata(path)
    found = meta.get(KEY_ID_META)
    if found != key.key_id:
        raise KeyManagementError(
            f"{path.name} in the trusted zone was pseudonymised under key {found} "
            f"(epoch {meta.get('uprnlink_key_epoch')}) but this run's key is {key.key_id} "
            f"(epoch {key.epoch}). Tokens of two key epochs never mix in one dataset: after a "
            "rotation, rebuild everything from the landing extracts with `uprnlink run "
            "--config FILE --rebuild` (it clears the trusted zone first)."
        )
    if columns is None:
        return pl.read_parquet(path)
    present = pl.read_parquet_schema(path)
    return pl.read_parquet(path, columns=[c for c in columns if c in present])


def clear_trusted_zone(settings: RunSettings) -> None:
    """Remove every trusted-zone file (a full rebuild, for example after a key rotation)."""
    shutil.rmtree(settings.trusted_dir, ignore_errors=True)
    shutil.rmtree(Zones(settings).reference.parent, ignore_errors=True)


def read_trusted_records(
    settings: RunSettings, key: MasterKey, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """All sources' trusted linkage records as one frame (all from the current key epoch); only
    `columns` (those the records have) when given."""
    z = Zones(settings)
    frames = [
        read_trusted(z.records(n), key, columns) for n in settings.sources if z.records(n).exists()
    ]
    if not frames:
        raise ContractError("no trusted records: run the ingest stage first", rule="no_records")
    return pl.concat(frames, how="vertical_relaxed")
