"""The authenticated caller: :class:`~hie.context.RequestContext` plus what the
access token says.

A subclass, so every service that takes a ``RequestContext`` (tenancy,
provenance, writes) keeps working unchanged; the lead may fold these fields into
``RequestContext`` itself later.
"""

from __future__ import annotations

from dataclasses import dataclass

from hie.auth.scopes import Scope
from hie.context import RequestContext
from hie.registry.models import ROLE_ADMIN, ROLE_PRIVACY_OFFICER, ROLES

__all__ = ["ROLES", "ROLE_ADMIN", "ROLE_PRIVACY_OFFICER", "AuthContext"]


@dataclass(frozen=True, slots=True)
class AuthContext(RequestContext):
    """The caller of one request, as its access token describes it.

    ``organization``: the hospital (or ``exchange`` for the exchange's own
    administrators); ``practitioner``/``purpose_of_use``/``reason``/
    ``consultation``: set for a doctor's token; ``scopes``: what the token may do;
    ``roles``: ``admin``, ``privacy-officer``; ``client_id`` and ``token_id``
    (the access token's ``jti``) let audit records name the exact token.
    """

    reason: str | None = None
    consultation: str | None = None
    scopes: tuple[Scope, ...] = ()
    roles: frozenset[str] = frozenset()
    client_id: str | None = None
    token_id: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles
