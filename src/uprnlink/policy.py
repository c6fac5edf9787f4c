"""The governance policy (`policy.toml`) as one typed model, validated once per file version.

Each section is a strict pydantic model whose fields declare the values the code accepts;
an unknown section or key is refused by name (a misspelt `[table]` or `min_cont` would
otherwise leave a default silently in force). The zones read their section from here
(`read_governance_policy(path).disclosure`) and turn it into their own rules; every error is
one line naming the file, the section and the key, never a value.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from uprnlink.errors import ConfigError, UprnlinkError
from uprnlink.settings import (
    NonNegativeWhole,
    PositiveWhole,
    Share,
    parse_toml,
    read_text,
    validation_message,
)

__all__ = [
    "DISCLOSURE_PRESETS",
    "AuditSection",
    "DeathEndPrecision",
    "DeliveriesSection",
    "DisclosureSection",
    "EnforceMode",
    "GovernancePolicy",
    "KeySection",
    "OutputCheckingSection",
    "OutputsSection",
    "RetentionSection",
    "RoleSection",
    "TablesSection",
    "read_governance_policy",
]

PresetName = Literal["threshold_10", "nhs_england_hes", "nhs_england_hes_secondary", "hes_pre_2018"]
DISCLOSURE_PRESETS: tuple[str, ...] = get_args(PresetName)
"""The disclosure presets' names (their rules: `uprnlink.publish.disclosure.PRESETS`)."""
DeathEndPrecision = Literal["month", "quarter", "year"]
EnforceMode = Literal["report", "delete"]


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _increasing_from_zero(bands: tuple[int, ...]) -> tuple[int, ...]:
    if not bands or bands[0] != 0 or any(b <= a for a, b in itertools.pairwise(bands)):
        raise ValueError("must start at 0 and increase (lowest age of each band)")
    return bands


class _Section(BaseModel):
    """A section of the policy: strict types, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DisclosureSection(_Section):
    """`[disclosure]`: a preset, then any key written here overrides it (None: the preset's)."""

    preset: PresetName | None = None
    min_count: PositiveWhole | None = None
    suppress_zero: StrictBool | None = None
    round_to: PositiveWhole | None = None
    secondary: StrictBool | None = None
    age_bands: (
        Annotated[
            tuple[NonNegativeWhole, ...],
            BeforeValidator(_as_tuple),
            AfterValidator(_increasing_from_zero),
            Field(
                description="a list of ages starting at 0 and increasing (lowest age of each band)"
            ),
        ]
        | None
    ) = None
    death_end_precision: DeathEndPrecision = "month"
    max_unique_share: Share = 0.05


class OutputsSection(_Section):
    """`[outputs]`: what the de-identified dataset may contain (never these identifiers)."""

    publish_exact_dob: StrictBool = False
    publish_names: StrictBool = False
    publish_raw_uprn: StrictBool = False
    publish_nhs_number: StrictBool = False


class RetentionSection(_Section):
    """`[retention]`: days each zone keeps its files, releases kept, what a run does."""

    landing_days: PositiveWhole = 90
    quarantine_days: PositiveWhole = 90
    trusted_days: PositiveWhole = 365
    published_releases: PositiveWhole = 3
    enforce: EnforceMode = "report"


DeliveryShare = Annotated[StrictFloat, Field(gt=0, le=10)]


class DeliveriesSection(_Section):
    """`[deliveries]`: how far a delivery may move from its last accepted one."""

    max_row_change: DeliveryShare = 0.25
    max_null_share_rise: DeliveryShare = 0.10
    max_date_shortfall_days: NonNegativeWhole = 45
    enabled: StrictBool = True


class RoleSection(_Section):
    """`[roles.<name>]`: the views and macros a role may query and its output rights."""

    views: Annotated[tuple[StrictStr, ...], BeforeValidator(_as_tuple)] = ()
    check_outputs: StrictBool = False
    audit: StrictBool = False
    row_level_outputs: StrictBool = False
    review_linkage: StrictBool = False
    unchecked_answers: StrictBool = True


Minutes = Annotated[StrictFloat, Field(gt=0, le=1440)]


class AuditSection(_Section):
    """`[audit]`: how often the log is sealed and witnessed (minutes)."""

    seal_minutes: Minutes = 5.0
    witness_minutes: Minutes = 1.0


class KeySection(_Section):
    """`[key]`: how often the pseudonymisation key must be rotated."""

    rotation_months: PositiveWhole = 12


class TablesSection(_Section):
    """`[tables]`: the table builder's perturbation (checked further by
    `uprnlink.publish.perturbation`) and size limits."""

    max_noise: StrictInt = 3
    variance: StrictFloat = 2.0
    no_small_values: StrictInt = 2
    threshold: StrictInt = 10
    magnitude_noise: Annotated[tuple[StrictFloat, StrictFloat], BeforeValidator(_as_tuple)] = (
        0.5,
        1.5,
    )
    max_dimensions: Annotated[StrictInt, Field(ge=1, le=8)] = 4
    max_cells: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 20_000
    max_measures: Annotated[StrictInt, Field(ge=1, le=32)] = 8


class OutputCheckingSection(_Section):
    """`[output_checking]`: checkers a job needs and jobs one user may have waiting."""

    checkers_required: Literal[1, 2] = 1
    max_waiting_jobs: Annotated[StrictInt, Field(ge=1, le=100)] = 5


class GovernancePolicy(_Section):
    """The whole governance policy; a section not written takes its defaults."""

    disclosure: DisclosureSection = DisclosureSection()
    outputs: OutputsSection = OutputsSection()
    retention: RetentionSection = RetentionSection()
    deliveries: DeliveriesSection = DeliveriesSection()
    roles: dict[str, RoleSection] = Field(default_factory=dict)
    audit: AuditSection = AuditSection()
    key: KeySection = KeySection()
    tables: TablesSection = TablesSection()
    output_checking: OutputCheckingSection = OutputCheckingSection()


def read_governance_policy(
    path: Path, error: type[UprnlinkError] = ConfigError
) -> GovernancePolicy:
    """The governance policy, validated once per version of the file (every zone's reader and
    the query service's share it); a mistake is `error`, one line naming the file, the
    section and the key."""
    text = read_text(path, "governance policy", error)
    try:
        return _validated(Path(path), text)
    except ConfigError as exc:
        if error is ConfigError:
            raise
        raise error(str(exc)) from None


@functools.lru_cache(maxsize=8)
def _validated(path: Path, text: str) -> GovernancePolicy:
    """The model of one version of the policy (its text is the cache key)."""
    raw = parse_toml(text, path)
    try:
        return GovernancePolicy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, GovernancePolicy, raw, path)) from None
