"""DICOMweb routes under ``/dicomweb``: STOW-RS, QIDO-RS and WADO-RS metadata.

Thin: parse HTTP, check scopes, ask the consent gate for the patients the
request names, call :mod:`hie.dicomweb.stow` / :mod:`hie.dicomweb.search`,
render. Reads take the same :class:`~hie.fhir.access.Access` note as FHIR
reads, so they are audited and metered the same way and a record the caller
may not see answers exactly like one that does not exist.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hie.auth.dependencies import require
from hie.dependencies import get_write_hooks
from hie.dicomweb import bodies, records, search, stow
from hie.dicomweb.records import PATIENT_ID, SERIES_UID, SOP_UID, STUDY_UID
from hie.fhir.access import Access, access
from hie.fhir.writes import WriteHook
from hie.metering.counters import note_usage
from hie.store.base import StoredResource
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch
from imaging.qido import QidoError, QidoQuery, parse_query, project, warning

router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"])

DICOM_JSON = "application/dicom+json"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def problem(status: int, detail: str) -> Response:
    """A JSON problem body (RFC 9457) for a refused DICOMweb request."""
    return Response(orjson.dumps({"status": status, "detail": detail}), status_code=status,
                    media_type="application/problem+json")


def _dicom_json(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=DICOM_JSON,
                    headers=headers)


def _bad_uid(*uids: str | None) -> Response | None:
    for uid in uids:
        if uid is not None and (len(uid) > 64 or not _UID.match(uid)):
            return problem(400, f"{uid[:70]!r} is not a DICOM UID")
    return None


def _acceptable(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if not accept:
        return True
    kinds = {p.split(";")[0].strip().lower() for p in accept.split(",")}
    return bool(kinds & {DICOM_JSON, "application/json", "application/*", "*/*"})


# ---- STOW-RS ---------------------------------------------------------------------

@router.post("/studies", summary="STOW-RS: store instances")
async def stow_rs(request: Request, note: Access = Depends(access),
                  hooks: Sequence[WriteHook] = Depends(get_write_hooks)) -> Response:
    return await _stow(request, note, hooks, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def stow_rs_study(study: str, request: Request, note: Access = Depends(access),
                        hooks: Sequence[WriteHook] = Depends(get_write_hooks)) -> Response:
    return _bad_uid(study) or await _stow(request, note, hooks, study)


async def _stow(request: Request, note: Access, hooks: Sequence[WriteHook],
                study: str | None) -> Response:
    note.interaction, note.resource_type = "create", "ImagingStudy"
    require(note.ctx, "ImagingStudy", "c")
    require(note.ctx, "Patient", "c")
    body = await request.body()
    try:
        parsed = await run_in_threadpool(bodies.read_body, body,
                                         request.headers.get("content-type", ""))
    except bodies.UnsupportedMediaType as e:
        return problem(415, str(e))
    except bodies.BadBody as e:
        return problem(400, str(e))
    incoming = [p for p in parsed if isinstance(p, stow.Incoming)]
    wrote = await stow.store_instances(
        note.store, note.ctx, incoming, hooks=hooks, study_uid=study,
        patient_id_system=note.settings.dicom_patient_id_system)
    if wrote:  # the studies' ImagingStudy resources are due
        request.app.state.study_writer.notify()
    outcomes = [p.outcome if isinstance(p, stow.Incoming) else p for p in parsed]
    note_usage(request, resources_written=sum(1 for o in outcomes if o.failure is None))
    status, doc = bodies.response(outcomes, base=_base(note))
    return _dicom_json(doc, status)


def _base(note: Access) -> str:
    return note.settings.base_url.rstrip("/") + "/dicomweb"


# ---- QIDO-RS ---------------------------------------------------------------------

@router.get("/studies", summary="QIDO-RS: search studies")
async def qido_studies(request: Request, note: Access = Depends(access)) -> Response:
    return await _qido(request, note, "study")


@router.get("/series", summary="QIDO-RS: search series")
async def qido_series(request: Request, note: Access = Depends(access)) -> Response:
    return await _qido(request, note, "series")


@router.get("/instances", summary="QIDO-RS: search instances")
async def qido_instances(request: Request, note: Access = Depends(access)) -> Response:
    return await _qido(request, note, "instance")


@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
async def qido_study_series(study: str, request: Request,
                            note: Access = Depends(access)) -> Response:
    return _bad_uid(study) or await _qido(request, note, "series", study=study)


@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
async def qido_study_instances(study: str, request: Request,
                               note: Access = Depends(access)) -> Response:
    return _bad_uid(study) or await _qido(request, note, "instance", study=study)


@router.get("/studies/{study}/series/{series}/instances",
            summary="QIDO-RS: search a series' instances")
async def qido_series_instances(study: str, series: str, request: Request,
                                note: Access = Depends(access)) -> Response:
    return _bad_uid(study, series) or await _qido(request, note, "instance", study=study,
                                                  series=series)


async def _qido(request: Request, note: Access, level: str, *, study: str | None = None,
                series: str | None = None) -> Response:
    note.interaction, note.resource_type = "search-type", "ImagingStudy"
    require(note.ctx, "ImagingStudy", "s")
    if not _acceptable(request):
        return problem(406, f"QIDO-RS answers {DICOM_JSON}")
    settings = note.settings
    try:
        query = parse_query(request.query_params.multi_items(), level,  # type: ignore[arg-type]
                            study_uid=study, series_uid=series, max_limit=settings.max_page_size)
    except QidoError as e:
        return problem(400, str(e))
    restriction, same_patient, post = await _open(note, query)
    compiled = search.compile_query(query, restriction=restriction, same_patient=same_patient)
    limit = query.limit if query.limit is not None else settings.max_page_size
    found = await search.search(note.store, query, compiled, post=post, limit=limit)
    note.saw(found.records)
    base = _base(note)
    parents = search.Parents(note.store, restriction)
    out = [await _result(rec, note, query, base, parents) for rec in found.records]
    headers: dict[str, str] = {}
    texts = [t for t in (warning(query),) if t]
    if found.more and query.limit is None:
        texts.append(f"The results were limited to {limit}: use limit and offset to page")
    if texts:
        headers["Warning"] = ", ".join(f'299 {request.url.hostname or "-"} "{t}"'
                                       for t in texts)
    return _dicom_json(out, headers=headers)


async def _open(note: Access, query: QidoQuery
                ) -> tuple[Restriction, dict[str, tuple[str, ...]], QidoQuery]:
    """Ask the consent gate for the patients the query names: the owners of
    the UIDs it asks for, and — for a doctor — the person the caller's own
    hospital registered with the PatientID it asks for."""
    uids = [(m.tag, v) for m in query.matches if m.tag in (STUDY_UID, SERIES_UID, SOP_UID)
            for v in ((m.value,) if m.kind == "single" and m.value else m.values)]
    patients = await search.patients_of_uids(note.store, uids) if uids else []
    same: dict[str, tuple[str, ...]] = {}
    gate = note.gate
    if gate is not None and gate.may_cross:
        for m in query.matches:
            if m.tag == PATIENT_ID and m.kind == "single" and m.value:
                own = await _own_patients(note, m.value)
                if own:
                    same[m.value] = tuple(own)
                    patients += own
    restriction = await note.widen(patients) if patients else note.restriction
    if same and gate is not None:
        for value, own in list(same.items()):
            members = {pid for person in gate.members.values() if set(person) & set(own)
                       for pid in person}
            same[value] = tuple(sorted(members | set(own)))
        # PatientID is matched in the store: literally, or as the same person
        post = _without_patient_id(query, same)
    else:
        post = query
    return restriction, same, post


def _without_patient_id(query: QidoQuery, same: dict[str, tuple[str, ...]]) -> QidoQuery:
    return dataclasses.replace(query, matches=tuple(
        m for m in query.matches
        if not (m.tag == PATIENT_ID and m.kind == "single" and m.value in same)))


async def _own_patients(note: Access, mrn: str) -> list[str]:
    query = SearchQuery("Patient", where=(AnyOf((TokenMatch("identifier", mrn),)),),
                        restriction=Restriction(sources=frozenset({note.ctx.source})))
    page = await note.store.search(query, limit=5)
    return [r.id for r in page.resources]


async def _result(rec: StoredResource, note: Access, query: QidoQuery, base: str,
                  parents: search.Parents) -> dict:
    _, dataset = records.unpack(rec)
    study = query.level != "study" and query.study_uid is None
    series = query.level == "instance" and query.series_uid is None
    if study or series:
        dataset = {**dataset, **await parents.computed(rec, dataset, study=study,
                                                        series=series)}
    shown = project(_rendered(rec, note, dataset), query)
    study = records.first(dataset, STUDY_UID)
    url = f"{base}/studies/{study}"
    if query.level != "study":
        url += f"/series/{records.first(dataset, SERIES_UID)}"
    if query.level == "instance":
        url += f"/instances/{records.first(dataset, SOP_UID)}"
    shown[records.RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    return shown


def _rendered(rec: StoredResource, note: Access, dataset: dict) -> dict:
    own = records.org_source(rec.source) == note.ctx.source
    masks = note.gate.masks if note.gate is not None else frozenset()
    return records.render(dataset, own=own, masks=masks)


# ---- WADO-RS metadata ----------------------------------------------------------

@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
async def study_metadata(study: str, request: Request,
                         note: Access = Depends(access)) -> Response:
    return _bad_uid(study) or await _metadata(request, note, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
async def series_metadata(study: str, series: str, request: Request,
                          note: Access = Depends(access)) -> Response:
    return _bad_uid(study, series) or await _metadata(request, note, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: an instance's metadata")
async def instance_metadata(study: str, series: str, instance: str, request: Request,
                            note: Access = Depends(access)) -> Response:
    return _bad_uid(study, series, instance) or await _metadata(request, note, study, series,
                                                                instance)


async def _metadata(request: Request, note: Access, study: str, series: str | None = None,
                    sop: str | None = None) -> Response:
    note.interaction, note.resource_type = "read", "ImagingStudy"
    require(note.ctx, "ImagingStudy", "r")
    if not _acceptable(request):
        return problem(406, f"WADO-RS metadata is served as {DICOM_JSON}")
    patients = await search.patients_of_uids(note.store, [(STUDY_UID, study)])
    restriction = await note.widen(patients) if patients else note.restriction
    found = await search.instances(note.store, study=study, series=series, sop=sop,
                                   restriction=restriction)
    if not found:
        return problem(404, "no such study, series or instance")
    note.saw(found)
    return _dicom_json([_rendered(rec, note, records.unpack(rec)[1]) for rec in found])
