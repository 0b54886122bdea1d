"""What the patient portal needs from the rest of the system, as one protocol.

The portal lives in ``consent/`` and must not import the exchange (``hie``):
it reaches records, accounts, the directory and the audit trail only through
:class:`PortalData`. The exchange implements it over its store
(``hie.gate.portal_data.StorePortalData``); tests use an in-memory fake. The
consent operations themselves go through :mod:`consent.service` with the
:class:`~consent.data.ConsentData` that :meth:`PortalData.consent_data` hands out.

Every method is a coroutine: the exchange's store is asynchronous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from consent.data import ConsentData

#: ``meta.source`` of a record names the hospital that wrote it (the exchange
#: stamps ``urn:hie:organization:<id>`` on every write; it is part of the FHIR
#: API's output, so the portal may rely on it).
SOURCE_PREFIX = "urn:hie:organization:"


def organization_of(resource: dict[str, Any]) -> str | None:
    """The hospital that holds a record, from its ``meta.source``."""
    meta = resource.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    if isinstance(source, str) and source.startswith(SOURCE_PREFIX):
        return source[len(SOURCE_PREFIX):] or None
    return None


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One line of the patient's access log: who looked, from which hospital,
    when, why, at what, with what outcome."""

    when: str  # FHIR instant
    organization: str | None  # hospital id
    practitioner: str | None  # practitioner id (None: the hospital's system)
    purpose: str | None  # v3 PurposeOfUse code: TREAT, ETREAT, …
    what: str  # the resource type or references read, e.g. "Condition" or "Patient/1"
    outcome: str  # permit / deny / error
    break_the_glass: bool = False
    reason: str | None = None  # the reason given (break-the-glass)
    interaction: str | None = None  # read, search-type, $everything, …
    count: int | None = None  # how many resources a search returned


class PortalData(Protocol):
    """The portal's view of the system, always of one logged-in person."""

    async def authenticate(self, username: str, password: str) -> str | None:
        """The person id of an active account whose password matches; None otherwise
        (a wrong username and a wrong password must be indistinguishable)."""
        ...

    async def person_name(self, person: str) -> str:
        """How to greet the person (a name from one of their Patient records)."""
        ...

    async def records(self, person: str) -> list[dict[str, Any]]:
        """Every FHIR resource of the person at every hospital, unmasked, each with
        ``meta.source`` naming its hospital (see :func:`organization_of`)."""
        ...

    async def organization_names(self) -> dict[str, str]:
        """The hospital directory: id → display name."""
        ...

    async def practitioners(self) -> list[dict[str, Any]]:
        """The doctor directory: ``{"id", "name", "organization"}`` each."""
        ...

    async def access_log(self, person: str, *, limit: int, cursor: str | None
                         ) -> tuple[list[AccessEntry], str | None]:
        """One page of accesses to the person's records, newest first, and the
        opaque cursor of the next page (None: no more)."""
        ...

    async def export_bundle(self, person: str) -> dict[str, Any]:
        """All the person's records as a FHIR R4 ``collection`` Bundle."""
        ...

    def consent_data(self) -> ConsentData:
        """The :class:`~consent.data.ConsentData` the consent service works on."""
        ...
