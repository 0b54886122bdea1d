"""The store contract suite runs once per back end.

``store`` is an opened, empty store of each back end: ``sqlite`` (a file in
``tmp_path``), ``mongo`` (MongoStore over the in-memory double of
``store/mongo_double.py``) and, only when ``HIE_TEST_MONGODB_URL`` is set,
``mongo-real`` (a real server). The parameter list is built at import time so
that nothing is skipped: a back end that cannot run is simply not listed.

``records`` builds :class:`WriteRecord`s with hand-made index entries, so the
suite depends on nothing but the store interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from hie.store.base import Store, Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import SearchQuery
from hie.store.sqlite import SQLiteStore

_EPOCH = datetime(2024, 1, 1)


def ts(seconds: int) -> str:
    """A fixed-width ``last_updated`` instant, ``seconds`` after 2024-01-01."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def day(date: str) -> tuple[str, str]:
    """The index range of a whole day ``YYYY-MM-DD``."""
    return f"{date}T00:00:00.000000", f"{date}T23:59:59.999999"


class Records:
    """Builds write records and writes them (the suite's only way to write)."""

    def record(self, resource_type: str, id: str, *, version: int = 1,
               last_updated: str | None = None, source: str | None = "org-a",
               index: IndexEntries | None = None, deleted: bool = False) -> WriteRecord:
        body = b"" if deleted else orjson.dumps(
            {"resourceType": resource_type, "id": id, "meta": {"versionId": str(version)}})
        return WriteRecord(resource_type=resource_type, id=id, version=version,
                           last_updated=last_updated or ts(version), body=body,
                           deleted=deleted, source=source,
                           index=None if deleted else (index or IndexEntries()))

    async def put(self, store: Store, *records: WriteRecord) -> list[int]:
        """Write ``records`` in one transaction; return their seqs."""

        async def run(tx: Transaction) -> list[int]:
            return [await tx.put(r) for r in records]

        return await store.transact(run)

    async def create(self, store: Store, resource_type: str, id: str, **kwargs: object) -> int:
        """Create one resource (version 1); return its seq."""
        return (await self.put(store, self.record(resource_type, id, **kwargs)))[0]

    async def ids(self, store: Store, query: SearchQuery, limit: int = 100) -> list[str]:
        """Ids of the first page of ``query``, in result order."""
        page = await store.search(query, limit=limit)
        return [r.id for r in page.resources]


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An opened SQLite store on a fresh file (for the SQLite-only tests)."""
    store = SQLiteStore(str(tmp_path / "hie.db"))
    await store.open()
    yield store
    await store.close()
