"""STOW-RS: storing instances' metadata (pixel data is dropped after extraction).

Instances are stored per study, each study in one store transaction that
serialises on the study (``tx.lock``): the instance, series and study records,
and the study's FHIR ``ImagingStudy`` (merged with what the hospital sent
before, written through the FHIR write engine so that it gets its Provenance,
audit record and search indexes). Every study is linked to the hospital's
``Patient`` with the DICOM ``PatientID`` as identifier (created from the DICOM
demographics when the hospital has not registered it yet), so the master
patient index and the consent gate apply to it like to any other record.

Sending an instance again is idempotent: the same SOP Instance UID from the
same hospital in the same study replaces its metadata, and an identical copy
writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hie.context import RequestContext
from hie.dicomweb import records
from hie.dicomweb.records import (
    INSTANCE_TYPE,
    MODALITIES_IN_STUDY,
    SERIES_INSTANCE_COUNT,
    SERIES_TYPE,
    SOP_CLASSES_IN_STUDY,
    STUDY_INSTANCE_COUNT,
    STUDY_SERIES_COUNT,
    STUDY_TYPE,
)
from hie.fhir import writes
from hie.store.base import Store, Transaction, WriteRecord
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch
from imaging.fhirmap import imaging_study
from imaging.levels import level_view
from imaging.parse import Instance

#: PS3.4 / PS3.18 status codes used in the STOW-RS response.
PROCESSING_FAILURE = 0x0110
NOT_MATCHING = 0xA900  # data set does not match SOP class / the study in the URL
COERCED = 0xB000
UID_SYSTEM = "urn:dicom:uid"


@dataclass(slots=True)
class Stored:
    """What happened to one instance of a STOW-RS request."""

    sop_class: str | None
    sop_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: int | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Incoming:
    """One instance to store: its DICOM JSON and how it was received."""

    instance: Instance
    dataset: dict[str, Any]
    outcome: Stored


async def store_instances(store: Store, ctx: RequestContext, incoming: Sequence[Incoming], *,
                          patient_id_system: str, hooks: Sequence[writes.WriteHook],
                          study_uid: str | None = None) -> None:
    """Store every instance that can be stored; record each one's outcome."""
    studies: dict[str, list[Incoming]] = {}
    for item in incoming:
        out = item.outcome
        if study_uid is not None and out.study_uid != study_uid:
            out.failure, out.reason = NOT_MATCHING, \
                "the instance belongs to another study than the request URL names"
            continue
        if not _text(item.dataset, records.PATIENT_ID):
            out.failure, out.reason = NOT_MATCHING, \
                "PatientID is empty: every study is linked to the hospital's patient"
            continue
        item.dataset[records.AVAILABILITY] = availability(item.dataset)
        studies.setdefault(out.study_uid or "", []).append(item)
    for uid, group in studies.items():
        first = group[0].dataset
        mrn = _text(first, records.PATIENT_ID)
        for item in group[1:]:
            if _text(item.dataset, records.PATIENT_ID) != mrn:
                item.outcome.failure, item.outcome.reason = NOT_MATCHING, \
                    "PatientID differs from the other instances of the study"
        group = [i for i in group if i.outcome.failure is None]
        system = _issuer(first) or patient_id_system
        patient = await _patient(store, ctx, first, system, mrn, hooks)
        await store.transact(lambda tx, uid=uid, group=group, patient=patient:
                             _store_study(tx, ctx, uid, group, patient, hooks))


async def _patient(store: Store, ctx: RequestContext, dataset: dict[str, Any], system: str,
                   mrn: str, hooks: Sequence[writes.WriteHook]) -> str:
    """The id of the hospital's Patient with this PatientID (created when missing)."""
    own = Restriction(sources=frozenset({ctx.source}))
    page = await store.search(SearchQuery("Patient", where=(AnyOf((TokenMatch(
        "identifier", mrn, system),)),), restriction=own), limit=1)
    if page.resources:  # the usual case: no transaction needed to find it
        return page.resources[0].id
    entry = writes.WriteEntry("POST", "Patient", resource=patient_resource(dataset, system, mrn),
                              condition=[("identifier", f"{system}|{mrn}")])
    result = (await writes.execute(store, ctx, [entry], hooks=hooks))[0]
    assert result.id is not None
    return result.id


async def _store_study(tx: Transaction, ctx: RequestContext, uid: str, group: list[Incoming],
                       patient: str, hooks: Sequence[writes.WriteHook]) -> None:
    source = records.dicom_source(ctx.source)
    await tx.lock(f"dicom-study:{ctx.source}:{uid}")
    stamp = writes.stamp_now()
    patient_ref = f"Patient/{patient}"
    changed: list[tuple[Incoming, str]] = []
    for item in group:
        out = item.outcome
        rid = records.record_id(source, uid, out.series_uid or "", out.sop_uid or "")
        current = await tx.read(INSTANCE_TYPE, rid)
        if current is not None and records.same(current, patient_ref, item.dataset):
            continue  # the same instance again: nothing to write
        changed.append((item, rid))
    if not changed:
        return
    study = await _merged_study(tx, ctx, uid, [i for i, _ in changed], patient_ref)
    entry = writes.WriteEntry("PUT", "ImagingStudy", resource=study,
                              condition=[("identifier", f"{UID_SYSTEM}|urn:oid:{uid}")])
    # the hooks run first: they relabel the study's stored DICOM records when the
    # ImagingStudy's labels changed (hie.dicomweb.labels)
    [written] = await writes.execute_in(tx, ctx, [entry], stamp=stamp, hooks=hooks)
    # the study's sensitivity labels go with its DICOM records, so a hidden
    # category hides them on DICOMweb as on FHIR
    labels = _labels(written.body)
    new = _Records(tx, source, stamp, patient, patient_ref, labels)
    latest: dict[str, dict[str, Any]] = {}  # series uid -> its newest instance's dataset
    for item, rid in changed:
        await new.add(INSTANCE_TYPE, rid, item.dataset)
        latest[item.outcome.series_uid or ""] = item.dataset
    newest = changed[-1][0].dataset
    study_set = level_view(newest, "study")
    study_set[records.AVAILABILITY] = newest[records.AVAILABILITY]
    study_set.update(_computed_study(study))
    await new.add(STUDY_TYPE, records.record_id(source, uid), study_set)
    series_counts = {s["uid"]: s.get("numberOfInstances", 0) for s in study.get("series", [])}
    for series_uid, dataset in latest.items():
        series_set = level_view(dataset, "series")
        series_set[records.AVAILABILITY] = dataset[records.AVAILABILITY]
        series_set[SERIES_INSTANCE_COUNT] = {"vr": "IS",
                                             "Value": [series_counts.get(series_uid, 0)]}
        await new.add(SERIES_TYPE, records.record_id(source, uid, series_uid), series_set)
    await tx.put_many(new.puts)


def _labels(body: bytes | None) -> list[records.Label]:
    if not body:
        return []
    security = (orjson.loads(body).get("meta") or {}).get("security") or []
    return [(s.get("system", ""), s["code"]) for s in security if s.get("code")]


@dataclass(slots=True)
class _Records:
    """The DICOM records one study write puts, each the next version of its id."""

    tx: Transaction
    source: str
    stamp: str
    patient: str
    patient_ref: str
    labels: list[records.Label]
    puts: list[WriteRecord] = field(default_factory=list)

    async def add(self, rtype: str, rid: str, dataset: dict[str, Any]) -> None:
        current = await self.tx.read(rtype, rid)
        self.puts.append(WriteRecord(
            rtype, rid, current.version + 1 if current else 1, self.stamp,
            records.body(self.patient_ref, dataset, self.labels), source=self.source,
            index=records.index(dataset, self.patient, self.labels)))


async def _merged_study(tx: Transaction, ctx: RequestContext, uid: str,
                        changed: list[Incoming], patient_ref: str) -> dict[str, Any]:
    """The study's ImagingStudy: what the hospital sent before with these
    instances added (or replaced)."""
    by_series: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for item in changed:
        sid = item.outcome.series_uid or ""
        if sid not in by_series:
            by_series[sid] = (level_view(item.dataset, "series"), [])
        by_series[sid][1].append(level_view(item.dataset, "instance"))
    endpoint = _source_base(changed[-1].dataset)
    fresh = imaging_study(level_view(changed[-1].dataset, "study"), list(by_series.values()),
                          subject=patient_ref, endpoint=endpoint)
    query = SearchQuery("ImagingStudy", where=(AnyOf((TokenMatch(
        "identifier", f"urn:oid:{uid}", UID_SYSTEM),)),),
        restriction=Restriction(sources=frozenset({ctx.source})))
    keys = await tx.search_keys(query, 1)
    if not keys:
        return fresh
    current = await tx.read(*keys[0])
    if current is None or current.deleted:
        return fresh
    return merge_studies(orjson.loads(current.body), fresh)


def merge_studies(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (built from the instances just received) merged into ``old``:
    series and instances matched by UID, the newest copy winning; counts and
    modalities recomputed."""
    series: dict[str, dict[str, Any]] = {s["uid"]: s for s in old.get("series", [])}
    for s in new.get("series", []):
        before = series.get(s["uid"])
        if before is None:
            series[s["uid"]] = s
            continue
        instances = {i["uid"]: i for i in before.get("instance", [])}
        instances.update({i["uid"]: i for i in s.get("instance", [])})
        series[s["uid"]] = {**before, **s, "instance": list(instances.values()),
                            "numberOfInstances": len(instances)}
    out = {k: v for k, v in new.items() if k not in ("id", "meta")}
    security = (old.get("meta") or {}).get("security")
    if security:  # labels the hospital set on the study stay
        out["meta"] = {"security": security}
    out["series"] = list(series.values())
    out["numberOfSeries"] = len(series)
    out["numberOfInstances"] = sum(len(s.get("instance", [])) for s in series.values())
    modalities: dict[tuple[str, str], dict[str, Any]] = {}
    for s in series.values():
        m = s.get("modality")
        if m:
            modalities[(m.get("system", ""), m.get("code", ""))] = m
    if modalities:
        out["modality"] = list(modalities.values())
    for key in ("contained", "endpoint"):
        if key not in out and key in old:
            out[key] = old[key]
    return out


def _computed_study(study: dict[str, Any]) -> dict[str, Any]:
    series = study.get("series", [])
    modalities = sorted({s["modality"]["code"] for s in series if s.get("modality")})
    classes = sorted({i["sopClass"]["code"].removeprefix("urn:oid:")
                      for s in series for i in s.get("instance", []) if i.get("sopClass")})
    out: dict[str, Any] = {
        STUDY_SERIES_COUNT: {"vr": "IS", "Value": [len(series)]},
        STUDY_INSTANCE_COUNT: {"vr": "IS", "Value": [study.get("numberOfInstances", 0)]},
    }
    out[MODALITIES_IN_STUDY] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    if classes:
        out[SOP_CLASSES_IN_STUDY] = {"vr": "UI", "Value": classes}
    return out


def availability(dataset: dict[str, Any]) -> dict[str, Any]:
    """InstanceAvailability (PS3.4 C.4.23.1.1) as the exchange can offer it: the
    pixels are ONLINE at the source PACS when the instance names where
    (RetrieveURL there), and UNAVAILABLE when nobody told us (a Part 10 upload:
    the exchange drops the pixel data and keeps no copy)."""
    online = _source_base(dataset) is not None
    return {"vr": "CS", "Value": ["ONLINE" if online else "UNAVAILABLE"]}


def _text(dataset: dict[str, Any], tag: str) -> str:
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]).strip() if values and values[0] is not None else ""


def _issuer(dataset: dict[str, Any]) -> str | None:
    """IssuerOfPatientID when it names a URI system."""
    issuer = _text(dataset, "00100021")
    return issuer if issuer.startswith(("urn:", "http://", "https://")) else None


def _source_base(dataset: dict[str, Any]) -> str | None:
    """The source PACS's WADO-RS base, from the instance's RetrieveURL there."""
    url = _text(dataset, records.RETRIEVE_URL)
    base, sep, _ = url.partition("/studies/")
    return base if sep and base.startswith(("http://", "https://")) else None


def patient_resource(dataset: dict[str, Any], system: str, mrn: str) -> dict[str, Any]:
    """A FHIR Patient from a DICOM instance's patient module."""
    patient: dict[str, Any] = {"resourceType": "Patient",
                               "identifier": [{"system": system, "value": mrn}]}
    names = []
    for value in (dataset.get(records.PATIENT_NAME) or {}).get("Value") or []:
        for group in ("Alphabetic", "Ideographic"):
            text = value.get(group) if isinstance(value, dict) else None
            if not text:
                continue
            family, _, rest = text.partition("^")
            given = [g for g in rest.split("^")[:2] if g.strip()]
            name: dict[str, Any] = {"text": " ".join([*given, family]).strip()
                                    if group == "Alphabetic" else family + "".join(given)}
            if family.strip():
                name["family"] = family.strip()
            if given:
                name["given"] = [g.strip() for g in given]
            names.append(name)
    if names:
        patient["name"] = names
    sex = _text(dataset, "00100040").upper()
    patient["gender"] = {"M": "male", "F": "female", "O": "other"}.get(sex, "unknown")
    birth = _text(dataset, "00100030")
    if len(birth) == 8 and birth.isdigit() and birth[4:6] != "00" and birth[6:] != "00":
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return patient
