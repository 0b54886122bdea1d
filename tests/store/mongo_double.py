"""An in-memory stand-in for PyMongo's ``AsyncMongoClient``, over ``mongomock_ng``.

No MongoDB server can run on CI machines, so the MongoDB back end is tested
through this double: a thin async facade over mongomock-ng (which evaluates
filters, updates and aggregation pipelines like MongoDB), exposing exactly the
subset of ``AsyncMongoClient``'s API that :class:`hie.store.mongo.MongoStore`
uses. The store's own code path — compiled filters, pipelines, sessions,
transactions and their retry loop — is what runs.

**Transactions.** mongomock's own sessions apply a transaction's writes to the
shared data at once (others read uncommitted data) and roll back by restoring
a copy of whole collections (undoing what other transactions wrote
meanwhile), so the facade implements MongoDB's transaction model itself, in
the way MongoDB does it:

* *snapshot isolation*: a transaction works on a private copy of the committed
  data taken at its first operation, and sees its own writes; everyone else
  sees committed data only;
* *first writer wins*: a transactional write to a document that another open
  transaction has written, or that was committed after this transaction's
  snapshot, fails with ``WriteConflict`` (code 112) and the
  ``TransientTransactionError`` label, and the server side of the transaction
  is aborted — exactly what the store's retry loop must handle;
* *commit* copies the written documents into the committed data; *abort*
  drops the private copy.

:meth:`DoubleClient.inject_write_conflicts` / ``inject_commit_conflicts`` add
conflicts on demand. An operation without ``session=`` issued by a task that
has a transaction open raises (on a real server it would silently run outside
the transaction). ``docs/store-mongodb.md`` lists what the double does and
does not prove.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import mongomock_ng
from bson import ObjectId
from pymongo import AsyncMongoClient, IndexModel
from pymongo.errors import InvalidOperation, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from hie.store.base import Store
from hie.store.mongo import MongoStore

Doc = dict[str, Any]
Key = tuple[str, str, Any]  # (database, collection, _id)

_WRITE_CONFLICT, _NO_SUCH_TRANSACTION = 112, 251


def _transient(code: int, name: str, why: str) -> OperationFailure:
    return OperationFailure(f"{name}: {why}", code=code, details={
        "code": code, "codeName": name, "errmsg": why,
        "errorLabels": ["TransientTransactionError"]})


class _Txn:
    """One transaction: its private snapshot, the keys it wrote, its fate."""

    def __init__(self, client: DoubleClient) -> None:
        self.client = client
        self.private: Any = None  # a mongomock client, taken at the first operation
        self.start = 0  # the commit clock the snapshot reflects
        self.written: set[Key] = set()
        self.aborted_by_server: OperationFailure | None = None

    def snapshot(self) -> Any:
        if self.aborted_by_server is not None:
            raise _transient(_NO_SUCH_TRANSACTION, "NoSuchTransaction",
                             "the transaction was aborted by a write conflict")
        if self.private is None:
            self.start = self.client.clock
            self.private = self.client.copy_committed()
        return self.private

    def claim(self, key: Key) -> None:
        """Register a write of ``key``, or fail like MongoDB on a conflict."""
        client = self.client
        owner = client.writers.get(key)
        conflict = (owner is not None and owner is not self) \
            or client.last_write.get(key, 0) > self.start
        if client.write_conflicts > 0:
            client.write_conflicts -= 1
            conflict = True
        if conflict:
            self.aborted_by_server = _transient(_WRITE_CONFLICT, "WriteConflict",
                                                f"write conflict on {key[1]} {key[2]!r}")
            self.release()
            raise self.aborted_by_server
        client.writers[key] = self
        self.written.add(key)

    def release(self) -> None:
        for key in self.written:
            if self.client.writers.get(key) is self:
                del self.client.writers[key]
        self.written = set()

    def commit(self) -> None:
        """Copy the written documents into the committed data.

        Each touched collection is rewritten whole (merge, then reinsert): one
        scan instead of a scan per document, which mongomock's unindexed
        ``_id`` lookups would cost.
        """
        client = self.client
        client.clock += 1
        by_collection: dict[tuple[str, str], set[Any]] = {}
        for db_name, col_name, _id in self.written:
            by_collection.setdefault((db_name, col_name), set()).add(_id)
            client.last_write[(db_name, col_name, _id)] = client.clock
        for (db_name, col_name), ids in by_collection.items():
            mine = {d["_id"]: d for d in self.private[db_name][col_name].find({})
                    if d["_id"] in ids}
            target = client.committed[db_name][col_name]
            merged = {d["_id"]: d for d in target.find({})}
            for _id in ids:
                if _id in mine:
                    merged[_id] = mine[_id]
                else:
                    merged.pop(_id, None)
            target.delete_many({})
            if merged:
                target.insert_many(list(merged.values()))
        self.release()


class DoubleClient:
    """The ``AsyncMongoClient`` subset the store uses, in memory."""

    def __init__(self) -> None:
        self.committed = mongomock_ng.MongoClient(tz_aware=True)
        self.clock = 0  # advances at every commit
        self.writers: dict[Key, _Txn] = {}  # keys written by open transactions
        self.last_write: dict[Key, int] = {}  # clock of each key's last committed write
        self.open_by_task: dict[asyncio.Task[Any], _Txn] = {}
        self.write_conflicts = 0
        self.commit_conflicts = 0
        self.commits = 0
        self.aborts = 0
        self.admin = DoubleDatabase(self, "admin")

    def inject_write_conflicts(self, n: int) -> None:
        """Make the next ``n`` writes inside transactions fail with a WriteConflict."""
        self.write_conflicts = n

    def inject_commit_conflicts(self, n: int) -> None:
        """Make the next ``n`` commits fail with a WriteConflict (nothing is committed)."""
        self.commit_conflicts = n

    def copy_committed(self) -> Any:
        """A private copy of all committed data (a transaction's snapshot)."""
        private = mongomock_ng.MongoClient(tz_aware=True)
        for db_name in self.committed.list_database_names():
            source = self.committed[db_name]
            for col_name in source.list_collection_names():
                docs = list(source[col_name].find({}))
                if docs:
                    private[db_name][col_name].insert_many(docs)
        return private

    def get_database(self, name: str) -> DoubleDatabase:
        return DoubleDatabase(self, name)

    def __getitem__(self, name: str) -> DoubleDatabase:
        return self.get_database(name)

    def start_session(self, causal_consistency: bool | None = None) -> DoubleSession:
        return DoubleSession(self)

    async def drop_database(self, name: str) -> None:
        self.committed.drop_database(name)

    async def close(self) -> None:
        return None


class DoubleSession:
    """``AsyncClientSession``: ``async with``, awaitable transaction methods."""

    def __init__(self, client: DoubleClient) -> None:
        self._client = client
        self.txn: _Txn | None = None
        self.read_concern: ReadConcern | None = None
        self.write_concern: WriteConcern | None = None

    async def __aenter__(self) -> DoubleSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end_session()

    @property
    def in_transaction(self) -> bool:
        return self.txn is not None

    async def start_transaction(self, read_concern: ReadConcern | None = None,
                                write_concern: WriteConcern | None = None,
                                read_preference: Any = None,
                                max_commit_time_ms: int | None = None) -> DoubleSession:
        if self.txn is not None:
            raise InvalidOperation("Transaction already in progress")
        self.read_concern, self.write_concern = read_concern, write_concern
        self.txn = _Txn(self._client)
        task = asyncio.current_task()
        if task is not None:
            self._client.open_by_task[task] = self.txn
        return self

    async def commit_transaction(self) -> None:
        txn = self._end()
        if txn.aborted_by_server is not None:
            raise _transient(_NO_SUCH_TRANSACTION, "NoSuchTransaction",
                             "the transaction was aborted by a write conflict")
        if self._client.commit_conflicts > 0:
            self._client.commit_conflicts -= 1
            txn.release()
            self._client.aborts += 1
            raise _transient(_WRITE_CONFLICT, "WriteConflict", "injected at commit")
        txn.commit()
        self._client.commits += 1

    async def abort_transaction(self) -> None:
        self._end().release()
        self._client.aborts += 1

    async def end_session(self) -> None:
        if self.txn is not None:
            await self.abort_transaction()

    def _end(self) -> _Txn:
        if self.txn is None:
            raise InvalidOperation("No transaction started")
        txn, self.txn = self.txn, None
        for task, open_txn in list(self._client.open_by_task.items()):
            if open_txn is txn:
                del self._client.open_by_task[task]
        return txn


class DoubleDatabase:
    def __init__(self, client: DoubleClient, name: str) -> None:
        self.client = client
        self.name = name

    def get_collection(self, name: str, read_concern: ReadConcern | None = None,
                       write_concern: WriteConcern | None = None) -> DoubleCollection:
        return DoubleCollection(self.client, self.name, name, read_concern, write_concern)

    def __getitem__(self, name: str) -> DoubleCollection:
        return self.get_collection(name)

    async def command(self, command: str) -> Doc:
        return dict(self.client.committed[self.name].command(command))


class DoubleCollection:
    """``AsyncCollection``: awaitable operations, lazy cursors."""

    def __init__(self, client: DoubleClient, db_name: str, name: str,
                 read_concern: ReadConcern | None, write_concern: WriteConcern | None) -> None:
        self._client = client
        self._db_name = db_name
        self.name = name
        self.read_concern = read_concern
        self.write_concern = write_concern

    def target(self, session: DoubleSession | None) -> tuple[Any, _Txn | None]:
        """The mongomock collection an operation runs on: the session's snapshot
        inside a transaction, the committed data otherwise."""
        if session is not None and session.txn is not None:
            private = session.txn.snapshot()
            return private[self._db_name][self.name], session.txn
        task = asyncio.current_task()
        if task is not None and task in self._client.open_by_task:
            raise InvalidOperation(
                "operation without session= while this task has a transaction open: on a "
                "real server it would run outside the transaction")
        return self._client.committed[self._db_name][self.name], None

    def _written(self, col: Any, txn: _Txn | None, filter: Doc, upsert: bool) -> None:
        """Claim (in a transaction) or stamp (outside) the document a write touches."""
        if "_id" in filter and not isinstance(filter["_id"], dict):
            _id = filter["_id"]  # the store always writes by _id: no scan needed
        else:
            found = col.find_one(filter, {"_id": 1})
            if found is None:
                if upsert:
                    raise NotImplementedError("the double only upserts by _id")
                return  # nothing matched: nothing is written
            _id = found["_id"]
        key = (self._db_name, self.name, _id)
        if txn is not None:
            txn.claim(key)
        else:
            self._client.clock += 1
            self._client.last_write[key] = self._client.clock

    async def find_one(self, filter: Doc, projection: Any = None, *,
                       session: DoubleSession | None = None) -> Doc | None:
        col, _ = self.target(session)
        return col.find_one(filter, projection)

    def find(self, filter: Doc, projection: Any = None, *,
             session: DoubleSession | None = None) -> DoubleCursor:
        return DoubleCursor(self, filter, projection, session)

    async def insert_one(self, document: Doc, *, session: DoubleSession | None = None) -> Any:
        col, txn = self.target(session)
        document.setdefault("_id", ObjectId())  # as PyMongo does, before sending
        self._written(col, txn, {"_id": document["_id"]}, upsert=True)
        return col.insert_one(document)

    async def replace_one(self, filter: Doc, replacement: Doc, upsert: bool = False, *,
                          session: DoubleSession | None = None) -> Any:
        col, txn = self.target(session)
        self._written(col, txn, filter, upsert)
        return col.replace_one(filter, replacement, upsert=upsert)

    async def update_one(self, filter: Doc, update: Doc, upsert: bool = False, *,
                         session: DoubleSession | None = None) -> Any:
        col, txn = self.target(session)
        self._written(col, txn, filter, upsert)
        return col.update_one(filter, update, upsert=upsert)

    async def find_one_and_update(self, filter: Doc, update: Doc, projection: Any = None, *,
                                  upsert: bool = False, return_document: bool = False,
                                  session: DoubleSession | None = None) -> Doc | None:
        col, txn = self.target(session)
        self._written(col, txn, filter, upsert)
        return col.find_one_and_update(filter, update, projection, upsert=upsert,
                                       return_document=return_document)

    async def count_documents(self, filter: Doc, *,
                              session: DoubleSession | None = None) -> int:
        col, _ = self.target(session)
        return int(col.count_documents(filter))

    async def aggregate(self, pipeline: list[Doc], *,
                        session: DoubleSession | None = None) -> DoubleListCursor:
        col, _ = self.target(session)
        return DoubleListCursor(list(col.aggregate(pipeline)))

    async def create_indexes(self, models: list[IndexModel]) -> list[str]:
        col, _ = self.target(None)
        return list(col.create_indexes(models))

    async def index_information(self) -> Doc:
        col, _ = self.target(None)
        return dict(col.index_information())


class DoubleListCursor:
    """A cursor over results already computed (``AsyncCommandCursor``)."""

    def __init__(self, docs: list[Doc]) -> None:
        self._docs = docs

    async def to_list(self, length: int | None = None) -> list[Doc]:
        return self._docs if length is None else self._docs[:length]

    async def __aiter__(self) -> AsyncIterator[Doc]:
        for doc in self._docs:
            yield doc


class DoubleCursor:
    """``AsyncCursor``: ``sort``/``skip``/``limit`` chain, then ``to_list``."""

    def __init__(self, collection: DoubleCollection, filter: Doc, projection: Any,
                 session: DoubleSession | None) -> None:
        self._collection = collection
        self._filter = filter
        self._projection = projection
        self._session = session
        self._sort: list[tuple[str, int]] | None = None
        self._skip = 0
        self._limit = 0

    def sort(self, spec: list[tuple[str, int]]) -> DoubleCursor:
        self._sort = list(spec)
        return self

    def skip(self, n: int) -> DoubleCursor:
        self._skip = n
        return self

    def limit(self, n: int) -> DoubleCursor:
        self._limit = n
        return self

    async def to_list(self, length: int | None = None) -> list[Doc]:
        col, _ = self._collection.target(self._session)
        cursor = col.find(self._filter, self._projection)
        if self._sort:
            cursor = cursor.sort(self._sort)
        docs = list(cursor.skip(self._skip).limit(self._limit))
        return docs if length is None else docs[:length]

    async def __aiter__(self) -> AsyncIterator[Doc]:
        for doc in await self.to_list():
            yield doc


async def open_double_store() -> Store:
    """A fresh, opened :class:`MongoStore` over a new in-memory double."""
    store = MongoStore(client=DoubleClient(), db_name="hie_test")
    await store.open()
    return store


class _DisposableMongoStore(MongoStore):
    """A store on a throw-away database of a real server: dropped on close."""

    async def close(self) -> None:
        try:
            await self.client.drop_database(self.db_name)
        finally:
            await super().close()


async def open_real_store(url: str) -> Store:
    """A fresh, opened :class:`MongoStore` on a uniquely named database of the real
    server at ``url`` (``HIE_TEST_MONGODB_URL``); the database is dropped on close."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, w="majority", journal=True, readConcernLevel="majority", tz_aware=True)
    store = _DisposableMongoStore(client=client, db_name=f"hie_test_{uuid.uuid4().hex[:12]}",
                                  owns_client=True)
    await store.open()
    return store
