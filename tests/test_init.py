"""`uprnlink init` lays out a working folder; `uprnlink demo --dir` writes its own config."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path

import pytest

from uprnlink import resources
from uprnlink.cli import main
from uprnlink.errors import ConfigError
from uprnlink.ingest.contracts import find_contract
from uprnlink.scaffold import (
    demo_config_text,
    last_month_end,
    shipped_contracts,
    write_demo_config,
    write_working_folder,
)
from uprnlink.settings import read_settings
from uprnlink.sources import PERSON_SOURCES, REFERENCE_SOURCES


def test_init_lays_out_a_working_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "north-partnership"
    assert main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    for name in ("uprnlink.toml", "governance/policy.toml", "README.txt"):
        assert (folder / name).is_file() and f"wrote {name}" in out
    for sub in ("landing", "landing/reference", "work", "out"):
        assert (folder / sub).is_dir()
    assert (folder / "governance" / "policy.toml").read_bytes() == (
        resources.default_policy_path().read_bytes()
    )

    settings = read_settings(folder / "uprnlink.toml")
    assert settings.name == "north-partnership"
    assert settings.landing_dir == folder / "landing"
    assert settings.work_dir == folder / "work"
    assert settings.out_dir == folder / "out"
    assert settings.policy_path == folder / "governance" / "policy.toml"
    assert settings.schemas_dir == resources.schemas_dir()
    assert settings.key.file == folder / "keys" / "uprnlink.key"
    assert tuple(settings.sources) == PERSON_SOURCES
    assert tuple(settings.reference) == REFERENCE_SOURCES
    assert settings.reference_date == last_month_end(date.today())

    readme = (folder / "README.txt").read_text()
    for step in ("uprnlink map", "uprnlink key init --kind audit", "uprnlink run"):
        assert step in readme and step in out
    assert "${" not in readme


def test_config_template_shows_every_contract_field(tmp_path: Path) -> None:
    """Each [sources.*] / [reference.*] table names every field of its contract: required ones
    mapped (a placeholder column of the same name), optional ones commented out to fill in."""
    write_working_folder(tmp_path / "w", today=date(2026, 5, 14))
    text = (tmp_path / "w" / "uprnlink.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["run"]["reference_date"] == "2026-04-30"
    settings = read_settings(tmp_path / "w" / "uprnlink.toml")
    assert [c.name for c in shipped_contracts()] == [*PERSON_SOURCES, *REFERENCE_SOURCES]
    for source in [*settings.sources.values(), *settings.reference.values()]:
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        required = {f.name for f in contract.fields if f.required}
        assert set(source.columns) == required, source.name
        block = text.split(f".{source.name}.columns]\n", 1)[1].split("\n\n", 1)[0]
        commented = set(re.findall(r"^# (\w+) = ", block, re.M))
        assert commented == set(contract.field_names) - required, source.name
        if any(f.is_date for f in contract.fields):
            assert source.date_formats, source.name


def test_init_refuses_an_existing_config_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "w"
    assert main(["init", str(folder)]) == 0
    config = folder / "uprnlink.toml"
    config.write_text("# the partnership's own edits\n")
    policy = folder / "governance" / "policy.toml"
    policy.write_text(policy.read_text().replace("min_count = 10", "min_count = 20"))
    capsys.readouterr()

    assert main(["init", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"uprnlink: error: {config} already exists: pass --force to overwrite it"
    assert config.read_text() == "# the partnership's own edits\n"

    assert main(["init", str(folder), "--force"]) == 0
    out = capsys.readouterr().out
    assert "[sources.council_tax]" in config.read_text()
    assert "min_count = 20" in policy.read_text(), "an edited policy is a governance decision"
    assert "kept  governance/policy.toml" in out


def test_init_refuses_a_file_as_its_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        write_working_folder(tmp_path / "f")


def test_demo_config_is_written_with_its_folders_under_dir(tmp_path: Path) -> None:
    config = write_demo_config(tmp_path / "d")
    assert config == tmp_path / "d" / "demo.toml"
    settings = read_settings(config)
    checkout = read_settings(resources.template_path("demo.toml"))
    assert settings.landing_dir == tmp_path / "d" / "landing"
    assert settings.work_dir == tmp_path / "d" / "work"
    assert settings.out_dir == tmp_path / "d" / "out"
    assert settings.key.file == tmp_path / "d" / "work" / "keys" / "uprnlink.key"
    # Only the folders differ from the packaged demo configuration.
    assert settings.sources.keys() == checkout.sources.keys()
    for name, source in settings.sources.items():
        assert source.columns == checkout.sources[name].columns
        assert source.path.relative_to(settings.landing_dir) == checkout.sources[
            name
        ].path.relative_to(checkout.landing_dir)
    assert settings.linkage == checkout.linkage
    assert "../demo/" not in demo_config_text().split("[run]", 1)[1]


def test_demo_refuses_a_working_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo writes synthetic extracts into landing/: never over a partnership's own."""
    assert main(["init", str(tmp_path / "w")]) == 0
    assert main(["demo", "--dir", str(tmp_path / "w"), "--people", "10"]) == 2
    assert "give the demo a folder of its own" in capsys.readouterr().err
    assert not (tmp_path / "w" / "demo.toml").exists()
