"""The co-residence pass: records that carry too little to link on their own (a council tax
party with a name and an address, no date of birth or NHS number) join the one person who
lived at the same property, under the same forename, at the same time.

The model scores such a record on its names and address alone, so a liable adult filed under
another surname (married, or a previous name the council never updated) stays alone even when a
resident of the same pseudonymised UPRN with the same forename was registered there over the
same months. The pass is guarded so that it cannot join two people:

* only a record left alone by clustering (its own cluster) with no date of birth and no NHS
  number, at a UPRN token, with a forename and a residence period, is a candidate;
* it joins a cluster that holds a record with a date of birth or an NHS number, at the same
  UPRN token with the same forename, whose residence period overlaps the candidate's;
* or, when no cluster there holds that forename, one whose names agree with the record's under
  the same surname (an initial, a known variant or one keystroke away: `_NAMES_AGREE`);
* exactly one such cluster, or nothing (two Helens at the address: no link);
* not where that cluster's own record in the candidate's source (its own council tax stay,
  say) places it at that UPRN at another time: then the candidate is a previous or later
  occupant of the same forename (`other_stays`);
* and never where the cannot-link rules (`uprnlink.linkage.constraints`) would then find a
  conflict in the cluster (two people on one account at once).

The mover pass (`link_movers`, run after it) follows the same kind of record to the address it
moved to: an incomplete cluster (a lone record, or up to MAX_UNIT records the model joined to
each other, none with a date of birth or NHS number: a chain of council tax accounts) one of
whose stays ends on the day, or the day before, a stay of exactly one person begins at another
UPRN (or begins as theirs ends) joins that person whole, when a name of that person's agrees
with its own (the same, or one of forename and surname the same and the other an initial, a
known variant or one keystroke away: `_NAMES_AGREE`); the person's names and stays are
those of all their records, so a liability under a married name follows on from one under the
maiden name their GP record still carries. Round after round along a chain of moves; not when
that person held an account, tenancy or claim at a third address through the record's own stay
(one person is not liable at two addresses at once: a namesake who moved on the same day), and
never where the cannot-link rules object.

The companion pass (`link_companions`, last) follows a household: a lone incomplete record on an
account, tenancy or claim with another party joins the one person of its forename and surname
who lived with that party at another address at the same time as the party (a couple billed
together at an earlier home, found together at the next), with the same guards.

All three work on identifier profiles (`uprnlink.linkage.predict.linkage_profiles`), after the
cannot-link rules, and report counts only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from uprnlink.linkage.constraints import conflict_pairs
from uprnlink.linkage.model import forename_roots
from uprnlink.sources import sources_with

#: The passes' version: part of the link stage's input fingerprint, so a release that joins
#: records differently links afresh instead of reusing the last clusters.
PASSES_VERSION = "coresidence/4"
_NODE = ("uprn_token", "forename", "period_start", "period_end")
#: The most profiles an incomplete cluster may hold and still move as one in the mover pass.
MAX_UNIT = 4
#: The profile columns the pass reads.
CORESIDENT_COLUMNS = ("unique_id", "dob", "nhs_token", *_NODE)
#: The profile columns the mover pass reads.
MOVER_COLUMNS = (*CORESIDENT_COLUMNS, "surname")
#: Sources whose stays last while they are open (an account, a tenancy, a claim), unlike lists.
LASTING_SOURCES = tuple(s for s in sources_with("residence") if s not in sources_with("open_list"))


@dataclass
class CoresidenceReport:
    """What the co-residence pass did (counts only)."""

    candidates: int = 0  # alone, no date of birth or NHS number, at a UPRN with a period
    linked: int = 0  # joined the one co-resident of that forename
    ambiguous: int = 0  # more than one such co-resident: left alone
    refused: int = 0  # the cannot-link rules would have found a conflict: left alone
    other_stay: int = 0  # the co-resident's own stay there in that source is another time
    movers: int = 0  # joined the one person of their name whose stay elsewhere follows on
    movers_ambiguous: int = 0  # more than one such person: left alone
    movers_elsewhere: int = 0  # that person held an account elsewhere through the stay
    movers_refused: int = 0  # the cannot-link rules would have found a conflict
    companions: int = 0  # joined the one person of their name living with a co-party elsewhere
    companions_ambiguous: int = 0  # more than one such person: left alone

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return asdict(self)


def overlap_expr(start: str, end: str, other_start: str, other_end: str) -> pl.Expr:
    """Two periods (an open end runs on) share at least one day."""
    return (pl.col(end).is_null() | (pl.col(other_start) <= pl.col(end))) & (
        pl.col(other_end).is_null() | (pl.col(start) <= pl.col(other_end))
    )


def _complete() -> pl.Expr:
    """A profile with a date of birth or an NHS number: enough to anchor a person."""
    return pl.col("dob").is_not_null() | pl.col("nhs_token").is_not_null()


def _lone_incomplete(nodes: pl.DataFrame, known: list[pl.Expr]) -> pl.DataFrame:
    """The candidates of the co-residence and companion passes: profiles alone in their
    cluster, without a date of birth or NHS number, carrying each of the `known` columns."""
    return _incomplete_units(nodes, known, most=1)


def _anchored(nodes: pl.DataFrame, known: list[pl.Expr]) -> pl.DataFrame:
    """The profiles a candidate may join: those carrying the `known` columns in a cluster that
    holds a complete profile."""
    return nodes.filter(_complete().any().over("cluster_id"), *known)


def _single_targets(matches: pl.DataFrame) -> tuple[int, pl.DataFrame]:
    """Candidates with more than one target cluster (left alone, counted), and the moves of
    those with exactly one (unique_id, _to)."""
    ambiguous = matches.filter(pl.col("targets") > 1).get_column("unique_id").n_unique()
    moves = matches.filter(pl.col("targets") == 1).select(
        "unique_id", pl.col("cluster_id").alias("_to")
    )
    return ambiguous, moves


def coresident_matches(labels: pl.DataFrame, profiles: pl.DataFrame) -> pl.DataFrame:
    """For each candidate (a profile alone in its cluster with no date of birth or NHS number),
    the clusters holding a complete profile at the same UPRN token with the same forename over
    an overlapping period: unique_id, cluster_id (the target), targets (how many clusters
    qualify). A candidate no such cluster holds, when the profiles carry surnames, takes
    instead the clusters with a complete profile there over an overlapping period one of whose
    names agrees with its own (`_NAMES_AGREE`: the same surname and the forename an initial, a
    known variant or one keystroke away: "E WALKER" for the one ELIZABETH WALKER there)."""
    nodes = labels.join(profiles, on="unique_id", how="inner")
    known = [pl.col(c).is_not_null() for c in _NODE[:3]]
    candidates = _lone_incomplete(nodes, known).select(
        "unique_id", *_NODE, *(["surname"] if "surname" in nodes.columns else [])
    )
    anchored = _anchored(nodes, known).select(
        "cluster_id",
        "uprn_token",
        "forename",
        pl.col("period_start").alias("other_start"),
        pl.col("period_end").alias("other_end"),
    )
    found = (
        candidates.join(anchored, on=["uprn_token", "forename"])
        .filter(overlap_expr("period_start", "period_end", "other_start", "other_end"))
        .select("unique_id", "cluster_id")
        .unique()
    )
    if "surname" in candidates.columns:
        rest = candidates.join(found, on="unique_id", how="anti").filter(
            pl.col("surname").is_not_null()
        )
        found = pl.concat([found, _close_names_there(rest, anchored, nodes)])
    return found.with_columns(pl.len().over("unique_id").alias("targets"))


def _close_names_there(
    candidates: pl.DataFrame, anchored: pl.DataFrame, nodes: pl.DataFrame
) -> pl.DataFrame:
    """(unique_id, cluster_id): clusters with a stay at the candidate's UPRN token over an
    overlapping period (`anchored`) one of whose names (`nodes`) agrees with the candidate's."""
    there = (
        candidates.join(anchored.drop("forename"), on="uprn_token")
        .filter(overlap_expr("period_start", "period_end", "other_start", "other_end"))
        .select("unique_id", "cluster_id")
        .unique()
    )
    names = (
        nodes.join(there.select("cluster_id").unique(), on="cluster_id", how="semi")
        .filter(pl.col("forename").is_not_null() & pl.col("surname").is_not_null())
        .select("cluster_id", "forename", "surname")
        .unique()
    )
    mine = candidates.join(there.select("unique_id").unique(), on="unique_id", how="semi")
    return _names_agreeing(there, mine, names)


def _names_agreeing(
    pairs: pl.DataFrame, candidates: pl.DataFrame, names: pl.DataFrame
) -> pl.DataFrame:
    """The (unique_id, cluster_id) `pairs` where the candidate's forename and surname
    (`candidates`: unique_id, forename, surname) and one of the cluster's (`names`:
    cluster_id, forename, surname) agree (`_NAMES_AGREE`), distinct, typed as `pairs`."""
    import duckdb

    def rooted(frame: pl.DataFrame, key: str) -> pl.DataFrame:
        frame = frame.select(key, "forename", "surname")
        return frame.with_columns(forename_roots(frame.get_column("forename")).alias("roots"))

    con = duckdb.connect()
    try:
        con.register("_f", pairs.select("unique_id", "cluster_id").to_arrow())
        con.register("_c", rooted(candidates, "unique_id").to_arrow())
        con.register("_n", rooted(names, "cluster_id").to_arrow())
        agreed: pl.DataFrame = con.sql(
            f"""
            SELECT DISTINCT f.unique_id, f.cluster_id
            FROM _f f JOIN _c c USING (unique_id) JOIN _n n USING (cluster_id)
            WHERE {_NAMES_AGREE}
            """
        ).pl()
    finally:
        con.close()
    return agreed.cast(
        {"unique_id": pairs.schema["unique_id"], "cluster_id": pairs.schema["cluster_id"]}
    )


def _relabel(labels: pl.DataFrame, moves: pl.DataFrame) -> pl.DataFrame:
    """Labels with each moved node (unique_id, _to) in its new cluster."""
    dtype = labels.schema["cluster_id"]
    return (
        labels.join(moves, on="unique_id", how="left")
        .with_columns(pl.coalesce("_to", "cluster_id").cast(dtype).alias("cluster_id"))
        .drop("_to")
    )


def other_stays(
    moves: pl.DataFrame,
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    sources: pl.DataFrame,
    gap_days: int = 31,
) -> pl.Series:
    """Candidates (moves: unique_id, _to) whose target cluster holds a stay at the same UPRN in
    the candidate's own source that does not meet the candidate's: the same register (council
    tax, say) places the target there at another time, more than `gap_days` before or after, so
    the candidate is another occupant of that forename (a previous or a later one), not them.
    A stay that ends as the candidate's begins, or the other way round, is one person's account
    changing name, and does not refuse."""
    stay = profiles.select("unique_id", "uprn_token", "period_start", "period_end").join(
        sources, on="unique_id"
    )
    mine = moves.join(stay, on="unique_id")
    theirs = (
        labels.join(stay, on="unique_id")
        .join(moves.select(pl.col("_to").alias("cluster_id")).unique(), on="cluster_id")
        .select(
            pl.col("cluster_id").alias("_to"),
            "uprn_token",
            "source_dataset",
            pl.col("period_start").alias("other_start"),
            pl.col("period_end").alias("other_end"),
        )
    )
    gap = pl.duration(days=gap_days)
    apart = (pl.col("other_start") > pl.col("period_end") + gap) | (
        pl.col("other_end") < pl.col("period_start") - gap
    )
    return (
        mine.join(theirs, on=["_to", "uprn_token", "source_dataset"])
        .filter(apart.fill_null(False))
        .get_column("unique_id")
        .unique()
    )


def link_coresidents(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    listings: pl.DataFrame | None = None,
    sources: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, CoresidenceReport]:
    """Clusters (unique_id, cluster_id) with each lone incomplete profile moved into the one
    cluster of a co-resident of the same forename (see the module docstring for the guards).

    `profiles` has unique_id, forename, dob, nhs_token, uprn_token, period_start, period_end;
    `listings` (unique_id, listing, start, end, role) are the profiles' accounts, tenancies and
    claims for the cannot-link check, or None; `sources` (unique_id, source_dataset) which
    sources hold each profile, for the other-stay check (`other_stays`), or None.
    """
    nodes = labels.join(profiles, on="unique_id", how="inner")
    known = [pl.col(c).is_not_null() for c in _NODE[:3]]
    report = CoresidenceReport(candidates=_lone_incomplete(nodes, known).height)
    report.ambiguous, moves = _single_targets(coresident_matches(labels, profiles))
    if moves.height and sources is not None:
        elsewhere = other_stays(moves, labels, profiles, sources)
        report.other_stay = elsewhere.len()
        moves = moves.filter(~pl.col("unique_id").is_in(elsewhere.implode()))
    moved, report.refused = _apply_moves(labels, moves, profiles, listings)
    report.linked = moves.height - report.refused
    return moved, report


def _apply_moves(
    labels: pl.DataFrame,
    moves: pl.DataFrame,
    profiles: pl.DataFrame,
    listings: pl.DataFrame | None,
) -> tuple[pl.DataFrame, int]:
    """Labels with each move (unique_id, _to) made, except those after which the cannot-link
    rules find a conflict in the joined cluster; and how many moves were refused so. Moves
    with a `_unit` (the candidate's cluster) are refused a unit at a time."""
    if moves.height == 0:
        return labels, 0
    moved = _relabel(labels, moves.select("unique_id", "_to"))
    attributes = profiles.select("unique_id", "nhs_token", "dob")
    touched = moved.filter(pl.col("cluster_id").is_in(moves.get_column("_to").implode()))
    conflicts = conflict_pairs(touched, attributes, listings)
    refused = pl.concat([conflicts.get_column("a"), conflicts.get_column("b")]).unique()
    if "_unit" in moves.columns:
        # A unit moves whole or not at all.
        units = _whole_units(moves, refused)
        refused = moves.filter(pl.col("_unit").is_in(units.implode())).get_column("unique_id")
        moves = moves.drop("_unit")
    n_refused = moves.filter(pl.col("unique_id").is_in(refused.implode())).height
    if n_refused:
        moved = _relabel(labels, moves.filter(~pl.col("unique_id").is_in(refused.implode())))
    return moved, n_refused


# Two names that may be one person's on a council record: both the same, or one of them the
# same and the other an initial it begins with, a known variant of the same name (BOB and
# ROBERT: forename roots) or, past three letters, one keystroke away (JOSSHUA, GRREEN, RCAIG);
# never a slip in both.
_FORENAME_CLOSE = """(n.forename = c.forename
    OR (length(c.forename) = 1 AND left(n.forename, 1) = c.forename)
    OR (length(n.forename) = 1 AND left(c.forename, 1) = n.forename)
    OR len(list_intersect(n.roots, c.roots)) > 0
    OR (length(c.forename) > 3 AND damerau_levenshtein(n.forename, c.forename) <= 1))"""
_SURNAME_CLOSE = """(n.surname = c.surname
    OR (length(c.surname) > 3 AND damerau_levenshtein(n.surname, c.surname) <= 1))"""
_NAMES_AGREE = f"""((n.forename = c.forename AND {_SURNAME_CLOSE})
    OR (n.surname = c.surname AND {_FORENAME_CLOSE}))"""


def _incomplete_units(
    nodes: pl.DataFrame, known: list[pl.Expr], most: int = MAX_UNIT
) -> pl.DataFrame:
    """The candidates of the mover pass: profiles carrying each of the `known` columns in a
    cluster of at most `most` profiles none of which is complete. The cluster (a lone profile,
    or a chain of accounts the model joined to each other, none with a date of birth) moves as
    one."""
    size = pl.len().over("cluster_id")
    return nodes.filter(~_complete().any().over("cluster_id") & (size <= most)).filter(*known)


def mover_units(nodes: pl.DataFrame) -> pl.DataFrame:
    """The mover pass's candidates (`_incomplete_units` with a UPRN token, forename, period
    and surname) among `nodes` (clusters joined to their profiles): their profiles'
    MOVER_COLUMNS and cluster_id (the unit)."""
    known = [pl.col(c).is_not_null() for c in (*_NODE[:3], "surname")]
    return _incomplete_units(nodes, known)


def mover_matches(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    within: pl.Series | None = None,
    units: pl.DataFrame | None = None,
    nodes: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """For each candidate cluster (`_incomplete_units`: no profile with a date of birth or NHS
    number; its profiles with a UPRN token, forename, surname and period), the clusters holding
    a complete profile with a stay at another UPRN token that follows on from one of the
    candidate's (ends the day before, or on the day, it begins, or begins as it ends) and a
    name that agrees with that profile's (`_NAMES_AGREE`) on any of its profiles: a cluster's
    names and stays are the person's, so a liability under a married name still follows on
    from one under the maiden name the person's GP record carries. Columns: unique_id (the
    candidate's profile that follows on), _unit (its cluster), cluster_id (the target) and
    targets (how many clusters the unit follows on to). `within` limits the targets to those
    clusters (None: any). `units` are the candidates and `nodes` the labels joined to the
    profiles, if already known."""

    if nodes is None and (units is None or within is None):
        nodes = labels.join(profiles, on="unique_id", how="inner")
    if units is None:
        assert nodes is not None
        units = mover_units(nodes)
    candidates = units.select("unique_id", *_NODE, "surname")
    if within is None:
        assert nodes is not None
        anchored = _anchored(nodes, [])
    else:
        # Only the `within` clusters' profiles are joined: a round after the first looks at
        # the few clusters units joined, not at every profile again.
        near = labels.filter(pl.col("cluster_id").is_in(within.implode()))
        anchored = _anchored(near.join(profiles, on="unique_id", how="inner"), [])
    stays = anchored.filter(
        pl.col("uprn_token").is_not_null() & pl.col("period_start").is_not_null()
    ).select("cluster_id", "uprn_token", "period_start", "period_end")
    names = (
        anchored.filter(pl.col("forename").is_not_null() & pl.col("surname").is_not_null())
        .select("cluster_id", "forename", "surname")
        .unique()
    )
    follows = _follows_on(candidates, stays, names)
    # Only the candidates and clusters that follow on are compared by name (a few thousand of
    # millions of names).
    candidates = candidates.join(follows.select("unique_id").unique(), on="unique_id", how="semi")
    names = names.join(follows.select("cluster_id").unique(), on="cluster_id", how="semi")
    found = _names_agreeing(follows, candidates, names).cast(
        {"unique_id": labels.schema["unique_id"], "cluster_id": labels.schema["cluster_id"]}
    )
    unit = units.select("unique_id", pl.col("cluster_id").alias("_unit"))
    return found.join(unit, on="unique_id").with_columns(
        pl.col("cluster_id").n_unique().over("_unit").cast(pl.UInt32).alias("targets")
    )


def _follows_on(candidates: pl.DataFrame, stays: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """(unique_id, cluster_id) where a stay of the cluster at another UPRN token begins on the
    day, or the day after, the candidate's ends, or ends on the day, or the day before, it
    begins, and the cluster has a name sharing the candidate's surname or forename (every
    pair `_NAMES_AGREE` accepts has one of them the same). Equi-joins on a date and a name: a
    range join over every candidate and stay took minutes at a million records, and a date
    alone (the day an extract's window opens) pairs too many at five million."""
    day = pl.duration(days=1)
    mine = candidates.select(
        "unique_id", "uprn_token", "forename", "surname", "period_start", "period_end"
    )
    ends = pl.concat(
        [mine.with_columns((pl.col("period_end") + day * k).alias("_d")) for k in (0, 1)]
    )
    starts = pl.concat(
        [mine.with_columns((pl.col("period_start") - day * k).alias("_d")) for k in (0, 1)]
    )
    named = names.select(
        "cluster_id", pl.col("forename").alias("_forename"), pl.col("surname").alias("_surname")
    )
    found = []
    for side, column in ((ends, "period_start"), (starts, "period_end")):
        side = side.drop_nulls("_d")
        # Only stays dated on a day some candidate's stay meets take their cluster's names.
        dated = (
            stays.select(
                "cluster_id", pl.col("uprn_token").alias("_at"), pl.col(column).alias("_d")
            )
            .join(side.select("_d").unique(), on="_d", how="semi")
            .join(named, on="cluster_id")
        )
        for name in ("surname", "forename"):
            # Each join is cut to its distinct pairs at once: millions of rows of two address
            # tokens each made the pass the link stage's peak at 4.9M records.
            found.append(
                side.join(dated.rename({f"_{name}": name}), on=["_d", name])
                .filter(pl.col("_at") != pl.col("uprn_token"))
                .select("unique_id", "cluster_id")
                .unique()
            )
    return pl.concat(found).unique()


def lasting_elsewhere(
    moves: pl.DataFrame,
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    sources: pl.DataFrame,
    gap_days: int = 31,
) -> pl.Series:
    """Candidates (moves: unique_id, _to) whose target cluster held a lasting stay (an account,
    tenancy or claim: LASTING_SOURCES) at another UPRN through the candidate's own stay, from
    more than `gap_days` before it ended to more than `gap_days` after it began: one person is
    not liable at two addresses at once, so the target is a namesake, not the candidate."""
    stay = profiles.select("unique_id", "uprn_token", "period_start", "period_end")
    mine = moves.join(stay, on="unique_id")
    lasting = sources.filter(pl.col("source_dataset").is_in(list(LASTING_SOURCES)))
    targets = moves.select(pl.col("_to").alias("cluster_id")).unique()
    theirs = (
        labels.join(targets, on="cluster_id", how="semi")
        .join(stay, on="unique_id")
        .join(lasting.select("unique_id").unique(), on="unique_id")
        .select(
            pl.col("cluster_id").alias("_to"),
            pl.col("uprn_token").alias("other_uprn"),
            pl.col("period_start").alias("other_start"),
            pl.col("period_end").alias("other_end"),
        )
    )
    gap = pl.duration(days=gap_days)
    through = (
        pl.col("period_end").is_null() | (pl.col("other_start") < pl.col("period_end") - gap)
    ) & (pl.col("other_end").is_null() | (pl.col("other_end") > pl.col("period_start") + gap))
    return (
        mine.join(theirs, on="_to")
        .filter((pl.col("other_uprn") != pl.col("uprn_token")) & through.fill_null(False))
        .get_column("unique_id")
        .unique()
    )


def link_movers(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    report: CoresidenceReport,
    listings: pl.DataFrame | None = None,
    sources: pl.DataFrame | None = None,
    rounds: int = 5,
) -> pl.DataFrame:
    """Clusters (unique_id, cluster_id) with each lone incomplete profile moved into the one
    cluster of a person of its name whose stay at another address follows on from its own (see
    the module docstring for the guards), for up to `rounds` rounds; counts go into `report`.

    `profiles` has MOVER_COLUMNS; `listings` and `sources` as for `link_coresidents` (without
    `sources` the lasting-stay guard cannot be checked and nothing is moved).
    """
    if sources is None:
        return labels
    # A chain of moves (three accounts in turn, only the last with a date of birth) is followed
    # back one stay per round: a record joined in one round anchors the one before it. Only
    # the clusters units joined gain stays and names, and units that did not move are as they
    # were, so after the first round only matches on those clusters are sought; the units'
    # earlier matches are kept (the same matches as searching everything again: 5 rounds at
    # 4.9M records 59 -> 20 s).
    # A unit moves whole into a complete cluster, so no unit is ever made: the candidates are
    # the first round's, less those that moved.
    found: pl.DataFrame | None = None
    changed: pl.Series | None = None
    # The first round's labels joined to the profiles: its candidates and anchors (one join).
    joined = labels.join(profiles, on="unique_id", how="inner")
    units = mover_units(joined)
    nodes: pl.DataFrame | None = joined
    del joined
    for _ in range(rounds):
        units = units.join(labels.select("cluster_id").unique(), on="cluster_id", how="semi")
        found = _mover_found(labels, profiles, found, changed, units, nodes)
        nodes = None  # the labels change with this round's moves
        matches = found.with_columns(
            pl.col("cluster_id").n_unique().over("_unit").cast(pl.UInt32).alias("targets")
        )
        ambiguous = matches.filter(pl.col("targets") > 1).get_column("_unit").n_unique()
        # Every profile of a unit with one target moves there, or none of them does.
        moves = (
            matches.filter(pl.col("targets") == 1)
            .select("_unit", pl.col("cluster_id").alias("_to"))
            .unique()
            .join(labels.rename({"cluster_id": "_unit"}), on="_unit")
            .select("unique_id", "_to", "_unit")
        )
        elsewhere = _whole_units(moves, lasting_elsewhere(moves, labels, profiles, sources))
        moves = moves.filter(~pl.col("_unit").is_in(elsewhere.implode()))
        labels, refused = _apply_moves(labels, moves, profiles, listings)
        report.movers += moves.height - refused
        # What is left alone in the last round (a candidate is counted once).
        report.movers_ambiguous, report.movers_elsewhere = ambiguous, elsewhere.len()
        report.movers_refused = refused
        if moves.height == refused:
            break
        changed = moves.get_column("_to").unique()
    return labels


def _mover_found(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    found: pl.DataFrame | None,
    changed: pl.Series | None,
    units: pl.DataFrame | None = None,
    nodes: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The mover pass's matches (unique_id, cluster_id, _unit) in this round: the earlier
    rounds' `found` of the units still in place (a unit that moved has no cluster of its own
    left) and new matches on the `changed` clusters (all clusters in the first round)."""
    fresh = mover_matches(labels, profiles, within=changed, units=units, nodes=nodes).select(
        "unique_id", "cluster_id", "_unit"
    )
    if found is None:
        return fresh
    still = found.join(labels.select(pl.col("cluster_id").alias("_unit")), on="_unit", how="semi")
    return pl.concat([still, fresh]).unique(maintain_order=True)


def _whole_units(moves: pl.DataFrame, flagged: pl.Series) -> pl.Series:
    """The units (moves' _unit) holding any of the `flagged` profiles."""
    return moves.filter(pl.col("unique_id").is_in(flagged.implode())).get_column("_unit").unique()


def companion_matches(
    labels: pl.DataFrame, profiles: pl.DataFrame, listings: pl.DataFrame
) -> pl.DataFrame:
    """For each candidate (as for `mover_matches`), the clusters holding a complete profile and
    a profile of the candidate's forename and surname at a UPRN token other than the
    candidate's, over a stay overlapping one of a co-party's there (stays with a period: a
    hospital attendance is none): a co-party is another cluster's profile on one of the
    candidate's listings. unique_id, cluster_id, targets."""
    nodes = labels.join(profiles, on="unique_id", how="inner")
    known = [pl.col(c).is_not_null() for c in (*_NODE[:3], "surname")]
    candidates = _lone_incomplete(nodes, known).select(
        "unique_id", "cluster_id", "uprn_token", "forename", "surname"
    )
    listed = listings.select("unique_id", "listing").unique()
    parties = listed.join(labels, on="unique_id").select(
        "listing", pl.col("cluster_id").alias("_party")
    )
    stays = nodes.filter(pl.col("uprn_token").is_not_null(), pl.col("period_start").is_not_null())
    their = stays.select(
        pl.col("cluster_id").alias("_party"),
        pl.col("uprn_token").alias("_at"),
        "period_start",
        "period_end",
    ).unique()
    residents = _anchored(nodes, known).select(
        pl.col("cluster_id").alias("_to"),
        pl.col("uprn_token").alias("_at"),
        "forename",
        "surname",
        pl.col("period_start").alias("other_start"),
        pl.col("period_end").alias("other_end"),
    )
    found = (
        candidates.join(listed, on="unique_id")
        .join(parties, on="listing")
        .filter(pl.col("_party") != pl.col("cluster_id"))
        .join(their, on="_party")
        .filter(pl.col("_at") != pl.col("uprn_token"))
        .join(residents, on=["_at", "forename", "surname"])
        .filter(
            (pl.col("_to") != pl.col("_party"))
            & overlap_expr("period_start", "period_end", "other_start", "other_end")
        )
        .select("unique_id", pl.col("_to").alias("cluster_id"))
        .unique()
    )
    return found.with_columns(pl.len().over("unique_id").alias("targets"))


def link_companions(
    labels: pl.DataFrame,
    profiles: pl.DataFrame,
    report: CoresidenceReport,
    listings: pl.DataFrame | None = None,
    sources: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Clusters (unique_id, cluster_id) with each lone incomplete profile moved into the one
    cluster of a person of its name who lived elsewhere with a co-party of its account
    (`companion_matches`), unless that person held a lasting stay at another address through
    the candidate's (`lasting_elsewhere`) or the cannot-link rules object; counts go into
    `report`. Without `listings` and `sources` nothing is moved."""
    if listings is None or sources is None or listings.height == 0:
        return labels
    report.companions_ambiguous, moves = _single_targets(
        companion_matches(labels, profiles, listings)
    )
    elsewhere = lasting_elsewhere(moves, labels, profiles, sources)
    moves = moves.filter(~pl.col("unique_id").is_in(elsewhere.implode()))
    moved, refused = _apply_moves(labels, moves, profiles, listings)
    report.companions = moves.height - refused
    return moved
