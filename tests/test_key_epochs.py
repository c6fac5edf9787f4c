"""Key rotation: tokens of two epochs never mix; a full rebuild works; the audit log verifies
across the rotation with both keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BaseRun
from uprnlink.errors import KeyManagementError
from uprnlink.governance.audit import record_key_event, verify_audit_log
from uprnlink.ingest.stage import ingest_person_source
from uprnlink.linkage.stage import link_records
from uprnlink.privacy.keys import DEMO_PASSPHRASE, audit_keys, load_audit_key, rotate_key_file
from uprnlink.privacy.keys import load_run_key as load_key
from uprnlink.run.runner import run_all
from uprnlink.settings import read_settings
from uprnlink.zones import Zones

pytestmark = pytest.mark.slow


def test_rotation_refuses_mixed_epochs_until_rebuilt(base_run: BaseRun, tmp_path: Path) -> None:
    config = base_run.copy(tmp_path)  # a first run under the first key (baselines off)
    settings = read_settings(config)
    first = base_run.summary
    assert first.run.epoch == 1

    assert settings.key.file is not None
    info = rotate_key_file(settings.key.file, DEMO_PASSPHRASE)
    record_key_event(settings, "key.rotated", {"kind": "pseudonymisation", "key_id": info.key_id})
    assert info.epoch == 2

    # One source re-ingested under the new key, the others still under the old one.
    ingest_person_source(str(config), "gp_registrations")
    with pytest.raises(KeyManagementError) as err:
        link_records(str(config))
    message = str(err.value)
    assert "never mix" in message and "--rebuild" in message
    assert DEMO_PASSPHRASE not in message

    second = run_all(str(config), run_id="epoch-2", rebuild=True)
    assert second.run.epoch == 2
    assert second.published["metadata"]["key_id"] == info.key_id

    # The audit log is kept with its own key, untouched by the pseudonymisation key's rotation.
    zones = Zones(settings)
    result = verify_audit_log(zones.audit_log, audit_keys(settings), head_path=zones.audit_head)
    assert result.ok, result.reason
    assert set(result.key_ids) == {load_audit_key(settings).key_id}
    wrong = verify_audit_log(zones.audit_log, load_key(settings), head_path=zones.audit_head)
    assert not wrong.ok


def test_audit_key_rotation_hands_the_log_over(base_run: BaseRun, tmp_path: Path) -> None:
    """`uprnlink key rotate --kind audit --config` records the hand-over with the old key; the
    log then continues under the new key and verifies with both epochs."""
    from uprnlink import cli

    config = base_run.copy(tmp_path)  # a run before the rotation, logged under the first key
    settings = read_settings(config)
    old_id = load_audit_key(settings).key_id
    assert settings.audit_key.file is not None
    args = ["key", "rotate", "--file", str(settings.audit_key.file), "--config", str(config)]
    assert cli.main(args) == 0
    run_all(str(config), run_id="after-rotation")
    zones = Zones(settings)
    keys = audit_keys(settings)
    assert {k.epoch for k in keys} == {1, 2}
    result = verify_audit_log(zones.audit_log, keys, head_path=zones.audit_head)
    assert result.ok, result.reason
    assert result.key_ids[0] == old_id and len(result.key_ids) == 2
