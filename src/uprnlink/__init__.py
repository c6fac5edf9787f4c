"""uprnlink: household-level linkage of council and NHS extracts on pseudonymised UPRNs."""

from uprnlink.errors import (
    AuditError,
    ConfigError,
    ContractError,
    KeyManagementError,
    LinkageError,
    PublishError,
    UprnlinkError,
)

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "ConfigError",
    "ContractError",
    "KeyManagementError",
    "LinkageError",
    "PublishError",
    "UprnlinkError",
    "__version__",
]
