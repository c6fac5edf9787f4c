"""The forward-sealed audit log: known answers, and every way the red team rewrote the log.

The attacker here holds what taking over the query service gives: the audit key (its
passphrase is in the service's environment), the current sealing state and write access to the
log, its checkpoint and the run summaries. They can rewrite what came after the last seal (the
window, which the witnesses narrow); nothing sealed before may pass the IG lead's verification
with the seed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from uprnlink.errors import AuditError
from uprnlink.governance.audit import (
    GENESIS,
    SEALED,
    AuditLog,
    AuditVerification,
    SealPolicy,
    Witness,
    default_head_path,
    keyed_fingerprint,
    read_audit_events,
    verify_audit_log,
)
from uprnlink.governance.witness import FileWitnessSink, SyslogWitnessSink, read_witness_file
from uprnlink.privacy.keys import MasterKey
from uprnlink.privacy.sealing import (
    EpochKey,
    SealSeed,
    SealState,
    format_seed,
    new_seed,
    read_seal_state,
    read_seal_state_info,
    seal_mac,
)

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "audit_seal.json").read_text(encoding="utf-8")
)
KEY = MasterKey(bytes(range(100, 132)), kind="audit")
SEED = SealSeed(bytes.fromhex(VECTORS["seed_hex"]))
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves (each reading is the same until `advance`)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


class Paths:
    def __init__(self, root: Path, *, witnessed: bool = True) -> None:
        self.log = root / "out" / "audit" / "audit.jsonl"
        self.head = root / "work" / "audit" / "audit.head"
        self.state = root / "work" / "audit" / "seal.state"
        self.witness = root / "witness" / "audit.witness"
        self.witnessed = witnessed


def open_log(
    p: Paths, clock: Clock, *, writer: str = "service@host", sinks: Any = None
) -> AuditLog:
    return AuditLog(
        p.log,
        KEY,
        head_path=p.head,
        clock=clock,
        sealing=SealPolicy(p.state, seal_seconds=300, witness_seconds=60),
        witnesses=([FileWitnessSink(p.witness)] if p.witnessed else []) if sinks is None else sinks,
        writer=writer,
    )


def sealed_log(
    tmp_path: Path, epochs: int = 4, per_epoch: int = 3, *, witnessed: bool = True
) -> tuple[Paths, Clock, AuditLog]:
    """A log sealed from the start, with `epochs` sealed epochs of `per_epoch` entries each
    (every seal witnessed to a file, unless not `witnessed`), then two entries after the last
    seal (the open window)."""
    p, clock = Paths(tmp_path, witnessed=witnessed), Clock()
    log = open_log(p, clock)
    log.append("run.started", actor="engineer@host", data={"run_id": "r1"})
    log.start_sealing(SEED, actor="ig-lead@host")
    for e in range(epochs):
        for i in range(per_epoch):
            clock.advance(1)
            log.append("access", actor="ana", data={"epoch": e, "i": i, "rows": 10 + i})
        clock.advance(5)
        log.maintain()  # the epoch is due: seal, then witness the new head
    clock.advance(1)
    log.append("access", actor="ana", data={"window": 1})
    log.append("access", actor="ana", data={"window": 2})
    return p, clock, log


def verify(p: Paths, seed: SealSeed | None = SEED, **kwargs: Any) -> AuditVerification:
    default = [read_witness_file(p.witness)] if p.witnessed else []
    files = kwargs.pop("witness_files", default)
    state = kwargs.pop("seal_state", p.state)
    return verify_audit_log(
        p.log, KEY, head_path=p.head, seed=seed, seal_state=state, witness_files=files, **kwargs
    )


def entries(p: Paths) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.log.read_text().splitlines()]


def write_entries(p: Paths, objs: list[dict[str, Any]]) -> None:
    p.log.write_text("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs))


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


SIGNED = ("seq", "ts", "event", "actor", "key_id", "data", "prev")


def rechain(p: Paths, objs: list[dict[str, Any]], *, reseal: EpochKey | None = None) -> None:
    """What the attacker with the audit key (and, given `reseal`, the current sealing state)
    does after editing `objs`: renumber, re-link, re-hash and re-MAC every entry, point each
    seal at its new head, re-seal every seal whose epoch they hold a key for, and rewrite the
    checkpoint. Earlier epochs' keys are what they lack."""
    keys: dict[int, EpochKey] = {}
    if reseal is not None:
        k = reseal
        for _ in range(20):
            keys[k.epoch] = k
            k = k.next()
    prev = GENESIS
    for i, e in enumerate(objs):
        e["seq"], e["prev"] = i, prev
        if e["event"] == SEALED:
            e["data"]["head_seq"], e["data"]["head_hash"] = i - 1, prev
            if e["data"]["epoch"] in keys:
                fields = {k: e[k] for k in SIGNED}
                fields["data"] = {k: v for k, v in e["data"].items() if k != "seal"}
                e["data"]["seal"] = seal_mac(keys[e["data"]["epoch"]], fields)
        signed = {k: e[k] for k in SIGNED}
        body = canonical(signed)
        e["hash"] = hashlib.sha256(body).hexdigest()
        h = KEY.hmac_prototype("audit")
        h.update(b"uprnlink-audit-entry/v1\x00" + body + b"\x00" + e["hash"].encode())
        e["mac"] = h.finalize().hex()
        prev = e["hash"]
    write_entries(p, objs)
    head = {"version": 1, "seq": len(objs) - 1, "hash": prev, "key_id": KEY.key_id}
    h = KEY.hmac_prototype("audit")
    h.update(b"uprnlink-audit-head/v1\x00" + canonical(head))
    head["mac"] = h.finalize().hex()
    p.head.write_text(json.dumps(head))


def seal_positions(p: Paths) -> list[int]:
    return [e["seq"] for e in entries(p) if e["event"] == SEALED]


def assert_fails(result: AuditVerification, rule: str) -> None:
    assert not result.ok, result
    assert result.reason is not None and rule in result.reason, result.reason


# --------------------------------------------------------------------------- known answers


def test_epoch_keys_match_the_vectors() -> None:
    seed = SealSeed(bytes.fromhex(VECTORS["seed_hex"]))
    assert seed.seal_id == VECTORS["seal_id"]
    assert SealSeed.parse(VECTORS["seed_text"]).seal_id == VECTORS["seal_id"]
    assert format_seed(bytes.fromhex(VECTORS["seed_hex"])) == VECTORS["seed_text"]
    for key, want in zip(seed.epoch_keys(), VECTORS["epochs"], strict=False):
        state = SealState(key, "2026-01-01T00:00:00.000000Z").to_dict()
        assert (key.epoch, state["state"], state["check"]) == (
            want["epoch"],
            want["state_hex"],
            want["check"],
        )
        # The MAC key the vectors give, used directly, gives the same seal as the key object.
        direct = hmac.new(
            bytes.fromhex(want["mac_key_hex"]), b"uprnlink-audit-seal/v1\x00x", hashlib.sha256
        )
        assert key.mac(b"x") == direct.hexdigest()
    # A state steps to the next one on its own, without the seed (forward only).
    state1 = EpochKey(seed.seal_id, 1, bytes.fromhex(VECTORS["epochs"][1]["state_hex"]))
    assert SealState(state1.next(), "x").to_dict()["state"] == VECTORS["epochs"][2]["state_hex"]


def test_seal_mac_matches_the_vector() -> None:
    v = VECTORS["seal_mac"]
    assert seal_mac(SEED.epoch_key(v["epoch"]), v["fields"]) == v["mac"]
    other = SealSeed(bytes(32))
    assert seal_mac(other.epoch_key(v["epoch"]), v["fields"]) != v["mac"]
    assert seal_mac(SEED.epoch_key(v["epoch"] + 1), v["fields"]) != v["mac"]


def test_a_sealed_log_matches_the_vector(tmp_path: Path) -> None:
    v = VECTORS["sealed_log"]
    key = MasterKey(bytes.fromhex(v["audit_key_hex"]), kind="audit")
    ts = datetime.fromisoformat(v["ts"])
    state = tmp_path / "seal.state"
    log = AuditLog(
        tmp_path / "a.jsonl",
        key,
        clock=lambda: ts,
        sealing=SealPolicy(state, 300, 60),
        writer="ig-lead@host",
    )
    log.append("run.started", actor="engineer@host", data={"run_id": "r1"})
    log.start_sealing(SEED, actor="ig-lead@host")
    assert log.path.read_text().splitlines() == v["lines"]
    saved = json.loads(state.read_text())
    assert {k: saved[k] for k in v["state_after"]} == v["state_after"]
    # The seal in line 3, recomputed from the vector's MAC key (independent of the code above).
    seal = json.loads(v["lines"][2])
    fields = {k: seal[k] for k in SIGNED}
    fields["data"] = {k: x for k, x in seal["data"].items() if k != "seal"}
    mac_key = bytes.fromhex(VECTORS["epochs"][0]["mac_key_hex"])
    want = hmac.new(mac_key, b"uprnlink-audit-seal/v1\x00" + canonical(fields), hashlib.sha256)
    assert seal["data"]["seal"] == want.hexdigest()


def test_fingerprint_vector_and_keying() -> None:
    v = VECTORS["fingerprint"]
    key = MasterKey(bytes.fromhex(v["audit_key_hex"]), kind="audit")
    assert keyed_fingerprint(key, v["text"]) == v["fingerprint"]
    # Not the unkeyed hash a reader of the log could compute from a guess, and another key
    # gives another fingerprint.
    assert v["fingerprint"] != hashlib.sha256(v["text"].encode()).hexdigest()[:16]
    assert keyed_fingerprint(MasterKey(bytes(32), kind="audit"), v["text"]) != v["fingerprint"]


def test_seed_text_round_trips_and_bad_seeds_are_refused(tmp_path: Path) -> None:
    seed, text = new_seed(lambda n: bytes(range(n)))
    assert text == VECTORS["seed_text"] and seed.seal_id == VECTORS["seal_id"]
    assert SealSeed.parse(text.upper().replace("-", " ")).seal_id == seed.seal_id
    for bad in ("", "useal1-00", "zz" * 32, VECTORS["seed_hex"] + "00"):
        with pytest.raises(AuditError, match="seed_format"):
            SealSeed.parse(bad)
    assert VECTORS["seed_hex"] not in repr(seed) and "seed" not in str(seed.epoch_key(0))
    missing = tmp_path / "nope.seed"
    with pytest.raises(AuditError, match=f"seed file {missing} not found"):
        SealSeed.from_file(missing)
    garbage = tmp_path / "bad.seed"
    garbage.write_text("not a seed\n")
    with pytest.raises(AuditError) as caught:
        SealSeed.from_file(garbage)
    assert "not a seed" not in str(caught.value)  # the file's text is never echoed


# --------------------------------------------------------------------------- intact


def test_a_sealed_log_verifies_with_the_seed_and_reports_the_window(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path)
    result = verify(p)
    assert result.ok, result.reason
    seal = result.seal
    assert seal is not None and seal.seal_id == SEED.seal_id and seal.checked
    assert seal.seals == 5  # epoch 0 at start, then four
    assert seal.last_epoch == 4 and seal.last_sealed_seq == seal_positions(p)[-1]
    assert seal.unsealed == 2  # the two entries after the last seal: the window
    assert result.witnesses_checked >= 5 and result.last_witnessed_seq == seal.last_sealed_seq
    assert [e["data"]["epoch"] for e in entries(p) if e["event"] == SEALED] == [0, 1, 2, 3, 4]
    # Without the seed the chain still verifies, and says the seals were not checked.
    unchecked = verify(p, seed=None)
    assert unchecked.ok and unchecked.seal is not None and not unchecked.seal.checked
    assert any("seals not checked" in n for n in unchecked.notes)


def test_the_state_file_holds_only_the_current_epoch_and_is_owner_only(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path)
    assert p.state.stat().st_mode & 0o777 == 0o600
    assert sorted(x.name for x in p.state.parent.iterdir()) == ["audit.head", "seal.state"]
    text = p.state.read_text()
    assert json.loads(text)["epoch"] == 5
    for old in VECTORS["epochs"]:  # every earlier epoch's key is gone from the file
        assert old["state_hex"] not in text and old["mac_key_hex"] not in text
    loaded = read_seal_state(p.state)
    assert loaded.epoch == 5 and "state" not in repr(loaded)
    info = read_seal_state_info(p.state)
    assert info.last_seal is not None and info.last_seal.seq == seal_positions(p)[-1]


# --------------------------------------------------------------------------- sealed entries cannot be rewritten


@pytest.mark.parametrize("edit", ["alter", "delete", "insert"])
def test_sealed_entries_cannot_be_rewritten_with_the_audit_key_and_current_state(
    tmp_path: Path, edit: str
) -> None:
    """The attack: every entry after a sealed one altered, deleted or inserted, the chain and
    MACs recomputed with the audit key, every seal re-pointed and re-sealed with every key the
    current state gives. Without the seed it passes; with it, the first seal after the edit
    fails."""
    p, _, _ = sealed_log(tmp_path, witnessed=False)  # the seals alone, no witness
    current = read_seal_state(p.state).key
    objs = entries(p)
    target = next(
        i for i, e in enumerate(objs) if e["data"].get("epoch") == 1 and e["event"] == "access"
    )
    if edit == "alter":
        objs[target]["data"]["rows"] = 0
    elif edit == "delete":
        del objs[target]
    else:
        objs.insert(target, {**objs[target], "data": {"forged": True}})
    rechain(p, objs, reseal=current)
    assert verify(p, seed=None).ok  # the audit key alone hides it ...
    result = verify(p)  # ... the seed does not
    assert_fails(result, "seal_mac")
    assert result.first_bad_seq is not None and result.first_bad_seq > target - 1
    assert "epoch 2" in (result.reason or "")  # the first seal after the edit


def test_rewriting_from_the_start_with_a_fresh_seal_fails(tmp_path: Path) -> None:
    """Start sealing again under a seed of the attacker's own: the IG lead's seed names the
    log's seal id, so the replacement is refused."""
    p, clock, _ = sealed_log(tmp_path)
    shutil.rmtree(p.log.parent)
    shutil.rmtree(p.head.parent)
    p.witness.unlink()
    attacker, _ = new_seed()
    log = open_log(p, clock)
    log.append("run.started", actor="engineer@host", data={"run_id": "r1"})
    log.start_sealing(attacker, actor="ig-lead@host")
    assert verify(p, seed=attacker).ok
    assert_fails(verify(p), "wrong_seed")


def test_removing_a_seal_leaves_a_gap(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path, witnessed=False)
    objs = [e for e in entries(p) if not (e["event"] == SEALED and e["data"]["epoch"] == 2)]
    rechain(p, objs, reseal=read_seal_state(p.state).key)
    assert_fails(verify(p, seed=None), "seal_epoch")


def test_dropping_every_seal_fails_with_the_seed(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path, witnessed=False)
    objs = [e for e in entries(p) if e["event"] not in (SEALED, "audit.seal_started")]
    rechain(p, objs)
    p.state.unlink()
    assert verify(p, seed=None).ok  # looks like a log never sealed ...
    assert_fails(verify(p), "seal_missing")  # ... not to the IG lead


# --------------------------------------------------------------------------- the window and the witnesses


def test_the_window_after_the_last_seal_is_caught_by_the_witness(tmp_path: Path) -> None:
    """Entries after the last seal can be rewritten by whoever holds the current state. Those
    already witnessed cannot: the witness no longer matches."""
    p, clock, log = sealed_log(tmp_path)
    clock.advance(2)
    log.maintain()  # the head moved and the last witness is old: witness it
    objs = entries(p)
    objs[-1]["data"]["window"] = 99
    rechain(p, objs, reseal=read_seal_state(p.state).key)
    unwitnessed = verify(p, witness_files=[])  # without the witness file: refused as such
    assert_fails(unwitnessed, "witness_missing")
    result = verify(p)
    assert_fails(result, "rewritten")
    assert result.first_bad_seq == len(objs) - 1


def test_entries_after_the_last_seal_and_witness_are_the_known_window(tmp_path: Path) -> None:
    """What remains rewritable: entries after both the last seal and the last witness (at most
    seal_minutes / witness_minutes of them). Verification passes and says how many."""
    p, _, _ = sealed_log(tmp_path)
    objs = entries(p)
    objs[-1]["data"]["window"] = 99
    rechain(p, objs, reseal=read_seal_state(p.state).key)
    result = verify(p)
    assert result.ok and result.seal is not None and result.seal.unsealed == 2
    assert result.last_witnessed_seq == result.seal.last_sealed_seq


@pytest.mark.parametrize("cut", [1, 2, 3, 8])
def test_truncation_is_caught_unless_it_stays_in_the_window(tmp_path: Path, cut: int) -> None:
    """Cutting entries off the end with the checkpoint rewritten: within the window (after the
    last seal and the last witness) it passes, and the result says how large the window is;
    once it reaches a sealed or witnessed entry it fails."""
    p, _, _ = sealed_log(tmp_path)
    objs = entries(p)[:-cut]
    rechain(p, objs, reseal=read_seal_state(p.state).key)
    result = verify(p)
    if cut <= 2:
        assert result.ok and result.seal is not None and result.seal.unsealed == 2 - cut
    else:
        assert_fails(result, "cut off the end")  # the witness of the last seal is past the end


@pytest.mark.parametrize("witnessed", [True, False])
def test_cutting_back_past_a_seal_is_caught_by_the_witness_and_by_the_state(
    tmp_path: Path, witnessed: bool
) -> None:
    """The log cut back to an earlier seal, the checkpoint rewritten to match: a witness is
    past its end, and the sealing state (which only moves forward) is epochs ahead of it."""
    p, _, _ = sealed_log(tmp_path, witnessed=witnessed)
    seals = seal_positions(p)
    objs = entries(p)[: seals[-2] + 1]
    rechain(p, objs, reseal=read_seal_state(p.state).key)
    if witnessed:
        assert_fails(verify(p, seal_state=None), "cut off the end")
    assert_fails(verify(p), "cut off the end" if witnessed else "seal_missing")
    p.state.unlink()  # deleting the state does not help
    assert_fails(
        verify(p, witness_files=[]), "witness_missing" if witnessed else "seal_state_missing"
    )


def test_an_older_copy_of_the_state_is_refused(tmp_path: Path) -> None:
    """A backup of the sealing state re-opens its epoch: verification says so."""
    p, clock, log = sealed_log(tmp_path, epochs=1)
    old = p.state.read_bytes()
    for _ in range(2):
        clock.advance(6)
        log.append("access", actor="ana")
        log.maintain()
    p.state.write_bytes(old)
    assert_fails(verify(p), "seal_state_old")


@pytest.mark.parametrize(
    "damage", ["garbage", "cut mid-line", "truncated", "deleted", "directory", "emptied"]
)
def test_a_damaged_or_missing_witness_file_fails(tmp_path: Path, damage: str) -> None:
    p, _, _ = sealed_log(tmp_path)
    raw = p.witness.read_bytes()
    lines = raw.splitlines(keepends=True)
    if damage == "garbage":
        p.witness.write_bytes(raw + b"this is not a witness\n")
        rule = "witness_corrupt"
    elif damage == "cut mid-line":
        p.witness.write_bytes(raw[:-10])
        rule = "witness_truncated"
    elif damage == "truncated":  # whole lines cut off the end: the seals recorded its size
        p.witness.write_bytes(b"".join(lines[:2]))
        rule = "witness_truncated"
    elif damage == "deleted":
        p.witness.unlink()
        rule = "witness_missing"
    elif damage == "directory":  # unreadable as a file
        p.witness.unlink()
        p.witness.mkdir()
        rule = "witness_unreadable"
    else:
        p.witness.write_bytes(b"")
        rule = "witness_missing"
    assert_fails(verify(p), rule)
    # Not reading the file at all fails too: the seals say it was being written.
    assert_fails(verify(p, witness_files=[]), "witness_missing")


def test_a_witness_past_the_end_of_the_log_means_truncation(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path)
    last = entries(p)[-1]
    with p.witness.open("a") as f:
        f.write(
            json.dumps(
                {"witness": "uprnlink-audit-witness/v1", "seq": last["seq"] + 5, "hash": "0" * 64}
            )
            + "\n"
        )
    assert_fails(verify(p), "cut off the end")


def test_an_unreadable_run_witness_fails_instead_of_being_skipped(tmp_path: Path) -> None:
    p, _, _ = sealed_log(tmp_path)
    broken = Witness("run summary r1.json", -1, "", "is not valid JSON (rule: witness_corrupt)")
    assert_fails(verify(p, witnesses=[broken]), "witness_corrupt")


# --------------------------------------------------------------------------- writers


def test_a_seal_saved_but_not_appended_is_appended_by_the_next_writer(tmp_path: Path) -> None:
    """A writer stopped between saving the next state and appending the seal: the state holds
    the seal, the next writer appends it before anything else, and nothing is lost."""
    p, clock, log = sealed_log(tmp_path, epochs=1, witnessed=False)
    clock.advance(6)
    log.append("access", actor="ana", data={"x": 1})  # seals in the same commit
    objs = entries(p)
    assert objs[-1]["event"] == SEALED
    rechain(p, objs[:-1])  # the seal line (and the checkpoint after it) never reached disk
    pending = verify(p)
    assert pending.ok and any("not yet in the log" in w for w in pending.warnings)
    other = open_log(p, clock, writer="pipeline@host")
    entry = other.append("run.finished", actor="engineer@host")
    assert entries(p)[-2] == objs[-1] and entry.seq == objs[-1]["seq"] + 1
    assert verify(p).ok


def test_the_pipeline_and_the_service_share_one_sealing_state(tmp_path: Path) -> None:
    """Two writers (processes in real life: separate AuditLog objects and file descriptors
    here) appending and sealing at once keep one chain of contiguous seals."""
    p, clock, _ = sealed_log(tmp_path, epochs=1)
    clock_lock = threading.Lock()
    writers = [open_log(p, clock, writer=w) for w in ("service@host", "pipeline@host")]
    errors: list[BaseException] = []

    def work(log: AuditLog, n: int) -> None:
        try:
            for i in range(n):
                with clock_lock:
                    clock.advance(2)
                log.append("access", actor="x", data={"i": i})
                if i % 5 == 0:
                    log.maintain()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w, 20)) for w in writers for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    writers[0].seal_now()
    result = verify(p)
    assert result.ok, result.reason
    assert result.seal is not None and result.seal.seals > 5 and result.seal.unsealed == 0
    epochs = [e["data"]["epoch"] for e in entries(p) if e["event"] == SEALED]
    assert epochs == list(range(len(epochs)))


def test_sealing_starts_once(tmp_path: Path) -> None:
    p, clock, log = sealed_log(tmp_path, epochs=1)
    with pytest.raises(AuditError, match="seal_exists"):
        log.start_sealing(new_seed()[0], actor="ig")
    p.state.unlink()
    with pytest.raises(AuditError, match="seal_exists"):
        open_log(p, clock).start_sealing(new_seed()[0], actor="ig")


def test_a_corrupted_state_is_refused_naming_the_file_and_rule(tmp_path: Path) -> None:
    """A damaged sealing state is never used: sealing stops with an error naming the file and
    the rule (never the key), and entries already written are not reported as failed."""
    import logging

    p, clock, log = sealed_log(tmp_path, epochs=1)
    doc = json.loads(p.state.read_text())
    doc["state"] = "0" * 64
    p.state.write_text(json.dumps(doc))
    clock.advance(6)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("uprnlink.audit").addHandler(handler)
    try:
        entry = log.append("access", actor="ana")  # written, though the seal due with it fails
    finally:
        logging.getLogger("uprnlink.audit").removeHandler(handler)
    assert entries(p)[-1]["seq"] == entry.seq
    assert any("seal.state fails its check" in m and "seal_check" in m for m in seen)
    with pytest.raises(AuditError, match=r"seal\.state fails its check.*seal_check") as caught:
        log.seal_now()
    assert "0" * 64 not in str(caught.value) and not any("0" * 64 in m for m in seen)
    with pytest.raises(AuditError, match="seal_check"):
        log.require_sealing()  # the service refuses to start on it


def test_an_unsealed_log_has_no_seal_and_an_unsealed_service_is_refused(tmp_path: Path) -> None:
    p, clock = Paths(tmp_path), Clock()
    log = open_log(p, clock)
    log.append("run.started", actor="x")
    result = verify_audit_log(p.log, KEY, head_path=p.head, seal_state=p.state)
    assert result.ok and result.seal is None
    assert any("not forward-sealed" in n for n in result.notes)
    with pytest.raises(AuditError, match="seal_state_missing"):
        log.require_sealing()
    assert_fails(verify_audit_log(p.log, KEY, head_path=p.head, seed=SEED), "seal_missing")


def test_the_syslog_sink_sends_the_witness_line(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(10)
        p, clock = Paths(tmp_path), Clock()
        log = open_log(p, clock, sinks=[SyslogWitnessSink(address), FileWitnessSink(p.witness)])
        log.append("run.started", actor="x")
        log.witness(force=True)
        message = server.recv(65536).decode()
    assert message.startswith("<85>uprnlink-audit[")
    body = json.loads(message.split(": ", 1)[1])
    assert body["seq"] == 0 and body["hash"] == read_audit_events(p.log)[0].hash
    assert p.witness.read_text().strip() == json.dumps(body, separators=(",", ":"))


def test_a_failing_sink_does_not_stop_the_log(tmp_path: Path) -> None:
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("uprnlink.audit").addHandler(handler)
    try:
        p, clock = Paths(tmp_path), Clock()
        log = open_log(p, clock, sinks=[SyslogWitnessSink(str(tmp_path / "no-such.sock"))])
        log.append("run.started", actor="x")
        with pytest.raises(AuditError, match="syslog:"):
            log.witness(force=True)
        clock.advance(2)
        log.append("access", actor="x")
        log.maintain()  # logged, not raised
    finally:
        logging.getLogger("uprnlink.audit").removeHandler(handler)
    assert any("cannot write the audit witness" in m for m in seen)
    assert default_head_path(p.log) != p.head and p.head.exists()


def test_verification_does_not_depend_on_the_writers_clock_order(tmp_path: Path) -> None:
    """Seals are numbered, not timed: a clock set back does not break verification."""
    p, clock, log = sealed_log(tmp_path, epochs=1)
    clock.now = T0 - timedelta(days=1)
    log.append("access", actor="ana")
    clock.now = T0 + timedelta(days=1)
    log.maintain()
    assert verify(p).ok
    assert os.environ.get("UPRNLINK_AUDIT_SEED") is None
