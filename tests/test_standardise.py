"""Tests for the standardisation expressions in uprnlink.ingest.standardise."""

from __future__ import annotations

import inspect
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from uprnlink.ingest import standardise
from uprnlink.ingest.standardise import (
    CONTROL_CHARACTERS,
    NHS_DUMMY_NUMBERS,
    POSTCODE_PATTERN,
    UPRN_MAX,
    date_expr,
    dob_expr,
    flag_expr,
    forename_expr,
    is_valid_nhs_number,
    middle_names_expr,
    name_expr,
    name_part_expr,
    nhs_check_digit,
    nhs_number_expr,
    postcode_district_expr,
    postcode_expr,
    postcode_sector_expr,
    sex_expr,
    surname_expr,
    text_expr,
    uprn_expr,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(
    expr: Any, values: list[Any], dtype: pl.DataType | type[pl.DataType] = pl.String
) -> list[Any]:
    """Apply an expression builder to column ``x`` of a one-column frame and return the values."""
    df = pl.DataFrame({"x": values}, schema={"x": dtype})
    return df.select(expr("x"))["x"].to_list()


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("O'Neill", "ONEILL"),
        ("O\u2019Brien", "OBRIEN"),
        ("Zoë", "ZOE"),
        ("  José  María ", "JOSE MARIA"),
        ("SMITH-JONES", "SMITH JONES"),
        ("smith - jones", "SMITH JONES"),
        ("St. John", "ST JOHN"),
        ("Søren Ærø", "SOREN AERO"),
        ("Łukasz", "LUKASZ"),
        ("Strauß", "STRAUSS"),
        ("\tmary\u00a0ann\n", "MARY ANN"),
        ("", None),
        ("   ", None),
        ("--", None),
        ("123", None),
        (None, None),
    ],
)
def test_name_expr(raw: str | None, expected: str | None) -> None:
    assert run(name_expr, [raw]) == [expected]


def test_surname_keeps_every_token() -> None:
    assert run(surname_expr, ["Smith-Jones", "de la Cruz", " o'neill "]) == [
        "SMITH JONES",
        "DE LA CRUZ",
        "ONEILL",
    ]


@pytest.mark.parametrize(
    ("raw", "forename", "middle"),
    [
        ("  mr john  paul ", "JOHN", "PAUL"),
        ("John", "JOHN", None),
        ("Dr. Mrs Ann-Marie Louise", "ANN", "MARIE LOUISE"),
        ("MISS Zoë", "ZOE", None),
        ("Prof Sir Tim", "TIM", None),
        ("Missy", "MISSY", None),
        ("Mrsmith", "MRSMITH", None),
        ("Mr", None, None),
        ("Mr Dr", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_forename_and_middle_names(
    raw: str | None, forename: str | None, middle: str | None
) -> None:
    assert run(forename_expr, [raw]) == [forename]
    assert run(middle_names_expr, [raw]) == [middle]


def test_expressions_keep_column_name() -> None:
    df = pl.DataFrame({"surname": ["a"], "pc": ["m11ae"]})
    out = df.select(surname_expr("surname"), postcode_expr(pl.col("pc")))
    assert out.columns == ["surname", "pc"]
    out = df.select(forename_expr(pl.col("surname").alias("first")))
    assert out.columns == ["first"]


@PROPERTY
@given(st.lists(st.text(max_size=30), min_size=1, max_size=40))
def test_name_expr_idempotent_and_clean(values: list[str]) -> None:
    once = run(name_expr, values)
    assert run(name_expr, once) == once
    for v in once:
        assert v is None or re.fullmatch("[A-Z]+( [A-Z]+)*", v)


# --- postcodes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sw1a1aa", "SW1A 1AA"),
        ("SW1A 1AA", "SW1A 1AA"),
        (" sw1a   1aa ", "SW1A 1AA"),
        ("EC1A 1BB", "EC1A 1BB"),
        ("W1A 0AX", "W1A 0AX"),
        ("M1 1AE", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("CR2 6XH", "CR2 6XH"),
        ("DN55 1PT", "DN55 1PT"),
        ("GIR0AA", "GIR 0AA"),
        ("gir 0aa", "GIR 0AA"),
        ("Q1A 1AA", None),  # Q never starts a postcode
        ("AI1 1AA", None),  # I never second
        ("A1 1CA", None),  # C never in the inward letters
        ("SW1A 1AAA", None),
        ("SW1A", None),
        ("SW1A-1AA", None),
        ("", None),
        (None, None),
    ],
)
def test_postcode_expr(raw: str | None, expected: str | None) -> None:
    assert run(postcode_expr, [raw]) == [expected]


def test_postcode_district_and_sector() -> None:
    raw = ["sw1a1aa", "M1 1AE", "DN55 1PT", "GIR 0AA", "junk", None]
    assert run(postcode_district_expr, raw) == ["SW1A", "M1", "DN55", "GIR", None, None]
    assert run(postcode_sector_expr, raw) == ["SW1A 1", "M1 1", "DN55 1", "GIR 0", None, None]


valid_postcodes = st.from_regex(POSTCODE_PATTERN, fullmatch=True)


@st.composite
def scrambled(draw: st.DrawFn, text: str) -> str:
    """Randomise the case of ``text`` and pad it with whitespace anywhere."""
    out = []
    for ch in text:
        out.append(draw(st.sampled_from(["", " ", "  ", "\t"])))
        out.append(ch.lower() if draw(st.booleans()) else ch)
    out.append(draw(st.sampled_from(["", " ", "\n"])))
    return "".join(out)


@PROPERTY
@given(st.lists(valid_postcodes.flatmap(lambda p: st.tuples(st.just(p), scrambled(p))), min_size=1))
def test_postcode_insensitive_to_case_and_whitespace(pairs: list[tuple[str, str]]) -> None:
    clean = run(postcode_expr, [p for p, _ in pairs])
    messy = run(postcode_expr, [m for _, m in pairs])
    assert None not in clean
    assert messy == clean
    assert all(c.replace(" ", "") == p for c, (p, _) in zip(clean, pairs, strict=True))


@PROPERTY
@given(st.lists(st.one_of(valid_postcodes, st.text(alphabet="ABCGIRSW01 a9", max_size=9))))
def test_postcode_idempotent(values: list[str]) -> None:
    once = run(postcode_expr, values)
    assert run(postcode_expr, once) == once


# --- UPRNs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  000123 ", 123),
        ("100023336956", 100023336956),
        ("100023336956.0", 100023336956),
        ("1.00023336956E+11", 100023336956),
        ("1.00023336956e11", 100023336956),
        ("1.000233369560E+11", 100023336956),
        ("9.99999999999E+11", 999_999_999_999),
        ("999999999999", 999_999_999_999),
        ("12 345", 12345),
        ("1", 1),
        ("1.00023E+11", None),  # lossy: digits lost to spreadsheet truncation
        ("1E+11", None),
        ("1.0002333695601E+11", None),  # not an integer
        ("0", None),
        ("000", None),
        ("-5", None),
        ("1234567890123", None),
        ("1.2E+12", None),
        ("123.5", None),
        ("12,345", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_uprn_expr(raw: str | None, expected: int | None) -> None:
    assert run(uprn_expr, [raw]) == [expected]


def test_uprn_expr_integer_and_float_input() -> None:
    assert run(uprn_expr, [1, 100023336956, 0, -5, UPRN_MAX + 1, None], pl.Int64) == [
        1,
        100023336956,
        None,
        None,
        None,
        None,
    ]
    assert run(uprn_expr, [100023336956.0, 1.5], pl.Float64) == [100023336956, None]


@st.composite
def written_uprn(draw: st.DrawFn) -> tuple[int, str]:
    """A valid UPRN and one way a CSV might carry it."""
    n = draw(st.integers(1, UPRN_MAX))
    text = "0" * draw(st.integers(0, 4)) + str(n)
    cut = draw(st.integers(0, len(text)))
    text = text[:cut] + draw(st.sampled_from(["", " "])) + text[cut:]
    text = draw(st.sampled_from(["", " ", "  "])) + text + draw(st.sampled_from(["", ".0", ".00"]))
    return n, text + draw(st.sampled_from(["", " "]))


@PROPERTY
@given(st.lists(written_uprn(), min_size=1, max_size=50))
def test_uprn_round_trips(pairs: list[tuple[int, str]]) -> None:
    assert run(uprn_expr, [t for _, t in pairs]) == [n for n, _ in pairs]


@PROPERTY
@given(st.lists(st.integers(100_000_000_000, UPRN_MAX), min_size=1, max_size=50))
def test_uprn_scientific_only_when_exact(values: list[int]) -> None:
    assert run(uprn_expr, [f"{n:.11E}" for n in values]) == values
    assert run(uprn_expr, [f"{n:.5E}" for n in values]) == [None] * len(values)


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(re.sub(r"\s", "", text))
    except InvalidOperation:
        return None


@PROPERTY
@given(st.lists(st.text(alphabet="0123456789 .,eE+-x\t", max_size=16), min_size=1, max_size=50))
def test_uprn_never_accepts_anything_but_a_whole_number_in_range(values: list[str]) -> None:
    # Whatever the text, an accepted UPRN is 1..12 digits and exactly the number written.
    for text, got in zip(values, run(uprn_expr, values), strict=True):
        if got is not None:
            assert 1 <= got <= UPRN_MAX
            assert _decimal(text) == got, text


@PROPERTY
@given(st.lists(st.integers(0, 10**13), min_size=1, max_size=50), st.integers(0, 3))
def test_uprn_digit_strings_accepted_exactly_in_range(values: list[int], zeros: int) -> None:
    got = run(uprn_expr, ["0" * zeros + str(n) for n in values])
    assert got == [n if 1 <= n <= UPRN_MAX else None for n in values]
    assert run(uprn_expr, [f"-{n}" for n in values]) == [None] * len(values)


# --- NHS numbers -------------------------------------------------------------------------


def test_nhs_check_digit() -> None:
    assert nhs_check_digit("943476591") == 9
    assert nhs_check_digit("401023213") == 7
    assert nhs_check_digit("000000006") is None  # check would be 10
    with pytest.raises(ValueError, match="9 ASCII digits"):
        nhs_check_digit("12345678")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("943 476 5919", "9434765919"),
        ("943-476-5919", "9434765919"),
        (" 9434765919 ", "9434765919"),
        ("4010232137", "4010232137"),
        ("9434765918", None),  # wrong check digit
        ("0000000000", None),
        ("1111111111", None),
        ("9999999999", None),
        ("9990000018", None),  # satisfies Modulus 11 but in the 999 test range
        ("0000000019", "0000000019"),  # leading zeros are kept
        ("123", None),
        ("94347659190", None),
        ("943476591X", None),
        ("", None),
        (None, None),
    ],
)
def test_nhs_number_expr(raw: str | None, expected: str | None) -> None:
    assert run(nhs_number_expr, [raw]) == [expected]
    if raw is not None:
        assert is_valid_nhs_number(raw) is (expected is not None)


def test_nhs_number_from_an_integer_column_keeps_its_leading_zero() -> None:
    """A typed extract stores 0101012349 as the integer 101012349: padded back, it is valid;
    the same nine digits as text are refused (never guessed)."""
    assert run(nhs_number_expr, [101012349, 9434765919, None, -5], pl.Int64) == [
        "0101012349",
        "9434765919",
        None,
        None,
    ]
    assert run(nhs_number_expr, ["101012349", "0101012349"]) == [None, "0101012349"]


def test_nhs_9990000018_passes_modulus_11() -> None:
    assert nhs_check_digit("999000001") == 8


def _usable(prefix: str) -> bool:
    """Whether a 9-digit prefix yields a number outside the dummy and test ranges."""
    check = nhs_check_digit(prefix)
    return check is not None and is_valid_nhs_number(prefix + str(check))


prefixes = st.integers(0, 999_999_999).map(lambda n: f"{n:09d}").filter(_usable)


@PROPERTY
@given(st.lists(prefixes, min_size=1, max_size=50))
def test_nhs_generated_numbers_accepted(values: list[str]) -> None:
    numbers = [p + str(nhs_check_digit(p)) for p in values]
    assert run(nhs_number_expr, numbers) == numbers


@PROPERTY
@given(prefixes, st.integers(0, 9), st.integers(1, 9))
def test_nhs_single_digit_change_rejected(prefix: str, pos: int, delta: int) -> None:
    number = prefix + str(nhs_check_digit(prefix))
    changed = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    assert not is_valid_nhs_number(changed)
    assert run(nhs_number_expr, [changed]) == [None]


@PROPERTY
@given(prefixes, st.integers(0, 8))
def test_nhs_transposition_agrees_with_python(prefix: str, pos: int) -> None:
    number = prefix + str(nhs_check_digit(prefix))
    assume(number[pos] != number[pos + 1])
    swapped = number[:pos] + number[pos + 1] + number[pos] + number[pos + 2 :]
    expected = swapped if is_valid_nhs_number(swapped) else None
    assert run(nhs_number_expr, [swapped]) == [expected]


@PROPERTY
@given(st.lists(st.text(alphabet="0123456789 -\u00a0x", max_size=14), min_size=1, max_size=50))
def test_nhs_expr_agrees_with_python(values: list[str]) -> None:
    got = run(nhs_number_expr, values)
    assert [g is not None for g in got] == [is_valid_nhs_number(v) for v in values]


def _modulus_11_ok(digits: str) -> bool:
    """The NHS number rule written out independently of the module under test."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


@PROPERTY
@given(st.lists(st.text(alphabet="0123456789", min_size=10, max_size=10), min_size=1, max_size=60))
def test_nhs_accepts_exactly_valid_modulus_11_numbers(values: list[str]) -> None:
    expected = [
        v
        if _modulus_11_ok(v)
        and len(set(v)) > 1
        and not v.startswith("999")
        and v not in NHS_DUMMY_NUMBERS
        else None
        for v in values
    ]
    assert run(nhs_number_expr, values) == expected


@PROPERTY
@given(st.lists(st.text(alphabet="0123456789", max_size=14), min_size=1, max_size=50))
def test_nhs_wrong_length_never_accepted(values: list[str]) -> None:
    got = run(nhs_number_expr, values)
    assert all(g is None for g, v in zip(got, values, strict=True) if len(v) != 10)


def test_nhs_dummy_numbers_pass_modulus_11_but_are_refused() -> None:
    assert all(_modulus_11_ok(v) for v in NHS_DUMMY_NUMBERS)
    assert run(nhs_number_expr, list(NHS_DUMMY_NUMBERS)) == [None] * len(NHS_DUMMY_NUMBERS)


# --- dates -------------------------------------------------------------------------------

UK = ["%d/%m/%Y", "%Y-%m-%d"]


def test_date_expr_formats_in_order() -> None:
    raw = [
        "31/02/1980",
        "29/02/2000",
        "29/02/1900",
        " 01/02/1980 ",
        "1980-02-01",
        "1980/02/01",
        "",
        None,
    ]
    assert run(lambda c: date_expr(c, UK), raw) == [
        None,
        date(2000, 2, 29),
        None,
        date(1980, 2, 1),
        date(1980, 2, 1),
        None,
        None,
        None,
    ]
    # The first format that parses wins, so order resolves day/month ambiguity.
    assert run(lambda c: date_expr(c, ["%m/%d/%Y", "%d/%m/%Y"]), ["01/02/1980", "13/02/1980"]) == [
        date(1980, 1, 2),
        date(1980, 2, 13),
    ]


def test_date_expr_passes_temporal_input_through() -> None:
    assert run(lambda c: date_expr(c, UK), [date(1980, 2, 1), None], pl.Date) == [
        date(1980, 2, 1),
        None,
    ]
    assert run(lambda c: date_expr(c, UK), [datetime(1980, 2, 1, 13, 5)], pl.Datetime) == [
        date(1980, 2, 1)
    ]
    lazy = pl.LazyFrame({"d": [date(1990, 5, 6)], "s": ["06/05/1990"]})
    out = lazy.select(date_expr("d", UK), date_expr("s", UK)).collect()
    assert out.rows() == [(date(1990, 5, 6), date(1990, 5, 6))]


def test_date_expr_without_formats() -> None:
    assert run(lambda c: date_expr(c, []), ["01/02/1980"]) == [None]


@pytest.mark.parametrize(
    ("order", "raw", "forename", "surname"),
    [
        ("surname_first", "SMITH, John Paul", "JOHN", "SMITH"),
        ("surname_first", "SMITH John", "JOHN", "SMITH"),
        ("surname_first", "O'NEILL, Mr Sean", "SEAN", "ONEILL"),
        ("surname_first", "Jones-Lee,Anne", "ANNE", "JONES LEE"),
        ("surname_first", "Smith", None, "SMITH"),
        ("forename_first", "John Paul Smith", "JOHN", "SMITH"),
        ("forename_first", "Mr John Smith", "JOHN", "SMITH"),
        ("forename_first", "Smith, John", "JOHN", "SMITH"),
        ("forename_first", "Madonna", None, "MADONNA"),
        ("forename_first", "  ", None, None),
        ("forename_first", None, None, None),
    ],
)
def test_name_parts_of_a_full_name(
    order: str, raw: str | None, forename: str | None, surname: str | None
) -> None:
    assert run(lambda c: forename_expr(name_part_expr(c, order, "forename")), [raw]) == [forename]
    assert run(lambda c: surname_expr(name_part_expr(c, order, "surname")), [raw]) == [surname]


def test_spreadsheet_serial_dates() -> None:
    """``date_format = "excel"``: days since 1899-12-30, a time of day as a fraction; serials
    before Excel's phantom 29/02/1900 (< 61), beyond 9999-12-31, negative or not plain
    numbers are null."""
    raw = ["29221", "45382.75", " 45382 ", "61", "60", "2958465", "2958466", "-5", "1e4", "x"]
    assert run(lambda c: date_expr(c, ["excel"]), raw) == [
        date(1980, 1, 1),
        date(2024, 3, 31),
        date(2024, 3, 31),
        date(1900, 3, 1),
        None,
        date(9999, 12, 31),
        None,
        None,
        None,
        None,
    ]
    # Mixed extracts: a text format first, serial numbers for the rest.
    assert run(lambda c: date_expr(c, ["%d/%m/%Y", "excel"]), ["01/02/1980", "29252"]) == [
        date(1980, 2, 1),
        date(1980, 2, 1),
    ]
    assert run(lambda c: date_expr(c, ["excel"]), [29221, None], pl.Int64) == [
        date(1980, 1, 1),
        None,
    ]


@PROPERTY
@given(st.dates(min_value=date(1900, 3, 1), max_value=date(9999, 12, 31)))
def test_spreadsheet_serials_round_trip(day: date) -> None:
    serial = (day - date(1899, 12, 30)).days
    assert run(lambda c: date_expr(c, ["excel"]), [str(serial)]) == [day]


def _real_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(1900, 2100), st.integers(0, 13), st.integers(0, 32)),
        min_size=1,
        max_size=50,
    )
)
def test_date_expr_never_returns_an_impossible_date(triples: list[tuple[int, int, int]]) -> None:
    expected = [_real_date(*t) for t in triples]
    for fmt, write in (
        ("%d/%m/%Y", "{2:02d}/{1:02d}/{0:04d}"),
        ("%Y-%m-%d", "{0:04d}-{1:02d}-{2:02d}"),
        ("%Y%m%d", "{0:04d}{1:02d}{2:02d}"),
    ):
        texts = [write.format(*t) for t in triples]
        assert run(lambda c, f=fmt: date_expr(c, [f]), texts) == expected, fmt


def test_dob_expr_range() -> None:
    def dob(c: str) -> pl.Expr:
        return dob_expr(c, UK, latest=date(2024, 6, 30))

    raw = ["01/01/1900", "31/12/1899", "30/06/2024", "01/07/2024", "29/02/1900", "15/08/1975"]
    assert run(dob, raw) == [
        date(1900, 1, 1),
        None,
        date(2024, 6, 30),
        None,
        None,
        date(1975, 8, 15),
    ]
    later = dob_expr("x", UK, earliest=date(1950, 1, 1), latest=date(2024, 6, 30))
    assert pl.DataFrame({"x": ["15/08/1949", "15/08/1975"]}).select(later)["x"].to_list() == [
        None,
        date(1975, 8, 15),
    ]


# --- codes -------------------------------------------------------------------------------


def test_sex_expr() -> None:
    raw = ["M", " male ", "1", "f", "Female", "2", "0", "9", "U", "unknown", "Not  Known",
           "NOT STATED", "I", "X", "", None, "MF"]  # fmt: skip
    expected = ["M", "M", "M", "F", "F", "F"] + [None] * 11
    assert run(sex_expr, raw) == expected
    assert run(sex_expr, [1, 2, 0], pl.Int64) == ["M", "F", None]


# --- free text ---------------------------------------------------------------------------


def test_text_expr() -> None:
    raw = ["  Flat 2\r\n 12 High St ", "a\n\nb", "one  two", "\t", "", None]
    assert run(text_expr, raw) == ["Flat 2 12 High St", "a b", "one  two", None, None, None]


@PROPERTY
@given(st.lists(st.text(alphabet="ab \r\n\t,", max_size=20), min_size=1, max_size=40))
def test_text_expr_has_no_line_breaks_and_is_idempotent(values: list[str]) -> None:
    once = run(text_expr, values)
    assert run(text_expr, once) == once
    for v in once:
        assert v is None or ("\n" not in v and "\r" not in v and v == v.strip())


def test_control_characters_pattern() -> None:
    values = ["a\x00b", "\x1b", "\x7f", "tab\there", "line\nbreak", "cr\r", "é£"]
    got = pl.Series(values).str.contains(CONTROL_CHARACTERS).to_list()
    assert got == [True, True, True, False, False, False, False]


def test_flag_expr() -> None:
    raw = ["Y", "yes", " TRUE ", "t", "1", "N", "no", "False", "f", "0", "maybe", "", None, "2"]
    expected = [True] * 5 + [False] * 5 + [None] * 4
    assert run(flag_expr, raw) == expected
    assert run(flag_expr, [True, False, None], pl.Boolean) == [True, False, None]


# --- vectorisation -----------------------------------------------------------------------


def test_no_python_udfs() -> None:
    source = inspect.getsource(standardise)
    assert "map_elements" not in source
    assert "map_batches" not in source


def test_bad_data_never_raises_on_large_frame() -> None:
    values = ["", " ", "x", "1.2.3E+4", "\u0000", "9" * 40, "Zoë O'Neill", "E+", "+1"] * 2000
    df = pl.DataFrame({"x": values})
    out = df.select(
        name_expr("x").alias("n"),
        forename_expr("x").alias("f"),
        postcode_expr("x").alias("p"),
        uprn_expr("x").alias("u"),
        nhs_number_expr("x").alias("h"),
        date_expr("x", UK).alias("d"),
        sex_expr("x").alias("s"),
        flag_expr("x").alias("b"),
    )
    assert out.height == len(values)
    assert out["u"].null_count() == len(values)
