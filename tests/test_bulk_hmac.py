"""The bulk HMAC path (`uprnlink.privacy._hmac`, `MasterKey.hmac_hex`): known answers, equality with the
standard library on arbitrary inputs, the pure-Python fallback, and refusal of bad buffers."""

from __future__ import annotations

import hmac
import struct

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uprnlink.errors import KeyManagementError
from uprnlink.privacy import keys
from uprnlink.privacy.keys import MasterKey

_hmac = pytest.importorskip("uprnlink.privacy._hmac") if keys.BULK_HMAC == "openssl" else None

# RFC 4231 test cases 1-5 (keys up to one SHA-256 block; case 5 is the truncated one).
RFC4231 = [
    (
        bytes([0x0B] * 20),
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        bytes([0xAA] * 20),
        bytes([0xDD] * 50),
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        bytes([0xCD] * 50),
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (bytes([0x0C] * 20), b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
]


def _pack(messages: list[bytes]) -> tuple[bytes, bytes]:
    """Messages laid end to end and their count + 1 int64 offsets (Arrow's layout)."""
    offsets = [0]
    for m in messages:
        offsets.append(offsets[-1] + len(m))
    return b"".join(messages), struct.pack(f"<{len(offsets)}q", *offsets)


def _c_tokens(key: bytes, messages: list[bytes], take: int) -> list[str]:
    assert _hmac is not None
    data, offsets = _pack(messages)
    out = _hmac.tokens(key, data, offsets, len(messages), take).decode("ascii")
    return [out[i * 2 * take : (i + 1) * 2 * take] for i in range(len(messages))]


def _stdlib(key: bytes, message: bytes, take: int) -> str:
    return hmac.digest(key, message, "sha256")[:take].hex()


def test_extension_is_built():
    """CI and `make setup` build the extension; without it pseudonymisation is ~3x slower."""
    assert keys.BULK_HMAC == "openssl", (
        "uprnlink.privacy._hmac was not built (needs gcc and OpenSSL headers, e.g. Debian libssl-dev); "
        "run `make setup` after installing them"
    )


needs_c = pytest.mark.skipif(_hmac is None, reason="uprnlink.privacy._hmac not built")


@needs_c
@pytest.mark.parametrize(("key", "message", "expected"), RFC4231)
def test_rfc4231_known_answers(key, message, expected):
    take = len(expected) // 2
    assert _c_tokens(key, [message], take) == [expected]


@needs_c
def test_known_answers_in_one_batch():
    """Messages of one batch each get their own key-free state (no carry-over between them)."""
    key = bytes([0x0B] * 20)
    messages = [b"Hi There", b"", b"x" * 200, b"Hi There"]
    assert _c_tokens(key, messages, 32) == [_stdlib(key, m, 32) for m in messages]
    assert _c_tokens(key, messages, 32)[0] == RFC4231[0][2]


@needs_c
@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    messages=st.lists(st.binary(max_size=200), max_size=40),
    take=st.integers(1, 32),
)
def test_extension_equals_stdlib(key, messages, take):
    assert _c_tokens(key, messages, take) == [_stdlib(key, m, take) for m in messages]


@needs_c
@pytest.mark.parametrize(
    ("key", "offsets", "count", "take", "message"),
    [
        (b"", [0, 1], 1, 16, "key must be 1 to 64 bytes"),
        (b"k" * 65, [0, 1], 1, 16, "key must be 1 to 64 bytes"),
        (b"k", [0, 1], 1, 0, "take must be 1 to 32"),
        (b"k", [0, 1], 1, 33, "take must be 1 to 32"),
        (b"k", [0, 1], 2, 16, "must hold count"),
        (b"k", [0, 1, 2], 1, 16, "must hold count"),
        (b"k", [0, 3], 1, 16, "within the data buffer"),
        (b"k", [1, 0], 1, 16, "within the data buffer"),
        (b"k", [-1, 0], 1, 16, "within the data buffer"),
        (b"k", [0, 1], -1, 16, "must hold count"),
    ],
)
def test_extension_refuses_bad_buffers(key, offsets, count, take, message):
    packed = struct.pack(f"<{len(offsets)}q", *offsets)
    with pytest.raises(ValueError, match=message):
        _hmac.tokens(key, b"ab", packed, count, take)  # type: ignore[union-attr]


KEY = MasterKey(bytes(range(32)))


def _expected(key: MasterKey, purpose: str, messages: list[bytes], take: int) -> list[str]:
    sub = key._subkey(purpose)
    return [_stdlib(sub, m, take) for m in messages]


@pytest.fixture(params=["bulk", "python"])
def path(request, monkeypatch):
    """Run a test on the extension and on the pure-Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(keys, "_bulk_hmac", None)
    elif keys._bulk_hmac is None:
        pytest.skip("uprnlink.privacy._hmac not built")
    return request.param


def test_hmac_hex_matches_stdlib(path):
    messages = [str(100_000_000_000 + i).encode() for i in range(1000)] + [b""]
    out = KEY.hmac_hex("uprn", pl.Series("m", messages, dtype=pl.Binary), 16)
    assert out.dtype == pl.String
    assert out.name == "m"
    assert out.to_list() == _expected(KEY, "uprn", messages, 16)


def test_hmac_hex_sliced_and_chunked_series(path):
    """A slice (Arrow offset) and a many-chunk series hash exactly their own values."""
    messages = [f"value-{i}".encode() for i in range(300)]
    series = pl.Series("m", messages, dtype=pl.Binary)
    assert KEY.hmac_hex("record", series.slice(17, 100)).to_list() == _expected(
        KEY, "record", messages[17:117], 32
    )
    chunked = pl.concat([series.slice(0, 100), series.slice(100, 200)], rechunk=False)
    assert chunked.n_chunks() == 2
    assert KEY.hmac_hex("record", chunked).to_list() == _expected(KEY, "record", messages, 32)


def test_hmac_hex_threads_keep_order(monkeypatch):
    """Batches split over threads come back in the messages' order."""
    if keys._bulk_hmac is None:
        pytest.skip("uprnlink.privacy._hmac not built")
    monkeypatch.setattr(keys, "_PARALLEL_MIN", 10)
    monkeypatch.setattr(keys, "_cpu_count", lambda: 3)
    messages = [str(i).encode() for i in range(1001)]
    out = KEY.hmac_hex("uprn", pl.Series(messages, dtype=pl.Binary), 16).to_list()
    assert out == _expected(KEY, "uprn", messages, 16)


def test_hmac_hex_empty(path):
    out = KEY.hmac_hex("uprn", pl.Series("m", [], dtype=pl.Binary), 16)
    assert out.dtype == pl.String
    assert out.len() == 0


@settings(max_examples=50, deadline=None)
@given(messages=st.lists(st.binary(max_size=80), max_size=60), take=st.integers(1, 32))
def test_hmac_hex_bulk_equals_fallback(messages, take):
    series = pl.Series("m", messages, dtype=pl.Binary)
    bulk = KEY.hmac_hex("household", series, take).to_list()
    saved = keys._bulk_hmac
    keys._bulk_hmac = None
    try:
        fallback = KEY.hmac_hex("household", series, take).to_list()
    finally:
        keys._bulk_hmac = saved
    assert bulk == fallback == _expected(KEY, "household", messages, take)


@pytest.mark.parametrize(
    ("series", "take", "message"),
    [
        (pl.Series(["a"]), 16, "Binary series"),
        (pl.Series([b"a", None], dtype=pl.Binary), 16, "nulls"),
        (pl.Series([b"a"], dtype=pl.Binary), 0, "take must be 1 to 32"),
        (pl.Series([b"a"], dtype=pl.Binary), 33, "take must be 1 to 32"),
    ],
)
def test_hmac_hex_refuses_bad_input(series, take, message):
    with pytest.raises(KeyManagementError, match=message):
        KEY.hmac_hex("uprn", series, take)


def test_hmac_hex_refuses_bad_purpose():
    with pytest.raises(KeyManagementError, match="key purpose"):
        KEY.hmac_hex("UPRN!", pl.Series([b"1"], dtype=pl.Binary))
