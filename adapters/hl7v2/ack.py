"""HL7 original-mode acknowledgements.

The ACK mirrors the message's MSH (sending and receiving swapped), carries the
original control id in MSA-2, uses the message's delimiters and is encoded in its
character set, so that the sender's own parser reads it like anything else it
receives. Text we write is escaped; MSH fields we mirror are copied raw (already
escaped in the same delimiters).
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime, timedelta, timezone

from adapters.hl7v2.message import Delimiters, Header

_counter = itertools.count(1)
_PREFIX = f"{os.getpid() % 10000:04d}"
DEFAULT_HEADER = Header(Delimiters(), ["MSH", "|", "^~\\&", "", "", "", "", "", "", "",
                                       "", "P", "2.5"], "", "utf-8")


def escape(text: str, d: Delimiters) -> str:
    """Escape delimiters and line breaks in free text (HL7 v2 chapter 2.7)."""
    out = []
    for c in text:
        if c == d.escape:
            out.append(f"{d.escape}E{d.escape}")
        elif c == d.field:
            out.append(f"{d.escape}F{d.escape}")
        elif c == d.component:
            out.append(f"{d.escape}S{d.escape}")
        elif c == d.subcomponent:
            out.append(f"{d.escape}T{d.escape}")
        elif c == d.repetition:
            out.append(f"{d.escape}R{d.escape}")
        elif c in "\r\n":
            out.append(f"{d.escape}.br{d.escape}")
        else:
            out.append(c)
    return "".join(out)


def control_id() -> str:
    """A unique control id for the ACK itself (time + process + counter)."""
    return f"ACK{int(time.time() * 1000)}{_PREFIX}{next(_counter) % 100000:05d}"


def build_ack(header: Header | None, code: str, *, text: str = "", error_code: str = "",
              location: str = "", tz_hours: int = 8) -> bytes:
    """An ACK for the message whose MSH is ``header`` (None: unreadable; then a
    minimal UTF-8 v2.5 header)."""
    h = header or DEFAULT_HEADER
    d = h.delimiters
    now = datetime.now(timezone(timedelta(hours=tz_hours))).strftime("%Y%m%d%H%M%S%z")
    event = h.raw(9).split(d.component)[1] if d.component in h.raw(9) else ""
    version = h.raw(12) or "2.5"
    msh = [f"MSH{d.field}{d.encoding_characters}", h.raw(5), h.raw(6), h.raw(3), h.raw(4),
           now, "", d.component.join(("ACK", event, "ACK")) if event else "ACK",
           control_id(), h.raw(11) or "P", version]
    if h.charset:
        msh += ["", "", "", "", "", h.raw(18)]
    segments = [d.field.join(msh)]
    msa = ["MSA", code, h.control_id]
    if text:
        msa.append(escape(text[:80], d))
    segments.append(d.field.join(msa))
    if code != "AA":
        err_code = error_code or "207"
        cwe = d.component.join((err_code, escape(_ERROR_NAMES.get(err_code, "Error"), d),
                                "HL70357"))
        loc = location.split("^")
        if _older_than_25(h.version):
            # v2.3/2.4: ERR-1 is "error code and location" (segment^seq^field^code&text&table)
            eld = d.component.join([*(loc + ["", "", ""])[:3],
                                    d.subcomponent.join((err_code, escape(text[:200], d),
                                                         "HL70357"))])
            segments.append(d.field.join(["ERR", eld]))
        else:
            err_loc = d.component.join(loc) if location else ""
            segments.append(d.field.join(["ERR", "", err_loc, cwe, "E", "", "", "",
                                          escape(text, d)]))
    body = "\r".join(segments) + "\r"
    return body.encode(h.codec, errors="replace")


def _older_than_25(version: str) -> bool:
    try:
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) < (2, 5)
    except ValueError:
        return False


_ERROR_NAMES = {
    "0": "Message accepted", "100": "Segment sequence error",
    "101": "Required field missing", "102": "Data type error",
    "103": "Table value not found", "200": "Unsupported message type",
    "201": "Unsupported event code", "203": "Unsupported version id",
    "207": "Application internal error",
}
