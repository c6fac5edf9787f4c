"""Run configuration and contracts: typed, checked, with clear errors."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from uprnlink.errors import ConfigError, ContractError
from uprnlink.ingest.contracts import find_contract, read_contract
from uprnlink.settings import (
    PROJECT_ROOT,
    HouseholdSettings,
    LinkageSettings,
    ServiceSettings,
    read_settings,
)
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
        (
            ('[sources.gp_registrations.columns]\nrecord_id = "ID"', ""),
            "needs columns \\(map each contract field",
        ),
        (('date_format = ["%Y%m%d", "%d/%m/%Y"]', "date_format = 3"), "date format"),
        (("[run]", "[linkage]\nmatch_threshold = 1.5\n[run]"), "between 0 and 1"),
        (("[run]", '[linkage]\nmatch_threshold = "high"\n[run]'), "match_threshold"),
        (("[run]", "[linkage]\nblock_cap = 1\n[run]"), "block_cap must be 0"),
        (("[run]", "[linkage]\npair_budget = -1.0\n[run]"), "pair_budget"),
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
    from uprnlink.policy import read_governance_policy
    from uprnlink.resources import default_policy_path

    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_path().read_text())
    first = read_governance_policy(policy)
    assert set(first.model_fields_set) <= {"disclosure", "outputs", "retention", "deliveries",
                                           "roles", "audit", "key", "tables",
                                           "output_checking"}  # fmt: skip
    with pytest.raises(ValidationError):  # a caller's change never reaches the next reader
        first.tables.threshold = -1  # type: ignore[misc]
    assert read_governance_policy(policy) is first  # one validation per version of the file
    policy.write_text(policy.read_text() + "\n[table]\nthreshold = 5\n")
    with pytest.raises(ConfigError, match=r"unknown section \[table\]"):
        read_governance_policy(policy)
    with pytest.raises(PublishError, match="unknown section"):
        read_governance_policy(policy, PublishError)
    policy.write_text("[tables\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_governance_policy(policy)


# ------------------------------------------------------- one typed model, one-line errors
SENTINEL = "zzSENTINELzz"  # a value that must never be echoed in an error


def _with(where: str, snippet: str) -> str:
    """BASE with `snippet` written into [run], into the source's table, or as new tables."""
    if where == "run":
        return BASE.replace("[run]\n", f"[run]\n{snippet}\n", 1)
    if where == "source":
        return BASE.replace(
            "[sources.gp_registrations]\n", f"[sources.gp_registrations]\n{snippet}\n"
        )
    return BASE + snippet + "\n"


CONFIG_MISTAKES = [
    ("run", "service_period_months = 0", "[run] service_period_months must be a whole number >= 1"),
    ("run", "name = 3", "[run] name must be a string"),
    ("run", "schemas_dir = 3", "[run] schemas_dir must be a path"),
    ("end", "[key]\npassphrase_env = 5", "[key] passphrase_env must be an environment variable"),
    ("end", "[audit]\nwitness_syslog = 3", "[audit] witness_syslog must be true, false or a socket"),
    ("end", f'[release]\nproject = "{SENTINEL} !"', "[release] project must be 1-64 letters"),
    ("end", "[service]\nport = 0", "[service] port must be a whole number >= 1"),
    ("end", "[service]\ntimeout_seconds = 4000", "[service] timeout_seconds must be a number between 0 and 3600"),
    ("end", "[service]\nuser_queue = -1", "[service] user_queue must be a whole number >= 0"),
    ("end", '[service]\nhost = ""', "[service] host must be a non-empty string"),
    ("end", f'[linkage]\nbackend = "{SENTINEL}"', "[linkage] backend must be one of duckdb, spark"),
    ("end", f'[linkage]\nthreshold_mode = "{SENTINEL}"', "[linkage] threshold_mode must be one of fixed, auto"),
    ("end", f'[linkage]\ntrain_from_labels = "{SENTINEL}"', "[linkage] train_from_labels must be one of off, m, threshold"),
    ("end", "[linkage]\npredict_chunk_records = 0", "[linkage] predict_chunk_records must be a whole number >= 1"),
    ("end", "[linkage]\nspark_conf = 3", "[linkage] spark_conf must be a table of settings"),
    ("end", f'[linkage]\nbaselines = "{SENTINEL}"', "[linkage] baselines must be true or false"),
    ("end", f"[linkage.{SENTINEL}]\nx = 1", f"[linkage] {SENTINEL}: unknown setting"),
    ("end", "[households]\nvisit_days = 0", "[households] visit_days must be a whole number >= 1"),
    ("source", f'format = "{SENTINEL}"', "[sources.gp_registrations] format must be one of csv, excel, parquet"),
    ("source", "skip_lines = -1", "[sources.gp_registrations] skip_lines must be a whole number >= 0"),
    ("source", f'version = "{SENTINEL}"', "[sources.gp_registrations] version must be a whole number"),
    ("source", "sheet = 2", '[sources.gp_registrations] sheet is for a workbook (format = "excel")'),
    ("source", f'person_groups = ["{SENTINEL}"]', "[sources.gp_registrations] person_groups must be two or more"),
    ("source", 'person_groups = ["P1", "P1"]', "[sources.gp_registrations] person_groups: each tag must be unique"),
    ("end", "nhs_number = 3", "[sources.gp_registrations.columns] nhs_number must be a column name, a list"),
    ("end", f'dob = {{ column = "D", name_order = "{SENTINEL}" }}',
     "[sources.gp_registrations.columns.dob] name_order must be one of surname_first, forename_first"),
    ("end", 'dob = { column = "D", from_rank = 5 }',
     "[sources.gp_registrations.columns.dob] from_rank must be the number of areas ranked"),
    ("end", 'dob = ["D"]', "[sources.gp_registrations.columns] dob: a composite value needs two"),
    ("end", 'dob = { column = ["D", "D"] }', "[sources.gp_registrations.columns.dob] column: a column is named twice"),
    ("end", 'dob = { column = "D", format = "dd/mm/yyyy" }',
     "[sources.gp_registrations.columns.dob] format: date format 'dd/mm/yyyy' is not a strptime "
     "format: write '%d/%m/%Y'"),
    ("end", "[sources.gp_registrations.recode]\nsex = 3",
     "[sources.gp_registrations.recode] sex must be a table mapping each local code"),
    ("end", f"[{SENTINEL}]\nx = 1", f"unknown section [{SENTINEL}] (sections: run, key, audit"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "snippet", "says"), CONFIG_MISTAKES)
def test_each_bad_setting_is_one_line_naming_file_table_and_setting(
    tmp_path: Path, where: str, snippet: str, says: str
) -> None:
    path = _config(tmp_path, _with(where, snippet))
    with pytest.raises(ConfigError) as err:
        read_settings(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert says in message
    if SENTINEL not in says:
        assert SENTINEL not in message  # the value written is never echoed


def test_a_missing_table_or_setting_is_named(tmp_path: Path) -> None:
    no_run = BASE.split("[sources.gp_registrations]")[1]
    with pytest.raises(ConfigError, match=r"c\.toml: needs a \[run\] table$"):
        read_settings(_config(tmp_path, "[sources.gp_registrations]" + no_run))
    with pytest.raises(ConfigError, match=r"c\.toml: \[run\] needs work_dir$"):
        read_settings(_config(tmp_path, BASE.replace('work_dir = "w"\n', "")))
    with pytest.raises(
        ConfigError, match=r"\[sources\.gp_registrations\] needs path \(the extract"
    ):
        read_settings(_config(tmp_path, BASE.replace('path = "gp.csv"\n', "")))
    no_sources = BASE.split("[sources.gp_registrations]")[0]
    with pytest.raises(ConfigError, match=r"c\.toml: no \[sources\.\*\] tables"):
        read_settings(_config(tmp_path, no_sources))


def test_the_configuration_is_validated_once_per_version_of_the_file(tmp_path: Path) -> None:
    """Every stage of a run reads the configuration by its path: one validated object is
    shared while the file is unchanged, and a changed file is read again."""
    path = _config(tmp_path, BASE)
    first = read_settings(path)
    assert read_settings(path) is first
    assert read_settings(tmp_path / "." / "c.toml") is first
    path.write_text(BASE.replace("[run]\n", "[run]\nservice_period_months = 6\n"))
    changed = read_settings(path)
    assert changed is not first and changed.service_period_months == 6
    path.unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        read_settings(path)


NUMERIC_SETTINGS = [
    (section, f.name)
    for section, kind in (
        ("service", ServiceSettings),
        ("linkage", LinkageSettings),
        ("households", HouseholdSettings),
    )
    for f in dataclasses.fields(kind)
    if any(word in str(f.type) for word in ("Int", "Float", "Bool", "Whole", "Seconds", "Share"))
]


@given(
    choice=st.sampled_from(NUMERIC_SETTINGS),
    digits=st.text(alphabet="0123456789", min_size=1, max_size=8),
)
def test_any_wrong_type_is_refused_by_name_without_its_value(
    tmp_path_factory: pytest.TempPathFactory, choice: tuple[str, str], digits: str
) -> None:
    """A string where a number or true/false belongs (`port = "8765"`): refused, one line,
    naming the table and the setting, never repeating what was written."""
    section, name = choice
    value = f"zz{digits}"
    path = _config(tmp_path_factory.mktemp("c"), BASE + f'[{section}]\n{name} = "{value}"\n')
    with pytest.raises(ConfigError) as err:
        read_settings(path)
    message = str(err.value)
    assert f"[{section}] {name} must be " in message and "\n" not in message
    assert value not in message


@given(
    port=st.integers(1, 65535),
    threshold=st.floats(0.001, 0.999),
    share=st.floats(0.0, 1.0),
    stale=st.integers(0, 5000),
)
def test_valid_values_come_through_typed(
    tmp_path_factory: pytest.TempPathFactory, port: int, threshold: float, share: float, stale: int
) -> None:
    text = BASE + (
        f"[service]\nport = {port}\n[linkage]\nmatch_threshold = {threshold!r}\n"
        f"[households]\nsingle_person_min_share = {share!r}\nstale_after_days = {stale}\n"
    )
    s = read_settings(_config(tmp_path_factory.mktemp("c"), text))
    assert (s.service.port, s.linkage.match_threshold) == (port, threshold)
    assert (s.households.single_person_min_share, s.households.stale_after_days) == (share, stale)


# ----------------------------------------------------------------- the governance policy
POLICY_MISTAKES = [
    ("[disclosure]\nmin_count = 0", "[disclosure] min_count must be a whole number >= 1"),
    ("[disclosure]\nage_bands = [5, 10]", "[disclosure] age_bands must start at 0 and increase"),
    (f'[disclosure]\ndeath_end_precision = "{SENTINEL}"', "[disclosure] death_end_precision must be one of month, quarter, year"),
    ("[outputs]\npublish_names = 1", "[outputs] publish_names must be true or false"),
    ("[retention]\ntrusted_days = 0", "[retention] trusted_days must be a whole number >= 1"),
    ("[deliveries]\nmax_row_change = 0", "[deliveries] max_row_change must be a number between 0 and 10"),
    (f'[roles.analyst]\nviews = "{SENTINEL}"', "[roles.analyst] views must be a list"),
    (f"[roles.analyst]\n{SENTINEL} = true", f"[roles.analyst] {SENTINEL}: unknown setting"),
    ("[audit]\nseal_minutes = 2000", "[audit] seal_minutes must be a number between 0 and 1440"),
    ("[key]\nrotation_months = 0", "[key] rotation_months must be a whole number >= 1"),
    ("[tables]\nmax_cells = 0", "[tables] max_cells must be a whole number from 1 to 1000000"),
    ("[output_checking]\ncheckers_required = 3", "[output_checking] checkers_required must be one of 1, 2"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "says"), POLICY_MISTAKES)
def test_each_bad_policy_key_is_one_line_naming_file_section_and_key(
    tmp_path: Path, body: str, says: str
) -> None:
    from uprnlink.policy import read_governance_policy

    path = tmp_path / "policy.toml"
    path.write_text(body + "\n")
    with pytest.raises(ConfigError) as err:
        read_governance_policy(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert says in message
    if SENTINEL not in says:
        assert SENTINEL not in message


def test_every_policy_reader_refuses_a_mistake_with_its_own_error(tmp_path: Path) -> None:
    """The readers are thin: each takes its section of the one model and raises its zone's
    error class with the same one-line message."""
    from uprnlink.errors import AuditError, PublishError
    from uprnlink.governance.audit import read_audit_policy
    from uprnlink.governance.retention import read_retention
    from uprnlink.ingest.deliveries import read_delivery_policy
    from uprnlink.publish.access import read_roles
    from uprnlink.publish.disclosure import read_policy
    from uprnlink.publish.outputs import read_role_rights
    from uprnlink.publish.tabulation import read_table_policy
    from uprnlink.service.outputs import OutputError, read_output_checking

    path = tmp_path / "policy.toml"
    path.write_text("[audit]\nwitness_minutes = 0\n")
    readers = [
        (read_retention, ConfigError), (read_delivery_policy, ConfigError),
        (read_roles, ConfigError), (read_role_rights, ConfigError),
        (read_audit_policy, AuditError), (read_policy, PublishError),
        (read_table_policy, PublishError), (read_output_checking, OutputError),
    ]  # fmt: skip
    for reader, error in readers:
        with pytest.raises(error, match=r"\[audit\] witness_minutes must be a number between"):
            reader(path)


def test_the_policy_model_is_validated_once_per_version(tmp_path: Path) -> None:
    from uprnlink.policy import DISCLOSURE_PRESETS, read_governance_policy
    from uprnlink.publish.disclosure import PRESETS
    from uprnlink.resources import default_policy_path

    assert set(DISCLOSURE_PRESETS) == set(PRESETS)  # the names the model accepts, the rules
    path = tmp_path / "policy.toml"
    path.write_text(default_policy_path().read_text())
    policy = read_governance_policy(path)
    assert read_governance_policy(path) is policy  # the service's readers share it
    assert policy.output_checking.max_waiting_jobs == 5
    assert set(policy.roles) == {"analyst", "data_engineer", "ig_lead", "output_checker"}
    path.write_text(path.read_text().replace("max_waiting_jobs = 5", "max_waiting_jobs = 7"))
    assert read_governance_policy(path).output_checking.max_waiting_jobs == 7


def _policy_scalars() -> list[tuple[str, str]]:
    from uprnlink.policy import GovernancePolicy

    out = []
    for section, info in GovernancePolicy.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += [
                (section, name) for name in kind.model_fields if name not in ("preset", "views")
            ]
    return out


@given(choice=st.sampled_from(_policy_scalars()), digits=st.text("0123456789", min_size=1))
def test_any_policy_key_of_the_wrong_type_is_refused_by_name(
    tmp_path_factory: pytest.TempPathFactory, choice: tuple[str, str], digits: str
) -> None:
    """Every key of every policy section (numbers, true/false, choices, lists) refuses a
    string it does not expect: one line naming the section and the key, not the value."""
    from uprnlink.policy import read_governance_policy

    section, name = choice
    value = f"zz{digits}"
    path = tmp_path_factory.mktemp("p") / "policy.toml"
    path.write_text(f'[{section}]\n{name} = "{value}"\n')
    with pytest.raises(ConfigError) as err:
        read_governance_policy(path)
    message = str(err.value)
    assert f"[{section}] {name} must be " in message and "\n" not in message
    assert value not in message
