"""DICOM test material and DCMTK's ``storescu`` for the adapter's DICOM tests.

The files are pydicom's own test files (installed with pydicom, no download):
those that are storage instances pydicom reads, with the UIDs a storage SCP needs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pydicom
from peers.orthanc import NODELAY_ENV, STORESCU, association_profile
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import _STORAGE_CLASSES

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_STORAGE = frozenset(_STORAGE_CLASSES.values())


@cache
def storage_files() -> tuple[Path, ...]:
    """pydicom's test files that are storage instances: a storage SOP class, valid
    SOP Instance, Study and Series UIDs and a transfer syntax in the file meta."""
    out = []
    for path in sorted(TEST_FILES.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        uids = [ds.get(k) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        if (ds.get("SOPClassUID") in _STORAGE and "TransferSyntaxUID" in ds.file_meta
                and all(isinstance(u, str) and len(u) <= 64 and _UID.fullmatch(u)
                        for u in uids)):
            out.append(path)
    return tuple(out)


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def patient_id(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID") or "").strip()


def study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def copies(source: Path, folder: Path, n: int, *, study: str | None = None,
           date: str | None = None) -> list[Path]:
    """``n`` copies of ``source`` with new SOP Instance UIDs in one new series of
    ``study`` (default: a new study) dated ``date`` (default: today)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = study or generate_uid()
    ds.StudyDate = date or f"{dt.date.today():%Y%m%d}"
    ds.SeriesInstanceUID = generate_uid()
    out = []
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@dataclass
class Sent:
    """What ``storescu`` reported per file."""

    stored: list[Path]
    failed: list[Path]
    output: str
    returncode: int


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+)\)")


def storescu(files: list[Path], *, port: int, called_aet: str, workdir: Path,
             timeout: float = 300.0) -> Sent:
    """Send ``files`` in one association (one presentation context per SOP class and
    transfer syntax of the files, no conversion) and sort them by the status
    ``storescu -v`` reports for each: Success or Warning → stored."""
    workdir.mkdir(parents=True, exist_ok=True)
    links = workdir / "send"
    links.mkdir(exist_ok=True)
    by_link = {}
    for i, f in enumerate(files):
        link = links / f"{i:05d}.dcm"
        link.symlink_to(f.resolve())
        by_link[str(link)] = f
    profile = association_profile(files, workdir / "storescu.cfg")
    cmd = [STORESCU, "-v", "-nh", "-aet", "HIESCU", "-aec", called_aet, "-xf",
           str(workdir / "storescu.cfg"), profile, "+sd", "127.0.0.1", str(port), str(links)]
    done = subprocess.run(cmd, env=os.environ | NODELAY_ENV, capture_output=True, text=True,
                          timeout=timeout)
    output = done.stdout + done.stderr
    stored, failed, current = [], [], None
    for line in output.splitlines():
        if m := _SENDING.search(line):
            current = by_link.get(m.group(1).strip())
        elif (m := _RESPONSE.search(line)) and current is not None:
            ok = m.group(1).startswith(("Success", "Warning"))
            (stored if ok else failed).append(current)
            current = None
    return Sent(stored, failed, output, done.returncode)


def pynetdicom_rq(contexts: list[tuple[str, list[str]]], *, max_pdu: int = 16384,
                  called: str = "HIE") -> bytes:
    """An A-ASSOCIATE-RQ PDU as pynetdicom encodes it (without the 6-byte header)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "STORESCU"
    primitive.called_ae_title = called
    items = []
    for i, (abstract, syntaxes) in enumerate(contexts):
        context = build_context(abstract, syntaxes)
        context.context_id = 2 * i + 1
        items.append(context)
    primitive.presentation_context_definition_list = items
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.2.0.2"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_202"
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 4
    window.maximum_number_operations_performed = 4
    primitive.user_information = [length, uid, version, window]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()[6:]


def associate(ae: AE, port: int, ae_title: str) -> Association:
    """``ae.associate`` to 127.0.0.1:``port``, tried again when pynetdicom itself lost
    a race: an A-ASSOCIATE-RJ that arrives before pynetdicom's requestor thread has
    looked at the connection is reported as an abort (its DUL thread closes the
    connection on the rejection; the requestor then sees it closed and aborts) —
    seen about once in 30 tries on a loaded machine. An association the acceptor
    really aborts is aborted every time, and still fails the caller's assertion."""
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    for _ in range(4):
        if not (assoc.is_aborted and not assoc.is_established and not assoc.is_rejected):
            break
        assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    return assoc
