"""Fixtures shared by the whole suite: an exchange app on a fresh SQLite store,
and HTTP clients that talk to it in-process with real access tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from hie.app import create_app
from hie.config import Settings

#: ``store``: an opened store of each back end (tests/backends.py), for every
#: store-backed test package.
pytest_plugins = ["backends"]

BASE = "http://testserver"
#: The organisation the default ``client`` acts as.
ORG = "local"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                    var_dir=str(tmp_path), max_body_bytes=256 * 1024)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def issue_token(app: FastAPI, organization: str = ORG, scope: str = "system/*.cruds",
                **claims: object) -> str:
    """An access token signed by the app's own keys (the token endpoint's
    output, without the client-assertion round trip tested in tests/auth)."""
    token, _, _ = app.state.tokens.issue(client_id=f"{organization}-system",
                                         organization=organization, scope=scope,
                                         **claims)
    return token


@pytest.fixture
def make_client(app: FastAPI) -> Callable[..., httpx.AsyncClient]:
    """Build a client acting as an organisation with a scope (closed by the caller
    or at the end of the test by the event loop's teardown)."""
    def make(organization: str = ORG, scope: str = "system/*.cruds",
             **claims: object) -> httpx.AsyncClient:
        headers = {"Content-Type": "application/fhir+json"}
        if organization:
            headers["Authorization"] = "Bearer " + issue_token(app, organization, scope,
                                                               **claims)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                                 headers=headers)
    return make


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    """A hospital system of organisation ``local`` with ``system/*.cruds``."""
    async with make_client() as c:
        yield c
