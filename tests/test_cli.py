"""The command line: help, clear errors without tracebacks, key commands."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import PipelineRun
from uprnlink.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "run", "demo", "evaluate", "key", "audit", "query"):
        assert command in out


def test_missing_config_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["run", "--config", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "config file not found" in err and "Traceback" not in err


def test_key_init_show_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.key"
    monkeypatch.setenv("TEST_PASSPHRASE", "correct horse battery staple")
    assert main(["key", "init", "--file", str(path), "--passphrase-env", "TEST_PASSPHRASE"]) == 0
    assert main(["key", "show", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kid-" in out and "correct horse" not in out
    assert main(["key", "check", "--file", str(path), "--passphrase-env", "TEST_PASSPHRASE"]) == 0
    monkeypatch.setenv("TEST_PASSPHRASE", "wrong passphrase entirely")
    code = main(["key", "check", "--file", str(path), "--passphrase-env", "TEST_PASSPHRASE"])
    err = capsys.readouterr().err
    assert code == 4 and "wrong passphrase" in err and "Traceback" not in err
    assert "wrong passphrase entirely" not in err
    assert os.stat(path).st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_audit_verify_names_a_hand_edited_entry(
    small_run: PipelineRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_run.root, copy)
    config = str(copy / "config" / "demo.toml")
    assert main(["audit", "verify", "--config", config]) == 0
    assert "intact" in capsys.readouterr().out

    log = copy / "demo" / "out" / "audit" / "audit.jsonl"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["data"]["run_id"] = "someone-else"
    lines[1] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", "--config", config]) == 1
    err = capsys.readouterr().err
    assert "TAMPERED" in err and "seq 1" in err.replace("seq=1", "seq 1")


@pytest.mark.parametrize("damage", ["missing", "corrupted", "truncated", "flipped"])
def test_bad_key_files_give_one_clear_line_and_exit_4(
    damage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "k.key"
    monkeypatch.setenv("TEST_PASSPHRASE", "correct horse battery staple")
    assert main(["key", "init", "--file", str(path), "--passphrase-env", "TEST_PASSPHRASE"]) == 0
    capsys.readouterr()
    text = path.read_text()
    if damage == "missing":
        path.unlink()
    elif damage == "corrupted":
        path.write_text("{not json")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        doc = json.loads(text)
        ct = doc["cipher"]["ciphertext"]
        doc["cipher"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
        path.write_text(json.dumps(doc))
    code = main(["key", "check", "--file", str(path), "--passphrase-env", "TEST_PASSPHRASE"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.startswith("uprnlink: error:") and "Traceback" not in err
    assert "correct horse" not in err
