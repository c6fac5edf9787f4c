"""Where Splink runs: an in-process DuckDB (the embedded default) or Spark (scale-out)."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.errors import LinkageError
from uprnlink.progress import duckdb_progress
from uprnlink.settings import LinkageSettings

log = logging.getLogger(__name__)


def connect_duckdb(settings: LinkageSettings, temp_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB capped at `memory_limit`, spilling to `temp_dir` beyond it."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{settings.memory_limit}'")
    con.execute(f"SET threads = {int(settings.threads)}")
    con.execute(f"SET temp_directory = '{temp_dir.as_posix()}'")
    con.execute("SET preserve_insertion_order = false")
    return con


class DuckDBLinkage:
    """Splink on an in-process DuckDB, capped at `memory_limit` and spilling to disk."""

    dialect = "duckdb"

    def __init__(self, settings: LinkageSettings, work_dir: Path) -> None:
        from splink import DuckDBAPI

        self.con = connect_duckdb(settings, work_dir / "duckdb_tmp")
        self.threads = int(settings.threads)
        self.db_api = DuckDBAPI(self.con)

    def register(self, frame: pl.DataFrame, name: str) -> Any:
        """Make a polars frame a Splink input table."""
        return self.db_api.register(frame.to_arrow(), dataset_display_name=name)

    def release(self, table: Any) -> None:
        """Forget a registered input table (and the memory behind it)."""
        self.con.unregister(table.physical_name)

    def progress(self, step: str) -> AbstractContextManager[None]:
        """Log DuckDB's progress through long queries while the block runs."""
        return duckdb_progress(self.con, step)

    @contextmanager
    def repeatable(self) -> Iterator[None]:
        """One thread while the block runs, so training gives bit-identical parameters.

        EM sums match probabilities over the sampled pairs; with several threads the order of
        the floating-point additions (and so the last digits of every m) varies between runs,
        which is enough to move a pair across the threshold and join or split two clusters.
        """
        self.con.execute("SET threads = 1")
        try:
            yield
        finally:
            self.con.execute(f"SET threads = {self.threads}")

    def scored(self, predictions: Any, threshold: float) -> tuple[dict[str, int], pl.DataFrame]:
        """Pairs scored per blocking rule (match_key) and the pairs at or above `threshold`
        (unique_id_l, unique_id_r, match_probability, match_weight)."""
        table = predictions.physical_name
        counts = self.con.execute(
            f"SELECT CAST(match_key AS VARCHAR), count(*) FROM {table} GROUP BY ALL"
        ).fetchall()
        above = pl.from_arrow(
            self.con.sql(
                f"SELECT unique_id_l, unique_id_r, match_probability, match_weight FROM {table} "
                f"WHERE match_probability >= {float(threshold)!r}"
            ).to_arrow_table()
        )
        assert isinstance(above, pl.DataFrame)
        return {str(k): int(n) for k, n in counts}, above

    def histogram(self, predictions: Any) -> pl.DataFrame:
        """Scored pairs per match-weight bin (for choosing the threshold from the data)."""
        from uprnlink.linkage.threshold import histogram_sql

        frame = pl.from_arrow(
            self.con.sql(histogram_sql(predictions.physical_name)).to_arrow_table()
        )
        assert isinstance(frame, pl.DataFrame)
        return frame

    def close(self) -> None:
        """Release the connection (and its spill files)."""
        self.con.close()


class SparkLinkage:
    """Splink on Spark: profiles go in and scored pairs come out as Parquet in `work_dir`.

    The session is the active one if there is one (spark-submit, a notebook on a cluster),
    otherwise a local session with `threads` cores and Splink's similarity functions jar.
    """

    dialect = "spark"

    def __init__(self, settings: LinkageSettings, work_dir: Path) -> None:
        from splink import SparkAPI

        # On a cluster, `spark_dir` must be a folder the driver and every executor see at the
        # same path (a shared mount); locally the linkage folder will do.
        base = Path(settings.spark_dir) if settings.spark_dir else work_dir / "spark"
        self.work_dir = base / f"run-{os.getpid()}-{secrets.token_hex(4)}"
        self.work_dir.mkdir(parents=True)
        self.spark = spark_session(settings, base)
        self.spark.sparkContext.setCheckpointDir((self.work_dir / "checkpoints").as_posix())
        self.db_api = SparkAPI(  # type: ignore[no-untyped-call]
            spark_session=self.spark, break_lineage_method="parquet"
        )

    def register(self, frame: pl.DataFrame, name: str) -> Any:
        """Write a polars frame as Parquet and register Spark's reading of it."""
        path = self.work_dir / f"{name}.parquet"
        frame.write_parquet(path)
        return self.db_api.register(
            self.spark.read.parquet(path.as_posix()), dataset_display_name=name
        )

    def release(self, table: Any) -> None:
        """Forget a registered input table."""
        self.spark.catalog.dropTempView(table.physical_name)

    def progress(self, step: str) -> AbstractContextManager[None]:
        """Spark reports its own stage progress (Spark UI); nothing to add here."""
        return nullcontext()

    def repeatable(self) -> AbstractContextManager[None]:
        """Spark's aggregation order is its own; training there is repeatable to about 1e-15."""
        return nullcontext()

    def scored(self, predictions: Any, threshold: float) -> tuple[dict[str, int], pl.DataFrame]:
        """Pairs scored per blocking rule (match_key) and the pairs at or above `threshold`
        (unique_id_l, unique_id_r, match_probability, match_weight)."""
        from pyspark.sql import functions as F

        frame = predictions.as_spark_dataframe()
        counts = {
            str(row[0]): int(row[1])
            for row in frame.groupBy(F.col("match_key").cast("string")).count().collect()
        }
        path = self.work_dir / f"{predictions.physical_name}_above.parquet"
        frame.filter(F.col("match_probability") >= threshold).select(
            "unique_id_l", "unique_id_r", "match_probability", "match_weight"
        ).write.mode("overwrite").parquet(path.as_posix())
        return counts, pl.read_parquet(path / "*.parquet")

    def histogram(self, predictions: Any) -> pl.DataFrame:
        """Scored pairs per match-weight bin (for choosing the threshold from the data)."""
        from pyspark.sql import functions as F

        from uprnlink.linkage.threshold import BIN_WIDTH

        rows = (
            predictions.as_spark_dataframe()
            .groupBy((F.floor(F.col("match_weight") / BIN_WIDTH) * BIN_WIDTH).alias("weight"))
            .agg(
                F.count("*").alias("pairs"),
                F.sum("match_probability").alias("expected_matches"),
            )
            .collect()
        )
        return pl.DataFrame(
            [(float(r[0]), int(r[1]), float(r[2])) for r in rows],
            schema={"weight": pl.Float64, "pairs": pl.Int64, "expected_matches": pl.Float64},
            orient="row",
        )

    def close(self) -> None:
        """Keep the session (it may be shared); remove this run's Parquet exchange files."""
        self.spark.catalog.clearCache()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def spark_session(settings: LinkageSettings, work_dir: Path) -> Any:
    """The active Spark session, or a local one configured from the linkage settings."""
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = {
        "spark.jars": similarity_jar_location(),
        "spark.driver.memory": spark_memory(settings.memory_limit),
        "spark.sql.shuffle.partitions": str(max(2, 2 * settings.threads)),
        "spark.default.parallelism": str(max(2, 2 * settings.threads)),
        "spark.local.dir": (work_dir / "local").as_posix(),
        # Spark creates its (here unused) warehouse folder in the working directory otherwise.
        "spark.sql.warehouse.dir": (work_dir / "warehouse").as_posix(),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        **settings.spark_conf,
    }
    builder = SparkSession.builder.appName("uprnlink").master(
        settings.spark_master or f"local[{int(settings.threads)}]"
    )
    for name, value in conf.items():
        builder = builder.config(name, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_memory(limit: str) -> str:
    """A DuckDB-style memory limit ("8GB", "512MiB") as a JVM size for Spark ("8g", "512m")."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])i?B?\s*", limit, flags=re.IGNORECASE)
    if not match:
        raise LinkageError(f"[linkage] memory_limit {limit!r} is not a size such as '8GB'")
    number, unit = float(match.group(1)), match.group(2).lower()
    factor = {"k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}[unit]
    return f"{max(1, round(number * factor / 1024))}m"


def linkage_backend(settings: LinkageSettings, work_dir: Path) -> DuckDBLinkage | SparkLinkage:
    """The engine `[linkage] backend` names."""
    if settings.backend == "spark":
        try:
            return SparkLinkage(settings, work_dir)
        except ImportError as exc:
            raise LinkageError(
                "[linkage] backend = 'spark' needs pyspark: pip install 'uprnlink[spark]'"
            ) from exc
    return DuckDBLinkage(settings, work_dir)
