"""What the consent service keeps, as one small interface (and an in-memory one).

The service (:mod:`consent.service`) is plain functions over a
:class:`ConsentData`; it never knows where the data lives. The exchange's
implementation over its document store is ``hie.gate.data.StoreConsentData``
(``consent`` must not import ``hie``); :class:`MemoryConsentData` is a
dictionary-backed one for tests and tools, with the same semantics:

* consents are FHIR ``Consent`` resources, every status, kept versioned; a
  resource carrying ``meta.versionId`` is saved only over that version
  (:class:`DataConflict` otherwise), so a read-modify-write cannot lose a
  concurrent change;
* ``save_break_glass`` of a *new* session returns the session already active
  for the same (person, organisation, practitioner) instead, if there is one —
  two simultaneous first emergency requests share one window.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from consent.policy import person_of
from schemas.consent import BreakGlass, Consultation

#: ``meta.source`` of what the consent service writes: it acts for the region,
#: and no hospital's restriction includes it.
CONSENT_SOURCE = "urn:hie:exchange:consent"


class DataConflict(Exception):
    """A save raced another change of the same record; re-read and retry."""


class ConsentData(Protocol):
    """The consent service's storage. Every method reads the current state:
    nothing is cached, so a withdrawal counts at the very next decision."""

    async def consents(self, person: str) -> list[dict[str, Any]]:
        """The person's FHIR Consent resources, every status."""
        ...

    async def save_consent(self, consent: dict[str, Any]) -> dict[str, Any]:
        """Create or update a Consent (id and meta assigned if absent); return
        the stored resource."""
        ...

    async def consultations(self, person: str) -> list[Consultation]:
        """The person's consultations, every status."""
        ...

    async def consultation(self, id: str) -> Consultation | None:
        """One consultation, or None."""
        ...

    async def save_consultation(self, c: Consultation) -> Consultation:
        """Create (``version`` None) or update a consultation; return it as
        stored, with its new ``version``. Raises :class:`DataConflict` when
        ``c.version`` is not the current one (or None for one that exists)."""
        ...

    async def break_glass(self, person: str | None = None, *, practitioner: str | None = None,
                          reviewed: bool | None = None) -> list[BreakGlass]:
        """Break-the-glass sessions matching every given filter, oldest first."""
        ...

    async def save_break_glass(self, s: BreakGlass) -> BreakGlass:
        """Create or update a session. Creating one while another is active for
        the same (person, organisation, practitioner) returns that one."""
        ...


def same_requester(a: BreakGlass, b: BreakGlass) -> bool:
    """Whether two sessions belong to the same (person, organisation, practitioner)."""
    return (a.person, a.organization, a.practitioner) == (b.person, b.organization,
                                                          b.practitioner)


def next_meta(consent: dict[str, Any], current_version: int, *, source: str,
              last_updated: str | None = None) -> dict[str, Any]:
    """The consent with id and meta for its next version (``last_updated``: a
    FHIR instant, now by default); raises :class:`DataConflict` when it names a
    version that is not the current one."""
    meta = consent.get("meta") if isinstance(consent.get("meta"), dict) else {}
    expected = meta.get("versionId")
    if expected is not None and str(expected) != str(current_version):
        raise DataConflict(f"Consent/{consent.get('id')} is at version {current_version}, "
                           f"not {expected}")
    stamp = last_updated or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {**consent, "id": consent.get("id") or str(uuid.uuid4()),
            "meta": {**meta, "versionId": str(current_version + 1), "lastUpdated": stamp,
                     "source": source}}


class MemoryConsentData:
    """:class:`ConsentData` in dictionaries (tests, tools). Not shared between
    processes; copies go in and out so callers cannot change what is kept."""

    def __init__(self) -> None:
        self._consents: dict[str, dict[str, Any]] = {}
        self._consultations: dict[str, Consultation] = {}
        self._sessions: dict[str, BreakGlass] = {}

    async def consents(self, person: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(c) for c in self._consents.values()
                if person_of(c) == person]

    async def save_consent(self, consent: dict[str, Any]) -> dict[str, Any]:
        if person_of(consent) is None:
            raise ValueError("a Consent must name the regional person (urn:hie:person)")
        current = self._consents.get(consent.get("id") or "")
        version = int(current["meta"]["versionId"]) if current else 0
        stored = next_meta(copy.deepcopy(consent), version, source=CONSENT_SOURCE)
        self._consents[stored["id"]] = stored
        return copy.deepcopy(stored)

    async def consultations(self, person: str) -> list[Consultation]:
        return [c.model_copy(deep=True) for c in self._consultations.values()
                if c.person == person]

    async def consultation(self, id: str) -> Consultation | None:
        found = self._consultations.get(id)
        return found.model_copy(deep=True) if found else None

    async def save_consultation(self, c: Consultation) -> Consultation:
        current = self._consultations.get(c.id)
        if c.version != (current.version if current else None):
            raise DataConflict(f"consultation {c.id} changed since it was read")
        stored = c.model_copy(deep=True, update={"version": (c.version or 0) + 1})
        self._consultations[c.id] = stored
        return stored.model_copy(deep=True)

    async def break_glass(self, person: str | None = None, *, practitioner: str | None = None,
                          reviewed: bool | None = None) -> list[BreakGlass]:
        return [s.model_copy() for s in sorted(self._sessions.values(),
                                               key=lambda s: s.started)
                if (person is None or s.person == person)
                and (practitioner is None or s.practitioner == practitioner)
                and (reviewed is None or s.reviewed == reviewed)]

    async def save_break_glass(self, s: BreakGlass) -> BreakGlass:
        if s.id not in self._sessions:
            for other in self._sessions.values():
                if same_requester(other, s) and other.active(s.started):
                    return other.model_copy()
        self._sessions[s.id] = s.model_copy()
        return s.model_copy()
