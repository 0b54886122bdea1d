"""The MLLP listener over real TCP connections on 127.0.0.1, with the real outbox."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import hl7kit
import pytest
from hl7.mllp import open_hl7_connection

from adapters.hl7v2.listener import ListenerSettings, start_server
from adapters.outbox import Outbox

SB, EB = b"\x0b", b"\x1c\x0d"
LIMIT = 64 * 1024


class Running:
    def __init__(self, server: asyncio.Server, outbox: Outbox) -> None:
        self.server, self.outbox = server, outbox
        self.port = server.sockets[0].getsockname()[1]

    def drained(self) -> list[tuple[str, str, dict]]:
        """Everything in the outbox, via its consumer API."""
        out = []
        while batch := self.outbox.claim(100):
            for m in batch:
                out.append((m.kind, m.patient_key, json.loads(m.payload)))
                self.outbox.done(m.id)
        return out


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    outbox = Outbox(tmp_path / "outbox.db")
    settings = ListenerSettings(max_message_bytes=LIMIT, read_timeout=0.5, idle_timeout=5)
    server = await start_server("127.0.0.1", 0, outbox=outbox, settings=settings)
    try:
        yield Running(server, outbox)
    finally:
        server.close()
        outbox.close()


async def exchange(port: int, data: bytes, codec: str = "utf-8") -> hl7.Message | None:
    """Send raw bytes; the ACK (parsed by python-hl7), or None if the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            frame = await asyncio.wait_for(reader.readuntil(EB), 5)
        except asyncio.IncompleteReadError:
            return None
        assert frame.startswith(SB)
        return hl7.parse(frame[1:-2].decode(codec))
    finally:
        writer.close()


async def still_serving(port: int) -> None:
    ack = await exchange(port, SB + hl7kit.encode(hl7kit.adt(control="AFTER")) + EB)
    assert ack is not None and str(ack.extract_field("MSA", 1, 1)) == "AA"


def msa(ack: hl7.Message | None) -> tuple[str, str]:
    assert ack is not None
    return str(ack.extract_field("MSA", 1, 1)), str(ack.extract_field("MSA", 1, 2))


async def test_adt_over_mllp_gets_aa_and_lands_in_outbox(running: Running) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", running.port, encoding="utf-8")
    try:
        writer.writemessage(hl7.parse(hl7kit.adt(control="ADT-1")))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 5)
    finally:
        writer.close()
    assert msa(ack) == ("AA", "ADT-1")
    ((kind, key, bundle),) = running.drained()
    assert kind == "bundle" and key == "urn:hie:hospital:mrn|MRN12345"
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient", "Encounter"]


async def test_gb18030_oru_and_several_messages_on_one_connection(running: Running) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", running.port, encoding="gb18030")
    acks = []
    try:
        for i in range(3):
            text = hl7kit.oru(control=f"LAB-{i}", name="王億^明", charset="GB 18030-2000",
                              mrn=f"M{i}")
            writer.writemessage(hl7.parse(text))
            await writer.drain()
            acks.append(await asyncio.wait_for(reader.readmessage(), 5))
    finally:
        writer.close()
    assert [msa(a) for a in acks] == [("AA", f"LAB-{i}") for i in range(3)]
    assert str(acks[0].extract_field("MSH", 1, 18)) == "GB 18030-2000"
    items = running.drained()
    assert len(items) == 3
    patient = items[0][2]["entry"][0]["resource"]
    assert patient["name"][0]["text"] == "王億明"


async def test_many_connections_at_once(running: Running) -> None:
    async def one(i: int) -> tuple[str, str]:
        return msa(await exchange(running.port, SB + hl7kit.encode(
            hl7kit.adt(control=f"C{i}", mrn=f"P{i}")) + EB))

    results = await asyncio.gather(*(one(i) for i in range(30)))
    assert sorted(results) == sorted(("AA", f"C{i}") for i in range(30))
    assert len(running.drained()) == 30


async def test_a40_merge_is_queued_as_merge(running: Running) -> None:
    assert msa(await exchange(running.port, SB + hl7kit.encode(hl7kit.a40()) + EB)) == (
        "AA", "MRG0001")
    ((kind, _, params),) = running.drained()
    assert kind == "merge" and params["resourceType"] == "Parameters"


async def test_a40_waits_for_what_was_queued_for_the_merged_patient(running: Running) -> None:
    """The merge is keyed to the surviving patient, yet must not overtake a message of
    the merged one that is still waiting (the exchange would not know that patient)."""
    for text in (hl7kit.adt("A04", control="OLD1", mrn="MRN99999"),
                 hl7kit.a40(control="MRG2", survivor="MRN12345", merged="MRN99999")):
        assert msa(await exchange(running.port, SB + hl7kit.encode(text) + EB))[0] == "AA"
    claimed = running.outbox.claim(10)
    assert [m.kind for m in claimed] == ["bundle"]  # the A40 waits
    running.outbox.retry(claimed[0].id, "HTTP 503", 0)  # still not delivered
    assert [m.kind for m in running.outbox.claim(10)] == ["bundle"]
    running.outbox.done(claimed[0].id)
    assert [m.kind for m in running.outbox.claim(10)] == ["merge"]


@pytest.mark.parametrize("text,code,err", [
    (hl7kit.msh("ADT^A08", "BAD1") + "\rPID|1||7^^^H^MR||Zhang\\San", "AE", "102"),
    (hl7kit.msh("ADT^A08", "BAD2") + "\rPID|1||7^^^H^MR||\\Q\\", "AE", "102"),
    (hl7kit.msh("ADT^A03", "BAD3") + "\rPID|1||7^^^H^MR", "AR", "201"),
    (hl7kit.msh("QRY^A19", "BAD4") + "\rPID|1||7^^^H^MR", "AR", "200"),
    (hl7kit.msh("ADT^A01", "BAD5").replace("2.5", "9.9") + "\rPID|1||7", "AR", "203"),
    (hl7kit.msh("ADT^A01", "BAD6", charset="KOI8-R") + "\rPID|1||7", "AR", "103"),
])
async def test_bad_messages_get_ae_or_ar_with_err(running: Running, text: str, code: str,
                                                  err: str) -> None:
    ack = await exchange(running.port, SB + text.encode() + EB)
    assert msa(ack)[0] == code and msa(ack)[1].startswith("BAD")
    assert str(ack.extract_field("MSA", 1, 3))
    assert str(ack.extract_field("ERR", 1, 3, 1, 1)) == err
    assert running.drained() == []
    await still_serving(running.port)


async def test_wrong_msh_gets_ar(running: Running) -> None:
    ack = await exchange(running.port, SB + b"PID|1||7^^^H^MR\rMSH|^~\\&|X" + EB)
    assert msa(ack) == ("AR", "")
    await still_serving(running.port)


async def test_huge_message_gets_ar_and_the_connection_closes(running: Running) -> None:
    text = hl7kit.adt(control="HUGE") + "NTE|1||" + "x" * (2 * LIMIT) + "\r"
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(SB + text.encode() + EB)
    frame = await asyncio.wait_for(reader.readuntil(EB), 5)
    assert msa(hl7.parse(frame[1:-2].decode())) == ("AR", "HUGE")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    assert running.drained() == []
    await still_serving(running.port)


async def test_missing_end_block_before_next_message(running: Running) -> None:
    data = (SB + hl7kit.encode(hl7kit.adt(control="M1")) + SB
            + hl7kit.encode(hl7kit.adt(control="M2")) + EB)
    ack = await exchange(running.port, data)
    assert msa(ack) == ("AR", "M1")
    assert running.drained() == []
    await still_serving(running.port)


async def test_missing_end_block_at_end_of_stream(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(SB + hl7kit.encode(hl7kit.adt(control="EOF1")))
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert running.drained() == []
    await still_serving(running.port)


async def test_message_that_never_ends_is_cut_off(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(SB + hl7kit.encode(hl7kit.adt(control="SLOW")))
    await writer.drain()
    # read_timeout is 0.5 s: the server must close well before our 5 s patience.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await still_serving(running.port)


async def test_bytes_outside_a_block_close_the_connection(running: Running) -> None:
    assert await exchange(running.port, b"GET / HTTP/1.1\r\n\r\n") is None
    await still_serving(running.port)


async def test_outbox_failure_is_not_acknowledged_as_accepted(tmp_path: Path) -> None:
    class Broken:
        def put(self, *, patient_key: str, payload: bytes, kind: str = "bundle",
                source: str, after: str | None = None) -> int:
            raise OSError("disk full")

    server = await start_server("127.0.0.1", 0, outbox=Broken())
    try:
        port = server.sockets[0].getsockname()[1]
        ack = await exchange(port, SB + hl7kit.encode(hl7kit.adt(control="DISK")) + EB)
        assert msa(ack) == ("AE", "DISK")
    finally:
        server.close()


async def test_in_memory_outbox_matches_the_put_signature() -> None:
    outbox = hl7kit.MemoryOutbox()
    server = await start_server("127.0.0.1", 0, outbox=outbox)
    try:
        port = server.sockets[0].getsockname()[1]
        await exchange(port, SB + hl7kit.encode(hl7kit.oru()) + EB)
    finally:
        server.close()
    assert outbox.items[0]["source"] == "hl7v2" and outbox.items[0]["kind"] == "bundle"


async def test_default_limit_is_one_mebibyte(tmp_path: Path) -> None:
    outbox = hl7kit.MemoryOutbox()
    server = await start_server("127.0.0.1", 0, outbox=outbox)
    try:
        port = server.sockets[0].getsockname()[1]
        text = hl7kit.adt(control="MIB") + "NTE|1||" + "y" * (3 << 19) + "\r"
        assert msa(await exchange(port, SB + text.encode() + EB)) == ("AR", "MIB")
        assert msa(await exchange(port, SB + hl7kit.encode(hl7kit.adt()) + EB))[0] == "AA"
    finally:
        server.close()
    assert len(outbox.items) == 1


def test_settings_from_environment() -> None:
    s = ListenerSettings.from_env({
        "HIE_ADAPTER_HL7V2_MRN_SYSTEM": "urn:oid:1.2.3.1",
        "HIE_ADAPTER_HL7V2_MAX_MESSAGE_BYTES": "2048",
        "HIE_ADAPTER_HL7V2_READ_TIMEOUT": "2.5",
        "HIE_RESIDENT_ID_SYSTEM": "urn:oid:9.9"})
    assert s.mapping.mrn_system == "urn:oid:1.2.3.1"
    assert s.mapping.resident_id_system == "urn:oid:9.9"
    assert s.max_message_bytes == 2048 and s.read_timeout == 2.5
    assert s.mapping.visit_system == "urn:hie:hospital:visit"


async def test_serve_runs_until_cancelled(unused_tcp_port: int) -> None:
    from adapters.hl7v2.listener import serve

    task = asyncio.create_task(serve("127.0.0.1", unused_tcp_port,
                                     outbox=hl7kit.MemoryOutbox()))
    for _ in range(100):
        try:
            assert msa(await exchange(unused_tcp_port, SB + hl7kit.encode(hl7kit.adt())
                                      + EB))[0] == "AA"
            break
        except OSError:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("listener never came up")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
