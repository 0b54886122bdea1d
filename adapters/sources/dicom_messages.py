"""The ``dicom`` outbox message, shared by the C-STORE SCP and the PACS poller.

One message is one instance: its DICOM JSON dataset (``imaging.jsonmodel``),
metadata only — bulk data (pixels, waveforms, …) stays at the hospital and is
named by BulkDataURIs and a RetrieveURL at ``instance_url``, the WADO-RS address
where the hospital keeps the instance; without one, bulk data is just omitted.

``patient_key`` is ``dicom:{SOPInstanceUID}``: instances need no order between
them (the exchange serialises writes per study), and two copies of one instance
stay in order, so a corrected instance never overtakes the one it corrects. A
re-sent instance is harmless: the exchange replaces the same SOP Instance UID
from the same hospital, and an identical copy changes nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

KIND = "dicom"
PATIENT_ID = "00100020"


class OutboxLike(Protocol):
    """What the DICOM sources need of ``adapters.outbox.Outbox``."""

    def put(self, *, patient_key: str, payload: bytes, kind: str = "bundle",
            source: str) -> Any: ...


def patient_key(sop_instance_uid: str) -> str:
    """The outbox key of an instance."""
    return f"{KIND}:{sop_instance_uid}"


def instance_url(base: str | None, study: str, series: str, instance: str) -> str | None:
    """``{base}/studies/{study}/series/{series}/instances/{instance}``, or None without
    a WADO-RS base."""
    if not base:
        return None
    return f"{base.rstrip('/')}/studies/{study}/series/{series}/instances/{instance}"


def refusal(dataset_json: dict[str, Any]) -> str | None:
    """Why the exchange would refuse this instance whatever happens, or None.

    Sources check it before queueing so that the sender hears about it (a C-STORE
    failure, a poll failure) while the instance can still be fixed at its source,
    instead of it becoming a dead letter the hospital cannot edit."""
    patient_id = (dataset_json.get(PATIENT_ID) or {}).get("Value") or [""]
    if not str(patient_id[0]).strip():
        return "PatientID is empty; the exchange links studies to patients"
    return None


def payload(dataset_json: dict[str, Any]) -> bytes:
    """The message body: one DICOM JSON dataset, compact UTF-8 JSON."""
    return orjson.dumps(dataset_json)


def put(outbox: OutboxLike, dataset_json: dict[str, Any], *, sop_instance_uid: str,
        source: str) -> Any:
    """Queue one instance; returns once it is on disk (the outbox's promise)."""
    return outbox.put(patient_key=patient_key(sop_instance_uid), payload=payload(dataset_json),
                      kind=KIND, source=source)


def put_all(outbox: Any, instances: list[tuple[str, dict[str, Any]]], *, source: str,
            remember: dict[str, str]) -> None:
    """Queue ``(sop_instance_uid, dataset_json)`` pairs and ``remember`` memos, in one
    commit when the outbox offers ``put_many`` (one fsync for a whole study), else
    one by one with the memos last."""
    put_many = getattr(outbox, "put_many", None)
    if put_many is not None:
        from adapters.outbox import NewMessage

        put_many([NewMessage(patient_key(uid), payload(doc), source, KIND)
                  for uid, doc in instances], remember=remember)
        return
    for uid, doc in instances:
        put(outbox, doc, sop_instance_uid=uid, source=source)
    for key, value in remember.items():
        outbox.remember(key, value)
