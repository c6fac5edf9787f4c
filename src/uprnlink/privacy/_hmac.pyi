"""Types of the C extension `uprnlink.privacy._hmac` (src/uprnlink/_hmac.c)."""

from typing import Any

def tokens(key: bytes, data: Any, offsets: Any, count: int, take: int, /) -> bytes:
    """HMAC-SHA256 of `count` messages laid end to end in `data` (message i is
    ``data[offsets[i]:offsets[i + 1]]``, offsets as count + 1 int64), each digest cut to its
    first `take` bytes and written as lower-case hex, end to end."""
