"""Household composition rules, written once as SQL expressions.

The reference-date tables (polars, `pl.sql_expr`) and the as-at macros (DuckDB) both render
these same texts, so a household on the reference date has the same size, make-up and type
whichever path computed it. Keep each expression in the SQL both engines read: CASE, CAST,
COALESCE, COUNT/SUM/MIN/MAX, comparisons; no FILTER clauses, no engine-specific functions.

Inputs: one row per resident with `age` (whole years on the date, NULL unknown) and
`youngest` (the household's lowest age, a window over the household).
"""

from __future__ import annotations

import polars as pl

GENERATION_GAP = 18  # years between the generations of a multigenerational household


def _n(condition: str) -> str:
    return f"CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS INTEGER)"


#: Per-household aggregates over the residents (name -> SQL aggregate).
AGGREGATES: dict[str, str] = {
    "residents": "CAST(COUNT(*) AS INTEGER)",
    "adults": _n("age >= 18"),
    "children_0_17": _n("age < 18"),
    "children_0_4": _n("age <= 4"),
    "children_5_15": _n("age BETWEEN 5 AND 15"),
    "children_0_15": _n("age <= 15"),
    "people_16_17": _n("age BETWEEN 16 AND 17"),
    "people_65_plus": _n("age >= 65"),
    "people_85_plus": _n("age >= 85"),
    "age_unknown": _n("age IS NULL"),
    "youngest_age": "MIN(age)",
    "oldest_age": "MAX(age)",
    # The youngest resident at least a generation older than the youngest (the middle one).
    "middle_age": f"MIN(CASE WHEN age >= youngest + {GENERATION_GAP} THEN age END)",
}

#: Household measures from the aggregates, in order (a rule may use the ones before it).
#: Definitions: data dictionary, "Household definitions".
DERIVED: dict[str, str] = {
    "living_alone": "residents = 1",
    "lone_adult_with_children": "adults = 1 AND children_0_17 > 0",
    "improbable_size": "residents > 10",
    "multigenerational": f"COALESCE(oldest_age >= middle_age + {GENERATION_GAP}, FALSE)",
    "lone_parent": "adults = 1 AND children_0_15 >= 1 AND age_unknown = 0",
    "household_type": """CASE WHEN residents = 1 THEN
         CASE WHEN oldest_age >= 65 THEN 'one_person_65_plus'
              WHEN oldest_age IS NOT NULL THEN 'one_person_under_65'
              ELSE 'unclassified' END
     WHEN age_unknown > 0 THEN 'unclassified'
     WHEN multigenerational THEN 'multigenerational'
     WHEN lone_parent THEN 'lone_parent'
     WHEN children_0_15 > 0 AND adults >= 2 THEN 'adults_with_children'
     WHEN youngest_age >= 65 THEN 'all_aged_65_plus'
     WHEN children_0_15 = 0 THEN 'adults_no_children'
     ELSE 'unclassified' END""",
}


def aggregates_sql() -> str:
    """The aggregates as a SELECT list (for a GROUP BY household)."""
    return ",\n           ".join(f"{expr} AS {name}" for name, expr in AGGREGATES.items())


def derived_sql() -> list[str]:
    """The derived measures, one SELECT list per step (each may use the previous ones)."""
    return [f"{expr} AS {name}" for name, expr in DERIVED.items()]


def derived_expr(name: str) -> pl.Expr:
    """One derived measure as a polars expression (same SQL text)."""
    return pl.sql_expr(DERIVED[name]).alias(name)


def household_composition_frame(residents: pl.DataFrame, key: str) -> pl.DataFrame:
    """Composition of every household in `residents` (rows: `key`, `age`, anything else):
    the aggregates, then each derived measure in order."""
    with_youngest = residents.with_columns(pl.col("age").min().over(key).alias("youngest"))
    out = with_youngest.group_by(key).agg(
        pl.sql_expr(expr).alias(name) for name, expr in AGGREGATES.items()
    )
    for name in DERIVED:
        out = out.with_columns(derived_expr(name))
    return out
