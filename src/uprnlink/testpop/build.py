"""write_test_population: simulate Westmere, write its six extracts, reference files and truth."""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import polars as pl

from uprnlink.testpop import extracts as ex
from uprnlink.testpop.world import CARE, LAD, World, simulate

START = date(2016, 2, 1)
END = date(2026, 1, 31)
# Each source's file in the landing folder and how it is written.
FILES = {
    "council_tax": ("ctax_liable_parties.csv", ","),
    "housing_tenancies": ("hsg_tenants.tsv", "\t"),
    "benefits_claims": ("hb_claim_members.csv", ";"),
    "adult_social_care": ("asc_services.csv", ","),
    "gp_registrations": ("gp_patients.csv", ","),
    "hospital_activity": ("sus_attendances.parquet", ""),
}


@dataclass(frozen=True)
class TestPopulationSummary:
    """What write_test_population made (counts and seconds only)."""

    people: int
    addresses: int
    records_per_source: dict[str, int]
    seconds: float


def write_test_population(
    out_dir: Path, people: int, seed: int, *, start: date = START, end: date = END
) -> TestPopulationSummary:
    """Write the Westmere extracts to out_dir/landing, reference files to landing/reference
    and the truth to out_dir/truth. The same arguments give the same files."""
    if people < 200:
        raise ValueError("people must be at least 200")
    t0 = time.perf_counter()
    root = random.Random(f"westmere/{seed}")
    stages = {name: random.Random(root.getrandbits(64)) for name in ("world", *FILES)}
    world = simulate(stages["world"], people, start, end)
    landing = out_dir / "landing"
    truth_dir = out_dir / "truth"
    landing.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    truth_rows: list[dict[str, object]] = []
    counts: dict[str, int] = {}
    for source, (name, sep) in FILES.items():
        extract = ex.SOURCES[source](world, stages[source])
        _write(extract.rows, landing / name, sep)
        counts[source] = len(extract.rows)
        truth_rows += [
            {"source": source, "record_id": rid, "person_id": pid, "errors": errors}
            for rid, pid, errors in extract.truth
        ]
    _write_reference(world, landing / "reference")
    _write_truth(world, truth_rows, truth_dir)
    (truth_dir / "manifest.json").write_text(
        json.dumps(
            {
                "generator": "uprnlink.testpop (Westmere)",
                "seed": seed,
                "people": len(world.people),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "records_per_source": counts,
                "habits": {k: asdict(v) for k, v in ex.HABITS.items()},
            },
            indent=2,
        )
    )
    return TestPopulationSummary(
        people=len(world.people),
        addresses=len(world.addresses),
        records_per_source=counts,
        seconds=time.perf_counter() - t0,
    )


def _write(rows: list[dict[str, object]], path: Path, sep: str) -> None:
    if path.suffix == ".parquet":
        schema = {
            "episode_id": pl.Utf8,
            "nhs_number": pl.Int64,
            "patient_forename": pl.Utf8,
            "patient_surname": pl.Utf8,
            "date_of_birth": pl.Date,
            "sex_code": pl.Utf8,
            "postcode": pl.Utf8,
            "uprn": pl.Int64,
            "attendance_type": pl.Utf8,
            "arrival_date": pl.Date,
            "discharge_date": pl.Date,
        }
        pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)
        return
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=sep)
        writer.writeheader()
        writer.writerows(rows)


def _write_reference(world: World, folder: Path) -> None:
    """AddressBase-style lookup, classification and deprivation files, in their own layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    classes = []
    buildings: dict[int, object] = {}
    for a in world.addresses:
        rows.append((a.uprn, a.postcode, a.oa, a.lsoa, a.msoa, a.ward, LAD[0]))
        classes.append((a.uprn, a.cls))
        if a.parent_uprn is not None and a.parent_uprn not in buildings:
            buildings[a.parent_uprn] = a
            rows.append((a.parent_uprn, a.postcode, a.oa, a.lsoa, a.msoa, a.ward, LAD[0]))
            classes.append((a.parent_uprn, "PP"))
    pl.DataFrame(
        rows,
        schema=["UPRN", "POSTCODE_LOCATOR", "OA21", "LSOA21", "MSOA21", "WARD25", "LAD25"],
        orient="row",
    ).write_csv(folder / "addressbase_extract.csv")
    pl.DataFrame(classes, schema=["UPRN", "CLASSIFICATION_CODE"], orient="row").write_csv(
        folder / "classification.csv"
    )
    imd = {a.lsoa: a.imd for a in world.addresses}
    pl.DataFrame(sorted(imd.items()), schema=["lsoa21cd", "imd_decile"], orient="row").write_csv(
        folder / "imd_lsoa.csv"
    )


def _write_truth(world: World, records: list[dict[str, object]], folder: Path) -> None:
    pl.DataFrame(
        records,
        schema={"source": pl.Utf8, "record_id": pl.Utf8, "person_id": pl.Int64, "errors": pl.Utf8},
    ).write_parquet(folder / "records.parquet")
    people = world.people
    pl.DataFrame(
        {
            "person_id": list(range(1, len(people) + 1)),
            "forename": [p.forename.upper() for p in people],
            "middle_name": [p.middle.upper() if p.middle else None for p in people],
            "surname": [p.surname.upper() for p in people],
            "birth_surname": [p.birth_surname.upper() if p.birth_surname else None for p in people],
            "sex": [p.sex for p in people],
            "dob": [p.dob for p in people],
            "nhs_number": [p.nhs for p in people],
            "date_of_death": [p.exit if p.exit_kind == "died" else None for p in people],
            "mother_id": [p.mother + 1 if p.mother >= 0 else None for p in people],
            "father_id": [p.father + 1 if p.father >= 0 else None for p in people],
            "entry_date": [p.entry for p in people],
            "exit_date": [p.exit for p in people],
            "exit_kind": [p.exit_kind for p in people],
            "community": [p.community for p in people],
        },
        schema_overrides={"mother_id": pl.Int64, "father_id": pl.Int64, "date_of_death": pl.Date},
    ).write_parquet(folder / "people.parquet")
    uprn = [a.uprn for a in world.addresses]
    pl.DataFrame(
        {
            "person_id": [int(str(s[0])) + 1 for s in world.residence],
            "uprn": [uprn[int(str(s[1]))] for s in world.residence],
            "valid_from": [s[2] for s in world.residence],
            "valid_to": [s[3] for s in world.residence],
        },
        schema_overrides={"valid_to": pl.Date},
    ).filter(pl.col("valid_to").is_null() | (pl.col("valid_to") >= pl.col("valid_from"))).sort(
        "person_id", "valid_from"
    ).write_parquet(folder / "residence.parquet")
    pl.DataFrame(
        {
            "uprn": uprn,
            "is_communal": [a.kind == CARE for a in world.addresses],
            "class": [a.cls for a in world.addresses],
            "postcode": [a.postcode for a in world.addresses],
            "lsoa": [a.lsoa for a in world.addresses],
        }
    ).write_parquet(folder / "addresses.parquet")
