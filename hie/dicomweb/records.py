"""DICOM metadata in the document store: one record per study, series and
instance of each hospital, with its QIDO search indexes.

Each record's body is ``{"patient": "Patient/<id>", "dataset": <DICOM JSON>}``:
the dataset holds the attributes of its level and the levels above it (so a
series-level query on ``PatientID`` is answered from series records alone);
study and series records also carry the computed attributes
(``ModalitiesInStudy``, ``NumberOfStudyRelatedInstances``, …). The patient is
the hospital's ``Patient`` resource the study belongs to; it is indexed as the
reference parameter ``patient``, which is what the consent gate's grants
follow, so a DICOM read is restricted exactly like a FHIR read.

DICOM records live in their own namespace of sources: an organisation's
records carry ``<its meta.source>#dicom``. No FHIR read's restriction names
such a source, so ``/fhir`` (system ``_history`` included) can never return
them; DICOMweb reads translate their restriction with :func:`dicom_view`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import orjson

from hie.identity.resident_id import mask_text
from hie.store.base import StoredResource, Transaction
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch

Level = Literal["study", "series", "instance"]

STUDY_TYPE = "DicomStudy"
SERIES_TYPE = "DicomSeries"
INSTANCE_TYPE = "DicomInstance"
TYPE_OF: dict[str, str] = {"study": STUDY_TYPE, "series": SERIES_TYPE, "instance": INSTANCE_TYPE}
DICOM_TYPES: frozenset[str] = frozenset(TYPE_OF.values())
SOURCE_SUFFIX = "#dicom"
#: The reference parameter naming the record's Patient (a patient-compartment
#: parameter, so the consent gate's grants apply to it).
PATIENT_PARAM = "patient"

STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
PATIENT_ID, PATIENT_NAME = "00100020", "00100010"
MODALITY, MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY = "00080060", "00080061", "00080062"
STUDY_SERIES_COUNT, STUDY_INSTANCE_COUNT, SERIES_INSTANCE_COUNT = \
    "00201206", "00201208", "00201209"
RETRIEVE_URL = "00081190"
#: The identifier system of a study's ImagingStudy (value ``urn:oid:<Study UID>``).
UID_SYSTEM = "urn:dicom:uid"
AVAILABILITY = "00080056"  # InstanceAvailability

#: Attributes indexed for QIDO, per index kind; each record indexes those
#: present in its dataset. Everything else a query names is matched on the
#: candidates the indexes return (imaging.qido.matches).
TOKEN_TAGS = (STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS, MODALITY, MODALITIES_IN_STUDY,
              PATIENT_ID, "00080050", "00200010")  # … AccessionNumber, StudyID
STRING_TAGS = (PATIENT_NAME, "00080090")  # PatientName, ReferringPhysicianName
DATE_TAGS = ("00080020",)  # StudyDate
#: Attributes that may hold a resident ID number (masked for other hospitals).
_ID_TAGS = (PATIENT_ID, "00101000")
_ID_SEQUENCE = "00101002"  # OtherPatientIDsSequence
#: Attributes removed when the patient's consent masks contact details.
_CONTACT_TAGS = {"address": ("00101040",), "telecom": ("00102154", "00102155")}


def dicom_source(source: str) -> str:
    """The source of DICOM records written by the organisation of ``source``."""
    return source + SOURCE_SUFFIX


def org_source(source: str | None) -> str | None:
    """The organisation source a DICOM record's source belongs to."""
    if source is not None and source.endswith(SOURCE_SUFFIX):
        return source[: -len(SOURCE_SUFFIX)]
    return source


def dicom_view(restriction: Restriction) -> Restriction:
    """The restriction of a DICOMweb read: the same organisations and grants,
    in the DICOM records' namespace of sources."""
    sources = None if restriction.sources is None else \
        frozenset(dicom_source(s) for s in restriction.sources)
    grants = tuple(dataclasses.replace(g, sources=frozenset(dicom_source(s) for s in g.sources))
                   for g in restriction.grants)
    return Restriction(sources=sources, hidden_labels=restriction.hidden_labels, grants=grants)


def record_id(source: str, *uids: str) -> str:
    """The store id of one hospital's record of a study, series or instance (a
    digest: UIDs never become ids or paths as they are)."""
    return hashlib.sha256("|".join((source, *uids)).encode()).hexdigest()[:40]


Label = tuple[str, str]  # (system, code) of a sensitivity label


#: Index token of a study record whose ImagingStudy is due (hie.dicomweb.studies).
PENDING_PARAM = "_imaging"
PENDING = "pending"


def body(patient: str, dataset: dict[str, Any], labels: Iterable[Label] = (), *,
         pending: str | None = None) -> bytes:
    """A record's stored body: its patient, its dataset, the sensitivity labels
    of its study (kept in the body too, so that a relabelling can tell which
    records are behind) and, on a study record, whether its ImagingStudy is due."""
    doc: dict[str, Any] = {"patient": patient, "dataset": dataset}
    labels = sorted(set(labels))
    if labels:
        doc["labels"] = [list(label) for label in labels]
    if pending:
        doc["pending"] = pending  # since when (store timestamp)
    return orjson.dumps(doc)


def pending_since(rec: StoredResource | None) -> str | None:
    """Since when a study record's ImagingStudy is due (None: it is not)."""
    if rec is None or rec.deleted or not rec.body:
        return None
    return orjson.loads(rec.body).get("pending") or None


def is_pending(rec: StoredResource) -> bool:
    """Whether a study record's ImagingStudy is due."""
    return pending_since(rec) is not None


def study_lock(org_source: str, study_uid: str) -> str:
    """The store lock that serialises the writes of one hospital's study."""
    return f"dicom-study:{org_source}:{study_uid}"


def labels_of(rec: StoredResource) -> list[Label]:
    """The sensitivity labels a record was written with."""
    return [(s, c) for s, c in orjson.loads(rec.body).get("labels", [])] if rec.body else []


def same(rec: StoredResource, patient: str, dataset: dict[str, Any]) -> bool:
    """Whether a stored record already holds this patient and dataset."""
    if rec.deleted or not rec.body:
        return False
    doc = orjson.loads(rec.body)
    return doc["patient"] == patient and doc["dataset"] == dataset


def unpack(rec: StoredResource) -> tuple[str, dict[str, Any]]:
    """A record's patient reference and dataset."""
    doc = orjson.loads(rec.body)
    return doc["patient"], doc["dataset"]


def patient_of(rec: StoredResource) -> list[str]:
    """The ``Patient/…`` reference of a DICOM record (for the audit record)."""
    if not rec.body or rec.deleted:
        return []
    return [orjson.loads(rec.body)["patient"]]


#: Most records of one type one study is read with.
MAX_STUDY_RECORDS = 1_000_000


async def study_records(tx: Transaction, rtype: str, study_uid: str,
                        source: str) -> AsyncIterator[StoredResource]:
    """The current records of type ``rtype`` of one hospital's study (``source``:
    the hospital's DICOM source), as the transaction sees them, read one at a
    time (a big study's records are not all held at once)."""
    query = SearchQuery(rtype, where=(AnyOf((TokenMatch(STUDY_UID, study_uid),)),),
                        restriction=Restriction(sources=frozenset({source})))
    for key in await tx.search_keys(query, MAX_STUDY_RECORDS):
        rec = await tx.read(*key)
        if rec is not None and not rec.deleted:
            yield rec


def first(dataset: dict[str, Any], tag: str) -> str:
    """The first value of an attribute as text ("" when absent or empty)."""
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]).strip() if values and values[0] is not None else ""


def _strings(ds: dict[str, Any], tag: str) -> list[str]:
    element = ds.get(tag) or {}
    out: list[str] = []
    for v in element.get("Value") or ():
        if isinstance(v, dict):  # PN
            out += [str(x) for x in v.values() if x]
        elif v is not None:
            out.append(str(v))
    return out


def _normalise(text: str) -> str:
    return " ".join(text.replace("^", " ").split()).casefold()


def day_range(value: str) -> tuple[str, str] | None:
    """A DA value (``YYYYMMDD``) as the store's closed date range of that day."""
    if len(value) != 8 or not value.isdigit():
        return None
    day = f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return day + "T00:00:00.000000", day + "T23:59:59.999999"


def index(dataset: dict[str, Any], patient_id: str, labels: Iterable[Label] = (), *,
          pending: str | None = None) -> IndexEntries:
    """The QIDO index entries of one record (and its labels as ``_security``)."""
    out = IndexEntries()
    out.token += [("_security", system, code) for system, code in sorted(set(labels))]
    if pending:
        out.token.append((PENDING_PARAM, "", PENDING))
    for tag in TOKEN_TAGS:
        out.token += [(tag, "", v) for v in _strings(dataset, tag)]
    for tag in STRING_TAGS:
        out.string += [(tag, _normalise(v), v) for v in _strings(dataset, tag)]
    for tag in DATE_TAGS:
        for v in _strings(dataset, tag):
            r = day_range(v)
            if r is not None:
                out.date.append((tag, *r))
    out.reference.append((PATIENT_PARAM, "Patient", patient_id))
    return out


def render(dataset: dict[str, Any], *, own: bool, masks: frozenset[str]) -> dict[str, Any]:
    """A dataset as a caller sees it: another hospital's resident ID numbers
    masked, and contact details removed when the patient's consent says so."""
    if own:
        return dataset
    out = dict(dataset)
    for tag in _ID_TAGS:
        if tag in out:
            out[tag] = _masked(out[tag])
    seq = out.get(_ID_SEQUENCE)
    if seq and seq.get("Value"):
        out[_ID_SEQUENCE] = {**seq, "Value": [
            {**item, PATIENT_ID: _masked(item[PATIENT_ID])} if PATIENT_ID in item else item
            for item in seq["Value"] if isinstance(item, dict)]}
    for mask, tags in _CONTACT_TAGS.items():
        if mask in masks:
            for tag in tags:
                out.pop(tag, None)
    return out


def _masked(element: dict[str, Any]) -> dict[str, Any]:
    values = element.get("Value")
    if not values:
        return element
    return {**element, "Value": [mask_text(v) if isinstance(v, str) else v for v in values]}
