"""Shared pieces of the consent gate's HTTP tests: the standalone consent app on
a fresh SQLite store, and real access tokens signed by the exchange's keys.

Imported as ``gatekit`` (``tests/gate`` is not a package; pytest puts the test's
folder on ``sys.path``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from hie.auth.tokens import TokenService
from hie.config import Settings
from hie.gate import ROLE_EXCHANGE_SERVICE, service_token_provider
from hie.gate.app import create_consent_app
from hie.gate.data import StoreConsentData
from hie.registry import service as registry
from hie.registry.models import ROLE_PRIVACY_OFFICER

BASE = "http://testserver"
REGION = ("h1", "h2", "h3")


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                    var_dir=str(tmp_path), **kw)


@dataclass
class Region:
    """The consent service app (started), its data, and the exchange's token service."""

    app: FastAPI
    tokens: TokenService

    @property
    def data(self) -> StoreConsentData:
        return StoreConsentData(self.app.state.store)

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE,
                                 headers=headers)

    def service_token(self) -> str:
        return service_token_provider(self.tokens)()

    def hospital_token(self, org: str, practitioner: str | None = None) -> str:
        token, _, _ = self.tokens.issue(
            client_id=org, organization=org, practitioner=practitioner,
            scope="user/*.rs" if practitioner else "system/*.cruds",
            purpose_of_use="TREAT" if practitioner else None)
        return token

    def officer_token(self) -> str:
        token, _, _ = self.tokens.issue(client_id="exchange-admin", organization="exchange",
                                        scope="", roles=[ROLE_PRIVACY_OFFICER],
                                        practitioner="officer-1")
        return token

    def admin_token(self, roles: tuple[str, ...] = ("admin",)) -> str:
        token, _, _ = self.tokens.issue(client_id="exchange-admin", organization="exchange",
                                        scope="", roles=roles)
        return token

    def forged_service_token(self) -> str:
        """A hospital's token claiming the exchange-service role (it cannot get one
        from the token endpoint; this checks the organisation is checked too)."""
        token, _, _ = self.tokens.issue(client_id="h1", organization="h1", scope="",
                                        roles=[ROLE_EXCHANGE_SERVICE])
        return token


async def start_region(tmp_path: Path) -> AsyncIterator[Region]:
    """The consent app on a fresh store, with the exchange's keys made and the
    region's hospitals registered."""
    settings = make_settings(tmp_path)
    tokens = TokenService(settings)
    tokens.keyring.ensure()  # the exchange made its keys; the consent service never does
    app = create_consent_app(settings)
    async with app.router.lifespan_context(app):
        for org in REGION:
            await registry.create_organization(app.state.store, name=f"Hospital {org}", id=org)
            await registry.create_practitioner(app.state.store, organization=org,
                                               name=f"Dr of {org}", id=f"{org}-dr0")
        yield Region(app, tokens)
