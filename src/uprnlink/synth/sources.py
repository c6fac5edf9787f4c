"""True records of each source system, derived from the simulated history before any error.

Every builder returns one row per record the system would hold, keyed by a stable `_row`,
with the person, the dwelling (`uprn`) the record is about, the dwelling the person lived in
before it (`prev_uprn`, for stale addresses), the date the record starts (`record_date`) and
the date its name was last true (`name_date`), plus the source's own fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date

import polars as pl

from uprnlink.synth.draws import uniforms
from uprnlink.synth.geography import CARE_HOME, HOSTEL, OWNER, PRIVATE_RENT, SOCIAL_RENT
from uprnlink.synth.simulation import History


@dataclass(frozen=True)
class World:
    """Everything the source builders read: history, people, residence and addresses."""

    history: History
    people: pl.DataFrame
    residence: pl.DataFrame
    addresses: pl.DataFrame
    start: date
    end: date


def _lit(d: date) -> pl.Expr:
    return pl.lit(d, dtype=pl.Date)


def residence_with_previous(residence: pl.DataFrame) -> pl.DataFrame:
    """Residence spells with the UPRN each person lived at just before (null for the first)."""
    return residence.sort("person_id", "valid_from").with_columns(
        prev_uprn=pl.col("uprn").shift(1).over("person_id")
    )


def _prev_at(frame: pl.DataFrame, residence: pl.DataFrame, on: str) -> pl.DataFrame:
    """frame with prev_uprn: the home before the one the person lived in on date column `on`."""
    left = frame.with_row_index("_i").sort(on)
    right = residence.select("person_id", pl.col("valid_from").alias("_vf"), "prev_uprn").sort(
        "_vf"
    )
    out = left.join_asof(
        right,
        left_on=on,
        right_on="_vf",
        by="person_id",
        strategy="backward",
        check_sortedness=False,
    )
    return out.sort("_i").drop("_i", "_vf")


def _with_rows(frame: pl.DataFrame, *keys: str) -> pl.DataFrame:
    return (
        frame.sort(*keys, maintain_order=True)
        .with_row_index("_row")
        .with_columns(pl.col("_row").cast(pl.Int64))
    )


def benefit_claims(w: World, rng: random.Random) -> pl.DataFrame:
    """HB/CTR claims: one row per claim, on about half of social and a quarter of private lets."""
    h = w.history
    lead = (
        h.liabilities.sort("occupancy_id", "seq", "start")
        .group_by("occupancy_id", maintain_order=True)
        .agg(pl.col("person_id").first().alias("lead"))
    )
    occ = (
        h.occupancies.join(lead, on="occupancy_id", how="inner", maintain_order="left")
        .join(
            w.people.select(pl.col("person_id").alias("lead"), pl.col("dob").alias("lead_dob")),
            on="lead",
            how="left",
            maintain_order="left",
        )
        .join(
            w.addresses.select("uprn", "decile", "bedrooms", "band"),
            on="uprn",
            how="left",
            maintain_order="left",
        )
        .sort("occupancy_id")
    )
    occ = occ.hstack(
        uniforms(
            rng,
            occ.height,
            ["u_claim", "u_from", "u_pos", "u_lag", "u_on", "u_endpos", "u_type", "u_amt"],
        )
    )
    end = _lit(w.end)
    occ_end = pl.col("end").fill_null(end)
    pensioner = pl.col("lead_dob") <= pl.col("start").dt.offset_by("-66y")
    base = (
        pl.when(pl.col("tenure") == SOCIAL_RENT)
        .then(0.55)
        .when(pl.col("tenure") == PRIVATE_RENT)
        .then(0.26)
        .otherwise(pl.when(pensioner).then(0.1).otherwise(0.05))
    )
    p = base * (1.5 - 0.1 * (pl.col("decile").cast(pl.Float64) - 1))
    days = (occ_end - pl.col("start")).dt.total_days()
    claim_start = (
        pl.col("start")
        + pl.duration(
            days=pl.when(pl.col("u_from") < 0.6)
            .then(0)
            .otherwise((pl.col("u_pos") * days).floor().cast(pl.Int64))
        )
        + pl.duration(days=(pl.col("u_lag") * 30).floor().cast(pl.Int64))
    )
    claims = occ.filter(pl.col("u_claim") < p.clip(0, 0.9)).with_columns(claim_start=claim_start)
    rest = (pl.col("end").fill_null(end) - pl.col("claim_start")).dt.total_days()
    claims = (
        claims.with_columns(
            claim_end=pl.when(pl.col("u_on") < 0.5)
            .then(pl.col("end"))
            .otherwise(
                pl.col("claim_start")
                + pl.duration(days=(pl.col("u_endpos") * rest).floor().cast(pl.Int64))
            ),
            benefit_type=pl.when(pl.col("tenure") == OWNER)
            .then(pl.lit("CTR"))
            .when(pl.col("u_type") < 0.85)
            .then(pl.lit("HB+CTR"))
            .when(pl.col("u_type") < 0.95)
            .then(pl.lit("HB"))
            .otherwise(pl.lit("CTR")),
        )
        .with_columns(
            claim_end=pl.when(pl.col("claim_end") >= end).then(None).otherwise(pl.col("claim_end")),
        )
        .filter(
            (pl.col("claim_start") <= end)
            & (pl.col("claim_end").is_null() | (pl.col("claim_end") >= _lit(w.start)))
            & (pl.col("claim_end").is_null() | (pl.col("claim_end") >= pl.col("claim_start")))
        )
    )
    band_idx = (
        pl.col("band").str.replace_many(list("ABCDEFGH"), [str(i) for i in range(8)]).cast(pl.Int64)
    )
    hb = 55.0 + 22.0 * pl.col("bedrooms").cast(pl.Float64) + 45.0 * pl.col("u_amt")
    ctr = 10.0 + 3.5 * band_idx.cast(pl.Float64) + 8.0 * pl.col("u_amt")
    claims = (
        claims.with_columns(
            weekly_amount=pl.when(pl.col("benefit_type") == "HB+CTR")
            .then(hb + ctr)
            .when(pl.col("benefit_type") == "HB")
            .then(hb)
            .otherwise(ctr)
            .round(2)
        )
        .sort("claim_start", "occupancy_id")
        .with_row_index("claim_id")
    )
    return claims.select(
        "claim_id",
        "occupancy_id",
        "uprn",
        "claim_start",
        "claim_end",
        "benefit_type",
        "weekly_amount",
    )


def benefit_records(w: World, claims: pl.DataFrame) -> pl.DataFrame:
    """Claimant and partner rows of each claim."""
    end = _lit(w.end)
    rows = (
        claims.join(w.history.liabilities, on="occupancy_id", how="inner")
        .filter(
            (pl.col("start") <= pl.col("claim_start"))
            & (pl.col("end").fill_null(end) >= pl.col("claim_start"))
        )
        .sort("claim_id", "seq", "person_id")
        .with_columns(rank=pl.int_range(pl.len()).over("claim_id"))
        .filter((pl.col("rank") == 0) | ((pl.col("rank") == 1) & pl.col("is_partner")))
        .with_columns(
            person_type=pl.when(pl.col("rank") == 0)
            .then(pl.lit("CLAIMANT"))
            .otherwise(pl.lit("PARTNER"))
        )
    )
    rows = _prev_at(rows, w.residence, "claim_start").with_columns(
        record_date=pl.col("claim_start"), name_date=pl.col("claim_end").fill_null(end)
    )
    return _with_rows(rows, "claim_id", "rank")


def council_tax_records(w: World, claims: pl.DataFrame) -> pl.DataFrame:
    """One row per liable adult per liability period; each household's stay is an account."""
    h, end = w.history, _lit(w.end)
    liab = h.liabilities.join(
        h.occupancies.select("occupancy_id", "uprn", pl.col("start").alias("occ_start")),
        on="occupancy_id",
        how="inner",
        maintain_order="left",
    ).filter(pl.col("end").is_null() | (pl.col("end") >= _lit(w.start)))
    liab = _with_rows(liab, "start", "occupancy_id", "seq", "person_id").with_columns(
        check=pl.col("end").fill_null(end)
    )
    adults = (
        liab.select("_row", "uprn", "check")
        .join(
            w.residence.select("person_id", "uprn", "valid_from", "valid_to"),
            on="uprn",
            how="inner",
        )
        .filter(
            (pl.col("valid_from") <= pl.col("check"))
            & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= pl.col("check")))
        )
        .join(w.people.select("person_id", "dob"), on="person_id", how="inner")
        .filter(pl.col("dob") <= pl.col("check").dt.offset_by("-18y"))
        .group_by("_row")
        .agg(adults=pl.len())
    )
    ctr = (
        liab.select("_row", "occupancy_id", "start", "check")
        .join(
            claims.filter(pl.col("benefit_type").str.contains("CTR")),
            on="occupancy_id",
            how="inner",
        )
        .filter(
            (pl.col("claim_start") <= pl.col("check"))
            & (pl.col("claim_end").fill_null(end) >= pl.col("start"))
        )
        .select("_row")
        .unique()
        .with_columns(ctr=pl.lit(True))
    )
    liab = (
        liab.join(adults, on="_row", how="left", maintain_order="left")
        .join(ctr, on="_row", how="left", maintain_order="left")
        .with_columns(
            spd=pl.col("adults").fill_null(1) <= 1,
            ctr=pl.col("ctr").fill_null(False),
            prev_uprn=pl.lit(None, dtype=pl.Int64),
            record_date=pl.col("start"),
            name_date=pl.col("check"),
        )
    )
    return liab.drop("check", "adults")


def housing_records(w: World, rng: random.Random) -> pl.DataFrame:
    """Tenant and joint-tenant rows of social tenancies."""
    h, end = w.history, _lit(w.end)
    occ = h.occupancies.filter(pl.col("tenure") == SOCIAL_RENT).sort("occupancy_id")
    occ = occ.hstack(uniforms(rng, occ.height, ["u_tt"])).with_columns(
        tenure_type=pl.when(pl.col("u_tt") < 0.04)
        .then(pl.lit("TEMPORARY"))
        .when(pl.col("u_tt") < 0.13)
        .then(pl.lit("FLEXIBLE"))
        .when(pl.col("end").is_null() & (pl.col("start") > pl.lit(w.end).dt.offset_by("-1y")))
        .then(pl.lit("INTRODUCTORY"))
        .otherwise(pl.lit("SECURE"))
    )
    rows = (
        h.liabilities.join(
            occ.select(
                "occupancy_id", "uprn", "tenure_type", pl.col("start").alias("tenancy_start")
            ),
            on="occupancy_id",
            how="inner",
        )
        .filter(pl.col("end").is_null() | (pl.col("end") >= _lit(w.start)))
        .with_columns(
            prev_uprn=pl.lit(None, dtype=pl.Int64),
            record_date=pl.col("start"),
            name_date=pl.col("end").fill_null(end),
        )
    )
    return _with_rows(rows, "tenancy_start", "occupancy_id", "seq", "person_id")


def social_care_records(w: World, rng: random.Random) -> pl.DataFrame:
    """Adult social care clients: care-home residents plus people supported at home."""
    end, start = _lit(w.end), _lit(w.start)
    kinds = w.addresses.select("uprn", "kind")
    care = (
        w.residence.join(kinds, on="uprn", how="inner")
        .filter(
            (pl.col("kind") == CARE_HOME)
            & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= start))
        )
        .sort("person_id", "valid_from")
        .group_by("person_id", maintain_order=True)
        .last()
        .select(
            "person_id",
            pl.col("valid_from").alias("service_start"),
            pl.col("valid_to").alias("service_end"),
            "uprn",
            "prev_uprn",
        )
    )
    p = w.people.join(
        care.select("person_id", pl.lit(True).alias("in_care")),
        on="person_id",
        how="left",
        maintain_order="left",
    )
    p = p.filter(pl.col("in_care").is_null())
    p = p.with_columns(
        lo=pl.max_horizontal(start, pl.col("entry_date"), pl.col("dob").dt.offset_by("18y")),
        hi=pl.min_horizontal(end, pl.col("exit_date").fill_null(end)),
    ).filter(pl.col("lo") < pl.col("hi"))
    age = pl.col("age")
    prob = (
        pl.when(age < 65)
        .then(0.02)
        .when(age < 75)
        .then(0.07)
        .when(age < 85)
        .then(0.2)
        .otherwise(0.38)
        * pl.when(pl.col("dementia")).then(2.5).otherwise(1.0)
        * (1.3 - 0.055 * (pl.col("decile").cast(pl.Float64) - 1))
    )
    p = p.sort("person_id").hstack(uniforms(rng, p.height, ["u_client", "u_start", "u_len"]))
    span = (pl.col("hi") - pl.col("lo")).dt.total_days()
    community = (
        p.filter(pl.col("u_client") < prob.clip(0, 0.85))
        .with_columns(
            service_start=pl.col("lo")
            + pl.duration(days=(pl.col("u_start") * span).floor().cast(pl.Int64)),
        )
        .with_columns(
            service_end=pl.col("service_start")
            + pl.duration(days=(-(1 - pl.col("u_len")).log() * 700).floor().cast(pl.Int64)),
        )
        .with_columns(
            service_end=pl.when(pl.col("service_end") < pl.col("hi"))
            .then(pl.col("service_end"))
            .when(pl.col("exit_date").is_not_null())
            .then(pl.col("exit_date"))
            .otherwise(None),
        )
    )
    community = _home_at(community.select("person_id", "service_start", "service_end"), w.residence)
    rows = pl.concat(
        [
            care.with_columns(setting=pl.lit("care")),
            community.with_columns(setting=pl.lit("Community")),
        ],
        how="diagonal_relaxed",
    ).join(w.people.select("person_id", "age", "dementia"), on="person_id", how="left")
    rows = _with_rows(rows, "service_start", "person_id")
    rows = rows.hstack(uniforms(rng, rows.height, ["u_setting", "u_reason"]))
    ur = pl.col("u_reason")
    elderly_reason = (
        pl.when(pl.col("dementia") & (ur < 0.8))
        .then(pl.lit("Memory and Cognition"))
        .when(ur < 0.72)
        .then(pl.lit("Physical Support"))
        .when(ur < 0.84)
        .then(pl.lit("Social Support"))
        .when(ur < 0.9)
        .then(pl.lit("Mental Health Support"))
        .otherwise(pl.lit("Memory and Cognition"))
    )
    young_reason = (
        pl.when(ur < 0.4)
        .then(pl.lit("Learning Disability Support"))
        .when(ur < 0.75)
        .then(pl.lit("Mental Health Support"))
        .when(ur < 0.95)
        .then(pl.lit("Physical Support"))
        .otherwise(pl.lit("Social Support"))
    )
    return rows.with_columns(
        setting=pl.when(pl.col("setting") == "care")
        .then(
            pl.when(pl.col("u_setting") < pl.when(pl.col("dementia")).then(0.5).otherwise(0.3))
            .then(pl.lit("Nursing"))
            .otherwise(pl.lit("Residential"))
        )
        .otherwise(pl.col("setting")),
        reason=pl.when(pl.col("age") >= 65).then(elderly_reason).otherwise(young_reason),
        record_date=pl.col("service_start"),
        name_date=pl.col("service_end").fill_null(end),
    ).drop("u_setting", "u_reason")


def _home_at(frame: pl.DataFrame, residence: pl.DataFrame) -> pl.DataFrame:
    left = frame.with_row_index("_i").sort("service_start")
    right = residence.select(
        "person_id", pl.col("valid_from").alias("_vf"), "uprn", "prev_uprn"
    ).sort("_vf")
    out = left.join_asof(
        right,
        left_on="service_start",
        right_on="_vf",
        by="person_id",
        strategy="backward",
        check_sortedness=False,
    )
    return out.sort("_i").drop("_i", "_vf")


def gp_records(w: World, rng: random.Random) -> pl.DataFrame:
    """One GP registration per person, holding the latest address the practice knows."""
    end, start = _lit(w.end), _lit(w.start)
    p = w.people.sort("person_id")
    p = p.hstack(uniforms(rng, p.height, ["u_reg", "u_dereg", "u_ghost"]))
    reg = (
        pl.when(pl.col("entry_kind") == "born")
        .then(pl.col("dob") + pl.duration(days=7 + (pl.col("u_reg") * 35).floor().cast(pl.Int64)))
        .when(pl.col("entry_kind") == "in_migrant")
        .then(
            pl.col("entry_date") + pl.duration(days=(pl.col("u_reg") * 120).floor().cast(pl.Int64))
        )
        .otherwise(
            pl.max_horizontal(
                pl.col("dob") + pl.duration(days=14),
                start - pl.duration(days=(pl.col("u_reg") * 25 * 365.25).floor().cast(pl.Int64)),
            )
        )
    )
    dereg = (
        pl.when(pl.col("exit_kind") == "died")
        .then(pl.col("exit_date"))
        .when((pl.col("exit_kind") == "left_area") & (pl.col("u_ghost") < 0.85))
        .then(
            pl.col("exit_date")
            + pl.duration(days=30 + (pl.col("u_dereg") * 335).floor().cast(pl.Int64))
        )
        .otherwise(None)
    )
    p = (
        p.with_columns(reg=reg, dereg=dereg)
        .with_columns(dereg=pl.when(pl.col("dereg") > end).then(None).otherwise(pl.col("dereg")))
        .filter(pl.col("reg") <= pl.col("exit_date").fill_null(end))
    )
    last = (
        w.residence.group_by("person_id")
        .agg(pl.all().sort_by("valid_from").last())
        .select("person_id", "uprn", "prev_uprn")
    )
    rows = p.join(last, on="person_id", how="inner").with_columns(
        date_of_death=pl.when(pl.col("exit_kind") == "died").then(pl.col("exit_date")),
        record_date=pl.col("reg"),
        name_date=pl.coalesce(pl.col("dereg"), pl.col("exit_date"), end),
    )
    return _with_rows(rows.drop("u_reg", "u_dereg", "u_ghost"), "reg", "person_id")


def hospital_segments(w: World) -> pl.DataFrame:
    """Residence spells with what drives hospital use: age, conditions, deprivation, crowding."""
    a = w.addresses.select(
        "uprn",
        "decile",
        "bedrooms",
        kind=pl.when(pl.col("kind") == CARE_HOME)
        .then(pl.lit("care_home"))
        .when(pl.col("kind") == HOSTEL)
        .then(pl.lit("hostel"))
        .otherwise(pl.lit("home")),
    )
    return (
        w.residence.join(a, on="uprn", how="left", maintain_order="left")
        .join(
            w.people.select(
                "person_id",
                "dob",
                "asthma",
                "copd",
                "diabetes",
                "chd",
                "hypertension",
                "depression",
                "dementia",
            ),
            on="person_id",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            crowded=(pl.col("kind") == "home") & (pl.col("household_size") > pl.col("bedrooms") + 1)
        )
        .sort("person_id", "valid_from")
    )


def hospital_records(w: World, activity: pl.DataFrame) -> pl.DataFrame:
    """SUS-style activity rows: the address is the one held on the day of the activity."""
    rows = _prev_at(activity, w.residence, "activity_date").with_columns(
        record_date=pl.col("activity_date"), name_date=pl.col("activity_date")
    )
    return _with_rows(rows, "activity_date", "person_id", "activity_type")
