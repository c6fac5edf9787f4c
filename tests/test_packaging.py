"""The package carries its own data: contracts, default policy and templates, one copy each."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import uprnlink
from uprnlink import cli, resources
from uprnlink.settings import PROJECT_ROOT, read_settings

PACKAGE = Path(uprnlink.__file__).parent
# Checkout path -> the package file it links to (never a second copy).
LINKS = {
    "schemas": "src/uprnlink/schemas",
    "governance/policy.toml": "src/uprnlink/templates/policy.toml",
    "config/demo.toml": "src/uprnlink/templates/demo.toml",
}
CONTRACTS = {
    "adult_social_care",
    "benefits_claims",
    "council_tax",
    "deprivation",
    "gp_registrations",
    "hospital_activity",
    "housing_tenancies",
    "property_class",
    "uprn_lookup",
}


@pytest.mark.parametrize("old_path", sorted(LINKS))
def test_checkout_paths_are_relative_links_into_the_package(old_path: str) -> None:
    link = PROJECT_ROOT / old_path
    assert link.is_symlink(), f"{old_path} must stay a link to {LINKS[old_path]}, not a copy"
    assert not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == (PROJECT_ROOT / LINKS[old_path]).resolve()


def test_package_data_is_found_inside_the_package() -> None:
    assert resources.schemas_dir() == PACKAGE / "schemas"
    assert {p.name.split(".")[0] for p in resources.schemas_dir().glob("*.v1.toml")} == CONTRACTS
    assert resources.default_policy_path() == PACKAGE / "templates" / "policy.toml"
    for name in ("uprnlink.toml", "demo.toml", "README.txt", "policy.toml"):
        assert resources.template_path(name).is_file()
    assert (PACKAGE / "py.typed").is_file()


def test_settings_default_to_the_packaged_contracts_and_policy(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nlanding_dir = "l"\nwork_dir = "w"\nout_dir = "o"\nreference_date = "2026-03-31"\n'
        '[sources.gp]\ncontract = "gp_registrations"\npath = "gp.csv"\n'
        '[sources.gp.columns]\nrecord_id = "ID"\n'
    )
    settings = read_settings(config)
    assert settings.schemas_dir == resources.schemas_dir()
    assert settings.policy_path == resources.default_policy_path()


def test_a_linked_config_resolves_paths_from_the_links_folder(tmp_path: Path) -> None:
    """config/demo.toml is a link into the package; its ../demo/ paths are the checkout's."""
    settings = read_settings(PROJECT_ROOT / "config" / "demo.toml")
    assert settings.config_path == PROJECT_ROOT / "config" / "demo.toml"
    assert settings.landing_dir == PROJECT_ROOT / "demo" / "landing"
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "demo.toml"
    link.symlink_to(resources.template_path("demo.toml"))
    assert read_settings(link).out_dir == tmp_path / "demo" / "out"


def test_package_data_is_not_found_through_the_checkout() -> None:
    """PROJECT_ROOT is for checkout-only things (prefect.yaml for `make serve`); nothing else in
    the library may use it, or a wheel would look for files it does not have."""
    users = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "PROJECT_ROOT" in p.read_text(encoding="utf-8")
    )
    assert users == ["flows/serve.py", "settings.py"]


def test_version_is_written_once() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "uprnlink.__version__"}
    assert importlib.metadata.version("uprnlink") == uprnlink.__version__


def test_licence_and_changelog() -> None:
    licence = (PROJECT_ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "Copyright (c) 2026 uprnlink contributors" in licence
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{uprnlink.__version__}]" in changelog
    assert (PROJECT_ROOT / "governance" / "CHANGELOG.md").is_file()


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "uprnlink", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"uprnlink {uprnlink.__version__}"


def test_run_without_prefect_falls_back_to_the_plain_runner(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from uprnlink.run import runner

    calls: list[tuple[str, str | None, bool, bool]] = []

    def run_all(
        config_path: str, run_id: str | None = None, *, rebuild: bool = False, retrain: bool = False
    ) -> dict[str, str]:
        calls.append((config_path, run_id, rebuild, retrain))
        return {"ran": "in process"}

    monkeypatch.setattr(cli, "prefect_installed", lambda: False)
    monkeypatch.setattr(runner, "run_all", run_all)
    summary = cli.run_flow(Path("my.toml"), "r1", rebuild=True)
    assert summary == {"ran": "in process"}
    assert calls == [("my.toml", "r1", True, False)]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [cli.NO_PREFECT_NOTE]
    assert "uprnlink[flows]" in err[0]
