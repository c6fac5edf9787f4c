"""Publish the de-identified dataset: Parquet files and the analysts' DuckDB database.

This is the only module that writes DuckDB files. Tables live in the `linked` schema (for
engineers); analysts query the views in `main`, where area counts are small-number suppressed
according to `governance/policy.toml`.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.dataset import AnalysisTables
from uprnlink.errors import PublishError

TABLES = ("person", "household", "membership", "service_events", "linkage_quality")
FORBIDDEN_COLUMNS = frozenset(
    {
        "forename",
        "surname",
        "middle_names",
        "dob",
        "nhs_number",
        "uprn",
        "record_id",
        "address_line_1",
        "postcode",
        "uprn_token",
        "nhs_token",
        "unique_id",
    }
)


@dataclass(frozen=True)
class DisclosurePolicy:
    """Small-number suppression rule from governance policy."""

    min_count: int = 10
    suppress_zero: bool = False

    def suppress_sql(self, expr: str) -> str:
        """SQL that shows `expr` only when it is safe to publish."""
        low = 0 if self.suppress_zero else 1
        return (
            f"CASE WHEN ({expr}) BETWEEN {low} AND {self.min_count - 1} THEN NULL ELSE ({expr}) END"
        )


def read_policy(path: Path) -> DisclosurePolicy:
    """The disclosure rule from a governance policy file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PublishError(f"governance policy not found: {path}") from None
    d = raw.get("disclosure", {})
    policy = DisclosurePolicy(
        min_count=int(d.get("min_count", 10)), suppress_zero=bool(d.get("suppress_zero", False))
    )
    if policy.min_count < 1:
        raise PublishError(f"{path}: disclosure.min_count must be at least 1")
    return policy


def check_deidentified(tables: dict[str, pl.DataFrame]) -> None:
    """Refuse to publish a table with a direct identifier column."""
    for name, df in tables.items():
        bad = FORBIDDEN_COLUMNS & set(df.columns)
        if bad:
            raise PublishError(f"table {name} has identifying column(s) {sorted(bad)}")


def write_linked_dataset(
    tables: AnalysisTables, linkage_quality: pl.DataFrame, out_dir: Path, metadata: dict[str, Any]
) -> dict[str, Path]:
    """Write each table as Parquet with run metadata in the file's key-value metadata."""
    frames = {
        "person": tables.person,
        "household": tables.household,
        "membership": tables.membership,
        "service_events": tables.service_events,
        "linkage_quality": linkage_quality,
    }
    check_deidentified(frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    kv = {"uprnlink": json.dumps(metadata, sort_keys=True, default=str)}
    paths = {}
    for name, df in frames.items():
        path = out_dir / f"{name}.parquet"
        df.write_parquet(path, metadata=kv)
        paths[name] = path
    (out_dir / "run_metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    return paths


def views_sql(policy: DisclosurePolicy) -> list[str]:
    """The analyst views, with suppression applied wherever a count is shown."""
    s = policy.suppress_sql
    return [
        """CREATE OR REPLACE VIEW households AS
        SELECT household_id, reference_date, lsoa, msoa, ward, imd_decile, property_class,
               tenure, tenancy_type, council_tax_band, council_tax_reduction,
               single_person_discount, bedrooms, residents, adults, children_0_17,
               children_0_4, children_5_15, people_65_plus, people_85_plus, age_unknown,
               living_alone, lone_adult_with_children, improbable_size, people_with_ltc,
               any_benefits, any_social_care, ae_attendances, emergency_admissions
        FROM linked.household WHERE NOT is_communal""",
        """CREATE OR REPLACE VIEW communal_establishments AS
        SELECT household_id AS establishment_id, reference_date, lsoa, ward, imd_decile,
               property_class, residents, people_65_plus, people_85_plus
        FROM linked.household WHERE is_communal""",
        """CREATE OR REPLACE VIEW people AS
        SELECT person_id, sex, age, age_band, household_id, lives_in_communal_establishment,
               lsoa, msoa, ward, imd_decile, died_before_reference_date,
               ltc_asthma, ltc_copd, ltc_diabetes, ltc_chd, ltc_hypertension, ltc_depression,
               ltc_dementia, ltc_any, ae_attendances, emergency_admissions,
               receives_benefits, social_tenant, social_care_client,
               in_council_tax, in_housing_tenancies, in_benefits_claims,
               in_adult_social_care, in_gp_registrations, in_hospital_activity
        FROM linked.person""",
        f"""CREATE OR REPLACE VIEW area_summary AS
        WITH h AS (
            SELECT lsoa, ward, imd_decile,
                   count(*) AS households,
                   sum(residents)::BIGINT AS residents,
                   count(*) FILTER (WHERE living_alone AND people_65_plus = 1) AS people_65_plus_living_alone,
                   sum(emergency_admissions)::BIGINT AS emergency_admissions,
                   sum(ae_attendances)::BIGINT AS ae_attendances
            FROM households GROUP BY ALL)
        SELECT lsoa, ward, imd_decile,
               {s("households")} AS households,
               {s("residents")} AS residents,
               {s("people_65_plus_living_alone")} AS people_65_plus_living_alone,
               {s("emergency_admissions")} AS emergency_admissions,
               {s("ae_attendances")} AS ae_attendances,
               CASE WHEN ({s("residents")}) IS NULL OR ({s("emergency_admissions")}) IS NULL THEN NULL
                    ELSE round(1000.0 * emergency_admissions / residents, 1) END
                    AS emergency_admissions_per_1000
        FROM h ORDER BY lsoa""",
        f"""CREATE OR REPLACE VIEW deprivation_summary AS
        WITH h AS (
            SELECT imd_decile, tenure,
                   count(*) AS households, sum(residents)::BIGINT AS residents,
                   sum(emergency_admissions)::BIGINT AS emergency_admissions,
                   sum(ae_attendances)::BIGINT AS ae_attendances
            FROM households GROUP BY ALL)
        SELECT imd_decile, tenure,
               {s("households")} AS households,
               {s("residents")} AS residents,
               {s("emergency_admissions")} AS emergency_admissions,
               {s("ae_attendances")} AS ae_attendances,
               CASE WHEN ({s("residents")}) IS NULL OR ({s("emergency_admissions")}) IS NULL THEN NULL
                    ELSE round(1000.0 * emergency_admissions / residents, 1) END
                    AS emergency_admissions_per_1000
        FROM h ORDER BY imd_decile, tenure""",
        """CREATE OR REPLACE VIEW run_info AS SELECT * FROM linked.run_metadata""",
    ]


def write_database(
    db_path: Path, parquet: dict[str, Path], metadata: dict[str, Any], policy: DisclosurePolicy
) -> None:
    """Build the DuckDB database in a temporary file, then move it into place in one step."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute("CREATE SCHEMA linked")
        for name, path in parquet.items():
            con.execute(f"CREATE TABLE linked.{name} AS SELECT * FROM read_parquet(?)", [str(path)])
        meta = pl.DataFrame(
            {
                "key": list(metadata),
                "value": [json.dumps(v, default=str) for v in metadata.values()],
            }
        )
        con.register("meta_df", meta.to_arrow())
        con.execute("CREATE TABLE linked.run_metadata AS SELECT * FROM meta_df")
        con.unregister("meta_df")
        for sql in views_sql(policy):
            con.execute(sql)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, db_path)


def replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written staging folder into place, keeping the old one until it is done."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    if old.exists():
        shutil.rmtree(old)
