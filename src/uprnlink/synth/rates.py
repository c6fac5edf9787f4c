"""Error and gap rates of the synthetic extracts, one typed set per source system."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SOURCES: tuple[str, ...] = (
    "council_tax",
    "housing_tenancies",
    "benefits_claims",
    "adult_social_care",
    "gp_registrations",
    "hospital_activity",
)


@dataclass(frozen=True)
class SourceErrorRates:
    """Per-record probabilities of each error or gap in one source's extract.

    Attributes:
        coverage: share of the true records the system holds at all (GP: registered people).
        forename_typo: one keyboard slip in the forename (substitute, drop, swap or double).
        surname_typo: one keyboard slip in the surname.
        forename_variant: nickname or spelling variant from name_variants.csv (BILL for WILLIAM).
        middle_name_in_forename: middle name written into the forename field ("JOHN PAUL").
        stale_surname: of people who changed surname, share of records still under the old one.
        case_noise: names written in an unexpected case (lower or mixed).
        whitespace_noise: stray leading, trailing or doubled spaces in names.
        dob_missing: date of birth left blank (NHS and social care contracts require one, so 0).
        dob_day_month_swap: day and month transposed (only possible when both are 12 or less).
        dob_digit_error: one digit of the date of birth wrong (still a valid date).
        sex_unknown: sex recorded as unknown / not stated.
        nhs_number_missing: NHS number blank (1.0 for systems that hold none).
        nhs_number_invalid: two adjacent digits transposed, so the Modulus 11 check fails.
        stale_address: an older address kept after a move (council tax: liability never closed).
        uprn_missing: UPRN blank.
        uprn_wrong: UPRN of a neighbouring property on the same street.
        postcode_error: postcode blank, unspaced or with a character wrong.
        duplicate: the same person entered twice under a second record id.
        malformed: rows a validator must quarantine (blank id, impossible date of birth,
            spreadsheet-damaged or 13-digit UPRN); at least two per source are always written.
    """

    coverage: float = 1.0
    forename_typo: float = 0.015
    surname_typo: float = 0.015
    forename_variant: float = 0.02
    middle_name_in_forename: float = 0.0
    stale_surname: float = 0.1
    case_noise: float = 0.02
    whitespace_noise: float = 0.01
    dob_missing: float = 0.0
    dob_day_month_swap: float = 0.005
    dob_digit_error: float = 0.005
    sex_unknown: float = 0.0
    nhs_number_missing: float = 1.0
    nhs_number_invalid: float = 0.0
    stale_address: float = 0.0
    uprn_missing: float = 0.01
    uprn_wrong: float = 0.01
    postcode_error: float = 0.01
    duplicate: float = 0.0
    malformed: float = 0.001

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"rate {f.name} must be within [0, 1]")


@dataclass(frozen=True)
class SynthErrorRates:
    """Error and gap rates of all six extracts; defaults reflect what each kind of system holds.

    Council systems rarely hold an NHS number and often lack a date of birth; the council tax
    file carries more nicknames; NHS systems carry NHS numbers but hospital (SUS) records miss
    the UPRN for almost half of activity, and GP addresses go stale after moves.
    """

    council_tax: SourceErrorRates = SourceErrorRates(
        forename_typo=0.015,
        surname_typo=0.015,
        forename_variant=0.05,
        middle_name_in_forename=0.15,
        stale_surname=0.1,
        case_noise=0.01,
        dob_missing=0.35,
        dob_day_month_swap=0.007,
        dob_digit_error=0.007,
        stale_address=0.01,
        uprn_missing=0.01,
        uprn_wrong=0.01,
        postcode_error=0.01,
        duplicate=0.005,
        malformed=0.001,
    )
    housing_tenancies: SourceErrorRates = SourceErrorRates(
        forename_typo=0.01,
        surname_typo=0.01,
        forename_variant=0.04,
        middle_name_in_forename=0.02,
        stale_surname=0.05,
        case_noise=0.03,
        dob_missing=0.03,
        dob_day_month_swap=0.006,
        dob_digit_error=0.006,
        uprn_missing=0.005,
        uprn_wrong=0.005,
        postcode_error=0.005,
        malformed=0.001,
    )
    benefits_claims: SourceErrorRates = SourceErrorRates(
        forename_typo=0.01,
        surname_typo=0.01,
        forename_variant=0.03,
        stale_surname=0.05,
        case_noise=0.03,
        dob_day_month_swap=0.005,
        dob_digit_error=0.005,
        stale_address=0.02,
        uprn_missing=0.04,
        uprn_wrong=0.01,
        postcode_error=0.01,
        duplicate=0.003,
        malformed=0.001,
    )
    adult_social_care: SourceErrorRates = SourceErrorRates(
        forename_typo=0.02,
        surname_typo=0.02,
        forename_variant=0.05,
        stale_surname=0.15,
        case_noise=0.03,
        whitespace_noise=0.02,
        dob_day_month_swap=0.01,
        dob_digit_error=0.01,
        sex_unknown=0.005,
        nhs_number_missing=0.15,
        nhs_number_invalid=0.003,
        stale_address=0.03,
        uprn_missing=0.12,
        uprn_wrong=0.01,
        postcode_error=0.015,
        duplicate=0.01,
        malformed=0.002,
    )
    gp_registrations: SourceErrorRates = SourceErrorRates(
        coverage=0.98,
        forename_typo=0.01,
        surname_typo=0.01,
        forename_variant=0.015,
        stale_surname=0.2,
        case_noise=0.01,
        dob_day_month_swap=0.003,
        dob_digit_error=0.003,
        sex_unknown=0.002,
        nhs_number_missing=0.01,
        nhs_number_invalid=0.001,
        stale_address=0.05,
        uprn_missing=0.08,
        uprn_wrong=0.01,
        postcode_error=0.01,
        duplicate=0.01,
        malformed=0.001,
    )
    hospital_activity: SourceErrorRates = SourceErrorRates(
        forename_typo=0.02,
        surname_typo=0.02,
        forename_variant=0.02,
        stale_surname=0.2,
        case_noise=0.01,
        whitespace_noise=0.01,
        dob_day_month_swap=0.005,
        dob_digit_error=0.008,
        sex_unknown=0.004,
        nhs_number_missing=0.04,
        nhs_number_invalid=0.003,
        stale_address=0.03,
        uprn_missing=0.45,
        uprn_wrong=0.01,
        postcode_error=0.01,
        malformed=0.0005,
    )

    def for_source(self, source: str) -> SourceErrorRates:
        """The rates of one source, by its extract name."""
        if source not in SOURCES:
            raise KeyError(f"unknown source {source!r}")
        rates: SourceErrorRates = getattr(self, source)
        return rates

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every rate, for the manifest."""
        return asdict(self)
