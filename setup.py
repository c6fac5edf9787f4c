"""The optional C extension `uprnlink.privacy._hmac` (bulk HMAC-SHA256 on OpenSSL's SHA-256).

Everything else about the package is in pyproject.toml. The published wheel is pure Python
(`py3-none-any`: any supported CPython on any platform), and `uprnlink.privacy.keys` then hashes
with the `cryptography` package (same tokens, about a third of the speed). The extension is
built only when asked for, with `UPRNLINK_BUILD_HMAC=1` (`make setup` and `make dist-native` do):
against Python's stable ABI (one `cp311-abi3` wheel for CPython 3.11 and later), and optional
even then, so an install without a C compiler or OpenSSL's headers still succeeds.
"""

import os

from setuptools import Extension, setup

NATIVE = os.environ.get("UPRNLINK_BUILD_HMAC") == "1"

setup(
    ext_modules=[
        Extension(
            "uprnlink.privacy._hmac",
            sources=["src/uprnlink/privacy/_hmac.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            py_limited_api=True,
            optional=True,
        )
    ]
    if NATIVE
    else [],
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if NATIVE else {},
)
