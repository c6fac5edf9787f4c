"""Analyst-facing ids: person and household ids that nobody without the release key can reverse.

Inside the pipeline a person is a stable internal id (``P`` + 15 hex of SHA-256 of the person's
smallest record token) and a household is the keyed token of its UPRN. Both are functions of
the pseudonymisation key and the raw identifiers, so anyone holding that key and a list of UPRNs
or record references could rebuild them. What analysts see instead is, per data-sharing
project:

    person_id    = "P" + hex(HMAC-SHA256(release sub-key "person",    project \\x1f internal))[:16]
    household_id = "H" + hex(HMAC-SHA256(release sub-key "household", project \\x1f token))[:16]

under the release key, a separate random key with its own file, passphrase and custodian
(`uprnlink key init --kind release`). The ids are stable from run to run (the internal ids
are), differ between projects (as SAIL's project-specific ids do), and the crosswalk back to
the internal ids stays in the trusted zone.
"""

from __future__ import annotations

import polars as pl

from uprnlink.errors import KeyManagementError, PublishError
from uprnlink.privacy.keys import RELEASE, MasterKey

__all__ = ["ID_COLUMNS", "RELEASE_ID_HEX", "record_keys", "release_id_map", "release_ids"]

ID_COLUMNS: dict[str, tuple[str, str]] = {
    "person_id": ("person", "P"),
    "household_id": ("household", "H"),
}
"""Published id column -> (release sub-key purpose, id prefix)."""
RELEASE_ID_HEX = 16
"""Hex characters of a published id after its prefix (64 bits)."""
_SEPARATOR = "\x1f"


def release_id_map(ids: pl.Series, key: MasterKey, project: str, column: str) -> pl.DataFrame:
    """Internal ids -> published ids for one id column (`person_id` or `household_id`):
    a frame of `internal` and `published`, one row per distinct non-null internal id."""
    if key.kind != RELEASE:
        raise KeyManagementError("published ids are made with the release key only")
    purpose, prefix = ID_COLUMNS[column]
    distinct = ids.drop_nulls().unique().sort().cast(pl.String).rename("internal")
    messages = (pl.lit(project + _SEPARATOR) + pl.col("internal")).cast(pl.Binary)
    canonical = pl.DataFrame({"internal": distinct}).select(messages).to_series()
    digests = key.hmac_hex(purpose, canonical, take=RELEASE_ID_HEX // 2)
    mapping = pl.DataFrame({"internal": distinct, "digest": digests}).select(
        "internal", (pl.lit(prefix) + pl.col("digest")).cast(pl.String).alias("published")
    )
    if mapping.get_column("published").n_unique() != mapping.height:
        raise PublishError(f"two {column} values share a published id: rotate the release key")
    return mapping


def release_ids(
    tables: dict[str, pl.DataFrame], key: MasterKey, project: str
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Every person_id and household_id column of `tables` replaced by its published id, and
    the crosswalk (column, internal, published) for the trusted zone."""
    crosswalk = []
    maps: dict[str, pl.DataFrame] = {}
    for column in ID_COLUMNS:
        values = [t.get_column(column) for t in tables.values() if column in t.columns]
        if not values:
            continue
        maps[column] = release_id_map(pl.concat(values), key, project, column)
        crosswalk.append(maps[column].select(pl.lit(column).alias("column"), pl.all()))
    out = {}
    for name, frame in tables.items():
        for column, mapping in maps.items():
            if column in frame.columns:
                dtype = frame.schema[column]
                frame = (
                    frame.with_columns(pl.col(column).cast(pl.String))
                    .join(
                        mapping.rename({"internal": column, "published": "_published"}),
                        on=column,
                        how="left",
                        maintain_order="left",
                    )
                    .with_columns(pl.col("_published").cast(dtype).alias(column))
                    .drop("_published")
                )
        out[name] = frame
    empty = pl.DataFrame(
        schema={"column": pl.String, "internal": pl.String, "published": pl.String}
    )
    return out, pl.concat(crosswalk) if crosswalk else empty


RECORD_KEY_PURPOSE = "record_key"
"""The release sub-key the record keys of cell-key perturbation come from."""


def record_keys(ids: pl.Series, key: MasterKey, project: str) -> pl.DataFrame:
    """Two record keys (0-255) per published id, for cell-key perturbation: `rkey` for counts
    and `rkey_m` for sums. They are bytes of HMAC(release key, project | published id), so
    they look random to anyone without the release key, stay the same from release to release
    while the ids do, and are never shown (the query service reads them, analysts never)."""
    if key.kind != RELEASE:
        raise KeyManagementError("record keys are made with the release key only")
    distinct = ids.drop_nulls().unique().sort().cast(pl.String).rename("unit_id")
    messages = (
        pl.DataFrame({"unit_id": distinct})
        .select((pl.lit(project + _SEPARATOR) + pl.col("unit_id")).cast(pl.Binary))
        .to_series()
    )
    digests = key.hmac_hex(RECORD_KEY_PURPOSE, messages, take=2)
    return pl.DataFrame({"unit_id": distinct, "digest": digests}).select(
        "unit_id",
        pl.col("digest").str.slice(0, 2).str.to_integer(base=16).cast(pl.Int16).alias("rkey"),
        pl.col("digest").str.slice(2, 2).str.to_integer(base=16).cast(pl.Int16).alias("rkey_m"),
    )
