"""Linkage on Splink's Spark backend (local mode) finds the same people as on DuckDB.

The model is trained once on DuckDB; Spark then predicts and the pairs are clustered with the
same model JSON, so any difference would come from how the two engines evaluate the comparison
SQL (Splink translates it with sqlglot). Skipped without pyspark (`pip install '.[spark]'`) or
Java 17.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import copy_tree

pytest.importorskip("pyspark")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17 on the PATH"),
]


@pytest.fixture(scope="module")
def spark_session() -> Iterator[None]:
    """Stop the local Spark session (and its JVM's work) when the module is done."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    # py4j logs "Closing down clientserver connection" when its objects are collected, which
    # can be during a later test, through a handler holding that test's closed stream: let it
    # happen now, and keep py4j's own chatter off the console.
    import gc
    import logging

    logging.getLogger("py4j").setLevel(logging.WARNING)
    gc.collect()


def _trusted_records(population: Path, root: Path) -> tuple[Any, pl.DataFrame]:
    from uprnlink.ingest.stage import ingest_person_source, ingest_reference_data
    from uprnlink.privacy.keys import load_run_key as load_key
    from uprnlink.privacy.trusted import read_trusted_records
    from uprnlink.settings import read_settings

    config = copy_tree(population, root)  # the shared population (300 people)
    ingest_reference_data(str(config))
    settings = read_settings(config)
    for source in settings.sources:
        ingest_person_source(str(config), source)
    return settings, read_trusted_records(settings, load_key(settings))


def _partition(clusters: pl.DataFrame) -> set[frozenset[str]]:
    groups = clusters.group_by("person_id").agg(pl.col("unique_id"))
    return {frozenset(ids) for ids in groups.get_column("unique_id").to_list()}


def test_spark_backend_finds_the_same_people_as_duckdb(
    population: Path, tmp_path: Path, spark_session: None
) -> None:
    from uprnlink.linkage.predict import link_people
    from uprnlink.linkage.stage import read_listings
    from uprnlink.privacy.keys import load_run_key

    settings, records = _trusted_records(population, tmp_path)
    listings = read_listings(settings, load_run_key(settings), records)
    linkage = replace(settings.linkage, memory_limit="2GB", threads=2)
    duckdb = link_people(records, linkage, work_dir=tmp_path / "duckdb", listings=listings)

    started = time.perf_counter()
    spark = link_people(
        records,
        replace(linkage, backend="spark"),
        work_dir=tmp_path / "spark",
        model=duckdb.model,
        listings=listings,
    )
    print(f"spark predict + cluster: {time.perf_counter() - started:.1f} s")  # shown with -s

    assert not spark.model_trained and spark.model == duckdb.model
    # The same candidate pairs from every blocking rule, the same pairs above the threshold...
    assert spark.blocking == duckdb.blocking
    assert spark.pairs_above_threshold == duckdb.pairs_above_threshold
    # ... and so exactly the same people (partitions of the records), with the same ids.
    assert _partition(spark.clusters) == _partition(duckdb.clusters)
    assert spark.clusters.sort("unique_id").equals(duckdb.clusters.sort("unique_id"))
    # The cannot-link rules run after scoring, in polars: the same splits on either engine.
    assert spark.cannot_link is not None and duckdb.cannot_link is not None
    assert {k: v for k, v in spark.cannot_link.items() if k != "seconds"} == {
        k: v for k, v in duckdb.cannot_link.items() if k != "seconds"
    }
    assert not list((tmp_path / "spark" / "spark").glob("run-*"))  # exchange files removed
