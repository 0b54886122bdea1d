"""The DICOM Upper Layer (PS3.8 §9) as an association *acceptor* needs it: the PDUs
it reads and writes, and the negotiation of an A-ASSOCIATE-RQ.

Pure functions on bytes, no sockets (``adapters.sources.dicom_acceptor`` runs the
connections). Everything a peer sends is bounds-checked: a malformed PDU raises
:class:`ProtocolError`, which the connection answers with an A-ABORT.

What is negotiated: the presentation contexts (for each, the first transfer syntax
the requestor proposes that we take, as DCMTK and pynetdicom choose), the maximum
PDU length both ways, the implementation class UID and version name. Requests for
extended negotiation, role selection, user identity or more than one outstanding
operation are answered by leaving them out of the A-ASSOCIATE-AC, which PS3.7 and
PS3.8 define as "not supported": one operation at a time, default roles (the
requestor is the SCU), no identity required.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Iterator
from dataclasses import dataclass, field

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: This implementation's class UID (a UUID-derived UID, PS3.5 B.2) and version name.
IMPLEMENTATION_CLASS_UID = "2.25.177194722402263821995857592336895512856"
IMPLEMENTATION_VERSION = "HIE_ADAPTER_1"

# Presentation context results (PS3.8 Table 9-18)
ACCEPTANCE, PROVIDER_REJECTION = 0, 2
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 3, 4

# A-ASSOCIATE-RJ (PS3.8 Table 9-21): result, source, reason
REJECTED_PERMANENT, REJECTED_TRANSIENT = 1, 2
SOURCE_USER, SOURCE_ACSE, SOURCE_PRESENTATION = 1, 2, 3
USER_APPLICATION_CONTEXT_NOT_SUPPORTED, USER_CALLED_AE_NOT_RECOGNIZED = 2, 7
ACSE_PROTOCOL_VERSION_NOT_SUPPORTED = 2
PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2

# A-ABORT (PS3.8 Table 9-26): source 2 (service provider) and its reasons
ABORT_PROVIDER = 2
ABORT_NOT_SPECIFIED, ABORT_UNEXPECTED_PDU = 0, 2
ABORT_UNEXPECTED_PARAMETER, ABORT_INVALID_PARAMETER = 5, 6


class ProtocolError(Exception):
    """The peer broke PS3.8; the association ends with an A-ABORT giving ``reason``."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ProposedContext:
    """One presentation context of an A-ASSOCIATE-RQ."""

    id: int
    abstract_syntax: str = ""
    transfer_syntaxes: list[str] = field(default_factory=list)


@dataclass
class AssociateRequest:
    """What an A-ASSOCIATE-RQ carries that the acceptor uses."""

    protocol_version: int
    called: bytes  # the 16 bytes as sent: the A-ASSOCIATE-AC returns them unchanged
    calling: bytes
    application_context: str = ""
    contexts: list[ProposedContext] = field(default_factory=list)
    max_pdu: int = 0  # the requestor's maximum P-DATA-TF length; 0 = no limit
    implementation_class_uid: str = ""
    implementation_version: str = ""

    @property
    def called_ae(self) -> str:
        return _text(self.called)

    @property
    def calling_ae(self) -> str:
        return _text(self.calling)


@dataclass
class ContextResult:
    """Our answer for one proposed presentation context."""

    id: int
    result: int
    abstract_syntax: str
    transfer_syntax: str


def _text(data: bytes) -> str:
    try:
        return data.decode("ascii").strip(" \x00")
    except UnicodeDecodeError:
        raise ProtocolError("a UID or AE title that is not ASCII") from None


def _items(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """The (type, value) items of a variable field: type, reserved, 16-bit length."""
    at = start
    while at < len(data):
        if at + 4 > len(data):
            raise ProtocolError("an item header runs past the end of its PDU")
        kind = data[at]
        (length,) = struct.unpack_from(">H", data, at + 2)
        end = at + 4 + length
        if end > len(data):
            raise ProtocolError("an item runs past the end of its PDU")
        yield kind, data[at + 4:end]
        at = end


def parse_associate_rq(body: bytes) -> AssociateRequest:
    """An A-ASSOCIATE-RQ's variable part (after the 6-byte PDU header)."""
    if len(body) < 68:
        raise ProtocolError("an A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    rq = AssociateRequest(version, body[4:20], body[20:36])
    _text(rq.called), _text(rq.calling)  # both must be ASCII
    for kind, value in _items(body, 68):
        if kind == 0x10:
            rq.application_context = _text(value)
        elif kind == 0x20:
            if len(value) < 4:
                raise ProtocolError("a presentation context item without its ID")
            context = ProposedContext(value[0])
            for sub, data in _items(value, 4):
                if sub == 0x30:
                    context.abstract_syntax = _text(data)
                elif sub == 0x40:
                    context.transfer_syntaxes.append(_text(data))
            rq.contexts.append(context)
        elif kind == 0x50:
            for sub, data in _items(value, 0):
                if sub == 0x51:
                    if len(data) != 4:
                        raise ProtocolError("a maximum length sub-item of other than 4 bytes")
                    (rq.max_pdu,) = struct.unpack(">I", data)
                elif sub == 0x52:
                    rq.implementation_class_uid = _text(data)
                elif sub == 0x55:
                    rq.implementation_version = _text(data)
        # other item types: PS3.8 9.3.1 lets an acceptor ignore what it does not know
    if not rq.contexts:
        raise ProtocolError("an A-ASSOCIATE-RQ without presentation contexts")
    return rq


def negotiate(rq: AssociateRequest, abstract_syntaxes: Container[str],
              transfer_syntaxes: Container[str]) -> list[ContextResult]:
    """Accept each proposed context whose abstract syntax we take, in the first of its
    transfer syntaxes we take; reject the others with the reason."""
    out: list[ContextResult] = []
    seen: set[int] = set()
    for c in rq.contexts:
        first = c.transfer_syntaxes[0] if c.transfer_syntaxes else IMPLICIT_VR_LITTLE_ENDIAN
        if c.id % 2 == 0 or c.id in seen or not c.abstract_syntax or not c.transfer_syntaxes:
            result = PROVIDER_REJECTION  # IDs are odd and unique (PS3.8 9.3.2.2)
        elif c.abstract_syntax not in abstract_syntaxes:
            result = ABSTRACT_SYNTAX_NOT_SUPPORTED
        else:
            taken = [ts for ts in c.transfer_syntaxes if ts in transfer_syntaxes]
            result = ACCEPTANCE if taken else TRANSFER_SYNTAXES_NOT_SUPPORTED
            first = taken[0] if taken else first
        seen.add(c.id)
        out.append(ContextResult(c.id, result, c.abstract_syntax, first))
    return out


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode("ascii")


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxI", kind, len(body)) + body


def associate_ac(rq: AssociateRequest, results: list[ContextResult], *, max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC answering ``rq`` with ``results``; ``max_pdu`` is the longest
    P-DATA-TF we take."""
    contexts = b"".join(
        _item(0x21, struct.pack(">BxBx", r.id, r.result)
              + _item(0x40, _uid(r.transfer_syntax))) for r in results)
    user = (_item(0x51, struct.pack(">I", max_pdu))
            + _item(0x52, _uid(IMPLEMENTATION_CLASS_UID))
            + _item(0x55, IMPLEMENTATION_VERSION.encode("ascii")))
    fixed = struct.pack(">H2x", 1) + rq.called + rq.calling + bytes(32)
    return _pdu(ASSOCIATE_AC, fixed + _item(0x10, _uid(APPLICATION_CONTEXT)) + contexts
                + _item(0x50, user))


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return _pdu(ASSOCIATE_RJ, struct.pack(">xBBB", result, source, reason))


def release_rp() -> bytes:
    return _pdu(RELEASE_RP, bytes(4))


def abort(reason: int = ABORT_NOT_SPECIFIED) -> bytes:
    return _pdu(ABORT, struct.pack(">xxBB", ABORT_PROVIDER, reason))


def p_data(context_id: int, command: bool, payload: bytes, max_pdu: int) -> bytes:
    """``payload`` as P-DATA-TF PDUs of one PDV each, none longer than the peer's
    ``max_pdu`` (0: no limit), the last fragment flagged as last."""
    room = len(payload) if max_pdu <= 0 else max(1, max_pdu - 6)
    out = []
    for at in range(0, max(len(payload), 1), room):
        fragment = payload[at:at + room]
        control = (1 if command else 0) | (2 if at + room >= len(payload) else 0)
        pdv = struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
        out.append(_pdu(P_DATA_TF, pdv))
    return b"".join(out)


def pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The (context ID, message control header, fragment) of a P-DATA-TF's PDV items."""
    view = memoryview(body)
    at = 0
    if not body:
        raise ProtocolError("a P-DATA-TF without PDV items")
    while at < len(body):
        if at + 6 > len(body):
            raise ProtocolError("a PDV header runs past the end of its P-DATA-TF")
        length, context_id, control = struct.unpack_from(">IBB", body, at)
        end = at + 4 + length
        if length < 2 or end > len(body):
            raise ProtocolError("a PDV item of a length that does not fit its P-DATA-TF")
        yield context_id, control, view[at + 6:end]
        at = end
