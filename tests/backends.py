"""The store back ends every store-backed test runs against, and the fixture
that opens one: ``sqlite`` (a file in ``tmp_path``), ``mongo`` (MongoStore over
the in-memory double of ``store/mongo_double.py``) and, only when
``HIE_TEST_MONGODB_URL`` is set, ``mongo-real`` (a real server). The list is
built at import time so that nothing is skipped: a back end that cannot run is
simply not listed.

The root conftest loads this module as a plugin, so ``store`` is a fixture
everywhere.
"""

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
    """An opened, empty store of ``backend``."""
    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/store/hie.db")
        await store.open()
        return store
    if backend == "mongo":
        from store.mongo_double import open_double_store

        return await open_double_store()
    from store.mongo_double import open_real_store

    return await open_real_store(MONGODB_URL)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store of each back end, closed after the test."""
    opened = await open_backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
