"""Fixtures of the registry tests (defined in ``auth.trustkit``)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from auth.trustkit import (  # noqa: F401
    hospital,
    http,
    other_hospital,
    store,
    tokens,
    trust_app,
    trust_settings,
)

from hie.store.base import Store


@pytest.fixture(params=["sqlite", "mongo"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store of each back end (MongoDB: the in-memory double of the store suite)."""
    if request.param == "sqlite":
        from hie.store.sqlite import SQLiteStore

        opened: Store = SQLiteStore(str(tmp_path / "registry.db"))
        await opened.open()
    else:
        from store.mongo_double import open_double_store

        opened = await open_double_store()
    try:
        yield opened
    finally:
        await opened.close()
