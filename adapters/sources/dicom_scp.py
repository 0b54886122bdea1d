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

Accepted sockets get ``TCP_NODELAY``: a C-STORE response is a small PDU written
right after the request was read, exactly the pattern that Nagle's algorithm and
the peer's delayed ACK turn into a 40 ms stall per instance. And each association's
loops wait for work instead of napping 1 ms when idle (``dicom_reactor``): a sender
that waits for every response met those naps on every instance.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import threading
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from adapters.sources import dicom_messages, dicom_reactor
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
    dimse_timeout: float = 60.0
    limits: Limits = DEFAULT_LIMITS


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: 64 characters at most
    return status


class StoreHandler:
    """The EVT_C_STORE handler: instance in, outbox message out, status back."""

    def __init__(self, outbox: OutboxLike, settings: ScpSettings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.stored = 0
        self.failed = 0

    def __call__(self, event: Event) -> Dataset | int:
        calling = event.assoc.requestor.ae_title.strip()
        request_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            status = self._store(event, calling, request_uid)
        except Exception:  # a bug in one instance's mapping must not end the association
            log.exception("C-STORE %s from %s: internal error", request_uid, calling)
            status = _status(CANNOT_UNDERSTAND, "internal error in the adapter")
        if isinstance(status, Dataset):
            self.failed += 1
        else:
            self.stored += 1
        return status

    def _store(self, event: Event, calling: str, request_uid: str) -> Dataset | int:
        raw = part10(event)
        try:
            instance = read_instance(raw, limits=self.settings.limits)
        except DicomError as exc:
            log.info("C-STORE %s from %s refused: %s", request_uid, calling, exc.reason)
            return _status(exc.failure, exc.reason)
        except Exception as exc:  # pydicom's own errors on a broken stream
            log.info("C-STORE %s from %s unreadable: %s", request_uid, calling, exc)
            return _status(CANNOT_UNDERSTAND, f"data set cannot be read: {exc}")
        for name in ("sop_uid", "study_uid", "series_uid"):
            if not getattr(instance, name, None):
                return _status(DOES_NOT_MATCH_SOP_CLASS, f"{name} missing in the data set")
        if request_uid and instance.sop_uid != request_uid:
            return _status(CANNOT_UNDERSTAND, "SOP Instance UID differs from the request's")
        url = dicom_messages.instance_url(self.settings.retrieve_base, instance.study_uid,
                                          instance.series_uid, instance.sop_uid)
        document = to_dicom_json(instance, instance_url=url)
        refused = dicom_messages.refusal(document)
        if refused:
            return _status(DOES_NOT_MATCH_SOP_CLASS, refused)
        try:
            dicom_messages.put(self.outbox, document, sop_instance_uid=instance.sop_uid,
                               source=f"{self.settings.source}:{calling}")
        except Exception:
            log.exception("C-STORE %s from %s: outbox write failed", request_uid, calling)
            return _status(OUT_OF_RESOURCES, "not stored in the adapter's outbox; send again")
        if instance.coerced:
            log.info("C-STORE %s from %s stored with coercion: %s", request_uid, calling,
                     "; ".join(instance.coerced))
            return COERCED
        return SUCCESS


def part10(event: Event) -> bytes:
    """The C-STORE data set as received, behind the file meta pynetdicom would write
    (``event.encoded_dataset()``, byte for byte), encoded here: pydicom building and
    writing a ``FileMetaDataset`` costs more per instance than parsing the header."""
    request = event.request
    stream = getattr(request, "DataSet", None)
    if not isinstance(stream, io.BytesIO):  # pynetdicom set to spool data sets to files
        return event.encoded_dataset(include_meta=True)
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(request.AffectedSOPClassUID)),
        _element(0x0003, b"UI", _uid(request.AffectedSOPInstanceUID)),
        _element(0x0010, b"UI", _uid(event.context.transfer_syntax)),
        _element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
        _element(0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)),
    ))
    return b"".join((_PREAMBLE, _element(0x0000, b"UL", struct.pack("<I", len(body))), body,
                     stream.getvalue()))


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


class _QuickAckSocket(socket.socket):
    """A socket that acknowledges what it read at once (``TCP_QUICKACK``, Linux).

    A sender with Nagle's algorithm on (DCMTK's default unless ``TCP_NODELAY=1`` is
    in its environment) holds its second small write — the data set after the
    C-STORE command — until the first is acknowledged, and our delayed ACK waits
    40 ms for data to ride on: a stall per instance that no setting on our side
    but this one removes. The kernel leaves quick-ack mode on its own, hence the
    option again after every read (setting it also flushes a pending ACK)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


class NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with ``TCP_NODELAY`` (and, on Linux,
    ``TCP_QUICKACK``) on every accepted socket."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        if client.family not in (socket.AF_INET, socket.AF_INET6):
            return client, address
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_QUICKACK") and not self.ssl_context:
            timeout = client.gettimeout()
            client = _QuickAckSocket(client.family, client.type, client.proto,
                                     fileno=client.detach())
            client.settimeout(timeout)
        return client, address


def _prompt(event: Event) -> None:
    """EVT_CONN_OPEN: the association's loops wait for work instead of napping 1 ms
    (``adapters.sources.dicom_reactor``)."""
    if not dicom_reactor.make_prompt(event.assoc):
        log.warning("pynetdicom's reactors are not the expected ones: C-STOREs will "
                    "wait for its 1 ms naps")


def make_ae(settings: ScpSettings) -> AE:
    """An AE accepting every storage SOP class in every transfer syntax pydicom
    knows, and Verification (C-ECHO). Peers must call it by ``ae_title``."""
    ae = AE(ae_title=settings.ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.network_timeout = settings.network_timeout
    ae.dimse_timeout = settings.dimse_timeout
    return ae


def start(host: str, port: int, *, outbox: OutboxLike,
          settings: ScpSettings | None = None) -> NoDelayServer:
    """Bind and serve in a background thread; ``port=0`` picks a free port (see
    ``server.server_address``). Stop with ``server.shutdown()``."""
    settings = settings or ScpSettings()
    ae = make_ae(settings)
    handler = StoreHandler(outbox, settings)
    server = ae.make_server((host, port), evt_handlers=[(evt.EVT_C_STORE, handler),
                                                       (evt.EVT_CONN_OPEN, _prompt)],
                            server_class=NoDelayServer)
    server.store_handler = handler  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True)
    thread.start()
    ae._servers.append(server)  # so that ae.shutdown() stops it too
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
