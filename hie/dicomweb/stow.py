"""STOW-RS: storing instances' metadata (pixel data is dropped after extraction).

A request's instances are stored in one store transaction, serialised per study
(``tx.lock`` on each, in study UID order): per study the instance, series and
study records (counts kept up to date) and a mark on the study record that its
FHIR ``ImagingStudy`` is due; the audit records (one per patient) commit with
them. :mod:`hie.dicomweb.studies` then writes the ImagingStudy within a second
(one version for however many requests brought instances meanwhile). Every study
is linked to the hospital's ``Patient`` with the DICOM ``PatientID`` as identifier
(created from the DICOM demographics when the hospital has not registered it yet),
so the master patient index and the consent gate apply to it like to any other
record.

Sending an instance again is idempotent: the same SOP Instance UID from the
same hospital in the same study replaces its metadata, and an identical copy
writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hie.context import RequestContext
from hie.dicomweb import records, studies
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
from hie.store.base import Store, StoredResource, Transaction, WriteRecord
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch
from imaging.levels import level_view

#: PS3.4 / PS3.18 status codes used in the STOW-RS response.
PROCESSING_FAILURE = 0x0110
NOT_MATCHING = 0xA900  # data set does not match SOP class / the study in the URL
COERCED = 0xB000


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
    """One instance to store: its DICOM JSON, and its outcome to report.

    Not the parsed :class:`~imaging.parse.Instance`: a Part 10 one may hold the whole
    file (pixels too) until its data set is made, and a request's instances live until
    its response is sent."""

    dataset: dict[str, Any]
    outcome: Stored


async def store_instances(store: Store, ctx: RequestContext, incoming: Sequence[Incoming], *,
                          patient_id_system: str, hooks: Sequence[writes.WriteHook],
                          study_uid: str | None = None) -> bool:
    """Store every instance that can be stored; record each one's outcome.
    Returns whether anything was written (a study's ImagingStudy is then due)."""
    groups: dict[str, list[Incoming]] = {}
    for item in incoming:
        out = item.outcome
        if study_uid is not None and out.study_uid != study_uid:
            out.failure, out.reason = NOT_MATCHING, \
                "the instance belongs to another study than the request URL names"
            continue
        if not records.first(item.dataset, records.PATIENT_ID):
            out.failure, out.reason = NOT_MATCHING, \
                "PatientID is empty: every study is linked to the hospital's patient"
            continue
        item.dataset[records.AVAILABILITY] = availability(item.dataset)
        groups.setdefault(out.study_uid or "", []).append(item)
    todo: list[tuple[str, list[Incoming], str]] = []
    for uid, group in sorted(groups.items()):  # one lock order for every request
        first = group[0].dataset
        mrn = records.first(first, records.PATIENT_ID)
        for item in group[1:]:
            if records.first(item.dataset, records.PATIENT_ID) != mrn:
                item.outcome.failure, item.outcome.reason = NOT_MATCHING, \
                    "PatientID differs from the other instances of the study"
        group = [i for i in group if i.outcome.failure is None]
        system = _issuer(first) or patient_id_system
        todo.append((uid, group, await _patient(store, ctx, first, system, mrn, hooks)))

    async def write(tx: Transaction) -> bool:
        puts: list[WriteRecord] = []
        studies_written: list[WriteRecord] = []
        for uid, group, patient in todo:
            study_puts = await _study_puts(tx, ctx, uid, group, patient)
            if study_puts:
                puts += study_puts
                studies_written.append(study_puts[-1])
        if not puts:
            return False
        await tx.put_many(puts)
        for hook in hooks:  # the audit records of the write (one per patient), and others
            await hook(tx, ctx, studies_written)
        return True

    # Every study of the request in one transaction: one commit (one fsync) for the
    # request, however its instances mix studies. A PACS forwarding a worklist, or a
    # sender whose files are not in study order, puts instances of dozens of studies
    # in each request; a transaction per study cost each of them a commit and its
    # share of the writer's hand-offs (measured: ~950 study transactions for 2,108
    # instances in 26 requests, the exchange's CPU doubled).
    return await store.transact(write) if todo else False


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


async def _study_puts(tx: Transaction, ctx: RequestContext, uid: str, group: list[Incoming],
                      patient: str) -> list[WriteRecord]:
    """The records one study's new instances make: the instances, their series and
    the study (counts kept up to date, the study marked for its ImagingStudy,
    hie.dicomweb.studies), the study last; none when nothing changes."""
    source = records.dicom_source(ctx.source)
    await tx.lock(records.study_lock(ctx.source, uid))
    stamp = writes.stamp_now()
    patient_ref = f"Patient/{patient}"
    # item, record id, its current version (read once: add() is given it)
    changed: list[tuple[Incoming, str, StoredResource | None]] = []
    for item in group:
        out = item.outcome
        rid = records.record_id(source, uid, out.series_uid or "", out.sop_uid or "")
        current = await tx.read(INSTANCE_TYPE, rid)
        if current is not None and records.same(current, patient_ref, item.dataset):
            continue  # the same instance again: nothing to write
        changed.append((item, rid, current))
    if not changed:
        return []
    study_rid = records.record_id(source, uid)
    study_rec = await tx.read(STUDY_TYPE, study_rid)
    # the study's sensitivity labels go with its DICOM records, so a hidden
    # category hides them on DICOMweb as on FHIR (hie.dicomweb.labels keeps
    # them in step with the ImagingStudy)
    labels = records.labels_of(study_rec) if study_rec is not None \
        else await studies.labels_of_study(tx, ctx.source, uid)
    new = _Records(source, stamp, patient, patient_ref, labels)
    latest: dict[str, dict[str, Any]] = {}  # series uid -> its newest instance's dataset
    added: dict[str, int] = {}  # series uid -> instances new to it
    for item, rid, current in changed:
        sid = item.outcome.series_uid or ""
        new.add(INSTANCE_TYPE, rid, item.dataset, current)
        latest[sid] = item.dataset
        added[sid] = added.get(sid, 0) + (1 if current is None or current.deleted else 0)
    new_series = 0
    for sid, dataset in latest.items():
        series_rid = records.record_id(source, uid, sid)
        before = await tx.read(SERIES_TYPE, series_rid)
        count = _count(_dataset_of(before), SERIES_INSTANCE_COUNT) + added[sid]
        new_series += before is None or before.deleted
        series_set = level_view(dataset, "series")
        series_set[records.AVAILABILITY] = dataset[records.AVAILABILITY]
        series_set[SERIES_INSTANCE_COUNT] = {"vr": "IS", "Value": [count]}
        new.add(SERIES_TYPE, series_rid, series_set, before)
    newest = changed[-1][0].dataset
    study_set = level_view(newest, "study")
    study_set[records.AVAILABILITY] = newest[records.AVAILABILITY]
    study_set.update(_study_counts(study_rec, [i.dataset for i, _, _ in changed],
                                   series=new_series, instances=sum(added.values())))
    new.add(STUDY_TYPE, study_rid, study_set, study_rec,
            pending=records.pending_since(study_rec) or stamp)
    return new.puts


@dataclass(slots=True)
class _Records:
    """The DICOM records one study write puts, each the next version of its id."""

    source: str
    stamp: str
    patient: str
    patient_ref: str
    labels: list[records.Label]
    puts: list[WriteRecord] = field(default_factory=list)

    def add(self, rtype: str, rid: str, dataset: dict[str, Any],
            current: StoredResource | None, *, pending: str | None = None) -> None:
        """Put the next version after ``current``, the record as read in this
        transaction (None: there is none), so that no record is read twice."""
        self.puts.append(WriteRecord(
            rtype, rid, current.version + 1 if current else 1, self.stamp,
            records.body(self.patient_ref, dataset, self.labels, pending=pending),
            source=self.source,
            index=records.index(dataset, self.patient, self.labels, pending=pending)))


def _dataset_of(rec: StoredResource | None) -> dict[str, Any]:
    """A record's data set ({} when there is none)."""
    return records.unpack(rec)[1] if rec is not None and not rec.deleted else {}


def _count(dataset: dict[str, Any], tag: str) -> int:
    values = (dataset.get(tag) or {}).get("Value") or [0]
    return int(values[0])


def _study_counts(before: StoredResource | None, datasets: list[dict[str, Any]], *,
                  series: int, instances: int) -> dict[str, Any]:
    """The study's computed attributes: what they were plus these instances."""
    old = _dataset_of(before)
    modalities = {str(v) for v in (old.get(MODALITIES_IN_STUDY) or {}).get("Value") or []}
    classes = {str(v) for v in (old.get(SOP_CLASSES_IN_STUDY) or {}).get("Value") or []}
    for ds in datasets:
        modalities.update(str(v) for v in (ds.get(records.MODALITY) or {}).get("Value") or [])
        classes.update(str(v) for v in (ds.get(records.SOP_CLASS) or {}).get("Value") or [])
    out: dict[str, Any] = {
        STUDY_SERIES_COUNT: {"vr": "IS", "Value": [_count(old, STUDY_SERIES_COUNT) + series]},
        STUDY_INSTANCE_COUNT: {"vr": "IS", "Value": [_count(old, STUDY_INSTANCE_COUNT)
                                                     + instances]},
        MODALITIES_IN_STUDY: {"vr": "CS", "Value": sorted(modalities)} if modalities
        else {"vr": "CS"},
    }
    if classes:
        out[SOP_CLASSES_IN_STUDY] = {"vr": "UI", "Value": sorted(classes)}
    return out


def availability(dataset: dict[str, Any]) -> dict[str, Any]:
    """InstanceAvailability (PS3.4 C.4.23.1.1) as the exchange can offer it: the
    pixels are ONLINE at the source PACS when the instance names where
    (RetrieveURL there), and UNAVAILABLE when nobody told us (a Part 10 upload:
    the exchange drops the pixel data and keeps no copy)."""
    online = studies.source_base(dataset) is not None
    return {"vr": "CS", "Value": ["ONLINE" if online else "UNAVAILABLE"]}


def _issuer(dataset: dict[str, Any]) -> str | None:
    """IssuerOfPatientID when it names a URI system."""
    issuer = records.first(dataset, "00100021")
    return issuer if issuer.startswith(("urn:", "http://", "https://")) else None


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
    sex = records.first(dataset, "00100040").upper()
    patient["gender"] = {"M": "male", "F": "female", "O": "other"}.get(sex, "unknown")
    birth = records.first(dataset, "00100030")
    if len(birth) == 8 and birth.isdigit() and birth[4:6] != "00" and birth[6:] != "00":
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return patient
