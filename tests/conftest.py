"""Shared fixtures: a small seeded synthetic population run through the whole pipeline."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from uprnlink.settings import PROJECT_ROOT, RunSettings, read_settings

SMALL_PEOPLE = 1500
SMALL_SEED = 7


@dataclass
class PipelineRun:
    """A finished pipeline run on a small synthetic population."""

    root: Path
    config: Path
    settings: RunSettings
    summary: dict[str, Any]
    log_text: str


def make_demo_tree(root: Path, people: int, seed: int) -> Path:
    """Synthesise a population under root/demo and copy the demo config to root/config."""
    from uprnlink.privacy.keys import create_demo_keys
    from uprnlink.synth import write_synthetic

    (root / "config").mkdir(parents=True, exist_ok=True)
    config = root / "config" / "demo.toml"
    shutil.copy(PROJECT_ROOT / "config" / "demo.toml", config)
    write_synthetic(root / "demo", people=people, seed=seed)
    create_demo_keys(read_settings(config))
    return config


PASSPHRASE_ENVS = (
    "UPRNLINK_KEY_PASSPHRASE",
    "UPRNLINK_AUDIT_PASSPHRASE",
    "UPRNLINK_RELEASE_PASSPHRASE",
)
RAW_KEY_ENVS = ("UPRNLINK_KEY", "UPRNLINK_AUDIT_KEY", "UPRNLINK_RELEASE_KEY")


@pytest.fixture(scope="session", autouse=True)
def _demo_passphrase() -> Iterator[None]:
    from uprnlink.privacy.keys import DEMO_PASSPHRASE

    old = {n: os.environ.get(n) for n in (*PASSPHRASE_ENVS, *RAW_KEY_ENVS)}
    for name in PASSPHRASE_ENVS:
        os.environ[name] = DEMO_PASSPHRASE
    for name in RAW_KEY_ENVS:
        os.environ.pop(name, None)
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """The whole pipeline (no orchestrator) on a seeded population of 1,500 people."""
    from uprnlink.run.runner import run_all

    root = tmp_path_factory.mktemp("small")
    config = make_demo_tree(root, SMALL_PEOPLE, SMALL_SEED)
    # Capture every log record (any logger, DEBUG up) and everything printed during the run,
    # so the leak test can scan them.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            summary = run_all(str(config), run_id="test-run")
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    return PipelineRun(
        root=root,
        config=config,
        settings=read_settings(config),
        summary=summary,
        log_text=stream.getvalue(),
    )
