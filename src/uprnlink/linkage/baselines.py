"""The baselines every run is scored against: deterministic rules and a plain Splink model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.linkage.backends import connect_duckdb
from uprnlink.linkage.clustering import connected_components
from uprnlink.linkage.model import check_records, has_pairs, model_json, to_polars
from uprnlink.linkage.predict import person_id_expr, with_person_ids
from uprnlink.settings import LinkageSettings

log = logging.getLogger(__name__)


BASELINE_COLUMNS = ("unique_id", "source_dataset", "forename", "surname", "dob", "postcode")


def deterministic_clusters(records: pl.DataFrame) -> pl.DataFrame:
    """Baseline: records are one person when they share (a) an NHS number token or (b) forename,
    surname, date of birth and UPRN token, closed transitively; returns unique_id, person_id."""
    check_records(records, ("unique_id", "forename", "surname", "dob", "uprn_token", "nhs_token"))
    rules = [["nhs_token"], ["forename", "surname", "dob", "uprn_token"]]
    edges = pl.concat(
        [
            records.drop_nulls(keys)
            .with_columns(pl.col("unique_id").min().over(keys).alias("a"))
            .select("a", pl.col("unique_id").alias("b"))
            .filter(pl.col("a") != pl.col("b"))
            for keys in rules
        ]
    )
    components = connected_components(records.get_column("unique_id"), edges)
    ids = (
        components.select("component")
        .unique()
        .with_columns(person_id_expr("component").alias("person_id"))
    )
    return records.select("unique_id").join(
        components.join(ids, on="component").select(pl.col("node").alias("unique_id"), "person_id"),
        on="unique_id",
        how="left",
    )


def plain_settings() -> Any:
    """The plain five-comparison Splink model commonly used as a starting point."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("forename"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=False),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("uprn_token"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("forename", "surname"),
            block_on("surname", "dob"),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def _train_plain(linker: Any, table: Any, settings: LinkageSettings, data: pl.DataFrame) -> Any:
    """The plain model's usual training on `table` (the registered `data`); returns the trained
    linker. A step whose rule finds no pairs (no dates of birth, say) is skipped, as a plain
    model's user would drop it."""
    from splink import block_on

    if has_pairs(data, ("forename", "surname", "dob")):
        linker.training.estimate_probability_two_random_records_match(
            [block_on("forename", "surname", "dob")], recall=0.7
        )
    linker.training.estimate_u_using_random_sampling(
        max_pairs=settings.max_pairs_u, seed=settings.seed
    )
    for rule in (("forename", "surname"), ("dob",)):
        if has_pairs(data, rule):
            linker = _em_session(linker, table, rule, settings)
        else:
            log.warning("plain Splink baseline: no pairs share %s: EM session skipped", rule)
    return linker


def _em_session(linker: Any, table: Any, rule: tuple[str, ...], settings: LinkageSettings) -> Any:
    """One EM session blocked on `rule`; returns the linker it trained. A session Splink cannot
    finish (an m estimated as exactly 0) is dropped: the linker is rebuilt, through Splink's
    public API, from the model saved before it (`save_model_to_json`)."""
    from splink import Linker, block_on

    saved = model_json(linker)
    try:
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(*rule), max_pairs=settings.max_pairs_em
        )
    except ValueError:
        log.warning("plain Splink baseline: EM session on %s did not converge", rule)
        # The database API's table cache is shared by every linker on it.
        linker.table_management.invalidate_cache()
        return Linker(table, saved, log_level=logging.ERROR)
    return linker


def plain_splink_clusters(
    records: pl.DataFrame, settings: LinkageSettings, work_dir: Path, threshold: float = 0.95
) -> pl.DataFrame:
    """Baseline: the plain model (u by random sampling, m by EM) clustered at `threshold` with
    Splink's own connected components; returns unique_id, person_id."""
    from splink import DuckDBAPI, Linker

    check_records(records, (*BASELINE_COLUMNS, "uprn_token"))
    data = records.select("unique_id", "forename", "surname", "dob", "postcode", "uprn_token")
    con = connect_duckdb(settings, work_dir / "duckdb_tmp")
    try:
        sdf = DuckDBAPI(con).register(data.to_arrow(), dataset_display_name="records")
        linker = Linker(sdf, plain_settings(), log_level=logging.ERROR)
        splink_log = logging.getLogger("splink")
        previous_level = splink_log.level
        splink_log.setLevel(logging.ERROR)
        con.execute("SET threads = 1")  # repeatable EM sums, as for the model (repeatable())
        try:
            linker = _train_plain(linker, sdf, settings, data)
        finally:
            splink_log.setLevel(previous_level)
            con.execute(f"SET threads = {int(settings.threads)}")
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold
        )
        clusters = to_polars(clustered).select("unique_id", "cluster_id")
    finally:
        con.close()
    return records.select("unique_id").join(with_person_ids(clusters), on="unique_id", how="left")
