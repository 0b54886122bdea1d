"""The jwt-bearer grant: a doctor acting through their hospital's system."""

from __future__ import annotations

import time

import httpx
import jwt
from auth.trustkit import Hospital, refused, sign

from hie.auth.tokens import TokenService
from hie.registry import service as registry
from hie.store.base import Store


async def test_treatment_token_names_the_practitioner_and_purpose(
        http: httpx.AsyncClient, hospital: Hospital, tokens: TokenService):
    doctor = hospital.practitioners[0].id
    r = await http.post("/auth/token", data=hospital.doctor_form(
        doctor, scope="user/*.cruds", consultation="ServiceRequest/hospa-c1"))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "user/*.rs"  # narrowed: doctors read and search
    claims = tokens.verify(r.json()["access_token"])
    assert claims["practitioner"] == doctor
    assert claims["fhirUser"] == f"Practitioner/{doctor}"
    assert claims["organization"] == "hospa"
    assert claims["purpose_of_use"] == "TREAT"
    assert claims["consultation"] == "ServiceRequest/hospa-c1"
    assert "reason" not in claims


async def test_break_the_glass_needs_a_reason(http: httpx.AsyncClient, hospital: Hospital,
                                              tokens: TokenService):
    doctor = hospital.practitioners[0].id
    await refused(http, hospital.doctor_form(doctor, purpose="ETREAT"), "invalid_grant")
    await refused(http, hospital.doctor_form(doctor, purpose="ETREAT", reason="   "),
                  "invalid_grant")
    r = await http.post("/auth/token", data=hospital.doctor_form(
        doctor, purpose="ETREAT", reason="unconscious patient in A&E"))
    assert r.status_code == 200, r.text
    claims = tokens.verify(r.json()["access_token"])
    assert (claims["purpose_of_use"], claims["reason"]) == ("ETREAT",
                                                            "unconscious patient in A&E")


async def test_purpose_must_be_known(http: httpx.AsyncClient, hospital: Hospital):
    doctor = hospital.practitioners[0].id
    for purpose in (None, "HPAYMT", "treat", ""):
        await refused(http, hospital.doctor_form(doctor, purpose=purpose), "invalid_grant")


async def test_practitioner_must_belong_to_the_hospital(
        http: httpx.AsyncClient, hospital: Hospital, other_hospital: Hospital, store: Store):
    await refused(http, hospital.doctor_form("hospa-nobody"), "invalid_grant")
    await refused(http, hospital.doctor_form(other_hospital.practitioners[0].id),
                  "invalid_grant")
    await registry.set_practitioner_active(store, id="hospa-dr0", active=False)
    await refused(http, hospital.doctor_form("hospa-dr0"), "invalid_grant")


async def test_assertion_must_be_signed_by_the_authenticated_hospital(
        http: httpx.AsyncClient, hospital: Hospital, other_hospital: Hospital):
    doctor = other_hospital.practitioners[0].id
    # B's own assertion about B's doctor, presented by A's system.
    form = hospital.form("user/*.rs", grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
                         assertion=other_hospital.doctor_assertion(doctor))
    await refused(http, form, "invalid_grant")
    # A's key but claiming B as issuer.
    claims = {"iss": "hospb", "sub": doctor, "aud": "http://testserver/auth/token",
              "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "x1",
              "purpose_of_use": "TREAT"}
    form["assertion"] = sign(claims, hospital.pem, alg="ES384", kid=hospital.kid)
    await refused(http, form, "invalid_grant")


async def test_grant_assertion_gets_the_same_strict_checks(http: httpx.AsyncClient,
                                                           hospital: Hospital):
    doctor = hospital.practitioners[0].id
    now = int(time.time())
    for overrides in ({"exp": now + 900}, {"aud": "http://testserver/fhir"}, {"jti": None},
                      {"iat": None}, {"exp": now - 100, "iat": now - 200}):
        await refused(http, hospital.doctor_form(doctor, **overrides), "invalid_grant")
    form = hospital.doctor_form(doctor)
    form["assertion"] = sign(jwt.decode(form["assertion"], options={"verify_signature": False}),
                             hospital.pem, alg="ES384", kid="unknown-kid")
    await refused(http, form, "invalid_grant")


async def test_replayed_grant_assertion_is_refused(http: httpx.AsyncClient,
                                                   hospital: Hospital):
    form = hospital.doctor_form(hospital.practitioners[0].id)
    assert (await http.post("/auth/token", data=form)).status_code == 200
    form["client_assertion"] = hospital.client_assertion()  # fresh client authentication
    body = await refused(http, form, "invalid_grant")
    assert "replay" in body["error_description"]


async def test_doctors_get_no_system_scopes(http: httpx.AsyncClient, hospital: Hospital):
    await refused(http, hospital.doctor_form(hospital.practitioners[0].id,
                                             scope="system/*.cruds"), "invalid_scope")


async def test_missing_assertion(http: httpx.AsyncClient, hospital: Hospital):
    form = hospital.form("user/*.rs", grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")
    await refused(http, form, "invalid_request")
