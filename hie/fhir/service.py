"""Instance-level interactions: read, vread, create, update, delete, history.

Plain functions with keyword-only arguments; the router parses HTTP and calls
these. Writes go through :mod:`hie.fhir.writes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from hie.context import RequestContext
from hie.fhir import writes
from hie.fhir.bundles import bundle_bytes, decode_cursor, encode_cursor, history_entry, link_url
from hie.fhir.outcome import bad_request, gone, not_found
from hie.store.base import Store, StoredResource
from hie.store.query import Cursor, Restriction


async def read(store: Store, *, resource_type: str, id: str,
               restriction: Restriction | None = None) -> StoredResource:
    """Return the current version; 404 if unknown (or not visible), 410 if deleted."""
    rec = await store.read(resource_type, id, restriction=restriction)
    if rec is None:
        raise not_found(resource_type, id)
    if rec.deleted:
        raise gone(resource_type, id)
    return rec


async def vread(store: Store, *, resource_type: str, id: str, version: str,
                restriction: Restriction | None = None) -> StoredResource:
    """Return one version; 404 if unknown, 410 if that version is a deletion."""
    if not version.isdigit():
        raise not_found(resource_type, f"{id}/_history/{version}")
    rec = await store.read_version(resource_type, id, int(version), restriction=restriction)
    if rec is None:
        raise not_found(resource_type, f"{id}/_history/{version}")
    if rec.deleted:
        raise gone(resource_type, f"{id}/_history/{version}")
    return rec


async def create(store: Store, ctx: RequestContext, *, resource: dict[str, Any],
                 if_none_exist: str | None = None,
                 hooks: Sequence[writes.WriteHook] = ()) -> writes.EntryResult:
    """Create with a server-assigned id (or find the match of ``If-None-Exist``)."""
    entry = writes.WriteEntry("POST", resource["resourceType"], resource=resource,
                              condition=writes.conditional_params(if_none_exist)
                              if if_none_exist is not None else None)
    resource.pop("id", None)  # the server assigns ids on create
    return (await writes.execute(store, ctx, [entry], hooks=hooks))[0]


async def update(store: Store, ctx: RequestContext, *, resource_type: str, id: str | None,
                 resource: dict[str, Any], condition: list[tuple[str, str]] | None = None,
                 if_match: int | None = None,
                 hooks: Sequence[writes.WriteHook] = ()) -> writes.EntryResult:
    """Update by id (creating it when absent) or by a search condition."""
    entry = writes.WriteEntry("PUT", resource_type, id=id, resource=resource,
                              condition=condition, if_match=if_match)
    return (await writes.execute(store, ctx, [entry], hooks=hooks))[0]


async def delete(store: Store, ctx: RequestContext, *, resource_type: str, id: str | None,
                 condition: list[tuple[str, str]] | None = None,
                 if_match: int | None = None,
                 hooks: Sequence[writes.WriteHook] = ()) -> writes.EntryResult:
    """Delete by id or by a condition matching at most one resource."""
    entry = writes.WriteEntry("DELETE", resource_type, id=id, condition=condition,
                              if_match=if_match)
    return (await writes.execute(store, ctx, [entry], hooks=hooks))[0]


async def history(store: Store, *, base: str, resource_type: str | None, id: str | None,
                  params: list[tuple[str, str]], default_count: int, max_count: int,
                  restriction: Restriction | None = None,
                  seen: Callable[[Iterable[StoredResource]], None] | None = None,
                  render: Callable[[StoredResource], bytes] | None = None) -> bytes:
    """Return a history Bundle (newest first) of one resource, a type, or all."""
    values = dict(params)
    since = before = None
    if "_since" in values:
        since = instant_param(values["_since"], "_since")
    if "_at" in values:  # versions current at that time: those written before it
        before = instant_param(values["_at"], "_at")
    count = _count_param(values.get("_count"), default_count, max_count)
    cursor = decode_cursor(values["_cursor"]) if "_cursor" in values else Cursor()
    if cursor is None:
        raise bad_request("The paging cursor is not valid", "_cursor")
    if id is not None and resource_type is not None \
            and await store.read(resource_type, id, restriction=restriction) is None:
        raise not_found(resource_type, id)
    records, total = await store.history(resource_type=resource_type, id=id, since=since,
                                         before=before, limit=count, offset=cursor.offset,
                                         restriction=restriction)
    if seen is not None:
        seen(records)
    path = "/".join(p for p in (resource_type, id, "_history") if p)
    kept = [(k, v) for k, v in params if k in ("_since", "_at")]
    links = [("self", link_url(base, path, kept))]
    if cursor.offset + len(records) < total:
        nxt = encode_cursor(Cursor(offset=cursor.offset + len(records)))
        links.append(("next", link_url(base, path, [*kept, ("_count", str(count)),
                                                    ("_cursor", nxt)])))
    entries = [history_entry(base, r, render(r) if render else None) for r in records]
    return bundle_bytes("history", links=links, entries=entries, total=total)


def instant_param(value: str, name: str) -> str:
    """Parse ``_since``/``_at`` (a FHIR date, dateTime or instant) to store form."""
    text = value.strip().replace(" ", "+")  # an unescaped '+' arrives as a space
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be a date or instant, not {value!r}", name) from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _count_param(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise bad_request(f"_count must be a non-negative integer, not {value!r}", "_count")
    return min(int(value), maximum)
