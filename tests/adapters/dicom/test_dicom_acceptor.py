"""The association acceptor with real peers (pynetdicom's SCU, DCMTK's ``storescu``)
and with raw sockets sending what no good peer sends."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import scpkit
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    Verification,
)

from adapters.sources import dicom_ul as ul
from adapters.sources.dicom_acceptor import (
    AcceptorServer,
    AcceptorSettings,
    StoreRequest,
    decode_command,
)
from adapters.sources.dicom_scp import ScpSettings, acceptor_settings

AET = "HIE_TEST_SCP"
CT_FILE = scpkit.TEST_FILES / "CT_small.dcm"


def serve(seen: list[StoreRequest], **changes: object) -> AcceptorServer:
    settings = acceptor_settings(ScpSettings(ae_title=AET))
    for key, value in changes.items():
        setattr(settings, key, value)

    def handler(request: StoreRequest) -> tuple[int, str | None]:
        seen.append(request)
        return 0, None

    server = AcceptorServer(("127.0.0.1", 0), settings, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def seen() -> list[StoreRequest]:
    return []


@pytest.fixture
def acceptor(seen: list[StoreRequest]) -> Iterator[AcceptorServer]:
    server = serve(seen)
    try:
        yield server
    finally:
        server.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def scu(*contexts: str) -> AE:
    ae = AE(ae_title="TESTSCU")
    for c in contexts:
        ae.add_requested_context(c)
    return ae


def test_contexts_are_accepted_or_rejected_with_their_reason(acceptor: AcceptorServer):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.3.4.5", "1.2.840.10008.1.2.1"])
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification, ["1.2.3.4.5"])
    assoc = ae.associate("127.0.0.1", acceptor.server_address[1], ae_title=AET)
    assert assoc.is_established
    try:
        accepted = {c.abstract_syntax: c.transfer_syntax[0] for c in assoc.accepted_contexts}
        assert accepted == {CTImageStorage: "1.2.840.10008.1.2.1"}
        rejected = {c.abstract_syntax: c.result for c in assoc.rejected_contexts}
        assert rejected == {PatientRootQueryRetrieveInformationModelFind: 3, Verification: 4}
    finally:
        assoc.release()
    assert assoc.is_released


def test_a_data_set_in_many_fragments_arrives_whole(seen: list[StoreRequest]):
    """We announce 4 KiB PDUs: pynetdicom cuts a 39 KB instance into ten of them."""
    server = serve(seen, max_pdu=4096)
    try:
        assoc = scu(CTImageStorage).associate("127.0.0.1", server.server_address[1],
                                              ae_title=AET)
        assert assoc.is_established
        ds = pydicom.dcmread(CT_FILE)
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
    finally:
        server.shutdown()
    [request] = seen
    assert (request.calling_ae, request.sop_class_uid, request.sop_instance_uid) == (
        "TESTSCU", CTImageStorage, ds.SOPInstanceUID)
    assert len(request.dataset) > 30_000
    back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(request.dataset), force=True)
    assert back.PixelData == ds.PixelData and back.PatientName == ds.PatientName


def test_an_oversized_data_set_is_refused_and_the_association_goes_on(
        seen: list[StoreRequest]):
    server = serve(seen, max_dataset_bytes=20_000)
    try:
        assoc = scu(CTImageStorage, Verification).associate(
            "127.0.0.1", server.server_address[1], ae_title=AET)
        status = assoc.send_c_store(pydicom.dcmread(CT_FILE))  # ~39 KB
        assert status.Status == 0xA700 and "over 20000" in status.ErrorComment
        assert assoc.send_c_echo().Status == 0  # still associated
        assoc.release()
    finally:
        server.shutdown()
    assert seen == []


def test_the_called_ae_title_and_the_association_limit(seen: list[StoreRequest]):
    server = serve(seen, max_associations=1)
    try:
        port = server.server_address[1]
        wrong = scpkit.associate(scu(Verification), port, "SOMEONE_ELSE")
        assert wrong.is_rejected
        first = scu(Verification).associate("127.0.0.1", port, ae_title=AET)
        assert first.is_established
        second = scpkit.associate(scu(Verification), port, AET)
        assert second.is_rejected  # transient: local limit exceeded
        first.release()
        assert wait_for(lambda: server.active == 0)
        third = scu(Verification).associate("127.0.0.1", port, ae_title=AET)
        assert third.is_established and third.send_c_echo().Status == 0
        third.release()
    finally:
        server.shutdown()


# ---- raw sockets: what a broken or hostile peer sends ------------------------------

def _connect(server: AcceptorServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    return sock


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return -1, b""
        head += chunk
    kind, length = struct.unpack(">BxI", head)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return kind, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def _associate(sock: socket.socket, contexts: list[tuple[str, list[str]]]) -> None:
    body = scpkit.pynetdicom_rq(contexts, called=AET)
    sock.sendall(struct.pack(">BxI", ul.ASSOCIATE_RQ, len(body)) + body)
    kind, _ = _read_pdu(sock)
    assert kind == ul.ASSOCIATE_AC


def _command(field: int, message_id: int, sop_class: str) -> bytes:
    uid = sop_class.encode() + b"\x00" * (len(sop_class) % 2)
    elements = (struct.pack("<HHI", 0, 0x0002, len(uid)) + uid
                + struct.pack("<HHIH", 0, 0x0100, 2, field)
                + struct.pack("<HHIH", 0, 0x0110, 2, message_id)
                + struct.pack("<HHIH", 0, 0x0800, 2, 0x0101))
    return struct.pack("<HHII", 0, 0, 4, len(elements)) + elements


@pytest.mark.parametrize("garbage", [
    b"\x09\x00\x00\x00\x00\x02ab",                       # an unknown PDU type first
    struct.pack(">BxI", ul.P_DATA_TF, 8) + b"\x00" * 8,  # data before an association
    struct.pack(">BxI", ul.ASSOCIATE_RQ, 2_000_000),     # a request too long to read
    struct.pack(">BxI", ul.ASSOCIATE_RQ, 10) + b"x" * 10,  # a request too short
])
def test_garbage_before_an_association_is_aborted(acceptor: AcceptorServer, garbage: bytes):
    with _connect(acceptor) as sock:
        sock.sendall(garbage)
        kind, body = _read_pdu(sock)
        assert kind == ul.ABORT and body[2] == ul.ABORT_PROVIDER
        assert _closed(sock)
    assert wait_for(lambda: acceptor.active == 0)


def test_data_on_a_context_never_accepted_is_aborted_and_nothing_stored(
        acceptor: AcceptorServer, seen: list[StoreRequest]):
    with _connect(acceptor) as sock:
        _associate(sock, [(CTImageStorage, ["1.2.840.10008.1.2.1"])])  # context 1
        sock.sendall(ul.p_data(3, True, _command(0x0001, 1, CTImageStorage), 0))
        kind, body = _read_pdu(sock)
        assert kind == ul.ABORT and body[3] == ul.ABORT_INVALID_PARAMETER
    assert seen == []


def test_an_operation_other_than_store_or_echo_gets_a_failure_status(
        acceptor: AcceptorServer):
    with _connect(acceptor) as sock:
        _associate(sock, [(CTImageStorage, ["1.2.840.10008.1.2.1"])])
        sock.sendall(ul.p_data(1, True, _command(0x0020, 7, CTImageStorage), 0))  # C-FIND
        kind, body = _read_pdu(sock)
        assert kind == ul.P_DATA_TF
        [(context, control, fragment)] = list(ul.pdvs(body))
        answer = decode_command(bytes(fragment))
        assert (context, control) == (1, 3)
        assert struct.unpack("<H", answer[0x0100])[0] == 0x8020
        assert struct.unpack("<H", answer[0x0120])[0] == 7
        assert struct.unpack("<H", answer[0x0900])[0] == 0x0211


def test_a_silent_peer_is_aborted_after_the_network_timeout(seen: list[StoreRequest]):
    server = serve(seen, network_timeout=0.3)
    try:
        with _connect(server) as sock:
            start = time.monotonic()
            kind, _ = _read_pdu(sock)
            assert kind == ul.ABORT and 0.25 < time.monotonic() - start < 3
    finally:
        server.shutdown()


def test_a_request_trickling_in_is_aborted_when_its_time_is_up(seen: list[StoreRequest]):
    """Each byte in time for the socket's timeout, the whole request not in time for
    the association's (PS3.8's ARTIM): aborted all the same."""
    server = serve(seen, network_timeout=0.5)
    try:
        with _connect(server) as sock:
            start = time.monotonic()
            rq = scpkit.pynetdicom_rq([(CTImageStorage, ["1.2.840.10008.1.2.1"])], called=AET)
            sock.sendall(struct.pack(">BxI", ul.ASSOCIATE_RQ, len(rq)))
            with contextlib.suppress(OSError):
                for byte in rq[:40]:  # 4 s, a byte every 0.1 s
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            kind, _ = _read_pdu(sock)
            assert kind == ul.ABORT and time.monotonic() - start < 2.0
    finally:
        server.shutdown()


def test_a_flood_of_connections_costs_no_thread_beyond_twice_the_limit(
        seen: list[StoreRequest]):
    server = serve(seen, max_associations=2)
    held = []
    try:
        for _ in range(4):  # connected, saying nothing: each holds a thread
            held.append(_connect(server))
        assert wait_for(lambda: server.active == 4)
        with _connect(server) as extra:  # the fifth is closed at once
            extra.settimeout(2)
            assert extra.recv(1) == b""  # not a timeout: no thread is waiting on it
        assert server.active == 4
    finally:
        for sock in held:
            sock.close()
        server.shutdown()


def test_release_and_abort_end_the_association_and_leave_no_descriptor(
        acceptor: AcceptorServer):
    port = acceptor.server_address[1]

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    def once(end: str) -> None:
        assoc = scu(Verification).associate("127.0.0.1", port, ae_title=AET)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release() if end == "release" else assoc.abort()
        assert wait_for(lambda: acceptor.active == 0)

    once("release")
    before = descriptors()
    for i in range(10):
        once("release" if i % 2 else "abort")
    assert wait_for(lambda: descriptors() <= before), (before, descriptors())


def test_shutdown_ends_the_associations_in_progress(seen: list[StoreRequest]):
    server = serve(seen)
    assoc = scu(Verification).associate("127.0.0.1", server.server_address[1], ae_title=AET)
    assert assoc.is_established
    server.shutdown()
    assert wait_for(lambda: server.active == 0)
    assert wait_for(lambda: not assoc.is_established)


def test_an_idle_association_does_not_spin(acceptor: AcceptorServer):
    assoc = scu(Verification).associate("127.0.0.1", acceptor.server_address[1],
                                        ae_title=AET)
    assert assoc.is_established
    try:
        time.sleep(0.1)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(1.0)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
    finally:
        assoc.release()
    # the acceptor blocks in recv; what this process uses is pynetdicom's SCU loops
    # (1 ms naps, a few % of a core); a loop that spins would take a whole core
    assert used < 0.3, used


def test_storescu_stores_hundreds_in_one_association(acceptor: AcceptorServer,
                                                     seen: list[StoreRequest],
                                                     tmp_path: Path):
    files = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "f", 300)
    sent = scpkit.storescu(files, port=acceptor.server_address[1], called_aet=AET,
                           workdir=tmp_path / "send")
    assert len(sent.stored) == 300, sent.output[-2000:]
    assert sorted(r.sop_instance_uid for r in seen) == sorted(scpkit.sop_uid(f)
                                                              for f in files)
    assert {r.calling_ae for r in seen} == {"HIESCU"}


def test_settings_default_to_every_storage_class(acceptor: AcceptorServer):
    settings: AcceptorSettings = acceptor.settings
    assert CTImageStorage in settings.abstract_syntaxes and Verification in \
        settings.abstract_syntaxes
    assert PatientRootQueryRetrieveInformationModelFind not in settings.abstract_syntaxes
