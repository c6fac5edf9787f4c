"""The model's comparisons, each declared once with its levels and their starting m together.

A comparison is a `Comparison`: an output column, a description and its levels in order, each
`Level` carrying the Splink level and the share of true matches expected there (its starting
m; none for the null level). EM re-estimates every level it can observe; a level it cannot
(true matches born ten years apart, say) keeps this prior instead of Splink's uninformative
default, which would under-penalise disagreement. `DECLARED` lists which identifiers each
comparison needs, so the model for a delivery is the comparisons its identifiers allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

#: The address as written (standardised text): compared only where no record carries a UPRN.
ADDRESS_COLUMN = "address_line_1"

# Postcodes arrive canonical ("OUTWARD INWARD", inward = digit + two letters), so the sector is
# all but the last two characters: plain string functions, no per-pair regex.
POSTCODE_SECTOR = "substr({c}, 1, length({c}) - 2)"
POSTCODE_DISTRICT = "split_part({c}, ' ', 1)"


@dataclass(frozen=True)
class Level:
    """One comparison level (a Splink level creator) and its starting m (None: the null
    level, which carries no m)."""

    creator: Any
    m: float | None = None


@dataclass(frozen=True)
class Comparison:
    """One comparison of the model: its output column, description and levels in order."""

    name: str
    description: str
    levels: tuple[Level, ...]

    @property
    def m_probabilities(self) -> list[float]:
        """The starting m of every non-null level, in order (they sum to 1)."""
        return [lvl.m for lvl in self.levels if lvl.m is not None]

    def creator(self) -> Any:
        """The Splink comparison, configured with the starting m probabilities."""
        import splink.comparison_library as cl

        return cl.CustomComparison(
            output_column_name=self.name,
            comparison_description=self.description,
            comparison_levels=[lvl.creator for lvl in self.levels],
        ).configure(m_probabilities=self.m_probabilities)


def sql_level(sql_condition: str, label_for_charts: str | None = None) -> Any:
    """A custom comparison level written in DuckDB SQL, which Splink translates (sqlglot) when
    the model runs on another backend such as Spark."""
    import splink.comparison_level_library as cll

    return cll.CustomLevel(
        sql_condition, label_for_charts=label_for_charts, base_dialect_str="duckdb"
    )


def _reversed_names() -> Any:
    """Forename and surname recorded the other way round (each equals the other's other)."""
    import splink.comparison_level_library as cll

    return cll.ColumnsReversedLevel("forename", "surname", symmetrical=True).configure(
        label_for_charts="Forename and surname reversed"
    )


def forename(identifiers: frozenset[str]) -> Comparison:
    """Forename: exact (term-frequency adjusted); Jaro-Winkler >= 0.92; the other's surname
    (names reversed, wholly or half); a known variant of the same name (BILL / WILLIAM, from the shipped UK list); an
    initial that starts the other (council tax often holds only "J"); one edit (short names a
    typo takes below 0.92); Jaro-Winkler >= 0.8."""
    import splink.comparison_level_library as cll

    initial = (
        "(length(forename_l) = 1 AND forename_l = substr(forename_r, 1, 1)) OR "
        "(length(forename_r) = 1 AND forename_r = substr(forename_l, 1, 1))"
    )
    # One name in the other's field, either way round (a full reversal also scores on the
    # surname's reversed level; half of one, a forename filed as the surname, only here).
    crossed = sql_level(
        "forename_l = surname_r OR forename_r = surname_l", "Forename is the other's surname"
    )
    reverse = [Level(crossed, 0.01)] if "surname" in identifiers else []
    return Comparison(
        "forename",
        "Forename with spelling, reversal and nickname levels",
        (
            Level(cll.NullLevel("forename")),
            Level(cll.ExactMatchLevel("forename", term_frequency_adjustments=True), 0.86),
            Level(cll.JaroWinklerLevel("forename", 0.92), 0.04),
            *reverse,
            Level(
                cll.ArrayIntersectLevel("forename_roots", 1).configure(
                    label_for_charts="Known variant of the same forename"
                ),
                0.03,
            ),
            # An initial: about 3% of matching pairs where one system keeps initials; EM
            # cannot observe it (the name session blocks on forename), so the prior stands.
            Level(sql_level(initial, "An initial that starts the other forename"), 0.03),
            Level(cll.DamerauLevenshteinLevel("forename", 1), 0.01),
            Level(cll.JaroWinklerLevel("forename", 0.8), 0.01),
            Level(cll.ElseLevel(), 0.01 if reverse else 0.02),
        ),
    )


# One surname is a whole word of the other: a double-barrelled name (SMITH JONES, written
# SMITH-JONES before standardisation) against one of its halves, as systems that keep one
# surname field often record it.
SURNAME_PART = (
    "(instr(surname_l, ' ') > 0 OR instr(surname_r, ' ') > 0) AND "
    "(instr(' ' || surname_l || ' ', ' ' || surname_r || ' ') > 0 OR "
    "instr(' ' || surname_r || ' ', ' ' || surname_l || ' ') > 0)"
)


def surname(identifiers: frozenset[str]) -> Comparison:
    """Surname: exact (term-frequency adjusted); forename and surname reversed; Jaro-Winkler
    >= 0.92; one edit; one a word of the other (double-barrelled, SURNAME_PART); Jaro-Winkler
    >= 0.88, >= 0.7."""
    import splink.comparison_level_library as cll

    reverse = [Level(_reversed_names(), 0.01)] if "forename" in identifiers else []
    return Comparison(
        "surname",
        "Surname with spelling and reversal levels",
        (
            Level(cll.NullLevel("surname")),
            Level(cll.ExactMatchLevel("surname", term_frequency_adjustments=True), 0.88),
            *reverse,
            Level(cll.JaroWinklerLevel("surname", 0.92), 0.03),
            Level(cll.DamerauLevenshteinLevel("surname", 1), 0.01),
            Level(sql_level(SURNAME_PART, "One surname a part of the other"), 0.01),
            Level(cll.JaroWinklerLevel("surname", 0.88), 0.02),
            Level(cll.JaroWinklerLevel("surname", 0.7), 0.02),
            Level(cll.ElseLevel(), 0.02 if reverse else 0.03),
        ),
    )


# One side is the 1st of January of the other's year (or the 1st of the other's month): the
# date a system records when it knows only the year (or the month) of birth. Such dates are
# common in council and care systems and disagree with the person's real date by months.
PARTIAL_DATE = (
    "((dayofyear(dob_l) = 1 OR dayofyear(dob_r) = 1) AND year(dob_l) = year(dob_r)) OR "
    "((day(dob_l) = 1 OR day(dob_r) = 1) AND year(dob_l) = year(dob_r) "
    "AND month(dob_l) = month(dob_r))"
)


def date_of_birth(identifiers: frozenset[str]) -> Comparison:
    """Date of birth: exact; day and month transposed (03/05 for 05/03); one character slip or
    two adjacent digits swapped (1968 for 1986);
    a date known only to the year or month (PARTIAL_DATE); within a month, a year, ten
    years."""
    import splink.comparison_level_library as cll
    from splink import ColumnExpression

    transposed = (
        "day(dob_l) <= 12 AND day(dob_r) <= 12 AND day(dob_l) <> month(dob_l) AND "
        "year(dob_l) = year(dob_r) AND month(dob_l) = day(dob_r) AND day(dob_l) = month(dob_r)"
    )

    def within(threshold: int, metric: Literal["month", "year"]) -> Any:
        return cll.AbsoluteDateDifferenceLevel(
            "dob", input_is_string=False, threshold=threshold, metric=metric
        )

    return Comparison(
        "dob",
        "Date of birth with transposition and slip levels",
        (
            Level(cll.NullLevel("dob")),
            Level(cll.ExactMatchLevel("dob"), 0.94),
            Level(sql_level(transposed, "Day and month transposed"), 0.008),
            Level(
                cll.DamerauLevenshteinLevel(ColumnExpression("dob").cast_to_string(), 1).configure(
                    label_for_charts="One character different, or two next to each other swapped"
                ),
                0.022,
            ),
            Level(sql_level(PARTIAL_DATE, "Known to the year or month only"), 0.01),
            Level(within(1, "month"), 0.008),
            Level(within(1, "year"), 0.008),
            Level(within(10, "year"), 0.003),
            Level(cll.ElseLevel(), 0.001),
        ),
    )


def _sector_level(of: str) -> Any:
    sql = POSTCODE_SECTOR
    return sql_level(f"{sql.format(c='postcode_l')} = {sql.format(c='postcode_r')}", of)


def _district_level(of: str) -> Any:
    sql = POSTCODE_DISTRICT
    return sql_level(f"{sql.format(c='postcode_l')} = {sql.format(c='postcode_r')}", of)


def address(identifiers: frozenset[str]) -> Comparison:
    """Where a record places the person, as one comparison so UPRN and postcode agreement
    (which always co-occur) are not counted twice: same UPRN token, else same postcode,
    sector, district. Without both a UPRN and a postcode, `partial_address`."""
    import splink.comparison_level_library as cll

    if not {"uprn_token", "postcode"} <= identifiers:
        return partial_address(identifiers)
    both_null = (
        "(uprn_token_l IS NULL OR uprn_token_r IS NULL) AND "
        "(postcode_l IS NULL OR postcode_r IS NULL)"
    )
    return Comparison(
        "address",
        "UPRN token, else postcode levels",
        (
            Level(
                cll.And(
                    cll.Or(cll.NullLevel("uprn_token"), cll.Not(cll.NullLevel("uprn_token"))),
                    sql_level(both_null),
                ).configure(is_null_level=True)
            ),
            Level(cll.ExactMatchLevel("uprn_token").configure(label_for_charts="Same UPRN"), 0.6),
            Level(
                sql_level("postcode_l = postcode_r", "Same postcode (UPRN differs or unknown)"), 0.2
            ),
            Level(_sector_level("Same postcode sector"), 0.08),
            Level(_district_level("Same postcode district"), 0.06),
            Level(cll.ElseLevel(), 0.06),
        ),
    )


def partial_address(identifiers: frozenset[str]) -> Comparison:
    """Where a record lives from what there is when UPRN and postcode are not both carried:
    the UPRN token alone; or the postcode and the address as written (same text and postcode,
    same text, Jaro-Winkler >= 0.9, same postcode / sector / district, same house number and
    last word, Jaro-Winkler >= 0.7)."""
    import splink.comparison_level_library as cll

    if "uprn_token" in identifiers:
        return Comparison(
            "address",
            "UPRN token",
            (
                Level(cll.NullLevel("uprn_token")),
                Level(
                    cll.ExactMatchLevel("uprn_token").configure(label_for_charts="Same UPRN"), 0.75
                ),
                Level(cll.ElseLevel(), 0.25),
            ),
        )
    text, postcode = "address" in identifiers, "postcode" in identifiers
    a = ADDRESS_COLUMN
    nulls = [
        f"({c}_l IS NULL OR {c}_r IS NULL)" for c, on in ((a, text), ("postcode", postcode)) if on
    ]
    levels = [Level(sql_level(" AND ".join(nulls)).configure(is_null_level=True))]
    if text and postcode:
        levels.append(
            Level(
                sql_level(
                    f"{a}_l = {a}_r AND postcode_l = postcode_r", "Same address and postcode"
                ),
                0.55,
            )
        )
    if text:
        levels += [
            Level(
                cll.ExactMatchLevel(a).configure(label_for_charts="Same address"),
                0.15 if postcode else 0.6,
            ),
            Level(
                cll.JaroWinklerLevel(a, 0.9).configure(label_for_charts="Address close"),
                0.1 if postcode else 0.2,
            ),
        ]
    if postcode:
        exact = cll.ExactMatchLevel("postcode").configure(label_for_charts="Same postcode")
        levels += [
            Level(exact, 0.1 if text else 0.6),
            Level(_sector_level("Same postcode sector"), 0.03 if text else 0.15),
            Level(_district_level("Same postcode district"), 0.02 if text else 0.1),
        ]
    if text:
        # The first word (house or flat number) and the last (the town or street) agree:
        # the street name in between was mistyped or written another way.
        first_last = (
            f"split_part({a}_l, ' ', 1) = split_part({a}_r, ' ', 1) AND "
            f"split_part({a}_l, ' ', -1) = split_part({a}_r, ' ', -1)"
        )
        levels += [
            Level(sql_level(first_last, "Same number and last word"), 0.01 if postcode else 0.05),
            Level(
                cll.JaroWinklerLevel(a, 0.7).configure(label_for_charts="Address alike"),
                0.02 if postcode else 0.05,
            ),
        ]
    levels.append(Level(cll.ElseLevel(), 0.02 if text and postcode else (0.1 if text else 0.15)))
    description = "Postcode levels" + (" and the address as written" if text else "")
    return Comparison("address", description, tuple(levels))


def move(identifiers: frozenset[str]) -> Comparison:
    """Time-aware address evidence: one record's stay at an address ends the day before
    another's begins (a move: council tax liability closed and reopened elsewhere, or a care
    placement starting the day after a liability ends); or within a month of it."""
    import splink.comparison_level_library as cll

    consecutive = (
        "(move_next_l IS NOT NULL AND period_start_r BETWEEN period_end_l AND move_next_l) OR "
        "(move_next_r IS NOT NULL AND period_start_l BETWEEN period_end_r AND move_next_r)"
    )
    within_month = (
        "(move_next_l IS NOT NULL AND abs(datediff('day', period_end_l, period_start_r)) <= 31) OR "
        "(move_next_r IS NOT NULL AND abs(datediff('day', period_end_r, period_start_l)) <= 31)"
    )
    null = (
        "period_start_l IS NULL OR period_start_r IS NULL OR "
        "(period_end_l IS NULL AND period_end_r IS NULL)"
    )
    return Comparison(
        "move",
        "One stay ends as the other begins",
        (
            Level(sql_level(null).configure(is_null_level=True)),
            Level(
                sql_level(consecutive, "Moved: one stay ends the day before the other starts"), 0.05
            ),
            Level(
                sql_level(within_month, "One stay ends within a month of the other starting"), 0.03
            ),
            Level(cll.ElseLevel(), 0.92),
        ),
    )


def _exact(column: str, m_agree: float) -> Callable[[frozenset[str]], Comparison]:
    def declare(identifiers: frozenset[str]) -> Comparison:
        import splink.comparison_level_library as cll

        return Comparison(
            column,
            f"Exact match on {column}",
            (
                Level(cll.NullLevel(column)),
                Level(cll.ExactMatchLevel(column), m_agree),
                Level(cll.ElseLevel(), round(1.0 - m_agree, 6)),
            ),
        )

    declare.__doc__ = f"{column}: the same value, or not."
    return declare


@dataclass(frozen=True)
class Declared:
    """A comparison and the identifiers it needs (any one of `any_of`, all of `all_of`)."""

    declare: Callable[[frozenset[str]], Comparison]
    all_of: frozenset[str] = frozenset()
    any_of: frozenset[str] = frozenset()

    def applies(self, identifiers: frozenset[str]) -> bool:
        """Whether the records carry what this comparison compares."""
        return self.all_of <= identifiers and (not self.any_of or bool(self.any_of & identifiers))


#: The model's comparisons in order, each with the identifiers it needs.
DECLARED: tuple[Declared, ...] = (
    Declared(forename, all_of=frozenset({"forename"})),
    Declared(surname, all_of=frozenset({"surname"})),
    Declared(date_of_birth, all_of=frozenset({"dob"})),
    Declared(address, any_of=frozenset({"uprn_token", "postcode", "address"})),
    Declared(move, all_of=frozenset({"period"})),
    Declared(_exact("nhs_token", 0.995), all_of=frozenset({"nhs_token"})),
    Declared(_exact("sex", 0.99), all_of=frozenset({"sex"})),
)


def comparisons_for(identifiers: frozenset[str]) -> list[Comparison]:
    """The declared comparisons the identifiers allow, in order."""
    return [d.declare(identifiers) for d in DECLARED if d.applies(identifiers)]
