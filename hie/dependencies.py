"""Request dependencies shared by the routers: the store, the caller and what
the caller may see.

They chain (fastapi-best-practices): the caller's context → the restriction
that applies to it → the service call. Until the trust layer authenticates
callers, every request acts as the configured local organisation and sees
everything; the trust and consent layers replace :func:`get_context` and
:func:`get_restriction` without touching the routes.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Depends, Request

from hie.config import Settings
from hie.context import RequestContext
from hie.fhir.writes import WriteHook
from hie.store.base import Store
from hie.store.query import Restriction


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def get_store(request: Request) -> Store:
    """The process-wide store opened at start-up."""
    return request.app.state.store


def get_context(settings: Settings = Depends(get_settings_dep)) -> RequestContext:
    """Who is calling. Until authentication exists: the configured local caller."""
    return RequestContext(organization=settings.local_organization)


def get_restriction(ctx: RequestContext = Depends(get_context)) -> Restriction | None:
    """What the caller may see; ``None`` means everything.

    The local caller of the pre-authentication stage is the only organisation,
    so it sees all records; the consent layer compiles a real decision here.
    """
    return None


def get_write_hooks(request: Request) -> Sequence[WriteHook]:
    """What must commit with every write (set up by the app factory)."""
    return request.app.state.write_hooks
