"""SMART scope parsing and granting (v2 letters, v1 words)."""

from __future__ import annotations

import pytest

from hie.auth.scopes import (
    DOCTOR_ALLOWED,
    SYSTEM_ALLOWED,
    ScopeError,
    grant,
    parse_scope,
    parse_scopes,
    permits,
    render,
)


@pytest.mark.parametrize(("text", "perms"), [
    ("system/*.cruds", "cruds"), ("system/Observation.rs", "rs"), ("user/*.rs", "rs"),
    ("system/Patient.cud", "cud"), ("system/*.read", "rs"), ("system/*.write", "cud"),
    ("system/*.*", "cruds"), ("patient/Observation.r", "r"),
])
def test_v2_and_v1_forms_parse(text: str, perms: str):
    assert parse_scope(text).permissions == perms


@pytest.mark.parametrize("text", [
    "system/*.src", "system/*.rr", "system/*.", "system/observation.rs", "admin/*.rs",
    "system/*.rs?category=lab", "openid", "system/*.readwrite", "system/Patient",
])
def test_malformed_scopes_are_refused(text: str):
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_grant_is_the_intersection_in_the_requested_form():
    requested = parse_scopes("system/*.read system/Observation.cruds user/*.rs patient/*.rs")
    assert render(grant(requested, SYSTEM_ALLOWED)) == "system/*.read system/Observation.cruds"
    doctor = grant(parse_scopes("user/*.cruds user/Encounter.read system/*.rs"),
                   DOCTOR_ALLOWED)
    assert render(doctor) == "user/*.rs user/Encounter.read"


def test_permits_checks_type_and_interaction():
    scopes = parse_scopes("system/Observation.rs system/Patient.c")
    assert permits(scopes, "Observation", "r")
    assert permits(scopes, "Patient", "c")
    assert not permits(scopes, "Encounter", "r")
    assert not permits(scopes, "Observation", "u")
    assert permits(parse_scopes("user/*.read"), "Encounter", "s")
    with pytest.raises(ValueError):
        permits(scopes, "Patient", "rs")
