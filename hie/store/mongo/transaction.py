"""Multi-document transactions of the MongoDB back end, and their retry loop.

A transaction runs in one client session with read concern ``snapshot`` and
write concern majority + journal. MongoDB detects write-write conflicts
between concurrent transactions and aborts the loser with the error label
``TransientTransactionError``; :func:`run_transaction` then runs the caller's
function again from the start (which is why ``Store.transact`` warns that
``fn`` may run more than once). Every conflict the store relies on is a
write to a document:

* ``put`` replaces the resource document with a compare-and-set on its
  version (two writers of one resource conflict);
* a create increments the ``seq`` counter document, so creates commit in
  ``seq`` order and a reader paging by ``seq`` never misses one;
* ``lock(key)`` upserts a document in ``locks`` (two transactions naming the
  same key conflict, and the one that retries sees the other's writes).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from hie.store.base import (
    StoredResource,
    StoreUnavailable,
    Transaction,
    VersionConflict,
    WriteRecord,
)
from hie.store.mongo import search
from hie.store.mongo.compile import doc_key
from hie.store.mongo.documents import (
    RESOURCE_FIELDS,
    labels_of,
    resource_document,
    to_stored,
    version_document,
)
from hie.store.mongo.search import COUNTER_ID, Collections
from hie.store.query import SearchQuery

T = TypeVar("T")

WRITE_CONCERN = WriteConcern("majority", j=True)
MAX_ATTEMPTS = 40
MAX_COMMIT_ATTEMPTS = 5
_BACKOFF_FIRST, _BACKOFF_MAX = 0.002, 0.25


class MongoTransaction:
    """The :class:`~hie.store.base.Transaction` of one session's transaction."""

    def __init__(self, cols: Collections, session: Any) -> None:
        self._cols = cols
        self._session = session

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version (a tombstone if deleted), or None."""
        doc = await self._cols.resources.find_one(
            {"_id": doc_key(resource_type, id)}, RESOURCE_FIELDS, session=self._session)
        return to_stored(doc) if doc else None

    async def search_keys(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        """Return up to ``limit`` (type, id) of current resources matching ``query``,
        in the order of the first page of :meth:`MongoStore.search`."""
        page = await search.search(self._cols, query, limit=limit, cursor=None,
                                   session=self._session)
        return [(r.resource_type, r.id) for r in page.resources]

    async def lock(self, key: str) -> None:
        """Write the lock document of ``key``: a concurrent transaction writing
        it too gets a write conflict and retries after this one ends."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        await self._cols.locks.update_one(
            {"_id": digest},
            {"$set": {"at": datetime.now(UTC)}, "$inc": {"n": 1}},
            upsert=True, session=self._session)

    async def put(self, record: WriteRecord) -> int:
        """Write a new version; return the resource's ``seq``."""
        key = doc_key(record.resource_type, record.id)
        current = await self._cols.resources.find_one(
            {"_id": key}, {"version": 1, "seq": 1, "labels": 1}, session=self._session)
        current_version = int(current["version"]) if current else 0
        if current_version != record.version - 1:
            raise VersionConflict(
                f"{key} is at version {current_version}, not {record.version - 1}")
        if current is None:
            counter = await self._cols.counters.find_one_and_update(
                {"_id": COUNTER_ID}, {"$inc": {"n": 1}}, upsert=True,
                return_document=ReturnDocument.AFTER, session=self._session)
            seq = int(counter["n"])
        else:
            seq = int(current["seq"])
        # A tombstone keeps the labels of what it deletes, so that a caller who
        # could not see the record cannot learn that it was deleted either.
        if record.deleted:
            labels = list(current["labels"]) if current else []
        else:
            labels = labels_of(record.index)
        try:
            if current is None:
                await self._cols.resources.insert_one(
                    resource_document(record, seq, labels), session=self._session)
            else:
                result = await self._cols.resources.replace_one(
                    {"_id": key, "version": current_version},
                    resource_document(record, seq, labels), session=self._session)
                if result.matched_count != 1:
                    raise VersionConflict(f"{key} changed while being written")
            await self._cols.versions.insert_one(
                version_document(record, seq, labels), session=self._session)
        except DuplicateKeyError as exc:
            raise VersionConflict(f"{key} version {record.version} already exists") from exc
        return seq

    async def put_many(self, records: Sequence[WriteRecord]) -> list[int]:
        """Write several versions in order (one :meth:`put` each)."""
        return [await self.put(record) for record in records]


async def run_transaction(
    client: Any, cols: Collections, fn: Callable[[Transaction], Awaitable[T]]
) -> T:
    """Run ``fn`` in a transaction; re-run it on transient errors (write conflicts).

    Gives up with :class:`VersionConflict` after :data:`MAX_ATTEMPTS` conflicts
    and maps connection failures to :class:`StoreUnavailable`.
    """
    try:
        async with client.start_session() as session:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if attempt > 1:
                    await asyncio.sleep(_backoff(attempt))
                done, result = await _attempt(session, cols, fn)
                if done:
                    return result  # type: ignore[return-value]
    except ConnectionFailure as exc:
        raise StoreUnavailable(str(exc)) from exc
    raise VersionConflict(f"the transaction conflicted {MAX_ATTEMPTS} times; try again")


async def _attempt(
    session: Any, cols: Collections, fn: Callable[[Transaction], Awaitable[T]]
) -> tuple[bool, T | None]:
    """One try: ``(True, result)`` when committed, ``(False, None)`` to retry."""
    await session.start_transaction(
        read_concern=ReadConcern("snapshot"), write_concern=WRITE_CONCERN,
        read_preference=ReadPreference.PRIMARY)
    try:
        result = await fn(MongoTransaction(cols, session))
    except BaseException as exc:
        if session.in_transaction:
            await session.abort_transaction()
        if _transient(exc):
            return False, None
        raise
    for _ in range(MAX_COMMIT_ATTEMPTS):
        try:
            await session.commit_transaction()
            return True, result
        except PyMongoError as exc:
            if exc.has_error_label("UnknownTransactionCommitResult"):
                continue  # commitTransaction is idempotent: ask again
            if exc.has_error_label("TransientTransactionError"):
                return False, None
            raise
    raise StoreUnavailable("the outcome of a commit stayed unknown")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError")


def _backoff(attempt: int) -> float:
    return random.random() * min(_BACKOFF_FIRST * 1.5 ** attempt, _BACKOFF_MAX)  # noqa: S311
