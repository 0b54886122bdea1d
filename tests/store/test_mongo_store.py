"""Building the production MongoStore from HIE_STORE_URL (no server needed)."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient

from hie.store import open_store
from hie.store.mongo import MongoStore


@pytest.mark.parametrize(("url", "db_name"), [
    ("mongodb://mongo:27017/exchange?replicaSet=rs0", "exchange"),
    ("mongodb://mongo:27017/?replicaSet=rs0", "hie"),
    ("mongodb://mongo:27017", "hie"),
])
async def test_open_store_builds_a_real_client_on_the_url_database(url: str, db_name: str) -> None:
    store = open_store(url)
    assert isinstance(store, MongoStore)
    assert store.db_name == db_name
    assert isinstance(store.client, AsyncMongoClient)
    # acknowledged writes: majority + journal, reads: majority
    resources = store._cols.resources
    assert resources.write_concern.document == {"w": "majority", "j": True}
    assert resources.read_concern.level == "majority"
    assert resources.database.name == db_name
    await store.close()  # the store created the client, so it closes it
