"""Residence from evidence (households.evidence, households.residence) on hand-built timelines:
moved, died, stale, visits, learned reliability, per-source confirmation, [households] config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import PipelineRun
from tests.test_households import Row, records
from uprnlink.errors import ConfigError
from uprnlink.households.evidence import (
    confirmation_on,
    reliability_rank,
    signs_of_life,
)
from uprnlink.households.residence import ResidenceRules
from uprnlink.households.timelines import (
    FALLBACK_SOURCES,
    RESIDENCE_SOURCES,
    build_memberships,
    residence_periods,
    residents_on,
)
from uprnlink.reports.quality import RESIDENCE_RULE_LABELS, residence_rows, residence_rule_rows
from uprnlink.settings import read_settings
from uprnlink.sources import PERSON_SOURCES

D = date
ON = date(2026, 3, 31)
OFF = ResidenceRules(visit_days=365, stale_after_days=0, learned_reliability=False)


def people(rows: Sequence[Row], deaths: dict[str, date] | None = None) -> pl.DataFrame:
    ids = sorted({r[0] for r in rows})
    return pl.DataFrame(
        {"person_id": ids, "date_of_death": [(deaths or {}).get(i) for i in ids]},
        schema_overrides={"date_of_death": pl.Date},
    )


def placed(
    rows: Sequence[Row],
    rules: ResidenceRules,
    on: date = ON,
    deaths: dict[str, date] | None = None,
) -> dict[str, str]:
    recs = records(rows)
    m = build_memberships(residence_periods(recs, rules), people(rows, deaths))
    return dict(residents_on(m, on).select("person_id", "household_token").rows())


# ------------------------------------------------------------------------------------ moved
MOVER = [
    ("p", "gp_registrations", "A", D(2010, 1, 1), None, "Smith"),
    ("p", "council_tax", "B", D(2020, 6, 1), D(2022, 5, 31), "Smith"),
]


def test_moved_a_later_account_elsewhere_ends_the_open_registration() -> None:
    # Without the rule, the GP list takes the person back to A when the account at B ends.
    assert placed(MOVER, OFF) == {"p": "A"}
    moved = ResidenceRules(visit_days=365, move_sources=("council_tax",), learned_reliability=False)
    assert placed(MOVER, moved) == {}
    assert placed(MOVER, moved, on=D(2021, 1, 1)) == {"p": "B"}


def test_moved_not_when_the_person_is_seen_at_the_old_address_later() -> None:
    rows = [*MOVER, ("p", "benefits_claims", "A", D(2022, 6, 1), None, "Smith")]
    moved = ResidenceRules(visit_days=365, move_sources=("council_tax",), learned_reliability=False)
    assert placed(rows, moved) == {"p": "A"}


# ------------------------------------------------------------------------------------- died
def test_died_a_recorded_death_ends_every_stay() -> None:
    rows = [("p", "council_tax", "A", D(2015, 1, 1), None, "Jones")]
    assert placed(rows, OFF) == {"p": "A"}
    assert placed(rows, OFF, deaths={"p": D(2025, 2, 1)}) == {}
    assert placed(rows, OFF, on=D(2025, 1, 31), deaths={"p": D(2025, 2, 1)}) == {"p": "A"}


# ------------------------------------------------------------------------------------ stale
LONE = [("p", "gp_registrations", "A", D(2015, 1, 1), None, "Brown")]


def test_stale_a_registration_with_no_sign_of_life_ends() -> None:
    stale = ResidenceRules(visit_days=365, stale_after_days=730, learned_reliability=False)
    assert placed(LONE, OFF) == {"p": "A"}
    assert placed(LONE, stale) == {}
    # The stay ends stale_after_days after the last sign: the same date whatever the day asked.
    assert placed(LONE, stale, on=D(2016, 12, 31)) == {"p": "A"}
    assert placed(LONE, stale, on=D(2017, 1, 1)) == {}


def test_stale_a_recent_attendance_at_the_address_keeps_the_registration() -> None:
    rows = [*LONE, ("p", "hospital_activity", "A", D(2025, 9, 1), None, "Brown")]
    stale = ResidenceRules(visit_days=30, stale_after_days=730, learned_reliability=False)
    assert placed(rows, stale) == {"p": "A"}


def test_stale_a_relative_still_billed_there_keeps_the_registration() -> None:
    rows = [*LONE, ("q", "council_tax", "A", D(2012, 1, 1), None, "Brown")]
    stale = ResidenceRules(visit_days=365, stale_after_days=730, learned_reliability=False)
    assert placed(rows, stale) == {"p": "A", "q": "A"}
    # A stranger's account is no sign of the person.
    other = [*LONE, ("q", "council_tax", "A", D(2020, 1, 1), None, "Green")]
    assert placed(other, stale) == {"q": "A"}


def test_stale_never_ends_a_lasting_account() -> None:
    rows = [("p", "council_tax", "A", D(2005, 1, 1), None, "Brown")]
    stale = ResidenceRules(visit_days=365, stale_after_days=730, learned_reliability=False)
    assert placed(rows, stale) == {"p": "A"}


# ----------------------------------------------------------------------------------- visits
def test_visit_days_set_how_long_an_attendance_places_a_person() -> None:
    rows = [("p", "hospital_activity", "A", D(2024, 10, 1), None, "White")]
    assert placed(rows, OFF) == {}
    assert placed(rows, ResidenceRules(visit_days=730, learned_reliability=False)) == {"p": "A"}


# ------------------------------------------------------------------------------------ alone
SOLE = [
    ("m", "council_tax", "X", D(2015, 1, 1), None, "Kay"),  # billed alone (discount)
    ("c", "gp_registrations", "X", D(2001, 5, 1), None, "Kay"),  # an adult child, GP only
    ("k", "gp_registrations", "X", D(2016, 3, 1), None, "Kay"),  # a minor
    ("p", "council_tax", "Z", D(2018, 1, 1), None, "Fox"),  # elsewhere, no discount
    ("p2", "council_tax", "Z", D(2018, 1, 1), None, "Fox"),
]
DOB = {"m": D(1975, 1, 1), "c": D(2001, 4, 1), "k": D(2016, 2, 1), "p": D(1980, 1, 1)}


def _sole(rows: Sequence[Row], discounted: set[str], min_share: float = 0.85) -> dict[str, str]:
    from uprnlink.households.timelines import end_beside_sole_occupiers

    recs = records(rows)
    council_tax = recs.filter(pl.col("source_dataset") == "council_tax").with_columns(
        pl.col("person_id").is_in(list(discounted)).alias("single_person_discount")
    )
    folk = people(rows).with_columns(
        pl.col("person_id").replace_strict(DOB, default=None, return_dtype=pl.Date).alias("dob")
    )
    periods, _ = end_beside_sole_occupiers(
        residence_periods(recs, OFF), recs, council_tax, folk, ON, min_share
    )
    m = build_memberships(periods, folk)
    return dict(residents_on(m, ON).select("person_id", "household_token").rows())


def test_alone_an_adult_seen_only_on_lists_leaves_an_address_billed_to_one_adult() -> None:
    assert _sole(SOLE, set())["c"] == "X"
    got = _sole(SOLE, {"m"})
    assert "c" not in got  # the adult child has gone
    assert got["k"] == "X" and got["m"] == "X"  # the minor and the liable adult stay


def test_alone_an_adult_with_an_account_there_stays() -> None:
    rows = [*SOLE, ("c", "benefits_claims", "X", D(2022, 1, 1), None, "Kay")]
    assert _sole(rows, {"m"})["c"] == "X"


def test_alone_a_closed_account_from_before_the_discount_does_not_keep_them() -> None:
    rows = [*SOLE, ("c", "benefits_claims", "X", D(2012, 1, 1), D(2014, 6, 30), "Kay")]
    assert "c" not in _sole(rows, {"m"})
    # One that began after the discounted account (2015) does: the discount is out of date.
    later = [*SOLE, ("c", "benefits_claims", "X", D(2024, 1, 1), D(2024, 6, 30), "Kay")]
    assert _sole(later, {"m"})["c"] == "X"


def test_alone_not_when_the_discounts_are_not_borne_out() -> None:
    # Two discounted accounts, one contradicted by a second account holder: share 0.5.
    rows = [*SOLE]
    assert "c" not in _sole(rows, {"m", "p"}, min_share=0.5)
    assert _sole(rows, {"m", "p"}, min_share=0.85)["c"] == "X"


# ------------------------------------------------------------------------------ superseded
# "old" never had their account closed; a new account (another reference) began at X in 2024
# for "new", whose GP registration is at X too. "old" also stays on the GP list at X.
SUPERSEDED = [
    ("old", "council_tax", "X", D(2015, 1, 1), None, "Ash"),
    ("old", "gp_registrations", "X", D(2015, 2, 1), None, "Ash"),
    ("new", "council_tax", "X", D(2024, 5, 1), None, "Bell"),
    ("new", "gp_registrations", "X", D(2024, 5, 20), None, "Bell"),
    # A couple on one account elsewhere: the extract's references are accounts, shared by
    # joint parties (`joint_share`).
    ("him", "council_tax", "Z", D(2010, 1, 1), None, "Day"),
    ("her", "council_tax", "Z", D(2010, 1, 1), None, "Day"),
]
ACCOUNTS = {"old": "1001", "new": "2002", "him": "9009", "her": "9009"}


def _superseded(rows: Sequence[Row], accounts: dict[str, str]) -> dict[str, str]:
    from uprnlink.households.residence import end_superseded_stays, superseded_accounts

    recs = records(rows)
    council_tax = recs.filter(pl.col("source_dataset") == "council_tax").with_columns(
        pl.col("person_id").replace_strict(accounts, default=None).alias("account_ref")
    )
    periods = end_superseded_stays(
        residence_periods(recs, OFF), recs, superseded_accounts(council_tax, recs)
    )
    m = build_memberships(periods, people(rows))
    return dict(residents_on(m, ON).select("person_id", "household_token").rows())


def test_superseded_a_later_account_of_a_confirmed_occupier_ends_every_stay_there() -> None:
    assert _superseded(SUPERSEDED, ACCOUNTS) == {"new": "X", "him": "Z", "her": "Z"}
    # Joint parties share the reference: nobody has left.
    joint = {**ACCOUNTS, "new": "1001"}
    assert _superseded(SUPERSEDED, joint) == {"old": "X", "new": "X", "him": "Z", "her": "Z"}


def test_superseded_not_when_the_extracts_references_name_one_party_each() -> None:
    # References per party, not per account (no reference names two people): a later joint
    # party would look like a new account, so nothing is judged.
    per_party = {**ACCOUNTS, "her": "9010"}
    assert _superseded(SUPERSEDED, per_party)["old"] == "X"


def test_superseded_not_by_an_account_no_other_source_places_there() -> None:
    # The new account's party is known at X from council tax alone (a wrong UPRN, say).
    rows = [r for r in SUPERSEDED if r[:2] != ("new", "gp_registrations")]
    assert _superseded(rows, ACCOUNTS)["old"] == "X"


def test_superseded_not_when_the_person_is_seen_there_afterwards() -> None:
    rows = [*SUPERSEDED, ("old", "hospital_activity", "X", D(2025, 9, 1), None, "Ash")]
    assert _superseded(rows, ACCOUNTS)["old"] == "X"
    # Nor without account references (the field not supplied): nothing is judged.
    assert _superseded(SUPERSEDED, {})["old"] == "X"


# ------------------------------------------------------------------------------- care homes
# "gran" held the tenancy at H until 2024-02-29; her residential care package began the next
# day and still carries H. She lives in a care home now, not at H, attendance or not.
CARE = [
    ("gran", "housing_tenancies", "H", D(2001, 1, 1), D(2024, 2, 29), "Cole"),
    ("gran", "gp_registrations", "H", D(2001, 1, 1), None, "Cole"),
    ("gran", "adult_social_care", "H", D(2024, 3, 1), None, "Cole"),
    ("gran", "hospital_activity", "H", D(2025, 11, 2), D(2025, 11, 9), "Cole"),
    ("son", "council_tax", "H", D(2024, 3, 1), None, "Cole"),
]


def _in_care(
    rows: Sequence[Row], setting: str | None, communal: tuple[str, ...] = ()
) -> dict[str, str]:
    from uprnlink.households.residence import care_home_stays, end_stays_in_care

    recs = records(rows).with_columns(
        pl.col("household_token").is_in(list(communal)).fill_null(False).alias("is_communal")
    )
    care = care_home_stays(
        recs.filter(pl.col("source_dataset") == "adult_social_care").with_columns(
            pl.lit(setting, pl.Utf8).alias("support_setting")
        )
    )
    care_prio = (*RESIDENCE_SOURCES, *FALLBACK_SOURCES).index("adult_social_care")
    periods = end_stays_in_care(residence_periods(recs, OFF), care, care_prio)
    m = build_memberships(periods, people(rows))
    return dict(residents_on(m, ON).select("person_id", "household_token").rows())


def test_care_homes_a_residential_package_takes_the_person_out_of_the_private_home() -> None:
    assert _in_care(CARE, "COMMUNITY") == {"gran": "H", "son": "H"}
    assert _in_care(CARE, "RESIDENTIAL") == {"son": "H"}
    assert _in_care(CARE, "NURSING") == {"son": "H"}


def test_care_homes_a_stay_that_begins_after_the_package_is_kept() -> None:
    # She came home: a tenancy of her own at K after the package began.
    rows = [*CARE, ("gran", "housing_tenancies", "K", D(2025, 6, 1), None, "Cole")]
    assert _in_care(rows, "RESIDENTIAL")["gran"] == "K"


def test_care_homes_the_care_homes_own_address_stands() -> None:
    rows = [CARE[0], ("gran", "adult_social_care", "CH", D(2024, 3, 1), None, "Cole")]
    assert _in_care(rows, "RESIDENTIAL", communal=("CH",)) == {"gran": "CH"}


def test_care_homes_a_package_without_a_uprn_places_nobody_at_home() -> None:
    # The package has only the home's postcode; the timeline rules give it her home's UPRN.
    rows: list[Row] = [
        ("gran", "council_tax", "H", D(2001, 1, 1), None, "Cole", "AB1 1AA"),
        ("gran", "adult_social_care", None, D(2024, 3, 1), None, "Cole", "AB1 1AA"),
    ]
    assert _in_care(rows, "COMMUNITY") == {"gran": "H"}
    assert _in_care(rows, "RESIDENTIAL") == {}


def test_care_homes_a_package_that_ended_ends_nothing() -> None:
    # Four weeks of respite care in 2020: she went home.
    rows = [
        ("gran", "housing_tenancies", "H", D(2001, 1, 1), None, "Cole"),
        ("gran", "adult_social_care", "H", D(2020, 1, 1), D(2020, 1, 28), "Cole"),
    ]
    assert _in_care(rows, "RESIDENTIAL") == {"gran": "H"}


def test_a_childs_attendance_follows_the_relatives_final_stays() -> None:
    # The child's attendance stands while mum stays; mum's stay ends when a new occupier's
    # account supersedes hers, and the child's attendance is not left behind with strangers.
    from uprnlink.households.tables import household_memberships

    rows = [
        ("mum", "council_tax", "X", D(2015, 1, 1), None, "Ash"),
        ("kid", "hospital_activity", "X", D(2023, 3, 1), D(2023, 3, 1), "Ash"),
        ("new", "council_tax", "X", D(2024, 5, 1), None, "Bell"),
        ("new", "gp_registrations", "X", D(2024, 5, 20), None, "Bell"),
        *SUPERSEDED[4:],  # a couple on one account elsewhere
    ]
    born = {"mum": D(1980, 1, 1), "kid": D(2012, 1, 1), "new": D(1970, 1, 1)}
    born |= {"him": D(1960, 1, 1), "her": D(1961, 1, 1)}
    recs = records(rows).with_row_index("unique_id").with_columns(pl.col("unique_id").cast(pl.Utf8))
    facts = {
        "council_tax": recs.filter(pl.col("source_dataset") == "council_tax").select(
            "unique_id",
            "source_dataset",
            pl.col("person_id")
            .replace_strict({"mum": "1001", "new": "2002", "him": "9", "her": "9"})
            .alias("account_ref"),
        )
    }
    folk = people(rows).with_columns(
        pl.col("person_id").replace_strict(born, return_dtype=pl.Date).alias("dob")
    )
    areas = pl.DataFrame({"household_token": ["X", "Z"], "is_communal": [False, False]})
    rules = ResidenceRules(visit_days=730, learned_reliability=False)

    def on(date_: date, accounts: bool) -> dict[str, str]:
        r = ResidenceRules(
            visit_days=rules.visit_days, learned_reliability=False, superseded_accounts=accounts
        )
        m = household_memberships(recs, facts, folk, areas, date_, r)
        return dict(residents_on(m, date_).select("person_id", "household_token").rows())

    couple = {"him": "Z", "her": "Z"}
    assert on(D(2024, 1, 1), accounts=True) == {"mum": "X", "kid": "X", **couple}
    assert on(ON, accounts=False) == {"mum": "X", "kid": "X", "new": "X", **couple}
    assert on(ON, accounts=True) == {"new": "X", **couple}


# ----------------------------------------------------------------------------- reliability
# Two people confirmed at the same address by council tax and GP; benefits places one of them
# elsewhere. Benefits is confirmed for nobody, so it ranks last.
EVIDENCE = [
    ("a", "council_tax", "A", D(2020, 1, 1), None, "Hill"),
    ("a", "gp_registrations", "A", D(2020, 2, 1), None, "Hill"),
    ("b", "council_tax", "B", D(2019, 1, 1), None, "Lee"),
    ("b", "gp_registrations", "B", D(2019, 1, 1), None, "Lee"),
    ("b", "benefits_claims", "C", D(2023, 1, 1), None, "Lee"),
    ("b", "hospital_activity", "B", D(2026, 1, 5), None, "Lee"),
]


def test_confirmation_counts_people_placed_at_the_same_address_by_another_source() -> None:
    conf = confirmation_on(records(EVIDENCE), ON, visit_days=365)
    got = {r["source_dataset"]: (r["people"], r["confirmed"]) for r in conf.to_dicts()}
    assert got == {
        "benefits_claims": (1, 0),
        "council_tax": (2, 2),
        "gp_registrations": (2, 2),
        "hospital_activity": (1, 1),
    }
    # An attendance older than visit_days places nobody that day.
    old = confirmation_on(records(EVIDENCE), ON, visit_days=30)
    assert "hospital_activity" not in old.get_column("source_dataset").to_list()


def test_reliability_ranks_the_confirmed_source_first_whatever_the_registry_order() -> None:
    conf = confirmation_on(records(EVIDENCE), ON, visit_days=365)
    rank = reliability_rank(conf, ("benefits_claims", "gp_registrations", "council_tax"))
    assert rank["benefits_claims"] == 2
    assert {rank["gp_registrations"], rank["council_tax"]} == {0, 1}
    # Ties keep the given order; a source with no claims that day ranks last.
    assert rank["gp_registrations"] < rank["council_tax"]
    rank = reliability_rank(conf, ("housing_tenancies", "council_tax"))
    assert rank == {"council_tax": 0, "housing_tenancies": 1}


def test_reliability_breaks_a_same_day_conflict() -> None:
    rows = [
        ("p", "benefits_claims", "X", D(2024, 1, 1), None, "Ray"),
        ("p", "adult_social_care", "Y", D(2024, 1, 1), None, "Ray"),
    ]
    codes = (*RESIDENCE_SOURCES, *FALLBACK_SOURCES)
    periods = residence_periods(records(rows), OFF)
    by_authority = build_memberships(periods, people(rows))
    assert residents_on(by_authority, ON).get_column("household_token").to_list() == ["X"]
    care_first = {codes.index("adult_social_care"): 0, codes.index("benefits_claims"): 1}
    learned = build_memberships(periods, people(rows), care_first)
    assert residents_on(learned, ON).get_column("household_token").to_list() == ["Y"]


def test_signs_of_life_last_for_accounts_and_one_day_for_lists() -> None:
    signs = signs_of_life(records(EVIDENCE)).sort("person_id", "source_dataset")
    spans = {
        (r["person_id"], r["source_dataset"]): (r["seen_from"], r["seen_to"])
        for r in signs.to_dicts()
    }
    assert spans[("a", "council_tax")] == (D(2020, 1, 1), D(9999, 12, 31))
    assert spans[("a", "gp_registrations")] == (D(2020, 2, 1), D(2020, 2, 1))
    assert spans[("b", "hospital_activity")] == (D(2026, 1, 5), D(2026, 1, 5))


# ---------------------------------------------------------------------------------- config
def _config(tmp_path: Path, households: str) -> Path:
    demo = Path(__file__).resolve().parents[1] / "src/uprnlink/templates/demo.toml"
    text = demo.read_text()
    start = text.index("[households]")
    end = text.index("# ----", start)
    path = tmp_path / "demo.toml"
    path.write_text(text[:start] + households + "\n" + text[end:])
    return path


def test_config_households_section_is_read(tmp_path: Path) -> None:
    settings = read_settings(
        _config(
            tmp_path,
            '[households]\nstale_after_days = 730\nmove_sources = ["council_tax"]\n'
            "learned_reliability = false\n",
        )
    )
    assert settings.households.stale_after_days == 730
    assert settings.households.move_sources == ("council_tax",)
    assert settings.households.visit_days == 730
    assert settings.households.learned_reliability is False
    assert settings.households.superseded_accounts is True
    assert settings.households.care_homes is True


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("stale_after_days = -1", "stale_after_days must be a whole number >= 0"),
        ("visit_days = 0", "visit_days must be a whole number >= 1"),
        ('stale_after_days = "730"', "stale_after_days"),
        ('move_sources = ["gp_registrations"]', "not a lasting account source"),
        ('move_sources = "council_tax"', "move_sources must be a list"),
        ("stale_days = 3", "[households] stale_days: unknown setting"),
        (
            "single_person_min_share = 1.5",
            "single_person_min_share must be a number between 0 and 1",
        ),
    ],
)
def test_config_households_errors_name_the_setting(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"\[households\]") as err:
        read_settings(_config(tmp_path, "[households]\n" + body + "\n"))
    assert says in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------- reported per run
@pytest.mark.slow
def test_run_reports_how_often_each_source_is_confirmed(small_run: PipelineRun) -> None:
    from uprnlink.run.evaluation import evaluate_run

    meta = small_run.summary.metadata
    assert meta is not None
    rows = list(meta.residence_confirmed)
    assert {r["source_dataset"] for r in rows} == set(PERSON_SOURCES)
    for r in rows:
        assert 0 <= r["confirmed"] <= r["people"]
        assert r["share"] == round(r["confirmed"] / r["people"], 4)
    shares = {r["source_dataset"]: r["share"] for r in rows}
    # GP lists keep people who left: their addresses are the least often confirmed.
    assert shares["gp_registrations"] < shares["council_tax"]
    share = meta.single_person_discount_share
    assert share is not None and 0.0 <= share <= 1.0
    published = json.loads((small_run.settings.linked_dir / "run_metadata.json").read_text())
    assert published["residence_confirmed"] == rows
    # What the superseded accounts and care homes rules acted on (the demo's accounts are
    # shared by joint parties, and its care records name residential and nursing packages).
    applied = meta.residence_rules
    assert set(applied) == {"joint_reference_share", "accounts_superseded", "in_care_homes"}
    assert 0.05 <= applied["joint_reference_share"] <= 1.0
    assert applied["accounts_superseded"] > 0 and applied["in_care_homes"] > 0
    assert published["residence_rules"] == applied
    figures = dict(residence_rule_rows(meta, min_count=10))
    assert figures[RESIDENCE_RULE_LABELS["joint_reference_share"]] == (
        f"{applied['joint_reference_share']:.2f}"
    )
    report = (small_run.settings.out_dir / "quality_report.html").read_text()
    assert RESIDENCE_RULE_LABELS["in_care_homes"].split(" (")[0] in report
    shown = residence_rows(meta, min_count=10)
    assert [r[0] for r in shown] == [r["source_dataset"] for r in rows]
    result = evaluate_run(small_run.settings, small_run.root / "demo" / "truth")
    assert result["residence_confirmed"] == rows
    assert "Residence evidence: addresses on the reference date" in result["print_table"]
