"""Tests for uprnlink.governance.audit: known-answer MACs, an intact chain, and every kind of tampering."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uprnlink.errors import AuditError
from uprnlink.governance.audit import (
    GENESIS,
    MAX_BATCH,
    AuditLog,
    AuditVerification,
    Witness,
    default_head_path,
    read_audit_events,
    verify_audit_log,
)
from uprnlink.privacy.keys import MasterKey

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "hmac_hkdf.json").read_text(encoding="utf-8")
)
KEY = MasterKey(bytes.fromhex(VECTORS["keys"][0]["master_key_hex"]))
OTHER_KEY = MasterKey(bytes.fromhex(VECTORS["keys"][1]["master_key_hex"]))
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
N = 6


def step_clock(start: datetime = T0, step: timedelta = timedelta(seconds=1)):
    state = {"now": start - step}

    def clock() -> datetime:
        state["now"] += step
        return state["now"]

    return clock


def write_log(path: Path, n: int = N, key: MasterKey = KEY) -> AuditLog:
    log = AuditLog(path, key, clock=step_clock())
    events = ["key.loaded", "run.started", "publish", "access", "access.refused", "run.finished"]
    for i in range(n):
        log.append(events[i % len(events)], actor="engineer", data={"i": i, "rows": 10 * i})
    return log


def lines(path: Path) -> list[str]:
    """Lines split on "\n" only (str.splitlines also splits on U+0085, U+2028, ...)."""
    *complete, rest = path.read_text(encoding="utf-8").split("\n")
    return [line + "\n" for line in complete] + ([rest] if rest else [])


def set_lines(path: Path, new: list[str]) -> None:
    path.write_text("".join(new), encoding="utf-8")


def rehash_without_key(path: Path, start: int) -> None:
    """What a forger without the key can do: fix every hash and prev link from `start` on."""
    entries = [json.loads(line) for line in lines(path)]
    for i in range(start, len(entries)):
        e = entries[i]
        e["prev"] = GENESIS if i == 0 else entries[i - 1]["hash"]
        signed = {k: e[k] for k in ("seq", "ts", "event", "actor", "key_id", "data", "prev")}
        canonical = json.dumps(
            signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        e["hash"] = hashlib.sha256(canonical).hexdigest()
    set_lines(path, [json.dumps(e, ensure_ascii=False) + "\n" for e in entries])
    head_path = default_head_path(path)
    head = json.loads(head_path.read_text())
    head["hash"] = entries[-1]["hash"]
    head_path.write_text(json.dumps(head))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    write_log(path)
    return path


def assert_bad(result: AuditVerification, *, seq: int | None, line: int | None, words: str):
    assert not result.ok, result
    assert result.first_bad_seq == seq, result
    assert result.first_bad_line == line, result
    assert result.reason is not None and words in result.reason, result.reason


# --------------------------------------------------------------------------- vector


def test_audit_entry_vector(tmp_path):
    v = VECTORS["audit_entry"]
    signed = v["signed_fields"]
    key = MasterKey(bytes.fromhex(v["master_key_hex"]))
    log = AuditLog(tmp_path / "a.jsonl", key, clock=lambda: datetime.fromisoformat(signed["ts"]))
    entry = log.append(signed["event"], actor=signed["actor"], data=signed["data"])
    assert entry.seq == 0 and entry.prev == GENESIS and entry.key_id == signed["key_id"]
    assert entry.ts == signed["ts"]
    assert (entry.hash, entry.mac) == (v["hash"], v["mac"])
    head = json.loads(log.head_path.read_text())
    assert head == {
        "version": 1,
        "seq": 0,
        "hash": v["hash"],
        "key_id": signed["key_id"],
        "mac": v["head_mac"],
    }
    assert json.loads(lines(log.path)[0]) == entry.to_dict()


# --------------------------------------------------------------------------- intact


def test_intact_chain_verifies(log_path):
    result = verify_audit_log(log_path, KEY)
    assert result.ok and result.reason is None and not result.warnings
    assert result.entries == N and result.verified == N and result.head_seq == N - 1
    assert result.key_ids == (KEY.key_id,)
    events = read_audit_events(log_path)
    assert [e.seq for e in events] == list(range(N))
    assert events[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(events))
    assert events[2].data == {"i": 2, "rows": 20} and events[1].ts == "2026-01-02T03:04:06.000000Z"


def test_an_empty_log_fails_verification(tmp_path):
    """Emptying the log and deleting its checkpoint needs no key; it must not pass."""
    path = tmp_path / "audit.jsonl"
    path.touch()
    result = verify_audit_log(path, KEY)
    assert not result.ok and result.entries == 0 and "empty" in (result.reason or "")


def test_witnessed_heads_catch_a_log_emptied_or_cut_with_its_checkpoint(tmp_path):
    """A head recorded elsewhere (a run summary, a release) must still be in the log: cutting
    the log and its checkpoint back together, or rewriting it under the same key, fails."""
    path = tmp_path / "audit.jsonl"
    log = write_log(path, n=5)
    fourth = read_audit_events(path)[3]
    witness = Witness("run summary r1.json", fourth.seq, fourth.hash)
    assert verify_audit_log(path, KEY, witnesses=[witness]).ok
    # Cut back to three entries and rewrite the checkpoint to match (as a key holder could).
    set_lines(path, lines(path)[:3])
    head = default_head_path(path)
    head.unlink()
    short = AuditLog(path, KEY, clock=step_clock(T0 + timedelta(hours=1)))
    with pytest.raises(AuditError):
        short.append("access", actor="analyst")  # no checkpoint: refused
    cut = verify_audit_log(path, KEY, witnesses=[witness])
    assert not cut.ok and "run summary r1.json" in (cut.reason or "")
    assert "cut off" in (cut.reason or "")
    # Rewritten from seq 3 with different content: the witness's hash no longer matches.
    path.unlink()
    rewritten = write_log(path, n=6)
    assert log is not rewritten
    assert read_audit_events(path)[3].hash == fourth.hash  # same clock and data: same entry
    moved = Witness("release r1", fourth.seq, "0" * 64)
    bad = verify_audit_log(path, KEY, witnesses=[moved])
    assert not bad.ok and "rewritten" in (bad.reason or "")
    # Emptied log with its checkpoint gone: the witness still says something was there.
    path.write_text("")
    default_head_path(path).unlink()
    emptied = verify_audit_log(path, KEY, witnesses=[witness])
    assert not emptied.ok and "cut off" in (emptied.reason or "")


def test_a_key_the_log_does_not_know_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, n=3)
    before = path.read_bytes()
    stranger = AuditLog(path, OTHER_KEY)
    with pytest.raises(AuditError, match="kept with audit key"):
        stranger.check_key()
    with pytest.raises(AuditError, match="kept with audit key"):
        stranger.append("access", actor="analyst")
    assert path.read_bytes() == before
    AuditLog(path, KEY).check_key()  # the log's own key passes


def test_log_and_checkpoint_permissions_and_newlines(log_path):
    assert log_path.read_bytes().endswith(b"\n")
    assert (log_path.stat().st_mode & 0o077) in (0o040, 0o000)
    assert sorted(p.name for p in log_path.parent.iterdir()) == ["audit.jsonl", "audit.jsonl.head"]


# --------------------------------------------------------------------------- tampering


def test_edited_field_is_caught_by_hash(log_path):
    ls = lines(log_path)
    ls[2] = ls[2].replace('"rows":20', '"rows":21')
    set_lines(log_path, ls)
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="altered")


@pytest.mark.parametrize("field", ["event", "actor", "ts", "key_id"])
def test_each_signed_field_is_covered(log_path, field):
    ls = lines(log_path)
    entry = json.loads(ls[3])
    entry[field] = "run.failed" if field == "event" else "x" + entry[field][1:]
    ls[3] = json.dumps(entry) + "\n"
    set_lines(log_path, ls)
    assert_bad(verify_audit_log(log_path, KEY), seq=3, line=4, words="altered")


def test_deleted_line_is_caught(log_path):
    ls = lines(log_path)
    del ls[2]
    set_lines(log_path, ls)
    result = verify_audit_log(log_path, KEY)
    assert_bad(result, seq=2, line=3, words="holds seq 3 where seq 2 was expected")
    assert result.verified == 2 and result.entries == N - 1


def test_deleted_and_renumbered_line_is_caught_by_the_chain(log_path):
    ls = [json.loads(line) for line in lines(log_path)]
    del ls[2]
    for i, e in enumerate(ls):
        e["seq"] = i
    set_lines(log_path, [json.dumps(e) + "\n" for e in ls])
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="does not link")


def test_inserted_forged_line_is_caught_by_mac(log_path):
    ls = lines(log_path)
    forged = json.loads(ls[2])
    forged["data"] = {"i": 99}
    ls.insert(2, json.dumps(forged) + "\n")
    set_lines(log_path, ls)
    # The forger renumbers and re-hashes everything after the insertion, but has no key.
    entries = [json.loads(line) for line in ls]
    for i, e in enumerate(entries):
        e["seq"] = i
    set_lines(log_path, [json.dumps(e) + "\n" for e in entries])
    rehash_without_key(log_path, 2)
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="fails its MAC check")


def test_inserted_copy_of_a_line_is_caught(log_path):
    ls = lines(log_path)
    ls.insert(3, ls[2])
    set_lines(log_path, ls)
    assert_bad(verify_audit_log(log_path, KEY), seq=3, line=4, words="holds seq 2")


def test_swapped_lines_are_caught(log_path):
    ls = lines(log_path)
    ls[2], ls[3] = ls[3], ls[2]
    set_lines(log_path, ls)
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="holds seq 3")


def test_recomputed_hashes_without_key_are_caught_by_mac(log_path):
    ls = lines(log_path)
    ls[1] = ls[1].replace('"actor":"engineer"', '"actor":"someone-else"')
    set_lines(log_path, ls)
    rehash_without_key(log_path, 1)
    result = verify_audit_log(log_path, KEY)
    assert_bad(result, seq=1, line=2, words="fails its MAC check")
    assert result.verified == 1


@pytest.mark.parametrize("cut", [1, 2, N])
def test_truncation_is_caught_by_the_checkpoint(log_path, cut):
    set_lines(log_path, lines(log_path)[: N - cut])
    result = verify_audit_log(log_path, KEY)
    assert_bad(result, seq=N - cut, line=N - cut + 1, words="truncated")
    assert result.verified == N - cut and result.head_seq == N - 1


def test_partial_last_line_is_caught(log_path):
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-30])
    assert_bad(verify_audit_log(log_path, KEY), seq=N - 1, line=N, words="incomplete")
    with pytest.raises(AuditError, match="incomplete line"):
        AuditLog(log_path, KEY).append("access", actor="analyst")


def test_blank_and_garbage_lines_are_caught(log_path):
    ls = lines(log_path)
    set_lines(log_path, [*ls[:2], "\n", *ls[2:]])
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="is empty")
    set_lines(log_path, [*ls[:2], "{not json\n", *ls[2:]])
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="not valid JSON")
    set_lines(log_path, [*ls[:2], '{"seq": 2}\n', *ls[2:]])
    assert_bad(verify_audit_log(log_path, KEY), seq=2, line=3, words="missing or unexpected")


def test_missing_checkpoint_is_caught(log_path):
    default_head_path(log_path).unlink()
    assert_bad(verify_audit_log(log_path, KEY), seq=None, line=None, words="missing")
    with pytest.raises(AuditError, match=r"checkpoint .* is missing"):
        AuditLog(log_path, KEY).append("access", actor="analyst")


def test_forged_checkpoint_is_caught(log_path):
    head_path = default_head_path(log_path)
    head = json.loads(head_path.read_text())
    head["seq"] = 2
    head["hash"] = json.loads(lines(log_path)[2])["hash"]
    head_path.write_text(json.dumps(head))
    set_lines(log_path, lines(log_path)[:3])
    assert_bad(verify_audit_log(log_path, KEY), seq=None, line=None, words="checkpoint")
    assert "fails its MAC check" in (verify_audit_log(log_path, KEY).reason or "")


def test_checkpoint_mismatching_the_log_is_caught(log_path, tmp_path):
    # A MAC-valid checkpoint from another log with the same key.
    other = tmp_path / "other.jsonl"
    write_log(other, n=N)
    ls = lines(other)
    entry = json.loads(ls[-1])
    entry["data"] = {"different": True}
    log2 = tmp_path / "third.jsonl"
    log = AuditLog(log2, KEY, clock=step_clock())
    for i in range(N):
        log.append("access", actor="x", data={"i": i})
    default_head_path(log_path).write_bytes(default_head_path(log2).read_bytes())
    assert_bad(verify_audit_log(log_path, KEY), seq=N - 1, line=N, words="checkpoint's hash")


def test_old_checkpoint_copy(log_path, tmp_path):
    head_path = default_head_path(log_path)
    snapshot_path = tmp_path / "snap.jsonl"
    write_log(snapshot_path, n=N - 1)  # same key and clock -> identical first N-1 entries
    old_head = default_head_path(snapshot_path).read_bytes()
    head_path.write_bytes(old_head)
    result = verify_audit_log(log_path, KEY)
    assert result.ok and result.warnings and "one entry behind" in result.warnings[0]
    # Up to one group commit behind: an interrupted batch of appends, not tampering.
    write_log(snapshot_path.with_name("snap3.jsonl"), n=N - 3)
    head_path.write_bytes(default_head_path(snapshot_path.with_name("snap3.jsonl")).read_bytes())
    result = verify_audit_log(log_path, KEY)
    assert result.ok and "3 entries behind" in result.warnings[0]
    AuditLog(log_path, KEY, clock=step_clock(T0 + timedelta(hours=1))).append("access", actor="a")
    assert verify_audit_log(log_path, KEY).ok  # the next append catches the checkpoint up


def test_checkpoint_older_than_one_group_commit(tmp_path):
    path = tmp_path / "long.jsonl"
    write_log(path, n=MAX_BATCH + 4)
    snapshot = tmp_path / "snap.jsonl"
    write_log(snapshot, n=2)
    default_head_path(path).write_bytes(default_head_path(snapshot).read_bytes())
    assert_bad(verify_audit_log(path, KEY), seq=2, line=3, words="older copy")
    with pytest.raises(AuditError, match="does not match its checkpoint"):
        AuditLog(path, KEY).append("access", actor="a")


def test_threads_appending_at_once_share_commits_and_keep_the_chain(tmp_path):
    path = tmp_path / "busy.jsonl"
    log = AuditLog(path, KEY)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                log.append("access", actor=f"user{i}", data={"j": j})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    result = verify_audit_log(path, KEY)
    assert result.ok and result.entries == 200 and not result.warnings


def test_wrong_key_is_reported_not_raised(log_path):
    result = verify_audit_log(log_path, OTHER_KEY)
    assert_bad(result, seq=0, line=1, words="was not supplied")


def test_checkpoint_with_unknown_key(log_path):
    head_path = default_head_path(log_path)
    head = json.loads(head_path.read_text())
    head["key_id"] = OTHER_KEY.key_id
    head_path.write_text(json.dumps(head))
    assert_bad(verify_audit_log(log_path, KEY), seq=None, line=None, words="not supplied")
    result = verify_audit_log(log_path, [KEY, OTHER_KEY])
    assert_bad(result, seq=None, line=None, words="fails its MAC check")


def test_corrupt_checkpoint_is_reported(log_path):
    default_head_path(log_path).write_text("{oops")
    assert_bad(verify_audit_log(log_path, KEY), seq=None, line=None, words="not valid JSON")
    with pytest.raises(AuditError, match="not valid JSON"):
        AuditLog(log_path, KEY).append("access", actor="analyst")


# --------------------------------------------------------------------------- append guards


def test_append_refuses_after_truncation(log_path):
    set_lines(log_path, lines(log_path)[:-1])
    with pytest.raises(AuditError, match="truncated or altered"):
        AuditLog(log_path, KEY).append("access", actor="analyst")
    log_path.write_text("")
    with pytest.raises(AuditError, match="is empty but its checkpoint"):
        AuditLog(log_path, KEY).append("access", actor="analyst")


def test_append_refuses_after_tampering_with_the_last_entry(log_path):
    ls = lines(log_path)
    ls[-1] = ls[-1].replace('"rows":50', '"rows":5')
    set_lines(log_path, ls)
    with pytest.raises(AuditError, match="fails its hash or MAC check"):
        AuditLog(log_path, KEY).append("access", actor="analyst")
    rehash_without_key(log_path, N - 1)
    with pytest.raises(AuditError, match=r"fails its (hash or )?MAC check"):
        AuditLog(log_path, KEY).append("access", actor="analyst")


def test_append_recovers_from_a_stale_checkpoint(log_path, tmp_path):
    snapshot = tmp_path / "snap.jsonl"
    write_log(snapshot, n=N - 1)
    default_head_path(log_path).write_bytes(default_head_path(snapshot).read_bytes())
    AuditLog(log_path, KEY, clock=step_clock(T0 + timedelta(hours=1))).append(
        "run.finished", actor="engineer"
    )
    result = verify_audit_log(log_path, KEY)
    assert result.ok and not result.warnings and result.entries == N + 1


def test_append_continues_an_existing_log(log_path):
    entry = AuditLog(log_path, KEY).append("access", actor="analyst", data={"view": "area"})
    assert entry.seq == N
    assert entry.prev == json.loads(lines(log_path)[N - 1])["hash"]
    assert verify_audit_log(log_path, KEY).ok


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"event": "Run Started"}, "event name"),
        ({"event": "run..started"}, "event name"),
        ({"event": ""}, "event name"),
        ({"actor": " "}, "actor"),
        ({"data": {"blob": b"\x00\x01"}}, "'blob' has unsupported type bytes"),
        ({"data": {"when": datetime(2026, 1, 1)}}, "'when' has unsupported type datetime"),
        ({"data": {"x": {"rate": float("nan")}}}, "'x.rate' is not a finite number"),
        ({"data": {1: "a"}}, "keys must be strings"),
        ({"data": ["not", "a", "dict"]}, "must be a mapping"),
        ({"data": {"s": {1, 2}}}, "'s' has unsupported type set"),
    ],
)
def test_append_validates_its_arguments(tmp_path, kwargs, words):
    args = {"event": "access", "actor": "analyst", "data": {}} | kwargs
    log = AuditLog(tmp_path / "a.jsonl", KEY)
    with pytest.raises(AuditError, match=words):
        log.append(args.pop("event"), **args)
    assert not (tmp_path / "a.jsonl").exists() or (tmp_path / "a.jsonl").read_text() == ""


def test_append_accepts_nested_json_data(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", KEY)
    data = {"counts": {"council": 10, "nhs": [1, 2, 3]}, "ok": True, "rate": 0.25, "none": None}
    entry = log.append("run.finished", actor="pipeline", data=data)
    assert entry.data == data
    assert read_audit_events(log.path)[0].data == data
    assert verify_audit_log(log.path, KEY).ok


def test_naive_clock_is_refused(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", KEY, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(AuditError, match="timezone-aware"):
        log.append("access", actor="analyst")


def test_audit_log_needs_a_master_key(tmp_path):
    with pytest.raises(AuditError, match="MasterKey"):
        AuditLog(tmp_path / "a.jsonl", b"\x00" * 32)  # type: ignore[arg-type]
    assert KEY.key_id in repr(AuditLog(tmp_path / "a.jsonl", KEY))


def test_custom_head_path(tmp_path):
    path = tmp_path / "logs" / "audit.jsonl"
    head = tmp_path / "elsewhere" / "audit.head"
    log = AuditLog(path, KEY, head_path=head)
    log.append("key.loaded", actor="engineer")
    assert head.exists() and not default_head_path(path).exists()
    assert verify_audit_log(path, KEY, head_path=head).ok
    assert not verify_audit_log(path, KEY).ok  # the default place holds no checkpoint


def test_unusable_paths_raise(tmp_path):
    with pytest.raises(AuditError, match="not found"):
        verify_audit_log(tmp_path / "missing.jsonl", KEY)
    with pytest.raises(AuditError, match="directory"):
        verify_audit_log(tmp_path, KEY)
    with pytest.raises(AuditError, match="directory"):
        AuditLog(tmp_path, KEY)
    with pytest.raises(AuditError, match="not found"):
        read_audit_events(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- rotation, threads


def test_log_spanning_a_key_rotation(tmp_path):
    path = tmp_path / "audit.jsonl"
    old = write_log(path, n=3, key=KEY)
    new = old.rotate_to(OTHER_KEY, actor="ig-lead")  # the hand-over, MACed with the old key
    new.append("run.started", actor="engineer")
    both = verify_audit_log(path, [KEY, OTHER_KEY])
    assert both.ok and both.entries == 5 and both.key_ids == (KEY.key_id, OTHER_KEY.key_id)
    handover = read_audit_events(path)[3]
    assert handover.event == "audit.key_rotated" and handover.key_id == KEY.key_id
    assert handover.data["to_key_id"] == OTHER_KEY.key_id
    assert_bad(verify_audit_log(path, OTHER_KEY), seq=0, line=1, words="not supplied")
    assert_bad(verify_audit_log(path, KEY), seq=4, line=5, words="not supplied")
    with pytest.raises(AuditError, match="kept with audit key"):
        AuditLog(path, KEY).append("access", actor="analyst")  # the old key is retired


def test_concurrent_appends_keep_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            log = AuditLog(path, KEY)
            for i in range(10):
                log.append("access", actor=f"worker-{w}", data={"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = verify_audit_log(path, KEY)
    assert result.ok and result.entries == 60


# --------------------------------------------------------------------------- properties

# Printable ASCII only: json.dumps writes it literally. With \uXXXX escapes a flip can give an
# equivalent spelling (\u00e9 vs \u00E9) of the same content, which is not tampering: the hash
# and MAC cover the canonical content, not the line's spelling.
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), ASCII)
DATA = st.dictionaries(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8),
    st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3)),
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(DATA, min_size=1, max_size=5), st.data())
def test_property_any_byte_flip_is_detected(tmp_path_factory, payloads, draw):
    path = tmp_path_factory.mktemp("flip") / "audit.jsonl"
    log = AuditLog(path, KEY, clock=step_clock())
    for payload in payloads:
        log.append("access", actor="analyst", data=payload)
    assert verify_audit_log(path, KEY).ok
    raw = bytearray(path.read_bytes())
    position = draw.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= draw.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    result = verify_audit_log(path, KEY)
    assert not result.ok
    assert result.first_bad_line is not None or result.reason


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(DATA, min_size=2, max_size=6), st.data())
def test_property_dropping_any_entry_is_detected_at_that_entry(tmp_path_factory, payloads, draw):
    path = tmp_path_factory.mktemp("drop") / "audit.jsonl"
    log = AuditLog(path, KEY, clock=step_clock())
    for payload in payloads:
        log.append("access", actor="analyst", data=payload)
    ls = lines(path)
    k = draw.draw(st.integers(0, len(ls) - 1))
    del ls[k]
    set_lines(path, ls)
    result = verify_audit_log(path, KEY)
    assert not result.ok and result.first_bad_seq == k and result.first_bad_line == k + 1
