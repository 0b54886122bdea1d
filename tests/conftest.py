"""Fixtures shared by the whole suite: an exchange app on a fresh SQLite store,
and an HTTP client that talks to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from hie.app import create_app
from hie.config import Settings

BASE = "http://testserver"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                    var_dir=str(tmp_path), max_body_bytes=256 * 1024)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE,
                                 headers={"Content-Type": "application/fhir+json"}) as c:
        yield c
