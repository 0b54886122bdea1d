"""STOW-RS request and response bodies.

Requests: ``multipart/related; type="application/dicom"`` (Part 10 instances:
the metadata is extracted, the pixel data dropped), ``application/dicom+json``
(a JSON array of instances' metadata, bulk data as BulkDataURIs at the source)
or ``multipart/related; type="application/dicom+json"`` (the same array as the
first part; bulk data parts are not kept). The response is a DICOM JSON data
set with the Referenced and Failed SOP Sequences (PS3.18 §10.5.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from hie.dicomweb.multipart import MultipartError, media_type, parse
from hie.dicomweb.stow import COERCED, PROCESSING_FAILURE, Incoming, Stored
from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.jsonparse import instance_from_json
from imaging.parse import Instance, read_instance

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"


class UnsupportedMediaType(ValueError):
    """A request body of a type STOW-RS does not take (415)."""


class BadBody(ValueError):
    """A request body that is not what its ``Content-Type`` says (400)."""


def read_body(body: bytes, content_type: str) -> list[Incoming | Stored]:
    """The instances of a STOW-RS request body (CPU-bound: run off the loop).
    An instance that cannot be read is returned as its failed outcome."""
    kind, params = media_type(content_type)
    if kind == "multipart/related":
        part_type = params.get("type", DICOM).lower()
        if part_type not in (DICOM, DICOM_JSON):
            raise UnsupportedMediaType(f"multipart/related parts of type {part_type!r} are not "
                                       f"accepted: send {DICOM} or {DICOM_JSON}")
        try:
            parts = parse(body, params.get("boundary", ""), default_type=part_type)
        except MultipartError as e:
            raise BadBody(str(e)) from None
        if not parts:
            raise BadBody("the multipart body has no parts")
        if part_type == DICOM_JSON:
            return _from_json(bytes(parts[0].data))  # the other parts: bulk data, not kept
        out: list[Incoming | Stored] = []
        for part in parts:
            if media_type(part.content_type)[0] != DICOM:
                out.append(Stored(None, None, failure=0xC000,
                                  reason=f"a part of type {part.content_type[:60]!r} in a "
                                         f"{DICOM} request"))
                continue
            out.append(_from_part10(bytes(part.data)))
        return out
    if kind in (DICOM_JSON, "application/json"):
        return _from_json(body)
    raise UnsupportedMediaType(f"STOW-RS takes multipart/related; type=\"{DICOM}\" or "
                               f"{DICOM_JSON}, not {kind or 'a body without Content-Type'}")


def _from_part10(data: bytes) -> Incoming | Stored:
    try:
        instance = read_instance(data)
    except DicomError as e:
        return Stored(None, None, failure=e.failure, reason=e.reason)
    return _incoming(instance)


def _from_json(data: bytes) -> list[Incoming | Stored]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadBody(f"the body is not JSON: {e}") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc:
        raise BadBody("a DICOM JSON body must be an array of data sets")
    out: list[Incoming | Stored] = []
    for item in doc:
        if not isinstance(item, dict):
            out.append(Stored(None, None, failure=0xC000, reason="an array item is not a data set"))
            continue
        try:
            instance = instance_from_json(item)
        except DicomError as e:
            out.append(Stored(_uid(item, "00080016"), _uid(item, "00080018"),
                              failure=e.failure, reason=e.reason))
            continue
        out.append(_incoming(instance))
    return out


def _incoming(instance: Instance) -> Incoming | Stored:
    stored = Stored(instance.sop_class_uid, instance.sop_uid, instance.study_uid,
                    instance.series_uid, warnings=list(instance.coerced))
    try:
        dataset = to_dicom_json(instance)
    except DicomError as e:
        stored.failure, stored.reason = e.failure, e.reason
        return stored
    except Exception as e:  # noqa: BLE001 — pydicom's encoders raise many kinds
        stored.failure, stored.reason = PROCESSING_FAILURE, f"cannot encode the metadata: {e}"
        return stored
    return Incoming(dataset, stored)


def _uid(item: dict[str, Any], tag: str) -> str | None:
    value = (item.get(tag) or {}).get("Value") if isinstance(item.get(tag), dict) else None
    if isinstance(value, list) and value and isinstance(value[0], str) and len(value[0]) <= 64:
        return value[0]
    return None


def response(outcomes: Sequence[Stored], *, base: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the DICOM JSON response of a STOW-RS request."""
    referenced, failed = [], []
    warned = False
    studies = {o.study_uid for o in outcomes if o.failure is None}
    for o in outcomes:
        item: dict[str, Any] = {"00081150": _ui(o.sop_class), "00081155": _ui(o.sop_uid)}
        if o.failure is not None:
            item["00081197"] = {"vr": "US", "Value": [o.failure]}
            if o.reason:
                item["00000902"] = {"vr": "LO", "Value": [o.reason[:64]]}
            failed.append(item)
            continue
        item["00081190"] = {"vr": "UR", "Value": [
            f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"]}
        if o.warnings:
            warned = True
            item["00081196"] = {"vr": "US", "Value": [COERCED]}
        referenced.append(item)
    out: dict[str, Any] = {}
    if len(studies) == 1:
        out["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))}"]}
    if failed:
        out["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        out["00081199"] = {"vr": "SQ", "Value": referenced}
    if not referenced:
        return 409, out
    return (202 if failed or warned else 200), out


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}
