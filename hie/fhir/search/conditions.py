"""One search parameter's values → store conditions, by parameter type.

FHIR R4 search (§3.1.1): a comma separates values that are ORed (``\\,`` is a
literal comma); dates, numbers and quantities take a two-letter prefix; token
and quantity values have ``|``-separated parts (``\\|`` is a literal bar).
Each builder here turns one value into one :mod:`hie.store.query` condition,
using the same value parsing as the index extractor (:mod:`.values`).
"""

from __future__ import annotations

from typing import get_args

from hie.fhir.search.errors import SearchError
from hie.fhir.search.values import (
    date_bounds,
    date_range,
    is_id,
    is_resource_type_name,
    normalize_string,
    number_range,
    split_reference,
    widen_approximately,
)
from hie.store.query import (
    AnyOf,
    Condition,
    DateMatch,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    Prefix,
    QuantityMatch,
    ReferenceMatch,
    StringMatch,
    TokenMatch,
    UriMatch,
)
from schemas.search_parameters import SearchParam

#: Most comma-separated values one parameter may carry.
MAX_OR_VALUES = 100
PREFIXES: frozenset[str] = frozenset(get_args(Prefix))
#: Modifiers each parameter type accepts besides ``:missing`` (reference
#: parameters also accept a resource type, ``subject:Patient``).
MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"not"}),
    "string": frozenset({"exact", "contains"}),
    "uri": frozenset({"below", "above"}),
    "date": frozenset(), "number": frozenset(), "quantity": frozenset(),
    "reference": frozenset(),
}
_ESCAPES = {",": ",", "|": "|", "$": "$", "\\": "\\"}


def split_escaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it is not escaped with a backslash; the pieces
    keep their escapes (undo them with :func:`unescape`)."""
    if "\\" not in text:  # nothing escaped (nearly always): the C split
        return text.split(sep, maxsplit)
    parts: list[str] = []
    start = i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == sep and maxsplit != 0:
            parts.append(text[start:i])
            start = i + 1
            maxsplit -= 1
        i += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    """Undo FHIR search escapes (``\\,`` ``\\|`` ``\\$`` ``\\\\``)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def or_values(name: str, value: str) -> list[str]:
    """The comma-separated values of one parameter (escapes kept)."""
    values = split_escaped(value, ",")
    if len(values) > MAX_OR_VALUES:
        raise SearchError(f"Parameter '{name}' has more than {MAX_OR_VALUES} values", name)
    if any(v == "" for v in values):
        raise SearchError(f"Parameter '{name}' has an empty value", name)
    return values


def split_prefix(value: str) -> tuple[Prefix, str]:
    """``ge2024`` → ``("ge", "2024")``; no prefix means ``eq``."""
    if len(value) > 2 and value[:2] in PREFIXES:
        return value[:2], value[2:]  # type: ignore[return-value]
    return "eq", value


def date_search_range(name: str, prefix: str, text: str) -> tuple[str, str]:
    """The ``[low, high]`` a search date denotes; for ``ap`` already widened."""
    try:
        if prefix == "ap":
            return widen_approximately(*date_bounds(text))
        return date_range(text)
    except ValueError:
        raise SearchError(f"Parameter '{name}': '{text}' is not a valid date "
                          f"(expected YYYY, YYYY-MM, YYYY-MM-DD or "
                          f"YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm])", name) from None


def _number(name: str, text: str) -> tuple[float, float, float]:
    try:
        return number_range(text)
    except ValueError:
        raise SearchError(f"Parameter '{name}': '{text}' is not a valid number", name) from None


def missing_term(name: str, param: SearchParam, value: str) -> MissingMatch:
    """``param:missing=true|false``."""
    if value not in ("true", "false"):
        raise SearchError(f"Parameter '{name}': :missing takes true or false", name)
    return MissingMatch(param.name, param.type, value == "true")  # type: ignore[arg-type]


def check_modifier(name: str, param: SearchParam, modifier: str | None) -> None:
    """Reject a modifier the parameter's type does not have."""
    if modifier is None or modifier == "missing" or modifier in MODIFIERS[param.type]:
        return
    if param.type == "reference" and is_resource_type_name(modifier):
        if not param.can_target(modifier):
            raise SearchError(f"Parameter '{name}': {param.name} cannot refer to {modifier}", name)
        return
    raise SearchError(f"Parameter '{name}': modifier ':{modifier}' is not supported for "
                      f"{param.type} parameters", name)


def term(name: str, param: SearchParam, modifier: str | None, value: str,
         base: str | None) -> Condition:
    """One value of ``param`` (escapes kept) as a store condition."""
    if modifier == "missing":
        return missing_term(name, param, value)
    kind = param.type
    if kind == "token":
        return _token(name, param, modifier, value)
    if kind == "string":
        text = unescape(value)
        if modifier == "exact":
            return StringMatch(param.name, text, "exact")
        return StringMatch(param.name, normalize_string(text),
                           "contains" if modifier == "contains" else "start")
    if kind == "date":
        prefix, rest = split_prefix(value)
        return DateMatch(param.name, prefix, *date_search_range(name, prefix, unescape(rest)))
    if kind == "number":
        prefix, rest = split_prefix(value)
        return NumberMatch(param.name, prefix, *_number(name, unescape(rest)))
    if kind == "quantity":
        return _quantity(name, param, value)
    if kind == "reference":
        return _reference(name, param, modifier, unescape(value), base)
    mode = modifier if modifier in ("below", "above") else "exact"
    return UriMatch(param.name, unescape(value), mode)  # type: ignore[arg-type]


def _token(name: str, param: SearchParam, modifier: str | None, value: str) -> TokenMatch:
    negate = modifier == "not"
    parts = split_escaped(value, "|", 1)
    if len(parts) == 1:
        return TokenMatch(param.name, unescape(value), None, negate)
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise SearchError(f"Parameter '{name}': '|' needs a system or a code", name)
    return TokenMatch(param.name, code or None, system, negate)


def _quantity(name: str, param: SearchParam, value: str) -> QuantityMatch:
    prefix, rest = split_prefix(value)
    parts = split_escaped(rest, "|")
    if len(parts) not in (1, 3):
        raise SearchError(f"Parameter '{name}': a quantity is number, number|system|code "
                          f"or number||code", name)
    number = _number(name, unescape(parts[0]))
    system = code = None
    if len(parts) == 3:
        system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
    return QuantityMatch(param.name, prefix, *number, system=system, code=code)


def _reference(name: str, param: SearchParam, modifier: str | None, value: str,
               base: str | None) -> ReferenceMatch:
    if base and value.startswith(base.rstrip("/") + "/"):
        value = value[len(base.rstrip("/")) + 1:]
    if "/" not in value:
        if not is_id(value):  # urn:uuid:…, urn:oid:… — compared whole, like the index
            return ReferenceMatch(param.name, value, "")
        target = modifier
        if target is None and len(param.targets) == 1:
            target = param.targets[0]
        return ReferenceMatch(param.name, value, target)
    ttype, tid = split_reference(value)
    if not ttype:
        return ReferenceMatch(param.name, value, "")
    if modifier is not None and modifier != ttype:
        raise SearchError(f"Parameter '{name}': '{value}' is not a {modifier} reference", name)
    if not param.can_target(ttype):
        raise SearchError(f"Parameter '{name}': {param.name} cannot refer to {ttype}", name)
    return ReferenceMatch(param.name, tid, ttype)


def param_any_ofs(name: str, param: SearchParam, modifier: str | None, value: str,
                  base: str | None) -> list[AnyOf]:
    """All values of one ``param[:modifier]=value`` as AND-ed disjunctions.

    Usually one :class:`AnyOf`; ``:not=a,b`` gives one per value, since
    "not a or not b" would match nearly everything while the client means
    "neither a nor b".
    """
    check_modifier(name, param, modifier)
    terms = [term(name, param, modifier, v, base) for v in or_values(name, value)]
    if modifier == "not":
        return [AnyOf((t,)) for t in terms]
    return [AnyOf(tuple(terms))]


def id_term(name: str, value: str) -> IdMatch:
    """``_id=a,b`` — one term matching any of the ids."""
    ids = tuple(unescape(v) for v in or_values(name, value))
    for i in ids:
        if not is_id(i):
            raise SearchError(f"Parameter '{name}': '{i}' is not a valid resource id", name)
    return IdMatch(ids)


def last_updated_terms(name: str, value: str) -> tuple[LastUpdatedMatch, ...]:
    """``_lastUpdated`` values with date-prefix semantics."""
    out = []
    for v in or_values(name, value):
        prefix, rest = split_prefix(v)
        out.append(LastUpdatedMatch(prefix, *date_search_range(name, prefix, unescape(rest))))
    return tuple(out)
