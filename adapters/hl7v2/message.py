"""HL7 v2.x ER7 parser.

The message is decoded from its raw bytes with the character set named in MSH-18
*before* it is split: in GB18030 the second byte of a two-byte character may be
``|``, ``^``, ``~`` or ``\\``, so splitting bytes would cut Chinese names apart.
Escape sequences are resolved per subcomponent, after splitting, so an escaped
delimiter never splits anything.

>>> msg = parse(b"MSH|^~\\\\&|LIS|H1|HIE|R|20240501||ADT^A01^ADT_A01|42|P|2.5\\rPID|||7^^^H^MR")
>>> msg.get("PID", 3, comp=1), msg.type
('7', ('ADT', 'A01'))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: MSH-18 values (HL7 table 0211 and what Chinese HIS/LIS put there) → Python codecs.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GB 2312": "gb18030",  # GB18030 is a superset of GB2312 and GBK
    "GBK": "gb18030",
    "BIG-5": "big5",
}

#: HL7 table 0357 codes used in ERR.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION = "203"
APPLICATION_INTERNAL_ERROR = "207"

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")


class Hl7Error(Exception):
    """A message that cannot be accepted; carries what the ACK must say.

    ``ack_code`` is ``AR`` (rejected: the envelope — MSH, type, version, character
    set — is unacceptable) or ``AE`` (the content is in error).
    """

    def __init__(self, text: str, *, ack_code: str = "AE",
                 code: str = DATA_TYPE_ERROR, location: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.ack_code = ack_code
        self.code = code
        self.location = location


@dataclass(frozen=True)
class Delimiters:
    """MSH-1 and MSH-2 of a message; the ACK reuses them."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass
class Header:
    """MSH fields an ACK needs, kept raw (still escaped) so they can be mirrored."""

    delimiters: Delimiters
    raw_fields: list[str]  # index n = MSH-n; [0] is "MSH"
    charset: str  # MSH-18 as sent
    codec: str

    def raw(self, n: int) -> str:
        return self.raw_fields[n] if n < len(self.raw_fields) else ""

    @property
    def control_id(self) -> str:
        return self.raw(10)

    @property
    def version(self) -> str:
        return self.raw(12).split(self.delimiters.component)[0]


# A subcomponent is a str; a component a list of those; a repetition a list of
# components; a field a list of repetitions.
Field = list[list[list[str]]]


@dataclass
class Segment:
    """One segment; ``fields[n]`` is field n (``fields[0]`` is the name)."""

    name: str
    fields: list[Field]
    index: int  # 1-based position in the message, for ERR locations

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """The unescaped value of field ``n`` (1-based components), "" when absent."""
        try:
            return self.fields[n][rep][comp - 1][sub - 1]
        except IndexError:
            return ""

    def repetitions(self, n: int) -> list[list[list[str]]]:
        """All repetitions of field ``n`` (each a list of components)."""
        return self.fields[n] if n < len(self.fields) else []


@dataclass
class Message:
    """A parsed message: header, segments, and the text it was decoded to."""

    header: Header
    segments: list[Segment] = field(default_factory=list)

    @property
    def type(self) -> tuple[str, str]:
        msh = self.segments[0]
        return msh.get(9, 1), msh.get(9, 2)

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def get(self, name: str, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        seg = self.segment(name)
        return seg.get(n, comp, sub, rep) if seg else ""


def codec_for(charset: str, default: str = "utf-8") -> str:
    """The Python codec for an MSH-18 value; unknown sets are rejected (AR)."""
    value = charset.strip()
    if not value:
        return default
    codec = CHARSETS.get(value.upper())
    if codec is None:
        raise Hl7Error(f"unsupported character set in MSH-18: {value!r}", ack_code="AR",
                       code=TABLE_VALUE_NOT_FOUND, location="MSH^1^18")
    return codec


def parse_header(raw: bytes, *, default_charset: str = "utf-8") -> Header:
    """Read MSH from raw bytes without decoding the rest (enough to ACK anything).

    MSH-1 … MSH-18 are ASCII in practice, so the first segment is read as
    latin-1 (byte-transparent) to find the character set.
    """
    start = raw.lstrip(b"\r\n \t")
    first = re.split(rb"\r\n|\r|\n", start, maxsplit=1)[0].decode("latin-1")
    if len(first) < 8 or not first.startswith("MSH"):
        raise Hl7Error("message does not start with an MSH segment", ack_code="AR",
                       code=SEGMENT_SEQUENCE_ERROR, location="MSH^1")
    sep, enc = first[3], first[4:].split(first[3], 1)[0]
    if len(enc) not in (4, 5) or len(set(sep + enc[:4])) != 5 or sep.isalnum():
        raise Hl7Error(f"bad MSH-1/MSH-2 delimiters {sep + enc!r}", ack_code="AR",
                       code=DATA_TYPE_ERROR, location="MSH^1^2")
    delims = Delimiters(sep, enc[0], enc[1], enc[2], enc[3])
    raw_fields = ["MSH", sep, *first[4:].split(sep)]
    charset = raw_fields[18] if len(raw_fields) > 18 else ""
    charset = charset.split(delims.repetition)[0]
    header = Header(delims, raw_fields, charset, default_charset)
    header.codec = codec_for(charset, default_charset)
    return header


def parse(raw: bytes, *, default_charset: str = "utf-8") -> Message:
    """Decode and parse one ER7 message; raises :class:`Hl7Error` on malformed input."""
    header = parse_header(raw, default_charset=default_charset)
    try:
        text = raw.decode(header.codec)
    except UnicodeDecodeError as exc:
        raise Hl7Error(f"message is not valid {header.charset or header.codec}: {exc.reason} "
                       f"at byte {exc.start}", ack_code="AR", code=DATA_TYPE_ERROR,
                       location="MSH^1^18") from exc
    d = header.delimiters
    lines = [ln for ln in re.split(r"\r\n|\r|\n", text.strip("\r\n")) if ln.strip()]
    msg = Message(header)
    for i, line in enumerate(lines, start=1):
        name = line[:3]
        if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != d.field):
            raise Hl7Error(f"segment {i} has no valid name: {line[:10]!r}",
                           code=SEGMENT_SEQUENCE_ERROR, location=f"{name}^{i}")
        if name == "MSH":
            if i != 1:
                raise Hl7Error("MSH segment not first", ack_code="AR",
                               code=SEGMENT_SEQUENCE_ERROR, location=f"MSH^{i}")
            raw_fields = line[4:].split(d.field)
            fields: list[Field] = [[[[name]]], [[[d.field]]], [[[raw_fields[0]]]]]
            rest = raw_fields[1:]
        else:
            fields = [[[[name]]]]
            rest = line[4:].split(d.field) if len(line) > 3 else []
        start = len(fields)
        for n, raw_field in enumerate(rest, start=start):
            fields.append(_split_field(raw_field, d, header.codec, f"{name}^{i}^{n}"))
        msg.segments.append(Segment(name, fields, i))
    _check_msh(msg)
    return msg


def _split_field(raw: str, d: Delimiters, codec: str, location: str) -> Field:
    return [[[unescape(sub, d, codec=codec, location=location)
              for sub in comp.split(d.subcomponent)]
             for comp in rep.split(d.component)]
            for rep in raw.split(d.repetition)]


_FORMATTING = {".sp", ".in", ".ti", ".sk", ".ce", ".fi", ".nf", "H", "N"}


def unescape(value: str, d: Delimiters, *, codec: str = "utf-8",
             location: str = "") -> str:
    """Resolve escape sequences (HL7 v2 chapter 2.7); a lone or unknown escape is an error.

    ``\\Xhh..\\`` is a byte sequence in the message's character set (``codec``).
    """
    esc = d.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c != esc:
            out.append(c)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            raise Hl7Error(f"lone escape character {esc!r} in {location}",
                           code=DATA_TYPE_ERROR, location=location)
        seq = value[i + 1:end]
        out.append(_escape_value(seq, d, codec, location))
        i = end + 1
    return "".join(out)


def _escape_value(seq: str, d: Delimiters, codec: str, location: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape, ".br": "\n"}
    if seq in simple:
        return simple[seq]
    if seq in _FORMATTING or seq.startswith((".in", ".ti", ".sp", ".sk")):
        return "\n" if seq.startswith(".sp") else ""
    if seq.startswith("X") and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(codec)
        except (ValueError, UnicodeDecodeError):
            pass
    raise Hl7Error(f"bad escape sequence {d.escape}{seq}{d.escape} in {location}",
                   code=DATA_TYPE_ERROR, location=location)


def _check_msh(msg: Message) -> None:
    msh = msg.segments[0]
    kind, event = msg.type
    if not kind:
        raise Hl7Error("MSH-9 message type is empty", ack_code="AR",
                       code=REQUIRED_FIELD_MISSING, location="MSH^1^9")
    if not msh.get(10):
        raise Hl7Error("MSH-10 message control id is empty", ack_code="AR",
                       code=REQUIRED_FIELD_MISSING, location="MSH^1^10")
    version = msh.get(12)
    if not version.startswith("2."):
        raise Hl7Error(f"unsupported HL7 version in MSH-12: {version!r}", ack_code="AR",
                       code=UNSUPPORTED_VERSION, location="MSH^1^12")
