"""write_synthetic: simulate the area, then write the six extracts, reference data and truth."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from uprnlink.synth import extracts as ex
from uprnlink.synth import sources as src
from uprnlink.synth.corruption import corrupt
from uprnlink.synth.draws import uniform
from uprnlink.synth.geography import (
    CARE_HOME,
    COMMUNAL_KINDS,
    LAD_CODE,
    TENURE_NAMES,
    build_geography,
)
from uprnlink.synth.health import CONDITIONS, assign_conditions, draw_hospital_activity
from uprnlink.synth.names import assign_forenames, name_after_parents, read_surnames
from uprnlink.synth.nhs import draw_nhs_numbers
from uprnlink.synth.rates import SOURCES, SynthErrorRates
from uprnlink.synth.simulation import History, simulate

_log = logging.getLogger(__name__)
_EPOCH = date(1970, 1, 1)
_UPRN_LOOKUP_GAP = 0.005


@dataclass(frozen=True)
class SynthSummary:
    """What write_synthetic made.

    people counts everyone who lived in the area at any time in the ten-year window;
    households_on_reference_date counts occupied self-contained dwellings on that date.
    """

    people: int
    addresses: int
    households_on_reference_date: int
    records_per_source: dict[str, int]
    seconds: float


class _Clock:
    """Logs how long each stage took, at DEBUG level."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        _log.debug("synth %s: %.2f s", stage, now - self.t)
        self.t = now


def _years_before(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:
        return d.replace(year=d.year - years, day=28)


def _people_frame(
    history: History,
    residence: pl.DataFrame,
    addresses: pl.DataFrame,
    end: date,
    rng: random.Random,
) -> pl.DataFrame:
    """Truth people with names, NHS numbers, conditions and the facts the sources draw on."""
    p = history.people.sort("person_id")
    names = assign_forenames(
        p.select("person_id", "sex", birth_year=pl.col("dob").dt.year(), origin=pl.col("origin")),
        rng,
    )
    nhs = draw_nhs_numbers(rng, p.height)
    last = (
        residence.group_by("person_id")
        .agg(pl.col("uprn").sort_by("valid_from").last())
        .join(addresses.select("uprn", "decile"), on="uprn", how="left")
    )
    care = (
        residence.join(
            addresses.filter(pl.col("kind") == CARE_HOME).select("uprn"), on="uprn", how="semi"
        )
        .select("person_id")
        .unique()
        .with_columns(ever_in_care_home=pl.lit(True))
    )
    at = pl.col("exit_date").fill_null(pl.lit(end))
    p = name_after_parents(p.join(names, on="person_id", how="left", maintain_order="left"), rng)
    p = (
        p.with_columns(nhs_number=nhs)
        .join(last.select("person_id", "decile"), on="person_id", how="left", maintain_order="left")
        .join(care, on="person_id", how="left", maintain_order="left")
        .with_columns(
            decile=pl.col("decile").fill_null(5),
            ever_in_care_home=pl.col("ever_in_care_home").fill_null(False),
            age=(at - pl.col("dob")).dt.total_days() / 365.25,
        )
    )
    flags = assign_conditions(
        p.select("person_id", "sex", "age", "decile", "origin", "ever_in_care_home"), rng
    )
    return p.join(flags, on="person_id", how="left", maintain_order="left")


_PERSON_COLS = (
    "forename",
    "middle_name",
    "surname",
    "previous_surname",
    "surname_changed",
    "sex",
    "dob",
    "nhs_number",
)


def _with_person(frame: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in _PERSON_COLS if c not in frame.columns]
    return frame.join(
        people.select("person_id", *cols), on="person_id", how="left", maintain_order="left"
    )


def _write_extract(frame: pl.DataFrame, spec: ex.ExtractSpec, landing: Path) -> None:
    path = landing / spec.file
    if spec.file.endswith(".parquet"):
        frame.write_parquet(path, statistics=False)
    else:
        frame.write_csv(path, separator=spec.separator, null_value="", quote_style="necessary")


def _write_reference(
    addresses: pl.DataFrame, lsoas: pl.DataFrame, folder: Path, rng: random.Random
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    a = addresses.sort("uprn")
    keep = uniform(rng, a.height) >= _UPRN_LOOKUP_GAP
    a.filter(keep).select(
        UPRN=pl.col("uprn"),
        GRIDGB1E=pl.col("easting"),
        GRIDGB1N=pl.col("northing"),
        PCDS=pl.col("postcode"),
        OA21CD=pl.col("oa"),
        LSOA21CD=pl.col("lsoa"),
        MSOA21CD=pl.col("msoa"),
        WD25CD=pl.col("ward"),
        LAD25CD=pl.lit(LAD_CODE),
    ).write_csv(folder / "uprn_lookup.csv")
    a.select(UPRN=pl.col("uprn"), CLASS=pl.col("cls")).write_csv(folder / "property_class.csv")
    lsoas.sort("lsoa").select(
        pl.col("lsoa").alias("LSOA code (2021)"),
        pl.col("lsoa_name").alias("LSOA name (2021)"),
        pl.col("decile").alias(
            "Index of Multiple Deprivation (IMD) Decile (where 1 is most deprived 10% of LSOAs)"
        ),
    ).write_csv(folder / "imd_lsoa.csv")


def _write_truth(
    w: src.World, history: History, folder: Path, records: pl.DataFrame, manifest: dict[str, object]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    w.people.select(
        "person_id",
        *_PERSON_COLS,
        pl.when(pl.col("exit_kind") == "died").then(pl.col("exit_date")).alias("date_of_death"),
        "entry_date",
        "entry_kind",
        "exit_date",
        "exit_kind",
        "mother_id",
        "father_id",
        *CONDITIONS,
    ).write_parquet(folder / "people.parquet", statistics=False)
    records.write_parquet(folder / "records.parquet", statistics=False)
    w.residence.select("person_id", "uprn", "valid_from", "valid_to", "household_size").sort(
        "person_id", "valid_from"
    ).write_parquet(folder / "residence.parquet", statistics=False)
    current = history.occupancies.filter(pl.col("end").is_null()).select(
        "uprn",
        tenure=pl.col("tenure").replace_strict(dict(enumerate(TENURE_NAMES)), return_dtype=pl.Utf8),
    )
    lines = ex.address_lines(w.addresses).select("uprn", address=pl.col("line"))
    w.addresses.join(current, on="uprn", how="left", maintain_order="left").join(
        lines, on="uprn", how="left", maintain_order="left"
    ).select(
        "uprn",
        pl.col("cls").alias("class"),
        "is_communal",
        "postcode",
        "lsoa",
        "ward",
        "msoa",
        "oa",
        "bedrooms",
        "band",
        pl.when(pl.col("is_communal"))
        .then(pl.lit("communal"))
        .otherwise(pl.col("tenure"))
        .alias("tenure"),
        "capacity",
        "address",
        "locality",
        "town",
        "easting",
        "northing",
    ).sort("uprn").write_parquet(folder / "addresses.parquet", statistics=False)
    history.occupancies.select(
        "household_id",
        pl.col("occupancy_id").alias("occupancy_id"),
        "uprn",
        pl.col("tenure").replace_strict(dict(enumerate(TENURE_NAMES)), return_dtype=pl.Utf8),
        pl.col("start").alias("valid_from"),
        pl.col("end").alias("valid_to"),
    ).sort("occupancy_id").write_parquet(folder / "households.parquet", statistics=False)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write_synthetic(
    out_dir: Path,
    people: int,
    seed: int,
    *,
    reference_date: date = date(2026, 3, 31),
    rates: SynthErrorRates | None = None,
) -> SynthSummary:
    """Write a seeded synthetic population's six extracts, reference files and ground truth.

    Same arguments give byte-identical files: every draw comes from random.Random(seed),
    one child generator per stage, so a change to one source leaves the others as they were.
    """
    if people < 100:
        raise ValueError("people must be at least 100")
    t0 = time.perf_counter()
    clock = _Clock()
    rates = rates or SynthErrorRates()
    root = random.Random(seed)
    stage = {
        name: random.Random(root.getrandbits(64))
        for name in (
            "world",
            "people",
            "claims",
            "housing",
            "care",
            "gp",
            "hospital",
            "reference",
            *SOURCES,
        )
    }
    end = reference_date
    start = _years_before(end, 10)
    s_day, e_day = (start - _EPOCH).days, (end - _EPOCH).days

    geo_rng = random.Random(stage["world"].getrandbits(64))
    lsoas: dict[str, pl.DataFrame] = {}

    def build(dwellings: int, care_beds: int, hostel_beds: int) -> pl.DataFrame:
        g = build_geography(geo_rng, dwellings, care_beds, hostel_beds)
        lsoas["frame"] = g.lsoas
        return g.addresses

    history, addresses = simulate(stage["world"], people, s_day, e_day, read_surnames(), build)
    clock.lap("simulation")
    residence = src.residence_with_previous(history.residence)
    people_frame = _people_frame(history, residence, addresses, end, stage["people"])
    clock.lap("people")
    w = src.World(
        history=history,
        people=people_frame,
        residence=residence,
        addresses=addresses,
        start=start,
        end=end,
    )
    lines = ex.address_lines(addresses)
    addr_keys = addresses.select("uprn", "postcode", "neighbour_uprn")

    claims = src.benefit_claims(w, stage["claims"])
    activity = draw_hospital_activity(
        src.hospital_segments(w), stage["hospital"], (_years_before(end, 3) - _EPOCH).days, e_day
    )
    true_records = {
        "council_tax": src.council_tax_records(w, claims),
        "housing_tenancies": src.housing_records(w, stage["housing"]),
        "benefits_claims": src.benefit_records(w, claims),
        "adult_social_care": src.social_care_records(w, stage["care"]),
        "gp_registrations": src.gp_records(w, stage["gp"]).join(
            people_frame.select("person_id", *CONDITIONS),
            on="person_id",
            how="left",
            maintain_order="left",
        ),
        "hospital_activity": src.hospital_records(w, activity),
    }
    clock.lap("true records")
    landing = out_dir / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    truth_parts = []
    counts: dict[str, int] = {}
    end_lit = pl.lit(end, dtype=pl.Date)
    for source in SOURCES:
        spec = ex.SPECS[source]
        r = stage[source]
        src_rates = rates.for_source(source)
        frame = _with_person(true_records[source], people_frame)
        if "prev_uprn" not in frame.columns:
            frame = frame.with_columns(prev_uprn=pl.lit(None, dtype=pl.Int64))
        bad = corrupt(frame, src_rates, r, addr_keys, upper_names=spec.upper_names, latest=end)
        if source == "council_tax":
            shaped = ex.format_council_tax(bad, lines, src_rates, r)
        elif source == "housing_tenancies":
            shaped = ex.format_housing(bad, lines)
        elif source == "benefits_claims":
            shaped = ex.format_benefits(bad)
        elif source == "adult_social_care":
            shaped = ex.format_social_care(bad, lines, r)
        elif source == "gp_registrations":
            shaped = ex.format_gp(bad, lines, end_lit)
        else:
            shaped = ex.format_hospital(bad)
        out, truth = ex.finalise(shaped, spec, src_rates, r)
        _write_extract(out, spec, landing)
        truth_parts.append(truth)
        counts[source] = out.height
        clock.lap(source)

    _write_reference(addresses, lsoas["frame"], landing / "reference", stage["reference"])
    records = pl.concat(truth_parts)
    households_now = history.occupancies.filter(pl.col("end").is_null()).height
    manifest: dict[str, object] = {
        "seed": seed,
        "people": people,
        "reference_date": end.isoformat(),
        "window_start": start.isoformat(),
        "rates": rates.to_dict(),
        "record_counts": counts,
        "people_in_truth": people_frame.height,
        "addresses": addresses.height,
        "communal_establishments": addresses.filter(
            pl.col("kind").is_in(list(COMMUNAL_KINDS))
        ).height,
        "households_on_reference_date": households_now,
    }
    _write_truth(w, history, out_dir / "truth", records, manifest)
    clock.lap("reference and truth")
    return SynthSummary(
        people=people_frame.height,
        addresses=addresses.height,
        households_on_reference_date=households_now,
        records_per_source=counts,
        seconds=time.perf_counter() - t0,
    )
