"""Search over HTTP: parameter types, prefixes, modifiers, chaining, includes,
sorting, paging and result parameters."""

from __future__ import annotations

import httpx
import pytest
from fhirdata import MRN_SYSTEM, condition, encounter, observation, patient

FHIR = "/fhir"
LOINC = "http://loinc.org"


async def post(client: httpx.AsyncClient, resource: dict) -> dict:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


async def ids(client: httpx.AsyncClient, rtype: str, params: dict | list) -> list[str]:
    r = await client.get(f"{FHIR}/{rtype}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", [])
            if e["search"]["mode"] == "match"]


@pytest.fixture
async def region(client: httpx.AsyncClient) -> dict:
    """Two patients with observations, conditions and encounters."""
    wang = await post(client, patient(mrn="W1", family="王", given="秀英", birth="1975-03-14"))
    li = await post(client, patient(mrn="L1", family="Li", given="Héléna", birth="1990-11",
                                     gender="male"))
    w, lr = f"Patient/{wang['id']}", f"Patient/{li['id']}"
    obs = [await post(client, observation(w, "8480-6", 128, "2024-03-01T08:30:00+08:00")),
           await post(client, observation(w, "8480-6", 142, "2024-05-10T09:00:00+08:00")),
           await post(client, observation(w, "2339-0", 6.1, "2024-05-10T09:05:00+08:00",
                                          "mmol/L")),
           await post(client, observation(lr, "8480-6", 118, "2023-12-31T23:30:00-05:00"))]
    cond = [await post(client, condition(w, "I10")), await post(client, condition(lr, "E11.9"))]
    enc = [await post(client, encounter(w)),
           await post(client, encounter(lr, "2024-06-01T10:00:00+08:00",
                                        "2024-06-03T10:00:00+08:00"))]
    return {"wang": wang, "li": li, "obs": obs, "cond": cond, "enc": enc}


async def test_token_forms(client: httpx.AsyncClient, region: dict):
    wang = region["wang"]["id"]
    assert await ids(client, "Patient", {"identifier": f"{MRN_SYSTEM}|W1"}) == [wang]
    assert await ids(client, "Patient", {"identifier": "W1"}) == [wang]
    assert await ids(client, "Patient", {"identifier": "|W1"}) == []
    assert len(await ids(client, "Patient", {"identifier": f"{MRN_SYSTEM}|"})) == 2
    assert await ids(client, "Patient", {"gender": "female"}) == [wang]
    assert await ids(client, "Patient", {"gender:not": "male"}) == [wang]
    bp = await ids(client, "Observation", {"code": f"{LOINC}|8480-6"})
    assert len(bp) == 3


async def test_string_default_exact_contains_and_cjk(client: httpx.AsyncClient, region: dict):
    li = region["li"]["id"]
    assert await ids(client, "Patient", {"given": "helena"}) == [li]
    assert await ids(client, "Patient", {"given": "HEL"}) == [li]
    assert await ids(client, "Patient", {"given:exact": "helena"}) == []
    assert await ids(client, "Patient", {"given:exact": "Héléna"}) == [li]
    assert await ids(client, "Patient", {"given:contains": "len"}) == [li]
    assert await ids(client, "Patient", {"family": "王"}) == [region["wang"]["id"]]
    assert await ids(client, "Patient", {"name": "秀"}) == [region["wang"]["id"]]


async def test_date_prefixes_partial_dates_and_time_zones(client: httpx.AsyncClient,
                                                          region: dict):
    o = [x["id"] for x in region["obs"]]
    assert sorted(await ids(client, "Observation", {"date": "2024-05"})) == sorted(o[1:3])
    assert await ids(client, "Observation", {"date": "lt2024-01-01"}) == []
    # 23:30 at -05:00 on Dec 31 is 04:30 UTC on Jan 1
    assert await ids(client, "Observation", {"date": "2024-01-01"}) == [o[3]]
    assert sorted(await ids(client, "Observation", {"date": "ge2024-03-01"})) == sorted(o[:3])
    between = await ids(client, "Observation", [("date", "gt2024-03-01"),
                                                ("date", "lt2024-05-10T01:02:00Z")])
    assert between == [o[1]]
    assert await ids(client, "Observation", {"date": "2024-03-01T00:30:00Z"}) == [o[0]]
    assert await ids(client, "Patient", {"birthdate": "1990"}) == [region["li"]["id"]]
    assert await ids(client, "Patient", {"birthdate": "le1980"}) == [region["wang"]["id"]]
    assert sorted(await ids(client, "Observation", {"date": "ne2024-05-10"})) == \
        sorted([o[0], o[3]])


async def test_period_dates(client: httpx.AsyncClient, region: dict):
    e = [x["id"] for x in region["enc"]]
    # eq needs the search range to contain the whole period; ge+le finds overlap
    assert await ids(client, "Encounter", {"date": "2024-06-02"}) == []
    assert await ids(client, "Encounter", [("date", "ge2024-06-02"),
                                           ("date", "le2024-06-02")]) == [e[1]]
    assert await ids(client, "Encounter", {"date": "2024-06"}) == [e[1]]
    assert await ids(client, "Encounter", {"date": "sa2024-05-01"}) == [e[1]]
    assert await ids(client, "Encounter", {"date": "eb2024-05-01"}) == [e[0]]


async def test_quantity_prefixes(client: httpx.AsyncClient, region: dict):
    o = [x["id"] for x in region["obs"]]
    assert sorted(await ids(client, "Observation", {"value-quantity": "gt120"})) == \
        sorted([o[0], o[1]])
    assert await ids(client, "Observation",
                     {"value-quantity": "6.1|http://unitsofmeasure.org|mmol/L"}) == [o[2]]
    assert await ids(client, "Observation", {"value-quantity": "6.1||mg"}) == []
    assert await ids(client, "Observation", {"value-quantity": "ap143"}) == [o[1]]


async def test_or_and_and_missing(client: httpx.AsyncClient, region: dict):
    c = [x["id"] for x in region["cond"]]
    assert sorted(await ids(client, "Condition", {"code": "I10,E11.9"})) == sorted(c)
    both = [("code", "I10,E11.9"), ("subject", f"Patient/{region['wang']['id']}")]
    assert await ids(client, "Condition", both) == [c[0]]
    assert await ids(client, "Condition", {"onset-date:missing": "true"}) == []
    assert len(await ids(client, "Condition", {"onset-date:missing": "false"})) == 2


async def test_reference_forms_and_chaining(client: httpx.AsyncClient, region: dict):
    wang = region["wang"]["id"]
    mine = sorted(x["id"] for x in region["obs"][:3])
    assert sorted(await ids(client, "Observation", {"subject": f"Patient/{wang}"})) == mine
    assert sorted(await ids(client, "Observation", {"subject": wang})) == mine
    assert sorted(await ids(client, "Observation", {"patient": wang})) == mine
    assert sorted(await ids(client, "Observation",
                            {"subject": f"http://testserver/fhir/Patient/{wang}"})) == mine
    chained = await ids(client, "Observation",
                        {"subject:Patient.identifier": f"{MRN_SYSTEM}|W1"})
    assert sorted(chained) == mine
    assert sorted(await ids(client, "Observation", {"patient.family": "王"})) == mine


async def test_include_and_revinclude(client: httpx.AsyncClient, region: dict):
    wang = region["wang"]["id"]
    r = (await client.get(f"{FHIR}/Observation",
                          params={"code": "2339-0", "_include": "Observation:subject"})).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in r["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include")}
    r = (await client.get(f"{FHIR}/Patient",
                          params={"_id": wang, "_revinclude": "Observation:subject"})).json()
    assert r["total"] == 1
    included = [e for e in r["entry"] if e["search"]["mode"] == "include"]
    assert len(included) == 3
    assert {e["resource"]["resourceType"] for e in included} == {"Observation"}


async def test_sort_several_keys(client: httpx.AsyncClient, region: dict):
    o = region["obs"]
    by_date = await ids(client, "Observation", {"_sort": "date"})
    assert by_date == [o[3]["id"], o[0]["id"], o[1]["id"], o[2]["id"]]
    desc = await ids(client, "Observation", {"_sort": "-date"})
    assert desc == list(reversed(by_date))
    by_code_then_date = await ids(client, "Observation", {"_sort": "code,-date"})
    assert by_code_then_date == [o[2]["id"], o[1]["id"], o[0]["id"], o[3]["id"]]


async def test_summary_count_total_and_elements(client: httpx.AsyncClient, region: dict):
    r = (await client.get(f"{FHIR}/Observation", params={"_summary": "count"})).json()
    assert r["total"] == 4
    assert "entry" not in r
    r = (await client.get(f"{FHIR}/Observation",
                          params={"_count": "1", "_total": "accurate"})).json()
    assert r["total"] == 4
    assert len(r["entry"]) == 1
    r = (await client.get(f"{FHIR}/Patient", params={"_elements": "gender"})).json()
    res = r["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])


async def test_id_and_last_updated(client: httpx.AsyncClient, region: dict):
    wang = region["wang"]
    assert await ids(client, "Patient", {"_id": wang["id"]}) == [wang["id"]]
    stamp = wang["meta"]["lastUpdated"]
    assert wang["id"] in await ids(client, "Patient", {"_lastUpdated": f"ge{stamp}"})
    assert await ids(client, "Patient", {"_lastUpdated": "lt2000-01-01"}) == []


async def test_paging_stays_correct_while_writing(client: httpx.AsyncClient):
    first = [await post(client, patient(mrn=f"P{i}", family="Page")) for i in range(7)]
    r = (await client.get(f"{FHIR}/Patient", params={"family": "Page", "_count": "3"})).json()
    seen = [e["resource"]["id"] for e in r["entry"]]
    # new data arrives between pages
    late = await post(client, patient(mrn="P99", family="Page"))
    url = next(link["url"] for link in r["link"] if link["relation"] == "next")
    while url:
        page = (await client.get(url.removeprefix("http://testserver"))).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    expected = [p["id"] for p in first] + [late["id"]]
    assert seen == expected  # no duplicates, no gaps, in insertion order


async def test_sorted_paging_ignores_later_writes(client: httpx.AsyncClient):
    for i in range(5):
        await post(client, patient(mrn=f"S{i}", family=f"Sort{i}"))
    r = (await client.get(f"{FHIR}/Patient", params={"_sort": "-family", "_count": "2"})).json()
    seen = [e["resource"]["name"][0]["family"] for e in r["entry"]]
    await post(client, patient(mrn="S9", family="Sort9"))  # would sort first
    url = next(link["url"] for link in r["link"] if link["relation"] == "next")
    while url:
        page = (await client.get(url.removeprefix("http://testserver"))).json()
        seen += [e["resource"]["name"][0]["family"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == ["Sort4", "Sort3", "Sort2", "Sort1", "Sort0"]


async def test_post_search(client: httpx.AsyncClient, region: dict):
    r = await client.post(f"{FHIR}/Patient/_search", content=b"gender=male",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [region["li"]["id"]]
