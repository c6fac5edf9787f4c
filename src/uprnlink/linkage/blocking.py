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

import math
import re
from dataclasses import dataclass
from typing import Any, cast

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

    Every rule starts at `cap`; with a `budget` (candidate pairs for the whole delivery) the
    caps are lowered until the pairs fit (`plan_caps`), and each entry also carries the pairs
    the rule is expected to add (`estimated_pairs`; None for a rule whose key is not read,
    which the budget can neither count nor lower).
    """
    keys = [key_of(rule) for rule in rules]
    caps, estimated = [cap] * len(rules), None
    if budget is not None:
        caps, estimated = plan_caps(profiles, keys, cap, budget)
    columns: list[pl.Series] = []
    report: list[dict[str, Any]] = []
    done: dict[tuple[BlockKey, int], _Levels] = {}
    for index, key in enumerate(keys):
        levels, stats = _levels_of(profiles, key, caps[index], done) if key else (None, {})
        entry: dict[str, Any] = {"blocks_split": 0, "blocks_over_cap": 0, "split_by": []}
        entry.update(stats, block_cap=caps[index])
        if estimated is not None:
            # A rule whose key is not read (not plain columns) is neither counted nor lowered.
            entry["estimated_pairs"] = estimated[index] if key is not None else None
        if key is not None and levels is not None:
            entry["split_by"] = list(key.refiners)
            for side, name in enumerate(refine_column_names(index)):
                own = levels.filter(pl.col("_side") == (0 if key.left == key.right else side))
                empty = pl.repeat("", profiles.height, dtype=pl.Utf8, eager=True).alias(name)
                columns.append(empty.scatter(own.get_column("_row"), own.get_column("_refine")))
        report.append(entry)
    return profiles.with_columns(columns), report


_Levels = tuple[pl.DataFrame | None, dict[str, int]]


def _levels_of(
    profiles: pl.DataFrame, key: BlockKey, cap: int, done: dict[tuple[BlockKey, int], _Levels]
) -> _Levels:
    """`_refine_levels` of `key` at `cap`, remembered in `done`. A rule read the other way
    round (l.a = r.b beside r.a = l.b, as the mover rules come) has the same blocks with its
    sides swapped, so it takes the first one's refining values on the other side."""
    mirror = done.get((BlockKey(key.right, key.left), cap))
    if mirror is not None and key.left != key.right:
        levels, stats = mirror
        if levels is not None:
            levels = levels.with_columns((1 - pl.col("_side")).cast(pl.Int8).alias("_side"))
    else:
        levels, stats = _refine_levels(profiles, key, _cap_pairs(cap))
    done[(key, cap)] = (levels, stats)
    return levels, stats


def _cap_pairs(cap: int) -> int:
    """The most pairs a block of at most `cap` profiles holds."""
    return cap * (cap - 1) // 2


def plan_caps(
    profiles: pl.DataFrame, keys: list[BlockKey | None], cap: int, budget: int
) -> tuple[list[int], list[int]]:
    """Per rule, the cap that keeps the delivery's candidate pairs within `budget`, and the
    pairs the rule then adds (counted as prediction counts them: a pair once, for the first
    rule that finds it).

    Each pair a rule finds at `cap` is listed once with the most pairs a block may hold for
    the rule to keep it (`_pair_thresholds`), so a lower cap is tried by comparing numbers,
    not by blocking again. While over the budget, the rule whose next cap (`_lower_cap`)
    removes the most pairs no other rule finds is lowered, among the rules whose blocks can
    grow with the population (`BlockKey.tightenable`), down to 2: a pair another rule also
    finds (most pairs of one person) costs nothing to keep. No rule is dropped; when every
    such rule is at 2 the pairs may stay over the budget.
    """
    caps = [cap] * len(keys)
    hashed = _hashed_refiners(profiles)
    listed = [_pair_thresholds(profiles, hashed, k, cap) if k else (None, 0) for k in keys]
    extra = [n for _, n in listed]
    frames = [
        t.with_columns(pl.lit(i, pl.UInt16).alias("rule"))
        for i, (t, _) in enumerate(listed)
        if t is not None
    ]
    wide = (
        pl.concat(frames).pivot(on="rule", index="pair", values="most", aggregate_function="min")
        if frames
        else pl.DataFrame({"pair": []})
    )
    columns = [str(i) if str(i) in wide.columns else None for i in range(len(keys))]
    # Pairs every rule finding them keeps at any cap count the same at every step.
    variable = pl.any_horizontal(*(pl.col(c) > 0 for c in columns if c), pl.lit(False))
    fixed = _pair_counts(wide.filter(~variable.fill_null(False)), columns, caps)
    wide = wide.filter(variable.fill_null(False))
    movable = [i for i, k in enumerate(keys) if k and k.tightenable]
    # So are the pairs a rule whose cap never moves finds: each step reads only the others.
    held = pl.any_horizontal(
        *(
            (pl.col(c) <= _cap_pairs(cap)).fill_null(False)
            for i, c in enumerate(columns)
            if c and i not in movable
        ),
        pl.lit(False),
    )
    listed_movable = [i for i in movable if columns[i]]
    moving = wide.filter(~held).select(*(cast(str, columns[i]) for i in listed_movable))
    settled = sum(fixed["marginal"]) + sum(extra) + wide.height - moving.height
    # The block sizes (in pairs) a movable rule's pairs need, to find its largest below a cap.
    sizes = {
        i: wide.get_column(cast(str, columns[i])).drop_nulls().unique() for i in listed_movable
    }
    while True:
        open_ = [i for i in movable if caps[i] > 2]
        nexts = {i: _lower_cap(caps[i], _largest(sizes.get(i), caps[i])) for i in open_}
        step = _step_counts(moving, columns, caps, nexts)
        if settled + step["found"] <= budget or not open_:
            break
        alone = {i: step["alone"].get(i, 0) + fixed["alone"][i] for i in open_}
        index = max(open_, key=lambda i: (step["gain"].get(i, 0), alone[i]))
        caps[index] = nexts[index]
    counts = _pair_counts(wide, columns, caps)
    return caps, [sum(n) for n in zip(counts["marginal"], fixed["marginal"], extra, strict=True)]


def _largest(sizes: pl.Series | None, cap: int) -> int:
    """The largest block (in pairs) at most `cap` allows among a rule's listed `sizes`."""
    if sizes is None:
        return 0
    return int(sizes.filter(sizes <= _cap_pairs(cap)).max() or 0)  # type: ignore[arg-type]


def _step_counts(
    moving: pl.DataFrame, columns: list[str | None], caps: list[int], nexts: dict[int, int]
) -> dict[str, Any]:
    """One pass of `plan_caps` over the pairs only movable rules find (`moving`): how many
    are found at `caps`, per rule those only it finds (`alone`) and of those, the ones its
    next cap in `nexts` would lose (`gain`)."""
    named = {i: c for i, c in enumerate(columns) if c and c in moving.columns}
    if not named or not moving.height:
        return {"found": 0, "alone": {}, "gain": {}}
    alone = {i: pl.col("_mask") == (1 << i) for i in named}
    row = (
        moving.with_columns(_found_mask([named.get(i) for i in range(len(columns))], caps))
        .select(
            (pl.col("_mask") != 0).sum().alias("found"),
            *(a.sum().alias(f"a{i}") for i, a in alone.items()),
            *(
                (alone[i] & (pl.col(named[i]) > _cap_pairs(nexts[i]))).sum().alias(f"g{i}")
                for i in named
                if i in nexts
            ),
        )
        .row(0, named=True)
    )
    return {
        "found": int(row["found"]),
        "alone": {i: int(row[f"a{i}"]) for i in named},
        "gain": {i: int(row[f"g{i}"]) for i in named if i in nexts},
    }


def _found_mask(columns: list[str | None], caps: list[int]) -> pl.Expr:
    """Per listed pair (`plan_caps`), bit i set when rule i finds it at `caps[i]`: the lowest
    bit is the rule that scores it."""
    return pl.sum_horizontal(
        pl.lit(0, pl.UInt64),
        *(
            (pl.col(c) <= _cap_pairs(caps[i])).fill_null(False).cast(pl.UInt64) * (1 << i)
            for i, c in enumerate(columns)
            if c
        ),
    ).alias("_mask")


def _pair_counts(
    wide: pl.DataFrame, columns: list[str | None], caps: list[int]
) -> dict[str, list[int]]:
    """From the listed pairs (`plan_caps`) at these caps, per rule: the pairs it adds
    (`marginal`) and those only it finds (`alone`)."""
    lowest = wide.select(_found_mask(columns, caps)).select(
        pl.col("_mask").bitwise_trailing_zeros().alias("rule"),
        (pl.col("_mask").bitwise_count_ones() == 1).alias("alone"),
    )
    first = dict(lowest.get_column("rule").value_counts().iter_rows())
    only = dict(lowest.filter("alone").get_column("rule").value_counts().iter_rows())
    return {
        "marginal": [int(first.get(i, 0)) for i in range(len(columns))],
        "alone": [int(only.get(i, 0)) for i in range(len(columns))],
    }


def _lower_cap(cap: int, largest: int) -> int:
    """The next cap a budget tries for a rule: the largest that splits its largest splittable
    block (`largest` pairs; 2 when none is splittable: no lower cap changes it), at least 2."""
    below = (1 + math.isqrt(8 * (largest - 1) + 1)) // 2 if largest > 0 else 2
    return max(2, min(cap - 1, below))


#: Blocks with more pairs than this, kept whole after the refiners, are counted, not listed,
#: when a budget counts the pairs (all assumed new: an overestimate), so no join is quadratic.
LISTED_BLOCK_PAIRS = 5_000


def _hashed_refiners(profiles: pl.DataFrame) -> pl.DataFrame:
    """Per profile (`_row`, as `_key_rows` numbers them): its unique_id (`_id`) and each
    refiner's value hashed (a column per REFINERS name), computed once for every rule."""
    return profiles.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        pl.col("unique_id").cast(pl.UInt64).alias("_id"),
        *(expr.fill_null("?").hash().alias(name) for name, expr in REFINERS.items()),
    )


def _pair_thresholds(
    profiles: pl.DataFrame, hashed: pl.DataFrame, key: BlockKey, cap: int
) -> tuple[pl.DataFrame, int]:
    """The pairs of profiles a rule finds at `cap` (`pair`: the smaller unique_id * 2**32 +
    the larger, as Splink orients them; `most`: the most pairs a block may hold for the rule
    to keep the pair at a lower cap, 0 when any cap keeps it), and the pairs of final blocks
    too large to list (`LISTED_BLOCK_PAIRS`).

    A pair in a block of P0 pairs is kept at any cap of at least P0 pairs; below that its
    block is split by the first refiner, so a pair differing on it needs P0, one agreeing on
    it lies in a sub-block of P1 pairs, split by the second refiner below P1, and so on.
    """
    symmetric, refiners = key.left == key.right, key.refiners
    frame = _key_rows(profiles, key)
    frame = frame.select(
        "_row",
        "_side",
        pl.struct([c for c in frame.columns if c.startswith("_k")]).hash().alias("_k"),
    ).join(
        hashed.select("_row", "_id", *(pl.col(r).alias(f"_f{j}") for j, r in enumerate(refiners))),
        on="_row",
    )
    groups, sizes = ["_k"], []
    for level in range(len(refiners) + 1):
        size = _block_pairs(frame, symmetric, groups).rename({"pairs": f"_p{level}"})
        frame = frame.join(size, on=groups, how="left")
        frame = frame.with_columns(pl.col(f"_p{level}").fill_null(0))
        sizes.append(f"_p{level}")
        if level < len(refiners):
            groups = [*groups, f"_f{level}"]
    # The level a profile's block is joined at: the first whose block fits the cap.
    fits = [pl.col(p) <= _cap_pairs(cap) for p in sizes[:-1]]
    at: pl.Expr = pl.lit(len(refiners), pl.UInt8)
    for i in reversed(range(len(fits))):
        at = pl.when(fits[i]).then(pl.lit(i, pl.UInt8)).otherwise(at)
    frame = frame.with_columns(at.alias("_level"))
    # A profile's block: its key and, from its level, the refiners that split it (0 beyond).
    frame = frame.with_columns(
        pl.when(pl.col("_level") > j).then(pl.col(f"_f{j}")).otherwise(0).alias(f"_g{j}")
        for j in range(len(refiners))
    )
    on = ["_k", "_level", *(f"_g{j}" for j in range(len(refiners)))]
    blocks = _block_pairs(frame, symmetric, on)
    large = blocks.filter(
        (pl.col("pairs") > LISTED_BLOCK_PAIRS) & (pl.col("_level") == len(refiners))
    )
    extra = int(large.get_column("pairs").sum()) // (1 if symmetric else 2)
    frame = frame.join(large.select(on), on=on, how="anti")
    carried = ["_id", *sizes, *(f"_f{j}" for j in range(len(refiners)))]
    left = frame.filter(pl.col("_side") == 0).select(*on, *carried)
    right = frame.filter(pl.col("_side") == (0 if symmetric else 1)).select(*on, *carried)
    pairs = left.join(right, on=on, suffix="_r").filter(pl.col("_id") < pl.col("_id_r"))
    # Lost below the block of the first refiner the two differ on (at or after their level).
    most = pl.lit(0, pl.Int64)
    for j in reversed(range(len(refiners))):
        differ = pl.col(f"_f{j}") != pl.col(f"_f{j}_r")
        most = pl.when((pl.col("_level") <= j) & differ).then(pl.col(f"_p{j}")).otherwise(most)
    # At most the pairs of a block within the cap, so 32 bits hold it (half the memory).
    return pairs.select(
        (pl.col("_id") * (1 << 32) + pl.col("_id_r")).alias("pair"),
        most.clip(0, 2**32 - 1).cast(pl.UInt32).alias("most"),
    ), extra


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
