"""A publication's metadata as a typed record: what the publish stage writes as
`linked/run_metadata.json`, into every Parquet file's key-value metadata and as the `run_info`
table, and what the run summary, the CLI and the quality report read back.

The reference date is a `date` here from the publish stage to every reader: it is text only on
disk, written by `to_dict` and parsed by `from_dict`, once. `to_dict` gives the mapping with
the keys, order and values the files have always held, so a file written from it is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, TypedDict

from uprnlink.errors import ConfigError

__all__ = ["NotSupplied", "PublicationCounts", "PublicationMetadata", "ResidenceConfirmed"]


class NotSupplied(TypedDict):
    """Person sources this release had no data for, and per source the fields its mapping
    does not supply (their columns are typed nulls all the way to the views)."""

    sources: list[str]
    fields: dict[str, list[str]]


class ResidenceConfirmed(TypedDict):
    """Per source: people it places on the reference date, and how many another source places
    at the same address that day (`households.evidence.confirmation_on`)."""

    source_dataset: str
    people: int
    confirmed: int
    share: float


@dataclass(frozen=True)
class PublicationCounts:
    """Rows published: people, private households, communal establishments, memberships and
    service events."""

    people: int
    households: int
    communal_establishments: int
    memberships: int
    service_events: int

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublicationCounts:
        return cls(**{f.name: _field(data, f.name, int, "counts.") for f in fields(cls)})


def _field(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], prefix: str = ""
) -> Any:
    """`data[name]`, checked to be of `kind` (a bool is no int); the error names the field and
    the rule, never its value."""
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        how = "lacks" if name not in data else "mistypes"
        raise ConfigError(
            f"publication metadata: {how} field '{prefix}{name}' (rule: publication_metadata_shape)"
        )
    return value


@dataclass(frozen=True)
class PublicationMetadata:
    """One publication's metadata: run, keys, versions, reference date, contracts, what was
    not supplied, residence evidence and row counts (names and counts, never a data value).

    Fields are in the order the files hold them; `extra` keeps keys this version does not know
    (written after the known ones)."""

    run_id: str
    key_id: str
    key_epoch: int
    release_key_id: str
    project: str
    uprnlink_version: str
    reference_date: date
    service_period_months: int
    contracts: dict[str, str]
    not_supplied: NotSupplied
    residence_confirmed: tuple[ResidenceConfirmed, ...]
    single_person_discount_share: float | None
    published_at: str
    counts: PublicationCounts
    # What the superseded accounts and care homes rules acted on (counts and one share; a
    # rule switched off is absent; empty in metadata written before them).
    residence_rules: dict[str, float | int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The metadata as written to `run_metadata.json` and `run_info`: the reference date as
        YYYY-MM-DD text, counts and rows as plain mappings and lists, fields in order."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name == "residence_rules" and not value):
                continue
            if f.name == "reference_date":
                value = value.isoformat()
            elif f.name == "counts":
                value = value.to_dict()
            elif f.name == "residence_confirmed":
                value = [dict(r) for r in value]
            elif f.name in ("contracts", "not_supplied", "residence_rules"):
                value = dict(value)
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublicationMetadata:
        """The metadata from its mapping (as `to_dict` gives it or `json.loads` reads it); a
        missing or mistyped field is a ConfigError naming it."""
        raw_date = data.get("reference_date")
        if isinstance(raw_date, date):
            on = raw_date
        else:
            try:
                on = date.fromisoformat(_field(data, "reference_date", str))
            except ValueError:
                raise ConfigError(
                    "publication metadata: field 'reference_date' is not YYYY-MM-DD "
                    "(rule: publication_metadata_shape)"
                ) from None
        share = data.get("single_person_discount_share")
        counts = data.get("counts")
        if not isinstance(counts, PublicationCounts):
            counts = PublicationCounts.from_dict(_field(data, "counts", Mapping))
        missing = _field(data, "not_supplied", Mapping)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            run_id=_field(data, "run_id", str),
            key_id=_field(data, "key_id", str),
            key_epoch=_field(data, "key_epoch", int),
            release_key_id=_field(data, "release_key_id", str),
            project=_field(data, "project", str),
            uprnlink_version=_field(data, "uprnlink_version", str),
            reference_date=on,
            service_period_months=_field(data, "service_period_months", int),
            contracts=dict(_field(data, "contracts", Mapping)),
            not_supplied=NotSupplied(
                sources=list(_field(missing, "sources", list, "not_supplied.")),
                fields=dict(_field(missing, "fields", Mapping, "not_supplied.")),
            ),
            residence_confirmed=tuple(_field(data, "residence_confirmed", (list, tuple))),
            single_person_discount_share=None
            if share is None
            else _field(data, "single_person_discount_share", (int, float)),
            published_at=_field(data, "published_at", str),
            counts=counts,
            residence_rules=dict(_field(data, "residence_rules", Mapping))
            if "residence_rules" in data
            else {},
            extra={k: v for k, v in data.items() if k not in known},
        )
