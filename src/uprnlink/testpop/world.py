"""The Westmere borough and ten years of its residents, year by year.

Not an event queue: every household is visited once a year, and what happens to it that year
(deaths, births, a child leaving home, a separation, a move, a move into care) happens on days
drawn inside the year, in date order. Rates are round published figures:

* household types on the start date: Census 2021 (England and Wales, TS003), about 30% one
  person, 33% couples (about half with dependent children), 11% lone parents, 7% other;
* deaths: a Gompertz curve through the ONS national life tables (about 1 in 100 a year at 60,
  1 in 10 at 88, men a third higher);
* births: ONS age-specific fertility (about 0.1 a year for women aged 25-34);
* twins: 15 maternities in 1,000 (ONS birth characteristics, 2010s);
* moves: English Housing Survey, about 4% of owners, 17% of private renters and 7% of social
  renters a year; a fifth of moves leave the borough, and newcomers fill the empty homes;
* a son is given his father's forename (a daughter her mother's) one time in sixteen (one in
  thirty): a stress setting above recent English practice (Bush 2023).

The borough's South Asian and Eastern European communities live mostly in their own postcode
sectors, so common names (Mohammed Khan, Piotr Nowak) recur among neighbours.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from uprnlink.testpop.names import COMMUNITIES, draw_forename, draw_surname

LAD = ("E08000998", "Westmere")
DISTRICTS = ("OL1", "OL2", "OL4", "OL6", "OL8", "OL9", "SK1", "SK2", "SK5", "M40", "M35")
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
OWNER, PRIVATE, SOCIAL = "owner", "private", "social"
HOUSE, FLAT, CARE = "house", "flat", "care_home"
# AddressBase classification codes: houses (detached, semi, terrace), flats, care homes.
CLASSES = {HOUSE: ("RD02", "RD03", "RD04"), FLAT: ("RD06",), CARE: ("RI01",)}
MOVE_RATE = {OWNER: 0.04, PRIVATE: 0.17, SOCIAL: 0.07}
LEAVE_BOROUGH = 0.2
NAMED_AFTER_FATHER = 1 / 16
NAMED_AFTER_MOTHER = 1 / 30
TWIN_MATERNITIES = 0.015
# Household types on the start date (Census 2021 shares, rounded).
HOUSEHOLD_TYPES = (
    ("one_person", 0.30),
    ("couple", 0.17),
    ("couple_children", 0.17),
    ("lone_parent", 0.11),
    ("three_generations", 0.04),
    ("adults_sharing", 0.07),
    ("couple_adult_children", 0.14),
)


@dataclass
class Person:
    """One resident, with everything the records draw on."""

    sex: str
    dob: date
    forename: str
    middle: str | None
    surname: str
    community: str
    birth_surname: str | None = None
    mother: int = -1
    father: int = -1
    nhs: str = ""
    entry: date = date(1900, 1, 1)
    exit: date | None = None
    exit_kind: str | None = None  # "died" or "left"
    household: int = -1


@dataclass
class Household:
    """People sharing a home: heads (the one or two adults the accounts are in), the rest."""

    members: list[int]
    heads: list[int]
    tenure: str
    address: int = -1
    since: date = date(1900, 1, 1)
    low_income: bool = False
    account: int = -1
    tenancy: int = -1
    claim: int = -1


@dataclass
class Address:
    """A dwelling or a care home, with its area codes."""

    uprn: int
    parent_uprn: int | None
    kind: str
    cls: str
    postcode: str
    oa: str
    lsoa: str
    msoa: str
    ward: str
    imd: int
    community: str
    line: str
    household: int = -1
    free_from: date = date(1900, 1, 1)
    residents: list[int] = field(default_factory=list)


@dataclass
class World:
    """The borough's ten years: people, households, addresses and every spell."""

    start: date
    end: date
    people: list[Person] = field(default_factory=list)
    households: list[Household] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    # (person, address, from, to) with to None while still there
    residence: list[list[Any]] = field(default_factory=list)
    # (account, person, address, from, to) council tax liabilities
    liabilities: list[list[Any]] = field(default_factory=list)
    # (tenancy, person, address, from, to)
    tenancies: list[list[Any]] = field(default_factory=list)
    # (claim, person, role, address, from, to)
    claims: list[list[Any]] = field(default_factory=list)
    # (person, setting, from, to)
    care: list[list[Any]] = field(default_factory=list)
    moves: list[tuple[int, date]] = field(default_factory=list)  # (person, date moved)
    next_account: int = 0
    next_tenancy: int = 0
    next_claim: int = 0
    open_spell: dict[int, int] = field(default_factory=dict)
    open_liability: dict[int, int] = field(default_factory=dict)
    open_tenancy: dict[int, int] = field(default_factory=dict)
    open_claim: dict[int, int] = field(default_factory=dict)
    vacant: dict[str, list[int]] = field(default_factory=dict)  # tenure market -> addresses


def _day(rng: random.Random, start: date, end: date) -> date:
    """A day in [start, end): what happens in a year is over before the next begins (and a
    move's new home starts no later than `end`)."""
    span = max(1, (end - start).days)
    return start + timedelta(days=rng.randrange(span))


def _age(p: Person, on: date) -> float:
    return (on - p.dob).days / 365.25


def death_rate(age: float, sex: str) -> float:
    """Yearly chance of death: a Gompertz curve near the ONS national life tables."""
    q = math.exp(-10.2 + 0.095 * age) * (1.35 if sex == "M" else 0.9)
    return min(0.6, q + (0.004 if age < 1 else 0.0))


def fertility(age: float) -> float:
    """Yearly births per woman by age (ONS age-specific fertility, rounded)."""
    if age < 18 or age >= 46:
        return 0.0
    return (
        0.03
        if age < 20
        else 0.06
        if age < 25
        else 0.1
        if age < 30
        else 0.11
        if age < 35
        else 0.06
        if age < 40
        else 0.015
    )


# ---------------------------------------------------------------------------- addresses


def build_addresses(rng: random.Random, homes: int, care_homes: int) -> list[Address]:
    """Dwellings in postcode units of 8-18 addresses; a third of them flats in blocks that have
    a building UPRN of their own; a few care homes."""
    out: list[Address] = []
    uprn = 100_200_000
    unit = 0
    sectors: list[tuple[str, str, int]] = []  # (sector, community, imd)
    for d in DISTRICTS:
        for s in range(1, 10):
            r = rng.random()
            community = "south_asian" if r < 0.12 else "east_european" if r < 0.18 else "british"
            sectors.append((f"{d} {s}", community, 1 + int(rng.random() * 10)))
    rng.shuffle(sectors)
    si = 0
    n = 0
    while n < homes:
        sector, community, imd = sectors[si % len(sectors)]
        si += 1
        for _ in range(1 + int(rng.random() * 4)):  # postcode units in this sector
            if n >= homes:
                break
            letters = INWARD_LETTERS[unit % 20] + INWARD_LETTERS[(unit // 20) % 20]
            postcode = f"{sector}{letters}"
            unit += 1
            lsoa = f"E01{900000 + unit // 6:06d}"
            oa = f"E00{900000 + unit // 2:06d}"
            msoa = f"E02{900000 + unit // 30:06d}"
            ward = f"E05{900000 + unit // 60:06d}"
            street = f"{rng.choice(_STREETS)} {rng.choice(_ROADS)}"
            size = 8 + int(rng.random() * 11)
            flats = rng.random() < 0.3
            building = None
            for k in range(size):
                if n >= homes:
                    break
                uprn += 1 + int(rng.random() * 3)
                if flats and k % 6 == 0:
                    uprn += 1
                    building = uprn
                    uprn += 1
                kind = FLAT if flats else HOUSE
                cls = rng.choice(CLASSES[kind])
                line = f"Flat {k % 6 + 1}, {k // 6 + 1} {street}" if flats else f"{k + 1} {street}"
                out.append(
                    Address(
                        uprn,
                        building if flats else None,
                        kind,
                        cls,
                        postcode,
                        oa,
                        lsoa,
                        msoa,
                        ward,
                        imd,
                        community,
                        line,
                    )
                )
                n += 1
    for c in range(care_homes):
        uprn += 7
        sector, community, imd = sectors[c % len(sectors)]
        out.append(
            Address(
                uprn,
                None,
                CARE,
                "RI01",
                f"{sector}{INWARD_LETTERS[c % 20]}{INWARD_LETTERS[19 - c % 20]}",
                f"E00{990000 + c:06d}",
                f"E01{990000 + c:06d}",
                f"E02{990000 + c:06d}",
                f"E05{990000 + c:06d}",
                imd,
                "british",
                f"{rng.choice(_STREETS)} House Care Home",
            )
        )
    return out


_STREET_NAMES = (
    "Alder Ashton Bardsley Buckley Chadderton Crompton Delph Dobcross Failsworth Glodwick "
    "Greenacres Hathershaw Hollinwood Lees Limehurst Moorside Royton Saddleworth Shaw "
    "Springhead Uppermill Werneth Westwood Bredbury Brinnington Cheadle Edgeley Heaton "
    "Marple Offerton Reddish Romiley Woodley Moston Clayton Droylsden Audenshaw Denton "
    "Hyde Mossley Stalybridge Dukinfield Ashworth Bamford Castleton Healey Norden Whitworth"
)
_STREETS = tuple(_STREET_NAMES.split())
_ROADS = ("Road", "Street", "Lane", "Avenue", "Close", "Way", "Drive", "Grove", "Court", "Brow")


# ---------------------------------------------------------------------------- people


def nhs_number(rng: random.Random, used: set[str]) -> str:
    """A valid, unused NHS number (Modulus 11) in the 4xx range the borough's GPs issue."""
    while True:
        digits = [4, *(rng.randrange(10) for _ in range(8))]
        total = sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True))
        check = 11 - total % 11
        if check == 11:
            check = 0
        if check == 10:
            continue
        value = "".join(map(str, digits)) + str(check)
        if value not in used:
            used.add(value)
            return value


class Simulation:
    """Builds the World: compose households, place them, then step through the years."""

    def __init__(self, rng: random.Random, people: int, start: date, end: date) -> None:
        self.rng = rng
        self.target = people
        self.w = World(start, end)
        self.nhs_used: set[str] = set()

    # ---------------------------------------------------------------- people and households
    def person(
        self,
        sex: str,
        dob: date,
        surname: str,
        community: str,
        entry: date,
        mother: int = -1,
        father: int = -1,
    ) -> int:
        rng = self.rng
        forename = draw_forename(rng, sex, dob.year, community)
        parent = father if sex == "M" else mother
        share = NAMED_AFTER_FATHER if sex == "M" else NAMED_AFTER_MOTHER
        if parent >= 0 and rng.random() < share:
            forename = self.w.people[parent].forename
        middle = draw_forename(rng, sex, dob.year, community) if rng.random() < 0.6 else None
        if middle == forename:
            middle = None
        p = Person(sex, dob, forename, middle, surname, community, None, mother, father)
        p.nhs = nhs_number(rng, self.nhs_used)
        p.entry = max(entry, dob)
        self.w.people.append(p)
        return len(self.w.people) - 1

    def children(
        self, mother: int, father: int, surname: str, community: str, on: date, n: int
    ) -> list[int]:
        rng = self.rng
        mother_age = _age(self.w.people[mother], on) if mother >= 0 else 35.0
        out: list[int] = []
        while len(out) < n:
            age = rng.random() * max(0.5, min(17.9, mother_age - 18.0))
            dob = on - timedelta(days=int(age * 365.25) + 1)
            births = 2 if rng.random() < TWIN_MATERNITIES else 1
            sex = "M" if rng.random() < 0.51 else "F"
            for b in range(births):
                twin_sex = sex if b == 0 or rng.random() < 0.66 else ("F" if sex == "M" else "M")
                kid = self.person(twin_sex, dob, surname, community, on, mother, father)
                self._distinct_twin(kid, out)
                out.append(kid)
        return out

    def _distinct_twin(self, kid: int, siblings: list[int]) -> None:
        people = self.w.people
        for s in siblings:
            if people[s].dob == people[kid].dob and people[s].forename == people[kid].forename:
                k = people[kid]
                while k.forename == people[s].forename:
                    k.forename = draw_forename(self.rng, k.sex, k.dob.year, k.community)

    def couple(self, age: float, community: str, on: date) -> tuple[int, int, str]:
        rng = self.rng
        surname = draw_surname(rng, community)
        man = self.person("M", on - timedelta(days=int(age * 365.25)), surname, community, on)
        woman_age = max(18.0, age - rng.gauss(2.0, 3.0))
        dob = on - timedelta(days=int(woman_age * 365.25))
        if rng.random() < 0.75:
            woman = self.person("F", dob, surname, community, on)
            self.w.people[woman].birth_surname = draw_surname(rng, community)
        else:
            woman = self.person("F", dob, draw_surname(rng, community), community, on)
        return man, woman, surname

    def compose(self, kind: str, on: date, community: str) -> Household:
        """A new household of this kind (people aged on date `on`)."""
        rng = self.rng
        u = rng.random
        members: list[int]
        heads: list[int]
        if kind == "one_person":
            age = 18 + 70 * u() ** 1.2
            sex = "F" if u() < (0.6 if age > 65 else 0.45) else "M"
            dob = on - timedelta(days=int(age * 365.25))
            p = self.person(sex, dob, draw_surname(rng, community), community, on)
            members, heads = [p], [p]
        elif kind in ("couple", "couple_children", "couple_adult_children", "three_generations"):
            if kind == "couple":
                age = 22 + 60 * u()
            elif kind == "couple_adult_children":
                age = 44 + 24 * u()
            else:
                age = 24 + 24 * u()
            man, woman, surname = self.couple(age, community, on)
            members, heads = [man, woman], [man, woman]
            if kind == "couple_adult_children":
                n = 1 if u() < 0.7 else 2
                kids = []
                for _ in range(n):
                    kage = 18 + min(age - 38.0, 14.0) * u()
                    dob = on - timedelta(days=int(kage * 365.25))
                    sex = "M" if u() < 0.55 else "F"
                    kids.append(self.person(sex, dob, surname, community, on, woman, man))
                members += kids
            elif kind != "couple":
                n = 1 if (r := u()) < 0.4 else 2 if r < 0.82 else 3
                members += self.children(woman, man, surname, community, on, n)
            if kind == "three_generations":
                gage = age + 25 + 6 * u()
                dob = on - timedelta(days=int(gage * 365.25))
                gp = self.person("F" if u() < 0.6 else "M", dob, surname, community, on)
                self.w.people[man].mother = gp if self.w.people[gp].sex == "F" else -1
                self.w.people[man].father = gp if self.w.people[gp].sex == "M" else -1
                members.append(gp)
        elif kind == "lone_parent":
            age = 20 + 30 * u()
            sex = "F" if u() < 0.86 else "M"
            surname = draw_surname(rng, community)
            p = self.person(sex, on - timedelta(days=int(age * 365.25)), surname, community, on)
            n = 1 if (r := u()) < 0.55 else 2 if r < 0.88 else 3
            kids = (
                self.children(p, -1, surname, community, on, n)
                if sex == "F"
                else self.children(-1, p, surname, community, on, n)
            )
            members, heads = [p, *kids], [p]
        else:  # adults_sharing
            members = []
            for _ in range(2 + int(u() * 2.5)):
                dob = on - timedelta(days=int((19 + 18 * u()) * 365.25))
                sex = "M" if u() < 0.5 else "F"
                members.append(self.person(sex, dob, draw_surname(rng, community), community, on))
            heads = members[:2]
        tenure = self._tenure(kind)
        low = u() < {OWNER: 0.04, PRIVATE: 0.3, SOCIAL: 0.6}[tenure]
        hh = Household(members, heads, tenure, low_income=low)
        self.w.households.append(hh)
        for p in members:
            self.w.people[p].household = len(self.w.households) - 1
        return hh

    def _tenure(self, kind: str) -> str:
        r = self.rng.random()
        if kind == "adults_sharing":
            return PRIVATE if r < 0.85 else SOCIAL
        if kind == "lone_parent":
            return OWNER if r < 0.3 else PRIVATE if r < 0.6 else SOCIAL
        return OWNER if r < 0.62 else PRIVATE if r < 0.82 else SOCIAL

    # ---------------------------------------------------------------- places and spells
    def place(self, h: int, on: date) -> bool:
        """Put household h in a free home of a sector of its community, if there is one."""
        rng = self.rng
        hh = self.w.households[h]
        community = self.w.people[hh.members[0]].community
        pool = self.w.vacant.get(community) or []
        if not pool or rng.random() < 0.15:
            pool = self.w.vacant.get("british") or pool
        for _ in range(12):
            if not pool:
                break
            i = rng.randrange(len(pool))
            a = pool[i]
            addr = self.w.addresses[a]
            if addr.household < 0 and addr.free_from <= on:
                pool[i] = pool[-1]
                pool.pop()
                self.occupy(h, a, on)
                return True
        return False

    def occupy(self, h: int, a: int, on: date) -> None:
        w = self.w
        hh = w.households[h]
        addr = w.addresses[a]
        addr.household = h
        hh.address, hh.since = a, on
        for p in hh.members:
            self.start_spell(p, a, on)
        hh.account = w.next_account
        w.next_account += 1
        for p in hh.heads:
            self.liable(p, on)
        for p in hh.members:
            if p not in hh.heads and _age(w.people[p], on) >= 18 and self.rng.random() < 0.12:
                self.liable(p, on)
        if hh.tenure == SOCIAL:
            hh.tenancy = w.next_tenancy
            w.next_tenancy += 1
            for p in hh.heads:
                self.tenant(p, on)
        if hh.low_income:
            claim_start = min(on + timedelta(days=self.rng.randrange(200)), w.end)
            self.open_claim(h, claim_start)

    def start_spell(self, p: int, a: int, on: date) -> None:
        w = self.w
        on = max(on, w.people[p].dob)
        w.open_spell[p] = len(w.residence)
        w.residence.append([p, a, on, None])
        w.addresses[a].residents.append(p)

    def end_spell(self, p: int, on: date) -> None:
        w = self.w
        i = w.open_spell.pop(p, None)
        if i is not None:
            w.residence[i][3] = on
            a = w.residence[i][1]
            assert isinstance(a, int)
            if p in w.addresses[a].residents:
                w.addresses[a].residents.remove(p)
        for table, index in (
            (w.liabilities, w.open_liability),
            (w.tenancies, w.open_tenancy),
            (w.claims, w.open_claim),
        ):
            j = index.pop(p, None)
            if j is not None:
                table[j][-1] = on

    def liable(self, p: int, on: date) -> None:
        w = self.w
        hh = w.households[w.people[p].household]
        start = max(on, w.people[p].dob + timedelta(days=int(18 * 365.25)))
        if p in w.open_liability or start > w.end:
            return
        w.open_liability[p] = len(w.liabilities)
        w.liabilities.append([hh.account, p, hh.address, start, None])

    def tenant(self, p: int, on: date) -> None:
        w = self.w
        hh = w.households[w.people[p].household]
        if p in w.open_tenancy:
            return
        w.open_tenancy[p] = len(w.tenancies)
        w.tenancies.append([hh.tenancy, p, hh.address, on, None])

    def open_claim(self, h: int, on: date) -> None:
        w = self.w
        hh = w.households[h]
        hh.claim = w.next_claim
        w.next_claim += 1
        for i, p in enumerate(hh.heads[:2]):
            self._claim_row(p, "Claimant" if i == 0 else "Partner", on)
        for p in hh.members:
            if p not in hh.heads and _age(w.people[p], on) >= 18:
                self._claim_row(p, "Non-dependant", on)

    def _claim_row(self, p: int, role: str, on: date) -> None:
        w = self.w
        if p in w.open_claim:
            return
        hh = w.households[w.people[p].household]
        w.open_claim[p] = len(w.claims)
        w.claims.append([hh.claim, p, role, hh.address, on, None])

    def leave_household(self, p: int, on: date) -> None:
        """p leaves their household on date `on` (the day before they are elsewhere)."""
        w = self.w
        h = w.people[p].household
        self.end_spell(p, on)
        if h < 0:
            return
        hh = w.households[h]
        if p in hh.members:
            hh.members.remove(p)
        if p in hh.heads:
            hh.heads.remove(p)
            adults = [m for m in hh.members if _age(w.people[m], on) >= 18]
            if not hh.heads and adults:
                heir = adults[0]
                hh.heads.append(heir)
                self.liable(heir, on + timedelta(days=1))
                if hh.tenure == SOCIAL:
                    self.tenant(heir, on + timedelta(days=1))
        w.people[p].household = -1
        if not hh.members:
            self.vacate(h, on)

    def vacate(self, h: int, on: date) -> None:
        w = self.w
        hh = w.households[h]
        if hh.address < 0:
            return
        addr = w.addresses[hh.address]
        addr.household = -1
        addr.free_from = on + timedelta(days=14 + self.rng.randrange(60))
        w.vacant.setdefault(addr.community, []).append(hh.address)
        hh.address = -1

    def leave_borough(self, p: int, on: date) -> None:
        self.leave_household(p, on)
        person = self.w.people[p]
        person.exit, person.exit_kind = on, "left"

    def die(self, p: int, on: date) -> None:
        self.leave_household(p, on)
        person = self.w.people[p]
        person.exit, person.exit_kind = on, "died"
        care = self._open_care.pop(p, None)
        if care is not None:
            self.w.care[care][3] = on

    # ---------------------------------------------------------------- the years
    def populate(self) -> None:
        """Households on the start date, placed in the stock."""
        rng, w = self.rng, self.w
        start = w.start
        households: list[int] = []
        count = 0
        kinds = [k for k, _ in HOUSEHOLD_TYPES]
        weights = [x for _, x in HOUSEHOLD_TYPES]
        while count < self.target * 0.93:
            kind = rng.choices(kinds, weights)[0]
            community = self._community()
            self.compose(kind, start, community)
            households.append(len(w.households) - 1)
            count += len(w.households[-1].members)
        care_homes = max(2, self.target // 2500)
        w.addresses = build_addresses(rng, int(len(households) / 0.95), care_homes)
        for a, addr in enumerate(w.addresses):
            if addr.kind != CARE:
                w.vacant.setdefault(addr.community, []).append(a)
        for h in households:
            since = start - timedelta(days=int(rng.expovariate(1 / 2500)))
            adult = max(w.people[p].dob for p in w.households[h].heads) + timedelta(days=6575)
            since = min(start, max(since, adult))
            if not self.place(h, since):
                for p in list(w.households[h].members):
                    w.people[p].exit, w.people[p].exit_kind = start, "left"
                    w.people[p].household = -1
                w.households[h].members = []
        for a, addr in enumerate(w.addresses):
            if addr.kind == CARE:
                for _ in range(20 + rng.randrange(20)):
                    age = 80 + 15 * rng.random()
                    dob = start - timedelta(days=int(age * 365.25))
                    sex = "F" if rng.random() < 0.7 else "M"
                    p = self.person(sex, dob, draw_surname(rng, "british"), "british", start)
                    self.start_spell(p, a, start - timedelta(days=rng.randrange(1500)))
                    w.care.append([p, "Residential", w.residence[-1][2], None])
                    self._open_care[p] = len(w.care) - 1

    def _community(self) -> str:
        r = self.rng.random()
        return COMMUNITIES[1] if r < 0.1 else COMMUNITIES[2] if r < 0.15 else COMMUNITIES[0]

    _open_care: dict[int, int]

    def run(self) -> World:
        w = self.w
        self._open_care = {}
        self.populate()
        year = w.start
        while year < w.end:
            upto = min(w.end, year + timedelta(days=365))
            for h in range(len(w.households)):
                if w.households[h].members:
                    self.year_of(h, year, upto)
            self.care_year(year, upto)
            self.arrivals(year, upto)
            year = upto
        return w

    def year_of(self, h: int, frm: date, to: date) -> None:
        rng, w = self.rng, self.w
        hh = w.households[h]
        events: list[tuple[date, str, int]] = []
        for p in list(hh.members):
            person = w.people[p]
            age = _age(person, frm)
            if rng.random() < death_rate(age, person.sex):
                events.append((_day(rng, frm, to), "die", p))
            elif (
                person.sex == "F"
                and p in hh.heads
                and len(hh.heads) == 2
                and rng.random() < fertility(age)
            ):
                events.append((_day(rng, frm, to), "birth", p))
            if p not in hh.heads and 18 <= age < 40 and rng.random() < 0.14:
                events.append((_day(rng, frm, to), "leave_home", p))
            if age >= 70 and rng.random() < 0.012 * (age - 68):
                events.append((_day(rng, frm, to), "care", p))
        if len(hh.heads) == 2 and rng.random() < 0.015:
            events.append((_day(rng, frm, to), "separate", hh.heads[1]))
        if rng.random() < MOVE_RATE[hh.tenure]:
            events.append((_day(rng, frm, to), "move", -1))
        if hh.claim >= 0 and rng.random() < 0.1:
            events.append((_day(rng, frm, to), "claim_ends", -1))
        elif hh.low_income and hh.claim < 0 and rng.random() < 0.3:
            events.append((_day(rng, frm, to), "claim", -1))
        for on, what, p in sorted(events, key=lambda e: (e[0], e[1], e[2])):
            if not hh.members or hh.address < 0:
                return
            if p >= 0 and p not in hh.members:
                continue
            getattr(self, f"on_{what}")(h, p, on)

    def on_die(self, h: int, p: int, on: date) -> None:
        self.die(p, on)

    def on_birth(self, h: int, p: int, on: date) -> None:
        w = self.w
        hh = w.households[h]
        father = next((q for q in hh.heads if q != p and w.people[q].sex == "M"), -1)
        surname = w.people[father].surname if father >= 0 else w.people[p].surname
        kids = [q for q in hh.members if w.people[q].mother == p]
        births = 2 if self.rng.random() < TWIN_MATERNITIES else 1
        sex = "M" if self.rng.random() < 0.51 else "F"
        for b in range(births):
            s = sex if b == 0 or self.rng.random() < 0.66 else ("F" if sex == "M" else "M")
            baby = self.person(s, on, surname, w.people[p].community, on, p, father)
            self._distinct_twin(baby, kids)
            kids.append(baby)
            hh.members.append(baby)
            w.people[baby].household = h
            self.start_spell(baby, hh.address, on)

    def on_leave_home(self, h: int, p: int, on: date) -> None:
        if self.rng.random() < 0.3:
            self.leave_borough(p, on)
            return
        self._set_up_alone(p, on, PRIVATE if self.rng.random() < 0.8 else SOCIAL)

    def _set_up_alone(self, p: int, on: date, tenure: str) -> None:
        w = self.w
        self.leave_household(p, on)
        hh = Household([p], [p], tenure, low_income=self.rng.random() < 0.25)
        w.households.append(hh)
        w.people[p].household = len(w.households) - 1
        w.moves.append((p, on))
        if not self.place(len(w.households) - 1, on + timedelta(days=1)):
            hh.members = []
            w.people[p].exit, w.people[p].exit_kind = on, "left"
            w.people[p].household = -1

    def on_separate(self, h: int, p: int, on: date) -> None:
        if self.rng.random() < 0.3:
            self.leave_borough(p, on)
        else:
            self._set_up_alone(p, on, PRIVATE)

    def on_care(self, h: int, p: int, on: date) -> None:
        w = self.w
        homes = [a for a, addr in enumerate(w.addresses) if addr.kind == CARE]
        home = self.rng.choice(homes)
        self.leave_household(p, on)
        w.people[p].household = -1
        w.moves.append((p, on))
        self.start_spell(p, home, on + timedelta(days=1))
        self._open_care[p] = len(w.care)
        w.care.append([p, "Residential", on + timedelta(days=1), None])

    def on_move(self, h: int, p: int, on: date) -> None:
        w = self.w
        hh = w.households[h]
        if self.rng.random() < LEAVE_BOROUGH:
            for q in list(hh.members):
                self.leave_borough(q, on)
            return
        members = list(hh.members)
        self.vacate(h, on)
        for q in members:
            self.end_spell(q, on)
        hh.claim = -1
        if not self.place(h, on + timedelta(days=1)):
            for q in members:
                w.people[q].exit, w.people[q].exit_kind = on, "left"
                w.people[q].household = -1
            hh.members = []
            return
        for q in members:
            w.moves.append((q, on))

    def on_claim_ends(self, h: int, p: int, on: date) -> None:
        w = self.w
        for q in w.households[h].members:
            j = w.open_claim.pop(q, None)
            if j is not None:
                w.claims[j][-1] = on
        w.households[h].claim = -1

    def on_claim(self, h: int, p: int, on: date) -> None:
        self.open_claim(h, on)

    def care_year(self, frm: date, to: date) -> None:
        """Community care for older residents at home; deaths in care homes."""
        rng, w = self.rng, self.w
        for p, i in list(self._open_care.items()):
            person = w.people[p]
            if person.exit is None and rng.random() < death_rate(_age(person, frm), person.sex):
                on = _day(rng, frm, to)
                w.care[i][3] = on
                del self._open_care[p]
                self.die(p, on)
        for hh in w.households:
            for p in hh.members:
                person = w.people[p]
                age = _age(person, frm)
                if age >= 65 and p not in self._open_care and rng.random() < 0.004 * (age - 60):
                    on = _day(rng, frm, to)
                    self._open_care[p] = len(w.care)
                    w.care.append([p, "Community", on, None])

    def arrivals(self, frm: date, to: date) -> None:
        """Newcomers fill empty homes until the borough is back to its size."""
        rng, w = self.rng, self.w
        here = sum(len(hh.members) for hh in w.households)
        kinds = [k for k, _ in HOUSEHOLD_TYPES[:-1]]
        weights = [x for _, x in HOUSEHOLD_TYPES[:-1]]
        tries = 0
        while here < self.target * 0.93 and tries < self.target:
            tries += 1
            on = _day(rng, frm, to)
            hh = self.compose(rng.choices(kinds, weights)[0], on, self._community())
            h = len(w.households) - 1
            if self.place(h, on):
                here += len(hh.members)
            else:
                for p in hh.members:
                    w.people[p].exit, w.people[p].exit_kind = on, "left"
                    w.people[p].household = -1
                hh.members = []
                break


def simulate(rng: random.Random, people: int, start: date, end: date) -> World:
    """Ten years (start to end) of a borough of about `people` residents."""
    return Simulation(rng, people, start, end).run()
