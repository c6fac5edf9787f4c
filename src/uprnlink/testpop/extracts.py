"""The six Westmere extracts, each in its own system's layout, codes and habits of error.

Each source is drawn from the World's spells and damaged by its own `Habits`: how often its
clerks write a short or other spelling of a name (Kath for Catherine, Mohd for Mohammed), slip a
letter, keep only an initial, swap the name fields, file a married woman under her birth name,
record a date of birth as 1 January of the year (year known, day not), transpose the year's
digits or write the month first, key the mother's NHS number on a baby's record, open a second
registration under a temporary NHS number, use the block's UPRN for a flat, or drop the UPRN.
Each extract row also yields a truth row (source, record id, true person).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from uprnlink.testpop.names import SURNAME_VARIANTS, VARIANTS
from uprnlink.testpop.world import FLAT, Person, World, nhs_number


@dataclass(frozen=True)
class Habits:
    """How one system records people: per-record chances of each kind of damage."""

    forename_variant: float = 0.02
    forename_slip: float = 0.01
    initial_only: float = 0.0
    surname_variant: float = 0.02
    surname_slip: float = 0.01
    fields_swapped: float = 0.0
    birth_surname: float = 0.05  # a married woman filed under her birth surname
    dob_missing: float = 0.0
    dob_first_of_january: float = 0.0
    dob_year_transposed: float = 0.004
    dob_month_first: float = 0.003
    dob_day_off: float = 0.003
    nhs_missing: float = 1.0
    nhs_mothers: float = 0.0  # a baby's record carries the mother's NHS number
    uprn_missing: float = 0.02
    uprn_building: float = 0.0  # the block's UPRN for a flat
    postcode_missing: float = 0.01
    postcode_slip: float = 0.005
    address_stale: float = 0.0  # the address before the last move


HABITS = {
    "council_tax": Habits(
        forename_variant=0.04,
        initial_only=0.08,
        dob_missing=0.6,
        dob_first_of_january=0.03,
        uprn_missing=0.01,
    ),
    "housing_tenancies": Habits(dob_missing=0.08, uprn_missing=0.005),
    "benefits_claims": Habits(
        forename_variant=0.03,
        dob_missing=0.02,
        uprn_missing=0.06,
        address_stale=0.02,
    ),
    "adult_social_care": Habits(
        forename_variant=0.05,
        fields_swapped=0.005,
        birth_surname=0.1,
        dob_first_of_january=0.02,
        nhs_missing=0.2,
        uprn_missing=0.15,
        address_stale=0.04,
    ),
    "gp_registrations": Habits(
        forename_variant=0.01,
        birth_surname=0.15,
        nhs_missing=0.005,
        uprn_missing=0.1,
        uprn_building=0.3,
        address_stale=0.06,
    ),
    "hospital_activity": Habits(
        forename_variant=0.02,
        forename_slip=0.02,
        surname_slip=0.02,
        fields_swapped=0.005,
        birth_surname=0.15,
        dob_month_first=0.008,
        nhs_missing=0.03,
        nhs_mothers=0.05,
        uprn_missing=0.6,
        uprn_building=0.3,
        address_stale=0.03,
    ),
}
GP_SECOND_REGISTRATION = 0.002  # a temporary-resident registration under another NHS number
GP_DEREGISTERED_ON_LEAVING = 0.65
HOSPITAL_YEARS = 4


def _slip(name: str, rng: random.Random) -> str:
    """One keying or reading slip: a doubled or dropped letter, two letters swapped, rn/m."""
    if len(name) < 3:
        return name
    i = rng.randrange(1, len(name) - 1)
    r = rng.random()
    if "RN" in name and r < 0.15:
        return name.replace("RN", "M", 1)
    if "M" in name[1:] and r < 0.25:
        return name[0] + name[1:].replace("M", "RN", 1)
    if r < 0.5:
        return name[:i] + name[i] + name[i:]
    if r < 0.75:
        return name[:i] + name[i + 1 :]
    return name[: i - 1] + name[i] + name[i - 1] + name[i + 1 :]


class Recorder:
    """Writes a person's identifiers as one system would, with that system's damage."""

    def __init__(self, world: World, rng: random.Random, source: str) -> None:
        self.w, self.rng, self.source = world, rng, source
        self.h = HABITS[source]
        self.errors: list[str] = []

    def hit(self, rate: float, label: str) -> bool:
        if rate > 0 and self.rng.random() < rate:
            self.errors.append(label)
            return True
        return False

    def names(self, p: Person, on: date) -> tuple[str, str | None, str]:
        """Forename, middle name and surname as written."""
        h, rng = self.h, self.rng
        fore = p.forename.upper()
        sur = p.surname.upper()
        if p.birth_surname and self.hit(h.birth_surname, "birth_surname"):
            sur = p.birth_surname.upper()
        if fore in VARIANTS and self.hit(h.forename_variant, "forename_variant"):
            fore = rng.choice(VARIANTS[fore])
        if self.hit(h.forename_slip, "forename_slip"):
            fore = _slip(fore, rng)
        if sur in SURNAME_VARIANTS and self.hit(h.surname_variant, "surname_variant"):
            sur = rng.choice(SURNAME_VARIANTS[sur])
        if self.hit(h.surname_slip, "surname_slip"):
            sur = _slip(sur, rng)
        if self.hit(h.initial_only, "initial_only"):
            fore = fore[0]
        if self.hit(h.fields_swapped, "fields_swapped"):
            fore, sur = sur, fore
        return fore, (p.middle.upper() if p.middle else None), sur

    def dob(self, p: Person) -> date | None:
        h, d = self.h, p.dob
        if self.hit(h.dob_missing, "dob_missing"):
            return None
        if self.hit(h.dob_first_of_january, "dob_first_of_january"):
            return date(d.year, 1, 1)
        if self.hit(h.dob_year_transposed, "dob_year_transposed"):
            y = str(d.year)
            year = int(y[:2] + y[3] + y[2])
            if year <= self.w.end.year and year != d.year:
                return _safe(year, d.month, d.day)
            self.errors.pop()
        if d.day <= 12 and d.day != d.month and self.hit(h.dob_month_first, "dob_month_first"):
            return date(d.year, d.day, d.month)
        if self.hit(h.dob_day_off, "dob_day_off"):
            return d + timedelta(days=self.rng.choice((-1, 1)))
        return d

    def nhs(self, p: Person, on: date) -> str | None:
        h = self.h
        if self.hit(h.nhs_missing, "nhs_missing"):
            return None
        if (
            p.mother >= 0
            and (on - p.dob).days < 365
            and self.hit(h.nhs_mothers, "nhs_mothers_number")
        ):
            return self.w.people[p.mother].nhs
        return p.nhs

    def address(self, a: int, previous: int | None) -> tuple[str | None, int | None, str]:
        """Postcode, UPRN and first line as written, for the person's address `a`."""
        h, rng = self.h, self.rng
        if previous is not None and self.hit(h.address_stale, "address_stale"):
            a = previous
        addr = self.w.addresses[a]
        uprn: int | None = addr.uprn
        if addr.kind == FLAT and addr.parent_uprn and self.hit(h.uprn_building, "uprn_building"):
            uprn = addr.parent_uprn
        if self.hit(h.uprn_missing, "uprn_missing"):
            uprn = None
        postcode: str | None = addr.postcode
        if self.hit(h.postcode_missing, "postcode_missing"):
            postcode = None
        elif self.hit(h.postcode_slip, "postcode_slip"):
            letters = "ABDEFGHJLNPQRSTUWXYZ"
            postcode = addr.postcode[:-1] + rng.choice(letters)
        return postcode, uprn, addr.line


def _safe(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        return date(year, month, 28)


def _address_on(world: World, spells: dict[int, list[list[Any]]], p: int, on: date) -> int | None:
    """The address a person lived at on a date (the last spell begun by then)."""
    best = None
    for spell in spells.get(p, []):
        if spell[2] <= on:
            best = spell[1]
    return best


def _previous(spells: dict[int, list[list[Any]]], p: int, a: int) -> int | None:
    rows = spells.get(p, [])
    for i, spell in enumerate(rows):
        if spell[1] == a and i > 0:
            prev = rows[i - 1][1]
            assert isinstance(prev, int)
            return prev
    return None


@dataclass
class Extract:
    """One source's rows as the system writes them and the truth of each row."""

    rows: list[dict[str, Any]]
    truth: list[tuple[str, int, str]]  # record id, true person, errors


def _fmt(d: date | None, pattern: str) -> str:
    return d.strftime(pattern) if d is not None else ""


def council_tax(world: World, rng: random.Random) -> Extract:
    """Liable parties: `ctax_liable_parties.csv`, full name in one column (SURNAME, Forename),
    dates as 03.05.1980, a party number per person and account."""
    rec = Recorder(world, rng, "council_tax")
    spells = _spells(world)
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    for i, (account, p, a, start, end) in enumerate(world.liabilities):
        rec.errors = []
        person = world.people[p]
        fore, middle, sur = rec.names(person, start)
        postcode, uprn, line = rec.address(a, _previous(spells, p, a))
        given = fore if middle is None or rng.random() < 0.6 else f"{fore} {middle}"
        rid = f"LP{700000 + i:07d}"
        rows.append(
            {
                "Party No": rid,
                "Acct Ref": f"{account + 1:08d}/{(account * 7) % 10}",
                "Liable Name": f"{sur.title()}, {given.title()}",
                "Birth Date": _fmt(rec.dob(person), "%d.%m.%Y"),
                "Address": line,
                "Post Code": postcode or "",
                "UPRN": str(uprn) if uprn else "",
                "Liab From": _fmt(start, "%Y-%m-%d"),
                "Liab To": _fmt(end, "%Y-%m-%d"),
                "Discount": "SPD" if rng.random() < 0.2 else "",
            }
        )
        truth.append((rid, p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def housing(world: World, rng: random.Random) -> Extract:
    """Tenants: `hsg_tenants.tsv`, tab-separated, dates as 03-05-1980, names in capitals."""
    rec = Recorder(world, rng, "housing_tenancies")
    spells = _spells(world)
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    for i, (tenancy, p, a, start, end) in enumerate(world.tenancies):
        rec.errors = []
        person = world.people[p]
        fore, _, sur = rec.names(person, start)
        postcode, uprn, line = rec.address(a, _previous(spells, p, a))
        rid = f"T{tenancy + 1:06d}-{i % 97:02d}"
        rows.append(
            {
                "TENANCY_NO": f"WH/{tenancy + 1:06d}",
                "MEMBER_ID": rid,
                "GIVEN_NAME": fore,
                "FAMILY_NAME": sur,
                "BIRTH_DT": _fmt(rec.dob(person), "%d-%m-%Y"),
                "PROPERTY": line,
                "PCODE": postcode or "",
                "UPRN_NO": str(uprn) if uprn else "",
                "TENURE": rng.choice(("SECURE", "SECURE", "SECURE", "INTRODUCTORY", "ASSURED")),
                "BEDS": str(1 + rng.randrange(4)),
                "TENANCY_START": _fmt(start, "%d-%m-%Y"),
                "TENANCY_END": _fmt(end, "%d-%m-%Y"),
            }
        )
        truth.append((rid, p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def benefits(world: World, rng: random.Random) -> Extract:
    """Claim members: `hb_claim_members.csv`, semicolon-separated, dates as 19800503, roles as
    the system's own words (Claimant, Partner, Non-dependant)."""
    rec = Recorder(world, rng, "benefits_claims")
    spells = _spells(world)
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    for i, (claim, p, role, a, start, end) in enumerate(world.claims):
        rec.errors = []
        person = world.people[p]
        fore, _, sur = rec.names(person, start)
        postcode, uprn, _ = rec.address(a, _previous(spells, p, a))
        rid = f"{9_000_000 + i}"
        rows.append(
            {
                "ClaimNumber": f"C{claim + 1:07d}",
                "MemberNo": rid,
                "MemberRole": role,
                "Forename": fore.title(),
                "Surname": sur.title(),
                "BirthDate": _fmt(rec.dob(person), "%Y%m%d"),
                "PostCode": postcode or "",
                "PropertyUPRN": str(uprn) if uprn else "",
                "Scheme": rng.choice(("HB", "CTR", "HB+CTR")),
                "FromDate": _fmt(start, "%Y%m%d"),
                "ToDate": _fmt(end, "%Y%m%d"),
                "WeeklyAward": f"{20 + rng.random() * 180:.2f}",
            }
        )
        truth.append((rid, p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def social_care(world: World, rng: random.Random) -> Extract:
    """Care services: `asc_services.csv`, dates as 03 May 1980, gender as NHS codes (1, 2, 9),
    NHS numbers with dashes, a new client number for each service."""
    rec = Recorder(world, rng, "adult_social_care")
    spells = _spells(world)
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    for i, (p, setting, start, end) in enumerate(world.care):
        rec.errors = []
        person = world.people[p]
        fore, _, sur = rec.names(person, start)
        a = _address_on(world, spells, p, start)
        if a is None:
            continue
        postcode, uprn, line = rec.address(a, _previous(spells, p, a))
        dob = rec.dob(person)
        nhs = rec.nhs(person, start)
        rid = f"ASC{50000 + i}"
        rows.append(
            {
                "Client Number": rid,
                "First Name": fore.title(),
                "Last Name": sur.title(),
                "D.O.B.": _fmt(dob, "%d %b %Y"),
                "Gender Code": ("1" if person.sex == "M" else "2") if rng.random() > 0.005 else "9",
                "NHS Number": f"{nhs[:3]}-{nhs[3:6]}-{nhs[6:]}" if nhs else "",
                "Address 1": line,
                "Postcode": postcode or "",
                "UPRN": str(uprn) if uprn else "",
                "Service Setting": setting,
                "Reason": rng.choice(("Physical Support", "Memory and Cognition", "Mental Health")),
                "Service Start": _fmt(start, "%d %b %Y"),
                "Service End": _fmt(end, "%d %b %Y"),
            }
        )
        truth.append((rid, p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def gp(world: World, rng: random.Random) -> Extract:
    """Registrations: `gp_patients.csv`, ISO timestamps, sex as M/F/I/U, one row per patient
    (the address the practice holds, which may be the one before the last move); a few second
    registrations under a temporary NHS number."""
    rec = Recorder(world, rng, "gp_registrations")
    spells = _spells(world)
    used = {p.nhs for p in world.people}
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    n = 0
    for p, person in enumerate(world.people):
        if p not in spells or rng.random() < 0.02:  # never registered here
            continue
        start = max(person.entry, spells[p][0][2])
        if person.exit_kind == "died":
            end: date | None = person.exit
        elif person.exit_kind == "left" and rng.random() < GP_DEREGISTERED_ON_LEAVING:
            end = person.exit
        else:
            end = None
        for second in (False, True):
            if second and rng.random() >= GP_SECOND_REGISTRATION:
                break
            rec.errors = ["second_registration"] if second else []
            on = min(world.end, end or world.end)
            a = spells[p][-1][1]
            fore, _, sur = rec.names(person, on)
            postcode, uprn, line = rec.address(a, _previous(spells, p, a))
            nhs = nhs_number(rng, used) if second else rec.nhs(person, start)
            reg = start if not second else min(world.end, start + timedelta(days=400))
            rid = f"{n + 1}"
            n += 1
            rows.append(
                {
                    "patient_guid": f"G{int(rid):08d}",
                    "nhs_no": nhs or "",
                    "given_name": fore,
                    "family_name": sur,
                    "birth_dt": _fmt(rec.dob(person), "%Y-%m-%dT00:00:00"),
                    "sex": person.sex if rng.random() > 0.003 else "U",
                    "addr_line": line,
                    "post_code": postcode or "",
                    "uprn": str(uprn) if uprn else "",
                    "registered": _fmt(reg, "%Y-%m-%dT00:00:00"),
                    "deregistered": _fmt(end, "%Y-%m-%dT00:00:00"),
                    "died": _fmt(person.exit if person.exit_kind == "died" else None, "%Y-%m-%d"),
                }
            )
            truth.append((f"G{int(rid):08d}", p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def hospital(world: World, rng: random.Random) -> Extract:
    """Attendances in the last four years: `sus_attendances.parquet` with typed dates, sex
    as ISO 5218 codes (0, 1, 2, 9) and the NHS number as an integer."""
    rec = Recorder(world, rng, "hospital_activity")
    spells = _spells(world)
    window = world.end - timedelta(days=int(365.25 * HOSPITAL_YEARS))
    rows: list[dict[str, Any]] = []
    truth: list[tuple[str, int, str]] = []
    for p, person in enumerate(world.people):
        if p not in spells:
            continue
        first = max(window, spells[p][0][2])
        last = min(world.end, person.exit or world.end)
        if last <= first:
            continue
        age = (first - person.dob).days / 365.25
        rate = (
            2.0 if age < 1 else 0.6 if age < 16 else 0.5 if age < 60 else 1.0 if age < 80 else 2.0
        )
        years = (last - first).days / 365.25
        k = _poisson(rng, rate * years)
        for _ in range(k):
            on = first + timedelta(days=rng.randrange(max(1, (last - first).days)))
            rec.errors = []
            a = _address_on(world, spells, p, on)
            if a is None:
                continue
            fore, _, sur = rec.names(person, on)
            postcode, uprn, _ = rec.address(a, _previous(spells, p, a))
            nhs = rec.nhs(person, on)
            admitted = rng.random() < 0.3
            rid = f"SUS{len(rows) + 1:09d}"
            rows.append(
                {
                    "episode_id": rid,
                    "nhs_number": int(nhs) if nhs else None,
                    "patient_forename": fore,
                    "patient_surname": sur,
                    "date_of_birth": rec.dob(person),
                    "sex_code": {"M": "1", "F": "2"}[person.sex] if rng.random() > 0.004 else "9",
                    "postcode": postcode,
                    "uprn": uprn,
                    "attendance_type": "EMERGENCY_ADMISSION" if admitted else "AE",
                    "arrival_date": on,
                    "discharge_date": on + timedelta(days=rng.randrange(1, 9)) if admitted else on,
                }
            )
            truth.append((rid, p + 1, ";".join(rec.errors)))
    return Extract(rows, truth)


def _poisson(rng: random.Random, lam: float) -> int:
    k, t = 0, rng.expovariate(1.0)
    while t < lam:
        k += 1
        t += rng.expovariate(1.0)
    return k


def _spells(world: World) -> dict[int, list[list[Any]]]:
    """Each person's residence spells (person, address, from, to) in date order."""
    out: dict[int, list[list[Any]]] = {}
    for spell in world.residence:
        p = spell[0]
        assert isinstance(p, int)
        out.setdefault(p, []).append(spell)
    for rows in out.values():
        rows.sort(key=lambda s: s[2])
    return out


SOURCES = {
    "council_tax": council_tax,
    "housing_tenancies": housing,
    "benefits_claims": benefits,
    "adult_social_care": social_care,
    "gp_registrations": gp,
    "hospital_activity": hospital,
}
