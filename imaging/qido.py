"""QIDO-RS (PS3.18 §10.6): query parameters parsed into a :class:`QidoQuery`, attribute
matching per PS3.4 C.2.2.2 against DICOM JSON records, and the attributes returned.

Matching, as implemented:

- single value: exact and case-sensitive, except PN (case-insensitive, as Orthanc's
  default); DA/TM/DT compare as times (``103000`` equals ``103000.000``), IS/DS/binary
  numbers as numbers;
- UID list: ``1.2.3,1.2.4`` (comma or backslash) or the key repeated;
- wildcard ``*`` and ``?`` for AE, CS, LO, LT, PN, SH, ST, UC, UR, UT (a pattern of only
  ``*`` is universal); elsewhere they are refused;
- range for DA, TM, DT with open ends (``20200101-``, ``-20200131``); an open high end of
  lower precision covers the whole period (``-1045`` includes 10:45:59). A DA and a TM
  range (StudyDate with StudyTime) are matched independently, as Orthanc does, not as
  one combined datetime range (that PS3.4 option is not offered); DT offsets are ignored;
- sequence matching on items: ``00400275.00400009=X`` or
  ``RequestAttributesSequence.ScheduledProcedureStepID=X``; keys on the same sequence
  must hold in one item;
- an empty value is universal; an attribute absent from (or empty in) the record does
  not match any other key. Multiple-value matching (``CT\\MR``) and fuzzy matching are
  not supported: the first is refused, the second only reported (:func:`warning`).

>>> q = parse_query([("PatientName", "doe*"), ("StudyDate", "20200101-")], "study")
>>> matches({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
...          "00080020": {"vr": "DA", "Value": ["20210304"]}}, q)
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import dictionary_VR

from imaging.jsonmodel import tag_of
from imaging.levels import LEVELS, Level, level_of, level_view
from imaging.parse import is_valid_uid

MatchKind = Literal["single", "uids", "wildcard", "range", "sequence", "empty"]

MAX_VALUE_CHARS = 1024
MAX_UIDS = 1000
MAX_KEYS = 200
FUZZY_WARNING = ("The fuzzymatching parameter is not supported. "
                 "Only literal matching has been performed.")

#: Required return attributes per level (PS3.18 Tables 10.6.3-3, -4, -5).
REQUIRED_RETURN: dict[Level, tuple[str, ...]] = {
    "study": ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
              "00080201", "00081190", "00100010", "00100020", "00100030", "00100040",
              "0020000D", "00200010", "00201206", "00201208"),
    "series": ("00080060", "00080201", "0008103E", "00081190", "0020000E", "00200011",
               "00201209", "00400244", "00400245", "00400275"),
    "instance": ("00080016", "00080018", "00080056", "00080201", "00081190", "00200013",
                 "00280010", "00280011", "00280100", "00280008"),
}

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_TEXT_VRS = _WILDCARD_VRS | {"AS", "DA", "DT", "TM", "UI", "DS", "IS"}
_NUMBER_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"})
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
_FORMATS = {"DA": _DA, "TM": _TM, "DT": _DT}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_RANK = {"study": 0, "series": 1, "instance": 2}


class QidoError(ValueError):
    """A bad query: the exchange answers 400 with this text."""


@dataclass(frozen=True)
class Match:
    """One matching key: its attribute, VR and the kind of matching it asks for."""

    tag: str
    vr: str
    kind: MatchKind
    value: str | None = None
    values: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None
    items: tuple[Match, ...] = ()


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS request at one level."""

    level: Level
    matches: tuple[Match, ...]
    include_all: bool = False
    include: frozenset[str] = frozenset()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    study_uid: str | None = None       # from the URL of a study-relative query
    series_uid: str | None = None      # from the URL of a series-relative query


# -- parsing ------------------------------------------------------------------------------

def parse_query(params: Iterable[tuple[str, str]], level: Level, *, study_uid: str | None = None,
                series_uid: str | None = None, max_limit: int = 1000) -> QidoQuery:
    """Parse QIDO-RS query parameters at ``level``; QidoError for anything not understood."""
    if level not in LEVELS:
        raise QidoError(f"not a query level: {level!r}")
    keys: dict[tuple[str, ...], list[str]] = {}
    include: set[str] = set()
    include_all = fuzzy = False
    limit: int | None = None
    offset: int | None = None
    for count, (key, value) in enumerate(params):
        if count >= MAX_KEYS:
            raise QidoError(f"more than {MAX_KEYS} query parameters")
        _check_text(key, value)
        if len(value) > MAX_VALUE_CHARS and not _is_uid_key(key):
            raise QidoError(f"a query parameter is longer than {MAX_VALUE_CHARS} characters")
        if key == "includefield":
            for name in value.split(","):
                name = name.strip()
                if name == "all":
                    include_all = True
                elif name:
                    include.add(_path(name)[0])
        elif key in ("limit", "offset"):
            number = _non_negative(key, value)
            if (limit if key == "limit" else offset) is not None:
                raise QidoError(f"{key} given more than once")
            if key == "limit":
                limit = min(number, max_limit)
            else:
                offset = number
        elif key == "fuzzymatching":
            if value not in ("true", "false"):
                raise QidoError("fuzzymatching must be true or false")
            fuzzy = value == "true"
        else:
            path = _path(key)
            attribute_level = level_of(path[0])
            if attribute_level is not None and _RANK[attribute_level] > _RANK[level]:
                raise QidoError(f"{key} is a {attribute_level}-level attribute: it cannot be "
                                f"matched in a {level} query")
            keys.setdefault(path, []).append(value)
    built = list(_build(keys, ()))
    for name, uid, tag in (("study", study_uid, "0020000D"), ("series", series_uid, "0020000E")):
        if uid is not None:    # a further key, in addition to any given as a parameter
            if not is_valid_uid(uid):
                raise QidoError(f"the {name} UID in the URL is not a valid UID")
            built.append(Match(tag, "UI", "single", value=uid))
    return QidoQuery(level=level, matches=tuple(built), include_all=include_all,
                     include=frozenset(include), limit=limit, offset=offset or 0, fuzzy=fuzzy,
                     study_uid=study_uid, series_uid=series_uid)


def _check_text(key: str, value: str) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise QidoError("query parameters must be text")
    # a UID list may be long (its UIDs are checked one by one); nothing else may
    if len(key) > 256 or len(value) > MAX_UIDS * 65:
        raise QidoError(f"a query parameter is longer than {MAX_VALUE_CHARS} characters")
    if _CONTROL.search(key) or _CONTROL.search(value):
        raise QidoError("control characters in a query parameter")


def _is_uid_key(key: str) -> bool:
    try:
        return _vr(tag_of(key.split(".")[-1]), key) == "UI"
    except (KeyError, ValueError):
        return False


def _non_negative(key: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise QidoError(f"{key} must be a non-negative integer")
    return int(value)


def _path(key: str) -> tuple[str, ...]:
    """A key ("PatientName", "00100010", "00400275.00400009") as a tuple of tags."""
    parts = key.split(".")
    if len(parts) > 4:
        raise QidoError(f"{key[:64]}: sequence paths are limited to 4 attributes")
    try:
        path = tuple(tag_of(part) for part in parts)
    except (KeyError, ValueError):
        raise QidoError(f"unknown attribute: {key[:64]}") from None
    for tag in path:
        _vr(tag, key)
    for tag in path[:-1]:
        if _vr(tag, key) != "SQ":
            raise QidoError(f"{key[:64]}: only a sequence can hold attributes")
    return path


def _vr(tag: str, key: str) -> str:
    try:
        return dictionary_VR(int(tag, 16)).split(" ")[0]
    except KeyError:
        raise QidoError(f"unknown attribute: {key[:64]}") from None


def _build(keys: dict[tuple[str, ...], list[str]], prefix: tuple[str, ...]) -> tuple[Match, ...]:
    """The matches for the keys under ``prefix`` (sequence keys grouped into one match)."""
    out: list[Match] = []
    direct = {path[len(prefix)]: vals for path, vals in keys.items()
              if len(path) == len(prefix) + 1 and path[:len(prefix)] == prefix}
    nested = sorted({path[len(prefix)] for path in keys
                     if len(path) > len(prefix) + 1 and path[:len(prefix)] == prefix})
    for tag in sorted(set(direct) | set(nested)):
        vr = _vr(tag, tag)
        if tag in nested:
            if any(direct.get(tag, [])):
                raise QidoError(f"{tag}: a sequence is matched through its items")
            out.append(Match(tag=tag, vr="SQ", kind="sequence",
                             items=_build(keys, (*prefix, tag))))
        else:
            out.append(_match(tag, vr, direct[tag]))
    return tuple(out)


def _match(tag: str, vr: str, given: list[str]) -> Match:
    """One key's match from its value(s)."""
    if vr == "UI":
        uids = [uid.strip() for value in given for uid in re.split(r"[,\\]", value)
                if uid.strip()]
        if not uids:
            return Match(tag, vr, "empty")
        if len(uids) > MAX_UIDS:
            raise QidoError(f"{tag}: more than {MAX_UIDS} UIDs")
        for uid in uids:
            if not is_valid_uid(uid):
                raise QidoError(f"{tag}: not a valid UID: {uid[:64]}")
        if len(set(uids)) == 1:
            return Match(tag, vr, "single", value=uids[0])
        return Match(tag, vr, "uids", values=tuple(dict.fromkeys(uids)))
    if len(given) > 1:
        raise QidoError(f"{tag} given more than once")
    value = given[0].strip()
    if value == "":
        return Match(tag, vr, "empty")
    if vr == "SQ":
        raise QidoError(f"{tag}: a sequence is matched through its items")
    if vr not in _TEXT_VRS | _NUMBER_VRS:
        raise QidoError(f"{tag}: attributes of VR {vr} cannot be matched on a value")
    if "\\" in value and vr not in ("LT", "ST", "UT", "UR"):
        raise QidoError(f"{tag}: multiple value matching is not supported")
    if vr in _FORMATS:
        return _date_match(tag, vr, value)
    if "*" in value or "?" in value:
        if vr not in _WILDCARD_VRS:
            raise QidoError(f"{tag}: wildcards are not allowed for VR {vr}")
        if set(value) == {"*"}:
            return Match(tag, vr, "empty")
        return Match(tag, vr, "wildcard", value=value)
    if vr in _NUMBER_VRS and _number(value) is None:
        raise QidoError(f"{tag}: not a number: {value[:64]}")
    return Match(tag, vr, "single", value=value)


def _date_match(tag: str, vr: str, value: str) -> Match:
    """Single value or range matching for DA, TM and DT."""
    fmt = _FORMATS[vr]
    if vr == "TM":
        value = value.replace(":", "")
    if "*" in value or "?" in value:
        raise QidoError(f"{tag}: wildcards are not allowed for VR {vr}")
    if fmt.fullmatch(value):
        return Match(tag, vr, "single", value=value)
    for at in (i for i, char in enumerate(value) if char == "-"):
        low, high = value[:at], value[at + 1:]
        if (low or high) and all(part == "" or fmt.fullmatch(part) for part in (low, high)):
            if low and high and _pad(vr, low, "0") > _pad(vr, high, "9"):
                raise QidoError(f"{tag}: the range ends before it starts")
            return Match(tag, vr, "range", low=low or None, high=high or None)
    raise QidoError(f"{tag}: not a {vr} value or range: {value[:64]}")


# -- matching -----------------------------------------------------------------------------

def matches(ds_json: dict, query: QidoQuery) -> bool:
    """True when every key of the query matches the record (PS3.4 C.2.2.2)."""
    return all(_holds(ds_json, match) for match in query.matches)


def _holds(ds_json: dict, match: Match) -> bool:
    if match.kind == "empty":
        return True
    if match.kind == "sequence" and all(item.kind == "empty" for item in match.items):
        return True
    attr = ds_json.get(match.tag)
    found = attr.get("Value") if isinstance(attr, dict) else None
    if not found:
        return False
    if match.kind == "sequence":
        return any(isinstance(item, dict) and all(_holds(item, sub) for sub in match.items)
                   for item in found)
    return any(_value_holds(match, value) for value in found)


def _value_holds(match: Match, value: Any) -> bool:
    if match.vr == "PN":
        texts = ([value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
                 if isinstance(value, dict) else [str(value)])
        texts = [text for text in texts if text]
    else:
        texts = [str(value)]
    kind = match.kind
    if kind == "uids":
        return texts[0] in match.values
    if kind == "wildcard":
        pattern = _wildcard(match.value or "", match.vr == "PN")
        return any(pattern.fullmatch(text) for text in texts)
    if kind == "range":
        data = _pad(match.vr, texts[0], "0")
        return ((match.low is None or data >= _pad(match.vr, match.low, "0"))
                and (match.high is None or data <= _pad(match.vr, match.high, "9")))
    wanted = match.value or ""
    if match.vr == "PN":
        return any(text.casefold() == wanted.casefold() for text in texts)
    if match.vr in _FORMATS:
        return _pad(match.vr, texts[0], "0") == _pad(match.vr, wanted, "0")
    if match.vr in _NUMBER_VRS:
        number = _number(texts[0])
        return number is not None and number == _number(wanted)
    return texts[0].strip() == wanted


def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _pad(vr: str, value: str, fill: str) -> str:
    """A DA/TM/DT value as fixed-width digits; ``fill`` pads what it leaves unsaid."""
    value = value.strip()
    if vr == "DA":
        return re.sub(r"\D", "", value)[:8].ljust(8, fill)
    if vr == "TM":
        whole, _, fraction = value.replace(":", "").partition(".")
        return whole[:6].ljust(6, fill) + fraction[:6].ljust(6, fill)
    stamp = re.sub(r"[+-]\d{4}$", "", value)       # DT: the UTC offset is ignored
    whole, _, fraction = stamp.partition(".")
    return whole[:14].ljust(14, fill) + fraction[:6].ljust(6, fill)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# -- results ------------------------------------------------------------------------------

def return_tags(ds_json: dict, query: QidoQuery) -> list[str]:
    """The attributes a result carries: required, matched, included (PS3.18 10.6.3.3)."""
    tags = set(REQUIRED_RETURN[query.level])
    if query.level != "study" and query.study_uid is None:
        tags.update(REQUIRED_RETURN["study"])
    if query.level == "instance" and query.series_uid is None:
        tags.update(REQUIRED_RETURN["series"])
    tags.update(match.tag for match in query.matches)
    tags.update(query.include)
    if query.include_all:
        tags.update(level_view(ds_json, query.level))
    return sorted(tags)


def project(ds_json: dict, query: QidoQuery) -> dict:
    """The record's attributes a QIDO-RS result returns, those present, in tag order."""
    return {tag: ds_json[tag] for tag in return_tags(ds_json, query) if tag in ds_json}


def warning(query: QidoQuery) -> str | None:
    """The text of the Warning header the answer needs (PS3.18 8.3.4.4), if any."""
    return FUZZY_WARNING if query.fuzzy else None
