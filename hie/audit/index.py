"""The search index entries of an audit ``AuditEvent``, built without the
generic walk.

Every audit record is indexed as it is appended to the chain, on the server's
event loop. The FHIR layer's extractor (:func:`hie.fhir.search.extract.extract`)
walks each AuditEvent path of ``schemas/search_parameters.py`` over the JSON in
turn — the ``agent`` list six times, the ``entity`` list four — with type checks
at every step; that cost about 20 µs of a typical event. The events are all
built by :func:`hie.audit.fhir.to_audit_event` and
:func:`hie.audit.chain.seal`, so their shape is known: :func:`direct_index`
visits each top-level element once, with the paths written out, and gives
*exactly* what the extractor gives — the same entries, in the same order (the
MongoDB back end keeps them as arrays), de-duplicated the same way — plus the
regional person rule of :func:`hie.audit.fhir.index_entries`.

It cannot drift from the extractor unnoticed:

* it is written for the AuditEvent rows of the table as they are
  (:data:`WRITTEN_FOR`); when the table changes, :data:`FAST` is false, every
  event goes through the extractor, and ``tests/audit/test_audit_index.py``
  fails until this module is brought up to date;
* an event of any other shape (an element ``to_audit_event`` never writes, a
  Period as ``recorded``…) returns ``None`` and the caller uses the extractor;
* the tests compare it with the extractor over every kind of record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

from hie.audit.model import PERSON_REF_PREFIX
from hie.fhir.search.values import date_range, split_reference
from hie.store.index import IndexEntries
from schemas.search_parameters import params_for

#: The AuditEvent search parameters (name, type, paths) this module indexes,
#: in table order; the meta parameters every type has come last.
WRITTEN_FOR: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("action", "token", ("AuditEvent.action",)),
    ("agent", "reference", ("AuditEvent.agent.who",)),
    ("agent-role", "token", ("AuditEvent.agent.role",)),
    ("altid", "token", ("AuditEvent.agent.altId",)),
    ("date", "date", ("AuditEvent.recorded",)),
    ("entity", "reference", ("AuditEvent.entity.what",)),
    ("entity-role", "token", ("AuditEvent.entity.role",)),
    ("entity-type", "token", ("AuditEvent.entity.type",)),
    ("outcome", "token", ("AuditEvent.outcome",)),
    ("patient", "reference", ("AuditEvent.agent.who.where(resolve() is Patient)",
                              "AuditEvent.entity.what.where(resolve() is Patient)")),
    ("policy", "uri", ("AuditEvent.agent.policy",)),
    ("purpose", "token", ("AuditEvent.purposeOfEvent", "AuditEvent.agent.purposeOfUse")),
    ("site", "token", ("AuditEvent.source.site",)),
    ("source", "reference", ("AuditEvent.source.observer",)),
    ("subtype", "token", ("AuditEvent.subtype",)),
    ("type", "token", ("AuditEvent.type",)),
    ("_profile", "uri", ("AuditEvent.meta.profile",)),
    ("_security", "token", ("AuditEvent.meta.security",)),
    ("_tag", "token", ("AuditEvent.meta.tag",)),
)


def table_rows() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """The AuditEvent rows of the search-parameter table, as :data:`WRITTEN_FOR`."""
    return tuple((p.name, p.type, p.paths) for p in params_for("AuditEvent"))


#: Whether :func:`direct_index` matches the table (else: always the extractor).
FAST: bool = table_rows() == WRITTEN_FOR

#: ``recorded`` as :func:`hie.audit.model.now_stamp` writes it, plus ``Z``: its
#: date range is the instant itself (microsecond precision), once it is known
#: to be a real date. Years from 9000 are left to :func:`date_range` (the last
#: microsecond of 9999 has no successor, and the extractor skips it).
_STAMP = re.compile(r"[0-8][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


class _Unusual(Exception):
    """The event has a shape :func:`hie.audit.fhir.to_audit_event` never builds."""


# Each handler indexes one top-level element of the event, for the shapes
# to_audit_event writes: a Coding is a dict with a string ``code``, a
# CodeableConcept a dict with a ``coding`` list, a Reference a dict, a code a
# string, a repeated element a list; an element is absent or null when it has no
# value. For those shapes the extractor's rules are short (written out below);
# anything else raises _Unusual and the event goes to the extractor.

def _coding(name: str, v: Any) -> tuple[str, str, str]:
    """The token of a Coding."""
    if isinstance(v, dict) and v.get("coding") is None:
        code = v.get("code")
        if isinstance(code, str):
            return name, v.get("system") or "", code
    raise _Unusual


def _concepts(name: str, v: Any, out: list[tuple[str, str, str]]) -> None:
    """The tokens of a list of CodeableConcepts (absent: none)."""
    if v is None:
        return
    if not isinstance(v, list):
        raise _Unusual
    for concept in v:
        coding = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(coding, list):
            raise _Unusual
        for c in coding:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out.append((name, c.get("system") or "", c["code"]))


def _code(name: str, v: Any) -> tuple[str, str, str]:
    """The token of a ``code`` or ``string`` element."""
    if isinstance(v, str):
        return name, "", v
    raise _Unusual


def _target(v: Any) -> tuple[str, str] | None:
    """(type, id) of a Reference (absent, or no reference: None)."""
    if isinstance(v, dict):
        ref = v.get("reference")
        return split_reference(ref) if isinstance(ref, str) and ref else None
    if v is None:
        return None
    raise _Unusual


def _type(top: Any, out: IndexEntries, persons: list[str]) -> None:
    out.token.append(_coding("type", top))


def _subtype(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, list):
        raise _Unusual
    out.token.extend([_coding("subtype", v) for v in top])


def _action(top: Any, out: IndexEntries, persons: list[str]) -> None:
    out.token.append(_code("action", top))


def _outcome(top: Any, out: IndexEntries, persons: list[str]) -> None:
    out.token.append(_code("outcome", top))


def _recorded(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, str):
        raise _Unusual
    if _STAMP.fullmatch(top):
        instant = top[:-1]
        try:
            datetime.fromisoformat(instant)  # a real date and time?
        except ValueError:
            return  # the extractor skips what it cannot read
        out.date.append(("date", instant, instant))
    else:
        with suppress(ValueError):  # the extractor skips what it cannot read
            out.date.append(("date", *date_range(top)))


def _purpose_of_event(top: Any, out: IndexEntries, persons: list[str]) -> None:
    _concepts("purpose", top, out.token)


def _agent(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, list):
        raise _Unusual
    # One pass; each parameter's rows are then added in the table's order
    # (agent, agent-role, altid, patient, policy, purpose).
    patients: list[tuple[str, str, str]] = []
    altids: list[tuple[str, str, str]] = []
    purposes: list[tuple[str, str, str]] = []
    for agent in top:
        if not isinstance(agent, dict) or agent.get("role") is not None:
            raise _Unusual
        target = _target(agent.get("who"))
        if target is not None:
            out.reference.append(("agent", *target))
            if target[0] == "Patient":
                patients.append(("patient", *target))
        altid = agent.get("altId")
        if altid is not None:
            altids.append(_code("altid", altid))
        policies = agent.get("policy")
        if policies is not None:
            if not isinstance(policies, list):
                raise _Unusual
            out.uri.extend([("policy", p) for p in policies if isinstance(p, str) and p])
        _concepts("purpose", agent.get("purposeOfUse"), purposes)
    out.reference.extend(patients)
    out.token.extend(altids)
    out.token.extend(purposes)


def _source(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, dict):
        raise _Unusual
    site = top.get("site")
    if site is not None:
        out.token.append(_code("site", site))
    target = _target(top.get("observer"))
    if target is not None:
        out.reference.append(("source", *target))


def _entity(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, list):
        raise _Unusual
    # (entity, entity-role, entity-type, patient), and the regional person.
    patients: list[tuple[str, str, str]] = []
    types: list[tuple[str, str, str]] = []
    # to_audit_event gives many entities the very same role and type objects:
    # their rows are taken once (the later ones are duplicates the end drops)
    roles_seen: set[int] = set()
    types_seen: set[int] = set()
    for entity in top:
        if not isinstance(entity, dict):
            raise _Unusual
        what = entity.get("what")
        if what is not None:
            if not isinstance(what, dict):
                raise _Unusual
            ref = what.get("reference")
            if isinstance(ref, str):
                if ref:
                    target = split_reference(ref)
                    out.reference.append(("entity", *target))
                    if target[0] == "Patient":
                        patients.append(("patient", *target))
                    if ref.startswith(PERSON_REF_PREFIX):
                        persons.append(ref)
            elif ref is not None or "reference" in what:
                raise _Unusual
        elif "what" in entity:
            raise _Unusual  # a null ``what``: index_entries' person rule fails on it
        role = entity.get("role")
        if role is not None and id(role) not in roles_seen:
            roles_seen.add(id(role))
            out.token.append(_coding("entity-role", role))
        type_ = entity.get("type")
        if type_ is not None and id(type_) not in types_seen:
            types_seen.add(id(type_))
            types.append(_coding("entity-type", type_))
    out.reference.extend(patients)
    out.token.extend(types)


def _meta(top: Any, out: IndexEntries, persons: list[str]) -> None:
    if not isinstance(top, dict):
        raise _Unusual
    if (top.get("profile") is not None or top.get("security") is not None
            or top.get("tag") is not None):
        raise _Unusual  # seal sets no profile, security label or tag


_Handler = Callable[[Any, IndexEntries, list[str]], None]
#: One handler per top-level element that holds a parameter's value.
_HANDLERS: dict[str, _Handler] = {
    "type": _type, "subtype": _subtype, "action": _action, "recorded": _recorded,
    "outcome": _outcome, "purposeOfEvent": _purpose_of_event, "agent": _agent,
    "source": _source, "entity": _entity, "meta": _meta,
}


def direct_index(event: dict[str, Any]) -> IndexEntries | None:
    """The index entries of an audit ``AuditEvent``, or ``None`` when it is
    not shaped as :func:`hie.audit.fhir.to_audit_event` builds it (or the
    table changed: see :data:`FAST`).

    The same as ``extract(event)`` followed by the regional person rule of
    :func:`hie.audit.fhir.index_entries`.
    """
    if not FAST or event.get("resourceType") != "AuditEvent":
        return None
    out = IndexEntries()
    persons: list[str] = []
    try:
        # in the event's own order, as the extractor goes
        for key, top in event.items():
            handler = _HANDLERS.get(key)
            if handler is not None:
                handler(top, out, persons)
    except _Unusual:
        return None
    # one row per distinct value, as the extractor keeps them
    if len(out.token) > 1:
        out.token = list(dict.fromkeys(out.token))
    if len(out.reference) > 1:
        out.reference = list(dict.fromkeys(out.reference))
    if len(out.uri) > 1:
        out.uri = list(dict.fromkeys(out.uri))
    out.reference.extend([("patient", "", ref) for ref in persons])
    return out
