"""How many people and households the analyst views single out: population uniqueness.

A person (or household) is *unique* when no one else in the published data shares their
values of the quasi-identifiers analysts can see: the columns someone who knows a neighbour
would know too (sex, age band, where they live, who they live with). A unique record found by
those values hands over everything else in its row (conditions, service use). The share of
unique records is the usual first measure of re-identification risk in record-level data
(see `governance/roles.md`, "Quasi-identifiers"); the policy sets the share above which a run
warns (`[disclosure] max_unique_share`). Measured on the published views themselves, so it
counts exactly what an analyst sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

#: Person quasi-identifiers visible to analysts, and the view each is read from. Ward, MSOA
#: and IMD decile follow from the LSOA, so they add nothing.
PERSON_QUASI_IDENTIFIERS = (
    "people.sex",
    "people.age_band",
    "people.lsoa",
    "person_analysis.age_group",
    "person_analysis.household_residents",
)
#: A household is known by its LSOA and its residents' sex, age band and age group.
HOUSEHOLD_QUASI_IDENTIFIERS = (
    "households.lsoa",
    "person_analysis.sex",
    "person_analysis.age_band",
    "person_analysis.age_group",
)


@dataclass(frozen=True)
class Uniqueness:
    """Records unique on the quasi-identifiers, of all records, for people and households."""

    unique_people: int
    people: int
    unique_households: int
    households: int

    @property
    def people_share(self) -> float:
        return self.unique_people / self.people if self.people else 0.0

    @property
    def households_share(self) -> float:
        return self.unique_households / self.households if self.households else 0.0

    def above(self, max_share: float) -> list[str]:
        """Which of people and households are above the policy's share (empty when none)."""
        out = []
        if self.people_share > max_share:
            out.append("people")
        if self.households_share > max_share:
            out.append("households")
        return out

    def describe(self, max_share: float) -> dict[str, Any]:
        """Counts and shares (no data values), for the run summary, run_info and the audit."""
        return {
            "people": {
                "unique": self.unique_people,
                "of": self.people,
                "share": round(self.people_share, 4),
                "on": list(PERSON_QUASI_IDENTIFIERS),
            },
            "households": {
                "unique": self.unique_households,
                "of": self.households,
                "share": round(self.households_share, 4),
                "on": list(HOUSEHOLD_QUASI_IDENTIFIERS),
            },
            "max_unique_share": max_share,
            "above": self.above(max_share),
        }


def people_keys_sql() -> str:
    """One row per person in `people` with their quasi-identifiers."""
    return """SELECT p.sex, p.age_band, p.lsoa, a.age_group, a.household_residents
FROM people p LEFT JOIN person_analysis a USING (person_id)"""


def household_keys_sql() -> str:
    """One row per private household with its LSOA and its residents' sorted profile."""
    member = (
        "coalesce(a.sex, '?') || '/' || coalesce(a.age_band, '?') || '/' "
        "|| coalesce(a.age_group, '?')"
    )
    return f"""SELECT h.lsoa, string_agg({member}, ',' ORDER BY {member}) AS members
FROM households h JOIN person_analysis a USING (household_id)
GROUP BY h.household_id, h.lsoa"""


def unique_count_sql(keys_sql: str) -> str:
    """Rows of `keys_sql` no other row equals (NULL equal to NULL), and all its rows."""
    return f"""SELECT count(*) FILTER (WHERE n = 1), count(*)
FROM (SELECT count(*) OVER (PARTITION BY k) AS n FROM ({keys_sql}) k)"""


def measure_uniqueness(con: duckdb.DuckDBPyConnection) -> Uniqueness:
    """Population uniqueness on the analyst views of the database `con` holds open."""
    (up, p) = con.execute(unique_count_sql(people_keys_sql())).fetchall()[0]
    (uh, h) = con.execute(unique_count_sql(household_keys_sql())).fetchall()[0]
    return Uniqueness(int(up), int(p), int(uh), int(h))
