"""Linkage quality against ground truth: person clusters, source pairs, households and bias.

Everything is counted from group sizes (a group of n records holds n(n-1)/2 pairs), never by
listing pairs, so a million records score in seconds. Results carry counts and ratios only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.errors import ConfigError
from uprnlink.households.ages import BIAS_BANDS, age_band_expr, age_on_expr
from uprnlink.households.timelines import OPEN_END
from uprnlink.ingest.addresses import trusted_records
from uprnlink.privacy.keys import MasterKey, load_run_key
from uprnlink.privacy.trusted import read_trusted
from uprnlink.publication import PublicationMetadata, ResidenceConfirmed
from uprnlink.review import current_labels, read_labels, splink_labels
from uprnlink.settings import RunSettings
from uprnlink.zones import Zones

# Lower bound and label of each age band used by the bias checks.
BIAS_DIMENSIONS = ("age_band", "sex", "mover")


@dataclass(frozen=True)
class PairwiseScores:
    """Pairwise confusion counts and scores of a clustering against true identities."""

    records: int
    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int

    @property
    def precision(self) -> float:
        """Share of predicted same-person pairs that are truly the same person."""
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        """Share of true same-person pairs that the clustering put together."""
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and scores as plain values."""
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class SourcePairScores:
    """Pairwise scores restricted to pairs with one record in each of two sources.

    When both sources are the same, the pairs are within that source (duplicate detection).
    """

    source_a: str
    source_b: str
    scores: PairwiseScores

    def to_dict(self) -> dict[str, Any]:
        """Source names, counts and scores as plain values."""
        return {"source_a": self.source_a, "source_b": self.source_b, **self.scores.to_dict()}


@dataclass(frozen=True)
class HouseholdScores:
    """Who lives with whom on the reference date (non-communal addresses), as pairs of people.

    Recall is counted over true people (each mapped to the cluster holding most of their
    records), precision over our people (each mapped to the true person holding most of
    theirs). Two true people linked into one cluster are not "placed together", nor are two
    of our clusters that are one true person "truly co-resident".

    The losses are split by cause: `true_pairs_unplaced` are true pairs with someone we place
    in no household that day; `predicted_pairs_non_resident` are our pairs with someone who
    does not truly live at a non-communal address that day (moved away, died, communal).
    """

    reference_date: date
    residents: int
    residents_placed: int
    households: int
    households_exact: int
    predicted_households: int
    true_pairs: int
    true_pairs_placed: int
    true_pairs_unplaced: int
    predicted_pairs: int
    predicted_pairs_true: int
    predicted_pairs_non_resident: int

    @property
    def precision(self) -> float:
        """Share of pairs we place in one household that truly live together."""
        return self.predicted_pairs_true / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        """Share of truly co-resident pairs that we place in one household."""
        return self.true_pairs_placed / self.true_pairs if self.true_pairs else 1.0

    @property
    def precision_among_residents(self) -> float:
        """Precision over our pairs of two true residents: how well addresses are assigned."""
        pairs = self.predicted_pairs - self.predicted_pairs_non_resident
        return self.predicted_pairs_true / pairs if pairs else 1.0

    @property
    def recall_among_placed(self) -> float:
        """Recall over true pairs of two people we place somewhere that day."""
        pairs = self.true_pairs - self.true_pairs_unplaced
        return self.true_pairs_placed / pairs if pairs else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and scores as plain values (the date as ISO text)."""
        return {
            **asdict(self),
            "reference_date": self.reference_date.isoformat(),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "precision_among_residents": self.precision_among_residents,
            "recall_among_placed": self.recall_among_placed,
        }


@dataclass(frozen=True)
class NamesakeScores:
    """Pairwise precision where it is hardest: records of true people who have a namesake.

    Two different true people are namesakes when they share a surname and a forename (a father
    and a son named after him, two neighbours called Mohammed Khan) or a surname and a date of
    birth (twins). Correct pairs are same-person pairs of people who have a namesake; wrong
    pairs join records of two people who are namesakes of each other. `merged` counts the
    namesake person pairs our clusters join, by relation: parent and child, twins (or a
    namesake born the same day), others.
    """

    people: int  # true people with at least one namesake
    correct_pairs: int
    wrong_pairs: int
    merged: dict[str, int]

    @property
    def precision(self) -> float:
        """Share of our pairs among namesakes' records that are one person."""
        pairs = self.correct_pairs + self.wrong_pairs
        return self.correct_pairs / pairs if pairs else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and precision as plain values."""
        return {**asdict(self), "precision": self.precision}


@dataclass(frozen=True)
class GroupRecall:
    """Recall of person clusters for the true people in one group (pairs of their records)."""

    group: str
    people: int
    records: int
    true_pairs: int
    true_positive_pairs: int

    @property
    def recall(self) -> float:
        """Share of this group's true same-person pairs that the clustering put together."""
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and recall as plain values."""
        return {**asdict(self), "recall": self.recall}


@dataclass(frozen=True)
class BiasCheck:
    """Recall per group of one dimension (age band, sex, mover) and the widest gap."""

    dimension: str
    groups: tuple[GroupRecall, ...]

    def _scored(self) -> list[GroupRecall]:
        # A group without true pairs has no recall to compare.
        return [g for g in self.groups if g.true_pairs]

    @property
    def gap_points(self) -> float | None:
        """Largest recall difference between two groups, in percentage points."""
        scored = self._scored()
        if len(scored) < 2:
            return None
        recalls = [g.recall for g in scored]
        return 100 * (max(recalls) - min(recalls))

    @property
    def gap_between(self) -> tuple[str, str] | None:
        """The groups with the highest and the lowest recall."""
        scored = self._scored()
        if len(scored) < 2:
            return None
        ranked = sorted(scored, key=lambda g: -g.recall)
        return ranked[0].group, ranked[-1].group

    def to_dict(self) -> dict[str, Any]:
        """Groups and gap as plain values."""
        between = self.gap_between
        return {
            "groups": [g.to_dict() for g in self.groups],
            "gap_points": self.gap_points,
            "gap_between": list(between) if between else None,
        }


@dataclass(frozen=True)
class LinkageEvaluation:
    """Every linkage-quality figure of one run against ground truth."""

    overall: PairwiseScores
    source_pairs: tuple[SourcePairScores, ...]
    households: HouseholdScores | None
    bias: tuple[BiasCheck, ...]
    namesakes: NamesakeScores | None = None

    def source_pair(self, a: str, b: str) -> PairwiseScores:
        """Scores of the pairs between sources a and b (in either order)."""
        a, b = sorted((a, b))
        for s in self.source_pairs:
            if (s.source_a, s.source_b) == (a, b):
                return s.scores
        raise KeyError((a, b))

    def bias_check(self, dimension: str) -> BiasCheck:
        """The bias check of one dimension: `age_band`, `sex` or `mover`."""
        for b in self.bias:
            if b.dimension == dimension:
                return b
        raise KeyError(dimension)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts and ratios (no identifiers)."""
        return {
            "pairwise": self.overall.to_dict(),
            "source_pairs": [s.to_dict() for s in self.source_pairs],
            "households": self.households.to_dict() if self.households else None,
            "bias": {b.dimension: b.to_dict() for b in self.bias},
            "namesakes": self.namesakes.to_dict() if self.namesakes else None,
        }

    def to_table(self) -> str:
        """A plain-text report for a terminal."""
        return "\n".join(_table_lines(self))


@dataclass(frozen=True)
class GroundTruth:
    """Synthetic ground truth: record -> person, people, residence history, addresses."""

    records: pl.DataFrame  # source, record_id, person_id
    # person_id, sex, dob, date_of_death (and forename, surname, mother_id, father_id if known)
    people: pl.DataFrame | None = None
    residence: pl.DataFrame | None = None  # person_id, uprn, valid_from, valid_to (inclusive)
    addresses: pl.DataFrame | None = None  # uprn, is_communal


TRUTH_COLUMNS = {
    "records": ("source", "record_id", "person_id"),
    "people": ("person_id", "sex", "dob", "date_of_death"),
    "residence": ("person_id", "uprn", "valid_from", "valid_to"),
    "addresses": ("uprn", "is_communal"),
}


OPTIONAL_TRUTH_COLUMNS = {"people": ("forename", "surname", "mother_id", "father_id")}


def read_ground_truth(truth_dir: Path) -> GroundTruth:
    """The truth tables an evaluation needs; only records.parquet is required."""
    frames: dict[str, pl.DataFrame | None] = {}
    for name, columns in TRUTH_COLUMNS.items():
        path = truth_dir / f"{name}.parquet"
        if path.exists():
            present = pl.read_parquet_schema(path)
            extra = [c for c in OPTIONAL_TRUTH_COLUMNS.get(name, ()) if c in present]
            frames[name] = pl.read_parquet(path, columns=[*columns, *extra])
        elif name == "records":
            raise ConfigError(f"no ground truth at {path}")
        else:
            frames[name] = None
    records = frames.pop("records")
    assert records is not None
    return GroundTruth(records=records, **frames)


def _pairs_of(n: pl.Expr) -> pl.Expr:
    """Pairs within groups of sizes n, summed."""
    return (n * (n - 1) // 2).sum()


def pairwise_scores(
    frame: pl.DataFrame, predicted: str = "person_id", truth: str = "true_id"
) -> PairwiseScores:
    """Pairwise scores of `predicted` cluster ids against `truth` ids, one row per record."""
    df = frame.select(predicted, truth).drop_nulls()
    counts = pl.col("len").cast(pl.Int64)
    pred = df.group_by(predicted).len().select(_pairs_of(counts)).item()
    true = df.group_by(truth).len().select(_pairs_of(counts)).item()
    both = df.group_by(predicted, truth).len().select(_pairs_of(counts)).item()
    return PairwiseScores(
        records=df.height,
        predicted_pairs=int(pred or 0),
        true_pairs=int(true or 0),
        true_positive_pairs=int(both or 0),
    )


def label_clusters(
    clusters: pl.DataFrame, crosswalk: pl.DataFrame, truth_records: pl.DataFrame
) -> pl.DataFrame:
    """Clusters (unique_id, person_id) with each record's true person id attached."""
    truth = truth_records.select(
        pl.col("source").alias("source_dataset"),
        pl.col("record_id").cast(pl.Utf8),
        pl.col("person_id").alias("true_id"),
    )
    # Eager on purpose: polars' lazy optimiser may reorder these two joins into one on
    # source_dataset alone, which is nearly a cross join.
    return (
        clusters.join(crosswalk.select("unique_id", "record_id"), on="unique_id", how="left")
        .join(truth, on=["source_dataset", "record_id"], how="left")
        .select("unique_id", "source_dataset", "person_id", "true_id")
    )


SOURCE_COUNT = "n:"  # prefix of count_records' per-source columns


def count_records(
    clusters: pl.DataFrame, crosswalk: pl.DataFrame, truth_records: pl.DataFrame
) -> pl.DataFrame:
    """Records per (person_id, true_id): `n` in all, and `n:<source>` from each source.

    Every score is a sum over these cells (about one per person), so the records themselves
    are read once. Records without a true person (none in the synthetic data) are left out.
    """
    sources = sorted(clusters.get_column("source_dataset").unique().drop_nulls().to_list())
    src = pl.col("source_dataset")
    return (
        label_clusters(clusters, crosswalk, truth_records)
        .drop_nulls(["person_id", "true_id"])
        .group_by("person_id", "true_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            *[(src == s).sum().cast(pl.Int64).alias(SOURCE_COUNT + s) for s in sources],
        )
    )


def _count_columns(counts: pl.DataFrame) -> list[str]:
    return ["n", *(c for c in counts.columns if c.startswith(SOURCE_COUNT))]


def _group_pairs(counts: pl.DataFrame, key: str | None) -> dict[tuple[str, str], int]:
    """Pairs of records in one group of `key` (one cell when None), by their two sources.

    ("", "") is every pair; (a, a) pairs within source a; (a, b) pairs across a and b.
    """
    cols = _count_columns(counts)
    groups = counts.lazy()
    if key is not None:
        groups = groups.group_by(key).agg(pl.col(c).sum() for c in cols)
    names = {c: c.removeprefix(SOURCE_COUNT) if c != "n" else "" for c in cols}
    exprs = {
        (names[a], names[b]): (_pairs_of(pl.col(a)) if a == b else (pl.col(a) * pl.col(b)).sum())
        for i, a in enumerate(cols)
        for b in cols[i:]
        if not (a == "n" and b != "n")
    }
    keys = list(exprs)
    row = groups.select(e.alias(str(i)) for i, e in enumerate(exprs.values())).collect().row(0)
    return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}


def _all_pairs(counts: pl.DataFrame) -> tuple[dict[tuple[str, str], int], ...]:
    """Predicted, true and true-positive pairs, overall and by source pair."""
    return (
        _group_pairs(counts, "person_id"),
        _group_pairs(counts, "true_id"),
        _group_pairs(counts, None),
    )


def _source_pairs(
    counts: pl.DataFrame, pairs: tuple[dict[tuple[str, str], int], ...]
) -> tuple[SourcePairScores, ...]:
    predicted, true, both = pairs
    cols = _count_columns(counts)[1:]
    totals = counts.select(pl.col(c).sum() for c in cols).row(0)
    records = {c.removeprefix(SOURCE_COUNT): int(t) for c, t in zip(cols, totals, strict=True)}
    out = []
    for a, b in combinations_with_replacement(sorted(records), 2):
        scores = PairwiseScores(
            records=records[a] + (records[b] if b != a else 0),
            predicted_pairs=predicted[(a, b)],
            true_pairs=true[(a, b)],
            true_positive_pairs=both[(a, b)],
        )
        out.append(SourcePairScores(a, b, scores))
    return tuple(out)


def person_groups(
    truth: GroundTruth, reference_date: date, true_ids: pl.Series | None = None
) -> pl.DataFrame:
    """Per true person (all in the truth's records, or `true_ids`): age band, sex, mover.

    Age is taken on the reference date, or at death for people who died before it, as in the
    published person table. A mover has lived at more than one address in the truth. A
    dimension the truth lacks is null.
    """
    if true_ids is None:
        true_ids = truth.records.get_column("person_id")
    ids = true_ids.unique().alias("true_id").to_frame()
    if truth.people is not None:
        died = pl.col("date_of_death") < reference_date
        age = (
            pl.when(died)
            .then(age_on_expr("dob", reference_date, at_death="date_of_death"))
            .otherwise(age_on_expr("dob", reference_date))
        )
        people = truth.people.select(
            pl.col("person_id").alias("true_id"),
            age_band_expr(age, BIAS_BANDS, unknown="unknown").alias("age_band"),
            pl.col("sex").fill_null("unknown").alias("sex"),
        )
        ids = ids.join(people, on="true_id", how="left")
    else:
        ids = ids.with_columns(pl.lit(None, pl.Utf8).alias(c) for c in ("age_band", "sex"))
    if truth.residence is not None:
        moves = truth.residence.group_by(pl.col("person_id").alias("true_id")).agg(
            (pl.col("uprn").min() != pl.col("uprn").max()).alias("_moved")
        )
        ids = (
            ids.join(moves, on="true_id", how="left")
            .with_columns(
                pl.when(pl.col("_moved"))
                .then(pl.lit("mover"))
                .otherwise(pl.lit("non-mover"))
                .alias("mover")
            )
            .drop("_moved")
        )
    else:
        ids = ids.with_columns(pl.lit(None, pl.Utf8).alias("mover"))
    return ids


def bias_checks(counts: pl.DataFrame, groups: pl.DataFrame) -> tuple[BiasCheck, ...]:
    """Recall of person clusters per age band, sex and mover status, with the widest gaps.

    `counts` comes from `count_records`, `groups` from `person_groups`.
    """
    n = pl.col("n")
    found = (
        counts.group_by("true_id")
        .agg(n.sum().alias("records"), _pairs_of(n).alias("found"))
        .with_columns((pl.col("records") * (pl.col("records") - 1) // 2).alias("pairs"))
        .join(groups, on="true_id", how="left")
    )
    out = []
    for dim in BIAS_DIMENSIONS:
        if dim not in groups.columns or groups.get_column(dim).null_count() == groups.height:
            continue
        rows = (
            found.group_by(pl.col(dim).fill_null("unknown"))
            .agg(
                pl.len().alias("people"),
                pl.col("records").sum(),
                pl.col("pairs").sum(),
                pl.col("found").sum(),
            )
            .sort(dim)
        )
        out.append(
            BiasCheck(
                dim,
                tuple(
                    GroupRecall(str(g), int(p), int(r), int(t), int(f))
                    for g, p, r, t, f in rows.iter_rows()
                ),
            )
        )
    return tuple(out)


NAMESAKE_RELATIONS = ("parent and child", "twins or same birthday", "other")


def namesake_scores(counts: pl.DataFrame, people: pl.DataFrame) -> NamesakeScores | None:
    """Precision on the records of true people who have a namesake (see NamesakeScores).

    `counts` comes from `count_records`; `people` needs person_id, forename, surname, dob
    (mother_id and father_id, when present, tell parents and children apart).
    """
    if not {"forename", "surname", "dob"} <= set(people.columns):
        return None
    cols = ["person_id", "forename", "surname", "dob"]
    cols += [c for c in ("mother_id", "father_id") if c in people.columns]
    p = people.select(cols).with_columns(
        pl.col("forename").str.to_uppercase(), pl.col("surname").str.to_uppercase()
    )
    by_name = pl.len().over("surname", "forename") > 1
    by_dob = pl.len().over("surname", "dob") > 1
    having = p.filter(
        (by_name & pl.col("forename").is_not_null()) | (by_dob & pl.col("dob").is_not_null())
    )
    n = pl.col("n")
    correct = (
        counts.join(having.select(pl.col("person_id").alias("true_id")), on="true_id")
        .select(_pairs_of(n))
        .item()
    )
    # Our clusters holding two or more true people: every pair of those true people.
    cells = counts.select("person_id", "true_id", "n")
    multi = cells.filter(pl.len().over("person_id") > 1)
    cross = (
        multi.join(multi, on="person_id", suffix="_b")
        .filter(pl.col("true_id") < pl.col("true_id_b"))
        .join(p.rename(lambda c: f"{c}_a").rename({"person_id_a": "true_id"}), on="true_id")
        .join(p.rename(lambda c: f"{c}_b").rename({"person_id_b": "true_id_b"}), on="true_id_b")
    )
    same_surname = pl.col("surname_a") == pl.col("surname_b")
    namesakes = cross.filter(
        same_surname
        & ((pl.col("forename_a") == pl.col("forename_b")) | (pl.col("dob_a") == pl.col("dob_b")))
    )
    parent = pl.lit(False)
    for col in ("mother_id", "father_id"):
        if col in p.columns:
            parent = (
                parent
                | (pl.col(f"{col}_a") == pl.col("true_id_b"))
                | (pl.col(f"{col}_b") == pl.col("true_id"))
            )
    relation = (
        pl.when(parent.fill_null(False))
        .then(pl.lit(NAMESAKE_RELATIONS[0]))
        .when(pl.col("dob_a") == pl.col("dob_b"))
        .then(pl.lit(NAMESAKE_RELATIONS[1]))
        .otherwise(pl.lit(NAMESAKE_RELATIONS[2]))
    )
    found = namesakes.with_columns(relation.alias("relation"))
    merged = dict.fromkeys(NAMESAKE_RELATIONS, 0)
    for kind, count in found.group_by("relation").len().iter_rows():
        merged[str(kind)] = int(count)
    wrong = found.select((n * pl.col("n_b")).sum()).item()
    return NamesakeScores(
        people=having.height,
        correct_pairs=int(correct or 0),
        wrong_pairs=int(wrong or 0),
        merged=merged,
    )


def _covering(on: date) -> pl.Expr:
    return (pl.col("valid_from") <= on) & (pl.col("valid_to").fill_null(OPEN_END) >= on)


def _majority(person_records: pl.DataFrame, key: str, other: str) -> pl.DataFrame:
    """For each `key`, the `other` id holding most of its records (ties: smallest id)."""
    return (
        person_records.sort([key, "n", other], descending=[False, True, False])
        .unique(key, keep="first", maintain_order=False)
        .select(key, other)
    )


@dataclass(frozen=True)
class _Side:
    """One side's pair counts for households: rows grouped by outer, middle, inner id."""

    rows: int
    groups: int
    pairs: int  # sharing outer
    pairs_known: int  # sharing outer, both with a middle id
    pairs_together: int  # sharing outer and middle, with different inner ids
    exact: pl.DataFrame  # outer, middle, n: groups wholly in one middle, each inner once


def _side(frame: pl.DataFrame, outer: str, middle: str, inner: str) -> _Side:
    """Pairs by group sizes: outer -> middle -> inner, where a known middle has an inner id."""
    n, known = pl.col("n"), pl.col(middle).is_not_null()
    mid = (
        frame.group_by(outer, middle, inner)
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .group_by(outer, middle)
        .agg(n.sum(), pl.len().alias("distinct"), _pairs_of(n).alias("same_inner"))
    )
    top = mid.group_by(outer).agg(
        n.sum(),
        n.filter(known).sum().alias("n_known"),
        pl.len().alias("middles"),
        pl.col(middle).first(),
        (pl.col("distinct").first() == pl.col("n").first()).alias("once"),
    )
    together = mid.filter(known).select(_pairs_of(n) - pl.col("same_inner").sum()).item()
    return _Side(
        rows=frame.height,
        groups=top.height,
        pairs=int(top.select(_pairs_of(n)).item() or 0),
        pairs_known=int(top.select(_pairs_of(pl.col("n_known"))).item() or 0),
        pairs_together=int(together or 0),
        exact=top.filter((pl.col("middles") == 1) & known & pl.col("once")).select(
            outer, middle, "n"
        ),
    )


def household_scores(
    counts: pl.DataFrame, truth: GroundTruth, membership: pl.DataFrame, on: date
) -> HouseholdScores:
    """Household assignment on a date: pairs of co-residents found, exact households.

    `counts` comes from `count_records`; `membership` has person_id, household_id,
    is_communal, valid_from, valid_to (null = open).
    """
    if truth.residence is None:
        raise ValueError("household scores need the truth's residence history")
    res = truth.residence.filter(_covering(on))
    if truth.addresses is not None:
        communal = truth.addresses.filter(pl.col("is_communal")).select("uprn")
        res = res.join(communal, on="uprn", how="anti")
    if truth.people is not None:
        dead = truth.people.filter(pl.col("date_of_death") < on).select("person_id")
        res = res.join(dead, on="person_id", how="anti")
    true_on = (
        res.sort("person_id", "valid_from")
        .unique("person_id", keep="last")
        .select(pl.col("person_id").alias("true_id"), "uprn")
    )
    ours_on = (
        membership.filter(_covering(on) & ~pl.col("is_communal").fill_null(False))
        .sort("person_id", "valid_from")
        .unique("person_id", keep="last")
        .select("person_id", "household_id")
    )
    person_records = counts.select("person_id", "true_id", "n")
    # Truth side: each true resident as the cluster holding most of their records.
    t = true_on.join(
        _majority(person_records, "true_id", "person_id"), on="true_id", how="left"
    ).join(ours_on, on="person_id", how="left")
    # Our side: each of our residents as the true person holding most of their records.
    o = ours_on.join(
        _majority(person_records, "person_id", "true_id"), on="person_id", how="left"
    ).join(true_on, on="true_id", how="left")
    truth_side = _side(t, "uprn", "household_id", "person_id")
    our_side = _side(o, "household_id", "uprn", "true_id")
    exact = truth_side.exact.join(our_side.exact, on=["uprn", "household_id", "n"]).height
    return HouseholdScores(
        reference_date=on,
        residents=truth_side.rows,
        residents_placed=int(t.get_column("household_id").is_not_null().sum()),
        households=truth_side.groups,
        households_exact=exact,
        predicted_households=our_side.groups,
        true_pairs=truth_side.pairs,
        true_pairs_placed=truth_side.pairs_together,
        true_pairs_unplaced=truth_side.pairs - truth_side.pairs_known,
        predicted_pairs=our_side.pairs,
        predicted_pairs_true=our_side.pairs_together,
        predicted_pairs_non_resident=our_side.pairs - our_side.pairs_known,
    )


def evaluate_linkage(
    clusters: pl.DataFrame,
    crosswalk: pl.DataFrame,
    truth: GroundTruth,
    *,
    reference_date: date,
    membership: pl.DataFrame | None = None,
) -> LinkageEvaluation:
    """Score one run's clusters (and households, given memberships) against ground truth.

    `clusters` has unique_id, source_dataset, person_id; `crosswalk` unique_id, record_id;
    `membership` person_id, household_id, is_communal, valid_from, valid_to (null = open).
    """
    counts = count_records(clusters, crosswalk, truth.records)
    pairs = _all_pairs(counts)
    predicted, true, both = (p[("", "")] for p in pairs)
    households = None
    if membership is not None and truth.residence is not None:
        households = household_scores(counts, truth, membership, reference_date)
    return LinkageEvaluation(
        overall=PairwiseScores(int(counts.get_column("n").sum()), predicted, true, both),
        source_pairs=_source_pairs(counts, pairs),
        households=households,
        bias=bias_checks(
            counts, person_groups(truth, reference_date, counts.get_column("true_id"))
        ),
        namesakes=namesake_scores(counts, truth.people) if truth.people is not None else None,
    )


# ------------------------------------------------------------------------------ text table
def _ratio(num: int, den: int) -> str:
    return f"{num / den:.4f}" if den else "-"


def _grid(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows under a header, first column left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return (indent + "  ".join([first, *rest])).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _pair_row(label: str, s: PairwiseScores) -> list[str]:
    f1 = f"{s.f1:.4f}" if s.predicted_pairs and s.true_pairs else "-"
    return [
        label,
        f"{s.records:,}",
        f"{s.true_pairs:,}",
        f"{s.predicted_pairs:,}",
        f"{s.true_positive_pairs:,}",
        _ratio(s.true_positive_pairs, s.predicted_pairs),
        _ratio(s.true_positive_pairs, s.true_pairs),
        f1,
    ]


def _pair_lines(ev: LinkageEvaluation) -> list[str]:
    rows = [_pair_row("all records", ev.overall)]
    for s in ev.source_pairs:
        same = s.source_a == s.source_b
        label = f"within {s.source_a}" if same else f"{s.source_a} + {s.source_b}"
        rows.append(_pair_row(label, s.scores))
    header = ["", "records", "true", "predicted", "correct", "precision", "recall", "F1"]
    return ["Person clusters: pairs of records that are the same person", *_grid(header, rows)]


def _household_lines(h: HouseholdScores) -> list[str]:
    placed_pairs = h.true_pairs - h.true_pairs_unplaced
    resident_pairs = h.predicted_pairs - h.predicted_pairs_non_resident
    rows = [
        ("true residents placed in a household", h.residents_placed, h.residents),
        ("true households rebuilt exactly", h.households_exact, h.households),
        ("true pairs we place together (recall)", h.true_pairs_placed, h.true_pairs),
        ("  missed: one of them placed nowhere", h.true_pairs_unplaced, h.true_pairs),
        ("  missed: placed apart, or merged", placed_pairs - h.true_pairs_placed, h.true_pairs),
        ("  recall among pairs both placed", h.true_pairs_placed, placed_pairs),
        ("our pairs truly together (precision)", h.predicted_pairs_true, h.predicted_pairs),
        ("  wrong: one of them not resident *", h.predicted_pairs_non_resident, h.predicted_pairs),
        (
            "  wrong: other address, or one person",
            resident_pairs - h.predicted_pairs_true,
            h.predicted_pairs,
        ),
        ("  precision among pairs of residents", h.predicted_pairs_true, resident_pairs),
    ]
    f1 = f"{h.f1:.4f}" if h.true_pairs and h.predicted_pairs else "-"
    return [
        f"Households on {h.reference_date.isoformat()}: who lives with whom "
        "(communal establishments excluded)",
        *_grid(
            ["", "count", "of", "share"],
            [[label, f"{n:,}", f"{d:,}", _ratio(n, d)] for label, n, d in rows],
        ),
        f"  pairs F1 {f1}; our households {h.predicted_households:,}",
        "  * not truly living at a non-communal address that day: moved away, died or communal",
    ]


def _bias_lines(bias: tuple[BiasCheck, ...]) -> list[str]:
    rows: list[list[str]] = []
    gaps: dict[int, str] = {}
    for b in bias:
        for g in b.groups:
            rows.append(
                [
                    f"{b.dimension} {g.group}",
                    f"{g.people:,}",
                    f"{g.records:,}",
                    f"{g.true_pairs:,}",
                    f"{g.true_positive_pairs:,}",
                    _ratio(g.true_positive_pairs, g.true_pairs),
                ]
            )
        gap, between = b.gap_points, b.gap_between
        if gap is not None and between is not None:
            gaps[len(rows)] = f"    largest gap {gap:.2f} points: {between[0]} vs {between[1]}"
    lines = ["Recall of person clusters by group of true people"]
    # Each dimension's gap goes under its last group (grid line 0 is the header).
    for i, line in enumerate(_grid(["", "people", "records", "true", "correct", "recall"], rows)):
        lines.append(line)
        if i in gaps:
            lines.append(gaps[i])
    return lines


def _namesake_lines(ns: NamesakeScores) -> list[str]:
    wrong = ", ".join(f"{kind} {n:,}" for kind, n in ns.merged.items())
    return [
        "Namesakes: records of true people sharing a surname and a forename or a date of birth",
        f"  people with a namesake {ns.people:,}; our pairs of their records "
        f"{ns.correct_pairs + ns.wrong_pairs:,}, one person {ns.correct_pairs:,}, "
        f"two namesakes {ns.wrong_pairs:,}; precision {ns.precision:.4f}",
        f"  namesakes we join into one person: {wrong}",
    ]


def _table_lines(ev: LinkageEvaluation) -> list[str]:
    lines = _pair_lines(ev)
    if ev.namesakes is not None:
        lines += ["", *_namesake_lines(ev.namesakes)]
    if ev.households is not None:
        lines += ["", *_household_lines(ev.households)]
    if ev.bias:
        lines += ["", *_bias_lines(ev.bias)]
    return lines


def read_residence_confirmed(metadata_path: Path) -> list[ResidenceConfirmed]:
    """The published run's per-source residence confirmation (empty when not recorded: a
    release published before it was, whose metadata is otherwise read as it stands)."""
    if not metadata_path.exists():
        return []
    meta = json.loads(metadata_path.read_text())
    if "residence_confirmed" not in meta:
        return []
    return list(PublicationMetadata.from_dict(meta).residence_confirmed)


def residence_lines(confirmed: Sequence[ResidenceConfirmed]) -> list[str]:
    """Per source: people placed on the reference date, and the share another source places
    at the same address that day."""
    lines = [
        "Residence evidence: addresses on the reference date confirmed by another source",
        f"  {'source':<22}{'people':>10}{'confirmed':>11}{'share':>8}",
    ]
    for r in confirmed:
        lines.append(
            f"  {r['source_dataset']:<22}{r['people']:>10,}{r['confirmed']:>11,}{r['share']:>8.4f}"
        )
    return lines


def read_cannot_link(marker: Path) -> dict[str, Any] | None:
    """The cannot-link counts of the run that made the clusters (the link stage's marker)."""
    try:
        summary = json.loads(marker.read_text()).get("summary", {})
    except (OSError, ValueError):
        return None
    found = summary.get("cannot_link")
    return found if isinstance(found, dict) else None


def _cannot_link_lines(splits: dict[str, Any]) -> list[str]:
    rules = ", ".join(f"{rule} {n:,}" for rule, n in splits.get("by_rule", {}).items())
    return [
        "Cannot-link rules (clusters holding records that cannot be one person)",
        f"  clusters split {splits.get('clusters_in_conflict', 0):,} (by rule: {rules}); "
        f"people added {splits.get('people_added', 0):,}; "
        f"records moved to another person {splits.get('records_moved', 0):,}",
    ]


def label_scores(clusters: pl.DataFrame, labels: pl.DataFrame) -> dict[str, Any]:
    """The clusters scored on reviewers' current labels (unique_id_l, unique_id_r, label):
    a match label is a true pair, a non-match one a false pair; labels naming a record the
    clusters do not hold are left out."""
    person = clusters.select("unique_id", "person_id")
    both = (
        labels.join(
            person.rename({"unique_id": "unique_id_l", "person_id": "pl"}), on="unique_id_l"
        )
        .join(person.rename({"unique_id": "unique_id_r", "person_id": "pr"}), on="unique_id_r")
        .select((pl.col("label") == "match").alias("m"), (pl.col("pl") == pl.col("pr")).alias("s"))
    )
    tp = both.filter(pl.col("m") & pl.col("s")).height
    fp = both.filter(~pl.col("m") & pl.col("s")).height
    fn = both.filter(pl.col("m") & ~pl.col("s")).height
    return {
        "pairs": both.height,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": both.height - tp - fp - fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def review_evaluation(
    settings: RunSettings,
    key: MasterKey,
    clusters: pl.DataFrame,
    crosswalk: pl.DataFrame,
    truth: GroundTruth,
) -> dict[str, Any] | None:
    """Reviewers' labels beside the synthetic truth: the clusters and Splink's scores of the
    saved model (`accuracy_analysis_from_labels_table`) on the labels, and how many labels the
    truth agrees with. None when nobody has labelled a pair."""
    from uprnlink.linkage.review import model_label_accuracy

    z = Zones(settings)
    labels = current_labels(read_labels(z, key.key_id))
    if labels.height == 0:
        return None
    true_id = label_clusters(
        clusters.select("unique_id", "source_dataset", pl.lit("").alias("person_id")),
        crosswalk,
        truth.records,
    ).select("unique_id", pl.col("true_id").alias("person_id"))
    truthful = label_scores(true_id, labels)
    out: dict[str, Any] = {
        "labels": labels.height,
        "match": labels.filter(pl.col("label") == "match").height,
        "clusters": label_scores(clusters, labels),
        "labels_agreeing_with_truth": truthful["tp"] + truthful["tn"],
        "model": None,
    }
    model_path = z.linkage_dir / "model.json"
    if model_path.exists():
        marker = z.linkage_dir / "inputs.json"
        summary = json.loads(marker.read_text()).get("summary", {}) if marker.exists() else {}
        out["model"] = model_label_accuracy(
            trusted_records(settings, key).records,
            splink_labels(labels),
            json.loads(model_path.read_text()),
            settings.linkage,
            float(summary.get("match_threshold", settings.linkage.match_threshold)),
            z.linkage_dir,
        )
    return out


def _review_lines(r: dict[str, Any]) -> list[str]:
    def ratio(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    rows = [
        ["clusters (this run)", ratio(r["clusters"]["precision"]), ratio(r["clusters"]["recall"])]
    ]
    if r.get("model"):
        rows.append(
            [
                "model scores (Splink, at the threshold)",
                ratio(r["model"]["precision"]),
                ratio(r["model"]["recall"]),
            ]
        )
    return [
        f"Clerical labels ({r['labels']:,} pairs, {r['match']:,} match; "
        f"{r['labels_agreeing_with_truth']:,} agree with the synthetic truth)",
        *_grid(["", "precision", "recall"], rows),
    ]


def evaluate_run(settings: RunSettings, truth_dir: Path) -> dict[str, Any]:
    """Score the last run against synthetic ground truth; write evaluation.json beside outputs.

    Person clusters overall and per pair of sources, households on the reference date, and
    recall by age band, sex and mover status. The JSON holds counts and ratios only; the
    returned dict adds `print_table`, the same figures as text for a terminal.
    """
    z = Zones(settings)
    truth = read_ground_truth(truth_dir)
    key = load_run_key(settings)
    clusters = read_trusted(z.clusters, key).select("unique_id", "source_dataset", "person_id")
    crosswalk = pl.concat(
        [
            read_trusted(z.crosswalk(n), key).select("unique_id", "record_id")
            for n in settings.sources
            if z.crosswalk(n).exists()
        ]
    )
    membership_path = settings.linked_dir / "membership.parquet"
    membership = None
    if membership_path.exists():
        # Published person ids are release ids; the trusted crosswalk maps them back to the
        # internal ids the clusters carry.
        membership = internal_ids(
            pl.read_parquet(membership_path), read_trusted(z.release_ids, key)
        )
    evaluation = evaluate_linkage(
        clusters,
        crosswalk,
        truth,
        reference_date=settings.reference_date,
        membership=membership,
    )
    result = evaluation.to_dict()
    # The baselines linked the same records in the same run: score them the same way.
    baselines: dict[str, Any] = {}
    table = evaluation.to_table()
    reviewed = review_evaluation(settings, key, clusters, crosswalk, truth)
    if reviewed is not None:
        result["review"] = reviewed
        table += "\n\n" + "\n".join(_review_lines(reviewed))
    confirmed = read_residence_confirmed(settings.linked_dir / "run_metadata.json")
    if confirmed:
        result["residence_confirmed"] = confirmed
        table += "\n\n" + "\n".join(residence_lines(confirmed))
    splits = read_cannot_link(z.linkage_dir / "inputs.json")
    if splits is not None:
        result["cannot_link"] = splits
        table += "\n\n" + "\n".join(_cannot_link_lines(splits))
    rows = [
        f"  {'model (uprnlink)':<34}{result['pairwise']['precision']:>10.4f}"
        f"{result['pairwise']['recall']:>8.4f}{result['pairwise']['f1']:>8.4f}"
    ]
    for path in sorted(z.linkage_dir.glob("baseline_*.parquet")):
        name = path.stem.removeprefix("baseline_")
        labelled = label_clusters(
            read_trusted(path, key).join(
                clusters.select("unique_id", "source_dataset"), on="unique_id"
            ),
            crosswalk,
            truth.records,
        )
        scores = pairwise_scores(labelled).to_dict()
        baselines[name] = scores
        rows.append(
            f"  {'baseline: ' + name:<34}{scores['precision']:>10.4f}"
            f"{scores['recall']:>8.4f}{scores['f1']:>8.4f}"
        )
    if baselines:
        result["baselines"] = baselines
        table += (
            "\n\nModel against baselines on the same records\n"
            f"  {'':<34}{'precision':>10}{'recall':>8}{'F1':>8}\n" + "\n".join(rows)
        )
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    return {**result, "print_table": table}


def side_by_side(results: list[tuple[str, dict[str, Any]]]) -> str:
    """The headline figures of several evaluations (name, `evaluate_run` result) as one table,
    a column per population: linkage, namesakes, households and the cannot-link splits."""

    def ratio(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    rows: list[tuple[str, list[str]]] = []

    def row(label: str, pick: Any) -> None:
        cells = []
        for _, r in results:
            try:
                cells.append(pick(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        rows.append((label, cells))

    row("records", lambda r: f"{r['pairwise']['records']:,}")
    row("precision", lambda r: ratio(r["pairwise"]["precision"]))
    row("recall", lambda r: ratio(r["pairwise"]["recall"]))
    row("F1", lambda r: ratio(r["pairwise"]["f1"]))
    row("plain Splink F1", lambda r: ratio(r["baselines"]["plain_splink"]["f1"]))
    row("namesake-pair precision", lambda r: ratio(r["namesakes"]["precision"]))
    row("co-resident pairs precision", lambda r: ratio(r["households"]["precision"]))
    row("co-resident pairs recall", lambda r: ratio(r["households"]["recall"]))
    row(
        "households rebuilt exactly",
        lambda r: ratio(r["households"]["households_exact"] / r["households"]["households"]),
    )
    for rule in ("nhs_number", "date_of_birth", "same_listing", "under_age"):
        row(f"clusters split: {rule}", lambda r, k=rule: f"{r['cannot_link']['by_rule'][k]:,}")
    row("people added by splits", lambda r: f"{r['cannot_link']['people_added']:,}")
    names = [name for name, _ in results]
    return "\n".join(
        ["Populations side by side", *_grid(["", *names], [[label, *c] for label, c in rows])]
    )


def internal_ids(frame: pl.DataFrame, crosswalk: pl.DataFrame) -> pl.DataFrame:
    """A published table with its person ids mapped back to the internal ones (crosswalk from
    `privacy.release.release_ids`)."""
    people = crosswalk.filter(pl.col("column") == "person_id").select(
        pl.col("published").alias("person_id"), pl.col("internal").alias("_internal")
    )
    return (
        frame.join(people, on="person_id", how="left", maintain_order="left")
        .with_columns(pl.col("_internal").alias("person_id"))
        .drop("_internal")
    )
