"""GB 11643-1999 resident ID numbers (公民身份号码): validation, 15→18 digit
normalisation, masking and the keyed hash the identity index stores instead.

An 18-character number is ``RRRRRR YYYYMMDD SSS C``: a 6-digit administrative
region code (GB/T 2260), the birth date, a 3-digit sequence whose parity gives
the sex (odd: male) and an ISO 7064 MOD 11-2 check character (``0``–``9`` or
``X``). Numbers issued before 1999 have 15 digits: a 2-digit year and no check
character; they are normalised by inserting ``19`` and computing the check.

Error messages and ``repr``s never contain a whole number (it is personal
information that must not reach logs): they show the masked form.

>>> normalise("11010519491231002x")
'11010519491231002X'
>>> normalise("110105491231002")
'11010519491231002X'
>>> mask("11010519491231002X")
'110105********002X'
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
#: The earliest birth year a resident ID number can carry (the oldest people
#: alive when numbers were first issued in 1984 were born in the 1880s).
MIN_YEAR = 1880


class ResidentIdError(ValueError):
    """A value is not a valid resident ID number. The message is safe to log:
    it names the problem and shows at most the masked number."""


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A valid, normalised (18-character) resident ID number."""

    number: str

    @property
    def region(self) -> str:
        """The GB/T 2260 administrative region code of first registration."""
        return self.number[:6]

    @property
    def birth_date(self) -> date:
        return date(int(self.number[6:10]), int(self.number[10:12]), int(self.number[12:14]))

    @property
    def gender(self) -> str:
        """``male`` (odd sequence) or ``female`` (even), as FHIR writes it."""
        return "male" if int(self.number[16]) % 2 else "female"

    @property
    def masked(self) -> str:
        return mask(self.number)

    def __repr__(self) -> str:  # never print the whole number
        return f"ResidentId({self.masked!r})"

    __str__ = __repr__


def check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character of the first 17 digits.

    >>> check_char("11010519491231002")
    'X'
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ResidentIdError("a resident ID number starts with exactly 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def _clean(value: str) -> str:
    # hospitals key numbers in with spaces or a lower-case x now and then
    return value.strip().replace(" ", "").replace("-", "").upper()


def _check_date(yyyymmdd: str, today: date | None = None) -> None:
    try:
        born = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        raise ResidentIdError("the birth date in the resident ID number is not a real "
                              "date") from None
    if born.year < MIN_YEAR or born > (today or date.today()):
        raise ResidentIdError("the birth date in the resident ID number is out of range")


def parse(value: str, *, today: date | None = None) -> ResidentId:
    """Validate and normalise ``value`` (18 or 15 characters) or raise
    :class:`ResidentIdError`."""
    v = _clean(value)
    if len(v) == 15:
        if not (v.isascii() and v.isdigit()):
            raise ResidentIdError("a 15-digit resident ID number has only digits")
        _check_date("19" + v[6:12], today)
        first17 = v[:6] + "19" + v[6:]
        return ResidentId(first17 + check_char(first17))
    if len(v) != 18:
        raise ResidentIdError("a resident ID number has 18 characters (or 15 digits)")
    if not (v[:17].isascii() and v[:17].isdigit()) or v[17] not in "0123456789X":
        raise ResidentIdError("a resident ID number is 17 digits and a digit or X")
    if v[:2] == "00":
        raise ResidentIdError("the region code of the resident ID number is not valid")
    _check_date(v[6:14], today)
    if check_char(v[:17]) != v[17]:
        raise ResidentIdError(f"the check character of {mask(v)} is wrong")
    return ResidentId(v)


def normalise(value: str) -> str:
    """Return the valid 18-character form of ``value`` or raise :class:`ResidentIdError`."""
    return parse(value).number


def is_valid(value: str) -> bool:
    """True when ``value`` is a valid 18-character or 15-digit number."""
    try:
        parse(value)
    except ResidentIdError:
        return False
    return True


def mask(value: str) -> str:
    """Hide the birth-date digits (8 of an 18-character number, 6 of a
    15-digit one). Anything else that is not 15/18 characters long is hidden
    all but its last four characters, since it may still be a (mistyped) number.

    >>> mask("110105491231002")
    '110105******002'
    """
    v = value.strip()
    if len(v) == 18:
        return v[:6] + "*" * 8 + v[14:]
    if len(v) == 15:
        return v[:6] + "*" * 6 + v[12:]
    return "*" * max(len(v) - 4, 0) + v[-4:]


def keyed_hash(number: str, key: bytes) -> str:
    """The HMAC-SHA-256 of a normalised number under the exchange's identity key.

    The index stores and searches this instead of the number: equal numbers
    give equal hashes, and without the key a stolen database does not let
    anyone enumerate the (small) space of possible numbers.
    """
    return hmac.new(key, number.encode("ascii"), hashlib.sha256).hexdigest()[:40]


# -- finding numbers in free text -------------------------------------------------

_DATE8 = r"(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_DATE6 = r"[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
# Digits next to digits never match, so longer numbers (card numbers, ids) are
# left alone; the region code may not start with 0.
TEXT_PATTERN = re.compile(
    rf"(?<![0-9])([1-9][0-9]{{5}})(?:({_DATE8})([0-9]{{3}}[0-9Xx])(?![0-9A-Za-z])"
    rf"|({_DATE6})([0-9]{{3}})(?![0-9]))")


def mask_text(text: str) -> str:
    """Mask every resident-ID-shaped number (18 or 15 digits with a plausible
    birth date) in free text.

    >>> mask_text("id 11010519491231002X, old 110105491231002")
    'id 110105********002X, old 110105******002'
    """
    def hide(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return m.group(1) + "*" * 8 + m.group(3)
        return m.group(1) + "*" * 6 + m.group(5)

    return TEXT_PATTERN.sub(hide, text)
