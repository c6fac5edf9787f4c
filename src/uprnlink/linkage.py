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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.clustering import cluster_records, connected_components
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
    model: dict[str, Any]  # MODEL_VERSION header + the Splink model JSON (see model_artefact)
    seconds: dict[str, float] = field(default_factory=dict)
    model_trained: bool = True  # False when a saved model was reused
    blocking: list[dict[str, Any]] = field(default_factory=list)


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


def _dob_comparison() -> Any:
    """Date of birth: exact; day and month transposed (03/05 for 05/03); one character slip;
    then within a month, a year, ten years."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    transposed = (
        "day(dob_l) <= 12 AND day(dob_r) <= 12 AND day(dob_l) <> month(dob_l) AND "
        "year(dob_l) = year(dob_r) AND month(dob_l) = day(dob_r) AND day(dob_l) = month(dob_r)"
    )
    return cl.CustomComparison(
        output_column_name="dob",
        comparison_description="Date of birth with transposition and slip levels",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.CustomLevel(transposed, label_for_charts="Day and month transposed"),
            cll.CustomLevel(
                "levenshtein(CAST(dob_l AS VARCHAR), CAST(dob_r AS VARCHAR)) <= 1",
                label_for_charts="One character different",
            ),
            cll.AbsoluteDateDifferenceLevel(
                "dob", input_is_string=False, threshold=1, metric="month"
            ),
            cll.AbsoluteDateDifferenceLevel(
                "dob", input_is_string=False, threshold=1, metric="year"
            ),
            cll.AbsoluteDateDifferenceLevel(
                "dob", input_is_string=False, threshold=10, metric="year"
            ),
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
        _dob_comparison().configure(
            m_probabilities=[0.95, 0.008, 0.022, 0.008, 0.008, 0.003, 0.001]
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


# Keys of a Splink settings dict that training sets (or that name one linker instance), left out
# of the fingerprint so a trained model and the untrained settings it came from hash alike.
TRAINED_KEYS = frozenset(
    {"m_probability", "u_probability", "probability_two_random_records_match", "linker_uid"}
)


def _without_trained(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_trained(v) for k, v in value.items() if k not in TRAINED_KEYS}
    if isinstance(value, list):
        return [_without_trained(v) for v in value]
    return value


def settings_fingerprint(splink_settings: dict[str, Any]) -> str:
    """SHA-256 of a Splink settings dict's definition (comparisons, levels, blocking rules),
    ignoring trained parameters, so a saved model is reused only for the same definition.

    A change to how the model is trained (not what it compares) should bump MODEL_VERSION.
    """
    canonical = json.dumps(_without_trained(splink_settings), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _settings_json(creator: Any) -> dict[str, Any]:
    """A SettingsCreator resolved for DuckDB, as the plain JSON dict a saved model holds."""
    return dict(json.loads(json.dumps(creator.get_settings("duckdb").as_dict(), default=str)))


def current_fingerprint(settings: LinkageSettings) -> str:
    """The fingerprint of the model definition this code would train."""
    return settings_fingerprint(_settings_json(settings_dict(settings.match_threshold)))


def reusable_model(model: dict[str, Any] | None, fingerprint: str) -> dict[str, Any] | None:
    """The Splink model JSON inside a saved artefact, if it is this MODEL_VERSION and this
    settings fingerprint (and its own parameters still hash to it); otherwise None."""
    if not model or model.get("version") != MODEL_VERSION:
        return None
    splink_model = model.get("splink")
    if model.get("settings_fingerprint") != fingerprint or not isinstance(splink_model, dict):
        return None
    if settings_fingerprint(splink_model) != fingerprint:
        return None
    return splink_model


def model_artefact(
    splink_model: dict[str, Any], fingerprint: str, records: int, now: datetime | None = None
) -> dict[str, Any]:
    """A saved model: a small header (version, when, on how many records, fingerprint) and the
    Splink model JSON that `Linker(sdf, settings=...)` loads."""
    return {
        "version": MODEL_VERSION,
        "trained_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "records_trained_on": records,
        "settings_fingerprint": fingerprint,
        "splink": splink_model,
    }


def _train(linker: Any, settings: LinkageSettings) -> None:
    """λ from deterministic rules, u by random sampling, m by EM in two sessions."""
    from splink import block_on

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
        # learns the name, date-of-birth and address m probabilities; the second (names) learns
        # the NHS number's.
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


def _check_records(records: pl.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in records.columns]
    if missing:
        raise LinkageError(f"linkage input lacks columns {missing}")
    if records.height < 2:
        raise LinkageError("linkage needs at least two records")


def _with_person_ids(clusters: pl.DataFrame) -> pl.DataFrame:
    """Replace cluster_id by the person id of the cluster's smallest record key."""
    canonical = clusters.group_by("cluster_id").agg(pl.col("unique_id").min().alias("_min"))
    return (
        clusters.join(canonical, on="cluster_id")
        .with_columns(person_id_expr("_min").alias("person_id"))
        .drop("cluster_id", "_min")
    )


def blocking_analysis(sdf: Any, sample: float = 1.0) -> list[dict[str, Any]]:
    """Candidate pairs each prediction blocking rule adds (Splink's blocking analysis,
    estimated on a record sample), so a run shows that comparisons stay bounded."""
    from splink.blocking_analysis import count_comparisons_from_blocking_rules

    counts = count_comparisons_from_blocking_rules(
        sdf,
        blocking_rules=_prediction_blocking_rules(),
        link_type="dedupe_only",
        record_sample_proportion=sample,
    )
    return [
        {
            "rule": c["blocking_rule"],
            "marginal_pairs": int(c["marginal_comparison_count"]),
            "cumulative_pairs": int(c["cumulative_comparison_count"]),
            "estimate": bool(c["is_estimate"]),
        }
        for c in counts
    ]


def link_people(
    records: pl.DataFrame,
    settings: LinkageSettings,
    *,
    work_dir: Path,
    model: dict[str, Any] | None = None,
    retrain: bool = False,
) -> LinkageResult:
    """Predict pairs and cluster the records into people, with a saved model when it fits.

    `model` is an artefact from an earlier `LinkageResult.model`; it is reused unless `retrain`
    is set or it was built for another MODEL_VERSION or settings fingerprint, in which case a
    model is trained on these records.
    """
    from splink import DuckDBAPI, Linker

    _check_records(records, LINKAGE_COLUMNS)
    data = (
        records.select(*LINKAGE_COLUMNS, *PERIOD_COLUMNS)
        .with_columns(forename_roots(records.get_column("forename")), *period_exprs())
        .drop(PERIOD_COLUMNS)
        .to_arrow()
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    creator = settings_dict(settings.match_threshold)
    fingerprint = settings_fingerprint(_settings_json(creator))
    saved = None if retrain else reusable_model(model, fingerprint)
    con = _connect(settings, work_dir / "duckdb_tmp")
    db = DuckDBAPI(con)
    sdf = db.register(data, dataset_display_name="records")
    t_block = time.perf_counter()
    blocking = blocking_analysis(sdf)
    timings["blocking_analysis"] = round(time.perf_counter() - t_block, 2)
    if saved is not None:
        linker = Linker(sdf, json.loads(json.dumps(saved)), log_level=logging.ERROR)
        assert model is not None
        artefact = model
        timings["load_model"] = round(time.perf_counter() - t0, 2)
    else:
        linker = Linker(sdf, creator, log_level=logging.ERROR)
        _train(linker, settings)
        trained = json.loads(json.dumps(linker.misc.save_model_to_json(), default=str))
        artefact = model_artefact(trained, fingerprint, records.height)
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
    con.close()
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
    clusters = _with_person_ids(clusters).select("unique_id", "source_dataset", "person_id")
    timings["cluster"] = round(time.perf_counter() - t2, 2)
    return LinkageResult(
        clusters=clusters,
        records=records.height,
        people=clusters.get_column("person_id").n_unique(),
        candidate_pairs=int(n_pairs),
        pairs_above_threshold=int(n_above),
        match_threshold=settings.match_threshold,
        model=artefact,
        seconds=timings,
        model_trained=saved is None,
        blocking=blocking,
    )


# ---------------------------------------------------------------- baselines

BASELINE_COLUMNS = ("unique_id", "source_dataset", "forename", "surname", "dob", "postcode")


def deterministic_clusters(records: pl.DataFrame) -> pl.DataFrame:
    """Baseline: records are one person when they share (a) an NHS number token or (b) forename,
    surname, date of birth and UPRN token, closed transitively; returns unique_id, person_id."""
    _check_records(records, ("unique_id", "forename", "surname", "dob", "uprn_token", "nhs_token"))
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
    return records.select("unique_id").join(
        components.select(
            pl.col("node").alias("unique_id"), person_id_expr("component").alias("person_id")
        ),
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


def plain_splink_clusters(
    records: pl.DataFrame, settings: LinkageSettings, work_dir: Path, threshold: float = 0.95
) -> pl.DataFrame:
    """Baseline: the plain model (u by random sampling, m by EM) clustered at `threshold` with
    Splink's own connected components; returns unique_id, person_id."""
    from splink import DuckDBAPI, Linker, block_on

    _check_records(records, (*BASELINE_COLUMNS, "uprn_token"))
    data = records.select("unique_id", "forename", "surname", "dob", "postcode", "uprn_token")
    con = _connect(settings, work_dir / "duckdb_tmp")
    try:
        sdf = DuckDBAPI(con).register(data.to_arrow(), dataset_display_name="records")
        linker = Linker(sdf, plain_settings(), log_level=logging.ERROR)
        splink_log = logging.getLogger("splink")
        previous_level = splink_log.level
        splink_log.setLevel(logging.ERROR)
        try:
            linker.training.estimate_probability_two_random_records_match(
                [block_on("forename", "surname", "dob")], recall=0.7
            )
            linker.training.estimate_u_using_random_sampling(
                max_pairs=settings.max_pairs_u, seed=settings.seed
            )
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("forename", "surname"), max_pairs=settings.max_pairs_em
            )
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("dob"), max_pairs=settings.max_pairs_em
            )
        finally:
            splink_log.setLevel(previous_level)
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold
        )
        clusters = _to_polars(clustered).select("unique_id", "cluster_id")
    finally:
        con.close()
    return records.select("unique_id").join(_with_person_ids(clusters), on="unique_id", how="left")
