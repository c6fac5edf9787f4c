"""The source registry: one list of sources and their roles, read by every stage."""

from __future__ import annotations

import pytest

from uprnlink.households import timelines
from uprnlink.ingest.contracts import find_contract
from uprnlink.linkage.constraints import LISTING_FIELDS
from uprnlink.linkage.model import NON_RESIDENCE_SOURCES
from uprnlink.resources import schemas_dir
from uprnlink.sources import (
    PERSON_SOURCE_ROLES,
    PERSON_SOURCES,
    REFERENCE_SOURCES,
    listing_fields,
    sources_with,
)


def test_every_registered_source_has_a_contract_and_its_listing_fields() -> None:
    for name in (*PERSON_SOURCES, *REFERENCE_SOURCES):
        assert (schemas_dir() / f"{name}.v1.toml").exists(), name
    for name, (account, role) in listing_fields().items():
        fields = {f.name for f in find_contract(schemas_dir(), name).fields}
        assert account in fields, (name, account)
        assert role is None or role in fields, (name, role)


def test_roles_are_read_from_the_registry_in_order_of_authority() -> None:
    assert tuple(s.name for s in PERSON_SOURCE_ROLES if s.residence) == timelines.RESIDENCE_SOURCES
    assert timelines.RESIDENCE_SOURCES[0] == "council_tax"
    assert timelines.FALLBACK_SOURCES == NON_RESIDENCE_SOURCES == ("hospital_activity",)
    assert set(timelines.OCCUPANCY_SOURCES) <= set(timelines.CONFIRMING_SOURCES)
    assert listing_fields() == LISTING_FIELDS
    # A source is evidence of residence as a stay or as a visit, never both.
    assert not set(sources_with("residence")) & set(sources_with("visits"))
    assert set(sources_with("residence")) | set(sources_with("visits")) == set(PERSON_SOURCES)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown source role"):
        sources_with("lives_here")
