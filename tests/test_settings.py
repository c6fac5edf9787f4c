"""Run configuration and contracts: typed, checked, with clear errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest.contracts import find_contract, read_contract
from uprnlink.settings import PROJECT_ROOT, read_settings
from uprnlink.sources import PERSON_SOURCES

DEMO = PROJECT_ROOT / "config" / "demo.toml"


def test_demo_config_maps_every_required_contract_field() -> None:
    s = read_settings(DEMO)
    assert s.reference_date == date(2026, 3, 31)
    assert set(s.sources) == set(PERSON_SOURCES)
    assert s.landing_dir == (PROJECT_ROOT / "demo" / "landing").resolve()
    for source in s.sources.values():
        contract = find_contract(s.schemas_dir, source.contract, source.contract_version)
        required = {f.name for f in contract.fields if f.required}
        assert required <= set(source.columns), source.name
    benefits = s.sources["benefits_claims"]
    assert benefits.date_formats_for("dob") == ["%d-%b-%Y"]


def test_every_contract_loads_and_is_versioned() -> None:
    for path in sorted((PROJECT_ROOT / "schemas").glob("*.v*.toml")):
        c = read_contract(path)
        assert path.name == f"{c.name}.v{c.major}.toml"
        assert c.field_names[0] in {"record_id", "uprn", "lsoa"}


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


BASE = """
[run]
landing_dir = "l"
work_dir = "w"
out_dir = "o"
reference_date = "2026-03-31"
[sources.gp_registrations]
path = "gp.csv"
date_format = ["%Y%m%d", "%d/%m/%Y"]
[sources.gp_registrations.columns]
record_id = "ID"
"""


def test_relative_paths_resolve_from_the_config_folder(tmp_path: Path) -> None:
    s = read_settings(_config(tmp_path, BASE))
    assert s.landing_dir == tmp_path / "l"
    assert s.sources["gp_registrations"].path == tmp_path / "l" / "gp.csv"
    assert s.sources["gp_registrations"].date_formats == ("%Y%m%d", "%d/%m/%Y")


@pytest.mark.parametrize(
    "change,message",
    [
        (("[run]", "[run]\nlanding = 'x'"), "unknown setting"),
        (('reference_date = "2026-03-31"', 'reference_date = "31/03/2026"'), "YYYY-MM-DD"),
        (('[sources.gp_registrations.columns]\nrecord_id = "ID"', ""), "columns] is missing"),
        (('date_format = ["%Y%m%d", "%d/%m/%Y"]', "date_format = 3"), "date format"),
        (("[run]", "[linkage]\nmatch_threshold = 1.5\n[run]"), "between 0 and 1"),
        (("[run]", '[linkage]\nmatch_threshold = "high"\n[run]'), "match_threshold"),
        (("[run]", "[linkage]\nblock_cap = 1\n[run]"), "block_cap must be 0"),
        (
            ("[run]", '[linkage]\nmatch_threshold = "auto"\nthreshold_mode = "fixed"\n[run]'),
            "contradicts threshold_mode",
        ),
        (("date_format = [", "skip_lines = -1\ndate_format = ["), "skip_lines must be"),
        (("date_format = [", "skip_lines = true\ndate_format = ["), "skip_lines must be"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_settings(_config(tmp_path, BASE.replace(*change)))


def test_match_threshold_auto_chooses_the_threshold_from_the_data(tmp_path: Path) -> None:
    auto = read_settings(
        _config(tmp_path, BASE.replace("[run]", '[linkage]\nmatch_threshold = "auto"\n[run]'))
    )
    assert auto.linkage.threshold_mode == "auto"
    assert auto.linkage.match_threshold == 0.95  # the fallback when nothing is scored
    assert read_settings(_config(tmp_path, BASE)).linkage.threshold_mode == "fixed"


def test_missing_contract_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contract"):
        find_contract(PROJECT_ROOT / "schemas", "parking_permits")


def test_the_policy_is_read_once_per_version_and_an_unknown_section_is_named(
    tmp_path: Path,
) -> None:
    """Every section's reader shares one parse of the governance policy; a changed file is
    read again; a misspelt section is refused by name (its defaults would silently apply)."""
    from uprnlink.errors import ConfigError, PublishError
    from uprnlink.resources import default_policy_path
    from uprnlink.settings import read_policy_file

    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_path().read_text())
    first = read_policy_file(policy)
    assert set(first) <= {"disclosure", "outputs", "retention", "deliveries", "roles", "audit",
                          "key", "tables", "output_checking"}  # fmt: skip
    first["tables"]["threshold"] = -1  # a caller's change never reaches the next reader
    assert read_policy_file(policy)["tables"].get("threshold") != -1
    policy.write_text(policy.read_text() + "\n[table]\nthreshold = 5\n")
    with pytest.raises(ConfigError, match=r"unknown section \[table\]"):
        read_policy_file(policy)
    with pytest.raises(PublishError, match="unknown section"):
        read_policy_file(policy, PublishError)
    policy.write_text("[tables\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_policy_file(policy)
