"""Probabilistic linkage and deduplication of people across all sources with Splink.

Splink is imported only under `uprnlink.linkage` (here, `backends`, `baselines`, `charts` and
`predict`; an import-linter contract keeps it there). Records arrive pseudonymised: names, date
of birth, sex and postcode are the quasi-identifiers; UPRN and NHS number come as keyed tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import LinkageError
from uprnlink.linkage.comparisons import ADDRESS_COLUMN, comparisons_for
from uprnlink.progress import timed
from uprnlink.settings import LinkageSettings
from uprnlink.sources import sources_with

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
#: The record columns linkage reads: those it compares and those that decide which identifiers
#: the records carry (`identifiers_present`); a stage that scores pairs again (the quality
#: report's examples) needs the same.
COMPARED_COLUMNS = (*LINKAGE_COLUMNS, ADDRESS_COLUMN, *PERIOD_COLUMNS)

#: Every identifier a comparison, blocking rule or training step can use, by the column (or
#: derived column) that carries it; `period` is a residence stay (start and end dates).
IDENTIFIERS = (
    "nhs_token",
    "uprn_token",
    "dob",
    "forename",
    "surname",
    "postcode",
    "address",
    "sex",
    "period",
)
#: What the demo's full mapping carries: the model for it is the one measured in docs/design.md.
FULL_IDENTIFIERS = frozenset(IDENTIFIERS) - {"address"}
_IDENTIFIER_COLUMNS = {
    "nhs_token": "nhs_token",
    "uprn_token": "uprn_token",
    "dob": "dob",
    "forename": "forename",
    "surname": "surname",
    "postcode": "postcode",
    "address": ADDRESS_COLUMN,
    "sex": "sex",
}
# Hospital activity dates are visits, not stays at an address.
NON_RESIDENCE_SOURCES = sources_with("visits")  # the source registry's (uprnlink.sources)
# 2: scores distinct identifier profiles, EM sessions capped at max_pairs_em, postcode sector
# by string position.
# 3: a forename-initial level (m prior 0.03).
# 4: comparisons declared with their priors (linkage.comparisons); forename / surname reversed
# and one-edit levels on both names (replacing the names-swapped comparison); DOB + postcode
# blocking; without a place, one name and the other's initial instead of both names.
MODEL_VERSION = "uprnlink-model/4"
VARIANTS_PATH = Path(__file__).parents[1] / "data" / "name_variants.csv"


def identifiers_present(records: pl.DataFrame) -> frozenset[str]:
    """The identifiers these records carry: each whose column holds a value in at least two
    records (one value alone can agree with nothing). The address text counts only where no
    record has a UPRN token. The model's comparisons, blocking rules and training steps are a
    function of this set alone, and so is its settings fingerprint."""
    present = set()
    for name, column in _IDENTIFIER_COLUMNS.items():
        if column in records.columns and records.get_column(column).drop_nulls().len() >= 2:
            present.add(name)
    if "uprn_token" in present:
        present.discard("address")
    if "start_date" in records.columns and "source_dataset" in records.columns:
        stays = records.filter(
            ~pl.col("source_dataset").is_in(list(NON_RESIDENCE_SOURCES))
            & pl.col("start_date").is_not_null()
        )
        if stays.height >= 2:
            present.add("period")
    return frozenset(present)


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


def _comparisons(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> list[Any]:
    """The Splink comparisons for the identifiers the records carry, as declared (with their
    levels and starting m probabilities) in `uprnlink.linkage.comparisons`."""
    declared = comparisons_for(identifiers)
    if not declared:
        raise LinkageError(
            "no identifier to link on: the records carry no names, date of birth, NHS number, "
            "UPRN, postcode or address"
        )
    return [c.creator() for c in declared]


# Each prediction blocking rule and the identifiers it needs.
_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...] | str], ...] = (
    (("nhs_token",), ("nhs_token",)),
    (("surname", "dob"), ("surname", "dob")),
    (("forename", "dob"), ("forename", "dob")),
    # Both names mistyped or replaced: the date of birth and the postcode still agree.
    (("dob", "postcode"), ("dob", "postcode")),
    (("uprn_token", "surname"), ("uprn_token", "surname")),
    (("uprn_token", "forename"), ("uprn_token", "forename")),
    (("postcode", "forename"), ("postcode", "forename")),
    (("forename", "surname", "postcode"), ("forename", "surname", "substr(postcode, 1, 4)")),
    # A move: the same name where one stay ends the day before the other starts.
    (("surname", "period"), "l.surname = r.surname AND l.move_next = r.period_start"),
    (("surname", "period"), "l.surname = r.surname AND r.move_next = l.period_start"),
    (("forename", "period"), "l.forename = r.forename AND l.move_next = r.period_start"),
    (("forename", "period"), "l.forename = r.forename AND r.move_next = l.period_start"),
)
# Used only where nothing above pins a place (no UPRN, no postcode): the address as written
# (its residents), the date of birth alone (about n²/73,000 pairs for n records: heavy at a
# million, but such deliveries have nothing better), one name and the other's initial, and the
# names swapped (a forename recorded as the surname). Measured on FEBRL4 (benchmarks/febrl.py).
_FALLBACK_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...] | str], ...] = (
    (("address",), ("address_line_1",)),
    (("dob",), ("dob",)),
    # One name the same and the other's first letter (a typo in the other name, the date of
    # birth missing or wrong: FEBRL4 without an address, 56 true pairs no other rule found).
    (
        ("forename", "surname"),
        "l.forename = r.forename AND substr(l.surname, 1, 1) = substr(r.surname, 1, 1)",
    ),
    (
        ("forename", "surname"),
        "l.surname = r.surname AND substr(l.forename, 1, 1) = substr(r.forename, 1, 1)",
    ),
    (("forename", "surname"), "l.forename = r.surname AND l.surname = r.forename"),
    # The address's first word (the house or flat number) and a name's first letters.
    (
        ("address", "surname"),
        "split_part(l.address_line_1, ' ', 1) = split_part(r.address_line_1, ' ', 1) AND "
        "substr(l.surname, 1, 3) = substr(r.surname, 1, 3)",
    ),
    (
        ("address", "forename"),
        "split_part(l.address_line_1, ' ', 1) = split_part(r.address_line_1, ' ', 1) AND "
        "substr(l.forename, 1, 3) = substr(r.forename, 1, 3)",
    ),
)


def rule_specs(identifiers: frozenset[str]) -> list[tuple[str, ...] | str]:
    """The prediction blocking rules for these identifiers, in order: a tuple of columns for
    Splink's `block_on`, or SQL."""
    rules = [rule for needs, rule in _RULES if identifiers.issuperset(needs)]
    if not ({"uprn_token", "postcode"} & identifiers):
        rules += [rule for needs, rule in _FALLBACK_RULES if identifiers.issuperset(needs)]
    if not rules:
        single = [i for i in ("surname", "forename", "dob", "postcode") if i in identifiers]
        if not single:
            raise LinkageError("no blocking rule fits the identifiers the records carry")
        rules = [(single[0],)]
    return rules


def _prediction_blocking_rules(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> list[Any]:
    """Rules whose union finds true pairs while keeping candidate pairs near-linear in records,
    among those the identifiers carried allow.

    Each rule pins at least one rare value (a token, a full date of birth, a postcode or a
    property), so the pairs per record stay bounded as the population grows.
    """
    from splink import block_on

    return [block_on(*r) if isinstance(r, tuple) else r for r in rule_specs(identifiers)]


def settings_dict(threshold: float, identifiers: frozenset[str] = FULL_IDENTIFIERS) -> Any:
    """The Splink settings used to link people (all sources deduplicated together), for the
    identifiers the records carry (`identifiers_present`).

    Splink compares distinct identifier profiles (see `linkage_profiles`), not raw records, so
    no per-record column is carried through prediction.
    """
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=_comparisons(identifiers),
        blocking_rules_to_generate_predictions=_prediction_blocking_rules(identifiers),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        max_iterations=20,
    )


def to_polars(sdf: Any) -> pl.DataFrame:
    """A Splink result table as a polars frame (Arrow, no pandas or numpy needed)."""
    frame = pl.from_arrow(sdf.as_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


M_FLOOR = 1e-4


def floor_m_probabilities(model: dict[str, Any], floor: float = M_FLOOR) -> dict[str, Any]:
    """A Splink model JSON with every level's m probability at least `floor`.

    EM can estimate m = 0 for a level it never sees among matches (different NHS numbers,
    different sex), which makes that disagreement an infinite penalty; real data has
    transcription errors, so a large but finite penalty is the honest model.
    """
    out: dict[str, Any] = json.loads(json.dumps(model))
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            m = level.get("m_probability")
            if level.get("is_null_level") or isinstance(m, bool):
                continue
            if isinstance(m, int | float) and m < floor:
                level["m_probability"] = floor
    return out


def model_json(linker: Any) -> dict[str, Any]:
    """A linker's model (settings and trained parameters) as plain JSON (Splink's public
    `save_model_to_json`), from which `Linker(table, model)` rebuilds it."""
    return dict(json.loads(json.dumps(linker.misc.save_model_to_json(), default=str)))


def _splink_failure(exc: Exception) -> bool:
    """A training session that Splink itself gave up on (its own exception, or a ValueError
    from an m estimated as exactly 0), as opposed to a bug to raise."""
    return isinstance(exc, ValueError) or type(exc).__module__.startswith("splink.")


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


def settings_json(creator: Any, dialect: str = "duckdb") -> dict[str, Any]:
    """A SettingsCreator resolved for a SQL dialect, as the plain JSON dict a saved model holds
    (saved models are always in the DuckDB dialect)."""
    return dict(json.loads(json.dumps(creator.get_settings(dialect).as_dict(), default=str)))


def current_fingerprint(
    settings: LinkageSettings, identifiers: frozenset[str] = FULL_IDENTIFIERS
) -> str:
    """The fingerprint of the model definition this code would train for these identifiers."""
    return settings_fingerprint(settings_json(settings_dict(settings.match_threshold, identifiers)))


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


_LAMBDA_RULES: tuple[tuple[str, ...], ...] = (
    ("forename", "surname", "dob"),
    ("forename", "surname", "uprn_token"),
    ("forename", "surname", "postcode"),
    ("surname", "dob"),
    ("forename", "surname", "address"),
    ("forename", "surname"),
    ("surname",),
)
# EM sessions: each learns the m probabilities of every comparison it does not block on.
_EM_PLACE_RULES: tuple[tuple[str, ...], ...] = (
    ("dob",),
    ("uprn_token",),
    ("postcode",),
    ("address",),
)
_IDENTIFIER_WORDS = {
    "nhs_token": "an NHS number",
    "dob": "a date of birth",
    "uprn_token": "a UPRN",
    "postcode": "a postcode",
    "address": "an address",
    "forename": "forename",
    "surname": "surname",
}


def training_plan(
    identifiers: frozenset[str] = FULL_IDENTIFIERS,
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The deterministic rules λ is estimated from, and the blocking rule of each EM session,
    for the identifiers the records carry.

    With NHS numbers: λ from the NHS number and forename + surname + date of birth; EM blocked
    on the NHS number (near-certain evidence, so it learns names, date of birth and address),
    then on forename + surname (which learns the NHS number's). Without them, the first
    session blocks on the next identifier that pins a person's place or birth (date of birth,
    UPRN, postcode, address as written) and the second on the names.
    """
    has = identifiers.issuperset
    names = ("forename", "surname") if has(("forename", "surname")) else ("surname",)
    lambdas: list[tuple[str, ...]] = [("nhs_token",)] if has(("nhs_token",)) else []
    lambdas += [r for r in _LAMBDA_RULES if has(r)][:1]
    first = [("nhs_token",)] if has(("nhs_token",)) else [r for r in _EM_PLACE_RULES if has(r)][:1]
    sessions = [*first, *([names] if has(names) else [])]
    return [r for r in lambdas if r], sessions


def _column(identifier: str) -> str:
    return _IDENTIFIER_COLUMNS.get(identifier, identifier)


def has_pairs(records: pl.DataFrame, identifiers: tuple[str, ...]) -> bool:
    """Whether any two records agree on every one of `identifiers` (a blocking rule on them
    finds a pair)."""
    columns = [_column(i) for i in identifiers]
    if not set(columns) <= set(records.columns):
        return False
    counts = records.select(columns).drop_nulls().group_by(columns).len()
    return bool(counts.height) and int(counts.get_column("len").max()) >= 2  # type: ignore[arg-type]


def _estimate_lambda(
    linker: Any, rules: list[tuple[str, ...]], words: Callable[[tuple[str, ...]], str]
) -> str:
    """λ from pairs agreeing on the deterministic `rules` (Splink's default when none agree);
    returns the line saying which."""
    from splink import block_on

    if not rules:
        log.warning("linkage: no pair agrees on a deterministic rule: default share kept")
        return "share of matching pairs: Splink's default (no pair agreed)"
    linker.training.estimate_probability_two_random_records_match(
        [block_on(*(_column(i) for i in r)) for r in rules], recall=0.8
    )
    return "share of matching pairs from " + "; ".join(map(words, rules))


def train_model(
    table: Any,
    creator: Any,
    settings: LinkageSettings,
    identifiers: frozenset[str] = FULL_IDENTIFIERS,
    records: pl.DataFrame | None = None,
    labels: tuple[Any, int] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Train the model `creator` defines on `table` (a registered Splink table of `records`):
    λ from deterministic rules, u by random sampling, m by EM in two sessions (see
    `training_plan`). Returns the trained model JSON (m floored, `floor_m_probabilities`) and a
    line per step saying what it was trained on or why it was skipped.

    Every step is bounded: u from at most `max_pairs_u` random pairs, each EM session on at
    most `max_pairs_em` blocked pairs, so training time stops growing with the data. A session
    whose blocking rule finds no pairs (a delivery too small, or an identifier too rare) is
    skipped, and one Splink cannot finish is undone (the linker rebuilt from the model saved
    before it): the comparisons it would have trained keep their documented starting values.
    `labels` (a registered table of clerical match pairs on record keys, and how many) adds
    Splink's m from labelled pairs as a last session (`_m_from_labels`).
    """
    from splink import Linker, block_on

    lambdas, sessions = training_plan(identifiers)
    linker = Linker(table, creator, log_level=logging.ERROR)

    def pairs(rule: tuple[str, ...]) -> bool:
        return records is None or has_pairs(records, rule)

    steps = 2 + len(sessions)
    done: list[str] = []

    def words(rule: tuple[str, ...]) -> str:
        return " and ".join(_IDENTIFIER_WORDS.get(i, i) for i in rule)

    # Splink warns about every level an EM session cannot observe; those levels keep the
    # documented priors (uprnlink.linkage.comparisons), so the warnings are noise in run logs.
    splink_log = logging.getLogger("splink")
    previous_level = splink_log.level
    splink_log.setLevel(logging.ERROR)
    try:
        with timed(f"linkage: training 1/{steps}, share of matching pairs"):
            done.append(_estimate_lambda(linker, [r for r in lambdas if pairs(r)], words))
        with timed(f"linkage: training 2/{steps}, u from {settings.max_pairs_u:,.0f} random pairs"):
            linker.training.estimate_u_using_random_sampling(
                max_pairs=settings.max_pairs_u, seed=settings.seed
            )
        for i, rule in enumerate(sessions, start=3):
            what = f"m by EM on pairs sharing {words(rule)}"
            if not pairs(rule):
                log.warning("linkage: no pairs share %s: that EM session is skipped", words(rule))
                done.append(f"{what}: skipped, no such pairs")
                continue
            saved = model_json(linker)
            try:
                with timed(f"linkage: training {i}/{steps}, {what}"):
                    linker.training.estimate_parameters_using_expectation_maximisation(
                        block_on(*(_column(c) for c in rule)),
                        fix_u_probabilities=True,
                        max_pairs=settings.max_pairs_em,
                    )
                done.append(what)
            except Exception as exc:
                if not _splink_failure(exc):
                    raise
                # A failed session can leave the linker half-changed: rebuild it as it was.
                linker.table_management.invalidate_cache()  # type: ignore[no-untyped-call]
                linker = Linker(table, saved, log_level=logging.ERROR)
                log.warning("linkage: %s failed (%s): skipped", what, type(exc).__name__)
                done.append(f"{what}: skipped, it did not converge ({type(exc).__name__})")
        if labels is not None:
            done.append(_m_from_labels(linker, *labels))
        trained = floor_m_probabilities(model_json(linker))
    finally:
        splink_log.setLevel(previous_level)
    # The database API's table cache is shared by every linker on it: clear it, or a scoring
    # linker would find the training tables (of records, not profiles).
    linker.table_management.invalidate_cache()  # type: ignore[no-untyped-call]
    return trained, done


def _m_from_labels(linker: Any, table: Any, n: int) -> str:
    """m from reviewers' match labels (`estimate_m_from_pairwise_labels`): one more training
    session, so each level's m becomes the median of the sessions that observed it (the EM
    sessions' and the labels'); levels no labelled pair falls in keep EM's. Returns the line
    saying so."""
    with timed(f"linkage: training, m from {n:,} clerical match labels"):
        linker.training.estimate_m_from_pairwise_labels(table)
    return f"m from {n:,} clerical match labels (each level's m the median with EM's)"


def check_records(records: pl.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in records.columns]
    if missing:
        raise LinkageError(f"linkage input lacks columns {missing}")
    if records.height < 2:
        raise LinkageError("linkage needs at least two records")


def blocking_rule_sqls(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> list[str]:
    """The prediction blocking rules as SQL, in order (a prediction's `match_key` indexes it)."""
    resolved = settings_json(settings_dict(0.95, identifiers))
    return [rule["blocking_rule"] for rule in resolved["blocking_rules_to_generate_predictions"]]


def comparison_names(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> list[str]:
    """The model's comparisons for these identifiers, by output column name."""
    return [c.get_comparison("duckdb").output_column_name for c in _comparisons(identifiers)]


def blocking_analysis(
    sdf: Any, sample: float = 1.0, identifiers: frozenset[str] = FULL_IDENTIFIERS
) -> list[dict[str, Any]]:
    """Candidate pairs each prediction blocking rule adds (Splink's blocking analysis, exact or
    estimated on a record sample), to check that comparisons stay bounded before a run.

    A run does not need it: `link_people` counts the pairs each rule added as it predicts.
    """
    from splink.blocking_analysis import count_comparisons_from_blocking_rules

    counts = count_comparisons_from_blocking_rules(
        sdf,
        blocking_rules=_prediction_blocking_rules(identifiers),
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


def compared_columns(identifiers: frozenset[str] = FULL_IDENTIFIERS) -> tuple[str, ...]:
    """The record columns Splink reads (after `unique_id` and `source_dataset`): the fixed
    linkage columns, and the address as written where it is compared."""
    return (*LINKAGE_COLUMNS[2:], *((ADDRESS_COLUMN,) if "address" in identifiers else ()))


def address_text_expr() -> pl.Expr:
    """The address as written, in one spelling for comparing: upper case, letters and digits,
    single spaces."""
    return (
        pl.col(ADDRESS_COLUMN)
        .str.to_uppercase()
        .str.replace_all(r"[^A-Z0-9]+", " ")
        .str.strip_chars()
        .alias(ADDRESS_COLUMN)
    )


def splink_records(
    records: pl.DataFrame,
    *,
    with_source: bool = False,
    identifiers: frozenset[str] = FULL_IDENTIFIERS,
) -> pl.DataFrame:
    """The records as Splink reads them (to train on, or to score example pairs): the compared
    columns, forename roots and the residence period columns of the move comparison, and
    `source_dataset` when asked for."""
    address = [address_text_expr()] if "address" in identifiers else []
    return (
        records.select(*LINKAGE_COLUMNS, *address, *PERIOD_COLUMNS)
        .with_columns(forename_roots(records.get_column("forename")), *period_exprs())
        .drop(*PERIOD_COLUMNS, *([] if with_source else ["source_dataset"]))
    )


# ---------------------------------------------------------------- backends


# ---------------------------------------------------------------- linking


# ---------------------------------------------------------------- baselines
