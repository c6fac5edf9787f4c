"""What an analyst can take out, judged by what comes out (issue #21's red-team suite).

Each attack here ran against a real `uprnlink serve` with only an analyst's token. The test
does not ask whether a query was refused; it asks whether any value got out: a record-level
row, a count from 1 to 9, one household's value, one bit from an error, a refusal or a
pending preview. The attacker knows the method and the p-table; the tests may look at the
truth (the engineers' database) to judge.
"""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb
import polars as pl
import pytest

from tests.conftest import QueryService
from tests.test_service import call
from uprnlink.publish.perturbation import PerturbationSettings

pytestmark = pytest.mark.slow

POLICY = PerturbationSettings()

# The extractions, as typed SQL an analyst would try.
RECORD_LEVEL = {
    "people grouped by everything": "SELECT person_id, household_id, sex, age_band, lsoa, "
    "ltc_dementia, ltc_depression, emergency_admissions FROM people GROUP BY ALL",
    "households grouped by everything": "SELECT * FROM households GROUP BY ALL",
}
DISGUISED_COUNTS = {
    "count(NULL) beside a sum": "SELECT lsoa, count(NULL) AS n, sum(CASE WHEN ltc_dementia "
    "THEN 1 ELSE 0 END) AS d FROM people GROUP BY lsoa",
    "indicator sum": "SELECT lsoa, sum(CASE WHEN ltc_dementia THEN 1 ELSE 0 END) AS d "
    "FROM people GROUP BY lsoa",
    "scalar subquery": "SELECT (SELECT count(*) FROM people WHERE ltc_dementia) AS n",
    "approx_count_distinct filter": "SELECT approx_count_distinct(person_id) FILTER "
    "(WHERE ltc_dementia) AS n FROM people",
    "regr_count": "SELECT regr_count(1, CASE WHEN ltc_dementia THEN 1 END) AS n FROM people",
    "avg times count": "SELECT round(avg(CASE WHEN ltc_dementia THEN 1 ELSE 0 END) * "
    "count(*)) AS n FROM people",
    "string cast": "SELECT CAST(count(*) AS VARCHAR) AS n FROM people WHERE ltc_dementia",
    "outer group by all": "SELECT * FROM (SELECT lsoa, count(*) AS n FROM people "
    "WHERE ltc_dementia GROUP BY lsoa) GROUP BY ALL",
    "having against the total": "SELECT lsoa FROM people GROUP BY lsoa "
    "HAVING count(*) FILTER (WHERE ltc_dementia) >= 1",
}
ONE_HOUSEHOLD = {
    "avg of one id": "SELECT avg(CASE WHEN household_id = 'H0000000000000000' THEN "
    "residents END) AS v FROM households",
    "bool_or": "SELECT bool_or(household_id = 'H0000000000000000' AND any_social_care) AS v "
    "FROM households",
    "quantile_disc": "SELECT quantile_disc(residents, 1.0) AS v FROM households",
    "arbitrary": "SELECT arbitrary(household_id) AS v FROM households WHERE residents > 9",
    "bit_or": "SELECT bit_or(residents) AS v FROM households",
}
ORACLES = {
    "error()": "SELECT error('x') FROM people WHERE ltc_dementia AND lsoa = 'E01090000'",
    "failed cast": "SELECT CAST(person_id AS INTEGER) FROM people",
    "overflow": "SELECT CAST(sum(residents) AS TINYINT) * 1000 FROM households",
    "empty answer": "SELECT 1 AS x FROM people WHERE false",
}
EVERY_SQL = {**RECORD_LEVEL, **DISGUISED_COUNTS, **ONE_HOUSEHOLD, **ORACLES}


def _views(body: dict[str, Any]) -> dict[str, Any]:
    """A submitter's view of a job without what they sent themselves or the job's id."""
    return {
        k: v
        for k, v in body.items()
        if k not in ("id", "sql", "title", "justification", "created_at", "duplicate")
    }


def _engineer_db(svc: QueryService) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(svc.root / "demo" / "out" / "engineer.duckdb"), read_only=True)


def test_typed_sql_on_screen_is_refused_the_same_way_whatever_it_says(
    query_service: QueryService,
) -> None:
    """Record-level grouping, disguised counts, single households' values, errors and empty
    answers: an analyst's SQL on screen gets one and the same refusal for all of them, so the
    refusal is no oracle (not even one bit)."""
    token = query_service.tokens["analyst"]
    replies = {name: call(query_service, {"sql": sql}, token) for name, sql in EVERY_SQL.items()}
    assert {status for status, _ in replies.values()} == {403}
    assert len({json.dumps(body, sort_keys=True) for _, body in replies.values()}) == 1


def test_typed_sql_as_a_job_shows_its_submitter_nothing_until_a_checker_decides(
    query_service: QueryService,
) -> None:
    """The same SQL as jobs: every submission gets the same answer, every job the same
    status, whatever it would return or whether it fails; no preview, rows, columns, rules'
    verdict, failure or size, through the API, the listing or a download attempt."""
    import time

    token = query_service.tokens["analyst"]
    ids = {}
    submitted = set()
    for name, sql in EVERY_SQL.items():
        body = {"sql": sql, "title": name, "justification": "research"}
        status, reply = call(query_service, body, token, "/api/jobs")
        assert status == 202, (name, reply)
        ids[name] = reply["id"]
        submitted.add(json.dumps(_views(reply), sort_keys=True))
    assert len(submitted) == 1
    # Wait until every job has run (a checker's view), then look as the submitter.
    checker = query_service.tokens["output_checker"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = {
            call(query_service, None, checker, f"/api/outputs/{i}")[1]["status"]
            for i in ids.values()
        }
        if states <= {"pending", "failed"}:
            break
        time.sleep(0.5)
    assert states <= {"pending", "failed"} and "failed" in states and "pending" in states
    seen = set()
    for name, output_id in ids.items():
        status, view = call(query_service, None, token, f"/api/outputs/{output_id}")
        assert status == 200 and view["status"] == "awaiting review", (name, view)
        for hidden in ("rows", "columns", "verdict", "failure", "size", "sha256", "preview"):
            assert hidden not in view, (name, hidden)
        seen.add(json.dumps(_views(view), sort_keys=True))
        status, body = call(query_service, None, token, f"/api/outputs/{output_id}/download")
        assert status == 409 and body == {"error": f"output {output_id} is not released"}
    assert len(seen) == 1
    listing = call(query_service, None, token, "/api/jobs")[1]
    assert {j["status"] for j in listing if j["id"] in ids.values()} == {"awaiting review"}
    # The checker sees the output, the rules' advice and failures.
    status, full = call(query_service, None, checker, f"/api/outputs/{ids['indicator sum']}")
    assert full["status"] == "pending" and full["rows"] > 0 and "preview" in full
    status, failed = call(query_service, None, checker, f"/api/outputs/{ids['error()']}")
    assert failed["status"] == "failed" and failed["failure"]


def test_a_job_is_released_only_by_a_checker_who_did_not_submit_it(
    query_service: QueryService,
) -> None:
    analyst, checker = query_service.tokens["analyst"], query_service.tokens["output_checker"]
    sql = "SELECT tenure, count(*) AS households FROM households GROUP BY tenure"
    job = {"sql": sql, "title": "tenure", "justification": "paper table 1"}
    status, first = call(query_service, job, analyst, "/api/jobs")
    assert status == 202
    # The same SQL again is not queued twice.
    status, again = call(query_service, job, analyst, "/api/jobs")
    assert status == 200 and again["id"] == first["id"] and again["duplicate"] is True
    # The analyst cannot approve it (not a checker); a checker can, then it downloads.
    assert (
        call(query_service, {"note": ""}, analyst, f"/api/outputs/{first['id']}/approve")[0] == 403
    )
    import time

    deadline = time.monotonic() + 60
    while call(query_service, None, checker, f"/api/outputs/{first['id']}")[1]["status"] != (
        "pending"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    status, decided = call(
        query_service, {"note": "fine"}, checker, f"/api/outputs/{first['id']}/approve"
    )
    assert status == 200 and decided["status"] == "released", decided
    status, body = call(query_service, None, analyst, f"/api/outputs/{first['id']}/download")
    assert status == 200 and body.decode().startswith("tenure,households")


def test_the_table_builder_offers_no_id_and_no_single_unit_statistic(
    query_service: QueryService,
) -> None:
    token = query_service.tokens["analyst"]
    for table in (
        {"dataset": "households", "dimensions": ["household_id"]},
        {"dataset": "residents", "filters": {"person_id": ["P0000000000000000"]}},
        {"dataset": "households", "measures": ["max:residents"]},
        {"dataset": "households", "measures": ["quantile:residents"]},
        {"dataset": "households", "measures": ["sum:household_id"]},
        {"dataset": "people", "dimensions": ["sex"]},
        {"dataset": "residents", "sql": "SELECT 1"},
    ):
        status, body = call(query_service, {"table": table}, token, "/api/tables")
        assert status == 400 and "table refused" in body["error"], (table, body)
    status, catalogue = call(query_service, None, token, "/api/catalogue")
    names = json.dumps(catalogue["datasets"])
    assert "person_id" not in names and "household_id" not in names


def _table(svc: QueryService, token: str, table: dict[str, Any]) -> pl.DataFrame:
    status, body = call(svc, {"table": table}, token, "/api/tables")
    assert status == 200, body
    return pl.DataFrame(body["rows"], schema=[c["name"] for c in body["columns"]], orient="row")


def test_no_small_count_leaves_even_from_the_finest_tables(query_service: QueryService) -> None:
    """A table as fine as the declaration allows (four dimensions): every count shown is at
    least the threshold; every true count from 1 to 9 is withheld."""
    token = query_service.tokens["analyst"]
    dims = ["household_type", "sex", "age_band", "ltc_dementia"]
    shown = _table(query_service, token, {"dataset": "residents", "dimensions": dims})
    con = _engineer_db(query_service)
    try:
        truth = pl.from_arrow(
            con.sql(
                "SELECT household_type, coalesce(sex, 'unknown') AS sex, "
                "coalesce(age_band, 'unknown') AS age_band, CASE WHEN ltc_dementia THEN 'yes' "
                "WHEN NOT ltc_dementia THEN 'no' ELSE 'unknown' END AS ltc_dementia, "
                "count(*) AS true_count FROM person_analysis GROUP BY ALL"
            ).to_arrow_table()
        )
    finally:
        con.close()
    assert isinstance(truth, pl.DataFrame)
    both = shown.join(truth, on=dims, how="left").with_columns(pl.col("true_count").fill_null(0))
    values = both["count"].drop_nulls()
    assert values.min() >= POLICY.threshold
    small = both.filter(pl.col("true_count").is_between(1, 9))
    assert small.height > 40  # the attack had plenty to aim at
    # A true 1-9 is withheld, or (7-9 perturbed up to the threshold) shown as 10 or more:
    # never as itself, and a shown 10 may be anything from 7 to 13.
    assert (small["count"].drop_nulls() >= POLICY.threshold).all()
    assert small.filter(pl.col("count").is_not_null()).height <= small.height // 4
    moved = both.filter(pl.col("count").is_not_null() & (pl.col("count") != pl.col("true_count")))
    assert moved.height > 0.3 * both.filter(pl.col("count").is_not_null()).height


def test_the_same_cell_has_the_same_value_in_every_table(query_service: QueryService) -> None:
    """Asking again, re-phrasing (a filter instead of a dimension, a margin, a named
    question) or averaging repeats gives the same value: no noise to average away."""
    token = query_service.tokens["analyst"]
    crossed = _table(
        query_service,
        token,
        {"dataset": "residents", "dimensions": ["sex", "age_group"], "totals": True},
    )
    for sex in ("F", "M"):
        filtered = _table(
            query_service,
            token,
            {"dataset": "residents", "dimensions": ["age_group"], "filters": {"sex": [sex]}},
        )
        mine = crossed.filter(pl.col("sex") == sex).filter(pl.col("age_group") != "Total")
        assert mine.drop("sex").equals(filtered)
    again = _table(
        query_service,
        token,
        {"dataset": "residents", "dimensions": ["sex", "age_group"], "totals": True},
    )
    assert again.equals(crossed)
    status, named = call(query_service, {"named": "overcrowding_by_deprivation"}, token)
    assert status == 200
    by_hand = _table(
        query_service,
        token,
        {
            "dataset": "households",
            "dimensions": ["imd_decile"],
            "filters": {"overcrowded": ["yes", "no"]},
            "measures": ["count", "count_where:overcrowded=yes", "percent_where:overcrowded=yes"],
        },
    )
    assert [r[1:] for r in named["rows"]] == [list(r[1:]) for r in by_hand.iter_rows()]


def test_differencing_two_tables_does_not_read_out_the_units_between_them(
    query_service: QueryService,
) -> None:
    """For every household type and sex, the attacker asks for the residents, and for the
    residents outside one age band, and reads the age band's count as the difference. Where
    the band holds k = 1, 2 or 3 people, the difference is k plus noise: it is right for few
    pairs, a withheld (small) cell is not recovered, and even told which pairs hold one person
    and which two, the best rule cannot tell them apart reliably.

    What differencing does show is whether the band is empty (the same units give the same
    value): that a cell is zero, a bit governance/roles.md states ("What differencing still
    shows"), never which small count it is."""
    token = query_service.tokens["analyst"]
    con = _engineer_db(query_service)
    try:
        cells = con.sql(
            "SELECT household_type, sex, age_band, count(*) AS n FROM person_analysis "
            "WHERE sex IS NOT NULL AND age_band IS NOT NULL GROUP BY ALL"
        ).fetchall()
        bands = [
            r[0]
            for r in con.sql(
                "SELECT DISTINCT age_band FROM person_analysis WHERE age_band IS NOT NULL "
                "ORDER BY 1"
            ).fetchall()
        ]
    finally:
        con.close()
    count = {(kind, sex, band): n for kind, sex, band, n in cells}
    whole = _table(
        query_service, token, {"dataset": "residents", "dimensions": ["household_type", "sex"]}
    )
    observed: dict[int, list[int]] = {}
    for kind, sex, total in whole.iter_rows():
        if total is None or sex == "unknown":
            continue
        for band in bands:
            true = count.get((kind, sex, band), 0)
            if true > 3:
                continue
            rest = _table(
                query_service,
                token,
                {
                    "dataset": "residents",
                    "dimensions": ["sex"],
                    "filters": {
                        "household_type": [kind],
                        "sex": [sex],
                        "age_band": [b for b in bands if b != band],
                    },
                },
            )["count"][0]
            if rest is not None:
                observed.setdefault(true, []).append(total - rest)
    assert all(d == 0 for d in observed.get(0, []))  # the same units, the same value
    small = [(k, d) for k in (1, 2, 3) for d in observed.get(k, [])]
    assert len(small) >= 30, {k: len(v) for k, v in observed.items()}
    exact = sum(d == k for k, d in small) / len(small)
    assert exact < 0.35, exact
    ones, twos = observed.get(1, []), observed.get(2, [])
    if len(ones) >= 10 and len(twos) >= 10:
        best = max(
            (sum(d >= cut for d in twos) + sum(d < cut for d in ones)) / (len(ones) + len(twos))
            for cut in range(-8, 12)
        )
        # With the p-table's noise on both cells the best possible rule is right 60% of the
        # time (test_perturbation's differencing test); on a few dozen pairs the best cut
        # found after the fact can reach more by chance, so allow three standard errors.
        assert best < 0.60 + 3 * (0.25 / (len(ones) + len(twos))) ** 0.5, best


def test_one_households_value_is_hidden_by_magnitude_noise(query_service: QueryService) -> None:
    """A sum over a cell moves by at least half of its largest contribution, so the largest
    household's value is not the difference between two sums."""
    token = query_service.tokens["analyst"]
    table = _table(
        query_service,
        token,
        {"dataset": "households", "dimensions": ["lsoa"], "measures": ["sum:residents"]},
    )
    con = _engineer_db(query_service)
    try:
        truth = dict(
            con.sql(
                "SELECT coalesce(lsoa, 'unknown'), sum(residents) FROM households GROUP BY 1"
            ).fetchall()
        )
    finally:
        con.close()
    moved = [(lsoa, s, truth[lsoa]) for lsoa, n, s in table.iter_rows() if s is not None]
    assert moved and all(s != t for _, s, t in moved)


def test_nothing_an_analyst_gets_holds_an_id_or_a_small_count(query_service: QueryService) -> None:
    """Every named question through the service: no id, no count of units from 1 to 9."""
    from uprnlink.publish import queries

    token = query_service.tokens["analyst"]
    status, questions = call(query_service, None, token, "/api/queries")
    assert len(questions) >= 5
    for q in questions:
        status, body = call(query_service, {"named": q["name"]}, token)
        assert status == 200
        text = json.dumps(body["rows"])
        assert not re.search(r"[PH][0-9a-f]{16}", text)
        named = queries.get_query(q["name"])
        units = {
            named.shown(m.column) for m in named.spec.measures if m.kind in ("count", "count_where")
        }
        names = [c["name"] for c in body["columns"]]
        for row in body["rows"]:
            for name, value in zip(names, row, strict=True):
                if name in units and value is not None:
                    assert value >= POLICY.threshold, (q["name"], name, value)
