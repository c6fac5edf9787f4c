"""Publishing: policy-driven suppression, identifier guard, self-contained database."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.errors import PublishError
from uprnlink.publication import PublicationMetadata
from uprnlink.publish.database import (
    DisclosurePolicy,
    DuckDBLimits,
    check_deidentified,
    connect_database,
    read_policy,
    write_analyst_database,
    write_database,
)
from uprnlink.publish.stage import duckdb_limits
from uprnlink.settings import PROJECT_ROOT


def test_policy_file_drives_the_threshold(tmp_path: Path) -> None:
    assert read_policy(PROJECT_ROOT / "governance" / "policy.toml").min_count == 10
    p = tmp_path / "policy.toml"
    p.write_text("[disclosure]\nmin_count = 5\nsuppress_zero = true\n")
    policy = read_policy(p)
    assert policy == DisclosurePolicy(min_count=5, suppress_zero=True)
    p.write_text("[disclosure]\nmin_count = 0\n")
    with pytest.raises(PublishError):
        read_policy(p)


@pytest.mark.parametrize("min_count,suppress_zero", [(10, False), (5, False), (8, True)])
def test_suppression_sql_hides_exactly_the_small_counts(
    min_count: int, suppress_zero: bool
) -> None:
    policy = DisclosurePolicy(min_count=min_count, suppress_zero=suppress_zero)
    values = list(range(0, 30))
    shown = duckdb.sql(
        f"SELECT v, {policy.suppress_sql('v')} AS s FROM (SELECT unnest(?) AS v)",
        params=[values],
    ).fetchall()
    for v, s in shown:
        hidden = (1 <= v < min_count) or (suppress_zero and v == 0)
        assert (s is None) == hidden, (v, s)


def test_identifier_columns_are_refused() -> None:
    check_deidentified({"ok": pl.DataFrame({"person_id": ["P1"], "age": [40]})})
    for col in ("nhs_number", "uprn", "forename", "dob", "uprn_token"):
        with pytest.raises(PublishError, match=col):
            check_deidentified({"person": pl.DataFrame({"person_id": ["P1"], col: ["x"]})})


def _rows(db: Path) -> dict[str, pl.DataFrame]:
    """Every table of a database, its rows sorted (content, not layout)."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for schema, name in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall():
            df = pl.from_arrow(con.sql(f'FROM "{schema}"."{name}"').to_arrow_table())
            assert isinstance(df, pl.DataFrame)
            cols = sorted(df.columns)
            out[f"{schema}.{name}"] = df.select(cols).sort(cols, nulls_last=True)
    return out


def test_publish_databases_are_built_within_a_memory_cap_with_the_same_rows(
    small_run: PipelineRun, tmp_path: Path
) -> None:
    settings = small_run.settings
    # The run published under the run's DuckDB limits, spilling to the work zone (never to the
    # staging folder, which goes live as it is).
    limits = duckdb_limits(settings)
    assert limits.memory_limit == settings.linkage.memory_limit
    assert limits.threads == settings.linkage.threads
    assert limits.temp_dir.is_dir()
    assert limits.temp_dir.is_relative_to(settings.work_dir)
    assert not list(settings.out_dir.rglob("*.tmp"))
    capped = DuckDBLimits("32MB", 1, tmp_path / "spill")
    with connect_database(tmp_path / "probe.duckdb", capped) as con:
        setting = "SELECT current_setting(?)"
        assert con.execute(setting, ["memory_limit"]).fetchone() == ("30.5 MiB",)
        assert con.execute(setting, ["threads"]).fetchone() == (1,)
        assert con.execute(setting, ["temp_directory"]).fetchone() == (str(tmp_path / "spill"),)

    linked = settings.linked_dir
    parquet = {p.stem: p for p in sorted(linked.glob("*.parquet"))}
    metadata = PublicationMetadata.from_dict(json.loads((linked / "run_metadata.json").read_text()))
    policy = read_policy(settings.policy_path)
    engineer, analyst = tmp_path / "engineer.duckdb", tmp_path / "uprnlink.duckdb"
    with duckdb.connect(str(settings.engineer_database_path), read_only=True) as con:
        keys = pl.from_arrow(con.sql("FROM linked.record_keys").to_arrow_table())
    assert isinstance(keys, pl.DataFrame)
    write_database(engineer, parquet, metadata, policy, record_keys=keys, limits=capped)
    write_analyst_database(engineer, analyst, policy, limits=capped)

    published = _rows(settings.database_path)
    rebuilt = _rows(analyst)
    assert sorted(rebuilt) == sorted(published)
    for name, rows in published.items():
        assert rebuilt[name].equals(rows), name
