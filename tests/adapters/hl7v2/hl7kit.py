"""Builds HL7 v2 messages the way a HIS/LIS sends them, and fakes for the tests.

Free text goes through the ``hl7`` package's escaping for delimiters (what
python-hl7 senders do); the ER7 around it follows real ADT/ORU layouts from
Chinese HIS/LIS (MRN and resident ID in PID-3, names in Chinese, GB18030 or
UTF-8 in MSH-18). The adapter's own parser never builds these.
"""

from __future__ import annotations

import hl7

_ESCAPER = hl7.parse("MSH|^~\\&|X|X|X|X|20240101||ADT^A01|1|P|2.5")

ID_CARD = "110105194912310021"


def esc(text: str) -> str:
    """Escape delimiters with python-hl7 (only ASCII delimiters are rewritten; CJK
    text is kept as is by passing it through unchanged)."""
    return "".join(c if ord(c) > 0x7E else _ESCAPER.escape(c) for c in text)


def msh(kind: str, control: str, *, charset: str = "UNICODE UTF-8", version: str = "2.5",
        sender: str = "HIS", facility: str = "H001") -> str:
    fields = ["MSH", "^~\\&", sender, facility, "HIE", "REGION", "20240501083000", "",
              kind, control, "P", version, "", "", "", "", "", charset]
    return "|".join(fields)


def adt(event: str = "A01", *, control: str = "MSG0001", mrn: str = "MRN12345",
        name: str = "张^三", charset: str = "UNICODE UTF-8", visit: str = "V20240501001",
        resident_id: str = ID_CARD, version: str = "2.5", pv1: bool = True) -> str:
    segs = [
        msh(f"ADT^{event}^ADT_{event}", control, charset=charset, version=version),
        f"EVN|{event}|20240501083000",
        "PID|1||" + f"{mrn}^^^H001^MR~{resident_id}^^^CHN&2.16.156.10011.1.1&ISO^NNCHN"
        + f"||{name}^^^^^L~ZHANG^SAN^^^^^A||19491231|M|||"
        + "朝阳路1号^3单元^北京市^北京市^100020^CHN^H^^朝阳区||^PRN^PH^^^^^^^^^010-12345678"
        + "~^PRN^CP^^^^^^^^^13800138000|^WPN^PH^^^^^^^^^010-87654321",
    ]
    if pv1:
        pv = [""] * 46
        pv[0], pv[1], pv[2], pv[3] = "PV1", "1", "I", "心内科^301^2^H001"
        pv[7], pv[19], pv[44] = "D001^李^医生", visit, "20240501080000"
        segs.append("|".join(pv))
        segs.append("DG1|1||GXY^高血压^LOCAL|高血压||A")
    return "\r".join(segs) + "\r"


def oru(*, control: str = "LAB0001", mrn: str = "MRN12345", name: str = "张^三",
        charset: str = "UNICODE UTF-8", extra_obx: list[str] | None = None,
        placer: str = "P100", filler: str = "F200") -> str:
    """A LIS result: OBR ``filler`` (the DiagnosticReport's identifier) with five OBX."""
    segs = [
        msh("ORU^R01^ORU_R01", control, charset=charset, sender="LIS"),
        f"PID|1||{mrn}^^^H001^MR||{name}||19491231|M",
        "PV1|1|O",
        f"ORC|RE|{placer}|{filler}",
        f"OBR|1|{placer}|{filler}|BMP^" + esc("基础代谢 (BMP)") + "^LOCAL|||20240501070000"
        + "|||||||||||||||20240501090000|||F",
        "OBX|1|NM|GLU^葡萄糖^LOCAL||7.8|mmol/L|3.9-6.1|H|||F|||20240501080000",
        "NTE|1||" + esc("空腹 & 复查"),
        "OBX|2|NM|K^钾^LOCAL||4.1|mmol/L|3.5-5.5|N|||F",
        "OBX|3|SN|CREA^肌酐^LOCAL||<^44|umol/L|44-133||||F",
        "OBX|4|CE|HBSAG^乙肝表面抗原^LOCAL||NEG^阴性^LOCAL||阴性|N|||F",
        "OBX|5|ST|BG-ABO^ABO血型^LOCAL||" + esc("A型 (Rh+)") + "||||||F",
        *(extra_obx or []),
    ]
    return "\r".join(segs) + "\r"


def a40(*, control: str = "MRG0001", survivor: str = "MRN12345", merged: str = "MRN99999") -> str:
    return "\r".join([
        msh("ADT^A40^ADT_A39", control),
        "EVN|A40|20240501083000",
        f"PID|1||{survivor}^^^H001^MR||张^三||19491231|M",
        f"MRG|{merged}^^^H001^MR",
    ]) + "\r"


def encode(text: str, charset: str = "UNICODE UTF-8") -> bytes:
    codec = {"UNICODE UTF-8": "utf-8", "GB 18030-2000": "gb18030", "ASCII": "ascii",
             "8859/1": "latin-1", "": "utf-8"}[charset]
    return text.encode(codec)


class MemoryOutbox:
    """Same signature as ``adapters.outbox.Outbox.put``; keeps messages in a list."""

    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []

    def put(self, *, patient_key: str, payload: bytes, kind: str = "bundle",
            source: str, after: str | None = None) -> int:
        self.items.append({"patient_key": patient_key, "payload": payload, "kind": kind,
                           "source": source, "after": after})
        return len(self.items)
