"""Prefect deployment entrypoint: the hourly landing-folder watch (`prefect.yaml`,
`landing-watch`), which starts the monthly linkage when a complete, settled set of extracts
with something new has arrived.

The flow lives in the package (`uprnlink.flows.landing_watch`); this file names it for
`prefect deploy`.
"""

from uprnlink.flows.landing_watch import landing_watch

__all__ = ["landing_watch"]
