"""``hie-adapter dicom --listen HOST:PORT --ae-title AET``: a C-STORE SCP that the
hospital's modalities and PACS send to.

Each instance is parsed once (the encoded dataset as received, behind its file
meta, goes to ``imaging.parse.read_instance``), turned into DICOM JSON with
``imaging.jsonmodel.to_dicom_json`` and queued as one ``dicom`` outbox message
(``adapters.sources.dicom_messages``). Pixel data never leaves the hospital: with
``--retrieve-base`` (the WADO-RS base of the PACS that archives the instances)
the JSON names it by BulkDataURI and RetrieveURL, without it bulk data is left out.

The C-STORE answer is ``0x0000`` only after ``outbox.put`` returned, i.e. once
the instance is on disk; an instance that cannot be read gets its failure status
(``0xA900``/``0xC000`` with an Error Comment), an outbox that cannot write gets
``0xA700`` (out of resources), and the sender keeps the instance and retries.

The associations are ``adapters.sources.dicom_acceptor``'s (one thread each, no
Nagle stall, no per-message hand-offs between threads).
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass

from pydicom.uid import AllTransferSyntaxes
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.sources import dicom_messages, dicom_ul
from adapters.sources.dicom_acceptor import AcceptorServer, AcceptorSettings, StoreRequest
from adapters.sources.dicom_messages import OutboxLike
from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.parse import DEFAULT_LIMITS, Limits, read_instance

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
COERCED = 0xB000  # warning: stored, some elements were coerced


@dataclass
class ScpSettings:
    """The SCP's identity and limits."""

    ae_title: str = "HIE_ADAPTER"
    retrieve_base: str | None = None
    source: str = "dicom-scp"
    max_associations: int = 32
    max_pdu_size: int = 256 * 1024
    network_timeout: float = 60.0
    limits: Limits = DEFAULT_LIMITS


Status = tuple[int, str | None]


class StoreHandler:
    """The C-STORE handler: instance in, outbox message out, status back."""

    def __init__(self, outbox: OutboxLike, settings: ScpSettings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.stored = 0
        self.failed = 0

    def __call__(self, request: StoreRequest) -> Status:
        try:
            status = self._store(request)
        except Exception:  # a bug in one instance's mapping must not end the association
            log.exception("C-STORE %s from %s: internal error", request.sop_instance_uid,
                          request.calling_ae)
            status = (CANNOT_UNDERSTAND, "internal error in the adapter")
        if status[0] in (SUCCESS, COERCED):
            self.stored += 1
        else:
            self.failed += 1
        return status

    def _store(self, request: StoreRequest) -> Status:
        calling, request_uid = request.calling_ae, request.sop_instance_uid
        try:
            instance = read_instance(part10(request), limits=self.settings.limits)
        except DicomError as exc:
            log.info("C-STORE %s from %s refused: %s", request_uid, calling, exc.reason)
            return exc.failure, exc.reason
        except Exception as exc:  # pydicom's own errors on a broken stream
            log.info("C-STORE %s from %s unreadable: %s", request_uid, calling, exc)
            return CANNOT_UNDERSTAND, f"data set cannot be read: {exc}"
        for name in ("sop_uid", "study_uid", "series_uid"):
            if not getattr(instance, name, None):
                return DOES_NOT_MATCH_SOP_CLASS, f"{name} missing in the data set"
        if request_uid and instance.sop_uid != request_uid:
            return CANNOT_UNDERSTAND, "SOP Instance UID differs from the request's"
        url = dicom_messages.instance_url(self.settings.retrieve_base, instance.study_uid,
                                          instance.series_uid, instance.sop_uid)
        document = to_dicom_json(instance, instance_url=url)
        refused = dicom_messages.refusal(document)
        if refused:
            return DOES_NOT_MATCH_SOP_CLASS, refused
        try:
            dicom_messages.put(self.outbox, document, sop_instance_uid=instance.sop_uid,
                               source=f"{self.settings.source}:{calling}")
        except Exception:
            log.exception("C-STORE %s from %s: outbox write failed", request_uid, calling)
            return OUT_OF_RESOURCES, "not stored in the adapter's outbox; send again"
        if instance.coerced:
            log.info("C-STORE %s from %s stored with coercion: %s", request_uid, calling,
                     "; ".join(instance.coerced))
            return COERCED, None
        return SUCCESS, None


def part10(request: StoreRequest) -> bytes:
    """The C-STORE data set as received behind the file meta (PS3.10 7.1) naming its
    SOP class, instance and transfer syntax, written here by hand: pydicom building
    and writing a ``FileMetaDataset`` costs more per instance than parsing the header."""
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(request.sop_class_uid)),
        _element(0x0003, b"UI", _uid(request.sop_instance_uid)),
        _element(0x0010, b"UI", _uid(request.transfer_syntax)),
        _element(0x0012, b"UI", _uid(dicom_ul.IMPLEMENTATION_CLASS_UID)),
        _element(0x0013, b"SH", _text(dicom_ul.IMPLEMENTATION_VERSION)),
    ))
    return b"".join((_PREAMBLE, _element(0x0000, b"UL", struct.pack("<I", len(body))), body,
                     request.dataset))


_PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    """A group 0002 element in explicit VR little endian."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid(value: object) -> bytes:
    data = str(value or "").encode("ascii", "replace")
    return data + b"\x00" if len(data) % 2 else data


def _text(value: object) -> bytes:
    data = str(value or "").encode("ascii", "replace")
    return data + b" " if len(data) % 2 else data


def acceptor_settings(settings: ScpSettings) -> AcceptorSettings:
    """Every storage SOP class pynetdicom knows in every transfer syntax pydicom
    knows, and Verification (C-ECHO). Peers must call us by ``ae_title``."""
    return AcceptorSettings(
        ae_title=settings.ae_title,
        abstract_syntaxes=frozenset([c.abstract_syntax for c in AllStoragePresentationContexts]
                                    + [Verification]),
        transfer_syntaxes=frozenset(AllTransferSyntaxes), max_pdu=settings.max_pdu_size,
        max_dataset_bytes=settings.limits.max_bytes,
        max_associations=settings.max_associations,
        network_timeout=settings.network_timeout)


def start(host: str, port: int, *, outbox: OutboxLike,
          settings: ScpSettings | None = None) -> AcceptorServer:
    """Bind and serve in a background thread; ``port=0`` picks a free port (see
    ``server.server_address``). Stop with ``server.shutdown()``."""
    settings = settings or ScpSettings()
    handler = StoreHandler(outbox, settings)
    server = AcceptorServer((host, port), acceptor_settings(settings), handler)
    server.store_handler = handler  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True)
    thread.start()
    log.info("DICOM C-STORE SCP %s on %s:%s", settings.ae_title, *server.server_address[:2])
    return server


def serve(host: str, port: int, *, outbox: OutboxLike,
          settings: ScpSettings | None = None, stop: threading.Event | None = None) -> None:
    """Run the SCP until ``stop`` is set or the process is interrupted
    (what ``hie-adapter dicom --listen`` calls)."""
    server = start(host, port, outbox=outbox, settings=settings)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
