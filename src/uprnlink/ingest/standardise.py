"""Standardisation of identifiers and quasi-identifiers as vectorised polars expressions.

Every ``*_expr`` function takes a column name or expression holding raw values (as read from
CSV: padded, mixed case, blank) and returns an expression that yields the standard form, or
null where the value is invalid. Nothing here raises on bad data, so the ingest layer can count
values that were present before and null after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

import polars as pl
import polars.selectors as cs

__all__ = [
    "CONTROL_CHARACTERS",
    "NAME_TITLES",
    "NHS_DUMMY_NUMBERS",
    "POSTCODE_PATTERN",
    "UPRN_MAX",
    "date_expr",
    "dob_expr",
    "flag_expr",
    "forename_expr",
    "is_valid_nhs_number",
    "middle_names_expr",
    "name_expr",
    "nhs_check_digit",
    "nhs_number_expr",
    "postcode_district_expr",
    "postcode_expr",
    "postcode_sector_expr",
    "sex_expr",
    "surname_expr",
    "text_expr",
    "uprn_expr",
]

UPRN_MAX = 999_999_999_999

NAME_TITLES: tuple[str, ...] = (
    "MR", "MRS", "MS", "MISS", "MSTR", "MASTER", "MX", "DR", "PROF", "PROFESSOR",
    "REV", "REVD", "REVEREND", "FR", "SIR", "DAME", "LADY", "LORD", "HON", "CLLR",
    "CAPT", "CAPTAIN", "MAJ", "COL", "SGT",
)  # fmt: skip

# Apostrophes are dropped (O'Brien -> OBRIEN) rather than split, so they go before NFKD.
_APOSTROPHES = "['\u2018\u2019\u02bc\u0060\u00b4]"

# Uppercase letters that NFKD does not decompose into A-Z plus combining marks.
_TRANSLITERATION: dict[str, str] = {
    "Æ": "AE", "Ø": "O", "Œ": "OE", "Ł": "L", "Đ": "D", "Ð": "D", "Þ": "TH",
    "ẞ": "SS", "ß": "SS", "Ħ": "H", "Ŧ": "T", "Ŋ": "NG",
}  # fmt: skip

_TITLES_PATTERN = "^(?:(?:" + "|".join(NAME_TITLES) + ")(?: |$))+"

_OUTWARD = (
    "(?:[A-PR-UWYZ][0-9]{1,2}"
    "|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}"
    "|[A-PR-UWYZ][0-9][A-HJKPSTUW]"
    "|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY])"
)
_INWARD = "[0-9][ABD-HJLNP-UW-Z]{2}"
POSTCODE_PATTERN = f"^(?:{_OUTWARD}{_INWARD}|GIR0AA)$"
"""Anchored pattern for a UK postcode with all whitespace removed and upper-cased (BS 7666)."""

# Explicit class (Unicode White_Space plus hyphen) so Rust's and Python's regexes agree exactly.
_NHS_SEPARATORS = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]"
_NHS_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_NHS_TEST_RANGE_START = 9_990_000_000
_REPDIGIT = 1_111_111_111
NHS_DUMMY_NUMBERS: tuple[str, ...] = ("0123456789", "9876543210")
"""Placeholder numbers that pass Modulus 11 but are typed when the real number is not known
(repeated digits such as 0000000000 and the 999 test range are rejected as well)."""
_NHS_DUMMY_INTS = [int(v) for v in NHS_DUMMY_NUMBERS]

CONTROL_CHARACTERS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
"""C0 control characters other than tab, line feed and carriage return, and DEL: NUL bytes and
their like mean a damaged or mis-declared file, so a value holding one is not trusted."""

_SEX_CODES: dict[str, str] = {
    "M": "M", "MALE": "M", "1": "M",
    "F": "F", "FEMALE": "F", "2": "F",
}  # fmt: skip
_FLAG_CODES: dict[str, bool] = {
    "Y": True, "YES": True, "TRUE": True, "T": True, "1": True,
    "N": False, "NO": False, "FALSE": False, "F": False, "0": False,
}  # fmt: skip


def _to_expr(col: str | pl.Expr) -> pl.Expr:
    """Return ``col`` as an expression."""
    return pl.col(col) if isinstance(col, str) else col


def _named(result: pl.Expr, source: pl.Expr) -> pl.Expr:
    """Give ``result`` the output name of ``source`` where polars can determine it."""
    name = source.meta.output_name(raise_if_undetermined=False)
    return result.alias(name) if name is not None else result


def _blank_to_null(s: pl.Expr) -> pl.Expr:
    """Null where the string is empty."""
    return pl.when(s.str.len_bytes() > 0).then(s)


def _code_key(e: pl.Expr) -> pl.Expr:
    """Upper-case, trim and collapse whitespace in a short code value."""
    return e.cast(pl.String).str.replace_all(r"\s+", " ").str.strip_chars(" ").str.to_uppercase()


def code_key_expr(col: str | pl.Expr) -> pl.Expr:
    """A code in the one spelling codes are compared in: trimmed, single spaces, upper case."""
    return _code_key(_to_expr(col))


def code_key(code: str) -> str:
    """`code_key_expr` for one code (a recode table's keys)."""
    return " ".join(code.split()).upper()


def text_expr(col: str | pl.Expr) -> pl.Expr:
    """Free text trimmed, with each line break (and the spaces round it) as one space; blank
    gives null. Quoted CSV fields may hold line breaks; downstream files should not."""
    e = _to_expr(col)
    s = e.cast(pl.String).str.replace_all(r"\s*[\r\n]+\s*", " ").str.strip_chars()
    return _named(_blank_to_null(s), e)


def name_expr(col: str | pl.Expr) -> pl.Expr:
    """Standardise a personal name to upper-case A-Z tokens separated by single spaces."""
    e = _to_expr(col)
    s = (
        e.cast(pl.String)
        .str.replace_all(_APOSTROPHES, "")
        .str.normalize("NFKD")
        .str.replace_all(r"\p{M}+", "")
        .str.to_uppercase()
        .str.replace_many(_TRANSLITERATION)
        .str.replace_all("[^A-Z]+", " ")
        .str.strip_chars(" ")
    )
    return _named(_blank_to_null(s), e)


def name_part_expr(col: str | pl.Expr, order: str, part: str) -> pl.Expr:
    """One part (``forename`` or ``surname``) of a full name held in one column.

    ``surname_first``: ``SMITH, John Paul`` or ``SMITH John Paul`` (surname = before the comma,
    else the first word). ``forename_first``: ``John Paul Smith`` (surname = the last word) or,
    with a comma, ``Smith, John`` read surname first. Titles stay with the forename part, where
    the forename standardiser removes them. A surname of several unhyphenated words cannot be
    told from middle names without a comma: such names need a comma or separate columns.
    """
    if order not in ("surname_first", "forename_first") or part not in ("forename", "surname"):
        raise ValueError(f"unknown name order {order!r} or part {part!r}")
    e = _to_expr(col)
    s = e.cast(pl.String).str.strip_chars()
    comma = s.str.contains(",")
    before, after = s.str.extract(r"^([^,]*),", 1), s.str.extract(r"^[^,]*,(.*)$", 1)
    if order == "surname_first":
        surname, forename = s.str.extract(r"^(\S+)", 1), s.str.extract(r"^\S+\s+(.*)$", 1)
    else:
        surname, forename = s.str.extract(r"(\S+)$", 1), s.str.extract(r"^(.*?)\s+\S+$", 1)
    chosen = (before, surname) if part == "surname" else (after, forename)
    result = pl.when(comma).then(chosen[0]).otherwise(chosen[1]).str.strip_chars()
    return _named(_blank_to_null(result), e)


def surname_expr(col: str | pl.Expr) -> pl.Expr:
    """Standardise a surname, keeping every token so double-barrelled names survive."""
    return name_expr(col)


def _untitled_name_expr(col: str | pl.Expr) -> pl.Expr:
    """Standardised name with any run of leading titles removed (titles alone give null)."""
    s = name_expr(col).str.replace(_TITLES_PATTERN, "").str.strip_chars(" ")
    return _blank_to_null(s)


def forename_expr(col: str | pl.Expr) -> pl.Expr:
    """Standardise a forename field to its first token after leading titles."""
    e = _to_expr(col)
    return _named(_untitled_name_expr(e).str.extract("^([A-Z]+)", 1), e)


def middle_names_expr(col: str | pl.Expr) -> pl.Expr:
    """Tokens of a forename field after the first name (titles removed), or null."""
    e = _to_expr(col)
    return _named(_untitled_name_expr(e).str.extract("^[A-Z]+ (.+)$", 1), e)


def postcode_expr(col: str | pl.Expr) -> pl.Expr:
    """Validate a UK postcode and format it canonically as ``OUTWARD INWARD``."""
    e = _to_expr(col)
    s = e.cast(pl.String).str.replace_all(r"\s+", "").str.to_uppercase()
    canonical = s.str.head(-3) + " " + s.str.tail(3)
    return _named(pl.when(s.str.contains(POSTCODE_PATTERN)).then(canonical), e)


def postcode_district_expr(col: str | pl.Expr) -> pl.Expr:
    """Outward code (postcode district) of a raw or canonical postcode, or null if invalid."""
    e = _to_expr(col)
    return _named(postcode_expr(e).str.extract("^([A-Z0-9]+) ", 1), e)


def postcode_sector_expr(col: str | pl.Expr) -> pl.Expr:
    """Postcode sector (outward code, space, first inward digit), or null if invalid."""
    e = _to_expr(col)
    return _named(postcode_expr(e).str.extract("^([A-Z0-9]+ [0-9])", 1), e)


def uprn_expr(col: str | pl.Expr) -> pl.Expr:
    """Parse a UPRN from text or integers to Int64 in 1..999_999_999_999, else null.

    Scientific notation is accepted only when the mantissa holds every digit of the integer:
    spreadsheets write 12-digit UPRNs as e.g. ``1.00023E+11``, which has lost digits and must
    not be guessed at.
    """
    e = _to_expr(col)
    s = e.cast(pl.String).str.replace_all(r"\s+", "").str.to_uppercase()
    significant = "^0*([1-9][0-9]{0,11})"
    plain = s.str.extract(significant + r"(?:\.0+)?$", 1)
    sci = s.str.extract_groups(r"^(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]*))?E\+?(?P<exp>[0-9]{1,2})$")
    whole = sci.struct.field("whole")
    frac = sci.struct.field("frac").fill_null("")
    exp = sci.struct.field("exp").cast(pl.Int64, strict=False)
    exact = (frac.str.len_chars() >= exp) & frac.str.slice(exp).str.contains("^0*$")
    sci_digits = pl.when(exact).then(whole + frac.str.slice(0, exp))
    from_sci = sci_digits.str.extract(significant + "$", 1)
    return _named(pl.coalesce(plain, from_sci).cast(pl.Int64, strict=False), e)


def nhs_check_digit(first_nine: str) -> int | None:
    """Modulus 11 check digit for the first nine digits of an NHS number; None if none exists."""
    if re.fullmatch("[0-9]{9}", first_nine) is None:
        raise ValueError("first_nine must be exactly 9 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first_nine, _NHS_WEIGHTS, strict=True))
    check = (11 - total % 11) % 11
    return None if check == 10 else check


def is_valid_nhs_number(value: str) -> bool:
    """Whether ``value`` is an NHS number that ``nhs_number_expr`` would accept."""
    if not isinstance(value, str):
        return False
    digits = re.sub(_NHS_SEPARATORS, "", value)
    if re.fullmatch("[0-9]{10}", digits) is None:
        return False
    n = int(digits)
    if n % _REPDIGIT == 0 or n >= _NHS_TEST_RANGE_START or n in _NHS_DUMMY_INTS:
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


def nhs_number_expr(col: str | pl.Expr) -> pl.Expr:
    """Validate an NHS number (Modulus 11, no dummy or 999 test values) as 10 digits, else null.

    Separators (spaces, hyphens) are dropped; anything but exactly ten ASCII digits is null.
    An integer column (a typed Parquet extract) has lost any leading zero, so it is padded back
    to ten digits; text is never padded (a nine-digit string is refused, not guessed at).
    """
    e = _to_expr(col)
    text = e.cast(pl.String)
    # Resolved from the schema at plan time, as in date_expr.
    is_integer = pl.dtype_of(e).matches(cs.integer())
    s = (
        pl.when(is_integer)
        .then(text.str.zfill(10))
        .otherwise(text)
        .str.replace_all(_NHS_SEPARATORS, "")
    )
    n = pl.when(s.str.contains("^[0-9]{10}$")).then(s.cast(pl.Int64, strict=False))
    digit = [(n // 10 ** (9 - k)) % 10 for k in range(10)]
    total = pl.sum_horizontal([digit[k] * w for k, w in enumerate(_NHS_WEIGHTS)])
    check = (11 - total % 11) % 11
    valid = (
        (check == digit[9])
        & (n % _REPDIGIT != 0)
        & (n < _NHS_TEST_RANGE_START)
        & ~n.is_in(_NHS_DUMMY_INTS)
    )  # fmt: skip
    return _named(pl.when(valid).then(s), e)


_TIME_SUFFIX = r"(?i)[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2}|AM|PM)?$"


EXCEL_DATE = "excel"
"""A date format meaning a spreadsheet serial date: days since 1899-12-30 (``45382`` is
2024-03-31; a time of day may follow as a fraction). Serials below 61 fall before Excel's
phantom 29 February 1900 and are refused rather than shifted by a day."""
_EXCEL_EPOCH = date(1899, 12, 30)
_EXCEL_MAX = 2_958_465  # 9999-12-31


def excel_date_expr(text: pl.Expr) -> pl.Expr:
    """A spreadsheet serial date (text of a whole or fractional number of days) as a Date."""
    days = (
        pl.when(text.str.contains(r"^[0-9]{1,7}(\.[0-9]+)?$"))
        .then(text.cast(pl.Float64, strict=False).floor().cast(pl.Int64))
        .otherwise(None)
    )
    valid = days.is_between(61, _EXCEL_MAX)
    return pl.when(valid).then(pl.lit(_EXCEL_EPOCH) + pl.duration(days=days)).cast(pl.Date)


def date_expr(col: str | pl.Expr, formats: Sequence[str]) -> pl.Expr:
    """Parse dates trying each strptime format in order (or `EXCEL_DATE` for spreadsheet
    serial dates); Date/Datetime input passes through.

    Impossible or unparseable dates become null. With no formats, text input is all null.
    """
    e = _to_expr(col)
    text = e.cast(pl.String).str.strip_chars()
    # Exports often write a date as a timestamp ("1980-01-02 00:00:00", "2024-05-01T13:45Z"):
    # a format without a time part is also tried on the date that is left.
    text_no_time = text.str.replace(_TIME_SUFFIX, "")
    parsed = [
        excel_date_expr(text) if fmt == EXCEL_DATE else t.str.to_date(fmt, strict=False)
        for fmt in formats
        for t in ((text,) if "%H" in fmt or fmt == EXCEL_DATE else (text, text_no_time))
    ]
    from_text = pl.coalesce(parsed) if parsed else pl.lit(None, dtype=pl.Date)
    # Resolved from the schema at plan time, so only one branch is ever computed.
    is_temporal = pl.dtype_of(e).matches(cs.date() | cs.datetime())
    result = pl.when(is_temporal).then(e.cast(pl.Date, strict=False)).otherwise(from_text)
    return _named(result, e)


def dob_expr(
    col: str | pl.Expr,
    formats: Sequence[str],
    *,
    earliest: date = date(1900, 1, 1),
    latest: date,
) -> pl.Expr:
    """Parse a date of birth, null when outside [earliest, latest] (future or implausible)."""
    e = _to_expr(col)
    d = date_expr(e, formats)
    return _named(pl.when(d.is_between(pl.lit(earliest), pl.lit(latest))).then(d), e)


def sex_expr(col: str | pl.Expr) -> pl.Expr:
    """Map a recorded sex to ``M`` or ``F``; unknown, indeterminate or blank give null."""
    e = _to_expr(col)
    result = _code_key(e).replace_strict(_SEX_CODES, default=None, return_dtype=pl.String)
    return _named(result, e)


def flag_expr(col: str | pl.Expr) -> pl.Expr:
    """Map a yes/no flag (Y/YES/TRUE/T/1, N/NO/FALSE/F/0) to Boolean, else null."""
    e = _to_expr(col)
    result = _code_key(e).replace_strict(_FLAG_CODES, default=None, return_dtype=pl.Boolean)
    return _named(result, e)


SEX_NOT_KNOWN_CODES = (
    "0",
    "9",
    "U",
    "UNKNOWN",
    "NOT KNOWN",
    "NOT STATED",
    "NOT SPECIFIED",
    "I",
    "INDETERMINATE",
    "X",
)


def sex_not_known_expr(col: str | pl.Expr) -> pl.Expr:
    """True where a recorded sex is a valid 'not known / not stated' code (not a bad value)."""
    return _code_key(_to_expr(col)).is_in(list(SEX_NOT_KNOWN_CODES))
