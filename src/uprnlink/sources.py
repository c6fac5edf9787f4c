"""The source registry: every extract the pipeline knows, and the roles each plays.

A data contract (`schemas/NAME.v1.toml`) says what a source's columns are; this registry says
what the source *means* to the stages that read it: whether its dates describe where a person
lives, whether its end date means they left, whether it lists several people on one account.
Settings (which sources a run may configure), linkage (which dates are stays) and households
(how residence is resolved) all read their lists from here, so a new source is added in one
place.

The order of `PERSON_SOURCES` is the order of authority on residence: where two sources place a
person at different addresses on the same day, the earlier one wins (`households.timelines`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Source:
    """One source and its roles. Every role defaults to off."""

    name: str
    # Its dates describe residence at the recorded address (a liability, a tenancy, a claim,
    # a care package, a registration).
    residence: bool = False
    # Its dates are visits: a claim about one day at the recorded address, used only to fill a
    # gap no stay covers (hospital activity).
    visits: bool = False
    # Held by the NHS: its records carry NHS numbers and are preferred for a person's details.
    nhs: bool = False
    # An end date means the person left the address (a benefit claim or a care package can end
    # while the person stays put).
    confirms_departure: bool = False
    # An open stay here keeps the person at the address against another source's end date.
    confirms_presence: bool = False
    # Stays tied to the household's occupancy of the address (the liable people).
    occupancy: bool = False
    # An open-ended list that keeps people after they move, with no end of its own.
    open_list: bool = False
    # Several people on one account at once (cannot-link evidence, `linkage.constraints`):
    # the account field, and the field telling the parties apart if any.
    listing: tuple[str, str | None] | None = None
    # The facts the household tables read from it (`households.tables`), each with its polars
    # type name: a source not delivered still yields these columns, empty, so every published
    # table and view keeps its schema.
    facts: tuple[tuple[str, str], ...] = ()


PERSON_SOURCE_ROLES: tuple[Source, ...] = (
    Source(
        "council_tax",
        residence=True,
        confirms_departure=True,
        confirms_presence=True,
        occupancy=True,
        listing=("account_ref", None),
        facts=(
            ("band", "String"),
            ("single_person_discount", "Boolean"),
            ("council_tax_reduction", "Boolean"),
        ),
    ),
    Source(
        "housing_tenancies",
        residence=True,
        confirms_departure=True,
        confirms_presence=True,
        occupancy=True,
        listing=("tenancy_ref", None),
        facts=(("tenure_type", "String"), ("bedrooms", "Int64")),
    ),
    Source(
        "benefits_claims",
        residence=True,
        confirms_presence=True,
        listing=("claim_ref", "person_type"),
        facts=(("benefit_type", "String"), ("person_type", "String")),
    ),
    Source(
        "adult_social_care",
        residence=True,
        nhs=True,
        open_list=True,
        facts=(("support_setting", "String"),),
    ),
    Source(
        "gp_registrations",
        residence=True,
        nhs=True,
        confirms_departure=True,
        confirms_presence=True,
        open_list=True,
        # Long-term condition flags (practice registers): every `ltc_*` fact is one.
        facts=(
            ("date_of_death", "Date"),
            *(
                (f"ltc_{c}", "Boolean")
                for c in (
                    "asthma",
                    "copd",
                    "diabetes",
                    "chd",
                    "hypertension",
                    "depression",
                    "dementia",
                )
            ),
        ),
    ),
    Source("hospital_activity", visits=True, nhs=True, facts=(("activity_type", "String"),)),
)
# Lookups joined onto people and addresses, never linked themselves.
REFERENCE_SOURCES = ("uprn_lookup", "property_class", "deprivation")

PERSON_SOURCES = tuple(s.name for s in PERSON_SOURCE_ROLES)
_ROLES = frozenset(f.name for f in fields(Source)) - {"name", "listing", "facts"}


def sources_with(role: str) -> tuple[str, ...]:
    """The person sources that play `role` (a field of `Source`), in order of authority."""
    if role not in _ROLES:
        raise ValueError(f"unknown source role {role!r}; roles are {sorted(_ROLES)}")
    return tuple(s.name for s in PERSON_SOURCE_ROLES if getattr(s, role))


def listing_fields() -> dict[str, tuple[str, str | None]]:
    """Per source that lists several people on one account: its account and party fields."""
    return {s.name: s.listing for s in PERSON_SOURCE_ROLES if s.listing is not None}


def fact_types() -> dict[str, dict[str, str]]:
    """Per person source: the facts the household tables read, with their polars type names."""
    return {s.name: dict(s.facts) for s in PERSON_SOURCE_ROLES}
