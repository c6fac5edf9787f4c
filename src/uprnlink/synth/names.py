"""Name frequency tables shipped in uprnlink/data, and seeded samplers over them."""

from __future__ import annotations

import bisect
import csv
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import polars as pl

from uprnlink.synth.draws import uniforms, weighted_index

BRITISH = "british"

#: Forename pool used for people whose surname has each origin.
FORENAME_POOL: dict[str, str] = {
    "british": "british",
    "south_asian_muslim": "south_asian_muslim",
    "south_asian_indic": "south_asian_indic",
    "middle_eastern": "south_asian_muslim",
    "eastern_european": "eastern_european",
    "african": "african",
    "east_asian": "east_asian",
    "southern_european": "southern_european",
}

_OWN_POOL_SHARE = 0.8
_BRITISH_POOL_SHARE = 0.97
_MIDDLE_NAME_SHARE = 0.55


@dataclass(frozen=True)
class Forename:
    """One row of forenames.csv: a name's weight and its birth-year popularity peak."""

    name: str
    sex: str
    weight: float
    peak_year: int | None
    spread_years: float
    origin: str


@dataclass(frozen=True)
class SurnameTable:
    """Surnames with cumulative weights, overall and within each origin, for fast sampling."""

    names: tuple[str, ...]
    origins: tuple[str, ...]
    cum: tuple[float, ...]
    by_origin: dict[str, tuple[tuple[int, ...], tuple[float, ...]]]

    def draw(self, rng: random.Random) -> int:
        """Index of a surname drawn by national frequency."""
        return bisect.bisect_right(self.cum, rng.random() * self.cum[-1])

    def draw_origin(self, rng: random.Random, origin: str) -> int:
        """Index of a surname of the given origin, drawn by frequency."""
        idx, cum = self.by_origin[origin]
        return idx[bisect.bisect_right(cum, rng.random() * cum[-1])]


def _data_text(name: str) -> str:
    return (resources.files("uprnlink") / "data" / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def read_forenames() -> tuple[Forename, ...]:
    """Rows of forenames.csv (a name may appear once per popularity peak)."""
    rows = csv.DictReader(_data_text("forenames.csv").splitlines())
    return tuple(
        Forename(
            name=r["name"],
            sex=r["sex"],
            weight=float(r["weight"]),
            peak_year=int(r["peak_year"]) if r.get("peak_year") else None,
            spread_years=float(r["spread_years"]) if r.get("spread_years") else 0.0,
            origin=r.get("origin") or BRITISH,
        )
        for r in rows
    )


@lru_cache(maxsize=1)
def read_surnames() -> SurnameTable:
    """surnames.csv as a sampling table."""
    rows = list(csv.DictReader(_data_text("surnames.csv").splitlines()))
    names = tuple(r["name"] for r in rows)
    origins = tuple(r.get("origin") or BRITISH for r in rows)
    cum: list[float] = []
    acc = 0.0
    by: dict[str, tuple[list[int], list[float]]] = {}
    for i, r in enumerate(rows):
        w = float(r["weight"])
        acc += w
        cum.append(acc)
        idx, ocum = by.setdefault(origins[i], ([], []))
        idx.append(i)
        ocum.append((ocum[-1] if ocum else 0.0) + w)
    return SurnameTable(
        names=names,
        origins=origins,
        cum=tuple(cum),
        by_origin={o: (tuple(i), tuple(c)) for o, (i, c) in by.items()},
    )


@lru_cache(maxsize=1)
def read_variants() -> dict[str, tuple[str, ...]]:
    """Upper-case forename -> its variants (both directions of each pair in name_variants.csv)."""
    out: dict[str, list[str]] = {}
    for r in csv.DictReader(_data_text("name_variants.csv").splitlines()):
        a, b = r["name"].strip(), r["variant"].strip()
        for x, y in ((a, b), (b, a)):
            lst = out.setdefault(x.upper(), [])
            if y not in lst:
                lst.append(y)
    return {k: tuple(v) for k, v in out.items()}


def _weights_for_year(rows: list[Forename], year: float) -> list[float]:
    out = []
    for r in rows:
        if r.peak_year is None:
            out.append(r.weight)
        else:
            z = (year - r.peak_year) / max(r.spread_years, 1.0)
            out.append(r.weight * max(math.exp(-0.5 * z * z), 0.004))
    return out


def assign_forenames(people: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """Forename and middle name for each person from sex, birth year and surname origin.

    Takes columns person_id, sex (M/F), birth_year, origin; returns person_id, forename,
    middle_name (null for about 45%).
    """
    rows = read_forenames()
    pools: dict[tuple[str, str], list[Forename]] = {}
    for r in rows:
        pools.setdefault((r.sex, r.origin), []).append(r)
    other_pools = sorted({o for _, o in pools if o != BRITISH})
    n = people.height
    u = uniforms(rng, n, ["u_pool", "u_pick", "u_has_mid", "u_mid"])
    own = pl.col("origin").replace_strict(FORENAME_POOL, default=BRITISH)
    mixed = pl.lit(other_pools[0])
    for i, o in enumerate(other_pools):
        mixed = (
            pl.when(pl.col("u_pool") >= 0.97 + 0.03 * i / len(other_pools))
            .then(pl.lit(o))
            .otherwise(mixed)
        )
    frame = (
        people.select("person_id", "sex", "birth_year", "origin")
        .with_row_index("_row")
        .hstack(u)
        .with_columns(
            pool=pl.when(own != BRITISH)
            .then(pl.when(pl.col("u_pool") < _OWN_POOL_SHARE).then(own).otherwise(pl.lit(BRITISH)))
            .otherwise(
                pl.when(pl.col("u_pool") < _BRITISH_POOL_SHARE)
                .then(pl.lit(BRITISH))
                .otherwise(mixed)
            ),
            bucket=(pl.col("birth_year") // 5) * 5 + 2,
        )
    )
    parts = []
    for key, group in frame.partition_by(
        ["sex", "pool", "bucket"], as_dict=True, maintain_order=True
    ).items():
        sex, pool, bucket = str(key[0]), str(key[1]), int(key[2])
        cands = pools.get((sex, pool)) or pools[(sex, BRITISH)]
        weights = _weights_for_year(cands, bucket)
        names = pl.Series([c.name for c in cands])
        first = names.gather(weighted_index(group["u_pick"], weights))
        middle = names.gather(weighted_index(group["u_mid"], weights))
        parts.append(
            group.select("_row", "person_id", "u_has_mid").with_columns(
                forename=first, middle_name=middle
            )
        )
    out = pl.concat(parts).sort("_row")
    return out.select(
        "person_id",
        "forename",
        middle_name=pl.when(
            (pl.col("u_has_mid") < _MIDDLE_NAME_SHARE)
            & (pl.col("middle_name") != pl.col("forename"))
        ).then(pl.col("middle_name")),
    )


# Children given a parent's forename, by year of birth: Bush (2023), "Name transmission
# relationships in England (1838-2014)", NAMES 71(3), from the birth, marriage and death
# registers: about 15% of boys took the father's forename and 8% of girls the mother's each year
# through the 19th century, falling steeply after the First World War. The paper gives no
# figure for recent decades; we take a linear fall from 1915 to 1960 and a floor of 4% of boys
# and 2% of girls afterwards (the "junior" that still recurs in some families).
_NAMED_AFTER_PARENT = {"M": (0.15, 0.04), "F": (0.08, 0.02)}
_NAMING_DECLINE = (1915, 1960)


def named_after_parent_rate(sex: str, birth_year: float) -> float:
    """Share of children of this sex and birth year given their same-sex parent's forename."""
    before, after = _NAMED_AFTER_PARENT[sex]
    y0, y1 = _NAMING_DECLINE
    share = min(1.0, max(0.0, (birth_year - y0) / (y1 - y0)))
    return before + (after - before) * share


def name_after_parents(people: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """Some sons take the father's forename and some daughters the mother's (see
    `named_after_parent_rate`); twins never share a forename.

    Takes person_id, sex, dob, mother_id, father_id, forename, middle_name (and any other
    columns, kept); returns the same frame with forename (and middle_name) updated.
    """
    u = uniforms(rng, people.height, ["u_junior"])
    y0, y1 = _NAMING_DECLINE
    share = ((pl.col("dob").dt.year().cast(pl.Float64) - y0) / (y1 - y0)).clip(0.0, 1.0)
    (m0, m1), (f0, f1) = _NAMED_AFTER_PARENT["M"], _NAMED_AFTER_PARENT["F"]
    rate = (
        pl.when(pl.col("sex") == "M").then(m0 + (m1 - m0) * share).otherwise(f0 + (f1 - f0) * share)
    )
    parents = people.select(pl.col("person_id").alias("_parent"), pl.col("forename").alias("_pf"))
    frame = (
        people.hstack(u)
        .with_columns(
            pl.when(pl.col("sex") == "M")
            .then(pl.col("father_id"))
            .otherwise(pl.col("mother_id"))
            .alias("_parent")
        )
        .join(parents, on="_parent", how="left", maintain_order="left")
    )
    junior = pl.col("_pf").is_not_null() & (pl.col("u_junior") < rate)
    frame = frame.with_columns(
        pl.when(junior).then(pl.col("_pf")).otherwise(pl.col("forename")).alias("forename"),
        pl.when(junior & (pl.col("middle_name") == pl.col("_pf")))
        .then(None)
        .otherwise(pl.col("middle_name"))
        .alias("middle_name"),
    ).drop("u_junior", "_parent", "_pf")
    return _distinct_twin_names(frame, rng)


def _distinct_twin_names(people: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """Redraw the forename of a younger twin who drew the same forename as the elder."""
    for _ in range(10):
        sibling = pl.struct("mother_id", "father_id", "dob", "forename")
        clash = (
            (pl.col("mother_id").is_not_null() | pl.col("father_id").is_not_null())
            & sibling.is_duplicated()
            & ~sibling.is_first_distinct()
        )
        again = people.filter(clash)
        if again.height == 0:
            break
        redrawn = assign_forenames(
            again.select(
                "person_id",
                "sex",
                birth_year=pl.col("dob").dt.year(),
                origin=pl.col("origin"),
            ),
            rng,
        ).select("person_id", pl.col("forename").alias("_new"))
        people = (
            people.join(redrawn, on="person_id", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_new", "forename").alias("forename"))
            .drop("_new")
        )
    return people
