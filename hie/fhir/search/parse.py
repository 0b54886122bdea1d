"""FHIR R4 search parameters → a back-end-neutral :class:`SearchQuery`.

``parse_search`` reads the parameters in the order given: filters become AND-ed
:class:`AnyOf` disjunctions; the result parameters (``_count``, ``_sort``,
``_include``, ``_revinclude``, ``_summary``, ``_elements``, ``_total``) fill the
other fields of :class:`ParsedSearch`. ``used`` records what was applied, for
the Bundle's ``self`` link.

Unknown parameters are ignored (and left out of ``used``) unless ``strict``,
as FHIR R4 §3.1.1.5 asks. Names and values that look like attempts to smuggle
store query operators (``$``-names, brackets, braces, JSON objects) are always
an error, whatever ``strict`` says: they can only come from a hostile or broken
client, and a silent ignore would hide the attempt.

>>> p = parse_search("Observation", [("code", "http://loinc.org|8480-6"), ("_count", "5")])
>>> p.query.where[0].terms[0]
TokenMatch(param='code', code='8480-6', system='http://loinc.org', negate=False)
>>> p.count
5
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hie.fhir.search.conditions import id_term, last_updated_terms, param_any_ofs
from hie.fhir.search.errors import SearchError
from hie.fhir.search.values import is_resource_type_name
from hie.store.query import AnyOf, ChainMatch, SearchQuery, SortKey
from schemas.search_parameters import SEARCHABLE_TYPES, SearchParam, get_param

__all__ = ["Include", "ParsedSearch", "SearchError", "parse_search"]

#: Most parameters one search may carry.
MAX_PARAMS = 100
#: Longest parameter value accepted (100 ids of 64 characters fit).
MAX_VALUE_LENGTH = 8192
IGNORED = frozenset({"_format", "_pretty"})
SUMMARY_VALUES = frozenset({"true", "text", "data", "count", "false"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
_SMUGGLING_NAME = re.compile(r"^\$|[\[\]{}]")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:target]`` or ``_revinclude=Source:param[:target]``."""

    source_type: str
    param: str
    target_type: str | None = None


@dataclass(slots=True)
class ParsedSearch:
    query: SearchQuery
    used: list[tuple[str, str]] = field(default_factory=list)
    count: int | None = None
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)


def parse_search(resource_type: str, params: list[tuple[str, str]], *, strict: bool = False,
                 base: str | None = None) -> ParsedSearch:
    """Parse ``params`` (decoded name/value pairs, in request order) for a search
    on ``resource_type``. ``base`` (the server's FHIR base URL) lets absolute
    references to this server match local ones. Raises :class:`SearchError`."""
    if resource_type not in SEARCHABLE_TYPES:
        raise SearchError(f"Resource type '{resource_type}' cannot be searched")
    if len(params) > MAX_PARAMS:
        raise SearchError(f"A search may have at most {MAX_PARAMS} parameters")
    parser = _Parser(resource_type, strict, base)
    for name, value in params:
        parser.add(name, value)
    return parser.result()


class _Parser:
    """Accumulates one search's conditions and result parameters."""

    def __init__(self, resource_type: str, strict: bool, base: str | None) -> None:
        self.rtype = resource_type
        self.strict = strict
        self.base = base
        self.where: list[AnyOf] = []
        self.sort: list[SortKey] = []
        self.out = ParsedSearch(SearchQuery(resource_type))

    def result(self) -> ParsedSearch:
        self.out.query = SearchQuery(self.rtype, tuple(self.where), tuple(self.sort))
        return self.out

    def unknown(self, name: str, why: str) -> None:
        if self.strict:
            raise SearchError(why, name)

    def add(self, name: str, value: str) -> None:
        _check_smuggling(name, value)
        if name in IGNORED:
            return
        if value == "":
            # FHIR servers ignore empty parameters; under strict handling say so.
            self.unknown(name, f"Parameter '{name}' has no value")
            return
        handler = _RESULT_HANDLERS.get(name)
        if handler is not None:
            handler(self, name, value)
        elif name == "_id":
            self.where.append(AnyOf((id_term(name, value),)))
        elif name == "_lastUpdated":
            self.where.append(AnyOf(last_updated_terms(name, value)))
        elif not self._filter(name, value):
            return
        self.out.used.append((name, value))

    def _filter(self, name: str, value: str) -> bool:
        """Add ``name=value`` as a filter; False when the parameter is unknown."""
        head, dot, chain = name.partition(".")
        pname, _, modifier = head.partition(":")
        param = get_param(self.rtype, pname)
        if param is None:
            self.unknown(name, f"Unknown search parameter '{pname}' for {self.rtype}")
            return False
        if ":" in modifier:
            raise SearchError(f"Parameter '{name}' has more than one modifier", name)
        if dot:
            return self._chain(name, param, modifier or None, chain, value)
        self.where += param_any_ofs(name, param, modifier or None, value, self.base)
        return True

    def _chain(self, name: str, param: SearchParam, type_modifier: str | None, chain: str,
               value: str) -> bool:
        if param.type != "reference":
            raise SearchError(f"Parameter '{name}': only reference parameters can be chained",
                              name)
        if "." in chain:
            raise SearchError(f"Parameter '{name}': only one level of chaining is supported",
                              name)
        target = type_modifier
        if target is None:
            if len(param.targets) != 1:
                raise SearchError(f"Parameter '{name}': {param.name} may refer to several "
                                  f"types; name one, as in {param.name}:Type.{chain}", name)
            target = param.targets[0]
        if not is_resource_type_name(target) or not param.can_target(target):
            raise SearchError(f"Parameter '{name}': {param.name} cannot refer to {target}", name)
        if target not in SEARCHABLE_TYPES:
            raise SearchError(f"Parameter '{name}': {target} resources are not held here", name)
        inner_name, _, inner_mod = chain.partition(":")
        if inner_name == "_id" and not inner_mod:
            self.where.append(AnyOf((ChainMatch(param.name, target, id_term(name, value)),)))
            return True
        inner = get_param(target, inner_name)
        if inner is None:
            self.unknown(name, f"Unknown search parameter '{inner_name}' for {target}")
            return False
        for any_of in param_any_ofs(name, inner, inner_mod or None, value, self.base):
            self.where.append(AnyOf(tuple(ChainMatch(param.name, target, t)
                                          for t in any_of.terms)))
        return True

    # -- result parameters ----------------------------------------------------

    def _count(self, name: str, value: str) -> None:
        if not value.isdigit() or len(value) > 9:
            raise SearchError("_count must be a non-negative integer", name)
        self.out.count = int(value)

    def _sort(self, name: str, value: str) -> None:
        for key in value.split(","):
            descending = key.startswith("-")
            pname = key[1:] if descending else key
            if pname == "_id":
                kind = "token"
            elif pname == "_lastUpdated":
                kind = "date"
            else:
                param = get_param(self.rtype, pname)
                if param is None:
                    raise SearchError(f"_sort: '{pname}' is not a search parameter of "
                                      f"{self.rtype}", name)
                kind = param.type
            self.sort.append(SortKey(pname, kind, descending))  # type: ignore[arg-type]

    def _include(self, name: str, value: str) -> None:
        source, param, target = _include_parts(name, value)
        if source != self.rtype:
            raise SearchError(f"_include: the source type must be {self.rtype}, not {source}",
                              name)
        ref = _reference_param(name, source, param)
        if target is not None and not ref.can_target(target):
            raise SearchError(f"_include: {source}:{param} cannot refer to {target}", name)
        self.out.includes.append(Include(source, param, target))

    def _revinclude(self, name: str, value: str) -> None:
        source, param, target = _include_parts(name, value)
        if source not in SEARCHABLE_TYPES:
            raise SearchError(f"_revinclude: {source} resources are not held here", name)
        ref = _reference_param(name, source, param)
        if not ref.can_target(self.rtype) or target not in (None, self.rtype):
            raise SearchError(f"_revinclude: {source}:{param} cannot refer to {self.rtype}",
                              name)
        self.out.revincludes.append(Include(source, param, target))

    def _summary(self, name: str, value: str) -> None:
        if value not in SUMMARY_VALUES:
            raise SearchError(f"_summary must be one of {', '.join(sorted(SUMMARY_VALUES))}",
                              name)
        self.out.summary = value

    def _elements(self, name: str, value: str) -> None:
        elements: list[str] = []
        for raw in value.split(","):
            element = raw.strip()
            if element.startswith(self.rtype + "."):
                element = element[len(self.rtype) + 1:]
            if not _ELEMENT.fullmatch(element):
                raise SearchError(f"_elements: '{raw}' is not an element name", name)
            elements.append(element)
        self.out.elements = (self.out.elements or []) + elements

    def _total(self, name: str, value: str) -> None:
        if value not in TOTAL_VALUES:
            raise SearchError(f"_total must be one of {', '.join(sorted(TOTAL_VALUES))}", name)
        self.out.total = value


_RESULT_HANDLERS = {
    "_count": _Parser._count, "_sort": _Parser._sort, "_include": _Parser._include,
    "_revinclude": _Parser._revinclude, "_summary": _Parser._summary,
    "_elements": _Parser._elements, "_total": _Parser._total,
}


def _check_smuggling(name: str, value: str) -> None:
    if _SMUGGLING_NAME.search(name):
        raise SearchError(f"Parameter name '{name}' is not allowed", name)
    if value.lstrip().startswith("{"):
        raise SearchError(f"Parameter '{name}': object values are not allowed", name)
    if len(value) > MAX_VALUE_LENGTH:
        raise SearchError(f"Parameter '{name}' is longer than {MAX_VALUE_LENGTH} characters",
                          name)


def _include_parts(name: str, value: str) -> tuple[str, str, str | None]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise SearchError(f"{name} must be Type:param or Type:param:TargetType", name)
    target = parts[2] if len(parts) == 3 else None
    if not is_resource_type_name(parts[0]) or (target and not is_resource_type_name(target)):
        raise SearchError(f"{name}: '{value}' does not name resource types", name)
    return parts[0], parts[1], target


def _reference_param(name: str, source: str, pname: str) -> SearchParam:
    param = get_param(source, pname)
    if param is None or param.type != "reference":
        raise SearchError(f"{name}: '{pname}' is not a reference parameter of {source}", name)
    return param
