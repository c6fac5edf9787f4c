"""A delivery unlike its source's last accepted one is held before anything is published."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.conftest import copy_tree
from tests.deliveries import demo_settings, variant
from uprnlink import cli
from uprnlink.ingest.deliveries import DeliveryHeldError, DeliveryPolicy, compare
from uprnlink.publish import releases
from uprnlink.run.runner import run_all
from uprnlink.settings import read_settings
from uprnlink.sources import PERSON_SOURCES

POLICY = DeliveryPolicy()
BEFORE = {
    "rows": 2585,
    "null_shares": {"nhs_number": 0.01, "dob": 0.0},
    "latest_date": "2026-03-30",
    "run_id": "R1",
}


def test_rows_null_shares_and_dates_are_compared() -> None:
    same = {"rows": 2600, "null_shares": {"nhs_number": 0.02}, "latest_date": "2026-03-28"}
    assert compare("gp", same, BEFORE, POLICY) == []
    empty = {"rows": 0, "null_shares": {}, "latest_date": None}
    [finding] = compare("gp", empty, BEFORE, POLICY)
    assert finding.check == "rows" and "fell from 2,585 to 0 (-100%" in finding.message
    grown = {"rows": 4000, "null_shares": {"nhs_number": 0.4}, "latest_date": "2025-12-01"}
    checks = [f.check for f in compare("gp", grown, BEFORE, POLICY)]
    assert checks == ["rows", "null_share:nhs_number", "dates"]


@pytest.mark.slow
def test_an_empty_gp_delivery_is_held_and_accept_lets_it_through(
    population: Path,
    prefect_harness: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`uprnlink run` goes through the Prefect flow: on the session's Prefect test server
    (prefect_harness), not an ephemeral server of its own."""
    demo = demo_settings(copy_tree(population, tmp_path / "demo"))
    config = variant(demo, tmp_path / "run", dict.fromkeys(PERSON_SOURCES))
    settings = read_settings(config)
    first = run_all(str(config), run_id="r1-good")
    people = first.published["metadata"]["counts"]["people"]

    gp = settings.sources["gp_registrations"].path
    gp.write_text(gp.read_text().splitlines()[0] + "\n")  # the header and no rows
    code = cli.main(["run", "--config", str(config), "--run-id", "r2-empty"])
    err = capsys.readouterr().err
    assert code == 10
    lines = [line for line in err.splitlines() if line.startswith("uprnlink:")]
    assert lines[-1].startswith("uprnlink: error: run held")
    assert "gp_registrations: rows fell from" in lines[-1] and "--accept gp_registrations" in err
    assert "Traceback" not in err
    held = json.loads((settings.out_dir / "runs" / "r2-empty.json").read_text())
    assert held["status"] == "held" and held["held"][0]["check"] == "rows"
    # The previous release is still the live one, with its people.
    assert releases.current(settings.out_dir) == "r1-good"
    con = duckdb.connect(str(settings.database_path), read_only=True)
    assert con.execute("SELECT count(*) FROM people").fetchall() == [(people,)]
    con.close()
    with pytest.raises(DeliveryHeldError):  # the same delivery again: still held
        run_all(str(config), run_id="r3-again")

    accepted = run_all(str(config), run_id="r4-accepted", accept=("gp_registrations",))
    assert accepted.deliveries["accepted"] == ["gp_registrations"]
    assert releases.current(settings.out_dir) == "r4-accepted"
    events = [
        json.loads(line)
        for line in (settings.out_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    [entry] = [e for e in events if e["event"] == "delivery.accepted"]
    assert entry["data"]["source"] == "gp_registrations"
    assert entry["data"]["held_for"] == ["rows"]
    statuses = [e["data"]["status"] for e in events if e["event"] == "run.finished"]
    assert statuses == ["completed", "held", "held", "completed"]
    # The summary names the live quality report, not the staging folder renamed by the switch.
    assert ".staging-" not in accepted.reports["quality_report"]
    assert Path(accepted.reports["quality_report"]).is_file()
    # Now accepted, the empty delivery is the one the next run compares with.
    run_all(str(config), run_id="r5-same")

    # A handled error inside a Prefect task is one line, no traceback (unless UPRNLINK_DEBUG).
    housing = settings.sources["housing_tenancies"].path
    housing.write_bytes(housing.read_bytes() + "X|Caf\xe9|||||||||||\n".encode("latin-1"))
    assert cli.main(["run", "--config", str(config), "--run-id", "r6-latin1"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "rule=encoding" in err
