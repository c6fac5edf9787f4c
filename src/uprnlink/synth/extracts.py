"""Each system's own export layout: column names, date formats, ids and deliberately bad rows."""

from __future__ import annotations

import random
from dataclasses import dataclass

import polars as pl

from uprnlink.synth.corruption import ERROR_FLAGS, errors_expr
from uprnlink.synth.draws import uniforms
from uprnlink.synth.rates import SourceErrorRates

MALFORMED_KINDS = ("blank_id", "bad_dob", "spreadsheet_uprn", "long_uprn")
_IMPOSSIBLE_DAYS = ((31, 2), (30, 2), (31, 4), (31, 6), (31, 9), (31, 11))
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
META = ("_row", "duplicate", "_person_id", "_true_uprn", "record_date", *ERROR_FLAGS)


@dataclass(frozen=True)
class ExtractSpec:
    """Where one extract keeps its record id, date of birth and UPRN, and how it writes them."""

    source: str
    file: str
    id_col: str
    id_prefix: str
    id_start: int
    id_digits: int
    dob_col: str
    dob_format: str
    uprn_col: str
    upper_names: bool
    separator: str = ","


SPECS: dict[str, ExtractSpec] = {
    s.source: s
    for s in (
        ExtractSpec(
            "council_tax",
            "council_tax.csv",
            "PARTY_REF",
            "P",
            10_000_001,
            8,
            "DATE_OF_BIRTH",
            "%d/%m/%Y",
            "UPRN",
            True,
        ),
        ExtractSpec(
            "housing_tenancies",
            "housing_tenancies.txt",
            "person_ref",
            "HR",
            2_000_001,
            7,
            "dob",
            "%Y-%m-%d",
            "uprn",
            False,
            "|",
        ),
        ExtractSpec(
            "benefits_claims",
            "benefits_claims.parquet",
            "PersonRef",
            "BP",
            40_000_001,
            8,
            "DoB",
            "%d-%b-%Y",
            "UPRN",
            False,
        ),
        ExtractSpec(
            "adult_social_care",
            "adult_social_care.csv",
            "PersonID",
            "",
            1_000_001,
            7,
            "DOB",
            "%d/%m/%Y",
            "UPRN",
            False,
        ),
        ExtractSpec(
            "gp_registrations",
            "gp_registrations.csv",
            "PATIENT_ID",
            "",
            20_000_001,
            8,
            "DATE_OF_BIRTH",
            "%Y%m%d",
            "UPRN",
            True,
        ),
        ExtractSpec(
            "hospital_activity",
            "hospital_activity.csv",
            "ACTIVITY_ID",
            "",
            500_000_000_001,
            12,
            "PERSON_BIRTH_DATE",
            "%Y-%m-%d",
            "UPRN",
            True,
        ),
    )
}


def address_lines(addresses: pl.DataFrame) -> pl.DataFrame:
    """Per UPRN: the three council tax lines (upper case) and a one-line address (title case)."""

    def blank_null(c: str) -> pl.Expr:
        return pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c))

    numbered = pl.concat_str(
        [blank_null("number"), pl.col("street")], separator=" ", ignore_nulls=True
    )
    unit = pl.concat_str(
        [blank_null("sub_building"), blank_null("building_name")], separator=" ", ignore_nulls=True
    )
    has_unit = (pl.col("sub_building") != "") | (pl.col("building_name") != "")
    full = pl.concat_str(
        [blank_null("sub_building"), blank_null("building_name"), numbered],
        separator=", ",
        ignore_nulls=True,
    )
    return addresses.select(
        "uprn",
        ct1=pl.when(has_unit).then(unit).otherwise(numbered).str.to_uppercase(),
        ct2=pl.when(has_unit).then(numbered).otherwise(pl.col("locality")).str.to_uppercase(),
        ct3=pl.when(has_unit).then(pl.col("locality")).otherwise(pl.col("town")).str.to_uppercase(),
        line=full,
        band=pl.col("band"),
        bedrooms=pl.col("bedrooms"),
    )


def _date(col: str, fmt: str) -> pl.Expr:
    return pl.col(col).dt.strftime(fmt)


def _uprn_str(col: str = "out_uprn") -> pl.Expr:
    return pl.col(col).cast(pl.Utf8)


def _with_lines(frame: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    return frame.join(
        lines.rename({"uprn": "addr_uprn"}), on="addr_uprn", how="left", maintain_order="left"
    )


def _keep_meta(frame: pl.DataFrame, columns: list[pl.Expr]) -> pl.DataFrame:
    return frame.select(
        *columns,
        pl.col("person_id").alias("_person_id"),
        pl.col("uprn").alias("_true_uprn"),
        "_row",
        "duplicate",
        "record_date",
        *ERROR_FLAGS,
    )


def format_council_tax(
    f: pl.DataFrame, lines: pl.DataFrame, rates: SourceErrorRates, rng: random.Random
) -> pl.DataFrame:
    """council_tax.csv: dd/mm/yyyy dates, upper case, one row per liable adult per liability."""
    f = _with_lines(f, lines).hstack(uniforms(rng, f.height, ["u_title", "u_end"]))
    ended = max(float(f.select(pl.col("end").is_not_null().mean()).item() or 0.0), 0.05)
    f = f.with_columns(
        _acct=pl.struct("occ_start", "occupancy_id").rank("dense").cast(pl.Int64),
        e_stale_address=(pl.col("u_end") < min(0.5, rates.stale_address / ended))
        & pl.col("end").is_not_null(),
    )
    n_acct = int(f.select(pl.col("_acct").max().fill_null(0)).item())
    dup_rank = pl.col("duplicate").cast(pl.Int64).cum_sum()
    account = pl.when(pl.col("duplicate")).then(n_acct + dup_rank).otherwise(pl.col("_acct"))
    age = (pl.col("name_date") - pl.col("dob")).dt.total_days() / 365.25
    title = (
        pl.when(pl.col("u_title") < 0.07)
        .then(pl.lit(""))
        .when(pl.col("u_title") < 0.08)
        .then(pl.lit("DR"))
        .when(pl.col("sex") == "M")
        .then(pl.lit("MR"))
        .when(pl.col("previous_surname").is_not_null())
        .then(pl.lit("MRS"))
        .when(age < 30)
        .then(pl.lit("MISS"))
        .otherwise(pl.lit("MS"))
    )
    return _keep_meta(
        f,
        [
            pl.lit("").alias("PARTY_REF"),
            (50_000_000 + account * 3).cast(pl.Utf8).alias("ACCOUNT_REF"),
            title.alias("TITLE"),
            pl.col("out_forename").alias("FORENAMES"),
            pl.col("out_surname").alias("SURNAME"),
            _date("out_dob", "%d/%m/%Y").alias("DATE_OF_BIRTH"),
            pl.col("ct1").alias("ADDRESS_1"),
            pl.col("ct2").alias("ADDRESS_2"),
            pl.col("ct3").alias("ADDRESS_3"),
            pl.col("out_postcode").alias("POST_CODE"),
            _uprn_str().alias("UPRN"),
            pl.col("band").alias("PROPERTY_BAND"),
            _date("start", "%d/%m/%Y").alias("LIABILITY_START"),
            pl.when(pl.col("e_stale_address"))
            .then(None)
            .otherwise(_date("end", "%d/%m/%Y"))
            .alias("LIABILITY_END"),
            pl.when(pl.col("spd"))
            .then(pl.lit("Y"))
            .otherwise(pl.lit("N"))
            .alias("SINGLE_PERSON_DISCOUNT"),
            pl.when(pl.col("ctr")).then(pl.lit("Y")).otherwise(pl.lit("N")).alias("CTR_FLAG"),
        ],
    )


def format_housing(f: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """housing_tenancies.txt: pipe-delimited, ISO dates, title-case names."""
    f = _with_lines(f, lines)
    tenancy = pl.struct("tenancy_start", "occupancy_id").rank("dense").cast(pl.Int64)
    prop = pl.col("uprn").rank("dense").cast(pl.Int64)
    return _keep_meta(
        f,
        [
            ("TEN" + (100_000 + tenancy).cast(pl.Utf8)).alias("tenancy_ref"),
            pl.col("seq").cast(pl.Utf8).alias("tenant_seq"),
            pl.lit("").alias("person_ref"),
            pl.col("out_forename").alias("forename"),
            pl.col("out_surname").alias("surname"),
            _date("out_dob", "%Y-%m-%d").alias("dob"),
            ("PR" + (300_000 + prop).cast(pl.Utf8)).alias("prop_ref"),
            _uprn_str().alias("uprn"),
            pl.col("line").alias("address_line1"),
            pl.col("out_postcode").alias("postcode"),
            pl.col("tenure_type"),
            pl.col("bedrooms").cast(pl.Utf8),
            _date("start", "%Y-%m-%d").alias("start_date"),
            _date("end", "%Y-%m-%d").alias("end_date"),
        ],
    )


def format_benefits(f: pl.DataFrame) -> pl.DataFrame:
    """benefits_claims.parquet: native dates except DoB (03-Mar-1985), nullable Int64 UPRN."""
    return _keep_meta(
        f,
        [
            ("HB" + (3_000_000 + pl.col("claim_id").cast(pl.Int64)).cast(pl.Utf8)).alias(
                "ClaimRef"
            ),
            pl.lit("").alias("PersonRef"),
            pl.col("person_type").alias("PersonType"),
            pl.col("out_forename").alias("FirstName"),
            pl.col("out_surname").alias("LastName"),
            _date("out_dob", "%d-%b-%Y").alias("DoB"),
            pl.col("out_uprn").cast(pl.Int64).alias("UPRN"),
            pl.col("out_postcode").alias("Postcode"),
            pl.col("benefit_type").alias("BenefitType"),
            pl.col("claim_start").alias("AwardStart"),
            pl.col("claim_end").alias("AwardEnd"),
            pl.col("weekly_amount").cast(pl.Float64).alias("WeeklyAmount"),
        ],
    )


def format_social_care(f: pl.DataFrame, lines: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """adult_social_care.csv: dd/mm/yyyy, NHS numbers often written 943 476 5919."""
    f = _with_lines(f, lines).hstack(uniforms(rng, f.height, ["u_nhsfmt"]))
    nhs = pl.col("out_nhs")
    spaced = pl.concat_str(
        [nhs.str.slice(0, 3), nhs.str.slice(3, 3), nhs.str.slice(6, 4)], separator=" "
    )
    return _keep_meta(
        f,
        [
            pl.lit("").alias("PersonID"),
            pl.col("out_forename").alias("Forename"),
            pl.col("out_surname").alias("Surname"),
            _date("out_dob", "%d/%m/%Y").alias("DOB"),
            pl.col("out_sex")
            .replace_strict({"M": "Male", "F": "Female", "U": "Not Known"})
            .alias("Gender"),
            pl.when(pl.col("u_nhsfmt") < 0.6).then(spaced).otherwise(nhs).alias("NHS_No"),
            pl.col("line").alias("AddressLine1"),
            pl.col("out_postcode").alias("Postcode"),
            _uprn_str().alias("UPRN"),
            pl.col("setting").alias("SupportSetting"),
            _date("service_start", "%d/%m/%Y").alias("ServiceStart"),
            _date("service_end", "%d/%m/%Y").alias("ServiceEnd"),
            pl.col("reason").alias("PrimarySupportReason"),
        ],
    )


def format_gp(f: pl.DataFrame, lines: pl.DataFrame, end_date: pl.Expr) -> pl.DataFrame:
    """gp_registrations.csv: YYYYMMDD dates, upper case, long-term condition flags 0/1."""
    f = _with_lines(f, lines)
    reg = (
        pl.when(pl.col("duplicate"))
        .then(pl.min_horizontal(pl.col("reg") + pl.duration(days=180), end_date))
        .otherwise(pl.col("reg"))
    )
    flags = [
        pl.col(c).cast(pl.Int8).cast(pl.Utf8).alias(f"LTC_{c.upper()}")
        for c in ("asthma", "copd", "diabetes", "chd", "hypertension", "depression", "dementia")
    ]
    return _keep_meta(
        f,
        [
            pl.lit("").alias("PATIENT_ID"),
            pl.col("out_nhs").alias("NHS_NUMBER"),
            pl.col("out_forename").alias("FORENAME"),
            pl.col("out_surname").alias("SURNAME"),
            _date("out_dob", "%Y%m%d").alias("DATE_OF_BIRTH"),
            pl.col("out_sex").alias("SEX"),
            pl.col("line").str.to_uppercase().alias("ADDRESS_LINE_1"),
            pl.col("out_postcode").alias("POSTCODE"),
            _uprn_str().alias("UPRN"),
            reg.dt.strftime("%Y%m%d").alias("REGISTRATION_DATE"),
            _date("dereg", "%Y%m%d").alias("DEREGISTRATION_DATE"),
            _date("date_of_death", "%Y%m%d").alias("DATE_OF_DEATH"),
            *flags,
        ],
    )


def format_hospital(f: pl.DataFrame) -> pl.DataFrame:
    """hospital_activity.csv: SUS-like, gender coded 1/2/9, ISO dates."""
    return _keep_meta(
        f,
        [
            pl.lit("").alias("ACTIVITY_ID"),
            pl.col("out_nhs").alias("NHS_NUMBER"),
            pl.col("out_forename").alias("PATIENT_FORENAME"),
            pl.col("out_surname").alias("PATIENT_SURNAME"),
            _date("out_dob", "%Y-%m-%d").alias("PERSON_BIRTH_DATE"),
            pl.col("out_sex")
            .replace_strict({"M": "1", "F": "2", "U": "9"})
            .alias("PERSON_STATED_GENDER_CODE"),
            pl.col("out_postcode").alias("POSTCODE_USUAL_ADDRESS"),
            _uprn_str().alias("UPRN"),
            pl.col("activity_type").alias("ACTIVITY_TYPE"),
            _date("activity_date", "%Y-%m-%d").alias("ACTIVITY_DATE"),
            _date("discharge_date", "%Y-%m-%d").alias("DISCHARGE_DATE"),
        ],
    )


def _bad_dob(fmt: str, r: random.Random) -> str:
    if r.random() < 0.4:
        return r.choice(("UNKNOWN", "00/00/0000", "N/K")) if "/" in fmt else "UNKNOWN"
    day, month = r.choice(_IMPOSSIBLE_DAYS)
    year = r.randint(1935, 1995)
    return (
        fmt.replace("%d", f"{day:02d}")
        .replace("%m", f"{month:02d}")
        .replace("%b", _MONTHS[month - 1])
        .replace("%Y", str(year))
    )


def finalise(
    frame: pl.DataFrame, spec: ExtractSpec, rates: SourceErrorRates, rng: random.Random
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give rows their ids in date order, damage a few beyond repair, and split off the truth."""
    r = random.Random(rng.getrandbits(64))
    f = frame.sort("record_date", "_row", "duplicate", maintain_order=True)
    n = f.height
    f = f.with_columns(
        (
            pl.lit(spec.id_prefix)
            + (pl.int_range(pl.len(), dtype=pl.Int64) + spec.id_start)
            .cast(pl.Utf8)
            .str.zfill(spec.id_digits)
        ).alias(spec.id_col)
    )
    k = min(n, max(2, round(rates.malformed * n))) if n else 0
    picks = sorted(r.sample(range(n), k)) if k else []
    kind = {i: MALFORMED_KINDS[j % len(MALFORMED_KINDS)] for j, i in enumerate(picks)}
    bad_ids: list[str] = []
    bad_dobs: list[str] = []
    bad_uprns: list[object] = []
    id_at, dob_at, uprn_at = [], [], []
    numeric_uprn = f.schema[spec.uprn_col] != pl.Utf8
    true_uprn = f["_true_uprn"].gather(picks).to_list() if picks else []
    for i, base in zip(picks, true_uprn, strict=True):
        if kind[i] == "blank_id":
            id_at.append(i)
            bad_ids.append("")
        elif kind[i] == "bad_dob":
            dob_at.append(i)
            bad_dobs.append(_bad_dob(spec.dob_format, r))
        else:
            base = base or 100_000_000_000
            uprn_at.append(i)
            if kind[i] == "spreadsheet_uprn" and not numeric_uprn:
                bad_uprns.append(f"{base:.5E}")
            else:
                long = int("9" + str(base).zfill(12))
                bad_uprns.append(long if numeric_uprn else str(long))
    f = f.with_columns(
        f[spec.id_col].scatter(id_at, pl.Series(bad_ids, dtype=pl.Utf8))
        if id_at
        else f[spec.id_col],
        f[spec.dob_col].scatter(dob_at, pl.Series(bad_dobs, dtype=pl.Utf8))
        if dob_at
        else f[spec.dob_col],
        f[spec.uprn_col].scatter(uprn_at, pl.Series(bad_uprns, dtype=f.schema[spec.uprn_col]))
        if uprn_at
        else f[spec.uprn_col],
        pl.repeat("", n, dtype=pl.Utf8, eager=True)
        .scatter(picks, pl.Series([kind[i] for i in picks], dtype=pl.Utf8))
        .alias("malformed_kind")
        if picks
        else pl.repeat("", n, dtype=pl.Utf8, eager=True).alias("malformed_kind"),
    )
    truth = f.select(
        pl.lit(spec.source).alias("source"),
        pl.col(spec.id_col).alias("record_id"),
        pl.int_range(1, n + 1, dtype=pl.Int64).alias("row_number"),
        pl.col("_person_id").cast(pl.Int64).alias("person_id"),
        (pl.col("malformed_kind") != "").alias("malformed"),
        pl.when(pl.col("malformed_kind") != "")
        .then(pl.col("malformed_kind"))
        .alias("malformed_kind"),
        pl.col("duplicate"),
        errors_expr().alias("errors"),
        pl.col("_true_uprn").cast(pl.Int64).alias("true_uprn"),
    )
    out = f.drop(*META, "malformed_kind")
    return out, truth
