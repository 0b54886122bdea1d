"""The mapped Bundles against a real exchange: accepted as transactions, and a
re-send creates nothing new (conditional update/create on the hospital's ids); an A40
through listener, outbox and pusher merges the two registrations at the exchange."""

import asyncio
from pathlib import Path

import hl7kit
import httpx
from adapter_exchange import Exchange
from hl7.mllp import open_hl7_connection

from adapters.client import ExchangeClient
from adapters.hl7v2.listener import ListenerSettings, start_server
from adapters.hl7v2.mapping import MappingSettings, map_message
from adapters.hl7v2.message import parse
from adapters.outbox import Outbox
from adapters.pusher import Pusher

SETTINGS = MappingSettings(mrn_system="urn:oid:1.2.156.9.1", visit_system="urn:oid:1.2.156.9.2")
MRN = MappingSettings().mrn_system  # what the listener uses without settings


def test_adt_and_oru_twice_make_no_duplicates(exchange: Exchange) -> None:
    headers = {"Authorization": f"Bearer {exchange.token()}",
               "Content-Type": "application/fhir+json"}
    for text in (hl7kit.adt(), hl7kit.oru(), hl7kit.adt("A08"), hl7kit.oru()):
        out = map_message(parse(hl7kit.encode(text)), SETTINGS)
        r = httpx.post(f"{exchange.base}/fhir", content=out.payload, headers=headers)
        assert r.status_code == 200, r.text
    assert exchange.count("Patient", identifier="urn:oid:1.2.156.9.1|MRN12345") == 1
    assert exchange.count("Encounter") == 1
    assert exchange.count("Observation") == 5
    assert exchange.count("DiagnosticReport") == 1


async def test_a40_through_the_adapter_merges_at_the_exchange(exchange: Exchange,
                                                              tmp_path: Path) -> None:
    """HIS messages over MLLP → outbox → pusher → the exchange: after the A40, a search by
    the surviving patient finds the merged patient's results too; a re-sent A40 changes
    nothing."""
    box = Outbox(tmp_path / "outbox.db")
    server = await start_server("127.0.0.1", 0, outbox=box, settings=ListenerSettings())
    port = server.sockets[0].getsockname()[1]
    client = ExchangeClient(exchange.base, client_id=exchange.client_id,
                            private_pem=exchange.private_pem, kid=exchange.kid)

    async def send(text: str) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port)
        try:
            writer.writeblock(hl7kit.encode(text))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 10)
            assert str(ack.segment("MSA")[1]) == "AA", str(ack)
        finally:
            writer.close()

    async def push() -> None:
        await asyncio.to_thread(Pusher(box, client).run, drain=True)
        assert box.status().dead_letters == []

    def results_of(mrn: str) -> int:
        [found] = httpx.get(f"{exchange.base}/fhir/Patient",
                            params={"identifier": f"{MRN}|{mrn}"},
                            headers={"Authorization": f"Bearer {exchange.token()}"}
                            ).json()["entry"]
        return exchange.count("Observation", subject=f"Patient/{found['resource']['id']}")

    try:
        await send(hl7kit.oru(control="M1", mrn="MRGOLD", name="王^五", filler="MF1"))
        await send(hl7kit.oru(control="M2", mrn="MRGNEW", name="赵^六", filler="MF2"))
        await push()
        assert (results_of("MRGOLD"), results_of("MRGNEW")) == (5, 5)
        for control in ("M3", "M4"):  # the A40, and the same A40 sent again
            await send(hl7kit.a40(control=control, survivor="MRGNEW", merged="MRGOLD"))
            await push()
            assert results_of("MRGNEW") == 10
    finally:
        server.close()
        client.close()
        box.close()
