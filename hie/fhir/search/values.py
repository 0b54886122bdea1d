"""Value parsing shared by the index extractor and the search parser.

Both sides must turn a FHIR value into the same representation, or a search
misses what was written: a date into its fixed-width UTC range, a decimal into
the range its precision implies, a reference into (type, id), a string into its
folded form. Keeping these in one module is what keeps them the same.

>>> date_range("2024-03")
('2024-03-01T00:00:00.000000', '2024-03-31T23:59:59.999999')
>>> number_range("5.4")
(5.4, 5.35, 5.45)
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from hie.store.index import DATE_MAX, DATE_MIN
from schemas.search_parameters import SEARCHABLE_TYPES

_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+\- ]\d{2}:\d{2})?)?)?)?")
_ONE_US = timedelta(microseconds=1)
_UTC_MIN = datetime(1, 1, 1, tzinfo=UTC)
_UTC_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def fmt(dt: datetime) -> str:
    """The fixed-width UTC form of :mod:`hie.store.index` (``dt`` is in UTC)."""
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}.{dt.microsecond:06d}")


def _parse_dt(text: str) -> tuple[datetime, datetime]:
    """The first and last instant (aware, UTC) that ``text`` denotes."""
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    year = int(m["y"])
    if m["m"] is None:
        return (datetime(year, 1, 1, tzinfo=UTC),
                datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    month = int(m["m"])
    if m["d"] is None:
        if not 1 <= month <= 12:
            raise ValueError(f"not a FHIR date: {text!r}")
        last = calendar.monthrange(year, month)[1]
        return (datetime(year, month, 1, tzinfo=UTC),
                datetime(year, month, last, 23, 59, 59, 999999, tzinfo=UTC))
    day = int(m["d"])
    if m["H"] is None:
        low = datetime(year, month, day, tzinfo=UTC)
        return low, low + timedelta(days=1) - _ONE_US
    hour, minute = int(m["H"]), int(m["M"])
    if m["S"] is None:
        low = datetime(year, month, day, hour, minute, tzinfo=UTC)
        span = timedelta(minutes=1)
    else:
        frac = m["f"] or ""
        digits = frac[:6]
        micro = int(digits.ljust(6, "0")) if digits else 0
        low = datetime(year, month, day, hour, minute, int(m["S"]), micro,
                       tzinfo=UTC)
        span = timedelta(microseconds=10 ** (6 - len(digits)))
    tz = m["tz"]
    if tz and tz != "Z":
        # A "+" in a URL query decodes to a space; read it back as "+".
        sign = -1 if tz[0] == "-" else 1
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        if offset > timedelta(hours=14):
            raise ValueError(f"time zone offset out of range: {text!r}")
        low -= sign * offset
    return low, low + span - _ONE_US


@lru_cache(maxsize=8192)
def date_range(text: str) -> tuple[str, str]:
    """The closed UTC range ``[low, high]`` a FHIR date, dateTime or instant
    covers at its precision. A value without a time zone is taken as UTC.

    Raises :class:`ValueError` for anything that is not a FHIR date.
    """
    try:
        low, high = _parse_dt(text)
    except OverflowError:
        raise ValueError(f"date out of range: {text!r}") from None
    return fmt(low), fmt(high)


def date_bounds(text: str) -> tuple[datetime, datetime]:
    """Like :func:`date_range` but as aware datetimes (for ``ap`` arithmetic)."""
    try:
        return _parse_dt(text)
    except OverflowError:
        raise ValueError(f"date out of range: {text!r}") from None


def widen_approximately(low: datetime, high: datetime,
                        now: datetime | None = None) -> tuple[str, str]:
    """The range ``ap`` matches: ``[low, high]`` widened on each side by 10 % of
    the distance between the value and now, and by at least one day (FHIR R4
    leaves the amount to the server; this follows its 10 % suggestion)."""
    now = now or datetime.now(UTC)
    gap = max(abs(now - low), abs(now - high))
    delta = max(gap / 10, timedelta(days=1))
    lo = _UTC_MIN if low - _UTC_MIN <= delta else low - delta
    hi = _UTC_MAX if _UTC_MAX - high <= delta else high + delta
    return fmt(lo), fmt(hi)


def period_range(period: dict) -> tuple[str, str] | None:
    """A Period as a closed range; an open start or end is unbounded."""
    start, end = period.get("start"), period.get("end")
    if not isinstance(start, str) and not isinstance(end, str):
        return None
    low = date_range(start)[0] if isinstance(start, str) else DATE_MIN
    high = date_range(end)[1] if isinstance(end, str) else DATE_MAX
    return low, high


@lru_cache(maxsize=4096)
def number_range(text: str) -> tuple[float, float, float]:
    """``(value, low, high)``: the value and the half-open range ``[low, high)``
    its significant figures imply (``5.4`` → 5.35..5.45, ``100`` → 99.5..100.5,
    ``1e2`` → 50..150).

    Raises :class:`ValueError` for anything that is not a finite decimal.
    """
    try:
        dec = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not dec.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return float(dec), float(dec - half), float(dec + half)


def json_number_range(value: int | float) -> tuple[float, float, float]:
    """:func:`number_range` of a number parsed from JSON; its shortest repr
    stands for the precision it was written with (``5.40`` reads as ``5.4``)."""
    return number_range(repr(value) if isinstance(value, float) else str(value))


# -- references ---------------------------------------------------------------

_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@lru_cache(maxsize=8192)
def split_reference(ref: str) -> tuple[str, str]:
    """``(target_type, target_id)`` of a reference string.

    A relative ``Type/id`` (optionally ``/_history/n``) gives its type and id; an
    absolute URL whose last two segments are ``Type/id`` of a type the exchange
    serves is read the same way (it names a resource we may hold); anything
    else (contained ``#x``, ``urn:uuid:``, other URLs) gives ``("", ref)``.
    """
    absolute = "://" in ref
    path = ref.split("?", 1)[0] if absolute else ref
    parts = path.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2:
        rtype, rid = parts[-2], parts[-1]
        if _TYPE_RE.fullmatch(rtype) and _ID_RE.fullmatch(rid):
            if absolute:
                if rtype in SEARCHABLE_TYPES:
                    return rtype, rid
            elif len(parts) == 2:
                return rtype, rid
    return "", ref


def is_resource_type_name(text: str) -> bool:
    """Whether ``text`` is shaped like a FHIR resource type name."""
    return _TYPE_RE.fullmatch(text) is not None


def is_id(text: str) -> bool:
    """Whether ``text`` is a valid FHIR logical id."""
    return _ID_RE.fullmatch(text) is not None


# -- strings ------------------------------------------------------------------

@lru_cache(maxsize=16384)
def normalize_string(text: str) -> str:
    """Fold case and strip accents (NFKD, combining marks dropped) so that
    ``Zoë`` matches ``zoe``; CJK characters pass through unchanged (NFKD only
    maps compatibility forms such as full-width letters onto their usual form).
    """
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
