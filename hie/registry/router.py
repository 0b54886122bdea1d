"""Admin API under ``/admin``: hospitals, their keys, practitioners, portal accounts.

Every route needs an access token with the ``admin`` role (``hie admin token
--role admin``). Failures are problem JSON (the app's handlers render
``RegistryError`` and ``HTTPException``); bodies never contain private keys or
password hashes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.exceptions import HTTPException

from hie.auth.context import ROLE_ADMIN
from hie.auth.dependencies import require_role
from hie.dependencies import get_store
from hie.registry import service
from hie.registry.models import ActiveChange, NewAccount, NewOrganization, NewPractitioner
from hie.store.base import Store

router = APIRouter(prefix="/admin", tags=["admin"],
                   dependencies=[Depends(require_role(ROLE_ADMIN))])


@router.post("/organizations", status_code=201, summary="register a hospital")
async def create_organization(body: NewOrganization,
                              store: Store = Depends(get_store)) -> dict[str, Any]:
    org = await service.create_organization(store, **body.model_dump())
    return org.public()


@router.get("/organizations", summary="list hospitals")
async def list_organizations(store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    return [o.public() for o in await service.list_organizations(store)]


@router.get("/organizations/{id}", summary="one hospital")
async def get_organization(id: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    org = await service.get_organization(store, id=id)
    if org is None:
        raise HTTPException(404, f"organisation {id!r} is not registered")
    return org.public()


@router.patch("/organizations/{id}", summary="activate or deactivate a hospital")
async def change_organization(id: str, body: ActiveChange,
                              store: Store = Depends(get_store)) -> dict[str, Any]:
    org = await service.set_organization_active(store, id=id, active=body.active)
    return org.public()


@router.post("/organizations/{id}/keys", status_code=201, summary="register a public key")
async def add_key(id: str, jwk: dict[str, Any],
                  store: Store = Depends(get_store)) -> dict[str, Any]:
    org = await service.add_key(store, organization=id, jwk=jwk)
    return org.public()


@router.delete("/organizations/{id}/keys/{kid}", summary="unregister a public key")
async def remove_key(id: str, kid: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    org = await service.remove_key(store, organization=id, kid=kid)
    return org.public()


@router.post("/practitioners", status_code=201, summary="register a practitioner")
async def create_practitioner(body: NewPractitioner,
                              store: Store = Depends(get_store)) -> dict[str, Any]:
    prac = await service.create_practitioner(store, **body.model_dump())
    return prac.public()


@router.get("/practitioners", summary="practitioners of a hospital")
async def list_practitioners(organization: str,
                             store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    return [p.public() for p in
            await service.list_practitioners(store, organization=organization)]


@router.get("/practitioners/{id}", summary="one practitioner")
async def get_practitioner(id: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    prac = await service.get_practitioner(store, id=id)
    if prac is None:
        raise HTTPException(404, f"practitioner {id!r} is not registered")
    return prac.public()


@router.patch("/practitioners/{id}", summary="activate or deactivate a practitioner")
async def change_practitioner(id: str, body: ActiveChange,
                              store: Store = Depends(get_store)) -> dict[str, Any]:
    prac = await service.set_practitioner_active(store, id=id, active=body.active)
    return prac.public()


@router.post("/accounts", status_code=201, summary="create a patient portal account")
async def create_account(body: NewAccount, store: Store = Depends(get_store)) -> dict[str, Any]:
    account = await service.create_account(store, username=body.username,
                                            password=body.password,
                                            person_id=body.person_id)
    return account.public()
