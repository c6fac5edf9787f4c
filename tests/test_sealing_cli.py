"""`uprnlink audit seal init` and `audit verify --seed-file` on a real run's log, and the query
service refusing to run unsealed or within reach of the seed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import PipelineRun, free_port, service_environment, start_service
from uprnlink.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def run_copy(small_run: PipelineRun, tmp_path: Path) -> Path:
    """A copy of the small run (its log unsealed, as before an IG lead starts sealing)."""
    root = tmp_path / "copy"
    shutil.copytree(small_run.root, root, symlinks=True)
    return root / "config" / "demo.toml"


def _all_text(root: Path, skip: Path) -> str:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and path != skip and path.suffix not in (".parquet", ".duckdb"):
            out.append(path.read_bytes().decode("latin-1"))
    return "\n".join(out)


def test_seal_init_shows_the_seed_once_and_verify_checks_every_seal(
    run_copy: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(run_copy)
    root = run_copy.parent.parent
    assert main(["audit", "seal", "init", "--config", config]) == 0
    printed = capsys.readouterr().out
    seed = re.search(r"useal1(?:-[0-9a-f]{8}){8}", printed)
    assert seed is not None and "VERIFICATION SEED" in printed
    # Shown once: nowhere on disk (the state holds only epoch 1's key, the log no key at all).
    assert seed.group(0) not in _all_text(root, skip=Path("/nonexistent"))
    assert seed.group(0).replace("-", "")[6:] not in _all_text(root, skip=Path("/nonexistent"))
    assert main(["audit", "seal", "init", "--config", config]) == 2
    assert "seal_exists" in capsys.readouterr().err
    seed_file = tmp_path / "offline" / "audit.seed"
    seed_file.parent.mkdir()
    seed_file.write_text(seed.group(0) + "\n")

    assert main(["audit", "verify", "--config", config, "--seed-file", str(seed_file)]) == 0
    out = capsys.readouterr().out
    assert "OK: audit log intact" in out
    assert "every seal checked with the seed" in out and "window: 0 entries" in out
    assert "witnessed:" in out
    assert main(["audit", "verify", "--config", config]) == 0
    assert "seals NOT checked" in capsys.readouterr().out
    assert main(["audit", "seal", "status", "--config", config]) == 0
    status = capsys.readouterr().out
    assert "epoch:         1" in status and seed.group(0) not in status

    # Someone with the audit key rewrites a sealed entry (here: run.finished's counts) and
    # every hash and MAC after it: verify without the seed cannot tell, with it fails.
    log = root / "demo" / "out" / "audit" / "audit.jsonl"
    lines = log.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if '"event":"run.finished"' in line)
    _rewrite_with_the_audit_key(config, log, target)
    assert main(["audit", "verify", "--config", config, "--seed-file", str(seed_file)]) == 1
    err = capsys.readouterr().err
    assert "does not verify under the seed" in err and "seal_mac" in err


def _rewrite_with_the_audit_key(config: str, log: Path, target: int) -> None:
    """The attacker's rewrite, using the real audit key through the library."""
    import hashlib

    from uprnlink.privacy.keys import load_audit_key
    from uprnlink.settings import read_settings
    from uprnlink.zones import Zones

    settings = read_settings(Path(config))
    key = load_audit_key(settings)
    objs = [json.loads(line) for line in log.read_text().splitlines()]
    objs[target]["data"]["rows_in"] = {"council_tax": 1}
    prev = "0" * 64
    for e in objs:
        e["prev"] = prev
        if e["event"] == "audit.sealed":
            e["data"]["head_hash"] = prev
        signed = {k: e[k] for k in ("seq", "ts", "event", "actor", "key_id", "data", "prev")}
        body = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        e["hash"] = hashlib.sha256(body.encode()).hexdigest()
        h = key.hmac_prototype("audit")
        h.update(b"uprnlink-audit-entry/v1\x00" + body.encode() + b"\x00" + e["hash"].encode())
        e["mac"] = h.finalize().hex()
        prev = e["hash"]
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in objs))
    head = {"version": 1, "seq": len(objs) - 1, "hash": prev, "key_id": key.key_id}
    h = key.hmac_prototype("audit")
    h.update(
        b"uprnlink-audit-head/v1\x00"
        + json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    )
    head["mac"] = h.finalize().hex()
    Zones(settings).audit_head.write_text(json.dumps(head))


def test_a_corrupted_run_summary_fails_verification(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Witnesses that cannot be read used to be skipped: corrupting them, then rewriting the
    log from the start, passed. Now a witness that cannot be read fails."""
    config = str(run_copy)
    assert main(["audit", "verify", "--config", config]) == 0
    summary = next((run_copy.parent.parent / "demo" / "out" / "runs").glob("*.json"))
    summary.write_text(summary.read_text()[:-40])
    assert main(["audit", "verify", "--config", config]) == 1
    err = capsys.readouterr().err
    assert f"run summary {summary.name} is not valid JSON" in err and "witness_corrupt" in err


def test_the_seed_file_is_kept_away_from_the_service(
    run_copy: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(run_copy)
    inside = run_copy.parent.parent / "demo" / "work" / "seed"
    assert main(["audit", "seal", "init", "--config", config, "--seed-file", str(inside)]) == 2
    err = capsys.readouterr().err
    assert "seed_location" in err and not inside.exists()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    outside = tmp_path / "usb" / "audit.seed"
    assert main(["audit", "seal", "init", "--config", config, "--seed-file", str(outside)]) == 0
    assert outside.stat().st_mode & 0o777 == 0o600
    assert "useal1" not in capsys.readouterr().out  # written to the file, not printed
    # A handled error is one line naming the file and the rule, never the seed.
    assert main(["audit", "verify", "--config", config, "--seed-file", str(tmp_path / "x")]) == 5
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seed file" in err and "Traceback" not in err


def test_the_service_refuses_an_unsealed_log_and_the_seed_in_its_environment(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "service.log"
    proc = start_service(run_copy, free_port(), log, service_environment())
    proc.wait(timeout=60)
    assert proc.returncode != 0 and "seal_state_missing" in log.read_text()
    assert "Traceback" not in log.read_text()
    seed = tmp_path / "offline.seed"
    assert main(["audit", "seal", "init", "--config", str(run_copy), "--seed-file", str(seed)]) == 0
    env = {**service_environment(), "UPRNLINK_AUDIT_SEED": seed.read_text().splitlines()[1]}
    proc = start_service(run_copy, free_port(), log, env)
    proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode != 0 and "seed_location" in text
    assert seed.read_text().splitlines()[1] not in text


def test_verify_reads_a_journald_style_export(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`journalctl -t uprnlink-audit -o cat` prints each syslog witness's message: the same JSON
    line as the file sink's, so `--witness-file` checks it the same way."""
    config = str(run_copy)
    witness = run_copy.parent.parent / "demo" / "witness" / "audit.witness"
    export = tmp_path / "journal.jsonl"
    export.write_text(witness.read_text())
    assert main(["audit", "verify", "--config", config, "--witness-file", str(export)]) == 0
    bad = json.loads(witness.read_text().splitlines()[-1])
    bad["hash"] = "0" * 64
    export.write_text(export.read_text() + json.dumps(bad) + "\n")
    assert main(["audit", "verify", "--config", config, "--witness-file", str(export)]) == 1
    assert "rewritten" in capsys.readouterr().err


def test_a_damaged_state_is_one_line_naming_the_file_and_rule(
    run_copy: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "offline.seed"
    assert main(["audit", "seal", "init", "--config", str(run_copy), "--seed-file", str(seed)]) == 0
    state = run_copy.parent.parent / "demo" / "work" / "audit" / "seal.state"
    doc = json.loads(state.read_text())
    doc["state"] = "1" * 64
    state.write_text(json.dumps(doc))
    log = tmp_path / "service.log"
    proc = start_service(run_copy, free_port(), log, service_environment())
    proc.wait(timeout=60)
    lines = log.read_text().strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, lines
    assert "seal.state" in lines[0] and "seal_check" in lines[0] and "1" * 64 not in lines[0]
