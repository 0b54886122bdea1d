"""FHIR R4 REST routes under ``/fhir``: thin adapters from HTTP to the services.

Each route parses HTTP (headers, query, body), checks the caller's scopes,
calls a service function with the caller's context and restriction, and turns
the result into a response. Reads take an :class:`~hie.fhir.access.Access`,
which audits and meters them; writes carry the write hooks (audit record,
identity links) into their transaction. Errors are raised as
:class:`~hie.fhir.outcome.FhirError` and rendered as ``OperationOutcome``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hie.auth.dependencies import require
from hie.config import Settings
from hie.context import RequestContext
from hie.dependencies import (
    get_context,
    get_settings_dep,
    get_store,
    get_write_hooks,
)
from hie.fhir import http, searching, service, transaction
from hie.fhir.access import Access, access
from hie.fhir.capability import capability_statement
from hie.fhir.operations import everything, merge
from hie.fhir.outcome import bad_request, information
from hie.fhir.validate import check_type, parse_json, parse_resource
from hie.fhir.writes import EntryResult, WriteHook
from hie.metering.counters import note_usage
from hie.store.base import Store
from schemas.resource_types import RESOURCE_TYPES

router = APIRouter(prefix="/fhir", tags=["FHIR R4"])


def _options(request: Request, note: Access) -> searching.SearchOptions:
    settings = note.settings
    return searching.SearchOptions(base=settings.fhir_base,
                                   default_count=settings.default_page_size,
                                   max_count=settings.max_page_size,
                                   strict=http.prefer_strict(request),
                                   restriction=note.restriction, seen=note.saw,
                                   render=note.render, widen=note.widen)


def _history(note: Access, request: Request, resource_type: str | None,
             id: str | None) -> Awaitable[bytes]:
    settings = note.settings
    return service.history(note.store, base=settings.fhir_base, resource_type=resource_type,
                           id=id, params=_params(request),
                           default_count=settings.default_page_size,
                           max_count=settings.max_page_size, restriction=note.restriction,
                           seen=note.saw, render=note.render)


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _allowed(ctx: RequestContext, resource_type: str, interaction: str) -> None:
    check_type(resource_type)
    require(ctx, resource_type, interaction)


async def _resource_body(request: Request, resource_type: str) -> dict:
    http.check_body_type(request)
    body = await request.body()
    # Validation with the fhir.resources models is CPU-bound: off the event loop.
    return await run_in_threadpool(parse_resource, body, resource_type)


def _written(request: Request, *results: EntryResult) -> None:
    note_usage(request, resources_written=sum(1 for r in results if r.version))


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(settings: Settings = Depends(get_settings_dep)) -> Response:
    return http.fhir_response(capability_statement(settings.fhir_base))


@router.post("", summary="transaction or batch Bundle")
async def bundle(request: Request, note: Access = Depends(access),
                 hooks: Sequence[WriteHook] = Depends(get_write_hooks)) -> Response:
    http.check_body_type(request)
    note.interaction = "transaction"
    body = await request.body()
    out = await transaction.process(
        note.store, note.ctx, body=body, base=note.settings.fhir_base,
        max_entries=note.settings.max_bundle_entries,
        return_resources=http.prefer_return(request) == "representation",
        options=_options(request, note), hooks=hooks,
        authorize=lambda rtype, i: require(note.ctx, rtype, i))
    return http.fhir_response(out)


@router.get("/_history", summary="history of all resources")
async def history_system(request: Request, note: Access = Depends(access)) -> Response:
    note.interaction = "history-system"
    for rtype in RESOURCE_TYPES:
        require(note.ctx, rtype, "s")
    return http.fhir_response(await _history(note, request, None, None))


@router.get("/Patient/{id}/$everything", summary="Patient $everything")
async def patient_everything(id: str, request: Request,
                             note: Access = Depends(access)) -> Response:
    note.interaction, note.resource_type = "$everything", "Patient"
    for rtype in everything.compartment_types():
        require(note.ctx, rtype, "s")
    out = await everything.everything(note.store, patient_id=id, params=_params(request),
                                      options=_options(request, note))
    return http.fhir_response(out)


@router.post("/Patient/$merge", summary="Patient $merge (an HL7 A40 from the hospital)")
async def patient_merge(request: Request,
                        ctx: RequestContext = Depends(get_context)) -> Response:
    require(ctx, "Patient", "u")
    http.check_body_type(request)
    body = parse_json(await request.body())
    out = await merge.patient_merge(request.app.state.store, ctx, body=body)
    return http.fhir_response(out)


@router.get("/{resource_type}", summary="search")
async def search(resource_type: str, request: Request,
                 note: Access = Depends(access)) -> Response:
    note.interaction = "search-type"
    _allowed(note.ctx, resource_type, "s")
    out = await searching.search(note.store, resource_type=resource_type,
                                 params=_params(request), options=_options(request, note))
    return http.fhir_response(out)


@router.post("/{resource_type}/_search", summary="search by POST")
async def search_post(resource_type: str, request: Request,
                      note: Access = Depends(access)) -> Response:
    note.interaction = "search-type"
    _allowed(note.ctx, resource_type, "s")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise bad_request("_search by POST takes application/x-www-form-urlencoded")
    form = await request.form()
    params = _params(request) + [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    out = await searching.search(note.store, resource_type=resource_type, params=params,
                                 options=_options(request, note))
    return http.fhir_response(out)


@router.post("/{resource_type}", summary="create", status_code=201)
async def create(resource_type: str, request: Request, store: Store = Depends(get_store),
                 ctx: RequestContext = Depends(get_context),
                 hooks: Sequence[WriteHook] = Depends(get_write_hooks),
                 settings: Settings = Depends(get_settings_dep)) -> Response:
    _allowed(ctx, resource_type, "c")
    resource = await _resource_body(request, resource_type)
    # Conditional create: the If-None-Exist header, or (as Aidbox and fhirpy's
    # get_or_create do it) the search parameters in the URL.
    condition = request.headers.get("if-none-exist") or request.url.query or None
    result = await service.create(store, ctx, resource=resource, if_none_exist=condition,
                                  hooks=hooks)
    _written(request, result)
    body = None
    if result.body is None and http.prefer_return(request) == "representation":
        body = (await service.read(store, resource_type=resource_type, id=result.id or "")).body
    return http.write_response(result, settings.fhir_base, request, body)


@router.put("/{resource_type}", summary="conditional update")
async def conditional_update(resource_type: str, request: Request,
                             store: Store = Depends(get_store),
                             ctx: RequestContext = Depends(get_context),
                             hooks: Sequence[WriteHook] = Depends(get_write_hooks),
                             settings: Settings = Depends(get_settings_dep)) -> Response:
    _allowed(ctx, resource_type, "u")
    condition = _params(request)
    if not condition:
        raise bad_request("A conditional update needs search parameters in the URL")
    resource = await _resource_body(request, resource_type)
    result = await service.update(store, ctx, resource_type=resource_type, id=None,
                                  resource=resource, condition=condition,
                                  if_match=http.if_match(request), hooks=hooks)
    _written(request, result)
    return http.write_response(result, settings.fhir_base, request)


@router.delete("/{resource_type}", summary="conditional delete")
async def conditional_delete(resource_type: str, request: Request,
                             store: Store = Depends(get_store),
                             ctx: RequestContext = Depends(get_context),
                             hooks: Sequence[WriteHook] = Depends(get_write_hooks)) -> Response:
    _allowed(ctx, resource_type, "d")
    condition = _params(request)
    if not condition:
        raise bad_request("A conditional delete needs search parameters in the URL")
    result = await service.delete(store, ctx, resource_type=resource_type, id=None,
                                  condition=condition, hooks=hooks)
    _written(request, result)
    return _delete_response(result)


@router.get("/{resource_type}/_history", summary="history of a type")
async def history_type(resource_type: str, request: Request,
                       note: Access = Depends(access)) -> Response:
    note.interaction = "history-type"
    _allowed(note.ctx, resource_type, "s")
    return http.fhir_response(await _history(note, request, resource_type, None))


@router.get("/{resource_type}/{id}", summary="read")
async def read(resource_type: str, id: str, note: Access = Depends(access)) -> Response:
    note.interaction = "read"
    _allowed(note.ctx, resource_type, "r")
    note.ids.append(f"{resource_type}/{id}")
    rec = await service.read(note.store, resource_type=resource_type, id=id,
                             restriction=await note.open_record(resource_type, id))
    note.saw([rec])
    return http.resource_response(rec, note.settings.fhir_base, note.render(rec))


@router.put("/{resource_type}/{id}", summary="update (or update-as-create)")
async def update(resource_type: str, id: str, request: Request,
                 store: Store = Depends(get_store), ctx: RequestContext = Depends(get_context),
                 hooks: Sequence[WriteHook] = Depends(get_write_hooks),
                 settings: Settings = Depends(get_settings_dep)) -> Response:
    _allowed(ctx, resource_type, "u")
    resource = await _resource_body(request, resource_type)
    result = await service.update(store, ctx, resource_type=resource_type, id=id,
                                  resource=resource, if_match=http.if_match(request),
                                  hooks=hooks)
    _written(request, result)
    return http.write_response(result, settings.fhir_base, request)


@router.delete("/{resource_type}/{id}", summary="delete")
async def delete(resource_type: str, id: str, request: Request,
                 store: Store = Depends(get_store),
                 ctx: RequestContext = Depends(get_context),
                 hooks: Sequence[WriteHook] = Depends(get_write_hooks)) -> Response:
    _allowed(ctx, resource_type, "d")
    result = await service.delete(store, ctx, resource_type=resource_type, id=id,
                                  if_match=http.if_match(request), hooks=hooks)
    _written(request, result)
    return _delete_response(result)


@router.get("/{resource_type}/{id}/_history", summary="history of a resource")
async def history_instance(resource_type: str, id: str, request: Request,
                           note: Access = Depends(access)) -> Response:
    note.interaction = "history-instance"
    _allowed(note.ctx, resource_type, "r")
    note.ids.append(f"{resource_type}/{id}")
    await note.open_record(resource_type, id)
    return http.fhir_response(await _history(note, request, resource_type, id))


@router.get("/{resource_type}/{id}/_history/{version}", summary="vread")
async def vread(resource_type: str, id: str, version: str,
                note: Access = Depends(access)) -> Response:
    note.interaction = "vread"
    _allowed(note.ctx, resource_type, "r")
    note.ids.append(f"{resource_type}/{id}/_history/{version}")
    rec = await service.vread(note.store, resource_type=resource_type, id=id, version=version,
                              restriction=await note.open_record(resource_type, id))
    note.saw([rec])
    return http.resource_response(rec, note.settings.fhir_base, note.render(rec))


def _delete_response(result: EntryResult) -> Response:
    headers = {"ETag": f'W/"{result.version}"'} if result.version else {}
    message = (f"{result.resource_type}/{result.id} deleted" if result.status == 200
               else "Nothing to delete")
    return http.fhir_response(information(message), 200, headers)
