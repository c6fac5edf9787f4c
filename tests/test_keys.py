"""Tests for uprnlink.privacy.keys: derivation vectors, key files, rotation, env keys and resolution."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import pickle
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.errors import KeyManagementError
from uprnlink.privacy.keys import (
    DEMO_PASSPHRASE,
    DEMO_SCRYPT_N,
    HKDF_SALT,
    KEY_FILE_VERSION,
    MasterKey,
    create_demo_key,
    create_key_file,
    key_from_env,
    load_key_file,
    read_key_info,
    resolve_key,
    rotate_key_file,
)

VECTORS = Path(__file__).parent / "vectors"
HMAC_VECTORS = json.loads((VECTORS / "hmac_hkdf.json").read_text(encoding="utf-8"))
KEY_FILE_VECTOR = json.loads((VECTORS / "key_file_v1.json").read_text(encoding="utf-8"))

CHEAP_N = 2**10
PASSPHRASE = "tangerine lighthouse quarry"
NEW_PASSPHRASE = "marmalade orbit sandstone"
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def counter_rng(seed: int = 0):
    """Deterministic 'randomness': SHA-256 in counter mode."""
    state = {"i": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}:{state['i']}".encode()).digest()
            state["i"] += 1
        return out[:n]

    return rng


def fixed_clock(when: datetime = T0):
    return lambda: when


def make_key_file(path: Path, passphrase: str = PASSPHRASE, **kwargs):
    kwargs.setdefault("rng", counter_rng())
    kwargs.setdefault("clock", fixed_clock())
    kwargs.setdefault("scrypt_n", CHEAP_N)
    return create_key_file(path, passphrase, **kwargs)


def secret_forms(key_bytes: bytes) -> list[str]:
    return [
        key_bytes.hex(),
        key_bytes.hex().upper(),
        base64.b64encode(key_bytes).decode(),
        base64.urlsafe_b64encode(key_bytes).decode(),
        repr(key_bytes),
    ]


def assert_no_secrets(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message


# --------------------------------------------------------------------------- vectors


def test_rfc5869_case1_hkdf_primitive():
    v = HMAC_VECTORS["rfc5869_case1"]
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=v["length"],
        salt=bytes.fromhex(v["salt"]),
        info=bytes.fromhex(v["info"]),
    ).derive(bytes.fromhex(v["ikm"]))
    assert okm.hex() == v["okm"]


def test_rfc4231_case2_hmac_primitive():
    v = HMAC_VECTORS["rfc4231_case2"]
    h = crypto_hmac.HMAC(bytes.fromhex(v["key"]), hashes.SHA256())
    h.update(bytes.fromhex(v["data"]))
    assert h.finalize().hex() == v["mac"]


def test_vector_constants_match_module():
    assert HMAC_VECTORS["hkdf_salt_utf8"].encode() == HKDF_SALT


@pytest.mark.parametrize("vector", HMAC_VECTORS["keys"], ids=lambda v: v["key_id"])
def test_key_id_vector(vector):
    key = MasterKey(bytes.fromhex(vector["master_key_hex"]))
    assert key.key_id == vector["key_id"]


@pytest.mark.parametrize("vector", HMAC_VECTORS["keys"], ids=lambda v: v["key_id"])
def test_subkey_vectors_via_hmac_prototype(vector):
    key = MasterKey(bytes.fromhex(vector["master_key_hex"]))
    message = b"any message at all"
    for purpose, subkey_hex in vector["subkeys_hex"].items():
        h = key.hmac_prototype(purpose)
        h.update(message)
        expected = hmac.new(bytes.fromhex(subkey_hex), message, hashlib.sha256).digest()
        assert h.finalize() == expected, purpose


def test_key_id_is_not_a_subkey_or_the_key():
    vector = HMAC_VECTORS["keys"][0]
    key = MasterKey(bytes.fromhex(vector["master_key_hex"]))
    fingerprint = key.key_id.removeprefix("kid-")
    assert len(fingerprint) == 16
    assert fingerprint not in vector["master_key_hex"]
    for subkey_hex in vector["subkeys_hex"].values():
        assert fingerprint not in subkey_hex


# --------------------------------------------------------------------------- MasterKey


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_master_key_wrong_length_names_lengths_not_bytes(length):
    raw = bytes(range(length)) if length <= 256 else b"x" * length
    with pytest.raises(KeyManagementError) as err:
        MasterKey(raw)
    message = str(err.value)
    assert "32 bytes" in message and f"got {length} bytes" in message
    if length:
        assert_no_secrets(message, *secret_forms(raw))


def test_master_key_rejects_non_bytes_and_bad_epoch():
    with pytest.raises(KeyManagementError, match="must be bytes"):
        MasterKey("0" * 32)  # type: ignore[arg-type]
    for epoch in (0, -1, True, 1.5):
        with pytest.raises(KeyManagementError, match="epoch"):
            MasterKey(bytes(32), epoch=epoch)  # type: ignore[arg-type]
    with pytest.raises(KeyManagementError, match="timezone-aware"):
        MasterKey(bytes(32), created_at=datetime(2026, 1, 1))


def test_repr_and_str_show_only_key_id_and_epoch():
    raw = bytes(range(32))
    key = MasterKey(raw, epoch=7, created_at=T0)
    for text in (repr(key), str(key), f"{key}", f"{key!r}", repr([key])):
        assert key.key_id in text and "epoch=7" in text
        assert_no_secrets(text, *secret_forms(raw))


def test_master_key_cannot_be_pickled_or_mutated():
    key = MasterKey(bytes(range(32)))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(KeyManagementError, match="cannot be pickled"):
            pickle.dumps(key, protocol=protocol)
    assert copy.copy(key) is key and copy.deepcopy(key) is key
    with pytest.raises(AttributeError):
        key._key = b"\x00" * 32  # type: ignore[misc]
    with pytest.raises(AttributeError):
        key.epoch = 2  # type: ignore[misc]
    assert not hasattr(key, "__dict__")


def test_master_key_equality_and_created_at_normalised():
    raw = bytes(range(32))
    local = timezone(timedelta(hours=2))
    a = MasterKey(raw, created_at=datetime(2026, 1, 1, 12, 0, 0, 999, tzinfo=local))
    assert a.created_at == datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert a == MasterKey(raw) and hash(a) == hash(MasterKey(raw))
    assert a != MasterKey(raw, epoch=2)
    assert a != MasterKey(bytes(32))


def test_generate_uses_injected_rng_and_clock():
    key = MasterKey.generate(epoch=2, rng=counter_rng(5), clock=fixed_clock())
    again = MasterKey.generate(epoch=2, rng=counter_rng(5), clock=fixed_clock())
    assert key == again and key.epoch == 2 and key.created_at == T0
    assert MasterKey.generate(rng=counter_rng(6)) != key


@pytest.mark.parametrize("purpose", ["", "UPRN", "uprn/v2", "1abc", "a" * 65, "nhs-number"])
def test_hmac_prototype_rejects_bad_purposes(purpose):
    with pytest.raises(KeyManagementError, match="purpose"):
        MasterKey(bytes(32)).hmac_prototype(purpose)


def test_hmac_prototype_is_fresh_and_copyable():
    key = MasterKey(bytes(range(32)))
    proto = key.hmac_prototype("uprn")
    a = proto.copy()
    a.update(b"1")
    b = proto.copy()
    b.update(b"1")
    assert a.finalize() == b.finalize()
    proto.update(b"contaminate")  # must not affect the next prototype
    c = key.hmac_prototype("uprn")
    c.update(b"1")
    d = key.hmac_prototype("uprn")
    d.update(b"1")
    assert c.finalize() == d.finalize()


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_property_distinct_keys_distinct_key_ids(a, b):
    ka, kb = MasterKey(a), MasterKey(b)
    assert (ka.key_id == kb.key_id) == (a == b)
    assert a.hex() not in repr(ka)


# --------------------------------------------------------------------------- key files


def test_key_file_round_trip(tmp_path):
    path = tmp_path / "keys" / "master.key"
    info = make_key_file(path, epoch=4)
    assert info.path == path and info.epoch == 4 and info.created_at == T0
    assert info.kdf.n == CHEAP_N and info.kdf.r == 8 and info.kdf.p == 1
    assert info.key_id.startswith("kid-") and info.format_version == KEY_FILE_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]  # no temp left
    key = load_key_file(path, PASSPHRASE)
    assert key.key_id == info.key_id and key.epoch == 4 and key.created_at == T0
    assert read_key_info(path) == info
    doc = json.loads(path.read_text())
    assert doc["format"] == "uprnlink-key" and doc["version"] == 1
    assert doc["cipher"]["name"] == "AES-256-GCM"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 12
    assert_no_secrets(path.read_text(), PASSPHRASE, *secret_forms(key._key))


def test_key_file_is_deterministic_under_injected_rng_and_clock(tmp_path):
    make_key_file(tmp_path / "a.key")
    make_key_file(tmp_path / "b.key")
    assert (tmp_path / "a.key").read_bytes() == (tmp_path / "b.key").read_bytes()
    make_key_file(tmp_path / "c.key", rng=counter_rng(1))
    assert load_key_file(tmp_path / "c.key", PASSPHRASE) != load_key_file(
        tmp_path / "a.key", PASSPHRASE
    )


def test_key_file_vector_unlocks(tmp_path):
    v = KEY_FILE_VECTOR
    path = tmp_path / "vector.key"
    path.write_text(json.dumps(v["key_file"]))
    key = load_key_file(path, v["passphrase"])
    assert key == MasterKey(bytes.fromhex(v["master_key_hex"]), epoch=v["epoch"])
    assert key.key_id == v["key_id"]
    assert key.created_at == datetime.fromisoformat(v["created_at"])
    info = read_key_info(path)
    assert (info.key_id, info.epoch, info.kdf.n) == (v["key_id"], v["epoch"], 2**10)


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyManagementError, match="already exists"):
        make_key_file(path, rng=counter_rng(9))
    assert path.read_bytes() == before


def test_create_refuses_short_passphrase(tmp_path):
    with pytest.raises(KeyManagementError, match="too short") as err:
        make_key_file(tmp_path / "k.key", passphrase="hunter2")
    assert "hunter2" not in str(err.value)
    assert not (tmp_path / "k.key").exists()


def test_create_refuses_silly_scrypt_params(tmp_path):
    for n in (1000, 2**25):
        with pytest.raises(KeyManagementError, match="scrypt"):
            make_key_file(tmp_path / "k.key", scrypt_n=n)


def test_default_scrypt_parameters_are_recorded(tmp_path, monkeypatch):
    # Don't pay for n=2**17 in the unit suite: record the parameters scrypt would be called with.
    import uprnlink.privacy.keys as keys_module

    seen = []
    real = keys_module._derive_kek

    def spy(secret, salt, kdf):
        seen.append(kdf)
        return real(secret, salt, keys_module.KdfParams(n=CHEAP_N, r=kdf.r, p=kdf.p))

    monkeypatch.setattr(keys_module, "_derive_kek", spy)
    info = create_key_file(tmp_path / "k.key", PASSPHRASE, rng=counter_rng(), clock=fixed_clock())
    assert (info.kdf.n, info.kdf.r, info.kdf.p) == (2**17, 8, 1)
    assert seen[0].n == 2**17


def test_passphrase_is_unicode_normalised(tmp_path):
    composed, decomposed = "caf\u00e9 lighthouse quarry", "cafe\u0301 lighthouse quarry"
    make_key_file(tmp_path / "k.key", passphrase=composed)
    load_key_file(tmp_path / "k.key", decomposed)


def test_create_demo_key(tmp_path):
    info = create_demo_key(tmp_path / "demo.key", rng=counter_rng(), clock=fixed_clock())
    assert info.kdf.n == DEMO_SCRYPT_N
    assert load_key_file(tmp_path / "demo.key", DEMO_PASSPHRASE).key_id == info.key_id


# --------------------------------------------------------------------------- failures


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def _flip_ciphertext(doc):
    ct = bytearray(base64.b64decode(doc["cipher"]["ciphertext"]))
    ct[5] ^= 0x01
    doc["cipher"]["ciphertext"] = base64.b64encode(bytes(ct)).decode()


def _flip_nonce(doc):
    nonce = bytearray(base64.b64decode(doc["cipher"]["nonce"]))
    nonce[0] ^= 0x80
    doc["cipher"]["nonce"] = base64.b64encode(bytes(nonce)).decode()


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


ALTERED = "wrong passphrase or the key file has been altered"
OTHER_KID = "kid-0123456789abcdef"

EDIT_CASES = {
    "flipped ciphertext byte": (_flip_ciphertext, ALTERED),
    "flipped nonce bit": (_flip_nonce, ALTERED),
    "edited epoch": (_set("epoch", 2), ALTERED),
    "edited created_at": (_set("created_at", "2020-01-01T00:00:00Z"), ALTERED),
    "edited key_id": (_set("key_id", OTHER_KID), ALTERED),
    "edited scrypt r": (_set("kdf", "r", 4), ALTERED),
    "unknown version": (_set("version", 2), "unknown format version 2"),
    "not a key file": (_set("format", "something-else"), "not a uprnlink key file"),
    "missing salt": (lambda d: d["kdf"].pop("salt"), "missing field 'kdf.salt'"),
    "epoch wrong type": (_set("epoch", "1"), "field 'epoch' has the wrong type"),
    "bad base64": (_set("cipher", "ciphertext", "***"), "not valid base64"),
    "short nonce": (_set("cipher", "nonce", "AAAA"), "nonce must be 12 bytes"),
    "truncated ciphertext": (_set("cipher", "ciphertext", "AAAA"), "truncated"),
    "malformed key id": (_set("key_id", "not-a-kid"), "'key_id' is malformed"),
    "huge scrypt n": (_set("kdf", "n", 2**30), "unsupported scrypt parameters"),
    "unknown cipher": (_set("cipher", "name", "ChaCha20"), "unsupported cipher"),
}


@pytest.mark.parametrize("case", sorted(EDIT_CASES))
def test_edited_key_file_fails_precisely(tmp_path, case):
    change, expected = EDIT_CASES[case]
    path = tmp_path / "master.key"
    make_key_file(path)
    secret = load_key_file(path, PASSPHRASE)._key
    _edit(path, change)
    with pytest.raises(KeyManagementError) as err:
        load_key_file(path, PASSPHRASE)
    message = str(err.value)
    assert expected in message and str(path) in message
    assert_no_secrets(message, PASSPHRASE, *secret_forms(secret))
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


RAW_CASES = {
    "corrupted (garbage in the middle)": (lambda b: b[:40] + b"\x00garbage{" + b[40:], "corrupted"),
    "not JSON": (
        lambda b: b"PK\x03\x04 this is a zip file, not a key",
        "corrupted: not valid JSON",
    ),
    "not UTF-8": (lambda b: b"\xff\xfe\x00" + b, "not UTF-8"),
    "truncated in half": (lambda b: b[: len(b) // 2], "is truncated"),
    "truncated by one byte": (lambda b: b.rstrip()[:-1], "is truncated"),
    "empty": (lambda b: b"", "is empty (truncated)"),
    "JSON list": (lambda b: b"[1, 2, 3]", "not a uprnlink key file"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_damaged_key_file_fails_precisely(tmp_path, case):
    damage, expected = RAW_CASES[case]
    path = tmp_path / "master.key"
    make_key_file(path)
    secret = load_key_file(path, PASSPHRASE)._key
    path.write_bytes(damage(path.read_bytes()))
    for call in (lambda: load_key_file(path, PASSPHRASE), lambda: read_key_info(path)):
        with pytest.raises(KeyManagementError) as err:
            call()
        assert expected in str(err.value)
        assert_no_secrets(str(err.value), PASSPHRASE, *secret_forms(secret))


def test_wrong_passphrase(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    wrong = "definitely not the passphrase"
    with pytest.raises(KeyManagementError, match=ALTERED) as err:
        load_key_file(path, wrong)
    assert_no_secrets(str(err.value), wrong, PASSPHRASE)
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__
    with pytest.raises(KeyManagementError, match="passphrase is empty"):
        load_key_file(path, "")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(KeyManagementError, match="not found"):
        load_key_file(tmp_path / "nope.key", PASSPHRASE)
    with pytest.raises(KeyManagementError, match="not found"):
        read_key_info(tmp_path / "nope.key")
    with pytest.raises(KeyManagementError, match="is a directory"):
        load_key_file(tmp_path, PASSPHRASE)


def _vector_style_file(path: Path, plaintext: bytes, passphrase: str) -> None:
    """An authentic key file around `plaintext`, built with the primitives directly."""
    salt, nonce, n = bytes(16), bytes(12), 2**10
    header = {
        "format": "uprnlink-key",
        "version": 1,
        "key_id": "kid-0000000000000000",
        "epoch": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "kdf": {"name": "scrypt", "n": n, "r": 8, "p": 1, "salt": base64.b64encode(salt).decode()},
    }
    kek = hashlib.scrypt(passphrase.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    aad = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    doc = dict(header)
    doc["cipher"] = {
        "name": "AES-256-GCM",
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(AESGCM(kek).encrypt(nonce, plaintext, aad)).decode(),
    }
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("length", [16, 31, 33])
def test_decrypted_key_of_wrong_length(tmp_path, length):
    path = tmp_path / "odd.key"
    plaintext = bytes(range(length))
    _vector_style_file(path, plaintext, PASSPHRASE)
    with pytest.raises(KeyManagementError, match=f"decrypts to a key of {length} bytes") as err:
        load_key_file(path, PASSPHRASE)
    assert_no_secrets(str(err.value), PASSPHRASE, *secret_forms(plaintext))


def test_stored_key_id_must_match_the_key(tmp_path):
    path = tmp_path / "liar.key"
    _vector_style_file(path, bytes(range(32)), PASSPHRASE)  # authentic, but key_id is wrong
    with pytest.raises(KeyManagementError, match="stored key id does not match"):
        load_key_file(path, PASSPHRASE)


# --------------------------------------------------------------------------- rotation


def test_rotate_key_file(tmp_path):
    path = tmp_path / "master.key"
    old_info = make_key_file(path)
    old_bytes = path.read_bytes()
    new_info = rotate_key_file(
        path,
        PASSPHRASE,
        NEW_PASSPHRASE,
        rng=counter_rng(2),
        clock=fixed_clock(T0 + timedelta(days=90)),
    )
    assert new_info.epoch == old_info.epoch + 1 and new_info.key_id != old_info.key_id
    assert new_info.created_at == T0 + timedelta(days=90) and new_info.kdf == old_info.kdf
    retired = tmp_path / "master.key.epoch1.retired"
    assert retired.read_bytes() == old_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(retired, PASSPHRASE).key_id == old_info.key_id
    new_key = load_key_file(path, NEW_PASSPHRASE)
    assert new_key.key_id == new_info.key_id and new_key.epoch == 2
    with pytest.raises(KeyManagementError, match=ALTERED):
        load_key_file(path, PASSPHRASE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key", "master.key.epoch1.retired"]

    third = rotate_key_file(path, NEW_PASSPHRASE, rng=counter_rng(3), clock=fixed_clock())
    assert third.epoch == 3
    assert load_key_file(path, NEW_PASSPHRASE).key_id == third.key_id
    assert load_key_file(tmp_path / "master.key.epoch2.retired", NEW_PASSPHRASE).epoch == 2


def test_rotate_with_wrong_passphrase_changes_nothing(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyManagementError, match=ALTERED):
        rotate_key_file(path, "not the right passphrase", rng=counter_rng(2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_rotate_refuses_to_clobber_a_retired_file(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    (tmp_path / "master.key.epoch1.retired").write_text("precious")
    before = path.read_bytes()
    with pytest.raises(KeyManagementError, match="already exists"):
        rotate_key_file(path, PASSPHRASE, rng=counter_rng(2))
    assert path.read_bytes() == before
    assert (tmp_path / "master.key.epoch1.retired").read_text() == "precious"


def test_rotate_can_change_scrypt_params(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    info = rotate_key_file(path, PASSPHRASE, rng=counter_rng(2), scrypt_n=2**11)
    assert info.kdf.n == 2**11 and read_key_info(path).kdf.n == 2**11


# --------------------------------------------------------------------------- env keys

RAW = bytes(range(100, 132))


@pytest.mark.parametrize(
    "value",
    [
        RAW.hex(),
        RAW.hex().upper(),
        f"  {RAW.hex()}\n",
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
    ],
)
def test_key_from_env_encodings(value):
    key = key_from_env("UPRNLINK_KEY", environ={"UPRNLINK_KEY": value})
    assert key == MasterKey(RAW) and key.epoch == 1 and key.created_at is None


def test_key_from_env_epoch():
    env = {"K": RAW.hex(), "K_EPOCH": "3"}
    assert key_from_env("K", environ=env).epoch == 3
    assert key_from_env("K", environ=env, epoch=5).epoch == 5
    with pytest.raises(KeyManagementError, match="K_EPOCH must be a positive integer"):
        key_from_env("K", environ={"K": RAW.hex(), "K_EPOCH": "zero"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (RAW[:31].hex(), r"holds a key of 31 bytes \(read as hex\); expected 32 bytes"),
        (RAW.hex() + "00", "holds a key of 33 bytes"),
        (RAW.hex()[:-1], "does not hold a key"),
        (base64.b64encode(RAW[:16]).decode(), "holds a key of 16 bytes"),
        (base64.b64encode(RAW + b"!").decode(), "holds a key of 33 bytes"),
        ("not a key at all!", "does not hold a key"),
        (RAW.hex()[:-1] + "g", r"48 bytes \(read as base64\)"),
    ],
)
def test_key_from_env_bad_values(value, expected):
    with pytest.raises(KeyManagementError, match=expected) as err:
        key_from_env("UPRNLINK_KEY", environ={"UPRNLINK_KEY": value})
    assert "UPRNLINK_KEY" in str(err.value)
    assert_no_secrets(str(err.value), value.strip(), *secret_forms(RAW))


def test_key_from_env_unset():
    for env in ({}, {"UPRNLINK_KEY": ""}, {"UPRNLINK_KEY": "   "}):
        with pytest.raises(KeyManagementError, match="UPRNLINK_KEY is not set"):
            key_from_env("UPRNLINK_KEY", environ=env)


def test_key_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("UPRNLINK_TEST_KEY", RAW.hex())
    assert key_from_env("UPRNLINK_TEST_KEY") == MasterKey(RAW)


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32), st.sampled_from(["hex", "b64", "url"]))
def test_property_env_encodings_round_trip(raw, encoding):
    value = {
        "hex": raw.hex(),
        "b64": base64.b64encode(raw).decode(),
        "url": base64.urlsafe_b64encode(raw).decode(),
    }[encoding]
    assert key_from_env("K", environ={"K": value}) == MasterKey(raw)


# --------------------------------------------------------------------------- resolve_key


def _no_prompt(prompt: str) -> str:
    raise AssertionError("must not prompt")


def test_resolve_key_env_wins(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    env = {"KEY": RAW.hex(), "PASS": PASSPHRASE}
    key = resolve_key(
        key_file=path, passphrase_env="PASS", key_env="KEY", prompt=True,
        environ=env, getpass_fn=_no_prompt,
    )  # fmt: skip
    assert key == MasterKey(RAW)


def test_resolve_key_file_with_passphrase_env(tmp_path):
    path = tmp_path / "master.key"
    info = make_key_file(path)
    key = resolve_key(
        key_file=path, passphrase_env="PASS", key_env="KEY", prompt=True,
        environ={"PASS": PASSPHRASE}, getpass_fn=_no_prompt,
    )  # fmt: skip
    assert key.key_id == info.key_id


def test_resolve_key_prompts_when_allowed(tmp_path):
    path = tmp_path / "master.key"
    info = make_key_file(path)
    prompts = []

    def fake_getpass(prompt):
        prompts.append(prompt)
        return PASSPHRASE

    key = resolve_key(
        key_file=path, passphrase_env="PASS", key_env="KEY", prompt=True,
        environ={}, getpass_fn=fake_getpass,
    )  # fmt: skip
    assert key.key_id == info.key_id
    assert len(prompts) == 1 and str(path) in prompts[0]


def test_resolve_key_without_passphrase_or_prompt(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    with pytest.raises(KeyManagementError, match="needs a passphrase") as err:
        resolve_key(
            key_file=path, passphrase_env="PASS", key_env="KEY", prompt=False,
            environ={}, getpass_fn=_no_prompt,
        )  # fmt: skip
    assert "PASS" in str(err.value) and "KEY" in str(err.value)


def test_resolve_key_nothing_configured():
    with pytest.raises(KeyManagementError, match="no pseudonymisation key available"):
        resolve_key(key_file=None, passphrase_env=None, key_env="KEY", prompt=True, environ={})


def test_resolve_key_missing_file_fails_before_prompting(tmp_path):
    with pytest.raises(KeyManagementError, match="not found"):
        resolve_key(
            key_file=tmp_path / "missing.key", passphrase_env=None, key_env=None, prompt=True,
            environ={}, getpass_fn=_no_prompt,
        )  # fmt: skip


def test_resolve_key_wrong_prompted_passphrase_and_bad_env_key(tmp_path):
    path = tmp_path / "master.key"
    make_key_file(path)
    with pytest.raises(KeyManagementError, match=ALTERED):
        resolve_key(
            key_file=path, passphrase_env=None, key_env=None, prompt=True,
            environ={}, getpass_fn=lambda _: "wrong passphrase here",
        )  # fmt: skip
    with pytest.raises(KeyManagementError, match="31 bytes"):
        resolve_key(
            key_file=path, passphrase_env=None, key_env="KEY", prompt=False,
            environ={"KEY": RAW[:31].hex()},
        )  # fmt: skip


def test_os_urandom_is_the_default_rng(tmp_path):
    a = create_key_file(tmp_path / "a.key", PASSPHRASE, scrypt_n=CHEAP_N)
    b = create_key_file(tmp_path / "b.key", PASSPHRASE, scrypt_n=CHEAP_N)
    assert a.key_id != b.key_id
    assert abs(a.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert os.stat(tmp_path / "a.key").st_size < 2000


def test_demo_keys_from_a_seed_are_the_same_on_every_checkout(tmp_path) -> None:
    """`uprnlink demo --seed N` makes the same three keys anywhere (so the same people and the
    same perturbed tables, and the guide's figures can be checked on a fresh clone); another
    seed, other keys."""
    from uprnlink.privacy.keys import KEY_KINDS, create_demo_key, demo_rng

    ids = {}
    for where, seed in (("a", 42), ("b", 42), ("c", 7)):
        ids[where] = [
            create_demo_key(
                tmp_path / where / f"{kind}.key", kind=kind, rng=demo_rng(seed, kind)
            ).key_id
            for kind in KEY_KINDS
        ]
    assert ids["a"] == ids["b"]
    assert not set(ids["a"]) & set(ids["c"])
    assert len(set(ids["a"])) == 3
