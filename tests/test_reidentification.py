"""Published ids cannot be reversed with the keys the pipeline holds for linkage.

The attack (issue #13): someone holding the pseudonymisation key hashes every UPRN of the area
and every source record reference under every sub-key, derives the internal person ids from
the record tokens, and looks the results up among the published person and household ids.
Before release ids, 99.4% of the demo's households and 93.8% of its people were found that way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.conftest import PipelineRun
from uprnlink.linkage.stable_ids import derived_ids
from uprnlink.privacy.keys import (
    PURPOSES,
    load_release_key,
    load_run_key,
)
from uprnlink.privacy.release import release_id_map
from uprnlink.privacy.trusted import read_trusted, read_trusted_records
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow


def _hex_parts(ids: pl.Series) -> set[str]:
    """Every way a published id could hide a token: its hex body."""
    return {v[1:] for v in ids.drop_nulls().to_list()}


def _candidates(run: PipelineRun) -> dict[str, set[str]]:
    """What an attacker with the pseudonymisation key computes from identifier lists."""
    settings = run.settings
    key = load_run_key(settings)
    lookup = settings.reference["uprn_lookup"]
    uprns = pl.read_csv(lookup.path, columns=[lookup.columns["uprn"].column], infer_schema=False)
    uprn = uprns.to_series().str.strip_chars().cast(pl.Int64, strict=False).drop_nulls().unique()
    crosswalk = pl.concat(
        read_trusted(Zones(settings).crosswalk(n), key).select("source_dataset", "record_id")
        for n in settings.sources
        if Zones(settings).crosswalk(n).exists()
    )
    record_keys = crosswalk.select(
        (pl.col("source_dataset") + "|" + pl.col("record_id")).alias("k")
    ).to_series()
    messages = pl.concat([uprn.cast(pl.String), record_keys]).cast(pl.Binary)
    out: dict[str, set[str]] = {
        purpose: set(key.hmac_hex(purpose, messages, take=16).to_list()) for purpose in PURPOSES
    }
    # And every token the trusted zone holds (NHS numbers included).
    records = read_trusted_records(settings, key)
    out["trusted"] = {
        v
        for c in ("unique_id", "uprn_token", "household_token", "nhs_token")
        for v in records.get_column(c).drop_nulls().to_list()
    }
    # Internal person ids are "P" + 15 hex of SHA-256 of a record token.
    out["derived_person_ids"] = {
        v[1:] for v in derived_ids(pl.Series(list(out["record"]))).to_list()
    }
    return out


def _hits(published: set[str], candidates: set[str]) -> int:
    """Published ids whose hex body is a token, or the start of one (a truncation)."""
    prefixes = {len(p) for p in published}
    cut = {c[:n] for c in candidates for n in prefixes}
    return len(published & (candidates | cut))


def test_no_published_id_is_found_by_hashing_every_uprn_and_record(small_run: PipelineRun) -> None:
    linked = Path(small_run.settings.linked_dir)
    person = pl.read_parquet(linked / "person.parquet")
    household = pl.read_parquet(linked / "household.parquet")
    published_people = _hex_parts(person.get_column("person_id"))
    published_households = _hex_parts(household.get_column("household_id"))
    candidates = _candidates(small_run)
    everything = set().union(*candidates.values())
    assert _hits(published_people, everything) == 0
    assert _hits(published_households, everything) == 0

    # The attack is real: the same hashing finds the INTERNAL ids (what used to be published).
    crosswalk = read_trusted(
        Zones(small_run.settings).release_ids, load_run_key(small_run.settings)
    )
    internal = {
        c: set(crosswalk.filter(pl.col("column") == c).get_column("internal").to_list())
        for c in ("person_id", "household_id")
    }
    households_found = len(internal["household_id"] & candidates["household"])
    assert households_found / len(internal["household_id"]) > 0.9
    people_found = len({v[1:] for v in internal["person_id"]} & candidates["derived_person_ids"])
    assert people_found / len(internal["person_id"]) > 0.9


def test_published_ids_come_from_the_release_key_and_project(small_run: PipelineRun) -> None:
    """Only the release key (and project) rebuild the published ids; another project's ids
    differ, so two data-sharing projects cannot join their extracts on them."""
    settings = small_run.settings
    crosswalk = read_trusted(Zones(settings).release_ids, load_run_key(settings))
    people = crosswalk.filter(pl.col("column") == "person_id")
    release_key = load_release_key(settings)
    again = release_id_map(
        people.get_column("internal"), release_key, settings.release.project, "person_id"
    )
    assert again.sort("internal").equals(people.select("internal", "published").sort("internal"))
    other = release_id_map(
        people.get_column("internal"), release_key, "another-project", "person_id"
    )
    assert not set(other.get_column("published")) & set(people.get_column("published"))
    published = set(pl.read_parquet(settings.linked_dir / "person.parquet").get_column("person_id"))
    assert published == set(people.get_column("published"))
