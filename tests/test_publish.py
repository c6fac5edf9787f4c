"""Publishing: policy-driven suppression, identifier guard, self-contained database."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from uprnlink.errors import PublishError
from uprnlink.publish.database import DisclosurePolicy, check_deidentified, read_policy
from uprnlink.settings import PROJECT_ROOT


def test_policy_file_drives_the_threshold(tmp_path: Path) -> None:
    assert read_policy(PROJECT_ROOT / "governance" / "policy.toml").min_count == 10
    p = tmp_path / "policy.toml"
    p.write_text("[disclosure]\nmin_count = 5\nsuppress_zero = true\n")
    policy = read_policy(p)
    assert policy == DisclosurePolicy(min_count=5, suppress_zero=True)
    p.write_text("[disclosure]\nmin_count = 0\n")
    with pytest.raises(PublishError):
        read_policy(p)


@pytest.mark.parametrize("min_count,suppress_zero", [(10, False), (5, False), (8, True)])
def test_suppression_sql_hides_exactly_the_small_counts(
    min_count: int, suppress_zero: bool
) -> None:
    policy = DisclosurePolicy(min_count=min_count, suppress_zero=suppress_zero)
    values = list(range(0, 30))
    shown = duckdb.sql(
        f"SELECT v, {policy.suppress_sql('v')} AS s FROM (SELECT unnest(?) AS v)",
        params=[values],
    ).fetchall()
    for v, s in shown:
        hidden = (1 <= v < min_count) or (suppress_zero and v == 0)
        assert (s is None) == hidden, (v, s)


def test_identifier_columns_are_refused() -> None:
    check_deidentified({"ok": pl.DataFrame({"person_id": ["P1"], "age": [40]})})
    for col in ("nhs_number", "uprn", "forename", "dob", "uprn_token"):
        with pytest.raises(PublishError, match=col):
            check_deidentified({"person": pl.DataFrame({"person_id": ["P1"], col: ["x"]})})
