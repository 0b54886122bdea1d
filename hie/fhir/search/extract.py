"""Search index extraction: every search-parameter value of a resource, in the
shapes :mod:`hie.store.index` fixes.

This runs on every write (and ingest is benchmarked), so the paths of the
search-parameter table are compiled once per resource type and walked over the
plain JSON dicts; no pydantic models, no FHIRPath engine. The two FHIRPath
filters the table uses (``.where(system='…')`` on ContactPoints and
``.where(resolve() is Type)`` on references) are applied while walking.

>>> e = extract({"resourceType": "Patient", "gender": "female"})
>>> e.token
[('gender', '', 'female')]
"""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hie.fhir.search.values import (
    date_range,
    json_number_range,
    normalize_string,
    period_range,
    split_reference,
)
from hie.store.index import IndexEntries
from schemas.search_parameters import params_for

__all__ = ["extract", "normalize_string", "reference_values"]

_WHERE_SYSTEM = re.compile(r"\.where\(system='([a-z]+)'\)$")
_WHERE_RESOLVE = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)$")
#: The string parts of HumanName and Address that string search matches.
_STRING_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district",
                 "state", "postalCode", "country")


@dataclass(frozen=True, slots=True)
class _Path:
    steps: tuple[str, ...]
    choice: str | None = None  # the last step is ``choice[x]``: every key ``choice<Type>``
    system: str | None = None  # ``.where(system='…')``
    ref_type: str | None = None  # ``.where(resolve() is …)``


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: str
    paths: tuple[_Path, ...]


def _compile_path(path: str) -> _Path:
    system = ref_type = None
    if m := _WHERE_SYSTEM.search(path):
        system, path = m.group(1), path[:m.start()]
    elif m := _WHERE_RESOLVE.search(path):
        ref_type, path = m.group(1), path[:m.start()]
    steps = tuple(path.split(".")[1:])  # drop the resource type
    choice = None
    if steps[-1].endswith("[x]"):
        choice = steps[-1][:-3]
    return _Path(steps, choice, system, ref_type)


@lru_cache(maxsize=64)
def _compiled(resource_type: str) -> tuple[_Param, ...]:
    return tuple(_Param(p.name, p.type, tuple(_compile_path(x) for x in p.paths))
                 for p in params_for(resource_type))


@lru_cache(maxsize=64)
def _by_name(resource_type: str) -> dict[str, _Param]:
    return {p.name: p for p in _compiled(resource_type)}


_Entry = tuple[_Param, _Path]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A type's paths grouped by their top-level element, so that extraction
    looks only at the elements a resource has (most parameters have no value
    in any one resource; visiting each path would cost more than the values)."""

    by_key: dict[str, tuple[_Entry, ...]]
    by_choice: dict[str, tuple[_Entry, ...]]  # ``effective[x]`` → "effective"


@lru_cache(maxsize=64)
def _plan(resource_type: str) -> _Plan:
    by_key: dict[str, list[_Entry]] = {}
    by_choice: dict[str, list[_Entry]] = {}
    for param in _compiled(resource_type):
        for path in param.paths:
            if len(path.steps) == 1 and path.choice is not None:
                by_choice.setdefault(path.choice, []).append((param, path))
            else:
                by_key.setdefault(path.steps[0], []).append((param, path))
    return _Plan({k: tuple(v) for k, v in by_key.items()},
                 {k: tuple(v) for k, v in by_choice.items()})


_CHOICE_TYPE = re.compile(r"[A-Z]")


def _descend(top: Any, path: _Path) -> list[Any]:
    """The values at ``path`` below its top-level value ``top`` (lists
    flattened), filters applied."""
    nodes: list[Any] = top if isinstance(top, list) else [top]
    steps = path.steps
    last = len(steps) - 1
    for i in range(1, len(steps)):
        found: list[Any] = []
        choice = path.choice if i == last else None
        for node in nodes:
            if not isinstance(node, dict):
                continue
            if choice is not None:
                n = len(choice)
                values = [v for k, v in node.items()
                          if len(k) > n and k.startswith(choice) and k[n].isupper()]
            else:
                v = node.get(steps[i])
                if v is None:
                    continue
                values = [v]
            for v in values:
                if isinstance(v, list):
                    found.extend(v)
                else:
                    found.append(v)
        if not found:
            return found
        nodes = found
    if path.system is not None:
        nodes = [n for n in nodes if isinstance(n, dict) and n.get("system") == path.system]
    return nodes


def _walk(resource: dict[str, Any], path: _Path) -> list[Any]:
    """The values at ``path`` from the resource root."""
    if len(path.steps) == 1 and path.choice is not None:
        n = len(path.choice)
        return [x for k, v in resource.items()
                if len(k) > n and k.startswith(path.choice) and k[n].isupper()
                for x in (v if isinstance(v, list) else [v])]
    top = resource.get(path.steps[0])
    return [] if top is None else _descend(top, path)


# -- value converters, one per index kind ------------------------------------

def _token(name: str, v: Any, out: IndexEntries) -> None:
    if isinstance(v, str):
        out.token.append((name, "", v))
    elif isinstance(v, bool):
        out.token.append((name, "", "true" if v else "false"))
    elif isinstance(v, dict):
        coding = v.get("coding")
        if coding is not None:  # CodeableConcept
            for c in coding:
                if isinstance(c, dict) and isinstance(c.get("code"), str):
                    out.token.append((name, c.get("system") or "", c["code"]))
        elif isinstance(v.get("code"), str):  # Coding
            out.token.append((name, v.get("system") or "", v["code"]))
        elif isinstance(v.get("value"), str):  # Identifier, ContactPoint
            out.token.append((name, v.get("system") or "", v["value"]))


def _string(name: str, v: Any, out: IndexEntries) -> None:
    if isinstance(v, str):
        if v:
            out.string.append((name, normalize_string(v), v))
    elif isinstance(v, dict):  # HumanName, Address
        for part in _STRING_PARTS:
            p = v.get(part)
            if isinstance(p, list):
                for s in p:
                    if isinstance(s, str) and s:
                        out.string.append((name, normalize_string(s), s))
            elif isinstance(p, str) and p:
                out.string.append((name, normalize_string(p), p))


def _date(name: str, v: Any, out: IndexEntries) -> None:
    try:
        if isinstance(v, str):
            out.date.append((name, *date_range(v)))
        elif isinstance(v, dict):
            if "start" in v or "end" in v:  # Period
                rng = period_range(v)
                if rng is not None:
                    out.date.append((name, *rng))
            elif "event" in v or "repeat" in v:  # Timing
                for event in v.get("event") or ():
                    if isinstance(event, str):
                        out.date.append((name, *date_range(event)))
                bounds = (v.get("repeat") or {}).get("boundsPeriod")
                if isinstance(bounds, dict) and (rng := period_range(bounds)) is not None:
                    out.date.append((name, *rng))
    except ValueError:
        pass  # validation rejects malformed dates; never fail a write over an index


def _number(name: str, v: Any, out: IndexEntries) -> None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        with suppress(ValueError):
            out.number.append((name, *json_number_range(v)))


def _quantity(name: str, v: Any, out: IndexEntries) -> None:
    if isinstance(v, dict):
        value = v.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = json_number_range(value)
            except ValueError:
                return
            code = v.get("code") or v.get("unit") or ""
            out.quantity.append((name, *number, v.get("system") or "", code))


def _uri(name: str, v: Any, out: IndexEntries) -> None:
    if isinstance(v, str) and v:
        out.uri.append((name, v))


_CONVERTERS = {"token": _token, "string": _string, "date": _date, "number": _number,
               "quantity": _quantity, "uri": _uri}


def _reference(name: str, path: _Path, v: Any, out: IndexEntries) -> None:
    if isinstance(v, dict):
        ref = v.get("reference")
        if isinstance(ref, str) and ref:
            ttype, tid = split_reference(ref)
            if path.ref_type is None or ttype == path.ref_type:
                out.reference.append((name, ttype, tid))


def extract(resource: dict[str, Any]) -> IndexEntries:
    """Every search-parameter value of ``resource`` (a FHIR JSON dict).

    ``_id`` and ``_lastUpdated`` are not extracted: the store keeps those itself.
    Values that cannot be indexed (a malformed date) are skipped, not raised:
    validation runs before this and owns the error reporting.
    """
    out = IndexEntries()
    plan = _plan(resource.get("resourceType", ""))
    for key, top in resource.items():
        entries = plan.by_key.get(key)
        if entries is None:
            m = _CHOICE_TYPE.search(key) if plan.by_choice else None
            if m is None or (entries := plan.by_choice.get(key[:m.start()])) is None:
                continue
            values_of = _choice_values
        else:
            values_of = _descend
        for param, path in entries:
            kind = param.kind
            for v in values_of(top, path):
                if kind == "reference":
                    _reference(param.name, path, v, out)
                else:
                    _CONVERTERS[kind](param.name, v, out)
    # One row per distinct value: repeated codings or names add nothing to a match.
    for kind in ("token", "string", "date", "number", "quantity", "reference", "uri"):
        rows = getattr(out, kind)
        if len(rows) > 1:
            setattr(out, kind, list(dict.fromkeys(rows)))
    return out


def _choice_values(top: Any, path: _Path) -> list[Any]:
    return top if isinstance(top, list) else [top]


def reference_values(resource: dict[str, Any], param: str) -> list[tuple[str, str]]:
    """``(target_type, target_id)`` of each value of the reference parameter
    ``param`` in ``resource`` (for ``_include``); empty for unknown params."""
    compiled = _by_name(resource.get("resourceType", "")).get(param)
    if compiled is None or compiled.kind != "reference":
        return []
    out = IndexEntries()
    for path in compiled.paths:
        for v in _walk(resource, path):
            _reference(param, path, v, out)
    return list(dict.fromkeys((t, i) for _, t, i in out.reference))
