"""SMART scopes: parsing, granting, and checking an interaction against them.

Grammar (SMART App Launch 2.x §"Scopes for requesting FHIR resources"):
``<context>/<type or *>.<permissions>`` with context ``system``, ``user`` or
``patient``. Permissions are v2 ``cruds`` letters (a subset, in that order:
``rs``, ``cud``) or v1 ``read`` (= ``rs``), ``write`` (= ``cud``) and ``*``
(= ``cruds``). v2 query-parameter scopes (``…rs?category=…``) are not supported
and refused, so that a client never believes it got a narrower grant than it has.

What a caller may have (:data:`SYSTEM_ALLOWED`, :data:`DOCTOR_ALLOWED`) is the
ceiling; a token gets the intersection with what was requested.

>>> [s.text for s in grant(parse_scopes("system/Observation.rs system/*.read"), SYSTEM_ALLOWED)]
['system/Observation.rs', 'system/*.read']
>>> permits(parse_scopes("user/*.rs"), "Encounter", "s")
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

INTERACTIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]{1,63})\.([A-Za-z*]+)$")


class ScopeError(ValueError):
    """A scope string that is malformed or uses an unsupported form."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource scope; ``text`` is how it was written."""

    context: str
    resource_type: str
    permissions: str  # letters of "cruds", in that order
    text: str

    def covers(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.permissions


def _permissions(value: str, text: str) -> str:
    if value in _V1:
        return _V1[value]
    letters = [c for c in INTERACTIONS if c in value]
    if not value or "".join(letters) != value:
        raise ScopeError(f"scope {text!r}: permissions must be v2 letters of 'cruds' in "
                         "that order, or v1 'read', 'write' or '*'")
    return value


def parse_scope(text: str) -> Scope:
    """Parse one scope string."""
    if "?" in text:
        raise ScopeError(f"scope {text[:100]!r}: scopes with query parameters are not supported")
    m = _SCOPE.match(text)
    if not m:
        raise ScopeError(f"scope {text[:100]!r} is not a SMART resource scope "
                         "(<system|user|patient>/<type|*>.<permissions>)")
    context, rtype, perms = m.groups()
    return Scope(context, rtype, _permissions(perms, text), text)


def parse_scopes(text: str) -> list[Scope]:
    """Parse a space-separated scope parameter (duplicates dropped, order kept)."""
    seen: dict[str, Scope] = {}
    for part in text.split():
        if part not in seen:
            seen[part] = parse_scope(part)
    return list(seen.values())


def _v2(context: str, rtype: str, perms: str) -> str:
    return f"{context}/{rtype}.{perms}"


#: A hospital system (client_credentials) may do everything on every type; the
#: consent layer decides which records it sees.
SYSTEM_ALLOWED = (parse_scope("system/*.cruds"),)
#: A doctor reads and searches; writes reach the exchange through the hospital's
#: system, which owns the records (tenancy).
DOCTOR_ALLOWED = (parse_scope("user/*.rs"),)


def grant(requested: Iterable[Scope], allowed: Iterable[Scope]) -> list[Scope]:
    """The requested scopes cut down to what ``allowed`` permits (empty ones dropped).

    A scope granted in full keeps the client's spelling (v1 stays v1); a narrowed
    one is written in v2 form.
    """
    allowed = list(allowed)
    out: list[Scope] = []
    for r in requested:
        ceiling = {c for a in allowed if a.context == r.context
                   and a.resource_type in ("*", r.resource_type) for c in a.permissions}
        perms = "".join(c for c in r.permissions if c in ceiling)
        if not perms:
            continue
        text = r.text if perms == r.permissions else _v2(r.context, r.resource_type, perms)
        out.append(Scope(r.context, r.resource_type, perms, text))
    return out


def render(scopes: Iterable[Scope]) -> str:
    """The space-separated scope string of a token."""
    return " ".join(s.text for s in scopes)


def permits(scopes: Iterable[Scope], resource_type: str, interaction: str) -> bool:
    """Whether any scope allows ``interaction`` (one of ``cruds``) on ``resource_type``."""
    if interaction not in INTERACTIONS or len(interaction) != 1:
        raise ValueError(f"interaction must be one letter of {INTERACTIONS!r}")
    return any(s.covers(resource_type, interaction) for s in scopes)
