"""ACKs are read back with python-hl7, as the sending HIS would read them."""

import hl7
import hl7kit

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.message import parse_header


def test_aa_mirrors_the_message_header() -> None:
    header = parse_header(hl7kit.encode(hl7kit.adt(control="C-77")))
    ack = hl7.parse(build_ack(header, "AA").decode())
    swapped = [str(ack.extract_field("MSH", 1, n)) for n in (3, 4, 5, 6)]
    assert swapped == ["HIE", "REGION", "HIS", "H001"]
    assert str(ack.extract_field("MSH", 1, 9, 1, 1)) == "ACK"
    assert str(ack.extract_field("MSH", 1, 9, 1, 2)) == "A01"
    assert str(ack.extract_field("MSH", 1, 10)) not in ("", "C-77")
    assert str(ack.extract_field("MSH", 1, 12)) == "2.5"
    assert str(ack.extract_field("MSH", 1, 18)) == "UNICODE UTF-8"
    assert str(ack.extract_field("MSA", 1, 1)) == "AA"
    assert str(ack.extract_field("MSA", 1, 2)) == "C-77"


def test_ae_carries_the_reason_in_err_and_msa3_in_gb18030() -> None:
    header = parse_header(hl7kit.encode(hl7kit.adt(charset="GB 18030-2000"), "GB 18030-2000"))
    raw = build_ack(header, "AE", text="姓名|错误^", error_code="102", location="PID^3^5")
    ack = hl7.parse(raw.decode("gb18030"))
    assert str(ack.extract_field("MSA", 1, 1)) == "AE"
    assert ack.unescape(str(ack.extract_field("MSA", 1, 3))) == "姓名|错误^"
    assert str(ack.extract_field("ERR", 1, 2, 1, 1)) == "PID"
    assert str(ack.extract_field("ERR", 1, 3, 1, 1)) == "102"
    assert str(ack.extract_field("ERR", 1, 4)) == "E"
    assert ack.unescape(str(ack.extract_field("ERR", 1, 8))) == "姓名|错误^"


def test_v23_ack_uses_err1() -> None:
    header = parse_header(hl7kit.encode(hl7kit.adt(version="2.3")))
    ack = hl7.parse(build_ack(header, "AR", text="bad", error_code="200").decode())
    assert str(ack.extract_field("ERR", 1, 1, 1, 4, 1)) == "200"


def test_unreadable_message_still_gets_an_ack() -> None:
    ack = hl7.parse(build_ack(None, "AR", text="no MSH", error_code="100").decode())
    assert str(ack.extract_field("MSA", 1, 1)) == "AR"
