"""Metering tests run against each store back end: ``sqlite`` (a file in
``tmp_path``), ``mongo`` (the in-memory double) and ``mongo-real`` when
``HIE_TEST_MONGODB_URL`` is set."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hie.store import open_store
from hie.store.base import Store

BACKENDS = ["sqlite", "mongo"]
MONGODB_URL = os.environ.get("HIE_TEST_MONGODB_URL", "")
if MONGODB_URL:
    BACKENDS.append("mongo-real")


async def open_backend(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/metering.db")
        await store.open()
        return store
    if backend == "mongo":
        from store.mongo_double import open_double_store

        return await open_double_store()
    from store.mongo_double import open_real_store

    return await open_real_store(MONGODB_URL)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
