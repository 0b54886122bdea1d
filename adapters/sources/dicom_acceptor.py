"""A DICOM association acceptor for C-STORE and C-ECHO: one thread per association,
each reading its socket and answering on it, nothing in between.

Why not pynetdicom's server (which the adapter used first): every message there
crosses two threads (the DUL reader, the association's reactor) and two queues, and
the command set is decoded and encoded by pydicom — about a millisecond of CPU per
C-STORE before the instance is even looked at, while a modality waits for each
answer before it sends the next instance. Here a C-STORE costs the socket reads, a
few struct calls for the command set (PS3.7 §9.3.1, always implicit VR little
endian) and the handler. Association negotiation is ``adapters.sources.dicom_ul``.

Accepted sockets get ``TCP_NODELAY`` (a C-STORE response is a small write right
after a read: Nagle's algorithm and the peer's delayed ACK would turn it into a
40 ms stall) and, on Linux, ``TCP_QUICKACK`` after every read: a sender that keeps
Nagle on (DCMTK without ``TCP_NODELAY=1``) holds the data set until its command PDU
is acknowledged, and our delayed ACK would wait 40 ms for data to ride on.

Bounds: a PDU longer than we announced, a command set over 64 KiB, a PDV on a
context we did not accept, or a PDU out of order ends the association with an
A-ABORT; a data set over ``max_dataset_bytes`` is read and dropped, and answered
with ``0xA700``. Silence longer than ``network_timeout`` aborts the association.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.sources import dicom_ul as ul

log = logging.getLogger(__name__)

C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
NO_DATA_SET = 0x0101
SUCCESS, OUT_OF_RESOURCES, UNRECOGNIZED_OPERATION = 0x0000, 0xA700, 0x0211
_MAX_COMMAND = 64 * 1024
_MAX_RQ = 1024 * 1024  # an A-ASSOCIATE-RQ of many contexts is a few tens of KiB


@dataclass
class StoreRequest:
    """One C-STORE, as the handler sees it."""

    calling_ae: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset: bytes  # the data set as received, in ``transfer_syntax``


#: ``handler(request) -> (status, error comment or None)``
StoreHandler = Callable[[StoreRequest], tuple[int, str | None]]


@dataclass
class AcceptorSettings:
    ae_title: str
    abstract_syntaxes: frozenset[str]
    transfer_syntaxes: frozenset[str]
    max_pdu: int = 256 * 1024
    max_dataset_bytes: int = 64 * 1024 * 1024
    max_associations: int = 32
    network_timeout: float = 60.0


class _Closed(Exception):
    """The peer closed the connection."""


class _Reader:
    """Exact reads from a socket, acknowledging each read at once where Linux can."""

    def __init__(self, sock: socket.socket, quickack: bool) -> None:
        self.sock = sock
        self.quickack = quickack
        self.buffer = bytearray()
        #: while set (time.monotonic()), the whole read must end by then: the
        #: A-ASSOCIATE-RQ may not trickle in a byte per timeout (PS3.8's ARTIM timer)
        self.deadline: float | None = None

    def exact(self, n: int) -> bytes:
        buffer = self.buffer
        while len(buffer) < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
            chunk = self.sock.recv(max(n - len(buffer), 256 * 1024))
            if not chunk:
                raise _Closed
            if self.quickack:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            buffer += chunk
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    def pdu(self, limit: int) -> tuple[int, bytes]:
        kind, length = struct.unpack(">BxI", self.exact(6))
        if length > limit:
            raise ul.ProtocolError(f"a PDU of {length} bytes, over the {limit} agreed",
                                   ul.ABORT_INVALID_PARAMETER)
        return kind, self.exact(length)


def decode_command(data: bytes) -> dict[int, bytes]:
    """A command set's group 0000 elements (implicit VR little endian) by element
    number, as raw values."""
    out: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        if at + 8 > len(data):
            raise ul.ProtocolError("a command set element header runs past its end")
        group, element, length = struct.unpack_from("<HHI", data, at)
        end = at + 8 + length
        if group != 0 or end > len(data):
            raise ul.ProtocolError("a command set element outside group 0000 or its length")
        out[element] = data[at + 8:end]
        at = end
    return out


def _us(command: dict[int, bytes], element: int) -> int | None:
    value = command.get(element)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _str(command: dict[int, bytes], element: int) -> str:
    return command.get(element, b"").decode("ascii", "replace").strip(" \x00")


def _element(element: int, value: bytes | int, pad: bytes = b"\x00") -> bytes:
    if isinstance(value, int):
        value = struct.pack("<H", value)
    elif len(value) % 2:
        value += pad
    return struct.pack("<HHI", 0, element, len(value)) + value


def response(command: dict[int, bytes], status: int, comment: str | None = None) -> bytes:
    """The response command set to ``command`` (PS3.7 9.3.1.2, 9.3.5.2): its SOP
    class and instance echoed, no data set."""
    field = (_us(command, 0x0100) or 0) | 0x8000
    parts = [_element(0x0002, command.get(0x0002, b"")),
             _element(0x0100, field),
             _element(0x0120, _us(command, 0x0110) or 0),
             _element(0x0800, NO_DATA_SET),
             _element(0x0900, status)]
    if comment:  # LO: 64 characters of the default repertoire
        parts.append(_element(0x0902, comment[:64].encode("ascii", "replace"), b" "))
    if 0x1000 in command:
        parts.append(_element(0x1000, command[0x1000]))
    body = b"".join(parts)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


class Association:
    """One accepted connection, from A-ASSOCIATE-RQ to release, abort or close."""

    def __init__(self, sock: socket.socket, settings: AcceptorSettings, handler: StoreHandler,
                 admit: Callable[[], bool]) -> None:
        self.sock = sock
        self.settings = settings
        self.handler = handler
        self.admit = admit
        quickack = hasattr(socket, "TCP_QUICKACK") and sock.family in (socket.AF_INET,
                                                                      socket.AF_INET6)
        self.reader = _Reader(sock, quickack)
        self.calling = ""
        self.peer_max_pdu = 0
        self.contexts: dict[int, str] = {}  # accepted context ID → transfer syntax

    def run(self) -> None:
        self.sock.settimeout(self.settings.network_timeout)
        try:
            if self._associate():
                self._serve()
        except ul.ProtocolError as exc:
            log.info("association from %s aborted: %s", self.calling or "?", exc)
            self._send(ul.abort(exc.reason))
        except TimeoutError:
            log.info("association from %s aborted: silent for %.0f s", self.calling or "?",
                     self.settings.network_timeout)
            self._send(ul.abort(ul.ABORT_NOT_SPECIFIED))
        except (_Closed, ConnectionError, OSError):
            pass  # the peer went away; nothing to answer

    def _await_close(self) -> None:
        """After an A-ASSOCIATE-RJ or A-RELEASE-RP it is the requestor that closes the
        connection (PS3.8 Sta13: the acceptor waits, with the ARTIM timer). Closing
        first can reach the peer before it has read the answer: pynetdicom then
        reports an abort instead of the rejection. Waits for the peer to close, for
        the network timeout at most, discarding up to 64 KiB it might still send."""
        deadline = time.monotonic() + self.settings.network_timeout
        left_to_read = 64 * 1024
        with contextlib.suppress(OSError):
            while left_to_read > 0:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return
                self.sock.settimeout(wait)
                chunk = self.sock.recv(left_to_read)
                if not chunk:
                    return
                left_to_read -= len(chunk)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def _associate(self) -> bool:
        self.reader.deadline = time.monotonic() + self.settings.network_timeout
        try:
            kind, body = self.reader.pdu(_MAX_RQ)
        finally:
            self.reader.deadline = None
            self.sock.settimeout(self.settings.network_timeout)
        if kind != ul.ASSOCIATE_RQ:
            raise ul.ProtocolError(f"PDU type {kind:#04x} before an association",
                                   ul.ABORT_UNEXPECTED_PDU)
        rq = ul.parse_associate_rq(body)
        self.calling = rq.calling_ae
        refusal = None
        if not rq.protocol_version & 1:
            refusal = (ul.REJECTED_PERMANENT, ul.SOURCE_ACSE,
                       ul.ACSE_PROTOCOL_VERSION_NOT_SUPPORTED)
        elif rq.application_context != ul.APPLICATION_CONTEXT:
            refusal = (ul.REJECTED_PERMANENT, ul.SOURCE_USER,
                       ul.USER_APPLICATION_CONTEXT_NOT_SUPPORTED)
        elif rq.called_ae != self.settings.ae_title:
            refusal = (ul.REJECTED_PERMANENT, ul.SOURCE_USER, ul.USER_CALLED_AE_NOT_RECOGNIZED)
        elif not self.admit():
            refusal = (ul.REJECTED_TRANSIENT, ul.SOURCE_PRESENTATION,
                       ul.PRESENTATION_LOCAL_LIMIT_EXCEEDED)
        if refusal:
            log.info("association from %s (calling %r) rejected: result %d source %d "
                     "reason %d", self.sock.getpeername()[0], self.calling, *refusal)
            self._send(ul.associate_rj(*refusal))
            self._await_close()
            return False
        results = ul.negotiate(rq, self.settings.abstract_syntaxes,
                               self.settings.transfer_syntaxes)
        self.contexts = {r.id: r.transfer_syntax for r in results if r.result == ul.ACCEPTANCE}
        self.peer_max_pdu = rq.max_pdu
        self.sock.sendall(ul.associate_ac(rq, results, max_pdu=self.settings.max_pdu))
        return True

    def _serve(self) -> None:
        command = bytearray()
        request: dict[int, bytes] | None = None  # a command waiting for its data set
        context = 0
        parts: list[bytes] = []
        size = 0
        while True:
            kind, body = self.reader.pdu(self.settings.max_pdu)
            if kind == ul.RELEASE_RQ:
                self.sock.sendall(ul.release_rp())
                self._await_close()
                return
            if kind == ul.ABORT:
                return
            if kind != ul.P_DATA_TF:
                raise ul.ProtocolError(f"PDU type {kind:#04x} during an association",
                                       ul.ABORT_UNEXPECTED_PDU)
            for context_id, control, fragment in ul.pdvs(body):
                if context_id not in self.contexts:
                    raise ul.ProtocolError(f"a PDV on presentation context {context_id}, "
                                           "which was not accepted")
                if control & 1:  # a command fragment
                    if request is not None:
                        raise ul.ProtocolError("a command before the data set of the last one",
                                               ul.ABORT_UNEXPECTED_PARAMETER)
                    command += fragment
                    if len(command) > _MAX_COMMAND:
                        raise ul.ProtocolError("a command set over 64 KiB")
                    if not control & 2:
                        continue
                    request, context = decode_command(bytes(command)), context_id
                    command.clear()
                    if _us(request, 0x0800) == NO_DATA_SET:
                        self._answer(request, context, None)
                        request = None
                    continue
                if request is None or context_id != context:
                    raise ul.ProtocolError("a data set fragment without its command",
                                           ul.ABORT_UNEXPECTED_PARAMETER)
                size += len(fragment)
                if size <= self.settings.max_dataset_bytes:
                    parts.append(bytes(fragment))
                else:
                    parts.clear()  # read to its end, then refused
                if control & 2:
                    dataset = b"".join(parts) if size <= self.settings.max_dataset_bytes \
                        else None
                    self._answer(request, context, dataset, size)
                    request, parts, size = None, [], 0

    def _answer(self, request: dict[int, bytes], context: int, dataset: bytes | None,
                size: int = 0) -> None:
        field = _us(request, 0x0100)
        if field == C_ECHO_RQ:
            status, comment = SUCCESS, None
        elif field != C_STORE_RQ:
            status, comment = UNRECOGNIZED_OPERATION, "this SCP takes C-STORE and C-ECHO only"
        elif dataset is None:
            status, comment = OUT_OF_RESOURCES, (
                f"data set of {size} bytes, over {self.settings.max_dataset_bytes}"
                if size else "C-STORE without a data set")
        else:
            status, comment = self.handler(StoreRequest(
                self.calling, _str(request, 0x0002), _str(request, 0x1000),
                self.contexts[context], dataset))
        self.sock.sendall(ul.p_data(context, True, response(request, status, comment),
                                    self.peer_max_pdu))


class AcceptorServer(socketserver.ThreadingTCPServer):
    """Accepts associations on ``address``, each in a thread of its own; ``port=0``
    picks a free port (see ``server_address``). ``shutdown()`` stops accepting and
    ends the associations in progress."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], settings: AcceptorSettings,
                 handler: StoreHandler) -> None:
        self.settings = settings
        self.handler = handler
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._admitted = 0
        self._starting = 0  # accepted, its thread not yet in finish_request
        super().__init__(address, socketserver.BaseRequestHandler)

    def process_request(self, request: socket.socket,  # type: ignore[override]
                        client_address: object) -> None:
        """A thread for the connection, unless twice ``max_associations`` are open
        already (admitted or still negotiating): then it is closed at once, so that a
        flood of connections costs neither threads nor memory."""
        with self._lock:
            full = len(self._open) + self._starting >= 2 * self.settings.max_associations
            if not full:
                self._starting += 1
        if full:
            log.warning("connection from %s closed: %d connections open already",
                        client_address, 2 * self.settings.max_associations)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        sock = request
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.add(sock)
            self._starting -= 1
        admitted = False

        def admit() -> bool:
            nonlocal admitted
            with self._lock:
                admitted = self._admitted < self.settings.max_associations
                self._admitted += admitted
            return admitted

        try:
            Association(sock, self.settings, self.handler, admit).run()
        finally:
            with self._lock:
                self._open.discard(sock)
                self._admitted -= admitted

    @property
    def active(self) -> int:
        """Connections being served now."""
        with self._lock:
            return len(self._open)

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
