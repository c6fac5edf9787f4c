"""Prefect deployment entrypoint: the monthly household linkage (`prefect.yaml`, `monthly`).

The flow itself lives in the package (`uprnlink.flows.household_linkage`), so an installed
wheel runs it too (`uprnlink run`); this file only names it for `prefect deploy`, whose
entrypoints are paths in the checkout.
"""

from uprnlink.flows.household_linkage import household_linkage

__all__ = ["household_linkage"]
