"""A cap per block: prediction blocking rules split their over-common blocks by a further
identifier, chosen per delivery from the data's own value frequencies.

A blocking rule on a common value (a common surname and the first of a month, a forename and a
date of birth) makes blocks whose pairs grow as the square of the population. For each rule,
the key values whose block would hold more than `cap` profiles (more than cap * (cap - 1) / 2
pairs) get a refining value (a forename's initial, a year of birth, ...) and the rule gains the
condition that both sides' refining values agree: the block is split, not dropped, and the join
stays an equi-join in DuckDB and Spark. Key values under the cap keep an empty refining value,
so a delivery with no over-common block is blocked exactly as the rules read. A true pair split
apart (its refining values differ) can still meet through another rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import polars as pl

#: Key parts a rule joins on, as polars expressions on the profiles (the SQL's columns).
KEY_PARTS: dict[str, pl.Expr] = {
    "substr(postcode, 1, 4)": pl.col("postcode").str.slice(0, 4),
    "surname_initial": pl.col("surname").str.slice(0, 1),
    "forename_initial": pl.col("forename").str.slice(0, 1),
}
#: Refining identifiers, tried in this order (those a rule's key does not already pin).
REFINERS: dict[str, pl.Expr] = {
    "forename_initial": pl.col("forename").str.slice(0, 1),
    "surname_initial": pl.col("surname").str.slice(0, 1),
    "dob_year": pl.col("dob").dt.year().cast(pl.Utf8),
    "sex": pl.col("sex").cast(pl.Utf8),
}
# Which key parts already pin what a refiner would add.
_PINNED_BY = {
    "forename_initial": ("forename", "forename_initial"),
    "surname_initial": ("surname", "surname_initial"),
    "dob_year": ("dob",),
    "sex": ("sex",),
}
# A rule on one name and the other's initial (used only where no place pins the pairs) exists
# for pairs whose date of birth is missing or wrong and one name mistyped: any further
# identifier would split exactly those pairs apart (on FEBRL4 a year of birth or the name's
# next letter lost true pairs), so its blocks are counted but never split.
_UNSPLIT_PARTS = frozenset({"forename_initial", "surname_initial"})
#: Key parts naming one person or one place (an NHS number, a property, a postcode of a few
#: dozen addresses): a block on them holds about as many profiles at any population size, so a
#: pair budget never lowers the cap of a rule pinning one (its pairs grow only linearly).
FLAT_PARTS = frozenset({"nhs_token", "uprn_token", "postcode"})
#: Refiners applied to one over-cap block at most (a block still over the cap after them is kept).
MAX_REFINERS = 2
#: The smallest cap a delivery can derive: a family of four at one address, each with two
#: spellings of their names.
CAP_FLOOR = 8


@dataclass(frozen=True)
class BlockKey:
    """The values a blocking rule joins on: `left` on the l record, `right` on the r record
    (the same for a symmetric rule), and the refiners that split one of its blocks."""

    left: tuple[str, ...]
    right: tuple[str, ...]

    @property
    def refiners(self) -> tuple[str, ...]:
        """The identifiers that split this rule's over-cap blocks, in turn."""
        parts = {*self.left, *self.right}
        if parts & _UNSPLIT_PARTS:
            return ()
        free = [r for r in REFINERS if not parts & set(_PINNED_BY[r])]
        return tuple(free[:MAX_REFINERS])

    @property
    def tightenable(self) -> bool:
        """Whether a pair budget may lower this rule's cap: it has refiners and its key pins
        no person or single place (`FLAT_PARTS`), so its blocks can grow with the population."""
        return bool(self.refiners) and not {*self.left, *self.right} & FLAT_PARTS


def key_of(rule: tuple[str, ...] | str) -> BlockKey | None:
    """The key of a prediction rule (a tuple of columns, or SQL of `l.a = r.b` conditions
    joined by AND, where a side may take a name's first letter); None when a side is not a
    plain column (the rule is then never split)."""
    if isinstance(rule, tuple):
        return BlockKey(rule, rule)
    left, right = [], []
    for condition in rule.split(" AND "):
        sides = [_part(s.strip()) for s in condition.split(" = ")]
        if len(sides) != 2 or None in sides:
            return None
        (ls, lp), (rs, rp) = sides  # type: ignore[misc]
        if {ls, rs} != {"l", "r"}:
            return None
        left.append(lp if ls == "l" else rp)
        right.append(rp if rs == "r" else lp)
    return BlockKey(tuple(left), tuple(right))


def _part(side: str) -> tuple[str, str] | None:
    """('l' or 'r', key part) of one side of an equality, or None."""
    plain = re.fullmatch(r"([lr])\.(\w+)", side)
    if plain:
        return plain.group(1), plain.group(2)
    initial = re.fullmatch(r"substr\(([lr])\.(forename|surname), 1, 1\)", side)
    if initial:
        return initial.group(1), f"{initial.group(2)}_initial"
    return None


def _expr(part: str) -> pl.Expr:
    return KEY_PARTS.get(part, pl.col(part))


def derived_block_cap(profiles: pl.DataFrame) -> int:
    """The cap a delivery derives from its own profiles: the most profiles one person has (the
    99.9th percentile of profiles sharing an NHS number, or a forename, surname and date of
    birth), at least CAP_FLOOR. A block larger than that holds two people or more; the refiner
    that splits it (a name's initial, a year of birth) keeps each person's profiles together."""
    sizes = [CAP_FLOOR]
    for key in (("nhs_token",), ("forename", "surname", "dob")):
        if set(key) <= set(profiles.columns):
            counts = profiles.select(key).drop_nulls().group_by(key).len().get_column("len")
            if counts.len():
                sizes.append(int(counts.quantile(0.999, "higher") or 0))
    return max(sizes)


def _block_pairs(frame: pl.DataFrame, symmetric: bool, keys: list[str]) -> pl.DataFrame:
    """Pairs per key value (`keys` columns, `pairs`) of the l rows (side 0) with the r rows
    (side 1) of `frame`."""
    if symmetric:
        counts = frame.group_by(keys).len()
        return counts.select(*keys, (pl.col("len") * (pl.col("len") - 1) // 2).alias("pairs"))
    left = frame.filter(pl.col("_side") == 0).group_by(keys).len()
    right = frame.filter(pl.col("_side") == 1).group_by(keys).len()
    return left.join(right, on=keys).select(
        *keys, (pl.col("len") * pl.col("len_right")).alias("pairs")
    )


def _key_rows(profiles: pl.DataFrame, key: BlockKey) -> pl.DataFrame:
    """Every profile on each side of `key` (_row, _side, _k0.._kn), those with a null key part
    left out (they meet nobody through this rule)."""
    sides = [key.left] if key.left == key.right else [key.left, key.right]
    return pl.concat(
        [
            profiles.select(
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
                pl.lit(side, pl.Int8).alias("_side"),
                *(_expr(p).alias(f"_k{i}") for i, p in enumerate(parts)),
            ).drop_nulls()
            for side, parts in enumerate(sides)
        ]
    )


def _refine_levels(
    profiles: pl.DataFrame, key: BlockKey, cap_pairs: int
) -> tuple[pl.DataFrame | None, dict[str, int]]:
    """The refining value (_row, _side, _refine) of every profile in a block of `key` over the
    cap (None when no block is), and the blocks split and still over the cap."""
    symmetric, refiners = key.left == key.right, key.refiners
    frame = _key_rows(profiles, key)
    keys = [c for c in frame.columns if c.startswith("_k")]
    over = _block_pairs(frame, symmetric, keys).filter(pl.col("pairs") > cap_pairs)
    if not over.height or not refiners:
        return None, {"blocks_split": 0, "blocks_over_cap": over.height}
    stats = {"blocks_split": over.height, "blocks_over_cap": 0}
    # Only the profiles in over-cap blocks are refined: the rest keep an empty value.
    hit = frame.join(over.select(keys), on=keys, how="semi")
    hit = hit.join(
        profiles.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
            *(REFINERS[r].fill_null("?").alias(f"_f{j}") for j, r in enumerate(refiners)),
        ),
        on="_row",
    ).with_columns(pl.lit(1, pl.Int8).alias("_level"))
    for level in range(1, len(refiners) + 1):
        keys.append(f"_f{level - 1}")
        at = hit.filter(pl.col("_level") == level)
        still = _block_pairs(at, symmetric, keys).filter(pl.col("pairs") > cap_pairs)
        if level == len(refiners) or not still.height:
            stats["blocks_over_cap"] = still.height
            break
        flagged = still.select(*keys, pl.lit(True).alias("_over"))
        hit = (
            hit.join(flagged, on=keys, how="left")
            .with_columns(
                pl.when(pl.col("_over") & (pl.col("_level") == level))
                .then(pl.col("_level") + 1)
                .otherwise(pl.col("_level"))
                .alias("_level")
            )
            .drop("_over")
        )
    refine = pl.col("_f0")
    for level in range(2, len(refiners) + 1):
        value = pl.concat_str([pl.col(f"_f{j}") for j in range(level)], separator="|")
        refine = pl.when(pl.col("_level") == level).then(value).otherwise(refine)
    return hit.select("_row", "_side", refine.alias("_refine")), stats


def refine_column_names(index: int) -> tuple[str, str]:
    """The l-side and r-side refining columns of the prediction rule at `index`."""
    return f"_blk{index}_l", f"_blk{index}_r"


def split_blocks(
    profiles: pl.DataFrame,
    rules: list[tuple[str, ...] | str],
    cap: int,
    budget: int | None = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The profiles with refining columns for every rule that has a block over its cap
    (`refine_column_names`), and per rule: its cap, the blocks split and those still over the
    cap after the refiners (kept whole, not dropped).

    Every rule starts at `cap`. With a `budget` (candidate pairs for the whole delivery), the
    rules' pairs are counted as prediction will count them (each pair once, by the first rule
    that finds it, `count_marginal_pairs`) and, while they exceed the budget, the cap of the
    rule finding the most pairs no other rule finds, among those whose blocks can grow with
    the population (`BlockKey.tightenable`), is lowered a step (`_lower_cap`) down to 2. A
    rule's pairs that another rule also finds (most of one person's) cost nothing to keep, so
    a rule is chosen by what splitting its blocks would remove; no rule is dropped, only its
    blocks split. Each entry then also carries `estimated_pairs`.
    """
    keys = [key_of(rule) for rule in rules]
    caps = [cap] * len(rules)
    plans = [_plan(profiles, key, cap) for key in keys]
    if budget is not None:
        pair_sets = [
            _rule_pairs(profiles, key, levels) for key, (levels, _) in zip(keys, plans, strict=True)
        ]
        marginal, alone = count_marginal_pairs(pair_sets)
        while sum(marginal) > budget:
            open_ = [i for i, k in enumerate(keys) if k and k.tightenable and caps[i] > 2]
            if not open_:
                break
            index = max(open_, key=lambda i: alone[i])
            caps[index] = _lower_cap(caps[index])
            plans[index] = _plan(profiles, keys[index], caps[index])
            pair_sets[index] = _rule_pairs(profiles, keys[index], plans[index][0])
            marginal, alone = count_marginal_pairs(pair_sets)
    columns: list[pl.Series] = []
    report: list[dict[str, Any]] = []
    for index, (key, (levels, stats)) in enumerate(zip(keys, plans, strict=True)):
        entry: dict[str, Any] = {"blocks_split": 0, "blocks_over_cap": 0, "split_by": []}
        entry.update(stats, block_cap=caps[index])
        if budget is not None:
            entry["estimated_pairs"] = marginal[index]
        if key is not None and levels is not None:
            entry["split_by"] = list(key.refiners)
            for side, name in enumerate(refine_column_names(index)):
                own = levels.filter(pl.col("_side") == (0 if key.left == key.right else side))
                empty = pl.repeat("", profiles.height, dtype=pl.Utf8, eager=True).alias(name)
                columns.append(empty.scatter(own.get_column("_row"), own.get_column("_refine")))
        report.append(entry)
    return profiles.with_columns(columns), report


def _plan(
    profiles: pl.DataFrame, key: BlockKey | None, cap: int
) -> tuple[pl.DataFrame | None, dict[str, int]]:
    """`_refine_levels` of a rule at `cap` profiles per block (nothing for a rule whose key is
    not read)."""
    if key is None:
        return None, {}
    return _refine_levels(profiles, key, cap * (cap - 1) // 2)


def _lower_cap(cap: int) -> int:
    """The next cap a budget tries for a rule: a quarter lower, at least one lower, at least 2."""
    return max(2, min(cap - 1, cap * 3 // 4))


#: Blocks with more pairs than this (kept whole after the refiners) are counted, not listed,
#: when a budget counts the pairs: all assumed new (an overestimate), so no join is quadratic.
LISTED_BLOCK_PAIRS = 5_000


def _rule_pairs(
    profiles: pl.DataFrame, key: BlockKey | None, levels: pl.DataFrame | None
) -> tuple[pl.Series, int]:
    """The pairs of profiles a rule finds once its over-cap blocks are split by `levels`, as
    Splink orients them (the smaller unique_id on the left): each pair one UInt64 (left id
    * 2**32 + right id), and the pairs of blocks too large to list (`LISTED_BLOCK_PAIRS`)."""
    if key is None:
        return pl.Series("pair", [], pl.UInt64), 0
    symmetric = key.left == key.right
    frame = _key_rows(profiles, key).join(
        profiles.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "unique_id"),
        on="_row",
    )
    if levels is not None:
        frame = frame.join(levels, on=["_row", "_side"], how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Utf8).alias("_refine"))
    frame = frame.with_columns(pl.col("_refine").fill_null(""))
    keys = [c for c in frame.columns if c.startswith("_k")] + ["_refine"]
    blocks = _block_pairs(frame, symmetric, keys)
    large = blocks.filter(pl.col("pairs") > LISTED_BLOCK_PAIRS)
    extra = int(large.get_column("pairs").sum()) // (1 if symmetric else 2)
    frame = frame.join(large.select(keys), on=keys, how="anti")
    left = frame.filter(pl.col("_side") == 0).select(*keys, pl.col("unique_id").alias("_l"))
    right = frame.filter(pl.col("_side") == (0 if symmetric else 1)).select(
        *keys, pl.col("unique_id").alias("_r")
    )
    pairs = left.join(right, on=keys).filter(pl.col("_l") < pl.col("_r"))
    packed = pl.col("_l").cast(pl.UInt64) * (1 << 32) + pl.col("_r").cast(pl.UInt64)
    return pairs.select(packed.alias("pair")).get_column("pair"), extra


def count_marginal_pairs(pair_sets: list[tuple[pl.Series, int]]) -> tuple[list[int], list[int]]:
    """Per rule, from each rule's `_rule_pairs`: the pairs it adds to those of the rules before
    it (Splink's marginal count: a pair is scored once, for the first rule that finds it), and
    the pairs no other rule finds (those only a lower cap on this rule can remove)."""
    found = pl.concat(
        [
            pairs.to_frame("pair").with_columns(pl.lit(i, pl.UInt16).alias("rule"))
            for i, (pairs, _) in enumerate(pair_sets)
        ]
    )
    per_pair = found.group_by("pair").agg(pl.col("rule").min(), pl.len().alias("rules"))
    first = dict(per_pair.get_column("rule").value_counts().iter_rows())
    only = per_pair.filter(pl.col("rules") == 1).get_column("rule").value_counts()
    alone = dict(only.iter_rows())
    return (
        [int(first.get(i, 0)) + extra for i, (_, extra) in enumerate(pair_sets)],
        [int(alone.get(i, 0)) + extra for i, (_, extra) in enumerate(pair_sets)],
    )


def split_rule_sqls(sqls: list[str], report: list[dict[str, Any]]) -> list[str]:
    """Each prediction rule's SQL, with its refining columns' agreement where its blocks are
    split (`split_blocks`)."""
    out = []
    for index, (sql, entry) in enumerate(zip(sqls, report, strict=True)):
        if entry["blocks_split"]:
            left, right = refine_column_names(index)
            sql = f"({sql}) AND l.{left} = r.{right}"
        out.append(sql)
    return out


def with_split_rules(
    splink_settings: dict[str, Any], report: list[dict[str, Any]]
) -> dict[str, Any]:
    """A resolved Splink settings dict whose prediction rules split the blocks `report` says
    are over the cap (`split_rule_sqls`); the model's definition (and fingerprint) is the
    unsplit one, since the rules only choose which pairs are scored."""
    rules = splink_settings["blocking_rules_to_generate_predictions"]
    sqls = split_rule_sqls([r["blocking_rule"] for r in rules], report)
    out = dict(splink_settings)
    out["blocking_rules_to_generate_predictions"] = [
        {**rule, "blocking_rule": sql} for rule, sql in zip(rules, sqls, strict=True)
    ]
    return out
