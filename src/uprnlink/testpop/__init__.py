"""A second, independent test population: the borough of Westmere, written by other systems.

The linkage model was developed on `uprnlink.synth`; its figures on that population alone
could flatter it. This generator shares no code with it (an import rule keeps it so): its own
name lists and spelling variants, its own way of simulating a decade (households visited year
by year rather than an event queue), its own extract layouts (a full name in one column, tab-
and semicolon-separated files, NHS numbers with dashes or as integers, ISO 5218 and NHS sex
codes, five date formats, typed Parquet) and its own habits of error (initials only, birth
surnames, dates of birth recorded as 1 January, transposed year digits, the mother's NHS number
on a baby's record, temporary second NHS numbers, the block's UPRN for a flat, benefit claims
listing non-dependants). `config/testpop.toml` maps its files onto the same contracts in
`schemas/`; the truth it writes has the layout `uprnlink evaluate` reads.
"""

from uprnlink.testpop.build import TestPopulationSummary, write_test_population

__all__ = ["TestPopulationSummary", "write_test_population"]
