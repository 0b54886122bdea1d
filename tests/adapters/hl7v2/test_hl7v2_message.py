"""The ER7 parser against messages built like HIS/LIS send them, cross-checked with
the python-hl7 package's reading of the same text."""

import hl7
import hl7kit
import pytest

from adapters.hl7v2.message import Hl7Error, parse, parse_header


def test_fields_components_repetitions_match_python_hl7() -> None:
    text = hl7kit.adt()
    ours, theirs = parse(hl7kit.encode(text)), hl7.parse(text)
    assert ours.type == ("ADT", "A01")
    assert ours.get("PID", 3, comp=1, rep=0) == str(theirs.extract_field("PID", 1, 3, 1, 1))
    assert ours.get("PID", 3, comp=1, rep=1) == str(theirs.extract_field("PID", 1, 3, 2, 1))
    assert ours.get("PID", 3, comp=4, sub=2, rep=1) == "2.16.156.10011.1.1"
    assert ours.get("PV1", 19) == str(theirs.extract_field("PV1", 1, 19)) == "V20240501001"
    assert ours.get("PV1", 44) == str(theirs.extract_field("PV1", 1, 44))
    assert ours.get("MSH", 10) == str(theirs.extract_field("MSH", 1, 10)) == "MSG0001"
    assert ours.segment("PID").get(5, 1, rep=1) == "ZHANG"


def test_escape_sequences_are_resolved_after_splitting() -> None:
    text = hl7kit.oru()
    msg = parse(hl7kit.encode(text))
    obr = msg.segment("OBR")
    assert obr.get(4, 2) == "基础代谢 (BMP)"
    nte = msg.segment("NTE")
    assert nte.get(3) == "空腹 & 复查"
    value = r"A\F\B\S\C\T\D\R\E\E\E\.br\F"
    tricky = hl7kit.msh("ADT^A08", "1") + "\rPID|1||7^^^H^MR||" + value
    pid = parse(tricky.encode()).segment("PID")
    assert pid.get(5) == "A|B^C&D~E\\E\nF"
    assert len(pid.repetitions(5)) == 1 and len(pid.fields[5][0]) == 1


@pytest.mark.parametrize("charset,codec", [("UNICODE UTF-8", "utf-8"),
                                           ("GB 18030-2000", "gb18030")])
def test_hex_escape_is_bytes_in_the_message_charset(charset: str, codec: str) -> None:
    hexed = "王".encode(codec).hex().upper()
    text = hl7kit.msh("ADT^A08", "1", charset=charset) + f"\rPID|1||7^^^H^MR||\\X{hexed}\\^五"
    assert parse(text.encode(codec)).get("PID", 5) == "王"


def test_gb18030_is_decoded_before_splitting() -> None:
    # 億 is 0x83 0x7C in GB18030: its second byte is "|". A byte-level split would
    # cut the name in two and shift every later field.
    name = "王億^明"
    text = hl7kit.adt(name=name, charset="GB 18030-2000")
    raw = text.encode("gb18030")
    assert b"\x83|" in raw
    msg = parse(raw)
    assert msg.get("PID", 5, 1) == "王億" and msg.get("PID", 5, 2) == "明"
    assert msg.get("PID", 7) == "19491231"
    assert msg.header.codec == "gb18030"


def test_latin1_and_ascii_charsets() -> None:
    text = hl7kit.msh("ADT^A08", "1", charset="8859/1") + "\rPID|1||7^^^H^MR||Müller^Jürgen"
    assert parse(text.encode("latin-1")).get("PID", 5) == "Müller"
    ascii_text = hl7kit.msh("ADT^A08", "1", charset="ASCII") + "\rPID|1||7"
    assert parse(ascii_text.encode()).header.codec == "ascii"


def test_lf_and_crlf_segment_terminators_are_tolerated() -> None:
    text = hl7kit.adt().replace("\r", "\r\n")
    assert parse(text.encode()).get("PID", 8) == "M"


@pytest.mark.parametrize("bad,fragment", [
    ("PID|1||7^^^H^MR||Zhang\\San", "lone escape"),
    ("PID|1||7^^^H^MR||Zhang\\Q\\San", "bad escape"),
    ("PID|1||7^^^H^MR||\\XZZ\\", "bad escape"),
])
def test_malformed_escapes_raise_ae(bad: str, fragment: str) -> None:
    text = hl7kit.msh("ADT^A08", "1") + "\r" + bad
    with pytest.raises(Hl7Error) as err:
        parse(text.encode())
    assert fragment in err.value.text and err.value.ack_code == "AE"
    assert err.value.location.startswith("PID^2^5")


@pytest.mark.parametrize("raw,fragment", [
    (b"PID|1||7\rMSH|^~\\&|A", "does not start with an MSH"),
    (b"MSH|^~|A|B", "delimiters"),
    (b"MSH|^^\\&|A|B", "delimiters"),
    (b"", "does not start with an MSH"),
    ((b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5||||||KOI8-R"), "character set"),
    (b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|3.0", "version"),
    (b"MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5", "control id"),
    (b"MSH|^~\\&|A|B|C|D|2024|||1|P|2.5", "message type"),
])
def test_wrong_msh_is_rejected(raw: bytes, fragment: str) -> None:
    with pytest.raises(Hl7Error) as err:
        parse(raw)
    assert fragment in err.value.text and err.value.ack_code == "AR"


def test_bytes_invalid_in_declared_charset_are_rejected() -> None:
    text = hl7kit.msh("ADT^A08", "1") + "\rPID|1||7||"
    with pytest.raises(Hl7Error, match="not valid"):
        parse(text.encode() + "张".encode("gb18030"))


def test_bad_segment_name_is_an_error() -> None:
    with pytest.raises(Hl7Error, match="no valid name"):
        parse((hl7kit.msh("ADT^A08", "1") + "\rpi|x").encode())


def test_header_is_readable_even_when_the_body_is_not() -> None:
    text = hl7kit.msh("ADT^A08", "C42", charset="GB 18030-2000") + "\rPID|1||\\"
    header = parse_header(text.encode("gb18030"))
    assert header.control_id == "C42" and header.codec == "gb18030"
