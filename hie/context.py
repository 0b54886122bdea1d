"""Who is calling: the request context every service receives.

The trust layer fills it from the access token (``hie.auth.context.AuthContext``
adds the token's scopes, roles and ids); services that only need to know the
organisation, practitioner and purpose take this base class.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_PREFIX = "urn:hie:organization:"
#: ``source`` of the exchange's internal documents (types named ``_…``: client
#: keys, accounts, identity links, counters). No caller's restriction ever
#: includes it, so no API read path can return them.
INTERNAL_SOURCE = "urn:hie:exchange:internal"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The caller of one request."""

    organization: str
    practitioner: str | None = None
    purpose_of_use: str | None = None

    @property
    def source(self) -> str:
        """The ``meta.source`` value stamped on every write of this caller."""
        return organization_source(self.organization)


def organization_source(organization_id: str) -> str:
    """Return the ``meta.source`` URI that names an organisation."""
    return SOURCE_PREFIX + organization_id
