"""Three extracts of a kind the rest of the suite never uses, for the first-day walkthrough
(`tests/test_first_day.py`): small, seeded, synthetic.

- a council tax file with one row per account, a full name per liable party ("Lead Name",
  "Joint Name", forename first) and one date of birth column ("DOB") shared by both parties;
- a GP list as an Excel workbook (.xlsx, written with openpyxl): a "Registrations" sheet with
  dates as real date cells and NHS numbers as numbers, and a "Notes" sheet after it;
- an ONS-style UPRN lookup holding both the area codes and the AddressBase class of each UPRN.

`Extracts.values` lists personal data values planted in them, for the leak checks.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

FORENAMES_F = (
    "Aisling", "Bronwen", "Ceridwen", "Delyth", "Eirlys", "Ffion", "Gwenllian", "Heledd",
    "Iolanthe", "Jocasta", "Kerensa", "Lowenna", "Morwenna", "Nerys", "Olwen", "Perpetua",
    "Rhiannon", "Seren", "Tamsin", "Wenna",
)  # fmt: skip
FORENAMES_M = (
    "Aneurin", "Bedwyr", "Cadfael", "Dafydd", "Emrys", "Fychan", "Gwilym", "Hywel",
    "Idris", "Jago", "Kenver", "Llewellyn", "Madoc", "Nye", "Owain", "Peredur",
    "Rhodri", "Steffan", "Tudur", "Wyn",
)  # fmt: skip
SURNAMES = (
    "Abernethy", "Blackwood", "Carrow", "Dunstan", "Elphick", "Fairweather", "Gathercole",
    "Hollingworth", "Inchbald", "Jarrold", "Kettleborough", "Lydiard", "Mountjoy",
    "Nettleship", "Ormerod", "Pennefather", "Quarrington", "Rainbird", "Shufflebotham",
    "Threlfall", "Underhill", "Vavasour", "Winterbottom", "Yeoland",
)  # fmt: skip
STREETS = ("Quarry Lane", "Tannery Row", "Wharf Street", "Chapel Walk", "Ropewalk")
REFERENCE_DATE = date(2026, 3, 31)


def nhs_number(rng: random.Random) -> str:
    """A random ten-digit NHS number that passes Modulus 11 (not a dummy pattern)."""
    while True:
        # England's numbers start 400-499 or 600-708 (never 0: a number cell keeps them whole).
        digits = [rng.choice((4, 6)), *(rng.randint(0, 9) for _ in range(8))]
        if len(set(digits)) < 3:
            continue
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check == 10:
            continue
        return "".join(map(str, digits)) + str(check)


@dataclass
class Person:
    forename: str
    surname: str
    dob: date
    sex: str
    nhs: str


@dataclass
class Household:
    uprn: str
    address: str
    postcode: str
    people: list[Person]
    since: date


@dataclass
class Extracts:
    council_tax: Path
    gp_list: Path
    ons_lookup: Path
    people: int
    accounts: int
    gp_rows: int
    values: list[str] = field(default_factory=list)  # personal data values, for leak checks


def _households(rng: random.Random, n_households: int) -> list[Household]:
    out = []
    for i in range(n_households):
        street = STREETS[i % len(STREETS)]
        surname = rng.choice(SURNAMES)
        people = []
        adults = 1 if rng.random() < 0.3 else 2
        for a in range(adults):
            female = a == 1 or rng.random() < 0.5
            people.append(
                Person(
                    rng.choice(FORENAMES_F if female else FORENAMES_M),
                    surname if a == 0 or rng.random() < 0.7 else rng.choice(SURNAMES),
                    date(1945, 1, 1) + timedelta(days=rng.randint(0, 365 * 55)),
                    "F" if female else "M",
                    nhs_number(rng),
                )
            )
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            female = rng.random() < 0.5
            people.append(
                Person(
                    rng.choice(FORENAMES_F if female else FORENAMES_M),
                    surname,
                    date(2006, 1, 1) + timedelta(days=rng.randint(0, 365 * 19)),
                    "F" if female else "M",
                    nhs_number(rng),
                )
            )
        out.append(
            Household(
                uprn=str(10_070_000_000 + 37 * i + rng.randint(0, 30)),
                address=f"{i // len(STREETS) + 1} {street}",
                postcode=f"NP{20 + i % 3} {1 + i % 9}{'ABDEFGHJ'[i % 8]}{'LNPQRSTU'[i % 7]}",
                people=people,
                since=date(2008, 1, 1) + timedelta(days=rng.randint(0, 365 * 17)),
            )
        )
    return out


def write_extracts(folder: Path, *, households: int = 120, seed: int = 2026) -> Extracts:
    """Write the three extracts under `folder` (landing/ and landing/reference/)."""
    import openpyxl

    rng = random.Random(seed)
    homes = _households(rng, households)
    landing = folder / "landing"
    (landing / "reference").mkdir(parents=True, exist_ok=True)
    values: list[str] = []

    council_tax = landing / "ctax_accounts_march.csv"
    with council_tax.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(
            ["Account Ref", "Lead Name", "Joint Name", "DOB", "Property Address", "Postcode",
             "UPRN", "Band", "Liable From", "Liable To"]
        )  # fmt: skip
        for i, h in enumerate(homes):
            lead = h.people[0]
            joint = h.people[1] if len(h.people) > 1 and h.people[1].dob.year < 2000 else None
            w.writerow(
                [
                    f"CT{700000 + i * 13}",
                    f"{lead.forename} {lead.surname}",
                    f"{joint.forename} {joint.surname}" if joint else "",
                    lead.dob.strftime("%d/%m/%Y"),
                    h.address,
                    h.postcode,
                    h.uprn,
                    "ABCDEFGH"[i % 8],
                    h.since.strftime("%d/%m/%Y"),
                    "",
                ]
            )
            values += [f"{lead.forename} {lead.surname}", lead.dob.strftime("%d/%m/%Y"), h.uprn]

    gp_list = landing / "gp_list_march.xlsx"
    wb = openpyxl.Workbook()
    sheet = wb.active
    sheet.title = "Registrations"
    sheet.append(
        ["Patient ID", "NHS Number", "Forename", "Surname", "Date of Birth", "Gender",
         "Address", "Postcode", "UPRN", "Registered", "Deregistered"]
    )  # fmt: skip
    gp_rows = 0
    for h in homes:
        for p in h.people:
            if rng.random() < 0.05:
                continue  # not registered with this practice
            gp_rows += 1
            registered = max(h.since, p.dob) + timedelta(days=rng.randint(0, 400))
            sheet.append(
                [
                    f"G{500000 + gp_rows * 7}",
                    int(p.nhs),
                    p.forename.upper() if rng.random() < 0.2 else p.forename,
                    p.surname,
                    datetime(p.dob.year, p.dob.month, p.dob.day),
                    "Female" if p.sex == "F" else "Male",
                    h.address,
                    h.postcode,
                    int(h.uprn),
                    datetime.combine(min(registered, REFERENCE_DATE), datetime.min.time()),
                    None,
                ]
            )
            values += [p.nhs, p.surname]
    notes = wb.create_sheet("Notes")
    notes.append(["GP list extract, one row per registered patient"])
    wb.save(gp_list)

    ons_lookup = landing / "reference" / "ons_uprn_lookup.csv"
    with ons_lookup.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["UPRN", "PCDS", "OA21CD", "LSOA21CD", "MSOA21CD", "WD24CD", "LAD24CD", "CLASS"])
        for i, h in enumerate(homes):
            w.writerow(
                [
                    h.uprn,
                    h.postcode,
                    f"W00{10000 + i // 4:06d}",
                    f"W01{1000 + i // 12:06d}",
                    f"W02{100 + i // 40:06d}",
                    f"W05{200 + i // 60:06d}",
                    "W06000022",
                    "RI01" if i % 37 == 5 else ("RD06" if i % 3 == 0 else "RD04"),
                ]
            )
    return Extracts(
        council_tax=council_tax,
        gp_list=gp_list,
        ons_lookup=ons_lookup,
        people=sum(len(h.people) for h in homes),
        accounts=len(homes),
        gp_rows=gp_rows,
        values=values,
    )
