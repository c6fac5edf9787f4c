"""Probabilistic linkage and deduplication of people across all sources with Splink.

This is the only module that imports Splink. Records arrive pseudonymised: names, date of
birth, sex and postcode are the quasi-identifiers; UPRN and NHS number come as keyed tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.clustering import cluster_records
from uprnlink.errors import LinkageError
from uprnlink.settings import LinkageSettings

log = logging.getLogger(__name__)

LINKAGE_COLUMNS = (
    "unique_id",
    "source_dataset",
    "forename",
    "surname",
    "dob",
    "sex",
    "postcode",
    "uprn_token",
    "nhs_token",
)
PERIOD_COLUMNS = ("start_date", "end_date")
# Hospital activity dates are visits, not stays at an address.
NON_RESIDENCE_SOURCES = ("hospital_activity",)
MODEL_VERSION = "uprnlink-model/1"
VARIANTS_PATH = Path(__file__).parent / "data" / "name_variants.csv"


@dataclass
class LinkageResult:
    """Clusters (record -> person) and what it took to get them."""

    clusters: pl.DataFrame  # unique_id, source_dataset, person_id
    records: int
    people: int
    candidate_pairs: int
    pairs_above_threshold: int
    match_threshold: float
    model: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _address_comparison() -> Any:
    """One comparison for where a record places the person, so UPRN and postcode agreement
    (which always co-occur) are not counted twice as independent evidence."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    sector = "regexp_extract({c}, '^[A-Z]{{1,2}}[0-9][A-Z0-9]? [0-9]', 0)"
    district = "split_part({c}, ' ', 1)"
    return cl.CustomComparison(
        output_column_name="address",
        comparison_description="UPRN token, else postcode levels",
        comparison_levels=[
            cll.And(
                cll.Or(cll.NullLevel("uprn_token"), cll.Not(cll.NullLevel("uprn_token"))),
                cll.CustomLevel(
                    "(uprn_token_l IS NULL OR uprn_token_r IS NULL) AND "
                    "(postcode_l IS NULL OR postcode_r IS NULL)"
                ),
            ).configure(is_null_level=True),
            cll.ExactMatchLevel("uprn_token").configure(label_for_charts="Same UPRN"),
            cll.CustomLevel(
                "postcode_l = postcode_r",
                label_for_charts="Same postcode (UPRN differs or unknown)",
            ),
            cll.CustomLevel(
                f"{sector.format(c='postcode_l')} = {sector.format(c='postcode_r')}",
                label_for_charts="Same postcode sector",
            ),
            cll.CustomLevel(
                f"{district.format(c='postcode_l')} = {district.format(c='postcode_r')}",
                label_for_charts="Same postcode district",
            ),
            cll.ElseLevel(),
        ],
    )


def _forename_comparison() -> Any:
    """Forename: exact (term-frequency adjusted), close spelling, or a known variant of the same
    name (BILL / WILLIAM, PEGGY / MARGARET) from the shipped UK forename variant list."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(
        output_column_name="forename",
        comparison_description="Forename with spelling and nickname levels",
        comparison_levels=[
            cll.NullLevel("forename"),
            cll.ExactMatchLevel("forename", term_frequency_adjustments=True),
            cll.JaroWinklerLevel("forename", 0.92),
            cll.ArrayIntersectLevel("forename_roots", 1).configure(
                label_for_charts="Known variant of the same forename"
            ),
            cll.JaroWinklerLevel("forename", 0.8),
            cll.ElseLevel(),
        ],
    )


def _move_comparison() -> Any:
    """Time-aware address evidence: one record's stay at an address ends the day before
    another's begins (a move: council tax liability closed and reopened elsewhere, or a care
    placement starting the day after a liability ends)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    consecutive = (
        "(move_next_l IS NOT NULL AND period_start_r BETWEEN period_end_l AND move_next_l) OR "
        "(move_next_r IS NOT NULL AND period_start_l BETWEEN period_end_r AND move_next_r)"
    )
    within_month = (
        "(move_next_l IS NOT NULL AND abs(datediff('day', period_end_l, period_start_r)) <= 31) OR "
        "(move_next_r IS NOT NULL AND abs(datediff('day', period_end_r, period_start_l)) <= 31)"
    )
    return cl.CustomComparison(
        output_column_name="move",
        comparison_description="One stay ends as the other begins",
        comparison_levels=[
            cll.CustomLevel(
                "period_start_l IS NULL OR period_start_r IS NULL OR "
                "(period_end_l IS NULL AND period_end_r IS NULL)"
            ).configure(is_null_level=True),
            cll.CustomLevel(
                consecutive, label_for_charts="Moved: one stay ends the day before the other starts"
            ),
            cll.CustomLevel(
                within_month, label_for_charts="One stay ends within a month of the other starting"
            ),
            cll.ElseLevel(),
        ],
    )


def period_exprs() -> list[pl.Expr]:
    """Residence period columns for the move comparison (null where a source has no stays)."""
    stay = ~pl.col("source_dataset").is_in(list(NON_RESIDENCE_SOURCES))
    return [
        pl.when(stay).then(pl.col("start_date")).alias("period_start"),
        pl.when(stay).then(pl.col("end_date")).alias("period_end"),
        pl.when(stay).then(pl.col("end_date") + timedelta(days=1)).alias("move_next"),
    ]


def forename_roots(forenames: pl.Series) -> pl.Series:
    """Each forename with the names it is a known variant of (BILLY -> [BILLY, WILLIAM])."""
    variants = pl.read_csv(VARIANTS_PATH).select(
        pl.col("name").str.to_uppercase(), pl.col("variant").str.to_uppercase()
    )
    roots = (
        variants.group_by("variant")
        .agg(pl.col("name").unique().sort())
        .rename({"variant": "forename", "name": "roots"})
    )
    frame = forenames.rename("forename").to_frame()
    joined = frame.join(roots, on="forename", how="left", maintain_order="left")
    return joined.select(
        pl.when(pl.col("forename").is_null())
        .then(None)
        .otherwise(pl.concat_list(pl.col("forename"), pl.col("roots").fill_null([])))
        .alias("forename_roots")
    ).get_column("forename_roots")


def _comparisons() -> list[Any]:
    import splink.comparison_library as cl

    # Starting m probabilities for each non-null level. EM re-estimates every level it can
    # observe; a level it cannot (true matches born ten years apart, say) keeps this prior
    # instead of Splink's uninformative default, which would under-penalise disagreement.
    return [
        _forename_comparison().configure(m_probabilities=[0.88, 0.04, 0.03, 0.02, 0.03]),
        cl.NameComparison("surname").configure(
            term_frequency_adjustments=True, m_probabilities=[0.9, 0.03, 0.02, 0.02, 0.03]
        ),
        cl.DateOfBirthComparison("dob", input_is_string=False).configure(
            m_probabilities=[0.95, 0.03, 0.008, 0.008, 0.003, 0.001]
        ),
        _address_comparison().configure(m_probabilities=[0.6, 0.2, 0.08, 0.06, 0.06]),
        _move_comparison().configure(m_probabilities=[0.05, 0.03, 0.92]),
        cl.ExactMatch("nhs_token").configure(m_probabilities=[0.995, 0.005]),
        cl.ExactMatch("sex").configure(m_probabilities=[0.99, 0.01]),
    ]


def _prediction_blocking_rules() -> list[Any]:
    """Rules whose union finds true pairs while keeping candidate pairs near-linear in records.

    Each rule pins at least one rare value (a token, a full date of birth, a postcode or a
    property), so the pairs per record stay bounded as the population grows.
    """
    from splink import block_on

    return [
        block_on("nhs_token"),
        block_on("surname", "dob"),
        block_on("forename", "dob"),
        block_on("uprn_token", "surname"),
        block_on("uprn_token", "forename"),
        block_on("postcode", "forename"),
        block_on("forename", "surname", "substr(postcode, 1, 4)"),
        # A move: the same name where one stay ends the day before the other starts.
        "l.surname = r.surname AND l.move_next = r.period_start",
        "l.surname = r.surname AND r.move_next = l.period_start",
        "l.forename = r.forename AND l.move_next = r.period_start",
        "l.forename = r.forename AND r.move_next = l.period_start",
    ]


def settings_dict(threshold: float) -> Any:
    """The Splink settings used to link people (link_and_dedupe across all sources)."""
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=_comparisons(),
        blocking_rules_to_generate_predictions=_prediction_blocking_rules(),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        additional_columns_to_retain=["source_dataset"],
        max_iterations=20,
    )


def person_id_expr(col: str = "cluster_id") -> pl.Expr:
    """A person id derived from the cluster's smallest record key (already a keyed token)."""
    return pl.col(col).map_batches(
        lambda s: pl.Series(
            [("P" + hashlib.sha256(v.encode()).hexdigest()[:15]) for v in s.to_list()],
            dtype=pl.Utf8,
        ),
        return_dtype=pl.Utf8,
    )


def _to_polars(sdf: Any) -> pl.DataFrame:
    """A Splink result table as a polars frame (Arrow, no pandas or numpy needed)."""
    frame = pl.from_arrow(sdf.as_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


M_FLOOR = 1e-4


def _floor_m_probabilities(linker: Any, floor: float = M_FLOOR) -> None:
    """Keep every level's m probability above a floor.

    EM can estimate m = 0 for a level it never sees among matches (different NHS numbers,
    different sex), which makes that disagreement an infinite penalty; real data has
    transcription errors, so a large but finite penalty is the honest model.
    """
    for comparison in linker._settings_obj.comparisons:
        levels = [lvl for lvl in comparison.comparison_levels if not lvl.is_null_level]
        for level in levels:
            m = level.m_probability
            if isinstance(m, float) and m < floor:
                level.m_probability = floor


def _connect(settings: LinkageSettings, temp_dir: Path) -> duckdb.DuckDBPyConnection:
    temp_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{settings.memory_limit}'")
    con.execute(f"SET threads = {int(settings.threads)}")
    con.execute(f"SET temp_directory = '{temp_dir.as_posix()}'")
    con.execute("SET preserve_insertion_order = false")
    return con


def link_people(
    records: pl.DataFrame,
    settings: LinkageSettings,
    *,
    work_dir: Path,
) -> LinkageResult:
    """Train a model on the records, predict pairs, and cluster them into people."""
    from splink import DuckDBAPI, Linker, block_on

    missing = [c for c in LINKAGE_COLUMNS if c not in records.columns]
    if missing:
        raise LinkageError(f"linkage input lacks columns {missing}")
    if records.height < 2:
        raise LinkageError("linkage needs at least two records")
    data = (
        records.select(*LINKAGE_COLUMNS, *PERIOD_COLUMNS)
        .with_columns(forename_roots(records.get_column("forename")), *period_exprs())
        .drop(PERIOD_COLUMNS)
        .to_arrow()
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    con = _connect(settings, work_dir / "duckdb_tmp")
    db = DuckDBAPI(con)
    sdf = db.register(data, dataset_display_name="records")
    linker = Linker(sdf, settings_dict(settings.match_threshold), log_level=logging.ERROR)
    # Splink warns about every level an EM session cannot observe; those levels keep the
    # documented priors in _comparisons(), so the warnings are noise in run logs.
    splink_log = logging.getLogger("splink")
    previous_level = splink_log.level
    splink_log.setLevel(logging.ERROR)

    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("nhs_token"), block_on("forename", "surname", "dob")], recall=0.8
        )
        linker.training.estimate_u_using_random_sampling(
            max_pairs=settings.max_pairs_u, seed=settings.seed
        )
        # NHS-number agreement is near-certain evidence of a match, so a session blocked on it
        # learns the name, date-of-birth and address m probabilities; the second (names) learns the
        # NHS number's.
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("nhs_token"), fix_u_probabilities=True
        )
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("forename", "surname"),
            fix_u_probabilities=True,
            max_pairs=settings.max_pairs_em,
        )
        _floor_m_probabilities(linker)
    finally:
        splink_log.setLevel(previous_level)
    timings["train"] = round(time.perf_counter() - t0, 2)

    t1 = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    n_pairs, n_above = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE match_probability >= ?) "
        f"FROM {predictions.physical_name}",
        [settings.match_threshold],
    ).fetchall()[0]
    timings["predict"] = round(time.perf_counter() - t1, 2)

    t2 = time.perf_counter()
    threshold = float(settings.match_threshold)  # validated in (0, 1) by the settings loader
    pairs = pl.from_arrow(
        con.sql(
            f"SELECT unique_id_l, unique_id_r, match_probability FROM {predictions.physical_name} "
            f"WHERE match_probability >= {threshold!r}"
        ).to_arrow_table()
    )
    assert isinstance(pairs, pl.DataFrame)
    completeness = records.select(
        "unique_id",
        "source_dataset",
        (pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()).alias("complete"),
    )
    clusters = cluster_records(completeness, pairs, settings.match_threshold).join(
        completeness.select("unique_id", "source_dataset"), on="unique_id", how="right"
    )
    # A record in no pair above the threshold is a person of its own.
    clusters = clusters.with_columns(pl.coalesce("cluster_id", "unique_id").alias("cluster_id"))
    timings["cluster"] = round(time.perf_counter() - t2, 2)
    canonical = clusters.group_by("cluster_id").agg(pl.col("unique_id").min().alias("_min"))
    clusters = (
        clusters.join(canonical, on="cluster_id")
        .with_columns(person_id_expr("_min").alias("person_id"))
        .select("unique_id", "source_dataset", "person_id")
    )
    model_path = work_dir / "model.json"
    linker.misc.save_model_to_json(str(model_path), overwrite=True)
    model = json.loads(model_path.read_text())
    con.close()
    return LinkageResult(
        clusters=clusters,
        records=records.height,
        people=clusters.get_column("person_id").n_unique(),
        candidate_pairs=int(n_pairs),
        pairs_above_threshold=int(n_above),
        match_threshold=settings.match_threshold,
        model={"version": MODEL_VERSION, "splink": model},
        seconds=timings,
    )
