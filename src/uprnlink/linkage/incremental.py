"""Incremental linkage: the last link's scored profile pairs, kept by profile key, so that a
delivery in which few records changed scores only the pairs its new profiles take part in.

A profile's score against another depends only on the two profiles' compared values, the
model and which blocking rule (as split for over-common blocks) brings them together. So a pair
of two profiles that were both in the last link, with the same refining values for every split
rule, would score the same again (up to the term frequencies of the names, which Splink reads
from the profiles being linked; kept pairs' scores are moved to this link's frequencies,
`rescaled_pairs`). Profiles are keyed by
the two hashes of their compared values (`linkage_profiles`), which do not depend on the
delivery; their numbers do, so pairs are stored by key and mapped onto this link's numbers.

New profiles (not in the last link, or whose blocks were split differently) are scored against
every profile: numbered after the others, each prediction rule gains the condition that its
right side is new (`fresh_last`). Pairs
of profiles gone from the delivery are dropped. Clustering, the cannot-link rules and the
co-residence passes then run on the whole, as in a full link.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import KeyManagementError
from uprnlink.linkage.blocking import refine_column_names
from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.trusted import read_trusted, write_trusted

log = logging.getLogger(__name__)

#: A profile's key: two independent 64-bit hashes of its compared values.
KEY_COLUMNS = ("profile_h1", "profile_h2")
#: The column that marks a profile new to this link (a prediction rule needs one new side).
FRESH = "_fresh"
#: Files in the linkage folder of the trusted zone.
PAIRS_FILE = "scored_pairs.parquet"
PROFILES_FILE = "scored_profiles.parquet"
FREQUENCIES_FILE = "scored_frequencies.parquet"
STATE_FILE = "scored_pairs.json"
#: The layout of the files above (a part of the basis: files of another layout are not read).
STATE_FORMAT = 2
_A = {"profile_h1": "a_h1", "profile_h2": "a_h2"}
_B = {"profile_h1": "b_h1", "profile_h2": "b_h2"}


@dataclass(frozen=True)
class ScoredPairs:
    """The last link's pairs at or above the review floor (a_h1, a_h2, b_h1, b_h2,
    match_weight as Splink scored it, not settled), its profiles (profile_h1, profile_h2, blocks: a hash of the
    profile's refining values), the term frequencies it scored with (`term_frequencies`)
    and the identifiers it linked on."""

    pairs: pl.DataFrame
    profiles: pl.DataFrame
    frequencies: pl.DataFrame
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class Increment:
    """What this link reuses: which profiles are new (a Boolean per profile row), the last
    link's pairs between profiles that are not (unique_id_l, unique_id_r, match_weight, on
    this link's profile numbers) and counts for the run summary."""

    fresh: pl.Series
    kept: pl.DataFrame
    new_profiles: int
    dropped_profiles: int
    reblocked_profiles: int = 0  # of the new: in the last link, but with other refining values

    def counts(self, pairs_scored: int) -> dict[str, int]:
        """The run summary's `incremental` record, with the pairs this link scored."""
        return {
            "new_profiles": self.new_profiles,
            "reblocked_profiles": self.reblocked_profiles,
            "dropped_profiles": self.dropped_profiles,
            "pairs_scored": pairs_scored,
            "pairs_kept": self.kept.height,
        }


def profile_blocks(profiles: pl.DataFrame, blocked: pl.DataFrame, rules: int) -> pl.DataFrame:
    """Each profile's number, key and a hash of its refining values under every rule (an
    unsplit rule counts as an empty refining value, which blocks the same pairs)."""
    values = [
        pl.col(name) if name in blocked.columns else pl.lit("")
        for index in range(rules)
        for name in refine_column_names(index)
    ]
    signature = pl.concat_str(values, separator="\x1f") if values else pl.lit("")
    return pl.DataFrame(
        {
            "unique_id": profiles.get_column("unique_id"),
            **{c: profiles.get_column(c) for c in KEY_COLUMNS},
            # with_columns, not select: a literal (no rule split) is broadcast to every row.
            "blocks": blocked.with_columns(signature.hash(seed=7).alias("_s")).get_column("_s"),
        }
    )


def plan_increment(current: pl.DataFrame, previous: ScoredPairs) -> Increment:
    """Which of this link's profiles (`profile_blocks`) are new, and the last link's pairs
    between the others, renumbered (each pair with its smaller number first)."""
    joined = current.join(
        previous.profiles.rename({"blocks": "_was"}), on=KEY_COLUMNS, how="left",
        maintain_order="left",
    )  # fmt: skip
    fresh = (pl.col("_was").is_null() | (pl.col("_was") != pl.col("blocks"))).alias(FRESH)
    flagged = joined.with_columns(fresh)
    known = flagged.filter(~pl.col(FRESH)).select("unique_id", *KEY_COLUMNS)
    dropped = previous.profiles.join(current, on=KEY_COLUMNS, how="anti").height
    kept = (
        previous.pairs.join(known.rename({**_A, "unique_id": "a"}), on=list(_A.values()))
        .join(known.rename({**_B, "unique_id": "b"}), on=list(_B.values()))
        .select(
            pl.min_horizontal("a", "b").alias("unique_id_l"),
            pl.max_horizontal("a", "b").alias("unique_id_r"),
            "match_weight",
        )
    )
    fresh_rows = flagged.get_column(FRESH)
    reblocked = flagged.select((pl.col(FRESH) & pl.col("_was").is_not_null()).sum()).item()
    return Increment(fresh_rows, kept, int(fresh_rows.sum()), dropped, int(reblocked))


def tf_weights(splink_settings: dict[str, Any]) -> dict[str, float] | None:
    """Column -> weight of every comparison level adjusted for term frequency, or None when a
    level adjusts in a way a kept pair's score cannot be moved by (not an exact match of the
    column, or with a minimum u value)."""
    out: dict[str, float] = {}
    for comparison in splink_settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            column = level.get("tf_adjustment_column")
            if not column:
                continue
            exact = level["sql_condition"] == f'"{column}_l" = "{column}_r"'
            if not exact or level.get("tf_minimum_u_value"):
                return None
            out[column] = float(level.get("tf_adjustment_weight", 1.0))
    return out


def term_frequencies(profiles: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    """Each value's share of the non-null values of each column (column, value, tf), as
    Splink computes it from the profiles it scores."""
    frames = [
        profiles.select(pl.col(c).cast(pl.Utf8).alias("value"))
        .drop_nulls()
        .group_by("value")
        .agg(pl.len().cast(pl.Float64).alias("tf"))
        .select(pl.lit(c).alias("column"), "value", pl.col("tf") / pl.col("tf").sum())
        for c in columns
    ]
    empty = pl.DataFrame(schema={"column": pl.Utf8, "value": pl.Utf8, "tf": pl.Float64})
    return pl.concat([empty, *frames])


def rescaled_pairs(
    kept: pl.DataFrame,
    profiles: pl.DataFrame,
    weights: dict[str, float],
    before: pl.DataFrame,
    after: pl.DataFrame,
) -> pl.DataFrame:
    """Kept pairs' match weights under this link's term frequencies: Splink adds
    weight * (log2 u - log2 tf) to an exact match on an adjusted column, so the pair's match
    weight moves by weight * log2(tf before / tf after) for each such column it agrees on."""
    frame, shift = kept, pl.lit(0.0)
    for n, (column, weight) in enumerate(weights.items()):
        values = profiles.select("unique_id", pl.col(column).cast(pl.Utf8).alias("value"))
        tf = before.filter(pl.col("column") == column).join(
            after.filter(pl.col("column") == column), on=["column", "value"], suffix="_after"
        )
        moved = weight * (pl.col("tf").log(2) - pl.col("tf_after").log(2))
        shifts = tf.select("value", moved.alias("tf"))
        frame = (
            frame.join(values.rename({"unique_id": "unique_id_l", "value": f"_l{n}"}),
                       on="unique_id_l", how="left", maintain_order="left")
            .join(values.rename({"unique_id": "unique_id_r", "value": f"_r{n}"}),
                  on="unique_id_r", how="left", maintain_order="left")
            .join(shifts.rename({"value": f"_l{n}", "tf": f"_s{n}"}), on=f"_l{n}", how="left",
                  maintain_order="left")
        )  # fmt: skip
        agree = pl.col(f"_l{n}") == pl.col(f"_r{n}")
        shift = shift + pl.when(agree).then(pl.col(f"_s{n}")).otherwise(0.0).fill_null(0.0)
    moved = (pl.col("match_weight") + shift).alias("match_weight")
    return frame.select("unique_id_l", "unique_id_r", moved)


def fresh_last(blocked: pl.DataFrame, fresh: pl.Series) -> pl.DataFrame:
    """The profiles as Splink scores them in an incremental link: new profiles numbered after
    all the others (number + n), so that in every pair Splink considers (the smaller number on
    the left) with a new profile, the right one is new. `r._fresh` is then a condition on one
    side, which DuckDB applies before the join: the join meets only the new profiles' blocks
    (an `l._fresh OR r._fresh` condition is applied after it, to every pair of every block)."""
    shift = pl.when(pl.col(FRESH)).then(blocked.height).otherwise(0)
    return blocked.with_columns(fresh).with_columns(pl.col("unique_id") + shift)


def original_numbers(pairs: pl.DataFrame, profiles: int) -> pl.DataFrame:
    """Pairs scored on `fresh_last` numbers back on the profiles' own numbers, the smaller
    first as Splink gives them."""
    left, right = pl.col("unique_id_l") % profiles, pl.col("unique_id_r") % profiles
    return pairs.with_columns(
        pl.min_horizontal(left, right).alias("unique_id_l"),
        pl.max_horizontal(left, right).alias("unique_id_r"),
    )


#: Decimal places of match weight (bits) the pairs' probabilities are settled to.
WEIGHT_DECIMALS = 6


def settled_pairs(pairs: pl.DataFrame, floor: float) -> pl.DataFrame:
    """Pairs (unique_id_l, unique_id_r, match_weight) sorted by profile numbers, with the
    probability of their match weight rounded to WEIGHT_DECIMALS bits, at or above `floor`.

    A kept pair's weight is moved by `rescaled_pairs` in other floating-point steps than
    Splink's, so it can differ from a full relink's in the last bits; where two pairs tie
    exactly (an incomplete record matching two people equally, the tie broken by cluster id)
    that is enough to break the tie the other way. Settled to a millionth of a bit (two
    names' frequencies differ by far more), both links give the same probability.
    """
    weight = pl.col("match_weight").round(WEIGHT_DECIMALS)
    probability = (1 / (1 + pl.lit(2.0).pow(-weight))).alias("match_probability")
    return (
        pairs.sort("unique_id_l", "unique_id_r")
        .with_columns(probability)
        .filter(pl.col("match_probability") >= floor)
        .select("unique_id_l", "unique_id_r", "match_probability", "match_weight")
    )


def with_fresh_rules(splink_settings: dict[str, Any]) -> dict[str, Any]:
    """A resolved Splink settings dict whose prediction rules pair only where the right side
    is new (`fresh_last`); the model's parameters and its fingerprint are unchanged."""
    rules = splink_settings["blocking_rules_to_generate_predictions"]
    out = dict(splink_settings)
    out["blocking_rules_to_generate_predictions"] = [
        {**rule, "blocking_rule": f"({rule['blocking_rule']}) AND r.{FRESH}"} for rule in rules
    ]
    return out


def scored_pairs(
    current: pl.DataFrame,
    pairs: pl.DataFrame,
    frequencies: pl.DataFrame,
    identifiers: frozenset[str],
) -> ScoredPairs:
    """This link's pairs (unique_id_l, unique_id_r, match_weight on profile numbers),
    profiles (`profile_blocks`) by key and term frequencies, for the next link."""
    keys = current.select("unique_id", *KEY_COLUMNS)
    keyed = (
        pairs.join(keys.rename({**_A, "unique_id": "unique_id_l"}), on="unique_id_l")
        .join(keys.rename({**_B, "unique_id": "unique_id_r"}), on="unique_id_r")
        .select(*_A.values(), *_B.values(), "match_weight")
    )
    return ScoredPairs(keyed, current.drop("unique_id"), frequencies, tuple(sorted(identifiers)))


def write_scored_pairs(found: ScoredPairs, linkage_dir: Path, key: MasterKey, basis: str) -> None:
    """Write the pairs and profiles to the trusted zone, with the digest of what scored them
    (`basis`: model, settings, definitions and library versions) beside them."""
    write_trusted(found.pairs, linkage_dir / PAIRS_FILE, key)
    write_trusted(found.profiles, linkage_dir / PROFILES_FILE, key)
    write_trusted(found.frequencies, linkage_dir / FREQUENCIES_FILE, key)
    state = {"basis": basis, "identifiers": list(found.identifiers)}
    (linkage_dir / STATE_FILE).write_text(json.dumps(state))


def read_scored_pairs(linkage_dir: Path, key: MasterKey, basis: str) -> ScoredPairs | None:
    """The last link's pairs when they were scored on the same basis and key epoch, else None
    (logged: the link is then a full one)."""
    state_path = linkage_dir / STATE_FILE
    files = (STATE_FILE, PAIRS_FILE, PROFILES_FILE, FREQUENCIES_FILE)
    if not all((linkage_dir / name).exists() for name in files):
        log.info("linkage: full link (no scored pairs from an earlier link)")
        return None
    try:
        state = json.loads(state_path.read_text())
    except ValueError:
        log.warning("linkage: full link (%s is not valid JSON)", STATE_FILE)
        return None
    if state.get("basis") != basis:
        log.info(
            "linkage: full link (the model, linkage settings, rules version or a library "
            "changed since the last link)"
        )
        return None
    try:
        pairs = read_trusted(linkage_dir / PAIRS_FILE, key)
        profiles = read_trusted(linkage_dir / PROFILES_FILE, key)
        frequencies = read_trusted(linkage_dir / FREQUENCIES_FILE, key)
    except KeyManagementError:
        log.info("linkage: full link (the scored pairs are from another key epoch)")
        return None
    return ScoredPairs(pairs, profiles, frequencies, tuple(state.get("identifiers", ())))
