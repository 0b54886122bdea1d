"""``hie demo`` seeds a region whose credentials file really lets one act as
each hospital and doctor against a running exchange."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from exchange_process import HospitalSystem, exchange_env, free_port, hie, running_exchange

from hie.identity.resident_id import is_valid


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder: Path = tmp_path_factory.mktemp("demo")
    port = free_port()
    creds_file = folder / "credentials.json"
    env = exchange_env(folder, f"http://127.0.0.1:{port}")
    hie("demo", "--credentials", str(creds_file), env=env)
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600  # it holds private keys
    creds = json.loads(creds_file.read_text())
    with running_exchange(folder, port):
        yield creds


def system(creds: dict, hospital: dict) -> HospitalSystem:
    return HospitalSystem(base=creds["base_url"], client_id=hospital["client_id"],
                          kid=hospital["kid"], private_pem=hospital["private_key_pem"],
                          alg=hospital["alg"])


def test_credentials_file_has_the_promised_shape(region: dict):
    assert region["token_url"] == region["base_url"] + "/auth/token"
    assert len(region["hospitals"]) == 3
    for h in region["hospitals"]:
        assert {"id", "name", "client_id", "kid", "alg", "private_key_pem",
                "practitioners"} <= set(h)
        assert h["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
        assert len(h["practitioners"]) >= 2
    assert len(region["patients"]) >= 6
    for p in region["patients"]:
        assert {"person_id", "name", "resident_id", "username", "password",
                "hospitals"} <= set(p)
        assert is_valid(p["resident_id"])
        assert p["person_id"] and p["password"]
    # patients with records at two hospitals are one regional person each
    assert any(len(p["hospitals"]) == 2 for p in region["patients"])


def test_each_hospital_acts_with_its_key_and_sees_its_records(region: dict):
    for h in region["hospitals"]:
        token = system(region, h).token()
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.get(f"{region['base_url']}/fhir/Patient", headers=headers,
                      params={"_summary": "count"})
        assert r.status_code == 200
        expected = sum(1 for p in region["patients"] if h["id"] in p["hospitals"])
        assert r.json()["total"] == expected


def test_a_doctor_acts_through_the_hospital_system(region: dict):
    h = region["hospitals"][0]
    doctor = h["practitioners"][0]["id"]
    token = system(region, h).doctor_token(doctor)
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{region['base_url']}/fhir/Condition", headers=headers)
    assert r.status_code == 200
    assert r.json()["entry"]
    # a doctor's token reads; it does not write
    denied = httpx.post(f"{region['base_url']}/fhir/Patient", headers=headers,
                        json={"resourceType": "Patient"})
    assert denied.status_code == 403
    # another hospital's doctor cannot be named by this hospital's system
    other = region["hospitals"][1]["practitioners"][0]["id"]
    with pytest.raises(AssertionError, match="invalid_grant"):
        system(region, h).doctor_token(other)


def test_the_demo_consents_open_records_to_the_granted_hospital(region: dict):
    zhang = next(p for p in region["patients"] if p["name"] == "张伟")
    provincial = next(h for h in region["hospitals"] if h["id"] == "provincial")
    cityfirst = next(h for h in region["hospitals"] if h["id"] == "cityfirst")
    identifier = f"urn:oid:2.16.156.10011.1.1|{zhang['resident_id']}"

    def everything(hospital: dict, token: str) -> set[str]:
        headers = {"Authorization": f"Bearer {token}"}
        own = httpx.get(f"{region['base_url']}/fhir/Patient", headers=headers,
                        params={"identifier": identifier}).json()
        pid = own["entry"][0]["resource"]["id"]
        bundle = httpx.get(f"{region['base_url']}/fhir/Patient/{pid}/$everything",
                           headers=headers, params={"_count": "500"}).json()
        return {e["resource"]["meta"]["source"] for e in bundle["entry"]}

    # the provincial hospital's doctor sees the city hospital's records (his consent) …
    doctor = system(region, provincial).doctor_token(provincial["practitioners"][0]["id"])
    assert "urn:hie:organization:cityfirst" in everything(provincial, doctor)
    # … but the city hospital's doctor does not see the provincial hospital's (no consent)
    doctor = system(region, cityfirst).doctor_token(cityfirst["practitioners"][0]["id"])
    assert everything(cityfirst, doctor) == {"urn:hie:organization:cityfirst"}
