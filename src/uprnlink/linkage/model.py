"""Probabilistic linkage and deduplication of people across all sources with Splink.

This is the only module that imports Splink. Records arrive pseudonymised: names, date of
birth, sex and postcode are the quasi-identifiers; UPRN and NHS number come as keyed tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from uprnlink.errors import LinkageError
from uprnlink.linkage.clustering import cluster_records, connected_components
from uprnlink.linkage.threshold import AUTO_FLOOR, choose_threshold, merge_histograms
from uprnlink.progress import Progress, duckdb_progress, timed
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
# 2: scores distinct identifier profiles, EM sessions capped at max_pairs_em, postcode sector
# by string position.
MODEL_VERSION = "uprnlink-model/2"
VARIANTS_PATH = Path(__file__).parents[1] / "data" / "name_variants.csv"


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
    profiles: int = 0  # distinct identifier profiles scored (see linkage_profiles)
    # The expected-F1 operating point read from the scored pairs (uprnlink.linkage.threshold).
    threshold_choice: dict[str, Any] | None = None


def _duckdb_level(sql_condition: str, label_for_charts: str | None = None) -> Any:
    """A custom comparison level written in DuckDB SQL, which Splink translates (sqlglot) when
    the model runs on another backend such as Spark."""
    import splink.comparison_level_library as cll

    return cll.CustomLevel(
        sql_condition, label_for_charts=label_for_charts, base_dialect_str="duckdb"
    )


def _address_comparison() -> Any:
    """One comparison for where a record places the person, so UPRN and postcode agreement
    (which always co-occur) are not counted twice as independent evidence."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    # Postcodes arrive canonical ("OUTWARD INWARD", inward = digit + two letters), so the
    # sector is all but the last two characters: plain string functions, no per-pair regex.
    sector = "substr({c}, 1, length({c}) - 2)"
    district = "split_part({c}, ' ', 1)"
    return cl.CustomComparison(
        output_column_name="address",
        comparison_description="UPRN token, else postcode levels",
        comparison_levels=[
            cll.And(
                cll.Or(cll.NullLevel("uprn_token"), cll.Not(cll.NullLevel("uprn_token"))),
                _duckdb_level(
                    "(uprn_token_l IS NULL OR uprn_token_r IS NULL) AND "
                    "(postcode_l IS NULL OR postcode_r IS NULL)"
                ),
            ).configure(is_null_level=True),
            cll.ExactMatchLevel("uprn_token").configure(label_for_charts="Same UPRN"),
            _duckdb_level(
                "postcode_l = postcode_r",
                label_for_charts="Same postcode (UPRN differs or unknown)",
            ),
            _duckdb_level(
                f"{sector.format(c='postcode_l')} = {sector.format(c='postcode_r')}",
                label_for_charts="Same postcode sector",
            ),
            _duckdb_level(
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
            _duckdb_level(transposed, label_for_charts="Day and month transposed"),
            _duckdb_level(
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
            _duckdb_level(
                "period_start_l IS NULL OR period_start_r IS NULL OR "
                "(period_end_l IS NULL AND period_end_r IS NULL)"
            ).configure(is_null_level=True),
            _duckdb_level(
                consecutive, label_for_charts="Moved: one stay ends the day before the other starts"
            ),
            _duckdb_level(
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
    # Built once per distinct forename (thousands), then joined onto every record (millions).
    distinct = forenames.rename("forename").unique().drop_nulls().to_frame()
    table = distinct.join(roots, on="forename", how="left").select(
        "forename",
        pl.concat_list(pl.col("forename"), pl.col("roots").fill_null([])).alias("forename_roots"),
    )
    frame = forenames.rename("forename").to_frame()
    joined = frame.join(table, on="forename", how="left", maintain_order="left")
    return joined.get_column("forename_roots")


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
    """The Splink settings used to link people (all sources deduplicated together).

    Splink compares distinct identifier profiles (see `linkage_profiles`), not raw records, so
    no per-record column is carried through prediction.
    """
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=_comparisons(),
        blocking_rules_to_generate_predictions=_prediction_blocking_rules(),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        max_iterations=20,
    )


def person_id_expr(col: str = "cluster_id") -> pl.Expr:
    """A person id derived from the cluster's smallest record key (already a keyed token)."""
    from uprnlink.linkage.stable_ids import derived_ids

    return pl.col(col).map_batches(derived_ids, return_dtype=pl.Utf8)


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
    """An in-memory DuckDB capped at `memory_limit`, spilling to `temp_dir` beyond it."""
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


def _settings_json(creator: Any, dialect: str = "duckdb") -> dict[str, Any]:
    """A SettingsCreator resolved for a SQL dialect, as the plain JSON dict a saved model holds
    (saved models are always in the DuckDB dialect)."""
    return dict(json.loads(json.dumps(creator.get_settings(dialect).as_dict(), default=str)))


def current_fingerprint(settings: LinkageSettings) -> str:
    """The fingerprint of the model definition this code would train."""
    return settings_fingerprint(_settings_json(settings_dict(settings.match_threshold)))


def with_parameters(template: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """`template` (a settings dict, possibly for another SQL dialect) carrying the trained
    m and u probabilities and λ of `trained`, level by level.

    A model trained on one backend then scores identically on another: only the SQL text of
    the levels differs between dialects, never their order or parameters.
    """
    out = json.loads(json.dumps(template))
    if len(out["comparisons"]) != len(trained["comparisons"]):
        raise LinkageError("the trained model and the settings have different comparisons")
    for mine, theirs in zip(out["comparisons"], trained["comparisons"], strict=True):
        levels, trained_levels = mine["comparison_levels"], theirs["comparison_levels"]
        if len(levels) != len(trained_levels):
            raise LinkageError(f"comparison {mine.get('output_column_name')} changed its levels")
        for level, trained_level in zip(levels, trained_levels, strict=True):
            for name in ("m_probability", "u_probability"):
                if name in trained_level:
                    level[name] = trained_level[name]
                else:
                    level.pop(name, None)
    out["probability_two_random_records_match"] = trained["probability_two_random_records_match"]
    return dict(out)


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
    """λ from deterministic rules, u by random sampling, m by EM in two sessions.

    Every step is bounded: u from at most `max_pairs_u` random pairs, each EM session on at
    most `max_pairs_em` blocked pairs, so training time stops growing with the data.
    """
    from splink import block_on

    # Splink warns about every level an EM session cannot observe; those levels keep the
    # documented priors in _comparisons(), so the warnings are noise in run logs.
    splink_log = logging.getLogger("splink")
    previous_level = splink_log.level
    splink_log.setLevel(logging.ERROR)
    try:
        with timed("linkage: training 1/4, share of matching pairs"):
            linker.training.estimate_probability_two_random_records_match(
                [block_on("nhs_token"), block_on("forename", "surname", "dob")], recall=0.8
            )
        with timed(f"linkage: training 2/4, u from {settings.max_pairs_u:,.0f} random pairs"):
            linker.training.estimate_u_using_random_sampling(
                max_pairs=settings.max_pairs_u, seed=settings.seed
            )
        # NHS-number agreement is near-certain evidence of a match, so a session blocked on it
        # learns the name, date-of-birth and address m probabilities; the second (names) learns
        # the NHS number's.
        with timed("linkage: training 3/4, m by EM on pairs sharing an NHS number"):
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("nhs_token"), fix_u_probabilities=True, max_pairs=settings.max_pairs_em
            )
        with timed("linkage: training 4/4, m by EM on pairs sharing forename and surname"):
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
    canonical = (
        clusters.group_by("cluster_id")
        .agg(pl.col("unique_id").min().alias("_min"))
        .select("cluster_id", person_id_expr("_min").alias("person_id"))
    )
    return clusters.join(canonical, on="cluster_id", how="left").drop("cluster_id")


def blocking_rule_sqls() -> list[str]:
    """The prediction blocking rules as SQL, in order (a prediction's `match_key` indexes it)."""
    from splink.internals.blocking_rule_creator import BlockingRuleCreator

    return [
        rule.get_blocking_rule("duckdb").blocking_rule_sql
        if isinstance(rule, BlockingRuleCreator)
        else str(rule)
        for rule in _prediction_blocking_rules()
    ]


def blocking_analysis(sdf: Any, sample: float = 1.0) -> list[dict[str, Any]]:
    """Candidate pairs each prediction blocking rule adds (Splink's blocking analysis, exact or
    estimated on a record sample), to check that comparisons stay bounded before a run.

    A run does not need it: `link_people` counts the pairs each rule added as it predicts.
    """
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


# ---------------------------------------------------------------- identifier profiles

# What Splink compares. Records agreeing on all of these get identical comparison vectors
# against every other record, so they are scored once, as one profile.
PROFILE_COLUMNS = (*LINKAGE_COLUMNS[2:], "period_start", "period_end")


def linkage_profiles(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Distinct identifier profiles, and the profile of every record.

    Hospital activity repeats a patient's identifiers at every attendance, and other sources
    hold the same person twice: linking each distinct combination once, then expanding, cuts the
    records Splink scores by about a tenth and the pairs sharing an NHS number by half.

    Returns `profiles` (unique_id: a profile number 0..n-1, the same for the same records in
    every run; the compared columns, forename roots and move_next) and `members` (unique_id,
    source_dataset, profile) with one row per record.
    """
    compared = pl.struct(PROFILE_COLUMNS)
    keyed = (
        records.lazy()
        .select("unique_id", "source_dataset", *LINKAGE_COLUMNS[2:], *PERIOD_COLUMNS)
        .with_columns(period_exprs()[:2])
        .drop(PERIOD_COLUMNS)
        # Two independent 64-bit hashes of the compared values: grouping on them is several
        # times faster than on nine nullable columns, and a collision (about 1e-27 at a
        # million profiles) is out of reach.
        .with_columns(compared.hash(seed=1).alias("_h1"), compared.hash(seed=2).alias("_h2"))
        .collect()
    )
    # Sorted by hash, each profile's records are adjacent: numbering the first of each run
    # gives dense, reproducible profile numbers without sorting or grouping on strings.
    ordered = (
        keyed.sort("_h1", "_h2")
        .with_columns(pl.struct("_h1", "_h2").is_first_distinct().alias("_new"))
        .with_columns((pl.col("_new").cum_sum() - 1).cast(pl.Int64).alias("profile"))
    )
    members = ordered.select("unique_id", "source_dataset", "profile")
    profiles = ordered.filter(pl.col("_new")).select(
        pl.col("profile").alias("unique_id"),
        *PROFILE_COLUMNS,
        (pl.col("period_end") + timedelta(days=1)).alias("move_next"),
    )
    profiles = profiles.with_columns(forename_roots(profiles.get_column("forename")))
    return profiles, members


def splink_records(records: pl.DataFrame, *, with_source: bool = False) -> pl.DataFrame:
    """The records as Splink reads them (to train on, or to score example pairs): the compared
    columns, forename roots and the residence period columns of the move comparison, and
    `source_dataset` when asked for."""
    return (
        records.select(*LINKAGE_COLUMNS, *PERIOD_COLUMNS)
        .with_columns(forename_roots(records.get_column("forename")), *period_exprs())
        .drop(*PERIOD_COLUMNS, *([] if with_source else ["source_dataset"]))
    )


# ---------------------------------------------------------------- backends


class DuckDBLinkage:
    """Splink on an in-process DuckDB, capped at `memory_limit` and spilling to disk."""

    dialect = "duckdb"

    def __init__(self, settings: LinkageSettings, work_dir: Path) -> None:
        from splink import DuckDBAPI

        self.con = _connect(settings, work_dir / "duckdb_tmp")
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
        """Pairs scored per blocking rule (match_key) and the pairs at or above `threshold`."""
        table = predictions.physical_name
        counts = self.con.execute(
            f"SELECT CAST(match_key AS VARCHAR), count(*) FROM {table} GROUP BY ALL"
        ).fetchall()
        above = pl.from_arrow(
            self.con.sql(
                f"SELECT unique_id_l, unique_id_r, match_probability FROM {table} "
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
        """Pairs scored per blocking rule (match_key) and the pairs at or above `threshold`."""
        from pyspark.sql import functions as F

        frame = predictions.as_spark_dataframe()
        counts = {
            str(row[0]): int(row[1])
            for row in frame.groupBy(F.col("match_key").cast("string")).count().collect()
        }
        path = self.work_dir / f"{predictions.physical_name}_above.parquet"
        frame.filter(F.col("match_probability") >= threshold).select(
            "unique_id_l", "unique_id_r", "match_probability"
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


# ---------------------------------------------------------------- linking


def _predict(
    linker: Any,
    backend: DuckDBLinkage | SparkLinkage,
    threshold: float,
    chunks: int,
    histograms: list[pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]], int]:
    """Score every blocked pair, `chunks` slices of the profiles at a time (bounded memory,
    progress with an estimate); returns the pairs at or above `threshold`, the pairs each
    blocking rule added and the number of pairs scored."""
    progress = Progress("linkage: scoring pairs", chunks, "slices of the profiles")
    by_rule: dict[str, int] = {}
    kept = []
    for chunk in range(1, chunks + 1):
        with backend.progress(f"linkage: scoring slice {chunk}/{chunks}"):
            predictions = linker.inference.predict_chunk(
                left_chunk=(chunk, chunks), right_chunk=(1, 1), warning_mode="never"
            )
        counts, above = backend.scored(predictions, threshold)
        if histograms is not None:
            histograms.append(backend.histogram(predictions))
        predictions.drop_table_from_database_and_remove_from_cache()
        for rule, n in counts.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
        kept.append(above)
        progress.advance(note=f"{sum(counts.values()):,} pairs scored, {above.height:,} kept")
    rules = blocking_rule_sqls()
    blocking, cumulative = [], 0
    for i, rule in enumerate(rules):
        cumulative += by_rule.get(str(i), 0)
        blocking.append(
            {
                "rule": rule,
                "marginal_pairs": by_rule.get(str(i), 0),
                "cumulative_pairs": cumulative,
                "estimate": False,
            }
        )
    return pl.concat(kept), blocking, cumulative


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
    from splink import Linker

    _check_records(records, LINKAGE_COLUMNS)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    profiles, members = linkage_profiles(records)
    timings["profiles"] = round(time.perf_counter() - t0, 2)
    log.info(
        "linkage: %s records hold %s distinct identifier profiles (%s backend)",
        f"{records.height:,}",
        f"{profiles.height:,}",
        settings.backend,
    )
    creator = settings_dict(settings.match_threshold)
    fingerprint = settings_fingerprint(_settings_json(creator))
    saved = None if retrain else reusable_model(model, fingerprint)
    backend = linkage_backend(settings, work_dir)
    try:
        t1 = time.perf_counter()
        sdf = backend.register(profiles, "profiles")
        template = _settings_json(creator, backend.dialect)
        if saved is not None:
            linker = Linker(sdf, with_parameters(template, saved), log_level=logging.ERROR)
            assert model is not None
            artefact = model
            timings["load_model"] = round(time.perf_counter() - t1, 2)
        else:
            # Trained on the records themselves: the parameters describe pairs of records (on
            # 1M synthetic records, training on profiles instead lost 0.0004 precision and
            # 0.0008 recall). Every training step samples, so this stays bounded.
            training = backend.register(splink_records(records), "records")
            trainer = Linker(training, creator, log_level=logging.ERROR)
            with backend.progress("linkage: training"), backend.repeatable():
                _train(trainer, settings)
            trained = json.loads(json.dumps(trainer.misc.save_model_to_json(), default=str))
            # The database API's table cache is shared by every linker on it: clear it, or
            # the scoring linker would find the training tables (of records, not profiles).
            trainer.table_management.invalidate_cache()  # type: ignore[no-untyped-call]
            backend.release(training)
            linker = Linker(sdf, with_parameters(template, trained), log_level=logging.ERROR)
            canonical = with_parameters(_settings_json(creator), trained)
            artefact = model_artefact(canonical, fingerprint, records.height)
            timings["train"] = round(time.perf_counter() - t1, 2)

        t2 = time.perf_counter()
        chunks = max(1, -(-profiles.height // settings.predict_chunk_records))
        auto = settings.threshold_mode == "auto"
        retain = min(settings.match_threshold, AUTO_FLOOR) if auto else settings.match_threshold
        histograms: list[pl.DataFrame] = []
        pairs, blocking, n_scored = _predict(linker, backend, retain, chunks, histograms)
        timings["predict"] = round(time.perf_counter() - t2, 2)
    finally:
        backend.close()
    choice = choose_threshold(merge_histograms(histograms))
    threshold = settings.match_threshold
    if auto and choice is not None:
        threshold = choice.threshold
        pairs = pairs.filter(pl.col("match_probability") >= threshold)
    if choice is not None:
        log.info(
            "linkage: the model's expected F1 peaks at threshold %.4f (expected precision %.4f, "
            "recall %.4f); clustering at %.4f (%s)",
            choice.threshold,
            choice.expected_precision,
            choice.expected_recall,
            threshold,
            "chosen from the data" if auto and threshold == choice.threshold else "configured",
        )

    t3 = time.perf_counter()
    with timed(f"linkage: clustering {profiles.height:,} profiles on {pairs.height:,} pairs"):
        complete = profiles.select(
            "unique_id",
            (pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()).alias("complete"),
        )
        by_profile = cluster_records(complete, pairs, threshold)
        clusters = members.join(
            by_profile.rename({"unique_id": "profile"}), on="profile", how="left"
        ).drop("profile")
        clusters = _with_person_ids(clusters).select("unique_id", "source_dataset", "person_id")
    timings["cluster"] = round(time.perf_counter() - t3, 2)
    return LinkageResult(
        clusters=clusters,
        records=records.height,
        people=clusters.get_column("person_id").n_unique(),
        candidate_pairs=n_scored,
        pairs_above_threshold=pairs.height,
        match_threshold=threshold,
        model=artefact,
        seconds=timings,
        model_trained=saved is None,
        blocking=blocking,
        profiles=profiles.height,
        threshold_choice=choice.to_dict() if choice is not None else None,
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
        con.execute("SET threads = 1")  # repeatable EM sums, as for the model (repeatable())
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
            con.execute(f"SET threads = {int(settings.threads)}")
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold
        )
        clusters = _to_polars(clustered).select("unique_id", "cluster_id")
    finally:
        con.close()
    return records.select("unique_id").join(_with_person_ids(clusters), on="unique_id", how="left")
