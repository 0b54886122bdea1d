"""Registry services on both store back ends."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hie.auth.jwk import new_client_key
from hie.registry import service
from hie.registry.models import ACCOUNT, CLIENT, EXCHANGE_SOURCE, STAFF
from hie.store.base import Store


async def test_organization_is_fhir_plus_an_internal_client(any_store: Store):
    _, jwk = new_client_key("ES384", kid="k1")
    org = await service.create_organization(any_store, name="仁济医院", id="renji",
                                            client_id="renji-his", jwks={"keys": [jwk]})
    fhir = await any_store.read("Organization", "renji")
    assert fhir is not None and fhir.source == EXCHANGE_SOURCE
    body = orjson.loads(fhir.body)
    assert body["name"] == "仁济医院" and body["meta"]["source"] == EXCHANGE_SOURCE
    assert "jwks" not in body  # keys live in the internal document only
    assert (await any_store.read(CLIENT, "renji")) is not None
    found = await service.get_client(any_store, client_id="renji-his")
    assert found == org and found.keys_with_kid("k1") == [jwk]
    assert await service.get_client(any_store, client_id="renji") is None
    assert [o.id for o in await service.list_organizations(any_store)] == ["renji"]


async def test_ids_and_client_ids_are_unique(any_store: Store):
    await service.create_organization(any_store, name="A", id="hospa")
    with pytest.raises(service.Conflict):
        await service.create_organization(any_store, name="A again", id="hospa")
    with pytest.raises(service.Conflict):
        await service.create_organization(any_store, name="B", id="hospb", client_id="hospa")
    for bad in ("Hosp-A", "hosp-a", "exchange", "x" * 33):
        with pytest.raises(service.RegistryError):
            await service.create_organization(any_store, name="bad", id=bad)


async def test_concurrent_registrations_of_one_client_id_leave_one(any_store: Store):
    results = await asyncio.gather(
        *[service.create_organization(any_store, name=f"H{n}", id=f"h{n}", client_id="same")
          for n in range(5)], return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, service.Conflict) for r in results if isinstance(r, Exception))


async def test_keys_rotate_by_add_and_remove(any_store: Store):
    _, k1 = new_client_key("ES384", kid="k1")
    _, k2 = new_client_key("RS384", kid="k2")
    await service.create_organization(any_store, name="A", id="hospa", jwks={"keys": [k1]})
    org = await service.add_key(any_store, organization="hospa", jwk=k2)
    assert [k["kid"] for k in org.keys] == ["k1", "k2"]
    with pytest.raises(service.Conflict):
        await service.add_key(any_store, organization="hospa", jwk=k1)
    org = await service.remove_key(any_store, organization="hospa", kid="k1")
    assert [k["kid"] for k in org.keys] == ["k2"]
    assert (await service.get_client(any_store, client_id="hospa")).keys == org.keys
    with pytest.raises(service.NotFound):
        await service.remove_key(any_store, organization="hospa", kid="k1")
    with pytest.raises(service.NotFound):
        await service.add_key(any_store, organization="nobody", jwk=k1)


async def test_unsafe_keys_are_refused(any_store: Store):
    _, ec_jwk = new_client_key("ES384", kid="k1")
    bad = [
        {**ec_jwk, "d": "c2VjcmV0"},                         # private key material
        {**ec_jwk, "alg": "HS256"},
        {**ec_jwk, "alg": "RS384"},                          # alg of another key type
        {**ec_jwk, "crv": "P-256"},
        {k: v for k, v in ec_jwk.items() if k != "kid"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"},
        {**ec_jwk, "x": "AAAA"},
    ]
    for jwk in bad:
        with pytest.raises(service.RegistryError):
            await service.create_organization(any_store, name="A", id="hospa",
                                              jwks={"keys": [jwk]})
    with pytest.raises(service.RegistryError):
        await service.create_organization(any_store, name="A", id="hospa",
                                          jwks={"keys": [ec_jwk, ec_jwk]})  # duplicate kid
    assert await service.list_organizations(any_store) == []


def test_small_rsa_keys_are_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from hie.auth.jwk import InvalidKey, jwk_from_pem

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidKey):
        jwk_from_pem(pem, kid="small")


async def test_practitioners_belong_to_one_hospital(any_store: Store):
    await service.create_organization(any_store, name="A", id="hospa")
    prac = await service.create_practitioner(any_store, organization="hospa", name="王医生",
                                             id="hospa-wang", roles=["privacy-officer"])
    assert (await service.get_practitioner(any_store, id="hospa-wang")) == prac
    fhir = orjson.loads((await any_store.read("Practitioner", "hospa-wang")).body)
    assert fhir["name"] == [{"text": "王医生"}]
    assert (await any_store.read(STAFF, "hospa-wang")) is not None
    assert [p.id for p in await service.list_practitioners(any_store,
                                                            organization="hospa")] == [prac.id]
    with pytest.raises(service.NotFound):
        await service.create_practitioner(any_store, organization="nobody", name="X")
    with pytest.raises(service.Conflict):
        await service.create_practitioner(any_store, organization="hospa", name="Y",
                                          id="hospa-wang")
    with pytest.raises(service.RegistryError):
        await service.create_practitioner(any_store, organization="hospa", name="Z",
                                          roles=["superuser"])


async def test_accounts_keep_only_a_salted_hash(any_store: Store):
    account = await service.create_account(any_store, username="Li.Na",
                                           password="correct horse", person_id="person-1")
    assert account.username == "li.na"
    stored = await any_store.read(ACCOUNT, account.id)
    assert b"correct horse" not in stored.body
    assert orjson.loads(stored.body)["password"].startswith("scrypt$")
    ok = await service.verify_password(any_store, username="LI.NA", password="correct horse")
    assert ok is not None and ok.person_id == "person-1"
    assert await service.verify_password(any_store, username="li.na", password="wrong") is None
    assert await service.verify_password(any_store, username="nobody",
                                         password="correct horse") is None
    with pytest.raises(service.Conflict):
        await service.create_account(any_store, username="li.na", password="another one!",
                                     person_id="person-2")
    with pytest.raises(service.RegistryError):
        await service.create_account(any_store, username="zhang", password="short",
                                     person_id="person-3")
