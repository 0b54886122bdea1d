"""``transaction`` and ``batch`` Bundles (``POST /fhir``).

A transaction is all or nothing: every entry is validated first, then all
writes run in one store transaction (:func:`hie.fhir.writes.execute`), with
``urn:uuid:`` references rewritten and conditional references resolved. Reads
(``GET`` entries) run after the writes, as FHIR orders them. A batch runs each
entry on its own and reports each outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.concurrency import run_in_threadpool

from hie.context import RequestContext
from hie.fhir import searching, service, writes
from hie.fhir.bundles import etag
from hie.fhir.outcome import FhirError, Issue, bad_request, operation_outcome
from hie.fhir.validate import parse_json, validation_issues
from hie.store.base import Store
from schemas.resource_types import RESOURCE_TYPES

_METHODS = ("GET", "POST", "PUT", "DELETE")


def status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _parse_url(url: str, base: str,
               where: str) -> tuple[str, str | None, list[tuple[str, str]] | None]:
    """Split ``Type``, ``Type/id`` or ``Type?query`` (relative or under our base)."""
    if url.startswith(base + "/"):
        url = url[len(base) + 1:]
    elif "://" in url.split("?", 1)[0]:  # a search value may well be a URL
        raise bad_request(f"Entry URL {url} is not on this server", f"{where}.request.url")
    parts = urlsplit(url)
    segs = [s for s in parts.path.split("/") if s]
    if not segs or segs[0] not in RESOURCE_TYPES or len(segs) > 2:
        raise bad_request(f"Entry URL {url!r} does not name a supported resource type",
                          f"{where}.request.url")
    cond = writes.conditional_params(parts.query) if parts.query else None
    return segs[0], segs[1] if len(segs) == 2 else None, cond


def _prepare(body: bytes, base: str, max_entries: int) -> tuple[str, list[Any]]:
    """Parse and validate a Bundle; return its type and its entries as
    ``WriteEntry`` (writes) or ``(method, url)`` (reads). CPU-bound: runs in a
    worker thread."""
    bundle = parse_json(body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the FHIR base takes a transaction or batch Bundle",
                          "resourceType")
    btype = bundle.get("type")
    if btype not in ("transaction", "batch"):
        raise bad_request(f"Bundle.type must be transaction or batch, not {btype!r}", "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    if len(raw_entries) > max_entries:
        raise FhirError(413, Issue("too-costly",
                                   f"A Bundle may hold at most {max_entries} entries"))
    issues: list[Issue] = []
    entries: list[Any] = []
    for i, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{i}]"
        try:
            entries.append(_prepare_entry(raw, base, where, issues))
        except FhirError as exc:
            issues += exc.issues
            entries.append(None)
    if issues and btype == "transaction":
        raise FhirError(400, issues)
    if btype == "batch":  # keep per-entry errors to report them in place
        entries = [e if e is not None else _entry_issues(issues, i) for i, e in enumerate(entries)]
    return btype, entries


def _entry_issues(issues: list[Issue], i: int) -> FhirError:
    prefix = f"Bundle.entry[{i}]"
    mine = [x for x in issues if any(e.startswith(prefix + ".") or e == prefix
                                     for e in x.expression)]
    return FhirError(400, mine or [Issue("invalid", "Invalid entry", [prefix])])


def _prepare_entry(raw: Any, base: str, where: str, issues: list[Issue]) -> Any:
    if not isinstance(raw, dict):
        raise bad_request("An entry must be an object", where)
    req = raw.get("request")
    if not isinstance(req, dict) or req.get("method") not in _METHODS \
            or not isinstance(req.get("url"), str):
        raise bad_request("Each entry needs request.method (GET, POST, PUT, DELETE) and "
                          "request.url", f"{where}.request")
    method, url = req["method"], req["url"]
    if method == "GET":
        return ("GET", url)
    rtype, id_, cond = _parse_url(url, base, where)
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        found = validation_issues(resource, rtype, f"{where}.resource")
        if found:
            issues += found
            return None
    if_match = _if_match(req.get("ifMatch"), where)
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    if method == "POST":
        if id_ is not None or cond:
            raise bad_request("POST entries take the type alone as URL", f"{where}.request.url")
        none_exist = req.get("ifNoneExist")
        resource.pop("id", None)
        return writes.WriteEntry("POST", rtype, resource=resource, full_url=full_url, where=where,
                                 condition=writes.conditional_params(none_exist)
                                 if isinstance(none_exist, str) else None)
    if id_ is None and cond is None:
        raise bad_request(f"{method} entries need Type/id or Type?search", f"{where}.request.url")
    return writes.WriteEntry(method, rtype, id=id_, condition=cond, resource=resource,
                             if_match=if_match, full_url=full_url, where=where)


def _if_match(value: Any, where: str) -> int | None:
    if value is None:
        return None
    text = str(value).removeprefix("W/").strip('"')
    if not text.isdigit():
        raise bad_request(f"ifMatch must be an ETag like W/\"3\", not {value!r}",
                          f"{where}.request.ifMatch")
    return int(text)


async def process(store: Store, ctx: RequestContext, *, body: bytes, base: str,
                  max_entries: int, return_resources: bool,
                  options: searching.SearchOptions,
                  hooks: Sequence[writes.WriteHook] = (),
                  authorize: Callable[[str, str], None] | None = None) -> bytes:
    """Process a transaction or batch Bundle; return the response Bundle."""
    btype, entries = await run_in_threadpool(_prepare, body, base, max_entries)
    if authorize is not None:
        _authorize(btype, entries, base, authorize)
    out: list[dict[str, Any] | None] = [None] * len(entries)
    if btype == "transaction":
        write_idx = [i for i, e in enumerate(entries) if isinstance(e, writes.WriteEntry)]
        results = await writes.execute(store, ctx, [entries[i] for i in write_idx],
                                       hooks=hooks)
        for i, res in zip(write_idx, results, strict=True):
            out[i] = _write_response(res, base, return_resources)
    else:
        for i, e in enumerate(entries):
            if isinstance(e, FhirError):
                out[i] = _error_response(e)
            elif isinstance(e, writes.WriteEntry):
                try:
                    res = (await writes.execute(store, ctx, [e], hooks=hooks))[0]
                    out[i] = _write_response(res, base, return_resources)
                except FhirError as exc:
                    out[i] = _error_response(exc)
    for i, e in enumerate(entries):
        if isinstance(e, tuple):
            try:
                out[i] = await _read_entry(store, e[1], base, options)
            except FhirError as exc:
                if btype == "transaction":
                    raise
                out[i] = _error_response(exc)
    response = {"resourceType": "Bundle", "type": f"{btype}-response", "entry": out}
    return orjson.dumps(response)


_INTERACTION = {"POST": "c", "PUT": "u", "DELETE": "d"}


def _authorize(btype: str, entries: list[Any], base: str,
               authorize: Callable[[str, str], None]) -> None:
    """Check every entry against the caller's scopes (``authorize(type,
    interaction)`` raises a 403): a transaction fails as a whole, a batch
    answers the refused entries in place."""
    for i, e in enumerate(entries):
        try:
            if isinstance(e, writes.WriteEntry):
                authorize(e.resource_type, _INTERACTION[e.method])
            elif isinstance(e, tuple):
                rtype, id_, _ = _parse_url(e[1], base, f"Bundle.entry[{i}]")
                authorize(rtype, "r" if id_ is not None else "s")
        except FhirError as exc:
            if btype == "transaction":
                raise
            entries[i] = exc


def _write_response(res: writes.EntryResult, base: str, with_resource: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status_line(res.status)}
    entry: dict[str, Any] = {}
    if res.id and res.version:
        response["location"] = f"{res.resource_type}/{res.id}/_history/{res.version}"
        response["etag"] = etag(res.version)
        entry["fullUrl"] = f"{base}/{res.resource_type}/{res.id}"
    if res.last_updated:
        response["lastModified"] = res.last_updated + "Z"
    if with_resource and res.body:
        entry["resource"] = orjson.Fragment(res.body)
    entry["response"] = response
    return entry


def _error_response(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": status_line(exc.status),
                         "outcome": operation_outcome(exc.issues)}}


async def _read_entry(store: Store, url: str, base: str,
                      options: searching.SearchOptions) -> dict[str, Any]:
    rtype, id_, cond = _parse_url(url, base, "Bundle.entry")
    if id_ is not None:
        rec = await service.read(store, resource_type=rtype, id=id_,
                                 restriction=options.restriction)
        if options.seen is not None:
            options.seen([rec])
        return {"fullUrl": f"{base}/{rtype}/{id_}",
                "resource": orjson.Fragment(options.body(rec)),
                "response": {"status": "200 OK", "etag": etag(rec.version),
                             "lastModified": rec.last_updated + "Z"}}
    result = await searching.search(store, resource_type=rtype, params=cond or [], options=options)
    return {"resource": orjson.Fragment(result), "response": {"status": "200 OK"}}
