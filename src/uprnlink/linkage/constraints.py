"""Cannot-link evidence: records that cannot be one person never share a cluster.

Scores say how alike two records are; some facts say two records are different people whatever
the score. A father and the son named after him at one address agree on everything Splink
compares except the date of birth and, where both carry one, the NHS number, and one record
with a slipped date or no date of birth is enough to chain them into one cluster. Three rules,
each a fact the extracts carry, not a likelihood:

* `nhs_number`: two different NHS numbers (only valid numbers get a token at ingest), except
  on a pair the model linked directly with the same forename and date of birth, other than
  1 January (a second, temporary registration: `_weighed_by_the_model`);
* `date_of_birth`: two dates of birth no known error pattern turns into each other: not the
  same date, not day and month transposed, and more than one of day, month and year different
  (a typo or a slipped digit changes one field), not 1 January of the other's year (the date
  written when only the year is known), nor joined through other dates of the cluster that are
  (see `dob_strands`). A pair the model compared directly and linked anyway is exempt: it
  weighed the disagreement against everything else agreeing (a date replaced wholesale, as in
  4.5% of FEBRL4's pairs); only dates brought together through other records are a veto;
* `same_listing`: two records on one council tax account, tenancy or benefit claim at the same
  time (overlapping periods) are two people: each system lists a person once per account. On a
  claim, two rows with the same role (two claimants) are one person entered twice;
* `under_age`: an account, tenancy or claim that began before a person's 16th birthday (by a
  date of birth on another of the cluster's records) is not that person's: the council tax
  party without a date of birth at a father's address is the father, not the son named after
  him who was a child when the liability began.

Clustering runs unconstrained first; only clusters holding a conflicting pair are rebuilt. A
rebuilt cluster is split on the evidence, not cut at its weakest edge: its complete records
(date of birth or NHS number) are joined strongest pair first, and two groups are never joined
if any of their records conflict; each incomplete record then joins the group it matches best
among those it does not conflict with (so of two parties on one account, the better match takes
the group and the other stands apart); incomplete records left over cluster among themselves
under the same rule.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from uprnlink.linkage.clustering import connected_components
from uprnlink.linkage.review import CLERICAL
from uprnlink.sources import listing_fields

RULES = ("nhs_number", "date_of_birth", "same_listing", "under_age")
# Bumped when a rule changes, so the link stage does not reuse clusters made under the old ones.
RULES_VERSION = "cannot-link/3"
# The youngest a person can be liable for council tax, hold a tenancy or claim (18 for council
# tax; 16- and 17-year-olds can hold some tenancies and claims).
ADULT_AGE = 16

# Contract -> (the field naming the account, tenancy or claim; the field giving a person's role
# on it, if any), from the source registry. Only systems that list each person once per account
# are there.
LISTING_FIELDS: dict[str, tuple[str, str | None]] = listing_fields()

LISTING_SCHEMA = {
    "unique_id": pl.Utf8,
    "listing": pl.Utf8,
    "start": pl.Date,
    "end": pl.Date,
    "role": pl.Utf8,
}
_OPEN = pl.date(9999, 12, 31)


@dataclass
class CannotLinkReport:
    """What the cannot-link rules changed (counts only)."""

    clusters_in_conflict: int = 0  # clusters holding at least one conflicting pair
    by_rule: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    people_added: int = 0  # extra clusters the splits made
    records_moved: int = 0  # incomplete records a split freed that joined another cluster
    unresolved: int = 0  # conflicting pairs left inside one profile (records that cannot split)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The counts as a plain dict (for the run summary)."""
        return asdict(self)


def year_only_expr(date: pl.Expr) -> pl.Expr:
    """True where a date of birth is 1 January: what systems record when only the year is
    known, so it says no more than the year."""
    return date.dt.ordinal_day() == 1


def dob_compatible_expr(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """True where dates of birth a and b may be one person's: the same date, day and month
    transposed, no more than one of day, month and year different, or one of them 1 January
    of the other's year (the date systems record when only the year is known)."""
    same_fields = (
        (a.dt.year() == b.dt.year()).cast(pl.Int8)
        + (a.dt.month() == b.dt.month()).cast(pl.Int8)
        + (a.dt.day() == b.dt.day()).cast(pl.Int8)
    )
    swapped = (
        (a.dt.year() == b.dt.year()) & (a.dt.month() == b.dt.day()) & (a.dt.day() == b.dt.month())
    )
    january = year_only_expr(a) | year_only_expr(b)
    return (same_fields >= 2) | swapped | (january & (a.dt.year() == b.dt.year()))


def dob_strands(dates: pl.DataFrame) -> pl.DataFrame:
    """For each cluster's dates of birth (cluster_id, dob), the strand each belongs to: dates
    joined by a chain of compatible dates observed in the cluster (`dob_compatible_expr`).

    A person's records may carry two different slips (one a digit of the day, another the
    month): those two dates are not compatible with each other, but both are with the true date
    the other records give, so they stay one strand. Dates in two strands conflict.
    """
    distinct = dates.drop_nulls().unique().sort("cluster_id", "dob").with_row_index("node")
    pairs = (
        distinct.join(distinct, on="cluster_id", suffix="_b")
        .filter(pl.col("node") < pl.col("node_b"))
        .filter(dob_compatible_expr(pl.col("dob"), pl.col("dob_b")))
        .select(pl.col("node").alias("a"), pl.col("node_b").alias("b"))
    )
    strands = connected_components(distinct.get_column("node"), pairs)
    return distinct.join(strands.rename({"node": "node", "component": "strand"}), on="node").select(
        "cluster_id", "dob", "strand"
    )


def listing_overlap_expr() -> pl.Expr:
    """Two listings (columns start, end and start_b, end_b) at the same time, whose roles do not
    say they are one person (the same role twice on a claim)."""
    overlap = (pl.col("start") <= pl.col("end_b").fill_null(_OPEN)) & (
        pl.col("start_b") <= pl.col("end").fill_null(_OPEN)
    )
    same_role = pl.col("role").is_not_null() & (pl.col("role") == pl.col("role_b"))
    return overlap & ~same_role


def _clerical_conflicts(labels: pl.DataFrame, clerical: pl.DataFrame) -> pl.DataFrame:
    """Pairs a reviewer labelled non-match (clerical: a, b) that share a cluster."""
    ids = labels.schema["unique_id"]
    return (
        clerical.select(pl.col("a").cast(ids), pl.col("b").cast(ids))
        .join(labels.rename({"unique_id": "a"}), on="a")
        .join(labels.rename({"unique_id": "b", "cluster_id": "_cb"}), on="b")
        .filter(pl.col("cluster_id") == pl.col("_cb"))
        .select("cluster_id", "a", "b", pl.lit(CLERICAL).alias("rule"))
    )


def conflict_pairs(
    labels: pl.DataFrame,
    attributes: pl.DataFrame,
    listings: pl.DataFrame | None,
    clerical: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Pairs of nodes in one cluster that cannot be one person: cluster_id, a, b, rule.

    `labels` has unique_id, cluster_id; `attributes` unique_id, nhs_token, dob; `listings`
    unique_id, listing, start, end, role (a node may be on several listings); `clerical` the
    pairs (a, b) reviewers labelled non-match (rule `clerical`). Pairs are found
    between the distinct (NHS number, date of birth) values of each cluster, then expanded to
    the nodes holding them, so a cluster of many alike records costs little.
    """
    values = labels.join(attributes, on="unique_id", how="inner")
    found = _value_conflicts(values)
    frames = [found] if found is not None else []
    if listings is not None and listings.height:
        listed = listings.join(labels, on="unique_id", how="inner")
        frames += [_listing_conflicts(listed), _under_age_conflicts(listed, attributes, values)]
    if clerical is not None and clerical.height:
        frames.append(_clerical_conflicts(labels, clerical))
    schema = {"cluster_id": labels.schema["cluster_id"], "a": labels.schema["unique_id"]}
    if not frames:
        return pl.DataFrame(
            schema={**schema, "b": schema["a"], "rule": pl.Utf8},
        )
    out = pl.concat([f.cast({"a": schema["a"], "b": schema["a"]}) for f in frames])
    return out.unique(maintain_order=False).sort("cluster_id", "a", "b", "rule")


def _value_conflicts(values: pl.DataFrame) -> pl.DataFrame | None:
    """The `nhs_number` and `date_of_birth` pairs (cluster_id, a, b, rule) among `values`
    (unique_id, cluster_id, nhs_token, dob); None when no cluster holds two of either."""
    checked = (
        values.group_by("cluster_id")
        .agg(
            pl.col("nhs_token").drop_nulls().n_unique().alias("nhs"),
            pl.col("dob").drop_nulls().n_unique().alias("dob"),
        )
        .filter((pl.col("nhs") > 1) | (pl.col("dob") > 1))
        .select("cluster_id")
    )
    if not checked.height:
        return None
    nodes = values.join(checked, on="cluster_id", how="semi")
    combos = (
        nodes.select("cluster_id", "nhs_token", "dob")
        .unique()
        .sort("cluster_id", "nhs_token", "dob", nulls_last=True)
        .with_row_index("combo")
    )
    both = combos.join(combos, on="cluster_id", suffix="_b").filter(
        pl.col("combo") < pl.col("combo_b")
    )
    nhs = both.filter(
        pl.col("nhs_token").is_not_null()
        & pl.col("nhs_token_b").is_not_null()
        & (pl.col("nhs_token") != pl.col("nhs_token_b"))
    ).with_columns(pl.lit("nhs_number").alias("rule"))
    strands = dob_strands(nodes.select("cluster_id", "dob"))
    dob = (
        both.join(strands, on=["cluster_id", "dob"])
        .join(strands.rename({"dob": "dob_b", "strand": "strand_b"}), on=["cluster_id", "dob_b"])
        .filter(pl.col("strand") != pl.col("strand_b"))
        .with_columns(pl.lit("date_of_birth").alias("rule"))
    )
    keep = ["cluster_id", "combo", "combo_b", "rule"]
    found = pl.concat([nhs.select(keep), dob.select(keep)])
    keyed = nodes.join(combos, on=["cluster_id", "nhs_token", "dob"], nulls_equal=True)
    return (
        found.join(keyed.select("combo", pl.col("unique_id").alias("a")), on="combo")
        .join(
            keyed.select(pl.col("combo").alias("combo_b"), pl.col("unique_id").alias("b")),
            on="combo_b",
        )
        .select("cluster_id", "a", "b", "rule")
    )


def _listing_conflicts(listed: pl.DataFrame) -> pl.DataFrame:
    """The `same_listing` pairs among `listed` (listings with each node's cluster_id)."""
    shared = listed.filter(pl.len().over("cluster_id", "listing") > 1)
    return (
        shared.join(shared, on=["cluster_id", "listing"], suffix="_b")
        .filter(pl.col("unique_id") != pl.col("unique_id_b"))
        .filter(listing_overlap_expr())
        .select(
            "cluster_id",
            pl.min_horizontal("unique_id", "unique_id_b").alias("a"),
            pl.max_horizontal("unique_id", "unique_id_b").alias("b"),
            pl.lit("same_listing").alias("rule"),
        )
    )


def _under_age_conflicts(
    listed: pl.DataFrame, attributes: pl.DataFrame, values: pl.DataFrame
) -> pl.DataFrame:
    """The `under_age` pairs: an account, tenancy or claim begun before the person's 16th
    birthday, by the date of birth of another record of the cluster: a record without a date
    of birth of its own (a council tax party) is then a parent's, not this child's."""
    undated = listed.join(
        attributes.filter(pl.col("dob").is_null()).select("unique_id"), on="unique_id"
    )
    dated = values.filter(pl.col("dob").is_not_null()).join(
        undated.select("cluster_id").unique(), on="cluster_id", how="semi"
    )
    # The earliest date of each strand: a slipped year on one record does not make the
    # person younger than the rest of their records say.
    strands = dob_strands(dated.select("cluster_id", "dob"))
    earliest = strands.group_by("cluster_id", "strand").agg(pl.col("dob").min().alias("born"))
    dated = (
        dated.join(strands, on=["cluster_id", "dob"])
        .join(earliest, on=["cluster_id", "strand"])
        .select("cluster_id", pl.col("unique_id").alias("unique_id_b"), "born")
    )
    return (
        undated.join(dated, on="cluster_id")
        .filter(pl.col("start") < pl.col("born").dt.offset_by(f"{ADULT_AGE}y"))
        .select(
            "cluster_id",
            pl.min_horizontal("unique_id", "unique_id_b").alias("a"),
            pl.max_horizontal("unique_id", "unique_id_b").alias("b"),
            pl.lit("under_age").alias("rule"),
        )
    )


class _Groups:
    """Union-find over the nodes of one cluster that refuses to join conflicting groups."""

    def __init__(self, nodes: list[Hashable], enemies: dict[Hashable, set[Hashable]]) -> None:
        self.parent = {n: n for n in nodes}
        self.members = {n: {n} for n in nodes}
        self.enemies = {n: set(enemies.get(n, ())) for n in nodes}

    def find(self, n: Hashable) -> Hashable:
        root = n
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[n] != root:
            self.parent[n], n = root, self.parent[n]
        return root

    def join(self, a: Hashable, b: Hashable) -> bool:
        """Join the groups of a and b unless a record of one conflicts with one of the other."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        if self.enemies[ra] & self.members[rb]:
            return False
        self.parent[rb] = ra
        self.members[ra] |= self.members.pop(rb)
        self.enemies[ra] |= self.enemies.pop(rb)
        return True


def _split_one(
    nodes: list[Any],
    complete: set[Any],
    edges: list[tuple[float, Any, Any]],
    enemies: dict[Any, set[Any]],
) -> dict[Any, Any]:
    """Node -> group label (smallest complete node of the group, else its smallest node) for
    one cluster, joined strongest evidence first without joining conflicting records."""
    groups = _Groups(nodes, enemies)
    ordered = sorted(edges, key=lambda e: (-e[0], e[1], e[2]))
    for _, a, b in ordered:
        if a in complete and b in complete:
            groups.join(a, b)
    placed = set(complete)
    while True:
        progress = False
        for _, a, b in ordered:
            for w, other in ((a, b), (b, a)):
                if w in placed or w in complete or other not in placed:
                    continue
                if groups.join(w, other):
                    placed.add(w)
                    progress = True
        if not progress:
            break
    for _, a, b in ordered:
        if a not in placed and b not in placed:
            groups.join(a, b)
    labels: dict[Any, Any] = {}
    by_root: dict[Any, list[Any]] = {}
    for n in nodes:
        by_root.setdefault(groups.find(n), []).append(n)
    for members in by_root.values():
        strong = [m for m in members if m in complete]
        label = min(strong) if strong else min(members)
        for m in members:
            labels[m] = label
    return labels


def split_conflicts(
    labels: pl.DataFrame,
    complete: pl.DataFrame,
    pairs: pl.DataFrame,
    conflicts: pl.DataFrame,
    attributes: pl.DataFrame | None = None,
    listings: pl.DataFrame | None = None,
    clerical: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, CannotLinkReport]:
    """Rebuild every cluster holding a conflicting pair so that none does.

    `labels` has unique_id, cluster_id; `complete` unique_id, complete; `pairs` the scored pairs
    above the threshold (unique_id_l, unique_id_r, match_probability); `conflicts` comes from
    `conflict_pairs`. Given the `attributes` and `listings` the conflicts came from, the
    incomplete records a split leaves without a complete record then join the best other
    cluster they match without conflict. Returns the new labels (same rows) and counts by rule.
    """
    report = CannotLinkReport()
    if conflicts.height == 0:
        return labels, report
    report.clusters_in_conflict = conflicts.get_column("cluster_id").n_unique()
    clusters_before = labels.get_column("cluster_id").n_unique()
    for rule, n in conflicts.group_by("rule").agg(pl.col("cluster_id").n_unique()).iter_rows():
        report.by_rule[str(rule)] = int(n)
    report.unresolved = conflicts.filter(pl.col("a") == pl.col("b")).height
    conflicts = conflicts.filter(pl.col("a") != pl.col("b"))
    involved = labels.join(conflicts.select("cluster_id").unique(), on="cluster_id", how="semi")
    flags = involved.join(complete, on="unique_id", how="left")
    node_cluster = involved.select("unique_id", "cluster_id")
    edges = (
        pairs.select(
            pl.col("unique_id_l").alias("a"), pl.col("unique_id_r").alias("b"), "match_probability"
        )
        .join(node_cluster.rename({"unique_id": "a"}), on="a", how="inner")
        .join(node_cluster.rename({"unique_id": "b", "cluster_id": "cluster_b"}), on="b")
        .filter(pl.col("cluster_id") == pl.col("cluster_b"))
        .drop("cluster_b")
    )
    # Plain Python structures per cluster, built in one pass over each frame: thousands of
    # tiny polars frames (one per cluster) cost more than the splitting itself.
    nodes_by: dict[Any, list[Any]] = {}
    strong_by: dict[Any, set[Any]] = {}
    for cluster, node, is_complete in flags.select(
        "cluster_id", "unique_id", pl.col("complete").fill_null(False)
    ).iter_rows():
        nodes_by.setdefault(cluster, []).append(node)
        if is_complete:
            strong_by.setdefault(cluster, set()).add(node)
    edges_by: dict[Any, list[tuple[float, Any, Any]]] = {}
    for cluster, a, b, p in edges.select("cluster_id", "a", "b", "match_probability").iter_rows():
        edges_by.setdefault(cluster, []).append((p, a, b))
    enemies_by: dict[Any, dict[Any, set[Any]]] = {}
    for cluster, a, b in conflicts.select("cluster_id", "a", "b").iter_rows():
        enemies = enemies_by.setdefault(cluster, {})
        enemies.setdefault(a, set()).add(b)
        enemies.setdefault(b, set()).add(a)
    out_nodes: list[Any] = []
    out_labels: list[Any] = []
    stray: list[Any] = []
    for cluster, nodes in nodes_by.items():
        strong = strong_by.get(cluster, set())
        split = _split_one(nodes, strong, edges_by.get(cluster, []), enemies_by.get(cluster, {}))
        out_nodes += list(split)
        out_labels += list(split.values())
        anchored = {split[n] for n in strong}
        stray += [n for n in nodes if split[n] not in anchored]
    new = _relabel(labels, out_nodes, out_labels)
    if stray and attributes is not None:
        new, moved = _replace_strays(new, complete, pairs, stray, attributes, listings, clerical)
        report.records_moved = moved
    report.people_added = new.get_column("cluster_id").n_unique() - clusters_before
    return new, report


def _relabel(labels: pl.DataFrame, nodes: list[Any], new_labels: list[Any]) -> pl.DataFrame:
    relabelled = pl.DataFrame(
        {"unique_id": nodes, "_new": new_labels},
        schema={"unique_id": labels.schema["unique_id"], "_new": labels.schema["cluster_id"]},
    )
    return (
        labels.join(relabelled, on="unique_id", how="left", maintain_order="left")
        .with_columns(pl.coalesce("_new", "cluster_id").alias("cluster_id"))
        .drop("_new")
    )


def _replace_strays(
    labels: pl.DataFrame,
    complete: pl.DataFrame,
    pairs: pl.DataFrame,
    stray: list[Any],
    attributes: pl.DataFrame,
    listings: pl.DataFrame | None,
    clerical: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, int]:
    """Incomplete records a split left without a complete record (the parent's council tax
    party that had joined the son) join the best other cluster they match, where they conflict
    with nothing; returns the labels and how many records moved."""
    ids = labels.schema["unique_id"]
    strays = pl.DataFrame({"w": stray}, schema={"w": ids}).join(
        labels.rename({"unique_id": "w", "cluster_id": "own"}), on="w"
    )
    anchored = (
        labels.join(complete.filter(pl.col("complete")), on="unique_id", how="semi")
        .select("cluster_id")
        .unique()
    )
    ends = pairs.select(
        pl.col("unique_id_l").alias("a"), pl.col("unique_id_r").alias("b"), "match_probability"
    )
    both_ways = pl.concat(
        [ends, ends.select(pl.col("b").alias("a"), pl.col("a").alias("b"), "match_probability")]
    )
    offers = (
        both_ways.join(strays, left_on="a", right_on="w")
        .join(labels.rename({"unique_id": "b"}), on="b")
        .filter(pl.col("cluster_id") != pl.col("own"))
        .join(anchored, on="cluster_id", how="semi")
        .group_by("a", "cluster_id")
        .agg(pl.col("match_probability").max())
        .sort(["a", "match_probability", "cluster_id"], descending=[False, True, False])
        .with_row_index("offer")
    )
    if offers.height == 0:
        return labels, 0
    # Each offer on its own: the stray with the members of the cluster it would join.
    trial = pl.concat(
        [
            offers.select("offer", pl.col("a").alias("unique_id")),
            offers.select("offer", "cluster_id")
            .join(labels, on="cluster_id")
            .select("offer", "unique_id"),
        ]
    ).rename({"offer": "cluster_id"})
    refused_offers = (
        conflict_pairs(trial, attributes, listings, clerical).get_column("cluster_id").unique()
    )
    best = (
        offers.filter(~pl.col("offer").is_in(refused_offers.implode()))
        .group_by("a", maintain_order=True)
        .first()
        .select(pl.col("a").alias("unique_id"), "cluster_id")
    )
    if best.height == 0:
        return labels, 0
    moved = _relabel(
        labels, best.get_column("unique_id").to_list(), best.get_column("cluster_id").to_list()
    )
    # Two strays offered one cluster may conflict with each other: both stay where they were.
    targets = moved.join(best.select("cluster_id").unique(), on="cluster_id", how="semi")
    clashes = conflict_pairs(targets, attributes, listings, clerical)
    refused = pl.concat([clashes.get_column("a"), clashes.get_column("b")]).unique()
    accepted = best.filter(~pl.col("unique_id").is_in(refused.implode()))
    if accepted.height < best.height:
        moved = _relabel(
            labels,
            accepted.get_column("unique_id").to_list(),
            accepted.get_column("cluster_id").to_list(),
        )
    return moved, accepted.height


def listing_frame(
    source: str, facts: pl.DataFrame, periods: pl.DataFrame, contract: str
) -> pl.DataFrame | None:
    """One source's listings (unique_id, listing, start, end, role) from its facts (unique_id
    and the contract's account and role fields) and its records' periods (unique_id,
    start_date, end_date); None when the contract has no accounts or the extract no account
    column."""
    fields = LISTING_FIELDS.get(contract)
    if fields is None or fields[0] not in facts.columns:
        return None
    ref, role = fields
    role_expr = (
        pl.col(role).cast(pl.Utf8) if role and role in facts.columns else pl.lit(None, pl.Utf8)
    )
    return (
        facts.filter(pl.col(ref).is_not_null() & (pl.col(ref).cast(pl.Utf8) != ""))
        .select(
            "unique_id",
            (pl.lit(source + "|") + pl.col(ref).cast(pl.Utf8)).alias("listing"),
            role_expr.alias("role"),
        )
        .join(periods.select("unique_id", "start_date", "end_date"), on="unique_id")
        .select(
            "unique_id",
            "listing",
            pl.col("start_date").alias("start"),
            pl.col("end_date").alias("end"),
            "role",
        )
        .cast(LISTING_SCHEMA)  # type: ignore[arg-type]
    )


def profile_listings(listings: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Record listings (unique_id = record key) as listings of the profiles holding them."""
    return listings.join(
        members.select("unique_id", "profile"), on="unique_id", how="inner"
    ).select(pl.col("profile").alias("unique_id"), "listing", "start", "end", "role")


def _weighed_by_the_model(
    conflicts: pl.DataFrame, above: pl.DataFrame, nodes: pl.DataFrame
) -> pl.DataFrame:
    """Dates of birth that disagree are no veto on a pair the model compared and linked anyway:
    it scored the disagreement (a date wholly mistyped or replaced, with names, address and
    the rest agreeing), so only dates joined through other records forbid a cluster.

    Nor are two NHS numbers, on a pair the model linked that has the same forename and date of
    birth, not 1 January (`nodes` with a forename column): one person registered a second time
    under a temporary number. Twins, the pair two NHS numbers must keep apart, have the same
    date of birth and surname but not the same forename (JAMES and JAMAL, ELISE and ELSIE),
    and a father and son of one name differ in the date of birth."""
    if not conflicts.height or not above.height:
        return conflicts
    direct = above.select(
        pl.min_horizontal("unique_id_l", "unique_id_r").alias("_lo"),
        pl.max_horizontal("unique_id_l", "unique_id_r").alias("_hi"),
        pl.lit(True).alias("_direct"),
    ).unique()
    keyed = conflicts.with_columns(
        pl.min_horizontal("a", "b").alias("_lo"), pl.max_horizontal("a", "b").alias("_hi")
    ).join(direct, on=["_lo", "_hi"], how="left")
    linked = pl.col("_direct").fill_null(False)
    drop = (pl.col("rule") == "date_of_birth") & linked
    if "forename" in nodes.columns:
        alike = nodes.select("unique_id", "forename", "dob")
        for side in ("a", "b"):
            keyed = keyed.join(
                alike.rename({c: f"{c}_{side}" for c in alike.columns}),
                left_on=side,
                right_on=f"unique_id_{side}",
                how="left",
            )
        # 1 January is what a system writes when only the year is known (and the date many
        # people without a known birthday are registered under): two namesakes sharing it are
        # not evidence of one person, so their two numbers still decide.
        same = (
            (pl.col("forename_a") == pl.col("forename_b"))
            & (pl.col("dob_a") == pl.col("dob_b"))
            & ~year_only_expr(pl.col("dob_a"))
        )
        drop = drop | ((pl.col("rule") == "nhs_number") & linked & same.fill_null(False))
    return keyed.filter(~drop).select(conflicts.columns)


def apply_cannot_link(
    labels: pl.DataFrame,
    nodes: pl.DataFrame,
    pairs: pl.DataFrame,
    threshold: float,
    listings: pl.DataFrame | None,
    clerical: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, CannotLinkReport]:
    """Clusters (unique_id, cluster_id) in which no two nodes conflict, from clusters found
    without the rules.

    `nodes` has unique_id, complete, nhs_token, dob (and forename, for the NHS number
    exemption of `_weighed_by_the_model`); `pairs` the scored pairs (unique_id_l,
    unique_id_r, match_probability), of which those at or above `threshold` are evidence;
    `listings` unique_id, listing, start, end, role (or None); `clerical` the pairs (a, b)
    reviewers labelled non-match.
    """
    attributes = nodes.select("unique_id", "nhs_token", "dob")
    conflicts = conflict_pairs(labels, attributes, listings, clerical)
    above = pairs.filter(pl.col("match_probability") >= threshold)
    conflicts = _weighed_by_the_model(conflicts, above, nodes)
    complete = nodes.select("unique_id", "complete")
    return split_conflicts(labels, complete, above, conflicts, attributes, listings, clerical)
