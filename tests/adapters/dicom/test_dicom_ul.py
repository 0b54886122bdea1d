"""The Upper Layer PDUs the acceptor reads and writes, checked against pynetdicom's
own PDU classes (a second implementation of PS3.8) and against broken input."""

from __future__ import annotations

import struct

import pytest
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF
from scpkit import pynetdicom_rq

from adapters.sources import dicom_ul as ul

CT, MR, FIND = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", \
    "1.2.840.10008.5.1.4.1.2.1.1"
EXPLICIT, IMPLICIT, JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"


def test_a_request_pynetdicom_encodes_is_read_and_negotiated():
    rq = ul.parse_associate_rq(pynetdicom_rq([
        (CT, [JPEG, EXPLICIT, IMPLICIT]),  # we take the first we know: JPEG
        (MR, ["1.2.3.4"]),                 # no transfer syntax we know
        (FIND, [IMPLICIT]),                # not a storage SOP class
    ], max_pdu=32768))
    assert (rq.called_ae, rq.calling_ae, rq.max_pdu) == ("HIE", "STORESCU", 32768)
    assert rq.application_context == ul.APPLICATION_CONTEXT
    assert rq.implementation_class_uid == "1.2.826.0.1.3680043.9.3811.2.0.2"
    assert rq.implementation_version == "PYNETDICOM_202"
    results = ul.negotiate(rq, {CT, MR}, {EXPLICIT, IMPLICIT, JPEG})
    assert [(r.id, r.result, r.transfer_syntax) for r in results] == [
        (1, ul.ACCEPTANCE, JPEG), (3, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED, "1.2.3.4"),
        (5, ul.ABSTRACT_SYNTAX_NOT_SUPPORTED, IMPLICIT)]

    ac = A_ASSOCIATE_AC()
    ac.decode(ul.associate_ac(rq, results, max_pdu=65536))
    assert ac.called_ae_title == "HIE" and ac.calling_ae_title == "STORESCU"
    assert ac.application_context_name == ul.APPLICATION_CONTEXT
    contexts = {c.context_id: (c.result, c.transfer_syntax) for c in ac.presentation_context}
    assert contexts == {1: (0, JPEG), 3: (4, "1.2.3.4"), 5: (3, IMPLICIT)}
    user = {type(i).__name__: i for i in ac.user_information.user_data}
    assert user["MaximumLengthSubItem"].maximum_length_received == 65536
    assert user["ImplementationClassUIDSubItem"].implementation_class_uid == \
        ul.IMPLEMENTATION_CLASS_UID
    # one operation at a time: the window is left out, which means (1, 1)
    assert "AsynchronousOperationsWindowSubItem" not in user


def test_context_ids_must_be_odd_and_unique():
    rq = ul.parse_associate_rq(pynetdicom_rq([(CT, [EXPLICIT]), (MR, [EXPLICIT])]))
    rq.contexts[1].id = rq.contexts[0].id
    rq.contexts.append(ul.ProposedContext(4, CT, [EXPLICIT]))
    results = ul.negotiate(rq, {CT, MR}, {EXPLICIT})
    assert [r.result for r in results] == [ul.ACCEPTANCE, ul.PROVIDER_REJECTION,
                                           ul.PROVIDER_REJECTION]


def test_rejections_aborts_and_releases_read_as_pynetdicom_reads_them():
    rj = A_ASSOCIATE_RJ()
    rj.decode(ul.associate_rj(ul.REJECTED_TRANSIENT, ul.SOURCE_PRESENTATION,
                              ul.PRESENTATION_LOCAL_LIMIT_EXCEEDED))
    assert (rj.result, rj.source, rj.reason_diagnostic) == (2, 3, 2)
    ab = A_ABORT_RQ()
    ab.decode(ul.abort(ul.ABORT_UNEXPECTED_PDU))
    assert (ab.source, ab.reason_diagnostic) == (2, 2)
    assert ul.release_rp() == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@pytest.mark.parametrize("max_pdu", [0, 16, 100, 4096])
def test_p_data_fragments_to_the_peers_maximum_and_reads_back(max_pdu: int):
    payload = bytes(range(256)) * 7
    data = ul.p_data(3, False, payload, max_pdu)
    fragments, at = [], 0
    while at < len(data):
        kind, length = struct.unpack_from(">BxI", data, at)
        assert kind == ul.P_DATA_TF and (max_pdu == 0 or length <= max_pdu)
        body = data[at + 6:at + 6 + length]
        theirs = P_DATA_TF()
        theirs.decode(data[at:at + 6 + length])  # pynetdicom reads the same PDV
        assert theirs.presentation_data_value_items[0].presentation_context_id == 3
        fragments.extend(ul.pdvs(body))
        at += 6 + length
    assert b"".join(bytes(f) for _, _, f in fragments) == payload
    assert [c for _, c, _ in fragments] == [0] * (len(fragments) - 1) + [2]


@pytest.mark.parametrize("body", [
    b"", b"\x00\x00\x00", b"\x00\x00\x00\x01\x01",               # shorter than a PDV header
    b"\x00\x00\x10\x00\x01\x03" + b"x" * 10,                     # longer than its PDU
    b"\x00\x00\x00\x01\x01\x03",                                 # length 1: no header room
])
def test_broken_p_data_is_a_protocol_error(body: bytes):
    with pytest.raises(ul.ProtocolError):
        list(ul.pdvs(body))


def test_broken_requests_are_protocol_errors():
    good = pynetdicom_rq([(CT, [EXPLICIT])])
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(good[:60])  # shorter than the fixed fields
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(good[:-3])  # the last item cut short
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(good[:4] + "ÄÖ".encode().ljust(16) + good[20:])  # AE not ASCII
    no_contexts = good[:68] + bytes(ul._item(0x10, ul.APPLICATION_CONTEXT.encode()))
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(no_contexts)
