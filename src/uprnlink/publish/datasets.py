"""What analysts may tabulate, declared once: datasets, their dimensions and measures.

Each `Dataset` is one kind of unit (a private household, a resident) with the dimensions a
table may cross and filter on (coarse categories by design: age band, sex, LSOA, ward, IMD
decile, tenure, household type, conditions ...) and the non-negative whole-number measures it
may sum. There is no id column and no free expression anywhere a request can reach: the SQL
expressions here are written by us and run at publish time (`publish.tabulation`).

Adding a dimension or a measure is one entry here; the tables written at publish, the spec
checks, the API, the portal's form, `uprnlink table`, the catalogue and its page in the docs
all follow from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from uprnlink.errors import UprnlinkError

__all__ = [
    "DATASETS",
    "TOTAL",
    "UNKNOWN",
    "Dataset",
    "Dimension",
    "Measure",
    "TableSpecError",
    "get_dataset",
]

UNKNOWN = "unknown"
"""The category of a unit whose value is not known (never NULL)."""
TOTAL = "Total"
"""The category of a margin (a total over a dimension)."""
YES_NO_UNKNOWN = ("yes", "no", UNKNOWN)


class TableSpecError(UprnlinkError):
    """A table request the declaration does not allow (names the field and the rule, and
    depends only on the request and the declaration, never on the data)."""

    exit_code = 2


@dataclass(frozen=True)
class Dimension:
    """A category a table may cross or filter on."""

    name: str
    label: str
    description: str
    expr: str
    """SQL over the dataset's source giving the category as text (NULL becomes `unknown`)."""
    categories: tuple[str, ...] = ()
    """The categories in display order; () takes the values found at publish (geography,
    dates, age bands), sorted, `unknown` last."""


@dataclass(frozen=True)
class Measure:
    """A non-negative whole-number column per unit that a table may sum."""

    name: str
    label: str
    description: str
    expr: str


@dataclass(frozen=True)
class Dataset:
    """One kind of unit and what may be tabulated about it."""

    name: str
    label: str
    unit: str
    """What one row counts (plural), e.g. `households`."""
    description: str
    source: str
    """The relation (in the engineers' database) the units come from."""
    key: str
    """The source's published id column whose record keys the units carry."""
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...] = ()

    @property
    def unit_one(self) -> str:
        """One unit, e.g. `household`, `person`."""
        return {"people": "person"}.get(self.unit, self.unit.removesuffix("s"))

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise TableSpecError(
            f"dataset {self.name} has no dimension {name!r}: "
            f"choose from {', '.join(d.name for d in self.dimensions)}"
        )

    def measure(self, name: str) -> Measure:
        for m in self.measures:
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.measures) or "none"
        raise TableSpecError(f"dataset {self.name} has no measure {name!r}: choose from {names}")


# ------------------------------------------------------------------------- declarations


def _flag(name: str, label: str, description: str, condition: str) -> Dimension:
    """A yes/no dimension from a BOOLEAN expression (NULL: unknown)."""
    return Dimension(
        name,
        label,
        description,
        f"CASE WHEN ({condition}) THEN 'yes' WHEN NOT ({condition}) THEN 'no' END",
        YES_NO_UNKNOWN,
    )


def _size(column: str) -> str:
    return f"CASE WHEN {column} >= 6 THEN '6+' ELSE CAST({column} AS VARCHAR) END"


_GEOGRAPHY = (
    Dimension("lsoa", "LSOA", "Lower layer Super Output Area of the address", "lsoa"),
    Dimension("msoa", "MSOA", "Middle layer Super Output Area of the address", "msoa"),
    Dimension("ward", "Ward", "Electoral ward of the address", "ward"),
    Dimension(
        "imd_decile",
        "IMD decile",
        "Index of Multiple Deprivation decile of the LSOA (1 = most deprived 10%); an area "
        "measure, not the household's own circumstances",
        "CAST(imd_decile AS VARCHAR)",
        (*(str(d) for d in range(1, 11)), UNKNOWN),
    ),
)
_HOUSEHOLD_TYPES = (
    "one_person_65_plus",
    "one_person_under_65",
    "multigenerational",
    "lone_parent",
    "adults_with_children",
    "all_aged_65_plus",
    "adults_no_children",
    "unclassified",
)
_TENURES = ("social_rented", "owner_or_private_or_unknown")
_SIZES = ("1", "2", "3", "4", "5", "6+")
_LTC = (
    ("asthma", "Asthma"),
    ("copd", "COPD"),
    ("diabetes", "Diabetes"),
    ("chd", "Coronary heart disease"),
    ("hypertension", "Hypertension"),
    ("depression", "Depression"),
    ("dementia", "Dementia"),
)
_PROPERTY_TYPE = """CASE WHEN property_class IS NULL THEN NULL
    WHEN property_class = 'RD02' THEN 'detached'
    WHEN property_class = 'RD03' THEN 'semi_detached'
    WHEN property_class = 'RD04' THEN 'terraced'
    WHEN property_class IN ('RD06', 'RD07') THEN 'flat_or_maisonette'
    WHEN property_class LIKE 'RH%' THEN 'shared_or_hmo'
    ELSE 'other' END"""
_HOSPITAL_CAVEAT = (
    "in the service period (12 months to the reference date unless the run says otherwise); "
    "records that did not link to the person are missed"
)

HOUSEHOLDS = Dataset(
    name="households",
    label="Households",
    unit="households",
    description="Private households on the reference date (communal establishments excluded): "
    "composition, circumstances, area and the residents' health and hospital use.",
    source="households",
    key="household_id",
    dimensions=(
        *_GEOGRAPHY,
        Dimension(
            "tenure",
            "Tenure",
            "social_rented when a council tenancy is active at the address; otherwise owner, "
            "private renter or unknown (the council cannot tell these apart)",
            "tenure",
            _TENURES,
        ),
        Dimension(
            "council_tax_band",
            "Council tax band",
            "Valuation band of the property",
            "council_tax_band",
            (*"ABCDEFGH", UNKNOWN),
        ),
        Dimension(
            "property_type",
            "Property type",
            "From the AddressBase class: detached, semi-detached, terraced, flat or "
            "maisonette, shared or HMO, other",
            _PROPERTY_TYPE,
            (
                "detached",
                "semi_detached",
                "terraced",
                "flat_or_maisonette",
                "shared_or_hmo",
                "other",
                UNKNOWN,
            ),
        ),
        Dimension(
            "household_type",
            "Household type",
            "The first rule that applies: one person 65+, one person under 65, "
            "multigenerational, lone parent, adults with children, all 65+, adults without "
            "children, unclassified (a resident of unknown age)",
            "household_type",
            _HOUSEHOLD_TYPES,
        ),
        Dimension(
            "household_size",
            "Household size",
            "Residents (6+ together)",
            _size("residents"),
            _SIZES,
        ),
        _flag(
            "has_children", "Has children", "At least one resident under 18", "children_0_17 > 0"
        ),
        _flag("has_people_65_plus", "Has people 65+", "A resident aged 65+", "people_65_plus > 0"),
        _flag("has_people_85_plus", "Has people 85+", "A resident aged 85+", "people_85_plus > 0"),
        _flag("living_alone", "Living alone", "One resident", "living_alone"),
        _flag(
            "living_alone_65_plus",
            "One person aged 65+",
            "One resident, aged 65+",
            "living_alone AND people_65_plus = 1",
        ),
        _flag("lone_parent", "Lone parent", "One adult with dependent children", "lone_parent"),
        _flag(
            "multigenerational",
            "Multigenerational",
            "Three generations by an age-gap rule",
            "multigenerational",
        ),
        _flag(
            "overcrowded",
            "Overcrowded",
            "Fewer bedrooms than the bedroom standard needs; unknown outside social rented "
            "homes (bedrooms are not known there)",
            "overcrowded",
        ),
        _flag(
            "under_occupied",
            "Under-occupied",
            "Two or more bedrooms above the bedroom standard; unknown outside social rented homes",
            "under_occupied",
        ),
        _flag("any_benefits", "Any benefits", "A resident has HB or CTR", "any_benefits"),
        _flag(
            "housing_benefit",
            "Housing benefit",
            "A resident has housing benefit",
            "housing_benefit",
        ),
        _flag(
            "council_tax_reduction",
            "Council tax reduction",
            "Council tax reduction on an active liability (unknown: no liability)",
            "council_tax_reduction",
        ),
        _flag(
            "any_social_care",
            "Any social care",
            "A resident is an adult social care client in the service period",
            "any_social_care",
        ),
        _flag(
            "any_ltc",
            "Any long-term condition",
            "A resident is on a GP condition register",
            "people_with_ltc > 0",
        ),
        _flag(
            "any_emergency_admission",
            "Any emergency admission",
            "A resident had an emergency admission " + _HOSPITAL_CAVEAT,
            "people_with_emergency_admission > 0",
        ),
    ),
    measures=(
        Measure("residents", "Residents", "People living in the household", "residents"),
        Measure("adults", "Adults", "Residents aged 18+", "adults"),
        Measure("children", "Children", "Residents under 18", "children_0_17"),
        Measure("people_65_plus", "People 65+", "Residents aged 65+", "people_65_plus"),
        Measure(
            "people_with_ltc",
            "People with a long-term condition",
            "Residents on a GP condition register",
            "people_with_ltc",
        ),
        Measure(
            "ae_attendances",
            "A&E attendances",
            "Residents' A&E attendances " + _HOSPITAL_CAVEAT,
            "ae_attendances",
        ),
        Measure(
            "emergency_admissions",
            "Emergency admissions",
            "Residents' emergency admissions " + _HOSPITAL_CAVEAT,
            "emergency_admissions",
        ),
    ),
)

RESIDENTS = Dataset(
    name="residents",
    label="Residents",
    unit="people",
    description="People living at a household or communal establishment on the reference "
    "date, with their household's circumstances, conditions and hospital use.",
    source="person_analysis",
    key="person_id",
    dimensions=(
        Dimension("sex", "Sex", "M or F as most often recorded", "sex", ("F", "M", UNKNOWN)),
        Dimension(
            "age_band",
            "Age band",
            "Age band on the reference date (the policy's bands)",
            "age_band",
        ),
        Dimension(
            "age_group",
            "Age group",
            "Broad age group on the reference date",
            "age_group",
            ("00-04", "05-15", "16-17", "18-64", "65-84", "85+", UNKNOWN),
        ),
        Dimension(
            "broad_age",
            "Broad age",
            "Children, working age, older people",
            "CASE WHEN age_group IN ('00-04', '05-15', '16-17') THEN '00-17' "
            "WHEN age_group = '18-64' THEN '18-64' "
            "WHEN age_group IN ('65-84', '85+') THEN '65+' END",
            ("00-17", "18-64", "65+", UNKNOWN),
        ),
        *_GEOGRAPHY,
        Dimension(
            "household_type",
            "Household type",
            "The household's type, or communal_establishment",
            "household_type",
            (*_HOUSEHOLD_TYPES, "communal_establishment"),
        ),
        Dimension(
            "living_arrangement",
            "Living arrangement",
            "Living alone, with others, or in a communal establishment (care home, hostel)",
            "CASE WHEN lives_in_communal_establishment THEN 'communal_establishment' "
            "WHEN living_alone THEN 'living_alone' ELSE 'living_with_others' END",
            ("living_alone", "living_with_others", "communal_establishment"),
        ),
        Dimension(
            "tenure",
            "Tenure",
            "The household's tenure (communal: not a private household)",
            "CASE WHEN lives_in_communal_establishment THEN 'communal_establishment' "
            "ELSE tenure END",
            (*_TENURES, "communal_establishment"),
        ),
        Dimension(
            "household_size",
            "Household size",
            "Residents of the household or establishment (6+ together)",
            _size("household_residents"),
            _SIZES,
        ),
        _flag(
            "overcrowded",
            "Overcrowded",
            "The household is overcrowded by the bedroom standard; unknown outside social "
            "rented homes",
            "overcrowded",
        ),
        *(
            _flag(
                f"ltc_{code}",
                name,
                f"On a GP {name.lower()} register (unknown: no GP record)",
                f"ltc_{code}",
            )
            for code, name in _LTC
        ),
        _flag(
            "ltc_any",
            "Any long-term condition",
            "On any of the seven registers (unknown: no GP record)",
            "ltc_any",
        ),
        Dimension(
            "ltc_count",
            "Long-term conditions",
            "Number of the seven registers the person is on (unknown: no GP record)",
            "CASE WHEN ltc_count >= 3 THEN '3+' ELSE CAST(ltc_count AS VARCHAR) END",
            ("0", "1", "2", "3+", UNKNOWN),
        ),
        _flag(
            "receives_benefits", "Receives benefits", "HB or CTR on the date", "receives_benefits"
        ),
        _flag("housing_benefit", "Housing benefit", "HB on the date", "housing_benefit"),
        _flag("social_tenant", "Social tenant", "Named on a council tenancy", "social_tenant"),
        _flag(
            "social_care_client",
            "Social care client",
            "An adult social care service overlapping the service period",
            "social_care_client",
        ),
        _flag(
            "had_emergency_admission",
            "Had an emergency admission",
            "At least one emergency admission " + _HOSPITAL_CAVEAT,
            "emergency_admissions > 0",
        ),
        _flag(
            "had_ae_attendance",
            "Had an A&E attendance",
            "At least one A&E attendance " + _HOSPITAL_CAVEAT,
            "ae_attendances > 0",
        ),
    ),
    measures=(
        Measure(
            "ae_attendances",
            "A&E attendances",
            "A&E attendances " + _HOSPITAL_CAVEAT,
            "ae_attendances",
        ),
        Measure(
            "emergency_admissions",
            "Emergency admissions",
            "Emergency admissions " + _HOSPITAL_CAVEAT,
            "emergency_admissions",
        ),
    ),
)

HOUSEHOLD_SNAPSHOTS = Dataset(
    name="household_snapshots",
    label="Households over time",
    unit="households",
    description="Private households on the reference date and each earlier anniversary of "
    "it, rebuilt from the residence spells (ages shifted to each date).",
    source="household_snapshots",
    key="household_id",
    dimensions=(
        Dimension("as_at_date", "Date", "The snapshot's date", "CAST(as_at_date AS VARCHAR)"),
        Dimension(
            "years_before_reference",
            "Years before the reference date",
            "0 = the reference date, 1 = a year earlier, ...",
            "CAST(years_before_reference AS VARCHAR)",
            tuple(str(y) for y in range(11)),
        ),
        *(d for d in _GEOGRAPHY if d.name != "msoa"),
        Dimension(
            "household_type",
            "Household type",
            "The household's type on that date",
            "household_type",
            _HOUSEHOLD_TYPES,
        ),
        Dimension(
            "household_size",
            "Household size",
            "Residents (6+ together)",
            _size("residents"),
            _SIZES,
        ),
        _flag("living_alone", "Living alone", "One resident", "living_alone"),
        _flag(
            "living_alone_65_plus",
            "One person aged 65+",
            "One resident, aged 65+",
            "living_alone AND people_65_plus = 1",
        ),
        _flag("lone_parent", "Lone parent", "As households", "lone_parent"),
        _flag("multigenerational", "Multigenerational", "As households", "multigenerational"),
    ),
    measures=(
        Measure("residents", "Residents", "People living in the household", "residents"),
        Measure("people_65_plus", "People 65+", "Residents aged 65+", "people_65_plus"),
        Measure(
            "emergency_admissions",
            "Emergency admissions",
            "Residents' emergency admissions in the 12 months to the date (withheld where the "
            "hospital extract does not cover them)",
            "emergency_admissions",
        ),
        Measure(
            "ae_attendances",
            "A&E attendances",
            "Residents' A&E attendances in the 12 months to the date (as emergency admissions)",
            "ae_attendances",
        ),
    ),
)

DATASETS: tuple[Dataset, ...] = (HOUSEHOLDS, RESIDENTS, HOUSEHOLD_SNAPSHOTS)
"""Every dataset analysts may tabulate, in catalogue order."""


def get_dataset(name: str) -> Dataset:
    for d in DATASETS:
        if d.name == name:
            return d
    raise TableSpecError(f"no dataset {name!r}: choose from {', '.join(d.name for d in DATASETS)}")


def catalogue_markdown(named: list[tuple[str, str, str]] | None = None) -> str:
    """`docs/table-builder.md`: every dataset, dimension and measure, from this declaration
    (and the named questions as name, title, table text). Written by
    `python -m uprnlink.publish.datasets`; a test fails when the file is stale."""
    out = [
        "# The table builder: what may be tabulated",
        "",
        "Generated from `src/uprnlink/publish/datasets.py` by "
        "`.venv/bin/python -m uprnlink.publish.datasets > docs/table-builder.md`; do not edit.",
        "The same catalogue, with each release's categories, is `uprnlink catalogue`, "
        "`GET /api/catalogue` and the portal's Catalogue page. How tables are protected: "
        "[design](design.md#the-table-builder-and-cell-key-perturbation), "
        "[roles](../governance/roles.md).",
        "",
        "Measures: `count` (always shown), `sum:MEASURE`, `mean:MEASURE` (per unit), "
        "`per_1000:MEASURE` (per 1,000 units), `per_1000:MEASURE/MEASURE`, "
        "`count_where:DIMENSION=CATEGORY` (the units of the cell in that category) and "
        "`percent_where:DIMENSION=CATEGORY` (their share).",
        "",
    ]
    for ds in DATASETS:
        out += [
            f"## {ds.label} (`{ds.name}`)",
            "",
            f"One unit: a {ds.unit_one}. {ds.description}",
            "",
        ]
        out += ["| dimension | label | meaning | categories |", "| --- | --- | --- | --- |"]
        for d in ds.dimensions:
            cats = ", ".join(d.categories) if d.categories else "the values found at publish"
            out.append(f"| `{d.name}` | {d.label} | {d.description} | {cats} |")
        if ds.measures:
            out += ["", "| measure | label | meaning |", "| --- | --- | --- |"]
            out += [f"| `{m.name}` | {m.label} | {m.description} |" for m in ds.measures]
        out.append("")
    if named:
        out += ["## Named questions", "", "| name | question | table |", "| --- | --- | --- |"]
        out += [f"| `{n}` | {title} | {table} |" for n, title, table in named]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover - writes the docs page
    from uprnlink.publish.queries import list_queries

    print(
        catalogue_markdown(
            [
                (q.name, q.title, "; ".join(f"{k}: {v}" for k, v in q.spec.to_dict().items()))
                for q in list_queries()
            ]
        ),
        end="",
    )
