"""Request dependencies shared by the routers: the store, the caller and what
the caller may see.

They chain (fastapi-best-practices): the access token → the caller's context
→ the restriction that applies to it → the service call. Every route that
depends on the caller is authenticated; public routes (metadata, well-known
documents, JWKS, health) simply do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Depends, Request

from hie.audit.fhir import AUDIT_SOURCE
from hie.audit.writes import write_hook
from hie.auth.dependencies import authenticate
from hie.config import Settings
from hie.context import RequestContext, organization_source
from hie.fhir.writes import WriteHook
from hie.metering.counters import note_usage
from hie.registry.models import ROLE_PRIVACY_OFFICER
from hie.store.base import Store
from hie.store.query import Restriction

#: ``meta.source`` of what the exchange's registry publishes (the directory of
#: organisations and practitioners, readable by every authenticated caller).
REGISTRY_SOURCE = organization_source("exchange")


async def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    """The process-wide store opened at start-up."""
    return request.app.state.store


async def get_context(request: Request) -> RequestContext:
    """Who is calling, from the access token (401 without a valid one); the
    request is charged to the caller's organisation."""
    ctx = await authenticate(request)
    note_usage(request, organization=ctx.organization)
    return ctx


def restriction_for(request: Request, ctx: RequestContext) -> Restriction:
    """What the caller may see: the records its own organisation wrote and the
    registry's directory. Privacy officers read the audit trail instead.

    The consent layer widens this per patient; nothing here ever returns
    ``None`` (everything) for an API caller.
    """
    roles = getattr(ctx, "roles", frozenset())
    if request.path_params.get("resource_type") == "AuditEvent" \
            and ROLE_PRIVACY_OFFICER in roles:
        return Restriction(sources=frozenset({AUDIT_SOURCE}))
    return Restriction(sources=frozenset({ctx.source, REGISTRY_SOURCE}))


async def get_restriction(request: Request,
                          ctx: RequestContext = Depends(get_context)) -> Restriction:
    """:func:`restriction_for` the caller, as a dependency."""
    return restriction_for(request, ctx)


async def get_write_hooks(request: Request) -> Sequence[WriteHook]:
    """What must commit with every write: the app's hooks and the audit record."""
    request_id = request.headers.get("x-request-id")
    return [*request.app.state.write_hooks, write_hook(request_id=request_id)]
