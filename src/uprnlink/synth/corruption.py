"""Errors and gaps injected into true source records; each row keeps flags of what was done.

Whole-column choices are vectorised; the few rows that get a typo, a nickname, a wrong
digit or a damaged postcode are rewritten one by one from a child generator, in row order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import polars as pl

from uprnlink.synth.draws import uniforms
from uprnlink.synth.names import read_variants
from uprnlink.synth.rates import SourceErrorRates

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD_ROWS):
    for _i, _c in enumerate(_row):
        near = [_row[j] for j in (_i - 1, _i + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < 3:
                near += [
                    _KEYBOARD_ROWS[_other][j]
                    for j in (_i, _i + 1)
                    if j < len(_KEYBOARD_ROWS[_other])
                ]
        _NEIGHBOURS[_c] = "".join(near)
_PC_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_DRAWS = (
    "u_fn_typo",
    "u_sn_typo",
    "u_variant",
    "u_middle",
    "u_stale_sn",
    "u_case",
    "u_ws",
    "u_dob_miss",
    "u_dob_swap",
    "u_dob_digit",
    "u_sex",
    "u_nhs_miss",
    "u_nhs_bad",
    "u_stale_addr",
    "u_uprn_miss",
    "u_uprn_wrong",
    "u_pc",
)
_DUPLICATE_BOOST = 5.0

ERROR_FLAGS = (
    "e_forename_typo",
    "e_surname_typo",
    "e_forename_variant",
    "e_middle_name_in_forename",
    "e_stale_surname",
    "e_case_noise",
    "e_whitespace_noise",
    "e_dob_missing",
    "e_dob_day_month_swap",
    "e_dob_digit_error",
    "e_sex_unknown",
    "e_nhs_number_missing",
    "e_nhs_number_invalid",
    "e_stale_address",
    "e_uprn_missing",
    "e_uprn_wrong",
    "e_postcode_error",
)


def typo(name: str, r: random.Random) -> str:
    """One keyboard slip: a letter swapped for a neighbouring key, dropped, transposed or doubled."""
    if len(name) < 2:
        return name + name
    i = r.randrange(1, len(name))
    op = r.random()
    c = name[i]
    if op < 0.35 and c.lower() in _NEIGHBOURS:
        sub = r.choice(_NEIGHBOURS[c.lower()])
        return name[:i] + (sub.upper() if c.isupper() else sub) + name[i + 1 :]
    if op < 0.6 and len(name) > 3:
        return name[:i] + name[i + 1 :]
    if op < 0.85 and name[i - 1] != c:
        return name[: i - 1] + c + name[i - 1] + name[i + 1 :]
    return name[:i] + c + name[i:]


def damage_postcode(pc: str, r: random.Random) -> str | None:
    """A postcode blanked, unspaced, with inward letters swapped or a character wrong."""
    op = r.random()
    if op < 0.25:
        return None
    if op < 0.45:
        return pc.replace(" ", "")
    out, inward = pc.split(" ")
    if op < 0.7 and inward[1] != inward[2]:
        return f"{out} {inward[0]}{inward[2]}{inward[1]}"
    if op < 0.85:
        return f"{out} {(int(inward[0]) + r.randint(1, 9)) % 10}{inward[1:]}"
    return f"{out} {inward[:2]}{r.choice(_PC_LETTERS.replace(inward[2], ''))}"


def dob_digit_slip(d: date, r: random.Random) -> date:
    """The date with one digit of day, month or year wrong, still a real date."""
    for _ in range(20):
        part = r.random()
        try:
            if part < 0.45:
                day = (d.day // 10) * 10 + r.choice([x for x in range(10) if x != d.day % 10])
                return d.replace(day=day)
            if part < 0.6 and d.month < 10:
                return d.replace(month=r.choice([m for m in range(1, 10) if m != d.month]))
            return d.replace(
                year=(d.year // 10) * 10 + r.choice([x for x in range(10) if x != d.year % 10])
            )
        except ValueError:
            continue
    return d + timedelta(days=1)


def transpose_nhs(nhs: str, r: random.Random) -> str:
    """Two adjacent unequal digits among the first nine swapped: the Modulus 11 check then fails."""
    spots = [i for i in range(8) if nhs[i] != nhs[i + 1]]
    i = r.choice(spots)
    return nhs[:i] + nhs[i + 1] + nhs[i] + nhs[i + 2 :]


def _rewrite(s: pl.Series, mask: pl.Series, fn: Callable[[Any], Any]) -> pl.Series:
    """s with the values where mask is true replaced by fn(value), in row order."""
    idx = mask.fill_null(False).arg_true()
    if idx.len() == 0:
        return s
    new = [fn(v) for v in s.gather(idx).to_list()]
    return s.scatter(idx, pl.Series(new, dtype=s.dtype))


def corrupt(
    frame: pl.DataFrame,
    rates: SourceErrorRates,
    rng: random.Random,
    addresses: pl.DataFrame,
    *,
    upper_names: bool,
    latest: date,
) -> pl.DataFrame:
    """Apply one source's coverage, duplicates and errors to its true records.

    `frame` has a stable row key `_row` and person_id, forename, middle_name, surname,
    previous_surname, surname_changed, name_date, sex, dob, nhs_number, uprn, prev_uprn.
    Adds duplicate, out_forename, out_surname, out_dob, out_sex, out_nhs, addr_uprn, out_uprn,
    out_postcode and the e_* flags of ERROR_FLAGS; other columns pass through. A slipped date
    of birth never lands after `latest` (the reference date), so it stays a plausible value.
    """
    r = random.Random(rng.getrandbits(64))
    f = frame.sort("_row").hstack(uniforms(rng, frame.height, ["u_cov", "u_dup"]))
    f = f.filter(pl.col("u_cov") < rates.coverage)
    dups = f.filter(pl.col("u_dup") < rates.duplicate).with_columns(duplicate=pl.lit(True))
    f = (
        pl.concat([f.with_columns(duplicate=pl.lit(False)), dups])
        .sort("_row", "duplicate")
        .drop("u_cov", "u_dup")
    )
    f = f.hstack(uniforms(rng, f.height, _DRAWS))
    boost = pl.when(pl.col("duplicate")).then(_DUPLICATE_BOOST).otherwise(1.0)

    def hit(u: str, rate: float, boosted: bool = False) -> pl.Expr:
        return pl.col(u) < (rate * boost if boosted else pl.lit(rate))

    def share(mask: pl.Expr) -> float:
        """Share of rows where an error is possible, so rates hold over all rows."""
        return max(float(f.select(mask.fill_null(False).mean()).item() or 0.0), 0.05)

    variants = read_variants()
    has_variant = pl.col("forename").str.to_uppercase().is_in(list(variants))
    has_middle = pl.col("middle_name").is_not_null()
    swappable = (pl.col("dob").dt.day() <= 12) & (
        pl.col("dob").dt.day() != pl.col("dob").dt.month()
    )
    moved = pl.col("prev_uprn").is_not_null()
    variant_rate = min(1.0, rates.forename_variant / share(has_variant))
    middle_rate = min(1.0, rates.middle_name_in_forename / share(has_middle))
    swap_rate = min(1.0, rates.dob_day_month_swap / share(swappable))
    stale_rate = min(0.5, rates.stale_address / share(moved))
    f = (
        f.with_columns(
            e_forename_variant=hit("u_variant", variant_rate, True) & has_variant,
            e_middle_name_in_forename=hit("u_middle", middle_rate) & has_middle,
            e_forename_typo=hit("u_fn_typo", rates.forename_typo, True),
            e_surname_typo=hit("u_sn_typo", rates.surname_typo, True),
            e_stale_surname=pl.col("previous_surname").is_not_null()
            & (pl.col("surname_changed") <= pl.col("name_date"))
            & hit("u_stale_sn", rates.stale_surname),
            e_case_noise=hit("u_case", rates.case_noise),
            e_whitespace_noise=hit("u_ws", rates.whitespace_noise),
            e_dob_missing=hit("u_dob_miss", rates.dob_missing),
            e_sex_unknown=hit("u_sex", rates.sex_unknown),
            e_nhs_number_missing=(
                hit("u_nhs_miss", rates.nhs_number_missing, True) | pl.col("nhs_number").is_null()
            )
            & pl.lit(rates.nhs_number_missing < 1.0),
        )
        .with_columns(
            e_dob_day_month_swap=~pl.col("e_dob_missing")
            & hit("u_dob_swap", swap_rate)
            & swappable,
            e_nhs_number_invalid=~pl.col("e_nhs_number_missing")
            & hit("u_nhs_bad", rates.nhs_number_invalid),
        )
        .with_columns(
            e_dob_digit_error=~pl.col("e_dob_missing")
            & ~pl.col("e_dob_day_month_swap")
            & hit("u_dob_digit", rates.dob_digit_error),
        )
    )

    # names
    forename = _rewrite(
        f["forename"], f["e_forename_variant"], lambda v: r.choice(variants[v.upper()])
    )
    f = f.with_columns(out_forename=forename).with_columns(
        out_forename=pl.when(pl.col("e_middle_name_in_forename"))
        .then(pl.concat_str([pl.col("out_forename"), pl.col("middle_name")], separator=" "))
        .otherwise(pl.col("out_forename")),
        out_surname=pl.when(
            pl.col("e_stale_surname")
            | (
                pl.col("previous_surname").is_not_null()
                & (pl.col("surname_changed") > pl.col("name_date"))
            )
        )
        .then(pl.col("previous_surname"))
        .otherwise(pl.col("surname")),
    )
    f = f.with_columns(
        out_forename=_rewrite(f["out_forename"], f["e_forename_typo"], lambda v: typo(v, r)),
        out_surname=_rewrite(f["out_surname"], f["e_surname_typo"], lambda v: typo(v, r)),
    )
    first_case = pl.col("u_case") < rates.case_noise / 2
    for col in ("out_forename", "out_surname"):
        plain = pl.col(col).str.to_uppercase() if upper_names else pl.col(col)
        noisy = (
            pl.when(first_case)
            .then(pl.col(col).str.to_lowercase())
            .otherwise(pl.col(col) if upper_names else pl.col(col).str.to_uppercase())
        )
        f = f.with_columns(pl.when(pl.col("e_case_noise")).then(noisy).otherwise(plain).alias(col))
    ws_kind = (pl.col("u_ws") / max(rates.whitespace_noise, 1e-12) * 3).floor()
    f = f.with_columns(
        out_surname=pl.when(pl.col("e_whitespace_noise") & (ws_kind == 0))
        .then(pl.col("out_surname") + " ")
        .when(pl.col("e_whitespace_noise") & (ws_kind == 1))
        .then(" " + pl.col("out_surname"))
        .otherwise(pl.col("out_surname")),
        out_forename=pl.when(pl.col("e_whitespace_noise") & (ws_kind >= 2))
        .then(pl.col("out_forename").str.replace(" ", "  ").str.replace(r"^(\S+)$", "$1 "))
        .otherwise(pl.col("out_forename")),
    )

    # date of birth, sex, NHS number
    dob = pl.col("dob")
    f = f.with_columns(
        out_dob=pl.when(pl.col("e_dob_missing"))
        .then(None)
        .when(pl.col("e_dob_day_month_swap"))
        .then(pl.date(dob.dt.year(), dob.dt.day(), dob.dt.month()))
        .otherwise(dob),
        out_sex=pl.when(pl.col("e_sex_unknown")).then(pl.lit("U")).otherwise(pl.col("sex")),
        out_nhs=pl.when(pl.col("e_nhs_number_missing") | pl.lit(rates.nhs_number_missing >= 1.0))
        .then(None)
        .otherwise(pl.col("nhs_number")),
    )
    f = f.with_columns(
        out_dob=_rewrite(f["out_dob"], f["e_dob_digit_error"], lambda v: dob_digit_slip(v, r)),
        out_nhs=_rewrite(f["out_nhs"], f["e_nhs_number_invalid"], lambda v: transpose_nhs(v, r)),
    )
    future = pl.col("out_dob") > pl.lit(latest)
    f = f.with_columns(
        e_dob_day_month_swap=pl.col("e_dob_day_month_swap") & ~future.fill_null(False),
        e_dob_digit_error=pl.col("e_dob_digit_error") & ~future.fill_null(False),
        out_dob=pl.when(future).then(pl.col("dob")).otherwise(pl.col("out_dob")),
    )

    # address
    f = f.with_columns(
        e_stale_address=hit("u_stale_addr", stale_rate) & moved,
    ).with_columns(
        addr_uprn=pl.when(pl.col("e_stale_address"))
        .then(pl.col("prev_uprn"))
        .otherwise(pl.col("uprn")),
    )
    f = (
        f.join(
            addresses.select(
                pl.col("uprn").alias("addr_uprn"),
                pl.col("postcode").alias("_pc"),
                pl.col("neighbour_uprn").alias("_nb"),
            ),
            on="addr_uprn",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            e_uprn_missing=hit("u_uprn_miss", rates.uprn_missing),
        )
        .with_columns(
            e_uprn_wrong=~pl.col("e_uprn_missing")
            & hit("u_uprn_wrong", min(1.0, rates.uprn_wrong / max(1.0 - rates.uprn_missing, 0.05)))
            & pl.col("_nb").is_not_null(),
            e_postcode_error=hit("u_pc", rates.postcode_error),
        )
    )
    f = f.with_columns(
        out_uprn=pl.when(pl.col("e_uprn_missing"))
        .then(None)
        .when(pl.col("e_uprn_wrong"))
        .then(pl.col("_nb"))
        .otherwise(pl.col("addr_uprn")),
        out_postcode=_rewrite(f["_pc"], f["e_postcode_error"], lambda v: damage_postcode(v, r)),
    )
    return f.drop(*_DRAWS, "_pc", "_nb").with_columns(pl.col(list(ERROR_FLAGS)).fill_null(False))


def errors_expr() -> pl.Expr:
    """Semicolon-joined names of the errors flagged on a row ('' when none)."""
    return pl.concat_str(
        [pl.when(pl.col(c)).then(pl.lit(c[2:])) for c in ERROR_FLAGS],
        separator=";",
        ignore_nulls=True,
    ).fill_null("")
