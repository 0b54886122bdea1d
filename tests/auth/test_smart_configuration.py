"""The public discovery documents: SMART configuration and the exchange's JWKS."""

from __future__ import annotations

import httpx


async def test_smart_configuration_is_public_and_describes_backend_services(
        http: httpx.AsyncClient):
    r = await http.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.json()
    assert conf["token_endpoint"] == "http://testserver/auth/token"
    assert conf["jwks_uri"] == "http://testserver/auth/jwks"
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert set(conf["grant_types_supported"]) == {
        "client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(
        conf["capabilities"])
    assert "system/*.cruds" in conf["scopes_supported"]


async def test_jwks_is_public(http: httpx.AsyncClient):
    r = await http.get("/auth/jwks")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert len(keys) == 1 and keys[0]["kid"].startswith("hie-")
    assert not {"d", "p", "q"} & keys[0].keys()
