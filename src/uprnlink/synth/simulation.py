"""Households and ten years of their history, simulated forward one event at a time.

Events (births, deaths, moves, young adults leaving home, partnerships forming and ending,
moves into care homes, hostel stays, in-migration) are drawn as waiting times and run in
date order from a heap. A dwelling holds at most one household: a household leaving on day t
ends its stay on t-1 and the dwelling goes back into a vacancy pool, from which only stays
starting two weeks or more later can draw it. Communal establishments hold many residents.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from uprnlink.synth.geography import (
    BEDSIT,
    CARE_HOME,
    HOSTEL,
    OWNER,
    PRIVATE_RENT,
    SOCIAL_RENT,
)
from uprnlink.synth.names import SurnameTable

NEVER = 10_000_000
YEAR = 365.25
_SIXTEEN_YEARS = int(16 * YEAR)

# person roles within a household
HRP, PARTNER, CHILD, OTHER = range(4)
# how a person entered and left the area
INITIAL, BORN, IN_MIGRANT = range(3)
STILL_HERE, DIED, LEFT_AREA = range(3)
# vacancy pools: the letting market each dwelling belongs to
_POOL_OWNER, _POOL_PRIVATE, _POOL_SOCIAL, _POOL_HMO = range(4)
_MIN_VOID_DAYS = 14
_MARKETS_HMO: tuple[int, ...] = (_POOL_HMO * 4, _POOL_PRIVATE * 4)
_MARKETS_SOCIAL: tuple[int, ...] = (_POOL_SOCIAL * 4,)
_MARKETS_OWNER = (_POOL_OWNER * 4, _POOL_PRIVATE * 4)
_MARKETS_PRIVATE = (_POOL_PRIVATE * 4, _POOL_OWNER * 4)
_CLASS_ORDER = tuple(
    tuple(c for c in (w, w + 1, w - 1, w + 2, w - 2, w + 3, w - 3) if 0 <= c <= 3) for w in range(4)
)

# Gompertz mortality (hazard A*exp(B*age)), calibrated to UK life tables
_GOMPERTZ_A, _GOMPERTZ_B = 3.6e-5, 0.0877
_CARE_ENTRY_C, _CARE_ENTRY_B = 4.1e-7, 0.14
_CARE_HOME_MORTALITY = 3.0
_FERTILITY_MAX = 0.17
_MOVE_RATE = {OWNER: 0.05, PRIVATE_RENT: 0.15, SOCIAL_RENT: 0.07}
_LEAVE_AREA_ON_MOVE = 0.45
_SEPARATION_RATE = 0.012
_PARTNERING_RATE = 0.07

(
    _DEATH,
    _MOVE,
    _BIRTH,
    _LEAVE_HOME,
    _SEPARATE,
    _PARTNER,
    _CARE,
    _HOSTEL_LEAVE,
    _HOSTEL_ARRIVE,
    _CARE_ARRIVE,
    _IN_MIGRATE,
    _MONTH,
) = range(12)


@dataclass(frozen=True)
class History:
    """Everyone who lived in the area during the window, where, with whom, and for how long."""

    people: pl.DataFrame
    residence: pl.DataFrame
    occupancies: pl.DataFrame
    liabilities: pl.DataFrame


# Maternities with twins (or more), per maternity, by year of birth: ONS Birth characteristics
# in England and Wales (9.6 per 1,000 in 1976, 14.8 in 2001, 16.1 in 2011, 13.7 in 2021, 14.6
# in 2022). About two in three twin pairs are of one sex (all identical twins, half of the rest).
_TWIN_RATES = ((1976, 0.0096), (2001, 0.0148), (2011, 0.0161), (2021, 0.0137), (2022, 0.0146))
_TWINS_SAME_SEX = 0.66
_DAY_ZERO_YEAR = 1970


def twin_rate(dob: int) -> float:
    """Share of maternities with twins for a birth on day `dob` (days since 1970-01-01)."""
    year = _DAY_ZERO_YEAR + dob / YEAR
    points = _TWIN_RATES
    if year <= points[0][0]:
        return points[0][1]
    for (y0, r0), (y1, r1) in itertools.pairwise(points):
        if year <= y1:
            return r0 + (r1 - r0) * (year - y0) / (y1 - y0)
    return points[-1][1]


def _fertility(age: float) -> float:
    if age < 16 or age >= 45:
        return 0.0
    if age < 20:
        return 0.03
    if age < 25:
        return 0.085
    if age < 30:
        return 0.15
    if age < 35:
        return 0.16
    if age < 40:
        return 0.1
    return 0.022


# (low, high, weight) bands of age for the reference person of each kind of household
_AGES_SINGLE = (
    (18, 25, 3),
    (25, 35, 10),
    (35, 45, 10),
    (45, 55, 13),
    (55, 65, 17),
    (65, 75, 18),
    (75, 85, 18),
    (85, 100, 11),
)
_AGES_COUPLE = (
    (20, 25, 3),
    (25, 35, 14),
    (35, 45, 6),
    (45, 55, 12),
    (55, 65, 23),
    (65, 75, 25),
    (75, 85, 14),
    (85, 95, 3),
)
_AGES_MOTHER = ((20, 30, 15), (30, 40, 35), (40, 50, 35), (50, 60, 15))
_AGES_SINGLE_MIGRANT = (
    (18, 25, 15),
    (25, 35, 35),
    (35, 45, 20),
    (45, 55, 10),
    (55, 65, 8),
    (65, 75, 6),
    (75, 95, 6),
)
_AGES_COUPLE_MIGRANT = ((20, 25, 8), (25, 35, 30), (35, 45, 20), (45, 65, 25), (65, 90, 18))


def _age_in(rng: random.Random, bands: tuple[tuple[int, int, int], ...]) -> float:
    r = rng.random() * sum(w for _, _, w in bands)
    for lo, hi, w in bands:
        r -= w
        if r < 0:
            return lo + (hi - lo) * rng.random()
    return float(bands[-1][1])


def _gompertz_wait(rng: random.Random, age: float, a: float, b: float) -> float:
    """Years until an event whose hazard at age x is a*exp(b*x), from age `age`."""
    e = -math.log(1.0 - rng.random())
    return math.log(math.exp(b * age) + (b / a) * e) / b - age


class _Sim:
    """Mutable state of the simulation; lists indexed by person, household and dwelling id."""

    def __init__(self, rng: random.Random, start: int, end: int, surnames: SurnameTable) -> None:
        self.rng, self.S, self.R, self.sn = rng, start, end, surnames
        self.d_kind: list[int] = []
        self.d_beds: list[int] = []
        self.d_decile: list[int] = []
        self.d_cap: list[int] = []
        self.d_hh: list[int] = []
        self.d_vac: list[int] = []
        self.d_count: list[int] = []
        self.d_pool: list[int] = []
        self.d_pos: list[int] = []
        self.pools: list[list[int]] = [[] for _ in range(16)]
        self.n_homes = 0
        self.n_vacant = 0
        self.resident = 0
        self.target = 0
        self.care_homes: list[int] = []
        self.hostels: list[int] = []
        # people
        self.p_sex: list[int] = []
        self.p_dob: list[int] = []
        self.p_sur: list[int] = []
        self.p_prev: list[int] = []
        self.p_change: list[int] = []
        self.p_origin: list[str] = []
        self.p_mother: list[int] = []
        self.p_father: list[int] = []
        self.p_death: list[int] = []
        self.p_hh: list[int] = []
        self.p_role: list[int] = []
        self.p_home: list[int] = []
        self.p_from: list[int] = []
        self.p_size: list[int] = []
        self.p_liab: list[int] = []
        self.p_entry: list[int] = []
        self.p_entry_kind: list[int] = []
        self.p_exit: list[int] = []
        self.p_exit_kind: list[int] = []
        # households
        self.h_members: list[list[int]] = []
        self.h_hrp: list[int] = []
        self.h_partner: list[int] = []
        self.h_sharers: list[bool] = []
        self.h_dw: list[int] = []
        self.h_ten: list[int] = []
        self.h_occ: list[int] = []
        self.h_alive: list[bool] = []
        # occupancies (council tax accounts) and liable-person spells
        self.o_hh: list[int] = []
        self.o_dw: list[int] = []
        self.o_ten: list[int] = []
        self.o_start: list[int] = []
        self.o_end: list[int] = []
        self.l_occ: list[int] = []
        self.l_person: list[int] = []
        self.l_seq: list[int] = []
        self.l_partner: list[bool] = []
        self.l_start: list[int] = []
        self.l_end: list[int] = []
        # residence spells (closed ones; open ones are read from p_home at the end)
        self.r_person: list[int] = []
        self.r_dw: list[int] = []
        self.r_from: list[int] = []
        self.r_to: list[int] = []
        self.r_size: list[int] = []
        self.heap: list[int] = []
        self.payload: list[int] = []
        self.singles: list[int] = []

    def set_dwellings(self, addresses: pl.DataFrame) -> None:
        """Take the address stock; every self-contained dwelling starts vacant."""
        self.d_kind = addresses["kind"].to_list()
        self.d_beds = addresses["bedrooms"].to_list()
        self.d_decile = addresses["decile"].to_list()
        self.d_cap = addresses["capacity"].to_list()
        stock: list[int | None] = addresses["stock_tenure"].to_list()
        nd = len(self.d_kind)
        self.d_hh = [-1] * nd
        self.d_vac = [self.S - 400] * nd
        self.d_count = [0] * nd
        self.d_pool = [-1] * nd
        self.d_pos = [-1] * nd
        self.care_homes = [d for d in range(nd) if self.d_kind[d] == CARE_HOME]
        self.hostels = [d for d in range(nd) if self.d_kind[d] == HOSTEL]
        market = {OWNER: _POOL_OWNER, PRIVATE_RENT: _POOL_PRIVATE, SOCIAL_RENT: _POOL_SOCIAL}
        for d in range(nd):
            k = self.d_kind[d]
            if k in (CARE_HOME, HOSTEL):
                continue
            self.n_homes += 1
            self.d_pool[d] = _POOL_HMO if k == BEDSIT else market[stock[d] or 0]
            self._pool_add(d)

    # ------------------------------------------------------------------ small helpers
    def push(self, t: int, code: int, a: int) -> None:
        """Schedule event `code` about entity `a` on day t (events after the window are dropped)."""
        if t <= self.R:
            payload = self.payload
            heapq.heappush(self.heap, (t << 40) | (len(payload) << 4) | code)
            payload.append(a)

    def age(self, p: int, t: int) -> float:
        return (t - self.p_dob[p]) / YEAR

    def _pool_add(self, d: int) -> None:
        pool = self.pools[self.d_pool[d] * 4 + min(3, max(0, self.d_beds[d] - 1))]
        self.d_pos[d] = len(pool)
        pool.append(d)
        self.n_vacant += 1

    def _pool_remove(self, d: int) -> None:
        pool = self.pools[self.d_pool[d] * 4 + min(3, max(0, self.d_beds[d] - 1))]
        i = self.d_pos[d]
        last = pool.pop()
        if last != d:
            pool[i] = last
            self.d_pos[last] = i
        self.d_pos[d] = -1
        self.n_vacant -= 1

    def find_dwelling(self, tenure: int, size: int, t: int, hmo: bool = False) -> int:
        """A vacant dwelling for a household wanting `tenure` and about `size` bedrooms, or -1."""
        rnd = self.rng.random
        pools, vac = self.pools, self.d_vac
        latest = t - _MIN_VOID_DAYS
        if hmo:
            markets = _MARKETS_HMO
        elif tenure == SOCIAL_RENT:
            markets = _MARKETS_SOCIAL
        elif tenure == OWNER:
            markets = _MARKETS_OWNER
        else:
            markets = _MARKETS_PRIVATE
        order = _CLASS_ORDER[min(3, max(0, size - 1))]
        for market in markets:
            for cls in order:
                pool = pools[market + cls]
                n = len(pool)
                for _ in range(6 if n > 6 else n):
                    d = pool[int(rnd() * n)]
                    if vac[d] <= latest:
                        return d
        return -1

    def draw_surname(self, origin: str | None = None) -> int:
        if origin is None or self.rng.random() < 0.15:
            return self.sn.draw(self.rng)
        return self.sn.draw_origin(self.rng, origin)

    # ------------------------------------------------------------------ people
    def new_person(self, sex: int, dob: int, sur: int, entry: int, kind: int) -> int:
        p = len(self.p_sex)
        self.p_sex.append(sex)
        self.p_dob.append(dob)
        self.p_sur.append(sur)
        self.p_prev.append(-1)
        self.p_change.append(0)
        self.p_origin.append(self.sn.origins[sur])
        self.p_mother.append(-1)
        self.p_father.append(-1)
        self.p_death.append(NEVER)
        self.p_hh.append(-1)
        self.p_role.append(OTHER)
        self.p_home.append(-1)
        self.p_from.append(0)
        self.p_size.append(0)
        self.p_liab.append(-1)
        self.p_entry.append(entry)
        self.p_entry_kind.append(kind)
        self.p_exit.append(NEVER)
        self.p_exit_kind.append(STILL_HERE)
        self.resident += 1
        return p

    def draw_death(self, p: int, t: int, care: bool = False) -> None:
        home = self.p_home[p]
        decile = self.d_decile[home] if home >= 0 else 5
        mult = (1.35 if self.p_sex[p] == 0 else 0.8) * (1.5 - 0.075 * (decile - 1))
        if care:
            mult *= _CARE_HOME_MORTALITY
        age = (t - self.p_dob[p]) / YEAR
        wait = _gompertz_wait(self.rng, age if age > 0.0 else 0.0, _GOMPERTZ_A * mult, _GOMPERTZ_B)
        d = t + 1 + int(wait * YEAR)
        self.p_death[p] = d
        if d <= self.R:
            self.push(d, _DEATH, p)

    def schedule_person(self, p: int, t: int) -> None:
        """Draw a newly placed person's death, care-home entry, leaving home and birth chain."""
        rng = self.rng
        self.draw_death(p, t)
        age = (t - self.p_dob[p]) / YEAR
        if age > 55:
            wait = _gompertz_wait(rng, age, _CARE_ENTRY_C, _CARE_ENTRY_B)
            if age + wait >= 65:
                self.push(t + 1 + int(wait * YEAR), _CARE, p)
        if self.p_role[p] == CHILD:
            leave_age = min(45.0, 18.0 + rng.expovariate(1 / 5.5))
            when = self.p_dob[p] + int(leave_age * YEAR)
            if when <= t:
                when = t + 1 + int(rng.expovariate(0.25) * YEAR)
            self.push(when, _LEAVE_HOME, p)
        if self.p_sex[p] == 1 and age < 45:
            first = self.p_dob[p] + _SIXTEEN_YEARS
            if first < t:
                first = t
            self.push(first + int(rng.expovariate(_FERTILITY_MAX) * YEAR), _BIRTH, p)

    def start_residence(self, p: int, d: int, t: int, size: int) -> None:
        self.p_home[p] = d
        dob = self.p_dob[p]
        self.p_from[p] = t if t > dob else dob
        self.p_size[p] = size

    def end_residence(self, p: int, last_day: int) -> None:
        d = self.p_home[p]
        if d < 0:
            return
        if last_day >= self.p_from[p]:
            self.r_person.append(p)
            self.r_dw.append(d)
            self.r_from.append(self.p_from[p])
            self.r_to.append(last_day)
            self.r_size.append(self.p_size[p])
        self.p_home[p] = -1

    def exit_area(self, p: int, t: int, kind: int) -> None:
        if self.p_exit_kind[p] == STILL_HERE:
            self.resident -= 1
        self.p_exit[p] = t
        self.p_exit_kind[p] = kind

    # ------------------------------------------------------------------ households
    def new_household(self, tenure: int, sharers: bool = False) -> int:
        h = len(self.h_members)
        self.h_members.append([])
        self.h_hrp.append(-1)
        self.h_partner.append(-1)
        self.h_sharers.append(sharers)
        self.h_dw.append(-1)
        self.h_ten.append(tenure)
        self.h_occ.append(-1)
        self.h_alive.append(True)
        return h

    def join(self, h: int, p: int, role: int) -> None:
        self.h_members[h].append(p)
        self.p_hh[p] = h
        self.p_role[p] = role
        if role == HRP:
            self.h_hrp[h] = p
        elif role == PARTNER:
            self.h_partner[h] = p

    def liable_people(self, h: int, t: int) -> list[int]:
        hrp, partner = self.h_hrp[h], self.h_partner[h]
        out = [hrp] if hrp >= 0 else []
        if partner >= 0:
            out.append(partner)
        elif self.h_sharers[h]:
            for p in self.h_members[h]:
                if p != hrp and self.age(p, t) >= 18:
                    out.append(p)
                    break
        return out

    def refresh_liabilities(self, h: int, t: int) -> None:
        """Open and close liable-person spells so they match the household on day t."""
        o = self.h_occ[h]
        if o < 0:
            return
        want = self.liable_people(h, t)
        for p in self.h_members[h]:
            lid = self.p_liab[p]
            if lid >= 0 and p not in want:
                self.l_end[lid] = t - 1
                self.p_liab[p] = -1
        for p in want:
            if self.p_liab[p] < 0:
                self.p_liab[p] = len(self.l_occ)
                self.l_occ.append(o)
                self.l_person.append(p)
                self.l_seq.append(1 if p == self.h_hrp[h] else 2)
                self.l_partner.append(p == self.h_partner[h])
                self.l_start.append(t)
                self.l_end.append(NEVER)

    def occupy(self, h: int, d: int, t: int) -> None:
        """Household h moves into vacant dwelling d on day t: a new council tax account."""
        self._pool_remove(d)
        self.d_hh[d] = h
        self.h_dw[h] = d
        o = len(self.o_hh)
        self.o_hh.append(h)
        self.o_dw.append(d)
        self.o_ten.append(self.h_ten[h])
        self.o_start.append(t)
        self.o_end.append(NEVER)
        self.h_occ[h] = o
        size = len(self.h_members[h])
        for p in self.h_members[h]:
            self.start_residence(p, d, t, size)
        self.refresh_liabilities(h, t)

    def vacate(self, h: int, last_day: int) -> None:
        """Household h's stay at its dwelling ends on last_day; the dwelling becomes vacant."""
        d = self.h_dw[h]
        for p in self.h_members[h]:
            self.end_residence(p, last_day)
            lid = self.p_liab[p]
            if lid >= 0:
                self.l_end[lid] = last_day
                self.p_liab[p] = -1
        self.o_end[self.h_occ[h]] = last_day
        self.h_occ[h] = -1
        self.h_dw[h] = -1
        self.d_hh[d] = -1
        self.d_vac[d] = last_day + 1
        self._pool_add(d)

    def household_leaves_area(self, h: int, t: int) -> None:
        self.vacate(h, t - 1)
        for p in self.h_members[h]:
            self.exit_area(p, t, LEFT_AREA)
            self.p_hh[p] = -1
        self.h_members[h] = []
        self.h_alive[h] = False

    def remove_member(self, p: int, last_day: int) -> None:
        """Person p leaves their household after last_day (moved, died or went into care)."""
        h = self.p_hh[p]
        if h < 0:
            self.end_residence(p, last_day)
            return
        members = self.h_members[h]
        members.remove(p)
        self.p_hh[p] = -1
        self.end_residence(p, last_day)
        lid = self.p_liab[p]
        if lid >= 0:
            self.l_end[lid] = last_day
            self.p_liab[p] = -1
        t = last_day + 1
        if not members:
            self.h_alive[h] = False
            self.o_end[self.h_occ[h]] = last_day
            d = self.h_dw[h]
            self.d_hh[d] = -1
            self.d_vac[d] = t
            self._pool_add(d)
            return
        if self.h_partner[h] == p:
            self.h_partner[h] = -1
        if self.h_hrp[h] == p:
            self.h_hrp[h] = -1
            nxt = self.h_partner[h]
            if nxt >= 0:
                self.h_partner[h] = -1
            else:
                adults = [q for q in members if self.age(q, t) >= 18]
                nxt = min(adults, key=lambda q: self.p_dob[q]) if adults else -1
            if nxt < 0:
                # only children left: they go to relatives outside the area
                for q in list(members):
                    self.exit_area(q, t, LEFT_AREA)
                self.household_leaves_area(h, t)
                return
            self.h_hrp[h] = nxt
            self.p_role[nxt] = HRP
        self.refresh_liabilities(h, t)

    def form_single(self, p: int, t: int, tenure: int, hmo: bool = False) -> bool:
        """p moves out on day t to live alone in the area; False if no dwelling was free."""
        d = self.find_dwelling(tenure, 1, t, hmo)
        if d < 0:
            return False
        self.remove_member(p, t - 1)
        h = self.new_household(tenure)
        self.join(h, p, HRP)
        self.occupy(h, d, t)
        self.schedule_move(h, t)
        self.maybe_single(p, t)
        return True

    def maybe_single(self, p: int, t: int) -> None:
        """Register a lone adult as a possible partner and schedule their next partnership."""
        age = self.age(p, t)
        if 18 <= age < 52:
            self.singles.append(p)
            self.push(t + 1 + int(self.rng.expovariate(_PARTNERING_RATE) * YEAR), _PARTNER, p)

    def schedule_move(self, h: int, t: int) -> None:
        rate = _MOVE_RATE[self.h_ten[h]]
        hrp = self.h_hrp[h]
        if hrp >= 0 and self.age(hrp, t) >= 70:
            rate *= 0.5
        self.push(t + 60 + int(self.rng.expovariate(rate) * YEAR), _MOVE, h)

    def need_rooms(self, members: list[int], t: int, tenure: int) -> int:
        children = sum(1 for p in members if self.age(p, t) < 18)
        adults = len(members) - children
        couple = 1 if adults >= 2 else 0
        need = max(1, adults - couple) + (children + 1) // 2
        r = self.rng.random()
        if tenure == OWNER and r < 0.5:
            need += 1
        elif tenure == PRIVATE_RENT and r < 0.2:
            need -= 1
        return max(1, need)

    # ------------------------------------------------------------------ compositions
    def pick_tenure(self, hrp_age: float, kind: str) -> int:
        r = self.rng.random()
        if kind == "sharers":
            return PRIVATE_RENT if r < 0.9 else OWNER if r < 0.95 else SOCIAL_RENT
        if kind == "lone_parent":
            return OWNER if r < 0.3 else PRIVATE_RENT if r < 0.6 else SOCIAL_RENT
        if hrp_age < 30:
            return OWNER if r < 0.3 else PRIVATE_RENT if r < 0.75 else SOCIAL_RENT
        if hrp_age < 65:
            return OWNER if r < 0.66 else PRIVATE_RENT if r < 0.82 else SOCIAL_RENT
        return OWNER if r < 0.75 else PRIVATE_RENT if r < 0.82 else SOCIAL_RENT

    def compose(self, kind: str, t: int, entry_kind: int) -> tuple[int, list[int]]:
        """Create the people of a new household of this kind; returns (household, members)."""
        rng = self.rng
        u = rng.random

        def person(sex: int, age: float, sur: int) -> int:
            dob = t - int(age * YEAR) - rng.randrange(365)
            entry = t if entry_kind != INITIAL else self.S
            return self.new_person(sex, dob, sur, entry, entry_kind)

        def kids(
            mother_age: float, n: int, sur: int, mother: int = -1, father: int = -1
        ) -> list[int]:
            top = max(0.0, min(mother_age - 18.0, 30.0))
            out: list[int] = []
            for _ in range(n):
                kid = person(int(u() < 0.51), top * u(), sur)
                out.append(kid)
                # Twins: same date of birth, surname and parents; two in three of one sex.
                if u() < twin_rate(self.p_dob[kid]):
                    sex = self.p_sex[kid] if u() < _TWINS_SAME_SEX else 1 - self.p_sex[kid]
                    twin = self.new_person(
                        sex, self.p_dob[kid], sur, self.p_entry[kid], self.p_entry_kind[kid]
                    )
                    out.append(twin)
            for kid in out:
                self.p_mother[kid], self.p_father[kid] = mother, father
            return out

        def couple(man_age: float) -> tuple[int, int]:
            sur = self.draw_surname()
            origin = self.sn.origins[sur]
            man = person(0, man_age, sur)
            woman_age = max(18.0, man_age - rng.gauss(2.0, 3.0))
            same_sex = u() < 0.02
            if u() < 0.78 and not same_sex:
                woman = person(1, woman_age, sur)
                maiden = self.draw_surname(origin)
                self.p_prev[woman] = maiden if maiden != sur else -1
                years = u() * max(0.5, min(40.0, woman_age - 18.0))
                self.p_change[woman] = t - int(years * YEAR)
            else:
                woman = person(0 if same_sex else 1, woman_age, self.draw_surname(origin))
            return man, woman

        members: list[tuple[int, int]] = []
        sharers = False
        migrant = entry_kind == IN_MIGRANT
        if kind == "single":
            age = _age_in(rng, _AGES_SINGLE_MIGRANT if migrant else _AGES_SINGLE)
            sex = int(u() < (0.65 if age >= 65 else 0.45))
            members.append((person(sex, age, self.draw_surname()), HRP))
        elif kind == "couple":
            age = _age_in(rng, _AGES_COUPLE_MIGRANT if migrant else _AGES_COUPLE)
            man, woman = couple(age)
            members += [(man, HRP), (woman, PARTNER)]
        elif kind in ("couple_kids", "multigen"):
            mother_age = _age_in(rng, _AGES_MOTHER)
            man, woman = couple(mother_age + rng.gauss(2.0, 3.0))
            n = 1 if (r := u()) < 0.38 else 2 if r < 0.8 else 3 if r < 0.95 else 4
            kid_sur = self.p_sur[man] if u() < 0.85 else self.p_sur[woman]
            members += [(man, HRP), (woman, PARTNER)]
            mother = woman if self.p_sex[woman] == 1 else -1
            members += [(k, CHILD) for k in kids(mother_age, n, kid_sur, mother, man)]
            if kind == "multigen":
                gp_age = max(55.0, mother_age + 26 + 6 * u())
                side = (
                    self.p_sur[man]
                    if u() < 0.6
                    else (self.p_prev[woman] if self.p_prev[woman] >= 0 else self.p_sur[woman])
                )
                members.append((person(int(u() < 0.35), gp_age, side), OTHER))
                if u() < 0.3:
                    members.append((person(int(u() < 0.5), gp_age + rng.gauss(0, 3), side), OTHER))
        elif kind == "lone_parent":
            age = 19 + 36 * (u() + u()) / 2
            sur = self.draw_surname()
            parent = person(int(u() < 0.88), age, sur)
            n = 1 if (r := u()) < 0.5 else 2 if r < 0.85 else 3
            members.append((parent, HRP))
            mother, father = (parent, -1) if self.p_sex[parent] == 1 else (-1, parent)
            members += [(k, CHILD) for k in kids(age, n, sur, mother, father)]
        else:  # sharers
            sharers = True
            for i in range(2 + int(u() * 2.6)):
                members.append(
                    (
                        person(int(u() < 0.5), 19 + 16 * u(), self.draw_surname()),
                        HRP if i == 0 else OTHER,
                    )
                )
        h_age = self.age(members[0][0], t)
        h = self.new_household(self.pick_tenure(h_age, kind), sharers)
        for p, role in members:
            self.join(h, p, role)
        return h, [p for p, _ in members]

    def discard_household(self, h: int) -> None:
        """Forget a composed household that found no dwelling (its people never existed here)."""
        self.h_alive[h] = False
        for p in self.h_members[h]:
            self.exit_area(p, self.p_entry[p], LEFT_AREA)
            self.p_entry_kind[p] = -1
        self.h_members[h] = []

    # ------------------------------------------------------------------ set-up
    def populate(self, households: list[tuple[int, list[int]]]) -> None:
        """Place the initial households in dwellings, with stays that began before the window."""
        rng, S = self.rng, self.S
        for h, members in households:
            tenure = self.h_ten[h]
            young_single = (
                len(members) == 1 and tenure == PRIVATE_RENT and self.age(members[0], S) < 35
            )
            size = self.need_rooms(members, S, tenure)
            d = self.find_dwelling(tenure, size, S, hmo=young_single and rng.random() < 0.3)
            if d < 0:
                d = self.find_dwelling(PRIVATE_RENT, size, S)
                self.h_ten[h] = PRIVATE_RENT
            if d < 0:
                self.discard_household(h)
                continue
            mean_years = {OWNER: 13.0, PRIVATE_RENT: 3.5, SOCIAL_RENT: 8.0}[self.h_ten[h]]
            adult_since = max(
                self.p_dob[p] + int(18 * YEAR)
                for p in members
                if p in (self.h_hrp[h], self.h_partner[h])
            )
            t0 = max(adult_since, S - 1 - int(rng.expovariate(1 / mean_years) * YEAR))
            t0 = min(t0, S - 1)
            self.occupy(h, d, t0)
            for lid in (self.p_liab[p] for p in members if self.p_liab[p] >= 0):
                self.l_start[lid] = max(t0, self.p_dob[self.l_person[lid]] + int(18 * YEAR))
            for p in members:
                self.schedule_person(p, S)
            self.schedule_move(h, S)
            hrp = self.h_hrp[h]
            if self.h_partner[h] >= 0:
                self.push(S + int(rng.expovariate(_SEPARATION_RATE) * YEAR), _SEPARATE, h)
            elif hrp >= 0 and not self.h_sharers[h]:
                self.maybe_single(hrp, S)
        for c in self.care_homes:
            for _ in range(int(self.d_cap[c] * (0.85 + 0.12 * rng.random()))):
                self.care_arrival(c, S, initial=True)
        for c in self.hostels:
            for _ in range(int(self.d_cap[c] * 0.85)):
                self.hostel_arrival(c, S, initial=True)
        t = S + 30
        while t <= self.R:
            self.push(t, _MONTH, 0)
            t += 30

    def care_arrival(self, c: int, t: int, initial: bool = False) -> None:
        rng = self.rng
        age = min(104.0, 72 + 29 * rng.random() ** 0.8)
        p = self.compose_lone(int(rng.random() < 0.3), age, t, INITIAL if initial else IN_MIGRANT)
        since = t - int(rng.expovariate(1 / 1.8) * YEAR) if initial else t
        self.start_residence(p, c, max(since, self.p_dob[p] + int(65 * YEAR)), 0)
        self.d_count[c] += 1
        self.draw_death(p, t, care=True)

    def hostel_arrival(self, c: int, t: int, initial: bool = False) -> None:
        rng = self.rng
        p = self.compose_lone(
            int(rng.random() < 0.25),
            18 + 42 * rng.random() ** 1.5,
            t,
            INITIAL if initial else IN_MIGRANT,
        )
        since = t - rng.randrange(400) if initial else t
        self.start_residence(p, c, since, 0)
        self.d_count[c] += 1
        self.draw_death(p, t)
        self.push(t + 1 + int(rng.expovariate(1 / 300)), _HOSTEL_LEAVE, p)

    def compose_lone(self, sex: int, age: float, t: int, kind: int) -> int:
        dob = t - int(age * YEAR) - self.rng.randrange(365)
        return self.new_person(
            sex, dob, self.draw_surname(), self.S if kind == INITIAL else t, kind
        )

    # ------------------------------------------------------------------ events
    def run(self) -> None:
        heap, payload, pop = self.heap, self.payload, heapq.heappop
        handlers = [
            self.on_death,
            self.on_move,
            self.on_birth,
            self.on_leave_home,
            self.on_separate,
            self.on_partner,
            self.on_care,
            self.on_hostel_leave,
            self.on_hostel_arrive,
            self.on_care_arrive,
            self.on_in_migrate,
            self.on_month,
        ]
        mask = (1 << 36) - 1
        while heap:
            key = pop(heap)
            handlers[key & 15](payload[(key >> 4) & mask], key >> 40)

    def here(self, p: int, t: int) -> bool:
        return self.p_exit[p] > t and self.p_home[p] >= 0

    def on_death(self, p: int, t: int) -> None:
        if self.p_death[p] != t or not self.here(p, t):
            return
        home = self.p_home[p]
        if self.p_hh[p] >= 0:
            self.remove_member(p, t)
        else:
            self.end_residence(p, t)
            self.d_count[home] -= 1
            if self.d_kind[home] == HOSTEL:
                self.push(t + 1 + int(self.rng.expovariate(1 / 30)), _HOSTEL_ARRIVE, home)
        self.exit_area(p, t, DIED)

    def on_move(self, h: int, t: int) -> None:
        if not self.h_alive[h] or self.h_dw[h] < 0:
            return
        rng = self.rng
        members = self.h_members[h]
        if rng.random() < _LEAVE_AREA_ON_MOVE:
            self.household_leaves_area(h, t)
            return
        old = self.h_ten[h]
        r = rng.random()
        if old == SOCIAL_RENT:
            new = SOCIAL_RENT if r < 0.9 else PRIVATE_RENT
        elif old == PRIVATE_RENT:
            new = PRIVATE_RENT if r < 0.55 else OWNER if r < 0.9 else SOCIAL_RENT
        else:
            new = OWNER if r < 0.95 else PRIVATE_RENT
        d = self.find_dwelling(new, self.need_rooms(members, t, new), t)
        if d < 0 or d == self.h_dw[h]:
            self.household_leaves_area(h, t)
            return
        self.vacate(h, t - 1)
        self.h_ten[h] = new
        self.occupy(h, d, t)
        self.schedule_move(h, t)

    def on_birth(self, p: int, t: int) -> None:
        if not self.here(p, t) or self.p_hh[p] < 0:
            return
        rng = self.rng
        age = self.age(p, t)
        if age >= 45:
            return
        h = self.p_hh[p]
        members = self.h_members[h]
        coupled = (self.h_hrp[h] == p and self.h_partner[h] >= 0) or self.h_partner[h] == p
        factor = 1.1 if coupled else 0.3 if self.h_hrp[h] == p else 0.08
        born = False
        if rng.random() * _FERTILITY_MAX < _fertility(age) * factor and len(members) < 8:
            other = self.h_partner[h] if self.h_hrp[h] == p else self.h_hrp[h]
            father = other if coupled and self.p_sex[other] == 0 else -1
            sur = self.p_sur[father] if father >= 0 and rng.random() < 0.85 else self.p_sur[p]
            sex = int(rng.random() < 0.512)
            babies = [sex]
            if rng.random() < twin_rate(t):
                babies.append(sex if rng.random() < _TWINS_SAME_SEX else 1 - sex)
            for sex in babies:
                baby = self.new_person(sex, t, sur, t, BORN)
                self.p_origin[baby] = self.p_origin[p]
                self.p_mother[baby], self.p_father[baby] = p, father
                self.join(h, baby, CHILD)
                self.start_residence(baby, self.h_dw[h], t, len(members))
                self.schedule_person(baby, t)
            born = True
        gap = 300 if born else 0
        self.push(t + gap + 1 + int(rng.expovariate(_FERTILITY_MAX) * YEAR), _BIRTH, p)

    def on_leave_home(self, p: int, t: int) -> None:
        if (
            not self.here(p, t)
            or self.p_hh[p] < 0
            or self.p_role[p] != CHILD
            or self.age(p, t) < 17.9
        ):
            return
        rng = self.rng
        if rng.random() < 0.55:
            r = rng.random()
            tenure = SOCIAL_RENT if r < 0.15 else PRIVATE_RENT
            if self.form_single(p, t, tenure, hmo=r > 0.75):
                return
        self.remove_member(p, t - 1)
        self.exit_area(p, t, LEFT_AREA)

    def on_separate(self, h: int, t: int) -> None:
        if not self.h_alive[h] or self.h_partner[h] < 0 or self.h_hrp[h] < 0:
            return
        rng = self.rng
        a, b = self.h_hrp[h], self.h_partner[h]
        if self.p_sex[a] != self.p_sex[b]:
            man, woman = (a, b) if self.p_sex[a] == 0 else (b, a)
            leaver, stayer = (man, woman) if rng.random() < 0.75 else (woman, man)
        else:
            leaver, stayer = (a, b) if rng.random() < 0.5 else (b, a)
        if rng.random() < 0.6:
            if not self.form_single(
                leaver, t, SOCIAL_RENT if rng.random() < 0.25 else PRIVATE_RENT
            ):
                self.remove_member(leaver, t - 1)
                self.exit_area(leaver, t, LEFT_AREA)
        else:
            self.remove_member(leaver, t - 1)
            self.exit_area(leaver, t, LEFT_AREA)
        if self.p_hh[stayer] >= 0 and self.h_hrp[self.p_hh[stayer]] == stayer:
            self.maybe_single(stayer, t)

    def valid_single(self, q: int, t: int) -> bool:
        h = self.p_hh[q]
        return (
            self.p_exit[q] > t
            and h >= 0
            and self.h_hrp[h] == q
            and self.h_partner[h] < 0
            and not self.h_sharers[h]
            and 18 <= self.age(q, t) < 56
        )

    def on_partner(self, p: int, t: int) -> None:
        if not self.valid_single(p, t):
            return
        rng = self.rng
        h = self.p_hh[p]
        if any(self.age(q, t) >= 18 for q in self.h_members[h] if q != p):
            return
        age_p = self.age(p, t)
        same_sex = rng.random() < 0.04
        q = -1
        if rng.random() < 0.7:
            singles = self.singles
            for _ in range(12):
                if not singles:
                    break
                i = int(rng.random() * len(singles))
                c = singles[i]
                if c == p:
                    continue
                if not self.valid_single(c, t):
                    singles[i] = singles[-1]
                    singles.pop()
                    continue
                if len(self.h_members[self.p_hh[c]]) != 1:
                    continue
                if (self.p_sex[c] == self.p_sex[p]) == same_sex and abs(
                    self.age(c, t) - age_p
                ) <= 10:
                    q = c
                    break
        if q >= 0:
            self.remove_member(q, t - 1)
        else:
            sex = self.p_sex[p] if same_sex else 1 - self.p_sex[p]
            age_q = max(18.0, age_p + rng.gauss(2.0 if sex == 0 else -2.0, 4.0))
            sur = self.draw_surname(self.p_origin[p])
            q = self.new_person(sex, t - int(age_q * YEAR) - rng.randrange(365), sur, t, IN_MIGRANT)
        self.join(h, q, PARTNER)
        self.start_residence(q, self.h_dw[h], t, len(self.h_members[h]))
        self.refresh_liabilities(h, t)
        if self.p_entry[q] == t and self.p_entry_kind[q] == IN_MIGRANT:
            self.schedule_person(q, t)
        if self.p_sex[p] != self.p_sex[q] and rng.random() < 0.4:
            woman, man = (p, q) if self.p_sex[p] == 1 else (q, p)
            if self.p_sur[woman] != self.p_sur[man]:
                self.p_prev[woman] = self.p_sur[woman]
                self.p_sur[woman] = self.p_sur[man]
                self.p_change[woman] = t
        self.push(t + 1 + int(rng.expovariate(_SEPARATION_RATE) * YEAR), _SEPARATE, h)

    def on_care(self, p: int, t: int) -> None:
        if not self.here(p, t) or self.p_hh[p] < 0:
            return
        rng = self.rng
        free = (
            [
                c
                for c in (rng.choice(self.care_homes) for _ in range(4))
                if self.d_count[c] < self.d_cap[c]
            ]
            if self.care_homes
            else []
        )
        if not free:
            return
        c = free[0]
        self.remove_member(p, t - 1)
        self.start_residence(p, c, t, 0)
        self.d_count[c] += 1
        self.draw_death(p, t, care=True)

    def on_care_arrive(self, c: int, t: int) -> None:
        if self.d_count[c] < self.d_cap[c]:
            self.care_arrival(c, t)

    def on_hostel_arrive(self, c: int, t: int) -> None:
        if self.d_count[c] < self.d_cap[c]:
            self.hostel_arrival(c, t)

    def on_hostel_leave(self, p: int, t: int) -> None:
        if not self.here(p, t) or self.d_kind[self.p_home[p]] != HOSTEL:
            return
        rng = self.rng
        c = self.p_home[p]
        self.d_count[c] -= 1
        self.push(t + 1 + int(rng.expovariate(1 / 30)), _HOSTEL_ARRIVE, c)
        if rng.random() < 0.5:
            d = self.find_dwelling(
                SOCIAL_RENT if rng.random() < 0.5 else PRIVATE_RENT, 1, t, hmo=rng.random() < 0.3
            )
            if d >= 0:
                self.end_residence(p, t - 1)
                h = self.new_household(
                    SOCIAL_RENT if self.d_pool[d] == _POOL_SOCIAL else PRIVATE_RENT
                )
                self.join(h, p, HRP)
                self.occupy(h, d, t)
                self.schedule_move(h, t)
                self.maybe_single(p, t)
                return
        self.end_residence(p, t - 1)
        self.exit_area(p, t, LEFT_AREA)

    def on_month(self, _: int, t: int) -> None:
        """Keep about 5% of homes vacant (3% while the population is short) and care homes 90% full."""
        rng = self.rng
        vacancy = 0.05 if self.resident >= self.target else 0.03
        excess = self.n_vacant - int(vacancy * self.n_homes)
        for _ in range((excess + 1) // 2):
            self.push(t + int(rng.random() * 30), _IN_MIGRATE, 0)
        free = [c for c in self.care_homes if self.d_count[c] < self.d_cap[c]]
        spare = (
            sum(self.d_cap[c] - self.d_count[c] for c in free)
            - sum(self.d_cap[c] for c in self.care_homes) // 10
        )
        for _ in range(max(0, spare) // 3):
            self.push(t + int(rng.random() * 30), _CARE_ARRIVE, rng.choice(free))

    def on_in_migrate(self, _: int, t: int) -> None:
        rng = self.rng
        r = rng.random()
        kind = (
            "single"
            if r < 0.36
            else "couple"
            if r < 0.56
            else "couple_kids"
            if r < 0.76
            else "lone_parent"
            if r < 0.84
            else "sharers"
            if r < 0.97
            else "multigen"
        )
        h, members = self.compose(kind, t, IN_MIGRANT)
        tenure = self.h_ten[h]
        young_single = len(members) == 1 and tenure == PRIVATE_RENT and self.age(members[0], t) < 35
        d = self.find_dwelling(
            tenure, self.need_rooms(members, t, tenure), t, hmo=young_single and rng.random() < 0.4
        )
        if d < 0:
            self.discard_household(h)
            return
        self.occupy(h, d, t)
        for p in members:
            self.schedule_person(p, t)
        self.schedule_move(h, t)
        if self.h_partner[h] >= 0:
            self.push(t + 1 + int(rng.expovariate(_SEPARATION_RATE) * YEAR), _SEPARATE, h)
        elif not self.h_sharers[h]:
            self.maybe_single(self.h_hrp[h], t)

    # ------------------------------------------------------------------ results
    def history(self, uprns: list[int]) -> History:
        """Frames of the finished simulation, with dwellings as UPRNs and dates as Date."""
        n = len(self.p_sex)
        keep = [i for i in range(n) if self.p_entry_kind[i] >= 0]
        for p in keep:
            if self.p_home[p] >= 0:
                self.r_person.append(p)
                self.r_dw.append(self.p_home[p])
                self.r_from.append(self.p_from[p])
                self.r_to.append(NEVER)
                self.r_size.append(self.p_size[p])

        def date(col: str, values: list[int]) -> pl.Series:
            return pl.Series(col, values, dtype=pl.Int32).cast(pl.Date)

        def opt_date(col: str, values: list[int]) -> pl.Series:
            return pl.Series(col, [v if v < NEVER else None for v in values], dtype=pl.Int32).cast(
                pl.Date
            )

        names = self.sn.names
        people = pl.DataFrame(
            [
                pl.Series("person_id", [p + 1 for p in keep], dtype=pl.Int64),
                pl.Series("sex", ["MF"[self.p_sex[p]] for p in keep]),
                date("dob", [self.p_dob[p] for p in keep]),
                pl.Series("surname", [names[self.p_sur[p]] for p in keep]),
                pl.Series(
                    "previous_surname",
                    [names[self.p_prev[p]] if self.p_prev[p] >= 0 else None for p in keep],
                    dtype=pl.Utf8,
                ),
                opt_date(
                    "surname_changed",
                    [self.p_change[p] if self.p_prev[p] >= 0 else NEVER for p in keep],
                ),
                pl.Series("origin", [self.p_origin[p] for p in keep]),
                pl.Series(
                    "mother_id",
                    [self.p_mother[p] + 1 if self.p_mother[p] >= 0 else None for p in keep],
                    dtype=pl.Int64,
                ),
                pl.Series(
                    "father_id",
                    [self.p_father[p] + 1 if self.p_father[p] >= 0 else None for p in keep],
                    dtype=pl.Int64,
                ),
                date("entry_date", [self.p_entry[p] for p in keep]),
                pl.Series(
                    "entry_kind",
                    [("initial", "born", "in_migrant")[self.p_entry_kind[p]] for p in keep],
                ),
                opt_date("exit_date", [self.p_exit[p] for p in keep]),
                pl.Series(
                    "exit_kind",
                    [(None, "died", "left_area")[self.p_exit_kind[p]] for p in keep],
                    dtype=pl.Utf8,
                ),
            ]
        )
        residence = pl.DataFrame(
            [
                pl.Series("person_id", [p + 1 for p in self.r_person], dtype=pl.Int64),
                pl.Series("uprn", [uprns[d] for d in self.r_dw], dtype=pl.Int64),
                date("valid_from", self.r_from),
                opt_date("valid_to", self.r_to),
                pl.Series("household_size", self.r_size, dtype=pl.Int16),
            ]
        ).sort("person_id", "valid_from")
        occupancies = pl.DataFrame(
            [
                pl.Series("occupancy_id", range(len(self.o_hh)), dtype=pl.Int64),
                pl.Series("household_id", self.o_hh, dtype=pl.Int64),
                pl.Series("uprn", [uprns[d] for d in self.o_dw], dtype=pl.Int64),
                pl.Series("tenure", self.o_ten, dtype=pl.Int8),
                date("start", self.o_start),
                opt_date("end", self.o_end),
            ]
        ).filter(pl.col("end").is_null() | (pl.col("end") >= pl.col("start")))
        liabilities = pl.DataFrame(
            [
                pl.Series("occupancy_id", self.l_occ, dtype=pl.Int64),
                pl.Series("person_id", [p + 1 for p in self.l_person], dtype=pl.Int64),
                pl.Series("seq", self.l_seq, dtype=pl.Int8),
                pl.Series("is_partner", self.l_partner),
                date("start", self.l_start),
                opt_date("end", self.l_end),
            ]
        ).filter(pl.col("end").is_null() | (pl.col("end") >= pl.col("start")))
        return History(
            people=people, residence=residence, occupancies=occupancies, liabilities=liabilities
        )


_KINDS = (
    ("single", 0.30),
    ("couple", 0.26),
    ("couple_kids", 0.24),
    ("lone_parent", 0.1),
    ("multigen", 0.03),
    ("sharers", 0.07),
)


def simulate(
    rng: random.Random,
    people: int,
    start: int,
    end: int,
    surnames: SurnameTable,
    build_addresses: Callable[[int, int, int], pl.DataFrame],
) -> tuple[History, pl.DataFrame]:
    """Compose households for about `people` residents, build their area, then run the decade.

    `build_addresses(dwellings, care_beds, hostel_beds)` returns the addresses frame; it is
    called once the number of households is known, so the stock fits them with ~5% vacant.
    """
    # millions of small long-lived lists make the cyclic collector rescan an ever larger heap
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _simulate(rng, people, start, end, surnames, build_addresses)
    finally:
        if collecting:
            gc.enable()


def _simulate(
    rng: random.Random,
    people: int,
    start: int,
    end: int,
    surnames: SurnameTable,
    build_addresses: Callable[[int, int, int], pl.DataFrame],
) -> tuple[History, pl.DataFrame]:
    care_beds = round(0.0185 * people)
    hostel_beds = round(0.006 * people)
    resident_target = people - int(care_beds * 0.91) - int(hostel_beds * 0.85)
    sim = _Sim(rng, start, end, surnames)
    sim.target = people
    households: list[tuple[int, list[int]]] = []
    total = 0
    cum = []
    acc = 0.0
    for _, w in _KINDS:
        acc += w
        cum.append(acc)
    while total < resident_target:
        r = rng.random() * acc
        kind = next(k for (k, _), c in zip(_KINDS, cum, strict=True) if r < c)
        h, members = sim.compose(kind, start, INITIAL)
        households.append((h, members))
        total += len(members)
    dwellings = math.ceil(len(households) / 0.95)
    addresses = build_addresses(dwellings, care_beds, hostel_beds)
    sim.set_dwellings(addresses)
    sim.populate(households)
    sim.run()
    return sim.history(addresses["uprn"].to_list()), addresses
