"""Who may write what: a hospital writes only as itself, changes only what it
wrote, and ids never collide between hospitals.

* ``meta.source`` is stamped by the exchange with the caller's organisation; a
  body that names another organisation as its source is refused.
* Updates and deletes reach only resources whose current version the caller
  wrote. Deleting another organisation's resource is answered exactly as
  deleting one that does not exist (nothing is deleted); updating one is
  refused with the same answer as creating an id outside the caller's
  namespace, so a hospital cannot probe for another hospital's records by id.
* Server-assigned ids are random UUIDs. An id a client chooses (update as
  create) must start with ``<organisation id>-``, so two hospitals can never
  claim the same id.
"""

from __future__ import annotations

from typing import Any

from hie.context import RequestContext
from hie.fhir.outcome import FhirError, Issue
from hie.store.base import StoredResource


def check_source(resource: dict[str, Any], ctx: RequestContext, where: str) -> None:
    """Refuse a body whose ``meta.source`` names someone other than the caller."""
    meta = resource.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    if source is not None and source != ctx.source:
        raise FhirError(403, Issue(
            "forbidden", f"meta.source must be the caller's own organisation ({ctx.source}) "
            "or absent; the exchange sets it", [f"{where or resource.get('resourceType')}"
                                                 ".meta.source"]))


def owns(current: StoredResource | None, ctx: RequestContext) -> bool:
    """Whether the caller wrote the current version of an existing resource."""
    return current is not None and current.source == ctx.source


def client_id_prefix(ctx: RequestContext) -> str:
    """The prefix a client-chosen id of this caller must carry."""
    return f"{ctx.organization}-"


def check_writable(current: StoredResource | None, ctx: RequestContext, resource_type: str,
                   id_: str) -> None:
    """Allow an update of the caller's own resource, or a create with an id in the
    caller's namespace; refuse anything else with one answer whether or not the
    resource exists."""
    if owns(current, ctx):
        return
    if (current is None or current.source == ctx.source) \
            and id_.startswith(client_id_prefix(ctx)):
        return
    raise FhirError(403, Issue(
        "forbidden", f"{resource_type}/{id_}: an organisation may update only resources it "
        f"wrote, and ids it chooses must start with '{client_id_prefix(ctx)}'"))
