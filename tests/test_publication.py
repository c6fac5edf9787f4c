"""A publication's metadata as a typed record: the same mapping on disk, a date in Python."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from uprnlink.errors import ConfigError
from uprnlink.publication import PublicationCounts, PublicationMetadata
from uprnlink.run_summary import RunSummary

# As the publish stage writes `run_metadata.json` (key order included).
WRITTEN = {
    "run_id": "20260301T000000Z-ab12",
    "key_id": "k1",
    "key_epoch": 2,
    "release_key_id": "r1",
    "project": "demo",
    "uprnlink_version": "0.9.0",
    "reference_date": "2026-03-31",
    "service_period_months": 12,
    "contracts": {"gp_registrations": "gp_registrations@1.0"},
    "not_supplied": {"sources": ["school_census"], "fields": {"council_tax": ["phone"]}},
    "residence_confirmed": [
        {"source_dataset": "council_tax", "people": 120, "confirmed": 96, "share": 0.8}
    ],
    "single_person_discount_share": None,
    "published_at": "2026-03-01T00:00:09+00:00",
    "counts": {
        "people": 300,
        "households": 120,
        "communal_establishments": 2,
        "memberships": 310,
        "service_events": 40,
    },
}


def test_the_file_reads_back_byte_for_byte() -> None:
    text = json.dumps(WRITTEN, indent=2)
    meta = PublicationMetadata.from_dict(json.loads(text))
    assert json.dumps(meta.to_dict(), indent=2) == text
    assert list(meta.to_dict()) == list(WRITTEN)
    assert meta.reference_date == date(2026, 3, 31)
    assert meta.counts == PublicationCounts(300, 120, 2, 310, 40)
    assert meta.residence_confirmed[0]["share"] == 0.8 and meta.extra == {}
    # Built from the typed record itself (a date, a counts record): the same mapping.
    again = {**WRITTEN, "reference_date": date(2026, 3, 31), "counts": meta.counts}
    assert PublicationMetadata.from_dict(again) == meta


def test_the_residence_rules_counts_read_back_and_are_absent_when_empty() -> None:
    rules = {"joint_reference_share": 0.58, "accounts_superseded": 370, "in_care_homes": 325}
    written = {**WRITTEN, "residence_rules": rules}
    text = json.dumps(written, indent=2)
    meta = PublicationMetadata.from_dict(json.loads(text))
    assert meta.residence_rules == rules and meta.extra == {}
    assert json.dumps(meta.to_dict(), indent=2) == text
    # Metadata written before the rules has none, and is written back without the key.
    assert PublicationMetadata.from_dict(WRITTEN).residence_rules == {}
    with pytest.raises(ConfigError, match="residence_rules"):
        PublicationMetadata.from_dict({**WRITTEN, "residence_rules": [1]})


def test_keys_it_does_not_know_are_kept_after_the_known_ones() -> None:
    data = {**WRITTEN, "from_a_later_version": {"x": 1}}
    meta = PublicationMetadata.from_dict(data)
    assert meta.extra == {"from_a_later_version": {"x": 1}}
    assert list(meta.to_dict()) == list(data)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"reference_date": "31/03/2026"}, "field 'reference_date' is not YYYY-MM-DD"),
        ({"reference_date": None}, "mistypes field 'reference_date'"),
        ({"key_epoch": "2"}, "mistypes field 'key_epoch'"),
        ({"service_period_months": True}, "mistypes field 'service_period_months'"),
        ({"single_person_discount_share": "0.5"}, "mistypes field 'single_person_discount_share'"),
        ({"counts": {**WRITTEN["counts"], "people": 1.5}}, "mistypes field 'counts.people'"),
        ({"not_supplied": {"sources": []}}, "lacks field 'not_supplied.fields'"),
    ],
)
def test_a_malformed_field_is_refused_by_name_without_its_value(
    change: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match="publication_metadata_shape") as caught:
        PublicationMetadata.from_dict({**WRITTEN, **change})
    message = str(caught.value)
    assert named in message and "31/03" not in message and "0.5" not in message


def test_a_missing_field_is_named() -> None:
    data = {k: v for k, v in WRITTEN.items() if k != "project"}
    with pytest.raises(ConfigError, match="lacks field 'project'"):
        PublicationMetadata.from_dict(data)


def test_the_run_summary_reads_the_typed_metadata() -> None:
    summary = RunSummary.from_dict({"published": {"metadata": WRITTEN, "tables": ["person"]}})
    meta = summary.metadata
    assert isinstance(meta, PublicationMetadata) and meta.project == "demo"
    assert summary.reference_date == date(2026, 3, 31)
    assert summary.counts == WRITTEN["counts"]
    assert summary.to_dict()["published"]["metadata"] == WRITTEN
    assert RunSummary().metadata is None and RunSummary().reference_date is None


def test_the_evaluation_reads_residence_evidence_through_the_record(tmp_path: Path) -> None:
    from uprnlink.run.evaluation import read_residence_confirmed

    path = tmp_path / "run_metadata.json"
    assert read_residence_confirmed(path) == []
    path.write_text(json.dumps(WRITTEN, indent=2))
    assert read_residence_confirmed(path) == WRITTEN["residence_confirmed"]
    # A release published before residence evidence was recorded has none to show.
    path.write_text(json.dumps({k: v for k, v in WRITTEN.items() if k != "residence_confirmed"}))
    assert read_residence_confirmed(path) == []
    path.write_text(json.dumps({**WRITTEN, "counts": {}}))
    with pytest.raises(ConfigError, match=r"lacks field 'counts\.people'"):
        read_residence_confirmed(path)
