"""The one exception hierarchy of uprnlink.

Messages name the file, column, row and rule that failed and never the personal data value,
so an error can be logged, shown in a Prefect UI or pasted into a ticket safely.
"""

from __future__ import annotations


class UprnlinkError(Exception):
    """Base class of every error uprnlink raises on purpose."""

    exit_code = 1


class ConfigError(UprnlinkError):
    """The run configuration (TOML) is missing, malformed or inconsistent."""

    exit_code = 2


class ContractError(UprnlinkError):
    """A data contract is malformed, or an extract cannot be read against its contract."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        rule: str | None = None,
    ) -> None:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("file", file), ("column", column), ("row", row), ("rule", rule))
            if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.file, self.column, self.row, self.rule = file, column, row, rule


class KeyManagementError(UprnlinkError):
    """The pseudonymisation key is missing, unreadable, corrupted or the passphrase is wrong."""

    exit_code = 4


class AuditError(UprnlinkError):
    """The audit log cannot be written, or fails verification."""

    exit_code = 5


class LinkageError(UprnlinkError):
    """Record linkage could not be trained, predicted or clustered."""

    exit_code = 6


class PublishError(UprnlinkError):
    """Outputs could not be published, or would break a disclosure rule."""

    exit_code = 7
