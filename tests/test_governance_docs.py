"""The governance policy parses, names only real views, and its document index is complete."""

from __future__ import annotations

import re
import tomllib

import pytest

from uprnlink.publish.database import MACROS, DisclosurePolicy, read_policy, views_sql
from uprnlink.settings import PROJECT_ROOT

GOVERNANCE = PROJECT_ROOT / "governance"
POLICY_PATH = GOVERNANCE / "policy.toml"
ROLES = ("data_engineer", "analyst", "ig_lead", "output_checker")
ANALYST_VIEWS = {
    "households",
    "household_composition",
    "household_circumstances",
    "household_health",
    "communal_establishments",
    "people",
    "person_analysis",
    "household_snapshots",
    "area_summary",
    "ward_summary",
    "decile_summary",
    "deprivation_summary",
    "run_info",
}
ANALYST_MACROS = {"households_as_at", "ward_summary_as_at", "decile_summary_as_at"}
_VIEW_RE = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.fixture(scope="module")
def policy() -> dict:
    return tomllib.loads(POLICY_PATH.read_text(encoding="utf-8"))


def published_views() -> set[str]:
    names = set()
    for sql in views_sql(DisclosurePolicy()):
        match = _VIEW_RE.search(sql)
        assert match, sql
        names.add(match.group(1))
    return names


def test_policy_parses_and_keeps_the_disclosure_rule(policy):
    assert policy["disclosure"] == {
        "preset": "threshold_10",
        "min_count": 10,
        "suppress_zero": False,
        "secondary": True,
        "round_to": 1,
        "age_bands": [*range(0, 85, 5), 85],
        "death_end_precision": "month",
        "max_unique_share": 0.05,
    }
    assert read_policy(POLICY_PATH) == DisclosurePolicy(min_count=10, suppress_zero=False)
    assert set(policy["outputs"].values()) == {False}
    assert policy["retention"] == {
        "landing_days": 90,
        "quarantine_days": 90,
        "trusted_days": 365,
        "published_releases": 3,
        "enforce": "report",
    }
    assert policy["key"]["rotation_months"] == 12


def test_every_role_names_only_views_the_publisher_creates(policy):
    views = published_views()
    assert views == ANALYST_VIEWS  # a new view needs a decision about who may see it
    assert set(MACROS) == ANALYST_MACROS
    views |= set(MACROS)
    assert set(policy["roles"]) == set(ROLES)
    for role, spec in policy["roles"].items():
        named = spec["views"]
        assert named and len(named) == len(set(named)), role
        for view in named:
            assert view == "*" or view in views, f"role {role} names unknown view {view!r}"


def test_role_grants(policy):
    roles = policy["roles"]
    assert set(roles["analyst"]["views"]) == ANALYST_VIEWS | ANALYST_MACROS
    assert roles["data_engineer"]["views"] == ["*"]
    assert roles["ig_lead"] == {"views": ["run_info"], "audit": True}
    assert roles["output_checker"] == {"views": ["run_info"], "check_outputs": True}
    assert not roles["analyst"].get("row_level_outputs", False)
    assert not any(v.startswith("linked.") for v in roles["analyst"]["views"])


def test_every_document_in_the_index_exists():
    readme = (GOVERNANCE / "README.md").read_text(encoding="utf-8")
    links = [t for t in _LINK_RE.findall(readme) if not re.match(r"[a-z]+:", t)]
    expected = {
        "policy.toml",
        "key-custody.md",
        "data-flow.md",
        "dpia-outline.md",
        "roles.md",
        "../docs/governance.md",
    }
    assert expected <= set(links)
    for target in links:
        assert (GOVERNANCE / target).is_file(), f"governance/README.md links to missing {target}"


@pytest.mark.parametrize(
    "doc", [*sorted(p.name for p in GOVERNANCE.glob("*.md")), "../docs/governance.md"]
)
def test_relative_links_in_governance_documents_resolve(doc):
    path = GOVERNANCE / doc
    for target in _LINK_RE.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        assert (path.parent / target).exists(), f"{doc} links to missing {target}"


def test_documents_name_the_commands_that_exist():
    """The key and audit commands the documents teach are the CLI's real subcommands."""
    from uprnlink.cli import build_parser

    parser = build_parser()
    for argv in (
        ["key", "show", "--file", "k"],
        ["key", "rotate", "--file", "k"],
        ["audit", "verify", "--config", "c"],
        ["audit", "verify", "--config", "c", "--seed-file", "s", "--witness-file", "w"],
        ["audit", "seal", "init", "--config", "c"],
        ["audit", "seal", "status", "--config", "c"],
        ["audit", "report", "--config", "c", "--format", "html", "--out", "a.html"],
        ["run", "--config", "c", "--rebuild"],
    ):
        parser.parse_args(argv)
    custody = (GOVERNANCE / "key-custody.md").read_text(encoding="utf-8")
    for command in ("key init", "key show", "key check", "key rotate", "run --config"):
        assert f"uprnlink {command}" in custody
