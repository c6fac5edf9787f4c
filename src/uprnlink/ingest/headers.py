"""What a column's header name says about the contract field it holds: the common names of each
field in council and NHS extracts, a header's match to a field, and close names for a missing
column.

`ingest.mapping` proposes whole mappings from this and from the values; the ingest's own checks
(`ingest.validate`, `ingest.groups`) use it to suggest the column a mapping may have meant.
Both depend on this module, not on each other, so the ingest has no import loop.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from uprnlink.ingest.contracts import FieldSpec

__all__ = [
    "ALIASES",
    "KEY_WORDS",
    "ONS_CODE_NAMES",
    "PERIOD_WORDS",
    "name_score",
    "normal_name",
    "suggest_columns",
]

ALIASES: dict[str, tuple[str, ...]] = {
    "record_id": (
        "id",
        "record id",
        "row id",
        "patient id",
        "person id",
        "client id",
        "local patient id",
        "local patient identifier",
        "party ref",
        "party id",
        "customer ref",
        "system id",
        "unique id",
        "pas id",
        "mosaic id",
    ),
    "forename": (
        "forename",
        "forenames",
        "first name",
        "firstname",
        "first names",
        "given name",
        "given names",
        "person given name",
        "christian name",
        "fname",
    ),
    "surname": (
        "surname",
        "last name",
        "lastname",
        "family name",
        "person family name",
        "sname",
        "lname",
    ),
    "dob": (
        "dob",
        "date of birth",
        "birth date",
        "birthdate",
        "person birth date",
        "birth dt",
        "d o b",
    ),
    "sex": (
        "sex",
        "gender",
        "sex code",
        "gender code",
        "person stated gender code",
        "person gender code",
        "stated gender",
    ),
    "nhs_number": (
        "nhs number",
        "nhs no",
        "nhsno",
        "nhs num",
        "nhs",
        "nhs number value",
        "patient nhs number",
    ),
    "address_line_1": (
        "address line 1",
        "address 1",
        "address1",
        "addr1",
        "add1",
        "address",
        "street",
        "house",
    ),
    "postcode": (
        "postcode",
        "post code",
        "pcode",
        "postal code",
        "pc",
        "postcode of usual address",
        "patient postcode",
    ),
    "uprn": (
        "uprn",
        "property uprn",
        "address uprn",
        "unique property reference number",
        "uprn number",
    ),
    "start_date": (
        "start date",
        "start",
        "date from",
        "from date",
        "valid from",
        "effective from",
        "registration date",
        "registered",
        "registered on",
        "date registered",
        "reg date",
        "liability start",
        "tenancy start",
        "claim start",
        "admission date",
        "arrival date",
        "activity date",
        "service start",
    ),
    "end_date": (
        "end date",
        "end",
        "date to",
        "to date",
        "valid to",
        "effective to",
        "deregistration date",
        "deregistered",
        "deregistered on",
        "date deregistered",
        "dereg date",
        "liability end",
        "tenancy end",
        "claim end",
        "discharge date",
        "service end",
    ),
    "date_of_death": ("date of death", "dod", "death date"),
    "person_type": (
        "role",
        "person role",
        "claim role",
        "relationship",
        "party type",
        "member type",
        "claimant type",
        "person type",
    ),
    "benefit_type": ("benefit", "benefit type", "award type", "scheme", "benefits"),
    "activity_type": ("activity", "attendance type", "admission type", "event type", "pod"),
    "support_setting": (
        "setting",
        "service type",
        "care setting",
        "service setting",
        "support type",
        "service",
        "care type",
    ),
    "tenure_type": ("tenure", "tenancy type", "tenure type"),
    "band": ("band", "ctax band", "valuation band", "property band", "council tax band"),
    "claim_ref": ("claim id", "claim ref", "claim number", "claim no", "claim"),
    "account_ref": ("account ref", "account", "account number", "account no", "ctax ref"),
    "tenancy_ref": ("tenancy ref", "tenancy id", "tenancy number", "tenancy no", "tenancy"),
    "weekly_amount": ("weekly amount", "amount", "weekly award", "award amount"),
    "bedrooms": ("bedrooms", "beds", "no of bedrooms", "bedroom count", "number of bedrooms"),
    "primary_support_reason": ("primary support reason", "psr", "support reason"),
    "oa": ("oa", "output area", "output area code", "oa code"),
    "lsoa": (
        "lsoa",
        "lsoa code",
        "lower layer super output area",
        "lsoa code 2021",
        "lsoa code 2011",
    ),
    "msoa": ("msoa", "msoa code", "middle layer super output area"),
    "ward": ("ward", "ward code", "electoral ward", "electoral ward code"),
    "lad": ("lad", "local authority", "local authority district", "la code", "lad code", "ltla"),
    "imd_decile": ("imd decile", "index of multiple deprivation imd decile"),
    "class": (
        "class",
        "classification",
        "classification code",
        "class code",
        "property class",
        "property classification",
        "abp class",
        "blpu class",
        "addressbase class",
    ),
}
"""Common names of the contract fields in council and NHS extracts (normalised spelling)."""

# Last words of a column name that say it holds a reference (a candidate record key).
KEY_WORDS = {"id", "ref", "reference", "key", "no", "number", "seq", "identifier"}
# ONS geography codes: the column names ONS publishes them under (LSOA21CD, WD24CD, LAD24CD)
# and the patterns of the codes themselves (E01 LSOAs, E05 wards, E06-E09 districts; W and S
# for Wales and Scotland), which identify a geography column on their own.
ONS_CODE_NAMES = {
    "oa": r"^oa\d{2}cd$",
    "lsoa": r"^lsoa\d{2}cd$",
    "msoa": r"^msoa\d{2}cd$",
    "ward": r"^(wd|ward)\d{2}cd$",
    "lad": r"^(lad|ltla|lau1|laua|lauas)\d{2}cd$",
}
# Last words of a column name that mark the start or the end of a period.
PERIOD_WORDS = {
    "start_date": {"from", "start", "started", "begin", "commenced"},
    "end_date": {"to", "end", "ended", "until", "ceased"},
}


def normal_name(name: str) -> str:
    """A header or field name in one spelling: lower case words split on anything else, and
    on camelCase boundaries (``NHSNumber`` -> ``nhs number``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(re.findall(r"[a-z0-9]+", spaced.lower()))


def name_score(header: str, spec: FieldSpec) -> tuple[float, str]:
    """How well a header names a field (0-1) and why."""
    h = normal_name(header)
    if not h:
        return 0.0, ""
    if spec.name == "imd_decile" and "rank" in h.split():
        return 0.0, ""  # a rank is read as deciles only with from_rank (_rank_deciles)
    candidates = (normal_name(spec.name), *ALIASES.get(spec.name, ()))
    if h in candidates:
        return 1.0, "name"
    ons = ONS_CODE_NAMES.get(spec.name)
    if ons and re.fullmatch(ons, h.replace(" ", "")):
        return 1.0, "ONS code name"
    if h.replace(" ", "") in {c.replace(" ", "") for c in candidates}:
        return 1.0, "name"
    words = f" {h} "
    for c in candidates:
        if len(c) >= 3 and f" {c} " in words:
            return 0.8, f"name contains {c!r}"
    field_words = normal_name(spec.name).split()
    if len(field_words) >= 2 and h.split()[0] == "".join(w[0] for w in field_words):
        return 0.7, "name is the field's initials"
    best = max(difflib.SequenceMatcher(None, h, c).ratio() for c in candidates)
    if best >= 0.85:
        return 0.6 * best, "name close"
    if h.split()[-1] in PERIOD_WORDS.get(spec.name, ()):
        return 0.8, f"name ends {h.split()[-1]!r}"
    if spec.unique and h.split()[-1] in KEY_WORDS:
        return 0.5, "name of a reference"
    return 0.0, ""


def suggest_columns(missing: str, headers: Sequence[str], field_name: str) -> list[str]:
    """Header columns that could be the missing mapped column (by name only), best first."""
    spec = FieldSpec(field_name, "string")
    scored = []
    for h in headers:
        score, _ = name_score(h, spec)
        close = difflib.SequenceMatcher(None, normal_name(missing), normal_name(h)).ratio()
        best = max(score, close if close >= 0.7 else 0.0)
        if best > 0:
            scored.append((best, h))
    return [h for _, h in sorted(scored, key=lambda t: -t[0])[:3]]
