"""The mapped Bundles against a real exchange: accepted as transactions, and a
re-send creates nothing new (conditional update/create on the hospital's ids)."""

import hl7kit
import httpx
from adapter_exchange import Exchange

from adapters.hl7v2.mapping import MappingSettings, map_message
from adapters.hl7v2.message import parse

SETTINGS = MappingSettings(mrn_system="urn:oid:1.2.156.9.1", visit_system="urn:oid:1.2.156.9.2")


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
