"""The clerical review loop: which pairs are queued, labels kept append-only, labels used by
the next link (must-link, cannot-link `clerical`), scored by `uprnlink evaluate`, and the
portal's Review page for data engineers only (in a headless Chromium too)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import urllib.error
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from uprnlink.linkage.predict import link_people
from uprnlink.linkage.review import (
    model_label_accuracy,
    review_floor,
    select_review_pairs,
    sparse_cluster_pairs,
    split_pairs,
)
from uprnlink.review import (
    QUEUE_SCHEMA,
    ReviewError,
    append_label,
    current_labels,
    pair_id_of,
    pending_pairs,
    read_labels,
    read_queue,
    splink_labels,
)
from uprnlink.zones import Zones

FIXED = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _pairs(rows: list[tuple[int, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"unique_id_l": pl.Int64, "unique_id_r": pl.Int64, "match_probability": pl.Float64},
        orient="row",
    )


def _clusters(mapping: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"unique_id": list(mapping), "cluster_id": list(mapping.values())},
        schema={"unique_id": pl.Int64, "cluster_id": pl.Int64},
    )


# ------------------------------------------------------------------------ queue selection


def test_the_queue_takes_pairs_nearest_the_threshold_on_both_sides() -> None:
    above = _pairs([(1, 2, 0.999999), (3, 4, 0.96), (5, 6, 0.9999)])
    below = _pairs([(7, 8, 0.94), (9, 10, 0.6)])
    clusters = _clusters({i: (i + 1) // 2 for i in range(1, 11)})
    queue = select_review_pairs(above, below, clusters, 0.95)
    near = queue.filter(pl.col("reason") == "near_threshold")
    # Closest in match weight first: 0.94 (0.28 bits under 0.95), 0.96 (0.34 over); 0.999999
    # comes last.
    assert near.select("a", "b").rows()[:2] == [(7, 8), (3, 4)]
    assert near.rows()[-1][:2] == (1, 2)
    assert review_floor(0.95) == pytest.approx(19 / 16 / (1 + 19 / 16))


def test_the_queue_takes_split_and_sparse_clusters() -> None:
    # 1-2 linked by the model but apart after clustering; 3-4-5-6 a chain of four (3 of 6
    # possible pairs: density 0.5 is not sparse), 7-8-9-10-11 a chain of five (4 of 10).
    above = _pairs(
        [
            (1, 2, 0.99),
            (3, 4, 0.99),
            (4, 5, 0.98),
            (5, 6, 0.99),
            (7, 8, 0.999),
            (8, 9, 0.97),
            (9, 10, 0.999),
            (10, 11, 0.999),
        ]
    )
    clusters = _clusters({1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 3, 7: 7, 8: 7, 9: 7, 10: 7, 11: 7})
    assert split_pairs(above, clusters, 10).select("a", "b").rows() == [(1, 2)]
    # The weakest link of the sparse chain.
    assert sparse_cluster_pairs(above, clusters, 10).select("a", "b").rows() == [(8, 9)]
    queue = select_review_pairs(above, _pairs([]), clusters, 0.95)
    assert queue.select("a", "b").is_unique().all()
    assert set(queue.get_column("reason")) == {"near_threshold", "split_cluster", "low_density"}


# ----------------------------------------------------------------------- label storage


def _queue_zone(tmp_path: Path, pairs: list[tuple[str, str]]) -> Zones:
    zones = Zones(SimpleNamespace(trusted_dir=tmp_path / "trusted"))  # type: ignore[arg-type]
    rows = []
    for a, b in pairs:
        row = dict.fromkeys(QUEUE_SCHEMA)
        row.update(
            pair_id=pair_id_of(a, b),
            reason="near_threshold",
            match_probability=0.9,
            unique_id_l=a,
            unique_id_r=b,
            forename_l="ANN",
            forename_r="ANNE",
        )
        rows.append(row)
    zones.review_queue.parent.mkdir(parents=True)
    pl.DataFrame(rows, schema=QUEUE_SCHEMA).write_parquet(
        zones.review_queue, metadata={"uprnlink_key_id": "kid-test"}
    )
    return zones


def test_labels_are_appended_never_rewritten(tmp_path: Path) -> None:
    zones = _queue_zone(tmp_path, [("ka", "kb"), ("kc", "kd")])
    first, second = read_queue(zones).get_column("pair_id").to_list()
    assert pair_id_of("kb", "ka") == first  # either order, one id
    append_label(zones, first, "match", "eng", clock=lambda: FIXED)
    files = sorted(zones.review_labels.glob("*.jsonl"))
    before = files[0].read_bytes()
    append_label(zones, first, "non_match", "eng2", clock=lambda: FIXED)
    append_label(zones, second, "match", "eng", clock=lambda: FIXED)
    after = files[0].read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == 3  # nothing rewritten
    labels = read_labels(zones, "kid-test")
    assert labels.height == 3 and read_labels(zones, "kid-other").height == 0
    now = current_labels(labels)
    assert dict(now.select("pair_id", "label").rows()) == {first: "non_match", second: "match"}
    assert pending_pairs(read_queue(zones), labels).height == 0
    table = splink_labels(labels)
    assert sorted(table.get_column("clerical_match_score").to_list()) == [0.0, 1.0]
    line = json.loads(after.splitlines()[0])
    assert line["unique_id_l"] == "ka" and line["reviewer"] == "eng" and "ANN" not in str(line)


def test_labels_refuse_what_is_not_queued_or_not_a_label(tmp_path: Path) -> None:
    zones = _queue_zone(tmp_path, [("ka", "kb")])
    pair = read_queue(zones).item(0, "pair_id")
    with pytest.raises(ReviewError, match="rule=label"):
        append_label(zones, pair, "maybe", "eng")
    with pytest.raises(ReviewError, match="rule=not_queued"):
        append_label(zones, "0" * 16, "match", "eng")
    with pytest.raises(ReviewError, match="rule=pair_id"):
        append_label(zones, "../../etc", "match", "eng")
    assert not zones.review_labels.exists()


# ----------------------------------------------------------------- labels in the link


@pytest.fixture(scope="module")
def relinked(linked_synthetic_records: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The linkage tests' records linked again with the same model, with two labels: two
    records of two people labelled match, and a queued pair of one person labelled non-match.

    A match label is a must-link edge, not an override: two different NHS numbers or dates of
    birth still keep two records apart (the reviewer sees neither NHS number)."""
    from tests.test_linkage import SETTINGS, synthetic_records

    first = linked_synthetic_records
    records = synthetic_records()
    person = dict(first.clusters.select("unique_id", "person_id").iter_rows())
    queue = first.review
    # A council tax record without a date of birth (nothing for a cannot-link rule to hold)
    # and another person's record of the same surname: far under the threshold, never queued.
    named = records.join(first.clusters.select("unique_id", "person_id"), on="unique_id")
    undated = named.filter(pl.col("dob").is_null()).sort("unique_id").row(0, named=True)
    other = (
        named.filter(
            (pl.col("surname") == undated["surname"])
            & (pl.col("person_id") != undated["person_id"])
        )
        .sort("unique_id")
        .row(0, named=True)
    )
    a, b = undated["unique_id"], other["unique_id"]
    apart = {"unique_id_l": a, "unique_id_r": b}
    together = queue.filter(
        pl.struct("unique_id_l", "unique_id_r").map_elements(
            lambda s: person[s["unique_id_l"]] == person[s["unique_id_r"]], return_dtype=pl.Boolean
        )
    ).row(0, named=True)
    labels = pl.DataFrame(
        [
            (apart["unique_id_l"], apart["unique_id_r"], "match"),
            (together["unique_id_l"], together["unique_id_r"], "non_match"),
        ],
        schema=["unique_id_l", "unique_id_r", "label"],
        orient="row",
    )
    work = tmp_path_factory.mktemp("relinked")
    again = link_people(records, SETTINGS, work_dir=work, model=first.model, review_labels=labels)
    return SimpleNamespace(
        first=first, again=again, apart=apart, together=together, labels=labels, work=work
    )


def test_the_link_queues_uncertain_pairs_of_records(relinked: Any) -> None:
    queue = relinked.first.review
    assert queue.height > 0
    assert set(queue.columns) == {"unique_id_l", "unique_id_r", "match_probability", "reason"}
    assert queue.get_column("unique_id_l").str.starts_with("r").all()  # record keys
    reasons = queue.get_column("reason").to_list()
    assert set(reasons) <= {"near_threshold", "split_cluster", "low_density"}
    order = {"split_cluster": 0, "low_density": 1, "near_threshold": 2}
    assert reasons == sorted(reasons, key=order.__getitem__)  # the queue's order is kept
    assert relinked.first.labels_applied is None  # no labels, nothing changed


def test_labels_are_used_as_must_link_and_cannot_link(relinked: Any) -> None:
    again = relinked.again
    person = dict(again.clusters.select("unique_id", "person_id").iter_rows())
    a, t = relinked.apart, relinked.together
    assert person[a["unique_id_l"]] == person[a["unique_id_r"]]  # must-link joined them
    assert person[t["unique_id_l"]] != person[t["unique_id_r"]]  # cannot-link split them
    assert again.labels_applied == {"labels": 2, "match": 1, "non_match": 1, "not_applied": 0}
    assert again.cannot_link["by_rule"]["clerical"] == 1
    # Only those two pairs' people changed.
    first = relinked.first.clusters.group_by("person_id").agg(pl.col("unique_id").sort())
    second = again.clusters.group_by("person_id").agg(pl.col("unique_id").sort())
    moved = set(map(tuple, first.get_column("unique_id").to_list())) ^ set(
        map(tuple, second.get_column("unique_id").to_list())
    )
    touched = {a["unique_id_l"], a["unique_id_r"], t["unique_id_l"], t["unique_id_r"]}
    before = dict(relinked.first.clusters.select("unique_id", "person_id").iter_rows())
    affected = {u for u, p in before.items() if p in {before[k] for k in touched}}
    assert moved and all(set(group) <= affected for group in moved)


def test_splink_scores_the_labels(relinked: Any) -> None:
    from tests.test_linkage import SETTINGS, synthetic_records

    table = relinked.labels.select(
        "unique_id_l",
        "unique_id_r",
        (pl.col("label") == "match").cast(pl.Float64).alias("clerical_match_score"),
    )
    found = model_label_accuracy(
        synthetic_records(), table, relinked.first.model, SETTINGS, 0.95, relinked.work
    )
    assert found is not None and found["pairs"] == 2
    assert found["tp"] + found["fn"] == 1 and found["fp"] + found["tn"] == 1
    # Splink scores the non-match pair (one person to the model) a match and the match pair
    # (two people to it) not: precision and recall 0 on these labels, as the model stands.
    assert found["fp"] == (relinked.together["match_probability"] >= 0.95) == 1
    assert found["fn"] == 1 and found["precision"] == 0.0 and found["recall"] == 0.0


# ---------------------------------------------------------------- a run and the next one


def _cli(*args: str) -> tuple[int, str, str]:
    from uprnlink import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def reviewed_run(base_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shared base run copied; 50 queued pairs labelled as the synthetic truth says (one
    of them relabelled twice through the CLI), evaluated before and after the next run."""
    from benchmarks.review_loop import label_from_truth

    from uprnlink.run.evaluation import evaluate_run
    from uprnlink.run.runner import run_all
    from uprnlink.settings import read_settings

    config = base_run.copy(tmp_path_factory.mktemp("reviewed"))
    settings = read_settings(config)
    truth = config.parent.parent / "demo" / "truth"
    before = evaluate_run(settings, truth)
    zones = Zones(settings)
    queue = read_queue(zones)
    listed = _cli("review", "list", "--config", str(config), "--limit", "3")
    given = label_from_truth(settings, truth, 50)
    # A reviewer changes their mind on one of them through the CLI: the wrong label first,
    # then the right one (the synthetic truth's), so all 50 current labels are right.
    first = current_labels(read_labels(zones)).row(0, named=True)
    wrong = "non_match" if first["label"] == "match" else "match"
    labelled = _cli("review", "label", first["pair_id"], wrong, "--config", str(config))
    again = _cli("review", "label", first["pair_id"], first["label"], "--config", str(config))
    exported = config.parent.parent / "labels.csv"
    export = _cli("review", "export", "--out", str(exported), "--config", str(config))
    summary = run_all(str(config), run_id="20260102T000000Z-0002")
    after = evaluate_run(settings, truth)
    return SimpleNamespace(
        config=config,
        settings=settings,
        queue=queue,
        listed=listed,
        given=given,
        first=first,
        cli=(labelled, again, export),
        exported=exported,
        summary=summary,
        before=before,
        after=after,
    )


def test_a_run_queues_pairs_with_only_what_a_reviewer_needs(reviewed_run: Any) -> None:
    queue = reviewed_run.queue
    assert 0 < queue.height <= 200
    assert queue.get_column("pair_id").is_unique().all()
    assert set(queue.columns) == set(QUEUE_SCHEMA)
    assert not any(re.search("nhs|uprn|address", c) for c in queue.columns)
    # Postcode districts only (the outward code), no full postcode.
    assert queue.get_column("district_l").drop_nulls().str.contains(" ").sum() == 0
    code, out, _ = reviewed_run.listed
    assert code == 0 and f"{queue.height} pairs to review" in out
    assert out.count("pair ") == 3


def test_the_cli_labels_append_and_are_audited(reviewed_run: Any) -> None:
    (code1, out1, _), (code2, _, _), (code3, out3, _) = reviewed_run.cli
    assert code1 == code2 == code3 == 0 and "the next run uses it" in out1
    zones = Zones(reviewed_run.settings)
    labels = read_labels(zones)
    assert labels.height == 52  # 50 + the CLI's two on one of them: every line kept
    first = reviewed_run.first
    mine = labels.filter(pl.col("pair_id") == first["pair_id"]).get_column("label").to_list()
    assert len(mine) == 3 and mine[0] == mine[2] != mine[1]
    assert current_labels(labels).height == 50
    exported = pl.read_csv(reviewed_run.exported)
    assert exported.columns == ["unique_id_l", "unique_id_r", "clerical_match_score"]
    assert exported.height == 50 and "50 pairs" in out3
    from uprnlink.governance.audit import read_audit_events

    events = read_audit_events(Zones(reviewed_run.settings).audit_log)
    labelled = [e.to_dict() for e in events if e.event == "review.labelled"]
    assert len(labelled) == 2 and labelled[-1]["data"]["label"] == first["label"]
    assert reviewed_run.first["unique_id_l"] not in json.dumps(labelled)
    code, _, err = _cli(
        "review", "export", "--out", str(reviewed_run.settings.out_dir / "x.csv"),
        "--config", str(reviewed_run.config),
    )  # fmt: skip
    assert code != 0 and "rule=published_zone" in err


def test_the_next_run_uses_the_labels(reviewed_run: Any) -> None:
    linkage = reviewed_run.summary.linkage
    assert linkage["reused"] is False  # new labels link afresh
    applied = linkage["review"]["labels_applied"]
    assert applied["labels"] == 50 and applied["match"] + applied["non_match"] <= 50
    from uprnlink.privacy.keys import load_run_key
    from uprnlink.privacy.trusted import read_trusted
    from uprnlink.run.evaluation import label_scores

    settings = reviewed_run.settings
    clusters = read_trusted(Zones(settings).clusters, load_run_key(settings))
    scores = label_scores(clusters, current_labels(read_labels(Zones(settings))))
    # Every non-match label is kept apart; match labels join unless a hard rule (two NHS
    # numbers, two dates of birth) keeps them apart.
    assert scores["fp"] == 0
    review = reviewed_run.after["review"]
    assert review["labels"] == 50 and review["clusters"]["fp"] == 0
    assert review["labels_agreeing_with_truth"] == 50
    assert review["model"] is not None and review["model"]["pairs"] == 50
    assert "Clerical labels (50 pairs" in reviewed_run.after["print_table"]
    before, after = reviewed_run.before["pairwise"], reviewed_run.after["pairwise"]
    print(
        f"\npeople P/R before {before['precision']:.4f}/{before['recall']:.4f}, after 50 labels "
        f"{after['precision']:.4f}/{after['recall']:.4f}; labels {reviewed_run.given}; "
        f"clusters on labels {review['clusters']}; model on labels {review['model']}"
    )
    assert after["f1"] >= before["f1"]


# ---------------------------------------------------------------------------- the portal


def _zones_of(svc: Any) -> Zones:
    from uprnlink.settings import read_settings

    return Zones(read_settings(svc.config))


def test_the_review_page_is_for_data_engineers_only(query_service: Any) -> None:
    from tests.test_portal import _open, _portal_session, _post

    svc = query_service
    zones = _zones_of(svc)
    queue = read_queue(zones)
    assert queue.height > 0
    pair = pending_pairs(queue, read_labels(zones)).item(0, "pair_id")
    ana, ana_csrf = _portal_session(svc, svc.tokens["analyst"])
    with pytest.raises(urllib.error.HTTPError) as page:
        ana.open(svc.url + "/portal/review", timeout=30)
    assert page.value.code == 403
    form = {"label": "match", "csrf": ana_csrf}
    assert _post(ana, svc, f"/portal/review/{pair}", form, svc.url) == 403
    assert 'href="/portal/review"' not in _open(ana, svc, "/portal/")
    assert read_labels(zones).height == 0
    refused = [e for e in svc.audit_events() if e["event"] == "portal.refused"]
    assert any(e["data"].get("page") == "review" for e in refused)

    eng, csrf = _portal_session(svc, svc.tokens["data_engineer"])
    html = _open(eng, svc, "/portal/review")
    assert f'id="pair-{pair}"' in html and 'href="/portal/review"' in html
    pairs_html = html.split('id="review-counts"')[1]  # past the notice, which names them
    assert not re.search(r"nhs|uprn|\b\d{10,12}\b", pairs_html, re.IGNORECASE)
    first = queue.filter(pl.col("pair_id") == pair).row(0, named=True)
    assert first["surname_l"] in html  # names are what the reviewer compares
    # No CSRF token, another origin, not a label, not queued: refused, nothing written.
    assert _post(eng, svc, f"/portal/review/{pair}", {"label": "match"}, svc.url) == 403
    assert _post(eng, svc, f"/portal/review/{pair}", {**form, "csrf": csrf}, "http://x.y") == 403
    assert _post(eng, svc, f"/portal/review/{pair}", {"label": "yes", "csrf": csrf}, svc.url) == 400
    assert _post(eng, svc, f"/portal/review/{'0' * 16}", {**form, "csrf": csrf}, svc.url) == 400
    assert read_labels(zones).height == 0
    assert _post(eng, svc, f"/portal/review/{pair}", {**form, "csrf": csrf}, svc.url) == 200
    labels = read_labels(zones)
    assert labels.rows(named=True)[0]["reviewer"] == "eng" and labels.item(0, "label") == "match"
    assert f'id="pair-{pair}"' not in _open(eng, svc, "/portal/review")  # labelled: gone
    names = [e["event"] for e in svc.audit_events()]
    assert "review.viewed" in names and "review.labelled" in names
    logged = [e for e in svc.audit_events() if e["event"] == "review.labelled"][-1]
    assert logged["data"]["pair"] == pair and first["unique_id_l"] not in json.dumps(logged)


@pytest.mark.browser
def test_a_reviewer_labels_a_pair_in_a_headless_browser(query_service: Any, tmp_path: Path) -> None:
    from tests.test_portal import CHROMIUM, CHROMIUM_FLAGS

    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    svc = query_service
    zones = _zones_of(svc)
    before = read_labels(zones).height
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(svc.url + "/portal/login")
            page.fill("#token", svc.tokens["data_engineer"])
            page.click("#sign-in")
            page.wait_for_selector("#whoami", timeout=60_000)
            page.click("#nav-review")
            page.wait_for_selector("#review-counts")
            pending = int(page.text_content("#pending") or "0")
            first = page.locator("div.review-pair").first
            pair = (first.get_attribute("id") or "").removeprefix("pair-")
            assert "postcode district" in (first.text_content() or "")
            page.screenshot(path=str(tmp_path / "portal-review.png"), full_page=True)
            page.click(f"#non-match-{pair}")
            page.wait_for_selector("#review-counts")
            assert int(page.text_content("#pending") or "0") == pending - 1
            assert page.locator(f"#pair-{pair}").count() == 0
        finally:
            browser.close()
    labels = read_labels(zones)
    assert labels.height == before + 1
    assert labels.rows(named=True)[-1]["pair_id"] == pair
    assert labels.rows(named=True)[-1]["label"] == "non_match"
