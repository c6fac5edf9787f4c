"""Build the optional C extension `uprnlink.privacy._hmac` (bulk HMAC-SHA256 on OpenSSL's SHA-256).

Everything else about the package is in pyproject.toml. The extension is optional: where no
C compiler or OpenSSL headers exist, the install goes on without it and `uprnlink.privacy.keys` hashes
with the `cryptography` package instead (same tokens, about a third of the speed).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "uprnlink.privacy._hmac",
            sources=["src/uprnlink/privacy/_hmac.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
