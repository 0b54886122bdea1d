"""DICOMweb tests: the exchange app with a body limit fit for instances, on
each store back end (SQLite; MongoDB over the in-memory double, and a real
server when ``HIE_TEST_MONGODB_URL`` is set): DICOM records, their grants and
the study writer rely on the store interface alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backends import BACKENDS, open_backend
from fastapi import FastAPI

import hie.app
from hie.app import create_app
from hie.config import Settings

BASE = "http://testserver"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                    var_dir=str(tmp_path), max_body_bytes=8 * 1024 * 1024)


@pytest.fixture(params=BACKENDS)
async def app(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    if request.param != "sqlite":
        store = await open_backend(request.param, tmp_path)
        monkeypatch.setattr(hie.app, "open_store", lambda url: store)
    made = create_app(settings)
    async with made.router.lifespan_context(made):
        yield made
