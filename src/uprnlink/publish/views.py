"""The analysts' views, each declared once, as ehrQL declares its tables.

A `View` names its columns in order with their DuckDB types, the relation it reads and the
roles the shipped governance policy grants it to. Everything else is derived from the
declarations: the `CREATE VIEW` statements (`View.sql`), the `VIEWS` tuple the publisher,
the query guard and the portal read, the `COMMENT ON` statements (`View.comment_sql`, with the
words from the data dictionary's section of the same name), the dictionary check
(`undocumented`) and each role's grants (`declared_grants`). The prose (what a view and each
column mean, their caveats) stays in `data-dictionary.md`, where analysts read it.

Column types are declared once per published table (`HOUSEHOLD_TYPES`, `PERSON_TYPES`, ...)
and views pick their columns by name, so one column has one type wherever it is shown. The
`people` view's `in_<source>` columns come from the source registry (`uprnlink.sources`): a
new source reaches the view without an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass

from uprnlink.households.tables import LTC_FLAGS
from uprnlink.publish.dictionary import read_dictionary
from uprnlink.publish.disclosure import Grouping
from uprnlink.sources import PERSON_SOURCES

__all__ = [
    "ANALYST_VIEWS",
    "SUMMARY_COUNTS",
    "SUMMARY_GROUPINGS",
    "SUMMARY_RATES",
    "Column",
    "View",
    "declared_grants",
    "people_view",
    "undocumented",
]


@dataclass(frozen=True)
class Column:
    """One column of a view: its name, DuckDB type and, when it is not the relation's column
    of the same name, the SQL expression it shows."""

    name: str
    type: str
    expr: str | None = None

    def select_sql(self) -> str:
        """The column as a SELECT item."""
        if self.expr is None or self.expr == self.name or self.expr.endswith(f".{self.name}"):
            return self.expr or self.name
        return f"{self.expr} AS {self.name}"


@dataclass(frozen=True)
class View:
    """An analyst view: name, columns in order, the relation it reads (`FROM ...`, with any
    join and filter) and the roles the shipped policy grants it to (data engineers have
    every view through `*`)."""

    name: str
    columns: tuple[Column, ...]
    body: str
    roles: tuple[str, ...] = ("analyst",)

    def sql(self) -> str:
        """The view's CREATE statement."""
        items = ",\n               ".join(c.select_sql() for c in self.columns)
        return f"CREATE OR REPLACE VIEW {self.name} AS\n        SELECT {items}\n        {self.body}"

    def comment_sql(self, kind: str) -> list[str]:
        """COMMENT ON the relation (`kind`: VIEW, or TABLE in the analysts' database) and each
        declared column, with the data dictionary's words; none where it has no section."""
        doc = read_dictionary().get(self.name)
        if doc is None:
            return []
        meaning = {c.name: c.comment for c in doc.columns}
        out = [f"COMMENT ON {kind} {self.name} IS {_quote(doc.summary)}"]
        out += [
            f'COMMENT ON COLUMN {self.name}."{c.name}" IS {_quote(meaning[c.name])}'
            for c in self.columns
            if c.name in meaning
        ]
        return out


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pick(types: dict[str, str], names: str) -> tuple[Column, ...]:
    """Columns by name (whitespace or comma separated), each with its declared type."""
    return tuple(Column(n, types[n]) for n in names.replace(",", " ").split())


#: The long-term condition flags a person carries, and whether any is set.
LTC_COLUMNS = (*LTC_FLAGS, "ltc_any")
_AREA = {
    "lsoa": "VARCHAR",
    "msoa": "VARCHAR",
    "ward": "VARCHAR",
    "imd_decile": "TINYINT",
    "property_class": "VARCHAR",
}
_COMPOSITION = {
    "residents": "INTEGER",
    "adults": "INTEGER",
    "children_0_4": "INTEGER",
    "children_5_15": "INTEGER",
    "children_0_15": "INTEGER",
    "people_16_17": "INTEGER",
    "children_0_17": "INTEGER",
    "people_65_plus": "INTEGER",
    "people_85_plus": "INTEGER",
    "age_unknown": "INTEGER",
    "living_alone": "BOOLEAN",
    "lone_parent": "BOOLEAN",
    "multigenerational": "BOOLEAN",
    "household_type": "VARCHAR",
    "improbable_size": "BOOLEAN",
}
#: The columns of `linked.household` the views show, with their types.
HOUSEHOLD_TYPES: dict[str, str] = {
    "household_id": "VARCHAR",
    "reference_date": "DATE",
    **_AREA,
    **_COMPOSITION,
    **dict.fromkeys(("tenure", "tenancy_type", "council_tax_band"), "VARCHAR"),
    **dict.fromkeys(("council_tax_reduction", "single_person_discount"), "BOOLEAN"),
    "bedrooms": "BIGINT",
    "lone_adult_with_children": "BOOLEAN",
    **dict.fromkeys(("any_benefits", "any_social_care", "housing_benefit"), "BOOLEAN"),
    **dict.fromkeys(("overcrowded", "under_occupied"), "BOOLEAN"),
    **dict.fromkeys(
        (
            "people_with_ltc",
            "people_with_2plus_ltc",
            "people_ltc_unknown",
            "ae_attendances",
            "emergency_admissions",
            "bedrooms_needed",
            "occupancy_rating",
            "residents_receiving_benefits",
            "residents_with_social_care",
            "people_with_ae",
            "people_with_emergency_admission",
        ),
        "INTEGER",
    ),
    "period_start": "DATE",
    "period_end": "DATE",
}
#: The columns of `linked.person` and `linked.person_analysis` the views show.
PERSON_TYPES: dict[str, str] = {
    "person_id": "VARCHAR",
    "household_id": "VARCHAR",
    "reference_date": "DATE",
    **dict.fromkeys(("sex", "age_band", "age_group"), "VARCHAR"),
    **{k: v for k, v in _AREA.items() if k != "property_class"},
    **dict.fromkeys(("lives_in_communal_establishment", "died_before_reference_date"), "BOOLEAN"),
    **dict.fromkeys(LTC_COLUMNS, "BOOLEAN"),
    "ltc_count": "TINYINT",
    "ae_attendances": "INTEGER",
    "emergency_admissions": "INTEGER",
    **dict.fromkeys(
        ("receives_benefits", "housing_benefit", "social_tenant", "social_care_client"), "BOOLEAN"
    ),
    **dict.fromkeys(("household_type", "tenure", "council_tax_band"), "VARCHAR"),
    "household_residents": "INTEGER",
    **dict.fromkeys(
        (
            "living_alone",
            "overcrowded",
            "household_any_benefits",
            "household_any_social_care",
        ),
        "BOOLEAN",
    ),
}
#: The columns of `linked.household_snapshots` (households on the snapshot dates).
SNAPSHOT_TYPES: dict[str, str] = {
    "household_id": "VARCHAR",
    "as_at_date": "DATE",
    **_AREA,
    **_COMPOSITION,
    "period_start": "DATE",
    "period_end": "DATE",
    "ae_attendances": "INTEGER",
    "emergency_admissions": "INTEGER",
    "years_before_reference": "BIGINT",
}

_PRIVATE = "FROM linked.household WHERE NOT is_communal"
_HOUSEHOLDS = View(
    "households",
    _pick(
        HOUSEHOLD_TYPES,
        """household_id reference_date lsoa msoa ward imd_decile property_class
        tenure tenancy_type council_tax_band council_tax_reduction
        single_person_discount bedrooms residents adults children_0_17
        children_0_4 children_5_15 people_65_plus people_85_plus age_unknown
        living_alone lone_adult_with_children improbable_size people_with_ltc
        any_benefits any_social_care ae_attendances emergency_admissions
        children_0_15 people_16_17 lone_parent multigenerational household_type
        bedrooms_needed occupancy_rating overcrowded under_occupied housing_benefit
        residents_receiving_benefits residents_with_social_care people_with_2plus_ltc
        people_with_ae people_with_emergency_admission""",
    ),
    _PRIVATE,
)
_HOUSEHOLD_COMPOSITION = View(
    "household_composition",
    _pick(
        HOUSEHOLD_TYPES,
        """household_id reference_date lsoa ward imd_decile residents adults
        children_0_4 children_5_15 children_0_15 people_16_17 children_0_17
        people_65_plus people_85_plus age_unknown living_alone lone_parent
        multigenerational household_type improbable_size""",
    ),
    _PRIVATE,
)
_HOUSEHOLD_CIRCUMSTANCES = View(
    "household_circumstances",
    _pick(
        HOUSEHOLD_TYPES,
        """household_id reference_date lsoa ward imd_decile property_class tenure
        tenancy_type council_tax_band council_tax_reduction single_person_discount
        bedrooms bedrooms_needed occupancy_rating overcrowded under_occupied
        any_benefits housing_benefit residents_receiving_benefits any_social_care
        residents_with_social_care""",
    ),
    _PRIVATE,
)
_HOUSEHOLD_HEALTH = View(
    "household_health",
    (
        *(
            Column(c.name, c.type, f"{'p' if c.name.startswith('period_') else 'h'}.{c.name}")
            for c in _pick(
                HOUSEHOLD_TYPES,
                """household_id reference_date period_start period_end residents
                people_with_ltc people_with_2plus_ltc people_ltc_unknown ae_attendances
                emergency_admissions people_with_ae people_with_emergency_admission""",
            )
        ),
        Column("ae_attendances_per_resident", "DOUBLE", "round(h.ae_attendances / h.residents, 3)"),
        Column(
            "emergency_admissions_per_resident",
            "DOUBLE",
            "round(h.emergency_admissions / h.residents, 3)",
        ),
    ),
    """FROM linked.household h CROSS JOIN linked.run_parameters p
        WHERE NOT h.is_communal""",
)
_COMMUNAL_ESTABLISHMENTS = View(
    "communal_establishments",
    (
        Column("establishment_id", "VARCHAR", "household_id"),
        *_pick(
            HOUSEHOLD_TYPES,
            """reference_date lsoa ward imd_decile property_class residents people_65_plus
            people_85_plus""",
        ),
    ),
    "FROM linked.household WHERE is_communal",
)


def people_view(sources: tuple[str, ...] = PERSON_SOURCES) -> View:
    """The `people` view: one `in_<source>` column per person source of the registry, in the
    registry's order, after the person's attributes, conditions and service use."""
    return View(
        "people",
        (
            *_pick(
                PERSON_TYPES,
                f"""person_id sex age_band household_id lives_in_communal_establishment
                lsoa msoa ward imd_decile died_before_reference_date
                {" ".join(LTC_COLUMNS)} ae_attendances emergency_admissions
                receives_benefits social_tenant social_care_client""",
            ),
            *(Column(f"in_{s}", "BOOLEAN") for s in sources),
        ),
        "FROM linked.person",
    )


_PERSON_ANALYSIS = View(
    "person_analysis",
    _pick(
        PERSON_TYPES,
        f"""person_id household_id reference_date lives_in_communal_establishment sex age_band
        age_group lsoa msoa ward imd_decile household_type tenure council_tax_band
        household_residents living_alone overcrowded household_any_benefits
        household_any_social_care {" ".join(LTC_COLUMNS)} ltc_count ae_attendances
        emergency_admissions
        receives_benefits housing_benefit social_tenant social_care_client""",
    ),
    "FROM linked.person_analysis",
)
_HOUSEHOLD_SNAPSHOTS = View(
    "household_snapshots",
    _pick(SNAPSHOT_TYPES, " ".join(SNAPSHOT_TYPES)),
    "FROM linked.household_snapshots",
)
_RUN_INFO = View(
    "run_info",
    (Column("key", "VARCHAR"), Column("value", "VARCHAR")),
    "FROM linked.run_metadata",
    roles=("analyst", "ig_lead", "output_checker"),
)

# ------------------------------------------------------------------------------ summaries
# Counts every summary shows (additive over households, so margins are sums of cells).
SUMMARY_COUNTS: dict[str, str] = {
    "households": "count(*)",
    "residents": "sum(residents)",
    "people_65_plus_living_alone": "count(*) FILTER (WHERE living_alone AND people_65_plus = 1)",
    "emergency_admissions": "sum(emergency_admissions)",
    "ae_attendances": "sum(ae_attendances)",
    "people_85_plus_living_alone": "count(*) FILTER (WHERE living_alone AND people_85_plus = 1)",
    "lone_parent_households": "count(*) FILTER (WHERE lone_parent)",
    "multigenerational_households": "count(*) FILTER (WHERE multigenerational)",
    "households_bedrooms_known": "count(bedrooms)",
    "overcrowded_households": "count(*) FILTER (WHERE overcrowded)",
    "people_with_ltc": "sum(people_with_ltc)",
    "households_with_social_care": "count(*) FILTER (WHERE any_social_care)",
}
# (rate, numerator, denominator, multiplier): computed from the published (rounded) counts.
SUMMARY_RATES = (
    ("emergency_admissions_per_1000", "emergency_admissions", "residents", 1000.0),
    ("ae_attendances_per_1000", "ae_attendances", "residents", 1000.0),
    ("overcrowded_pct", "overcrowded_households", "households_bedrooms_known", 100.0),
)
# Published summary -> its keys; unpublished margins are still protected (treated as known).
SUMMARY_GROUPINGS = (
    Grouping("area_summary", ("lsoa", "ward", "imd_decile")),
    Grouping("ward_summary", ("ward",)),
    Grouping("decile_summary", ("imd_decile",)),
    Grouping("deprivation_summary", ("imd_decile", "tenure")),
    Grouping("tenure_total", ("tenure",), published=False),
    Grouping("grand_total", (), published=False),
)


def summary_view(grouping: Grouping) -> View:
    """A published summary's view: its keys, every count and every rate, over the table
    protected at publish time (schema `summaries`)."""
    keys = ", ".join(grouping.dims)
    return View(
        grouping.name,
        (
            *_pick(HOUSEHOLD_TYPES, keys),
            *(Column(c, "BIGINT") for c in SUMMARY_COUNTS),
            *(Column(rate, "DOUBLE") for rate, *_ in SUMMARY_RATES),
        ),
        f"FROM summaries.{grouping.name} ORDER BY {keys} NULLS LAST",
    )


#: Every analyst view, in the order they are created and listed: record-level views (record
#: level, pseudonymised, not suppressed), run metadata, then the protected summaries.
ANALYST_VIEWS: tuple[View, ...] = (
    _HOUSEHOLDS,
    _HOUSEHOLD_COMPOSITION,
    _HOUSEHOLD_CIRCUMSTANCES,
    _HOUSEHOLD_HEALTH,
    _COMMUNAL_ESTABLISHMENTS,
    people_view(),
    _PERSON_ANALYSIS,
    _HOUSEHOLD_SNAPSHOTS,
    _RUN_INFO,
    *(summary_view(g) for g in SUMMARY_GROUPINGS if g.published),
)


def declared_grants(views: tuple[View, ...] = ANALYST_VIEWS) -> dict[str, tuple[str, ...]]:
    """Role -> the views declared for it, in declaration order."""
    out: dict[str, list[str]] = {}
    for view in views:
        for role in view.roles:
            out.setdefault(role, []).append(view.name)
    return {role: tuple(names) for role, names in out.items()}


def undocumented(views: tuple[View, ...] = ANALYST_VIEWS) -> list[str]:
    """Where the data dictionary and the declarations disagree, one line each: a view with no
    section, or a column missing, out of order or of another type than declared."""
    docs = read_dictionary()
    problems = []
    for view in views:
        doc = docs.get(view.name)
        if doc is None:
            problems.append(f"view {view.name}: no section in data-dictionary.md")
            continue
        declared = [(c.name, c.type) for c in view.columns]
        documented = [(c.name, c.type) for c in doc.columns]
        if declared != documented:
            problems.append(
                f"view {view.name}: declared columns {declared} != documented {documented}"
            )
    return problems
