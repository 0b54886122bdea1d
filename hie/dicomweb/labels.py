"""A study's sensitivity labels follow its ImagingStudy onto its DICOM records.

A hospital may label a study (``meta.security``, e.g. mental health) on its
FHIR ``ImagingStudy``, before or after the instances arrive, and labels are
also derived from codes at ingest. The DICOM records of the study must carry
the same labels, or DICOMweb would show what FHIR hides. :func:`relabel_hook`
is a write hook (``hie.fhir.writes.WriteHook``): whenever an ImagingStudy is
written, in the same transaction, the study's DICOM records get its labels if
theirs differ. Checking costs one read (the study record); relabelling writes
a new version of each record of the study.
"""

from __future__ import annotations

from typing import Any

from hie.dicomweb import records
from hie.dicomweb.records import DICOM_TYPES, STUDY_TYPE, UID_SYSTEM
from hie.store.base import Transaction, WriteRecord


def study_uids(record: WriteRecord) -> list[str]:
    """The Study Instance UIDs an ImagingStudy version names."""
    if record.index is None:
        return []
    return [code.removeprefix("urn:oid:") for param, system, code in record.index.token
            if param == "identifier" and system == UID_SYSTEM and code.startswith("urn:oid:")]


async def relabel_hook(tx: Transaction, ctx: Any, written: list[WriteRecord]) -> None:
    """Give the DICOM records of every ImagingStudy written the study's labels."""
    for rec in written:
        if rec.resource_type != "ImagingStudy" or rec.deleted or rec.index is None \
                or rec.source is None:
            continue
        labels = sorted({(s, c) for p, s, c in rec.index.token if p == "_security"})
        source = records.dicom_source(rec.source)
        for uid in study_uids(rec):
            study = await tx.read(STUDY_TYPE, records.record_id(source, uid))
            if study is None or study.deleted or records.labels_of(study) == labels:
                continue
            await relabel(tx, source=source, study_uid=uid, labels=labels,
                          stamp=rec.last_updated)


async def relabel(tx: Transaction, *, source: str, study_uid: str,
                  labels: list[records.Label], stamp: str) -> int:
    """Write every DICOM record of one hospital's study again with ``labels``;
    return how many were written."""
    puts: list[WriteRecord] = []
    for rtype in sorted(DICOM_TYPES):
        async for current in records.study_records(tx, rtype, study_uid, source):
            patient_ref, dataset = records.unpack(current)
            pending = records.pending_since(current)
            puts.append(WriteRecord(
                rtype, current.id, current.version + 1, stamp,
                records.body(patient_ref, dataset, labels, pending=pending), source=source,
                index=records.index(dataset, patient_ref.split("/", 1)[1], labels,
                                    pending=pending)))
    await tx.put_many(puts)
    return len(puts)
