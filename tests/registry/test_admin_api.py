"""The admin API needs an administrator's token; errors are problem JSON."""

from __future__ import annotations

import httpx
import pytest
from auth.trustkit import Hospital, get_token, register

from hie.auth.jwk import new_client_key
from hie.auth.tokens import TokenService
from hie.registry import service
from hie.store.base import Store


@pytest.fixture
def admin(tokens: TokenService) -> dict[str, str]:
    token, _, _ = tokens.issue(client_id="hie-admin-cli", organization="exchange", scope="",
                               roles=["admin"], lifetime=600)
    return {"Authorization": f"Bearer {token}"}


async def test_admin_routes_need_an_admin_token(http: httpx.AsyncClient, store: Store,
                                                hospital: Hospital):
    body = {"name": "Intruder", "id": "evil"}
    r = await http.post("/admin/organizations", json=body)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"].startswith("Bearer")
    # A body that would not even validate still gets 401 first.
    assert (await http.post("/admin/organizations", json={"x": 1})).status_code == 401
    hospital_token = await get_token(http, hospital.form())
    r = await http.post("/admin/organizations", json=body,
                        headers={"Authorization": f"Bearer {hospital_token}"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await service.get_organization(store, id="evil") is None  # nothing written


async def test_privacy_officers_are_not_administrators(http: httpx.AsyncClient,
                                                       tokens: TokenService):
    token, _, _ = tokens.issue(client_id="x", organization="exchange", scope="",
                               roles=["privacy-officer"])
    r = await http.get("/admin/organizations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


async def test_register_a_hospital_its_keys_doctors_and_accounts(http: httpx.AsyncClient,
                                                                 admin: dict[str, str]):
    _, k1 = new_client_key("ES384", kid="k1")
    r = await http.post("/admin/organizations", headers=admin,
                        json={"name": "华山医院", "id": "huashan", "jwks": {"keys": [k1]}})
    assert r.status_code == 201, r.text
    assert r.json()["client_id"] == "huashan"
    _, k2 = new_client_key("RS384", kid="k2")
    r = await http.post("/admin/organizations/huashan/keys", headers=admin, json=k2)
    assert r.status_code == 201
    assert [k["kid"] for k in r.json()["jwks"]["keys"]] == ["k1", "k2"]
    r = await http.delete("/admin/organizations/huashan/keys/k1", headers=admin)
    assert [k["kid"] for k in r.json()["jwks"]["keys"]] == ["k2"]
    r = await http.post("/admin/practitioners", headers=admin,
                        json={"organization": "huashan", "name": "Dr Zhao", "id": "hs-zhao"})
    assert r.status_code == 201 and r.json()["organization"] == "huashan"
    r = await http.get("/admin/practitioners", params={"organization": "huashan"},
                       headers=admin)
    assert [p["id"] for p in r.json()] == ["hs-zhao"]
    r = await http.patch("/admin/practitioners/hs-zhao", headers=admin, json={"active": False})
    assert r.json()["active"] is False
    assert (await http.get("/admin/practitioners/hs-zhao", headers=admin)).json()["active"] \
        is False
    r = await http.post("/admin/accounts", headers=admin,
                        json={"username": "zhao.lei", "password": "long enough pw",
                              "person_id": "person-9"})
    assert r.status_code == 201
    assert "password" not in r.text and "scrypt" not in r.text
    r = await http.patch("/admin/organizations/huashan", headers=admin, json={"active": False})
    assert r.json()["active"] is False
    assert [o["id"] for o in (await http.get("/admin/organizations", headers=admin)).json()] \
        == ["huashan"]


async def test_errors_are_problem_json(http: httpx.AsyncClient, admin: dict[str, str],
                                       store: Store):
    await register(store, "hospa", doctors=0)
    cases = [
        (http.post("/admin/organizations", headers=admin, json={"name": "A", "id": "hospa"}),
         409),
        (http.get("/admin/organizations/nobody", headers=admin), 404),
        (http.post("/admin/organizations/hospa/keys", headers=admin,
                   json={"kty": "oct", "k": "c2VjcmV0", "kid": "s"}), 400),
        (http.post("/admin/practitioners", headers=admin,
                   json={"organization": "nobody", "name": "X"}), 404),
        (http.post("/admin/accounts", headers=admin,
                   json={"username": "ab", "password": "x", "person_id": "p"}), 400),
        (http.post("/admin/organizations", headers=admin, json={"name": "A", "bogus": 1}), 400),
    ]
    for call, status in cases:
        r = await call
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == status


async def test_internal_documents_are_not_reachable_through_fhir(
        http: httpx.AsyncClient, hospital: Hospital):
    auth = {"Authorization": f"Bearer {await get_token(http, hospital.form())}"}
    assert (await http.get("/fhir/Organization/hospa", headers=auth)).status_code == 200
    for path in ("/fhir/_Client/hospa", "/fhir/_Client", "/fhir/_Staff/hospa-dr0",
                 "/fhir/_Account"):
        assert (await http.get(path, headers=auth)).status_code == 404
