"""Registry services: plain async functions over the store, keyword-only arguments.

Each write runs in one store transaction; uniqueness (organisation id, client
id, username, ``kid`` within a client) is checked inside it — SQLite holds its
write lock for the whole transaction, MongoDB serialises on ``tx.lock`` — so two
concurrent registrations cannot both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from hie.auth.jwk import InvalidKey, public_jwk, public_jwks
from hie.context import INTERNAL_SOURCE
from hie.fhir.search.extract import extract
from hie.fhir.writes import stamp_now
from hie.registry import models
from hie.registry.models import ACCOUNT, CLIENT, STAFF, Account, Organization, Practitioner
from hie.registry.passwords import check_password_async, hash_password_async
from hie.store.base import Store, StoredResource, Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch

_LIST_LIMIT = 1000


class RegistryError(ValueError):
    """A registry request that cannot be done; ``status`` is its HTTP status."""

    status = 400


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


# -- store helpers -------------------------------------------------------------

def _fhir(resource: dict[str, Any], version: int, stamp: str) -> WriteRecord:
    resource = {**resource, "meta": {"versionId": str(version), "lastUpdated": stamp + "Z",
                                     "source": models.EXCHANGE_SOURCE}}
    return WriteRecord(resource["resourceType"], resource["id"], version, stamp,
                       orjson.dumps(resource), source=models.EXCHANGE_SOURCE,
                       index=extract(resource))


def _internal(rtype: str, id_: str, version: int, doc: dict[str, Any], stamp: str,
              tokens: Iterable[tuple[str, str]] = ()) -> WriteRecord:
    index = IndexEntries(token=[(param, "", value) for param, value in tokens])
    return WriteRecord(rtype, id_, version, stamp, orjson.dumps(doc),
                       source=INTERNAL_SOURCE, index=index)


def _doc(rec: StoredResource | None) -> dict[str, Any] | None:
    return None if rec is None or rec.deleted else orjson.loads(rec.body)


def _query(rtype: str, param: str, value: str) -> SearchQuery:
    return SearchQuery(rtype, (AnyOf((TokenMatch(param, value, ""),)),))


async def _unique(tx: Transaction, rtype: str, param: str, value: str, what: str) -> None:
    await tx.lock(f"{rtype}:{param}:{value}")
    if await tx.search_keys(_query(rtype, param, value), 1):
        raise Conflict(f"{what} {value!r} is already registered")


def _client_record(org: Organization, stamp: str) -> WriteRecord:
    return _internal(CLIENT, org.id, org.version, models.client_document(org), stamp,
                     [("client_id", org.client_id), ("active", str(org.active).lower())])


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(roles))
    if unknown := [r for r in out if r not in models.ROLES]:
        raise RegistryError(f"unknown role(s) {unknown}; known: {list(models.ROLES)}")
    return out


# -- organisations -------------------------------------------------------------

async def create_organization(store: Store, *, name: str, jwks: dict[str, Any] | None = None,
                              id: str | None = None, client_id: str | None = None,
                              roles: Iterable[str] = (), active: bool = True) -> Organization:
    """Register a hospital: its FHIR Organization and its client with public keys."""
    org_id = id or "o" + uuid.uuid4().hex[:12]
    if not models.ORGANIZATION_ID.match(org_id) or org_id == models.EXCHANGE_ORGANIZATION:
        raise RegistryError("organisation ids are 1-32 lowercase letters and digits "
                            f"(and not {models.EXCHANGE_ORGANIZATION!r})")
    client_id = client_id or org_id
    if not models.CLIENT_ID.match(client_id):
        raise RegistryError("client_id may hold letters, digits and -._~: (1-128)")
    if not name.strip():
        raise RegistryError("an organisation needs a name")
    try:
        keys = public_jwks(jwks) if jwks is not None else []
    except InvalidKey as exc:
        raise RegistryError(str(exc)) from exc
    org = Organization(id=org_id, name=name.strip(), client_id=client_id, active=active,
                       roles=_check_roles(roles), keys=tuple(keys))
    stamp = stamp_now()

    async def run(tx: Transaction) -> Organization:
        if await tx.read("Organization", org_id) or await tx.read(CLIENT, org_id):
            raise Conflict(f"organisation {org_id!r} already exists")
        await _unique(tx, CLIENT, "client_id", client_id, "client_id")
        await tx.put(_fhir(models.fhir_organization(org), 1, stamp))
        await tx.put(_client_record(org, stamp))
        return org

    return await store.transact(run)


async def get_organization(store: Store, *, id: str) -> Organization | None:
    """The organisation with this id, or None."""
    rec = await store.read(CLIENT, id)
    doc = _doc(rec)
    return models.organization_from(doc, rec.version) if doc and rec else None


async def get_client(store: Store, *, client_id: str) -> Organization | None:
    """The organisation registered under ``client_id``, or None."""
    page = await store.search(_query(CLIENT, "client_id", client_id), limit=2)
    if len(page.resources) != 1:
        return None
    rec = page.resources[0]
    return models.organization_from(orjson.loads(rec.body), rec.version)


async def list_organizations(store: Store) -> list[Organization]:
    """Every registered organisation (registration order)."""
    page = await store.search(SearchQuery(CLIENT), limit=_LIST_LIMIT)
    return [models.organization_from(orjson.loads(r.body), r.version) for r in page.resources]


async def _update_organization(store: Store, org_id: str, change: Any) -> Organization:
    stamp = stamp_now()

    async def run(tx: Transaction) -> Organization:
        rec = await tx.read(CLIENT, org_id)
        doc = _doc(rec)
        if doc is None or rec is None:
            raise NotFound(f"organisation {org_id!r} is not registered")
        current = models.organization_from(doc, rec.version)
        new = replace(change(current), version=current.version + 1)
        await tx.put(_client_record(new, stamp))
        if new.active != current.active or new.name != current.name:
            fhir = await tx.read("Organization", org_id)
            version = (fhir.version if fhir else 0) + 1
            await tx.put(_fhir(models.fhir_organization(new), version, stamp))
        return new

    return await store.transact(run)


async def add_key(store: Store, *, organization: str, jwk: dict[str, Any]) -> Organization:
    """Register one more public key (rotation: add the new key, later remove the old)."""
    try:
        key = public_jwk(jwk)
    except InvalidKey as exc:
        raise RegistryError(str(exc)) from exc

    def change(org: Organization) -> Organization:
        if org.keys_with_kid(key["kid"]):
            raise Conflict(f"key {key['kid']!r} is already registered for {org.id!r}")
        return replace(org, keys=(*org.keys, key))

    return await _update_organization(store, organization, change)


async def remove_key(store: Store, *, organization: str, kid: str) -> Organization:
    """Unregister a key; assertions signed with it are refused from now on."""

    def change(org: Organization) -> Organization:
        if not org.keys_with_kid(kid):
            raise NotFound(f"no key {kid!r} is registered for {org.id!r}")
        return replace(org, keys=tuple(k for k in org.keys if k.get("kid") != kid))

    return await _update_organization(store, organization, change)


async def set_organization_active(store: Store, *, id: str, active: bool) -> Organization:
    """Activate or deactivate a hospital (a deactivated one gets no new tokens)."""
    return await _update_organization(store, id, lambda org: replace(org, active=active))


# -- practitioners -------------------------------------------------------------

async def create_practitioner(store: Store, *, organization: str, name: str,
                              id: str | None = None, roles: Iterable[str] = ()) -> Practitioner:
    """Register a practitioner of a hospital (FHIR Practitioner + the staff link)."""
    prac_id = id or str(uuid.uuid4())
    if not models.FHIR_ID.match(prac_id):
        raise RegistryError("a practitioner id is a FHIR id (letters, digits, '-', '.')")
    if not name.strip():
        raise RegistryError("a practitioner needs a name")
    prac = Practitioner(id=prac_id, name=name.strip(), organization=organization,
                        roles=_check_roles(roles))
    stamp = stamp_now()

    async def run(tx: Transaction) -> Practitioner:
        if _doc(await tx.read(CLIENT, organization)) is None:
            raise NotFound(f"organisation {organization!r} is not registered")
        if await tx.read("Practitioner", prac_id) or await tx.read(STAFF, prac_id):
            raise Conflict(f"practitioner {prac_id!r} already exists")
        await tx.put(_fhir(models.fhir_practitioner(prac), 1, stamp))
        await tx.put(_internal(STAFF, prac_id, 1, models.staff_document(prac), stamp,
                               [("organization", organization)]))
        return prac

    return await store.transact(run)


async def get_practitioner(store: Store, *, id: str) -> Practitioner | None:
    """The practitioner with this id and the hospital they work for, or None."""
    rec = await store.read(STAFF, id)
    doc = _doc(rec)
    return models.practitioner_from(doc, rec.version) if doc and rec else None


async def set_practitioner_active(store: Store, *, id: str, active: bool) -> Practitioner:
    """Activate or deactivate a practitioner (a deactivated one gets no new tokens)."""
    stamp = stamp_now()

    async def run(tx: Transaction) -> Practitioner:
        rec = await tx.read(STAFF, id)
        doc = _doc(rec)
        if doc is None or rec is None:
            raise NotFound(f"practitioner {id!r} is not registered")
        new = replace(models.practitioner_from(doc, rec.version), active=active,
                      version=rec.version + 1)
        await tx.put(_internal(STAFF, id, new.version, models.staff_document(new), stamp,
                               [("organization", new.organization)]))
        fhir = await tx.read("Practitioner", id)
        await tx.put(_fhir(models.fhir_practitioner(new), (fhir.version if fhir else 0) + 1,
                           stamp))
        return new

    return await store.transact(run)


async def list_practitioners(store: Store, *, organization: str) -> list[Practitioner]:
    """The practitioners of one hospital."""
    page = await store.search(_query(STAFF, "organization", organization), limit=_LIST_LIMIT)
    return [models.practitioner_from(orjson.loads(r.body), r.version) for r in page.resources]


# -- portal accounts -----------------------------------------------------------

async def create_account(store: Store, *, username: str, password: str,
                         person_id: str) -> Account:
    """Create a portal login for a regional person (the password is stored hashed)."""
    username = username.strip().lower()
    if not models.USERNAME.match(username):
        raise RegistryError("a username is 3-64 of a-z 0-9 . _ @ - (starting with a "
                            "letter or digit)")
    if len(password) < models.MIN_PASSWORD:
        raise RegistryError(f"a password needs at least {models.MIN_PASSWORD} characters")
    if not models.FHIR_ID.match(person_id):
        raise RegistryError("person_id must be a regional person id")
    account = Account(id=str(uuid.uuid4()), username=username, person_id=person_id,
                      password_hash=await hash_password_async(password))
    stamp = stamp_now()

    async def run(tx: Transaction) -> Account:
        await _unique(tx, ACCOUNT, "username", username, "username")
        await tx.put(_internal(ACCOUNT, account.id, 1, models.account_document(account), stamp,
                               [("username", username), ("person", person_id)]))
        return account

    return await store.transact(run)


async def get_account(store: Store, *, username: str) -> Account | None:
    """The account with this username, or None."""
    page = await store.search(_query(ACCOUNT, "username", username.strip().lower()), limit=2)
    if len(page.resources) != 1:
        return None
    rec = page.resources[0]
    return models.account_from(rec.id, orjson.loads(rec.body), rec.version)


async def verify_password(store: Store, *, username: str, password: str) -> Account | None:
    """The active account when ``password`` is right; None otherwise (same cost either way)."""
    account = await get_account(store, username=username)
    ok = await check_password_async(password, account.password_hash if account else None)
    return account if ok and account is not None and account.active else None
