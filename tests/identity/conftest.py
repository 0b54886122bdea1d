"""Fixtures of the identity tests: an opened store of each back end (SQLite in
``tmp_path`` and MongoDB over the in-memory double), settings, and a pusher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from identity.helpers import Pusher

from hie.config import Settings
from hie.store import open_store
from hie.store.base import Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", var_dir=str(tmp_path / "var"))


async def _open(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/identity.db")
        await store.open()
        return store
    from store.mongo_double import open_double_store

    return await open_double_store()


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await _open(request.param, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def push(store: Store, settings: Settings) -> Pusher:
    return Pusher(store, settings)
