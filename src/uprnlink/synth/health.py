"""Long-term conditions and hospital activity whose rates carry real signal for analysts.

Prevalence rises with age and deprivation (COPD, diabetes and CHD steeply so); dementia is
common in care homes. A&E attendances and emergency admissions depend on age, conditions,
deprivation, overcrowding (more residents than bedrooms + 1) and communal living.
"""

from __future__ import annotations

import itertools
import random

import polars as pl

from uprnlink.synth.draws import uniforms, with_poisson_counts

CONDITIONS = ("asthma", "copd", "diabetes", "chd", "hypertension", "depression", "dementia")

_PREVALENCE: dict[str, tuple[tuple[float, float], ...]] = {
    "asthma": ((0, 0.03), (5, 0.09), (15, 0.09), (30, 0.07), (60, 0.07), (90, 0.06)),
    "copd": ((35, 0.0), (45, 0.01), (60, 0.03), (75, 0.07), (90, 0.07)),
    "diabetes": ((0, 0.002), (30, 0.01), (45, 0.04), (60, 0.1), (75, 0.15), (90, 0.13)),
    "chd": ((40, 0.0), (55, 0.02), (70, 0.07), (85, 0.13), (100, 0.13)),
    "hypertension": ((20, 0.0), (40, 0.06), (55, 0.2), (70, 0.38), (85, 0.5), (100, 0.5)),
    "depression": ((12, 0.0), (18, 0.09), (45, 0.15), (70, 0.11), (100, 0.1)),
    "dementia": ((60, 0.0), (65, 0.006), (75, 0.025), (85, 0.1), (95, 0.22), (105, 0.3)),
}
# relative risk in decile 1 (most deprived) and decile 10, linear between
_DEPRIVATION: dict[str, tuple[float, float]] = {
    "asthma": (1.25, 0.85),
    "copd": (2.0, 0.55),
    "diabetes": (1.5, 0.75),
    "chd": (1.4, 0.8),
    "hypertension": (1.2, 0.9),
    "depression": (1.4, 0.8),
    "dementia": (1.15, 0.9),
}
_AE_BY_AGE = (
    (0, 0.6),
    (5, 0.27),
    (15, 0.32),
    (20, 0.4),
    (30, 0.29),
    (60, 0.27),
    (75, 0.4),
    (85, 0.7),
    (100, 0.9),
)
_ADMIT_BY_AGE = (
    (0, 0.09),
    (2, 0.04),
    (15, 0.03),
    (40, 0.045),
    (65, 0.1),
    (75, 0.17),
    (85, 0.32),
    (100, 0.4),
)
_CONDITION_RR = {
    "asthma": 1.3,
    "copd": 2.0,
    "diabetes": 1.3,
    "chd": 1.6,
    "hypertension": 1.05,
    "depression": 1.35,
    "dementia": 1.6,
}


def interpolate_expr(x: pl.Expr, knots: tuple[tuple[float, float], ...]) -> pl.Expr:
    """Piecewise-linear function of x through the knots, flat beyond the ends."""
    out = pl.lit(knots[-1][1])
    for (x0, y0), (x1, y1) in reversed(list(itertools.pairwise(knots))):
        out = pl.when(x < x1).then(y0 + (y1 - y0) * (x - x0) / (x1 - x0)).otherwise(out)
    return pl.when(x < knots[0][0]).then(pl.lit(knots[0][1])).otherwise(out)


def _deprivation_expr(decile: pl.Expr, most: float, least: float) -> pl.Expr:
    return most + (least - most) * (decile.cast(pl.Float64) - 1.0) / 9.0


def assign_conditions(people: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """Condition flags per person as at death, departure or the reference date.

    Takes person_id, sex, age (years at that date), decile, origin, ever_in_care_home.
    """
    u = uniforms(rng, people.height, [f"u_{c}" for c in CONDITIONS])
    frame = people.hstack(u)
    age = pl.col("age")
    exprs = []
    for c in CONDITIONS:
        p = interpolate_expr(age, _PREVALENCE[c]) * _deprivation_expr(
            pl.col("decile"), *_DEPRIVATION[c]
        )
        if c == "diabetes":
            p = p * pl.when(pl.col("sex") == "M").then(1.2).otherwise(1.0)
            p = p * pl.when(pl.col("origin").str.starts_with("south_asian")).then(2.0).otherwise(
                1.0
            )
        elif c == "chd":
            p = p * pl.when(pl.col("sex") == "M").then(1.5).otherwise(0.7)
        elif c == "depression":
            p = p * pl.when(pl.col("sex") == "F").then(1.35).otherwise(0.65)
        elif c == "asthma":
            p = p * pl.when(pl.col("sex") == "F").then(1.1).otherwise(0.9)
        elif c == "dementia":
            p = (
                pl.when(pl.col("ever_in_care_home") & (age >= 65))
                .then(pl.max_horizontal(p, pl.lit(0.55)))
                .otherwise(p)
            )
        exprs.append((pl.col(f"u_{c}") < p.clip(0.0, 0.95)).alias(c))
    return frame.select("person_id", *exprs)


def draw_hospital_activity(
    segments: pl.DataFrame, rng: random.Random, window_start: int, end: int
) -> pl.DataFrame:
    """A&E attendances and emergency admissions during residence segments in the window.

    Takes person_id, uprn, valid_from, valid_to (null = still there), dob, crowded, kind
    (dwelling kind), decile and condition flags; dates are Date. Returns one row per activity:
    person_id, uprn, activity_type, activity_date, discharge_date (null if not discharged).
    """
    lo = pl.lit(window_start).cast(pl.Date)
    hi = pl.lit(end).cast(pl.Date)
    seg = (
        segments.with_columns(
            s=pl.max_horizontal(pl.col("valid_from"), lo),
            e=pl.min_horizontal(pl.col("valid_to").fill_null(hi), hi),
        )
        .filter(pl.col("e") >= pl.col("s"))
        .with_columns(days=(pl.col("e") - pl.col("s")).dt.total_days() + 1)
        .with_columns(
            age=((pl.col("s") - pl.col("dob")).dt.total_days() + pl.col("days") / 2) / 365.25,
        )
    )
    rr = pl.lit(1.0)
    for c, m in _CONDITION_RR.items():
        rr = rr * pl.when(pl.col(c)).then(m).otherwise(1.0)
    rr = rr.clip(upper_bound=6.0) * _deprivation_expr(pl.col("decile"), 1.5, 0.8)
    rr = rr * pl.when(pl.col("crowded")).then(1.25).otherwise(1.0)
    years = pl.col("days") / 365.25
    seg = seg.with_columns(
        lam_ae=interpolate_expr(pl.col("age"), _AE_BY_AGE)
        * rr
        * years
        * pl.when(pl.col("kind") == "hostel").then(2.5).otherwise(1.0),
        lam_adm=interpolate_expr(pl.col("age"), _ADMIT_BY_AGE)
        * rr
        * years
        * pl.when(pl.col("kind") == "care_home").then(1.4).otherwise(1.0),
    ).hstack(uniforms(rng, seg.height, ["u_ae", "u_adm"]))
    seg = with_poisson_counts(seg, "lam_ae", "u_ae", "n_ae")
    seg = with_poisson_counts(seg, "lam_adm", "u_adm", "n_adm")
    parts = []
    for kind, col in (("AE", "n_ae"), ("EMERGENCY_ADMISSION", "n_adm")):
        ev = (
            seg.filter(pl.col(col) > 0)
            .select(
                "person_id", "uprn", "s", "days", "age", pl.int_ranges(0, pl.col(col)).alias("k")
            )
            .explode("k")
            .drop("k")
            .with_columns(activity_type=pl.lit(kind))
        )
        parts.append(ev)
    ev = pl.concat(parts)
    u = uniforms(rng, ev.height, ["u_day", "u_los", "u_same"])
    ev = ev.hstack(u).with_columns(
        activity_date=(
            pl.col("s")
            + pl.duration(days=(pl.col("u_day") * pl.col("days")).floor().cast(pl.Int64))
        ),
    )
    los = (-(1.0 - pl.col("u_los")).log() * (2.0 + pl.col("age") / 12.0)).floor().cast(pl.Int64)
    discharge = pl.col("activity_date") + pl.duration(
        days=pl.when(pl.col("u_same") < 0.25).then(0).otherwise(los)
    )
    return ev.select(
        "person_id",
        "uprn",
        "activity_type",
        "activity_date",
        discharge_date=pl.when(
            (pl.col("activity_type") == "EMERGENCY_ADMISSION") & (discharge <= hi)
        ).then(discharge),
    )
