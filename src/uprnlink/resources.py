"""Files that ship inside the package: the data contracts, the default policy and the templates.

Found with `importlib.resources`, so they are there in a wheel as in a checkout (where the old
top-level paths `schemas/`, `governance/policy.toml` and `config/demo.toml` are links to them).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from uprnlink.errors import ConfigError


def package_path(*parts: str) -> Path:
    """A file or folder inside the installed `uprnlink` package, as a real path.

    Callers glob folders and record paths in outputs, so a zipped install (where resources are
    not files) is refused with a clear message rather than half supported.
    """
    resource = files("uprnlink").joinpath(*parts)
    if not isinstance(resource, Path):
        raise ConfigError(
            f"uprnlink is installed in a form whose files are not on disk ({type(resource).__name__}); "
            "install it from a wheel into a virtual environment"
        )
    return resource


def schemas_dir() -> Path:
    """The folder of versioned data contracts (`<name>.v<major>.toml`) shipped with uprnlink."""
    return package_path("schemas")


def default_policy_path() -> Path:
    """The default governance policy: used when a config names none, copied by `uprnlink init`."""
    return package_path("templates", "policy.toml")


def template_path(name: str) -> Path:
    """One of the templates `uprnlink init` and `uprnlink demo` write from."""
    return package_path("templates", name)
