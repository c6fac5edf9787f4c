"""A seeded synthetic local authority with six messy extracts and their ground truth.

The world: one fictional authority (E08000999, "Calderbridge") of LSOAs of 400-700 addresses
grouped into MSOAs and 20+ wards, with an IMD decile per LSOA that drives housing tenure,
health and mortality. Addresses carry AddressBase-style classes (RD02 detached, RD03 semi,
RD04 terraced, RD06 flat, RH02 HMO bedsit, RI01 care home, RI02 hostel), 11- and 12-digit
UPRNs (flats share a building but not a UPRN), LS/BD-style unit postcodes of 10-20
addresses, council tax bands and bedrooms: about one dwelling per 2.3 residents, ~5% vacant.

People live in households (singles, couples, families, lone parents, multi-generational
households, sharers) with UK names drawn by birth year and heritage from the shipped
frequency lists (some sons named after their fathers and daughters after their mothers, twins
at the ONS multiple-maternity rate: the namesakes real linkage meets), valid unique NHS numbers and conditions whose prevalence follows age and
deprivation. Ten years up to the reference date are simulated event by event: births,
age-dependent deaths, moves (owners ~5%/yr, renters 7-15%/yr), young adults leaving home,
couples forming and separating (some women taking the partner's surname), moves into care
homes and in/out-migration through a vacancy pool, so no dwelling ever holds two households.

The six extracts in out_dir/landing/ each use their own system's layout and are damaged at
per-source rates (SynthErrorRates): typos, nicknames, surname not updated after marriage,
date of birth slips or blanks, stale addresses, missing or neighbouring UPRNs, postcode
errors, missing or invalid NHS numbers, duplicate records and a few malformed rows (blank
id, impossible date of birth, spreadsheet-damaged or 13-digit UPRN). out_dir/truth/ holds
the people, every record's true person (records.parquet, with its errors listed), residence
and household histories, addresses with tenure on the reference date, and a manifest.
"""

from uprnlink.synth.build import SynthSummary, write_synthetic
from uprnlink.synth.nhs import is_valid_nhs_number, nhs_check_digit
from uprnlink.synth.rates import SOURCES, SourceErrorRates, SynthErrorRates

__all__ = [
    "SOURCES",
    "SourceErrorRates",
    "SynthErrorRates",
    "SynthSummary",
    "is_valid_nhs_number",
    "nhs_check_digit",
    "write_synthetic",
]
