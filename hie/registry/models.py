"""What the registry holds, and how each noun is kept in the store.

Every entry is stored through the :class:`~hie.store.base.Store` interface, so
both back ends hold it:

* Hospitals and practitioners are FHIR ``Organization`` and ``Practitioner``
  resources (clinical data and Provenance reference them), written with
  ``meta.source`` ``urn:hie:organization:exchange``.
* What is not FHIR — a hospital's client registration with its JWKS, which
  hospital a practitioner works for, portal accounts with password hashes — is
  kept in internal documents whose type starts with an underscore
  (:data:`CLIENT`, :data:`STAFF`, :data:`ACCOUNT`). The FHIR router serves only
  ``schemas.resource_types.RESOURCE_TYPES``, so these are never reachable
  through ``/fhir``. Their search indexes are built by hand here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hie.context import organization_source

#: The exchange itself, as the author of registry entries and of admin tokens.
EXCHANGE_ORGANIZATION = "exchange"
EXCHANGE_SOURCE = organization_source(EXCHANGE_ORGANIZATION)

ROLE_ADMIN = "admin"
ROLE_PRIVACY_OFFICER = "privacy-officer"
#: Roles a client, a practitioner or an admin token can hold.
ROLES = (ROLE_ADMIN, ROLE_PRIVACY_OFFICER)

CLIENT = "_Client"
STAFF = "_Staff"
ACCOUNT = "_Account"

#: Organisation ids are lowercase letters and digits only: they prefix the ids a
#: hospital chooses (``<org>-…``, see ``hie.fhir.tenancy``), and without a ``-``
#: in them no hospital's prefix can be the start of another's.
ORGANIZATION_ID = re.compile(r"^[a-z0-9]{1,32}$")
#: FHIR ``id``.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
CLIENT_ID = re.compile(r"^[A-Za-z0-9\-._~:]{1,128}$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MIN_PASSWORD = 10


@dataclass(frozen=True, slots=True)
class Organization:
    """A hospital and its client registration (one client per hospital)."""

    id: str
    name: str
    client_id: str
    active: bool = True
    roles: tuple[str, ...] = ()
    keys: tuple[dict[str, Any], ...] = ()  # public JWKs, checked by hie.auth.jwk
    version: int = 1

    def keys_with_kid(self, kid: str) -> list[dict[str, Any]]:
        """The registered keys carrying this ``kid`` (a token must match exactly one)."""
        return [k for k in self.keys if k.get("kid") == kid]

    def public(self) -> dict[str, Any]:
        """The admin API's view (public keys only ever exist here)."""
        return {"id": self.id, "name": self.name, "client_id": self.client_id,
                "active": self.active, "roles": list(self.roles),
                "jwks": {"keys": list(self.keys)}}


@dataclass(frozen=True, slots=True)
class Practitioner:
    """A doctor (or other clinician) working for one hospital."""

    id: str
    name: str
    organization: str
    active: bool = True
    roles: tuple[str, ...] = ()
    version: int = 1

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "organization": self.organization,
                "active": self.active, "roles": list(self.roles)}


@dataclass(frozen=True, slots=True)
class Account:
    """A patient portal login, linked to one regional person."""

    id: str
    username: str
    person_id: str
    password_hash: str = field(repr=False)
    active: bool = True
    version: int = 1

    def public(self) -> dict[str, Any]:
        """Everything but the password hash."""
        return {"id": self.id, "username": self.username, "person_id": self.person_id,
                "active": self.active}


# -- documents ---------------------------------------------------------------

def client_document(org: Organization) -> dict[str, Any]:
    return {"organization": org.id, "name": org.name, "client_id": org.client_id,
            "active": org.active, "roles": list(org.roles), "jwks": {"keys": list(org.keys)}}


def organization_from(doc: dict[str, Any], version: int) -> Organization:
    return Organization(id=doc["organization"], name=doc["name"], client_id=doc["client_id"],
                        active=bool(doc["active"]), roles=tuple(doc.get("roles", ())),
                        keys=tuple(doc["jwks"]["keys"]), version=version)


def staff_document(p: Practitioner) -> dict[str, Any]:
    return {"practitioner": p.id, "name": p.name, "organization": p.organization,
            "active": p.active, "roles": list(p.roles)}


def practitioner_from(doc: dict[str, Any], version: int) -> Practitioner:
    return Practitioner(id=doc["practitioner"], name=doc["name"],
                        organization=doc["organization"], active=bool(doc["active"]),
                        roles=tuple(doc.get("roles", ())), version=version)


def account_document(a: Account) -> dict[str, Any]:
    return {"username": a.username, "person_id": a.person_id,
            "password": a.password_hash, "active": a.active}


def account_from(id_: str, doc: dict[str, Any], version: int) -> Account:
    return Account(id=id_, username=doc["username"], person_id=doc["person_id"],
                   password_hash=doc["password"], active=bool(doc["active"]), version=version)


def fhir_organization(org: Organization) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": org.id, "active": org.active,
            "type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                "code": "prov", "display": "Healthcare Provider"}]}],
            "name": org.name}


def fhir_practitioner(p: Practitioner) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": p.id, "active": p.active,
            "name": [{"text": p.name}]}


# -- admin API request bodies ------------------------------------------------

class NewOrganization(BaseModel):
    """``POST /admin/organizations``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    id: str | None = None
    client_id: str | None = None
    jwks: dict[str, Any] | None = None
    roles: list[str] = []
    active: bool = True


class ActiveChange(BaseModel):
    """``PATCH /admin/organizations/{id}`` and ``/admin/practitioners/{id}``."""

    model_config = ConfigDict(extra="forbid")
    active: bool


class NewPractitioner(BaseModel):
    """``POST /admin/practitioners``."""

    model_config = ConfigDict(extra="forbid")
    organization: str
    name: str = Field(min_length=1, max_length=200)
    id: str | None = None
    roles: list[str] = []


class NewAccount(BaseModel):
    """``POST /admin/accounts``."""

    model_config = ConfigDict(extra="forbid")
    username: str
    password: str = Field(repr=False, max_length=1024)
    person_id: str
